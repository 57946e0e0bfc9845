//! sshd's configuration, as sshd reads it, and the checks on it:
//!
//! - `sshd-config`: the file (and every `Include`) could be read;
//! - `sshd-usepam`: sshd runs PAM at all;
//! - `sshd-kbdinteractive`: keyboard-interactive, the only way sshd shows pam_kron's prompt;
//! - `sshd-publickey`: no authentication method completes a login without PAM;
//! - `sshd-no-first-factor`: no login rests on a PAM stack that checks nothing but pam_kron;
//! - `sshd-root-login`: root is not shut out by `PermitRootLogin prohibit-password`;
//! - `sshd-match`: Match blocks that change any of this for some connections.
//!
//! Parsing follows OpenSSH: keywords are case-insensitive, `Keyword value` or `Keyword=value`;
//! for each keyword the first value obtained wins; `Include` expands globs (relative paths are
//! under /etc/ssh) in place; a `Match` block runs to the next `Match` or the end of the file it
//! is in, and an `Include` inside a Match block belongs to it. Values in Match blocks override
//! the global ones for the connections they match, which a static check cannot evaluate: they
//! are reported as warnings.

use std::rc::Rc;

use kron_common::config::Mode;

use super::config::{Asks, Policy};
use super::pam::Stack;
use super::{Finding, Findings, Location, Root};

pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
const SSH_DIR: &str = "/etc/ssh";
/// sshd refuses deeper nesting of `Include`.
const MAX_INCLUDE_DEPTH: usize = 16;
/// Bound on what one file may hold; sshd_config files are a few kilobytes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const FIX_RELOAD: &str = "then `systemctl reload ssh`";

/// Keywords these checks read, lower case; the deprecated alias is mapped onto the current one.
const USE_PAM: &str = "usepam";
const KBD_INTERACTIVE: &str = "kbdinteractiveauthentication";
const PUBKEY: &str = "pubkeyauthentication";
const PASSWORD: &str = "passwordauthentication";
const HOSTBASED: &str = "hostbasedauthentication";
const GSSAPI: &str = "gssapiauthentication";
const METHODS: &str = "authenticationmethods";
const PERMIT_ROOT: &str = "permitrootlogin";

/// Keywords that decide whether an SSH login meets pam_kron; a Match block setting one of
/// them changes the answer for the connections it matches.
const AUTH_KEYWORDS: [&str; 6] = [
    KBD_INTERACTIVE,
    PUBKEY,
    HOSTBASED,
    GSSAPI,
    METHODS,
    PERMIT_ROOT,
];

/// The line that opened a Match block.
#[derive(Debug, PartialEq, Eq)]
pub struct MatchBlock {
    pub criteria: String,
    pub at: Location,
}

/// One `Keyword arguments...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower case, aliases resolved (`challengeresponseauthentication` →
    /// `kbdinteractiveauthentication`).
    pub keyword: String,
    /// As written (the keyword's original spelling is kept for messages).
    pub name: String,
    pub args: Vec<String>,
    pub at: Location,
    /// The Match block this line is in; `None` for global lines.
    pub block: Option<Rc<MatchBlock>>,
}

impl Directive {
    /// `UsePAM no (/etc/ssh/sshd_config:12)`.
    fn shown(&self) -> String {
        format!("{} {} ({})", self.name, self.args.join(" "), self.at)
    }
}

/// Everything sshd would read, in order.
#[derive(Debug, Default)]
pub struct SshdConfig {
    pub directives: Vec<Directive>,
    /// Files that could not be read and lines sshd would refuse.
    pub problems: Vec<String>,
    pub files: usize,
}

impl SshdConfig {
    /// Reads `/etc/ssh/sshd_config` under `root`; `None` when it does not exist.
    pub fn load(root: &Root) -> Option<SshdConfig> {
        if !root.exists(SSHD_CONFIG) {
            return None;
        }
        let mut config = SshdConfig::default();
        config.read_file(root, SSHD_CONFIG, None, 0);
        Some(config)
    }

    /// Parses `text` as `/etc/ssh/sshd_config`, its includes read under `root` (the fuzz
    /// targets give a root that does not exist).
    pub fn from_text(root: &Root, text: &str) -> SshdConfig {
        let mut config = SshdConfig {
            files: 1,
            ..SshdConfig::default()
        };
        config.parse(root, SSHD_CONFIG, text, None, 0);
        config
    }

    /// The global value of `keyword`: its first occurrence outside every Match block.
    pub fn global(&self, keyword: &str) -> Option<&Directive> {
        self.directives
            .iter()
            .find(|d| d.keyword == keyword && d.block.is_none())
    }

    /// A global yes/no keyword, with sshd's default when absent.
    fn flag(&self, keyword: &str, default: bool) -> (bool, Option<&Directive>) {
        match self.global(keyword) {
            Some(directive) => (
                directive
                    .args
                    .first()
                    .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
                Some(directive),
            ),
            None => (default, None),
        }
    }

    /// Lines inside Match blocks that set one of `keywords`.
    pub fn overrides(&self, keywords: &[&str]) -> Vec<&Directive> {
        self.directives
            .iter()
            .filter(|d| d.block.is_some() && keywords.contains(&d.keyword.as_str()))
            .collect()
    }

    fn read_file(&mut self, root: &Root, path: &str, block: Option<Rc<MatchBlock>>, depth: usize) {
        let text = match read_bounded(&root.path(path)) {
            Ok(text) => text,
            Err(error) => {
                self.problems.push(format!("cannot read {path}: {error}"));
                return;
            }
        };
        self.files += 1;
        self.parse(root, path, &text, block, depth);
    }

