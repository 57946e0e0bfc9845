//! Logins waiting for an answer at the prompt: in memory, bounded, each bound to the uid that
//! began it and void after its deadline.

use crate::error::{Error, Result};
use crate::policy::LoginRequest;
use crate::policy::authz::Caller;
use crate::store::record::Pending;
use kron_common::contact::Channels;
use std::collections::HashMap;
use std::sync::Mutex;

/// Logins in progress at once; beyond this new ones are refused (memory stays bounded even if
/// a client begins logins and never answers).
const MAX_SESSIONS: usize = 4096;
/// Logins one non-root caller may have waiting at once; beyond this its oldest is dropped.
/// Root callers (sshd, sudo) are not limited per uid, and a quarter of the table is kept for
/// them, so no local user can fill it and deny everyone's logins.
const MAX_PER_USER: usize = 8;
/// Logins for one account from one origin (the same caller uid, remote host and terminal)
/// waiting at once; beyond this the origin's oldest is dropped. A code is accepted once per
/// time step, so more logins of one account in parallel cannot pass anyway; this keeps a flood
/// of logins as one name from filling the table. Counted per origin, not per account: anyone
/// may make sshd or `su` begin logins as any name (a wrong password still reaches the second
/// factor), and a cap per account would let them push the real user's login, waiting at its
/// prompt, out of the table. A flood from one origin now only pushes out its own.
const MAX_PER_ORIGIN: usize = 8;
const RESERVED_FOR_ROOT: usize = MAX_SESSIONS / 4;

#[derive(Debug, Clone)]
pub enum LoginKind {
    /// A code from the confirmed token is expected (or a login code sent earlier); typing a
    /// channel of `offer` sends one.
    Code { offer: Channels },
    /// Prompted only so nothing reveals the account has no token; always refused.
    NoToken,
    /// Prompted only so nothing reveals the account does not exist; always refused.
    UnknownUser,
    /// No token, but a login code was sent (fallback); typing a channel of `offer` resends.
    Sent { offer: Channels },
    /// A code was sent to prove the contact before the enrollment is shown.
    Validate { offer: Channels },
    /// The confirming code of this pending enrollment is expected.
    Enroll(Pending),
}

#[derive(Debug, Clone)]
pub struct LoginSession {
    pub caller: Caller,
    pub request: LoginRequest,
    pub kind: LoginKind,
    pub deadline: u64,
    /// Codes sent again at this login's prompt (a channel typed instead of a code).
    pub resends: u8,
}

impl LoginSession {
    pub fn new(caller: Caller, request: LoginRequest, kind: LoginKind, deadline: u64) -> Self {
        LoginSession {
            caller,
            request,
            kind,
            deadline,
            resends: 0,
        }
    }

    /// Whether `other` is a login of the same account begun from the same place: the same
    /// caller, the same remote host and the same terminal, as the PAM stack that asked told.
    fn same_origin(&self, other: &LoginSession) -> bool {
        self.caller.uid == other.caller.uid
            && self.request.user == other.request.user
            && self.request.rhost == other.request.rhost
            && self.request.tty == other.request.tty
    }
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, LoginSession>>,
}

