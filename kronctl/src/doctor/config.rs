//! `otpd-config`: otpd's config loads with otpd's own loader, and what it means for services.
#![forbid(unsafe_code)]

use std::path::Path;

use kron_common::config::{Config, DEFAULT_CONFIG_PATH, Mode};
use kron_common::users::{Directory, Nss};

use super::files::Root;
use super::report::{Finding, Findings};

/// How much a service's policy asks for codes, over every account that could log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Asks {
    /// Every rule that can apply is `exempt`.
    Never,
    /// Only `optional` (besides `exempt`): codes are asked of enrolled users.
    Enrolled,
    /// Some rule, or the default, is `require` or `enroll`.
    Always,
}

/// otpd's config as loaded by otpd's own code; `None` when it could not be loaded.
#[derive(Debug)]
pub struct Policy {
    pub config: Option<Config>,
    /// Where it was read from, for messages.
    pub origin: String,
}

impl Policy {
    /// How much the policy can ask for codes on `service`, over all accounts. An unreadable
    /// config counts as [`Asks::Always`], so checks stay strict rather than pass silently.
    ///
    /// This does not decide a login: it only bounds what `kron_common::rules::mode_for` can answer
    /// for some account. Rules are tried in file order, so the first `*` rule for the service
    /// hides every later rule and the default.
    pub fn asks(&self, service: &str) -> Asks {
        let Some(modes) = self.modes(service) else {
            return Asks::Always;
        };
        modes
            .into_iter()
            .map(|mode| match mode {
                Mode::Require | Mode::Enroll => Asks::Always,
                Mode::Optional => Asks::Enrolled,
                Mode::Exempt => Asks::Never,
            })
            .max()
            .unwrap_or(Asks::Never)
    }

    /// Every mode some account can get on `service`: the modes of the rules for the service up
    /// to and including the first `*` rule, and the default mode if no `*` rule hides it.
    /// `None` when the config could not be loaded (any mode is then possible).
    pub fn modes(&self, service: &str) -> Option<Vec<Mode>> {
        let config = self.config.as_ref()?;
        let mut modes = Vec::new();
        for rule in config
            .groups
            .iter()
            .filter(|r| r.applies_to_service(service))
        {
            if !modes.contains(&rule.mode) {
                modes.push(rule.mode);
            }
            if rule.name == "*" {
                return Some(modes);
            }
        }
        if !modes.contains(&config.default_mode) {
            modes.push(config.default_mode);
        }
        Some(modes)
    }
}

/// Loads the config the way otpd does: `--config FILE` must exist; the default path under the
/// root may be missing (all defaults).
pub fn check(root: &Root, explicit: Option<&Path>, out: &mut Findings) -> Policy {
    let origin = match explicit {
        Some(path) => path.display().to_string(),
        None => DEFAULT_CONFIG_PATH.to_owned(),
    };
    let (path, is_explicit) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => match root.path(DEFAULT_CONFIG_PATH) {
            Ok(path) => (path, false),
            Err(error) => return unusable(format!("{origin}: {error}"), origin, out),
        },
    };
    let missing_default = !is_explicit && !path.exists();
    match Config::load(&path, is_explicit) {
        Ok(config) => {
            if missing_default {
                out.push(Finding::ok(
                    "otpd-config",
                    format!("{origin} does not exist: otpd runs on its defaults"),
                ));
            } else {
                out.push(Finding::ok("otpd-config", format!("{origin} is valid")));
            }
            if out.wants("otpd-config") {
                unknown_groups(&config, &origin, out);
            }
            Policy {
                config: Some(config),
                origin,
            }
        }
        Err(error) => {
            // otpd's message names the file on disk; show it under the system path.
            let message = error
                .to_string()
                .replace(&path.display().to_string(), &origin);
            unusable(message, origin, out)
        }
    }
}

/// The finding for a config otpd cannot use, and the policy the other checks then assume.
fn unusable(message: String, origin: String, out: &mut Findings) -> Policy {
    out.push(Finding::error(
        "otpd-config",
        format!("otpd cannot use its config: {message}; checks below assume codes are required"),
        format!("fix the line named, then run `otpd --check-config --config {origin}`"),
    ));
    Policy {
        config: None,
        origin,
    }
}

