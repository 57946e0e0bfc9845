//! Whether the store works, and getting it back to work without a restart.
//!
//! A backend that meets an I/O error closes itself ([`Health::failed`]): sled keeps a failed
//! write's error until the store is opened again, so nothing but a reopen mends it. While it
//! is closed every request that needs it is refused (fail closed); the next request after a
//! pause opens it again ([`Health::due`]). It counts as recovered once a write made after the
//! reopen is durable. Each change is reported once ([`StoreEvent`]): a full disk under a
//! stream of logins writes two log lines, not one per login.
//!
//! Pacing: a reopen reads the whole store, so it is tried at most once a second and never
//! more often than ten times its own duration (at most a tenth of one core goes to retries).
//! A full file system is not reopened until it has room again. A failure that is not a full
//! file system and lasts [`FATAL_AFTER`] is reported [`StoreEvent::Fatal`]: otpd then exits
//! non-zero so its supervisor restarts it (design invariant 10).

use crate::store::error::StoreError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The shortest pause between two reopen attempts.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// A reopen waits at least this many times as long as the last one took.
const REOPEN_COST_FACTOR: u32 = 10;
/// How long a failure other than a full file system may last before otpd gives up on
/// mending it in place.
pub const FATAL_AFTER: Duration = Duration::from_secs(30);

/// What the store tells the daemon, each once per change.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// The store stopped working; requests that need it are refused from now on.
    Failed { cause: Arc<StoreError> },
    /// A write is durable again, `after` the failure began.
    Recovered { after: Duration },
    /// It did not recover by itself and will not: exit non-zero so the supervisor restarts.
    Fatal { cause: Arc<StoreError> },
}

impl std::fmt::Display for StoreEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreEvent::Failed { cause } if cause.is_out_of_space() => write!(
                f,
                "store: {cause}; the file system is full, so logins and changes that must be \
                 recorded are refused until space is freed (no restart needed)"
            ),
            StoreEvent::Failed { cause } => write!(
                f,
                "store: {cause}; logins and changes that must be recorded are refused while \
                 the store is opened again"
            ),
            StoreEvent::Recovered { after } => write!(
                f,
                "store: writes are durable again after {} s; logins work",
                after.as_secs()
            ),
            StoreEvent::Fatal { cause } => write!(
                f,
                "store: still failing after {} s ({cause}); exiting so that the service \
                 manager restarts otpd",
                FATAL_AFTER.as_secs()
            ),
        }
    }
}

/// Where store events go (the daemon logs them and exits on `Fatal`).
pub type Report = Box<dyn Fn(StoreEvent) + Send + Sync>;

pub struct Health {
    state: Mutex<State>,
    report: Report,
}

enum State {
    Healthy,
    Failing(Failing),
}

struct Failing {
    since: Instant,
    /// The latest failure.
    cause: Arc<StoreError>,
    /// No reopen before this.
    next_try: Instant,
    /// The write count when the store was last opened again: a durable write past it means
    /// the store works.
    reopened_at: Option<u64>,
    fatal_reported: bool,
}

