//! kron-web: the HTTPS page a one-time enrollment link opens (docs/delivery.md, "Enrollment
//! links"). It holds no secret at rest and never reads otpd's store: each request becomes one
//! D-Bus call to otpd, with the link's token as the only authority.
//!
//! | file | what |
//! |---|---|
//! | `lib.rs` | start-up: arguments, `[web]`, TLS, the bus, then serve until SIGTERM |
//! | `tls.rs` | the certificate chain and key, read once at start (rustls, aws-lc-rs) |
//! | `server.rs` | the accept loop: TLS handshake, HTTP/1.1 (hyper), the client's address |
//! | `routes.rs` | the routes: show a link, confirm it, everything else neutral |
//! | `pages.rs` | the HTML of every page (maud escapes every value) |
//! | `headers.rs` | the security headers every response carries (CSP, no-store, HSTS, ...) |
//! | `otpd.rs` | the D-Bus client: `ShowLink` and `ConfirmLink`, errors sorted into outcomes |
//!
//! Nothing here decides anything: otpd checks the token, the code, the bounds and the rate
//! limits; kron-web renders what otpd answered.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod headers;
mod otpd;
mod pages;
mod routes;
mod server;
mod tls;

use clap::Parser;
use kron_common::config::{Config, DEFAULT_CONFIG_PATH, WebConfig};
use kron_common::daemon_args::WebArgs;
use kron_common::trust::{self, Kind, Owners};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Why kron-web could not start. Each says what to fix.
#[derive(Debug)]
pub enum StartError {
    /// otpd.toml is invalid, or has no `[web]` section.
    Config(String),
    /// The certificate or key cannot be used.
    Tls(String),
    /// The listening socket cannot be opened.
    Listen(std::net::SocketAddr, std::io::Error),
    /// The async runtime could not start.
    Runtime(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(m) | StartError::Tls(m) => f.write_str(m),
            StartError::Listen(address, e) => write!(f, "cannot listen on {address}: {e}"),
            StartError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Runs kron-web; the exit code for `main`.
pub fn main() -> ExitCode {
    let args = WebArgs::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kron-web: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &WebArgs) -> Result<(), StartError> {
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let config = load_config(&path, args.config.is_some())?;
    let web = config.web.clone().ok_or_else(|| {
        StartError::Config(format!(
            "{}: no [web] section: kron-web has nothing to serve (docs/delivery.md)",
            path.display()
        ))
    })?;
    let acceptor = tls::acceptor(&web)?;
    let bus = config.bus_address(args.bus.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    runtime.block_on(serve(web, acceptor, bus))
}

/// Reads otpd.toml if it can be trusted (design invariant 11): root owns it and every directory
/// on the way, and nobody else can change them. Its `bus` decides where every link's token
/// goes, so a config kron-web's own user (or anyone but root) could change is refused. A
/// missing file at the default path passes here, to be refused for having no `[web]`.
fn load_config(path: &Path, explicit: bool) -> Result<Config, StartError> {
    trust::check(path, Kind::File, Owners::root(), !explicit)
        .map_err(|untrusted| StartError::Config(format!("refusing to use {untrusted}")))?;
    Config::load(path, explicit).map_err(|e| StartError::Config(e.to_string()))
}

async fn serve(
    web: WebConfig,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    bus: String,
) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(web.listen)
        .await
        .map_err(|e| StartError::Listen(web.listen, e))?;
    let otpd = otpd::Otpd::new(bus);
    let router = routes::router(otpd, &web, acceptor.is_some());
    eprintln!(
        "kron-web: serving {} on {} ({})",
        web.public_url,
        web.listen,
        if acceptor.is_some() {
            "HTTPS"
        } else {
            "plain HTTP behind a proxy"
        }
    );
    let limit = server::budget();
    if limit < server::MAX_CONNECTIONS {
        eprintln!(
            "kron-web: the descriptor limit allows {limit} connections at once, not {}: \
             raise LimitNOFILE",
            server::MAX_CONNECTIONS
        );
    }
    server::run(listener, acceptor, router, limit, shutdown()).await;
    eprintln!("kron-web: stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the default action (exit) still stops the process.
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Not root: no file can be given away, and no check can pass (the temp dir is ours).
    fn as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    pub(crate) fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Gives `path` to `uid` (65534: nobody, as kron-web's own user would be).
    pub(crate) fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    }

    /// A directory only root can change, under the temp dir.
    pub(crate) fn dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn the_config_is_read_only_if_root_alone_can_change_it() {
        if !as_root() {
            return;
        }
        let dir = dir();
        let path = dir.path().join("otpd.toml");
        let text = "[web]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://localhost\"\n";
        write(&path, text, 0o644);
        assert!(load_config(&path, true).unwrap().web.is_some());

        write(&path, text, 0o666);
        let error = load_config(&path, true).unwrap_err().to_string();
        assert!(error.contains("writable by group or others"), "{error}");

        write(&path, text, 0o644);
        chown(&path, 65534);
        let error = load_config(&path, true).unwrap_err().to_string();
        assert!(error.contains("owned by uid 65534, not root"), "{error}");

        // A directory on the way that someone else may change is as bad.
        chown(&path, 0);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = load_config(&path, true).unwrap_err().to_string();
        assert!(error.contains("on the way"), "{error}");
    }

    #[test]
    fn a_missing_config_is_an_error_only_if_named() {
        let dir = dir();
        let path = dir.path().join("absent.toml");
        assert!(load_config(&path, true).is_err());
        if as_root() {
            assert!(load_config(&path, false).unwrap().web.is_none());
        }
    }
}
