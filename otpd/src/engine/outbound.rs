//! The engine's email and SMS work (docs/delivery.md): contacts, sending codes within the
//! budget, validated enrollment, and enrollments delivered to the user. The login steps that
//! use them are in `engine.rs`; this file owns sending and what kronctl calls.

use super::Engine;
use super::messages;
use super::sending::{self, MAX_SENDS_IN_FLIGHT, SendJob, SendWait, Sent};
use crate::audit::{OwnedSubject, Subject};
use crate::delivery::sent::{self, Budget, CodeCheck, Expected, Purpose, Reservation, SentCode};
use crate::delivery::{Content, Recipient};
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::store::record::UserRecord;
use crate::totp;
use kron_common::contact::{self, Channels};
use kron_proto::Channel;
use kron_proto::{Delivery, MAX_RESPONSE_LEN};
use std::sync::Arc;

/// The PAM service name rules are looked up for when kronctl enrolls.
const KRONCTL_SERVICE: &str = "kronctl";

impl Engine {
    /// The full address of `user` on `channel`, if the channel is configured and there is one.
    pub(crate) fn address(
        &self,
        user: &str,
        record: Option<&UserRecord>,
        channel: Channel,
    ) -> Option<String> {
        if !self.config.has_channel(channel) || !self.delivery.has(channel) {
            return None;
        }
        let stored = record.map(|r| r.contact.clone()).unwrap_or_default();
        self.config.contacts.address(&stored, user, channel)
    }

    /// The channels of `wanted` that can reach `user`, in order.
    pub(crate) fn reachable(
        &self,
        user: &str,
        record: Option<&UserRecord>,
        wanted: Channels,
    ) -> Channels {
        let list: Vec<Channel> = wanted
            .iter()
            .filter(|&c| self.address(user, record, c).is_some())
            .collect();
        Channels::of(&list)
    }

    /// Makes a code for `purpose`, spends the budget, sends it, and keeps it only if the server
    /// may have taken the message. A login (`wait` of [`SendWait::Until`], from
    /// [`Engine::send_deadline`] when its call began) waits for the server until then: past it
    /// the send goes on by itself and the person is told the code is on its way
    /// ([`Sent::Underway`]). pam_kron gives up on a call after its `timeout=` (5 s by default)
    /// and a relay may take `[email] timeout` (10 s by default): without the bound, a relay
    /// slower than the module made the login "unavailable" while the code still arrived.
    pub(crate) fn send_code(
        &self,
        subject: &Subject<'_>,
        record: Option<&UserRecord>,
        channel: Channel,
        purpose: Purpose,
        wait: SendWait,
        now: u64,
    ) -> Result<Sent> {
        let user = subject.user;
        let address = self.address(user, record, channel).ok_or_else(|| {
            Error::NotFound(format!("no {} contact for {user}", channel.as_str()))
        })?;
        let code = sent::new_code(self.config.codes.digits)
            .map_err(|e| Error::System(format!("no randomness: {e}")))?;
        let expires = now.saturating_add(self.config.codes.validity);
        let mac = self.code_mac(user, purpose.as_str(), &code)?;
        let stored = SentCode {
            purpose,
            channel,
            mac: mac.clone(),
            expires,
        };
        let mut reservation = Reservation {
            budget: Budget::Allowed,
            replaced: None,
        };
        let Some(in_flight) = self.sending.try_start(&mac, MAX_SENDS_IN_FLIGHT) else {
            // Each send under way holds a thread until its server answers or its timeout
            // ends. Refused as a throttle (the login fails closed), not as otpd being away.
            self.audit.record(
                "send-limited",
                subject,
                &format!(
                    "{}: {MAX_SENDS_IN_FLIGHT} sends already under way",
                    channel.as_str()
                ),
            );
            return Ok(Sent::Busy { channel });
        };
        self.store.modify(user, &mut |record| {
            reservation = record
                .outbox
                .reserve(stored.clone(), now, &self.config.codes);
        })?;
        if let Budget::Spent { until } = reservation.budget {
            self.audit.record(
                "send-limited",
                subject,
                &format!("{} budget spent", channel.as_str()),
            );
            return Ok(Sent::Spent { channel, until });
        }
        // The reservation is on the device before the code leaves: a crash must not hand the
        // send budget back.
        self.store.flush()?;
        let masked = contact::mask(channel, &address);
        let job = SendJob {
            store: Arc::clone(&self.store),
            audit: Arc::clone(&self.audit),
            delivery: Arc::clone(&self.delivery),
            in_flight,
            subject: OwnedSubject::of(subject),
            channel,
            address,
            masked: masked.clone(),
            code,
            valid_for: self.config.codes.validity,
            purpose,
            mac,
            replaced: reservation.replaced,
            expires,
            now,
        };
        let limit = match wait {
            SendWait::Whole => None,
            SendWait::Until(deadline) => {
                Some(deadline.saturating_duration_since(std::time::Instant::now()))
            }
        };
        Ok(job.run_within(limit)?.unwrap_or(Sent::Underway {
            channel,
            masked,
            expires,
        }))
    }

