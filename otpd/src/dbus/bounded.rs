//! Reading D-Bus messages with a bound on their size, checked at the 16-byte fixed header,
//! before the rest is buffered. Both of otpd's connections read through it: each connection on
//! its own socket (`peer.rs`) and its connection to the bus (`bus.rs`).
//!
//! zbus's own reader allocates and zero-fills whatever length a header announces, up to
//! 128 MiB, before reading a byte of it, and that limit cannot be lowered. On otpd's socket
//! any local user is the peer; on the bus any local user can send otpd a message. What a message
//! over the limit costs here is the 16-byte header and a few KiB of read-ahead:
//! - [`Oversize::Refuse`] (the socket): the connection ends, as its peer is the sender;
//! - [`Oversize::Discard`] (the bus, shared by everyone): the body is read and dropped in
//!   small pieces, and zbus gets the message with an empty body, so the sender's call fails
//!   with InvalidArgs while everyone else's go on.
//!
//! File descriptors are never accepted: reads are plain `read`/`recv`, so any SCM_RIGHTS sent
//! are closed by the kernel, and zbus answers NEGOTIATE_UNIX_FD with ERROR.
//!
//! On the socket the calls a peer has waiting for their replies are bounded too ([`Calls`]):
//! zbus runs each call in a task of its own and keeps reading, so a peer that sends calls and
//! never reads the replies would otherwise have otpd hold every call and its reply, refused or
//! not, while the replies wait on the full socket. A call flagged as wanting no reply ends the
//! connection there: it would escape that count.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::sparse_log::SparseLog;
use zbus::Message;
use zbus::connection::socket::{ReadHalf, WriteHalf};
use zbus::export::async_trait::async_trait;
use zbus::fdo::ConnectionCredentials;
use zbus::message::Type;
use zbus::wire::Endian;
use zbus::wire::serialized::{Context, Data};
use zruntime::{AsyncIo, Event, Shared, SharedRuntime};

/// Messages are read through a small buffer, so a login's calls cost one read each.
const READ_BUFFER: usize = 4096;
/// The fixed header (12 bytes) and the length of the header field array (4 bytes).
const FIXED_HEADER: usize = kron_proto::MESSAGE_FIXED_HEADER;

/// What to do with a message over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// End the connection: its peer sent it.
    Refuse,
    /// Drop the body and hand zbus the message without it.
    Discard,
}

/// What a reader is bound to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest whole message (header and body).
    pub max_message: usize,
    pub oversize: Oversize,
    /// Bytes the SASL handshake may take, checked as a server reads a client's handshake;
    /// `None` as a client, reading the bus daemon's answers.
    pub max_handshake: Option<usize>,
    /// Bounds on the calls a peer has waiting for their replies; `None` on the bus, whose
    /// daemon queues (and bounds) what it sends otpd and reads what otpd sends.
    pub calls: Option<Calls>,
    pub report: SparseLog,
}

/// How many calls that want a reply one connection may have in progress, and how long a
/// message may wait to be written before the connection is given up.
#[derive(Debug, Clone)]
pub struct Calls {
    pub max_in_flight: usize,
    pub write_timeout: Duration,
    /// The runtime the connection runs on, for the write timer.
    pub runtime: SharedRuntime,
}

/// The calls a peer sent that otpd has not answered yet, by serial. The reader hands zbus no
/// further call that wants a reply while `max` wait; the writer frees a place when it has
/// written the reply (or failed to). Counted by serial, not by message type, so a reply zbus
/// sends to a call that said it wants none frees nothing it never took.
#[derive(Debug)]
struct InFlight {
    max: usize,
    serials: Mutex<Vec<u32>>,
    freed: Event,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        self.serials.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free place and takes it for the call `serial`.
    async fn enter(&self, serial: u32) {
        loop {
            // Listen before the check, so a place freed in between is not missed.
            let freed = self.freed.listen();
            {
                let mut serials = self.lock();
                if serials.len() < self.max {
                    serials.push(serial);
                    return;
                }
            }
            freed.await;
        }
    }

    /// Whether the call `serial` waits for its reply.
    fn holds(&self, serial: u32) -> bool {
        self.lock().contains(&serial)
    }

