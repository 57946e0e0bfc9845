//! What otpd stores per user, and the state changes the login logic needs. The changes are
//! pure functions on a record so every store backend applies them the same way atomically.

use crate::delivery::sent::Outbox;
use crate::store::crypto::Sealed;
use crate::store::recovery::RecoverySet;
use crate::store::throttle::delay_after;
use crate::totp::TokenParams;
use kron_common::config::ThrottleConfig;
use kron_common::contact::Contact;
use kron_proto::Channel;
use serde::{Deserialize, Serialize};

/// A token secret (sealed) with the parameters it was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub params: TokenParams,
    pub secret: Sealed,
    /// Unix time the token was made.
    pub created: u64,
}

/// The link of a pending enrollment (`kronctl enroll USER --link`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// SHA-256 of the token's random part.
    #[serde(with = "crate::serde_hex::hex_bytes")]
    pub hash: Vec<u8>,
    /// Unix time the link was made.
    pub created: u64,
    /// Wrong codes typed on its page; at [`kron_proto::MAX_LINK_FAILURES`] the link and its enrollment die.
    pub failures: u32,
    /// The channel otpd sent it on; `None` when the URL was handed to an admin.
    pub sent: Option<Channel>,
}

/// An enrollment waiting for its confirming code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub token: Token,
    /// Unix time after which the pending token is void.
    pub expires: u64,
    /// Begun at a login (shown again to the next login) rather than by kronctl.
    #[serde(default)]
    pub at_login: bool,
    /// Sent to the user's contact (`kronctl enroll --send`): its confirming code is taken at
    /// the login prompt.
    #[serde(default)]
    pub delivered: Option<Channel>,
    /// The one-time link that shows it (`kronctl enroll USER --link`), if it was made for one.
    #[serde(default)]
    pub link: Option<LinkRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRecord {
    /// The confirmed token; changed only by an admin reset.
    pub token: Option<Token>,
    pub pending: Option<Pending>,
    /// Highest time step ever accepted for the current token; codes for it or any earlier step
    /// are refused (replay prevention).
    pub last_step: Option<u64>,
    /// Unix time of the last accepted code; 0 if never.
    pub last_used: u64,
    /// Failed (or still running) attempts since the last success.
    pub failures: u32,
    /// No attempt is allowed before this unix time.
    pub next_attempt: u64,
    /// Unix time of the last charged attempt: failures decay by one per `max_delay` of quiet.
    pub last_attempt: u64,
    /// Hashes of the unused recovery codes.
    pub recovery: Option<RecoverySet>,
    /// Email address and phone number set by an admin.
    pub contact: Contact,
    /// The live sent code and the recent sends (the send budget).
    pub outbox: Outbox,
}

/// Outcome of storing an imported record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported,
    Replaced,
    /// A confirmed token exists and `replace` was not given.
    Kept,
}

/// Outcome of charging an attempt against the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Allowed,
    Throttled { until: u64 },
}

/// Outcome of offering a verified time step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Accepted,
    /// The step (or a later one) was already accepted: a replay.
    Replayed,
    /// There is no token (it was reset meanwhile).
    NoToken,
}

/// Outcome of confirming a pending enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed,
    /// No pending enrollment, or a different one than the code was checked against.
    NoPending,
    Expired,
    /// A confirmed token exists already; only an admin reset replaces it.
    AlreadyEnrolled,
}

/// Whether a confirming code was charged against the user's throttle before it was checked.
/// A confirmation takes back only a charge that was made: one that was never charged must not
/// wipe the failures and the wait that someone else's guesses set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged first, as `kronctl confirm` and a login's prompt do: a pass takes it back.
    Made,
    /// Not charged: a one-time link, whose wrong codes count against the link, not the user.
    NotMade,
}

impl UserRecord {
    pub fn is_locked(&self, now: u64) -> bool {
        now < self.next_attempt
    }

