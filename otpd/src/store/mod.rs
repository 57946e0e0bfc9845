//! All durable state. The engine sees one small trait, [`Store`], whose every operation is
//! atomic for one user; sled is the backend on one host, and another backend (a database for a
//! fleet) implements the same trait beside it.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Store`] trait |
//! | `sled.rs` | [`SledStore`]: the trait on sled 0.34, one key per user |
//! | `commit.rs` | group commit: replies wait until their own writes are on the device |
//! | `health.rs` | a store that failed: refuse while closed, reopen when due, report each change once |
//! | `error.rs` | [`error::StoreError`]: why the store failed, with typed sources |
//! | `record.rs` | what is stored per user, and its state changes as pure functions |
//! | `encoding.rs` | how a record is written: a format byte, then postcard |
//! | `crypto.rs` | secrets at rest: XChaCha20-Poly1305 under `secret.key`; MACs of sent codes |
//! | `throttle.rs` | backoff after failed attempts: pure arithmetic |
//! | `recovery.rs` | recovery codes, stored only as hashes |
//! | `link.rs` | one-time enrollment links: finding, counting and revoking the link inside a pending enrollment (its `LinkRecord`, the hash of the token, is in `record.rs`) |
//! | `vault.rs` | the seam for a store that keeps the seeds and checks codes itself |
//! | `postgres/` | [`PgStore`]: the trait on a fleet's PostgreSQL database (docs/fleet.md) |
//! | `offline/` | [`FleetStore`]: a fleet host's store, with logins from offline packs while the database is away |

#![forbid(unsafe_code)]

pub mod commit;
pub mod crypto;
pub mod encoding;
pub mod error;
pub mod health;
pub mod link;
pub mod offline;
pub mod postgres;
pub mod record;
pub mod recovery;
mod sled;
#[cfg(test)]
mod tests;
pub mod throttle;
pub mod vault;

pub use commit::{Durable, own_writes};
pub use offline::FleetStore;
pub use postgres::PgStore;
pub use sled::SledStore;

use crate::error::Result;
use crate::store::record::{
    Attempt, Charge, ConfirmOutcome, ImportOutcome, Pending, StepOutcome, Token, UserRecord,
};
use crate::store::recovery::RecoverySet;
use kron_common::config::ThrottleConfig;

/// The operations the login logic needs, each atomic for one user.
pub trait Store: Send + Sync {
    fn get(&self, user: &str) -> Result<Option<UserRecord>>;
    /// Up to `limit` stored users after `after` (from the first with `None`), sorted by name
    /// in the backend's order (bytes in sled, the database's collation in PostgreSQL): `List`,
    /// `ListPage`, the exports and `kronctl fleet push` (of a host's own sled store) walk the
    /// store a page at a time. A backend reads only that page, so otpd's memory stays bounded
    /// at any number of users; there is no "every user" read here to fall back on.
    fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, UserRecord)>>;
    /// Charges one attempt unless the user is in backoff ("count a failure" before checking).
    fn charge_attempt(&self, user: &str, now: u64, config: &ThrottleConfig) -> Result<Attempt>;
    /// [`UserRecord::charge_and_accept`]: the charge and a TOTP code's step, atomically.
    fn charge_and_accept(
        &self,
        user: &str,
        step: Option<u64>,
        now: u64,
        config: &ThrottleConfig,
    ) -> Result<(Attempt, Option<StepOutcome>)>;
    /// Accepts time step `step` for `user` if it is later than every step accepted before.
    fn accept_step(&self, user: &str, step: u64, now: u64) -> Result<StepOutcome>;
    /// Saves a pending enrollment unless a confirmed token exists.
    fn save_pending(
        &self,
        user: &str,
        pending: Pending,
    ) -> Result<std::result::Result<(), ConfirmOutcome>>;
    /// Turns the pending enrollment the code was checked against into the confirmed token;
    /// takes back the code's charge only if `charge` says one was made.
    fn confirm(
        &self,
        user: &str,
        expected: &Pending,
        step: u64,
        now: u64,
        charge: Charge,
    ) -> Result<ConfirmOutcome>;
    /// Deletes what `kronctl reset` removes ([`UserRecord::reset`]). True if anything existed.
    fn reset(&self, user: &str) -> Result<bool>;
    /// Applies `change` atomically. It may run more than once under contention,
    /// so it must be a pure function of the record (results go to variables it sets each run).
    fn modify(&self, user: &str, change: &mut dyn FnMut(&mut UserRecord)) -> Result<()>;
    /// Clears the throttle of `user`. True if there was anything to clear.
    fn unlock(&self, user: &str) -> Result<bool>;
    /// Replaces the recovery set of `user`. False if the user has no token.
    fn set_recovery(&self, user: &str, set: RecoverySet) -> Result<bool>;
    /// Uses up one recovery code by its hash; the number left, or `None` if it is not valid.
    fn use_recovery(&self, user: &str, hash: &[u8], now: u64) -> Result<Option<usize>>;
    /// Stores an imported record unless a confirmed token exists and `replace` is false;
    /// see [`UserRecord::absorb`] for `same_token`.
    fn import(
        &self,
        user: &str,
        record: UserRecord,
        replace: bool,
        same_token: &dyn Fn(&Token) -> bool,
    ) -> Result<ImportOutcome>;
    /// Blocks until every change so far is durable. Only for what must be on the device before
    /// something leaves otpd other than a reply (an email or SMS with a code, say).
    fn flush(&self) -> Result<()>;
    /// A write of nothing that matters, as a charge makes: the answer for a name that is no
    /// account charges no record, and without this its reply would come back sooner than a real
    /// account's and tell the two apart. On this host's disk, one counted like a charge
    /// ([`own_writes`]); in the fleet's database, a commit (`kron.pace`).
    fn paced_write(&self) -> Result<()> {
        Ok(())
    }
    /// Resolves once write number `write` ([`own_writes`]) and every write before it are
    /// durable; at once for 0. Every reply waits for the writes of its own call (`service.rs`),
    /// so a reply never reports a change that a crash could undo.
    fn durable_through(&self, write: u64) -> Durable;
    /// Where the seeds are checked: `None` when the records hold them sealed under otpd's key
    /// (sled), `Some` when the store keeps them and checks codes itself (PostgreSQL).
    fn vault(&self) -> Option<&dyn vault::Vault> {
        None
    }
    /// The fleet's database, for `kronctl fleet status` and `push`; `None` on one host.
    fn fleet(&self) -> Option<&PgStore> {
        None
    }
    /// A fleet host's offline packs and journal, for `kronctl fleet status` and `offline-add`.
    fn offline(&self) -> Option<&offline::Offline> {
        None
    }
}
