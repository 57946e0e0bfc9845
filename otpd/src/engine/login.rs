//! The login conversation: what a login needs (`BeginLogin`), the answers at the prompt
//! (`Answer`), and an enrollment shown and confirmed within a login.

use super::messages;
use super::outbound::SentCheck;
use super::sending::{SendWait, Sent};
use super::sessions::{LoginKind, LoginSession};
use super::verdict::{PendingCheck, Verdict};
use super::{Engine, subject, throttled};
use crate::audit::Subject;
use crate::delivery::sent::{Expected, Purpose};
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::policy::{Decision, LoginRequest, decide};
use crate::store::record::{Attempt, ConfirmOutcome, Pending, UserRecord};
use crate::totp;
use kron_common::config::Mode;
use kron_common::contact::Channels;
use kron_common::rules::{Policy, policy_for};
use kron_common::users::Account;
use kron_proto::{Channel, MAX_FIELD_LEN, MAX_RESPONSE_LEN, Step, StepKind};

/// Codes one login may have sent again at its prompt. With the first prompt and the enrollment
/// that follows a validated contact, a login then asks at most five times, well inside
/// pam_kron's eight.
pub(crate) const MAX_RESENDS: u8 = 3;

impl Engine {
    /// First step of a login: decides what it needs and asks for a code, shows an enrollment,
    /// skips or denies.
    pub fn begin_login(&self, caller: Caller, mut request: LoginRequest, now: u64) -> Result<Step> {
        let send_by = self.send_deadline();
        // Authorize first: a caller other than root may only check itself, and a name that is
        // not even valid cannot be its own, so it learns nothing about what it sent.
        if !caller.is_root() && kron_proto::validate_user(&request.user).is_err() {
            caller.may_log_in_as(None)?;
        }
        kron_proto::validate_user(&request.user).map_err(Error::InvalidArgument)?;
        let account = self.directory.by_name(&request.user)?;
        caller.may_log_in_as(account.as_ref())?;
        validate_fields(&request)?;
        // NSS may resolve several names to one account (SSSD ignores case, `user@domain`):
        // everything is kept under the account's own name, or an alias would find no token.
        if let Some(account) = account.as_ref().filter(|a| a.name != request.user) {
            let typed = std::mem::replace(&mut request.user, account.name.clone());
            self.audit.record(
                "alias",
                &subject(&request, caller),
                &format!("typed as {typed}"),
            );
        }
        let subject = subject(&request, caller);
        let policy = match &account {
            Some(account) => Some(policy_for(
                &self.config,
                account,
                &request.service,
                &*self.directory,
            )?),
            None => {
                // A name that is no account meets the rules as an account in no group: while a
                // rule's group cannot be resolved it is refused as "unavailable" as accounts
                // are, which a prompt for it alone would tell apart.
                let nobody = Account {
                    name: request.user.clone(),
                    uid: u32::MAX,
                    gids: Vec::new(),
                };
                policy_for(&self.config, &nobody, &request.service, &*self.directory)?;
                None
            }
        };
        let record = match &account {
            // Nothing about the record changes what an exempt login gets: not reading it keeps
            // such logins working while a fleet's database is away.
            Some(_) if policy.is_some_and(|p| p.mode == Mode::Exempt) => None,
            Some(_) => match self.store.get(&request.user) {
                Ok(record) => record,
                Err(Error::Unreachable(why)) => return Ok(self.unreachable(&subject, &why)),
                Err(e) => return Err(e),
            },
            // A name that is no account is read too, and what is read is left unused: a fleet
            // host's read is a round trip to the database, and an unknown name answered
            // without it would come back sooner (or prompt while the database is away, where
            // an account gets "cannot reach its database"), telling the two apart.
            None => match self.store.get(&request.user) {
                Ok(_) => None,
                Err(Error::Unreachable(why)) => return Ok(self.unreachable(&subject, &why)),
                Err(e) => return Err(e),
            },
        };
        let kind = match decide(policy.map(|p| p.mode), record.as_ref(), now) {
            Decision::Skip { mode } => {
                self.audit
                    .record("skipped", &subject, &format!("mode {}", mode.as_str()));
                return Ok(Step::terminal(StepKind::Skip, vec![]));
            }
            Decision::Throttled { until } => {
                self.audit.record("throttled", &subject, "");
                return Ok(throttled(until, now));
            }
            Decision::AskCode { .. }
                if policy.is_some_and(|p| self.grace.covers(caller, &request, p.grace, now)) =>
            {
                self.audit.record("accepted", &subject, "step-up grace");
                return Ok(Step::terminal(StepKind::Accept, vec![]));
            }
            Decision::AskCode { .. } => {
                let offer = self.reachable(&request.user, record.as_ref(), fallback_of(policy));
                let shown = messages::fallback_hint(offer).into_iter().collect();
                let session = LoginSession::new(
                    caller,
                    request,
                    LoginKind::Code { offer },
                    self.login_deadline(now),
                );
                return Ok(self.prompt(session, shown, now));
            }
            Decision::NoToken => {
                return self.begin_without_token(caller, request, policy, record, send_by, now);
            }
            Decision::UnknownUser => match self.strangers.locked_until(&request.user, now) {
                Some(until) => {
                    self.audit.record("throttled", &subject, "unknown user");
                    return Ok(throttled(until, now));
                }
                None => LoginKind::UnknownUser,
            },
            Decision::Enroll => {
                return self.begin_enroll_mode(
                    caller,
                    request,
                    (account.as_ref(), policy),
                    record,
                    send_by,
                    now,
                );
            }
        };
        Ok(self.prompt(
            LoginSession::new(caller, request, kind, self.login_deadline(now)),
            vec![],
            now,
        ))
    }

