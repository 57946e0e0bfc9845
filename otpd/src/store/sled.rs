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
//!
//! After an I/O error (a full disk, say) sled refuses every later write until the store is
//! opened again, so the store closes itself on the first such error and opens again when a
//! request comes and `health.rs` says it is time. Writes that were in the closed store but not
//! yet durable are lost, and their callers told so ([`GroupCommit::lose_unflushed`]); nothing a
//! reply already confirmed is lost.

use super::Store;
use super::commit::{Durable, Flusher, GroupCommit};
use super::encoding::{decode, encode};
use super::error::StoreError;
use super::health::{Health, Report};
use super::record::{
    Attempt, Charge, ConfirmOutcome, ImportOutcome, Pending, StepOutcome, Token, UserRecord,
};
use super::recovery::RecoverySet;
use crate::clock::unix_now;
use crate::error::{Error, Result};
use kron_common::config::ThrottleConfig;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Instant;

/// Free space a full file system needs again before the store is reopened: a little more than
/// one of sled's log segments.
const REOPEN_MIN_FREE: u64 = 1024 * 1024;
/// The key [`SledStore::pace`] rewrites, in sled's default tree (records are in `users`).
const PACE_KEY: &[u8] = b"pace";

pub struct SledStore {
    shared: Arc<Shared<Open>>,
    /// Stops the flusher thread when the store goes (declared last: dropped after the rest).
    _flusher: Flusher,
}

/// What a sled database's callers and its flusher thread share: the token store's (here) and
/// a fleet host's offline store (`offline/local.rs`), each closed after an I/O error and opened
/// again as `health.rs` paces it.
pub(super) struct Shared<O> {
    dir: PathBuf,
    /// The open database; `None` while it is closed after a failure.
    open: RwLock<Option<O>>,
    commits: Arc<GroupCommit>,
    health: Health,
    /// How often the database was closed after a failure, and when last (unix time): the
    /// writes not yet durable then were lost ([`Shared::close`]).
    closings: AtomicU64,
    closed_at: AtomicU64,
}

/// One opening of a sled database, with the trees its user works on.
pub(super) trait Opening: Sized + Send + Sync + 'static {
    /// Opens (or creates) the database in `dir`.
    fn at(dir: &Path) -> std::result::Result<Self, StoreError>;
    /// The database under the trees, which the group commit flushes.
    fn sled(&self) -> &SledDb;
}

/// A sled database and its log file, opened again only to `fdatasync` it after sled's flush.
pub(super) struct SledDb {
    pub(super) db: sled::Db,
    log: File,
    /// `DIR/db`.
    log_path: PathBuf,
    /// `DIR/blobs`, and the files in it already synced, with their length then (see
    /// [`SledDb::flush`]).
    blobs: PathBuf,
    synced_blobs: Mutex<HashMap<OsString, u64>>,
}

/// One opening of the sled store.
struct Open {
    sled: SledDb,
    users: sled::Tree,
}

/// The error of `what` (a verb: "opening", "fsync of") failing on `path`, for `map_err`.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.to_owned();
    move |source| StoreError::Io { what, path, source }
}

