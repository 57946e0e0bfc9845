//! The D-Bus exchange with otpd: one connection per PAM call, to otpd's own socket
//! (peer-to-peer, the default) or to a bus at an explicit address.
//!
//! [`Otpd`] is the seam the login loop is written against; [`DbusOtpd`] is the real client on
//! top of kron-proto's `OtpdProxy`. Everything here runs inside the one `zbus::block_on` of the
//! hook, so zbus's runtime is driven by the calling thread and no helper thread is started; the
//! connection is closed before that `block_on` returns, so no fd or task outlives the hook.

use std::future::Future;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use kron_proto::{OtpdError, OtpdProxy, Step};
use zbus::Connection;
use zbus::connection::{AuthMechanism, Builder};
use zbus::proxy::CacheProperties;

use crate::args::Transport;
use crate::error::{Error, Refusal};
use crate::items::Login;

/// otpd's side of the login, as the loop sees it.
pub(crate) trait Otpd {
    /// `BeginLogin(user, service, rhost, tty)`.
    fn begin_login(&mut self, login: &Login) -> impl Future<Output = Result<Step, Error>>;
    /// `Answer(handle, response)`.
    fn answer(&mut self, handle: &str, response: &str)
    -> impl Future<Output = Result<Step, Error>>;
    /// `Cancel(handle)`: the conversation ended before the prompt was answered.
    fn cancel(&mut self, handle: &str) -> impl Future<Output = Result<(), Error>>;
}

/// A connection to otpd, made for one PAM call.
pub(crate) struct DbusOtpd {
    conn: Connection,
    proxy: OtpdProxy<'static>,
    timeout: Duration,
}

impl DbusOtpd {
    /// Connects to otpd and authenticates as the effective uid, within `timeout`.
    ///
    /// Never `Connection::system()`: that reads DBUS_SYSTEM_BUS_ADDRESS from the environment,
    /// which the user who runs sudo controls.
    pub(crate) async fn connect(transport: &Transport, timeout: Duration) -> Result<Self, Error> {
        // One `timeout` for the connect (with its retries while otpd's listen queue is full)
        // and the handshake together, as `timeout=` promises.
        let deadline = Instant::now() + timeout;
        let builder = match transport {
            // Peer-to-peer: otpd itself is the server (no Hello, no bus), on a socket connected
            // here and checked to be root's.
            Transport::Socket(path) => {
                Builder::unix_stream(connect_roots_socket(path, deadline).await?).p2p()
            }
            // An address that does not parse fails the build below, as unreachable.
            Transport::Bus(address) => Builder::address(address.as_str()),
        };
        let builder = builder
            // EXTERNAL: the bus daemon (or otpd on its socket) compares the uid we claim with the socket's SO_PEERCRED,
            // which records the *effective* uid at connect(). A setuid program (sudo, su) has
            // euid 0 and a real uid of the invoking user; claiming the real uid would be refused.
            // zbus 6.2.1 already claims geteuid(), but that is an internal choice of zbus that
            // changed before, so both the mechanism and the uid are pinned here.
            .auth_mechanism(AuthMechanism::External)
            .user_id(effective_uid())
            // Bounds every method call on this connection, including the ones below.
            .method_timeout(timeout);
        // The handshake (AUTH, BEGIN, Hello) is not a method call: bound it separately, so a
        // socket whose peer accepts but never answers cannot hold the login.
        let conn = within(
            deadline.saturating_duration_since(Instant::now()),
            builder.build(),
        )
        .await?
        .map_err(|e| Error::Unreachable(e.to_string()))?;
        // No property cache: it would subscribe to PropertiesChanged and fetch properties
        // nobody here reads.
        let proxy = within(
            timeout,
            OtpdProxy::builder(&conn)
                .cache_properties(CacheProperties::No)
                .build(),
        )
        .await?
        .map_err(|e| Error::Unreachable(e.to_string()))?;
        Ok(DbusOtpd {
            conn,
            proxy,
            timeout,
        })
    }

    /// The underlying connection, for tests that ask the bus about it.
    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Closes the connection (socket shut down, reader task ended), within the timeout.
    pub(crate) async fn close(self) {
        let DbusOtpd {
            conn,
            proxy,
            timeout,
        } = self;
        drop(proxy);
        // Failure to close cleanly changes nothing for the login; dropping `conn` below releases
        // what is left.
        let _ = within(timeout, conn.close()).await;
    }
}

impl Otpd for DbusOtpd {
    async fn begin_login(&mut self, login: &Login) -> Result<Step, Error> {
        let call = self
            .proxy
            .begin_login(&login.user, &login.service, &login.rhost, &login.tty);
        within(self.timeout, call).await?.map_err(call_error)
    }

    async fn answer(&mut self, handle: &str, response: &str) -> Result<Step, Error> {
        within(self.timeout, self.proxy.answer(handle, response))
            .await?
            .map_err(call_error)
    }