    /// Mode `require` without a token: a delivered enrollment waiting for its code, else a
    /// fallback code if the rule offers one and a contact exists, else a prompt that is always
    /// refused (so nothing tells this account from one with a token).
    pub(super) fn begin_without_token(
        &self,
        caller: Caller,
        request: LoginRequest,
        policy: Option<Policy>,
        record: Option<UserRecord>,
        send_by: SendWait,
        now: u64,
    ) -> Result<Step> {
        if let Some(pending) = delivered_pending(record.as_ref(), now) {
            return Ok(self.begin_delivered(caller, request, pending, now));
        }
        let offer = self.reachable(&request.user, record.as_ref(), fallback_of(policy));
        if offer.is_empty() {
            let session = LoginSession::new(
                caller,
                request,
                LoginKind::NoToken,
                self.login_deadline(now),
            );
            return Ok(self.prompt(session, vec![], now));
        }
        self.begin_sent(
            caller,
            request,
            record.as_ref(),
            (offer, Purpose::Login),
            send_by,
            now,
        )
    }

    /// Mode `enroll` without a token: a delivered enrollment waiting for its code, else the
    /// contact is proved first if the rule asks for it, else the QR code right away.
    pub(super) fn begin_enroll_mode(
        &self,
        caller: Caller,
        request: LoginRequest,
        (account, policy): (Option<&Account>, Option<Policy>),
        record: Option<UserRecord>,
        send_by: SendWait,
        now: u64,
    ) -> Result<Step> {
        if let Some(pending) = delivered_pending(record.as_ref(), now) {
            return Ok(self.begin_delivered(caller, request, pending, now));
        }
        let mut wanted = policy.map_or_else(Channels::default, |p| p.validate_enrollment);
        // A caller other than root (a screen locker, anything calling as the user) names the
        // service, and so the rule, itself: it enrolls no more freely than `kronctl enroll`
        // would let it, or a rule written for the console would hand it an enrollment without
        // the validation the others ask for.
        if wanted.is_empty()
            && !caller.is_root()
            && let Some(account) = account
        {
            wanted = self.enrollment_needs_validation(caller, account)?;
        }
        if wanted.is_empty() {
            return self.begin_enrollment_login(caller, request, record, now);
        }
        let subject = subject(&request, caller);
        if let Some(record) = record.as_ref().filter(|r| r.is_locked(now)) {
            self.audit.record("throttled", &subject, "enrollment");
            return Ok(throttled(record.next_attempt, now));
        }
        let offer = self.reachable(&request.user, record.as_ref(), wanted);
        if offer.is_empty() {
            self.audit
                .record("enroll-refused", &subject, "no contact to validate");
            return Ok(Step::terminal(
                StepKind::Deny,
                messages::no_contact_for_enrollment(&self.config.contact),
            ));
        }
        self.begin_sent(
            caller,
            request,
            record.as_ref(),
            (offer, Purpose::Enrollment),
            send_by,
            now,
        )
    }

