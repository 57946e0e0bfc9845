//! Group commit: the writes of many calls made durable by one flush, and the futures replies
//! wait on.

use crate::error::{Error, Result};
use std::cell::Cell;
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
    pub(super) fn start(
        flush: impl Fn() -> Result<()> + Send + 'static,
    ) -> Result<(Arc<Self>, Flusher)> {
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
    pub(super) fn wrote(&self) {
        let count = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        LAST_WRITE.with(|last| last.set(count));
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
