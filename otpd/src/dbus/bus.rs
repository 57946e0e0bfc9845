//! otpd on the bus: connect, take the name `io.kron.Otpd`, serve `io.kron.Otpd1` for kronctl
//! and other tools, and when the bus goes away (dbus-daemon restarted, the connection dropped)
//! come back by itself. Logins do not wait for any of this: they use otpd's own socket.
//!
//! Any local user can send otpd a message through the bus, so the connection reads through
//! `bounded.rs`: a message over [`MAX_MESSAGE`] is dropped at its header and its call answered
//! with InvalidArgs, while everyone else's calls go on.

use std::io;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use zbus::address::transport::{Transport, UnixSocket};
use zbus::connection::socket::{Socket, Split};
use zruntime::{AsyncIo, Shared, SharedRuntime};

use super::bounded::{self, Limits, Oversize, Reader, Writer};
use super::service::{CallSlots, OtpdService};
use crate::engine::Engine;
use crate::sparse_log::SparseLog;

/// Largest message otpd reads from the bus: one piece of a streamed import
/// ([`kron_proto::MAX_CHUNK_BYTES`]) with room for its header. kronctl's other calls are
/// small, and migrations go in batches well below this; a whole export file in one `Import`
/// call fits only when it is this small (kronctl streams instead).
pub const MAX_MESSAGE: usize = kron_proto::MAX_CHUNK_BYTES + 64 * 1024;

/// First wait after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts: a restarted bus is served again within about this long (and
/// kronctl within a second or two of that).
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a bus that stays away is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Serves on `address` for as long as otpd runs, reconnecting with backoff whenever the
/// connection ends. Never returns.
pub async fn serve(
    engine: Arc<Engine>,
    address: String,
    runtime: tokio::runtime::Handle,
    calls: Arc<CallSlots>,
) {
    let mut backoff = FIRST_BACKOFF;
    // When the current outage was last logged; `None` while connected.
    let mut logged: Option<tokio::time::Instant> = None;
    loop {
        let service = OtpdService::on_bus(engine.clone(), runtime.clone(), calls.clone());
        let socket = match BusSocket::connect(&address, &engine) {
            Ok(socket) => socket,
            Err(e) => {
                let now = tokio::time::Instant::now();
                if logged.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
                    engine.log_event(&format!("cannot reach the bus at {address}: {e}; retrying"));
                    logged = Some(now);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let built = zbus::connection::Builder::socket(socket)
            .name(kron_proto::BUS_NAME)
            .serve_at(kron_proto::OBJECT_PATH, service)
            // Another otpd already serving the name is an error here, never a takeover; nor
            // may anyone take the name from this one (zbus allows that by default): kronctl
            // would then talk to whoever did, and otpd would not know.
            .replace_existing_names(false)
            .allow_name_replacements(false)
            .build()
            .await;
        match built {
            Ok(connection) => {
                engine.log_event(&format!("serving {} on {address}", kron_proto::BUS_NAME));
                backoff = FIRST_BACKOFF;
                logged = None;
                connection.closed().await;
                engine.log_event(&format!(
                    "lost the bus connection to {address}; reconnecting (logins on the socket \
                     go on)"
                ));
            }
            Err(e) => {
                let now = tokio::time::Instant::now();
                if logged.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
                    engine.log_event(&format!(
                        "cannot serve {} on {address}: {e}; retrying",
                        kron_proto::BUS_NAME
                    ));
                    logged = Some(now);
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// otpd's end of its bus connection, read through `bounded.rs`.
#[derive(Debug)]
struct BusSocket {
    io: AsyncIo<UnixStream, Shared>,
    limits: Limits,
}

impl BusSocket {
    /// Connects to `address` (`unix:path=` or `unix:abstract=`, as the `bus` key allows).
    fn connect(address: &str, engine: &Arc<Engine>) -> io::Result<BusSocket> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
        let parsed: zbus::Address = address
            .parse()
            .map_err(|e: zbus::Error| invalid(&e.to_string()))?;
        let stream = match parsed.transport() {
            Transport::Unix(unix) => match unix.path() {
                UnixSocket::File(path) => UnixStream::connect(path)?,
                UnixSocket::Abstract(name) => UnixStream::connect_addr(
                    &<SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                        name.as_encoded_bytes(),
                    )?,
                )?,
                _ => return Err(invalid("a bus address names a socket, not a directory")),
            },
            _ => return Err(invalid("otpd serves on a unix: bus address only")),
        };
        stream.set_nonblocking(true)?;
        let engine = engine.clone();
        let limits = Limits {
            max_message: MAX_MESSAGE,
            oversize: Oversize::Discard,
            max_handshake: None,
            calls: None,
            report: SparseLog::new(move |line| engine.log_event(&format!("bus: {line}"))),
        };
        // The runtime zbus builds this connection on from a tokio task: its process-wide one.
        let runtime = SharedRuntime::current()?;
        Ok(BusSocket {
            io: AsyncIo::new(&runtime, stream)?,
            limits,
        })
    }
}

impl Socket for BusSocket {
    type ReadHalf = Reader;
    type WriteHalf = Writer;

    fn split(self) -> Split<Reader, Writer> {
        // The bus daemon's credentials are never asked for on a client connection.
        let (reader, writer) = bounded::split(self.io, (0, 0), self.limits);
        Split::new(reader, writer)
    }
}
