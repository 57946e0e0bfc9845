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
//! Parsing follows OpenSSH (see `parse.rs`). Values in Match blocks override the global ones
//! for the connections they match, which a static check cannot evaluate: they are reported as
//! warnings.
//!
//! - `parse.rs`: sshd_config and its includes read into `SshdConfig`, as sshd does
//! - `glob.rs`: the files an `Include` pattern names (glob(3), fnmatch(3))
//! - `checks.rs`: the `sshd-*` checks, and `SshdFacts` for the admin check
//! - `tests.rs`: unit tests
#![forbid(unsafe_code)]

mod checks;
mod glob;
mod parse;
#[cfg(test)]
mod tests;

pub use checks::{check, check_loaded};
pub use parse::SshdConfig;
