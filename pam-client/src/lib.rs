//! The libpam *application* side, for programs that run PAM stacks the way sshd and sudo do:
//! the test harness's `pam-host` and the benchmark driver. One copy of the unsafe code.
//!
//! | module | what |
//! |---|---|
//! | `ffi` | the few libpam symbols and constants used, from `<security/pam_appl.h>` |
//! | `conversation` | the [`Converse`] trait and the C callback libpam calls |
//! | `transaction` | one login: `pam_start_confdir`, items, `pam_authenticate`, `pam_end`, timed |
//!
//! The PAM stack comes from a private config directory (`pam_start_confdir`, Linux-PAM ≥ 1.4),
//! so nothing here reads or changes the machine's /etc/pam.d.

pub mod conversation;
pub mod ffi;
pub mod transaction;

pub use conversation::{Converse, Ended, Style};
pub use ffi::code_name;
pub use transaction::{Item, Outcome, Service};
