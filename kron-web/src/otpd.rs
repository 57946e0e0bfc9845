//! The D-Bus client of kron-web: `ShowLink` and `ConfirmLink` on one connection to the bus
//! otpd is on, made on first use and made again after it broke (a restarted bus). Every
//! answer is sorted into what the page shows; the token never appears in a log line.

use kron_proto::{LinkPage, OtpdError, OtpdProxy};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use zbus::proxy::CacheProperties;

/// Longest wait for one answer (a bus daemon gives up after 25 s by itself).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a new connection to the bus may take: a local socket and a handshake answer in
/// milliseconds, and every request waiting for one holds one of the bus's turns meanwhile.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls in progress at once. otpd takes at most four of one ordinary user's (kron-web's, for
/// every browser) and refuses a fifth as a failure: more requests wait here for their turn
/// instead (each within its request's time), so a burst gets slower pages, not errors.
const CALLS_AT_ONCE: usize = 4;

/// What a link request came to, besides success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Expired, used, revoked, unknown or malformed: the neutral page.
    Dead,
    /// The code was wrong; the link may still live.
    WrongCode,
    /// Rate-limited: try again later.
    Busy,
    /// otpd could not be asked, or failed: try again later (the reason is logged).
    Unavailable,
}

pub struct Otpd {
    address: String,
    connection: Mutex<Option<zbus::Connection>>,
    turns: Semaphore,
    /// Longest wait for a new connection to the bus (its handshake and `Hello`).
    connect_timeout: Duration,
}

impl Otpd {
    pub fn new(address: String) -> Otpd {
        Otpd::with_connect_timeout(address, CONNECT_TIMEOUT)
    }

    fn with_connect_timeout(address: String, connect_timeout: Duration) -> Otpd {
        Otpd {
            address,
            connection: Mutex::new(None),
            turns: Semaphore::new(CALLS_AT_ONCE),
            connect_timeout,
        }
    }

    /// What the page of `token` shows.
    pub async fn show(&self, token: &str, client: &str) -> Result<LinkPage, Failure> {
        let _turn = self.turn().await?;
        let proxy = self.proxy().await?;
        let answer = proxy.show_link(token, client).await;
        self.sort(answer)
    }

    /// Confirms the enrollment of `token` with `code`.
    pub async fn confirm(&self, token: &str, code: &str, client: &str) -> Result<(), Failure> {
        let _turn = self.turn().await?;
        let proxy = self.proxy().await?;
        let answer = proxy.confirm_link(token, code, client).await;
        self.sort(answer)
    }

    /// One of the [`CALLS_AT_ONCE`] places, held while the call is made.
    async fn turn(&self) -> Result<SemaphorePermit<'_>, Failure> {
        self.turns.acquire().await.map_err(|_| Failure::Unavailable)
    }

    async fn proxy(&self) -> Result<OtpdProxy<'static>, Failure> {
        let cached = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let connection = match cached {
            Some(connection) => connection,
            None => {
                let unreachable = |e: &dyn std::fmt::Display| {
                    eprintln!("kron-web: cannot connect to {}: {e}", self.address);
                    Failure::Unavailable
                };
                // A bus that accepts but never finishes the handshake must not hold the turn
                // (and the request) for ever.
                let building = zbus::connection::Builder::address(self.address.as_str())
                    .method_timeout(CALL_TIMEOUT)
                    .build();
                let connection = tokio::time::timeout(self.connect_timeout, building)
                    .await
                    .map_err(|_| unreachable(&"no answer in time"))?
                    .map_err(|e| unreachable(&e))?;
                *self
                    .connection
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
                connection
            }
        };
        OtpdProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.broken(e))
    }

    /// Sorts otpd's answer. otpd's error texts hold no input, but only the name matters here.
    fn sort<T>(&self, answer: zbus::Result<T>) -> Result<T, Failure> {
        let error = match answer {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        match OtpdError::from(error) {
            OtpdError::NotFound(_) | OtpdError::InvalidArgument(_) => Err(Failure::Dead),
            OtpdError::Rejected(_) => Err(Failure::WrongCode),
            OtpdError::Throttled(_) => Err(Failure::Busy),
            OtpdError::ZBus(e) => Err(self.broken(e)),
            other => {
                eprintln!("kron-web: otpd refused: {other}");
                Err(Failure::Unavailable)
            }
        }
    }

    /// A transport failure: logged, and the connection is made anew next time. (A method error
    /// from the bus itself, such as its policy refusing kron-web, keeps the connection.)
    fn broken(&self, error: zbus::Error) -> Failure {
        eprintln!("kron-web: otpd unavailable: {error}");
        if !matches!(error, zbus::Error::MethodError(..)) {
            *self
                .connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        Failure::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bus that accepts the connection and never says a word: the request ends, unavailable,
    /// after the connection's timeout, instead of waiting for ever.
    #[tokio::test]
    async fn a_silent_bus_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let held = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream);
            }
        });
        let otpd = Otpd::with_connect_timeout(
            format!("unix:path={}", path.display()),
            Duration::from_millis(200),
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), otpd.show("token", "::1"))
            .await
            .expect("an answer before the test gives up");
        assert_eq!(answer.err(), Some(Failure::Unavailable));
        held.abort();
    }
}
