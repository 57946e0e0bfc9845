//! One connection of a host's link to the fleet's database (`link.rs` keeps two of them).
//!
//! Its socket belongs to a current-thread runtime of its own, and a statement is run by the
//! thread that asks for it: tokio lets several threads `block_on` one current-thread runtime at
//! once, the first does the socket's I/O for all of them (tokio-postgres's connection is a task
//! on that runtime), the others wait for their own answer. A connection the server ended while
//! idle is found by looking at what waits in its socket, without a round trip.

use super::target::{SESSION, Target, unreachable};
use crate::error::{Error, Result, describe};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

/// Longest a login's statement (milliseconds of work) may take before the database counts as
/// away: the login is then refused or checked offline. Under pam_kron's default timeout (5 s)
/// with room for a connect before it ([`super::link`]), so that a database that went silent
/// (its machine dead, a firewall that drops) leaves the login time to be checked offline
/// rather than given up by the module; above the host role's `lock_timeout` (2 s), so a row
/// held by another transaction refuses its own login, not the whole link.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The same for a long statement ([`super::link::Link::query_long`]: an offline pack's
/// bcrypts, every user), which no login waits for.
pub(super) const LONG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection of the link, with the runtime its socket is registered with. Shared by the
/// statements in flight on it; the last one to let go closes it.
pub(super) struct Connection {
    client: Client,
    /// The connection's task: aborted to close the connection while statements still hold it.
    task: tokio::task::AbortHandle,
    /// Current-thread: the threads in `block_on` do the socket's I/O themselves. `None` only
    /// while the connection is dropped.
    runtime: Option<Runtime>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The connection task, and with it the socket, goes with its runtime.
        if let Some(runtime) = self.runtime.take() {
            let_go(runtime);
        }
    }
}

/// Drops a connection's runtime from any thread. One dropped the ordinary way waits for its
/// blocking threads, which tokio refuses (panics) in an asynchronous context, and that is where
/// the link's last holder may well be (a background task on otpd's runtime, at shutdown). This
/// runtime never starts a blocking thread: there is nothing to wait for.
fn let_go(runtime: Runtime) {
    runtime.shutdown_background();
}

/// Why a statement on a connection brought no rows.
pub(super) enum Lost {
    Failed(tokio_postgres::Error),
    /// No answer within the statement's timeout.
    TimedOut,
    /// The connection ended (the server went away) before the answer came.
    Ended(String),
}

impl Lost {
    /// The database as unreachable through `url`, saying why.
    pub(super) fn unreachable(self, url: &str) -> Error {
        match self {
            Lost::Failed(e) => unreachable(url, &describe(&e)),
            Lost::TimedOut => unreachable(url, "no answer in time"),
            Lost::Ended(why) => unreachable(url, &why),
        }
    }
}

