//! Group commit: the writes of many calls made durable by one flush, and the futures replies
//! wait on.

use crate::error::{Error, Result};
use crate::store::error::StoreError;
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

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
    failed: Option<(u64, Arc<StoreError>)>,
    /// Writes that can never become durable: they were made to a store that was closed after
    /// a failure and opened again (`sled.rs`), so a later flush of the new store, which
    /// counts past them, must not report them done. Each range is `(after, through]`; the
    /// newest [`MAX_LOST_RANGES`] are kept (a waiter lives for milliseconds, a reopen
    /// happens at most about once a second).
    lost: VecDeque<(u64, u64, Arc<StoreError>)>,
    /// Asynchronous waiters, woken after every flush.
    wakers: Vec<Waker>,
    stopping: bool,
}

/// See [`Commits::lost`].
const MAX_LOST_RANGES: usize = 64;

/// The error a waiter gets for a write whose flush failed: already reported by the store.
fn refused(cause: &Arc<StoreError>) -> Error {
    let first = match cause.as_ref() {
        StoreError::Unavailable(first) => first.clone(),
        _ => cause.clone(),
    };
    Error::Store(StoreError::Unavailable(first))
}

impl Commits {
    /// How a wait for write count `needed` ends: `None` while it must go on.
    fn outcome(&self, needed: u64) -> Option<Result<()>> {
        if let Some((_, _, cause)) = self
            .lost
            .iter()
            .find(|(after, through, _)| *after < needed && needed <= *through)
        {
            return Some(Err(refused(cause)));
        }
        if self.durable >= needed {
            return Some(Ok(()));
        }
        match &self.failed {
            Some((covered, cause)) if *covered >= needed => Some(Err(refused(cause))),
            _ => None,
        }
    }

    /// The highest write count nobody needs to flush for any more.
    fn settled(&self) -> u64 {
        let failed = self.failed.as_ref().map_or(0, |f| f.0);
        let lost = self.lost.back().map_or(0, |l| l.1);
        self.durable.max(failed).max(lost)
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
    /// A group commit with no flusher yet ([`GroupCommit::spawn_flusher`]).
    pub(super) fn new() -> Arc<Self> {
        Arc::new(GroupCommit {
            written: AtomicU64::new(0),
            state: Mutex::new(Commits::default()),
            work: Condvar::new(),
            finished: Condvar::new(),
        })
    }

    /// Starts the flusher thread, which runs `flush` (sled's flush and `fdatasync`) whenever
    /// someone waits, until the returned handle is dropped.
    pub(super) fn spawn_flusher(
        self: &Arc<Self>,
        flush: impl Fn(u64) -> std::result::Result<(), StoreError> + Send + 'static,
    ) -> Result<Flusher> {
        let flusher = self.clone();
        let thread = std::thread::Builder::new()
            .name("otpd-flusher".into())
            .spawn(move || flusher.run(flush))
            .map_err(|e| Error::System(format!("cannot start the store flusher: {e}")))?;
        Ok(Flusher {
            commits: self.clone(),
            thread: Some(thread),
        })
    }

    /// [`GroupCommit::new`] and [`GroupCommit::spawn_flusher`] in one.
    #[cfg(test)]
    pub(super) fn start(
        flush: impl Fn() -> std::result::Result<(), StoreError> + Send + 'static,
    ) -> Result<(Arc<Self>, Flusher)> {
        let commits = GroupCommit::new();
        let flusher = commits.spawn_flusher(move |_| flush())?;
        Ok((commits, flusher))
    }

    /// Every write counted so far that is not durable yet never will be: the store they were
    /// made to was closed after `cause`. Their waiters get an error, now or whenever they ask.
    /// The caller makes sure no write to the closed store is still being counted.
    pub(super) fn lose_unflushed(&self, cause: Arc<StoreError>) {
        let through = self.written.load(Ordering::SeqCst);
        let mut state = self.lock();
        let after = state.durable.max(state.lost.back().map_or(0, |l| l.1));
        if through > after {
            state.lost.push_back((after, through, cause));
            if state.lost.len() > MAX_LOST_RANGES {
                state.lost.pop_front();
            }
        }
        for waker in state.wakers.drain(..) {
            waker.wake();
        }
        self.finished.notify_all();
    }

    /// The number of writes counted so far.
    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Commits> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one write. Called after the write is in sled, so a flush that starts later
    /// covers it.
    pub(super) fn wrote(&self) {
        let count = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        LAST_WRITE.with(|last| last.set(count));
    }

    /// Counts one write that the reply of the call making it does not wait for ([`own_writes`]
    /// leaves it out); flushes, and [`GroupCommit::wait`], still cover it.
    pub(super) fn wrote_unwaited(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Resolves once write number `write` and every one before it are durable.
    pub fn durable_through(self: &Arc<Self>, write: u64) -> Durable {
        Durable {
            commits: Some(self.clone()),
            needed: write,
        }
    }

    /// Blocks the calling thread until every write counted so far is durable.
    pub(super) fn wait(&self) -> Result<()> {
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
    fn run(&self, flush: impl Fn(u64) -> std::result::Result<(), StoreError>) {
        let mut state = self.lock();
        loop {
            if state.wanted <= state.settled() {
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
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flush(covers)))
                .unwrap_or(Err(StoreError::FlushPanicked));
            state = self.lock();
            match outcome {
                Ok(()) => state.durable = state.durable.max(covers),
                Err(e) => state.failed = Some((covers, Arc::new(e))),
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
pub(super) struct Flusher {
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
    /// `None` for a store whose writes are durable when they return (a database's commit).
    commits: Option<Arc<GroupCommit>>,
    needed: u64,
}

impl Durable {
    /// Resolves at once: for stores whose every write is durable before it returns.
    pub fn ready() -> Durable {
        Durable {
            commits: None,
            needed: 0,
        }
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(commits) = &self.commits else {
            return Poll::Ready(Ok(()));
        };
        let mut state = commits.lock();
        if let Some(outcome) = state.outcome(self.needed) {
            return Poll::Ready(outcome);
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        state.ask(self.needed, &commits.work);
        Poll::Pending
    }
}
