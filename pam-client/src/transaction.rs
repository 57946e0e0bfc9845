//! One login as an application runs it: `pam_start_confdir`, the items, `pam_authenticate`,
//! `pam_end`, with the time each part took.

use std::ffi::{CString, c_int, c_void};
use std::time::{Duration, Instant};

use crate::conversation::{Converse, pam_conv};
use crate::ffi::{
    PAM_BUF_ERR, PAM_RHOST, PAM_SUCCESS, PAM_TTY, PamHandle, pam_authenticate, pam_end,
    pam_set_item, pam_start_confdir,
};

/// A string item set before authenticating.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// `PAM_RHOST`: the remote host.
    Rhost(&'a str),
    /// `PAM_TTY`: the terminal.
    Tty(&'a str),
}

/// The result and timing of one login.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// pam_authenticate's result, or pam_start_confdir's when that failed.
    pub code: c_int,
    /// pam_start_confdir to pam_end: the whole cost a login application pays.
    pub total: Duration,
    /// pam_authenticate alone.
    pub authenticate: Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == PAM_SUCCESS
    }
}

/// A PAM service in a private config directory (never /etc/pam.d).
#[derive(Debug)]
pub struct Service {
    name: CString,
    confdir: CString,
}

impl Service {
    pub fn new(name: &str, confdir: &str) -> Result<Service, String> {
        Ok(Service {
            name: CString::new(name).map_err(|_| "the service name contains NUL")?,
            confdir: CString::new(confdir).map_err(|_| "the config dir contains NUL")?,
        })
    }

    /// Authenticates `user` once, with `items` set and `conversation` answering.
    pub fn authenticate<C: Converse>(
        &self,
        user: &str,
        items: &[Item<'_>],
        conversation: &mut C,
    ) -> Outcome {
        let start = Instant::now();
        let failed = |code| Outcome {
            code,
            total: start.elapsed(),
            authenticate: Duration::ZERO,
        };
        let Ok(user) = CString::new(user) else {
            return failed(PAM_BUF_ERR);
        };
        let conv = pam_conv(conversation);
        let mut handle: *mut PamHandle = std::ptr::null_mut();
        // SAFETY: every string is a live NUL-terminated C string, `conv` and the conversation
        // it points at outlive pam_end below, and `handle` is a valid out-pointer.
        let started = unsafe {
            pam_start_confdir(
                self.name.as_ptr(),
                user.as_ptr(),
                &conv,
                self.confdir.as_ptr(),
                &mut handle,
            )
        };
        if started != PAM_SUCCESS || handle.is_null() {
            return failed(started);
        }
        for item in items {
            let (kind, value) = match *item {
                Item::Rhost(value) => (PAM_RHOST, value),
                Item::Tty(value) => (PAM_TTY, value),
            };
            if let Err(code) = set_item(handle, kind, value) {
                // SAFETY: `handle` came from a successful pam_start_confdir; not used after.
                unsafe { pam_end(handle, code) };
                return failed(code);
            }
        }
        let auth_start = Instant::now();
        // SAFETY: `handle` came from a successful pam_start_confdir and is not yet ended.
        let code = unsafe { pam_authenticate(handle, 0) };
        let authenticate = auth_start.elapsed();
        // SAFETY: as above; the handle is not used after pam_end.
        unsafe { pam_end(handle, code) };
        Outcome {
            code,
            total: start.elapsed(),
            authenticate,
        }
    }
}

/// Sets a string item; libpam copies it.
fn set_item(handle: *mut PamHandle, kind: c_int, value: &str) -> Result<(), c_int> {
    let value = CString::new(value).map_err(|_| PAM_BUF_ERR)?;
    // SAFETY: `handle` is a live PAM handle and `value` a NUL-terminated string libpam copies.
    let status = unsafe { pam_set_item(handle, kind, value.as_ptr().cast::<c_void>()) };
    if status == PAM_SUCCESS {
        Ok(())
    } else {
        Err(status)
    }
}
