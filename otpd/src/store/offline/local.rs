//! This host's offline state, in its own sled store beside the state directory's other files
//! (`STATE_DIR/offline`): one record per user who may log in offline here, sealed under
//! `secret.key` like every secret of a sled store, and the journal of offline uses and failures
//! waiting to be replayed in the database. A use and its journal entry are one transaction, and
//! writes count in a group commit like the token store's, so a reply ("accepted offline") waits
//! until its journal entry is on the device and a SIGKILL cannot lose it. Like the token store,
//! it closes itself after an I/O error (a full disk) and opens again by itself
//! (`store/health.rs`): while it is closed, logins that need it are refused, online ones
//! included (each accepted step is remembered here), and none after it is back.
//!
//! A step accepted online goes into a tree of its own (`online_steps`: user, step, time; nothing
//! secret, so not sealed), not into the user's record, which holds the pack: at the default
//! window that record is about 30 KiB, and writing it again for every online login cost more
//! than the rest of the login here. Every read of a record takes in its user's online step, and
//! every change of a record moves it in.

use super::pack::Pack;
use crate::error::{Error, Result};
use crate::store::commit::{Durable, Flusher};
use crate::store::crypto::{Sealed, SecretKey};
use crate::store::error::StoreError;
use crate::store::health::Report;
use crate::store::sled::{Opening, Shared, SledDb};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The first byte of a stored record: postcard of a [`Sealed`] [`OfflineUser`].
const RECORD_V1: u8 = 1;
/// The first byte of a journal entry: postcard of a [`JournalEntry`] (nothing secret in it).
const ENTRY_V1: u8 = 1;
/// The first byte of an online step: postcard of an [`OnlineStep`] (nothing secret in it).
const ONLINE_V1: u8 = 1;

/// The newest step of a user accepted online here since their record last changed, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OnlineStep {
    step: u64,
    at: u64,
}

impl OnlineStep {
    /// Into `record`: its newest step and its last login here.
    fn merge_into(self, record: &mut OfflineUser) {
        record.last_step = record.last_step.max(Some(self.step));
        record.seen = record.seen.max(self.at);
    }
}

/// What this host keeps of one user for offline logins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineUser {
    /// The user's last login on this host, or `kronctl fleet offline-add` (unix time): the user
    /// keeps a pack until `offline_keep` after it.
    pub seen: u64,
    /// The newest step this host has seen used: online here, offline here, or anywhere as the
    /// database said at the last sync. Offline, only later steps are accepted.
    pub last_step: Option<u64>,
    /// The throttle as the database last said, charged here while offline.
    pub failures: u32,
    pub next_attempt: u64,
    pub last_attempt: u64,
    pub pack: Option<Pack>,
}

/// One offline event the database has not heard of yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Random: the database keeps the ids it replayed, so a second replay changes nothing.
    pub id: [u8; 16],
    pub user: String,
    /// Unix time on this host.
    pub at: u64,
    pub kind: JournalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalKind {
    /// A code accepted offline for `step` of the token `generation`.
    Use { step: u64, generation: i64 },
    /// A refused attempt (wrong code, replay), charged to the throttle.
    Failure,
}

impl JournalEntry {
    /// The step and token generation of this entry if it is an offline use by `user`.
    pub fn use_by(&self, user: &str) -> Option<(u64, i64)> {
        match self.kind {
            JournalKind::Use { step, generation } if self.user == user => Some((step, generation)),
            _ => None,
        }
    }

    pub fn new(user: &str, at: u64, kind: JournalKind) -> Result<JournalEntry> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| Error::System(format!("no randomness: {e}")))?;
        Ok(JournalEntry {
            id,
            user: user.to_owned(),
            at,
            kind,
        })
    }
}

/// The store of the offline state.
pub struct Local {
    shared: Arc<Shared<Trees>>,
    key: SecretKey,
    /// Stops the flusher thread when the store goes (declared last: dropped after the rest).
    _flusher: Flusher,
}

/// Whether the reply to the call that makes a change waits for it to be on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    Yes,
    No,
}

