//! Durable state behind a small trait. Every operation is atomic per user and durable before it
//! returns, so a reply that says "done" survives a crash or restart. sled 0.34.7 is the backend.
//!
//! Durable means on the device, not just in the kernel: sled's own `flush` writes its log with
//! `sync_file_range`, which neither flushes the disk's write cache nor records a grown file
//! size, so every flush here is followed by `fdatasync` of sled's log file. Concurrent callers
//! share flushes (group commit, [`GroupCommit`]): each waits for one flush that started after
//! its own write, so N simultaneous logins cost about one flush, not N in a row.

use crate::config::ThrottleConfig;
use crate::error::{Error, Result};
use crate::record::{
    Attempt, ConfirmOutcome, ImportOutcome, Pending, StepOutcome, Token, UserRecord,
};
use crate::recovery::RecoverySet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The operations the login logic needs, each atomic for one user.
pub trait Store: Send + Sync {
    fn get(&self, user: &str) -> Result<Option<UserRecord>>;
    /// Every stored user, sorted by name.
    fn list(&self) -> Result<Vec<(String, UserRecord)>>;
    /// Charges one attempt unless the user is in backoff ("count a failure" before checking).
    /// Not flushed by itself: the success or failure that follows is, before any reply.
    fn charge_attempt(&self, user: &str, now: u64, config: &ThrottleConfig) -> Result<Attempt>;
    /// Accepts time step `step` for `user` if it is later than every step accepted before.
    fn accept_step(&self, user: &str, step: u64, now: u64) -> Result<StepOutcome>;
    /// Saves a pending enrollment unless a confirmed token exists.
    fn save_pending(
        &self,
        user: &str,
        pending: Pending,
    ) -> Result<std::result::Result<(), ConfirmOutcome>>;
    /// Turns the pending enrollment the code was checked against into the confirmed token.
    fn confirm(
        &self,
        user: &str,
        expected: &Pending,
        step: u64,
        now: u64,
    ) -> Result<ConfirmOutcome>;
    /// Deletes what `kronctl reset` removes ([`UserRecord::reset`]). True if anything existed.
    fn reset(&self, user: &str) -> Result<bool>;
    /// Applies `change` atomically and durably. It may run more than once under contention,
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
    /// Makes every change so far durable.
    fn flush(&self) -> Result<()>;
}

pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    /// sled's log (`DIR/db`), opened again only to `fdatasync` it after sled's flush.
    log: File,
    commits: GroupCommit,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, which is made 0700.
    pub fn open(dir: &Path) -> Result<SledStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Store(format!("{}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Store(format!("{}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir)
            // Bounded cache: otpd's memory must stay small at a million users.
            .cache_capacity(16 * 1024 * 1024)
            .mode(sled::Mode::LowSpace)
            .open()?;
        let users = db.open_tree("users")?;
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| Error::Store(format!("{}: {e}", log_path.display())))?;
        Ok(SledStore {
            db,
            users,
            log,
            commits: GroupCommit::default(),
        })
    }

    /// Applies `change` atomically (compare-and-swap loop) and makes it durable before
    /// returning. `change` gets the current record (default if absent) and returns its result;
    /// it may run more than once under contention, so it must be a pure function of the record.
    fn update<R>(&self, user: &str, change: impl FnMut(&mut UserRecord) -> R) -> Result<R> {
        let outcome = self.update_unflushed(user, change)?;
        self.sync()?;
        Ok(outcome)
    }

    /// Returns once everything written before the call is on the device (group commit).
    fn sync(&self) -> Result<()> {
        self.commits.sync(|| {
            self.db.flush()?;
            self.log
                .sync_data()
                .map_err(|e| Error::Store(format!("fdatasync of the store log: {e}")))
        })
    }

    /// [`SledStore::update`] without the flush.
    fn update_unflushed<R>(
        &self,
        user: &str,
        mut change: impl FnMut(&mut UserRecord) -> R,
    ) -> Result<R> {
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
                return Ok(outcome);
            }
        }
    }
}

fn decode(user: &str, bytes: &[u8]) -> Result<UserRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Store(format!("record of {user} is unreadable: {e}")))
}

fn encode(record: &UserRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::Store(e.to_string()))
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
        self.update_unflushed(user, |record| record.charge_attempt(now, config))
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
        self.sync()
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

/// Group commit: callers that need their writes durable share flushes. A caller needs a flush
/// that *started* after its write (one already running may have missed it); whoever finds no
/// flush running starts the next one for everyone waiting, the rest sleep until it finishes.
/// At most one flush runs at a time, and a caller waits for at most two.
#[derive(Default)]
struct GroupCommit {
    state: Mutex<Commits>,
    finished: Condvar,
}

