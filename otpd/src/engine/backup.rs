//! Backups: every token (or one user's) as JSON inside an age file encrypted to a passphrase,
//! so `age -d` opens it too. Parsed and checked completely before anything is stored.

use super::backup_io::BackupWriter;
use crate::error::{Error, Result};
use crate::totp::TokenParams;
use age::secrecy::SecretString;
use kron_common::config::Algorithm;
use kron_proto::MAX_PASSPHRASE;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub(super) const FORMAT: &str = "kron-backup";
pub(super) const VERSION: u32 = 1;
/// Hardest scrypt work factor accepted on import (2^20): a file asking for more is refused
/// instead of tying otpd up.
pub(super) const MAX_WORK_FACTOR: u8 = 20;

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
    pub recovery: Option<BackupRecovery>,
    /// Email address and phone number set by an admin (absent in older backups).
    #[serde(default)]
    pub contact: kron_common::contact::Contact,
}

/// `scheme` of a recovery set hashed with argon2id (sets of earlier versions).
pub const ARGON2ID: &str = "argon2id";
/// `scheme` of a recovery set hashed with HMAC-SHA256 under the set's `key`.
pub const HMAC_SHA256: &str = "hmac-sha256";

fn argon2id() -> String {
    ARGON2ID.into()
}

/// A recovery set in the file: the hashes of the unused codes, and for `hmac-sha256` the set's
/// key in clear (hex, 32 bytes), as the token secret is, so the set works on another host.
/// Exports of earlier versions have neither `scheme` nor `key`: argon2id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRecovery {
    #[serde(with = "crate::serde_hex::hex_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "crate::serde_hex::hex_list")]
    pub hashes: Vec<Vec<u8>>,
    pub created: u64,
    #[serde(default = "argon2id")]
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl std::fmt::Debug for BackupRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupRecovery")
            .field("codes", &self.hashes.len())
            .field("scheme", &self.scheme)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Drop for BackupRecovery {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl BackupRecovery {
    /// The scheme is known, and a key of 32 bytes comes with hmac-sha256 and only with it.
    fn validate(&self) -> std::result::Result<(), String> {
        let key_bytes = self
            .key
            .as_deref()
            .map(|key| hex::decode(key).map(|bytes| bytes.len()));
        match (self.scheme.as_str(), key_bytes) {
            (ARGON2ID, None) | (HMAC_SHA256, Some(Ok(32))) => Ok(()),
            (ARGON2ID | HMAC_SHA256, _) => {
                Err("recovery set: a key of 32 bytes (hex) goes with hmac-sha256 only".into())
            }
            _ => Err("recovery set: unknown scheme".into()),
        }
    }
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

pub(super) fn passphrase(text: &str) -> Result<SecretString> {
    if text.is_empty() || text.len() > MAX_PASSPHRASE {
        return Err(Error::InvalidArgument(format!(
            "the passphrase must be 1 to {MAX_PASSPHRASE} bytes"
        )));
    }
    Ok(SecretString::from(text.to_owned()))
}

/// Serialises and encrypts `backup` to `pass` in one piece (the `Export` method).
pub fn seal(backup: &Backup, pass: &str) -> Result<Vec<u8>> {
    let mut writer = BackupWriter::new(pass, backup.created)?;
    for user in &backup.users {
        writer.push(user)?;
    }
    let mut out = writer.take();
    out.extend(writer.finish()?);
    Ok(out)
}

/// Decrypts and parses an export in one piece (the `Import` method); every user entry is
/// checked before it is returned.
pub fn open(data: &[u8], pass: &str) -> Result<Backup> {
    if data.len() > kron_proto::MAX_BACKUP_BYTES {
        return Err(Error::InvalidArgument(
            "the file is too large to be a kron export".into(),
        ));
    }
    let mut users = Vec::new();
    let info = super::backup_io::read(data, pass, &mut |user| {
        users.push(user);
        Ok(())
    })?;
    Ok(Backup::new(info.created, users))
}

pub(super) fn validate_entry(entry: &BackupUser) -> std::result::Result<(), String> {
    kron_proto::validate_user(&entry.user)?;
    if let Some(recovery) = &entry.recovery {
        recovery.validate()?;
    }
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
