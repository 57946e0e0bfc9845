//! The daemon's core: login conversations and token management, independent of D-Bus.
//! Every entry point takes the caller's uid (as the bus reported it) and the current time, so
//! unit tests drive it with a fixed clock and fake accounts.

use crate::audit::{Audit, Subject};
use crate::authz::Caller;
use crate::crypto::SecretKey;
use crate::delivery::{Channel, Deliver};
use crate::error::{Error, Result};
use crate::grace::GraceLedger;
use crate::messages;
use crate::outbound::{Sent, SentCheck};
use crate::policy::{Decision, decide};
use crate::record::{Attempt, ConfirmOutcome, Pending, StepOutcome, Token, UserRecord};
use crate::sent::{CodeCheck, Purpose};
use crate::sessions::{LoginKind, LoginSession, Sessions};
use crate::store::{Durable, Store};
use crate::strangers::{SelfServiceLimiter, StrangerThrottle};
use crate::totp::{self, TokenParams};
use kron_common::config::Config;
use kron_common::contact::Channels;
use kron_common::rules::{Policy, policy_for};
use kron_common::users::Directory;
use kron_proto::{Enrollment, MAX_FIELD_LEN, MAX_RESPONSE_LEN, Step, StepKind, UserStatus};

pub struct Engine {
    pub config: Config,
    pub(crate) store: Box<dyn Store>,
    pub(crate) key: SecretKey,
    pub(crate) directory: Box<dyn Directory>,
    pub(crate) audit: Audit,
    sessions: Sessions,
    pub(crate) grace: GraceLedger,
    strangers: StrangerThrottle,
    pub(crate) limiter: SelfServiceLimiter,
    pub(crate) hostname: String,
    pub(crate) delivery: Box<dyn Deliver>,
}

/// The outcome of checking a confirming code.
enum PendingCheck {
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

/// What PAM told the module about this login.
#[derive(Debug, Clone, Default)]
pub struct LoginRequest {
    pub user: String,
    pub service: String,
    pub rhost: String,
    pub tty: String,
}

impl Engine {
    pub fn new(
        config: Config,
        store: Box<dyn Store>,
        key: SecretKey,
        directory: Box<dyn Directory>,
        audit: Audit,
        hostname: String,
        delivery: Box<dyn Deliver>,
    ) -> Engine {
        Engine {
            config,
            store,
            key,
            directory,
            audit,
            sessions: Sessions::default(),
            grace: GraceLedger::default(),
            strangers: StrangerThrottle::default(),
            limiter: SelfServiceLimiter::default(),
            hostname,
            delivery,
        }
    }

    // ---- login conversation -------------------------------------------------------------

    /// First step of a login: decides what it needs and asks for a code, shows an enrollment,
    /// skips or denies.
    pub fn begin_login(&self, caller: Caller, mut request: LoginRequest, now: u64) -> Result<Step> {
        validate_request(&request)?;
        let account = self.directory.by_name(&request.user)?;
        caller.may_log_in_as(account.as_ref())?;
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
            None => None,
        };
        let record = match account {
            Some(_) => self.store.get(&request.user)?,
            None => None,
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
                return self.begin_without_token(caller, request, policy, record, now);
            }
            Decision::UnknownUser => match self.strangers.locked_until(&request.user, now) {
                Some(until) => {
                    self.audit.record("throttled", &subject, "unknown user");
                    return Ok(throttled(until, now));
                }
                None => LoginKind::UnknownUser,
            },
            Decision::Enroll => {
                return self.begin_enroll_mode(caller, request, policy, record, now);
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
    fn begin_without_token(
        &self,
        caller: Caller,
        request: LoginRequest,
        policy: Option<Policy>,
        record: Option<UserRecord>,
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
        self.begin_sent(caller, request, record.as_ref(), offer, Purpose::Login, now)
    }

    /// Mode `enroll` without a token: a delivered enrollment waiting for its code, else the
    /// contact is proved first if the rule asks for it, else the QR code right away.
    fn begin_enroll_mode(
        &self,
        caller: Caller,
        request: LoginRequest,
        policy: Option<Policy>,
        record: Option<UserRecord>,
        now: u64,
    ) -> Result<Step> {
        if let Some(pending) = delivered_pending(record.as_ref(), now) {
            return Ok(self.begin_delivered(caller, request, pending, now));
        }
        let wanted = policy.map_or_else(Channels::default, |p| p.validate_enrollment);
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
            offer,
            Purpose::Enrollment,
            now,
        )
    }

