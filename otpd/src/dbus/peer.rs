//! A connection on otpd's own socket, as zbus's server side sees it: the peer's credentials
//! read once at accept, and every byte it sends bounded before it is buffered.
//!
//! Why not `Builder::unix_stream(stream)`, zbus's own unix socket:
//! - it answers `peer_credentials()` with SO_PEERCRED *plus* the peer's groups, looked up with
//!   getpwuid_r and getgrouplist on a blocking thread (zbus 6.2.1 `runtime/io/unix.rs`), and
//!   the peer-to-peer server build asks for them on every connection although it uses only the
//!   uid (`connection/builder.rs`): on an SSSD or LDAP host a directory round trip per login;
//! - it allocates and zero-fills whatever length a message's 16-byte header announces, up to
//!   128 MiB, before reading the body: four connections sending only headers took a server to
//!   415 MiB. [`PeerReader`] refuses a message over [`Limits::max_message`] at the header;
//! - it buffers a handshake line without limit, and a line feed that starts its buffer panics
//!   the task serving it. [`PeerReader::recvmsg`] checks and bounds the handshake first.
//!
//! File descriptors are never accepted: reads are plain `read`/`recv`, so any SCM_RIGHTS a client
//! sends are closed by the kernel, and zbus answers NEGOTIATE_UNIX_FD with ERROR.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use zbus::Message;
use zbus::connection::socket::{ReadHalf, Socket, Split, WriteHalf};
use zbus::export::async_trait::async_trait;
use zbus::fdo::ConnectionCredentials;
use zbus::wire::Endian;
use zbus::wire::serialized::{Context, Data};
use zruntime::{AsyncIo, Shared, SharedRuntime};

/// What the kernel says about the process at the other end, read once at accept.
#[derive(Debug)]
pub struct PeerCreds {
    pub uid: u32,
    /// The pid at connect() time, in otpd's pid namespace (0 if not visible there).
    pub pid: u32,
    /// SO_PEERPIDFD (Linux 6.5 and later): the connecting process itself, never a later
    /// process that reuses its pid.
    pub pidfd: Option<OwnedFd>,
}

/// SO_PEERCRED and SO_PEERPIDFD of a connected unix socket: two getsockopt calls, no NSS.
pub fn peer_creds(stream: &UnixStream) -> io::Result<PeerCreds> {
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
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above; on success the kernel writes one int, a new descriptor we then own.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let pidfd = if ret == 0 && pidfd >= 0 {
        // SAFETY: the kernel just handed us this descriptor (close-on-exec); nobody else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
    } else {
        // ENOPROTOOPT before Linux 6.5: no audit session, so no step-up grace.
        None
    };
    Ok(PeerCreds {
        uid: ucred.uid,
        pid: u32::try_from(ucred.pid).unwrap_or(0),
        pidfd,
    })
}

/// What one connection may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest whole message (header and body); a larger one ends the connection before more
    /// than its 16-byte fixed header is read.
    pub max_message: usize,
    /// Most bytes the SASL handshake may take (AUTH, NEGOTIATE_UNIX_FD and BEGIN are about 60).
    pub max_handshake: usize,
}

/// The accepted stream, registered on the runtime its connection runs on.
#[derive(Debug)]
pub struct PeerSocket {
    io: Arc<AsyncIo<UnixStream, Shared>>,
    uid: u32,
    pid: u32,
    limits: Limits,
}

impl PeerSocket {
    /// Wraps `stream`. Call it on the thread that builds the connection: the stream joins
    /// `SharedRuntime::current()`, the runtime zbus also picks for the connection there.
    pub fn new(stream: UnixStream, creds: &PeerCreds, limits: Limits) -> io::Result<Self> {
        let runtime = SharedRuntime::current()?;
        Ok(PeerSocket {
            io: Arc::new(AsyncIo::new(&runtime, stream)?),
            uid: creds.uid,
            pid: creds.pid,
            limits,
        })
    }
}

impl Socket for PeerSocket {
    type ReadHalf = PeerReader;
    type WriteHalf = PeerWriter;

    fn split(self) -> Split<PeerReader, PeerWriter> {
        Split::new(
            PeerReader {
                io: self.io.clone(),
                uid: self.uid,
                pid: self.pid,
                buf: vec![0; READ_BUFFER],
                start: 0,
                end: 0,
                handshake: Handshake {
                    left: self.limits.max_handshake,
                    prev: None,
                },
                max_message: self.limits.max_message,
            },
            PeerWriter {
                io: self.io,
                uid: self.uid,
                pid: self.pid,
            },
        )
    }
}

/// Messages are read through a small buffer, so a login's calls cost one read each.
const READ_BUFFER: usize = 4096;
/// The fixed header (12 bytes) and the length of the header field array (4 bytes).
const FIXED_HEADER: usize = 16;

#[derive(Debug)]
pub struct PeerReader {
    io: Arc<AsyncIo<UnixStream, Shared>>,
    uid: u32,
    pid: u32,
    /// Read ahead: `buf[start..end]` is received and not yet handed to zbus.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    handshake: Handshake,
    max_message: usize,
}

/// What the handshake has sent so far, for the checks in [`PeerReader::recvmsg`].
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

impl PeerReader {
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
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed",
            ));
        }
        self.end += read;
        Ok(())
    }
}

