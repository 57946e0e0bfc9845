//! Recovery codes: single-use codes for a lost phone, stored only as argon2id hashes.
//!
//! A set shares one random salt, so checking a typed code costs one slow hash however many
//! codes are left; the salt still makes every user's hashes unique.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Codes in a fresh set.
pub const SET_SIZE: usize = 10;
/// Digits of one code: 10, so a code is never mistaken for a 6- or 8-digit TOTP code.
pub const CODE_DIGITS: usize = 10;
const SALT_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverySet {
    #[serde(with = "crate::serde_hex::hex_bytes")]
    pub salt: Vec<u8>,
    /// argon2id(code, salt) of each unused code.
    #[serde(with = "crate::serde_hex::hex_list")]
    pub hashes: Vec<Vec<u8>>,
    pub created: u64,
}

/// A fresh set: the codes to show once (formatted `12345-67890`) and what to store.
pub fn generate(now: u64) -> Result<(Vec<Zeroizing<String>>, RecoverySet), String> {
    let mut salt = vec![0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let mut codes = Vec::with_capacity(SET_SIZE);
    let mut hashes = Vec::with_capacity(SET_SIZE);
    while codes.len() < SET_SIZE {
        let digits = random_digits()?;
        let hash = hash(&digits, &salt)?;
        if hashes.contains(&hash) {
            continue;
        }
        hashes.push(hash);
        codes.push(Zeroizing::new(format!("{}-{}", &digits[..5], &digits[5..])));
    }
    Ok((
        codes,
        RecoverySet {
            salt,
            hashes,
            created: now,
        },
    ))
}

/// Most codes one imported set may hold (google-authenticator makes at most 10).
pub const MAX_IMPORTED: usize = 32;

/// A set made from codes of another system (google-authenticator scratch codes), as typed.
/// Each must have at least 8 digits (weaker codes would undo the throttle's bound) and a length
/// other than the token's `totp_digits`, or the prompt could never tell it from a TOTP code.
pub fn from_existing(codes: &[String], totp_digits: u8, now: u64) -> Result<RecoverySet, String> {
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
    let mut salt = vec![0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let hashes = codes
        .iter()
        .map(|code| {
            let digits = digits_only(code)
                .ok_or_else(|| "recovery codes must be 6 to 12 digits".to_string())?;
            hash(&digits, &salt)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecoverySet {
        salt,
        hashes,
        created: now,
    })
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

/// argon2id with OWASP's minimum parameters (19 MiB, 2 passes): slow enough that a stolen
/// store does not give the codes away cheaply, fast enough for a login.
pub fn hash(code: &str, salt: &[u8]) -> Result<Vec<u8>, String> {
    let params = Params::new(19 * 1024, 2, 1, Some(32)).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(code.as_bytes(), salt, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn random_digits() -> Result<Zeroizing<String>, String> {
    let mut out = Zeroizing::new(String::with_capacity(CODE_DIGITS));
    while out.len() < CODE_DIGITS {
        let mut byte = [0u8; 1];
        getrandom::fill(&mut byte).map_err(|e| e.to_string())?;
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

    #[test]
    fn fresh_sets_verify_each_code_and_nothing_else() {
        let (codes, set) = generate(5).unwrap();
        assert_eq!(codes.len(), SET_SIZE);
        assert_eq!(set.hashes.len(), SET_SIZE);
        for code in &codes {
            assert_eq!(code.len(), CODE_DIGITS + 1);
            let digits = candidate(code, 6).unwrap();
            assert!(set.hashes.contains(&hash(&digits, &set.salt).unwrap()));
        }
        assert!(!set.hashes.contains(&hash("0000000000", &set.salt).unwrap()));
        let (_, other) = generate(5).unwrap();
        assert_ne!(set.salt, other.salt);
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains(&hex::encode(&set.hashes[0])), "{json}");
        assert_eq!(serde_json::from_str::<RecoverySet>(&json).unwrap(), set);
    }

    #[test]
    fn candidates_never_look_like_totp_codes() {
        assert!(candidate("12345-67890", 6).is_some());
        assert!(candidate("123456", 6).is_none());
        assert!(candidate("12345678", 8).is_none());
        assert!(
            candidate("12345678", 6).is_some(),
            "google-authenticator scratch codes"
        );
        assert!(candidate("1234a-67890", 6).is_none());
        assert!(candidate("12345", 6).is_none());
        assert!(from_existing(&["12345678".into()], 6, 0).is_ok());
        assert!(
            from_existing(&["12345678".into()], 8, 0).is_err(),
            "never usable"
        );
        assert!(from_existing(&["123456".into()], 8, 0).is_err(), "too weak");
        assert!(from_existing(&["nope".into()], 6, 0).is_err());
        assert!(from_existing(&vec!["12345678".to_string(); MAX_IMPORTED + 1], 6, 0).is_err());
    }
}
