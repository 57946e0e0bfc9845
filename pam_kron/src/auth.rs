//! `pam_sm_authenticate`: wires the PAM handle to the login loop and turns the outcome into a
//! PAM code, a message for the person and a log line.

use std::ffi::CStr;

use pam::constants::{PAM_SILENT, PamFlag, PamResultCode};
use pam::module::PamHandle;

use crate::args::{self, Args};
use crate::client::DbusOtpd;
use crate::conversation::{Conversation, PamConversation};
use crate::error::Error;
use crate::items::{self, Login};
use crate::log::Log;
use crate::login::{self, Verdict};
use kron_proto::MessageLevel;

pub(crate) fn authenticate(
    pamh: &mut PamHandle,
    raw_args: &[&CStr],
    flags: PamFlag,
) -> PamResultCode {
    let silent = flags & PAM_SILENT != 0;

    let parsed = args::parse(raw_args);
    let args = {
        let debug = parsed.args.as_ref().is_ok_and(|a| a.debug);
        let log = Log::new(pamh, debug);
        for warning in &parsed.warnings {
            log.warning(warning);
        }
        match parsed.args {
            Ok(args) => args,
            Err(e) => return fail(pamh, &log, silent, None, Error::Config(e)),
        }
    };

    let login = match items::gather(pamh) {
        Ok(login) => login,
        Err(e) => {
            let log = Log::new(pamh, args.debug);
            return fail(pamh, &log, silent, None, e);
        }
    };

    // `nosilent` on the PAM line overrides an application that always passes PAM_SILENT.
    let silent = silent && !args.nosilent;
    // From here on the handle is only read, so the conversation and the log can share it.
    let pamh: &PamHandle = pamh;
    let log = Log::new(pamh, args.debug);
    log.debug(&format!(
        "checking user {:?} (rhost {:?}, tty {:?}) with otpd at {}",
        login.user, login.rhost, login.tty, args.transport
    ));
    let mut conv = match PamConversation::new(pamh) {
        Ok(conv) => conv,
        Err(e) => return fail(pamh, &log, silent, Some(&login), Error::Conversation(e.0)),
    };

    match exchange(&args, &mut conv, &login, silent, &log) {
        Ok(verdict) => {
            if verdict == Verdict::Unavailable {
                // otpd answered but could not decide: an admin must hear of every such denial.
                log.error(&format!(
                    "user {:?}: otpd could not decide; login denied",
                    login.user
                ));
            } else {
                log.debug(&format!("user {:?}: otpd says {verdict:?}", login.user));
            }
            verdict.code()
        }
        Err(e) => {
            let code = e.code();
            report(&mut conv, &log, silent, Some(&login), &e);
            code
        }
    }
}

/// The whole D-Bus part of the login: connect, run the loop, close. Everything runs on the
/// calling thread and the connection is dropped (its one socket closed) before this returns, so
/// nothing outlives the call. The conversation runs in between: while the person types, the
/// connection simply waits.
fn exchange(
    args: &Args,
    conv: &mut PamConversation<'_>,
    login: &Login,
    silent: bool,
    log: &Log<'_>,
) -> Result<Verdict, Error> {
    let mut trace = |line: &str| log.debug(line);
    let mut otpd = DbusOtpd::connect(&args.transport, args.timeout)?;
    login::run(&mut otpd, conv, login, silent, &mut trace)
}

/// Reports an error that happened before a conversation was at hand.
fn fail(
    pamh: &PamHandle,
    log: &Log<'_>,
    silent: bool,
    login: Option<&Login>,
    e: Error,
) -> PamResultCode {
    let code = e.code();
    match PamConversation::new(pamh) {
        Ok(mut conv) => report(&mut conv, log, silent, login, &e),
        // No conversation function: the log is all there is.
        Err(_) => log_error(log, login, &e),
    }
    code
}

/// Logs `e` and, unless PAM_SILENT or the conversation is what failed, tells the person.
fn report<C: Conversation>(
    conv: &mut C,
    log: &Log<'_>,
    silent: bool,
    login: Option<&Login>,
    e: &Error,
) {
    log_error(log, login, e);
    if !silent && e.can_tell_user() {
        // Best effort: the login is denied whether or not the person sees why.
        let _ = conv.show(MessageLevel::Error, &e.user_message());
    }
}

fn log_error(log: &Log<'_>, login: Option<&Login>, e: &Error) {
    let who = login.map_or(String::new(), |l| format!("user {:?}: ", l.user));
    let line = format!("{who}{e}; returning {:?}", e.code());
    if e.is_fault() {
        log.error(&line);
    } else {
        log.notice(&line);
    }
}