    fn parse(
        &mut self,
        root: &Root,
        path: &str,
        text: &str,
        inherited: Option<Rc<MatchBlock>>,
        depth: usize,
    ) {
        // A Match block opened in this file ends with the file; the includer's state resumes.
        let mut block = inherited;
        for (index, raw) in text.lines().enumerate() {
            let at = Location {
                file: path.to_owned(),
                line: index + 1,
            };
            let Some((name, args)) = split_line(raw) else {
                continue;
            };
            let keyword = match name.to_ascii_lowercase().as_str() {
                "challengeresponseauthentication" => KBD_INTERACTIVE.to_owned(),
                other => other.to_owned(),
            };
            match keyword.as_str() {
                "match" => {
                    block = Some(Rc::new(MatchBlock {
                        criteria: args.join(" "),
                        at,
                    }));
                }
                "include" => {
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        self.problems.push(format!(
                            "{at}: Include nested deeper than {MAX_INCLUDE_DEPTH} levels; sshd refuses to start"
                        ));
                        continue;
                    }
                    for pattern in &args {
                        let pattern = if pattern.starts_with('/') {
                            pattern.clone()
                        } else {
                            format!("{SSH_DIR}/{pattern}")
                        };
                        for file in glob(root, &pattern) {
                            self.read_file(root, &file, block.clone(), depth + 1);
                        }
                    }
                }
                _ => self.directives.push(Directive {
                    keyword,
                    name,
                    args,
                    at,
                    block: block.clone(),
                }),
            }
        }
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

/// `Keyword args...`, `Keyword=args` or `Keyword = args`; `None` for blank and comment lines.
/// Arguments may be double-quoted; a word starting with `#` starts a comment.
fn split_line(raw: &str) -> Option<(String, Vec<String>)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Some((name.to_owned(), words(rest)))
}

fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return words,
            Some('"') => {
                chars.next();
                words.push(chars.by_ref().take_while(|&c| c != '"').collect());
            }
            Some(_) => {
                let mut word = String::new();
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    word.push(c);
                }
                words.push(word);
            }
        }
    }
}

/// The files matching `pattern` (an absolute system path with `*`, `?` and `[...]` in any
/// component), sorted as glob(3) does.
fn glob(root: &Root, pattern: &str) -> Vec<String> {
    let mut found = vec![String::new()];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for prefix in &found {
            if !component.contains(['*', '?', '[']) {
                next.push(format!("{prefix}/{component}"));
                continue;
            }
            let dir = if prefix.is_empty() {
                "/"
            } else {
                prefix.as_str()
            };
            let Ok(entries) = std::fs::read_dir(root.path(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if (!name.starts_with('.') || component.starts_with('.'))
                    && wildcard_match(component.as_bytes(), name.as_bytes())
                {
                    next.push(format!("{prefix}/{name}"));
                }
            }
        }
        found = next;
    }
    let mut files: Vec<String> = found
        .into_iter()
        .filter(|path| root.path(path).is_file())
        .collect();
    files.sort();
    files
}

/// fnmatch(3) for one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| wildcard_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return name.first() == Some(&b'[') && wildcard_match(rest, &name[1..]);
            };
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negate, set) = match rest[..close].split_first() {
                Some((b'!' | b'^', set)) => (true, set),
                _ => (false, &rest[..close]),
            };
            let mut matched = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    matched |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    matched |= set[i] == c;
                    i += 1;
                }
            }
            matched != negate && wildcard_match(&rest[close + 1..], name_rest)
        }
        Some((&literal, rest)) => {
            name.first() == Some(&literal) && wildcard_match(rest, &name[1..])
        }
    }
}

/// What the other checks need to know about sshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshdFacts {
    /// `/etc/ssh/sshd_config` exists.
    pub installed: bool,
    /// root may log in over SSH in a way that reaches pam_kron.
    pub root_may_log_in: bool,
}

/// Authentication methods that complete an SSH login without running PAM's auth stack.
const NON_PAM_METHODS: [(&str, &str, bool); 3] = [
    ("publickey", PUBKEY, true),
    ("hostbased", HOSTBASED, false),
    ("gssapi-with-mic", GSSAPI, false),
];

fn is_pam_method(method: &str) -> bool {
    let base = method.split(':').next().unwrap_or(method);
    base == "keyboard-interactive" || base == "password"
}

/// Runs the sshd checks and reports what the admin check needs.
pub fn check(root: &Root, policy: &Policy, stack: &Stack, out: &mut Findings) -> SshdFacts {
    let Some(config) = SshdConfig::load(root) else {
        out.push(Finding::ok(
            "sshd-config",
            format!("no {SSHD_CONFIG}: sshd is not installed here, sshd checks skipped"),
        ));
        return SshdFacts {
            installed: false,
            root_may_log_in: false,
        };
    };
    check_loaded(&config, policy, stack, out)
}

/// The checks of [`check`] on a config already read.
pub fn check_loaded(
    config: &SshdConfig,
    policy: &Policy,
    stack: &Stack,
    out: &mut Findings,
) -> SshdFacts {
    match config.problems.first() {
        None => out.push(Finding::ok(
            "sshd-config",
            format!(
                "read {SSHD_CONFIG} ({} file{} with includes)",
                config.files,
                if config.files == 1 { "" } else { "s" }
            ),
        )),
        Some(first) => out.push(Finding::warning(
            "sshd-config",
            format!(
                "{first}{}; the sshd checks below may miss settings",
                match config.problems.len() {
                    1 => String::new(),
                    n => format!(" (and {} more problems)", n - 1),
                }
            ),
            "run `sshd -T` as root to see the settings sshd really uses",
        )),
    }

    let asks = policy.asks("sshd");
    let kron_in_stack = stack.has_kron();
    check_use_pam(config, asks, kron_in_stack, out);
    check_kbd_interactive(config, asks, kron_in_stack, out);
    // The line that lets /etc/pam.d/sshd succeed with no first factor, if any.
    let no_factor = stack.succeeds_without_factor();
    check_bypass_methods(config, asks, stack.exists() && no_factor.is_none(), out);
    check_no_first_factor(config, policy, stack, no_factor, out);
    let root_may_log_in = check_root_login(config, kron_in_stack, out);
    check_match_blocks(config, out);
    SshdFacts {
        installed: true,
        root_may_log_in,
    }
}

