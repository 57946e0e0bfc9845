//! Durable state behind a small trait. Every operation is atomic per user. Writes return once
//! they are in sled; [`Store::durable_through`] resolves once they are on the device, and every
//! D-Bus reply waits for its call's writes (service.rs), so a reply that says "done" survives a
//! crash or restart.
//! sled 0.34.7 is the backend.
//!
//! Durable means on the device, not just in the kernel: sled's own `flush` writes its log with
//! `sync_file_range`, which neither flushes the disk's write cache nor records a grown file
//! size, so every flush here is followed by `fdatasync` of sled's log file. Concurrent callers
//! share flushes (group commit, [`GroupCommit`]), so N simultaneous logins cost about one flush,
//! not N in a row.

use crate::encoding::{decode, encode};
use crate::error::{Error, Result};
use crate::record::{
    Attempt, ConfirmOutcome, ImportOutcome, Pending, StepOutcome, Token, UserRecord,
};
use crate::recovery::RecoverySet;
use kron_common::config::ThrottleConfig;
use std::cell::Cell;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// The operations the login logic needs, each atomic for one user.
pub trait Store: Send + Sync {
    fn get(&self, user: &str) -> Result<Option<UserRecord>>;
    /// Every stored user, sorted by name.
    fn list(&self) -> Result<Vec<(String, UserRecord)>>;
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
    /// Resolves once write number `write` ([`own_writes`]) and every write before it are
    /// durable; at once for 0. Every reply waits for the writes of its own call (`service.rs`),
    /// so a reply never reports a change that a crash could undo.
    fn durable_through(&self, write: u64) -> Durable;
}

pub struct SledStore {
    users: sled::Tree,
    commits: Arc<GroupCommit>,
    /// Stops the flusher thread when the store goes (declared last: dropped after the rest).
    _flusher: Flusher,
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
            // A small cache: otpd's memory must stay small at a million users, and a record
            // read from the kernel's page cache costs microseconds. At a million users and
            // 5,000 logins, 16 MiB gave 71 MiB resident, 2 MiB 64 MiB (docs/performance.md).
            .cache_capacity(2 * 1024 * 1024)
            .mode(sled::Mode::LowSpace)
            .open()?;
        let users = db.open_tree("users")?;
        // sled's log (`DIR/db`), opened again only to `fdatasync` it after sled's flush.
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| Error::Store(format!("{}: {e}", log_path.display())))?;
        let (commits, flusher) = GroupCommit::start(move || {
            db.flush()?;
            log.sync_data()
                .map_err(|e| Error::Store(format!("fdatasync of the store log: {e}")))
        })?;
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

/// Group commit: every write counts itself in `written`; a flusher thread makes them durable
/// in batches. A caller that must not answer before its writes are on the device waits for a
/// flush that covers them: asynchronously ([`Durable`], so no thread sits in the wait) or
/// blocking ([`GroupCommit::wait`]). One flush runs at a time and covers every write counted
/// before it started, so N simultaneous callers share about one flush instead of queueing
/// for N. Nothing to wait for (nothing written since the last flush) costs nothing.
pub struct GroupCommit {
    written: AtomicU64,
    state: Mutex<Commits>,
    /// The flusher waits here for work.
    work: Condvar,
    /// Blocking waiters wait here for a flush to finish.
    finished: Condvar,
}

#[derive(Default)]
struct Commits {
    /// The highest write count a waiter needs durable.
    wanted: u64,
    /// Every write up to this count is on the device.
    durable: u64,
    /// The last failed flush: the writes it should have covered, and why it failed.
    failed: Option<(u64, String)>,
    /// Asynchronous waiters, woken after every flush.
    wakers: Vec<Waker>,
    stopping: bool,
}

impl Commits {
    /// How a wait for write count `needed` ends: `None` while it must go on.
    fn outcome(&self, needed: u64) -> Option<Result<()>> {
        if self.durable >= needed {
            return Some(Ok(()));
        }
        match &self.failed {
            Some((covered, reason)) if *covered >= needed => {
                Some(Err(Error::Store(reason.clone())))
            }
            _ => None,
        }
    }

    /// Asks the flusher for a flush that covers write count `needed`, unless already asked.
    fn ask(&mut self, needed: u64, work: &Condvar) {
        if self.wanted < needed {
            self.wanted = needed;
            work.notify_one();
        }
    }
}

