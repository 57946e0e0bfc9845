//! The store on sled 0.34.7: one key per user, each change a compare-and-swap. Writes return
//! once they are in sled; [`Store::durable_through`] resolves once they are on the device, and
//! every D-Bus reply waits for its call's writes (`dbus/service.rs`), so a reply that says
//! "done" survives a crash or restart.
//!
//! Durable means on the device, not just in the kernel: sled's own `flush` writes its log with
//! `sync_file_range`, which neither flushes the disk's write cache nor records a grown file
//! size, so every flush here is followed by `fdatasync` of sled's log file. Concurrent callers
//! share flushes (group commit, `commit.rs`), so N simultaneous logins cost about one flush,
//! not N in a row.

use super::Store;
use super::commit::{Durable, Flusher, GroupCommit};
use super::encoding::{decode, encode};
use super::record::{
    Attempt, ConfirmOutcome, ImportOutcome, Pending, StepOutcome, Token, UserRecord,
};
use super::recovery::RecoverySet;
use crate::error::{Error, Result};
use kron_common::config::ThrottleConfig;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

pub struct SledStore {
    pub(super) users: sled::Tree,
    commits: Arc<GroupCommit>,
    /// Stops the flusher thread when the store goes (declared last: dropped after the rest).
    _flusher: Flusher,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, which is made 0700.
    pub fn open(dir: &Path) -> Result<SledStore> {
        let (db, commits, flusher) = open_durable(dir)?;
        let users = db.open_tree("users")?;
        Ok(SledStore {
            users,
            commits,
            _flusher: flusher,
        })
    }

    /// Applies `change` atomically (compare-and-swap loop) and counts the write for the group
    /// commit; not durable yet ([`Store::durable`]). `change` gets the current record (default
    /// if absent) and returns its result; it may run more than once under contention, so it
    /// must be a pure function of the record.
    fn update<R>(&self, user: &str, mut change: impl FnMut(&mut UserRecord) -> R) -> Result<R> {
        loop {
            let current = self.users.get(user)?;
            let mut record = match &current {
                Some(bytes) => decode(user, bytes)?,
                None => UserRecord::default(),
            };
            let before = record.clone();
            let outcome = change(&mut record);
            if record == before {
                return Ok(outcome);
            }
            // Nothing left to keep (after a reset, say): no record at all.
            let new = match record == UserRecord::default() {
                true => None,
                false => Some(encode(&record)?),
            };
            if self.users.compare_and_swap(user, current, new)?.is_ok() {
                self.commits.wrote();
                return Ok(outcome);
            }
        }
    }
}

/// Opens (or creates) a sled database in `dir` (made 0700) with its group commit: every flush is
/// sled's own, then `fdatasync` of sled's log. Also the offline store's (`offline/local.rs`).
pub(super) fn open_durable(dir: &Path) -> Result<(sled::Db, Arc<GroupCommit>, Flusher)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Store(format!("{}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::Store(format!("{}: {e}", dir.display())))?;
    let db = sled::Config::new()
        .path(dir)
        // A small cache: otpd's memory must stay small at a million users, and a record
        // read from the kernel's page cache costs microseconds. At a million users and
        // 5,000 logins, 16 MiB gave 71 MiB resident, 2 MiB 64 MiB (docs/performance.md).
        .cache_capacity(2 * 1024 * 1024)
        .mode(sled::Mode::LowSpace)
        .open()?;
    // sled's log (`DIR/db`), opened again only to `fdatasync` it after sled's flush.
    let log_path = dir.join("db");
    let log =
        File::open(&log_path).map_err(|e| Error::Store(format!("{}: {e}", log_path.display())))?;
    let flushed = db.clone();
    let (commits, flusher) = GroupCommit::start(move || {
        flushed.flush()?;
        log.sync_data()
            .map_err(|e| Error::Store(format!("fdatasync of the store log: {e}")))
    })?;
    Ok((db, commits, flusher))
}

impl Store for SledStore {
    fn get(&self, user: &str) -> Result<Option<UserRecord>> {
        self.users
            .get(user)?
            .map(|bytes| decode(user, &bytes))
            .transpose()
    }

    fn list(&self) -> Result<Vec<(String, UserRecord)>> {
        self.users
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let user = String::from_utf8_lossy(&key).into_owned();
                let record = decode(&user, &value)?;
                Ok((user, record))
            })
            .collect()
    }

    fn charge_attempt(&self, user: &str, now: u64, config: &ThrottleConfig) -> Result<Attempt> {
        self.update(user, |record| record.charge_attempt(now, config))
    }

    fn charge_and_accept(
        &self,
        user: &str,
        step: Option<u64>,
        now: u64,
        config: &ThrottleConfig,
    ) -> Result<(Attempt, Option<StepOutcome>)> {
        self.update(user, |record| record.charge_and_accept(step, now, config))
    }

    fn accept_step(&self, user: &str, step: u64, now: u64) -> Result<StepOutcome> {
        self.update(user, |record| record.accept_step(step, now))
    }

    fn save_pending(
        &self,
        user: &str,
        pending: Pending,
    ) -> Result<std::result::Result<(), ConfirmOutcome>> {
        self.update(user, |record| record.set_pending(pending.clone()))
    }

    fn confirm(
        &self,
        user: &str,
        expected: &Pending,
        step: u64,
        now: u64,
    ) -> Result<ConfirmOutcome> {
        self.update(user, |record| record.confirm(expected, step, now))
    }

    fn reset(&self, user: &str) -> Result<bool> {
        self.update(user, UserRecord::reset)
    }

    fn modify(&self, user: &str, change: &mut dyn FnMut(&mut UserRecord)) -> Result<()> {
        self.update(user, change)
    }

    fn unlock(&self, user: &str) -> Result<bool> {
        if self.users.get(user)?.is_none() {
            return Ok(false);
        }
        self.update(user, UserRecord::clear_failures)
    }

    fn set_recovery(&self, user: &str, set: RecoverySet) -> Result<bool> {
        if self.users.get(user)?.is_none() {
            return Ok(false);
        }
        self.update(user, |record| record.set_recovery(set.clone()))
    }

    fn use_recovery(&self, user: &str, hash: &[u8], now: u64) -> Result<Option<usize>> {
        self.update(user, |record| record.use_recovery(hash, now))
    }

    fn flush(&self) -> Result<()> {
        self.commits.wait()
    }

    fn durable_through(&self, write: u64) -> Durable {
        self.commits.durable_through(write)
    }

    fn import(
        &self,
        user: &str,
        incoming: UserRecord,
        replace: bool,
        same_token: &dyn Fn(&Token) -> bool,
    ) -> Result<ImportOutcome> {
        self.update(user, |record| record.absorb(&incoming, replace, same_token))
    }
}
