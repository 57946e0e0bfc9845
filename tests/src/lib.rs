//! Harness for kron's integration tests: real `dbus-daemon`, real `otpd`, real `pam_kron.so`
//! loaded by the real libpam, real users, and TOTP codes from `oathtool`.
//!
//! Each test builds its own world — a [`Bus`], an [`Otpd`] on it, [`TestUser`]s, a
//! [`PamConfig`] — so tests run in parallel without sharing state. Everything started is
//! stopped and removed on drop. The tests need root (user creation, setpriv) and the binaries
//! of `cargo build --workspace`; see docs/testing.md.

pub mod artifacts;
pub mod browser;
pub mod bus;
pub mod dbus;
pub mod fake_otpd;
pub mod fleet;
pub mod gateway;
pub mod kronctl;
pub mod mailbox;
pub mod messages;
pub mod namespace;
pub mod otpd;
pub mod pam;
pub mod pgbouncer;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod pty;
pub mod scratch;
pub mod sshd;
pub mod sudo;
pub mod totp;
pub mod users;
pub mod web;
pub mod world;

pub use bus::Bus;
pub use fake_otpd::FakeOtpd;
pub use fleet::Fleet;
pub use kronctl::Kronctl;
pub use messages::{Shown, Transcript};
pub use otpd::Otpd;
pub use pam::{PamConfig, Stack};
pub use process::Identity;
pub use totp::Oath;
pub use users::{TestGroup, TestUser};
pub use world::{Transport, World};

/// PAM result names as pam-host prints them.
pub mod result {
    pub const SUCCESS: &str = "PAM_SUCCESS";
    pub const AUTH_ERR: &str = "PAM_AUTH_ERR";
    pub const MAXTRIES: &str = "PAM_MAXTRIES";
    pub const AUTHINFO_UNAVAIL: &str = "PAM_AUTHINFO_UNAVAIL";
    pub const PERM_DENIED: &str = "PAM_PERM_DENIED";
    pub const IGNORE: &str = "PAM_IGNORE";
}
