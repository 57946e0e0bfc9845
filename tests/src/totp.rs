//! TOTP codes from an independent implementation: OATH Toolkit's `oathtool`.
//!
//! otpd uses totp-rs; computing the expected codes with oathtool means the tests never check
//! otpd's TOTP only against itself.
//!
//! Replay protection accepts, for one user, only steps greater than the last accepted one, and
//! the default skew accepts steps `t-1 ..= t+1`. A test that needs several codes for one user
//! calls [`steady_step`] first and uses steps in increasing order.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process;

/// HMAC algorithm of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// The parameters of one token, as oathtool needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oath {
    secret: String,
    algorithm: Algorithm,
    digits: u32,
    period: u64,
}

impl Oath {
    /// A token with the defaults of authenticator apps: SHA1, 6 digits, 30 s.
    pub fn new(secret: &str) -> Oath {
        Oath {
            secret: secret.to_string(),
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }

    /// The same token with another HMAC algorithm.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Oath {
        self.algorithm = algorithm;
        self
    }

    /// The same token with another number of digits.
    pub fn digits(mut self, digits: u32) -> Oath {
        self.digits = digits;
        self
    }

    /// The same token with another time step.
    pub fn period(mut self, period: u64) -> Oath {
        self.period = period;
        self
    }

    /// The base32 secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The time step `now` falls in.
    pub fn current_step(&self) -> u64 {
        unix_now() / self.period
    }

    /// The code for time step `step`.
    pub fn code_for_step(&self, step: u64) -> String {
        self.code_at(step * self.period)
    }

    /// The code for the current time, with oathtool reading the clock itself.
    pub fn code_now(&self) -> String {
        self.oathtool(None)
    }

    /// The code at Unix time `unix`.
    pub fn code_at(&self, unix: u64) -> String {
        self.oathtool(Some(unix))
    }

    fn oathtool(&self, unix: Option<u64>) -> String {
        let mode = match self.algorithm {
            Algorithm::Sha1 => "--totp",
            Algorithm::Sha256 => "--totp=sha256",
            Algorithm::Sha512 => "--totp=sha512",
        };
        let mut command = Command::new("oathtool");
        command
            .arg(mode)
            .arg("--base32")
            .arg(format!("--digits={}", self.digits))
            .arg(format!("--time-step-size={}s", self.period));
        if let Some(unix) = unix {
            command.arg(format!("--now=@{unix}"));
        }
        // oathtool wants the secret without base32 padding.
        command.arg(self.secret.trim_end_matches('='));
        let output = process::run(&mut command);
        output.assert_success("oathtool");
        let code = output.stdout.trim().to_string();
        assert!(
            code.len() == self.digits as usize && code.bytes().all(|b| b.is_ascii_digit()),
            "oathtool printed {code:?}"
        );
        code
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Least time left in the current 30 s step that [`steady_step`] guarantees.
pub const STEP_MARGIN: u64 = 12;

/// Returns the current 30 s step after making sure at least [`STEP_MARGIN`] seconds of it
/// remain (waiting for the next step if not, at most `STEP_MARGIN` seconds).
///
/// Within that margin, steps `t-1`, `t` and `t+1` are all inside otpd's default skew window,
/// and `t+1` stays valid for another 30 s after it.
pub fn steady_step() -> u64 {
    steady_step_of(30)
}

/// [`steady_step`] for a token with time step `period` seconds.
pub fn steady_step_of(period: u64) -> u64 {
    let now = unix_now();
    let left = period - now % period;
    if left >= STEP_MARGIN {
        return now / period;
    }
    std::thread::sleep(Duration::from_secs(left));
    process::wait_for("the next TOTP step", Duration::from_secs(period), || {
        let step = unix_now() / period;
        (step > now / period).then_some(step)
    })
}

/// A wrong code for a token whose right code is `right`: same length, different digits.
pub fn wrong_code(right: &str) -> String {
    right
        .bytes()
        .map(|digit| char::from(b'0' + (digit - b'0' + 5) % 10))
        .collect()
}

/// `bytes` as a TOTP secret is written: RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, bytes)
}

/// The bytes of a base32 secret (padding allowed); panics on anything else.
pub fn decode_base32(text: &str) -> Vec<u8> {
    base32::decode(
        base32::Alphabet::Rfc4648 { padding: false },
        text.trim_end_matches('='),
    )
    .expect("a base32 secret")
}