    /// Counts an attempt before its code is checked, so parallel guesses cannot slip past the
    /// limit: each one is charged first, and a success takes back only its own charge.
    /// Failures are forgotten one per `max_delay` without attempts, never all at once by a
    /// success: otherwise each of the user's own logins would hand a guesser fresh free attempts.
    pub fn charge_attempt(&mut self, now: u64, config: &ThrottleConfig) -> Attempt {
        if self.is_locked(now) {
            return Attempt::Throttled {
                until: self.next_attempt,
            };
        }
        let quiet_periods = now.saturating_sub(self.last_attempt) / config.max_delay.max(1);
        self.failures = self
            .failures
            .saturating_sub(u32::try_from(quiet_periods).unwrap_or(u32::MAX));
        self.last_attempt = now;
        self.failures = self.failures.saturating_add(1);
        let delay = delay_after(self.failures, config);
        self.next_attempt = if delay == 0 {
            0
        } else {
            now.saturating_add(delay)
        };
        Attempt::Allowed
    }

    /// Charges an attempt and, unless throttled, accepts `step` (the step a TOTP code matched,
    /// if any): one change for the common login, so a code and its charge are never apart.
    pub fn charge_and_accept(
        &mut self,
        step: Option<u64>,
        now: u64,
        config: &ThrottleConfig,
    ) -> (Attempt, Option<StepOutcome>) {
        let attempt = self.charge_attempt(now, config);
        let outcome = match attempt {
            Attempt::Allowed => step.map(|step| self.accept_step(step, now)),
            Attempt::Throttled { .. } => None,
        };
        (attempt, outcome)
    }

    /// Whether `response` could be one of the user's recovery codes (which takes an argon2 hash
    /// to check) rather than a TOTP code: a recovery set exists and the digits are not the
    /// token's length.
    pub fn may_be_recovery_code(&self, response: &str) -> bool {
        match (&self.recovery, &self.token) {
            (Some(_), Some(token)) => {
                crate::store::recovery::candidate(response, token.params.digits).is_some()
            }
            _ => false,
        }
    }

    /// Records `step` as used if it is later than every step used before.
    pub fn accept_step(&mut self, step: u64, now: u64) -> StepOutcome {
        if self.token.is_none() {
            return StepOutcome::NoToken;
        }
        if self.last_step.is_some_and(|last| step <= last) {
            return StepOutcome::Replayed;
        }
        self.last_step = Some(step);
        self.last_used = now;
        self.undo_charge();
        StepOutcome::Accepted
    }

    /// Stores a new pending enrollment unless a confirmed token exists.
    pub fn set_pending(&mut self, pending: Pending) -> Result<(), ConfirmOutcome> {
        if self.token.is_some() {
            return Err(ConfirmOutcome::AlreadyEnrolled);
        }
        self.pending = Some(pending);
        Ok(())
    }

    /// Turns `expected` (the pending enrollment the code was checked against) into the
    /// confirmed token, with `step` already used; takes back the code's charge if it was made.
    pub fn confirm(
        &mut self,
        expected: &Pending,
        step: u64,
        now: u64,
        charge: Charge,
    ) -> ConfirmOutcome {
        if self.token.is_some() {
            return ConfirmOutcome::AlreadyEnrolled;
        }
        match &self.pending {
            Some(pending) if pending == expected => {}
            _ => return ConfirmOutcome::NoPending,
        }
        if now >= expected.expires {
            self.pending = None;
            return ConfirmOutcome::Expired;
        }
        self.token = self.pending.take().map(|p| p.token);
        self.last_step = Some(step);
        self.last_used = now;
        if charge == Charge::Made {
            self.undo_charge();
        }
        ConfirmOutcome::Confirmed
    }

    /// Clears the throttle. True if the user was throttled or had failures.
    /// A passed check takes back the charge of its own attempt (and the wait it set).
    fn undo_charge(&mut self) {
        self.failures = self.failures.saturating_sub(1);
        self.next_attempt = 0;
    }

    /// An admin reset: everything but the contact and the send budget, which outlive tokens
    /// (re-enrolling may need the contact; a reset must not refill anyone's send budget).
    /// True if anything was removed.
    pub fn reset(&mut self) -> bool {
        let kept = UserRecord {
            contact: std::mem::take(&mut self.contact),
            outbox: Outbox {
                code: None,
                sends: std::mem::take(&mut self.outbox.sends),
            },
            ..UserRecord::default()
        };
        // What is left in `self` now is exactly what the reset removes.
        let removed = *self != UserRecord::default();
        *self = kept;
        removed
    }