impl SledDb {
    /// The sled database in `dir` (made 0700) and its log file.
    pub(super) fn open(dir: &Path) -> std::result::Result<SledDb, StoreError> {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("making private", dir))?;
        read_from_the_device(dir)?;
        let db = sled::Config::new()
            .path(dir)
            // A small cache: otpd's memory must stay small at a million users, and a record
            // read from the kernel's page cache costs microseconds. At a million users and
            // 5,000 logins, 16 MiB gave 71 MiB resident, 2 MiB 64 MiB (docs/performance.md).
            .cache_capacity(2 * 1024 * 1024)
            .open()?;
        let log_path = dir.join("db");
        let log = File::open(&log_path).map_err(io("opening", &log_path))?;
        let blobs = dir.join("blobs");
        // None counted as synced yet: the first flush syncs what an earlier run left.
        let synced_blobs = Mutex::new(HashMap::new());
        Ok(SledDb {
            db,
            log,
            log_path,
            blobs,
            synced_blobs,
        })
    }

    /// sled's flush, then `fsync` of any blob file it wrote since the last flush (and of their
    /// directory), then `fdatasync` of its log.
    ///
    /// sled writes a log message above a quarter of its segment (128 KiB) to a file of its own
    /// under `blobs/` with a plain `write` and never syncs it, and its recovery stops reading
    /// the log at the first blob it cannot read: a blob lost to a power cut (ext4 commits the
    /// name before the data) would take every later write with it, replies already sent
    /// included. The token store's records are far too small for that, but a leaf of the
    /// offline store's records (a pack each) is not. A reply waits for this flush, so its blobs
    /// are on the device before the log that points at them is said to be.
    fn flush(&self) -> std::result::Result<(), StoreError> {
        self.db.flush()?;
        self.sync_new_blobs()?;
        self.log
            .sync_data()
            .map_err(io("fdatasync of", &self.log_path))
    }

    /// `fsync`s the files in `blobs/` not synced before, or grown since (sled may have been
    /// writing one, for a later write, while the last flush listed it), then the directory if
    /// there were new ones. One listing of a directory that is almost always empty per flush.
    fn sync_new_blobs(&self) -> std::result::Result<(), StoreError> {
        let names = blob_names(&self.blobs)?;
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut now_synced = HashMap::with_capacity(names.len());
        let mut new = false;
        for name in names {
            let path = self.blobs.join(&name);
            // The length before the fsync: whatever is written after it shows as a change at
            // the next flush, and is synced then.
            let outcome = std::fs::metadata(&path).and_then(|metadata| {
                let length = metadata.len();
                if synced.get(&name) == Some(&length) {
                    return Ok((length, false));
                }
                File::open(&path)?.sync_all()?;
                Ok((length, true))
            });
            match outcome {
                Ok((length, fresh)) => {
                    new |= fresh;
                    now_synced.insert(name, length);
                }
                // Removed by sled since the listing (a blob it no longer needs): nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io("fsync of", &path)(source)),
            }
        }
        if new {
            File::open(&self.blobs)
                .and_then(|dir| dir.sync_all())
                .map_err(io("fsync of", &self.blobs))?;
        }
        // Only what is there now: the map stays as small as the directory.
        *synced = now_synced;
        Ok(())
    }
}

/// The names of the files in sled's `blobs` directory (none if it does not exist).
fn blob_names(blobs: &Path) -> std::result::Result<Vec<OsString>, StoreError> {
    let listing = match std::fs::read_dir(blobs) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io("listing", blobs)(source)),
    };
    listing
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(io("listing", blobs))
}

/// Makes sled's recovery read `dir`'s files from the device, not from the kernel's cache. When
/// writing cached pages back fails (EIO), Linux marks those pages clean and keeps them: a
/// store opened again after such a failure (or by the otpd started after it) would read data
/// the device never got, append after it, and have every later `fdatasync` succeed, until a
/// reboot brought the gap back and sled's recovery cut off everything after it, however
/// durable each reply had said it was. So each file is synced (what is dirty goes out, and a
/// failure refuses the open) and its cached pages are dropped. The first reads after a start
/// or a reopen come from the device.
pub(super) fn read_from_the_device(dir: &Path) -> std::result::Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(io("listing", dir))?;
    for entry in entries {
        let path = entry.map_err(io("listing", dir))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io("checking", &path))?;
        if meta.is_dir() {
            read_from_the_device(&path)?;
        } else if meta.is_file() {
            let file = File::open(&path).map_err(io("opening", &path))?;
            file.sync_all().map_err(io("fsync of", &path))?;
            nix::fcntl::posix_fadvise(
                &file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .map_err(|errno| io("dropping the cached pages of", &path)(errno.into()))?;
        }
    }
    Ok(())
}

impl Opening for Open {
    fn at(dir: &Path) -> std::result::Result<Open, StoreError> {
        let sled = SledDb::open(dir)?;
        let users = sled.db.open_tree("users")?;
        Ok(Open { sled, users })
    }

