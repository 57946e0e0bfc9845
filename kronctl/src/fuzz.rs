//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay on stable Rust
//! (`fuzz/targets`): the parsers of files kronctl reads but does not control, each fed
//! arbitrary bytes. Each function only has to return; a panic is the bug.

use crate::doctor::config::Policy;
use crate::doctor::pam::Stack;
use crate::doctor::sshd::SshdConfig;
use crate::doctor::{Findings, Root};
use crate::migrate::{google, oath};

/// A root that does not exist: includes (sshd `Include`, PAM `@include`) find nothing.
const NO_ROOT: &str = "/nonexistent-kron-fuzz-root";

/// A PAM stack with pam_kron and a first factor, for the sshd checks.
const SSHD_STACK: &str = "auth required pam_unix.so\nauth required pam_kron.so\n";

/// A `~/.google_authenticator` file.
pub fn google_authenticator(data: &[u8]) {
    let parsed = google::parse(data);
    if let Ok(token) = &parsed.token {
        assert!(kron_proto::check_secret_len(&token.secret).is_ok());
    }
}

/// pam_oath's users file.
pub fn oath_usersfile(data: &[u8]) {
    for found in oath::parse(data, "users.oath", &oath::mktime) {
        if let Ok(token) = &found.parsed.token {
            assert!(kron_proto::check_secret_len(&token.secret).is_ok());
        }
    }
}

/// `/etc/ssh/sshd_config`, with every sshd check of `kronctl doctor` run on it.
pub fn sshd_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let root = Root::new(std::path::Path::new(NO_ROOT));
    let config = SshdConfig::from_text(&root, &text);
    let stack = Stack::parse("sshd", SSHD_STACK);
    let mut out = Findings::new(&[]);
    crate::doctor::sshd::check_loaded(&config, &unreadable_policy(), &stack, &mut out);
}

/// A PAM service file, with every PAM check of `kronctl doctor` run on it.
pub fn pam_stack(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let stack = Stack::parse("sshd", &text);
    let _ = stack.succeeds_without_factor();
    let _ = stack.factors();
    let mut out = Findings::new(&[]);
    crate::doctor::pam::check(&stack, &unreadable_policy(), &mut out);
}

/// otpd's config as doctor sees it when it cannot be read: every check at its strictest.
fn unreadable_policy() -> Policy {
    Policy {
        config: None,
        origin: "otpd.toml".into(),
    }
}