/// The whole length of the message whose first 16 bytes are `head`, refused above `max`.
fn message_len(head: &[u8], max: usize) -> io::Result<(Endian, usize)> {
    let endian = match head[0] {
        b'l' => Endian::Little,
        b'B' => Endian::Big,
        _ => return Err(invalid("not a D-Bus message")),
    };
    let u32_at = |at: usize| {
        let bytes = [head[at], head[at + 1], head[at + 2], head[at + 3]];
        u64::from(match endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        })
    };
    let header = FIXED_HEADER as u64 + u32_at(12);
    // The body starts at the next multiple of 8 after the header fields.
    let total = header.next_multiple_of(8) + u32_at(4);
    if total > max as u64 {
        return Err(invalid(&format!(
            "a message of {total} bytes is over the socket's limit of {max}"
        )));
    }
    Ok((endian, total as usize))
}

#[async_trait]
impl ReadHalf for PeerReader {
    /// Only the SASL handshake reads through here (messages come through `receive_message`).
    /// It hands zbus one line at a time (peek, then take up to the first line feed), so it never
    /// reads past BEGIN into a first call sent right behind it, and its checks see handshake
    /// lines only: the stream starts with NUL, every line feed follows a carriage return, and
    /// the whole handshake fits `max_handshake`.
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        if self.handshake.left == 0 {
            return Err(invalid("authentication handshake too long"));
        }
        let n = buf.len().min(self.handshake.left);
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
        self.handshake.check(&buf[..read])?;
        Ok((read, vec![]))
    }

    async fn receive_message(
        &mut self,
        _seq: u64,
        already_received_bytes: &mut Vec<u8>,
        already_received_fds: &mut Vec<OwnedFd>,
    ) -> zbus::Result<Message> {
        // What the handshake read past BEGIN comes first: at most `max_handshake` bytes.
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
        loop {
            let have = self.end - self.start;
            if have >= FIXED_HEADER {
                let head = &self.buf[self.start..self.start + FIXED_HEADER];
                let (endian, len) = message_len(head, self.max_message)?;
                if have >= len {
                    let bytes = self.buf[self.start..self.start + len].to_vec();
                    self.start += len;
                    if self.start == self.end {
                        (self.start, self.end) = (0, 0);
                    }
                    return to_message(bytes, endian);
                }
                if len > self.buf.len() {
                    // Longer than the read-ahead buffer but within the limit: read the rest
                    // straight into an allocation of its exact size.
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
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the peer closed",
                            )
                            .into());
                        }
                        at += read;
                    }
                    return to_message(bytes, endian);
                }
            }
            self.fill().await?;
        }
    }

    fn can_pass_unix_fd(&self) -> bool {
        false
    }

    /// The uid the client's EXTERNAL identity must match (the peer-to-peer server build asks
    /// for it). No groups: nothing here looks anything up.
    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(ConnectionCredentials::default()
            .set_unix_user_id(self.uid)
            .set_process_id(self.pid))
    }
}

/// `Message::from_bytes` is the public twin of what zbus's own reader calls: it parses and
/// checks the header the same way. The receive sequence (0 here) orders only replies to calls
/// this side made, and otpd's side of the socket makes none.
fn to_message(bytes: Vec<u8>, endian: Endian) -> zbus::Result<Message> {
    let data = Data::new(bytes, Context::new(endian, 0));
    // SAFETY: `from_bytes` is unsafe only because the bytes are untrusted input, which it
    // validates (header parse and checks) exactly as zbus's default receive path does; bodies
    // are deserialized with checks when a method reads its arguments.
    unsafe { Message::from_bytes(data) }
}

#[derive(Debug)]
pub struct PeerWriter {
    io: Arc<AsyncIo<UnixStream, Shared>>,
    uid: u32,
    pid: u32,
}

#[async_trait]
impl WriteHalf for PeerWriter {
    async fn sendmsg(&mut self, buffer: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no descriptor passing on otpd's socket",
            ));
        }
        self.io
            .write_with(|stream| {
                // SAFETY: `stream` is the live socket and `buffer` is valid for reads of
                // `buffer.len()` bytes. MSG_NOSIGNAL: a peer gone is an error, not a SIGPIPE.
                let sent = unsafe {
                    libc::send(
                        stream.as_raw_fd(),
                        buffer.as_ptr().cast(),
                        buffer.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                usize::try_from(sent).map_err(|_| io::Error::last_os_error())
            })
            .await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.io.get_ref().shutdown(std::net::Shutdown::Both)
    }

    fn can_pass_unix_fd(&self) -> bool {
        false
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(ConnectionCredentials::default()
            .set_unix_user_id(self.uid)
            .set_process_id(self.pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(endian: u8, body: u32, fields: u32) -> [u8; 16] {
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
    fn a_message_is_measured_from_its_header_and_refused_over_the_limit() {
        // 16 + 100 bytes of fields, padded to 120, then the body.
        let (_, len) = message_len(&header(b'l', 40, 100), 4096).unwrap();
        assert_eq!(len, 160);
        let (_, len) = message_len(&header(b'B', 0, 8), 4096).unwrap();
        assert_eq!(len, 24);
        let huge = message_len(&header(b'l', 100 << 20, 100), 64 * 1024).unwrap_err();
        assert!(
            huge.to_string().contains("over the socket's limit"),
            "{huge}"
        );
        assert!(message_len(&header(b'x', 0, 0), 4096).is_err());
        // The largest announced lengths cannot overflow the arithmetic.
        assert!(message_len(&header(b'l', u32::MAX, u32::MAX), usize::MAX).is_ok());
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
}
