//! The bytes of one D-Bus connection: the SASL EXTERNAL handshake, sent with the first call,
//! and whole messages read within a deadline, each refused past a bound before it is read.
//!
//! zbus encodes every message sent and checks every message received (`Message::from_bytes`
//! runs the same parse as zbus's own reader); this module only frames them on a blocking socket.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use kron_proto::{
    MAX_HANDLE_LEN, MAX_MESSAGE_LEN, MAX_MESSAGES, MAX_PROMPT_LEN, MESSAGE_FIXED_HEADER,
};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};
use zbus::Message;
use zbus::message::Type;
use zbus::wire::serialized::{Context, Data};
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;

/// The largest reply accepted from otpd or a bus: twice the largest `Step` the contract allows,
/// with its header. A larger length is refused from the first 16 bytes, before any of the rest
/// is read or a buffer is grown for it.
pub(super) const MAX_REPLY_LEN: usize =
    2 * (MAX_MESSAGES * (MAX_MESSAGE_LEN + 16) + MAX_PROMPT_LEN + MAX_HANDLE_LEN + 1024);
/// The longest handshake line accepted (`OK` and a 32-digit GUID take 37 bytes).
const MAX_LINE_LEN: usize = 256;
/// Bytes asked of the kernel at least per read: a whole reply usually comes in one.
const READ_CHUNK: usize = 4096;

/// One connection's socket and what is still to be sent or parsed on it.
pub(super) struct Wire {
    stream: UnixStream,
    /// Sent with the next call: the handshake, and on a bus the Hello call.
    outgoing: Zeroizing<Vec<u8>>,
    /// The server's answer to the handshake is still to be read, before the first reply.
    handshake_pending: bool,
    /// The server GUID the address names, if it names one.
    expected_guid: Option<String>,
    /// Bytes read and not yet parsed. Wiped when dropped: a reply may carry a token's secret.
    received: Zeroizing<Vec<u8>>,
    /// Bytes read past the current call's deadline: bounded, since on a bus any local user can
    /// keep sending the connection signals, and reads that never wait would never end.
    late: usize,
}

