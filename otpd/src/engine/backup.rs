//! Backups: every token (or one user's) as JSON inside an age file encrypted to a passphrase,
//! so `age -d` opens it too. Parsed and checked completely before anything is stored.

use crate::error::{Error, Result};
use crate::store::recovery::MAX_IMPORTED;
use crate::totp::TokenParams;
use age::secrecy::SecretString;
use kron_common::config::Algorithm;
use kron_proto::{Channel, MAX_PASSPHRASE};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub(super) const FORMAT: &str = "kron-backup";
pub(super) const VERSION: u32 = 1;
/// Hardest scrypt work factor accepted on import (2^18: 256 MiB while the key is derived, one
/// file at a time; an export asks for 2^16, `age -p` for what takes about a second on the machine
/// that made the file): a file asking for more is refused instead of having otpd pass the
/// unit's MemoryMax (384 MiB) and be killed with every login it holds.
pub(super) const MAX_WORK_FACTOR: u8 = 18;

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
        // What otpd makes: a 16-byte salt, at most a migrated set's codes (a set otpd makes has
        // fewer), each a 32-byte hash; a little room either way, and nothing that would make
        // every later check fail or grow a record.
        if !(8..=64).contains(&self.salt.len()) {
            return Err("recovery set: a salt of 8 to 64 bytes".into());
        }
        if self.hashes.len() > MAX_IMPORTED
            || self.hashes.iter().any(|h| !(16..=64).contains(&h.len()))
        {
            return Err(format!(
                "recovery set: at most {MAX_IMPORTED} hashes of 16 to 64 bytes"
            ));
        }
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

/// Checks an import entry and puts its addresses in the form `kronctl contact` stores (a
/// hand-edited `+49 (151) 2345-6712` as `+4915123456712`): what a sender is given later is
/// what otpd itself would have stored.
pub(super) fn validate_entry(entry: &mut BackupUser) -> std::result::Result<(), String> {
    kron_proto::validate_user(&entry.user)?;
    if let Some(recovery) = &entry.recovery {
        recovery.validate()?;
    }
    for channel in Channel::ALL {
        if let Some(address) = entry.contact.get(channel) {
            let normalized = kron_common::contact::normalize(channel, address)
                .map_err(|_| format!("not a valid {} contact", channel.as_str()))?;
            entry.contact.set(channel, Some(normalized));
        }
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

/// An invalid entry of an import, named by its user if that name is valid, else by its place:
/// an error never repeats input that failed a check.
pub(super) fn invalid_entry(index: usize, user: &str, why: &str) -> String {
    match kron_proto::validate_user(user) {
        Ok(()) => format!("{user}: {why}"),
        Err(_) => format!("entry {}: {why}", index + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> BackupUser {
        BackupUser {
            user: "alice".into(),
            token: None,
            last_step: None,
            last_used: 0,
            recovery: Some(BackupRecovery {
                salt: vec![1; 16],
                hashes: vec![vec![2; 32]; 10],
                created: 1,
                scheme: HMAC_SHA256.into(),
                key: Some("ab".repeat(32)),
            }),
            contact: kron_common::contact::Contact {
                email: Some("alice@example.com".into()),
                phone: Some("+4915123456712".into()),
            },
        }
    }

    /// An import entry is checked whole before it is used: addresses as `kronctl contact`
    /// checks them, recovery sets of the sizes otpd stores.
    #[test]
    fn entries_with_bad_contacts_or_recovery_sets_are_refused() {
        assert_eq!(validate_entry(&mut entry()), Ok(()));
        let refused = |change: fn(&mut BackupUser)| {
            let mut bad = entry();
            change(&mut bad);
            validate_entry(&mut bad).unwrap_err()
        };
        // Addresses are stored as `kronctl contact` stores them.
        let mut edited = entry();
        edited.contact.phone = Some("+49 (151) 2345-6712".into());
        edited.contact.email = Some(" alice@example.com".into());
        assert_eq!(validate_entry(&mut edited), Ok(()));
        assert_eq!(edited.contact.phone.as_deref(), Some("+4915123456712"));
        assert_eq!(edited.contact.email.as_deref(), Some("alice@example.com"));
        assert!(refused(|e| e.contact.email = Some("not an address".into())).contains("email"));
        assert!(refused(|e| e.contact.phone = Some("12;34".into())).contains("sms"));
        fn set(e: &mut BackupUser) -> &mut BackupRecovery {
            e.recovery.as_mut().unwrap()
        }
        assert!(refused(|e| set(e).salt = vec![1; 2]).contains("salt"));
        assert!(
            refused(|e| set(e).hashes = vec![vec![2; 32]; MAX_IMPORTED + 1]).contains("hashes")
        );
        // A migrated user's set may hold more codes than otpd makes: their export imports.
        let mut migrated = entry();
        set(&mut migrated).hashes = vec![vec![2; 32]; MAX_IMPORTED];
        assert_eq!(validate_entry(&mut migrated), Ok(()));
        assert!(refused(|e| set(e).hashes = vec![vec![2; 1 << 20]]).contains("hashes"));
    }
}
