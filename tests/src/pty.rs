//! Programs on a pseudo-terminal, driven like a person at a keyboard.
//!
//! sudo takes PAM_TTY from its controlling terminal (not from stdin), and step-up grace is bound
//! to that terminal, so the sudo tests run it on a pty of their own: the child gets a new
//! session with the pty's slave side as its controlling terminal and stdin/stdout/stderr; the
//! test reads everything it writes from the master side and types answers into it.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::process;

/// How long a program on a pty may go without printing what the test waits for.
pub const READ_LIMIT: Duration = Duration::from_secs(120);

/// A program running on its own pseudo-terminal. Killed on drop.
#[derive(Debug)]
pub struct Pty {
    child: Child,
    master: File,
    chunks: Receiver<Vec<u8>>,
    /// Everything the program wrote so far.
    seen: String,
    /// How much of `seen` earlier `expect` calls consumed.
    consumed: usize,
    eof: bool,
}

impl Pty {
    /// Starts `command` on a fresh pty (as its controlling terminal and stdio).
    pub fn spawn(mut command: Command) -> Pty {
        let (master, slave) = open_pty();
        let stdio = |file: &File| Stdio::from(file.try_clone().expect("dup pty slave"));
        command
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: the closure runs in the forked child before exec and calls only setsid(2) and
        // ioctl(2), which are async-signal-safe, touching no memory shared with the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?} on a pty: {err}"));
        // Only the child may hold the slave side: the master reads EOF (EIO) once it exits.
        drop(command);
        drop(slave);
        let mut reader = master.try_clone().expect("dup pty master");
        let (sender, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sender.send(buffer[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Pty {
            child,
            master,
            chunks,
            seen: String::new(),
            consumed: 0,
            eof: false,
        }
    }

    /// Waits until the output not yet consumed contains one of `needles`; returns which one and
    /// the text up to and including it, and consumes that text. Panics with the whole
    /// transcript past [`READ_LIMIT`] or if the program's output ends first.
    pub fn expect_any(&mut self, needles: &[&str]) -> (usize, String) {
        let deadline = Instant::now() + READ_LIMIT;
        loop {
            let rest = &self.seen[self.consumed..];
            let found = needles
                .iter()
                .enumerate()
                .filter_map(|(index, needle)| {
                    rest.find(needle).map(|at| (at + needle.len(), index))
                })
                .min();
            if let Some((end, index)) = found {
                let text = rest[..end].to_string();
                self.consumed += end;
                return (index, text);
            }
            assert!(
                !self.eof,
                "the program ended without printing any of {needles:?}:\n{}",
                self.seen
            );
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited {READ_LIMIT:?} for any of {needles:?}:\n{}",
                self.seen
            );
            self.read_some(left);
        }
    }

    /// [`Pty::expect_any`] with one needle; returns the text up to and including it.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_any(&[needle]).1
    }

    /// Types `text` and Enter.
    pub fn send_line(&mut self, text: &str) {
        self.master
            .write_all(format!("{text}\n").as_bytes())
            .and_then(|()| self.master.flush())
            .expect("write to pty");
    }

    /// Everything the program printed so far.
    pub fn transcript(&self) -> &str {
        &self.seen
    }

    /// Reads the rest of the output and waits for the program to end (both bounded).
    pub fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + READ_LIMIT;
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the program did not end within {READ_LIMIT:?}:\n{}",
                self.seen
            );
            self.read_some(left);
        }
        let status = process::wait_bounded(&mut self.child, READ_LIMIT)
            .unwrap_or_else(|| panic!("the program did not exit:\n{}", self.seen));
        (status, std::mem::take(&mut self.seen))
    }

    fn read_some(&mut self, limit: Duration) {
        match self.chunks.recv_timeout(limit) {
            Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.eof = true,
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A new pty pair: (master, slave), both close-on-exec (the child gets dups as its stdio).
fn open_pty() -> (File, File) {
    // SAFETY: posix_openpt takes flags only; it returns a new fd we own, or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a valid, open descriptor that nothing else owns.
    let master = unsafe { File::from_raw_fd(fd) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt/unlockpt take the master fd; ptsname_r writes at most `name.len()` bytes
    // (NUL included) into the buffer we own.
    let ok = unsafe {
        libc::grantpt(master.as_raw_fd()) == 0
            && libc::unlockpt(master.as_raw_fd()) == 0
            && libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) == 0
    };
    assert!(ok, "set up pty: {}", std::io::Error::last_os_error());
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .expect("pty path is UTF-8")
        .to_string();
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)
        .unwrap_or_else(|err| panic!("open {path}: {err}"));
    set_window_size(&slave);
    (master, slave)
}

/// A wide terminal, so nothing the tests look for is wrapped.
fn set_window_size(slave: &File) {
    let size = libc::winsize {
        ws_row: 50,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
    unsafe {
        libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size);
    }
}
