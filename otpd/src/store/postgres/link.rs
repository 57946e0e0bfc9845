//! The link to the fleet's database: at most two connections per host, each shared by every
//! call at once (tokio-postgres pipelines them), reconnected by themselves after a failure.
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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections per host: enough to pipeline every login of the host, few enough that 10,000
/// hosts fit a database (docs/fleet.md).
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
        tokio::spawn(async move {
            // Ends with an error when the server goes away; the next call notices the closed
            // client and reconnects.
            let _ = connection.await;
        });
        // A reply must never report a change the database could still lose: commits wait for
        // the disk (and a synchronous standby), whatever the server's default says.
        client
            .batch_execute("SET synchronous_commit TO on")
            .await
            .map_err(|e| unreachable(&self.url, &describe(&e)))?;
        Ok(client)
    }
}

#[derive(Default)]
struct Slot {
    client: Option<Arc<Client>>,
    retry_at: Option<Instant>,
    error: String,
}

/// A host's connections to the database.
pub struct Link {
    target: Target,
    runtime: Handle,
    slots: [tokio::sync::Mutex<Slot>; CONNECTIONS],
    next: AtomicUsize,
    down: AtomicBool,
    /// When `down` last changed (unix time), or when the link was made.
    since: AtomicU64,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

impl Link {
    /// A link that connects on first use; `log` gets one line per change of reachability.
    pub fn new(target: Target, runtime: Handle, log: Box<dyn Fn(&str) + Send + Sync>) -> Link {
        Link {
            target,
            runtime,
            slots: Default::default(),
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

    /// A live connection, reconnecting the chosen one if it failed (at most once a second).
    pub async fn client(&self) -> Result<Arc<Client>> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % CONNECTIONS;
        let mut slot = self.slots[index].lock().await;
        if let Some(client) = slot.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        slot.client = None;
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(Error::Unreachable(slot.error.clone()));
        }
        match self.target.connect().await {
            Ok(client) => {
                let client = Arc::new(client);
                slot.client = Some(client.clone());
                slot.retry_at = None;
                if self.down.swap(false, Ordering::SeqCst) {
                    self.since.store(unix_now(), Ordering::SeqCst);
                    (self.log)(&format!(
                        "fleet database {} is reachable again",
                        self.target.url
                    ));
                }
                Ok(client)
            }
            Err(e) => {
                slot.retry_at = Some(Instant::now() + RETRY_AFTER);
                slot.error = e.to_string();
                self.mark_down(&slot.error);
                Err(e)
            }
        }
    }

    fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::SeqCst) {
            self.since.store(unix_now(), Ordering::SeqCst);
            (self.log)(&format!(
                "{why}; logins that need the fleet database are refused until it is back"
            ));
        }
    }

    /// Runs one statement and returns its rows (async: for tasks on the runtime).
    pub async fn query_async(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        let client = self.client().await?;
        match tokio::time::timeout(QUERY_TIMEOUT, client.query_typed(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) if e.as_db_error().is_some() => Err(Error::Store(StoreError::Database(
                format!("fleet database refused a statement: {}", describe(&e)),
            ))),
            Ok(Err(e)) => {
                let error = unreachable(&self.target.url, &describe(&e));
                self.mark_down(&error.to_string());
                Err(error)
            }
            Err(_) => {
                // The connection may hang on a dead peer: drop it so the next call reconnects.
                for slot in &self.slots {
                    let mut slot = slot.lock().await;
                    if slot
                        .client
                        .as_ref()
                        .is_some_and(|c| Arc::ptr_eq(c, &client))
                    {
                        slot.client = None;
                    }
                }
                let error = unreachable(&self.target.url, "no answer in time");
                self.mark_down(&error.to_string());
                Err(error)
            }
        }
    }

    /// Runs one statement from a blocking thread (the engine's), waiting for its rows.
    pub fn query(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Vec<Row>> {
        self.runtime.block_on(self.query_async(sql, params))
    }

    /// [`Link::query`] for statements that return exactly one row.
    pub fn query_one(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Row> {
        self.query(sql, params)?.into_iter().next().ok_or_else(|| {
            Error::Store(StoreError::Database(format!(
                "fleet database: no row from {sql}"
            )))
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        Error::Store(StoreError::Database(format!(
            "fleet database: unexpected answer: {}",
            describe(&e)
        )))
    })
}
