//! PAM stacks of sshd and sudo, read the way Linux-PAM reads them, and the checks on them:
//!
//! - `pam-sshd`, `pam-sudo`: pam_kron is in the auth stack when the policy asks for codes, and
//!   a failed code fails the login (no `optional`/`sufficient`-style control that ignores it);
//! - `pam-sshd-order`, `pam-sudo-order`: nothing before pam_kron can end the stack with
//!   success first (`sufficient`, `[success=done ...]`, or a `[success=N ...]` jump over it).
//!
//! The stack is flattened as libpam does: `@include` and `include` inline the auth lines of
//! another file, `substack` adds a nested level whose `done`/`die` only end the substack, and a
//! jump counts the lines of its own level (a substack is one line). Then the dispatch rules
//! of libpam (`_pam_dispatch_aux`) are run over every combination of module results — a
//! small search, since states repeat — asking: can the stack return success while pam_kron
//! never passed?

use std::collections::HashSet;

use super::config::{Asks, Policy};
use super::{Finding, Findings, Location, Root};

pub const PAM_DIR: &str = "/etc/pam.d";
/// libpam's bound on substack nesting; includes are bounded the same way here.
const MAX_LEVEL: usize = 16;
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// PAM return values, as indexes into a control's actions (from `<security/_pam_types.h>`).
mod ret {
    pub const SUCCESS: usize = 0;
    pub const SERVICE_ERR: usize = 3;
    pub const PERM_DENIED: usize = 6;
    pub const AUTH_ERR: usize = 7;
    pub const CRED_INSUFFICIENT: usize = 8;
    pub const AUTHINFO_UNAVAIL: usize = 9;
    pub const USER_UNKNOWN: usize = 10;
    pub const MAXTRIES: usize = 11;
    pub const NEW_AUTHTOK_REQD: usize = 12;
    pub const IGNORE: usize = 25;
    pub const COUNT: usize = 32;
}

/// The names a `[value=action ...]` control may use, by return value.
const RETURN_NAMES: [&str; ret::COUNT] = [
    "success",
    "open_err",
    "symbol_err",
    "service_err",
    "system_err",
    "buf_err",
    "perm_denied",
    "auth_err",
    "cred_insufficient",
    "authinfo_unavail",
    "user_unknown",
    "maxtries",
    "new_authtok_reqd",
    "acct_expired",
    "session_err",
    "cred_unavail",
    "cred_expired",
    "cred_err",
    "no_module_data",
    "conv_err",
    "authtok_err",
    "authtok_recover_err",
    "authtok_lock_busy",
    "authtok_disable_aging",
    "try_again",
    "ignore",
    "abort",
    "authtok_expired",
    "module_unknown",
    "bad_item",
    "conv_again",
    "incomplete",
];

/// What pam_kron can return (see pam_kron/src/error.rs) besides success and PAM_IGNORE (the
/// user is skipped: `exempt`, or `optional` without a token).
const KRON_FAILURES: [usize; 5] = [
    ret::AUTH_ERR,
    ret::AUTHINFO_UNAVAIL,
    ret::MAXTRIES,
    ret::CRED_INSUFFICIENT,
    ret::SERVICE_ERR,
];
/// What any other module is assumed able to return.
const ANY_RESULT: [usize; 9] = [
    ret::SUCCESS,
    ret::IGNORE,
    ret::AUTH_ERR,
    ret::USER_UNKNOWN,
    ret::AUTHINFO_UNAVAIL,
    ret::CRED_INSUFFICIENT,
    ret::MAXTRIES,
    ret::NEW_AUTHTOK_REQD,
    ret::PERM_DENIED,
];

/// [`ANY_RESULT`] without success (and without PAM_IGNORE): a first factor that did not pass
/// reports a failure; it does not abstain. (pam_unix never ignores; pam_sss and pam_ldap do
/// only with `ignore_unknown_user`-style options.)
const FACTOR_FAILURES: [usize; 6] = [
    ret::AUTH_ERR,
    ret::USER_UNKNOWN,
    ret::AUTHINFO_UNAVAIL,
    ret::CRED_INSUFFICIENT,
    ret::MAXTRIES,
    ret::PERM_DENIED,
];

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

/// What a search over the stack's runs looks for; every goal is a run that ends in success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// pam_kron ran and failed.
    KronFailed,
    /// pam_kron never ran: a line ended the stack, or jumped, before it.
    KronSkipped,
    /// pam_kron skipped the user (PAM_IGNORE), or never ran, and no first factor passed.
    NoFactor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Ignore,
    Ok,
    Done,
    Bad,
    Die,
    Reset,
    Jump(usize),
}

