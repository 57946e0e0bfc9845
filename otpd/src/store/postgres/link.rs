//! The link to the fleet's database: at most two connections per host, reconnected by
//! themselves after a failure.
//!
//! Each connection's socket belongs to a current-thread runtime of its own, and a statement is
//! run by the thread that asks for it (one of tokio's blocking threads: the engine's), which also
//! writes the request and reads the answer. So a statement costs no hand-off to another thread
//! and back, which on this kind of machine is most of what a statement on loopback costs (two
//! wake-ups of an idle CPU each way). A connection runs one statement at a time; a caller takes
//! a free one, or waits for one: a statement holds it for one round trip, so with two per host
//! that is no limit a host reaches (docs/fleet.md, "Scale").
//!
//! Every statement is sent with `query_typed` (one round trip, unnamed statements), so the
//! link works through PgBouncer in transaction mode too. While the database cannot be reached,
//! calls fail at once with [`Error::Unreachable`] (the login is refused, fail closed, or checked
//! offline: `store/offline/`) and a connect is
//! tried again at most once a second per connection; the first success ends the outage. One log
//! line marks each change between reachable and unreachable.

use super::tls;
use crate::error::{Error, Result};
use crate::store::error::StoreError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections per host: enough for every login of a host, few enough that 10,000 hosts fit a
/// database (docs/fleet.md).
pub const CONNECTIONS: usize = 2;
/// Longest a connect (TCP, TLS, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one statement may take before the login is refused.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that failed is tried again after this long, not for every call.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where to connect and as whom.
pub struct Target {
    config: tokio_postgres::Config,
    password_file: Option<PathBuf>,
    tls: MakeRustlsConnect,
    /// The URL as configured (it holds no password), for log lines.
    pub url: String,
}

impl Target {
    /// `url` as [`kron_common::config::check_url`] accepts it; the password is read from
    /// `password_file` at every connect (so it can be rotated), or a client certificate is used.
    pub fn new(
        url: &str,
        ca_file: &Path,
        password_file: Option<&Path>,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<Target> {
        kron_common::config::check_url(url).map_err(Error::InvalidArgument)?;
        // tokio-postgres knows only sslmode=require; the verification verify-full asks for is
        // what the rustls connector does anyway, so the parameter is taken out here.
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.starts_with("sslmode="))
            .collect();
        let cleaned = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        let mut config: tokio_postgres::Config = cleaned
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("url: {}", describe(&e))))?;
        config
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("otpd");
        let tls = MakeRustlsConnect::new(tls::client_config(ca_file, client_cert)?);
        Ok(Target {
            config,
            password_file: password_file.map(Path::to_path_buf),
            tls,
            url: url.to_owned(),
        })
    }

    /// The role the URL names.
    pub fn role(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// Opens one connection; its driver runs on the current runtime until the client goes.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.open().await?;
        tokio::spawn(async move {
            // Ends with an error when the server goes away; the next call notices the closed
            // client and reconnects.
            let _ = connection.await;
        });
        client
            .batch_execute(SESSION)
            .await
            .map_err(|e| unreachable(&self.url, &describe(&e)))?;
        Ok(client)
    }

    /// Connects: the client, and the future that does the connection's I/O while polled.
    async fn open(&self) -> Result<(Client, Driver)> {
        let mut config = self.config.clone();
        if let Some(path) = &self.password_file {
            let password = tls::read_file(path, true)?;
            let text = std::str::from_utf8(&password)
                .map_err(|_| Error::Config(format!("{}: is not UTF-8 text", path.display())))?;
            config.password(text.lines().next().unwrap_or_default().trim_end());
        }
        let connect = config.connect(self.tls.clone());
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT * 2, connect)
            .await
            .map_err(|_| unreachable(&self.url, "connecting timed out"))?
            .map_err(|e| unreachable(&self.url, &describe(&e)))?;
        Ok((client, Box::pin(connection)))
    }
}

/// Sent once per connection. A reply must never report a change the database could still lose:
/// commits wait for the disk (and a synchronous standby), whatever the server's default says.
const SESSION: &str = "SET synchronous_commit TO on";

/// A connection's I/O: polled by whoever runs a statement on it; ends when the connection does.
type Driver = Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

/// One connection of the link, with the runtime its socket is registered with.
struct Connection {
    driver: Driver,
    client: Client,
    /// Current-thread: the thread in `block_on` does the socket's I/O itself. `None` only
    /// while the connection is dropped.
    runtime: Option<Runtime>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The socket first, while the runtime it is registered with still runs.
        self.driver = Box::pin(std::future::pending());
        if let Some(runtime) = self.runtime.take() {
            let_go(runtime);
        }
    }
}