    /// Charges an attempt, then uses up the sent code for `purpose` if `response` is it.
    pub(crate) fn check_sent_code(
        &self,
        user: &str,
        purpose: Purpose,
        response: &str,
        now: u64,
    ) -> Result<SentCheck> {
        if let crate::store::record::Attempt::Throttled { until } =
            self.store
                .charge_attempt(user, now, &self.config.throttle)?
        {
            return Ok(SentCheck::Throttled { until });
        }
        // Pass or fail, the charge (or its refund) is durable before the reply (service.rs).
        Ok(
            match self.take_sent_code(user, Expected::any(purpose), response, now)? {
                CodeCheck::Accepted => SentCheck::Accepted,
                CodeCheck::Refused(why) => SentCheck::Refused(why),
            },
        )
    }

    /// Uses up the live sent code `expected` if `response` is it (not charged: the caller has
    /// charged the attempt already).
    pub(crate) fn take_sent_code(
        &self,
        user: &str,
        expected: Expected,
        response: &str,
        now: u64,
    ) -> Result<CodeCheck> {
        let Some(code) = sent::candidate(response, self.config.codes.digits) else {
            return Ok(CodeCheck::Refused("not a sent code"));
        };
        let mac = self.code_mac(user, expected.purpose.as_str(), &code)?;
        let mut check = CodeCheck::Refused("no code sent");
        self.store.modify(user, &mut |record| {
            check = record.take_sent_code(expected, &mac, now);
        })?;
        Ok(check)
    }

    // ---- kronctl -------------------------------------------------------------------------

    /// Sets (or with "" clears) the address of `user` on `channel` (admin). True if it changed.
    pub fn set_contact(
        &self,
        caller: Caller,
        user: &str,
        channel: &str,
        address: &str,
    ) -> Result<bool> {
        caller.require_admin(&self.config, &*self.directory)?;
        let channel = parse_channel(channel)?;
        if address.len() > kron_proto::MAX_FIELD_LEN {
            return Err(Error::InvalidArgument("address too long".into()));
        }
        let user = self.managed_target(caller, user)?;
        self.existing_account(&user)?;
        let address = match address {
            "" => None,
            typed => Some(contact::normalize(channel, typed).map_err(Error::InvalidArgument)?),
        };
        let mut changed = false;
        self.store.modify(&user, &mut |record| {
            changed = record.contact.get(channel) != address.as_deref();
            record.contact.set(channel, address.clone());
        })?;
        self.audit.record(
            "contact-set",
            &Subject {
                user: &user,
                caller_uid: caller.uid,
                ..Subject::default()
            },
            &match &address {
                Some(a) => format!("{} {}", channel.as_str(), contact::mask(channel, a)),
                None => format!("{} cleared", channel.as_str()),
            },
        );
        Ok(changed)
    }

    /// Whether `caller` must prove `user`'s contact before `kronctl enroll` shows a token:
    /// when the rule for `user` asks for validation and the caller is not an admin, who is
    /// the authority validation stands in for.
    pub(crate) fn enrollment_needs_validation(
        &self,
        caller: Caller,
        account: &kron_common::users::Account,
    ) -> Result<Channels> {
        if caller.is_admin(&self.config, &*self.directory)? {
            return Ok(Channels::default());
        }
        let policy = kron_common::rules::policy_for(
            &self.config,
            account,
            KRONCTL_SERVICE,
            &*self.directory,
        )?;
        Ok(policy.validate_enrollment)
    }