/// One opening of the offline store.
struct Trees {
    sled: SledDb,
    users: sled::Tree,
    journal: sled::Tree,
    online: sled::Tree,
}

impl Opening for Trees {
    fn at(dir: &Path) -> std::result::Result<Trees, StoreError> {
        let sled = SledDb::open(dir)?;
        let users = sled.db.open_tree("offline_users")?;
        let journal = sled.db.open_tree("journal")?;
        let online = sled.db.open_tree("online_steps")?;
        Ok(Trees {
            sled,
            users,
            journal,
            online,
        })
    }

    fn sled(&self) -> &SledDb {
        &self.sled
    }
}

impl Local {
    /// Opens (or creates) the offline store in `dir`; records are sealed under `key`. Its
    /// failures and recoveries go to `report`, as the token store's do.
    pub fn open(dir: &Path, key: SecretKey, report: Report) -> Result<Local> {
        let (shared, flusher) = Shared::open(dir, report)?;
        Ok(Local {
            shared,
            key,
            _flusher: flusher,
        })
    }

    pub fn get(&self, user: &str) -> Result<Option<OfflineUser>> {
        self.shared
            .with(|trees| self.read(trees, user.as_bytes(), user))
    }

    /// The record stored under `key` (`user`'s) with its online step taken in. The online step
    /// is read first: a change moving it into the record between the two reads then leaves it
    /// in one of them.
    fn read(&self, trees: &Trees, key: &[u8], user: &str) -> Result<Option<OfflineUser>> {
        let online = trees.online.get(key)?;
        let Some(bytes) = trees.users.get(key)? else {
            return Ok(None);
        };
        let mut record = self.open_record(user, &bytes)?;
        if let Some(online) = online {
            decode_online(user, &online)?.merge_into(&mut record);
        }
        Ok(Some(record))
    }

    /// Whether `user` has a record (without opening it).
    pub fn has(&self, user: &str) -> Result<bool> {
        self.shared
            .with(|trees| Ok(trees.users.contains_key(user)?))
    }

    /// The names of the users with a record, in order. Each record is then read on its own
    /// ([`Local::get`]): a record holds its pack (about 30 KiB at the default window), and a
    /// round over every user of a busy bastion host must not hold them all at once.
    pub fn names(&self) -> Result<Vec<String>> {
        self.shared.with(|trees| {
            trees
                .users
                .iter()
                .keys()
                .map(|key| Ok(String::from_utf8_lossy(&key?).into_owned()))
                .collect()
        })
    }