fn check_use_pam(config: &SshdConfig, asks: Asks, kron_in_stack: bool, out: &mut Findings) {
    let needed = kron_in_stack || asks != Asks::Never;
    match config.flag(USE_PAM, false) {
        (true, directive) => out.push(Finding::ok(
            "sshd-usepam",
            directive.map_or_else(|| "UsePAM yes".to_owned(), Directive::shown),
        )),
        (false, _) if !needed => out.push(Finding::ok(
            "sshd-usepam",
            "UsePAM is off, and neither the policy nor /etc/pam.d/sshd asks codes for sshd",
        )),
        (false, directive) => out.push(Finding::error(
            "sshd-usepam",
            match directive {
                Some(directive) => format!(
                    "{}: sshd never runs PAM, so pam_kron never asks for a code over SSH",
                    directive.shown()
                ),
                None => "UsePAM is not set and OpenSSH's default is no: sshd never runs PAM, so pam_kron never asks for a code over SSH".to_owned(),
            },
            format!(
                "set `UsePAM yes` in {}, {FIX_RELOAD}",
                directive.map_or(SSHD_CONFIG, |d| d.at.file.as_str())
            ),
        )),
    }
}

fn check_kbd_interactive(config: &SshdConfig, asks: Asks, kron_in_stack: bool, out: &mut Findings) {
    let (enabled, directive) = config.flag(KBD_INTERACTIVE, true);
    if enabled {
        out.push(Finding::ok(
            "sshd-kbdinteractive",
            directive.map_or_else(
                || "KbdInteractiveAuthentication is on (OpenSSH's default)".to_owned(),
                Directive::shown,
            ),
        ));
        return;
    }
    let directive = directive.expect("only an explicit line turns it off");
    let fix = format!(
        "set `KbdInteractiveAuthentication yes` in {} (Debian ships `no`), {FIX_RELOAD}",
        directive.at.file
    );
    if kron_in_stack {
        out.push(Finding::error(
            "sshd-kbdinteractive",
            format!(
                "{} while pam_kron is in /etc/pam.d/sshd: sshd cannot show the code prompt, so logins that need a code fail (and key logins skip PAM)",
                directive.shown()
            ),
            fix,
        ));
    } else if asks != Asks::Never {
        out.push(Finding::warning(
            "sshd-kbdinteractive",
            format!(
                "{}: once pam_kron is added to /etc/pam.d/sshd, sshd cannot show its code prompt",
                directive.shown()
            ),
            fix,
        ));
    } else {
        out.push(Finding::ok(
            "sshd-kbdinteractive",
            format!(
                "{}, and no SSH login needs a code prompt",
                directive.shown()
            ),
        ));
    }
}

/// The AuthenticationMethods lists sshd accepts: `None` means "any single method".
fn method_lists(config: &SshdConfig) -> (Option<Vec<Vec<String>>>, Option<&Directive>) {
    match config.global(METHODS) {
        Some(directive) if !directive.args.iter().any(|a| a == "any") => (
            Some(
                directive
                    .args
                    .iter()
                    .map(|list| list.split(',').map(str::to_owned).collect())
                    .collect(),
            ),
            Some(directive),
        ),
        other => (None, other),
    }
}

/// `pam_checks_password`: /etc/pam.d/sshd cannot succeed without a first factor, so
/// keyboard-interactive alone is a safe suggestion.
fn check_bypass_methods(
    config: &SshdConfig,
    asks: Asks,
    pam_checks_password: bool,
    out: &mut Findings,
) {
    if asks == Asks::Never {
        out.push(Finding::ok(
            "sshd-publickey",
            "the policy asks no codes for sshd, so nothing can bypass them",
        ));
        return;
    }
    let enabled: Vec<&str> = NON_PAM_METHODS
        .iter()
        .filter(|(_, keyword, default)| config.flag(keyword, *default).0)
        .map(|(method, _, _)| *method)
        .collect();
    let (lists, directive) = method_lists(config);
    let bypass: Vec<String> = match &lists {
        None => enabled.iter().map(|m| m.to_string()).collect(),
        Some(lists) => lists
            .iter()
            .filter(|list| {
                list.iter().all(|method| {
                    !is_pam_method(method)
                        && enabled.contains(&method.split(':').next().unwrap_or(method))
                })
            })
            .map(|list| list.join(","))
            .collect(),
    };
    if bypass.is_empty() {
        out.push(Finding::ok(
            "sshd-publickey",
            match directive {
                Some(directive) if lists.is_some() => {
                    format!("every SSH login passes through PAM: {}", directive.shown())
                }
                _ => "no authentication method logs in without PAM".to_owned(),
            },
        ));
        return;
    }
    let how = match directive {
        Some(directive) if lists.is_some() => {
            format!("{} allows {}", directive.shown(), bypass.join(" or "))
        }
        Some(directive) => format!("{} with {} enabled", directive.shown(), bypass.join(", ")),
        None => format!(
            "AuthenticationMethods is not set and {} is enabled",
            bypass.join(", ")
        ),
    };
    let message = format!(
        "{} bypass the second factor: {how}, and such a login never runs PAM, so pam_kron never asks",
        if bypass.iter().any(|m| m.starts_with("publickey")) {
            "public keys"
        } else {
            "these methods"
        }
    );
    let fix = format!(
        "set `AuthenticationMethods publickey,keyboard-interactive`{} in {}, {FIX_RELOAD}",
        if pam_checks_password {
            " (or `keyboard-interactive`: /etc/pam.d/sshd checks a password)"
        } else {
            ""
        },
        directive.map_or(SSHD_CONFIG, |d| d.at.file.as_str())
    );
    out.push(match asks {
        Asks::Always => Finding::error("sshd-publickey", message, fix),
        _ => Finding::warning(
            "sshd-publickey",
            format!("{message} (the policy is optional, so only enrolled users lose their code)"),
            fix,
        ),
    });
}

