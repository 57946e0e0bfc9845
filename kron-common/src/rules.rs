//! Which `[[group]]` rule applies to a login: the first rule whose group holds the account and
//! whose services include the PAM service, else the default mode. otpd decides logins with it;
//! `kronctl doctor` uses the same lookup to predict them.

use crate::config::{Config, GroupRule, Mode};
use crate::contact::Channels;
use crate::users::{Account, Directory, DirectoryError};

/// Why no rule could be chosen. Either way the login fails closed.
#[derive(Debug)]
pub enum RuleError {
    /// NSS failed while matching groups.
    Directory(DirectoryError),
    /// A rule stronger than the one that would apply names a group NSS does not know
    /// (directory down, typo): its members must not quietly get the weaker rule.
    UnresolvedGroup {
        group: String,
        mode: Mode,
        fallback: Mode,
    },
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleError::Directory(e) => e.fmt(f),
            RuleError::UnresolvedGroup {
                group,
                mode,
                fallback,
            } => write!(
                f,
                "group {group:?} of a {} rule cannot be resolved, and the rule asks more than \
                 the one that would apply instead ({}); refusing to fall back to it",
                mode.as_str(),
                fallback.as_str()
            ),
        }
    }
}

impl std::error::Error for RuleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuleError::Directory(e) => Some(e),
            RuleError::UnresolvedGroup { .. } => None,
        }
    }
}

impl From<DirectoryError> for RuleError {
    fn from(e: DirectoryError) -> Self {
        RuleError::Directory(e)
    }
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
) -> Result<Policy, RuleError> {
    // Rules skipped because NSS could not resolve their group: the account may be a member.
    let mut unresolved: Vec<&GroupRule> = Vec::new();
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
            None => unresolved.push(rule),
        }
    }
    // A group NSS cannot resolve (directory down, typo) must not quietly hand its members a
    // weaker rule, in any respect: fail closed. `otpd --check-config` and `kronctl doctor` warn
    // about typos.
    if let Some(rule) = unresolved
        .into_iter()
        .find(|rule| Policy::of_rule(rule, config).asks_more_than(&decided))
    {
        return Err(RuleError::UnresolvedGroup {
            group: rule.name.clone(),
            mode: rule.mode,
            fallback: decided.mode,
        });
    }
    Ok(decided)
}

impl Policy {
    /// Whether this rule asks more of a login than `other` in any respect: a stricter mode,
    /// less step-up grace, a fallback channel fewer, or a contact to prove where `other`
    /// proves none.
    fn asks_more_than(&self, other: &Policy) -> bool {
        // An exempt rule asks for nothing, whatever else it sets.
        if self.mode == Mode::Exempt {
            return false;
        }
        if strength(self.mode) > strength(other.mode) {
            return true;
        }
        // Every other mode asks a token holder for a code, as `other` does then (it is not
        // exempt: that is weaker than this one): what goes with the prompt counts whichever
        // mode is the stricter, or a fall-through to a "stricter" rule would hand token holders
        // its grace and its fallback channels.
        if self.grace < other.grace || other.fallback.iter().any(|c| !self.fallback.contains(c)) {
            return true;
        }
        // Only `enroll` shows an enrollment to a user without a token (and `require` one that
        // was delivered): validation guards it where both rules would show one.
        self.mode == other.mode
            && matches!(self.mode, Mode::Enroll | Mode::Require)
            && !self.validate_enrollment.is_empty()
            && other.validate_enrollment.is_empty()
    }
}

/// How much a mode asks of a user, for "is this weaker?". `require` asks more than `enroll`:
/// without a token, `enroll` lets whoever has the password set one up.
fn strength(mode: Mode) -> u8 {
    match mode {
        Mode::Exempt => 0,
        Mode::Optional => 1,
        Mode::Enroll => 2,
        Mode::Require => 3,
    }
}

/// The mode [`policy_for`] decides.
pub fn mode_for(
    config: &Config,
    account: &Account,
    service: &str,
    directory: &dyn Directory,
) -> Result<Mode, RuleError> {
    Ok(policy_for(config, account, service, directory)?.mode)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        // `require` for a group NSS cannot resolve, before a rule for everyone: whoever would
        // fall through to `enroll` (a token set up by whoever has the password), or to the same
        // mode with step-up grace, is refused instead; a rule that asks less is no reason to.
        let fall_through = |first: GroupRule, then: GroupRule| {
            let config = Config {
                groups: vec![first, then],
                ..config.clone()
            };
            mode_for(&config, &account("carol"), "sshd", &directory)
        };
        let graced = |mode, grace| GroupRule {
            grace,
            ..rule("*", mode, None)
        };
        assert!(
            fall_through(
                rule("ghost-admins", Mode::Require, None),
                rule("*", Mode::Enroll, None)
            )
            .is_err()
        );
        assert!(
            fall_through(
                rule("ghost-admins", Mode::Require, None),
                graced(Mode::Require, 300)
            )
            .is_err()
        );
        assert_eq!(
            fall_through(
                GroupRule {
                    grace: 300,
                    ..rule("ghost-admins", Mode::Require, None)
                },
                graced(Mode::Require, 0)
            )
            .unwrap(),
            Mode::Require
        );
        assert_eq!(
            fall_through(
                rule("ghost-admins", Mode::Enroll, None),
                rule("*", Mode::Require, None)
            )
            .unwrap(),
            Mode::Require
        );
        // A "stricter" rule to fall through to is still weaker for token holders where it
        // adds grace or a fallback channel: both modes ask them for a code.
        let device_only = |mode| GroupRule {
            fallback: Some(Channels::of(&[])),
            ..rule("ghost-admins", mode, None)
        };
        let mailed = GroupRule {
            fallback: Some(Channels::of(&[kron_proto::Channel::Email])),
            ..rule("*", Mode::Require, None)
        };
        assert!(fall_through(device_only(Mode::Enroll), mailed.clone()).is_err());
        assert!(fall_through(device_only(Mode::Optional), mailed).is_err());
        assert!(
            fall_through(
                rule("ghost-admins", Mode::Enroll, None),
                graced(Mode::Require, 300)
            )
            .is_err()
        );
        // But an exempt rule asks for nothing, whatever the rule after it offers.
        assert_eq!(
            fall_through(
                rule("ghost-admins", Mode::Exempt, None),
                graced(Mode::Require, 300)
            )
            .unwrap(),
            Mode::Require
        );
        // Two exempt rules ask for nothing, whatever else they set.
        assert_eq!(
            fall_through(
                GroupRule {
                    validate_enrollment: Some(Channels::of(&[kron_proto::Channel::Email])),
                    ..rule("ghost-admins", Mode::Exempt, None)
                },
                rule("*", Mode::Exempt, None)
            )
            .unwrap(),
            Mode::Exempt
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
}
