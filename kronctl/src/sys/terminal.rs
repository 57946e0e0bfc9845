//! Echo off on the terminal while a passphrase or code is typed (termios).
#![allow(unsafe_code)]

use std::io;

/// Echo turned off on stdin's terminal for as long as it lives.
pub struct NoEcho {
    saved: libc::termios,
}

impl NoEcho {
    pub fn on_stdin() -> io::Result<NoEcho> {
        // SAFETY: an all-zero termios is a valid value of this plain C struct; tcgetattr then
        // overwrites it completely.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 stays open for the life of the process and `saved` is a live, writable
        // termios for the duration of the call.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        quiet.c_lflag |= libc::ICANON;
        // SAFETY: as above; `quiet` is a valid termios derived from the terminal's own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NoEcho { saved })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `on_stdin` on the same, still open, fd 0.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
