//! TOTP per RFC 6238 through totp-rs: token parameters, fresh secrets, checking a code, URIs.

#![forbid(unsafe_code)]

use kron_common::config::{Algorithm, TotpConfig};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Parameters a token was made with; stored beside the sealed secret so a later config change
/// never breaks existing tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenParams {
    pub algorithm: Algorithm,
    pub digits: u8,
    pub period: u64,
}

impl From<&TotpConfig> for TokenParams {
    fn from(config: &TotpConfig) -> Self {
        TokenParams {
            algorithm: config.algorithm,
            digits: config.digits,
            period: config.period,
        }
    }
}

/// Bytes of a new secret: 160 bits, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

/// A fresh random secret from the OS CSPRNG.
pub fn new_secret() -> Result<Zeroizing<Vec<u8>>, getrandom::Error> {
    let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    getrandom::fill(&mut secret)?;
    Ok(secret)
}

fn totp(secret: &[u8], params: TokenParams, skew: u8) -> totp_rs::Totp {
    builder(secret, params, skew).build_noncompliant()
}

fn builder(secret: &[u8], params: TokenParams, skew: u8) -> totp_rs::Builder {
    let algorithm = match params.algorithm {
        Algorithm::SHA1 => totp_rs::Algorithm::SHA1,
        Algorithm::SHA256 => totp_rs::Algorithm::SHA256,
        Algorithm::SHA512 => totp_rs::Algorithm::SHA512,
    };
    // Noncompliant build only skips totp-rs's 128-bit minimum: secrets imported from other
    // systems (google-authenticator uses 80 bits) must keep working. digits and period are
    // validated by the config and the store, so nothing here can make totp-rs panic.
    totp_rs::Builder::new()
        .with_algorithm(algorithm)
        .with_digits(params.digits)
        .with_step_duration(params.period)
        .with_skew(skew.into())
        .with_secret(secret.to_vec())
}