    /// Prompts for a sent code for `purpose`: the one still live if there is one, else a new
    /// one on the first channel of `offer` that takes it.
    fn begin_sent(
        &self,
        caller: Caller,
        request: LoginRequest,
        record: Option<&UserRecord>,
        offer: Channels,
        purpose: Purpose,
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
                    let sent = self.send_code(&subject, record, channel, purpose, now)?;
                    let done = matches!(sent, Sent::Done { .. });
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
            Sent::Done { .. } => {}
            Sent::Spent { .. } => {
                self.audit
                    .record("throttled", &subject, "send budget spent");
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
    fn begin_delivered(
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
    /// call, on a blocking thread (docs/performance.md). False whenever in doubt.
    pub fn answer_is_quick(&self, handle: &str, response: &str) -> bool {
        // Codes are 6 to 9 digits; a channel name or a recovery code is anything else, or
        // digits of another length than the token's.
        if !(6..=9).contains(&response.len()) || !response.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Some(user) = self.sessions.peek(handle, |session| {
            matches!(
                session.kind,
                LoginKind::Code { .. } | LoginKind::Sent { .. }
            )
            .then(|| session.request.user.clone())
        }) else {
            // No such login: refused at once.
            return true;
        };
        let Some(user) = user else {
            return false;
        };
        match self.store.get(&user) {
            Ok(record) => !record.is_some_and(|r| r.may_be_recovery_code(response)),
            Err(_) => false,
        }
    }

    /// Resolves once store write number `write` ([`crate::store::own_writes`]) and all before
    /// it are on the device; replies wait for it.
    pub fn durable_through(&self, write: u64) -> Durable {
        self.store.durable_through(write)
    }

    /// Answers the prompt of the step that carried `handle`.
    pub fn answer(&self, caller: Caller, handle: &str, response: &str, now: u64) -> Result<Step> {
        if response.len() > MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("answer too long".into()));
        }
        let Some(session) = self.sessions.take(handle, caller, now)? else {
            return Ok(Step::terminal(StepKind::Deny, messages::login_expired()));
        };
        let subject = subject(&session.request, caller);
        let user = session.request.user.as_str();
        let step = match session.kind {
            // Refused whatever was typed, but charged like a wrong code, so the throttle
            // reads the same for every name.
            LoginKind::UnknownUser => {
                let attempt = self.strangers.charge(user, now, &self.config.throttle);
                self.refuse_without_token(attempt, &subject, "unknown user", now)
            }
            LoginKind::NoToken => {
                let attempt = self
                    .store
                    .charge_attempt(user, now, &self.config.throttle)?;
                self.refuse_without_token(attempt, &subject, "no token enrolled", now)
            }
            LoginKind::Code { offer } | LoginKind::Sent { offer } => {
                match requested_channel(response, offer) {
                    Some(channel) => {
                        return self.resend(caller, session.clone(), channel, Purpose::Login, now);
                    }
                    None => self.check_code(user, response, &subject, now)?,
                }
            }
            LoginKind::Validate { offer } => match requested_channel(response, offer) {
                Some(channel) => {
                    return self.resend(caller, session.clone(), channel, Purpose::Enrollment, now);
                }
                None => {
                    return self.finish_validation(caller, session.request.clone(), response, now);
                }
            },
            LoginKind::Enroll(ref pending) => {
                self.finish_enrollment_login(user, pending, response, &subject, now)?
            }
        };
        if step.kind == StepKind::Accept as u32 {
            self.grace.record_pass(caller, &session.request, now);
        }
        Ok(step)
    }

    /// Sends a new code on `channel` (typed at the prompt) and asks again, within the same
    /// login: same kind, same deadline.
    fn resend(
        &self,
        caller: Caller,
        session: LoginSession,
        channel: Channel,
        purpose: Purpose,
        now: u64,
    ) -> Result<Step> {
        let record = self.store.get(&session.request.user)?;
        let sent = self.send_code(
            &subject(&session.request, caller),
            record.as_ref(),
            channel,
            purpose,
            now,
        )?;
        let told = sent.message(&self.config.contact, now);
        Ok(self.prompt(session, vec![told], now))
    }

    /// The sent code that proves the contact: on success the enrollment (QR) follows in the
    /// same login.
    fn finish_validation(
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

    fn check_code(
        &self,
        user: &str,
        response: &str,
        subject: &Subject<'_>,
        now: u64,
    ) -> Result<Step> {
        let verdict = self.verify(user, response, Some(Purpose::Login), now)?;
        self.audit
            .record(verdict.event(), subject, verdict.detail());
        Ok(match verdict {
            Verdict::Accepted | Verdict::AcceptedSent => Step::terminal(StepKind::Accept, vec![]),
            Verdict::AcceptedRecovery { left } => {
                Step::terminal(StepKind::Accept, messages::recovery_used(left))
            }
            Verdict::Throttled { until } => throttled(until, now),
            Verdict::Replayed => Step::terminal(StepKind::Deny, messages::replayed()),
            Verdict::Wrong | Verdict::NoToken => {
                Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact))
            }
        })
    }