    /// Sends the code that `kronctl enroll` needs before it may show a token (self-service).
    pub fn send_enrollment_code(&self, caller: Caller, user: &str, now: u64) -> Result<Delivery> {
        self.require_self_unless_admin(caller, user)?;
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_manage(&account, &self.config, &*self.directory)?;
        self.limiter.spend(caller, now)?;
        let wanted = self.enrollment_needs_validation(caller, &account)?;
        if wanted.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "enrolling {user} needs no validation code"
            )));
        }
        let record = self.store.get(&user)?;
        if record.as_ref().is_some_and(|r| r.token.is_some()) {
            return Err(already_enrolled(&user));
        }
        let Some(channel) = self.reachable(&user, record.as_ref(), wanted).iter().next() else {
            return Err(Error::NotFound(format!(
                "enrolling {user} needs a code sent to an email address or phone, and none is \
                 on file; ask {} to add one",
                self.config.contact
            )));
        };
        let subject = Subject {
            user: &user,
            caller_uid: caller.uid,
            ..Subject::default()
        };
        sent_to_delivery(self.send_code(
            &subject,
            record.as_ref(),
            channel,
            Purpose::Enrollment,
            SendWait::Whole,
            now,
        )?)
    }

    /// Checks the validation code given to `kronctl enroll`, if the caller needs one.
    pub(crate) fn check_enrollment_validation(
        &self,
        caller: Caller,
        account: &kron_common::users::Account,
        code: &str,
        now: u64,
    ) -> Result<()> {
        if code.len() > MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("code too long".into()));
        }
        if self
            .enrollment_needs_validation(caller, account)?
            .is_empty()
        {
            return Ok(());
        }
        if code.is_empty() {
            return Err(Error::ValidationRequired(format!(
                "enrolling {} needs the code sent to your email address or phone",
                account.name
            )));
        }
        match self.check_sent_code(&account.name, Purpose::Enrollment, code, now)? {
            SentCheck::Accepted => Ok(()),
            SentCheck::Throttled { until } => Err(Error::Throttled { until }),
            SentCheck::Refused(why) => {
                self.audit.record(
                    "enroll-rejected",
                    &Subject {
                        user: &account.name,
                        caller_uid: caller.uid,
                        ..Subject::default()
                    },
                    why,
                );
                Err(Error::Rejected(
                    "wrong or expired validation code; request a new one".into(),
                ))
            }
        }
    }

    /// Makes a pending enrollment for `user` and sends it on `channel` (admin). The admin never
    /// sees the secret; if the message cannot be sent, nothing is stored.
    pub fn deliver_enrollment(
        &self,
        caller: Caller,
        user: &str,
        channel: &str,
        now: u64,
    ) -> Result<Delivery> {
        caller.require_admin(&self.config, &*self.directory)?;
        let channel = parse_channel(channel)?;
        let user = self.managed_target(caller, user)?;
        self.existing_account(&user)?;
        let record = self.store.get(&user)?;
        if record.as_ref().is_some_and(|r| r.token.is_some()) {
            return Err(already_enrolled(&user));
        }
        let address = self.delivery_address(&user, record.as_ref(), channel)?;
        let (mut pending, secret) = self.new_pending(&user, now, false)?;
        pending.delivered = Some(channel);
        let uri = self.otpauth_uri(&user, &secret, pending.token.params)?;
        let png = kron_common::qr::png(&uri, 8)
            .map_err(|e| Error::System(format!("QR rendering failed: {e}")))?;
        let base32 = totp::base32(&secret);
        let subject = Subject {
            user: &user,
            caller_uid: caller.uid,
            ..Subject::default()
        };
        let content = Content::Enrollment {
            uri: &uri,
            secret: &base32,
            qr_png: &png,
            expires: pending.expires,
        };
        let masked = self.send_pending(
            &subject,
            record.as_ref(),
            (channel, &address),
            (&pending, &secret),
            &content,
            now,
        )?;
        self.audit.record(
            "enroll-started",
            &subject,
            &format!("sent by {} to {masked}", channel.as_str()),
        );
        Ok(Delivery {
            channel: channel.as_str().into(),
            destination: masked,
            expires: pending.expires,
        })
    }

    /// The full address an admin's delivery to `user` on `channel` goes to, or why there is
    /// none.
    pub(crate) fn delivery_address(
        &self,
        user: &str,
        record: Option<&UserRecord>,
        channel: Channel,
    ) -> Result<String> {
        if !self.config.has_channel(channel) {
            return Err(Error::InvalidArgument(format!(
                "otpd has no [{}] section in its config",
                channel.as_str()
            )));
        }
        self.address(user, record, channel).ok_or_else(|| {
            Error::NotFound(format!(
                "{user} has no {} contact; set one with `kronctl contact {user}`",
                channel.as_str()
            ))
        })
    }

    /// Stores `pending` with its seed (in place of any other pending enrollment) and sends `content` about
    /// it to `to` (channel, full address), within the send budget, which deliveries use up as
    /// codes do. The enrollment and the spent budget are on the device before the message
    /// leaves; if it cannot be sent, the enrollment it replaced comes back and the budget is
    /// returned. The masked address on success.
    pub(crate) fn send_pending(
        &self,
        subject: &Subject<'_>,
        record: Option<&UserRecord>,
        to: (Channel, &str),
        (pending, seed): (&crate::store::record::Pending, &[u8]),
        content: &Content<'_>,
        now: u64,
    ) -> Result<String> {
        let (channel, address) = to;
        let user = subject.user;
        let mut budget = Budget::Allowed;
        self.store.modify(user, &mut |record| {
            budget = record.outbox.spend(channel, now, &self.config.codes);
        })?;
        if let Budget::Spent { until } = budget {
            return Err(Error::Conflict(format!(
                "no more messages can be sent to {user} by {} before {}",
                channel.as_str(),
                messages::utc(until)
            )));
        }
        let previous = record.and_then(|r| r.pending.clone());
        if !self.save_new_pending(user, pending, seed)? {
            self.store.modify(user, &mut |record| {
                record.outbox.release(channel, &[], now, None);
            })?;
            return Err(already_enrolled(user));
        }
        let masked = contact::mask(channel, address);
        self.store.flush()?;
        if let Err(e) = self
            .delivery
            .send(channel, &Recipient { user, address }, content)
        {
            self.store.modify(user, &mut |record| {
                record.restore_pending(pending, previous.clone());
                if !e.maybe_sent {
                    record.outbox.release(channel, &[], now, None);
                }
            })?;
            let what = match content {
                Content::Link { .. } => "link",
                _ => "enrollment",
            };
            self.audit.record(
                "send-failed",
                subject,
                &format!(
                    "{what} by {} to {masked}: {e}{}",
                    channel.as_str(),
                    sending::counted(&e)
                ),
            );
            return Err(Error::Delivery(format!(
                "the {what} could not be sent by {}: {e}",
                channel.as_str()
            )));
        }
        Ok(masked)
    }
}

