//! The D-Bus exchange with otpd: one connection per PAM call, to otpd's own socket
//! (peer-to-peer, the default) or to a bus at an explicit address.
//!
//! [`Otpd`] is the seam the login loop is written against; [`DbusOtpd`] is the real client. It
//! blocks the calling thread, as a PAM module may, and runs no async runtime: a runtime made and
//! torn down for every PAM call (its epoll, timer and pipe fds, its tasks) cost the host process
//! more than the login's own calls (docs/pam_kron.md, "The client"). So nothing it makes can
//! outlive the hook: the connection is one socket, closed when the client is dropped, and no
//! thread is ever started. zbus encodes and checks every message; [`wire`] moves their bytes.

mod wire;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use kron_proto::{BUS_NAME, INTERFACE, OBJECT_PATH, OtpdError, Step};
use zbus::Message;
use zbus::export::serde::Serialize;
use zbus::export::serde::de::DeserializeOwned;
use zbus::message::Type as MessageType;
use zbus::zvariant::Type;

use crate::args::Transport;
use crate::error::{Error, Refusal};
use crate::items::Login;
use wire::Wire;

/// otpd's side of the login, as the loop sees it.
pub(crate) trait Otpd {
    /// `BeginLogin(user, service, rhost, tty)`.
    fn begin_login(&mut self, login: &Login) -> Result<Step, Error>;
    /// `Answer(handle, response)`.
    fn answer(&mut self, handle: &str, response: &str) -> Result<Step, Error>;
    /// `Cancel(handle)`: the conversation ended before the prompt was answered.
    fn cancel(&mut self, handle: &str) -> Result<(), Error>;
}

/// A connection to otpd, made for one PAM call; closed when dropped.
pub(crate) struct DbusOtpd {
    wire: Wire,
    timeout: Duration,
}

impl DbusOtpd {
    /// Connects to otpd within `timeout`, to authenticate as the effective uid.
    ///
    /// The handshake goes out with the first call, whose `timeout` also bounds the server's
    /// answer to it: a login takes two round trips (BeginLogin, Answer), not three.
    /// Never the environment's bus address: DBUS_SYSTEM_BUS_ADDRESS is set by whoever runs
    /// sudo.
    pub(crate) fn connect(transport: &Transport, timeout: Duration) -> Result<Self, Error> {
        Self::connect_as(transport, timeout, effective_uid())
    }

    /// [`DbusOtpd::connect`] claiming `uid` in the handshake.
    ///
    /// The server compares the claim with SO_PEERCRED, which records the *effective* uid at
    /// connect(): a setuid program (sudo, su) has euid 0 and the invoking user's real uid, and a
    /// claim of the real uid would be refused. Tests claim another uid to see that refusal.
    pub(crate) fn connect_as(
        transport: &Transport,
        timeout: Duration,
        uid: u32,
    ) -> Result<Self, Error> {
        let deadline = Instant::now() + timeout;
        match transport {
            // Peer-to-peer: otpd itself is the server, on a socket checked to be root's.
            Transport::Socket(path) => {
                Self::over(connect_socket(path, deadline, true)?, timeout, uid, None)
            }
            Transport::Bus(address) => {
                let (path, guid) = bus_socket(address)?;
                let stream = connect_socket(&path, deadline, false)?;
                let mut otpd = Self::over(stream, timeout, uid, guid)?;
                // A bus serves nothing before Hello. Its reply (the connection's unique name)
                // is skipped like any message that is not the awaited reply.
                let hello = Message::method_call("/org/freedesktop/DBus", "Hello")
                    .destination("org.freedesktop.DBus")
                    .interface("org.freedesktop.DBus")
                    .build(&())
                    .map_err(|e| Error::Unreachable(format!("Hello: {e}")))?;
                otpd.wire.queue(&hello);
                Ok(otpd)
            }
        }
    }

    /// A client on a connected socket, claiming `uid`; `expected_guid` is the server GUID the
    /// address names, if it names one.
    fn over(
        stream: UnixStream,
        timeout: Duration,
        uid: u32,
        expected_guid: Option<String>,
    ) -> Result<Self, Error> {
        Ok(DbusOtpd {
            wire: Wire::new(stream, timeout, uid, expected_guid)?,
            timeout,
        })
    }

