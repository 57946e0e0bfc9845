//! sshd's configuration, as sshd reads it, and the checks on it:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`check`]: the checks in order, and what the admin check learns |
//! | `parse.rs` | sshd_config and its includes, as sshd reads them |
//! | `checks.rs` | one function per check id |
//! | `tests.rs` | the parser and every check on prepared trees |
//!
//! The check ids:
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

mod checks;
mod parse;
#[cfg(test)]
mod tests;

pub use parse::SSHD_CONFIG;

use checks::*;
use parse::SshdConfig;

use super::config::Policy;
use super::pam::Stack;
use super::{Finding, Findings, Root};

/// What the other checks need to know about sshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshdFacts {
    /// `/etc/ssh/sshd_config` exists.
    pub installed: bool,
    /// root may log in over SSH in a way that reaches pam_kron.
    pub root_may_log_in: bool,
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
    check_use_pam(&config, asks, kron_in_stack, out);
    check_kbd_interactive(&config, asks, kron_in_stack, out);
    // The line that lets /etc/pam.d/sshd succeed with no first factor, if any.
    let no_factor = stack.succeeds_without_factor();
    check_bypass_methods(&config, asks, stack.exists() && no_factor.is_none(), out);
    check_no_first_factor(&config, policy, stack, no_factor, out);
    let root_may_log_in = check_root_login(&config, kron_in_stack, out);
    check_match_blocks(&config, out);
    SshdFacts {
        installed: true,
        root_may_log_in,
    }
}