impl Wire {
    /// A connected socket, with the handshake for `uid` queued for the first call. Every read
    /// and write is bounded by its call's deadline (`timeout` from the call's start).
    pub(super) fn new(
        stream: UnixStream,
        timeout: Duration,
        uid: u32,
        expected_guid: Option<String>,
    ) -> Result<Self, Error> {
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| Error::Unreachable(format!("socket set-up: {e}")))?;
        let mut outgoing = Zeroizing::new(Vec::with_capacity(1024));
        // EXTERNAL: the server compares the uid claimed here with the socket's SO_PEERCRED.
        // The leading NUL is the spec's credentials byte; BEGIN follows at once, as sd-bus
        // and zbus's own client do, and the first call follows BEGIN.
        outgoing.extend_from_slice(b"\0AUTH EXTERNAL ");
        for digit in uid.to_string().bytes() {
            outgoing.extend_from_slice(format!("{digit:02x}").as_bytes());
        }
        outgoing.extend_from_slice(b"\r\nBEGIN\r\n");
        Ok(Wire {
            stream,
            outgoing,
            handshake_pending: true,
            expected_guid,
            received: Zeroizing::new(Vec::with_capacity(2 * READ_CHUNK)),
            late: 0,
        })
    }

    /// Queues `message` to go out with the next call, whose reply is awaited alone.
    pub(super) fn queue(&mut self, message: &Message) {
        self.outgoing.extend_from_slice(message.data().bytes());
    }

    /// Sends `message` (after whatever is queued) within `timeout` and returns its reply, a
    /// method return or an error, if otpd gives it within `timeout` of the sending. The wait
    /// starts once the call is out: a process stopped before that (Ctrl-Z at sudo's prompt)
    /// gives otpd its whole time; one stopped while waiting still reads a reply that came
    /// meanwhile ([`Wire::fill`]). A timeout then means otpd was silent, never that the person
    /// held their own process.
    pub(super) fn call(&mut self, message: &Message, timeout: Duration) -> Result<Message, Error> {
        let serial = message.primary_header().serial_num();
        self.queue(message);
        let sent = self.send(Instant::now() + timeout);
        // The queue may hold an answer to a prompt: wiped whether or not it went out.
        self.outgoing.zeroize();
        sent?;
        let deadline = Instant::now() + timeout;
        self.late = 0;
        if self.handshake_pending {
            self.read_handshake_answer(deadline)?;
            self.handshake_pending = false;
        }
        // On a bus, any local user may send this connection signals (the default policy
        // allows signals to any unique name): they are skipped whatever their number or size,
        // until the reply comes or the deadline passes. Otherwise a user could turn this login
        // into "unavailable" by sending a few, which `authinfo_unavail=ignore` would let pass.
        loop {
            let Some(reply) = self.read_reply(deadline)? else {
                continue;
            };
            if reply.header().reply_serial() == Some(serial) {
                return Ok(reply);
            }
        }
    }

    /// Writes the queue whole by `deadline` (SO_SNDTIMEO, set to what is left before each write
    /// after the first: the socket's timeout is the call's whole timeout). MSG_NOSIGNAL: a peer
    /// that went away must be an error here, not a SIGPIPE that kills the host process.
    fn send(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut written = 0;
        while written < self.outgoing.len() {
            if written > 0 {
                self.stream
                    .set_write_timeout(Some(left_until(deadline)?))
                    .map_err(|e| Error::Unreachable(format!("socket set-up: {e}")))?;
            }
            match send(
                self.stream.as_raw_fd(),
                &self.outgoing[written..],
                MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => written += n,
                Err(Errno::EINTR) => {}
                // SO_SNDTIMEO ran out: the peer does not read.
                Err(Errno::EAGAIN) => return Err(Error::Timeout),
                // otpd hung up before reading the handshake: it may have said why first (a
                // uid over its connection limit), and that line waits to be read.
                Err(e @ (Errno::EPIPE | Errno::ECONNRESET)) if self.handshake_pending => {
                    return Err(match self.read_handshake_answer(deadline) {
                        Err(Error::TooManyConnections) => Error::TooManyConnections,
                        _ => Error::Unreachable(format!("sending: {e}")),
                    });
                }
                Err(e) => return Err(Error::Unreachable(format!("sending: {e}"))),
            }
        }
        Ok(())
    }

    /// Reads the server's `OK <guid>` line.
    fn read_handshake_answer(&mut self, deadline: Instant) -> Result<(), Error> {
        let end = loop {
            if let Some(at) = self.received.iter().position(|&b| b == b'\n') {
                if at >= MAX_LINE_LEN {
                    return Err(Error::Malformed("a handshake line too long".into()));
                }
                break at + 1;
            }
            if self.received.len() >= MAX_LINE_LEN {
                return Err(Error::Malformed("a handshake line too long".into()));
            }
            self.fill(self.received.len() + 1, deadline)?;
        };
        let line: Zeroizing<Vec<u8>> = Zeroizing::new(self.received.drain(..end).collect());
        let Some(line) = line.strip_suffix(b"\r\n") else {
            return Err(Error::Malformed("a handshake line without CR LF".into()));
        };
        if line
            == kron_proto::CONNECTION_LIMIT_LINE
                .strip_suffix(b"\r\n")
                .unwrap_or_default()
        {
            return Err(Error::TooManyConnections);
        }
        if line.starts_with(b"REJECTED") || line.starts_with(b"ERROR") {
            return Err(Error::Unreachable(
                "the server refused the authentication (EXTERNAL, as the effective uid)".into(),
            ));
        }
        let Some(guid) = line.strip_prefix(b"OK ") else {
            return Err(Error::Malformed(
                "an unexpected answer to the handshake".into(),
            ));
        };
        if let Some(expected) = &self.expected_guid
            && guid != expected.as_bytes()
        {
            return Err(Error::Unreachable(
                "the server's GUID is not the one the bus address names".into(),
            ));
        }
        Ok(())
    }

    /// Reads the next message: a method return or an error, parsed by zbus; `None` for any
    /// other type (a signal, a call), whose bytes are dropped unparsed, a piece at a time. A
    /// reply longer than [`MAX_REPLY_LEN`] is refused from its header, before any more of it is
    /// read.
    fn read_reply(&mut self, deadline: Instant) -> Result<Option<Message>, Error> {
        self.fill(MESSAGE_FIXED_HEADER, deadline)?;
        let (endian, _, length) = self.received[..MESSAGE_FIXED_HEADER]
            .try_into()
            .ok()
            .and_then(kron_proto::message_lengths)
            .ok_or_else(|| Error::Malformed("not a D-Bus message".into()))?;
        let length = usize::try_from(length)
            .map_err(|_| Error::Malformed("a message longer than memory".into()))?;
        let kind = self.received[1];
        if kind != Type::MethodReturn as u8 && kind != Type::Error as u8 {
            self.discard(length, deadline)?;
            return Ok(None);
        }
        if length > MAX_REPLY_LEN {
            return Err(Error::Malformed(format!(
                "a reply longer than {MAX_REPLY_LEN} bytes"
            )));
        }
        self.fill(length, deadline)?;
        let bytes = self.received.drain(..length).collect::<Vec<u8>>();
        // SAFETY: `from_bytes` is unsafe only because the bytes come from outside zbus; it runs
        // the same parse and header checks zbus's own reader runs on every message it receives,
        // and the body is checked against its signature when it is deserialized. The message
        // carries no file descriptors (none are asked for, and a plain read takes none).
        unsafe { Message::from_bytes(Data::new(bytes, Context::new(endian, 0))) }
            .map(Some)
            .map_err(|e| Error::Malformed(e.to_string()))
    }

    /// Drops the next `length` bytes, reading at most [`READ_CHUNK`] at a time past what is
    /// buffered.
    fn discard(&mut self, mut length: usize, deadline: Instant) -> Result<(), Error> {
        while length > 0 {
            if self.received.is_empty() {
                self.fill(1, deadline)?;
            }
            let dropped = length.min(self.received.len());
            self.received.drain(..dropped);
            length -= dropped;
        }
        Ok(())
    }

    /// How many bytes are buffered and not yet parsed.
    #[cfg(test)]
    pub(super) fn received_len(&self) -> usize {
        self.received.len()
    }

    /// Reads until `wanted` bytes are buffered, by `deadline`. Past it, what has already
    /// arrived is still read, without waiting: a process stopped while otpd answered (a
    /// signal, or Ctrl-Z at a prompt, past the timeout) reads the reply that waits in its
    /// socket instead of calling otpd silent.
    fn fill(&mut self, wanted: usize, deadline: Instant) -> Result<(), Error> {
        while self.received.len() < wanted {
            let left = left_until(deadline).ok();
            if let Some(left) = left {
                self.stream
                    .set_read_timeout(Some(left))
                    .map_err(|e| Error::Unreachable(format!("socket set-up: {e}")))?;
            }
            let start = self.received.len();
            let end = start + (wanted - start).max(READ_CHUNK);
            if end > self.received.capacity() {
                // Grown by hand: a reallocating Vec would free the old block unwiped, and a
                // reply may carry a token's secret.
                let mut grown = Zeroizing::new(Vec::with_capacity(end));
                grown.extend_from_slice(&self.received);
                self.received = grown;
            }
            self.received.resize(end, 0);
            let read = match left {
                Some(_) => (&self.stream).read(&mut self.received[start..]),
                None => recv(
                    self.stream.as_raw_fd(),
                    &mut self.received[start..],
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(std::io::Error::from),
            };
            self.received.truncate(start + *read.as_ref().unwrap_or(&0));
            if left.is_none() {
                // Past the deadline, at most what a whole reply and what came before it can
                // take: more is a stream of other messages.
                self.late += *read.as_ref().unwrap_or(&0);
                if self.late > 2 * MAX_REPLY_LEN {
                    return Err(Error::Timeout);
                }
            }
            match read {
                Ok(0) => {
                    return Err(Error::Unreachable(
                        "the connection was closed before the reply".into(),
                    ));
                }
                Ok(_) => {}
                // The read's timeout ran out, or a signal came (SIGSTOP and SIGCONT among
                // them): the loop looks once more at what arrived, without waiting, unless that
                // look was this one.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    if left.is_none() {
                        return Err(Error::Timeout);
                    }
                }
                Err(e) => return Err(Error::Unreachable(format!("receiving: {e}"))),
            }
        }
        Ok(())
    }
}

