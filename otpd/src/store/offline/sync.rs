//! The background task that keeps a fleet host's offline side current. Each round, while the
//! database answers: the journal is replayed first (one `kron.offline_replay` per entry, each
//! taken off the journal only once the database has it; a double use it reports goes to
//! syslog), then the newest used step, token generation and throttle of every user with a pack
//! (`kron.offline_floors`), then users not seen here for `offline_keep` are dropped and packs
//! are topped up to `offline_window` ahead once less than three quarters of it is left.
//!
//! A round runs once a minute while the database answers, every two seconds while it does not
//! (so a healed link is noticed and the journal replayed within seconds), and at once when a
//! user is added or an offline decision is journaled. A round that cannot reach the database
//! stops where it is; nothing is lost. A journal entry the database refuses stops the replay,
//! not the rest of the round.

use super::local::{JournalEntry, JournalKind, OfflineUser};
use super::pack::{Chunk, Pack};
use super::{Offline, OnlineWatch};
use crate::clock::unix_now;
use crate::error::{Error, Result};
use crate::store::postgres::link::{Link, column, database_error};
use crate::supervise;
use crate::totp::TokenParams;
use kron_common::config::{Algorithm, ThrottleConfig};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::types::Type;

/// Pause between rounds while the database answers and nothing waits in the journal.
const ONLINE_EVERY: Duration = Duration::from_secs(60);
/// Pause between rounds while it does not, or while entries wait.
const OFFLINE_EVERY: Duration = Duration::from_secs(2);
/// Steps fetched by one statement at most: 120 bcrypt hashes, about 0.6 s of one database core
/// at cost 6, well inside the statement timeout.
const CHUNK: u64 = 120;

/// Where the task logs: one daemon line to syslog (authpriv) per event.
pub type Log = Box<dyn Fn(&str) + Send + Sync>;

struct Task {
    offline: Arc<Offline>,
    link: Arc<Link>,
    throttle: ThrottleConfig,
    log: supervise::Log,
    /// Journal entries kept after their replay (a check of their user in flight) whose
    /// outcome was reported: sent again, their `already:` answer is not reported twice.
    reported: Mutex<HashSet<[u8; 16]>>,
}

/// Starts the task on the link's runtime; it runs as long as otpd. If it ever panics, `fatal`
/// fires (otpd exits non-zero to be restarted): without it, journal entries would wait
/// unreplayed and a reset token's pack would keep passing here until it ran out, with otpd up.
pub fn start(
    offline: Arc<Offline>,
    link: Arc<Link>,
    throttle: ThrottleConfig,
    log: Log,
    fatal: Arc<Notify>,
) {
    let runtime = link.runtime().clone();
    let log: supervise::Log = Arc::from(log);
    let task = runtime.spawn(run(Task {
        offline,
        link,
        throttle,
        log: log.clone(),
        reported: Mutex::default(),
    }));
    runtime.spawn(supervise::exit_on_panic(
        "offline packs: the sync task",
        task,
        log,
        fatal,
    ));
}

async fn run(task: Task) {
    let mut last_error = String::new();
    loop {
        let outcome = task.round(unix_now()).await;
        let answered = match outcome {
            Ok(()) => {
                last_error.clear();
                true
            }
            Err(Error::Unreachable(_)) => false,
            Err(e) => {
                // The database answered but refused: say so once, not every round.
                let text = e.to_string();
                if text != last_error {
                    (task.log)(&format!("offline packs: {text}"));
                    last_error = text;
                }
                true
            }
        };
        let pause = match answered && task.offline.local().journal_is_empty().unwrap_or(true) {
            true => ONLINE_EVERY,
            false => OFFLINE_EVERY,
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = task.offline.wake.notified() => {}
        }
    }
}

/// A row of `kron.offline_floors`.
#[derive(Deserialize)]
struct Floor {
    name: String,
    generation: i64,
    has_token: bool,
    last_step: Option<u64>,
    #[serde(flatten)]
    counts: Counts,
}