    async fn cancel(&mut self, handle: &str) -> Result<(), Error> {
        within(self.timeout, self.proxy.cancel(handle))
            .await?
            .map_err(call_error)
    }
}

/// Connects to otpd's socket at `path` and requires the process that listens on it to be
/// root's (SO_PEERCRED of the connected socket: otpd, or systemd holding `otpd.socket` for it).
/// A socket another user made (a `socket=` in a directory they may write, while otpd was away)
/// is never asked for a verdict, and the check is of the very socket the login then talks on.
/// Non-blocking: while the listen backlog is full (otpd swamped), it tries again every 20 ms on
/// the runtime's timer until `deadline`, never waiting in the kernel; the usual connect, at
/// once, sets no timer.
async fn connect_roots_socket(
    path: &std::path::Path,
    deadline: Instant,
) -> Result<UnixStream, Error> {
    use nix::errno::Errno;
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, UnixAddr, connect, getsockopt, socket,
        sockopt::PeerCredentials,
    };
    use std::os::fd::AsRawFd;
    let unreachable =
        |e: &dyn std::fmt::Display| Error::Unreachable(format!("{}: {e}", path.display()));
    let address = UnixAddr::new(path).map_err(|e| unreachable(&e))?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| unreachable(&e))?;
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => {
                let uid = getsockopt(&fd, PeerCredentials)
                    .map_err(|e| unreachable(&e))?
                    .uid();
                if uid != 0 {
                    return Err(Error::Unreachable(format!(
                        "{} is served by uid {uid}, not root: not asked",
                        path.display()
                    )));
                }
                return Ok(UnixStream::from(fd));
            }
            // A full backlog: a new socket, a little later.
            Err(Errno::EAGAIN) if Instant::now() >= deadline => {
                return Err(Error::Timeout);
            }
            Err(Errno::EAGAIN) => {
                let runtime = zruntime::SharedRuntime::current()
                    .map_err(|e| Error::Unreachable(format!("no runtime for the timer: {e}")))?;
                runtime.sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(unreachable(&e)),
        }
    }
}

/// Runs `fut` on the runtime of the enclosing `zbus::block_on`, failing after `timeout`.
async fn within<F: Future>(timeout: Duration, fut: F) -> Result<F::Output, Error> {
    // Inside `zbus::block_on` this is the runtime that call drives on this thread (zruntime's
    // documented rule), so the timer runs on the calling thread too and starts no thread.
    let runtime = zruntime::SharedRuntime::current()
        .map_err(|e| Error::Unreachable(format!("no runtime for the timer: {e}")))?;
    runtime
        .timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout)
}

