//! The verdict on a typed code, in one place: a TOTP code (the charge and the accepted step in
//! one store change), a recovery code, a code sent by email or SMS, or the code confirming an
//! enrollment. Every check is charged to the throttle before the code is looked at.

use super::Engine;
use crate::delivery::sent::{CodeCheck, Expected};
use crate::error::Result;
use crate::store::record::{
    Attempt, Charge, ConfirmOutcome, Pending, StepOutcome, Token, UserRecord,
};
use crate::store::vault::{Checked, CodeOutcome};
use crate::totp;

/// The outcome of checking a confirming code.
pub(super) enum PendingCheck {
    Throttled { until: u64 },
    Wrong,
    Done(ConfirmOutcome),
}

/// The outcome of checking one typed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    AcceptedRecovery {
        left: usize,
    },
    /// A login code sent by email or SMS.
    AcceptedSent,
    Throttled {
        until: u64,
    },
    Replayed,
    Wrong,
    /// No token (reset during the login).
    NoToken,
}

/// Where a code was checked, for the audit line: by this host's own store (one host), by the
/// fleet's database, or from this host's offline pack while the database was away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckedBy {
    Here,
    Online,
    Offline,
}

impl CheckedBy {
    fn of(checked: Checked) -> CheckedBy {
        match checked.offline {
            true => CheckedBy::Offline,
            false => CheckedBy::Online,
        }
    }

    /// `detail` with where the code was checked in front (nothing added on one host): every
    /// decision of a fleet host on a code says whether it was online or offline.
    pub(crate) fn note(self, detail: &str) -> String {
        let place = match self {
            CheckedBy::Here => return detail.to_owned(),
            CheckedBy::Online => "checked online",
            CheckedBy::Offline => "checked offline",
        };
        match detail {
            "" => place.to_owned(),
            detail => format!("{place}; {detail}"),
        }
    }
}

impl Verdict {
    pub(crate) fn event(self) -> &'static str {
        match self {
            Verdict::Accepted | Verdict::AcceptedRecovery { .. } | Verdict::AcceptedSent => {
                "accepted"
            }
            Verdict::Throttled { .. } => "throttled",
            Verdict::Replayed | Verdict::Wrong | Verdict::NoToken => "rejected",
        }
    }

    pub(crate) fn detail(self) -> &'static str {
        match self {
            Verdict::AcceptedRecovery { .. } => "recovery code",
            Verdict::AcceptedSent => "sent code",
            Verdict::Replayed => "code already used",
            Verdict::Wrong => "wrong code",
            Verdict::NoToken => "token was reset during the login",
            Verdict::Accepted | Verdict::Throttled { .. } => "",
        }
    }
}

impl Engine {
    /// Checks a code (or a recovery code, or with `sent` the sent code it names) for
    /// `user`: charges the attempt, and accepts the matching step at most once.
    pub(crate) fn verify(
        &self,
        user: &str,
        response: &str,
        sent: Option<Expected>,
        now: u64,
    ) -> Result<(Verdict, CheckedBy)> {
        // Where the store keeps the seeds (a fleet), it checks the code: the charge, the check
        // and the accepted step are one statement in the database, which also tells when the
        // answer may be something else (then nothing was charged, and the general path below
        // sorts it out).
        if let (Some(vault), Some(code)) = (self.store.vault(), digits_only(response)) {
            let purpose = sent.map(|expected| expected.purpose.as_str());
            let checked = vault.check_code(
                user,
                &code,
                now,
                self.config.totp.skew,
                Some(&self.config.throttle),
                purpose,
            )?;
            if checked.outcome != CodeOutcome::NotTotp {
                return Ok((code_verdict(checked.outcome), CheckedBy::of(checked)));
            }
        }
        let record = self.store.get(user)?.unwrap_or_default();
        if self.store.vault().is_some() {
            // The general path below: a recovery code, a sent code, or no token.
        } else if let Some(step) = self.totp_only(user, &record, response, sent, now)? {
            // The common case, a TOTP code, is one atomic store change: the charge and the step.
            let (attempt, outcome) =
                self.store
                    .charge_and_accept(user, step, now, &self.config.throttle)?;
            let verdict = match (attempt, outcome) {
                (Attempt::Throttled { until }, _) => Verdict::Throttled { until },
                (Attempt::Allowed, outcome) => step_verdict(outcome),
            };
            return Ok((verdict, CheckedBy::Here));
        }
        if let Attempt::Throttled { until } =
            self.store
                .charge_attempt(user, now, &self.config.throttle)?
        {
            return Ok((Verdict::Throttled { until }, self.checked_by_store()));
        }
        // The charge is durable before the reply, whatever the check says (service.rs).
        self.verify_charged(user, response, sent, now)
    }

