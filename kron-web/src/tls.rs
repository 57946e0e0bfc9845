//! The certificate chain and private key, read once at start into a rustls server config
//! (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1 by ALPN). Plain HTTP (no files) was only allowed by
//! the config check on loopback addresses.

use crate::StartError;
use kron_common::config::WebConfig;
use kron_common::trust::{self, FinalLink, Kind, Owners, Problem};
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

/// Reads a PEM file, bounded, if it can be trusted (design invariant 11): root owns it and
/// every directory on the way to it, and nobody else can change any of them; a key is besides
/// closed to others, its group at most reading it (`root:kron-web 0640` is the usual). A file
/// kron-web's own user could change is refused: whoever took over kron-web could then make it
/// serve their own key after its next start.
fn read(path: &Path, secret: bool) -> Result<Vec<u8>, StartError> {
    trust::check(path, Kind::File, Owners::root(), false).map_err(|untrusted| {
        // `chown root` keeps the group, which may be kron-web's (the key's).
        let fix = match untrusted.problem {
            Problem::Owner { .. } if untrusted.at == untrusted.target => {
                format!("chown root {}", path.display())
            }
            _ => untrusted.fix(),
        };
        StartError::Tls(format!("refusing to use {}; fix: {fix}", untrusted.what()))
    })?;
    // What is read is what is checked: the descriptor again, in case the file was replaced.
    let (file, metadata) = trust::open_trusted(path, Kind::File, Owners::root(), FinalLink::Follow)
        .map_err(|untrusted| {
            fail(
                path,
                &match untrusted.problem {
                    Problem::Io(e) => e.to_string(),
                    Problem::Owner { uid } => format!(
                        "is owned by uid {uid}, not root; run chown root {}",
                        path.display()
                    ),
                    Problem::Writable { mode } => format!(
                        "is writable by group or others (mode {mode:o}); run chmod go-w {}",
                        path.display()
                    ),
                    _ => "is not a regular file".into(),
                },
            )
        })?;
    let mode = metadata.mode() & 0o7777;
    if secret && mode & 0o027 != 0 {
        return Err(fail(
            path,
            &format!(
                "is accessible by others or writable by its group (mode {mode:o}); \
                 run chmod 640 {}",
                path.display()
            ),
        ));
    }
    // Room for all of it up front: a buffer that grew would leave copies of a key behind.
    let mut bytes = Vec::with_capacity(MAX_PEM_BYTES as usize + 1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{chown, dir, write};

    fn refused(path: &Path, secret: bool) -> String {
        match read(path, secret) {
            Ok(_) => panic!("{} was read", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_certificate_is_read_only_if_root_alone_can_change_it() {
        if !nix::unistd::geteuid().is_root() {
            return; // No file can be given away.
        }
        let dir = dir();
        let cert = dir.path().join("web.crt");
        write(&cert, "chain", 0o644);
        assert_eq!(read(&cert, false).unwrap(), b"chain");
        write(&cert, "chain", 0o664);
        assert!(refused(&cert, false).contains("writable by group or others"));
        write(&cert, "chain", 0o644);
        chown(&cert, 65534);
        let error = refused(&cert, false);
        assert!(error.contains("owned by uid 65534, not root"), "{error}");
        assert!(error.contains("fix: chown root "), "{error}");
    }

    /// `root:kron-web 0640` as docs/delivery.md installs it; a key kron-web's own user owns (and
    /// so could replace) is refused, as one others can read or its group can write.
    #[test]
    fn the_key_is_read_only_if_root_owns_it_and_its_group_at_most_reads_it() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = dir();
        let key = dir.path().join("web.key");
        write(&key, "key", 0o640);
        std::os::unix::fs::chown(&key, Some(0), Some(65534)).unwrap();
        assert_eq!(read(&key, true).unwrap(), b"key");
        write(&key, "key", 0o600);
        assert_eq!(read(&key, true).unwrap(), b"key");
        for mode in [0o644, 0o604, 0o660] {
            write(&key, "key", mode);
            let error = refused(&key, true);
            assert!(
                error.contains("accessible by others") || error.contains("writable by group"),
                "{mode:o}: {error}"
            );
        }
        write(&key, "key", 0o600);
        chown(&key, 65534);
        let error = refused(&key, true);
        assert!(error.contains("owned by uid 65534, not root"), "{error}");
    }
}