    /// Uses up the sent code whose MAC for `purpose` is `mac`; a pass takes back its charge.
    pub fn take_sent_code(
        &mut self,
        expected: crate::delivery::sent::Expected,
        mac: &[u8],
        now: u64,
    ) -> crate::delivery::sent::CodeCheck {
        let check = self.outbox.take(expected, mac, now);
        if check == crate::delivery::sent::CodeCheck::Accepted {
            self.last_used = now;
            self.undo_charge();
        }
        check
    }

    /// Puts `previous` back if `expected` is still the pending enrollment (the delivery of
    /// `expected` failed: the enrollment it replaced, perhaps already scanned, stays usable).
    pub fn restore_pending(&mut self, expected: &Pending, previous: Option<Pending>) {
        if self.pending.as_ref() == Some(expected) {
            self.pending = previous;
        }
    }

    pub fn clear_failures(&mut self) -> bool {
        let had = self.failures > 0 || self.next_attempt > 0;
        self.failures = 0;
        self.next_attempt = 0;
        had
    }

    /// Installs a new recovery set (the old one dies). False if there is no token.
    pub fn set_recovery(&mut self, set: RecoverySet) -> bool {
        if self.token.is_none() {
            return false;
        }
        self.recovery = Some(set);
        true
    }

    /// Uses up the recovery code whose hash is `hash`. Returns the codes left, or `None` if it
    /// is not an unused code of this user.
    pub fn use_recovery(&mut self, hash: &[u8], now: u64) -> Option<usize> {
        self.token.as_ref()?;
        let set = self.recovery.as_mut()?;
        let index = set
            .hashes
            .iter()
            .position(|h| constant_time_eq::constant_time_eq(h, hash))?;
        set.hashes.remove(index);
        let left = set.hashes.len();
        self.last_used = now;
        self.undo_charge();
        Some(left)
    }

    /// What storing `incoming` over this record does.
    pub fn import_outcome(&self, replace: bool) -> ImportOutcome {
        match (self.token.is_some(), replace) {
            (false, _) => ImportOutcome::Imported,
            (true, true) => ImportOutcome::Replaced,
            (true, false) => ImportOutcome::Kept,
        }
    }

    /// Stores `incoming` over this record unless that is [`ImportOutcome::Kept`]. When the
    /// stored token is the same token (`same_token`), the steps it already used stay used:
    /// an older export must not make a used code valid again.
    pub fn absorb(
        &mut self,
        incoming: &UserRecord,
        replace: bool,
        same_token: &dyn Fn(&Token) -> bool,
    ) -> ImportOutcome {
        let outcome = self.import_outcome(replace);
        if outcome == ImportOutcome::Kept {
            return outcome;
        }
        let mut next = incoming.clone();
        // Addresses the import does not bring stay, and the send budget is never reset by an
        // import (it is about the person's inbox, not the token).
        next.contact.email = next.contact.email.or(self.contact.email.take());
        next.contact.phone = next.contact.phone.or(self.contact.phone.take());
        next.outbox = std::mem::take(&mut self.outbox);
        if self.token.as_ref().is_some_and(same_token) {
            next.last_step = self.last_step.max(next.last_step);
            next.last_used = self.last_used.max(next.last_used);
            next.recovery = newest_unused(self.recovery.take(), next.recovery);
        }
        *self = next;
        outcome
    }

    /// A pending enrollment that has not expired at `now`.
    pub fn live_pending(&self, now: u64) -> Option<&Pending> {
        self.pending.as_ref().filter(|p| now < p.expires)
    }
}