    /// Calls otpd's `member` with `body` and decodes its reply, within the timeout.
    fn call<B, R>(&mut self, member: &'static str, body: &B) -> Result<R, Error>
    where
        B: Serialize + Type,
        R: DeserializeOwned + Type,
    {
        let message = Message::method_call(OBJECT_PATH, member)
            .interface(INTERFACE)
            .destination(BUS_NAME)
            .build(body)
            // Arguments the contract's bounds let through always encode; failing here is a bug.
            .map_err(|e| Error::Malformed(format!("{member} not encoded: {e}")))?;
        let reply = self.wire.call(&message, self.timeout)?;
        match reply.message_type() {
            MessageType::Error => Err(call_error(zbus::Error::from(reply))),
            _ => reply.body().deserialize::<R>().map_err(call_error),
        }
    }
}

impl Otpd for DbusOtpd {
    fn begin_login(&mut self, login: &Login) -> Result<Step, Error> {
        let body = (&login.user, &login.service, &login.rhost, &login.tty);
        self.call("BeginLogin", &body)
    }

    fn answer(&mut self, handle: &str, response: &str) -> Result<Step, Error> {
        self.call("Answer", &(handle, response))
    }

    fn cancel(&mut self, handle: &str) -> Result<(), Error> {
        self.call("Cancel", &(handle,))
    }
}

/// The socket file and the server GUID (if named) of a `bus=` address, which args.rs has
/// already checked to be `unix:path=` with an absolute path.
fn bus_socket(address: &str) -> Result<(std::path::PathBuf, Option<String>), Error> {
    use zbus::address::transport::{Transport as DbusTransport, UnixSocket};
    let parsed = address
        .parse::<zbus::Address>()
        .map_err(|e| Error::Unreachable(format!("bus address: {e}")))?;
    let guid = parsed.guid().map(|guid| guid.as_str().to_owned());
    match parsed.transport() {
        DbusTransport::Unix(unix) => match unix.path() {
            UnixSocket::File(path) => Ok((path.clone(), guid)),
            _ => Err(Error::Unreachable("bus address: not a socket file".into())),
        },
        _ => Err(Error::Unreachable("bus address: not a unix socket".into())),
    }
}

/// Connects to the socket at `path`; with `roots_only`, requires the process that listens on
/// it to be root's (SO_PEERCRED of the connected socket: otpd, or systemd holding
/// `otpd.socket` for it). A socket another user made (a `socket=` in a directory they may
/// write, while otpd was away) is never asked for a verdict, and the check is of the very
/// socket the login then talks on. Non-blocking: while the listen backlog is full (otpd or the
/// bus swamped), it tries again every 20 ms until `deadline`, never waiting in the kernel; a
/// backlog still full then is [`Error::TooManyConnections`], since any local user can keep it
/// full, and a socket this process cannot make is [`Error::Local`] (its descriptor limit is the
/// caller's to set, even for a set-uid program), so that neither reads as otpd being down.
fn connect_socket(path: &Path, deadline: Instant, roots_only: bool) -> Result<UnixStream, Error> {
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
        .map_err(|e| Error::Local(e.to_string()))?;
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => {
                if roots_only {
                    let uid = getsockopt(&fd, PeerCredentials)
                        .map_err(|e| unreachable(&e))?
                        .uid();
                    if uid != 0 {
                        return Err(Error::Unreachable(format!(
                            "{} is served by uid {uid}, not root: not asked",
                            path.display()
                        )));
                    }
                }
                return Ok(UnixStream::from(fd));
            }
            // A full backlog: a new socket, a little later.
            Err(Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::TooManyConnections);
                }
                std::thread::sleep(left.min(Duration::from_millis(20)));
            }
            Err(e) => return Err(unreachable(&e)),
        }
    }
}

/// The effective uid, which the server sees on the socket.
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
        fn begin_login(&mut self, login: &Login) -> Result<Step, Error> {
            self.begun.push(login.clone());
            self.next()
        }

        fn answer(&mut self, handle: &str, response: &str) -> Result<Step, Error> {
            self.answers.push((handle.to_owned(), response.to_owned()));
            self.next()
        }

        fn cancel(&mut self, handle: &str) -> Result<(), Error> {
            self.cancelled.push(handle.to_owned());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