    fn refuse_without_token(
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

    /// Checks a code (or a recovery code, or with `sent` a code sent for that purpose) for
    /// `user`: charges the attempt, and accepts the matching step at most once.
    pub(crate) fn verify(
        &self,
        user: &str,
        response: &str,
        sent: Option<Purpose>,
        now: u64,
    ) -> Result<Verdict> {
        let record = self.store.get(user)?.unwrap_or_default();
        // The common case, a TOTP code, is one atomic store change: the charge and the step.
        if let Some(step) = self.totp_only(user, &record, response, sent, now)? {
            let (attempt, outcome) =
                self.store
                    .charge_and_accept(user, step, now, &self.config.throttle)?;
            return Ok(match (attempt, outcome) {
                (Attempt::Throttled { until }, _) => Verdict::Throttled { until },
                (Attempt::Allowed, outcome) => step_verdict(outcome),
            });
        }
        if let Attempt::Throttled { until } =
            self.store
                .charge_attempt(user, now, &self.config.throttle)?
        {
            return Ok(Verdict::Throttled { until });
        }
        // The charge is durable before the reply, whatever the check says (service.rs).
        self.verify_charged(user, response, sent, now)
    }

    /// `Some(the step the code matches, if any)` when `response` can only be a TOTP code of
    /// `record`'s token; `None` when a sent code or a recovery code may be meant, or there is no
    /// token, which [`Engine::verify_charged`] sorts out.
    fn totp_only(
        &self,
        user: &str,
        record: &UserRecord,
        response: &str,
        sent: Option<Purpose>,
        now: u64,
    ) -> Result<Option<Option<u64>>> {
        let Some(token) = &record.token else {
            return Ok(None);
        };
        if sent.is_some_and(|purpose| record.outbox.live(purpose, now).is_some())
            || record.may_be_recovery_code(response)
        {
            return Ok(None);
        }
        self.totp_step(user, token, response, now, record.last_step)
            .map(Some)
    }

    /// The step `response` matches for `token`: the first one after `used` if there is one.
    fn totp_step(
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

    fn verify_charged(
        &self,
        user: &str,
        response: &str,
        sent: Option<Purpose>,
        now: u64,
    ) -> Result<Verdict> {
        let record = self.store.get(user)?.unwrap_or_default();
        // A code sent by email or SMS (fallback) is tried first: it is the only thing a user
        // without a token can pass with.
        if let Some(purpose) = sent.filter(|&p| record.outbox.live(p, now).is_some())
            && self.take_sent_code(user, purpose, response, now)? == CodeCheck::Accepted
        {
            return Ok(Verdict::AcceptedSent);
        }
        let Some(token) = record.token.clone() else {
            return Ok(Verdict::NoToken);
        };
        if let (Some(set), Some(code)) = (
            &record.recovery,
            crate::recovery::candidate(response, token.params.digits),
        ) {
            let hash = crate::recovery::hash(&code, &set.salt).map_err(Error::System)?;
            return Ok(match self.store.use_recovery(user, &hash, now)? {
                Some(left) => Verdict::AcceptedRecovery { left },
                None => Verdict::Wrong,
            });
        }
        let outcome = match self.totp_step(user, &token, response, now, record.last_step)? {
            None => None,
            Some(step) => Some(self.store.accept_step(user, step, now)?),
        };
        Ok(step_verdict(outcome))
    }

    fn begin_enrollment_login(
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
        let pending = match waiting {
            Some(pending) => pending.clone(),
            None => {
                let pending = self.new_pending(&request.user, now, true)?;
                if self
                    .store
                    .save_pending(&request.user, pending.clone())?
                    .is_err()
                {
                    // A token was confirmed meanwhile: start over as an ordinary login.
                    return self.begin_login(caller, request, now);
                }
                self.audit.record("enroll-started", &subject, "at login");
                pending
            }
        };
        let secret = self.key.open(&request.user, &pending.token.secret)?;
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

    fn finish_enrollment_login(
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

    /// Checks a confirming code against `pending`, charged against the throttle like any
    /// code, and saves the token if it matches.
    fn check_pending(
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
        let secret = self.key.open(user, &pending.token.secret)?;
        let params = pending.token.params;
        Ok(
            match totp::matching_step(&secret, params, self.config.totp.skew, code, now, None) {
                None => PendingCheck::Wrong,
                Some(step) => PendingCheck::Done(self.store.confirm(user, pending, step, now)?),
            },
        )
    }

    fn prompt(&self, session: LoginSession, messages: Vec<kron_proto::Message>, now: u64) -> Step {
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

    fn login_deadline(&self, now: u64) -> u64 {
        now.saturating_add(self.config.login_timeout)
    }

    // ---- management ----------------------------------------------------------------------

    /// Starts (or restarts) an enrollment for `user` ("" = the caller). `code` is the
    /// validation code where the caller must prove the contact first (docs/delivery.md).
    pub fn enroll(&self, caller: Caller, user: &str, code: &str, now: u64) -> Result<Enrollment> {
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_manage(&account, &self.config, &*self.directory)?;
        self.limiter.spend(caller, now)?;
        if self.store.get(&user)?.is_some_and(|r| r.token.is_some()) {
            return Err(crate::outbound::already_enrolled(&user));
        }
        self.check_enrollment_validation(caller, &account, code, now)?;
        let pending = self.new_pending(&user, now, false)?;
        let secret = self.key.open(&user, &pending.token.secret)?;
        let uri = self.otpauth_uri(&user, &secret, pending.token.params)?;
        if self.store.save_pending(&user, pending.clone())?.is_err() {
            return Err(Error::Conflict(format!(
                "{user} already has a confirmed token"
            )));
        }
        self.audit.record(
            "enroll-started",
            &Subject {
                user: &user,
                caller_uid: caller.uid,
                ..Subject::default()
            },
            "kronctl",
        );
        Ok(Enrollment {
            user,
            uri,
            secret: totp::base32(&secret),
            expires: pending.expires,
        })
    }

    /// Confirms the pending enrollment of `user` ("" = the caller) with a code.
    pub fn confirm(&self, caller: Caller, user: &str, code: &str, now: u64) -> Result<()> {
        if code.len() > MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("code too long".into()));
        }
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_manage(&account, &self.config, &*self.directory)?;
        self.limiter.spend(caller, now)?;
        let record = self.store.get(&user)?.unwrap_or_default();
        if record.token.is_some() {
            return Err(Error::Conflict(format!(
                "{user} already has a confirmed token"
            )));
        }
        let Some(pending) = record.live_pending(now).cloned() else {
            return Err(Error::NotFound(format!(
                "no pending enrollment for {user} (or it expired); run `kronctl enroll` again"
            )));
        };
        let subject = Subject {
            user: &user,
            caller_uid: caller.uid,
            ..Subject::default()
        };
        match self.check_pending(&user, &pending, code, now)? {
            PendingCheck::Throttled { until } => Err(Error::Throttled { until }),
            PendingCheck::Wrong => {
                self.audit.record("enroll-rejected", &subject, "wrong code");
                Err(Error::Rejected(
                    "wrong code; check the device clock and try the next code".into(),
                ))
            }
            PendingCheck::Done(ConfirmOutcome::Confirmed) => {
                self.audit.record("enrolled", &subject, "kronctl");
                Ok(())
            }
            PendingCheck::Done(ConfirmOutcome::Expired) => Err(Error::Rejected(
                "the enrollment expired; run `kronctl enroll` again".into(),
            )),
            PendingCheck::Done(ConfirmOutcome::NoPending) => Err(Error::Conflict(
                "the enrollment was replaced meanwhile; use the newest QR code".into(),
            )),
            PendingCheck::Done(ConfirmOutcome::AlreadyEnrolled) => Err(Error::Conflict(format!(
                "{user} already has a confirmed token"
            ))),
        }
    }

    /// Reports `user` ("" = the caller).
    pub fn status(&self, caller: Caller, user: &str, now: u64) -> Result<UserStatus> {
        let user = self.resolve_target(caller, user)?;
        if !caller.is_admin(&self.config, &*self.directory)? {
            let account = self.directory.by_name(&user)?;
            if account.is_none_or(|a| a.uid != caller.uid) {
                return Err(Error::AccessDenied(
                    "only root or the admin group may see other users".into(),
                ));
            }
        }
        let record = self.store.get(&user)?.unwrap_or_default();
        Ok(self.status_of(user, &record, now))
    }

    /// Reports every stored user (admin).
    pub fn list(&self, caller: Caller, now: u64) -> Result<Vec<UserStatus>> {
        caller.require_admin(&self.config, &*self.directory)?;
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|(user, record)| self.status_of(user, &record, now))
            .collect())
    }

    /// Deletes everything stored for `user` (admin).
    pub fn reset(&self, caller: Caller, user: &str) -> Result<bool> {
        let user = &self.managed_target(caller, user)?;
        let existed = self.store.reset(user)?;
        self.grace.forget(user);
        self.audit.record(
            "reset",
            &Subject {
                user,
                caller_uid: caller.uid,
                ..Subject::default()
            },
            if existed { "" } else { "nothing stored" },
        );
        Ok(existed)
    }

    /// Clears the throttle of `user` (admin).
    pub fn unlock(&self, caller: Caller, user: &str) -> Result<bool> {
        let user = &self.managed_target(caller, user)?;
        let cleared = self.store.unlock(user)?;
        self.audit.record(
            "unlocked",
            &Subject {
                user,
                caller_uid: caller.uid,
                ..Subject::default()
            },
            "",
        );
        Ok(cleared)
    }

    // ---- helpers -------------------------------------------------------------------------

    /// Logs an internal failure (its text holds no code or secret).
    pub fn log_failure(&self, error: &Error) {
        self.audit.daemon(&format!("request failed: {error}"));
    }

    /// Logs a daemon-level event (start, stop).
    pub fn log_event(&self, message: &str) {
        self.audit.daemon(message);
    }

    /// "" means the caller; anything else must be a well-formed user name.
    pub(crate) fn resolve_target(&self, caller: Caller, user: &str) -> Result<String> {
        if user.is_empty() {
            return self
                .directory
                .name_of(caller.uid)?
                .ok_or_else(|| Error::NotFound(format!("uid {} has no user name", caller.uid)));
        }
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        // The account's own name when NSS knows it (see begin_login); as given otherwise.
        Ok(self
            .directory
            .by_name(user)?
            .map_or_else(|| user.to_owned(), |account| account.name))
    }

    /// The target of an admin operation (reset, unlock): admins only, and only root may act on
    /// root or on another admin. Names NSS no longer knows (deleted users) are allowed.
    pub(crate) fn managed_target(&self, caller: Caller, user: &str) -> Result<String> {
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        caller.require_admin(&self.config, &*self.directory)?;
        match self.directory.by_name(user)? {
            Some(account) => {
                caller.may_manage(&account, &self.config, &*self.directory)?;
                Ok(account.name)
            }
            None => Ok(user.to_owned()),
        }
    }

    pub(crate) fn existing_account(&self, user: &str) -> Result<kron_common::users::Account> {
        self.directory
            .by_name(user)?
            .ok_or_else(|| Error::NotFound(format!("no such user: {user}")))
    }

    pub(crate) fn new_pending(&self, user: &str, now: u64, at_login: bool) -> Result<Pending> {
        let secret =
            totp::new_secret().map_err(|e| Error::System(format!("no randomness: {e}")))?;
        Ok(Pending {
            token: Token {
                params: TokenParams::from(&self.config.totp),
                secret: self.key.seal(user, &secret)?,
                created: now,
            },
            expires: now.saturating_add(self.config.enroll_window),
            at_login,
            delivered: None,
        })
    }

    pub(crate) fn otpauth_uri(
        &self,
        user: &str,
        secret: &[u8],
        params: TokenParams,
    ) -> Result<String> {
        let account = format!("{user}@{}", self.hostname);
        totp::otpauth_uri(secret, params, &self.config.issuer, &account).map_err(Error::System)
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

/// What a TOTP check came to: no matching step, or what the store said of the step.
fn step_verdict(outcome: Option<StepOutcome>) -> Verdict {
    match outcome {
        None => Verdict::Wrong,
        Some(StepOutcome::Accepted) => Verdict::Accepted,
        Some(StepOutcome::Replayed) => Verdict::Replayed,
        Some(StepOutcome::NoToken) => Verdict::NoToken,
    }
}

/// The refusal for too many failed attempts: PAM_MAXTRIES, so applications stop retrying.
fn throttled(until: u64, now: u64) -> Step {
    Step::terminal(StepKind::Throttled, messages::throttled(until, now))
}

fn validate_request(request: &LoginRequest) -> Result<()> {
    kron_proto::validate_user(&request.user).map_err(Error::InvalidArgument)?;
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

fn subject(request: &LoginRequest, caller: Caller) -> Subject<'_> {
    Subject {
        user: &request.user,
        service: &request.service,
        rhost: &request.rhost,
        tty: &request.tty,
        caller_uid: caller.uid,
    }
}

impl Engine {
    fn status_of(&self, user: String, record: &UserRecord, now: u64) -> UserStatus {
        // The stored address or the pattern's, whether or not the channel is configured.
        let masked = |channel| {
            self.config
                .contacts
                .address(&record.contact, &user, channel)
                .map(|a| kron_common::contact::mask(channel, &a))
                .unwrap_or_default()
        };
        let (email, phone) = (masked(Channel::Email), masked(Channel::Sms));
        let locked = record.is_locked(now);
        UserStatus {
            enrolled: record.token.is_some(),
            pending: record.token.is_none() && record.live_pending(now).is_some(),
            locked,
            locked_until: if locked { record.next_attempt } else { 0 },
            failures: record.failures,
            last_used: record.last_used,
            recovery_codes: record
                .recovery
                .as_ref()
                .map_or(0, |set| set.hashes.len() as u32),
            email,
            phone,
            user,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::SledStore;
    use kron_common::config::{GroupRule, Mode};
    use kron_common::users::fake::FakeDirectory;

    pub(crate) const NOW: u64 = 1_800_000_000;
    pub(crate) const ROOT: Caller = Caller::new(0);
    const ALICE: Caller = Caller::new(1001);
    const BOB: Caller = Caller::new(1002);

    pub(crate) struct Fixture {
        pub(crate) engine: Engine,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        /// The engine, keeping the store directory alive for the rest of the test process.
        pub(crate) fn into_engine(self) -> Engine {
            std::mem::forget(self._dir);
            self.engine
        }
    }

    pub(crate) fn fixture(config: Config) -> Fixture {
        fixture_sending(config, std::sync::Arc::default())
    }

    /// A fixture whose email and SMS go to `delivery`.
    pub(crate) fn fixture_sending(
        config: Config,
        delivery: std::sync::Arc<crate::delivery::fake::FakeDelivery>,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let directory = FakeDirectory::default()
            .with_user("root", 0, &["root"])
            .with_user("alice", 1001, &["wheel"])
            .with_user("bob", 1002, &["users"])
            .with_user("admin", 1003, &["kron-admin"]);
        let engine = Engine::new(
            config,
            Box::new(SledStore::open(&dir.path().join("store")).unwrap()),
            SecretKey::from_bytes(&[9; 32]),
            Box::new(directory),
            Audit::new(false),
            "host".into(),
            Box::new(delivery),
        );
        Fixture { engine, _dir: dir }
    }

    pub(crate) fn login(user: &str, service: &str) -> LoginRequest {
        LoginRequest {
            user: user.into(),
            service: service.into(),
            rhost: "192.0.2.1".into(),
            tty: "pts/1".into(),
        }
    }

    pub(crate) fn kind(step: &Step) -> StepKind {
        step.validate().unwrap()
    }

    /// Enrolls `user` at NOW - 300 and returns the base32 secret.
    pub(crate) fn enroll(engine: &Engine, user: &str) -> Vec<u8> {
        let enrollment = engine.enroll(ROOT, user, "", NOW - 300).unwrap();
        let secret = totp_rs::Secret::try_from_base32(&enrollment.secret)
            .unwrap()
            .as_bytes()
            .to_vec();
        engine
            .confirm(ROOT, user, &code(&secret, NOW - 300), NOW - 300)
            .unwrap();
        secret
    }

    pub(crate) fn code(secret: &[u8], at: u64) -> String {
        totp::code_at(
            secret,
            TokenParams::from(&kron_common::config::TotpConfig::default()),
            at,
        )
    }

    fn attempt(engine: &Engine, user: &str, answer: &str, now: u64) -> Step {
        let step = engine.begin_login(ROOT, login(user, "sshd"), now).unwrap();
        if kind(&step) != StepKind::Prompt {
            return step;
        }
        engine.answer(ROOT, &step.handle, answer, now).unwrap()
    }

    #[test]
    fn right_code_accepted_once_wrong_refused() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let secret = enroll(&f.engine, "alice");
        assert_eq!(
            kind(&attempt(&f.engine, "alice", "000000", NOW)),
            StepKind::Deny
        );
        let good = code(&secret, NOW);
        assert_eq!(
            kind(&attempt(&f.engine, "alice", &good, NOW)),
            StepKind::Accept
        );
        let replay = attempt(&f.engine, "alice", &good, NOW + 5);
        assert_eq!(kind(&replay), StepKind::Deny);
        assert!(replay.messages[0].text.contains("already used"));
        // The code of the step before is dead too once a later step was used.
        assert_eq!(
            kind(&attempt(&f.engine, "alice", &code(&secret, NOW - 30), NOW)),
            StepKind::Deny
        );
        assert_eq!(
            kind(&attempt(
                &f.engine,
                "alice",
                &code(&secret, NOW + 30),
                NOW + 30
            )),
            StepKind::Accept
        );
    }

    #[test]
    fn throttling_refuses_even_right_codes_until_unlock() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let secret = enroll(&f.engine, "alice");
        for _ in 0..3 {
            assert_eq!(
                kind(&attempt(&f.engine, "alice", "000000", NOW)),
                StepKind::Deny
            );
        }
        let refused = attempt(&f.engine, "alice", &code(&secret, NOW), NOW + 1);
        assert_eq!(kind(&refused), StepKind::Throttled);
        assert!(
            refused.messages[0]
                .text
                .contains("Too many failed attempts"),
            "{refused:?}"
        );
        assert!(f.engine.status(ROOT, "alice", NOW + 1).unwrap().locked);
        assert!(
            f.engine.unlock(Caller::new(1003), "alice").unwrap(),
            "admin group may unlock"
        );
        assert_eq!(
            kind(&attempt(
                &f.engine,
                "alice",
                &code(&secret, NOW + 1),
                NOW + 1
            )),
            StepKind::Accept
        );
        // Backoff ends by itself too.
        for _ in 0..3 {
            attempt(&f.engine, "alice", "000000", NOW + 100);
        }
        assert_eq!(
            kind(&attempt(
                &f.engine,
                "alice",
                &code(&secret, NOW + 130),
                NOW + 130
            )),
            StepKind::Accept
        );
    }

    #[test]
    fn step_up_grace_stays_in_its_session_terminal_and_window() {
        let rule = |grace| GroupRule {
            name: "*".into(),
            mode: Mode::Require,
            services: Some(vec!["sudo".into()]),
            grace,
            validate_enrollment: None,
            fallback: None,
        };
        let config = Config {
            default_mode: Mode::Require,
            groups: vec![rule(300)],
            ..Config::default()
        };
        let f = fixture(config);
        let e = &f.engine;
        let secret = enroll(e, "alice");
        let sudo = |tty: &str| LoginRequest {
            user: "alice".into(),
            service: "sudo".into(),
            rhost: String::new(),
            tty: tty.into(),
        };
        let here = Caller {
            uid: 0,
            session: Some(42),
        };
        let step = e.begin_login(here, sudo("/dev/pts/1"), NOW).unwrap();
        assert_eq!(kind(&step), StepKind::Prompt, "the first sudo asks");
        assert_eq!(
            kind(
                &e.answer(here, &step.handle, &code(&secret, NOW), NOW)
                    .unwrap()
            ),
            StepKind::Accept
        );
        assert_eq!(
            kind(&e.begin_login(here, sudo("/dev/pts/1"), NOW + 299).unwrap()),
            StepKind::Accept,
            "within grace"
        );
        assert_eq!(
            kind(&e.begin_login(here, sudo("/dev/pts/1"), NOW + 300).unwrap()),
            StepKind::Prompt,
            "window over"
        );
        assert_eq!(
            kind(&e.begin_login(here, sudo("/dev/pts/2"), NOW + 1).unwrap()),
            StepKind::Prompt,
            "other terminal"
        );
        let other_session = Caller {
            uid: 0,
            session: Some(43),
        };
        assert_eq!(
            kind(
                &e.begin_login(other_session, sudo("/dev/pts/1"), NOW + 1)
                    .unwrap()
            ),
            StepKind::Prompt
        );
        assert_eq!(
            kind(
                &e.begin_login(Caller::new(0), sudo("/dev/pts/1"), NOW + 1)
                    .unwrap()
            ),
            StepKind::Prompt
        );
        let sshd = LoginRequest {
            service: "sshd".into(),
            ..sudo("/dev/pts/1")
        };
        assert_eq!(
            kind(&e.begin_login(here, sshd, NOW + 1).unwrap()),
            StepKind::Prompt,
            "rule without grace"
        );
        // Off by default.
        let off = fixture(Config {
            default_mode: Mode::Require,
            groups: vec![rule(0)],
            ..Config::default()
        });
        let secret = enroll(&off.engine, "alice");
        let step = off
            .engine
            .begin_login(here, sudo("/dev/pts/1"), NOW)
            .unwrap();
        off.engine
            .answer(here, &step.handle, &code(&secret, NOW), NOW)
            .unwrap();
        assert_eq!(
            kind(
                &off.engine
                    .begin_login(here, sudo("/dev/pts/1"), NOW + 1)
                    .unwrap()
            ),
            StepKind::Prompt
        );
    }

    #[test]
    fn modes_and_per_service_rules() {
        let config = Config {
            default_mode: Mode::Optional,
            groups: vec![
                GroupRule {
                    name: "wheel".into(),
                    mode: Mode::Require,
                    services: Some(vec!["sudo".into()]),
                    grace: 0,
                    validate_enrollment: None,
                    fallback: None,
                },
                GroupRule {
                    name: "users".into(),
                    mode: Mode::Exempt,
                    services: None,
                    grace: 0,
                    validate_enrollment: None,
                    fallback: None,
                },
            ],
            ..Config::default()
        };
        let f = fixture(config);
        let e = &f.engine;
        // alice: require for sudo, optional elsewhere; no token yet.
        assert_eq!(
            kind(&e.begin_login(ROOT, login("alice", "sshd"), NOW).unwrap()),
            StepKind::Skip
        );
        let sudo = e.begin_login(ROOT, login("alice", "sudo"), NOW).unwrap();
        assert_eq!(
            kind(&sudo),
            StepKind::Prompt,
            "no-token users are prompted like everyone"
        );
        let denied = e.answer(ROOT, &sudo.handle, "123456", NOW).unwrap();
        assert_eq!(kind(&denied), StepKind::Deny);
        assert!(
            denied.messages[1]
                .text
                .contains("your system administrator")
        );
        // bob: exempt everywhere, even with a token.
        enroll(e, "bob");
        assert_eq!(
            kind(&e.begin_login(ROOT, login("bob", "sudo"), NOW).unwrap()),
            StepKind::Skip
        );
        // root: optional, enrolled → asked.
        enroll(e, "root");
        assert_eq!(
            kind(&e.begin_login(ROOT, login("root", "login"), NOW).unwrap()),
            StepKind::Prompt
        );
    }

    #[test]
    fn unknown_user_reads_like_a_wrong_code() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let secret = enroll(&f.engine, "alice");
        let unknown = attempt(&f.engine, "nobody", "123456", NOW);
        let wrong = attempt(&f.engine, "alice", "123456", NOW);
        assert_eq!(kind(&unknown), StepKind::Deny);
        assert_eq!(unknown.messages, wrong.messages);
        assert!(
            f.engine.store.get("nobody").unwrap().is_none(),
            "unknown names create no records"
        );
        let _ = secret;
    }

    #[test]
    fn aliases_of_one_account_share_its_token() {
        let f = fixture(Config::default());
        let e = &f.engine;
        let secret = enroll(e, "alice");
        // SSSD-style: another spelling NSS resolves to the same account.
        let mut directory = FakeDirectory::default()
            .with_user("root", 0, &["root"])
            .with_user("alice", 1001, &["wheel"]);
        let account = directory.users["alice"].clone();
        directory.users.insert("ALICE".into(), account);
        let e = Engine {
            directory: Box::new(directory),
            ..f.into_engine()
        };
        let step = e.begin_login(ROOT, login("ALICE", "sshd"), NOW).unwrap();
        assert_eq!(
            kind(&step),
            StepKind::Prompt,
            "optional mode still asks: the token is found"
        );
        assert_eq!(
            kind(
                &e.answer(ROOT, &step.handle, &code(&secret, NOW), NOW)
                    .unwrap()
            ),
            StepKind::Accept
        );
        assert!(matches!(
            e.enroll(ROOT, "ALICE", "", NOW),
            Err(Error::Conflict(_))
        ));
        assert!(e.store.get("ALICE").unwrap().is_none());
    }

    #[test]
    fn admins_cannot_act_on_root_or_other_admins() {
        let f = fixture(Config::default());
        let e = &f.engine;
        enroll(e, "root");
        let admin = Caller::new(1003);
        assert!(matches!(
            e.reset(admin, "root"),
            Err(Error::AccessDenied(_))
        ));
        assert!(matches!(
            e.recovery_codes(admin, "root", "", NOW),
            Err(Error::AccessDenied(_))
        ));
        assert!(e.enroll(admin, "admin", "", NOW).is_ok(), "their own");
        assert!(e.enroll(admin, "bob", "", NOW).is_ok());
        assert!(e.reset(ROOT, "root").unwrap());
    }

    #[test]
    fn confirming_codes_are_throttled_and_kronctl_enrollments_not_shown_at_login() {
        let f = fixture(Config {
            default_mode: Mode::Enroll,
            ..Config::default()
        });
        let e = &f.engine;
        let enrollment = e.enroll(ROOT, "bob", "", NOW).unwrap();
        let step = e.begin_login(ROOT, login("bob", "sshd"), NOW).unwrap();
        assert!(
            !step
                .messages
                .iter()
                .any(|m| m.text.contains(&enrollment.secret[..4])),
            "the admin's pending QR is not shown to whoever logs in"
        );
        for _ in 0..3 {
            assert!(matches!(
                e.confirm(ROOT, "bob", "000000", NOW),
                Err(Error::Rejected(_) | Error::NotFound(_))
            ));
        }
        assert!(
            e.status(ROOT, "bob", NOW).unwrap().locked,
            "wrong confirming codes count"
        );
    }

    #[test]
    fn throttling_reads_the_same_with_or_without_account_or_token() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        enroll(&f.engine, "alice");
        // alice has a token, bob has none, nobody does not exist.
        for user in ["alice", "bob", "nobody"] {
            for _ in 0..3 {
                assert_eq!(
                    kind(&attempt(&f.engine, user, "000000", NOW)),
                    StepKind::Deny
                );
            }
        }
        let throttled: Vec<Step> = ["alice", "bob", "nobody"]
            .iter()
            .map(|user| attempt(&f.engine, user, "000000", NOW + 1))
            .collect();
        for step in &throttled {
            assert_eq!(kind(step), StepKind::Throttled, "{step:?}");
            assert_eq!(step.messages, throttled[0].messages);
        }
        assert!(
            f.engine.store.get("nobody").unwrap().is_none(),
            "still no record"
        );
    }

    #[test]
    fn enroll_mode_shows_qr_and_saves_only_on_the_right_code_before_the_deadline() {
        let f = fixture(Config {
            default_mode: Mode::Enroll,
            ..Config::default()
        });
        let e = &f.engine;
        let first = e.begin_login(ROOT, login("bob", "sshd"), NOW).unwrap();
        assert_eq!(kind(&first), StepKind::Prompt);
        let texts: Vec<&str> = first.messages.iter().map(|m| m.text.as_str()).collect();
        assert!(
            texts.iter().any(|t| t.contains('▀') || t.contains('▄')),
            "QR shown"
        );
        let key_line = texts
            .iter()
            .find(|t| t.starts_with("Or enter this key manually: "))
            .unwrap();
        let base32: String = key_line["Or enter this key manually: ".len()..]
            .split_whitespace()
            .collect();
        let secret = totp_rs::Secret::try_from_base32(&base32)
            .unwrap()
            .as_bytes()
            .to_vec();
        // Wrong code: nothing saved, and the same QR comes back.
        assert_eq!(
            kind(&e.answer(ROOT, &first.handle, "000000", NOW).unwrap()),
            StepKind::Deny
        );
        assert!(!e.status(ROOT, "bob", NOW).unwrap().enrolled);
        let again = e.begin_login(ROOT, login("bob", "sshd"), NOW + 10).unwrap();
        assert_eq!(
            again.messages[3], first.messages[3],
            "same secret offered again"
        );
        // Right code: saved, login passes, and the code cannot be replayed.
        let right = code(&secret, NOW + 10);
        let done = e.answer(ROOT, &again.handle, &right, NOW + 10).unwrap();
        assert_eq!(kind(&done), StepKind::Accept);
        assert!(e.status(ROOT, "bob", NOW + 10).unwrap().enrolled);
        assert_eq!(kind(&attempt(e, "bob", &right, NOW + 11)), StepKind::Deny);
        // A missed deadline saves nothing.
        let late = e.begin_login(ROOT, login("alice", "sshd"), NOW).unwrap();
        let window = e.config.enroll_window;
        let late_secret = {
            let line = late
                .messages
                .iter()
                .find(|m| m.text.starts_with("Or enter"))
                .unwrap();
            let b32: String = line.text["Or enter this key manually: ".len()..]
                .split_whitespace()
                .collect();
            totp_rs::Secret::try_from_base32(&b32)
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        let step = e
            .answer(
                ROOT,
                &late.handle,
                &code(&late_secret, NOW + window),
                NOW + window,
            )
            .unwrap();
        assert_eq!(kind(&step), StepKind::Deny);
        assert!(!e.status(ROOT, "alice", NOW + window).unwrap().enrolled);
    }

    #[test]
    fn callers_act_only_within_their_rights() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let e = &f.engine;
        enroll(e, "bob");
        // A user may check their own login (screen locker) but not another's, known or not.
        assert!(
            e.begin_login(ALICE, login("alice", "xscreensaver"), NOW)
                .is_ok()
        );
        assert!(matches!(
            e.begin_login(ALICE, login("bob", "sshd"), NOW),
            Err(Error::AccessDenied(_))
        ));
        assert!(matches!(
            e.begin_login(ALICE, login("nobody", "sshd"), NOW),
            Err(Error::AccessDenied(_))
        ));
        // An answer from another caller is refused.
        let step = e.begin_login(ROOT, login("bob", "sshd"), NOW).unwrap();
        assert!(matches!(
            e.answer(ALICE, &step.handle, "123456", NOW),
            Err(Error::AccessDenied(_))
        ));
        // Management.
        assert!(matches!(e.reset(ALICE, "bob"), Err(Error::AccessDenied(_))));
        assert!(matches!(
            e.unlock(ALICE, "bob"),
            Err(Error::AccessDenied(_))
        ));
        assert!(matches!(e.list(ALICE, NOW), Err(Error::AccessDenied(_))));
        assert!(matches!(
            e.status(ALICE, "bob", NOW),
            Err(Error::AccessDenied(_))
        ));
        assert!(matches!(
            e.enroll(ALICE, "bob", "", NOW),
            Err(Error::AccessDenied(_))
        ));
        assert_eq!(e.status(ALICE, "", NOW).unwrap().user, "alice");
        // Self-enrollment only while holding no confirmed token; never replacing one.
        assert!(e.enroll(ALICE, "", "", NOW).is_ok());
        assert!(matches!(
            e.enroll(BOB, "", "", NOW),
            Err(Error::Conflict(_))
        ));
        assert!(
            matches!(e.enroll(ROOT, "bob", "", NOW), Err(Error::Conflict(_))),
            "even root resets first"
        );
        assert!(e.reset(Caller::new(1003), "bob").unwrap());
        assert!(e.enroll(BOB, "", "", NOW).is_ok());
        assert_eq!(e.list(ROOT, NOW).unwrap().len(), 2);
    }

    #[test]
    fn malformed_input_is_refused_without_changing_state() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let e = &f.engine;
        enroll(e, "alice");
        let before = e.store.get("alice").unwrap();
        for user in ["", "a b", "x:y", &"a".repeat(300)] {
            assert!(matches!(
                e.begin_login(ROOT, login(user, "sshd"), NOW),
                Err(Error::InvalidArgument(_))
            ));
            assert!(matches!(
                e.reset(ROOT, user),
                Err(Error::InvalidArgument(_))
            ));
        }
        let mut long = login("alice", "sshd");
        long.rhost = "r".repeat(MAX_FIELD_LEN + 1);
        assert!(matches!(
            e.begin_login(ROOT, long, NOW),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            e.answer(ROOT, "nohandle", &"1".repeat(MAX_RESPONSE_LEN + 1), NOW),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            kind(&e.answer(ROOT, "nohandle", "123456", NOW).unwrap()),
            StepKind::Deny
        );
        assert!(matches!(
            e.confirm(ROOT, "alice", "12", NOW),
            Err(Error::Conflict(_))
        ));
        assert_eq!(e.store.get("alice").unwrap(), before);
    }

    #[test]
    fn pending_enrollment_expires() {
        let f = fixture(Config::default());
        let e = &f.engine;
        let enrollment = e.enroll(ROOT, "bob", "", NOW).unwrap();
        assert!(e.status(ROOT, "bob", NOW).unwrap().pending);
        let secret = totp_rs::Secret::try_from_base32(&enrollment.secret)
            .unwrap()
            .as_bytes()
            .to_vec();
        let at = enrollment.expires;
        assert!(!e.status(ROOT, "bob", at).unwrap().pending);
        assert!(matches!(
            e.confirm(ROOT, "bob", &code(&secret, at), at),
            Err(Error::NotFound(_))
        ));
        assert!(!e.status(ROOT, "bob", at).unwrap().enrolled);
    }
}
