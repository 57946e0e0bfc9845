//! Token management for kronctl: enroll, confirm, status, list (whole or a page), reset,
//! unlock.

use super::verdict::PendingCheck;
use super::{Engine, pages};
use crate::audit::Subject;
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::store::record::{ConfirmOutcome, UserRecord};
use crate::totp;
use kron_proto::{
    Channel, Enrollment, MAX_LIST_PAGE, MAX_ONE_MESSAGE_USERS, MAX_RESPONSE_LEN, UserStatus,
};

impl Engine {
    /// Starts (or restarts) an enrollment for `user` ("" = the caller). `code` is the
    /// validation code where the caller must prove the contact first (docs/delivery.md).
    pub fn enroll(&self, caller: Caller, user: &str, code: &str, now: u64) -> Result<Enrollment> {
        self.require_self_unless_admin(caller, user)?;
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_manage(&account, &self.config, &*self.directory)?;
        self.limiter.spend(caller, now)?;
        if self.store.get(&user)?.is_some_and(|r| r.token.is_some()) {
            return Err(super::outbound::already_enrolled(&user));
        }
        self.check_enrollment_validation(caller, &account, code, now)?;
        let (pending, secret) = self.new_pending(&user, now, false)?;
        let uri = self.otpauth_uri(&user, &secret, pending.token.params)?;
        if !self.save_new_pending(&user, &pending, &secret)? {
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
        self.require_self_unless_admin(caller, user)?;
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
        self.require_self_unless_admin(caller, user)?;
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

    /// `List`: every stored user in one answer (admin). Kept for kronctl before `ListPage`,
    /// but only for a store of at most [`MAX_ONE_MESSAGE_USERS`] ([`pages::one_message`]): a
    /// larger store is refused (naming the paged method) after reading a bounded number of
    /// users, never read whole into memory.
    pub fn list(&self, caller: Caller, now: u64) -> Result<Vec<UserStatus>> {
        caller.require_admin(&self.config, &*self.directory)?;
        let Some(page) = pages::one_message(&*self.store)? else {
            return Err(Error::Conflict(format!(
                "the store holds more than {MAX_ONE_MESSAGE_USERS} users, too many for one \
                 answer; a newer kronctl reads them a page at a time (ListPage)"
            )));
        };
        Ok(self.statuses(page, now))
    }

    /// `ListPage`: up to `limit` stored users after the name `after` ("" = from the first),
    /// and the `after` of the next page, "" when this one is the last (admin).
    pub fn list_page(
        &self,
        caller: Caller,
        after: &str,
        limit: u32,
        now: u64,
    ) -> Result<(Vec<UserStatus>, String)> {
        caller.require_admin(&self.config, &*self.directory)?;
        pages::check(after, limit, MAX_LIST_PAGE)?;
        let (page, next) = pages::page(&*self.store, after, limit)?;
        Ok((self.statuses(page, now), next))
    }

    fn statuses(&self, page: Vec<(String, UserRecord)>, now: u64) -> Vec<UserStatus> {
        page.into_iter()
            .map(|(user, record)| self.status_of(user, &record, now))
            .collect()
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

    pub(super) fn status_of(&self, user: String, record: &UserRecord, now: u64) -> UserStatus {
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
