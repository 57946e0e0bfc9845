//! The store on a fleet's PostgreSQL database (docs/fleet.md): every host of the fleet sees the
//! same users, and a code is accepted once across all of them.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`PgStore`]: the `Store` trait and the `Vault` seam as calls of the database's functions |
//! | `link.rs` | the connections (at most two), reconnecting (in the background while the database is away), fail-fast while down |
//! | `connection.rs` | one connection: its own runtime, run by the thread that needs it; a statement with its timeout; an end the server sent while it was idle |
//! | `batch.rs` | concurrent requests of one kind gathered into batches (no thread of its own) |
//! | `login_path.rs` | a login's two statements (a user's row, a code check), alone or batched |
//! | `target.rs` | where the link connects: `[fleet] url` with otpd's settings (TLS, timeouts, keepalives), the password file |
//! | `tls.rs` | rustls against `ca_file`, client certificates, trusted files |
//! | `row.rs` | a user row (JSON, no seed) and the engine's `UserRecord` |
//! | `schema.rs` | the versioned migrations (`sql/NNN_*.sql`), `fleet init` and `fleet add-host` |
//! | `admin.rs` | `fleet status` and `fleet log` |
//! | `audit.rs` | every decision into the insert-only audit table, batched in the background |
//! | `sql/` | the migrations: tables and roles, the SECURITY DEFINER functions hosts may call, offline packs and their journal's replay |
//!
//! Hosts hold no seed: a host's role may execute the functions the migrations grant it
//! (`sql/002_functions.sql`, `003_offline.sql`, and `005_batches.sql`'s batched forms) and
//! nothing else; codes are checked inside the database against seeds encrypted under a key
//! file on the database server. Each call is one statement and commits before it returns, so
//! nothing waits for a group commit here ([`Durable::ready`]); a fleet host's offline store
//! does (`store/offline/`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod batch;
mod connection;
pub mod link;
mod login_path;
pub mod row;
pub mod schema;
pub mod target;
pub mod tls;

use super::record::{
    Attempt, Charge, ConfirmOutcome, ImportOutcome, Pending, StepOutcome, Token, UserRecord,
};
use super::recovery::RecoverySet;
use super::vault::{Checked, Vault};
use super::{Durable, Store};
use crate::error::{Error, Result};
use crate::sparse_log::SparseLog;
use batch::Batcher;
use kron_common::config::{FleetConfig, ThrottleConfig};
use link::{Link, column, database_error};
use login_path::{Check, CheckAnswer, LANES, MAX_BATCH};
use row::{UserRow, algorithm_name, json, pending_id};
use std::sync::Arc;
use target::Target;
use tokio::runtime::Handle;
use tokio_postgres::types::Type;
use zeroize::Zeroizing;

/// Writes of the contact and outbox retried this often when other hosts change the same user.
const MAX_RETRIES: usize = 32;

/// The store of a fleet host.
pub struct PgStore {
    link: Arc<Link>,
    /// This host's name in the fleet (the `host` key, else the machine's host name).
    host: String,
    /// Code checks of concurrent logins, sent together (`batch.rs`).
    checks: Batcher<Check, Option<CheckAnswer>>,
    /// Users' rows read by concurrent logins, likewise: the row as JSON, if the user has one.
    reads: Batcher<String, Option<Option<String>>>,
    /// Refused statements, logged at most once a minute each (under load every batch would
    /// be), one log per kind so one kind's lines do not hide another's: batches, a pacing
    /// write, a page of users.
    refusals: SparseLog,
    pacing_refusals: SparseLog,
    page_refusals: SparseLog,
}

