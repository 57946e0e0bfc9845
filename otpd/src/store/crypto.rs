//! Secrets at rest: XChaCha20-Poly1305 under a 256-bit key kept in a root-only file.
//! The user name is bound in as associated data, so a sealed secret moved to another user's
//! record does not open. Codes sent by email or SMS are stored as HMAC-SHA256 under a key
//! derived from the same file, so the store alone does not let anyone search for them.

use crate::error::Result;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use kron_common::trust;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const AAD_PREFIX: &[u8] = b"kron-secret-v1:";
/// Derives the MAC key from the file's key: one key, two purposes, never the same bytes.
const MAC_KEY_LABEL: &[u8] = b"kron-sent-code-mac-v1";

type HmacSha256 = Hmac<sha2::Sha256>;

/// Why a secret could not be sealed or opened, or the key not loaded.
#[derive(Debug)]
pub enum CryptoError {
    /// The operating system gave no randomness (for a nonce or a new key).
    Random(getrandom::Error),
    /// The key file could not be read or created.
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file is not safe to use or not a key; `problem` says what and how to fix it.
    KeyRefused { path: PathBuf, problem: String },
    /// The cipher refused to seal (it never does for inputs of our sizes).
    Seal,
    /// A stored secret of `user` does not open with this key: another key, a record moved to
    /// another user, or a tampered record.
    Open { user: String },
}

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CryptoError::Random(e) => write!(f, "no randomness: {e}"),
            CryptoError::KeyFile { path, source } => write!(f, "{}: {source}", path.display()),
            CryptoError::KeyRefused { path, problem } => {
                write!(f, "{}: {problem}", path.display())
            }
            CryptoError::Seal => write!(f, "sealing a secret failed"),
            CryptoError::Open { user } => {
                write!(f, "the stored secret of {user} does not open with this key")
            }
        }
    }
}

impl std::error::Error for CryptoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CryptoError::Random(e) => Some(e),
            CryptoError::KeyFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A secret as stored: random nonce and ciphertext with tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    #[serde(with = "crate::serde_hex::hex_bytes")]
    pub nonce: Vec<u8>,
    #[serde(with = "crate::serde_hex::hex_bytes")]
    pub ciphertext: Vec<u8>,
}

pub struct SecretKey {
    cipher: XChaCha20Poly1305,
    mac_key: Zeroizing<[u8; 32]>,
}

impl SecretKey {
    /// Loads the key at `path`, creating it (0600, exclusively) on first start.
    pub fn load_or_create(path: &Path) -> Result<SecretKey> {
        // Root's or otpd's own: a key someone else planted would be theirs to know.
        let opened = trust::open_trusted(
            path,
            trust::Kind::Secret,
            trust::Owners::root_and_me(),
            trust::FinalLink::Follow,
        );
        let key = match opened {
            Ok((file, _)) => {
                let key = read_key(file, path)?;
                // A start that stopped inside `create_key` may have left its temporary file: a
                // key never used, or a second name of this one. Neither is kept.
                remove_if_present(&temporary_of(path)).map_err(|source| CryptoError::KeyFile {
                    path: temporary_of(path),
                    source,
                })?;
                key
            }
            Err(untrusted) => match untrusted.problem {
                trust::Problem::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    create_key(path)?
                }
                problem => return Err(key_refused(path, problem).into()),
            },
        };
        Ok(SecretKey::from_bytes(&key))
    }

    pub fn from_bytes(key: &[u8; KEY_BYTES]) -> SecretKey {
        let mut mac_key = Zeroizing::new([0u8; 32]);
        mac_key.copy_from_slice(&mac(key, &[MAC_KEY_LABEL]));
        SecretKey {
            cipher: XChaCha20Poly1305::new(key.into()),
            mac_key,
        }
    }

    /// The stored form of a sent code: bound to the user and what the code is for.
    pub fn code_mac(&self, user: &str, purpose: &str, code: &str) -> Vec<u8> {
        mac(
            self.mac_key.as_ref(),
            &[user.as_bytes(), purpose.as_bytes(), code.as_bytes()],
        )
    }

    pub fn seal(&self, user: &str, secret: &[u8]) -> Result<Sealed> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(CryptoError::Random)?;
        let aad = aad(user);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn open(&self, user: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        let refused = || CryptoError::Open {
            user: user.to_owned(),
        };
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(refused().into());
        }
        let aad = aad(user);
        self.cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| refused().into())
    }
}

/// HMAC-SHA256 over length-prefixed parts, so ("ab", "c") and ("a", "bc") differ.
pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // An HMAC key may have any length: new_from_slice cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn aad(user: &str) -> Vec<u8> {
    [AAD_PREFIX, user.as_bytes()].concat()
}

