//! The daemon's core: login conversations and token management, independent of D-Bus.
//! Every entry point takes the caller's uid (as the bus reported it) and the current time, so
//! unit tests drive it with a fixed clock and fake accounts.

use crate::audit::{Audit, Subject};
use crate::authz::Caller;
use crate::config::Config;
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::messages;
use crate::policy::{Decision, decide, mode_for};
use crate::record::{Attempt, ConfirmOutcome, Pending, StepOutcome, Token, UserRecord};
use crate::sessions::{LoginKind, LoginSession, Sessions};
use crate::store::Store;
use crate::totp::{self, TokenParams};
use crate::users::Directory;
use kron_proto::{Enrollment, MAX_FIELD_LEN, MAX_RESPONSE_LEN, Step, StepKind, UserStatus};

pub struct Engine {
    pub config: Config,
    store: Box<dyn Store>,
    key: SecretKey,
    directory: Box<dyn Directory>,
    audit: Audit,
    sessions: Sessions,
    hostname: String,
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
    ) -> Engine {
        Engine { config, store, key, directory, audit, sessions: Sessions::default(), hostname }
    }

    // ---- login conversation -------------------------------------------------------------

    /// First step of a login: decides what it needs and asks for a code, shows an enrollment,
    /// skips or denies.
    pub fn begin_login(&self, caller: Caller, request: LoginRequest, now: u64) -> Result<Step> {
        validate_request(&request)?;
        let account = self.directory.by_name(&request.user)?;
        caller.may_log_in_as(account.as_ref())?;
        let subject = subject(&request, caller);
        let mode = match &account {
            Some(account) => Some(mode_for(&self.config, account, &request.service, &*self.directory)?),
            None => None,
        };
        let record = match account {
            Some(_) => self.store.get(&request.user)?,
            None => None,
        };
        let kind = match decide(mode, record.as_ref(), now) {
            Decision::Skip { mode } => {
                self.audit.record("skipped", &subject, &format!("mode {}", mode.as_str()));
                return Ok(Step::terminal(StepKind::Skip, vec![]));
            }
            Decision::Throttled { until } => {
                self.audit.record("throttled", &subject, "");
                return Ok(Step::terminal(StepKind::Deny, messages::throttled(until, now)));
            }
            Decision::AskCode { .. } => LoginKind::Code,
            Decision::NoToken => LoginKind::NoToken,
            Decision::UnknownUser => LoginKind::UnknownUser,
            Decision::Enroll => return self.begin_enrollment_login(caller, request, record, now),
        };
        Ok(self.prompt(LoginSession::new(caller, request, kind, self.login_deadline(now)), vec![], now))
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
        match session.kind {
            LoginKind::UnknownUser => {
                self.audit.record("rejected", &subject, "unknown user");
                Ok(Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact)))
            }
            LoginKind::NoToken => {
                self.audit.record("rejected", &subject, "no token enrolled");
                Ok(Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact)))
            }
            LoginKind::Code => self.check_code(user, response, &subject, now),
            LoginKind::Enroll(ref pending) => self.finish_enrollment_login(user, pending, response, &subject, now),
        }
    }

    fn check_code(&self, user: &str, response: &str, subject: &Subject<'_>, now: u64) -> Result<Step> {
        if let Attempt::Throttled { until } = self.store.charge_attempt(user, now, &self.config.throttle)? {
            self.audit.record("throttled", subject, "");
            return Ok(Step::terminal(StepKind::Deny, messages::throttled(until, now)));
        }
        let Some(token) = self.store.get(user)?.and_then(|record| record.token) else {
            self.audit.record("rejected", subject, "token was reset during the login");
            return Ok(Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact)));
        };
        let secret = self.key.open(user, &token.secret)?;
        let Some(step) = totp::matching_step(&secret, token.params, self.config.totp.skew, response, now) else {
            self.audit.record("rejected", subject, "wrong code");
            return Ok(Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact)));
        };
        Ok(match self.store.accept_step(user, step, now)? {
            StepOutcome::Accepted => {
                self.audit.record("accepted", subject, "");
                Step::terminal(StepKind::Accept, vec![])
            }
            StepOutcome::Replayed => {
                self.audit.record("rejected", subject, "code already used");
                Step::terminal(StepKind::Deny, messages::replayed())
            }
            StepOutcome::NoToken => {
                self.audit.record("rejected", subject, "token was reset during the login");
                Step::terminal(StepKind::Deny, messages::rejected(&self.config.contact))
            }
        })
    }

    fn begin_enrollment_login(&self, caller: Caller, request: LoginRequest, record: Option<UserRecord>, now: u64) -> Result<Step> {
        let subject = subject(&request, caller);
        // Show the enrollment already waiting (same QR, same deadline) rather than a new one,
        // so a person who mistyped the code can simply try again.
        let pending = match record.as_ref().and_then(|r| r.live_pending(now)) {
            Some(pending) => pending.clone(),
            None => {
                let pending = self.new_pending(&request.user, now)?;
                if self.store.save_pending(&request.user, pending.clone())?.is_err() {
                    // A token was confirmed meanwhile: start over as an ordinary login.
                    return self.begin_login(caller, request, now);
                }
                self.audit.record("enroll-started", &subject, "at login");
                pending
            }
        };
        let secret = self.key.open(&request.user, &pending.token.secret)?;
        let uri = self.otpauth_uri(&request.user, &secret, pending.token.params)?;
        let qr = crate::qr::terminal(&uri).map_err(|e| Error::System(format!("QR rendering failed: {e}")))?;
        let shown = messages::enrollment(&qr, &totp::base32(&secret), pending.expires, now);
        let deadline = pending.expires.min(self.login_deadline(now));
        let session = LoginSession::new(caller, request, LoginKind::Enroll(pending), deadline);
        Ok(self.prompt(session, shown, now))
    }

    fn finish_enrollment_login(&self, user: &str, pending: &Pending, response: &str, subject: &Subject<'_>, now: u64) -> Result<Step> {
        let secret = self.key.open(user, &pending.token.secret)?;
        let Some(step) = totp::matching_step(&secret, pending.token.params, self.config.totp.skew, response, now) else {
            self.audit.record("enroll-rejected", subject, "wrong code");
            return Ok(Step::terminal(StepKind::Deny, messages::enrollment_wrong_code(pending.expires, now)));
        };
        Ok(match self.store.confirm(user, pending, step, now)? {
            ConfirmOutcome::Confirmed => {
                self.audit.record("enrolled", subject, "at login");
                Step::terminal(StepKind::Accept, messages::enrolled())
            }
            ConfirmOutcome::Expired => {
                self.audit.record("enroll-rejected", subject, "enrollment expired");
                Step::terminal(StepKind::Deny, messages::enrollment_expired())
            }
            ConfirmOutcome::NoPending | ConfirmOutcome::AlreadyEnrolled => {
                self.audit.record("enroll-rejected", subject, "enrollment replaced meanwhile");
                Step::terminal(StepKind::Deny, messages::enrollment_replaced())
            }
        })
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
                self.audit.daemon("too many logins in progress; refusing new ones");
                Step::terminal(StepKind::Unavailable, messages::busy())
            }
        }
    }

    fn login_deadline(&self, now: u64) -> u64 {
        now.saturating_add(self.config.login_timeout)
    }

    // ---- management ----------------------------------------------------------------------

    /// Starts (or restarts) an enrollment for `user` ("" = the caller).
    pub fn enroll(&self, caller: Caller, user: &str, now: u64) -> Result<Enrollment> {
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_self_serve(account.uid, &self.config, &*self.directory)?;
        if self.store.get(&user)?.is_some_and(|r| r.token.is_some()) {
            return Err(Error::Conflict(format!(
                "{user} already has a confirmed token; an admin must run `kronctl reset {user}` first"
            )));
        }
        let pending = self.new_pending(&user, now)?;
        let secret = self.key.open(&user, &pending.token.secret)?;
        let uri = self.otpauth_uri(&user, &secret, pending.token.params)?;
        if self.store.save_pending(&user, pending.clone())?.is_err() {
            return Err(Error::Conflict(format!("{user} already has a confirmed token")));
        }
        self.audit.record("enroll-started", &Subject { user: &user, caller_uid: caller.uid, ..Subject::default() }, "kronctl");
        Ok(Enrollment { user, uri, secret: totp::base32(&secret), expires: pending.expires })
    }

    /// Confirms the pending enrollment of `user` ("" = the caller) with a code.
    pub fn confirm(&self, caller: Caller, user: &str, code: &str, now: u64) -> Result<()> {
        if code.len() > MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("code too long".into()));
        }
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_self_serve(account.uid, &self.config, &*self.directory)?;
        let record = self.store.get(&user)?.unwrap_or_default();
        if record.token.is_some() {
            return Err(Error::Conflict(format!("{user} already has a confirmed token")));
        }
        let Some(pending) = record.live_pending(now).cloned() else {
            return Err(Error::NotFound(format!("no pending enrollment for {user} (or it expired); run `kronctl enroll` again")));
        };
        let subject = Subject { user: &user, caller_uid: caller.uid, ..Subject::default() };
        let secret = self.key.open(&user, &pending.token.secret)?;
        let Some(step) = totp::matching_step(&secret, pending.token.params, self.config.totp.skew, code, now) else {
            self.audit.record("enroll-rejected", &subject, "wrong code");
            return Err(Error::Rejected("wrong code; check the device clock and try the next code".into()));
        };
        match self.store.confirm(&user, &pending, step, now)? {
            ConfirmOutcome::Confirmed => {
                self.audit.record("enrolled", &subject, "kronctl");
                Ok(())
            }
            ConfirmOutcome::Expired => Err(Error::Rejected("the enrollment expired; run `kronctl enroll` again".into())),
            ConfirmOutcome::NoPending => Err(Error::Conflict("the enrollment was replaced meanwhile; use the newest QR code".into())),
            ConfirmOutcome::AlreadyEnrolled => Err(Error::Conflict(format!("{user} already has a confirmed token"))),
        }
    }

    /// Reports `user` ("" = the caller).
    pub fn status(&self, caller: Caller, user: &str, now: u64) -> Result<UserStatus> {
        let user = self.resolve_target(caller, user)?;
        if !caller.is_admin(&self.config, &*self.directory)? {
            let account = self.directory.by_name(&user)?;
            if account.is_none_or(|a| a.uid != caller.uid) {
                return Err(Error::AccessDenied("only root or the admin group may see other users".into()));
            }
        }
        let record = self.store.get(&user)?.unwrap_or_default();
        Ok(status_of(user, &record, now))
    }

    /// Reports every stored user (admin).
    pub fn list(&self, caller: Caller, now: u64) -> Result<Vec<UserStatus>> {
        caller.require_admin(&self.config, &*self.directory)?;
        Ok(self.store.list()?.into_iter().map(|(user, record)| status_of(user, &record, now)).collect())
    }

    /// Deletes everything stored for `user` (admin).
    pub fn reset(&self, caller: Caller, user: &str) -> Result<bool> {
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        caller.require_admin(&self.config, &*self.directory)?;
        let existed = self.store.reset(user)?;
        self.audit.record("reset", &Subject { user, caller_uid: caller.uid, ..Subject::default() }, if existed { "" } else { "nothing stored" });
        Ok(existed)
    }

    /// Clears the throttle of `user` (admin).
    pub fn unlock(&self, caller: Caller, user: &str) -> Result<bool> {
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        caller.require_admin(&self.config, &*self.directory)?;
        let cleared = self.store.unlock(user)?;
        self.audit.record("unlocked", &Subject { user, caller_uid: caller.uid, ..Subject::default() }, "");
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
    fn resolve_target(&self, caller: Caller, user: &str) -> Result<String> {
        if user.is_empty() {
            return self
                .directory
                .name_of(caller.uid)?
                .ok_or_else(|| Error::NotFound(format!("uid {} has no user name", caller.uid)));
        }
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        Ok(user.to_owned())
    }

    fn existing_account(&self, user: &str) -> Result<crate::users::Account> {
        self.directory.by_name(user)?.ok_or_else(|| Error::NotFound(format!("no such user: {user}")))
    }

    fn new_pending(&self, user: &str, now: u64) -> Result<Pending> {
        let secret = totp::new_secret().map_err(|e| Error::System(format!("no randomness: {e}")))?;
        Ok(Pending {
            token: Token { params: TokenParams::from(&self.config.totp), secret: self.key.seal(user, &secret)?, created: now },
            expires: now.saturating_add(self.config.enroll_window),
        })
    }

    fn otpauth_uri(&self, user: &str, secret: &[u8], params: TokenParams) -> Result<String> {
        let account = format!("{user}@{}", self.hostname);
        totp::otpauth_uri(secret, params, &self.config.issuer, &account).map_err(Error::System)
    }
}

fn validate_request(request: &LoginRequest) -> Result<()> {
    kron_proto::validate_user(&request.user).map_err(Error::InvalidArgument)?;
    for (name, value) in [("service", &request.service), ("rhost", &request.rhost), ("tty", &request.tty)] {
        if value.len() > MAX_FIELD_LEN {
            return Err(Error::InvalidArgument(format!("{name} longer than {MAX_FIELD_LEN} bytes")));
        }
    }
    Ok(())
}

fn subject(request: &LoginRequest, caller: Caller) -> Subject<'_> {
    Subject { user: &request.user, service: &request.service, rhost: &request.rhost, tty: &request.tty, caller_uid: caller.uid }
}

fn status_of(user: String, record: &UserRecord, now: u64) -> UserStatus {
    let locked = record.is_locked(now);
    UserStatus {
        user,
        enrolled: record.token.is_some(),
        pending: record.token.is_none() && record.live_pending(now).is_some(),
        locked,
        locked_until: if locked { record.next_attempt } else { 0 },
        failures: record.failures,
        last_used: record.last_used,
    }
}