impl PgStore {
    /// A store on the database `config` names. Nothing is connected yet: otpd starts (and
    /// refuses logins, fail closed) while the database is away.
    pub fn open(
        config: &FleetConfig,
        host: String,
        runtime: Handle,
        log: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Result<PgStore> {
        let client_cert = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        let target = Target::new(
            &config.url,
            &config.ca_file,
            config.password_file.as_deref(),
            client_cert,
        )?;
        let link = Link::new(target, runtime, log);
        Ok(PgStore {
            refusals: refusal_log(&link),
            pacing_refusals: refusal_log(&link),
            page_refusals: refusal_log(&link),
            link,
            host,
            checks: Batcher::new(LANES, MAX_BATCH),
            reads: Batcher::new(LANES, MAX_BATCH),
        })
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn boolean(&self, sql: &str, user: &str) -> Result<bool> {
        let row = self.link.query_one(sql, &[(&user, Type::TEXT)])?;
        column::<bool>(&row, 0)
    }

    fn charge(&self, user: &str, now: u64, config: &ThrottleConfig) -> Result<Attempt> {
        let (free, base, max) = throttle(config);
        let row = self.link.query_one(
            "SELECT kron.charge($1, $2, $3, $4, $5)",
            &[
                (&user, Type::TEXT),
                (&int(now), Type::INT8),
                (&free, Type::INT4),
                (&base, Type::INT8),
                (&max, Type::INT8),
            ],
        )?;
        Ok(match column::<i64>(&row, 0)? {
            0 => Attempt::Allowed,
            until => Attempt::Throttled {
                until: unsigned(until),
            },
        })
    }
}

/// A log of refused statements, into otpd's log as the link's own reports go.
fn refusal_log(link: &Arc<Link>) -> SparseLog {
    let reporter = Arc::clone(link);
    SparseLog::new(move |line| reporter.report(line))
}

fn not_here(what: &str) -> Error {
    database_error(format!(
        "{what} is done inside the fleet database, never with a seed on this host"
    ))
}

/// A unix time or step as PostgreSQL's bigint.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn throttle(config: &ThrottleConfig) -> (i32, i64, i64) {
    (
        i32::try_from(config.free_attempts).unwrap_or(i32::MAX),
        int(config.base_delay),
        int(config.max_delay),
    )
}

impl Store for PgStore {
    fn get(&self, user: &str) -> Result<Option<UserRecord>> {
        self.row(user)?.map(|row| row.record()).transpose()
    }

    /// One statement over the primary key's index (`kron.list_users_after`, schema version
    /// 13). A database that refuses it (a schema older than 13) is logged, and the page taken
    /// from `kron.list_users()` instead: bounded here still, though the database then reads
    /// every user for each page.
    fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, UserRecord)>> {
        // Every name sorts after "" (names are never empty).
        let after = after.unwrap_or("");
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
            [(&after, Type::TEXT), (&limit, Type::INT4)];
        let rows = match self.link.query_long(
            "SELECT u::text FROM kron.list_users_after($1, $2) u",
            &params,
        ) {
            Err(e @ Error::Unreachable(_)) => return Err(e),
            Err(refused) => {
                self.page_refusals.say(&format!(
                    "fleet database: reading a page of users failed ({refused}); each page \
                     reads every user until `kronctl fleet init` brings the schema to \
                     version {}",
                    schema::CURRENT
                ));
                self.link.query_long(
                    "SELECT u::text FROM kron.list_users() u WHERE u->>'name' > $1 \
                     ORDER BY u->>'name' LIMIT $2",
                    &params,
                )?
            }
            Ok(rows) => rows,
        };
        rows.iter()
            .map(|row| {
                let parsed = UserRow::parse(&column::<String>(row, 0)?)?;
                Ok((parsed.name.clone(), parsed.record()?))
            })
            .collect()
    }

    fn charge_attempt(&self, user: &str, now: u64, config: &ThrottleConfig) -> Result<Attempt> {
        self.charge(user, now, config)
    }

    fn charge_and_accept(
        &self,
        _user: &str,
        _step: Option<u64>,
        _now: u64,
        _config: &ThrottleConfig,
    ) -> Result<(Attempt, Option<StepOutcome>)> {
        Err(not_here("checking a code"))
    }

    fn accept_step(&self, _user: &str, _step: u64, _now: u64) -> Result<StepOutcome> {
        Err(not_here("accepting a step"))
    }

    fn save_pending(
        &self,
        _user: &str,
        _pending: Pending,
    ) -> Result<std::result::Result<(), ConfirmOutcome>> {
        Err(not_here("storing an enrollment"))
    }

    fn confirm(
        &self,
        _user: &str,
        _expected: &Pending,
        _step: u64,
        _now: u64,
        _charge: Charge,
    ) -> Result<ConfirmOutcome> {
        Err(not_here("confirming an enrollment"))
    }

