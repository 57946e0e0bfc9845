//! The two statements of a login, a user's row (BeginLogin) and a code check (Answer), and how
//! concurrent logins share them (docs/fleet.md, "Decisions"): while one of a kind is in flight,
//! the others queue and go as one statement (`kron.get_users`, `kron.check_codes`, schema
//! version 5). A lone read is sent alone (`kron.get_user`); a lone code check goes as a batch of
//! one, whose row lock waits are bounded, so one busy row cannot hold the host's only lane.
//!
//! What a batch's answer means decides what happens next, and nothing is ever sent twice once
//! it may have been done:
//! - the database refused the batch (a row busy for over 100 ms, an unreadable seed key file,
//!   an older schema): its transaction rolled back, so each request is sent again, alone
//!   (`kron.check_code`, which waits for its row until otpd gives up on the statement), by its
//!   own thread, outside the lane; whatever is refused then fails only its own login;
//! - the database could not be reached: every request is told so (and may be checked offline);
//! - the batch ran but its answer cannot be read: it may have committed, so every request of it
//!   fails (closed), and none is sent again.

use super::PgStore;
use super::batch::Batcher;
use super::link::{column, database_error};
use super::row::UserRow;
use crate::error::{Error, Result};
use crate::store::record::StepOutcome;
use crate::store::vault::CodeOutcome;
use kron_common::config::ThrottleConfig;
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use zeroize::Zeroizing;

/// Requests sent in one statement at most; `kron.check_codes` and `kron.get_users` refuse more.
pub const MAX_BATCH: usize = 64;

/// Statements of one kind a host has in flight at once: one read and one check at most, each
/// carrying whatever queued meanwhile. One lane made fewer, larger batches than two and left the
/// database more of the CPU: 64 callers on three hosts 3,224 to 3,390 logins/s (p99 39 to 42 ms)
/// against 2,644 to 2,991/s (p99 44 to 54 ms), alternated (docs/performance.md, "Fleet mode").
pub const LANES: usize = 1;

/// What a code check found, and the step it accepted.
pub type CheckAnswer = (CodeOutcome, Option<u64>);

/// One code check: the arguments of `kron.check_code`.
#[derive(Clone)]
pub struct Check {
    user: String,
    code: Zeroizing<String>,
    now: i64,
    skew: i32,
    charge: bool,
    free: i32,
    base: i64,
    max: i64,
    sent: Option<String>,
}

/// A batch's answer to one request: `None` when it is to be sent again, alone, by the thread
/// that asked (after the database refused the batch; in parallel, outside the lanes).
type Batched<A> = Result<Option<A>>;

/// One kind of request, as a statement alone and as a batch.
struct Statements<Q, A> {
    /// What a batch of them is called in the log ("code checks").
    what: &'static str,
    /// Why the database may refuse such a batch, for the log.
    refused_when: &'static str,
    /// One request as its own statement (every schema has it).
    alone: fn(&PgStore, &Q) -> Result<A>,
    /// Several as one statement (schema version 5), whose rows start with the position `k`.
    together: fn(&PgStore, &[&Q]) -> Result<Vec<Row>>,
    /// Whether a lone request in its lane also goes as `together`: for statements whose batch
    /// form bounds its waits (a code check's row lock) and the form alone does not.
    lone_together: bool,
    /// A request's answer from the rest of its row.
    read: fn(&Row) -> Result<A>,
}

const READS: Statements<String, Option<String>> = Statements {
    what: "user reads",
    refused_when: "a schema older than version 5",
    alone: PgStore::read_alone,
    together: PgStore::read_together,
    lone_together: false,
    read: |row| column::<Option<String>>(row, 1),
};

const CHECKS: Statements<Check, CheckAnswer> = Statements {
    what: "code checks",
    refused_when: "a row busy for over 100 ms, an unreadable seed key file, or a schema older \
                   than version 5",
    alone: PgStore::check_alone,
    together: PgStore::check_together,
    lone_together: true,
    read: |row| checked(row, 1),
};

impl PgStore {
    /// The user's row (no seed), if the fleet knows the user.
    pub(super) fn row(&self, user: &str) -> Result<Option<UserRow>> {
        self.ask(&self.reads, user.to_owned(), &READS)?
            .map(|text| UserRow::parse(&text))
            .transpose()
    }

