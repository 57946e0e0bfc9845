//! Where a login is decided: [`decide`], one pure function of (the rule's mode, the stored
//! record, now). Which rule applies comes from `kron_common::rules`.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`LoginRequest`], [`Decision`] and [`decide`] |
//! | `authz.rs` | who may do what: the caller's uid, root, the admin group |
//! | `grace.rs` | step-up grace: a code passed recently in the same session and terminal |
//! | `strangers.rs` | throttling for names NSS does not know, and the self-service limiter |
//! | `links.rs` | rate limits for the page of one-time links, per client address and per link |

#![forbid(unsafe_code)]

pub mod authz;
pub mod grace;
pub mod links;
pub mod strangers;

use crate::store::record::UserRecord;
use kron_common::config::Mode;

/// What PAM told the module about this login.
#[derive(Debug, Clone, Default)]
pub struct LoginRequest {
    pub user: String,
    pub service: String,
    pub rhost: String,
    pub tty: String,
}

/// What a login needs, before any code is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to check: exempt, or optional without a token.
    Skip { mode: Mode },
    /// Ask for a code from the confirmed token.
    AskCode { mode: Mode },
    /// No token yet: enroll during this login.
    Enroll,
    /// A code is required but there is no token; the login cannot pass.
    NoToken,
    /// Too many failures; the next attempt is allowed at `until`.
    Throttled { until: u64 },
    /// The account does not exist: ask for a code anyway (so nothing reveals that) and refuse.
    UnknownUser,
}

/// Decides what this login needs.
pub fn decide(mode: Option<Mode>, record: Option<&UserRecord>, now: u64) -> Decision {
    let Some(mode) = mode else {
        return Decision::UnknownUser;
    };
    let has_token = record.is_some_and(|r| r.token.is_some());
    if mode == Mode::Exempt {
        return Decision::Skip { mode };
    }
    if !has_token && mode == Mode::Optional {
        return Decision::Skip { mode };
    }
    if !has_token && mode == Mode::Enroll {
        return Decision::Enroll;
    }
    // With or without a token: a throttle that skipped token-less accounts would tell a guesser
    // which accounts have one.
    if let Some(record) = record.filter(|r| r.is_locked(now)) {
        return Decision::Throttled {
            until: record.next_attempt,
        };
    }
    if has_token {
        Decision::AskCode { mode }
    } else {
        Decision::NoToken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::tests::enrolled;

    #[test]
    fn each_mode_with_and_without_token() {
        let token = enrolled();
        let now = 1000;
        assert_eq!(
            decide(Some(Mode::Exempt), Some(&token), now),
            Decision::Skip { mode: Mode::Exempt }
        );
        assert_eq!(
            decide(Some(Mode::Optional), None, now),
            Decision::Skip {
                mode: Mode::Optional
            }
        );
        assert_eq!(
            decide(Some(Mode::Optional), Some(&token), now),
            Decision::AskCode {
                mode: Mode::Optional
            }
        );
        assert_eq!(decide(Some(Mode::Require), None, now), Decision::NoToken);
        assert_eq!(
            decide(Some(Mode::Require), Some(&token), now),
            Decision::AskCode {
                mode: Mode::Require
            }
        );
        assert_eq!(decide(Some(Mode::Enroll), None, now), Decision::Enroll);
        assert_eq!(
            decide(Some(Mode::Enroll), Some(&token), now),
            Decision::AskCode { mode: Mode::Enroll }
        );
        assert_eq!(decide(None, Some(&token), now), Decision::UnknownUser);
        let pending_only = UserRecord {
            pending: enrolled().token.map(|t| crate::store::record::Pending {
                token: t,
                expires: 5,
                at_login: false,
                delivered: None,
                link: None,
            }),
            ..UserRecord::default()
        };
        assert_eq!(
            decide(Some(Mode::Require), Some(&pending_only), now),
            Decision::NoToken
        );
    }

    #[test]
    fn throttled_users_are_refused_before_any_prompt() {
        let locked = UserRecord {
            next_attempt: 2000,
            failures: 5,
            ..enrolled()
        };
        assert_eq!(
            decide(Some(Mode::Require), Some(&locked), 1999),
            Decision::Throttled { until: 2000 }
        );
        assert_eq!(
            decide(Some(Mode::Require), Some(&locked), 2000),
            Decision::AskCode {
                mode: Mode::Require
            }
        );
        assert_eq!(
            decide(Some(Mode::Exempt), Some(&locked), 1999),
            Decision::Skip { mode: Mode::Exempt }
        );
    }
}