    fn sled(&self) -> &SledDb {
        &self.sled
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, which is made 0700. Store events (a failure,
    /// the recovery) are dropped: for tests and tools.
    pub fn open(dir: &Path) -> Result<SledStore> {
        SledStore::open_reporting(dir, Box::new(|_| {}))
    }

    /// Opens the store, reporting its failures and recoveries to `report` (otpd logs them,
    /// and exits on [`super::health::StoreEvent::Fatal`]).
    pub fn open_reporting(dir: &Path, report: Report) -> Result<SledStore> {
        let (shared, flusher) = Shared::open(dir, report)?;
        Ok(SledStore {
            shared,
            _flusher: flusher,
        })
    }

    /// Runs `op` on the open store (opening it again first if it was closed and that is due).
    /// An error that breaks the store closes it: the caller gets
    /// [`StoreError::Unavailable`], and the failure is reported once.
    fn with<R>(&self, op: impl FnOnce(&Open) -> Result<R>) -> Result<R> {
        self.shared.with(op)
    }

    /// Applies `change` atomically (compare-and-swap loop) and counts the write for the group
    /// commit; not durable yet ([`Store::durable_through`]). `change` gets the current record
    /// (default if absent) and returns its result; it may run more than once under contention,
    /// so it must be a pure function of the record.
    fn update<R>(&self, user: &str, mut change: impl FnMut(&mut UserRecord) -> R) -> Result<R> {
        let commits = &self.shared.commits;
        self.with(|open| {
            loop {
                let current = open.users.get(user)?;
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
                if open.users.compare_and_swap(user, current, new)?.is_ok() {
                    // Counted while the store is held open, so a close after a failure sees
                    // this write among those it loses (commit.rs).
                    commits.wrote();
                    return Ok(outcome);
                }
            }
        })
    }

    /// Rewrites one fixed key of sled's default tree (never a user's record) with what it
    /// held, so the reply waits for a flush as a charge's does.
    fn pace(&self) -> Result<()> {
        let commits = &self.shared.commits;
        self.with(|open| {
            open.sled.db.insert(PACE_KEY, &[0u8][..])?;
            commits.wrote();
            Ok(())
        })
    }

    fn exists(&self, user: &str) -> Result<bool> {
        self.with(|open| Ok(open.users.contains_key(user)?))
    }

    /// Stores raw bytes as `user`'s record (tests of old and damaged records).
    #[cfg(test)]
    pub(super) fn insert_raw(&self, user: &str, bytes: &[u8]) {
        self.with(|open| Ok(open.users.insert(user, bytes)?))
            .expect("insert");
    }

    /// The raw bytes of `user`'s record (tests).
    #[cfg(test)]
    pub(super) fn raw(&self, user: &str) -> Option<Vec<u8>> {
        self.with(|open| Ok(open.users.get(user)?))
            .expect("get")
            .map(|v| v.to_vec())
    }

    /// Fails the open store as an I/O error would (tests of recovery).
    #[cfg(test)]
    pub(super) fn break_with(&self, error: std::io::Error) {
        self.shared
            .close(Arc::new(StoreError::Sled(sled::Error::Io(error))));
    }
}

impl<O: Opening> Shared<O> {
    /// Opens the database in `dir` and starts its group commit's flusher thread (which stops
    /// when the returned [`Flusher`] goes); failures and recoveries go to `report`.
    pub(super) fn open(dir: &Path, report: Report) -> Result<(Arc<Shared<O>>, Flusher)> {
        let open = O::at(dir)?;
        let commits = GroupCommit::new();
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            open: RwLock::new(Some(open)),
            commits: commits.clone(),
            health: Health::new(report),
            closings: AtomicU64::new(0),
            closed_at: AtomicU64::new(0),
        });
        let flushing = shared.clone();
        let flusher = commits.spawn_flusher(move |covers| flushing.flush(covers))?;
        Ok((shared, flusher))
    }

    /// How often the database was closed after a failure so far, and when last (unix time;
    /// 0: never). Read the count first: a close counts itself after it set the time.
    pub(super) fn closings(&self) -> (u64, u64) {
        let count = self.closings.load(Ordering::SeqCst);
        (count, self.closed_at.load(Ordering::SeqCst))
    }

