//! One service's auth stack, flattened as libpam does: `@include` and `include` inline the auth
//! lines of another file, `substack` adds a nested level whose `done`/`die` only end the
//! substack.

use super::super::{Location, Root};
use super::grammar::*;

pub const PAM_DIR: &str = "/etc/pam.d";
/// libpam's bound on substack nesting; includes are bounded the same way here.
pub(super) const MAX_LEVEL: usize = 16;
pub(super) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Auth modules that check no secret of the person (access rules, environment, delays,
/// logging, keyrings, trust in the remote host): their success is not a first factor. Every
/// module not listed — pam_unix, pam_sss, pam_ldap, pam_krb5, pam_winbind, pam_userdb,
/// pam_google_authenticator, pam_oath, pam_u2f, pam_yubico, pam_exec, a site's own — is taken
/// to check a password, key or code, so a stack that needs one of them is not reported.
pub(super) const NOT_A_FACTOR: [&str; 40] = [
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

/// The auth stack of one PAM service.
#[derive(Debug)]
pub struct Stack {
    pub service: String,
    /// The service file, as a system path.
    pub file: String,
    pub(super) exists: bool,
    pub(super) handlers: Vec<Handler>,
    /// Unreadable files and lines libpam would refuse.
    pub problems: Vec<String>,
}

impl Stack {
    /// Reads `/etc/pam.d/SERVICE` under `root` with everything it includes.
    pub fn load(root: &Root, service: &str) -> Stack {
        let file = format!("{PAM_DIR}/{service}");
        let mut stack = Stack {
            service: service.to_owned(),
            exists: root.exists(&file),
            file: file.clone(),
            handlers: Vec::new(),
            problems: Vec::new(),
        };
        if stack.exists {
            stack.read(root, &file, 0, &mut Vec::new());
        }
        stack
    }

    /// Parses text as if it were `/etc/pam.d/SERVICE` (for tests).
    #[cfg(test)]
    pub(super) fn parse(service: &str, text: &str) -> Stack {
        let mut stack = Stack {
            service: service.to_owned(),
            exists: true,
            file: format!("{PAM_DIR}/{service}"),
            handlers: Vec::new(),
            problems: Vec::new(),
        };
        let file = stack.file.clone();
        let root = Root::new(std::path::Path::new("/nonexistent-kron-test-root"));
        stack.parse_text(&root, &file, text, 0, &mut vec![file.clone()]);
        stack
    }

    pub fn exists(&self) -> bool {
        self.exists
    }

    pub fn has_kron(&self) -> bool {
        self.handlers.iter().any(Handler::is_kron)
    }

    /// The modules of the stack taken as first factors, each once, in stack order.
    pub fn factors(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for name in self
            .handlers
            .iter()
            .filter(|h| h.is_factor())
            .filter_map(Handler::module)
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Reads `file` at `level`; false if it could not be read (libpam then fails the line
    /// that included it).
    pub(super) fn read(
        &mut self,
        root: &Root,
        file: &str,
        level: usize,
        chain: &mut Vec<String>,
    ) -> bool {
        if chain.len() > MAX_LEVEL || chain.iter().any(|seen| seen == file) {
            self.problems
                .push(format!("{file} includes itself or nests too deep"));
            return false;
        }
        let text = match kron_common::files::read_bounded(&root.path(file), MAX_FILE_BYTES) {
            Ok(text) => text,
            Err(error) => {
                self.problems.push(format!(
                    "cannot read {file}: {error}; libpam fails the line that includes it"
                ));
                return false;
            }
        };
        chain.push(file.to_owned());
        self.parse_text(root, file, &text, level, chain);
        chain.pop();
        true
    }

    pub(super) fn parse_text(
        &mut self,
        root: &Root,
        file: &str,
        text: &str,
        level: usize,
        chain: &mut Vec<String>,
    ) {
        for (line, words) in logical_lines(text) {
            let at = Location {
                file: file.to_owned(),
                line,
            };
            let Some(first) = words.first() else {
                continue;
            };
            if first.eq_ignore_ascii_case("@include") {
                match words.get(1) {
                    Some(target) => self.include(root, target, level, chain, &at, "@include"),
                    None => self.problems.push(format!("{at}: @include without a file")),
                }
                continue;
            }
            let kind = first
                .strip_prefix('-')
                .unwrap_or(first)
                .to_ascii_lowercase();
            if !matches!(kind.as_str(), "auth" | "account" | "password" | "session") {
                self.problems
                    .push(format!("{at}: unknown module type {first:?}"));
                continue;
            }
            if kind != "auth" {
                continue;
            }
            let (Some(control), Some(module)) = (words.get(1), words.get(2)) else {
                self.problems
                    .push(format!("{at}: expected TYPE CONTROL MODULE"));
                self.push_broken(level, at, words.get(1).map_or("", String::as_str));
                continue;
            };
            match control.to_ascii_lowercase().as_str() {
                "include" => self.include(root, module, level, chain, &at, control),
                "substack" => {
                    if level + 1 > MAX_LEVEL {
                        self.problems
                            .push(format!("{at}: substacks nest deeper than {MAX_LEVEL}"));
                        self.push_broken(level, at, control);
                        continue;
                    }
                    self.handlers.push(Handler {
                        level,
                        at: at.clone(),
                        kind: Kind::Substack,
                    });
                    let target = include_path(module);
                    if !self.read(root, &target, level + 1, chain) {
                        self.push_broken(level + 1, at, control);
                    }
                }
                _ => match Control::parse(control) {
                    Some(parsed) => self.handlers.push(Handler {
                        level,
                        at,
                        kind: Kind::Module {
                            path: module.clone(),
                            control: parsed,
                            broken: false,
                        },
                    }),
                    None => {
                        self.problems.push(format!(
                            "{at}: libpam refuses the control {control:?} and fails this line every time"
                        ));
                        self.handlers.push(Handler {
                            level,
                            at,
                            kind: Kind::Module {
                                path: module.clone(),
                                control: Control::must_fail(control),
                                broken: true,
                            },
                        });
                    }
                },
            }
        }
    }

    pub(super) fn include(
        &mut self,
        root: &Root,
        target: &str,
        level: usize,
        chain: &mut Vec<String>,
        at: &Location,
        how: &str,
    ) {
        let file = include_path(target);
        if !self.read(root, &file, level, chain) {
            self.push_broken(level, at.clone(), how);
        }
    }

    pub(super) fn push_broken(&mut self, level: usize, at: Location, how: &str) {
        self.handlers.push(Handler {
            level,
            at,
            kind: Kind::Module {
                path: format!("({how})"),
                control: Control::must_fail(how),
                broken: true,
            },
        });
    }
}

pub(super) fn include_path(target: &str) -> String {
    if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("{PAM_DIR}/{target}")
    }
}
