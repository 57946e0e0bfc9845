//! pam-host: a minimal libpam application for kron's integration tests.
//!
//! It loads the PAM stack from a private config directory (`pam_start_confdir`, libpam ≥ 1.4),
//! so tests never touch the machine's /etc/pam.d, runs `pam_authenticate` once or many times
//! in one process, and prints everything the conversation showed plus each result. See
//! [`args::USAGE`].

mod args;
mod conversation;
mod counts;
mod ffi;

use std::ffi::{CString, c_void};
use std::process::ExitCode;

use args::Args;
use conversation::Conversation;
use counts::Snapshot;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("pam-host: {err}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let mut conversation = Conversation::new(args.answers.clone(), args.answers_stdin, args.quiet);
    let baseline = Snapshot::now();
    let mut after_first = None;
    let mut last = ffi::PAM_SUCCESS;
    for plan in &args.plans {
        for _ in 0..plan.count {
            last = login(&args, &plan.user, &mut conversation);
            println!("RESULT: {}", ffi::code_name(last));
            after_first.get_or_insert_with(Snapshot::now);
        }
    }
    if args.total_logins() > 1 {
        let after_all = Snapshot::now();
        let first = after_first.unwrap_or(baseline);
        println!(
            "TASKS: {} {} {}",
            baseline.threads, first.threads, after_all.threads
        );
        println!("FDS: {} {} {}", baseline.fds, first.fds, after_all.fds);
    }
    ExitCode::from(u8::try_from(last).unwrap_or(u8::MAX))
}

/// One `pam_start_confdir` + `pam_authenticate` + `pam_end`; returns the authenticate result
/// (or the start failure).
fn login(args: &Args, user: &str, conversation: &mut Conversation) -> i32 {
    let (Ok(service), Ok(user), Ok(confdir)) = (
        CString::new(args.service.as_str()),
        CString::new(user),
        CString::new(args.confdir.as_str()),
    ) else {
        eprintln!("pam-host: arguments must not contain NUL bytes");
        return ffi::PAM_BUF_ERR;
    };
    let conv = conversation.pam_conv();
    let mut handle: *mut ffi::PamHandle = std::ptr::null_mut();
    // SAFETY: the strings are valid NUL-terminated C strings that outlive the call, `conv`
    // points at a live `Conversation` until pam_end below, and `handle` is a valid out-pointer.
    let started = unsafe {
        ffi::pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            confdir.as_ptr(),
            &mut handle,
        )
    };
    if started != ffi::PAM_SUCCESS || handle.is_null() {
        eprintln!(
            "pam-host: pam_start_confdir failed: {}",
            ffi::code_name(started)
        );
        return started;
    }
    set_item(handle, ffi::PAM_RHOST, args.rhost.as_deref());
    set_item(handle, ffi::PAM_TTY, args.tty.as_deref());
    // SAFETY: `handle` came from a successful pam_start_confdir and is not yet ended.
    let result = unsafe { ffi::pam_authenticate(handle, 0) };
    // SAFETY: as above; the handle is not used after pam_end.
    unsafe { ffi::pam_end(handle, result) };
    result
}

/// Sets a string item when a value was given.
fn set_item(handle: *mut ffi::PamHandle, item: i32, value: Option<&str>) {
    let Some(value) = value else { return };
    let Ok(value) = CString::new(value) else {
        return;
    };
    // SAFETY: `handle` is a live PAM handle and libpam copies the string item.
    let status = unsafe { ffi::pam_set_item(handle, item, value.as_ptr().cast::<c_void>()) };
    if status != ffi::PAM_SUCCESS {
        eprintln!(
            "pam-host: pam_set_item({item}) failed: {}",
            ffi::code_name(status)
        );
    }
}
