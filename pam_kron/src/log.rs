//! Logging through `pam_syslog(3)`: facility LOG_AUTHPRIV, lines prefixed by libpam with
//! `pam_kron(<service>:auth):`. Callers pass only what may be logged: never a code, an answer,
//! a handle, or a message text from otpd (an enrollment step carries the token's secret).

use std::ffi::CString;

use libc::{c_char, c_int};
use pam::module::PamHandle;

#[link(name = "pam")]
unsafe extern "C" {
    /// `void pam_syslog(const pam_handle_t *pamh, int priority, const char *fmt, ...);`
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

/// Writes to syslog on behalf of one PAM call.
pub(crate) struct Log<'a> {
    pamh: &'a PamHandle,
    debug: bool,
}

impl<'a> Log<'a> {
    pub(crate) fn new(pamh: &'a PamHandle, debug: bool) -> Self {
        Log { pamh, debug }
    }

    pub(crate) fn error(&self, line: &str) {
        self.write(libc::LOG_ERR, line);
    }

    pub(crate) fn warning(&self, line: &str) {
        self.write(libc::LOG_WARNING, line);
    }

    pub(crate) fn notice(&self, line: &str) {
        self.write(libc::LOG_NOTICE, line);
    }

    /// Only with the `debug` module argument.
    pub(crate) fn debug(&self, line: &str) {
        if self.debug {
            self.write(libc::LOG_DEBUG, line);
        }
    }

    fn write(&self, priority: c_int, line: &str) {
        // A NUL cannot reach here from our own texts; drop it rather than lose the line.
        let Ok(line) = CString::new(line.replace('\0', "")) else {
            return;
        };
        // SAFETY: `self.pamh` is the live handle of the current hook call (the borrow ties it to
        // that call). The format is the constant "%s" and its one argument is a valid
        // NUL-terminated string that outlives the call, so no caller text is ever read as a
        // format. pam_syslog keeps no pointer after it returns.
        unsafe { pam_syslog(self.pamh, priority, c"%s".as_ptr(), line.as_ptr()) };
    }
}