/// The effective uid, which the bus daemon sees on the socket.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sorts an error from a method call: otpd's own errors, a timeout, a reply of the wrong shape,
/// or a transport/bus error.
fn call_error(error: zbus::Error) -> Error {
    match &error {
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            return Error::Timeout;
        }
        // The reply arrived but does not decode as a Step.
        zbus::Error::IncorrectType
        | zbus::Error::SignatureMismatch(..)
        | zbus::Error::Utf8(_)
        | zbus::Error::ExcessData
        | zbus::Error::InvalidReply
        | zbus::Error::MissingField
        | zbus::Error::InvalidField
        | zbus::Error::OutOfBounds
        | zbus::Error::PaddingNot0(_) => return Error::Malformed(error.to_string()),
        _ => {}
    }
    match OtpdError::from(error) {
        // ValidationRequired belongs to enrollment by kronctl, never to a login: refused alike.
        OtpdError::AccessDenied(text) | OtpdError::ValidationRequired(text) => {
            Error::Otpd(Refusal::AccessDenied, text)
        }
        OtpdError::InvalidArgument(text) => Error::Otpd(Refusal::InvalidArgument, text),
        OtpdError::NotFound(text) => Error::Otpd(Refusal::NotFound, text),
        OtpdError::Conflict(text) => Error::Otpd(Refusal::Conflict, text),
        OtpdError::Throttled(text) => Error::Otpd(Refusal::Throttled, text),
        OtpdError::Rejected(text) => Error::Otpd(Refusal::Rejected, text),
        OtpdError::Failed(text) => Error::Otpd(Refusal::Failed, text),
        // Anything else: no owner for io.kron.Otpd, bus policy refused the call, I/O errors.
        OtpdError::ZBus(e) => Error::Unreachable(e.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted otpd for the tests of the login loop.

    use super::*;
    use std::collections::VecDeque;

    /// Replies from a script; records what it was sent (answers included, for the asserts).
    #[derive(Default)]
    pub(crate) struct FakeOtpd {
        pub replies: VecDeque<Result<Step, Error>>,
        pub begun: Vec<Login>,
        pub answers: Vec<(String, String)>,
        pub cancelled: Vec<String>,
    }

    impl FakeOtpd {
        pub(crate) fn replying(replies: Vec<Result<Step, Error>>) -> Self {
            FakeOtpd {
                replies: replies.into(),
                ..Default::default()
            }
        }

        fn next(&mut self) -> Result<Step, Error> {
            self.replies
                .pop_front()
                .unwrap_or_else(|| Err(Error::Unreachable("script ran out of replies".into())))
        }
    }

    impl Otpd for FakeOtpd {
        async fn begin_login(&mut self, login: &Login) -> Result<Step, Error> {
            self.begun.push(login.clone());
            self.next()
        }

        async fn answer(&mut self, handle: &str, response: &str) -> Result<Step, Error> {
            self.answers.push((handle.to_owned(), response.to_owned()));
            self.next()
        }

        async fn cancel(&mut self, handle: &str) -> Result<(), Error> {
            self.cancelled.push(handle.to_owned());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method_error(name: &str, text: &str) -> zbus::Error {
        let msg = zbus::Message::method_call("/io/kron/Otpd", "BeginLogin")
            .build(&())
            .unwrap();
        zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from(name.to_owned()).unwrap(),
            Some(text.to_owned()),
            msg,
        )
    }

    #[test]
    fn otpd_errors_are_recognised() {
        for (name, refusal) in [
            ("io.kron.Otpd1.Error.AccessDenied", Refusal::AccessDenied),
            (
                "io.kron.Otpd1.Error.InvalidArgument",
                Refusal::InvalidArgument,
            ),
            ("io.kron.Otpd1.Error.NotFound", Refusal::NotFound),
            ("io.kron.Otpd1.Error.Conflict", Refusal::Conflict),
            ("io.kron.Otpd1.Error.Throttled", Refusal::Throttled),
            ("io.kron.Otpd1.Error.Rejected", Refusal::Rejected),
            ("io.kron.Otpd1.Error.Failed", Refusal::Failed),
        ] {
            match call_error(method_error(name, "why")) {
                Error::Otpd(got, text) => {
                    assert_eq!(got, refusal);
                    assert_eq!(text, "why");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_errors_are_unreachable_timeout_or_malformed() {
        assert!(matches!(
            call_error(method_error(
                "org.freedesktop.DBus.Error.ServiceUnknown",
                "no owner"
            )),
            Error::Unreachable(_)
        ));
        assert!(matches!(
            call_error(method_error(
                "org.freedesktop.DBus.Error.AccessDenied",
                "policy"
            )),
            Error::Unreachable(_)
        ));
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        assert!(matches!(
            call_error(zbus::Error::from(timed_out)),
            Error::Timeout
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            call_error(zbus::Error::from(refused)),
            Error::Unreachable(_)
        ));
        assert!(matches!(
            call_error(zbus::Error::IncorrectType),
            Error::Malformed(_)
        ));
    }

    #[test]
    fn effective_uid_is_what_we_claim() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(effective_uid(), unsafe { libc::geteuid() });
    }

    #[test]
    fn nothing_listening_is_unreachable_not_a_hang() {
        let dir =
            std::path::Path::new("/tmp").join(format!("pam_kron-test-{}", std::process::id()));
        for transport in [
            Transport::Bus(format!("unix:path={}/none", dir.display())),
            Transport::Socket(dir.join("none")),
        ] {
            let result = zbus::block_on(DbusOtpd::connect(&transport, Duration::from_secs(2)));
            assert!(
                matches!(result, Err(Error::Unreachable(_))),
                "{transport}: {:?}",
                result.err()
            );
        }
    }

    #[test]
    fn a_socket_another_user_listens_on_is_not_asked() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // Listening as another user needs root; the suite runs as root.
        }
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let dir =
            std::path::Path::new("/tmp").join(format!("pam_kron-owner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let path = dir.join("otpd.sock");
        // A listener of uid 65534's: what a user could leave where a misplaced socket= points.
        let mut stranger = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket, sys, time\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 s.bind(sys.argv[1]); s.listen(8)\n\
                 print('listening', flush=True); time.sleep(30)",
            ])
            .arg(&path)
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(stranger.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        let refused = zbus::block_on(DbusOtpd::connect(
            &Transport::Socket(path.clone()),
            Duration::from_secs(2),
        ));
        stranger.kill().unwrap();
        stranger.wait().unwrap();
        match refused {
            Err(Error::Unreachable(why)) => {
                assert!(why.contains("served by uid 65534, not root"), "{why}")
            }
            other => panic!("{:?}", other.err()),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_silent_peer_times_out() {
        // A socket that accepts and never answers the handshake.
        let dir =
            std::path::Path::new("/tmp").join(format!("pam_kron-silent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bus");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        for transport in [
            Transport::Bus(format!("unix:path={}", path.display())),
            Transport::Socket(path.clone()),
        ] {
            let started = std::time::Instant::now();
            let result = zbus::block_on(DbusOtpd::connect(&transport, Duration::from_secs(1)));
            assert!(
                matches!(result, Err(Error::Timeout)),
                "{transport}: {:?}",
                result.err()
            );
            assert!(started.elapsed() < Duration::from_secs(3));
        }
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
