//! Every login decision, as one pure function of (config, account facts, stored record, now).

use crate::config::{Config, GroupRule, Mode};
use crate::contact::Channels;
use crate::error::{Error, Result};
use crate::record::UserRecord;
use crate::users::{Account, Directory};

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

/// What the matching rule says about one login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Step-up grace in seconds; 0 = off.
    pub grace: u64,
    /// Channels a code goes to before an enrollment is shown (docs/delivery.md).
    pub validate_enrollment: Channels,
    /// Channels a login code may be sent on instead of TOTP.
    pub fallback: Channels,
}

impl Policy {
    fn default_of(config: &Config) -> Policy {
        Policy {
            mode: config.default_mode,
            grace: 0,
            validate_enrollment: config.validate_enrollment,
            fallback: config.fallback,
        }
    }

    /// What `rule` decides; the channel lists it leaves out come from the top level.
    fn of_rule(rule: &GroupRule, config: &Config) -> Policy {
        Policy {
            mode: rule.mode,
            grace: rule.grace,
            validate_enrollment: rule
                .validate_enrollment
                .unwrap_or(config.validate_enrollment),
            fallback: rule.fallback.unwrap_or(config.fallback),
        }
    }
}

/// The first rule whose group holds the account and whose services include `service`, else
/// the default mode without grace.
pub fn policy_for(
    config: &Config,
    account: &Account,
    service: &str,
    directory: &dyn Directory,
) -> Result<Policy> {
    // The strongest rule skipped because NSS could not resolve its group.
    let mut unresolved: Option<&GroupRule> = None;
    let mut decided = Policy::default_of(config);
    for rule in config
        .groups
        .iter()
        .filter(|r| r.applies_to_service(service))
    {
        if rule.name == "*" {
            decided = Policy::of_rule(rule, config);
            break;
        }
        match directory.group_gid(&rule.name)? {
            Some(gid) if account.gids.contains(&gid) => {
                decided = Policy::of_rule(rule, config);
                break;
            }
            Some(_) => {}
            None => {
                if unresolved.is_none_or(|u| strength(rule.mode) > strength(u.mode)) {
                    unresolved = Some(rule);
                }
            }
        }
    }
    // A group NSS cannot resolve (directory down, typo) must not quietly hand its members a
    // weaker rule: fail closed. `otpd --check-config` and `kronctl doctor` warn about typos.
    if let Some(rule) = unresolved.filter(|u| strength(u.mode) > strength(decided.mode)) {
        return Err(Error::System(format!(
            "group {:?} of a {} rule cannot be resolved; refusing to fall back to {}",
            rule.name,
            rule.mode.as_str(),
            decided.mode.as_str()
        )));
    }
    Ok(decided)
}

/// How much a mode asks of a user, for "is this weaker?".
fn strength(mode: Mode) -> u8 {
    match mode {
        Mode::Exempt => 0,
        Mode::Optional => 1,
        Mode::Enroll | Mode::Require => 2,
    }
}

/// The mode [`policy_for`] decides.
pub fn mode_for(
    config: &Config,
    account: &Account,
    service: &str,
    directory: &dyn Directory,
) -> Result<Mode> {
    Ok(policy_for(config, account, service, directory)?.mode)
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
    use crate::config::GroupRule;
    use crate::record::tests::enrolled;
    use crate::users::fake::FakeDirectory;

    fn rule(name: &str, mode: Mode, services: Option<&[&str]>) -> GroupRule {
        GroupRule {
            name: name.into(),
            mode,
            services: services.map(|s| s.iter().map(|x| x.to_string()).collect()),
            grace: 0,
            validate_enrollment: None,
            fallback: None,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_services_refine() {
        let directory = FakeDirectory::default()
            .with_user("alice", 1001, &["wheel", "staff"])
            .with_user("bob", 1002, &["staff"])
            .with_user("carol", 1003, &[]);
        let config = Config {
            default_mode: Mode::Optional,
            groups: vec![
                rule("wheel", Mode::Require, Some(&["sudo"])),
                rule("staff", Mode::Enroll, None),
                rule("ghost-group", Mode::Exempt, None),
            ],
            ..Config::default()
        };
        let account = |name| directory.by_name(name).unwrap().unwrap();
        let mode = |name, service| mode_for(&config, &account(name), service, &directory).unwrap();
        assert_eq!(mode("alice", "sudo"), Mode::Require);
        assert_eq!(
            mode("alice", "sshd"),
            Mode::Enroll,
            "wheel rule is sudo-only"
        );
        assert_eq!(mode("bob", "sudo"), Mode::Enroll);
        assert_eq!(mode("carol", "sshd"), Mode::Optional, "default mode");
        let unresolvable = Config {
            groups: vec![rule("ghost-admins", Mode::Require, None)],
            ..config.clone()
        };
        assert!(
            mode_for(&unresolvable, &account("carol"), "sshd", &directory).is_err(),
            "a require rule NSS cannot resolve does not fall back to optional"
        );
        let weaker = Config {
            groups: vec![rule("ghost-admins", Mode::Exempt, None)],
            ..config.clone()
        };
        assert_eq!(
            mode_for(&weaker, &account("carol"), "sshd", &directory).unwrap(),
            Mode::Optional
        );
        let everyone = Config {
            groups: vec![rule("*", Mode::Exempt, Some(&["cron"]))],
            ..config.clone()
        };
        assert_eq!(
            mode_for(&everyone, &account("carol"), "cron", &directory).unwrap(),
            Mode::Exempt
        );
        assert_eq!(
            mode_for(&everyone, &account("carol"), "sshd", &directory).unwrap(),
            Mode::Optional
        );
    }

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
            pending: enrolled().token.map(|t| crate::record::Pending {
                token: t,
                expires: 5,
                at_login: false,
                delivered: None,
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
