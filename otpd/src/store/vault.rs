//! The seam between the engine and a store that keeps the seeds itself (a fleet's database):
//! there the store, not otpd, checks a code and accepts its step, and takes a new seed.
//! [`super::Store::vault`] is `None` for sled, where the engine opens the sealed seeds with its
//! key as it always did; `Some` for PostgreSQL, where no host ever holds a stored seed.

use crate::error::Result;
use crate::store::record::{ConfirmOutcome, ImportOutcome, Pending, StepOutcome, UserRecord};
use kron_common::config::ThrottleConfig;
use zeroize::Zeroizing;

/// What checking a TOTP code inside the store came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOutcome {
    /// The attempt was not charged: the user is in backoff until then.
    Throttled { until: u64 },
    /// The code matches no step of the window.
    Wrong,
    /// The code matched a step; what became of it.
    Step(StepOutcome),
    /// The answer may be something else than a TOTP code (no token, another length than the
    /// token's, or a sent code is live): nothing was charged or changed.
    NotTotp,
}

/// What a check inside the store came to, and whether it was decided from this host's offline
/// pack because the database could not be reached (`store/offline/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub outcome: CodeOutcome,
    pub offline: bool,
}

impl Checked {
    /// A check the database (or a store that keeps the seeds) decided.
    pub fn online(outcome: CodeOutcome) -> Checked {
        Checked {
            outcome,
            offline: false,
        }
    }
}

/// Code checks and seeds inside the store. Every method is one atomic change for one user.
pub trait Vault: Send + Sync {
    /// Checks `code` against the confirmed token within ±`skew` steps of `now` and accepts the
    /// step at most once. With `charge`, the attempt is charged first, in the same change,
    /// unless the answer may be something else ([`CodeOutcome::NotTotp`], where a code sent
    /// for `sent` that is still live counts as something else).
    fn check_code(
        &self,
        user: &str,
        code: &str,
        now: u64,
        skew: u8,
        charge: Option<&ThrottleConfig>,
        sent: Option<&str>,
    ) -> Result<Checked>;
    /// Stores `pending` with its plain `seed` (encrypted by the store) unless a confirmed token
    /// exists (then false).
    fn save_pending(&self, user: &str, pending: &Pending, seed: &[u8]) -> Result<bool>;
    /// The seed of `pending` if it is still the user's live enrollment begun at a login.
    fn pending_seed(
        &self,
        user: &str,
        pending: &Pending,
        now: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>>;
    /// Checks the confirming `code` of `pending` (already charged) and, if it matches, makes
    /// the pending token the confirmed one. `None`: the code is wrong.
    fn confirm_code(
        &self,
        user: &str,
        pending: &Pending,
        code: &str,
        now: u64,
        skew: u8,
    ) -> Result<Option<ConfirmOutcome>>;
    /// Stores an imported record with its plain seed, as [`super::Store::import`] does.
    fn import(
        &self,
        user: &str,
        record: &UserRecord,
        seed: Option<&[u8]>,
        replace: bool,
    ) -> Result<ImportOutcome>;
    /// The stored form of a code sent by email or SMS, the same on every host of the fleet.
    fn code_mac(&self, user: &str, purpose: &str, code: &str) -> Result<Vec<u8>>;
}