impl GroupCommit {
    /// Starts the flusher thread, which runs `flush` (sled's flush and `fdatasync`) whenever
    /// someone waits, until the returned handle is dropped.
    fn start(flush: impl Fn() -> Result<()> + Send + 'static) -> Result<(Arc<Self>, Flusher)> {
        let commits = Arc::new(GroupCommit {
            written: AtomicU64::new(0),
            state: Mutex::new(Commits::default()),
            work: Condvar::new(),
            finished: Condvar::new(),
        });
        let flusher = commits.clone();
        let thread = std::thread::Builder::new()
            .name("otpd-flusher".into())
            .spawn(move || flusher.run(flush))
            .map_err(|e| Error::System(format!("cannot start the store flusher: {e}")))?;
        Ok((
            commits.clone(),
            Flusher {
                commits,
                thread: Some(thread),
            },
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Commits> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one write. Called after the write is in sled, so a flush that starts later
    /// covers it.
    fn wrote(&self) {
        let count = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        LAST_WRITE.with(|last| last.set(count));
    }

    /// Resolves once write number `write` and every one before it are durable.
    pub fn durable_through(self: &Arc<Self>, write: u64) -> Durable {
        Durable {
            commits: self.clone(),
            needed: write,
        }
    }

    /// Blocks the calling thread until every write counted so far is durable.
    fn wait(&self) -> Result<()> {
        let needed = self.written.load(Ordering::SeqCst);
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.outcome(needed) {
                return outcome;
            }
            state.ask(needed, &self.work);
            state = self
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The flusher thread: one flush at a time while anyone waits.
    fn run(&self, flush: impl Fn() -> Result<()>) {
        let mut state = self.lock();
        loop {
            let done = state.durable.max(state.failed.as_ref().map_or(0, |f| f.0));
            if state.wanted <= done {
                if state.stopping {
                    return;
                }
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            drop(state);
            // Read before the flush starts: every write counted so far is in sled already.
            let covers = self.written.load(Ordering::SeqCst);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&flush))
                .unwrap_or_else(|_| Err(Error::Store("the store flush panicked".into())));
            state = self.lock();
            match outcome {
                Ok(()) => state.durable = state.durable.max(covers),
                Err(e) => state.failed = Some((covers, e.to_string())),
            }
            for waker in state.wakers.drain(..) {
                waker.wake();
            }
            self.finished.notify_all();
        }
    }
}

thread_local! {
    /// The number of the last store write made on this thread ([`own_writes`]).
    static LAST_WRITE: Cell<u64> = const { Cell::new(0) };
}

/// Runs `work` and returns its result with the number of the last store write it made (0 if
/// it wrote nothing): what its reply has to wait for. `work` must not hop threads; the engine's
/// calls are synchronous. A reply may show what other calls wrote a moment before it became
/// durable; every such state only ever refuses more (a used step, a charged attempt) or is
/// what its own caller is still waiting to hear (docs/security.md).
pub fn own_writes<R>(work: impl FnOnce() -> R) -> (R, u64) {
    LAST_WRITE.with(|last| last.set(0));
    let result = work();
    (result, LAST_WRITE.with(Cell::get))
}

/// Stops the flusher thread (after the flushes already asked for) when the store is dropped.
struct Flusher {
    commits: Arc<GroupCommit>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.commits.lock().stopping = true;
        self.commits.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A future that resolves once a given write and every one before it are on the device; see
/// [`GroupCommit`]. An error if a flush that should have covered them failed.
pub struct Durable {
    commits: Arc<GroupCommit>,
    needed: u64,
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut state = self.commits.lock();
        if let Some(outcome) = state.outcome(self.needed) {
            return Poll::Ready(outcome);
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        state.ask(self.needed, &self.commits.work);
        Poll::Pending
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
        let writes = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicU64::new(0));
        let (commits, _flusher) = {
            let (writes, durable, flushes) = (writes.clone(), durable.clone(), flushes.clone());
            GroupCommit::start(move || {
                flushes.fetch_add(1, Ordering::SeqCst);
                let covered = writes.load(Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                durable.fetch_max(covered, Ordering::SeqCst);
                Ok(())
            })
            .unwrap()
        };
        let callers = 32;
        let threads: Vec<_> = (0..callers)
            .map(|_| {
                let (commits, writes, durable) = (commits.clone(), writes.clone(), durable.clone());
                std::thread::spawn(move || {
                    let mine = writes.fetch_add(1, Ordering::SeqCst) + 1;
                    commits.wrote();
                    commits.wait().unwrap();
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
    fn nothing_written_needs_no_flush_and_async_waiters_are_woken() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let flushes = Arc::new(AtomicU64::new(0));
        let counted = flushes.clone();
        let (commits, _flusher) = GroupCommit::start(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ((), none) = own_writes(|| ());
        runtime.block_on(commits.durable_through(none)).unwrap();
        commits.wait().unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 0);
        let ((), mine) = own_writes(|| commits.wrote());
        assert_eq!(mine, 1);
        runtime.block_on(commits.durable_through(mine)).unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        runtime.block_on(commits.durable_through(mine)).unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "already durable");
    }

    #[test]
    fn group_commit_reports_failures_and_survives_a_panic() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let (commits, _flusher) =
            GroupCommit::start(move || match counted.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Error::Store("disk on fire".into())),
                2 => panic!("flush panicked"),
                _ => Ok(()),
            })
            .unwrap();
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            commits.wrote();
            outcomes.push(commits.wait().is_ok());
        }
        assert_eq!(
            outcomes,
            [false, true, false, true],
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
    fn records_written_as_json_are_read_and_rewritten_in_binary() {
        let dir = tempfile::tempdir().unwrap();
        let old = enrolled_store(dir.path()).get("alice").unwrap().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let json = serde_json::to_vec(&old).unwrap();
        store.users.insert("alice", json).unwrap();
        assert_eq!(store.get("alice").unwrap().unwrap(), old);
        assert_eq!(
            store.accept_step("alice", 12, 200).unwrap(),
            StepOutcome::Accepted
        );
        assert_eq!(
            store.users.get("alice").unwrap().unwrap()[0],
            1,
            "binary now"
        );
        assert_eq!(store.get("alice").unwrap().unwrap().last_step, Some(12));
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
