//! One entry of the flattened auth stack: a module line (or a substack line) at its nesting
//! level, and what kind of module it is.
#![forbid(unsafe_code)]

use super::grammar::{Action, Control};
use crate::doctor::files::Location;

/// libpam's bound on substack nesting; includes are bounded the same way here.
pub(super) const MAX_LEVEL: usize = 16;

/// Auth modules that check no secret of the person (access rules, environment, delays,
/// logging, keyrings, trust in the remote host): their success is not a first factor. Every
/// module not listed — pam_unix, pam_sss, pam_ldap, pam_krb5, pam_winbind, pam_userdb,
/// pam_google_authenticator, pam_oath, pam_u2f, pam_yubico, pam_exec, a site's own — is taken
/// to check a password, key or code, so a stack that needs one of them is not reported.
const NOT_A_FACTOR: [&str; 40] = [
    "pam_access.so",
    "pam_cap.so",
    "pam_debug.so",
    "pam_deny.so",
    "pam_echo.so",
    "pam_ecryptfs.so",
    "pam_env.so",
    "pam_faildelay.so",
    "pam_faillock.so",
    "pam_fscrypt.so",
    "pam_ftp.so",
    "pam_gnome_keyring.so",
    "pam_group.so",
    "pam_issue.so",
    "pam_keyinit.so",
    "pam_kwallet.so",
    "pam_kwallet5.so",
    "pam_lastlog.so",
    "pam_limits.so",
    "pam_listfile.so",
    "pam_localuser.so",
    "pam_loginuid.so",
    "pam_mail.so",
    "pam_motd.so",
    "pam_mount.so",
    "pam_nologin.so",
    "pam_permit.so",
    "pam_rhosts.so",
    "pam_rootok.so",
    "pam_securetty.so",
    "pam_selinux.so",
    "pam_sepermit.so",
    "pam_shells.so",
    "pam_succeed_if.so",
    "pam_tally2.so",
    "pam_time.so",
    "pam_timestamp.so",
    "pam_usertype.so",
    "pam_warn.so",
    "pam_wheel.so",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Module {
        /// As written: a name under the module directory or an absolute path.
        path: String,
        control: Control,
        /// The line is broken (bad control, missing include): libpam fails it every time.
        broken: bool,
        /// The module's arguments, as written.
        args: Vec<String>,
    },
    /// The `substack` line itself; its lines follow one level deeper.
    Substack,
}

/// One entry of the flattened auth stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Handler {
    pub(super) level: usize,
    pub(super) at: Location,
    pub(super) kind: Kind,
}

impl Handler {
    pub(super) fn module(&self) -> Option<&str> {
        match &self.kind {
            Kind::Module { path, .. } => Some(path.rsplit('/').next().unwrap_or(path)),
            Kind::Substack => None,
        }
    }

    pub(super) fn is_kron(&self) -> bool {
        matches!(self.module(), Some("pam_kron.so" | "libpam_kron.so"))
    }

    /// A module that checks a secret of the person (see [`NOT_A_FACTOR`]); pam_kron is not
    /// counted, being the second factor.
    pub(super) fn is_factor(&self) -> bool {
        self.module()
            .is_some_and(|module| !self.is_kron() && !NOT_A_FACTOR.contains(&module))
    }

    /// pam_kron's `timeout=` in whole seconds, the last one written (as the module reads
    /// them); `None` for another module, or when it is absent or not a number.
    pub(super) fn kron_timeout(&self) -> Option<u64> {
        match &self.kind {
            Kind::Module { args, .. } if self.is_kron() => args
                .iter()
                .rev()
                // libpam takes `[timeout=5]` as `timeout=5` (brackets let a value hold spaces).
                .map(|arg| {
                    arg.strip_prefix('[')
                        .and_then(|a| a.strip_suffix(']'))
                        .unwrap_or(arg)
                })
                .find_map(|arg| arg.strip_prefix("timeout="))
                .filter(|value| value.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|value| value.parse().ok()),
            _ => None,
        }
    }

    pub(super) fn action(&self, result: usize) -> Action {
        match &self.kind {
            Kind::Module { control, .. } => control.actions[result],
            Kind::Substack => Action::Ignore,
        }
    }

    /// `pam_unix.so (`sufficient`, /etc/pam.d/common-auth:3)`.
    pub(super) fn shown(&self) -> String {
        match &self.kind {
            Kind::Module { control, .. } => format!(
                "{} (`{}`, {})",
                self.module().unwrap_or("?"),
                control.text,
                self.at
            ),
            Kind::Substack => format!("substack ({})", self.at),
        }
    }
}