    /// Where the store checks codes: here (sled), or in the fleet's database.
    fn checked_by_store(&self) -> CheckedBy {
        match self.store.vault() {
            None => CheckedBy::Here,
            Some(_) => CheckedBy::Online,
        }
    }

    /// `Some(the step the code matches, if any)` when `response` can only be a TOTP code of
    /// `record`'s token; `None` when a sent code or a recovery code may be meant, or there is no
    /// token, which [`Engine::verify_charged`] sorts out.
    pub(super) fn totp_only(
        &self,
        user: &str,
        record: &UserRecord,
        response: &str,
        sent: Option<Expected>,
        now: u64,
    ) -> Result<Option<Option<u64>>> {
        let Some(token) = &record.token else {
            return Ok(None);
        };
        if !self.is_totp_only(record, response, sent, now) {
            return Ok(None);
        }
        self.totp_step(user, token, response, now, record.last_step)
            .map(Some)
    }

    /// Whether `response` can only be a TOTP code of `record`'s token: there is a token, no sent
    /// code for `sent` is live, and it cannot be a recovery code.
    fn is_totp_only(
        &self,
        record: &UserRecord,
        response: &str,
        sent: Option<Expected>,
        now: u64,
    ) -> bool {
        record.token.is_some()
            && sent.is_none_or(|expected| !record.outbox.live_expected(expected, now))
            && !record.may_be_recovery_code(response)
    }

    /// What is sent to a store that checks codes itself: the typed code normalised as otpd
    /// checks it (digits only, blanks removed), or "" for anything that cannot be a code (the
    /// store charges it and finds it wrong).
    fn typed_code(&self, record: &UserRecord, response: &str) -> String {
        record
            .token
            .as_ref()
            .and_then(|token| totp::normalise_code(response, token.params.digits))
            .map(|code| code.to_string())
            .unwrap_or_default()
    }

    /// The step `response` matches for `token`: the first one after `used` if there is one.
    pub(super) fn totp_step(
        &self,
        user: &str,
        token: &Token,
        response: &str,
        now: u64,
        used: Option<u64>,
    ) -> Result<Option<u64>> {
        let secret = self.key.open(user, &token.secret)?;
        Ok(totp::matching_step(
            &secret,
            token.params,
            self.config.totp.skew,
            response,
            now,
            used,
        ))
    }