    /// The call `serial` is answered; its place, if it took one, is free.
    fn leave(&self, serial: u32) {
        let mut serials = self.lock();
        if let Some(at) = serials.iter().position(|&s| s == serial) {
            serials.swap_remove(at);
            drop(serials);
            self.freed.notify(1);
        }
    }
}

/// The reading half of a bounded connection.
#[derive(Debug)]
pub struct Reader {
    io: Arc<AsyncIo<UnixStream, Shared>>,
    /// What `peer_credentials` answers: the uid and pid read at accept, nothing looked up.
    credentials: (u32, u32),
    /// Read ahead: `buf[start..end]` is received and not yet handed to zbus.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    handshake: Option<Handshake>,
    limits: Limits,
    in_flight: Option<Arc<InFlight>>,
}

/// The writing half.
#[derive(Debug)]
pub struct Writer {
    io: Arc<AsyncIo<UnixStream, Shared>>,
    credentials: (u32, u32),
    in_flight: Option<Arc<InFlight>>,
    /// With [`Calls`]: how long a message may wait to be written, and the runtime to time it.
    write_timeout: Option<(Duration, SharedRuntime)>,
    report: SparseLog,
}

/// The two halves over one registered stream.
pub fn split(
    io: AsyncIo<UnixStream, Shared>,
    credentials: (u32, u32),
    limits: Limits,
) -> (Reader, Writer) {
    let io = Arc::new(io);
    let handshake = limits
        .max_handshake
        .map(|left| Handshake { left, prev: None });
    let in_flight = limits.calls.as_ref().map(|calls| {
        Arc::new(InFlight {
            max: calls.max_in_flight,
            serials: Mutex::default(),
            freed: Event::new(),
        })
    });
    let writer = Writer {
        io: io.clone(),
        credentials,
        in_flight: in_flight.clone(),
        write_timeout: limits
            .calls
            .as_ref()
            .map(|calls| (calls.write_timeout, calls.runtime.clone())),
        report: limits.report.clone(),
    };
    (
        Reader {
            io,
            credentials,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            handshake,
            limits,
            in_flight,
        },
        writer,
    )
}

/// What a client's handshake has sent so far, for the checks in [`Reader::recvmsg`].
#[derive(Debug)]
struct Handshake {
    left: usize,
    /// The last byte received; `None` before the first.
    prev: Option<u8>,
}