/// Normalises what a person typed: ASCII digits only, spaces removed. `None` if it cannot be a
/// code for these parameters (wrong length, other characters).
pub fn normalise_code(input: &str, digits: u8) -> Option<Zeroizing<String>> {
    let code: Zeroizing<String> = Zeroizing::new(input.chars().filter(|c| *c != ' ').collect());
    (code.len() == usize::from(digits) && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The time step `code` is valid for at `now`, within ±`skew` steps, or `None`: the earliest
/// one after `used` (the last step accepted), else the earliest one (a replay, which the store
/// refuses). The same code is valid for two steps of the window about once in 10^digits; taking
/// the first unused one keeps that coincidence from refusing a fresh code as a replay.
/// Comparison is constant time (totp-rs compares tokens with constant_time_eq).
pub fn matching_step(
    secret: &[u8],
    params: TokenParams,
    skew: u8,
    code: &str,
    now: u64,
    used: Option<u64>,
) -> Option<u64> {
    let code = normalise_code(code, params.digits)?;
    let exact = totp(secret, params, 0);
    let origin = now / params.period;
    let window = origin.saturating_sub(skew.into())..=origin.saturating_add(skew.into());
    let mut matches = window.filter(|&step| {
        exact
            .check(&code, step.saturating_mul(params.period))
            .is_some()
    });
    let first = matches.next()?;
    match used {
        Some(last) if first <= last => matches.find(|&step| step > last).or(Some(first)),
        _ => Some(first),
    }
}

/// The code for `secret` at `now`; used by tests and nothing else in production paths.
pub fn code_at(secret: &[u8], params: TokenParams, now: u64) -> String {
    totp(secret, params, 0).generate(now).to_string()
}

/// Base32 (RFC 4648, no padding) of the secret, for manual entry.
pub fn base32(secret: &[u8]) -> String {
    totp_rs::Secret::from(secret.to_vec()).to_base32()
}

/// `otpauth://totp/Issuer:user@host?...` for authenticator apps.
pub fn otpauth_uri(
    secret: &[u8],
    params: TokenParams,
    issuer: &str,
    account: &str,
) -> Result<String, String> {
    builder(secret, params, 0)
        .with_account_name(account)
        .with_issuer(Some(issuer))
        .build_noncompliant()
        .to_url()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    fn params(algorithm: Algorithm, digits: u8) -> TokenParams {
        TokenParams {
            algorithm,
            digits,
            period: 30,
        }
    }

    #[test]
    fn rfc6238_vectors() {
        // RFC 6238 Appendix B, SHA1 with the 20-byte ASCII secret.
        let p = params(Algorithm::SHA1, 8);
        assert_eq!(code_at(RFC_SECRET, p, 59), "94287082");
        assert_eq!(code_at(RFC_SECRET, p, 1111111109), "07081804");
        assert_eq!(code_at(RFC_SECRET, p, 2000000000), "69279037");
        let sha256 = b"12345678901234567890123456789012";
        assert_eq!(
            code_at(sha256, params(Algorithm::SHA256, 8), 59),
            "46119246"
        );
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234";
        assert_eq!(
            code_at(sha512, params(Algorithm::SHA512, 8), 59),
            "90693936"
        );
    }

    #[test]
    fn window_follows_skew() {
        let p = params(Algorithm::SHA1, 6);
        let now = 1_700_000_000;
        let step = now / 30;
        let previous = code_at(RFC_SECRET, p, now - 30);
        let next = code_at(RFC_SECRET, p, now + 30);
        let two_ahead = code_at(RFC_SECRET, p, now + 60);
        assert_eq!(
            matching_step(RFC_SECRET, p, 1, &previous, now, None),
            Some(step - 1)
        );
        assert_eq!(
            matching_step(RFC_SECRET, p, 1, &next, now, None),
            Some(step + 1)
        );
        assert_eq!(matching_step(RFC_SECRET, p, 1, &two_ahead, now, None), None);
        assert_eq!(matching_step(RFC_SECRET, p, 0, &previous, now, None), None);
        assert_eq!(
            matching_step(RFC_SECRET, p, 2, &two_ahead, now, None),
            Some(step + 2)
        );
    }

    #[test]
    fn a_code_valid_for_two_steps_is_taken_for_the_unused_one() {
        // With the RFC secret, steps 56188870 and 56188871 share the code 617002.
        let p = params(Algorithm::SHA1, 6);
        let (used, fresh) = (56_188_870, 56_188_871);
        assert_eq!(code_at(RFC_SECRET, p, used * 30), "617002");
        assert_eq!(code_at(RFC_SECRET, p, fresh * 30), "617002");
        let now = fresh * 30 + 5;
        let check = |used| matching_step(RFC_SECRET, p, 1, "617002", now, used);
        assert_eq!(
            check(None),
            Some(used),
            "the earliest when nothing was used"
        );
        assert_eq!(check(Some(used - 5)), Some(used));
        assert_eq!(check(Some(used)), Some(fresh), "not a replay");
        assert_eq!(
            check(Some(fresh)),
            Some(used),
            "a replay, for the store to refuse"
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let p = params(Algorithm::SHA1, 6);
        let now = 1_700_000_000;
        let code = code_at(RFC_SECRET, p, now);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert!(matching_step(RFC_SECRET, p, 1, &spaced, now, None).is_some());
        for bad in [
            "",
            "12345",
            "1234567",
            "abcdef",
            "12345x",
            "١٢٣٤٥٦",
            &format!("{code}\n"),
        ] {
            assert_eq!(
                matching_step(RFC_SECRET, p, 1, bad, now, None),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn uri_and_base32() {
        let p = params(Algorithm::SHA1, 6);
        assert_eq!(base32(b"Hello!\xde\xad\xbe\xef"), "JBSWY3DPEHPK3PXP");
        let uri = otpauth_uri(b"Hello!\xde\xad\xbe\xef", p, "Kron", "alice@host").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Kron:alice%40host?"),
            "{uri}"
        );
        assert!(
            uri.contains("secret=JBSWY3DPEHPK3PXP") && uri.contains("issuer=Kron"),
            "{uri}"
        );
        assert_eq!(new_secret().unwrap().len(), SECRET_BYTES);
    }
}