impl Connection {
    pub(super) fn open(target: &Target) -> Result<Connection> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::System(format!("cannot make a runtime for the database: {e}")))?;
        let (client, driver) = runtime.block_on(target.open())?;
        // Ends with an error when the server goes away; the client then reports itself closed.
        let task = runtime
            .spawn(async move {
                let _ = driver.await;
            })
            .abort_handle();
        let connection = Connection {
            client,
            task,
            runtime: Some(runtime),
        };
        connection
            .run(SESSION, &[], true, STATEMENT_TIMEOUT)
            .map_err(|lost| lost.unreachable(&target.url))?;
        Ok(connection)
    }

    /// Whether the connection's task has seen it end (the server closed it, or restarted).
    pub(super) fn ended(&self) -> bool {
        self.client.is_closed()
    }

    /// [`Connection::ended`], once the connection's task has read what the server sent while
    /// nobody polled the connection. An idle connection is polled by no thread, so when the
    /// server ends it (a restart or crash, `idle_session_timeout`, an administrator's
    /// `pg_terminate_backend`) its notice and the end of the stream wait unread in the socket;
    /// a statement sent on it would fail, and its login with it. No round trip: the runtime
    /// looks at the socket without waiting and lets the task take its turn.
    pub(super) fn ended_unseen(&self) -> bool {
        if let Some(runtime) = &self.runtime {
            read_what_arrived(runtime);
        }
        self.ended()
    }

    /// Closes the connection: its task goes the next time a thread runs the runtime (at once if
    /// one is in `block_on`, else when the last holder drops it), taking the socket with it, and
    /// every statement still waiting on it fails.
    pub(super) fn close(&self) {
        self.task.abort();
    }

    /// Runs one statement (`simple`: a plain text command, no rows) with an answer due within
    /// `timeout`, doing the I/O here unless another thread is already doing it for this
    /// connection.
    pub(super) fn run(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        simple: bool,
        timeout: Duration,
    ) -> std::result::Result<Vec<Row>, Lost> {
        let Some(runtime) = &self.runtime else {
            return Err(Lost::Ended("the connection is closed".to_owned()));
        };
        let client = &self.client;
        runtime.block_on(async {
            let statement = async {
                match simple {
                    true => client.batch_execute(sql).await.map(|()| Vec::new()),
                    false => client.query_typed(sql, params).await,
                }
            };
            match tokio::time::timeout(timeout, statement).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) if e.is_closed() => {
                    Err(Lost::Ended("the server closed the connection".to_owned()))
                }
                Ok(Err(e)) => Err(Lost::Failed(e)),
                Err(_) => Err(Lost::TimedOut),
            }
        })
    }
}

/// Lets the tasks of an idle current-thread `runtime` read what arrived on their sockets, without
/// waiting for anything. In `block_on`, a yielded task makes the runtime poll its sockets without
/// waiting before the next turn, which schedules every task whose socket has something; the
/// second yield lets those tasks run before this returns (tokio 1.x; a unit test below holds it
/// to that). When another thread is in `block_on` on the runtime, it drives the sockets itself,
/// and this returns at once.
fn read_what_arrived(runtime: &Runtime) {
    runtime.block_on(async {
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    });
}

/// Whether a database error means the session cannot go on, whatever the statement: the server
/// ends the connection (FATAL, an administrator's or a crash's shutdown, a connection failure),
/// or it has become a standby that refuses writes, where a new connection (`target_session_attrs
/// = read-write`) finds the primary. Then the connection is dropped and the database counts as
/// unreachable, as when the socket fails.
pub(super) fn session_lost(error: &tokio_postgres::error::DbError) -> bool {
    use tokio_postgres::error::{Severity, SqlState};
    let code = error.code();
    matches!(
        error.parsed_severity(),
        Some(Severity::Fatal | Severity::Panic)
    ) || code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
}

#[cfg(test)]
mod tests {
    use super::{let_go, read_what_arrived};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn an_idle_runtimes_tasks_read_what_arrived_when_looked_at() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let ended = Arc::new(AtomicBool::new(false));
        {
            let _inside = runtime.enter();
            let stream = tokio::net::UnixStream::from_std(ours).unwrap();
            let ended = ended.clone();
            // As a database connection's task: reads until its peer goes.
            runtime.spawn(async move {
                let mut buf = [0u8; 64];
                loop {
                    if stream.readable().await.is_err() {
                        break;
                    }
                    match stream.try_read(&mut buf) {
                        Ok(0) => break,
                        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                        Ok(_) | Err(_) => {}
                    }
                }
                ended.store(true, Ordering::SeqCst);
            });
        }
        // The task waits for its socket; nobody drives the runtime while the peer goes.
        read_what_arrived(&runtime);
        assert!(!ended.load(Ordering::SeqCst));
        drop(theirs);
        read_what_arrived(&runtime);
        assert!(
            ended.load(Ordering::SeqCst),
            "the task did not see its peer go"
        );
    }

    #[test]
    fn a_connections_runtime_may_go_inside_a_task() {
        let otpds = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let connections = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let task = otpds.spawn(async move { let_go(connections) });
        let dropped = otpds.block_on(task);
        assert!(dropped.is_ok(), "{dropped:?}");
    }
}