    fn reset(&self, user: &str) -> Result<bool> {
        self.boolean("SELECT kron.reset($1)", user)
    }

    /// One commit in the database (`kron.pace`, schema version 12), as an account's charge
    /// makes. A database that refuses it (a schema older than 12) is logged, not an error: the
    /// answer it paces is a refusal either way.
    fn paced_write(&self) -> Result<()> {
        match self.link.query("SELECT kron.pace()", &[]) {
            Ok(_) => Ok(()),
            Err(e @ Error::Unreachable(_)) => Err(e),
            Err(e) => {
                self.pacing_refusals.say(&format!(
                    "fleet database: pacing an unknown name's answer failed ({e}); \
                     run `kronctl fleet init` to bring the schema to version {}",
                    schema::CURRENT
                ));
                Ok(())
            }
        }
    }

    /// Optimistic: reads the row, applies `change`, and writes the contact, the outbox and the
    /// counters a sent code changes back only if no other host changed the row meanwhile (one
    /// conditional UPDATE; nothing is locked across the round trips). Steps and tokens are never
    /// written this way. A pending enrollment `change` removes or replaces is dropped: its seed
    /// is in the database, so an older one cannot be put back from here.
    fn modify(&self, user: &str, change: &mut dyn FnMut(&mut UserRecord)) -> Result<()> {
        for _ in 0..MAX_RETRIES {
            let row = self.row(user)?;
            let before = row
                .as_ref()
                .map(UserRow::record)
                .transpose()?
                .unwrap_or_default();
            let mut after = before.clone();
            change(&mut after);
            if after == before {
                return Ok(());
            }
            let version = row.as_ref().map(|r| r.version);
            let contact = json(&after.contact)?;
            let outbox = json(&after.outbox)?;
            let failures = i32::try_from(after.failures).unwrap_or(i32::MAX);
            let clear_pending = after.pending != before.pending;
            let written = self.link.query_one(
                "SELECT kron.put_user($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7, $8)",
                &[
                    (&user, Type::TEXT),
                    (&version, Type::INT8),
                    (&contact, Type::TEXT),
                    (&outbox, Type::TEXT),
                    (&int(after.last_used), Type::INT8),
                    (&failures, Type::INT4),
                    (&int(after.next_attempt), Type::INT8),
                    (&clear_pending, Type::BOOL),
                ],
            )?;
            if column::<bool>(&written, 0)? {
                return Ok(());
            }
        }
        Err(database_error(format!(
            "fleet database: {user} changed on other hosts {MAX_RETRIES} times in a row"
        )))
    }

    fn unlock(&self, user: &str) -> Result<bool> {
        self.boolean("SELECT kron.unlock($1)", user)
    }

    fn set_recovery(&self, user: &str, set: RecoverySet) -> Result<bool> {
        let set = json(&set)?;
        let row = self.link.query_one(
            "SELECT kron.set_recovery($1, $2::jsonb)",
            &[(&user, Type::TEXT), (&set, Type::TEXT)],
        )?;
        column::<bool>(&row, 0)
    }

    fn use_recovery(&self, user: &str, hash: &[u8], now: u64) -> Result<Option<usize>> {
        let hash = hex::encode(hash);
        let row = self.link.query_one(
            "SELECT kron.use_recovery($1, $2, $3)",
            &[
                (&user, Type::TEXT),
                (&hash, Type::TEXT),
                (&int(now), Type::INT8),
            ],
        )?;
        Ok(usize::try_from(column::<i32>(&row, 0)?).ok())
    }

    fn import(
        &self,
        _user: &str,
        _record: UserRecord,
        _replace: bool,
        _same_token: &dyn Fn(&Token) -> bool,
    ) -> Result<ImportOutcome> {
        Err(not_here("importing a token"))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn durable_through(&self, _write: u64) -> Durable {
        Durable::ready()
    }

    fn vault(&self) -> Option<&dyn Vault> {
        Some(self)
    }

    fn fleet(&self) -> Option<&PgStore> {
        Some(self)
    }
}

impl Vault for PgStore {
    fn check_code(
        &self,
        user: &str,
        code: &str,
        now: u64,
        skew: u8,
        charge: Option<&ThrottleConfig>,
        sent: Option<&str>,
    ) -> Result<Checked> {
        self.check_code_step(user, code, now, skew, charge, sent)
            .map(|(outcome, _)| Checked::online(outcome))
    }