impl Sessions {
    /// Stores `session` under a fresh unguessable handle; `None` when full.
    pub fn insert(&self, session: LoginSession, now: u64) -> Option<String> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let caller = session.caller;
        if !caller.is_root() {
            drop_oldest(&mut live, MAX_PER_USER, |s| s.caller.uid == caller.uid);
        }
        drop_oldest(&mut live, MAX_PER_ORIGIN, |s| s.same_origin(&session));
        let limit = if caller.is_root() {
            MAX_SESSIONS
        } else {
            MAX_SESSIONS - RESERVED_FOR_ROOT
        };
        if live.len() >= limit {
            live.retain(|_, s| now < s.deadline);
            if live.len() >= limit {
                return None;
            }
        }
        let handle = new_handle()?;
        live.insert(handle.clone(), session);
        Some(handle)
    }

    /// `look` applied to the session for `handle`, which stays; `None` if there is none.
    pub fn peek<R>(&self, handle: &str, look: impl FnOnce(&LoginSession) -> R) -> Option<R> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        live.get(handle).map(look)
    }

    /// Forgets the login behind `handle` (the module's conversation ended early: the client
    /// went away, the person pressed Ctrl-C). Only the caller that began it may; an unknown or
    /// finished handle is no error.
    pub fn cancel(&self, handle: &str, caller: Caller) -> Result<bool> {
        Ok(self.remove(handle, caller)?.is_some())
    }

    /// Removes and returns the session for `handle`: each prompt is answered once. `None` if
    /// unknown or past its deadline. A different caller gets an error and the session stays.
    /// Refuses `caller` if the login `handle` names was begun by another caller; an unknown
    /// handle passes (taking it finds nothing).
    pub fn check_owner(&self, handle: &str, caller: Caller) -> Result<()> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match live.get(handle) {
            Some(session) if session.caller != caller => Err(Error::AccessDenied(
                "this login was begun by another caller".into(),
            )),
            _ => Ok(()),
        }
    }

    pub fn take(&self, handle: &str, caller: Caller, now: u64) -> Result<Option<LoginSession>> {
        Ok(self
            .remove(handle, caller)?
            .filter(|session| now < session.deadline))
    }

    /// Removes the session for `handle` if `caller` began it; `None` if there is none.
    fn remove(&self, handle: &str, caller: Caller) -> Result<Option<LoginSession>> {
        if handle.len() > kron_proto::MAX_HANDLE_LEN {
            return Err(Error::InvalidArgument("login handle too long".into()));
        }
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match live.get(handle) {
            None => Ok(None),
            Some(session) if session.caller != caller => Err(Error::AccessDenied(
                "this login was begun by another caller".into(),
            )),
            Some(_) => Ok(live.remove(handle)),
        }
    }
}

/// Makes room for one more session matching `mine` when `max` are already waiting: the one
/// nearest its deadline goes.
fn drop_oldest(
    live: &mut HashMap<String, LoginSession>,
    max: usize,
    mine: impl Fn(&LoginSession) -> bool,
) {
    let mut own: Vec<(u64, &String)> = live
        .iter()
        .filter(|(_, s)| mine(s))
        .map(|(handle, s)| (s.deadline, handle))
        .collect();
    if own.len() >= max {
        own.sort();
        let oldest = own[0].1.clone();
        live.remove(&oldest);
    }
}