/// Methods that run PAM's auth stack, with the keyword that enables each (both on by default).
const PAM_METHODS: [(&str, &str); 2] = [
    ("keyboard-interactive", KBD_INTERACTIVE),
    ("password", PASSWORD),
];

/// A login that needs nothing but PAM methods (keyboard-interactive, password) is only as
/// strong as /etc/pam.d/sshd. If that stack can succeed while pam_kron skips the user and no
/// module that checks a password or key passes (kron + pam_permit, the key-then-code stack),
/// such a login needs no factor at all for the users pam_kron skips.
///
/// `no_factor` is [`Stack::succeeds_without_factor`] of `stack`.
fn check_no_first_factor(
    config: &SshdConfig,
    policy: &Policy,
    stack: &Stack,
    no_factor: Option<String>,
    out: &mut Findings,
) {
    const ID: &str = "sshd-no-first-factor";
    if !out.wants(ID) {
        return;
    }
    if !config.flag(USE_PAM, false).0 {
        out.push(Finding::ok(
            ID,
            "UsePAM is off: no SSH login rests on /etc/pam.d/sshd",
        ));
        return;
    }
    let enabled: Vec<&str> = PAM_METHODS
        .iter()
        .filter(|(_, keyword)| config.flag(keyword, true).0)
        .map(|(method, _)| *method)
        .collect();
    let (lists, directive) = method_lists(config);
    let alone: Vec<String> = match &lists {
        None => enabled.iter().map(|m| m.to_string()).collect(),
        Some(lists) => lists
            .iter()
            .filter(|list| {
                list.iter().all(|method| {
                    is_pam_method(method)
                        && enabled.contains(&method.split(':').next().unwrap_or(method))
                })
            })
            .map(|list| list.join(","))
            .collect(),
    };
    if alone.is_empty() {
        out.push(Finding::ok(
            ID,
            match directive {
                Some(directive) if lists.is_some() => format!(
                    "every SSH login needs more than /etc/pam.d/sshd: {}",
                    directive.shown()
                ),
                _ => "keyboard-interactive and password are off: no SSH login rests on /etc/pam.d/sshd alone".to_owned(),
            },
        ));
        return;
    }
    let how = match directive {
        Some(directive) => format!(
            "{} lets {} alone log in",
            directive.shown(),
            alone.join(" or ")
        ),
        None => format!(
            "AuthenticationMethods is not set, so {} alone logs in",
            alone.join(" or ")
        ),
    };
    if !stack.exists() {
        out.push(Finding::ok(
            ID,
            format!("no {}: nothing to check", stack.file),
        ));
        return;
    }
    let Some(passed_by) = no_factor else {
        let factors = stack.factors();
        out.push(Finding::ok(
            ID,
            if factors.is_empty() {
                format!(
                    "{how}, and the auth stack of {} cannot succeed without a password or key",
                    stack.file
                )
            } else {
                format!(
                    "{how}, and the auth stack of {} needs a password or key to pass ({})",
                    stack.file,
                    factors.join(", ")
                )
            },
        ));
        return;
    };
    let methods_file = directive.map_or(SSHD_CONFIG, |d| d.at.file.as_str());
    let stack_file = &stack.file;
    if !stack.has_kron() {
        out.push(Finding::error(
            ID,
            format!(
                "{how}, and the auth stack of {stack_file} succeeds without checking any password or key ({passed_by} lets it pass): anyone who knows a user name logs in over SSH"
            ),
            format!(
                "put the password module (`@include common-auth`) back in {stack_file}, or set `AuthenticationMethods publickey,keyboard-interactive` in {methods_file}, {FIX_RELOAD}"
            ),
        ));
        return;
    }
    let fix = format!(
        "use `AuthenticationMethods publickey,keyboard-interactive` in {methods_file} ({FIX_RELOAD}), or put the password module (`@include common-auth`) before pam_kron.so in {stack_file}"
    );
    let stack_says = format!(
        "{how}, and the auth stack of {stack_file} has no check but pam_kron ({passed_by} lets it pass when pam_kron skips a user)"
    );
    let modes = policy.modes("sshd");
    let skipping: Vec<&str> = modes.as_ref().map_or_else(Vec::new, |modes| {
        modes
            .iter()
            .filter(|m| matches!(m, Mode::Optional | Mode::Exempt))
            .map(|m| m.as_str())
            .collect()
    });
    let finding = match modes {
        None => Finding::error(
            ID,
            format!(
                "{stack_says}: otpd's config does not load, so users it would skip may log in with no factor at all"
            ),
            fix,
        ),
        Some(_) if !skipping.is_empty() => Finding::error(
            ID,
            format!(
                "{stack_says}: the policy for sshd is {} for some users, and those pam_kron skips (exempt, or optional without a token) log in over SSH with no factor at all",
                skipping.join("/")
            ),
            fix,
        ),
        Some(modes) if modes.contains(&Mode::Enroll) => Finding::error(
            ID,
            format!(
                "{stack_says}: the policy for sshd is enroll for some users, so whoever connects first as a user without a token enrolls their own authenticator and logs in, with no password or key"
            ),
            fix,
        ),
        Some(_) => Finding::warning(
            ID,
            format!(
                "{stack_says}: the policy requires a code from everyone, so logins still need it, but the code is then the only factor"
            ),
            fix,
        ),
    };
    out.push(finding);
}

