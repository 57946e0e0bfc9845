//! Throttling for names NSS does not know. They are prompted like everyone else; if they were
//! never throttled, the first "Too many failed attempts" would tell a guesser which names are
//! real accounts. Kept in memory (unknown names must not grow the store), bounded.

use crate::store::record::{Attempt, UserRecord};
use kron_common::config::ThrottleConfig;
use std::collections::HashMap;
use std::sync::Mutex;

/// Names tracked at once; past this, one entry makes room for each new name.
const MAX_NAMES: usize = 65_536;
/// Entries looked at to choose the one that makes room: bounded work per new name, whatever
/// the table was filled with.
const EVICTION_SAMPLE: usize = 16;

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
            // Full: of a few entries, the one whose backoff ends first (or has ended) is the
            // cheapest to lose; the new name is then throttled like any other. Scanning the
            // whole table here would cost every unknown name a pass over 65,536 entries under
            // the lock once someone filled it, and letting the new name through unthrottled
            // would tell it from an account.
            let evicted = names
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, r)| r.next_attempt)
                .map(|(evicted, _)| evicted.clone());
            if let Some(evicted) = evicted {
                names.remove(&evicted);
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

    /// Four attempts of `name` are charged and locked exactly as an account's would be.
    fn assert_throttled_like_an_account(strangers: &StrangerThrottle, name: &str) {
        let config = ThrottleConfig::default();
        let mut account = UserRecord::default();
        for _ in 0..4 {
            assert_eq!(
                strangers.charge(name, 100, &config),
                account.charge_attempt(100, &config)
            );
        }
        assert_eq!(
            strangers.locked_until(name, 100),
            Some(account.next_attempt)
        );
    }

    #[test]
    fn strangers_are_throttled_like_accounts() {
        let strangers = StrangerThrottle::default();
        assert_throttled_like_an_account(&strangers, "ghost");
        assert_eq!(strangers.locked_until("other", 100), None);
    }

    #[test]
    fn a_full_table_still_throttles_new_names() {
        let strangers = StrangerThrottle::default();
        let config = ThrottleConfig::default();
        // Fill the table with names all in backoff, as a guesser could.
        {
            let mut names = strangers.names.lock().unwrap();
            let mut locked = UserRecord::default();
            while !locked.is_locked(100) {
                locked.charge_attempt(100, &config);
            }
            for i in 0..MAX_NAMES {
                names.insert(format!("filler{i}"), locked.clone());
            }
        }
        assert_throttled_like_an_account(&strangers, "ghost");
        assert_eq!(strangers.names.lock().unwrap().len(), MAX_NAMES);
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