    /// A step of `user` accepted online at `now`: later reads of the record have it as the
    /// newest step used (if it is) and as a login here. A write no reply waits for: what the
    /// start of the next otpd makes up for (`Offline`'s start floor, mod.rs). The user's record
    /// must exist ([`Local::update`] makes it); sled orders this write with every transaction,
    /// so an offline check's change of the record either sees it or comes before it.
    pub fn used_online(&self, user: &str, step: u64, now: u64) -> Result<()> {
        self.shared.with(|trees| {
            let mut failure = None;
            trees.online.fetch_and_update(user, |old| {
                let mut online = match old.map(|bytes| decode_online(user, bytes)).transpose() {
                    Ok(online) => online.unwrap_or_default(),
                    Err(e) => {
                        failure = Some(e);
                        return old.map(<[u8]>::to_vec);
                    }
                };
                online.step = online.step.max(step);
                online.at = online.at.max(now);
                match encode_online(&online) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        failure = Some(e);
                        old.map(<[u8]>::to_vec)
                    }
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            self.shared.commits().wrote_unwaited();
            Ok(())
        })
    }

    /// Applies `change` to the record of `user` (`None`: none yet; set it to `None` to remove
    /// it) and adds the journal entry it returns, in one transaction. `change` may run more
    /// than once under contention, so it must be a pure function of the record.
    pub fn update<R>(
        &self,
        user: &str,
        now: u64,
        change: impl Fn(&mut Option<OfflineUser>) -> (R, Option<JournalKind>),
    ) -> Result<R> {
        self.change(user, now, &change, Waited::Yes)
    }

    /// [`Local::update`] for a change of the record alone that no reply waits for: it is on the
    /// device with the next flush of this store (one another call's reply waits for, or
    /// [`Local::flush`]), and a crash before that loses it. Only for what the start of
    /// the next otpd makes up for (an online step: `Offline`'s start floor, mod.rs).
    pub fn update_unwaited<R>(
        &self,
        user: &str,
        now: u64,
        change: impl Fn(&mut Option<OfflineUser>) -> R,
    ) -> Result<R> {
        self.change(user, now, &|record| (change(record), None), Waited::No)
    }

    fn change<R>(
        &self,
        user: &str,
        now: u64,
        change: &impl Fn(&mut Option<OfflineUser>) -> (R, Option<JournalKind>),
        waited: Waited,
    ) -> Result<R> {
        let template = JournalEntry::new(user, now, JournalKind::Failure)?;
        self.shared.with(|trees| {
            // The journal's key keeps entries in order; the entry's own id is random (see
            // [`JournalEntry::id`]). Both are made once, outside the retried closure.
            let key = trees.sled.db.generate_id()?.to_be_bytes();
            self.transact(trees, user, &key, &template, change, waited)
        })
    }

    /// [`Local::update`]'s transaction on the open store.
    fn transact<R>(
        &self,
        trees: &Trees,
        user: &str,
        key: &[u8],
        template: &JournalEntry,
        change: &impl Fn(&mut Option<OfflineUser>) -> (R, Option<JournalKind>),
        waited: Waited,
    ) -> Result<R> {
        let trees_changed = (&trees.users, &trees.journal, &trees.online);
        let outcome = trees_changed.transaction(|(users, journal, online)| {
            let abort = ConflictableTransactionError::Abort;
            let mut record = match users.get(user)? {
                Some(bytes) => Some(self.open_record(user, &bytes).map_err(abort)?),
                None => None,
            };
            let before = record.clone();
            // The user's online step moves into the record with this change: before it, so the
            // change sees it; or after it, into a record the change made (a step left beside no
            // record: a login whose user was dropped meanwhile).
            let take_online = |record: &mut Option<OfflineUser>| {
                let Some(record) = record.as_mut() else {
                    return Ok(false);
                };
                let Some(bytes) = online.get(user)? else {
                    return Ok(false);
                };
                decode_online(user, &bytes)
                    .map_err(abort)?
                    .merge_into(record);
                online.remove(user.as_bytes())?;
                Ok::<_, ConflictableTransactionError<Error>>(true)
            };
            let mut moved = take_online(&mut record)?;
            let (result, kind) = change(&mut record);
            if !moved {
                moved = take_online(&mut record)?;
            }
            let changed = moved || record != before;
            if changed {
                match &record {
                    Some(record) => {
                        let sealed = self.seal_record(user, record).map_err(abort)?;
                        users.insert(user.as_bytes(), sealed)?;
                    }
                    None => {
                        users.remove(user.as_bytes())?;
                    }
                }
            }
            if let Some(kind) = kind {
                let entry = JournalEntry {
                    kind,
                    ..template.clone()
                };
                journal.insert(key, encode_entry(&entry).map_err(abort)?)?;
            }
            Ok((result, changed || kind.is_some()))
        });
        match outcome {
            Ok((result, wrote)) => {
                // Counted while the store is held open (inside `with`), as the token store's
                // writes are (`store/commit.rs`).
                match (wrote, waited) {
                    (true, Waited::Yes) => self.shared.commits().wrote(),
                    (true, Waited::No) => self.shared.commits().wrote_unwaited(),
                    (false, _) => {}
                }
                Ok(result)
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// The journal, oldest first, with the keys to remove its entries by.
    pub fn journal(&self) -> Result<Vec<(sled::IVec, JournalEntry)>> {
        self.shared.with(|trees| {
            trees
                .journal
                .iter()
                .map(|entry| {
                    let (key, value) = entry?;
                    Ok((key, decode_entry(&value)?))
                })
                .collect()
        })
    }

    /// Whether no entry waits to be replayed (a look at the first key, not a count).
    pub fn journal_is_empty(&self) -> Result<bool> {
        self.shared.with(|trees| Ok(trees.journal.is_empty()))
    }

    /// Entries waiting to be replayed (none known while the store is closed).
    pub fn journal_len(&self) -> usize {
        self.shared
            .with(|trees| Ok(trees.journal.len()))
            .unwrap_or(0)
    }

    /// Removes an entry the database has taken.
    pub fn forget(&self, key: &sled::IVec) -> Result<()> {
        self.shared.with(|trees| {
            trees.journal.remove(key)?;
            self.shared.commits().wrote();
            Ok(())
        })
    }

    /// How often this store was closed after a failure, and when last (unix time): the changes
    /// no reply waited for ([`Local::update_unwaited`]) may have been lost then.
    pub fn closings(&self) -> (u64, u64) {
        self.shared.closings()
    }

    /// Blocks until every change so far is on the device.
    pub fn flush(&self) -> Result<()> {
        self.shared.commits().wait()
    }

    /// See [`crate::store::Store::durable_through`].
    pub fn durable_through(&self, write: u64) -> Durable {
        self.shared.commits().durable_through(write)
    }

    /// The online step of `user` kept beside the record, not yet moved in: (step, time).
    #[cfg(test)]
    pub(crate) fn online_step(&self, user: &str) -> Option<(u64, u64)> {
        self.shared
            .with(|trees| {
                let bytes = trees.online.get(user)?;
                bytes
                    .map(|b| decode_online(user, &b).map(|o| (o.step, o.at)))
                    .transpose()
            })
            .unwrap()
    }

    /// Fails the open store as an I/O error would (tests of recovery).
    #[cfg(test)]
    pub(crate) fn break_with(&self, error: std::io::Error) {
        self.shared
            .close(Arc::new(StoreError::Sled(sled::Error::Io(error))));
    }

    fn seal_record(&self, user: &str, record: &OfflineUser) -> Result<Vec<u8>> {
        let plain = Zeroizing::new(
            postcard::to_stdvec(record)
                .map_err(|e| Error::Store(StoreError::Offline(e.to_string())))?,
        );
        let sealed = self.key.seal(user, &plain)?;
        postcard::to_extend(&sealed, vec![RECORD_V1])
            .map_err(|e| Error::Store(StoreError::Offline(e.to_string())))
    }

    fn open_record(&self, user: &str, bytes: &[u8]) -> Result<OfflineUser> {
        let unreadable = || {
            Error::Store(StoreError::Offline(format!(
                "offline record of {user} is unreadable"
            )))
        };
        let Some((&RECORD_V1, rest)) = bytes.split_first() else {
            return Err(unreadable());
        };
        let sealed: Sealed = postcard::from_bytes(rest).map_err(|_| unreadable())?;
        let plain = self.key.open(user, &sealed)?;
        postcard::from_bytes(&plain).map_err(|_| unreadable())
    }
}

fn encode_online(online: &OnlineStep) -> Result<Vec<u8>> {
    postcard::to_extend(online, vec![ONLINE_V1])
        .map_err(|e| Error::Store(StoreError::Offline(e.to_string())))
}

fn decode_online(user: &str, bytes: &[u8]) -> Result<OnlineStep> {
    match bytes.split_first() {
        Some((&ONLINE_V1, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
    .ok_or_else(|| {
        Error::Store(StoreError::Offline(format!(
            "online step of {user} is unreadable"
        )))
    })
}

fn encode_entry(entry: &JournalEntry) -> Result<Vec<u8>> {
    postcard::to_extend(entry, vec![ENTRY_V1])
        .map_err(|e| Error::Store(StoreError::Offline(e.to_string())))
}

fn decode_entry(bytes: &[u8]) -> Result<JournalEntry> {
    match bytes.split_first() {
        Some((&ENTRY_V1, rest)) => postcard::from_bytes(rest).map_err(|e| {
            Error::Store(StoreError::Offline(format!(
                "offline journal entry is unreadable: {e}"
            )))
        }),
        _ => Err(Error::Store(StoreError::Offline(
            "offline journal entry is unreadable".into(),
        ))),
    }
}