/// `PermitRootLogin prohibit-password` (OpenSSH's default) lets root in with keys only, so when
/// every login must also pass keyboard-interactive, root cannot log in over SSH at all.
fn check_root_login(config: &SshdConfig, kron_in_stack: bool, out: &mut Findings) -> bool {
    let permit = config.global(PERMIT_ROOT);
    let value = permit
        .and_then(|d| d.args.first())
        .map_or("prohibit-password".to_owned(), |v| v.to_ascii_lowercase());
    match value.as_str() {
        "no" => {
            out.push(Finding::ok(
                "sshd-root-login",
                format!(
                    "{}: root does not log in over SSH",
                    permit.map_or_else(|| "PermitRootLogin no".to_owned(), Directive::shown)
                ),
            ));
            return false;
        }
        "prohibit-password" | "without-password" => {}
        _ => {
            out.push(Finding::ok(
                "sshd-root-login",
                permit.map_or_else(|| format!("PermitRootLogin {value}"), Directive::shown),
            ));
            return true;
        }
    }
    let (lists, directive) = method_lists(config);
    let every_list_needs_pam = lists.as_ref().is_some_and(|lists| {
        lists
            .iter()
            .all(|list| list.iter().any(|method| is_pam_method(method)))
    });
    if kron_in_stack && every_list_needs_pam {
        let directive = directive.expect("lists come from a directive");
        out.push(Finding::warning(
            "sshd-root-login",
            format!(
                "root cannot log in over SSH: {} refuses keyboard-interactive for root, and {} requires it",
                permit.map_or_else(
                    || "PermitRootLogin prohibit-password (the default)".to_owned(),
                    Directive::shown
                ),
                directive.shown()
            ),
            "log in as an admin user and use sudo; or, if root must log in with key and code, set `PermitRootLogin yes` (AuthenticationMethods still demands the key)",
        ));
        return false;
    }
    out.push(Finding::ok(
        "sshd-root-login",
        format!(
            "{}: root logs in with a key",
            permit.map_or_else(
                || "PermitRootLogin prohibit-password (the default)".to_owned(),
                Directive::shown
            )
        ),
    ));
    true
}