/// A rule naming a group NSS does not know matches nobody: the people it was meant for get
/// the default mode instead.
fn unknown_groups(config: &Config, origin: &str, out: &mut Findings) {
    for rule in config.groups.iter().filter(|r| r.name != "*") {
        match Nss.group_gid(&rule.name) {
            Ok(Some(_)) => {}
            Ok(None) => out.push(Finding::warning(
                "otpd-config",
                format!(
                    "rule for group {} ({}) matches nobody: NSS does not know the group",
                    rule.name,
                    rule.mode.as_str()
                ),
                format!("create the group or correct its name in {origin}"),
            )),
            Err(error) => out.push(Finding::warning(
                "otpd-config",
                format!("cannot look up group {}: {error}", rule.name),
                "check NSS (getent group) and the directory service it uses",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy {
            config: Some(Config::parse(text, "otpd.toml").unwrap()),
            origin: "otpd.toml".into(),
        }
    }

    #[test]
    fn asks_follows_rules_services_and_default() {
        let defaults = policy("");
        assert_eq!(defaults.asks("sshd"), Asks::Enrolled, "default optional");

        let sudo_only = policy(
            "default_mode = \"exempt\"\n[[group]]\nname = \"wheel\"\nmode = \"require\"\nservices = [\"sudo\"]\n",
        );
        assert_eq!(sudo_only.asks("sudo"), Asks::Always);
        assert_eq!(sudo_only.asks("sshd"), Asks::Never);

        let everyone_exempt_first = policy(
            "default_mode = \"require\"\n[[group]]\nname = \"*\"\nmode = \"exempt\"\nservices = [\"sshd\"]\n[[group]]\nname = \"wheel\"\nmode = \"require\"\n",
        );
        assert_eq!(everyone_exempt_first.asks("sshd"), Asks::Never);
        assert_eq!(everyone_exempt_first.asks("sudo"), Asks::Always);

        let enroll = policy("default_mode = \"enroll\"\n");
        assert_eq!(enroll.asks("sudo"), Asks::Always);

        let unknown = Policy {
            config: None,
            origin: "x".into(),
        };
        assert_eq!(unknown.asks("sshd"), Asks::Always);
        assert_eq!(unknown.modes("sshd"), None);
    }

    #[test]
    fn modes_lists_what_some_account_can_get() {
        assert_eq!(policy("").modes("sshd"), Some(vec![Mode::Optional]));
        let rules = policy(
            "default_mode = \"require\"\n[[group]]\nname = \"ops\"\nmode = \"exempt\"\nservices = [\"sshd\"]\n[[group]]\nname = \"*\"\nmode = \"enroll\"\nservices = [\"sshd\", \"sudo\"]\n[[group]]\nname = \"late\"\nmode = \"optional\"\n",
        );
        assert_eq!(
            rules.modes("sshd"),
            Some(vec![Mode::Exempt, Mode::Enroll]),
            "the `*` rule hides later rules and the default"
        );
        assert_eq!(rules.modes("sudo"), Some(vec![Mode::Enroll]));
        assert_eq!(rules.modes("su"), Some(vec![Mode::Optional, Mode::Require]));
    }

    #[test]
    fn config_errors_and_missing_default() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let mut out = Findings::new(&[]);
        let missing = check(&root, None, &mut out);
        assert!(missing.config.is_some());
        let explicit_missing = check(&root, Some(&dir.path().join("nope.toml")), &mut out);
        assert!(explicit_missing.config.is_none());

        std::fs::create_dir_all(dir.path().join("etc/kron")).unwrap();
        std::fs::write(
            dir.path().join("etc/kron/otpd.toml"),
            "\ndefault_mode = \"sometimes\"\n",
        )
        .unwrap();
        let invalid = check(&root, None, &mut out);
        assert!(invalid.config.is_none());
        let findings = out.into_vec();
        assert_eq!(findings[0].severity, crate::doctor::report::Severity::Ok);
        assert_eq!(findings[1].severity, crate::doctor::report::Severity::Error);
        assert!(
            findings[2].message.contains("/etc/kron/otpd.toml:2:"),
            "{:?}",
            findings[2]
        );
    }
}