    fn save_pending(&self, user: &str, pending: &Pending, seed: &[u8]) -> Result<bool> {
        let params = pending.token.params;
        let delivered = pending.delivered.map(|c| c.as_str());
        let row = self.link.query_one(
            "SELECT kron.save_pending($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                (&user, Type::TEXT),
                (&pending_id(pending), Type::BYTEA),
                (&seed, Type::BYTEA),
                (&algorithm_name(params.algorithm), Type::TEXT),
                (&i32::from(params.digits), Type::INT4),
                (&i32::try_from(params.period).unwrap_or(30), Type::INT4),
                (&int(pending.token.created), Type::INT8),
                (&int(pending.expires), Type::INT8),
                (&pending.at_login, Type::BOOL),
                (&delivered, Type::TEXT),
            ],
        )?;
        column::<bool>(&row, 0)
    }

    fn pending_seed(
        &self,
        user: &str,
        pending: &Pending,
        now: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let row = self.link.query_one(
            "SELECT kron.pending_seed($1, $2, $3)",
            &[
                (&user, Type::TEXT),
                (&pending_id(pending), Type::BYTEA),
                (&int(now), Type::INT8),
            ],
        )?;
        Ok(column::<Option<Vec<u8>>>(&row, 0)?.map(Zeroizing::new))
    }

    fn confirm_code(
        &self,
        user: &str,
        pending: &Pending,
        code: &str,
        now: u64,
        skew: u8,
    ) -> Result<Option<ConfirmOutcome>> {
        let row = self.link.query_one(
            "SELECT kron.confirm_code($1, $2, $3, $4, $5)",
            &[
                (&user, Type::TEXT),
                (&pending_id(pending), Type::BYTEA),
                (&code, Type::TEXT),
                (&int(now), Type::INT8),
                (&i32::from(skew), Type::INT4),
            ],
        )?;
        let outcome: String = column(&row, 0)?;
        Ok(match outcome.as_str() {
            "wrong" => None,
            "confirmed" => Some(ConfirmOutcome::Confirmed),
            "expired" => Some(ConfirmOutcome::Expired),
            "already-enrolled" => Some(ConfirmOutcome::AlreadyEnrolled),
            _ => Some(ConfirmOutcome::NoPending),
        })
    }

    fn import(
        &self,
        user: &str,
        record: &UserRecord,
        seed: Option<&[u8]>,
        replace: bool,
    ) -> Result<ImportOutcome> {
        let (Some(token), Some(seed)) = (&record.token, seed) else {
            return Err(Error::InvalidArgument(format!(
                "{user}: only users with a token can be imported into a fleet"
            )));
        };
        let recovery = record.recovery.as_ref().map(json).transpose()?;
        let contact = json(&record.contact)?;
        let last_step = record.last_step.map(int);
        // An import (`kronctl import`, `fleet push`), which no login waits for.
        let row = self.link.query_one_long(
            "SELECT kron.import_user($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11)",
            &[
                (&user, Type::TEXT),
                (&seed, Type::BYTEA),
                (&algorithm_name(token.params.algorithm), Type::TEXT),
                (&i32::from(token.params.digits), Type::INT4),
                (
                    &i32::try_from(token.params.period).unwrap_or(30),
                    Type::INT4,
                ),
                (&int(token.created), Type::INT8),
                (&last_step, Type::INT8),
                (&int(record.last_used), Type::INT8),
                (&recovery, Type::TEXT),
                (&contact, Type::TEXT),
                (&replace, Type::BOOL),
            ],
        )?;
        let outcome: String = column(&row, 0)?;
        Ok(match outcome.as_str() {
            "imported" => ImportOutcome::Imported,
            "replaced" => ImportOutcome::Replaced,
            _ => ImportOutcome::Kept,
        })
    }

    fn code_mac(&self, user: &str, purpose: &str, code: &str) -> Result<Vec<u8>> {
        let row = self.link.query_one(
            "SELECT kron.code_mac($1, $2, $3)",
            &[
                (&user, Type::TEXT),
                (&purpose, Type::TEXT),
                (&code, Type::TEXT),
            ],
        )?;
        column::<Vec<u8>>(&row, 0)
    }
}
