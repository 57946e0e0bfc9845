//! Recovery codes: single-use codes for a lost phone, stored only as keyed hashes.
//!
//! A set made by this version is [`Scheme::HmacSha256`]: HMAC-SHA256 of each code under a
//! random key of its own, stored sealed under `secret.key` (like token secrets). Checking a
//! code costs microseconds, so 10,000 users with 5 migrated scratch codes each import in
//! seconds, yet a stolen store cannot be searched for codes without otpd's key: the hashes
//! are useless without the set key, and the set key does not open without `secret.key`
//! (whoever has that key can open every token secret anyway). The key goes into exports in
//! clear, with the token secret, so a set moves to another host.
//!
//! Sets made by earlier versions are [`Scheme::Argon2id`] (19 MiB, 2 passes, one salt per
//! set): still accepted. A fleet host makes argon2id sets too ([`Keying::Portable`]): no host
//! key opens on every host of a fleet, and a code must work wherever it is typed. A used code is deleted, so there is nothing of such a set to rehash;
//! it disappears as its codes are used or a new set replaces it.

use crate::error::Result;
use crate::store::crypto::{Sealed, SecretKey};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Codes in a fresh set.
pub const SET_SIZE: usize = 10;
/// Digits of one code: 10, so a code is never mistaken for a 6- or 8-digit TOTP code.
pub const CODE_DIGITS: usize = 10;
const SALT_BYTES: usize = 16;
const SET_KEY_BYTES: usize = 32;

/// How the hashes of a set were made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    /// argon2id(code, salt): sets of earlier versions.
    #[default]
    Argon2id,
    /// HMAC-SHA256 under the set's own key, stored sealed under `secret.key`.
    HmacSha256 { key: Sealed },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverySet {
    /// Random per set: argon2's salt, and what tells two sets apart.
    #[serde(with = "crate::serde_hex::hex_bytes")]
    pub salt: Vec<u8>,
    /// The hash of each unused code ([`RecoverySet::digest`]).
    #[serde(with = "crate::serde_hex::hex_list")]
    pub hashes: Vec<Vec<u8>>,
    pub created: u64,
    /// Absent in records and exports of earlier versions: argon2id.
    #[serde(default)]
    pub scheme: Scheme,
}

/// What keys the hashes of a new set.
#[derive(Clone, Copy)]
pub enum Keying<'a> {
    /// HMAC under a set key sealed with this host's `secret.key` (a single host).
    Local(&'a SecretKey),
    /// argon2id, which any host can check without a key (a fleet host: docs/fleet.md).
    Portable,
}

impl RecoverySet {
    /// The stored form of `code` (digits only) in this set of `user`.
    pub fn digest(&self, code: &str, key: &SecretKey, user: &str) -> Result<Vec<u8>> {
        match &self.scheme {
            Scheme::Argon2id => argon2_hash(code, &self.salt),
            Scheme::HmacSha256 { key: sealed } => {
                let set_key = key.open(user, sealed)?;
                Ok(crate::store::crypto::mac(&set_key, &[code.as_bytes()]))
            }
        }
    }

    /// [`RecoverySet::digest`] while the set is made: a portable set needs no key.
    fn digest_with(&self, code: &str, keying: Keying<'_>, user: &str) -> Result<Vec<u8>> {
        match (keying, &self.scheme) {
            (_, Scheme::Argon2id) => argon2_hash(code, &self.salt),
            (Keying::Local(key), _) => self.digest(code, key, user),
            // `fresh` makes portable sets argon2id: this cannot happen.
            (Keying::Portable, Scheme::HmacSha256 { .. }) => Err(crate::error::Error::System(
                "a keyed recovery set without a key".into(),
            )),
        }
    }

