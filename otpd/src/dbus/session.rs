//! The kernel audit session of a caller (`/proc/PID/sessionid`): what "the same login session"
//! means for step-up grace. Set by pam_loginuid at login and not changeable by the user.

use std::os::fd::{AsRawFd, OwnedFd};

/// The session of the process that connected to otpd's socket, without a pid-reuse race.
///
/// SO_PEERCRED's pid names the process that called connect(); by the time /proc is read it may
/// have exited and its pid gone to another process, of another session. SO_PEERPIDFD names the
/// process itself: read the session, *then* check that the pidfd's process is still alive. If
/// it is, it was alive during the read, so the pid was still its own. If it has exited, there is
/// no session (no grace). Without a pidfd (Linux before 6.5) there is nothing to confirm
/// against: no session either.
pub fn of_peer(pid: u32, pidfd: Option<&OwnedFd>) -> Option<u32> {
    let pidfd = pidfd?;
    let session = of_pid(pid)?;
    alive(pidfd).then_some(session)
}

/// `/proc/PID/sessionid`; `None` when unset (4294967295), unreadable, or the pid is 0 (a peer in
/// a pid namespace otpd cannot see).
pub fn of_pid(pid: u32) -> Option<u32> {
    if pid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/sessionid")).ok()?;
    text.trim().parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

/// Whether the process behind `pidfd` has not exited (signal 0 delivers nothing).
pub(super) fn alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: `pidfd` is a pidfd we own; a null siginfo and flags 0 are valid arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // EPERM: alive but not ours to signal. ESRCH: exited.
    ret == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::peer::pidfd_open;

    #[test]
    fn a_live_peer_has_its_session_an_exited_one_none() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let pidfd = pidfd_open(pid).expect("pidfd_open");
        assert_eq!(of_peer(pid, Some(&pidfd)), of_pid(pid));
        assert_eq!(of_peer(pid, None), None, "no pidfd, nothing to confirm");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(of_peer(pid, Some(&pidfd)), None, "exited: no session");
        assert_eq!(of_pid(0), None);
    }
}