fn check_match_blocks(config: &SshdConfig, out: &mut Findings) {
    let overrides = config.overrides(&AUTH_KEYWORDS);
    if overrides.is_empty() {
        let blocks = config
            .directives
            .iter()
            .filter(|d| d.block.is_some())
            .count();
        out.push(Finding::ok(
            "sshd-match",
            if blocks == 0 {
                "no Match block changes authentication".to_owned()
            } else {
                "no Match block changes the authentication settings checked here".to_owned()
            },
        ));
        return;
    }
    for directive in overrides {
        let block = directive.block.as_ref().expect("overrides are in blocks");
        out.push(Finding::warning(
            "sshd-match",
            format!(
                "Match {} ({}) sets {}: connections it matches do not follow the global settings checked above",
                block.criteria,
                block.at,
                directive.shown()
            ),
            "check what they get with `sshd -T -C user=NAME,host=HOST,addr=ADDR`, and keep keyboard-interactive in their AuthenticationMethods",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity;

    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Self {
            Tree(tempfile::tempdir().unwrap())
        }
        fn write(&self, path: &str, text: &str) -> &Self {
            let file = self.0.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
            self
        }
        fn root(&self) -> Root {
            Root::new(self.0.path())
        }
        fn sshd(&self) -> SshdConfig {
            SshdConfig::load(&self.root()).unwrap()
        }
    }

    fn policy(text: &str) -> Policy {
        Policy {
            config: Some(kron_common::config::Config::parse(text, "otpd.toml").unwrap()),
            origin: "otpd.toml".into(),
        }
    }

    const REQUIRE: &str = "default_mode = \"require\"\n";

    fn findings(tree: &Tree, otpd_toml: &str) -> Vec<Finding> {
        let stack = Stack::load(&tree.root(), "sshd");
        let mut out = Findings::new(&[]);
        check(&tree.root(), &policy(otpd_toml), &stack, &mut out);
        out.into_vec()
    }

    fn severity_of(findings: &[Finding], check: &str) -> Severity {
        findings
            .iter()
            .filter(|f| f.check == check)
            .map(|f| f.severity)
            .max()
            .unwrap_or_else(|| panic!("no {check} in {findings:#?}"))
    }

    const KRON_STACK: &str = "@include common-auth\nauth required pam_kron.so\n";
    const GOOD: &str = "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication yes\nUsePAM yes\nAuthenticationMethods publickey,keyboard-interactive\n";
    const NO_ROOT: &str = "PermitRootLogin no\n";

    #[test]
    fn lines_split_like_sshd() {
        assert_eq!(split_line("  # comment"), None);
        assert_eq!(split_line(""), None);
        assert_eq!(
            split_line("UsePAM=no"),
            Some(("UsePAM".into(), vec!["no".into()]))
        );
        assert_eq!(
            split_line("AuthenticationMethods = publickey,password  publickey # why"),
            Some((
                "AuthenticationMethods".into(),
                vec!["publickey,password".into(), "publickey".into()]
            ))
        );
        assert_eq!(
            split_line("Banner \"/etc/my banner\""),
            Some(("Banner".into(), vec!["/etc/my banner".into()]))
        );
    }

    #[test]
    fn wildcards_match_like_fnmatch() {
        let m = |p: &str, n: &str| wildcard_match(p.as_bytes(), n.as_bytes());
        assert!(m("*.conf", "10-kron.conf"));
        assert!(!m("*.conf", "10-kron.conf.bak"));
        assert!(m("?0-*", "10-x"));
        assert!(m("[0-9]*", "5x"));
        assert!(!m("[!0-9]*", "5x"));
        assert!(m("x", "x"));
        assert!(!m("x", "xy"));
    }

    #[test]
    fn first_value_wins_across_includes() {
        let tree = Tree::new();
        tree.write(SSHD_CONFIG, "Include sshd_config.d/*.conf\nUsePAM yes\n")
            .write("/etc/ssh/sshd_config.d/20-late.conf", "usepam yes\n")
            .write("/etc/ssh/sshd_config.d/10-early.conf", "UsePAM no\n")
            .write("/etc/ssh/sshd_config.d/ignored.txt", "UsePAM yes\n");
        let config = tree.sshd();
        assert_eq!(config.files, 3);
        let first = config.global(USE_PAM).unwrap();
        assert_eq!(first.args, ["no"]);
        assert_eq!(first.at.file, "/etc/ssh/sshd_config.d/10-early.conf");
        assert!(!config.flag(USE_PAM, false).0);
    }

    #[test]
    fn match_blocks_end_with_their_file_and_own_their_includes() {
        let tree = Tree::new();
        tree.write(
            SSHD_CONFIG,
            "Include /etc/ssh/sshd_config.d/*.conf\nPubkeyAuthentication yes\nMatch User backup\n  Include /etc/ssh/extra.conf\n  PasswordAuthentication no\n",
        )
        .write(
            "/etc/ssh/sshd_config.d/a.conf",
            "Match Address 10.0.0.0/8\nAuthenticationMethods publickey\n",
        )
        .write("/etc/ssh/extra.conf", "KbdInteractiveAuthentication no\n");
        let config = tree.sshd();
        let pubkey = config.global(PUBKEY).unwrap();
        assert_eq!(
            pubkey.at.line, 2,
            "global again after the included file's Match"
        );
        assert!(config.global(METHODS).is_none());
        assert!(config.global(KBD_INTERACTIVE).is_none());
        let overrides = config.overrides(&AUTH_KEYWORDS);
        assert_eq!(overrides.len(), 2);
        assert_eq!(
            overrides[0].block.as_ref().unwrap().criteria,
            "Address 10.0.0.0/8"
        );
        assert_eq!(overrides[1].block.as_ref().unwrap().criteria, "User backup");
        assert_eq!(overrides[1].keyword, KBD_INTERACTIVE);
    }

    #[test]
    fn unreadable_includes_and_loops_are_problems() {
        let tree = Tree::new();
        tree.write(SSHD_CONFIG, "Include /etc/ssh/loop.conf\n")
            .write("/etc/ssh/loop.conf", "Include /etc/ssh/loop.conf\n");
        let config = tree.sshd();
        assert_eq!(config.problems.len(), 1, "{:?}", config.problems);
        assert!(config.problems[0].contains("deeper than 16"));
    }

    #[test]
    fn good_config_passes() {
        let tree = Tree::new();
        tree.write(SSHD_CONFIG, &format!("{NO_ROOT}{GOOD}"))
            .write("/etc/pam.d/sshd", KRON_STACK)
            .write("/etc/pam.d/common-auth", "auth requisite pam_unix.so\n");
        let found = findings(&tree, REQUIRE);
        assert!(
            found.iter().all(|f| f.severity == Severity::Ok),
            "{found:#?}"
        );
    }

    #[test]
    fn use_pam_no_or_unset_is_an_error() {
        let tree = Tree::new();
        tree.write(SSHD_CONFIG, &GOOD.replace("UsePAM yes", "UsePAM no"))
            .write("/etc/pam.d/sshd", KRON_STACK);
        assert_eq!(
            severity_of(&findings(&tree, REQUIRE), "sshd-usepam"),
            Severity::Error
        );
        tree.write(SSHD_CONFIG, &GOOD.replace("UsePAM yes", ""));
        let found = findings(&tree, REQUIRE);
        assert_eq!(severity_of(&found, "sshd-usepam"), Severity::Error);
        assert!(found.iter().any(|f| f.message.contains("default is no")));
        // Nobody is asked for codes over SSH and pam_kron is not in the stack: not needed.
        tree.write("/etc/pam.d/sshd", "@include common-auth\n");
        assert_eq!(
            severity_of(
                &findings(&tree, "default_mode = \"exempt\"\n"),
                "sshd-usepam"
            ),
            Severity::Ok
        );
    }

    #[test]
    fn debian_default_kbd_interactive_no_is_an_error() {
        let tree = Tree::new();
        tree.write(
            SSHD_CONFIG,
            &GOOD.replace(
                "KbdInteractiveAuthentication yes",
                "KbdInteractiveAuthentication no",
            ),
        )
        .write("/etc/pam.d/sshd", KRON_STACK);
        assert_eq!(
            severity_of(&findings(&tree, REQUIRE), "sshd-kbdinteractive"),
            Severity::Error
        );
        tree.write(
            SSHD_CONFIG,
            &GOOD.replace(
                "KbdInteractiveAuthentication yes",
                "ChallengeResponseAuthentication no",
            ),
        );
        assert_eq!(
            severity_of(&findings(&tree, REQUIRE), "sshd-kbdinteractive"),
            Severity::Error
        );
        tree.write("/etc/pam.d/sshd", "@include common-auth\n");
        assert_eq!(
            severity_of(&findings(&tree, REQUIRE), "sshd-kbdinteractive"),
            Severity::Warning,
            "pam_kron is missing (pam-sshd says so); once added it needs the prompt"
        );
        assert_eq!(
            severity_of(
                &findings(&tree, "default_mode = \"exempt\"\n"),
                "sshd-kbdinteractive"
            ),
            Severity::Ok,
            "nobody needs a code over SSH"
        );
    }

    #[test]
    fn public_keys_alone_bypass_codes() {
        let tree = Tree::new();
        tree.write("/etc/pam.d/sshd", KRON_STACK);
        for sshd_config in [
            "UsePAM yes\n",
            "UsePAM yes\nAuthenticationMethods any\n",
            "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive publickey\n",
            "UsePAM yes\nPubkeyAuthentication no\nGSSAPIAuthentication yes\n",
        ] {
            tree.write(SSHD_CONFIG, sshd_config);
            let found = findings(&tree, REQUIRE);
            assert_eq!(
                severity_of(&found, "sshd-publickey"),
                Severity::Error,
                "{sshd_config}"
            );
            assert_eq!(
                severity_of(&findings(&tree, ""), "sshd-publickey"),
                Severity::Warning,
                "optional by default: {sshd_config}"
            );
            assert_eq!(
                severity_of(
                    &findings(&tree, "default_mode = \"exempt\"\n"),
                    "sshd-publickey"
                ),
                Severity::Ok
            );
        }
        for sshd_config in [
            "UsePAM yes\nPubkeyAuthentication no\n",
            "UsePAM yes\nAuthenticationMethods keyboard-interactive:pam\n",
            "UsePAM yes\nAuthenticationMethods publickey,password publickey,keyboard-interactive\n",
            "UsePAM yes\nPubkeyAuthentication no\nAuthenticationMethods publickey hostbased,keyboard-interactive\n",
        ] {
            tree.write(SSHD_CONFIG, sshd_config);
            assert_eq!(
                severity_of(&findings(&tree, REQUIRE), "sshd-publickey"),
                Severity::Ok,
                "{sshd_config}"
            );
        }
    }

    const KEY_THEN_CODE_STACK: &str = "auth required pam_kron.so\nauth required pam_permit.so\n";
    const NO_FACTOR: &str = "sshd-no-first-factor";

    #[test]
    fn keyboard_interactive_alone_on_a_kron_only_stack_needs_no_factor() {
        let tree = Tree::new();
        tree.write("/etc/pam.d/sshd", KEY_THEN_CODE_STACK);
        for sshd_config in [
            "UsePAM yes\nAuthenticationMethods keyboard-interactive\n",
            "UsePAM yes\nAuthenticationMethods keyboard-interactive:pam\n",
            "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive keyboard-interactive\n",
            "UsePAM yes\nAuthenticationMethods any\n",
            "UsePAM yes\n",
            // The password method runs the same stack and any password passes.
            "UsePAM yes\nKbdInteractiveAuthentication no\n",
            "UsePAM yes\nAuthenticationMethods password\n",
        ] {
            tree.write(SSHD_CONFIG, sshd_config);
            for (otpd_toml, expected) in [
                ("", Severity::Error),
                ("default_mode = \"exempt\"\n", Severity::Error),
                (
                    "default_mode = \"require\"\n[[group]]\nname = \"ops\"\nmode = \"optional\"\nservices = [\"sshd\"]\n",
                    Severity::Error,
                ),
                ("default_mode = \"enroll\"\n", Severity::Error),
                (REQUIRE, Severity::Warning),
                // Optional only for sudo: every sshd login needs a code.
                (
                    "default_mode = \"require\"\n[[group]]\nname = \"ops\"\nmode = \"optional\"\nservices = [\"sudo\"]\n",
                    Severity::Warning,
                ),
            ] {
                assert_eq!(
                    severity_of(&findings(&tree, otpd_toml), NO_FACTOR),
                    expected,
                    "{sshd_config}{otpd_toml}"
                );
            }
        }
        tree.write(
            SSHD_CONFIG,
            "UsePAM yes\nAuthenticationMethods keyboard-interactive\n",
        );
        let found = findings(&tree, "");
        let finding = found.iter().find(|f| f.check == NO_FACTOR).unwrap();
        assert!(
            finding.message.contains(
                "AuthenticationMethods keyboard-interactive (/etc/ssh/sshd_config:2) lets keyboard-interactive alone log in"
            ) && finding
                .message
                .contains("pam_permit.so (`required`, /etc/pam.d/sshd:2)")
                && finding.message.contains("optional"),
            "{finding:?}"
        );
        assert_eq!(
            finding.fix.as_deref(),
            Some(
                "use `AuthenticationMethods publickey,keyboard-interactive` in /etc/ssh/sshd_config (then `systemctl reload ssh`), or put the password module (`@include common-auth`) before pam_kron.so in /etc/pam.d/sshd"
            )
        );
        let unloadable = Policy {
            config: None,
            origin: "otpd.toml".into(),
        };
        let mut out = Findings::new(&[]);
        check(
            &tree.root(),
            &unloadable,
            &Stack::load(&tree.root(), "sshd"),
            &mut out,
        );
        assert_eq!(severity_of(&out.into_vec(), NO_FACTOR), Severity::Error);
        // sshd-publickey does not suggest keyboard-interactive alone for this stack.
        tree.write(SSHD_CONFIG, "UsePAM yes\n");
        let found = findings(&tree, REQUIRE);
        let publickey = found.iter().find(|f| f.check == "sshd-publickey").unwrap();
        assert!(
            !publickey
                .fix
                .as_deref()
                .unwrap()
                .contains("or `keyboard-interactive`"),
            "{publickey:?}"
        );
        // Without pam_kron the stack lets anyone in, whatever the policy.
        tree.write("/etc/pam.d/sshd", "auth required pam_permit.so\n");
        let found = findings(&tree, REQUIRE);
        assert_eq!(severity_of(&found, NO_FACTOR), Severity::Error);
        assert!(
            found
                .iter()
                .any(|f| f.check == NO_FACTOR && f.message.contains("anyone who knows a user name")),
            "{found:#?}"
        );
    }

    #[test]
    fn a_first_factor_or_a_key_keeps_pam_logins_safe() {
        let tree = Tree::new();
        tree.write("/etc/pam.d/common-auth", "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\nauth required pam_permit.so\n");
        // Password then code (docs/sshd.md): keyboard-interactive alone, the password in PAM.
        tree.write("/etc/pam.d/sshd", KRON_STACK).write(
            SSHD_CONFIG,
            "UsePAM yes\nAuthenticationMethods keyboard-interactive\nPasswordAuthentication no\n",
        );
        for otpd_toml in ["", "default_mode = \"exempt\"\n", REQUIRE] {
            let found = findings(&tree, otpd_toml);
            assert_eq!(severity_of(&found, NO_FACTOR), Severity::Ok, "{found:#?}");
        }
        let found = findings(&tree, "");
        let finding = found.iter().find(|f| f.check == NO_FACTOR).unwrap();
        assert!(finding.message.contains("(pam_unix.so)"), "{finding:?}");
        tree.write(SSHD_CONFIG, "UsePAM yes\n");
        let found = findings(&tree, REQUIRE);
        let publickey = found.iter().find(|f| f.check == "sshd-publickey").unwrap();
        assert!(
            publickey
                .fix
                .as_deref()
                .unwrap()
                .contains("(or `keyboard-interactive`: /etc/pam.d/sshd checks a password)"),
            "{publickey:?}"
        );
        // Key then code: the key is the first factor.
        tree.write("/etc/pam.d/sshd", KEY_THEN_CODE_STACK);
        for sshd_config in [
            GOOD,
            "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive publickey,password\n",
            "UsePAM yes\nKbdInteractiveAuthentication no\nPasswordAuthentication no\n",
            "UsePAM no\n",
            "UsePAM yes\nAuthenticationMethods keyboard-interactive\nKbdInteractiveAuthentication no\n",
        ] {
            tree.write(SSHD_CONFIG, sshd_config);
            assert_eq!(
                severity_of(&findings(&tree, ""), NO_FACTOR),
                Severity::Ok,
                "{sshd_config}"
            );
        }
        // Skipped on request.
        tree.write(SSHD_CONFIG, "UsePAM yes\n");
        let mut out = Findings::new(&[NO_FACTOR.to_owned()]);
        check(
            &tree.root(),
            &policy(""),
            &Stack::load(&tree.root(), "sshd"),
            &mut out,
        );
        assert!(out.into_vec().iter().all(|f| f.check != NO_FACTOR));
    }

    #[test]
    fn root_with_prohibit_password_cannot_do_keyboard_interactive() {
        let tree = Tree::new();
        tree.write(SSHD_CONFIG, GOOD)
            .write("/etc/pam.d/sshd", KRON_STACK);
        let stack = Stack::load(&tree.root(), "sshd");
        let mut out = Findings::new(&[]);
        let facts = check(&tree.root(), &policy(REQUIRE), &stack, &mut out);
        assert!(facts.installed);
        // GOOD has no PermitRootLogin: prohibit-password by default, and methods need PAM.
        assert_eq!(
            severity_of(&out.into_vec(), "sshd-root-login"),
            Severity::Warning
        );
        assert!(!facts.root_may_log_in);

        tree.write(SSHD_CONFIG, &format!("PermitRootLogin yes\n{GOOD}"));
        let mut out = Findings::new(&[]);
        assert!(check(&tree.root(), &policy(REQUIRE), &stack, &mut out).root_may_log_in);
        tree.write(SSHD_CONFIG, &format!("PermitRootLogin no\n{GOOD}"));
        let mut out = Findings::new(&[]);
        assert!(!check(&tree.root(), &policy(REQUIRE), &stack, &mut out).root_may_log_in);
        assert_eq!(
            severity_of(&out.into_vec(), "sshd-root-login"),
            Severity::Ok
        );
    }

    #[test]
    fn match_overrides_are_warnings() {
        let tree = Tree::new();
        tree.write(
            SSHD_CONFIG,
            &format!("{GOOD}Match User backup\n    AuthenticationMethods publickey\n"),
        )
        .write("/etc/pam.d/sshd", KRON_STACK);
        let found = findings(&tree, REQUIRE);
        assert_eq!(severity_of(&found, "sshd-match"), Severity::Warning);
        assert_eq!(
            severity_of(&found, "sshd-publickey"),
            Severity::Ok,
            "global is fine"
        );
        let warning = found.iter().find(|f| f.check == "sshd-match").unwrap();
        assert!(
            warning
                .message
                .contains("Match User backup (/etc/ssh/sshd_config:5)"),
            "{warning:?}"
        );
    }

    #[test]
    fn no_sshd_skips_the_checks() {
        let tree = Tree::new();
        let found = findings(&tree, REQUIRE);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].check, "sshd-config");
        assert_eq!(found[0].severity, Severity::Ok);
    }
}