fn new_handle() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(uid: u32, deadline: u64) -> LoginSession {
        session_for(uid, &format!("u{deadline}"), deadline)
    }

    fn session_for(uid: u32, user: &str, deadline: u64) -> LoginSession {
        LoginSession::new(
            Caller::new(uid),
            LoginRequest {
                user: user.into(),
                ..LoginRequest::default()
            },
            LoginKind::Code {
                offer: Channels::default(),
            },
            deadline,
        )
    }

    #[test]
    fn handles_are_single_use_caller_bound_and_expire() {
        let sessions = Sessions::default();
        let handle = sessions.insert(session(0, 100), 10).unwrap();
        assert_eq!(handle.len(), 32);
        assert!(sessions.take(&handle, Caller::new(1000), 10).is_err());
        assert!(
            sessions
                .take(&handle, Caller::new(0), 10)
                .unwrap()
                .is_some()
        );
        assert!(
            sessions
                .take(&handle, Caller::new(0), 10)
                .unwrap()
                .is_none(),
            "single use"
        );
        let late = sessions.insert(session(0, 100), 10).unwrap();
        assert!(
            sessions.take(&late, Caller::new(0), 100).unwrap().is_none(),
            "expired"
        );
        assert!(sessions.take(&"x".repeat(65), Caller::new(0), 10).is_err());
    }

    #[test]
    fn one_user_cannot_crowd_out_others() {
        let sessions = Sessions::default();
        let handles: Vec<String> = (0..MAX_PER_USER + 3)
            .map(|i| sessions.insert(session(1000, 100 + i as u64), 10).unwrap())
            .collect();
        let live = sessions.live.lock().unwrap();
        assert_eq!(
            live.values().filter(|s| s.caller.uid == 1000).count(),
            MAX_PER_USER
        );
        assert!(!live.contains_key(&handles[0]), "the oldest went first");
        assert!(live.contains_key(handles.last().unwrap()));
    }

    #[test]
    fn bounded() {
        let sessions = Sessions::default();
        for n in 0..MAX_SESSIONS {
            sessions
                .insert(session_for(0, &format!("u{n}"), 100), 10)
                .unwrap();
        }
        assert!(
            sessions
                .insert(session_for(0, "one-more", 100), 10)
                .is_none()
        );
        assert!(
            sessions
                .insert(session_for(0, "one-more", 100), 100)
                .is_some(),
            "expired ones are purged"
        );
    }

    fn from(user: &str, rhost: &str, tty: &str, deadline: u64) -> LoginSession {
        let mut login = session_for(0, user, deadline);
        login.request.rhost = rhost.into();
        login.request.tty = tty.into();
        login
    }

    #[test]
    fn logins_of_one_account_from_one_origin_are_bounded() {
        let sessions = Sessions::default();
        let handles: Vec<String> = (0..MAX_PER_ORIGIN + 2)
            .map(|n| {
                sessions
                    .insert(from("alice", "192.0.2.7", "ssh", 100 + n as u64), 10)
                    .unwrap()
            })
            .collect();
        let live = sessions.live.lock().unwrap();
        assert_eq!(live.len(), MAX_PER_ORIGIN);
        assert!(!live.contains_key(&handles[0]), "the oldest went first");
    }

    #[test]
    fn a_flood_of_logins_as_one_name_does_not_push_out_the_real_one() {
        let sessions = Sessions::default();
        // alice waits at her prompt in sudo on her terminal, and over ssh from her desk.
        let sudo = sessions
            .insert(from("alice", "", "/dev/pts/3", 100), 10)
            .unwrap();
        let ssh = sessions
            .insert(from("alice", "198.51.100.4", "ssh", 100), 10)
            .unwrap();
        // Someone else starts logins as alice: `su alice` on their own terminal, and over ssh
        // from elsewhere, each left at the prompt after a wrong password.
        for n in 0..3 * MAX_PER_ORIGIN as u64 {
            sessions
                .insert(from("alice", "", "/dev/pts/9", 200 + n), 10)
                .unwrap();
            sessions
                .insert(from("alice", "203.0.113.9", "ssh", 200 + n), 10)
                .unwrap();
        }
        let live = sessions.live.lock().unwrap();
        assert!(live.contains_key(&sudo), "alice's sudo still waits");
        assert!(live.contains_key(&ssh), "alice's ssh login still waits");
        assert_eq!(
            live.len(),
            2 + 2 * MAX_PER_ORIGIN,
            "each origin holds at most its share"
        );
    }

    #[test]
    fn a_login_is_cancelled_by_its_caller_only() {
        let sessions = Sessions::default();
        let handle = sessions.insert(session(1000, 100), 10).unwrap();
        assert!(sessions.cancel(&handle, Caller::new(1001)).is_err());
        assert!(sessions.cancel(&handle, Caller::new(1000)).unwrap());
        assert!(
            !sessions.cancel(&handle, Caller::new(1000)).unwrap(),
            "gone: no error"
        );
        assert!(
            sessions
                .take(&handle, Caller::new(1000), 10)
                .unwrap()
                .is_none()
        );
        assert!(sessions.cancel(&"x".repeat(65), Caller::new(0)).is_err());
    }
}