    /// Prompts for a sent code for `purpose`: the one still live if there is one, else a new
    /// one on the first channel of `offer` that takes it.
    pub(super) fn begin_sent(
        &self,
        caller: Caller,
        request: LoginRequest,
        record: Option<&UserRecord>,
        (offer, purpose): (Channels, Purpose),
        send_by: SendWait,
        now: u64,
    ) -> Result<Step> {
        let subject = subject(&request, caller);
        let live = record
            .and_then(|r| r.outbox.live(purpose, now))
            .filter(|code| offer.contains(code.channel));
        let sent = match live {
            Some(code) => {
                let address = self.address(&request.user, record, code.channel);
                Sent::Done {
                    channel: code.channel,
                    masked: kron_common::contact::mask(
                        code.channel,
                        address.as_deref().unwrap_or(""),
                    ),
                    expires: code.expires,
                }
            }
            None => {
                let mut outcome = None;
                for channel in offer.iter() {
                    let sent = self.send_code(&subject, record, channel, purpose, send_by, now)?;
                    // Busy: otpd's sends are all in use, for every channel alike.
                    let done = matches!(
                        sent,
                        Sent::Done { .. } | Sent::Underway { .. } | Sent::Busy { .. }
                    );
                    outcome = Some(sent);
                    if done {
                        break;
                    }
                }
                outcome.ok_or_else(|| Error::System("no channel to send on".into()))?
            }
        };
        let told = sent.message(&self.config.contact, now);
        match sent {
            Sent::Done { .. } | Sent::Underway { .. } => {}
            Sent::Spent { .. } => {
                self.audit
                    .record("throttled", &subject, "send budget spent");
                return Ok(Step::terminal(StepKind::Throttled, vec![told]));
            }
            Sent::Busy { .. } => {
                self.audit
                    .record("throttled", &subject, "too many sends under way");
                return Ok(Step::terminal(StepKind::Throttled, vec![told]));
            }
            Sent::Failed { .. } => return Ok(Step::terminal(StepKind::Unavailable, vec![told])),
        }
        let kind = match purpose {
            Purpose::Login => LoginKind::Sent { offer },
            Purpose::Enrollment => LoginKind::Validate { offer },
        };
        let shown = std::iter::once(told)
            .chain(messages::fallback_hint(offer))
            .collect();
        let session = LoginSession::new(caller, request, kind, self.login_deadline(now));
        Ok(self.prompt(session, shown, now))
    }

    /// Asks for the confirming code of an enrollment sent to the user (`kronctl enroll --send`).
    pub(super) fn begin_delivered(
        &self,
        caller: Caller,
        request: LoginRequest,
        pending: Pending,
        now: u64,
    ) -> Step {
        let channel = pending.delivered.unwrap_or(Channel::Email);
        let session = LoginSession::new(
            caller,
            request,
            LoginKind::Enroll(pending),
            self.login_deadline(now),
        );
        self.prompt(session, vec![messages::delivered_enrollment(channel)], now)
    }

    /// Whether [`Engine::answer`] for this response can only check a code and refuse or accept:
    /// no recovery-code hash (argon2, tens of milliseconds), no email or SMS, no enrollment.
    /// The service runs such answers on the bus threads directly; the rest, like every other
    /// call, on a blocking thread (docs/performance.md). False whenever in doubt. Nothing is
    /// read for a login `caller` did not begin: authorize first.
    pub fn answer_is_quick(&self, caller: Caller, handle: &str, response: &str) -> bool {
        // Codes are 6 to 9 digits; a channel name or a recovery code is anything else, or
        // digits of another length than the token's.
        if !(6..=9).contains(&response.len()) || !response.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        // A fleet's store answers over the network: never on the bus thread.
        if self.store.vault().is_some() {
            return false;
        }
        // One look at the login: whose it is, and whether it asks for a code.
        let looked = self.sessions.peek(handle, |session| {
            (session.caller == caller).then(|| {
                matches!(
                    session.kind,
                    LoginKind::Code { .. } | LoginKind::Sent { .. }
                )
                .then(|| session.request.user.clone())
            })
        });
        let user = match looked {
            // No such login, or another caller's: refused at once, before any record is read.
            None | Some(None) => return true,
            Some(Some(user)) => user,
        };
        let Some(user) = user else {
            return false;
        };
        match self.store.get(&user) {
            Ok(record) => !record.is_some_and(|r| r.may_be_recovery_code(response)),
            Err(_) => false,
        }
    }

