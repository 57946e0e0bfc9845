//! Every decision also goes to the fleet's insert-only audit table. A login never waits for
//! it: rows go into a bounded queue and one background task writes them in batches (one
//! statement per batch, gathered for a few milliseconds after the first row, so a busy host
//! sends one statement for many logins instead of one or two per login), holding a batch while
//! the database is away. If the queue fills during a
//! long outage, further rows are counted and dropped (syslog still has every line), and the
//! count is logged once rows flow again. A batch the database refuses (a revoked grant, a
//! missing partition of a partitioned audit table) is held and sent again the same way, and the
//! refusal is logged at most once a minute: the fleet's audit stopping must not go unseen.

use super::link::Link;
use crate::audit::{AuditSink, Subject};
use crate::clock::unix_now;
use crate::error::Error;
use crate::sparse_log::SparseLog;
use crate::supervise;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::types::Type;

/// Rows waiting at most; a day of a busy host's logins during an outage is far fewer.
const QUEUE: usize = 65_536;
/// Rows written by one statement at most.
const BATCH: usize = 1024;
/// How long rows are gathered after the first one before the batch is written.
const GATHER: Duration = Duration::from_millis(20);
/// Wait before writing a held batch again while the database is away.
const RETRY: Duration = Duration::from_secs(1);

struct Row {
    at: i64,
    event: String,
    user: String,
    service: String,
    rhost: String,
    tty: String,
    uid: i64,
    detail: String,
}

/// The sink `Audit` writes to besides syslog.
pub struct FleetAudit {
    queue: mpsc::Sender<Row>,
    dropped: Arc<AtomicU64>,
}

impl FleetAudit {
    /// Starts the writer task on the link's runtime; if it ever panics, `fatal` fires (otpd
    /// exits to be restarted) rather than leave rows queueing with nobody to write them.
    pub fn start(
        link: Arc<Link>,
        log: Box<dyn Fn(&str) + Send + Sync>,
        fatal: Arc<tokio::sync::Notify>,
    ) -> FleetAudit {
        let (queue, rows) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let log: supervise::Log = Arc::from(log);
        let runtime = link.runtime().clone();
        let writer = runtime.spawn(write_rows(link, rows, dropped.clone(), log.clone()));
        runtime.spawn(supervise::exit_on_panic(
            "the fleet audit writer",
            writer,
            log,
            fatal,
        ));
        FleetAudit { queue, dropped }
    }
}

impl AuditSink for FleetAudit {
    fn record(&self, event: &str, subject: &Subject<'_>, detail: &str) {
        let at = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let row = Row {
            at,
            event: event.to_owned(),
            user: subject.user.to_owned(),
            service: subject.service.to_owned(),
            rhost: subject.rhost.to_owned(),
            tty: subject.tty.to_owned(),
            uid: i64::from(subject.caller_uid),
            detail: detail.to_owned(),
        };
        if self.queue.try_send(row).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_rows(
    link: Arc<Link>,
    mut rows: mpsc::Receiver<Row>,
    dropped: Arc<AtomicU64>,
    log: supervise::Log,
) {
    let refusals = {
        let log = log.clone();
        SparseLog::new(move |line| log(line))
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if batch.is_empty() {
            match rows.recv().await {
                Some(row) => batch.push(row),
                None => return,
            }
            tokio::time::sleep(GATHER).await;
        }
        while batch.len() < BATCH {
            match rows.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
        match write(&link, &batch).await {
            Ok(()) => {
                batch.clear();
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    log(&format!(
                        "{lost} audit rows could not be queued for the fleet database (syslog has them)"
                    ));
                }
            }
            // Away: the link reports that itself, and the batch waits for it.
            Err(Error::Unreachable(_)) => tokio::time::sleep(RETRY).await,
            Err(e) => {
                refusals.say(&format!(
                    "the fleet database refused {} audit rows, held and sent again every {} s \
                     (syslog has them): {e}",
                    batch.len(),
                    RETRY.as_secs()
                ));
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn write(link: &Link, batch: &[Row]) -> crate::error::Result<()> {
    let column =
        |get: fn(&Row) -> &String| batch.iter().map(|r| get(r).clone()).collect::<Vec<_>>();
    let at: Vec<i64> = batch.iter().map(|r| r.at).collect();
    let uid: Vec<i64> = batch.iter().map(|r| r.uid).collect();
    let (event, user, service) = (
        column(|r| &r.event),
        column(|r| &r.user),
        column(|r| &r.service),
    );
    let (rhost, tty, detail) = (
        column(|r| &r.rhost),
        column(|r| &r.tty),
        column(|r| &r.detail),
    );
    link.query_long_async(
        "SELECT kron.audit_write($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            (&at, Type::INT8_ARRAY),
            (&event, Type::TEXT_ARRAY),
            (&user, Type::TEXT_ARRAY),
            (&service, Type::TEXT_ARRAY),
            (&rhost, Type::TEXT_ARRAY),
            (&tty, Type::TEXT_ARRAY),
            (&uid, Type::INT8_ARRAY),
            (&detail, Type::TEXT_ARRAY),
        ],
    )
    .await
    .map(drop)
}
