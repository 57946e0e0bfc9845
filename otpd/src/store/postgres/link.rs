//! The link to the fleet's database: at most two connections per host, reconnected by
//! themselves after a failure.
//!
//! A statement is run by the thread that asks for it (one of tokio's blocking threads: the
//! engine's), on its connection's own runtime (`connection.rs`). So a lone statement costs no
//! hand-off to another thread and back, which on this kind of machine is most of what a
//! statement on loopback costs (two wake-ups of an idle CPU each way).
//!
//! Statements are pipelined: a connection carries every statement its callers give it, one
//! after another on the wire, without waiting for the answer to the one before. The server
//! still runs them in order, each in its own transaction, but it never sits idle between them
//! while the next caller's thread wakes up (docs/performance.md, "Fleet mode"). A statement
//! goes to a connection that is up rather than one being reconnected, to one with no long
//! statement in flight (an offline pack's bcrypts take seconds: [`Link::query_long`]) rather
//! than one with, and then to the one with fewer statements in flight.
//!
//! Every statement is sent with `query_typed` (one round trip, unnamed statements, each with its
//! own Sync), so the link works through PgBouncer in transaction mode too. While the database
//! cannot be reached, calls fail with [`Error::Unreachable`] (the login is refused, fail closed,
//! or checked offline: `store/offline/`) and a connect is tried again at most once a second per
//! connection, so calls in between fail at once; the first success ends the outage. Connects are
//! made in the background and a call waits for one only briefly ([`WAIT_FOR_CONNECT`],
//! [`WAIT_WHILE_AWAY`]): a server that answers nothing (its machine dead, a firewall that drops)
//! would otherwise hold a login for the connect timeout, past pam_kron's own, where it could not
//! even be checked offline. One log line marks each change between
//! reachable and unreachable. A connection found broken is closed at once, so the statements
//! still in flight on it fail now instead of at their timeout, and a host holds no more than two
//! connections but for the moment the old socket takes to close. One the server ended while it
//! sat idle (a restart, `idle_session_timeout`) is found before a statement is sent on it and
//! replaced, so that costs no login as long as a connect takes less than [`WAIT_FOR_CONNECT`].

use super::connection::{
    Connection, LONG_STATEMENT_TIMEOUT, Lost, STATEMENT_TIMEOUT, session_lost,
};
use super::target::{Target, unreachable};
use crate::clock::unix_now;
use crate::error::{Error, Result, describe};
use crate::sparse_log::SparseLog;
use crate::store::error::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

/// Connections per host: enough for every login of a host, few enough that 10,000 hosts fit a
/// database (docs/fleet.md).
pub const CONNECTIONS: usize = 2;
/// A connection that failed is tried again after this long, not for every call.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// While the database is away, how long a statement waits for a connect from when it began: a
/// server that is back answers a connect within milliseconds on a LAN, and one that answers
/// nothing costs a login no more than this.
const WAIT_WHILE_AWAY: Duration = Duration::from_millis(500);
/// The same while the database is not known to be away (a host's first statements, a
/// connection replaced): a connect with TLS and a password takes a few round trips, and this
/// and a statement's timeout ([`STATEMENT_TIMEOUT`], 3 s) stay under pam_kron's default
/// timeout (5 s), so a login that meets a silent database can still be checked offline.
const WAIT_FOR_CONNECT: Duration = Duration::from_millis(1500);

/// One of the link's connections, and what the link remembers about it.
#[derive(Default)]
struct Slot {
    /// The live connection, if any: read by every statement, written only when it is replaced.
    live: RwLock<Option<Arc<Connection>>>,
    /// Statements on this slot: in flight, or waiting for its connection to be made.
    busy: AtomicUsize,
    /// Long statements among them ([`Link::query_long`]).
    long: AtomicUsize,
    /// Held while a connect runs (on a thread of its own, [`BackgroundConnect`]), and with it
    /// when a failed connect may be tried again.
    retry: Mutex<Retry>,
    /// When the connect under way in the background began, if one is
    /// ([`Link::wait_for_connect`]).
    background: Mutex<Option<Instant>>,
    /// Told when that connect ends.
    background_done: Condvar,
}