/// A user's throttle as the database says it.
#[derive(Debug, Clone, Copy, Deserialize)]
struct Counts {
    failures: u32,
    next_attempt: u64,
    last_attempt: u64,
}

impl Counts {
    /// Into `record`. While journal entries wait (`waiting`: a refused replay, or failures made
    /// since the replay), the database's counts do not hold their failures yet, so the record's
    /// only go up: no round forgives them. Once all are in, the database's win (an unlock).
    fn apply(self, record: &mut OfflineUser, waiting: bool) {
        if waiting {
            record.failures = record.failures.max(self.failures);
            record.next_attempt = record.next_attempt.max(self.next_attempt);
            record.last_attempt = record.last_attempt.max(self.last_attempt);
        } else {
            record.failures = self.failures;
            record.next_attempt = self.next_attempt;
            record.last_attempt = self.last_attempt;
        }
    }
}

/// What `kron.offline_pack` returns.
#[derive(Deserialize)]
struct Fetched {
    generation: i64,
    algorithm: Algorithm,
    digits: u8,
    period: u64,
    last_step: Option<u64>,
    #[serde(flatten)]
    counts: Counts,
    from: u64,
    setting: String,
    hashes: Vec<String>,
}

impl Task {
    async fn round(&self, now: u64) -> Result<()> {
        // A journal entry the database refuses (reported, and sent again next round) does not
        // hold back the rest: the floors only tighten while entries wait, and they are what
        // drops the pack of a token reset meanwhile, which would otherwise keep passing here
        // until it ran out.
        let replayed = self.replay().await;
        if let Err(Error::Unreachable(_)) = replayed {
            return replayed;
        }
        if !self.offline.enabled() {
            // Offline logins were turned off: the packs go, here and in the database's list.
            for user in self.offline.local().names()? {
                self.drop_user(&user, now).await?;
            }
            return replayed;
        }
        let closings = self.offline.local().closings().0;
        let users = self.floors(now).await?;
        // Every pack user now has the newest step the database knows, online uses before a
        // crash or a closing of the offline store included.
        self.offline.lift_start_floor(closings);
        // One user's refusal (a row an administrator holds locked past the lock timeout, a
        // seed that does not decrypt) holds back nobody else's pack: the first one is
        // reported at the end of the round. Only a database gone away ends it.
        let mut refused = None;
        for user in users {
            // Read now, one at a time: a record holds its pack.
            let Some(record) = self.offline.local().get(&user)? else {
                continue;
            };
            let done = if now.saturating_sub(record.seen) > self.offline.keep {
                self.drop_user(&user, now).await
            } else {
                self.top_up(&user, &record, now).await
            };
            match done {
                Ok(()) => {}
                Err(e @ Error::Unreachable(_)) => return Err(e),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        match refused {
            Some(e) => replayed.and(Err(e)),
            None => replayed,
        }
    }

    /// Sends every journal entry to the database, oldest first, and takes each off the journal
    /// once the database has it. A second replay of an entry (a crash between the two) changes
    /// nothing there.
    async fn replay(&self) -> Result<()> {
        let journal = self.offline.local().journal()?;
        if journal.is_empty() {
            return Ok(());
        }
        let (free, base, max) = (
            i32::try_from(self.throttle.free_attempts).unwrap_or(i32::MAX),
            int(self.throttle.base_delay),
            int(self.throttle.max_delay),
        );
        let mut replayed = 0;
        for (key, entry) in journal {
            let (kind, step, generation) = match entry.kind {
                JournalKind::Use { step, generation } => ("use", Some(int(step)), Some(generation)),
                JournalKind::Failure => ("failure", None, None),
            };
            let id = entry.id.to_vec();
            let rows = self
                .link
                .query_long_async(
                    "SELECT kron.offline_replay($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        (&id, Type::BYTEA),
                        (&entry.user, Type::TEXT),
                        (&kind, Type::TEXT),
                        (&step, Type::INT8),
                        (&generation, Type::INT8),
                        (&int(entry.at), Type::INT8),
                        (&free, Type::INT4),
                        (&base, Type::INT8),
                        (&max, Type::INT8),
                    ],
                )
                .await?;
            let outcome: String = rows
                .first()
                .map(|row| column(row, 0))
                .transpose()?
                .unwrap_or_default();
            let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
            if !(outcome.starts_with("already:") && reported.contains(&entry.id)) {
                self.report(&entry.user, entry.kind, &outcome);
            }
            // A use stays while a login of its user is being checked online here: that check
            // may have been taken by the database before this replay, as new, and it looks for
            // this entry once it is answered ([`Offline::used_online`]). Sent again next round,
            // where the database answers "already".
            if matches!(entry.kind, JournalKind::Use { .. })
                && self.offline.checking_online_now(&entry.user)
            {
                reported.insert(entry.id);
                continue;
            }
            reported.remove(&entry.id);
            drop(reported);
            self.offline.local().forget(&key)?;
            replayed += 1;
        }
        // A round that only sent again a use kept for a check in flight replayed nothing new:
        // no line every two seconds while such a check lasts.
        if replayed > 0 {
            (self.log)(&format!(
                "replayed {replayed} offline journal entries in the fleet database"
            ));
        }
        Ok(())
    }

    /// Security events of a replay go to syslog too (the database wrote its audit row). An
    /// entry sent a second time, after a stop that lost the first answer, answers `already:`
    /// and the first outcome (schema version 9), which is logged then.
    fn report(&self, user: &str, kind: JournalKind, outcome: &str) {
        let JournalKind::Use { step, .. } = kind else {
            return;
        };
        let outcome = outcome.strip_prefix("already:").unwrap_or(outcome);
        if let Some(other) = outcome.strip_prefix("double-use:") {
            (self.log)(&format!(
                "security: double use: the code {user} typed for step {step} was accepted \
                 offline on this host and also on host {other} (fleet audit event double-use)"
            ));
        } else if outcome == "refused" {
            (self.log)(&format!(
                "security: the fleet database refused this host's offline use of step {step} \
                 by {user}: no pack held it (fleet audit event offline-refused)"
            ));
        } else if outcome == "retired" {
            (self.log)(&format!(
                "security: {user} logged in offline here with a token that was reset or \
                 replaced meanwhile (step {step}; fleet audit event offline-retired)"
            ));
        }
    }

    /// The newest steps used anywhere, generations and throttles of this host's pack users; a
    /// pack the database does not list for this host goes. Returns every user kept here, as
    /// left by that (each record is opened once a round).
    async fn floors(&self, now: u64) -> Result<Vec<String>> {
        let synced = self.synced_through(now)?;
        let rows = self
            .link
            .query_long_async(
                "SELECT f::text FROM kron.offline_floors($1) f",
                &[(&int(synced), Type::INT8)],
            )
            .await?;
        let listed = self.apply_floors(rows, now)?;
        // A pack the database does not list for this host (its user was removed there) goes:
        // every pack left has the newest step the database knows. Packs are fetched only by
        // this task, after this, so none can be on its way in.
        let users = self.offline.local().names()?;
        for user in users.iter().filter(|user| !listed.contains(*user)) {
            let has_pack = self
                .offline
                .local()
                .get(user)?
                .is_some_and(|record| record.pack.is_some());
            if !has_pack {
                continue;
            }
            self.offline.local().update(user, now, |record| {
                if let Some(record) = record.as_mut() {
                    record.pack = None;
                }
                ((), None)
            })?;
        }
        Ok(users)
    }

    /// Up to when this host has replayed its journal, as `kron.offline_floors` records it:
    /// `now` when nothing waits; else just before the oldest entry still waiting (one the
    /// database refused, or one journaled since the replay). The database keeps the online
    /// uses of a step that such an entry may turn out to double until the host is synced past
    /// it, so that the double use is reported when the entry is replayed at last.
    fn synced_through(&self, now: u64) -> Result<u64> {
        let local = self.offline.local();
        if local.journal_is_empty()? {
            return Ok(now);
        }
        let oldest = local.journal()?.iter().map(|(_, entry)| entry.at).min();
        Ok(oldest.map_or(now, |at| at.saturating_sub(1).min(now)))
    }

    /// Writes the rows of `kron.offline_floors` into the records; returns the users listed.
    fn apply_floors(&self, rows: Vec<tokio_postgres::Row>, now: u64) -> Result<HashSet<String>> {
        let mut listed = HashSet::new();
        // No offline charge runs from the look at the journal to the last record written.
        let _paused = self.offline.pause_charges();
        let waiting = !self.offline.local().journal_is_empty()?;
        for row in rows {
            let floor: Floor = serde_json::from_str(&column::<String>(&row, 0)?)
                .map_err(|e| database_error(format!("fleet database: unreadable floor: {e}")))?;
            listed.insert(floor.name.clone());
            self.offline.local().update(&floor.name, now, |record| {
                if let Some(record) = record.as_mut() {
                    record.last_step = record.last_step.max(floor.last_step);
                    floor.counts.apply(record, waiting);
                    let stale = record
                        .pack
                        .as_ref()
                        .is_some_and(|p| p.generation != floor.generation);
                    if !floor.has_token || stale {
                        record.pack = None;
                    }
                }
                ((), None)
            })?;
        }
        Ok(listed)
    }

    async fn drop_user(&self, user: &str, now: u64) -> Result<()> {
        self.link
            .query_long_async("SELECT kron.offline_drop($1)", &[(&user, Type::TEXT)])
            .await?;
        self.offline.local().update(user, now, |record| {
            *record = None;
            ((), None)
        })
    }

    /// Fetches the steps the pack of `user` lacks up to `offline_window` ahead, once less than
    /// three quarters of the window is left (or there is no pack).
    async fn top_up(&self, user: &str, record: &OfflineUser, now: u64) -> Result<()> {
        let window = self.offline.window();
        let mut pack = record.pack.clone();
        let needed = pack.as_ref().is_none_or(|p| {
            let left = p
                .end()
                .map_or(0, |end| (end + 1) * p.params.period)
                .saturating_sub(now);
            left < window * 3 / 4
        });
        if !needed {
            return Ok(());
        }
        loop {
            let (from, count) = match &pack {
                // The period is not known before the first answer: ask for no more steps than
                // the window holds at 60 s a step; the next turn knows and fills the rest.
                None => (0, (window / 60).clamp(1, CHUNK)),
                Some(p) => {
                    let target = (now + window) / p.params.period;
                    let end = p.end().unwrap_or(0);
                    if end >= target {
                        return Ok(());
                    }
                    (end + 1, (target - end).min(CHUNK))
                }
            };
            // A new pack replaces this host's newest step with the database's, which must then
            // hold every step accepted online here (store_fetched). With a check of the user in
            // flight already, a first pack would not be kept: not asked for this round.
            let watch = self.offline.watch_online(user);
            if pack.is_none() && !watch.quiet() {
                return Ok(());
            }
            let Some(fetched) = self.fetch(user, from, count).await? else {
                // No token (any more): no pack.
                return self.offline.local().update(user, now, |record| {
                    if let Some(record) = record.as_mut() {
                        record.pack = None;
                    }
                    ((), None)
                });
            };
            if pack
                .as_ref()
                .is_some_and(|p| p.generation != fetched.generation)
            {
                // Another token since: what we asked for followed the old pack. Start over.
                pack = None;
                continue;
            }
            let got = fetched.hashes.len() as u64;
            let before = pack.as_ref().and_then(|p| p.end());
            pack = self.store_chunk(user, &fetched, now, &watch)?;
            drop(watch);
            // Fewer steps than asked for, but some, may be the database bounding a statement's
            // bcrypt work (schema version 8): ask again from where they end. None (the
            // database's offline_max_window stops here), or a pack that did not grow (the user
            // went meanwhile): done for this turn.
            if got == 0 || pack.as_ref().and_then(|p| p.end()) <= before {
                return Ok(());
            }
        }
    }

    /// Puts what [`Task::fetch`] brought into the record of `user` ([`store_fetched`]) with no
    /// offline charge in between the look at the journal and the write; returns the pack.
    fn store_chunk(
        &self,
        user: &str,
        fetched: &Fetched,
        now: u64,
        watch: &OnlineWatch,
    ) -> Result<Option<Pack>> {
        let _paused = self.offline.pause_charges();
        let journal = self.offline.local().journal()?;
        let journaled = journaled_step(&journal, user, fetched.generation);
        self.offline.local().update(user, now, |record| {
            let Some(record) = record.as_mut() else {
                return (None, None);
            };
            let learned = Learned {
                journaled,
                waiting: !journal.is_empty(),
                quiet: watch.quiet(),
            };
            store_fetched(record, fetched, now, learned);
            (record.pack.clone(), None)
        })
    }

    async fn fetch(&self, user: &str, from: u64, count: u64) -> Result<Option<Fetched>> {
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let rows = self
            .link
            .query_long_async(
                "SELECT kron.offline_pack($1, $2, $3)::text",
                &[
                    (&user, Type::TEXT),
                    (&int(from), Type::INT8),
                    (&count, Type::INT4),
                ],
            )
            .await?;
        let Some(text) = rows
            .first()
            .map(|row| column::<Option<String>>(row, 0))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let fetched: Fetched = serde_json::from_str(&text)
            .map_err(|e| database_error(format!("fleet database: unreadable pack: {e}")))?;
        let malformed = fetched.setting.len() != 29
            || fetched.hashes.iter().any(|h| h.len() != 31)
            || !matches!(fetched.digits, 6 | 8)
            || !matches!(fetched.period, 30 | 60);
        if malformed {
            return Err(database_error(format!(
                "fleet database: malformed offline pack of {user}"
            )));
        }
        Ok(Some(fetched))
    }
}

/// What this host knows beside a fetched chunk ([`store_fetched`]).
struct Learned {
    /// The newest step of the chunk's token this host journaled an offline use of.
    journaled: Option<u64>,
    /// Whether journal entries wait ([`Counts::apply`]).
    waiting: bool,
    /// [`OnlineWatch::quiet`], as of now.
    quiet: bool,
}

/// Puts a fetched chunk into the user's record: onto the pack if it is the same token, else as
/// a new pack; with the newest used step and the throttle the database said.
///
/// A new pack (none before, or another token's) brings its token's newest step: the
/// database's, or a later one this host journaled of that token. It replaces the record's,
/// which may be the token before's: after a reset to a longer period the new token's steps are
/// smaller, and kept, it would refuse them here offline for years. But only if the watch was
/// quiet (the database's answer holds every step this host accepted online); else the chunk is
/// not kept (and an old token's pack goes), and the next round fetches again.
fn store_fetched(record: &mut OfflineUser, fetched: &Fetched, now: u64, learned: Learned) {
    let params = TokenParams {
        algorithm: fetched.algorithm,
        digits: fetched.digits,
        period: fetched.period,
    };
    let chunk = Chunk {
        first: fetched.from,
        setting: fetched.setting.clone(),
        hashes: fetched.hashes.clone(),
    };
    match record
        .pack
        .as_mut()
        .filter(|p| p.generation == fetched.generation && p.params == params)
    {
        Some(pack) => {
            pack.extend(chunk);
            pack.fetched = now;
            record.last_step = record.last_step.max(fetched.last_step);
        }
        None if !learned.quiet => {
            record.pack = None;
            return;
        }
        None => {
            record.last_step = fetched.last_step.max(learned.journaled);
            record.pack = Some(Pack {
                generation: fetched.generation,
                params,
                chunks: vec![chunk],
                fetched: now,
            });
        }
    }
    if let Some(pack) = record.pack.as_mut() {
        pack.forget_before((now / params.period).saturating_sub(2));
    }
    fetched.counts.apply(record, learned.waiting);
}

/// The newest step of `user` in `journal` used offline with the token `generation`.
fn journaled_step(
    journal: &[(sled::IVec, JournalEntry)],
    user: &str,
    generation: i64,
) -> Option<u64> {
    journal
        .iter()
        .filter_map(|(_, entry)| entry.use_by(user))
        .filter_map(|(step, used)| (used == generation).then_some(step))
        .max()
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(generation: i64, period: u64, last_step: Option<u64>, from: u64) -> Fetched {
        Fetched {
            generation,
            algorithm: Algorithm::SHA1,
            digits: 6,
            period,
            last_step,
            counts: Counts {
                failures: 1,
                next_attempt: 0,
                last_attempt: 0,
            },
            from,
            setting: format!("$2a$06${}", "a".repeat(22)),
            hashes: vec!["b".repeat(31); 4],
        }
    }

    fn learned(quiet: bool) -> Learned {
        Learned {
            journaled: None,
            waiting: false,
            quiet,
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_new_token_brings_its_own_newest_step_even_a_smaller_one() {
        // A reset from 30 s to 60 s steps: the old token's step is about twice the new one's.
        let mut record = OfflineUser {
            last_step: Some(NOW / 30),
            pack: None,
            ..OfflineUser::default()
        };
        store_fetched(
            &mut record,
            &fetched(2, 60, Some(NOW / 60 - 5), NOW / 60),
            NOW,
            learned(true),
        );
        assert_eq!(record.last_step, Some(NOW / 60 - 5));
        assert_eq!(record.pack.as_ref().map(|p| p.generation), Some(2));

        // More of the same token only raises it, as the database's answers come in.
        store_fetched(
            &mut record,
            &fetched(2, 60, Some(NOW / 60 - 9), NOW / 60 + 4),
            NOW,
            learned(true),
        );
        assert_eq!(record.last_step, Some(NOW / 60 - 5));
        assert_eq!(record.pack.as_ref().and_then(Pack::end), Some(NOW / 60 + 7));
    }

    #[test]
    fn a_new_pack_keeps_a_later_step_journaled_here_with_its_token() {
        let mut record = OfflineUser::default();
        let learned = Learned {
            journaled: Some(NOW / 30 + 1),
            ..learned(true)
        };
        store_fetched(
            &mut record,
            &fetched(3, 30, Some(NOW / 30 - 1), NOW / 30),
            NOW,
            learned,
        );
        assert_eq!(record.last_step, Some(NOW / 30 + 1));
    }

    #[test]
    fn without_a_quiet_watch_a_new_pack_is_not_kept_and_the_step_stays() {
        // An online login of the user may have been taken by the database after it answered:
        // its step is here and not in the answer, so nothing here is lowered.
        let mut record = OfflineUser {
            last_step: Some(NOW / 30 + 1),
            ..OfflineUser::default()
        };
        store_fetched(
            &mut record,
            &fetched(4, 30, Some(NOW / 30 - 3), NOW / 30),
            NOW,
            learned(false),
        );
        assert_eq!(record.last_step, Some(NOW / 30 + 1));
        assert!(record.pack.is_none());
        // The old token's pack goes too.
        store_fetched(
            &mut record,
            &fetched(4, 30, None, NOW / 30),
            NOW,
            learned(true),
        );
        store_fetched(
            &mut record,
            &fetched(5, 30, None, NOW / 30),
            NOW,
            learned(false),
        );
        assert!(record.pack.is_none());
    }

    #[test]
    fn throttle_counts_only_rise_while_journal_entries_wait() {
        let mut record = OfflineUser {
            failures: 4,
            next_attempt: NOW + 60,
            ..OfflineUser::default()
        };
        let waiting = Learned {
            waiting: true,
            ..learned(true)
        };
        store_fetched(&mut record, &fetched(1, 30, None, NOW / 30), NOW, waiting);
        assert_eq!((record.failures, record.next_attempt), (4, NOW + 60));
        store_fetched(
            &mut record,
            &fetched(1, 30, None, NOW / 30 + 4),
            NOW,
            learned(true),
        );
        assert_eq!((record.failures, record.next_attempt), (1, 0));
    }
}