impl Handshake {
    fn check(&mut self, bytes: &[u8]) -> io::Result<()> {
        for &byte in bytes {
            match (self.prev, byte) {
                (None, 0) => {}
                (None, _) => return Err(invalid("handshake does not start with NUL")),
                (Some(prev), b'\n') if prev != b'\r' => {
                    return Err(invalid(
                        "line feed without carriage return in the handshake",
                    ));
                }
                _ => {}
            }
            self.prev = Some(byte);
        }
        self.left = self.left.saturating_sub(bytes.len());
        Ok(())
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed")
}

/// One recv(2): `flags` is MSG_PEEK or 0; the socket is non-blocking.
fn recv(stream: &UnixStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `stream` is a live socket and `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The lengths of the message whose first 16 bytes are `head`: of its header (fixed part and
/// fields, padded to 8) and of the whole message.
fn lengths(head: &[u8]) -> io::Result<(Endian, u64, u64)> {
    head.try_into()
        .ok()
        .and_then(kron_proto::message_lengths)
        .ok_or_else(|| invalid("not a D-Bus message"))
}

impl Reader {
    /// Reads what the socket has into the free end of the buffer, moving the rest to the front.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let (buf, end) = (&mut self.buf, self.end);
        let read = self
            .io
            .read_with(|stream| (&*stream).read(&mut buf[end..]))
            .await?;
        if read == 0 {
            return Err(closed());
        }
        self.end += read;
        Ok(())
    }

    /// Takes `len` bytes: from the buffer, and beyond it straight from the socket into an
    /// allocation of that size (`len` is within the limit).
    async fn take(&mut self, len: usize) -> io::Result<Vec<u8>> {
        while self.end - self.start < len && len <= self.buf.len() {
            self.fill().await?;
        }
        if self.end - self.start >= len {
            let bytes = self.buf[self.start..self.start + len].to_vec();
            self.start += len;
            return Ok(bytes);
        }
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(&self.buf[self.start..self.end]);
        (self.start, self.end) = (0, 0);
        let mut at = bytes.len();
        bytes.resize(len, 0);
        while at < len {
            let read = self
                .io
                .read_with(|stream| (&*stream).read(&mut bytes[at..]))
                .await?;
            if read == 0 {
                return Err(closed());
            }
            at += read;
        }
        Ok(bytes)
    }

    /// Reads and drops `len` bytes, a buffer at a time.
    async fn skip(&mut self, mut len: u64) -> io::Result<()> {
        loop {
            let have = (self.end - self.start) as u64;
            let used = have.min(len);
            self.start += used as usize;
            len -= used;
            if len == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// The next message, bounded as [`Limits`] says.
    async fn next(&mut self) -> io::Result<(Vec<u8>, Endian)> {
        loop {
            while self.end - self.start < FIXED_HEADER {
                self.fill().await?;
            }
            let (endian, header, total) =
                lengths(&self.buf[self.start..self.start + FIXED_HEADER])?;
            let max = self.limits.max_message as u64;
            if total <= max {
                return Ok((self.take(total as usize).await?, endian));
            }
            let line = format!("a D-Bus message of {total} bytes refused (the limit is {max})");
            self.limits.report.say(&line);
            if self.limits.oversize == Oversize::Refuse {
                return Err(invalid(&line));
            }
            if header > max {
                // Not even its header fits: dropped whole, unanswered.
                self.skip(total).await?;
                continue;
            }
            // The header with an empty body: zbus answers the call with InvalidArgs.
            let mut bytes = self.take(header as usize).await?;
            bytes[4..8].fill(0);
            self.skip(total - header).await?;
            return Ok((bytes, endian));
        }
    }
}

#[async_trait]
impl ReadHalf for Reader {
    /// Only the SASL handshake reads through here (messages come through `receive_message`).
    /// It hands zbus one line at a time (peek, then take up to the first line feed), so it
    /// never reads past BEGIN into a first call sent right behind it. As a server it checks
    /// what zbus's handshake parser would choke on: the stream starts with NUL, every line feed
    /// follows a carriage return (a bare one panics zbus), and the whole fits the bound.
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let n = match &self.handshake {
            Some(handshake) if handshake.left == 0 => {
                return Err(invalid("authentication handshake too long"));
            }
            Some(handshake) => buf.len().min(handshake.left),
            None => buf.len(),
        };
        let peeked = self
            .io
            .read_with(|stream| recv(stream, &mut buf[..n], libc::MSG_PEEK))
            .await?;
        if peeked == 0 {
            return Ok((0, vec![]));
        }
        let line = buf[..peeked]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(peeked, |at| at + 1);
        let read = self
            .io
            .read_with(|stream| recv(stream, &mut buf[..line], 0))
            .await?;
        if let Some(handshake) = &mut self.handshake {
            handshake.check(&buf[..read])?;
        }
        Ok((read, vec![]))
    }

    async fn receive_message(
        &mut self,
        _seq: u64,
        already_received_bytes: &mut Vec<u8>,
        already_received_fds: &mut Vec<OwnedFd>,
    ) -> zbus::Result<Message> {
        // What the handshake read past BEGIN comes first (line by line, it reads nothing past
        // it; this stays for safety).
        if !already_received_bytes.is_empty() {
            let mut pending = std::mem::take(already_received_bytes);
            pending.extend_from_slice(&self.buf[self.start..self.end]);
            self.end = pending.len();
            self.start = 0;
            pending.resize(pending.len().max(READ_BUFFER), 0);
            self.buf = pending;
        }
        // Nothing here reads ancillary data, so there are never descriptors to attach.
        already_received_fds.clear();
        let (bytes, endian) = self.next().await?;
        let data = Data::new(bytes, Context::new(endian, 0));
        // SAFETY: `from_bytes` is unsafe only because the bytes are untrusted input, which it
        // validates (header parse and checks) exactly as zbus's default receive path does;
        // bodies are deserialized with checks when a method reads its arguments. The receive
        // sequence (0 here) orders only replies to calls made on this connection, which otpd
        // makes only on the bus, one at a time (GetConnectionCredentials).
        let message = unsafe { Message::from_bytes(data) }?;
        if let Some(in_flight) = &self.in_flight
            && message.message_type() == Type::MethodCall
        {
            let serial = message.primary_header().serial_num().get();
            // A reply names its call by serial only: a second call under the serial of one still
            // waiting (even one that asks for no reply, which zbus answers if it cannot dispatch
            // it) would free that call's place early. A client never does this.
            if in_flight.holds(serial) {
                return Err(zbus::Error::from(invalid(
                    "a call reuses the serial of one still waiting",
                )));
            }
            if !wants_reply(&message) {
                // A call that wants no reply would never be counted above, yet zbus runs each
                // in a task of its own (and answers one it cannot dispatch all the same): a
                // peer sending them without end would have otpd hold tasks without bound.
                // pam_kron waits for every reply, so the connection ends.
                let line = "a call that wants no reply refused (otpd's socket answers every call)";
                self.limits.report.say(line);
                return Err(zbus::Error::from(invalid(line)));
            }
            // Held here, not handed on, until an earlier call is answered: the peer's further
            // calls then wait in the kernel's socket buffers, and its writes block.
            in_flight.enter(serial).await;
        }
        Ok(message)
    }

    fn can_pass_unix_fd(&self) -> bool {
        false
    }

    /// The uid the client's EXTERNAL identity must match (the peer-to-peer server build asks
    /// for it). No groups: nothing here looks anything up.
    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(credentials(self.credentials))
    }
}

/// A method call whose sender waits for the reply: zbus answers it, with a return or an error.
fn wants_reply(message: &Message) -> bool {
    let primary = message.primary_header();
    primary.msg_type() == Type::MethodCall
        && !primary
            .flags()
            .contains(zbus::message::Flags::NO_REPLY_EXPECTED)
}

/// The call that `message` answers, if it is a reply.
fn answers(message: &Message) -> Option<u32> {
    match message.message_type() {
        Type::MethodReturn | Type::Error => message.header().reply_serial().map(|s| s.get()),
        _ => None,
    }
}

impl Writer {
    /// Writes all of `message` (never with descriptors). What the socket takes at once (a
    /// login's replies, almost always) is written with no timer; only a reply the peer's full
    /// buffers hold back waits, within the write timeout if there is one.
    async fn write_message(&mut self, message: &Message) -> io::Result<()> {
        let data = message.data();
        if !data.fds().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "otpd passes no descriptors",
            ));
        }
        let at = self.write_now(data)?;
        if at == data.len() {
            return Ok(());
        }
        let Some((timeout, runtime)) = self.write_timeout.clone() else {
            return self.write_from(data, at).await;
        };
        match runtime.timeout(timeout, self.write_from(data, at)).await {
            Ok(written) => written,
            Err(_) => {
                // The peer has not read for that long: end the connection, which also fails
                // the other replies waiting to be written, instead of holding them.
                self.report.say(&format!(
                    "a peer that read nothing for {} s was disconnected",
                    timeout.as_secs()
                ));
                let _ = self.io.get_ref().shutdown(std::net::Shutdown::Both);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer reads nothing",
                ))
            }
        }
    }

    /// Writes `data` from `at` on, waiting for the socket as needed.
    async fn write_from(&mut self, data: &[u8], mut at: usize) -> io::Result<()> {
        while at < data.len() {
            at += self.sendmsg(&data[at..], &[]).await?;
        }
        Ok(())
    }

    /// Writes what the socket takes now, without waiting: the bytes written.
    fn write_now(&self, data: &[u8]) -> io::Result<usize> {
        let mut at = 0;
        while at < data.len() {
            match send(self.io.get_ref(), &data[at..]) {
                Ok(sent) => at += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(at)
    }
}

/// One `send` on the non-blocking socket. MSG_NOSIGNAL: a peer gone is an error, not a SIGPIPE.
fn send(stream: &UnixStream, buffer: &[u8]) -> io::Result<usize> {
    // SAFETY: `stream` is a live socket and `buffer` is valid for reads of `buffer.len()` bytes.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buffer.as_ptr().cast(),
            buffer.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

fn credentials((uid, pid): (u32, u32)) -> ConnectionCredentials {
    ConnectionCredentials::default()
        .set_unix_user_id(uid)
        .set_process_id(pid)
}

#[async_trait]
impl WriteHalf for Writer {
    /// Writes `message` whole, within the write timeout if there is one; a reply frees its
    /// call's place whether it was written or not (the call is over either way).
    async fn send_message(&mut self, message: &Message) -> zbus::Result<()> {
        let written = self.write_message(message).await;
        if let (Some(in_flight), Some(serial)) = (&self.in_flight, answers(message)) {
            in_flight.leave(serial);
        }
        Ok(written?)
    }

    async fn sendmsg(&mut self, buffer: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "otpd passes no descriptors",
            ));
        }
        self.io.write_with(|stream| send(stream, buffer)).await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.io.get_ref().shutdown(std::net::Shutdown::Both)
    }

    fn can_pass_unix_fd(&self) -> bool {
        false
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(credentials(self.credentials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn fixed(endian: u8, body: u32, fields: u32) -> [u8; 16] {
        let mut head = [0u8; 16];
        head[0] = endian;
        let (body, fields) = match endian {
            b'l' => (body.to_le_bytes(), fields.to_le_bytes()),
            _ => (body.to_be_bytes(), fields.to_be_bytes()),
        };
        head[4..8].copy_from_slice(&body);
        head[12..16].copy_from_slice(&fields);
        head
    }

    #[test]
    fn a_message_is_measured_from_its_header() {
        // 16 + 100 bytes of fields, padded to 120, then the body.
        let (_, header, total) = lengths(&fixed(b'l', 40, 100)).unwrap();
        assert_eq!((header, total), (120, 160));
        let (_, header, total) = lengths(&fixed(b'B', 0, 8)).unwrap();
        assert_eq!((header, total), (24, 24));
        assert!(lengths(&fixed(b'x', 0, 0)).is_err());
        // The largest announced lengths cannot overflow the arithmetic.
        assert!(lengths(&fixed(b'l', u32::MAX, u32::MAX)).is_ok());
    }

    #[test]
    fn the_handshake_starts_with_nul_and_ends_lines_with_crlf() {
        let fresh = || Handshake {
            left: 1024,
            prev: None,
        };
        let mut ok = fresh();
        ok.check(b"\0AUTH EXTERNAL 30\r\n").unwrap();
        ok.check(b"BEGIN\r\n").unwrap();
        assert_eq!(ok.left, 1024 - 26);
        // Inputs that panic zbus's own handshake parser.
        assert!(fresh().check(b"\n").is_err());
        assert!(fresh().check(b"\0AUTH EXTERNAL 30\r\n\n").is_err());
        assert!(fresh().check(b"AUTH EXTERNAL\r\n").is_err());
    }

    #[test]
    fn calls_in_flight_are_bounded_and_freed_only_by_their_replies() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Waker};
        let in_flight = InFlight {
            max: 2,
            serials: Mutex::default(),
            freed: Event::new(),
        };
        let mut cx = Context::from_waker(Waker::noop());
        for serial in [1, 2] {
            assert!(pin!(in_flight.enter(serial)).poll(&mut cx).is_ready());
        }
        let mut third = pin!(in_flight.enter(3));
        assert!(
            third.as_mut().poll(&mut cx).is_pending(),
            "two wait already"
        );
        // A reply to a call that took no place (it wanted none) frees nothing.
        in_flight.leave(7);
        assert!(third.as_mut().poll(&mut cx).is_pending());
        in_flight.leave(1);
        assert!(third.as_mut().poll(&mut cx).is_ready());
        assert_eq!(*in_flight.lock(), [2, 3]);
        assert!(in_flight.holds(2) && !in_flight.holds(1));
    }

    #[test]
    fn refusals_are_reported_once_a_minute() {
        let said = Arc::new(Mutex::new(Vec::new()));
        let log = said.clone();
        let report = SparseLog::new(move |line| log.lock().unwrap().push(line.to_owned()));
        report.say("one");
        report.say("two");
        assert_eq!(*said.lock().unwrap(), ["one"]);
    }
}
