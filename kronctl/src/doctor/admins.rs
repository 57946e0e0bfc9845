//! `admin-lockout`: no administrator is required to pass a code they cannot produce.
//!
//! Administrators are root and the members of otpd's `admin_group`, `sudo` and `wheel`. For
//! each, the mode for sshd and sudo comes from otpd's own policy code (`mode_for` over NSS), and
//! otpd is asked over the bus whether they hold a confirmed token. `require` without a token
//! means that person is refused at the code prompt: the lock-out this check exists for.
#![forbid(unsafe_code)]

use kron_common::config::Mode;
use kron_common::rules::mode_for;
use kron_common::users::{Directory, Nss};
use nix::unistd::Group;

use super::config::Policy;
use super::dbus::Otpd;
use super::report::{Finding, Findings};

/// Groups whose members administer a Debian or RHEL-like machine, besides otpd's admin group.
const SUDO_GROUPS: [&str; 2] = ["sudo", "wheel"];

/// Which services can lock someone out on this machine.
#[derive(Debug, Clone, Copy)]
pub struct Services {
    /// sshd is installed.
    pub sshd: bool,
    /// root may log in over SSH in a way that reaches pam_kron.
    pub root_over_ssh: bool,
    /// /etc/pam.d/sudo exists.
    pub sudo: bool,
}

/// An administrator and why they count as one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Admin {
    name: String,
    why: String,
}

pub async fn check(
    policy: &Policy,
    services: &Services,
    otpd: Result<&Otpd, &String>,
    out: &mut Findings,
) {
    let Some(config) = &policy.config else {
        out.push(Finding::warning(
            "admin-lockout",
            "not checked: otpd's config did not load, so the policy for administrators is unknown",
            "fix the otpd-config error, then run kronctl doctor again",
        ));
        return;
    };
    let mut groups = vec![config.admin_group.as_str()];
    groups.extend(SUDO_GROUPS.iter().filter(|g| **g != config.admin_group));
    let admins = administrators(&groups, out);

    let mut checked = Vec::new();
    let mut problems = 0;
    for admin in &admins {
        let account = match Nss.by_name(&admin.name) {
            Ok(Some(account)) => account,
            // A stale group member without an account cannot log in at all.
            Ok(None) => continue,
            Err(error) => {
                problems += 1;
                out.push(Finding::warning(
                    "admin-lockout",
                    format!("cannot look up {} ({}): {error}", admin.name, admin.why),
                    "check NSS (getent passwd) and the directory service it uses",
                ));
                continue;
            }
        };
        let mut candidates = Vec::new();
        if services.sshd && (account.uid != 0 || services.root_over_ssh) {
            candidates.push("sshd");
        }
        // sudo does not ask root to authenticate.
        if services.sudo && account.uid != 0 {
            candidates.push("sudo");
        }
        let mut required = Vec::new();
        for service in candidates {
            match mode_for(config, &account, service, &Nss) {
                Ok(Mode::Require) => required.push(service),
                Ok(_) => {}
                Err(error) => {
                    problems += 1;
                    out.push(Finding::warning(
                        "admin-lockout",
                        format!(
                            "cannot work out {}'s mode for {service}: {error}",
                            admin.name
                        ),
                        "check NSS (getent group) and the directory service it uses",
                    ));
                }
            }
        }
        checked.push(admin.name.clone());
        if required.is_empty() {
            continue;
        }
        let services_text = required.join(" and ");
        let status = match otpd {
            Ok(otpd) => otpd.status(&admin.name).await,
            Err(reason) => Err(reason.clone()),
        };
        match status {
            Ok(status) if status.enrolled && status.locked => {
                problems += 1;
                out.push(Finding::warning(
                    "admin-lockout",
                    format!(
                        "{} ({}) is throttled after {} failed codes and needs a code for {services_text}",
                        admin.name, admin.why, status.failures
                    ),
                    format!("if that was them, clear it: `kronctl unlock {}`", admin.name),
                ));
            }
            Ok(status) if status.enrolled => {}
            Ok(status) => {
                problems += 1;
                out.push(Finding::error(
                    "admin-lockout",
                    format!(
                        "{} ({}) has no confirmed token, but the policy requires a code for {services_text}: they would be locked out{}",
                        admin.name,
                        admin.why,
                        if status.pending { " (an enrollment waits for confirmation)" } else { "" }
                    ),
                    format!(
                        "enroll them now: `kronctl enroll {0}` and `kronctl confirm {0} CODE`, or give them an `enroll` rule in {1}",
                        admin.name, policy.origin
                    ),
                ));
            }
            Err(reason) => {
                problems += 1;
                out.push(Finding::warning(
                    "admin-lockout",
                    format!(
                        "not checked for {} ({}), who needs a code for {services_text}: cannot ask otpd whether they hold a token: {reason}",
                        admin.name, admin.why
                    ),
                    "make otpd reachable (see otpd-reachable) and run kronctl doctor as root",
                ));
            }
        }
    }
    if problems == 0 {
        out.push(Finding::ok(
            "admin-lockout",
            format!(
                "no administrator would be locked out ({} checked: {})",
                checked.len(),
                checked.join(", ")
            ),
        ));
    }
}