impl Action {
    fn parse(word: &str) -> Option<Action> {
        Some(match word.to_ascii_lowercase().as_str() {
            "ignore" => Action::Ignore,
            "ok" => Action::Ok,
            "done" => Action::Done,
            "bad" => Action::Bad,
            "die" => Action::Die,
            "reset" => Action::Reset,
            number => match number.parse::<usize>() {
                Ok(n) if n > 0 => Action::Jump(n),
                _ => return None,
            },
        })
    }
}

/// A control: the action for each return value, and how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    actions: Box<[Action; ret::COUNT]>,
    pub text: String,
}

impl Control {
    /// `required`, `requisite`, `optional`, `sufficient` or `[value=action ...]`; `None` if
    /// libpam would refuse it (it then makes the line fail every time).
    fn parse(text: &str) -> Option<Control> {
        let mut actions = [None; ret::COUNT];
        let fill = |actions: &mut [Option<Action>; ret::COUNT], default: Action| {
            for action in actions.iter_mut().filter(|a| a.is_none()) {
                *action = Some(default);
            }
        };
        match text.to_ascii_lowercase().as_str() {
            "required" | "requisite" => {
                actions[ret::SUCCESS] = Some(Action::Ok);
                actions[ret::NEW_AUTHTOK_REQD] = Some(Action::Ok);
                actions[ret::IGNORE] = Some(Action::Ignore);
                let default = if text.eq_ignore_ascii_case("required") {
                    Action::Bad
                } else {
                    Action::Die
                };
                fill(&mut actions, default);
            }
            "optional" => {
                actions[ret::SUCCESS] = Some(Action::Ok);
                actions[ret::NEW_AUTHTOK_REQD] = Some(Action::Ok);
                fill(&mut actions, Action::Ignore);
            }
            "sufficient" => {
                actions[ret::SUCCESS] = Some(Action::Done);
                actions[ret::NEW_AUTHTOK_REQD] = Some(Action::Done);
                fill(&mut actions, Action::Ignore);
            }
            _ => {
                let inner = text.strip_prefix('[')?.strip_suffix(']')?;
                for pair in inner.split_whitespace() {
                    let (name, action) = pair.split_once('=')?;
                    let action = Action::parse(action)?;
                    let name = name.to_ascii_lowercase();
                    if name == "default" {
                        fill(&mut actions, action);
                    } else {
                        let index = RETURN_NAMES.iter().position(|n| *n == name)?;
                        actions[index] = Some(action);
                    }
                }
                // libpam: whatever is still unset is `bad`.
                fill(&mut actions, Action::Bad);
            }
        }
        Some(Control {
            actions: Box::new(actions.map(|a| a.expect("every action is filled"))),
            text: text.to_owned(),
        })
    }