    /// A new, empty set of `user` with a fresh salt and, for a local set, a set key.
    fn fresh(keying: Keying<'_>, user: &str, now: u64) -> Result<RecoverySet> {
        let mut salt = vec![0u8; SALT_BYTES];
        getrandom::fill(&mut salt).map_err(crate::store::crypto::CryptoError::Random)?;
        let Keying::Local(key) = keying else {
            return Ok(RecoverySet {
                salt,
                hashes: Vec::new(),
                created: now,
                scheme: Scheme::Argon2id,
            });
        };
        let mut set_key = Zeroizing::new([0u8; SET_KEY_BYTES]);
        getrandom::fill(set_key.as_mut()).map_err(crate::store::crypto::CryptoError::Random)?;
        Ok(RecoverySet {
            salt,
            hashes: Vec::new(),
            created: now,
            scheme: Scheme::HmacSha256 {
                key: key.seal(user, set_key.as_ref())?,
            },
        })
    }
}

/// A fresh set for `user`: the codes to show once (formatted `12345-67890`) and what to store.
pub fn generate(
    keying: Keying<'_>,
    user: &str,
    now: u64,
) -> Result<(Vec<Zeroizing<String>>, RecoverySet)> {
    let mut set = RecoverySet::fresh(keying, user, now)?;
    let mut codes = Vec::with_capacity(SET_SIZE);
    while codes.len() < SET_SIZE {
        let digits = random_digits()?;
        let hash = set.digest_with(&digits, keying, user)?;
        if set.hashes.contains(&hash) {
            continue;
        }
        set.hashes.push(hash);
        codes.push(Zeroizing::new(format!("{}-{}", &digits[..5], &digits[5..])));
    }
    Ok((codes, set))
}

/// Most codes one imported set may hold (google-authenticator makes at most 10).
pub const MAX_IMPORTED: usize = 32;

/// Checks codes of another system (google-authenticator scratch codes), as typed: each must
/// have at least 8 digits (weaker codes would undo the throttle's bound) and a length other
/// than the token's `totp_digits`, or the prompt could never tell it from a TOTP code.
pub fn check_existing(codes: &[String], totp_digits: u8) -> std::result::Result<(), String> {
    if codes.len() > MAX_IMPORTED {
        return Err(format!("more than {MAX_IMPORTED} recovery codes"));
    }
    for code in codes {
        let digits =
            digits_only(code).ok_or_else(|| "recovery codes must be digits".to_string())?;
        if digits.len() < 8 || digits.len() == usize::from(totp_digits) {
            return Err(format!(
                "recovery codes must have at least 8 digits and not {totp_digits} (the token's)"
            ));
        }
    }
    Ok(())
}

/// The set of `user` made from codes that passed [`check_existing`].
pub fn from_existing(
    codes: &[String],
    keying: Keying<'_>,
    user: &str,
    now: u64,
) -> Result<RecoverySet> {
    let mut set = RecoverySet::fresh(keying, user, now)?;
    for code in codes {
        // Checked before: `check_existing` refuses anything that is not digits.
        if let Some(digits) = digits_only(code) {
            set.hashes.push(set.digest_with(&digits, keying, user)?);
        }
    }
    Ok(set)
}

/// The digits of what a person typed if it can be a recovery code (dashes and spaces are
/// ignored): 6–12 digits, but never exactly the TOTP length `totp_digits`.
pub fn candidate(input: &str, totp_digits: u8) -> Option<Zeroizing<String>> {
    let digits = digits_only(input)?;
    (digits.len() != usize::from(totp_digits)).then_some(digits)
}

fn digits_only(input: &str) -> Option<Zeroizing<String>> {
    let digits: Zeroizing<String> =
        Zeroizing::new(input.chars().filter(|c| !matches!(c, '-' | ' ')).collect());
    (6..=12).contains(&digits.len()).then_some(())?;
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(digits)
}