/// Of two recovery sets of one token: the codes unused in both if they are the same set, else
/// the newer set. A code used since a snapshot must not come back with it.
fn newest_unused(
    stored: Option<RecoverySet>,
    incoming: Option<RecoverySet>,
) -> Option<RecoverySet> {
    match (stored, incoming) {
        (Some(mut stored), Some(incoming)) if stored.salt == incoming.salt => {
            stored.hashes.retain(|hash| incoming.hashes.contains(hash));
            Some(stored)
        }
        (Some(stored), Some(incoming)) => Some(if stored.created >= incoming.created {
            stored
        } else {
            incoming
        }),
        (stored, incoming) => stored.or(incoming),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kron_common::config::Algorithm;

    /// A token for tests whose sealed bytes are all `byte` (it never needs to open).
    pub(crate) fn token(byte: u8) -> Token {
        Token {
            params: TokenParams {
                algorithm: Algorithm::SHA1,
                digits: 6,
                period: 30,
            },
            secret: Sealed {
                nonce: vec![byte; 24],
                ciphertext: vec![byte; 36],
            },
            created: 1,
        }
    }

    pub(crate) fn enrolled() -> UserRecord {
        UserRecord {
            token: Some(token(1)),
            ..UserRecord::default()
        }
    }

    #[test]
    fn a_step_is_accepted_once() {
        let mut record = enrolled();
        assert_eq!(record.accept_step(100, 3000), StepOutcome::Accepted);
        assert_eq!(record.accept_step(100, 3001), StepOutcome::Replayed);
        assert_eq!(record.accept_step(99, 3001), StepOutcome::Replayed);
        assert_eq!(record.accept_step(101, 3030), StepOutcome::Accepted);
        assert_eq!(record.last_used, 3030);
        assert_eq!(
            UserRecord::default().accept_step(5, 1),
            StepOutcome::NoToken
        );
    }

    #[test]
    fn attempts_are_charged_success_takes_back_its_own_and_quiet_decays() {
        let config = ThrottleConfig::default();
        let mut record = enrolled();
        let now = 10_000;
        assert_eq!(record.charge_attempt(now, &config), Attempt::Allowed);
        assert_eq!(record.charge_attempt(now, &config), Attempt::Allowed);
        assert_eq!(record.charge_attempt(now, &config), Attempt::Allowed);
        assert_eq!(
            record.charge_attempt(now, &config),
            Attempt::Throttled { until: now + 30 }
        );
        assert!(record.is_locked(now + 29));
        assert_eq!(record.charge_attempt(now + 30, &config), Attempt::Allowed);
        assert_eq!(record.next_attempt, now + 30 + 60);
        assert_eq!(record.accept_step(7, now + 90), StepOutcome::Accepted);
        assert_eq!(
            (record.failures, record.next_attempt),
            (3, 0),
            "no fresh free attempts"
        );
        assert_eq!(record.charge_attempt(now + 91, &config), Attempt::Allowed);
        assert_eq!(record.next_attempt, now + 91 + 60, "the ladder goes on");
        let quiet = now + 91 + 4 * config.max_delay;
        assert_eq!(record.charge_attempt(quiet, &config), Attempt::Allowed);
        assert_eq!(
            record.failures, 1,
            "one failure forgotten per max_delay of quiet"
        );
    }

    /// A pending enrollment of `token(byte)`, live until 500, made by an admin.
    fn pending_of(byte: u8) -> Pending {
        Pending {
            token: token(byte),
            expires: 500,
            at_login: false,
            delivered: None,
            link: None,
        }
    }

    #[test]
    fn enrollment_confirms_only_the_checked_pending_and_not_after_expiry() {
        let mut record = UserRecord::default();
        let pending = pending_of(2);
        record.set_pending(pending.clone()).unwrap();
        let other = pending_of(3);
        assert_eq!(
            record.confirm(&other, 10, 100, Charge::Made),
            ConfirmOutcome::NoPending
        );
        assert_eq!(
            record.clone().confirm(&pending, 10, 500, Charge::Made),
            ConfirmOutcome::Expired
        );
        assert_eq!(
            record.confirm(&pending, 10, 100, Charge::Made),
            ConfirmOutcome::Confirmed
        );
        assert_eq!(record.token, Some(token(2)));
        assert_eq!(
            record.last_step,
            Some(10),
            "the confirming code cannot log in again"
        );
        assert_eq!(
            record.set_pending(other),
            Err(ConfirmOutcome::AlreadyEnrolled)
        );
        assert_eq!(record.live_pending(0), None);
    }

    #[test]
    fn a_confirmation_takes_back_only_a_charge_it_made() {
        let config = ThrottleConfig::default();
        let mut record = UserRecord::default();
        let pending = pending_of(2);
        record.set_pending(pending.clone()).unwrap();
        // Five guesses, each as soon as the throttle lets it through.
        let mut at = 100;
        for _ in 0..5 {
            at = at.max(record.next_attempt);
            assert_eq!(record.charge_attempt(at, &config), Attempt::Allowed);
        }
        let guessed = (record.failures, record.next_attempt);
        assert_eq!(guessed.0, 5);
        assert!(guessed.1 > at);

        let mut uncharged = record.clone();
        assert_eq!(
            uncharged.confirm(&pending, 10, at + 1, Charge::NotMade),
            ConfirmOutcome::Confirmed
        );
        assert_eq!((uncharged.failures, uncharged.next_attempt), guessed);

        // A charged confirmation (as `kronctl confirm` makes, after its wait) takes back its own.
        let mut charged = record;
        let later = guessed.1;
        assert_eq!(charged.charge_attempt(later, &config), Attempt::Allowed);
        assert_eq!(
            charged.confirm(&pending, 10, later, Charge::Made),
            ConfirmOutcome::Confirmed
        );
        assert_eq!((charged.failures, charged.next_attempt), (5, 0));
    }

    #[test]
    fn recovery_codes_work_once_and_need_a_token() {
        let set = RecoverySet {
            salt: vec![1],
            hashes: vec![vec![1; 32], vec![2; 32]],
            created: 0,
            scheme: crate::store::recovery::Scheme::Argon2id,
        };
        assert!(!UserRecord::default().set_recovery(set.clone()));
        let mut record = enrolled();
        assert!(record.set_recovery(set));
        record.failures = 2;
        assert_eq!(record.use_recovery(&[2; 32], 50), Some(1));
        assert_eq!((record.failures, record.last_used), (1, 50));
        assert_eq!(record.use_recovery(&[2; 32], 51), None, "single use");
        assert_eq!(record.use_recovery(&[3; 32], 51), None);
        assert_eq!(record.import_outcome(false), ImportOutcome::Kept);
        assert_eq!(record.import_outcome(true), ImportOutcome::Replaced);
        assert_eq!(
            UserRecord::default().import_outcome(false),
            ImportOutcome::Imported
        );
    }

    #[test]
    fn replacing_the_same_token_keeps_its_used_steps() {
        let mut stored = UserRecord {
            last_step: Some(50),
            last_used: 9,
            ..enrolled()
        };
        let older = UserRecord {
            last_step: Some(40),
            last_used: 5,
            ..enrolled()
        };
        assert_eq!(
            stored.clone().absorb(&older, false, &|_| true),
            ImportOutcome::Kept
        );
        let mut same = stored.clone();
        assert_eq!(
            same.absorb(&older, true, &|_| true),
            ImportOutcome::Replaced
        );
        assert_eq!((same.last_step, same.last_used), (Some(50), 9));
        assert_eq!(
            stored.absorb(&older, true, &|_| false),
            ImportOutcome::Replaced
        );
        assert_eq!(
            stored.last_step,
            Some(40),
            "another token starts from its own steps"
        );
    }

    #[test]
    fn a_code_and_its_charge_are_one_change() {
        let config = ThrottleConfig::default();
        let mut record = UserRecord {
            token: Some(token(1)),
            last_step: Some(10),
            ..UserRecord::default()
        };
        assert_eq!(
            record.charge_and_accept(None, 100, &config),
            (Attempt::Allowed, None)
        );
        assert_eq!(record.failures, 1, "a wrong code is charged");
        assert_eq!(
            record.charge_and_accept(Some(10), 101, &config),
            (Attempt::Allowed, Some(StepOutcome::Replayed))
        );
        assert_eq!(record.failures, 2, "a replay is charged");
        let before = record.failures;
        record.next_attempt = 0;
        assert_eq!(
            record.charge_and_accept(Some(11), 102, &config),
            (Attempt::Allowed, Some(StepOutcome::Accepted))
        );
        assert_eq!(record.failures, before, "an accepted code costs nothing");
        assert_eq!(record.last_step, Some(11));
        record.next_attempt = 500;
        let locked = record.clone();
        assert_eq!(
            record.charge_and_accept(Some(12), 103, &config),
            (Attempt::Throttled { until: 500 }, None)
        );
        assert_eq!(record, locked, "nothing changes while throttled");
    }
}
