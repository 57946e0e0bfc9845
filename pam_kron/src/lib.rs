//! `pam_kron.so`: the PAM side of kron's second factor.
//!
//! A thin renderer: it gathers PAM_USER, PAM_SERVICE, PAM_RHOST and PAM_TTY, asks otpd over
//! D-Bus what this login needs, shows otpd's steps through the PAM conversation, and returns the
//! PAM code for otpd's verdict. Every decision lives in otpd. See docs/pam_kron.md.
//!
//! Modules, one job each:
//! - `args`: module arguments (`socket=`, `bus=`, `timeout=`, `debug`, `nosilent`);
//! - `items`: the PAM items of the login;
//! - `conversation`: the person's side (trait + the PAM conversation);
//! - `client`: otpd's side (trait + the D-Bus client);
//! - `login`: the loop between the two, written against the traits;
//! - `error`: the crate's one error type and its PAM codes;
//! - `log`: pam_syslog;
//! - `auth`: `pam_sm_authenticate` glue.
//!
//! Built with `panic = "unwind"` (the workspace profile): pam-bindings catches a panic in a hook
//! and returns PAM_ABORT, which denies the login. Still, the module runs inside sshd and sudo:
//! outside tests nothing may unwrap, expect or panic; every failure is an error that maps to a
//! PAM code.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod args;
mod auth;
#[cfg(test)]
mod bus_tests;
mod client;
mod conversation;
mod error;
mod items;
mod log;
mod login;

use std::ffi::CStr;

use pam::constants::{PamFlag, PamResultCode};
use pam::module::{PamHandle, PamHooks};

/// The module type `pam_hooks!` exports the `pam_sm_*` symbols for.
pub struct PamKron;

pam::pam_hooks!(PamKron);

impl PamHooks for PamKron {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        auth::authenticate(pamh, &args, flags)
    }

    /// kron establishes no credentials (no tickets, no groups, no keys). PAM_SUCCESS rather than
    /// PAM_IGNORE because applications call pam_setcred on the same `auth` stack after a
    /// successful login, and a stack whose modules all ignore setcred fails it.
    fn sm_setcred(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    /// Account policy (expiry, access hours, who may log in) is not kron's business; whether a
    /// user must pass a second factor is decided during `auth`. PAM_IGNORE leaves the decision to
    /// the rest of the `account` stack.
    fn acct_mgmt(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }

    /// Tokens are changed with `kronctl`, never through passwd(1): nothing to do here.
    fn sm_chauthtok(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }

    /// kron has no session state.
    fn sm_open_session(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }

    /// kron has no session state.
    fn sm_close_session(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }
}