/// argon2id with OWASP's minimum parameters (19 MiB, 2 passes), as earlier versions stored
/// recovery codes ([`Scheme::Argon2id`]).
pub fn argon2_hash(code: &str, salt: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: argon2::Error| crate::error::Error::System(format!("argon2: {e}"));
    let params = Params::new(19 * 1024, 2, 1, Some(32)).map_err(failed)?;
    let mut out = vec![0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(code.as_bytes(), salt, &mut out)
        .map_err(failed)?;
    Ok(out)
}

fn random_digits() -> Result<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CODE_DIGITS));
    while out.len() < CODE_DIGITS {
        let mut byte = [0u8; 1];
        getrandom::fill(&mut byte).map_err(crate::store::crypto::CryptoError::Random)?;
        // Rejection sampling keeps every digit uniform (250 = 25 * 10).
        if byte[0] < 250 {
            out.push(char::from(b'0' + byte[0] % 10));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes(&[7; 32])
    }

    #[test]
    fn fresh_sets_verify_each_code_and_nothing_else() {
        let key = key();
        let (codes, set) = generate(Keying::Local(&key), "alice", 5).unwrap();
        assert_eq!(codes.len(), SET_SIZE);
        assert_eq!(set.hashes.len(), SET_SIZE);
        assert!(matches!(set.scheme, Scheme::HmacSha256 { .. }));
        for code in &codes {
            assert_eq!(code.len(), CODE_DIGITS + 1);
            let digits = candidate(code, 6).unwrap();
            assert!(
                set.hashes
                    .contains(&set.digest(&digits, &key, "alice").unwrap())
            );
        }
        assert!(
            !set.hashes
                .contains(&set.digest("0000000000", &key, "alice").unwrap())
        );
        assert!(
            set.digest("0000000000", &key, "bob").is_err(),
            "the set key is bound to its user"
        );
        assert!(
            set.digest("0000000000", &SecretKey::from_bytes(&[8; 32]), "alice")
                .is_err(),
            "no use without otpd's key"
        );
        let (_, other) = generate(Keying::Local(&key), "alice", 5).unwrap();
        assert_ne!(set.salt, other.salt);
        assert_ne!(set.hashes, other.hashes, "each set has its own key");
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains(&hex::encode(&set.hashes[0])), "{json}");
        assert_eq!(serde_json::from_str::<RecoverySet>(&json).unwrap(), set);
    }

    #[test]
    fn sets_of_earlier_versions_still_verify_with_argon2() {
        let salt = vec![3; SALT_BYTES];
        let old = format!(
            r#"{{"salt":"{}","hashes":["{}"],"created":1}}"#,
            hex::encode(&salt),
            hex::encode(argon2_hash("1234567890", &salt).unwrap())
        );
        let set: RecoverySet = serde_json::from_str(&old).unwrap();
        assert_eq!(set.scheme, Scheme::Argon2id);
        let digest = set.digest("1234567890", &key(), "alice").unwrap();
        assert_eq!(set.hashes, [digest]);
    }

    #[test]
    fn migrated_codes_are_checked_then_hashed() {
        let key = key();
        assert!(candidate("12345-67890", 6).is_some());
        assert!(candidate("123456", 6).is_none());
        assert!(candidate("12345678", 8).is_none());
        assert!(
            candidate("12345678", 6).is_some(),
            "google-authenticator scratch codes"
        );
        assert!(candidate("1234a-67890", 6).is_none());
        assert!(candidate("12345", 6).is_none());
        assert!(check_existing(&["12345678".into()], 6).is_ok());
        assert!(
            check_existing(&["12345678".into()], 8).is_err(),
            "never usable"
        );
        assert!(check_existing(&["123456".into()], 8).is_err(), "too weak");
        assert!(check_existing(&["nope".into()], 6).is_err());
        assert!(check_existing(&vec!["12345678".to_string(); MAX_IMPORTED + 1], 6).is_err());
        let set = from_existing(&["1234-5678".into()], Keying::Local(&key), "alice", 0).unwrap();
        assert_eq!(set.hashes, [set.digest("12345678", &key, "alice").unwrap()]);
    }

    #[test]
    fn portable_sets_are_checked_by_any_host() {
        let (codes, set) = generate(Keying::Portable, "alice", 5).unwrap();
        assert_eq!(set.scheme, Scheme::Argon2id);
        // Two hosts of a fleet: different keys, the same answer.
        let (a, b) = (
            SecretKey::from_bytes(&[1u8; 32]),
            SecretKey::from_bytes(&[2u8; 32]),
        );
        let digits = digits_only(&codes[0]).unwrap();
        assert_eq!(
            set.digest(&digits, &a, "alice").unwrap(),
            set.digest(&digits, &b, "alice").unwrap()
        );
        assert!(
            set.hashes
                .contains(&set.digest(&digits, &a, "alice").unwrap())
        );
    }
}