    /// A line libpam could not parse: it fails with PERM_DENIED every time.
    fn must_fail(text: &str) -> Control {
        Control {
            actions: Box::new([Action::Bad; ret::COUNT]),
            text: text.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
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
struct Handler {
    level: usize,
    at: Location,
    kind: Kind,
}

impl Handler {
    fn module(&self) -> Option<&str> {
        match &self.kind {
            Kind::Module { path, .. } => Some(path.rsplit('/').next().unwrap_or(path)),
            Kind::Substack => None,
        }
    }

    fn is_kron(&self) -> bool {
        matches!(self.module(), Some("pam_kron.so" | "libpam_kron.so"))
    }

    /// A module that checks a secret of the person (see [`NOT_A_FACTOR`]); pam_kron is not
    /// counted, being the second factor.
    fn is_factor(&self) -> bool {
        self.module()
            .is_some_and(|module| !self.is_kron() && !NOT_A_FACTOR.contains(&module))
    }

    /// The results the search for `goal` lets this line return.
    fn results(&self, goal: Goal) -> &'static [usize] {
        if self.is_kron() && goal == Goal::KronSkipped {
            return &[];
        }
        match (&self.kind, self.module()) {
            (Kind::Module { broken: true, .. }, _) => &[ret::PERM_DENIED],
            _ if self.is_kron() => match goal {
                Goal::NoFactor => &[ret::IGNORE],
                _ => &KRON_FAILURES,
            },
            (_, Some("pam_deny.so")) => &[ret::AUTH_ERR],
            (_, Some("pam_permit.so")) => &[ret::SUCCESS],
            _ if goal == Goal::NoFactor && self.is_factor() => &FACTOR_FAILURES,
            _ => &ANY_RESULT,
        }
    }

    fn action(&self, result: usize) -> Action {
        match &self.kind {
            Kind::Module { control, .. } => control.actions[result],
            Kind::Substack => Action::Ignore,
        }
    }

    /// `pam_unix.so (`sufficient`, /etc/pam.d/common-auth:3)`.
    fn shown(&self) -> String {
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
    exists: bool,
    handlers: Vec<Handler>,
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

    /// Parses text as if it were `/etc/pam.d/SERVICE`, with nothing to include (tests and the
    /// fuzz targets).
    pub fn parse(service: &str, text: &str) -> Stack {
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

    /// Whether the auth stack can succeed with no first factor: pam_kron skips the user
    /// (PAM_IGNORE: `exempt`, or `optional` without a token) or is not there, no module that
    /// checks a secret passes, and the stack still returns success. Returns the line whose
    /// success made the stack succeed (pam_permit, say).
    pub fn succeeds_without_factor(&self) -> Option<String> {
        match self.walk(Goal::NoFactor) {
            Some(Bypass::NoFactor { passed_by }) => Some(self.handlers[passed_by].shown()),
            _ => None,
        }
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
    fn read(&mut self, root: &Root, file: &str, level: usize, chain: &mut Vec<String>) -> bool {
        if chain.len() > MAX_LEVEL || chain.iter().any(|seen| seen == file) {
            self.problems
                .push(format!("{file} includes itself or nests too deep"));
            return false;
        }
        let text = match read_bounded(&root.path(file)) {
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

    fn parse_text(
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

    fn include(
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

    fn push_broken(&mut self, level: usize, at: Location, how: &str) {
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

    /// Searches libpam's dispatch over every combination of module results for a run that
    /// returns success although pam_kron did not pass. `skips` looks for runs where pam_kron
    /// never ran; otherwise for runs where it ran and failed.
    fn find_bypass(&self, skips: bool) -> Option<Bypass> {
        self.walk(if skips {
            Goal::KronSkipped
        } else {
            Goal::KronFailed
        })
    }

    /// Runs libpam's dispatch over every combination of the results [`Handler::results`]
    /// allows for `goal`, and returns the first run that ends in success.
    fn walk(&self, goal: Goal) -> Option<Bypass> {
        let handlers = &self.handlers;
        let start = State {
            pos: 0,
            prev_level: 0,
            impression: Impression::Undef,
            status: ret::PERM_DENIED,
            substates: vec![(Impression::Undef, ret::PERM_DENIED); MAX_LEVEL + 2],
            kron_failed: None,
            skipped_by: None,
            passed_by: None,
        };
        let mut seen = HashSet::new();
        let mut todo = vec![start];
        while let Some(mut state) = todo.pop() {
            if !seen.insert(state.clone()) {
                continue;
            }
            let Some(handler) = handlers.get(state.pos) else {
                let success =
                    state.status == ret::SUCCESS && state.impression == Impression::Positive;
                if !success {
                    continue;
                }
                match (goal, state.kron_failed, state.skipped_by, state.passed_by) {
                    (Goal::KronSkipped, None, Some(by), _) => return Some(Bypass::Skipped { by }),
                    (Goal::KronFailed, Some(kron), _, _) => {
                        return Some(Bypass::FailureIgnored { kron });
                    }
                    (Goal::NoFactor, _, _, Some(passed_by)) => {
                        return Some(Bypass::NoFactor { passed_by });
                    }
                    _ => continue,
                }
            };
            let pos = state.pos;
            let level = handler.level;
            if state.prev_level < level {
                state.substates[level] = (state.impression, state.status);
            }
            if handler.kind == Kind::Substack {
                todo.push(State {
                    pos: pos + 1,
                    prev_level: level,
                    ..state
                });
                continue;
            }
            // Pushed in reverse, so the first result (success) is explored first and the
            // reported line is the earliest one that can end the stack.
            // A pass, or a skip otpd decided on, is pam_kron doing its job: results() leaves
            // them out of the searches for a bypass of pam_kron.
            for &result in handler.results(goal).iter().rev() {
                let mut next = state.clone();
                if handler.is_kron() && goal == Goal::KronFailed {
                    next.kron_failed.get_or_insert(pos);
                }
                let action = handler.action(result);
                let mut after = pos + 1;
                match action {
                    Action::Reset => (next.impression, next.status) = next.substates[level],
                    Action::Ok | Action::Done => {
                        if next.impression == Impression::Undef
                            || (next.impression == Impression::Positive
                                && next.status == ret::SUCCESS)
                        {
                            if next.impression == Impression::Undef && goal == Goal::NoFactor {
                                next.passed_by = Some(pos);
                            }
                            next.impression = Impression::Positive;
                            next.status = result;
                        }
                        if next.impression == Impression::Positive && action == Action::Done {
                            after = self.end_of_level(pos, level) + 1;
                        }
                    }
                    Action::Bad | Action::Die => {
                        if next.impression != Impression::Negative {
                            next.impression = Impression::Negative;
                            next.status = if result == ret::IGNORE {
                                ret::PERM_DENIED
                            } else {
                                result
                            };
                        }
                        if action == Action::Die {
                            after = self.end_of_level(pos, level) + 1;
                        }
                    }
                    Action::Ignore => {}
                    Action::Jump(count) => {
                        let mut last = pos;
                        let mut left = count;
                        while last + 1 < handlers.len()
                            && handlers[last + 1].level >= level
                            && left > 0
                        {
                            last += 1;
                            while last + 1 < handlers.len() && handlers[last + 1].level > level {
                                last += 1;
                            }
                            left -= 1;
                        }
                        if left > 0 {
                            // libpam: "bad jump in stack".
                            next.impression = Impression::Negative;
                            next.status = ret::PERM_DENIED;
                        }
                        after = last + 1;
                    }
                }
                if next.skipped_by.is_none()
                    && handlers[pos + 1..after.min(handlers.len())]
                        .iter()
                        .any(Handler::is_kron)
                {
                    next.skipped_by = Some(pos);
                }
                next.pos = after;
                next.prev_level = level;
                todo.push(next);
            }
        }
        None
    }

    /// The last handler of the (sub)stack that `pos` is in at `level`.
    fn end_of_level(&self, pos: usize, level: usize) -> usize {
        let mut last = pos;
        while last + 1 < self.handlers.len() && self.handlers[last + 1].level >= level {
            last += 1;
        }
        last
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Impression {
    Undef,
    Positive,
    Negative,
}

/// One point of libpam's walk over the stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    pos: usize,
    prev_level: usize,
    impression: Impression,
    status: usize,
    substates: Vec<(Impression, usize)>,
    /// The pam_kron line that returned a failure on this path.
    kron_failed: Option<usize>,
    /// The first line whose `done` or jump passed over a pam_kron line on this path.
    skipped_by: Option<usize>,
    /// The line whose result first made the stack's impression positive (only searched for
    /// [`Goal::NoFactor`]).
    passed_by: Option<usize>,
}

/// How a stack can succeed without pam_kron passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bypass {
    /// The line at this index ended the stack, or jumped, before pam_kron ran.
    Skipped { by: usize },
    /// pam_kron (this index) failed and the stack still succeeded.
    FailureIgnored { kron: usize },
    /// No first factor passed and pam_kron did not ask; this line made the stack succeed.
    NoFactor { passed_by: usize },
}

fn include_path(target: &str) -> String {
    if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("{PAM_DIR}/{target}")
    }
}

fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The configuration lines of a PAM file with their first physical line number: comments
/// (`#` to the end of the line) removed, lines ending in `\` joined with the next, and split
/// into words where `[...]` (with `\]` inside) is one word.
fn logical_lines(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        if pending.is_empty() {
            start = index + 1;
        }
        let content = raw.split('#').next().unwrap_or("");
        match content.trim_end().strip_suffix('\\') {
            Some(continued) => {
                pending.push_str(continued);
                pending.push(' ');
            }
            None => {
                pending.push_str(content);
                lines.push((start, words(&pending)));
                pending.clear();
            }
        }
    }
    if !pending.is_empty() {
        lines.push((start, words(&pending)));
    }
    lines
}

fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return words;
        };
        let mut word = String::new();
        if first == '[' {
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&']') {
                    word.push(']');
                    chars.next();
                    continue;
                }
                word.push(c);
                if c == ']' {
                    break;
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}

/// The two findings for one service's stack.
pub fn check(stack: &Stack, policy: &Policy, out: &mut Findings) {
    let (present_id, order_id) = match stack.service.as_str() {
        "sshd" => ("pam-sshd", "pam-sshd-order"),
        "sudo" => ("pam-sudo", "pam-sudo-order"),
        other => unreachable!("no checks for PAM service {other}"),
    };
    let service = &stack.service;
    let file = &stack.file;
    if !stack.exists {
        out.push(Finding::ok(
            present_id,
            format!("no {file}: {service} is not installed here, nothing to check"),
        ));
        return;
    }
    for problem in &stack.problems {
        out.push(Finding::warning(
            present_id,
            problem.clone(),
            format!("correct it, then test a {service} login in a second session before closing the first"),
        ));
    }
    let add_line = format!("add `auth required pam_kron.so` to {file} after the password module");
    let Some(first_kron) = stack.handlers.iter().find(|h| h.is_kron()) else {
        let asks = policy.asks(service);
        let message = format!("pam_kron.so is not in the auth stack of {file}");
        out.push(match asks {
            Asks::Always => Finding::error(
                present_id,
                format!("{message}, but the policy requires codes for {service}: {service} logins skip the second factor"),
                add_line,
            ),
            Asks::Enrolled => Finding::warning(
                present_id,
                format!("{message}: enrolled users are never asked for a code by {service}"),
                add_line,
            ),
            Asks::Never => Finding::ok(
                present_id,
                format!("{message}, and the policy asks no codes for {service}"),
            ),
        });
        out.push(Finding::ok(
            order_id,
            format!("no pam_kron.so line in {file} to check"),
        ));
        return;
    };

    match stack.find_bypass(false) {
        Some(Bypass::FailureIgnored { kron }) => {
            let kron = &stack.handlers[kron];
            out.push(Finding::error(
                present_id,
                format!(
                    "a wrong code does not fail a {service} login: {} lets the stack succeed after pam_kron fails",
                    kron.shown()
                ),
                format!("make it `auth required pam_kron.so` (or `requisite`) in {}", kron.at.file),
            ));
        }
        _ => out.push(Finding::ok(
            present_id,
            format!("{} in the auth stack of {file}", first_kron.shown()),
        )),
    }

    match stack.find_bypass(true) {
        Some(Bypass::Skipped { by }) => {
            let by = &stack.handlers[by];
            let how = match by.kind {
                Kind::Module { ref control, .. }
                    if matches!(control.actions[ret::SUCCESS], Action::Jump(_)) =>
                {
                    "jumps over pam_kron.so on success"
                }
                _ => "can end the auth stack with success before pam_kron.so runs",
            };
            let module = by.module().unwrap_or("that line");
            let fix = if by.level == 0 && by.at.file != *file {
                // Inlined from another file (RHEL's `auth include system-auth`, say): as a
                // substack, its `sufficient` would end only the substack.
                format!(
                    "in {file}, include {} with `auth substack` instead of `include`, or make {module} `requisite` there",
                    by.at.file
                )
            } else {
                format!(
                    "in {}, make {module} `requisite` (or `[success=ok default=die]`), or put pam_kron.so before it",
                    by.at.file
                )
            };
            out.push(Finding::error(
                order_id,
                format!(
                    "{} {how} ({}): {service} logins can pass without a code",
                    by.shown(),
                    first_kron.at
                ),
                fix,
            ));
        }
        _ => out.push(Finding::ok(
            order_id,
            format!("nothing in {file} can end the auth stack with success before pam_kron.so"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity;

    /// Debian 12's /etc/pam.d/common-auth, comments dropped.
    const DEBIAN_COMMON_AUTH: &str = "\
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
auth\toptional\t\t\tpam_cap.so
";

    fn with_common(text: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let pam = dir.path().join("etc/pam.d");
        std::fs::create_dir_all(&pam).unwrap();
        std::fs::write(pam.join("common-auth"), DEBIAN_COMMON_AUTH).unwrap();
        std::fs::write(pam.join("sshd"), text).unwrap();
        Stack::load(&Root::new(dir.path()), "sshd")
    }

    fn verdicts(stack: &Stack) -> (Option<Bypass>, Option<Bypass>) {
        (stack.find_bypass(false), stack.find_bypass(true))
    }

    #[test]
    fn lines_are_parsed_like_libpam() {
        let lines = logical_lines(
            "# comment\nauth [success=1 default=ignore] pam_unix.so nullok # trailing\n\
             -auth  optional \\\n   pam_gnome_keyring.so\n\n@include common-auth\n\
             auth required pam_x.so [arg with \\] bracket]\n",
        );
        let words: Vec<Vec<&str>> = lines
            .iter()
            .map(|(_, w)| w.iter().map(String::as_str).collect())
            .filter(|w: &Vec<&str>| !w.is_empty())
            .collect();
        assert_eq!(
            words,
            vec![
                vec![
                    "auth",
                    "[success=1 default=ignore]",
                    "pam_unix.so",
                    "nullok"
                ],
                vec!["-auth", "optional", "pam_gnome_keyring.so"],
                vec!["@include", "common-auth"],
                vec!["auth", "required", "pam_x.so", "[arg with ] bracket]"],
            ]
        );
        assert_eq!(lines[2].0, 3, "a joined line keeps its first line number");
    }

    #[test]
    fn controls_expand_to_libpam_actions() {
        let required = Control::parse("Required").unwrap();
        assert_eq!(required.actions[ret::SUCCESS], Action::Ok);
        assert_eq!(required.actions[ret::IGNORE], Action::Ignore);
        assert_eq!(required.actions[ret::AUTH_ERR], Action::Bad);
        assert_eq!(
            Control::parse("requisite").unwrap().actions[ret::AUTH_ERR],
            Action::Die
        );
        let sufficient = Control::parse("sufficient").unwrap();
        assert_eq!(sufficient.actions[ret::SUCCESS], Action::Done);
        assert_eq!(sufficient.actions[ret::AUTH_ERR], Action::Ignore);
        let bracket = Control::parse("[default=ignore success=2 auth_err=die]").unwrap();
        assert_eq!(bracket.actions[ret::SUCCESS], Action::Jump(2));
        assert_eq!(bracket.actions[ret::AUTH_ERR], Action::Die);
        assert_eq!(bracket.actions[ret::USER_UNKNOWN], Action::Ignore);
        let no_default = Control::parse("[success=ok]").unwrap();
        assert_eq!(no_default.actions[ret::AUTH_ERR], Action::Bad);
        for bad in [
            "[success=maybe]",
            "[nonsense=ok]",
            "[success=0]",
            "mandatory",
            "[success=ok",
        ] {
            assert_eq!(Control::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn kron_after_debian_common_auth_is_sound() {
        let stack = with_common("@include common-auth\nauth required pam_kron.so\n");
        assert!(stack.problems.is_empty(), "{:?}", stack.problems);
        assert!(stack.has_kron());
        assert_eq!(verdicts(&stack), (None, None));
        let requisite = with_common("@include common-auth\nauth requisite pam_kron.so\n");
        assert_eq!(verdicts(&requisite), (None, None));
        let include =
            with_common("auth include common-auth\nauth [success=ok default=die] pam_kron.so\n");
        assert_eq!(verdicts(&include), (None, None));
    }

    #[test]
    fn kron_placed_by_pam_auth_update_is_sound() {
        // packaging/debian/pam-config: Auth-Type Additional, after the Primary block.
        let dir = tempfile::tempdir().unwrap();
        let pam = dir.path().join("etc/pam.d");
        std::fs::create_dir_all(&pam).unwrap();
        std::fs::write(
            pam.join("common-auth"),
            DEBIAN_COMMON_AUTH.replace(
                "auth\toptional",
                "auth\trequired\t\t\tpam_kron.so\nauth\toptional",
            ),
        )
        .unwrap();
        std::fs::write(pam.join("sudo"), "@include common-auth\n").unwrap();
        let stack = Stack::load(&Root::new(dir.path()), "sudo");
        assert!(stack.has_kron());
        assert_eq!(verdicts(&stack), (None, None));
    }

    #[test]
    fn sufficient_before_kron_ends_the_stack_first() {
        let stack = with_common(
            "auth sufficient pam_unix.so\nauth required pam_kron.so\nauth required pam_deny.so\n",
        );
        assert_eq!(stack.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
        let done = with_common(
            "auth [success=done default=ignore] pam_sss.so\nauth required pam_kron.so\n",
        );
        assert_eq!(done.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
        // After pam_kron, sufficient cannot undo a failed code.
        let after = with_common(
            "auth requisite pam_unix.so\nauth required pam_kron.so\nauth sufficient pam_permit.so\n",
        );
        assert_eq!(verdicts(&after), (None, None));
    }

    #[test]
    fn jumps_over_kron_are_found_and_count_lines_of_their_level() {
        // pam_kron wedged into common-auth between the jump and its target.
        let wedged = with_common(
            "auth [success=2 default=ignore] pam_unix.so\nauth required pam_kron.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n",
        );
        assert_eq!(wedged.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
        // success=1 only skips pam_deny: fine.
        let sound = with_common(
            "auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\nauth required pam_kron.so\n",
        );
        assert_eq!(verdicts(&sound), (None, None));
    }

    #[test]
    fn sufficient_inside_a_substack_only_ends_the_substack() {
        let dir = tempfile::tempdir().unwrap();
        let pam = dir.path().join("etc/pam.d");
        std::fs::create_dir_all(&pam).unwrap();
        std::fs::write(
            pam.join("first-factor"),
            "auth sufficient pam_unix.so\nauth sufficient pam_sss.so\nauth required pam_deny.so\n",
        )
        .unwrap();
        std::fs::write(
            pam.join("sshd"),
            "auth substack first-factor\nauth required pam_kron.so\n",
        )
        .unwrap();
        let stack = Stack::load(&Root::new(dir.path()), "sshd");
        assert_eq!(verdicts(&stack), (None, None));
        // The same file with `include` inlines the sufficient lines: they end the whole stack.
        std::fs::write(
            pam.join("sshd"),
            "auth include first-factor\nauth required pam_kron.so\n",
        )
        .unwrap();
        let stack = Stack::load(&Root::new(dir.path()), "sshd");
        assert_eq!(stack.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
        // A jump counts the whole substack as one line.
        std::fs::write(
            pam.join("sshd"),
            "auth [success=1 default=ignore] pam_unix.so\nauth substack first-factor\nauth required pam_kron.so\n",
        )
        .unwrap();
        let stack = Stack::load(&Root::new(dir.path()), "sshd");
        assert_eq!(stack.find_bypass(true), None);
    }

    #[test]
    fn weak_controls_on_kron_let_a_wrong_code_through() {
        for control in [
            "optional",
            "sufficient",
            "[success=ok default=ignore]",
            "[success=ok auth_err=reset authinfo_unavail=reset default=bad]",
        ] {
            let stack = with_common(&format!(
                "@include common-auth\nauth {control} pam_kron.so\nauth required pam_permit.so\n"
            ));
            assert!(
                matches!(
                    stack.find_bypass(false),
                    Some(Bypass::FailureIgnored { .. })
                ),
                "{control}"
            );
        }
        // Debian's own pattern with a deny after it is sound.
        let jump = with_common(
            "auth [success=1 default=ignore] pam_kron.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n",
        );
        assert_eq!(verdicts(&jump), (None, None));
    }

    #[test]
    fn stacks_that_pass_with_no_first_factor_are_found() {
        // The key-then-code stack: pam_permit succeeds when pam_kron skips the user.
        let key_then_code = Stack::parse(
            "sshd",
            "auth required pam_kron.so\nauth required pam_permit.so\n",
        );
        assert_eq!(
            key_then_code.succeeds_without_factor().as_deref(),
            Some("pam_permit.so (`required`, /etc/pam.d/sshd:2)")
        );
        assert!(key_then_code.factors().is_empty());
        for text in [
            // Modules that check no secret do not count.
            "auth required pam_env.so\nauth requisite pam_nologin.so\nauth required pam_faildelay.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
            // A password module whose failure is ignored is no factor.
            "auth optional pam_unix.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
            "auth [success=ok default=ignore] pam_sss.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
            // pam_rootok always passes inside sshd, which runs PAM as root.
            "auth sufficient pam_rootok.so\nauth required pam_kron.so\n",
            // No pam_kron at all.
            "auth required pam_permit.so\n",
        ] {
            assert!(
                Stack::parse("sshd", text)
                    .succeeds_without_factor()
                    .is_some(),
                "{text}"
            );
        }
        for text in [
            // pam_kron alone: a stack in which every module ignored fails in libpam.
            "auth required pam_kron.so\n",
            "auth requisite pam_unix.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
            "auth required pam_unix.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
            "auth required pam_sss.so\nauth optional pam_kron.so\n",
            // A module doctor does not know is taken to check something.
            "auth required pam_corp_password.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
            "auth required pam_deny.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
        ] {
            let stack = Stack::parse("sshd", text);
            assert_eq!(stack.succeeds_without_factor(), None, "{text}");
        }
        assert_eq!(
            Stack::parse(
                "sshd",
                "auth required pam_env.so\nauth required pam_corp_password.so\nauth required pam_unix.so\nauth required pam_corp_password.so\n"
            )
            .factors(),
            ["pam_corp_password.so", "pam_unix.so"]
        );
    }

    #[test]
    fn password_first_stacks_need_a_first_factor() {
        // Debian: common-auth's pam_unix, then pam_deny when it fails.
        for text in [
            "@include common-auth\nauth required pam_kron.so\n",
            "@include common-auth\nauth required pam_kron.so\nauth required pam_permit.so\n",
        ] {
            let stack = with_common(text);
            assert_eq!(stack.succeeds_without_factor(), None, "{text}");
            assert_eq!(stack.factors(), ["pam_unix.so"]);
        }
        // RHEL 9's password-auth as a substack, then pam_kron and postlogin.
        let dir = tempfile::tempdir().unwrap();
        let pam = dir.path().join("etc/pam.d");
        std::fs::create_dir_all(&pam).unwrap();
        std::fs::write(
            pam.join("password-auth"),
            "auth required pam_env.so\nauth required pam_faildelay.so delay=2000000\n\
             auth [default=1 ignore=ignore success=ok] pam_usertype.so isregular\n\
             auth [default=1 ignore=ignore success=ok] pam_localuser.so\n\
             auth sufficient pam_unix.so nullok\n\
             auth [default=1 ignore=ignore success=ok] pam_usertype.so isregular\n\
             auth sufficient pam_sss.so forward_pass\nauth required pam_deny.so\n",
        )
        .unwrap();
        std::fs::write(
            pam.join("postlogin"),
            "session optional pam_umask.so silent\n",
        )
        .unwrap();
        std::fs::write(
            pam.join("sshd"),
            "auth substack password-auth\nauth required pam_kron.so\nauth include postlogin\n",
        )
        .unwrap();
        let root = Root::new(dir.path());
        let stack = Stack::load(&root, "sshd");
        assert!(stack.problems.is_empty(), "{:?}", stack.problems);
        assert_eq!(stack.succeeds_without_factor(), None);
        // RHEL's key-then-code stack: the password substack is gone.
        std::fs::write(
            pam.join("sshd"),
            "auth required pam_kron.so\nauth required pam_permit.so\nauth include postlogin\n",
        )
        .unwrap();
        assert!(
            Stack::load(&root, "sshd")
                .succeeds_without_factor()
                .is_some()
        );
    }

    #[test]
    fn broken_lines_fail_and_are_reported() {
        let stack = Stack::parse(
            "sshd",
            "auth include missing-file\nauth mandatory pam_kron.so\nbogus x y\n",
        );
        assert_eq!(stack.problems.len(), 3, "{:?}", stack.problems);
        assert_eq!(verdicts(&stack), (None, None));
        // A self-include is refused rather than followed forever.
        let dir = tempfile::tempdir().unwrap();
        let pam = dir.path().join("etc/pam.d");
        std::fs::create_dir_all(&pam).unwrap();
        std::fs::write(pam.join("sshd"), "@include sshd\n").unwrap();
        let looped = Stack::load(&Root::new(dir.path()), "sshd");
        assert_eq!(looped.problems.len(), 1, "{:?}", looped.problems);
    }

    #[test]
    fn findings_per_service() {
        let policy = |text: &str| Policy {
            config: Some(kron_common::config::Config::parse(text, "otpd.toml").unwrap()),
            origin: "otpd.toml".into(),
        };
        let run = |stack: &Stack, toml: &str| {
            let mut out = Findings::new(&[]);
            check(stack, &policy(toml), &mut out);
            out.into_vec()
                .into_iter()
                .map(|f| (f.check, f.severity))
                .collect::<Vec<_>>()
        };
        let missing = Stack::parse("sudo", "@include common-auth\n");
        assert!(
            run(&missing, "default_mode = \"require\"\n").contains(&("pam-sudo", Severity::Error))
        );
        assert!(run(&missing, "").contains(&("pam-sudo", Severity::Warning)));
        assert!(run(&missing, "default_mode = \"exempt\"\n").contains(&("pam-sudo", Severity::Ok)));
        let bypassed = Stack::parse(
            "sshd",
            "auth sufficient pam_unix.so\nauth required pam_kron.so\n",
        );
        assert_eq!(
            run(&bypassed, ""),
            [
                ("pam-sshd", Severity::Ok),
                ("pam-sshd-order", Severity::Error)
            ]
        );
        let weak = Stack::parse(
            "sshd",
            "auth requisite pam_unix.so\nauth optional pam_kron.so\n",
        );
        assert_eq!(
            run(&weak, ""),
            [
                ("pam-sshd", Severity::Error),
                ("pam-sshd-order", Severity::Ok)
            ]
        );
    }
}