impl Health {
    pub fn new(report: Report) -> Health {
        Health {
            state: Mutex::new(State::Healthy),
            report,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store was closed after `cause`.
    pub fn failed(&self, cause: Arc<StoreError>, now: Instant) {
        if let Some(event) = self.record_failure(cause, now) {
            (self.report)(event);
        }
    }

    /// [`Health::failed`] without its report, which it returns instead: for a caller that
    /// records the failure under a lock of its own and reports once it let go (a log line may
    /// wait on syslog, and nothing should wait on it).
    pub fn record_failure(&self, cause: Arc<StoreError>, now: Instant) -> Option<StoreEvent> {
        let mut state = self.lock();
        if let State::Failing(failing) = &mut *state {
            failing.cause = cause;
            failing.reopened_at = None;
            failing.next_try = failing.next_try.max(now + REOPEN_EVERY);
            return self.fatal_due(state, now);
        }
        *state = State::Failing(Failing {
            since: now,
            cause: cause.clone(),
            next_try: now + REOPEN_EVERY,
            reopened_at: None,
            fatal_reported: false,
        });
        Some(StoreEvent::Failed { cause })
    }

    /// Reports `event` (one [`Health::record_failure`] returned).
    pub fn report(&self, event: StoreEvent) {
        (self.report)(event);
    }

    /// The latest failure (what a request refused while the store is closed is told).
    pub fn cause(&self) -> Arc<StoreError> {
        match &*self.lock() {
            State::Failing(failing) => failing.cause.clone(),
            State::Healthy => Arc::new(StoreError::Closed),
        }
    }

    /// The failure requests are refused with while the store is closed, if a reopen is due
    /// at `now`; `Err` with the failure otherwise. A reopen must follow (`reopened` or
    /// `reopen_failed`).
    pub fn due(&self, now: Instant) -> Result<Arc<StoreError>, Arc<StoreError>> {
        let mut state = self.lock();
        let State::Failing(failing) = &mut *state else {
            // Closed without a recorded failure cannot happen; reopening is the safe answer.
            return Ok(Arc::new(StoreError::Closed));
        };
        if now < failing.next_try {
            return Err(failing.cause.clone());
        }
        failing.next_try = now + REOPEN_EVERY;
        Ok(failing.cause.clone())
    }

    /// The file system is still full: no reopen yet.
    pub fn postponed(&self, now: Instant) {
        if let State::Failing(failing) = &mut *self.lock() {
            failing.next_try = now + REOPEN_EVERY;
        }
    }

    /// The store is open again (it took `took`); `written` writes were counted so far.
    pub fn reopened(&self, written: u64, took: Duration, now: Instant) {
        if let State::Failing(failing) = &mut *self.lock() {
            failing.reopened_at = Some(written);
            failing.next_try = now + REOPEN_EVERY.max(took * REOPEN_COST_FACTOR);
        }
    }

    /// Opening the store again failed with `cause` after `took`.
    pub fn reopen_failed(&self, cause: StoreError, took: Duration, now: Instant) {
        let mut state = self.lock();
        if let State::Failing(failing) = &mut *state {
            failing.cause = Arc::new(cause);
            failing.next_try = now + REOPEN_EVERY.max(took * REOPEN_COST_FACTOR);
            self.check_fatal(state, now);
        }
    }

    /// A flush covering writes up to `covers` is on the device.
    pub fn flushed(&self, covers: u64, now: Instant) {
        let mut state = self.lock();
        let State::Failing(failing) = &*state else {
            return;
        };
        if failing.reopened_at.is_some_and(|at| covers > at) {
            let after = now.saturating_duration_since(failing.since);
            *state = State::Healthy;
            drop(state);
            (self.report)(StoreEvent::Recovered { after });
        }
    }

    /// Reports `Fatal` once when a failure that freeing space will not mend has lasted too long.
    fn check_fatal(&self, state: std::sync::MutexGuard<'_, State>, now: Instant) {
        if let Some(event) = self.fatal_due(state, now) {
            (self.report)(event);
        }
    }

    /// `Fatal`, once, when it is due (see [`Health::check_fatal`]); the lock is let go.
    fn fatal_due(
        &self,
        mut state: std::sync::MutexGuard<'_, State>,
        now: Instant,
    ) -> Option<StoreEvent> {
        let State::Failing(failing) = &mut *state else {
            return None;
        };
        if failing.fatal_reported
            || failing.cause.is_out_of_space()
            || now.saturating_duration_since(failing.since) < FATAL_AFTER
        {
            return None;
        }
        failing.fatal_reported = true;
        Some(StoreEvent::Fatal {
            cause: failing.cause.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> (Arc<Mutex<Vec<String>>>, Health) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let health = Health::new(Box::new(move |event| {
            let name = match event {
                StoreEvent::Failed { .. } => "failed",
                StoreEvent::Recovered { .. } => "recovered",
                StoreEvent::Fatal { .. } => "fatal",
            };
            sink.lock().unwrap().push(name.to_owned());
        }));
        (events, health)
    }

    fn full() -> StoreError {
        StoreError::Io {
            what: "fdatasync of",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }
    }

    fn eio() -> StoreError {
        StoreError::Io {
            what: "fdatasync of",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        }
    }

    #[test]
    fn one_event_per_change_and_reopens_are_paced() {
        let (events, health) = recorder();
        let t0 = Instant::now();
        health.failed(Arc::new(full()), t0);
        for i in 0..100 {
            health.failed(Arc::new(full()), t0 + Duration::from_millis(i));
        }
        assert_eq!(
            *events.lock().unwrap(),
            ["failed"],
            "one line, not one per login"
        );
        let last = t0 + Duration::from_millis(99);
        assert!(health.due(last).is_err(), "no reopen right away");
        assert!(health.due(last + REOPEN_EVERY).is_ok());
        assert!(
            health.due(last + REOPEN_EVERY).is_err(),
            "one reopen per pause"
        );
        // A reopen that took 500 ms waits 5 s before the next.
        health.reopened(7, Duration::from_millis(500), t0 + REOPEN_EVERY);
        assert!(health.due(t0 + Duration::from_secs(5)).is_err());
        assert!(health.due(t0 + Duration::from_secs(7)).is_ok());
        health.flushed(7, t0 + Duration::from_secs(7));
        assert_eq!(events.lock().unwrap().len(), 1, "nothing new was durable");
        health.flushed(8, t0 + Duration::from_secs(8));
        assert_eq!(*events.lock().unwrap(), ["failed", "recovered"]);
        health.flushed(9, t0 + Duration::from_secs(9));
        assert_eq!(events.lock().unwrap().len(), 2);
    }

    #[test]
    fn only_failures_other_than_a_full_disk_become_fatal() {
        let (events, health) = recorder();
        let t0 = Instant::now();
        health.failed(Arc::new(full()), t0);
        health.reopen_failed(full(), Duration::ZERO, t0 + FATAL_AFTER * 10);
        assert_eq!(
            *events.lock().unwrap(),
            ["failed"],
            "a full disk is waited out"
        );
        health.reopen_failed(eio(), Duration::ZERO, t0 + FATAL_AFTER * 10);
        health.reopen_failed(eio(), Duration::ZERO, t0 + FATAL_AFTER * 11);
        assert_eq!(*events.lock().unwrap(), ["failed", "fatal"], "once");
        let (events, health) = recorder();
        health.failed(Arc::new(eio()), t0);
        health.reopen_failed(eio(), Duration::ZERO, t0 + Duration::from_secs(1));
        assert_eq!(
            *events.lock().unwrap(),
            ["failed"],
            "not before FATAL_AFTER"
        );
    }
}
