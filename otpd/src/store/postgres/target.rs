//! Where a host's link connects and as whom: the `[fleet] url` with otpd's own settings (TLS
//! always, verified against `ca_file`; timeouts; TCP keepalives), the password read at every
//! connect, and how a failed connect is reported.

use super::tls;
use crate::error::{Error, Result, describe};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

/// Longest a connect (TCP, TLS, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalives on a connection idle this long, unless `url` sets `keepalives_idle`: a NAT or
/// load balancer between a host and the database may drop a flow idle for a few minutes
/// without a word, and a statement sent on it would then wait for its timeout. Without this,
/// two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Between unanswered keepalives, and how many end the connection (`keepalives_interval`,
/// `keepalives_retries`): a flow that died while idle is found within two minutes, and the next
/// statement goes on a new connection instead of waiting on it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 6;

/// The role's password: this host's file (read at every connect), or one kronctl read from
/// the owner's file for one call.
pub enum Password {
    File(PathBuf),
    Given(Zeroizing<String>),
}

/// Where to connect and as whom.
pub struct Target {
    config: tokio_postgres::Config,
    password: Option<Password>,
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
        Target::with(
            url,
            tls::Ca::File(ca_file),
            password_file.map(|path| Password::File(path.to_path_buf())),
            client_cert,
        )
    }

    /// [`Target::new`] with the CA and the password from wherever they come.
    pub fn with(
        url: &str,
        ca: tls::Ca<'_>,
        password: Option<Password>,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<Target> {
        let config = connection_config(url)?;
        let tls = MakeRustlsConnect::new(tls::client_config(ca, client_cert)?);
        Ok(Target {
            config,
            password,
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
    pub(super) async fn open(&self) -> Result<(Client, Driver)> {
        let mut config = self.config.clone();
        match &self.password {
            Some(Password::File(path)) => {
                let password = Zeroizing::new(tls::read_file(path, true)?);
                let text = std::str::from_utf8(&password)
                    .map_err(|_| Error::Config(format!("{}: is not UTF-8 text", path.display())))?;
                config.password(text.lines().next().unwrap_or_default().trim_end());
            }
            Some(Password::Given(password)) => {
                config.password(password.as_str());
            }
            None => {}
        }
        let connect = config.connect(self.tls.clone());
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT * 2, connect)
            .await
            .map_err(|_| unreachable(&self.url, "connecting timed out"))?
            .map_err(|e| unreachable(&self.url, &describe(&e)))?;
        Ok((client, Box::pin(connection)))
    }
}

/// What `url` asks for, with otpd's own settings: TLS always, timeouts, keepalives unless the
/// URL sets its own.
fn connection_config(url: &str) -> Result<tokio_postgres::Config> {
    kron_common::config::check_url(url).map_err(Error::InvalidArgument)?;
    // tokio-postgres knows only sslmode=require; the verification verify-full asks for is what
    // the rustls connector does anyway, so the parameter is taken out here.
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
    let set = |key: &str| kept.iter().any(|pair| pair.split('=').next() == Some(key));
    if !set("keepalives_idle") {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if !set("keepalives_interval") {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if !set("keepalives_retries") {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
    Ok(config)
}

/// Sent once per connection. A reply must never report a change the database could still lose:
/// commits wait for the disk (and a synchronous standby), whatever the server's default says.
pub(super) const SESSION: &str = "SET synchronous_commit TO on";

/// Longest an owner's or auditor's call (`fleet init`, `fleet add-host`, `fleet log`) may take,
/// from its connect to its commit. A lock another session holds (an init that never ended, an
/// admin's open transaction) or a server that stops answering then ends the call with an error,
/// and the transaction with its connection, instead of holding an otpd thread and kronctl for
/// ever. Every migration so far takes well under a second.
const OWNER_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether an owner's call has sent its COMMIT: after that, an error or a timeout no longer
/// means nothing was changed (the server may have committed before the answer was lost).
#[derive(Default)]
pub(super) struct Committing(AtomicBool);

impl Committing {
    /// Just before the COMMIT is sent.
    pub(super) fn started(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(super) fn sent(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs an owner's or auditor's `call` within [`OWNER_CALL_TIMEOUT`].
pub(super) async fn owner_call<T>(
    what: &str,
    committing: &Committing,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(OWNER_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unreachable(format!(
                "{what}: no answer from the fleet database within {} s (a lock another session \
                 holds? see pg_stat_activity); {}",
                OWNER_CALL_TIMEOUT.as_secs(),
                if committing.sent() {
                    "its commit was sent and may have been made"
                } else {
                    "nothing was changed"
                }
            )))
        })
}

/// A connection's I/O: a task on the connection's runtime, polled by whichever thread is in
/// `block_on` there; ends when the connection does.
pub(super) type Driver =
    Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

/// The database as unreachable through `url`, saying why (for the login: refused, or offline).
pub(super) fn unreachable(url: &str, why: &str) -> Error {
    Error::Unreachable(format!("fleet database {url} unreachable: {why}"))
}

#[cfg(test)]
mod tests {
    use super::{KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_RETRIES, connection_config};
    use std::time::Duration;

    #[test]
    fn keepalives_are_a_minute_unless_the_url_says_otherwise() {
        let url = "postgresql://kron_web01@db1.example.com,db2.example.com/kron\
                   ?target_session_attrs=read-write&sslmode=verify-full";
        let config = connection_config(url).unwrap();
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        assert_eq!(config.get_hosts().len(), 2);

        let own =
            connection_config(&format!("{url}&keepalives_idle=300&keepalives_retries=3")).unwrap();
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(300));
        assert_eq!(own.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(own.get_keepalives_retries(), Some(3));
        assert!(
            !connection_config(&format!("{url}&keepalives=0"))
                .unwrap()
                .get_keepalives()
        );
    }
}