/// Drops a connection's runtime from any thread. One dropped the ordinary way waits for its
/// blocking threads, which tokio refuses (panics) in an asynchronous context, and that is where
/// the link's last holder may well be (a background task on otpd's runtime, at shutdown). This
/// runtime never starts a blocking thread: there is nothing to wait for.
fn let_go(runtime: Runtime) {
    runtime.shutdown_background();
}

/// Why a statement on a connection brought no rows.
enum Lost {
    Failed(tokio_postgres::Error),
    /// No answer within [`QUERY_TIMEOUT`].
    TimedOut,
    /// The connection ended (the server went away) before the answer came.
    Ended(String),
}

impl Lost {
    /// The database as unreachable through `url`, saying why.
    fn unreachable(self, url: &str) -> Error {
        match self {
            Lost::Failed(e) => unreachable(url, &describe(&e)),
            Lost::TimedOut => unreachable(url, "no answer in time"),
            Lost::Ended(why) => unreachable(url, &why),
        }
    }
}

impl Connection {
    fn open(target: &Target) -> Result<Connection> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::System(format!("cannot make a runtime for the database: {e}")))?;
        let (client, driver) = runtime.block_on(target.open())?;
        let mut connection = Connection {
            driver,
            client,
            runtime: Some(runtime),
        };
        connection
            .run(SESSION, &[], true)
            .map_err(|lost| lost.unreachable(&target.url))?;
        Ok(connection)
    }

    /// Whether the connection ended while it sat idle (the server closed it, or restarted):
    /// polls its I/O once without waiting.
    fn ended(&mut self) -> bool {
        let Some(runtime) = &self.runtime else {
            return true;
        };
        let driver = &mut self.driver;
        runtime.block_on(std::future::poll_fn(|cx| {
            Poll::Ready(driver.as_mut().poll(cx).is_ready())
        }))
    }

    /// Runs one statement (`simple`: a plain text command, no rows), doing the I/O here.
    fn run(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        simple: bool,
    ) -> std::result::Result<Vec<Row>, Lost> {
        let Connection {
            driver,
            client,
            runtime,
        } = self;
        let Some(runtime) = runtime else {
            return Err(Lost::Ended("the connection is closed".to_owned()));
        };
        runtime.block_on(async {
            let statement = async {
                match simple {
                    true => client.batch_execute(sql).await.map(|()| Vec::new()),
                    false => client.query_typed(sql, params).await,
                }
            };
            tokio::select! {
                biased;
                answer = tokio::time::timeout(QUERY_TIMEOUT, statement) => match answer {
                    Ok(Ok(rows)) => Ok(rows),
                    Ok(Err(e)) => Err(Lost::Failed(e)),
                    Err(_) => Err(Lost::TimedOut),
                },
                ended = driver.as_mut() => Err(Lost::Ended(match ended {
                    Ok(()) => "the server closed the connection".to_owned(),
                    Err(e) => describe(&e),
                })),
            }
        })
    }
}

/// One statement's hold on a slot: the slot is given back before the permit, so whoever gets
/// the permit next finds a free slot.
struct Turn<'a> {
    slot: MutexGuard<'a, Slot>,
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

#[derive(Default)]
struct Slot {
    connection: Option<Connection>,
    retry_at: Option<Instant>,
    error: String,
}

/// A host's connections to the database.
pub struct Link {
    target: Target,
    runtime: Handle,
    slots: [Mutex<Slot>; CONNECTIONS],
    /// One permit per slot, handed out first come, first served.
    turns: tokio::sync::Semaphore,
    next: AtomicUsize,
    down: AtomicBool,
    /// When `down` last changed (unix time), or when the link was made.
    since: AtomicU64,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

impl Link {
    /// A link that connects on first use; `log` gets one line per change of reachability.
    /// `runtime` is otpd's, where the link's background tasks (audit rows, offline packs) run.
    pub fn new(target: Target, runtime: Handle, log: Box<dyn Fn(&str) + Send + Sync>) -> Link {
        Link {
            target,
            runtime,
            slots: Default::default(),
            turns: tokio::sync::Semaphore::new(CONNECTIONS),
            next: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            since: AtomicU64::new(unix_now()),
            log,
        }
    }

