//! The checks on sshd's configuration (each check id is listed in `mod.rs`).
#![forbid(unsafe_code)]

use kron_common::config::Mode;

use super::parse::{
    Directive, GSSAPI, HOSTBASED, KBD_INTERACTIVE, METHODS, PASSWORD, PERMIT_ROOT, PUBKEY,
    SSHD_CONFIG, SshdConfig, USE_PAM,
};
use crate::doctor::config::{Asks, Policy};
use crate::doctor::files::Root;
use crate::doctor::pam::Stack;
use crate::doctor::report::{Finding, Findings};

const FIX_RELOAD: &str = "then `systemctl reload ssh`";

/// Keywords that decide whether an SSH login meets pam_kron; a Match block setting one of
/// them changes the answer for the connections it matches.
pub(super) const AUTH_KEYWORDS: [&str; 6] = [
    KBD_INTERACTIVE,
    PUBKEY,
    HOSTBASED,
    GSSAPI,
    METHODS,
    PERMIT_ROOT,
];

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

/// The ways to log in that use only `enabled` methods, each of them running PAM (`through_pam`)
/// or none of them: with no AuthenticationMethods `lists`, each enabled method alone; else
/// each list that qualifies, written as in the file (`publickey,keyboard-interactive`).
fn logins_by(lists: Option<&[Vec<String>]>, enabled: &[&str], through_pam: bool) -> Vec<String> {
    match lists {
        None => enabled.iter().map(|m| m.to_string()).collect(),
        Some(lists) => lists
            .iter()
            .filter(|list| {
                list.iter().all(|method| {
                    is_pam_method(method) == through_pam
                        && enabled.contains(&method.split(':').next().unwrap_or(method))
                })
            })
            .map(|list| list.join(","))
            .collect(),
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
    let bypass = logins_by(lists.as_deref(), &enabled, false);
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
    let alone = logins_by(lists.as_deref(), &enabled, true);
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
    let permit = permit.map_or_else(
        || "PermitRootLogin prohibit-password (the default)".to_owned(),
        Directive::shown,
    );
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
                "root cannot log in over SSH: {permit} refuses keyboard-interactive for root, and {} requires it",
                directive.shown()
            ),
            "log in as an admin user and use sudo; or, if root must log in with key and code, set `PermitRootLogin yes` (AuthenticationMethods still demands the key)",
        ));
        return false;
    }
    out.push(Finding::ok(
        "sshd-root-login",
        format!("{permit}: root logs in with a key"),
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
