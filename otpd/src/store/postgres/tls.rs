//! TLS to the database: rustls (aws-lc-rs, no OpenSSL) verifying the server's certificate chain
//! against `ca_file` and its name against the host in the URL, always (what libpq calls
//! `sslmode=verify-full`); the host's client certificate when the config names one. The files
//! are trusted only if root owns them and nobody else can change them.

use crate::error::{Error, Result};
use kron_common::trust;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

/// Largest certificate or key file read: a chain of a few certificates, never a document.
const MAX_PEM_BYTES: u64 = 256 * 1024;

/// Where the CA certificates come from: this host's file, or the PEM kronctl read from the
/// file an admin named (otpd's sandbox cannot read root's home).
pub enum Ca<'a> {
    File(&'a Path),
    Pem(&'a [u8]),
}

/// The client TLS settings for `ca` and, if given, a client certificate and key.
pub fn client_config(ca: Ca<'_>, client: Option<(&Path, &Path)>) -> Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let (ca, ca_file) = match ca {
        Ca::File(path) => (read_file(path, false)?, path),
        Ca::Pem(pem) => (pem.to_vec(), Path::new("the CA kronctl sent")),
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&ca) {
        let cert = cert.map_err(|e| config(ca_file, &format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| config(ca_file, &format!("unusable CA certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(config(ca_file, "holds no PEM certificate"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::System(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots);
    let config_built = match client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let pem = read_file(cert_file, false)?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| config(cert_file, &format!("not a PEM certificate: {e}")))?;
            if chain.is_empty() {
                return Err(config(cert_file, "holds no PEM certificate"));
            }
            let key_pem = Zeroizing::new(read_file(key_file, true)?);
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| config(key_file, &format!("not a PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config(key_file, &format!("does not fit cert_file: {e}")))?
        }
    };
    Ok(config_built)
}

/// Reads a file root owns that group and others cannot write (nor read, for a `secret`).
pub fn read_file(path: &Path, secret: bool) -> Result<Vec<u8>> {
    let kind = if secret {
        trust::Kind::Secret
    } else {
        trust::Kind::File
    };
    let opened = trust::open_trusted(
        path,
        kind,
        trust::Owners::root_and_me(),
        trust::FinalLink::Follow,
    );
    let (file, _) = opened.map_err(|untrusted| {
        let reason = match untrusted.problem {
            trust::Problem::Io(e) => e.to_string(),
            trust::Problem::Owner { uid } => format!("is owned by uid {uid}, not root"),
            trust::Problem::Accessible { mode } | trust::Problem::Writable { mode } => format!(
                "mode {mode:o} lets group or others {}; run chmod {} {}",
                if secret { "in" } else { "change it" },
                if secret { "600" } else { "644" },
                path.display()
            ),
            _ => "is not a regular file".into(),
        };
        config(path, &reason)
    })?;
    // Room for all of it up front: a buffer that grew would leave copies of a key behind.
    let mut bytes = Vec::with_capacity(MAX_PEM_BYTES as usize + 1);
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| config(path, &e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(config(
            path,
            &format!("is larger than {MAX_PEM_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

fn config(path: &Path, reason: &str) -> Error {
    Error::Config(format!("{}: {reason}", path.display()))
}
