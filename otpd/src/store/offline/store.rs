//! [`FleetStore`]: the store of a fleet host. Every call goes to the database through
//! [`PgStore`]; only when the database cannot be reached ([`Error::Unreachable`], never when it
//! refused) do the three calls a login by TOTP code needs (the user's record, the code check and
//! a charge) fall back to [`Offline`]. Everything else fails closed as before. Online, each
//! accepted code's step is also remembered here, so that step never passes offline later.

use super::Offline;
use crate::error::{Error, Result};
use crate::store::record::{
    Attempt, Charge, ConfirmOutcome, ImportOutcome, Pending, StepOutcome, Token, UserRecord,
};
use crate::store::recovery::RecoverySet;
use crate::store::vault::{Checked, CodeOutcome, Vault};
use crate::store::{Durable, PgStore, Store};
use kron_common::config::ThrottleConfig;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The clock the offline fallback of [`Store::get`] reads (the trait passes no time there).
pub type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

pub struct FleetStore {
    pg: PgStore,
    offline: Arc<Offline>,
    /// `[totp] skew`: a pack is usable while it has a step within it of now.
    skew: u8,
    clock: Clock,
}

impl FleetStore {
    pub fn new(pg: PgStore, offline: Arc<Offline>, skew: u8, clock: Clock) -> FleetStore {
        FleetStore {
            pg,
            offline,
            skew,
            clock,
        }
    }

    /// `online`, or when it failed because the database is unreachable, `offline()`'s answer;
    /// with none (no usable pack of this user here) the unreachable error, saying so.
    fn or_offline<T>(
        &self,
        online: Result<T>,
        offline: impl FnOnce() -> Result<Option<T>>,
    ) -> Result<T> {
        match online {
            Err(Error::Unreachable(why)) if self.offline.enabled() => match offline()? {
                Some(answer) => Ok(answer),
                None => Err(Error::Unreachable(format!(
                    "{why}; no offline pack of this user on this host"
                ))),
            },
            other => other,
        }
    }
}

impl Store for FleetStore {
    fn get(&self, user: &str) -> Result<Option<UserRecord>> {
        let now = (self.clock)();
        self.or_offline(self.pg.get(user), || {
            Ok(self.offline.record(user, now, self.skew)?.map(Some))
        })
    }

    fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, UserRecord)>> {
        self.pg.page(after, limit)
    }

    fn charge_attempt(&self, user: &str, now: u64, config: &ThrottleConfig) -> Result<Attempt> {
        self.or_offline(self.pg.charge_attempt(user, now, config), || {
            self.offline.charge(user, now, self.skew, config)
        })
    }

    fn charge_and_accept(
        &self,
        user: &str,
        step: Option<u64>,
        now: u64,
        config: &ThrottleConfig,
    ) -> Result<(Attempt, Option<StepOutcome>)> {
        self.pg.charge_and_accept(user, step, now, config)
    }

    fn accept_step(&self, user: &str, step: u64, now: u64) -> Result<StepOutcome> {
        self.pg.accept_step(user, step, now)
    }

    fn save_pending(
        &self,
        user: &str,
        pending: Pending,
    ) -> Result<std::result::Result<(), ConfirmOutcome>> {
        Store::save_pending(&self.pg, user, pending)
    }

    fn confirm(
        &self,
        user: &str,
        expected: &Pending,
        step: u64,
        now: u64,
        charge: Charge,
    ) -> Result<ConfirmOutcome> {
        self.pg.confirm(user, expected, step, now, charge)
    }

    fn reset(&self, user: &str) -> Result<bool> {
        self.pg.reset(user)
    }

    fn modify(&self, user: &str, change: &mut dyn FnMut(&mut UserRecord)) -> Result<()> {
        self.pg.modify(user, change)
    }

    fn unlock(&self, user: &str) -> Result<bool> {
        self.pg.unlock(user)
    }

    fn set_recovery(&self, user: &str, set: RecoverySet) -> Result<bool> {
        self.pg.set_recovery(user, set)
    }

    fn use_recovery(&self, user: &str, hash: &[u8], now: u64) -> Result<Option<usize>> {
        self.pg.use_recovery(user, hash, now)
    }

    fn import(
        &self,
        user: &str,
        record: UserRecord,
        replace: bool,
        same_token: &dyn Fn(&Token) -> bool,
    ) -> Result<ImportOutcome> {
        Store::import(&self.pg, user, record, replace, same_token)
    }

    fn flush(&self) -> Result<()> {
        self.offline.local().flush()
    }

    fn paced_write(&self) -> Result<()> {
        self.pg.paced_write()
    }

    /// The database commits before it answers; what waits is this host's offline state (an
    /// online step remembered, an offline use journaled).
    fn durable_through(&self, write: u64) -> Durable {
        self.offline.local().durable_through(write)
    }

    fn vault(&self) -> Option<&dyn Vault> {
        Some(self)
    }

    fn fleet(&self) -> Option<&PgStore> {
        Some(&self.pg)
    }

    fn offline(&self) -> Option<&Offline> {
        Some(&self.offline)
    }
}

impl Vault for FleetStore {
    fn check_code(
        &self,
        user: &str,
        code: &str,
        now: u64,
        skew: u8,
        charge: Option<&ThrottleConfig>,
        sent: Option<&str>,
    ) -> Result<Checked> {
        let in_flight = self.offline.checking_online(user);
        match self.pg.check_code_step(user, code, now, skew, charge, sent) {
            Ok((CodeOutcome::Step(StepOutcome::Accepted), Some(step))) => {
                // Before the reply: a step seen used here never passes offline here, even if
                // the link goes down the next moment. And a step this host accepted offline is
                // a replay here, even while the database, whose journal replay is still to
                // come, takes it as new.
                let outcome = match self.offline.used_online(user, step, now)? {
                    true => StepOutcome::Accepted,
                    false => StepOutcome::Replayed,
                };
                Ok(Checked::online(CodeOutcome::Step(outcome)))
            }
            // The database's "yes" always names the step: without one, this host could not
            // keep it from passing offline here later, so it is no yes.
            Ok((CodeOutcome::Step(StepOutcome::Accepted), None)) => Err(Error::System(
                "the database accepted a code without naming its step".into(),
            )),
            Ok((outcome, _)) => Ok(Checked::online(outcome)),
            Err(Error::Unreachable(why)) if self.offline.enabled() => {
                drop(in_flight);
                match self.offline.check(user, code, now, skew, charge)? {
                    Some(outcome) => Ok(Checked {
                        outcome,
                        offline: true,
                    }),
                    None => Err(Error::Unreachable(format!(
                        "{why}; no offline pack of this user on this host"
                    ))),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn save_pending(&self, user: &str, pending: &Pending, seed: &[u8]) -> Result<bool> {
        Vault::save_pending(&self.pg, user, pending, seed)
    }

    fn pending_seed(
        &self,
        user: &str,
        pending: &Pending,
        now: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.pg.pending_seed(user, pending, now)
    }

    fn confirm_code(
        &self,
        user: &str,
        pending: &Pending,
        code: &str,
        now: u64,
        skew: u8,
    ) -> Result<Option<ConfirmOutcome>> {
        self.pg.confirm_code(user, pending, code, now, skew)
    }

    fn import(
        &self,
        user: &str,
        record: &UserRecord,
        seed: Option<&[u8]>,
        replace: bool,
    ) -> Result<ImportOutcome> {
        Vault::import(&self.pg, user, record, seed, replace)
    }

    fn code_mac(&self, user: &str, purpose: &str, code: &str) -> Result<Vec<u8>> {
        self.pg.code_mac(user, purpose, code)
    }
}