    pub(super) fn verify_charged(
        &self,
        user: &str,
        response: &str,
        sent: Option<Expected>,
        now: u64,
    ) -> Result<(Verdict, CheckedBy)> {
        let by_store = self.checked_by_store();
        let record = self.store.get(user)?.unwrap_or_default();
        // A code sent by email or SMS (fallback) is tried first: it is the only thing a user
        // without a token can pass with.
        if let Some(expected) = sent.filter(|&e| record.outbox.live_expected(e, now))
            && self.take_sent_code(user, expected, response, now)? == CodeCheck::Accepted
        {
            return Ok((Verdict::AcceptedSent, by_store));
        }
        let Some(token) = record.token.clone() else {
            return Ok((Verdict::NoToken, by_store));
        };
        if let (Some(set), Some(code)) = (
            &record.recovery,
            crate::store::recovery::candidate(response, token.params.digits),
        ) {
            let hash = set.digest(&code, &self.key, user)?;
            let verdict = match self.store.use_recovery(user, &hash, now)? {
                Some(left) => Verdict::AcceptedRecovery { left },
                None => Verdict::Wrong,
            };
            return Ok((verdict, by_store));
        }
        if let Some(vault) = self.store.vault() {
            let code = self.typed_code(&record, response);
            let checked = vault.check_code(user, &code, now, self.config.totp.skew, None, None)?;
            return Ok((code_verdict(checked.outcome), CheckedBy::of(checked)));
        }
        let outcome = match self.totp_step(user, &token, response, now, record.last_step)? {
            None => None,
            Some(step) => Some(self.store.accept_step(user, step, now)?),
        };
        Ok((step_verdict(outcome), CheckedBy::Here))
    }

    /// Checks a confirming code against `pending`, charged against the throttle like any
    /// code, and saves the token if it matches.
    pub(super) fn check_pending(
        &self,
        user: &str,
        pending: &Pending,
        code: &str,
        now: u64,
    ) -> Result<PendingCheck> {
        if let Attempt::Throttled { until } =
            self.store
                .charge_attempt(user, now, &self.config.throttle)?
        {
            return Ok(PendingCheck::Throttled { until });
        }
        // Whatever the outcome, the charge and the confirmation are durable before the reply
        // (service.rs).
        if let Some(vault) = self.store.vault() {
            let code = totp::normalise_code(code, pending.token.params.digits)
                .map(|c| c.to_string())
                .unwrap_or_default();
            return Ok(
                match vault.confirm_code(user, pending, &code, now, self.config.totp.skew)? {
                    None => PendingCheck::Wrong,
                    Some(outcome) => PendingCheck::Done(outcome),
                },
            );
        }
        let secret = self.key.open(user, &pending.token.secret)?;
        let params = pending.token.params;
        Ok(
            match totp::matching_step(&secret, params, self.config.totp.skew, code, now, None) {
                None => PendingCheck::Wrong,
                Some(step) => PendingCheck::Done(self.store.confirm(
                    user,
                    pending,
                    step,
                    now,
                    Charge::Made,
                )?),
            },
        )
    }
}

/// What a check inside the store came to.
fn code_verdict(outcome: CodeOutcome) -> Verdict {
    match outcome {
        CodeOutcome::Throttled { until } => Verdict::Throttled { until },
        // Only asked for without a charge, when the token's digits are known: a wrong code.
        CodeOutcome::Wrong | CodeOutcome::NotTotp => Verdict::Wrong,
        CodeOutcome::Step(step) => step_verdict(Some(step)),
    }
}

/// A typed answer that could be a TOTP code of 6 or 8 digits (blanks removed), or `None`.
fn digits_only(response: &str) -> Option<zeroize::Zeroizing<String>> {
    let code = zeroize::Zeroizing::new(response.chars().filter(|c| *c != ' ').collect::<String>());
    (matches!(code.len(), 6 | 8) && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// What a TOTP check came to: no matching step, or what the store said of the step.
fn step_verdict(outcome: Option<StepOutcome>) -> Verdict {
    match outcome {
        None => Verdict::Wrong,
        Some(StepOutcome::Accepted) => Verdict::Accepted,
        Some(StepOutcome::Replayed) => Verdict::Replayed,
        Some(StepOutcome::NoToken) => Verdict::NoToken,
    }
}

#[cfg(test)]
mod tests {
    use super::CheckedBy;

    #[test]
    fn fleet_decisions_say_where_the_code_was_checked() {
        assert_eq!(CheckedBy::Here.note("wrong code"), "wrong code");
        assert_eq!(CheckedBy::Online.note(""), "checked online");
        assert_eq!(
            CheckedBy::Offline.note("code already used"),
            "checked offline; code already used"
        );
    }
}
