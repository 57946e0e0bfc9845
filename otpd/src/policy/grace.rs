//! Step-up grace: when a code was passed in a login session, a later login in the same session,
//! on the same terminal and from the same remote host, need not ask again for a short while —
//! if the rule deciding it allows. In memory only: a restart just asks again.

use crate::policy::LoginRequest;
use crate::policy::authz::Caller;
use kron_common::config::MAX_GRACE;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most sessions remembered at once; older passes are dropped first when full.
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// Who asked otpd: the terminal and remote host are what the caller says, so a pass is
    /// good only for the same caller (sshd's and sudo's are root; a screen locker running as
    /// the user cannot make a pass for sudo on a terminal it names).
    caller: u32,
    user: String,
    session: u32,
    tty: String,
    rhost: String,
}

#[derive(Default)]
pub struct GraceLedger {
    passes: Mutex<HashMap<Key, u64>>,
}

fn key(caller: Caller, request: &LoginRequest) -> Option<Key> {
    // Without a kernel audit session or a terminal there is no "same session" to speak of.
    let session = caller.session?;
    if request.tty.is_empty() {
        return None;
    }
    Some(Key {
        caller: caller.uid,
        user: request.user.clone(),
        session,
        tty: request.tty.clone(),
        rhost: request.rhost.clone(),
    })
}

impl GraceLedger {
    /// Remembers that `request.user` passed a code at `now` in the caller's session.
    pub fn record_pass(&self, caller: Caller, request: &LoginRequest, now: u64) {
        let Some(key) = key(caller, request) else {
            return;
        };
        let mut passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
        if passes.len() >= MAX_ENTRIES {
            passes.retain(|_, passed| now.saturating_sub(*passed) < MAX_GRACE);
            if passes.len() >= MAX_ENTRIES {
                return;
            }
        }
        passes.insert(key, now);
    }

    /// True if a code was passed in this session within `grace` seconds before `now`.
    pub fn covers(&self, caller: Caller, request: &LoginRequest, grace: u64, now: u64) -> bool {
        if grace == 0 {
            return false;
        }
        let Some(key) = key(caller, request) else {
            return false;
        };
        let passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
        passes
            .get(&key)
            .is_some_and(|&passed| passed <= now && now - passed < grace)
    }

    /// Forgets every pass of `user` (after an admin reset).
    pub fn forget(&self, user: &str) {
        self.passes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| key.user != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tty: &str, rhost: &str) -> LoginRequest {
        LoginRequest {
            user: "alice".into(),
            service: "sudo".into(),
            rhost: rhost.into(),
            tty: tty.into(),
        }
    }

    #[test]
    fn only_the_same_session_terminal_and_host_within_the_window() {
        let ledger = GraceLedger::default();
        let here = Caller {
            uid: 0,
            session: Some(7),
        };
        ledger.record_pass(here, &request("/dev/pts/3", ""), 1000);
        assert!(ledger.covers(here, &request("/dev/pts/3", ""), 300, 1299));
        assert!(
            !ledger.covers(here, &request("/dev/pts/3", ""), 300, 1300),
            "window over"
        );
        assert!(
            !ledger.covers(here, &request("/dev/pts/3", ""), 0, 1001),
            "off"
        );
        assert!(!ledger.covers(
            Caller {
                uid: 0,
                session: Some(8)
            },
            &request("/dev/pts/3", ""),
            300,
            1001
        ));
        assert!(!ledger.covers(here, &request("/dev/pts/4", ""), 300, 1001));
        assert!(!ledger.covers(here, &request("/dev/pts/3", "192.0.2.9"), 300, 1001));
        assert!(
            !ledger.covers(Caller::new(0), &request("/dev/pts/3", ""), 300, 1001),
            "no session"
        );
        // A pass made by the user's own process (a screen locker, or anything calling otpd as
        // the user, naming whatever terminal it likes) is no pass for root's sudo.
        let as_alice = Caller {
            uid: 1001,
            session: Some(7),
        };
        ledger.record_pass(as_alice, &request("/dev/pts/5", ""), 1000);
        assert!(!ledger.covers(here, &request("/dev/pts/5", ""), 300, 1001));
        assert!(ledger.covers(as_alice, &request("/dev/pts/5", ""), 300, 1001));
        ledger.forget("alice");
        assert!(!ledger.covers(here, &request("/dev/pts/3", ""), 300, 1001));
    }

    #[test]
    fn no_session_or_tty_records_nothing() {
        let ledger = GraceLedger::default();
        ledger.record_pass(Caller::new(0), &request("/dev/pts/3", ""), 1000);
        ledger.record_pass(
            Caller {
                uid: 0,
                session: Some(7),
            },
            &request("", ""),
            1000,
        );
        assert!(ledger.passes.lock().unwrap().is_empty());
    }
}
