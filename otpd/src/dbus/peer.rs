//! A connection on otpd's own socket, as zbus's server side sees it: the peer's credentials
//! read once at accept, and what it sends bounded before it is buffered (`bounded.rs`).
//!
//! Why not `Builder::unix_stream(stream)`, zbus's own unix socket: it answers
//! `peer_credentials()` with SO_PEERCRED *plus* the peer's groups, looked up with getpwuid_r and
//! getgrouplist on a blocking thread (zbus 6.2.1 `runtime/io/unix.rs`), and the peer-to-peer
//! server build asks for them on every connection although it uses only the uid
//! (`connection/builder.rs`): on an SSSD or LDAP host a directory round trip per login. It also
//! reads messages and the handshake without the bounds `bounded.rs` puts on them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use zbus::connection::socket::{Socket, Split};
use zruntime::{AsyncIo, SharedRuntime};

use super::bounded::{self, Limits, Reader, Writer};

/// What the kernel says about the process at the other end, read once at accept.
#[derive(Debug)]
pub struct PeerCreds {
    pub uid: u32,
    /// The pid at connect() time, in otpd's pid namespace (0 if not visible there).
    pub pid: u32,
    /// SO_PEERPIDFD (Linux 6.5 and later), when asked for: the connecting process itself,
    /// never a later process that reuses its pid.
    pub pidfd: Option<OwnedFd>,
}

/// SO_PEERCRED of a connected unix socket, and SO_PEERPIDFD if `with_pidfd` (only the audit
/// session needs it): one or two getsockopt calls, no NSS.
pub fn peer_creds(stream: &UnixStream, with_pidfd: bool) -> io::Result<PeerCreds> {
    let fd = stream.as_raw_fd();
    let mut ucred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is a live socket owned by `stream`; `ucred` and `len` are valid for writes of
    // `len` bytes, which is all getsockopt writes.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut ucred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCreds {
        uid: ucred.uid,
        pid: u32::try_from(ucred.pid).unwrap_or(0),
        pidfd: if with_pidfd { peer_pidfd(fd) } else { None },
    })
}

/// A pidfd of `stream`'s peer, when [`peer_creds`] was not asked for one: SO_PEERPIDFD (Linux
/// 6.5 and later), else `pidfd_open` of the pid SO_PEERCRED gave (Linux 5.3 and later), which
/// names whatever process has that pid now: the connecting one unless it has exited and its pid
/// gone to another since.
pub fn pidfd_of(stream: &UnixStream, pid: u32) -> Option<OwnedFd> {
    peer_pidfd(stream.as_raw_fd()).or_else(|| pidfd_open(pid))
}

/// `pidfd_open(2)` of `pid` (Linux 5.3 and later): the process that has that pid now.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|&pid| pid > 0)?;
    // SAFETY: pidfd_open takes a pid and flags 0, touches no memory of ours, and returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just handed us this descriptor; nobody else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The real uid of the process that connected, for a peer whose effective uid is root: a
/// set-uid program (sudo, su) run by a user has that user as its real uid. Read from
/// `/proc/PID/status`, then confirmed as the connecting process's own by its pidfd (alive
/// after the read, so the pid was still its own during it). `None` if it cannot be known.
pub fn real_uid(pid: u32, pidfd: Option<&OwnedFd>) -> Option<u32> {
    let pidfd = pidfd?;
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let real = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse::<u32>()
        .ok()?;
    super::session::alive(pidfd).then_some(real)
}

/// A user namespace as the kernel names it: the device and inode of a process's `ns/user`.
pub type UserNamespace = (u64, u64);

/// The user namespace of the process that connected, confirmed as that process's own by its
/// pidfd as [`real_uid`] is. `None` if it cannot be known.
pub fn user_namespace(pid: u32, pidfd: Option<&OwnedFd>) -> Option<UserNamespace> {
    let pidfd = pidfd?;
    if pid == 0 {
        return None;
    }
    let namespace = namespace_at(&format!("/proc/{pid}/ns/user"))?;
    super::session::alive(pidfd).then_some(namespace)
}

/// otpd's own user namespace.
pub fn own_user_namespace() -> Option<UserNamespace> {
    namespace_at("/proc/self/ns/user")
}

fn namespace_at(path: &str) -> Option<UserNamespace> {
    use std::os::unix::fs::MetadataExt;
    // The link's target: the namespace's own inode.
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// SO_PEERPIDFD of the connected socket `fd`, or `None` where the kernel has none (before
/// Linux 6.5: no audit session, so no step-up grace).
fn peer_pidfd(fd: RawFd) -> Option<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a live socket of the caller's; `pidfd` and `len` are valid for writes of
    // `len` bytes, and on success the kernel writes one int, a new descriptor we then own.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: the kernel just handed us this descriptor (close-on-exec); nobody else owns it.
    (ret == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// The accepted stream, registered on the runtime its connection runs on.
#[derive(Debug)]
pub struct PeerSocket {
    io: AsyncIo<UnixStream, zruntime::Shared>,
    credentials: (u32, u32),
    limits: Limits,
}

impl PeerSocket {
    /// Wraps `stream`. Call it on the thread that builds the connection: the stream joins
    /// `SharedRuntime::current()`, the runtime zbus also picks for the connection there.
    pub fn new(stream: UnixStream, creds: &PeerCreds, limits: Limits) -> io::Result<Self> {
        let runtime = SharedRuntime::current()?;
        Ok(PeerSocket {
            io: AsyncIo::new(&runtime, stream)?,
            credentials: (creds.uid, creds.pid),
            limits,
        })
    }
}

impl Socket for PeerSocket {
    type ReadHalf = Reader;
    type WriteHalf = Writer;

    fn split(self) -> Split<Reader, Writer> {
        let (reader, writer) = bounded::split(self.io, self.credentials, self.limits);
        Split::new(reader, writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_uid_is_read_of_a_live_peer_only() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let pidfd = pidfd_open(pid).expect("pidfd_open");
        // SAFETY: getuid has no preconditions and cannot fail.
        let ours = unsafe { libc::getuid() };
        assert_eq!(real_uid(pid, Some(&pidfd)), Some(ours));
        assert_eq!(real_uid(pid, None), None, "no pidfd, nothing to confirm");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(real_uid(pid, Some(&pidfd)), None, "exited");
    }

    #[test]
    fn credentials_are_the_peers_and_its_pidfd_is_opened_only_when_asked_for() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let plain = peer_creds(&ours, false).unwrap();
        assert_eq!(plain.uid, nix::unistd::getuid().as_raw());
        assert_eq!(plain.pid, std::process::id());
        assert!(plain.pidfd.is_none());
        let with = peer_creds(&ours, true).unwrap();
        assert_eq!((with.uid, with.pid), (plain.uid, plain.pid));
        // SO_PEERPIDFD exists from Linux 6.5; where it does, the descriptor is the peer's
        // process (the kernel names it in the pidfd's fdinfo).
        if let Some(pidfd) = with.pidfd {
            let fdinfo =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
                    .unwrap();
            let pid_line = fdinfo.lines().find(|l| l.starts_with("Pid:")).unwrap();
            assert_eq!(
                pid_line.split_whitespace().nth(1),
                Some(&*plain.pid.to_string())
            );
        }
    }
}