    /// The group commit: writes are counted on it (inside [`Shared::with`]) and waited for.
    pub(super) fn commits(&self) -> &Arc<GroupCommit> {
        &self.commits
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<O>> {
        self.open.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on the open database (opening it again first if it was closed and that is
    /// due). An error that breaks the database closes it: the caller gets
    /// [`StoreError::Unavailable`], and the failure is reported once.
    pub(super) fn with<R>(&self, op: impl FnOnce(&O) -> Result<R>) -> Result<R> {
        let outcome = {
            let mut guard = self.read();
            if guard.is_none() {
                drop(guard);
                self.reopen()?;
                guard = self.read();
            }
            match guard.as_ref() {
                Some(open) => op(open),
                None => Err(self.unavailable()),
            }
        };
        match outcome {
            Err(Error::Store(e)) if e.breaks_the_store() => {
                let cause = Arc::new(e);
                self.close(cause.clone());
                Err(Error::Store(StoreError::Unavailable(cause)))
            }
            other => other,
        }
    }

    /// The error for a request while the store is closed.
    fn unavailable(&self) -> Error {
        Error::Store(StoreError::Unavailable(self.health.cause()))
    }

    /// Opens the store again if that is due; `Err` (refusing the request) otherwise.
    fn reopen(&self) -> Result<()> {
        let now = Instant::now();
        let cause = self
            .health
            .due(now)
            .map_err(|cause| Error::Store(StoreError::Unavailable(cause)))?;
        if cause.is_out_of_space() && !has_room(&self.dir) {
            self.health.postponed(now);
            return Err(Error::Store(StoreError::Unavailable(cause)));
        }
        let mut open = self.open.write().unwrap_or_else(PoisonError::into_inner);
        if open.is_some() {
            return Ok(());
        }
        match O::at(&self.dir) {
            Ok(reopened) => {
                *open = Some(reopened);
                self.health
                    .reopened(self.commits.written(), now.elapsed(), Instant::now());
                Ok(())
            }
            Err(e) => {
                self.health.reopen_failed(e, now.elapsed(), Instant::now());
                Err(Error::Store(StoreError::Unavailable(cause)))
            }
        }
    }

    /// Closes the store after `cause`, once: the writes in it that are not durable are lost.
    pub(super) fn close(&self, cause: Arc<StoreError>) {
        let mut open = self.open.write().unwrap_or_else(PoisonError::into_inner);
        let Some(closed) = open.take() else {
            return;
        };
        // The bookkeeping first, all of it under the lock: nobody holds the store (the lock is
        // exclusive), so every write it took is counted; and nobody reopens before the failure
        // is recorded (which paces reopens and starts the count to a fatal exit).
        self.commits.lose_unflushed(cause.clone());
        self.closed_at.store(unix_now(), Ordering::SeqCst);
        self.closings.fetch_add(1, Ordering::SeqCst);
        // Dropped still under the lock, so sled's file lock is gone before anyone reopens.
        // sled's own drop ends with `sync_all().unwrap()`, which panics on the very errors
        // only a sync sees (a journal aborted, a cache flush the disk failed): what it leaves
        // undone is the one flush that failed already (the panic's own message goes to
        // stderr, the journal). The failure is recorded after it, so the pause before a
        // reopen counts from when the store is really closed.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(closed)));
        let event = self.health.record_failure(cause, Instant::now());
        drop(open);
        // Reported once the lock is let go: the log line may wait on syslog, and requests
        // waiting for the lock are refused at once meanwhile.
        if let Some(event) = event {
            self.health.report(event);
        }
    }

    /// The group commit's flush: everything counted up to `covers` onto the device.
    fn flush(&self, covers: u64) -> std::result::Result<(), StoreError> {
        let outcome = match self.read().as_ref() {
            Some(open) => open.sled().flush(),
            // Closed: whatever was written to it is lost already (`close`).
            None => return Err(StoreError::Unavailable(self.health.cause())),
        };
        match outcome {
            Ok(()) => {
                self.health.flushed(covers, Instant::now());
                Ok(())
            }
            Err(e) => {
                let cause = Arc::new(e);
                self.close(cause.clone());
                Err(StoreError::Unavailable(cause))
            }
        }
    }
}

/// One user of a scan of the `users` tree: the key is the name, the value the record.
fn entry(entry: sled::Result<(sled::IVec, sled::IVec)>) -> Result<(String, UserRecord)> {
    let (key, value) = entry?;
    let user = String::from_utf8_lossy(&key).into_owned();
    let record = decode(&user, &value)?;
    Ok((user, record))
}

/// Whether the file system under `dir` has room for the store to work again. Root may use the
/// blocks reserved for it, so the free blocks count, not the available ones.
fn has_room(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir).map_or(true, |fs| {
        fs.blocks_free().saturating_mul(fs.fragment_size()) >= REOPEN_MIN_FREE
    })
}

impl Store for SledStore {
    fn get(&self, user: &str) -> Result<Option<UserRecord>> {
        self.with(|open| {
            open.users
                .get(user)?
                .map(|bytes| decode(user, &bytes))
                .transpose()
        })
    }

    /// sled's iterators are lazy: the range scan reads and decodes the `limit` records it
    /// returns and no more.
    fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, UserRecord)>> {
        use std::ops::Bound;
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes()),
            None => Bound::Unbounded,
        };
        self.with(|open| {
            open.users
                .range::<&[u8], _>((start, Bound::Unbounded))
                .take(limit)
                .map(entry)
                .collect()
        })
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
        charge: Charge,
    ) -> Result<ConfirmOutcome> {
        self.update(user, |record| record.confirm(expected, step, now, charge))
    }

    fn reset(&self, user: &str) -> Result<bool> {
        self.update(user, UserRecord::reset)
    }

    fn modify(&self, user: &str, change: &mut dyn FnMut(&mut UserRecord)) -> Result<()> {
        self.update(user, change)
    }

    fn unlock(&self, user: &str) -> Result<bool> {
        if !self.exists(user)? {
            return Ok(false);
        }
        self.update(user, UserRecord::clear_failures)
    }

    fn set_recovery(&self, user: &str, set: RecoverySet) -> Result<bool> {
        if !self.exists(user)? {
            return Ok(false);
        }
        self.update(user, |record| record.set_recovery(set.clone()))
    }

    fn use_recovery(&self, user: &str, hash: &[u8], now: u64) -> Result<Option<usize>> {
        self.update(user, |record| record.use_recovery(hash, now))
    }

    fn flush(&self) -> Result<()> {
        self.shared.commits.wait()
    }

    fn paced_write(&self) -> Result<()> {
        self.pace()
    }

    fn durable_through(&self, write: u64) -> Durable {
        self.shared.commits.durable_through(write)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A value large enough for sled to write it as a blob file: the flush syncs it and knows
    /// it afterwards; a blob sled removed is forgotten.
    #[test]
    fn a_flush_syncs_the_blobs_sled_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledDb::open(dir.path()).unwrap();
        sled.flush().unwrap();
        assert!(sled.synced_blobs.lock().unwrap().is_empty());
        let tree = sled.db.open_tree("big").unwrap();
        tree.insert("one", vec![7u8; 200 * 1024]).unwrap();
        sled.flush().unwrap();
        let known = |sled: &SledDb| {
            let mut names: Vec<OsString> =
                sled.synced_blobs.lock().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        let on_disk = |sled: &SledDb| {
            let mut names = blob_names(&sled.blobs).unwrap();
            names.sort();
            names
        };
        let blobs = on_disk(&sled);
        assert!(
            !blobs.is_empty(),
            "sled wrote no blob: the test tests nothing"
        );
        assert_eq!(known(&sled), blobs);
        // A blob that grew after it was synced (sled was still writing it) is synced again.
        let first = blobs[0].clone();
        sled.synced_blobs.lock().unwrap().insert(first.clone(), 1);
        sled.flush().unwrap();
        let length = std::fs::metadata(sled.blobs.join(&first)).unwrap().len();
        assert_eq!(sled.synced_blobs.lock().unwrap()[&first], length);
        tree.remove("one").unwrap();
        sled.flush().unwrap();
        assert_eq!(known(&sled), on_disk(&sled));
    }
}
