//! One login through the real libpam (kron-pam-client), with a conversation that types the
//! current code (computed by liboath when the prompt comes) and ignores informational text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kron_pam_client::{Converse, Ended, Style};
use zeroize::Zeroizing;

use crate::oath;

/// The result and timing of one login.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// pam_authenticate's result (or pam_start's, if that failed).
    pub code: i32,
    /// pam_start_confdir → pam_end, the whole cost a login application pays.
    pub total: Duration,
    /// pam_authenticate alone.
    pub authenticate: Duration,
    /// Prompts answered (1 for every module here).
    pub prompts: u32,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == kron_pam_client::ffi::PAM_SUCCESS
    }
}

/// A PAM service in a private config directory (never /etc/pam.d).
#[derive(Debug)]
pub struct Service(kron_pam_client::Service);

impl Service {
    pub fn new(name: &str, confdir: &str) -> Result<Service, String> {
        kron_pam_client::Service::new(name, confdir).map(Service)
    }

    /// Logs `user` in once, typing the current code of `secret` at the prompt.
    pub fn login(&self, user: &str, secret: &[u8]) -> Outcome {
        let mut typist = Typist { secret, prompts: 0 };
        let outcome = self.0.authenticate(user, &[], &mut typist);
        Outcome {
            code: outcome.code,
            total: outcome.total,
            authenticate: outcome.authenticate,
            prompts: typist.prompts,
        }
    }
}

/// The symbolic name of a PAM result.
pub fn describe(code: i32) -> String {
    kron_pam_client::code_name(code)
}

/// The conversation: whose code to type, and how many prompts it answered.
struct Typist<'a> {
    secret: &'a [u8],
    prompts: u32,
}

impl Converse for Typist<'_> {
    fn message(&mut self, style: Style, _text: &str) -> Result<Option<Zeroizing<String>>, Ended> {
        if !style.is_prompt() {
            return Ok(None);
        }
        self.prompts += 1;
        oath::totp(self.secret, unix_now(), crate::population::PERIOD)
            .map(|code| Some(Zeroizing::new(code)))
            .map_err(|_| Ended)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