/// The result of typing a sent code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentCheck {
    Accepted,
    Throttled { until: u64 },
    Refused(&'static str),
}

fn sent_to_delivery(sent: Sent) -> Result<Delivery> {
    match sent {
        Sent::Done {
            channel,
            masked,
            expires,
        }
        | Sent::Underway {
            channel,
            masked,
            expires,
        } => Ok(Delivery {
            channel: channel.as_str().into(),
            destination: masked,
            expires,
        }),
        Sent::Spent { channel, until } => Err(Error::Conflict(format!(
            "no more codes can be sent by {} before {}",
            channel.as_str(),
            messages::utc(until)
        ))),
        Sent::Busy { channel } => Err(Error::Conflict(format!(
            "too many codes are being sent just now; try again in a minute ({})",
            channel.as_str()
        ))),
        Sent::Failed { channel } => Err(Error::Delivery(format!(
            "the code could not be sent by {}; see otpd's log",
            channel.as_str()
        ))),
    }
}

/// A channel named on D-Bus ("email", "sms"). The error does not repeat what was sent.
pub(crate) fn parse_channel(name: &str) -> Result<Channel> {
    Channel::parse(name)
        .ok_or_else(|| Error::InvalidArgument("unknown channel; use email or sms".into()))
}

pub(crate) fn already_enrolled(user: &str) -> Error {
    Error::Conflict(format!(
        "{user} already has a confirmed token; an admin must run `kronctl reset {user}` first"
    ))
}
