//! Backups: every token (or one user's) as JSON inside an age file encrypted to a passphrase,
//! so `age -d` opens it too. Parsed and checked completely before anything is stored.

use crate::error::{Error, Result};
use crate::store::recovery::RecoverySet;
use crate::totp::TokenParams;
use age::secrecy::SecretString;
use kron_common::config::Algorithm;
use kron_proto::MAX_PASSPHRASE;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use zeroize::{Zeroize, Zeroizing};

const FORMAT: &str = "kron-backup";
const VERSION: u32 = 1;
/// Hardest scrypt work factor accepted on import (2^20): a file asking for more is refused
/// instead of tying otpd up.
const MAX_WORK_FACTOR: u8 = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub format: String,
    pub version: u32,
    pub created: u64,
    pub users: Vec<BackupUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupUser {
    pub user: String,
    pub token: Option<BackupToken>,
    pub last_step: Option<u64>,
    pub last_used: u64,
    pub recovery: Option<RecoverySet>,
    /// Email address and phone number set by an admin (absent in older backups).
    #[serde(default)]
    pub contact: kron_common::contact::Contact,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
pub struct BackupToken {
    #[zeroize(skip)]
    pub params: TokenParams,
    /// Base32 secret, so the decrypted file is readable and importable by other tools.
    pub secret: String,
    pub created: u64,
}

impl std::fmt::Debug for BackupToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupToken")
            .field("params", &self.params)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Drop for BackupToken {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl Backup {
    pub fn new(created: u64, users: Vec<BackupUser>) -> Backup {
        Backup {
            format: FORMAT.into(),
            version: VERSION,
            created,
            users,
        }
    }
}

fn passphrase(text: &str) -> Result<SecretString> {
    if text.is_empty() || text.len() > MAX_PASSPHRASE {
        return Err(Error::InvalidArgument(format!(
            "the passphrase must be 1 to {MAX_PASSPHRASE} bytes"
        )));
    }
    Ok(SecretString::from(text.to_owned()))
}

/// Serialises and encrypts `backup` to `pass`.
pub fn seal(backup: &Backup, pass: &str) -> Result<Vec<u8>> {
    let json =
        Zeroizing::new(serde_json::to_vec(backup).map_err(|e| Error::System(e.to_string()))?);
    // A new file: its passphrase must be strong (an old file opens with whatever it has).
    kron_common::passphrase::check_strength(pass).map_err(Error::InvalidArgument)?;
    let encryptor = age::Encryptor::with_user_passphrase(passphrase(pass)?);
    let mut out = Vec::new();
    let write = || -> std::io::Result<()> {
        let mut writer = encryptor.wrap_output(&mut out)?;
        writer.write_all(&json)?;
        writer.finish()?;
        Ok(())
    };
    write().map_err(|e| Error::System(format!("encrypting the export failed: {e}")))?;
    Ok(out)
}

/// Decrypts and parses an export; every user entry is checked before it is returned.
pub fn open(data: &[u8], pass: &str) -> Result<Backup> {
    if data.len() > kron_proto::MAX_BACKUP_BYTES {
        return Err(Error::InvalidArgument(
            "the file is too large to be a kron export".into(),
        ));
    }
    let decryptor = age::Decryptor::new_buffered(data)
        .map_err(|e| Error::InvalidArgument(format!("not an age file or damaged: {e}")))?;
    let mut identity = age::scrypt::Identity::new(passphrase(pass)?);
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| {
            Error::Rejected(format!("cannot decrypt the file (wrong passphrase?): {e}"))
        })?;
    let mut json = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut json).map_err(|e| {
        Error::InvalidArgument(format!("the file is truncated or was modified: {e}"))
    })?;
    let backup: Backup = serde_json::from_slice(&json)
        .map_err(|e| Error::InvalidArgument(format!("the file is not a kron export: {e}")))?;
    if backup.format != FORMAT || backup.version != VERSION {
        return Err(Error::InvalidArgument(format!(
            "unsupported export format {:?} version {}",
            backup.format, backup.version
        )));
    }
    for (index, entry) in backup.users.iter().enumerate() {
        validate_entry(entry).map_err(|e| {
            Error::InvalidArgument(super::lifecycle::invalid_entry(index, &entry.user, &e))
        })?;
    }
    Ok(backup)
}

fn validate_entry(entry: &BackupUser) -> std::result::Result<(), String> {
    kron_proto::validate_user(&entry.user)?;
    if let Some(token) = &entry.token {
        validate_params(token.params)?;
        decode_secret(&token.secret)?;
    }
    Ok(())
}

/// Token parameters otpd can verify: 6 or 8 digits, 30 or 60 s.
pub fn validate_params(params: TokenParams) -> std::result::Result<(), String> {
    if !matches!(params.digits, 6 | 8) {
        return Err(format!("unsupported digits {}", params.digits));
    }
    if !matches!(params.period, 30 | 60) {
        return Err(format!("unsupported period {}", params.period));
    }
    Ok(())
}

/// Secret bytes of a base32 secret: 10 to 64 bytes (80 to 512 bits).
pub fn decode_secret(base32: &str) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    let secret = totp_rs::Secret::try_from_base32(base32)
        .map_err(|_| "the secret is not base32".to_string())?;
    kron_proto::check_secret_len(secret.as_bytes())?;
    Ok(Zeroizing::new(secret.as_bytes().to_vec()))
}

pub fn parse_algorithm(name: &str) -> std::result::Result<Algorithm, String> {
    match name.to_ascii_uppercase().as_str() {
        "SHA1" => Ok(Algorithm::SHA1),
        "SHA256" => Ok(Algorithm::SHA256),
        "SHA512" => Ok(Algorithm::SHA512),
        other => Err(format!("unsupported algorithm {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup::new(
            7,
            vec![BackupUser {
                user: "alice".into(),
                token: Some(BackupToken {
                    params: TokenParams {
                        algorithm: Algorithm::SHA1,
                        digits: 6,
                        period: 30,
                    },
                    secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into(),
                    created: 1,
                }),
                last_step: Some(99),
                last_used: 5,
                recovery: None,
                contact: kron_common::contact::Contact {
                    email: Some("alice@example.com".into()),
                    phone: None,
                },
            }],
        )
    }

    #[test]
    fn round_trip_and_refusals() {
        let sealed = seal(&sample(), "correct horse").unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1"));
        assert!(
            !String::from_utf8_lossy(&sealed).contains("JBSWY3DP"),
            "secret not in clear"
        );
        assert_eq!(open(&sealed, "correct horse").unwrap(), sample());
        assert!(matches!(open(&sealed, "wrong"), Err(Error::Rejected(_))));
        assert!(
            open(&sealed[..sealed.len() - 10], "correct horse").is_err(),
            "truncated"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 20;
        tampered[last] ^= 1;
        assert!(open(&tampered, "correct horse").is_err(), "tampered");
        assert!(open(b"garbage", "x").is_err());
        assert!(seal(&sample(), "").is_err());
        assert!(
            matches!(seal(&sample(), "x"), Err(Error::InvalidArgument(m)) if m.contains("too short")),
            "a 1-byte passphrase is refused"
        );
    }
}
