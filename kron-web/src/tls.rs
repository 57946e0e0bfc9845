//! The certificate chain and private key, read once at start into a rustls server config
//! (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1 by ALPN). Plain HTTP (no files) was only allowed by
//! the config check on loopback addresses.

use crate::StartError;
use kron_common::config::WebConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;

/// Largest certificate chain or key file read: a long chain is a few KiB.
const MAX_PEM_BYTES: u64 = 256 * 1024;

/// The TLS acceptor for `[web]`, or `None` for plain HTTP behind a proxy.
pub fn acceptor(web: &WebConfig) -> Result<Option<TlsAcceptor>, StartError> {
    let (Some(cert_path), Some(key_path)) = (&web.tls_cert, &web.tls_key) else {
        return Ok(None);
    };
    let chain = read(cert_path, false)?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(cert_path, &format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(fail(cert_path, "holds no certificate"));
    }
    let key = zeroize::Zeroizing::new(read(key_path, true)?);
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| fail(key_path, &format!("not a PEM private key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            StartError::Tls(format!(
                "{} and {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Reads a PEM file, bounded. A key must be a regular file that others cannot read and only
/// its owner (root, or kron-web's own user) can write: `root:kron-web 0640` is the usual.
fn read(path: &Path, secret: bool) -> Result<Vec<u8>, StartError> {
    let file = std::fs::File::open(path).map_err(|e| fail(path, &e.to_string()))?;
    let metadata = file.metadata().map_err(|e| fail(path, &e.to_string()))?;
    if !metadata.is_file() {
        return Err(fail(path, "is not a regular file"));
    }
    if secret {
        let euid = nix::unistd::geteuid().as_raw();
        if metadata.uid() != 0 && metadata.uid() != euid {
            return Err(fail(path, "must be owned by root (or kron-web's user)"));
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o027 != 0 {
            return Err(fail(
                path,
                &format!(
                    "is accessible by others or writable by its group (mode {mode:o}); \
                     run chmod 640 {}",
                    path.display()
                ),
            ));
        }
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(path, &e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(path, &format!("is larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

fn fail(path: &Path, reason: &str) -> StartError {
    StartError::Tls(format!("{}: {reason}", path.display()))
}
