//! otpd on the bus: connect, take the name `io.kron.Otpd`, serve `io.kron.Otpd1` for kronctl
//! and other tools, and when the bus goes away (dbus-daemon restarted, the connection dropped)
//! come back by itself. Logins do not wait for any of this: they use otpd's own socket.

use std::sync::Arc;
use std::time::Duration;

use super::service::OtpdService;
use crate::engine::Engine;

/// First wait after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts: a restarted bus is served again within about this long (and
/// kronctl within a second or two of that).
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a bus that stays away is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Serves on `address` for as long as otpd runs, reconnecting with backoff whenever the
/// connection ends. Never returns.
pub async fn serve(engine: Arc<Engine>, address: String, runtime: tokio::runtime::Handle) {
    let mut backoff = FIRST_BACKOFF;
    // When the current outage was last logged; `None` while connected.
    let mut logged: Option<tokio::time::Instant> = None;
    loop {
        let service = OtpdService::on_bus(engine.clone(), runtime.clone());
        let built = zbus::connection::Builder::address(address.as_str())
            .name(kron_proto::BUS_NAME)
            .serve_at(kron_proto::OBJECT_PATH, service)
            // Another otpd already serving the name is an error here, never a takeover.
            .replace_existing_names(false)
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