    /// Whether the last attempt to reach the database failed, and since when (unix time) that
    /// has been so (or the database has been reachable).
    pub fn state(&self) -> (bool, u64) {
        (
            self.down.load(Ordering::SeqCst),
            self.since.load(Ordering::SeqCst),
        )
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// A free slot for one statement. Callers get one in the order they asked (a fair
    /// semaphore: under load, a waiting login is never overtaken again and again by new ones).
    fn slot(&self) -> Turn<'_> {
        // Never closed, so acquiring fails never; a closed one would leave no turn to take.
        let permit = self.runtime.block_on(self.turns.acquire()).ok();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..CONNECTIONS {
            if let Ok(slot) = self.slots[(first + offset) % CONNECTIONS].try_lock() {
                return Turn {
                    slot,
                    _permit: permit,
                };
            }
        }
        // A permit means a slot is free; this is reached only if one was poisoned by a panic
        // while a statement ran, which leaves nothing half-done that matters: the connection
        // is checked (and replaced if it ended) before every use.
        Turn {
            slot: self.slots[first % CONNECTIONS]
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            _permit: permit,
        }
    }

    /// The slot's live connection, reconnecting it if it ended (at most once a second).
    fn connection<'a>(&self, slot: &'a mut Slot) -> Result<&'a mut Connection> {
        if slot.connection.as_mut().is_some_and(Connection::ended) {
            slot.connection = None;
        }
        if slot.connection.is_none() {
            if slot.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(Error::Unreachable(slot.error.clone()));
            }
            match Connection::open(&self.target) {
                Ok(connection) => {
                    slot.connection = Some(connection);
                    slot.retry_at = None;
                    if self.down.swap(false, Ordering::SeqCst) {
                        self.since.store(unix_now(), Ordering::SeqCst);
                        (self.log)(&format!(
                            "fleet database {} is reachable again",
                            self.target.url
                        ));
                    }
                }
                Err(e) => {
                    slot.retry_at = Some(Instant::now() + RETRY_AFTER);
                    slot.error = e.to_string();
                    self.mark_down(&slot.error);
                    return Err(e);
                }
            }
        }
        slot.connection
            .as_mut()
            .ok_or_else(|| Error::Unreachable(slot.error.clone()))
    }

    fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::SeqCst) {
            self.since.store(unix_now(), Ordering::SeqCst);
            (self.log)(&format!(
                "{why}; logins that need the fleet database are refused until it is back"
            ));
        }
    }

    /// Runs one statement from a blocking thread (the engine's), waiting for its rows.
    pub fn query(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Vec<Row>> {
        let mut turn = self.slot();
        let slot = &mut *turn.slot;
        let error = match self.connection(slot)?.run(sql, params, false) {
            Ok(rows) => return Ok(rows),
            Err(Lost::Failed(e)) if e.as_db_error().is_some() => {
                return Err(database_error(format!(
                    "fleet database refused a statement: {}",
                    describe(&e)
                )));
            }
            Err(lost) => lost.unreachable(&self.target.url),
        };
        // The connection is in an unknown state (it may still answer later): the next call
        // makes a new one.
        slot.connection = None;
        self.mark_down(&error.to_string());
        Err(error)
    }

    /// [`Link::query`] from a task on otpd's runtime (the background tasks): the worker thread
    /// hands its other tasks on while this one waits for the database.
    pub async fn query_async(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        tokio::task::block_in_place(|| self.query(sql, params))
    }

    /// [`Link::query`] for statements that return exactly one row.
    pub fn query_one(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Row> {
        self.query(sql, params)?
            .into_iter()
            .next()
            .ok_or_else(|| database_error(format!("fleet database: no row from {sql}")))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The database answered, but not as it should (refused a statement, an unexpected row).
pub fn database_error(text: String) -> Error {
    Error::Store(StoreError::Database(text))
}

fn unreachable(url: &str, why: &str) -> Error {
    Error::Unreachable(format!("fleet database {url} unreachable: {why}"))
}

/// An error with every cause in its chain ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer"), which is what an admin needs to see.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Reads one column of a row, as a store error when the database answered something else.
pub fn column<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T> {
    row.try_get(index).map_err(|e| {
        database_error(format!(
            "fleet database: unexpected answer: {}",
            describe(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::let_go;

    #[test]
    fn a_connections_runtime_may_go_inside_a_task() {
        let otpds = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let connections = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let task = otpds.spawn(async move { let_go(connections) });
        let dropped = otpds.block_on(task);
        assert!(dropped.is_ok(), "{dropped:?}");
    }
}