/// Why the key file at `path` was not opened, or not used.
fn key_refused(path: &Path, problem: trust::Problem) -> CryptoError {
    let problem = match problem {
        trust::Problem::Io(source) => {
            return CryptoError::KeyFile {
                path: path.to_owned(),
                source,
            };
        }
        trust::Problem::Owner { uid } => {
            format!("owned by uid {uid}, neither root nor otpd's user; a key must be made by otpd")
        }
        trust::Problem::Accessible { mode } | trust::Problem::Writable { mode } => format!(
            "readable by others (mode {:o}); run chmod 600 on it",
            mode & 0o777
        ),
        _ => "not a regular file".into(),
    };
    CryptoError::KeyRefused {
        path: path.to_owned(),
        problem,
    }
}

/// The key from the opened and checked key file.
fn read_key(file: std::fs::File, path: &Path) -> Result<Zeroizing<[u8; KEY_BYTES]>> {
    let io = |source| CryptoError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let refused = |problem: String| CryptoError::KeyRefused {
        path: path.to_owned(),
        problem,
    };
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    let mut reader = file.take(KEY_BYTES as u64 + 1);
    let mut buffer = Zeroizing::new(Vec::with_capacity(KEY_BYTES + 1));
    reader.read_to_end(&mut buffer).map_err(io)?;
    if buffer.len() != KEY_BYTES {
        return Err(refused(format!("not a {KEY_BYTES}-byte key")).into());
    }
    key.copy_from_slice(&buffer);
    Ok(key)
}

/// Where `create_key` writes the key before it gets its name.
fn temporary_of(path: &Path) -> std::path::PathBuf {
    path.with_extension("new")
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn create_key(path: &Path) -> Result<Zeroizing<[u8; KEY_BYTES]>> {
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    getrandom::fill(key.as_mut()).map_err(CryptoError::Random)?;
    let temporary = temporary_of(path);
    let _ = std::fs::remove_file(&temporary);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(key.as_ref())?;
        file.sync_all()?;
        // A hard link fails if another otpd created the key meanwhile: never overwrite a key.
        std::fs::hard_link(&temporary, path)?;
        std::fs::remove_file(&temporary)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|source| CryptoError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let key = SecretKey::from_bytes(&[7u8; KEY_BYTES]);
        let sealed = key.seal("alice", b"secret bytes").unwrap();
        assert_eq!(
            key.open("alice", &sealed).unwrap().as_slice(),
            b"secret bytes"
        );
        assert!(key.open("bob", &sealed).is_err(), "bound to the user");
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(key.open("alice", &tampered).is_err());
        let other = SecretKey::from_bytes(&[8u8; KEY_BYTES]);
        assert!(other.open("alice", &sealed).is_err());
        assert_ne!(
            key.seal("alice", b"secret bytes").unwrap().nonce,
            sealed.nonce
        );
    }

    #[test]
    fn code_macs_bind_key_user_purpose_and_code() {
        let key = SecretKey::from_bytes(&[7u8; KEY_BYTES]);
        let mac = key.code_mac("alice", "login", "12345678");
        assert_eq!(mac.len(), 32);
        assert_eq!(mac, key.code_mac("alice", "login", "12345678"));
        for other in [
            key.code_mac("bob", "login", "12345678"),
            key.code_mac("alice", "enrollment", "12345678"),
            key.code_mac("alice", "login", "12345679"),
            key.code_mac("alicelogin", "", "12345678"),
            SecretKey::from_bytes(&[8u8; KEY_BYTES]).code_mac("alice", "login", "12345678"),
        ] {
            assert_ne!(mac, other);
        }
    }

    #[test]
    fn a_temporary_key_left_by_a_stopped_start_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let sealed = first.seal("alice", b"x").unwrap();
        // A start stopped between naming the key and removing its temporary name.
        std::fs::hard_link(&path, dir.path().join("secret.new")).unwrap();
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("alice", &sealed).unwrap().as_slice(), b"x");
        assert!(!dir.path().join("secret.new").exists());
        assert!(path.exists());
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = first.seal("alice", b"x").unwrap();
        let second = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(second.open("alice", &sealed).unwrap().as_slice(), b"x");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            SecretKey::load_or_create(&path).is_err(),
            "refuses a readable key"
        );
        // Someone else's key (only root can give a file away, as the tests run in CI).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let refused = SecretKey::load_or_create(&path).err().expect("refused");
            assert!(
                refused.to_string().contains("owned by uid 65534"),
                "{refused}"
            );
        }
    }
}