    fn read_alone(&self, user: &String) -> Result<Option<String>> {
        let row = self
            .link
            .query_one("SELECT kron.get_user($1)::text", &[(user, Type::TEXT)])?;
        column::<Option<String>>(&row, 0)
    }

    fn read_together(&self, batch: &[&String]) -> Result<Vec<Row>> {
        self.link.query(
            "SELECT k, user_row::text FROM kron.get_users($1)",
            &[(&batch, Type::TEXT_ARRAY)],
        )
    }

    /// [`crate::store::vault::Vault::check_code`], and the step an accepted code took (an
    /// offline host remembers it: from then on only later steps pass offline there).
    pub fn check_code_step(
        &self,
        user: &str,
        code: &str,
        now: u64,
        skew: u8,
        charge: Option<&ThrottleConfig>,
        sent: Option<&str>,
    ) -> Result<CheckAnswer> {
        let (free, base, max) = charge.map(super::throttle).unwrap_or((0, 0, 0));
        let check = Check {
            user: user.to_owned(),
            code: Zeroizing::new(code.to_owned()),
            now: super::int(now),
            skew: i32::from(skew),
            charge: charge.is_some(),
            free,
            base,
            max,
            sent: sent.map(str::to_owned),
        };
        self.ask(&self.checks, check, &CHECKS)
    }

    /// One check as `kron.check_code`, which every schema since version 2 has: a check of a
    /// refused batch, sent again outside the lane (so a host whose database is not yet at
    /// version 5 still logs users in).
    fn check_alone(&self, check: &Check) -> Result<CheckAnswer> {
        let row = self.link.query_one(
            "SELECT outcome, until, accepted_step \
             FROM kron.check_code($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                (&check.user, Type::TEXT),
                (&check.code.as_str(), Type::TEXT),
                (&check.now, Type::INT8),
                (&check.skew, Type::INT4),
                (&check.charge, Type::BOOL),
                (&check.free, Type::INT4),
                (&check.base, Type::INT8),
                (&check.max, Type::INT8),
                (&check.sent, Type::TEXT),
            ],
        )?;
        checked(&row, 0)
    }

    fn check_together(&self, batch: &[&Check]) -> Result<Vec<Row>> {
        fn each<'a, T>(batch: &[&'a Check], field: impl Fn(&'a Check) -> T) -> Vec<T> {
            batch.iter().map(|check| field(check)).collect()
        }
        self.link.query(
            "SELECT k, outcome, until, accepted_step \
             FROM kron.check_codes($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                (&each(batch, |c| c.user.as_str()), Type::TEXT_ARRAY),
                (&each(batch, |c| c.code.as_str()), Type::TEXT_ARRAY),
                (&each(batch, |c| c.now), Type::INT8_ARRAY),
                (&each(batch, |c| c.skew), Type::INT4_ARRAY),
                (&each(batch, |c| c.charge), Type::BOOL_ARRAY),
                (&each(batch, |c| c.free), Type::INT4_ARRAY),
                (&each(batch, |c| c.base), Type::INT8_ARRAY),
                (&each(batch, |c| c.max), Type::INT8_ARRAY),
                (&each(batch, |c| c.sent.as_deref()), Type::TEXT_ARRAY),
            ],
        )
    }

    /// Answers `request` through `batcher`: with whatever else is waiting, or, after the
    /// database refused its batch, alone.
    fn ask<Q: Clone, A>(
        &self,
        batcher: &Batcher<Q, Option<A>>,
        request: Q,
        statements: &Statements<Q, A>,
    ) -> Result<A> {
        let send = |batch: &[&Q]| self.send(batch, statements);
        match batcher.submit(request.clone(), &send)? {
            Some(answer) => Ok(answer),
            None => (statements.alone)(self, &request),
        }
    }

    /// Sends a batch, while it holds its lane (so that others queue behind it). A lone request
    /// goes alone unless its kind's batch form is the one that bounds its waits.
    fn send<Q, A>(&self, batch: &[&Q], statements: &Statements<Q, A>) -> Vec<Batched<A>> {
        if let [request] = batch
            && !statements.lone_together
        {
            return vec![(statements.alone)(self, request).map(Some)];
        }
        let each = |answer: &dyn Fn() -> Batched<A>| batch.iter().map(|_| answer()).collect();
        match (statements.together)(self, batch) {
            Ok(rows) => in_order(batch.len(), &rows, statements.read),
            Err(Error::Unreachable(why)) => each(&|| Err(Error::Unreachable(why.clone()))),
            Err(refused) => {
                self.refusals.say(&format!(
                    "fleet database refused a statement of {} {} ({refused}); each is sent \
                     again alone (is it {}? kronctl fleet init upgrades the schema)",
                    batch.len(),
                    statements.what,
                    statements.refused_when
                ));
                each(&|| Ok(None))
            }
        }
    }
}