/// The time left before `deadline`; past it, the call has timed out.
fn left_until(deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout);
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wire_on(stream: UnixStream) -> Wire {
        Wire::new(stream, Duration::from_secs(1), 0, None).unwrap()
    }

    /// A process stopped past its deadline (Ctrl-Z at sudo's prompt, then `fg`) while otpd
    /// answered: the reply waiting in the socket is read, not called a timeout; with nothing
    /// there, it is one, at once.
    #[test]
    fn past_the_deadline_what_arrived_is_still_read_without_waiting() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut wire = wire_on(ours);
        let passed = Instant::now() - Duration::from_secs(1);
        theirs.write_all(b"0123456789").unwrap();
        wire.fill(10, passed).unwrap();
        assert_eq!(wire.received_len(), 10);

        let started = Instant::now();
        assert!(matches!(wire.fill(11, passed), Err(Error::Timeout)));
        assert!(started.elapsed() < Duration::from_millis(500));
        // Part of what is wanted arrived: still a timeout, with the part kept.
        theirs.write_all(b"ab").unwrap();
        assert!(matches!(wire.fill(20, passed), Err(Error::Timeout)));
        assert_eq!(wire.received_len(), 12);
    }

    /// Past the deadline, reads that never wait stop after what a reply could take, however
    /// much more is waiting (on a bus, any local user may stream signals at the connection).
    #[test]
    fn past_the_deadline_what_is_read_is_bounded() {
        use nix::sys::socket::{setsockopt, sockopt};
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // Room for more than the bound in the socket at once (root may exceed the usual caps).
        let room = 4 * MAX_REPLY_LEN;
        if setsockopt(&theirs, sockopt::SndBufForce, &room).is_err() {
            eprintln!("skipped: needs root to grow a socket's buffer");
            return;
        }
        theirs.write_all(&vec![0u8; 3 * MAX_REPLY_LEN]).unwrap();
        let mut wire = wire_on(ours);
        let passed = Instant::now() - Duration::from_secs(1);
        // What `call` does with messages that are not its reply: drop them a piece at a time.
        let dropped = wire.discard(usize::MAX, passed);
        assert!(matches!(dropped, Err(Error::Timeout)), "{dropped:?}");
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through a valid pointer.
        unsafe { libc::ioctl(wire.stream.as_raw_fd(), libc::FIONREAD, &mut waiting) };
        assert!(
            waiting as usize >= MAX_REPLY_LEN / 2,
            "read on until the socket was empty: {waiting} bytes left"
        );
    }
}