/// root, then the members of `groups`, each once, in that order.
fn administrators(groups: &[&str], out: &mut Findings) -> Vec<Admin> {
    let mut admins = vec![Admin {
        name: "root".into(),
        why: "root".into(),
    }];
    for group in groups {
        match Group::from_name(group) {
            Ok(Some(found)) => {
                for member in found.mem {
                    if !admins.iter().any(|a| a.name == member) {
                        admins.push(Admin {
                            name: member,
                            why: format!("member of {group}"),
                        });
                    }
                }
            }
            Ok(None) => {}
            Err(error) => out.push(Finding::warning(
                "admin-lockout",
                format!("cannot list the members of group {group}: {error}"),
                "check NSS (getent group) and the directory service it uses",
            )),
        }
    }
    admins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_comes_first_and_members_once() {
        let mut out = Findings::new(&[]);
        let admins = administrators(&["root", "root", "no-such-group-kron-test"], &mut out);
        assert_eq!(admins[0].name, "root");
        let names: Vec<_> = admins.iter().map(|a| a.name.as_str()).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique);
        assert!(out.into_vec().is_empty());
    }

    #[test]
    fn unreadable_config_is_reported_not_passed() {
        let policy = Policy {
            config: None,
            origin: "otpd.toml".into(),
        };
        let services = Services {
            sshd: true,
            root_over_ssh: true,
            sudo: true,
        };
        let mut out = Findings::new(&[]);
        let reason = "otpd is not reachable".to_owned();
        zbus::block_on(check(&policy, &services, Err(&reason), &mut out));
        let findings = out.into_vec();
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].severity,
            crate::doctor::report::Severity::Warning
        );
    }

    #[test]
    fn root_required_without_otpd_is_not_silently_passed() {
        let policy = Policy {
            config: Some(
                kron_common::config::Config::parse("default_mode = \"require\"\n", "otpd.toml")
                    .unwrap(),
            ),
            origin: "otpd.toml".into(),
        };
        let services = Services {
            sshd: true,
            root_over_ssh: true,
            sudo: true,
        };
        let mut out = Findings::new(&[]);
        let reason = "otpd is not reachable at unix:path=/x: gone".to_owned();
        zbus::block_on(check(&policy, &services, Err(&reason), &mut out));
        let findings = out.into_vec();
        let root = findings
            .iter()
            .find(|f| f.message.starts_with("not checked for root"))
            .unwrap_or_else(|| panic!("{findings:#?}"));
        assert!(root.message.contains("sshd"), "{root:?}");
        assert!(
            !root.message.contains("sudo"),
            "root is never asked by sudo"
        );

        // root may not log in over SSH and sudo does not ask root: nothing to check for root.
        let services = Services {
            root_over_ssh: false,
            ..services
        };
        let mut out = Findings::new(&[]);
        zbus::block_on(check(&policy, &services, Err(&reason), &mut out));
        assert!(
            !out.into_vec()
                .iter()
                .any(|f| f.message.contains("for root")),
        );
    }
}