#[derive(Default)]
struct Commits {
    /// Flushes started so far (the running one, if any, is number `started`).
    started: u64,
    /// The last flush that finished.
    finished: u64,
    running: bool,
    /// The last flush that failed, and why.
    failed: Option<(u64, String)>,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Commits> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once a flush that started after this call has finished; its error, if it (or a
    /// later one that covered this caller) failed.
    fn sync(&self, flush: impl Fn() -> Result<()>) -> Result<()> {
        let mut state = self.lock();
        let needed = state.started + 1;
        loop {
            if state.finished >= needed {
                return match &state.failed {
                    Some((number, reason)) if *number >= needed => {
                        Err(Error::Store(reason.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            state.started += 1;
            let number = state.started;
            drop(state);
            // Whatever happens in `flush` (even a panic), the flush ends and waiters move on.
            let mut done = FlushDone {
                commits: self,
                number,
                failure: Some("the store flush panicked".into()),
            };
            done.failure = flush().err().map(|e| e.to_string());
            drop(done);
            state = self.lock();
        }
    }
}

/// Marks flush `number` finished (failed if `failure` is set) and wakes the waiters.
struct FlushDone<'a> {
    commits: &'a GroupCommit,
    number: u64,
    failure: Option<String>,
}

impl Drop for FlushDone<'_> {
    fn drop(&mut self) {
        let mut state = self.commits.lock();
        state.running = false;
        state.finished = self.number;
        if let Some(reason) = self.failure.take() {
            state.failed = Some((self.number, reason));
        }
        drop(state);
        self.commits.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::token;
    use std::sync::Arc;

    fn enrolled_store(dir: &Path) -> SledStore {
        let store = SledStore::open(dir).unwrap();
        let pending = Pending {
            token: token(1),
            expires: 1000,
            at_login: false,
            delivered: None,
        };
        store
            .save_pending("alice", pending.clone())
            .unwrap()
            .unwrap();
        assert_eq!(
            store.confirm("alice", &pending, 10, 100).unwrap(),
            ConfirmOutcome::Confirmed
        );
        store
    }

    #[test]
    fn racing_acceptances_of_one_step_yield_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(enrolled_store(dir.path()));
        let winners: usize = (0..16)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store.accept_step("alice", 11, 200).unwrap() == StepOutcome::Accepted
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(winners, 1);
    }

    #[test]
    fn group_commit_covers_every_caller_with_shared_flushes() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let commits = Arc::new(GroupCommit::default());
        let writes = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicU64::new(0));
        let callers = 32;
        let threads: Vec<_> = (0..callers)
            .map(|_| {
                let (commits, writes, durable, flushes) = (
                    commits.clone(),
                    writes.clone(),
                    durable.clone(),
                    flushes.clone(),
                );
                std::thread::spawn(move || {
                    let mine = writes.fetch_add(1, Ordering::SeqCst) + 1;
                    commits
                        .sync(|| {
                            flushes.fetch_add(1, Ordering::SeqCst);
                            let covered = writes.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            durable.fetch_max(covered, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                    assert!(
                        durable.load(Ordering::SeqCst) >= mine,
                        "returned before durable"
                    );
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(
            flushes >= 1 && flushes < callers,
            "{flushes} flushes for {callers} callers"
        );
    }

    #[test]
    fn group_commit_reports_failures_and_survives_a_panic() {
        let commits = GroupCommit::default();
        assert!(
            commits
                .sync(|| Err(Error::Store("disk on fire".into())))
                .is_err()
        );
        assert!(commits.sync(|| Ok(())).is_ok(), "a later flush succeeds");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commits.sync(|| panic!("flush panicked"))
        }));
        assert!(panicked.is_err());
        assert!(
            commits.sync(|| Ok(())).is_ok(),
            "no caller hangs after a panic"
        );
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = enrolled_store(dir.path());
            assert_eq!(
                store.accept_step("alice", 12, 200).unwrap(),
                StepOutcome::Accepted
            );
            store
                .charge_attempt("alice", 300, &ThrottleConfig::default())
                .unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let record = store.get("alice").unwrap().unwrap();
        assert_eq!(record.last_step, Some(12));
        assert_eq!(record.failures, 1);
        assert_eq!(
            store.accept_step("alice", 12, 201).unwrap(),
            StepOutcome::Replayed
        );
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn reset_and_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled_store(dir.path());
        let config = ThrottleConfig::default();
        for _ in 0..5 {
            store.charge_attempt("alice", 500, &config).unwrap();
        }
        assert!(store.get("alice").unwrap().unwrap().is_locked(500));
        assert!(store.unlock("alice").unwrap());
        assert!(!store.get("alice").unwrap().unwrap().is_locked(500));
        assert!(!store.unlock("nobody").unwrap());
        assert!(
            store.get("nobody").unwrap().is_none(),
            "unlock creates nothing"
        );
        assert!(store.reset("alice").unwrap());
        assert!(!store.reset("alice").unwrap());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn corrupt_record_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .users
            .insert("mallory", b"not json".as_slice())
            .unwrap();
        assert!(store.get("mallory").is_err());
        assert!(store.accept_step("mallory", 1, 1).is_err());
        assert_eq!(
            store.users.get("mallory").unwrap().unwrap().as_ref(),
            b"not json"
        );
    }
}
