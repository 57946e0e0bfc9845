//! Throttling for names NSS does not know. They are prompted like everyone else; if they were
//! never throttled, the first "Too many failed attempts" would tell a guesser which names are
//! real accounts. Kept in memory (unknown names must not grow the store), bounded.

use crate::store::record::{Attempt, UserRecord};
use kron_common::config::ThrottleConfig;
use std::collections::HashMap;
use std::sync::Mutex;

/// Names tracked at once; past this, quiet entries are dropped first.
const MAX_NAMES: usize = 65_536;

#[derive(Default)]
pub struct StrangerThrottle {
    names: Mutex<HashMap<String, UserRecord>>,
}

impl StrangerThrottle {
    /// When the next attempt for `name` is allowed, if it is in backoff at `now`.
    pub fn locked_until(&self, name: &str, now: u64) -> Option<u64> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names
            .get(name)
            .filter(|r| r.is_locked(now))
            .map(|r| r.next_attempt)
    }

    /// Charges one (always failing) attempt for `name`, exactly as for a real account.
    pub fn charge(&self, name: &str, now: u64, config: &ThrottleConfig) -> Attempt {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() >= MAX_NAMES && !names.contains_key(name) {
            // Entries past their backoff with no recent failure streak are the cheapest to lose.
            names.retain(|_, r| r.is_locked(now));
            if names.len() >= MAX_NAMES {
                return Attempt::Allowed;
            }
        }
        names
            .entry(name.to_owned())
            .or_default()
            .charge_attempt(now, config)
    }
}

/// Self-service calls (enroll, confirm, recovery codes, token export) a non-root caller may make
/// per minute: each writes and flushes the store, so an unlimited stream from one local user
/// would slow every login on the host.
const SELF_SERVICE_PER_MINUTE: u32 = 20;

/// Per-uid budget for self-service calls of non-root callers.
#[derive(Default)]
pub struct SelfServiceLimiter {
    windows: Mutex<HashMap<u32, (u64, u32)>>,
}

impl SelfServiceLimiter {
    /// Spends one call of `caller`'s budget for the current minute.
    pub fn spend(
        &self,
        caller: crate::policy::authz::Caller,
        now: u64,
    ) -> crate::error::Result<()> {
        if caller.is_root() {
            return Ok(());
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let minute = now / 60;
        if windows.len() >= MAX_NAMES {
            windows.retain(|_, (window, _)| *window == minute);
        }
        let (window, count) = windows.entry(caller.uid).or_insert((minute, 0));
        if *window != minute {
            *window = minute;
            *count = 0;
        }
        if *count >= SELF_SERVICE_PER_MINUTE {
            return Err(crate::error::Error::Throttled {
                until: (minute + 1) * 60,
            });
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_are_throttled_like_accounts() {
        let strangers = StrangerThrottle::default();
        let config = ThrottleConfig::default();
        let mut account = UserRecord::default();
        for _ in 0..4 {
            assert_eq!(
                strangers.charge("ghost", 100, &config),
                account.charge_attempt(100, &config)
            );
        }
        assert_eq!(
            strangers.locked_until("ghost", 100),
            Some(account.next_attempt)
        );
        assert_eq!(strangers.locked_until("other", 100), None);
    }

    #[test]
    fn self_service_is_budgeted_per_uid_and_minute() {
        let limiter = SelfServiceLimiter::default();
        let user = crate::policy::authz::Caller::new(1000);
        for _ in 0..SELF_SERVICE_PER_MINUTE {
            limiter.spend(user, 600).unwrap();
        }
        assert!(limiter.spend(user, 659).is_err());
        assert!(
            limiter
                .spend(crate::policy::authz::Caller::new(1001), 659)
                .is_ok()
        );
        assert!(
            limiter
                .spend(crate::policy::authz::Caller::new(0), 659)
                .is_ok()
        );
        assert!(limiter.spend(user, 660).is_ok(), "a new minute");
    }
}
