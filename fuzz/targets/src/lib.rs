//! The fuzz targets of kron, one function each: cargo-fuzz runs them (`fuzz/fuzz_targets/`,
//! nightly), and `tests/replay.rs` runs every file of their committed corpora
//! (`fuzz/corpus/<target>/`) on stable Rust in every test run, so an input that once crashed
//! stays fixed. See docs/testing.md, "Fuzzing".

#![forbid(unsafe_code)]

pub use kronctl::fuzz::{google_authenticator, oath_usersfile, pam_stack, sshd_config};
pub use otpd::fuzz::{backup, record};

/// The body of one fuzz target: any bytes in, a panic is the bug.
pub type Target = fn(&[u8]);

/// Every target by the name of its corpus directory and fuzz target.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("google_authenticator", google_authenticator),
    ("oath_usersfile", oath_usersfile),
    ("record", record),
    ("backup", backup),
    ("sshd_config", sshd_config),
    ("pam_stack", pam_stack),
];

/// `otpd.toml`: parsing and validation, as otpd, `otpd --check-config` and `kronctl doctor` do.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kron_common::config::Config::parse(text, "otpd.toml");
    }
}