    /// Forgets a login waiting at its prompt: the module's conversation ended early. The slot it
    /// held is free again at once instead of at the login's deadline.
    pub fn cancel(&self, caller: Caller, handle: &str) -> Result<()> {
        if self.sessions.cancel(handle, caller)? {
            self.audit.daemon(&format!(
                "a login waiting at its prompt was cancelled by uid {}",
                caller.uid
            ));
        }
        Ok(())
    }

    /// Answers the prompt of the step that carried `handle`.
    pub fn answer(&self, caller: Caller, handle: &str, response: &str, now: u64) -> Result<Step> {
        let send_by = self.send_deadline();
        // Authorize first: only the caller that began the login may answer it.
        self.sessions.check_owner(handle, caller)?;
        if response.len() > MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("answer too long".into()));
        }
        let Some(session) = self.sessions.take(handle, caller, now)? else {
            return Ok(Step::terminal(StepKind::Deny, messages::login_expired()));
        };
        let subject = subject(&session.request, caller);
        let user = session.request.user.as_str();
        // `proven`: the login passed with the device (a TOTP code, a recovery code, an
        // enrollment confirmed): only such a pass gives step-up grace, never a code sent by
        // email or SMS, which a rule with grace may not offer itself.
        let (step, proven) = match session.kind {
            // Refused whatever was typed, but charged like a wrong code, so the throttle
            // reads the same for every name.
            LoginKind::UnknownUser => {
                // Its reply waits for what an account's does: a charge's write (the disk, or
                // the fleet's database), or, throttled, a look at a record that stays as it is
                // (a fleet account's check still asks the database). Charged once that went
                // through: an account's check that cannot reach the database charges nothing.
                let trip = match self.strangers.locked_until(user, now) {
                    None => self.store.paced_write(),
                    Some(_) => self.store.get(user).map(drop),
                };
                let step = match trip {
                    Ok(()) => {
                        let attempt = self.strangers.charge(user, now, &self.config.throttle);
                        self.refuse_without_token(attempt, &subject, "unknown user", now)
                    }
                    Err(Error::Unreachable(why)) => self.unreachable(&subject, &why),
                    Err(e) => return Err(e),
                };
                (step, false)
            }
            LoginKind::NoToken => {
                let step = match self.store.charge_attempt(user, now, &self.config.throttle) {
                    Ok(attempt) => {
                        self.refuse_without_token(attempt, &subject, "no token enrolled", now)
                    }
                    // As for an account with a token (`check_code`).
                    Err(Error::Unreachable(why)) => self.unreachable(&subject, &why),
                    Err(e) => return Err(e),
                };
                (step, false)
            }
            LoginKind::Code { offer } | LoginKind::Sent { offer } => {
                match requested_channel(response, offer) {
                    Some(channel) => {
                        let asked = (channel, Purpose::Login);
                        return self.resend(caller, session.clone(), asked, send_by, now);
                    }
                    None => self.check_code(user, response, offer, &subject, now)?,
                }
            }
            LoginKind::Validate { offer } => match requested_channel(response, offer) {
                Some(channel) => {
                    let asked = (channel, Purpose::Enrollment);
                    return self.resend(caller, session.clone(), asked, send_by, now);
                }
                None => {
                    return self.finish_validation(caller, session.request.clone(), response, now);
                }
            },
            LoginKind::Enroll(ref pending) => (
                self.finish_enrollment_login(user, pending, response, &subject, now)?,
                true,
            ),
        };
        if proven && step.kind == StepKind::Accept as u32 {
            self.grace.record_pass(caller, &session.request, now);
        }
        Ok(step)
    }

    /// Sends a new code on `channel` (typed at the prompt) and asks again, within the same
    /// login: same kind, same deadline. At most [`MAX_RESENDS`] times a login: the person at
    /// the prompt decides how often this asks again, and a login that kept asking would only
    /// end at pam_kron's limit of prompts. Past the limit the login is refused.
    pub(super) fn resend(
        &self,
        caller: Caller,
        mut session: LoginSession,
        (channel, purpose): (Channel, Purpose),
        send_by: SendWait,
        now: u64,
    ) -> Result<Step> {
        let subject = subject(&session.request, caller);
        if session.resends >= MAX_RESENDS {
            self.audit.record(
                "resend-limited",
                &subject,
                &format!(
                    "{} asked for more than {MAX_RESENDS} times",
                    channel.as_str()
                ),
            );
            return Ok(Step::terminal(StepKind::Deny, messages::too_many_resends()));
        }
        session.resends += 1;
        let record = self.store.get(&session.request.user)?;
        let sent = self.send_code(&subject, record.as_ref(), channel, purpose, send_by, now)?;
        let told = sent.message(&self.config.contact, now);
        Ok(self.prompt(session, vec![told], now))
    }

    /// The sent code that proves the contact: on success the enrollment (QR) follows in the
    /// same login.
    pub(super) fn finish_validation(
        &self,
        caller: Caller,
        request: LoginRequest,
        response: &str,
        now: u64,
    ) -> Result<Step> {
        let subject = subject(&request, caller);
        match self.check_sent_code(&request.user, Purpose::Enrollment, response, now)? {
            SentCheck::Throttled { until } => {
                self.audit
                    .record("throttled", &subject, "enrollment validation");
                Ok(throttled(until, now))
            }
            SentCheck::Refused(why) => {
                self.audit.record("enroll-rejected", &subject, why);
                Ok(Step::terminal(
                    StepKind::Deny,
                    messages::rejected(&self.config.contact),
                ))
            }
            SentCheck::Accepted => {
                self.audit.record("validated", &subject, "enrollment");
                let record = self.store.get(&request.user)?;
                let mut step = self.begin_enrollment_login(caller, request, record, now)?;
                step.messages.insert(0, messages::code_accepted());
                Ok(step)
            }
        }
    }

    /// Checks the answer of a login whose rule offers codes by `offer` (none: only the token's
    /// codes pass, whatever was sent during another login). With the step, whether it passed
    /// with the device or a recovery code (not a sent code).
    pub(super) fn check_code(
        &self,
        user: &str,
        response: &str,
        offer: Channels,
        subject: &Subject<'_>,
        now: u64,
    ) -> Result<(Step, bool)> {
        let sent = (!offer.is_empty()).then_some(Expected {
            purpose: Purpose::Login,
            channels: offer,
        });
        let (verdict, checked) = match self.verify(user, response, sent, now) {
            Ok(checked) => checked,
            Err(Error::Unreachable(why)) => return Ok((self.unreachable(subject, &why), false)),
            Err(e) => return Err(e),
        };
        self.audit
            .record(verdict.event(), subject, &checked.note(verdict.detail()));
        let proven = matches!(
            verdict,
            Verdict::Accepted | Verdict::AcceptedRecovery { .. }
        );
        let step = match verdict {
            Verdict::Accepted | Verdict::AcceptedSent => Step::terminal(StepKind::Accept, vec![]),
            Verdict::AcceptedRecovery { left } => {
                Step::terminal(StepKind::Accept, messages::recovery_used(left))
            }
            Verdict::Throttled { until } => throttled(until, now),
            Verdict::Replayed => Step::terminal(StepKind::Deny, messages::replayed()),
            Verdict::Wrong | Verdict::NoToken => {
                Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact))
            }
        };
        Ok((step, proven))
    }

    /// A fleet host that can reach neither its database nor an offline pack of the user:
    /// refused (PAM_AUTHINFO_UNAVAIL), and audited like every decision.
    fn unreachable(&self, subject: &Subject<'_>, why: &str) -> Step {
        self.audit.record("unavailable", subject, why);
        Step::terminal(StepKind::Unavailable, messages::unreachable())
    }

    pub(super) fn refuse_without_token(
        &self,
        attempt: Attempt,
        subject: &Subject<'_>,
        why: &str,
        now: u64,
    ) -> Step {
        match attempt {
            Attempt::Throttled { until } => {
                self.audit.record("throttled", subject, why);
                throttled(until, now)
            }
            Attempt::Allowed => {
                self.audit.record("rejected", subject, why);
                Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact))
            }
        }
    }

    pub(super) fn begin_enrollment_login(
        &self,
        caller: Caller,
        request: LoginRequest,
        record: Option<UserRecord>,
        now: u64,
    ) -> Result<Step> {
        let subject = subject(&request, caller);
        // Show the enrollment already waiting (same QR, same deadline) rather than a new one,
        // so a person who mistyped the code can simply try again.
        // Only an enrollment begun at a login is shown again: one an admin made with kronctl
        // may be on its way to the person, and must not be shown to whoever logs in first.
        let waiting = record
            .as_ref()
            .and_then(|r| r.live_pending(now))
            .filter(|p| p.at_login);
        let shown_again = match waiting {
            Some(pending) => self
                .pending_secret(&request.user, pending, now)?
                .map(|secret| (pending.clone(), secret)),
            None => None,
        };
        let (pending, secret) = match shown_again {
            Some(again) => again,
            None => {
                let (pending, secret) = self.new_pending(&request.user, now, true)?;
                if !self.save_new_pending(&request.user, &pending, &secret)? {
                    // A token was confirmed meanwhile: start over as an ordinary login.
                    return self.begin_login(caller, request, now);
                }
                self.audit.record("enroll-started", &subject, "at login");
                (pending, secret)
            }
        };
        let uri = self.otpauth_uri(&request.user, &secret, pending.token.params)?;
        let qr = kron_common::qr::terminal(&uri)
            .map_err(|e| Error::System(format!("QR rendering failed: {e}")))?;
        let shown = messages::enrollment(&qr, &totp::base32(&secret), pending.expires, now);
        // The session outlives the enrollment if need be, so a late answer is told that the
        // setup expired rather than that the login took too long.
        let deadline = self.login_deadline(now);
        let session = LoginSession::new(caller, request, LoginKind::Enroll(pending), deadline);
        Ok(self.prompt(session, shown, now))
    }

    pub(super) fn finish_enrollment_login(
        &self,
        user: &str,
        pending: &Pending,
        response: &str,
        subject: &Subject<'_>,
        now: u64,
    ) -> Result<Step> {
        Ok(match self.check_pending(user, pending, response, now)? {
            PendingCheck::Throttled { until } => {
                self.audit.record("throttled", subject, "enrollment");
                throttled(until, now)
            }
            PendingCheck::Wrong => {
                self.audit.record("enroll-rejected", subject, "wrong code");
                Step::terminal(
                    StepKind::Deny,
                    messages::enrollment_wrong_code(pending.expires, now),
                )
            }
            PendingCheck::Done(ConfirmOutcome::Confirmed) => {
                self.audit.record("enrolled", subject, "at login");
                Step::terminal(StepKind::Accept, messages::enrolled())
            }
            PendingCheck::Done(ConfirmOutcome::Expired) => {
                self.audit
                    .record("enroll-rejected", subject, "enrollment expired");
                Step::terminal(StepKind::Deny, messages::enrollment_expired())
            }
            PendingCheck::Done(ConfirmOutcome::NoPending | ConfirmOutcome::AlreadyEnrolled) => {
                self.audit
                    .record("enroll-rejected", subject, "enrollment replaced meanwhile");
                Step::terminal(StepKind::Deny, messages::enrollment_replaced())
            }
        })
    }

    pub(super) fn prompt(
        &self,
        session: LoginSession,
        messages: Vec<kron_proto::Message>,
        now: u64,
    ) -> Step {
        match self.sessions.insert(session, now) {
            Some(handle) => Step {
                kind: StepKind::Prompt as u32,
                messages,
                prompt: messages::CODE_PROMPT.into(),
                echo: false,
                handle,
            },
            None => {
                self.audit
                    .daemon("too many logins in progress; refusing new ones");
                Step::terminal(StepKind::Unavailable, messages::busy())
            }
        }
    }

    pub(super) fn login_deadline(&self, now: u64) -> u64 {
        now.saturating_add(self.config.login_timeout)
    }
}

/// The fallback channels of the rule; none for unknown accounts.
fn fallback_of(policy: Option<Policy>) -> Channels {
    policy.map_or_else(Channels::default, |p| p.fallback)
}

/// An enrollment sent to the user that still waits for its confirming code.
fn delivered_pending(record: Option<&UserRecord>, now: u64) -> Option<Pending> {
    record
        .and_then(|r| r.live_pending(now))
        .filter(|p| p.delivered.is_some())
        .cloned()
}

/// The channel a person typed at the prompt ("email", "SMS"), if it is on offer.
fn requested_channel(response: &str, offer: Channels) -> Option<Channel> {
    Channel::parse(&response.trim().to_ascii_lowercase()).filter(|&c| offer.contains(c))
}

/// The PAM items of a request, once its user name was checked and the caller authorized.
fn validate_fields(request: &LoginRequest) -> Result<()> {
    for (name, value) in [
        ("service", &request.service),
        ("rhost", &request.rhost),
        ("tty", &request.tty),
    ] {
        if value.len() > MAX_FIELD_LEN {
            return Err(Error::InvalidArgument(format!(
                "{name} longer than {MAX_FIELD_LEN} bytes"
            )));
        }
    }
    Ok(())
}