/// After a failed connect: not before when, and why.
#[derive(Default)]
struct Retry {
    at: Option<Instant>,
    error: String,
}

impl Retry {
    /// Whether a failed connect's second is not over yet.
    fn waiting(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() < at)
    }
}

impl Slot {
    /// A connect in the background has ended: the next statement may start another, and the
    /// ones waiting for this one look at the slot again.
    fn connect_ended(&self) {
        *lock(&self.background) = None;
        self.background_done.notify_all();
    }

    /// Whether a failed connect's second is not over yet; `None` while a connect is under way.
    fn connect_waiting(&self) -> Option<bool> {
        match self.retry.try_lock() {
            Ok(retry) => Some(retry.waiting()),
            Err(std::sync::TryLockError::Poisoned(held)) => Some(held.get_ref().waiting()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// What a statement looks for in a slot, best first: not down (a connection being made, or
    /// a failed connect's second not over), no long statement in flight, few in flight. A slot
    /// with no connection and nothing against trying is not down: it is connected again by the
    /// statement that picks it, so a host gets back to two connections after a failure.
    fn rank(&self) -> (bool, bool, usize) {
        let up = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let down =
            !up && (self.connect_waiting().unwrap_or(true) || lock(&self.background).is_some());
        (
            down,
            self.long.load(Ordering::Relaxed) > 0,
            self.busy.load(Ordering::Relaxed),
        )
    }
}

/// Counts a statement on a slot for as long as it lives.
struct Busy<'a> {
    slot: &'a Slot,
    long: bool,
}

impl<'a> Busy<'a> {
    fn start(slot: &'a Slot, long: bool) -> Busy<'a> {
        slot.busy.fetch_add(1, Ordering::Relaxed);
        if long {
            slot.long.fetch_add(1, Ordering::Relaxed);
        }
        Busy { slot, long }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.slot.busy.fetch_sub(1, Ordering::Relaxed);
        if self.long {
            self.slot.long.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connect in the background of one slot ([`Link::connect_in_background`]): tells the slot
/// when it ends, however it ends.
struct BackgroundConnect {
    link: Arc<Link>,
    index: usize,
}

impl BackgroundConnect {
    fn run(self) {
        // A failure is the slot's (its retry second) and the link's (still away) already.
        let _ = self.link.connect(&self.link.slots[self.index]);
    }
}

impl Drop for BackgroundConnect {
    fn drop(&mut self) {
        self.link.slots[self.index].connect_ended();
    }
}

/// A host's connections to the database.
pub struct Link {
    /// The link itself, for the connects it makes in the background.
    me: Weak<Link>,
    target: Target,
    runtime: Handle,
    slots: [Slot; CONNECTIONS],
    /// Which slot a tie between them goes to.
    next: AtomicUsize,
    down: AtomicBool,
    /// When `down` last changed (unix time), or when the link was made.
    since: AtomicU64,
    /// Why the database was last found unreachable: what a statement that does not wait for a
    /// connect while it is away reports.
    reason: Mutex<String>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    /// A connection the server ended while idle, replaced: at most a line a minute, so an admin
    /// sees a pooler's idle timeout that costs a connect per login, and no flood.
    replaced: SparseLog,
}

impl Link {
    /// A link that connects on first use; `log` gets one line per change of reachability.
    /// `runtime` is otpd's, where the link's background tasks (audit rows, offline packs) run.
    pub fn new(target: Target, runtime: Handle, log: Box<dyn Fn(&str) + Send + Sync>) -> Arc<Link> {
        let log: Arc<dyn Fn(&str) + Send + Sync> = Arc::from(log);
        let replaced = SparseLog::new({
            let log = log.clone();
            move |line| log(line)
        });
        Arc::new_cyclic(|me| Link {
            me: me.clone(),
            target,
            runtime,
            slots: Default::default(),
            next: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            since: AtomicU64::new(unix_now()),
            reason: Mutex::default(),
            log,
            replaced,
        })
    }

    /// Whether the last attempt to reach the database failed, and since when (unix time) that
    /// has been so (or the database has been reachable).
    pub fn state(&self) -> (bool, u64) {
        (
            self.down.load(Ordering::SeqCst),
            self.since.load(Ordering::SeqCst),
        )
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// The slot for one statement, by [`Slot::rank`]; in turn where they rank the same.
    fn slot(&self) -> usize {
        let first = self.next.fetch_add(1, Ordering::Relaxed) % CONNECTIONS;
        (0..CONNECTIONS)
            .map(|offset| (first + offset) % CONNECTIONS)
            .min_by_key(|&index| self.slots[index].rank())
            .unwrap_or(first)
    }

    /// Slot `index`'s live connection, reconnecting it if it ended (at most once a second).
    fn connection(&self, index: usize) -> Result<Arc<Connection>> {
        match live(&self.slots[index]) {
            Some(live) => Ok(live),
            None => self.wait_for_connect(index),
        }
    }

    /// A statement does not connect itself: a server that answers nothing (its machine dead, a
    /// firewall that drops) would hold it for the connect timeout (5 s for each server the URL
    /// lists), and every login behind it. The connect runs on a thread of its own
    /// ([`Link::connect_in_background`]); the statement waits for it until [`WAIT_FOR_CONNECT`]
    /// after it began ([`WAIT_WHILE_AWAY`] while the database is known to be away), and then
    /// fails (the login is refused or checked offline) while the connect goes on. A connect
    /// that outlasts the wait counts as the database away until it succeeds.
    fn wait_for_connect(&self, index: usize) -> Result<Arc<Connection>> {
        let slot = &self.slots[index];
        let wait = match self.down.load(Ordering::SeqCst) {
            true => WAIT_WHILE_AWAY,
            false => WAIT_FOR_CONNECT,
        };
        {
            let mut background = lock(&slot.background);
            if background.is_none() {
                // Only a connect holds `retry` for long, and one is under way only while
                // `background` is set: this waits for no connect, only for a look at the slot.
                let retry = lock(&slot.retry);
                if retry.waiting() {
                    // This slot's connect failed less than a second ago.
                    return Err(Error::Unreachable(retry.error.clone()));
                }
                drop(retry);
                *background = Some(Instant::now());
                drop(background);
                self.connect_in_background(index);
            }
        }
        let mut background = lock(&slot.background);
        if let Some(began) = *background {
            let until = began + wait;
            while background.is_some() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                background = slot
                    .background_done
                    .wait_timeout(background, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let under_way = background.is_some();
        drop(background);
        if let Some(live) = live(slot) {
            return Ok(live);
        }
        if under_way {
            // A connect that ended in failure has marked the database away with its reason; one
            // still under way does so here. If it succeeds, it (or the next statement that
            // passes) says the database is back.
            let error = unreachable(
                &self.target.url,
                &format!("no connection within {} ms", wait.as_millis()),
            );
            self.mark_down(&error.to_string());
            return Err(error);
        }
        Err(Error::Unreachable(lock(&self.reason).clone()))
    }

    /// Connects slot `index` on a thread of its own, not one of the runtime's: otpd's shutdown
    /// waits for the runtime's blocking threads, and a connect to a server that answers nothing
    /// takes seconds. The slot's `background` is cleared however the connect ends, also when the
    /// thread cannot start, so the next statement may start another.
    fn connect_in_background(&self, index: usize) {
        let Some(link) = self.me.upgrade() else {
            self.slots[index].connect_ended();
            return;
        };
        let connect = BackgroundConnect { link, index };
        let _ = std::thread::Builder::new()
            .name("otpd-db-connect".to_owned())
            .spawn(move || connect.run());
    }

    /// Connects `slot` unless another connect did meanwhile or its failed connect's second is
    /// not over ([`BackgroundConnect`], on a thread of its own).
    fn connect(&self, slot: &Slot) -> Result<Arc<Connection>> {
        let mut retry = slot.retry.lock().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have connected while this one waited for the lock.
        if let Some(live) = live(slot) {
            return Ok(live);
        }
        if retry.waiting() {
            return Err(Error::Unreachable(retry.error.clone()));
        }
        match Connection::open(&self.target) {
            Ok(connection) => {
                let connection = Arc::new(connection);
                *write(slot) = Some(Arc::clone(&connection));
                retry.at = None;
                self.mark_up();
                Ok(connection)
            }
            Err(e) => {
                retry.at = Some(Instant::now() + RETRY_AFTER);
                retry.error = e.to_string();
                self.mark_down(&retry.error);
                Err(e)
            }
        }
    }

    /// The database answered: if it was away, it is back.
    fn mark_up(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            self.since.store(unix_now(), Ordering::SeqCst);
            (self.log)(&format!(
                "fleet database {} is reachable again",
                self.target.url
            ));
        }
    }

    fn mark_down(&self, why: &str) {
        why.clone_into(&mut lock(&self.reason));
        if !self.down.swap(true, Ordering::SeqCst) {
            self.since.store(unix_now(), Ordering::SeqCst);
            (self.log)(&format!(
                "{why}; until it is back, logins that need the fleet database are refused, \
                 or checked offline where this host holds the user's pack"
            ));
        }
    }

    /// Writes `line` to otpd's log, as the link's own reports are.
    pub fn report(&self, line: &str) {
        (self.log)(line);
    }

    /// Runs one statement from a blocking thread (the engine's), waiting for its rows.
    pub fn query(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Vec<Row>> {
        self.statement(sql, params, false)
    }

    /// [`Link::query`] for a statement that may take seconds (an offline pack, every user) or
    /// that no login waits for (the audit rows, a journal's replay, the status, an import): the
    /// logins' statements go to the other connection while it runs, where that one is up, and
    /// its answer may take [`LONG_STATEMENT_TIMEOUT`], past which only its own connection is
    /// closed.
    pub fn query_long(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        self.statement(sql, params, true)
    }

    fn statement(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        long: bool,
    ) -> Result<Vec<Row>> {
        let index = self.slot();
        let slot = &self.slots[index];
        let _busy = Busy::start(slot, long);
        let mut connection = self.connection(index)?;
        if connection.ended_unseen() {
            // Ended while idle: nothing was sent on it, so a new one takes the statement.
            forget(slot, &connection);
            connection = self.connection(index)?;
            self.replaced.say(&format!(
                "fleet database {}: the server had ended an idle connection (a restart, \
                 idle_session_timeout, a pooler's idle timeout); connected again",
                self.target.url
            ));
        }
        let timeout = match long {
            true => LONG_STATEMENT_TIMEOUT,
            false => STATEMENT_TIMEOUT,
        };
        let lost = match connection.run(sql, params, false, timeout) {
            Ok(rows) => {
                // A statement that passes ends an outage another one declared, even one whose
                // connect succeeded just as a statement gave up waiting for it.
                if self.down.load(Ordering::Relaxed) {
                    self.mark_up();
                }
                return Ok(rows);
            }
            Err(Lost::Failed(e)) if e.as_db_error().is_some_and(|db| !session_lost(db)) => {
                return Err(database_error(format!(
                    "fleet database refused a statement: {}",
                    describe(&e)
                )));
            }
            Err(lost) => lost,
        };
        // The connection is in an unknown state (it may still answer later): closed now, and
        // the next call makes a new one.
        forget(slot, &connection);
        if matches!(lost, Lost::TimedOut) && !long {
            // No answer in seconds to a statement that is milliseconds of work: the server or
            // the way to it is gone, and the other connection goes the same way. Closed too,
            // so the statements on it fail now, not each at its timeout, and the next ones wait
            // for a connect half a second at most.
            for other in &self.slots {
                if let Some(open) = current(other) {
                    forget(other, &open);
                }
            }
        }
        let error = lost.unreachable(&self.target.url);
        self.mark_down(&error.to_string());
        Err(error)
    }

    /// [`Link::query_long`] from a task on otpd's runtime (the background tasks): the worker
    /// thread hands its other tasks on while this one waits for the database.
    pub async fn query_long_async(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        tokio::task::block_in_place(|| self.query_long(sql, params))
    }

    /// [`Link::query`] for statements that return exactly one row.
    pub fn query_one(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Row> {
        first_row(sql, self.query(sql, params)?)
    }

    /// [`Link::query_long`] for statements that return exactly one row.
    pub fn query_one_long(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Row> {
        first_row(sql, self.query_long(sql, params)?)
    }
}

fn first_row(sql: &str, rows: Vec<Row>) -> Result<Row> {
    rows.into_iter()
        .next()
        .ok_or_else(|| database_error(format!("fleet database: no row from {sql}")))
}

/// The slot's connection, unless there is none or it ended.
fn live(slot: &Slot) -> Option<Arc<Connection>> {
    current(slot).filter(|c| !c.ended())
}

/// The slot's connection, ended or not.
fn current(slot: &Slot) -> Option<Arc<Connection>> {
    slot.live
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn write(slot: &Slot) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Connection>>> {
    slot.live.write().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `mutex`, also after a panic elsewhere: what it guards stays valid at every step.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `connection` out of `slot` (unless another has replaced it already) and closes it.
fn forget(slot: &Slot, connection: &Arc<Connection>) {
    let mut live = write(slot);
    if live.as_ref().is_some_and(|c| Arc::ptr_eq(c, connection)) {
        *live = None;
    }
    drop(live);
    connection.close();
}

/// The database answered, but not as it should (refused a statement, an unexpected row).
pub fn database_error(text: String) -> Error {
    Error::Store(StoreError::Database(text))
}

/// Reads one column of a row, as a store error when the database answered something else.
pub fn column<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T> {
    row.try_get(index).map_err(|e| {
        database_error(format!(
            "fleet database: unexpected answer: {}",
            describe(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::{Busy, Slot};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    #[test]
    fn statements_avoid_a_slot_that_is_down_or_runs_a_long_one() {
        let fresh = Slot::default();
        let busy = Slot::default();
        busy.busy.store(5, Ordering::Relaxed);
        // No connection yet and nothing against trying: the next statement connects it.
        assert!(fresh.rank() < busy.rank());

        let long = Slot::default();
        let _pack = Busy::start(&long, true);
        assert!(
            busy.rank() < long.rank(),
            "a long statement outranks five short ones"
        );

        let failed = Slot::default();
        failed.retry.lock().unwrap().at = Some(Instant::now() + Duration::from_secs(60));
        assert!(
            long.rank() < failed.rank(),
            "a failed connect's second is not over"
        );
        failed.retry.lock().unwrap().at = Some(Instant::now() - Duration::from_secs(1));
        assert!(failed.rank() < busy.rank(), "tried again once it is");

        let connecting = Slot::default();
        let held = connecting.retry.lock().unwrap();
        assert!(long.rank() < connecting.rank(), "a connect is under way");
        drop(held);
        assert_eq!(connecting.rank(), fresh.rank());

        let in_background = Slot::default();
        *in_background.background.lock().unwrap() = Some(Instant::now());
        assert!(
            long.rank() < in_background.rank(),
            "a connect is under way in the background"
        );
    }

    #[test]
    fn a_statement_is_counted_until_it_ends() {
        let slot = Slot::default();
        {
            let _short = Busy::start(&slot, false);
            let _long = Busy::start(&slot, true);
            assert_eq!(slot.busy.load(Ordering::Relaxed), 2);
            assert_eq!(slot.long.load(Ordering::Relaxed), 1);
        }
        assert_eq!(slot.busy.load(Ordering::Relaxed), 0);
        assert_eq!(slot.long.load(Ordering::Relaxed), 0);
    }
}