/// Each request's answer from a batch's rows, whose first column `k` is the request's position
/// (from 1) and the rest its answer (`read`). The batch ran: if its answer cannot be read
/// whole, every request fails and none is sent again.
fn in_order<A>(count: usize, rows: &[Row], read: impl Fn(&Row) -> Result<A>) -> Vec<Batched<A>> {
    let answers = rows
        .iter()
        .map(|row| Ok((column::<i32>(row, 0)?, read(row)?)))
        .collect::<Result<Vec<_>>>()
        .and_then(|pairs| by_position(count, pairs));
    match answers {
        Ok(answers) => answers.into_iter().map(|answer| Ok(Some(answer))).collect(),
        Err(e) => {
            let why = e.to_string();
            (0..count)
                .map(|_| {
                    Err(database_error(format!(
                        "fleet database: the answer to a batch could not be read: {why}"
                    )))
                })
                .collect()
        }
    }
}

/// `count` answers from (position from 1, answer) pairs: each position exactly once.
fn by_position<A>(count: usize, pairs: Vec<(i32, A)>) -> Result<Vec<A>> {
    let mut answers: Vec<Option<A>> = (0..count).map(|_| None).collect();
    for (k, answer) in pairs {
        let slot = usize::try_from(k)
            .ok()
            .and_then(|k| k.checked_sub(1))
            .and_then(|index| answers.get_mut(index))
            .ok_or_else(|| database_error(format!("position {k} is not in the batch")))?;
        if slot.replace(answer).is_some() {
            return Err(database_error(format!("position {k} answered twice")));
        }
    }
    answers
        .into_iter()
        .enumerate()
        .map(|(index, answer)| {
            answer.ok_or_else(|| database_error(format!("position {} unanswered", index + 1)))
        })
        .collect()
}

/// The outcome, the time a throttle ends and the accepted step, from `row` starting at column
/// `first`.
fn checked(row: &Row, first: usize) -> Result<CheckAnswer> {
    let outcome: String = column(row, first)?;
    let outcome = match outcome.as_str() {
        "not-totp" => CodeOutcome::NotTotp,
        "accepted" => CodeOutcome::Step(StepOutcome::Accepted),
        "replayed" => CodeOutcome::Step(StepOutcome::Replayed),
        "no-token" => CodeOutcome::Step(StepOutcome::NoToken),
        "throttled" => CodeOutcome::Throttled {
            until: super::unsigned(column(row, first + 1)?),
        },
        "wrong" => CodeOutcome::Wrong,
        other => {
            return Err(database_error(format!(
                "fleet database: unknown outcome {other:?}"
            )));
        }
    };
    let step = column::<Option<i64>>(row, first + 2)?.map(super::unsigned);
    Ok((outcome, step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_put_back_in_the_order_of_the_requests() {
        let pairs = vec![(3, 'c'), (1, 'a'), (2, 'b')];
        assert_eq!(by_position(3, pairs).unwrap(), vec!['a', 'b', 'c']);
    }

    #[test]
    fn a_missing_a_repeated_or_a_stray_position_is_an_error() {
        assert!(by_position(3, vec![(1, 'a'), (3, 'c')]).is_err());
        assert!(by_position(2, vec![(1, 'a'), (1, 'b'), (2, 'c')]).is_err());
        assert!(by_position(2, vec![(1, 'a'), (2, 'b'), (3, 'c')]).is_err());
        assert!(by_position(2, vec![(0, 'a'), (1, 'b'), (2, 'c')]).is_err());
        assert!(by_position(1, vec![(-1, 'a'), (1, 'b')]).is_err());
    }
}
