//! Offline logins on a fleet host (docs/fleet.md, "Offline logins"): while the database cannot
//! be reached, users who logged in here recently still log in, with codes checked against a pack
//! of slow hashes of their next codes (never the seed), each step at most once on this host, and
//! every use and failure journaled durably and replayed in the database when it is back.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Offline`]: the decisions while offline, as functions of (state, code, now) |
//! | `store.rs` | [`FleetStore`]: the fleet's store, online through `PgStore`, offline through [`Offline`] |
//! | `pack.rs` | a pack: bcrypt hashes of one user's next codes; which step a code matches |
//! | `local.rs` | the offline state on this host (sealed records, the journal), durable |
//! | `sync.rs` | the background task: replay the journal, refresh steps and packs, drop old users |

#![forbid(unsafe_code)]

pub mod local;
pub mod pack;
pub mod store;
pub mod sync;
#[cfg(test)]
mod tests;

pub use store::FleetStore;

use crate::error::{Error, Result};
use crate::store::postgres::row::reference;
use crate::store::record::{Attempt, StepOutcome, Token, UserRecord};
use crate::store::vault::CodeOutcome;
use kron_common::config::ThrottleConfig;
use local::{JournalKind, Local, OfflineUser};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockWriteGuard};

/// The offline side of a fleet host.
pub struct Offline {
    local: Local,
    /// Seconds ahead a pack covers (`offline_window`); 0: offline logins are off.
    window: u64,
    /// Seconds a user keeps a pack after their last login here (`offline_keep`).
    keep: u64,
    /// Wakes the sync task: a user to fetch a pack for.
    wake: tokio::sync::Notify,
    /// When this otpd started (unix time): the start floor. An online step is recorded here
    /// without waiting for the device ([`Offline::used_online`]), so a crash, or the offline
    /// store closed after a failure, may lose the last ones; every step accepted online before
    /// then is at most [`MAX_SKEW`] steps past it, so none of those passes offline after it.
    /// Lifted by the first sync round since then that brings every pack user's newest step
    /// from the database ([`Offline::lift_start_floor`]), which holds every step it accepted:
    /// at once when it answers.
    started: u64,
    /// The store's closings count ([`Local::closings`]) plus one as of the sync round that
    /// lifted the floor; 0: not lifted.
    lifted: AtomicU64,
    /// Online code checks in progress and the users the sync task watches for them.
    online: Mutex<OnlineChecks>,
    /// Held shared by every offline charge (its change of the record and its journal entry),
    /// exclusively by the sync task while it writes the database's throttle counts into the
    /// records ([`Offline::pause_charges`]).
    charges: RwLock<()>,
}

#[derive(Default)]
struct OnlineChecks {
    /// Users with a code check on its way to the database from this host, and how many
    /// ([`Offline::checking_online`]).
    counts: HashMap<String, usize>,
    /// Users the sync task fetches a new pack for, and whether a check of theirs was in
    /// progress or began since ([`Offline::watch_online`]).
    watched: HashMap<String, bool>,
}

/// An online code check of one user in progress on this host ([`Offline::checking_online`]).
pub struct OnlineCheck<'a> {
    offline: &'a Offline,
    user: String,
}

impl Drop for OnlineCheck<'_> {
    fn drop(&mut self) {
        let mut online = self.offline.online();
        if let Some(count) = online.counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                online.counts.remove(&self.user);
            }
        }
    }
}

/// The sync task's watch on one user's online checks while it fetches a new pack for them
/// ([`Offline::watch_online`]).
pub struct OnlineWatch<'a> {
    offline: &'a Offline,
    user: String,
}

impl OnlineWatch<'_> {
    /// Whether no online check of the user was in progress when the watch began, none began
    /// since, and none is in progress now: then the database's newest step, read after the
    /// watch began, holds every step this host accepted online for the user.
    pub fn quiet(&self) -> bool {
        let online = self.offline.online();
        online.watched.get(&self.user) == Some(&false) && !online.counts.contains_key(&self.user)
    }
}

impl Drop for OnlineWatch<'_> {
    fn drop(&mut self) {
        self.offline.online().watched.remove(&self.user);
    }
}

/// The largest `[totp] skew` there is: the otpd before a restart may have run with it.
const MAX_SKEW: u64 = 2;

/// What `kronctl fleet status` shows of this host's packs and journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub users: u32,
    /// The newest and the oldest fetch of a pack (unix time; 0: none).
    pub newest_fetch: u64,
    pub oldest_fetch: u64,
    /// When the first pack runs out (unix time; 0: none).
    pub first_end: u64,
    pub journal: u32,
}

impl Offline {
    /// `started`: the unix time otpd started at (the start floor, [`Offline::started`]).
    pub fn new(local: Local, window: u64, keep: u64, started: u64) -> Offline {
        Offline {
            local,
            window,
            keep,
            wake: tokio::sync::Notify::new(),
            started,
            lifted: AtomicU64::new(0),
            online: Mutex::default(),
            charges: RwLock::new(()),
        }
    }

    fn online(&self) -> MutexGuard<'_, OnlineChecks> {
        // Only counts and flags change under the lock, so a poisoned one is still consistent.
        self.online.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a code check of `user` sent to the database from this host until the guard goes,
    /// which the caller drops after [`Offline::used_online`]. While it is held the sync task
    /// keeps the user's replayed offline uses in the journal, so `used_online` still finds a
    /// use the database had not had when it took this check. Nothing else waits on it.
    pub fn checking_online(&self, user: &str) -> OnlineCheck<'_> {
        let mut online = self.online();
        *online.counts.entry(user.to_owned()).or_default() += 1;
        if let Some(seen) = online.watched.get_mut(user) {
            *seen = true;
        }
        drop(online);
        OnlineCheck {
            offline: self,
            user: user.to_owned(),
        }
    }

    /// Whether a code check of `user` is on its way to the database ([`Offline::checking_online`]).
    pub fn checking_online_now(&self, user: &str) -> bool {
        self.online().counts.contains_key(user)
    }

    /// The sync task, before it asks the database for a new pack of `user` (another token, or
    /// none here yet): the pack's newest step replaces this host's only if the watch stays
    /// [`OnlineWatch::quiet`]. Only the sync task watches, one user at a time.
    pub fn watch_online(&self, user: &str) -> OnlineWatch<'_> {
        let mut online = self.online();
        let busy = online.counts.contains_key(user);
        online.watched.insert(user.to_owned(), busy);
        OnlineWatch {
            offline: self,
            user: user.to_owned(),
        }
    }

    /// Holds off every offline charge while the guard lives: the sync task writes the
    /// database's throttle counts into the records under it, after looking at the journal, so
    /// no failure charged here in between is overwritten by counts that do not have it yet.
    pub fn pause_charges(&self) -> RwLockWriteGuard<'_, ()> {
        self.charges.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every pack user's newest step has been brought from the database since the start, and
    /// since the offline store's closing number `closings` ([`Local::closings`], read before
    /// the round began): the start floor is no longer needed ([`Offline::started`]).
    pub fn lift_start_floor(&self, closings: u64) {
        self.lifted.store(closings + 1, Ordering::SeqCst);
    }

    /// The start floor for tokens of `period`: steps up to it are not checked offline. From
    /// the start, or from the store's last closing when that came after the floor was lifted.
    fn start_floor(&self, period: u64) -> Option<u64> {
        let (closings, closed_at) = self.local.closings();
        if self.lifted.load(Ordering::SeqCst) == closings + 1 {
            return None;
        }
        Some(self.started.max(closed_at) / period.max(1) + MAX_SKEW)
    }

    pub fn enabled(&self) -> bool {
        self.window > 0
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    pub fn local(&self) -> &Local {
        &self.local
    }

    /// A login of `user` the database accepted for `step`: from now on only later steps pass
    /// offline here, and the user keeps (or gets) a pack. False if this host accepted `step` (or
    /// a later one) offline and the database has not had that journal entry yet, so it took the
    /// step a second time: the login is then a replay here. Of an online and an offline login
    /// with one code, whichever comes second is refused. The reply does not wait for this change
    /// to be on the device (the database's commit is the login's durable record): what a crash
    /// loses, the start floor covers ([`Offline::started`]).
    pub fn used_online(&self, user: &str, step: u64, now: u64) -> Result<bool> {
        if !self.enabled() {
            return Ok(true);
        }
        if self.local.has(user)? {
            // The usual case: a small write beside the record, not the record and its pack.
            self.local.used_online(user, step, now)?;
        } else {
            self.local.update_unwaited(user, now, |record| {
                let record = record.get_or_insert_with(OfflineUser::default);
                record.seen = record.seen.max(now);
                record.last_step = record.last_step.max(Some(step));
            })?;
            // A new user here: the sync task fetches a pack.
            self.wake.notify_one();
        }
        // After the change above, an offline check of this step refuses it; one that came
        // before journaled its use in the same change as its record's, so it is seen here.
        Ok(!self.used_offline(user, step)?)
    }

    /// Whether this host accepted `step` or a later one of `user` offline and the database has
    /// not had that journal entry yet (entries go once replayed). A use of a token older than
    /// the one of the user's pack here does not count: the database accepts only the current
    /// token's codes, so the step it just took cannot be that use's (after a reset to a longer
    /// period, the old token's steps are the larger numbers). Without a pack to tell, every
    /// use counts.
    fn used_offline(&self, user: &str, step: u64) -> Result<bool> {
        let later: Vec<i64> = self
            .local
            .journal()?
            .iter()
            .filter_map(|(_, entry)| entry.use_by(user))
            .filter_map(|(used, generation)| (used >= step).then_some(generation))
            .collect();
        if later.is_empty() {
            return Ok(false);
        }
        let known = self
            .local
            .get(user)?
            .and_then(|record| record.pack.map(|pack| pack.generation));
        Ok(later
            .iter()
            .any(|&generation| known.is_none_or(|known| generation >= known)))
    }

    /// `kronctl fleet offline-add`: `user` gets a pack here as if they had just logged in.
    /// True if the user was not kept here before.
    pub fn add(&self, user: &str, now: u64) -> Result<bool> {
        let fresh = self.local.update(user, now, |record| {
            let fresh = record.is_none();
            let record = record.get_or_insert_with(OfflineUser::default);
            record.seen = record.seen.max(now);
            (fresh, None)
        })?;
        self.wake.notify_one();
        Ok(fresh)
    }

    /// The record the engine decides on while the database is away: the pack's token, the
    /// newest step used as far as this host knows, the local throttle; no recovery codes, no
    /// contact, no sent code (none of them is accepted offline). `None` without a pack that
    /// still has a step within `skew` of now.
    pub fn record(&self, user: &str, now: u64, skew: u8) -> Result<Option<UserRecord>> {
        let Some(stored) = self.local.get(user)? else {
            return Ok(None);
        };
        let Some(pack) = stored.pack.as_ref().filter(|p| reaches(p, now, skew)) else {
            return Ok(None);
        };
        Ok(Some(UserRecord {
            token: Some(Token {
                params: pack.params,
                secret: reference(Vec::new()),
                created: 0,
            }),
            last_step: stored.last_step,
            failures: stored.failures,
            next_attempt: stored.next_attempt,
            last_attempt: stored.last_attempt,
            ..UserRecord::default()
        }))
    }

    /// Checks a TOTP `code` of `user` against the pack: with `charge`, the attempt is charged to
    /// the local throttle in the same change that takes the step or journals the failure; the
    /// step must be later than every step this host has seen used. `None`: no pack of this user
    /// reaches now (the caller refuses). The slow hashes run before the change, outside it; the
    /// change looks at the record again, so two logins with one code take its step once.
    pub fn check(
        &self,
        user: &str,
        code: &str,
        now: u64,
        skew: u8,
        charge: Option<&ThrottleConfig>,
    ) -> Result<Option<CodeOutcome>> {
        let Some(stored) = self.local.get(user)? else {
            return Ok(None);
        };
        let Some(pack) = stored.pack.as_ref().filter(|p| reaches(p, now, skew)) else {
            return Ok(None);
        };
        if charge.is_some() && now < stored.next_attempt {
            return Ok(Some(CodeOutcome::Throttled {
                until: stored.next_attempt,
            }));
        }
        // Steps up to the start floor may have been used online just before a crash: refused
        // as unavailable, uncharged (the user's own current code is among them for a minute).
        let floor = self.start_floor(pack.params.period);
        let below_floor = |step: u64| floor.is_some_and(|floor| step <= floor);
        if below_floor(now / pack.params.period.max(1) + u64::from(skew)) {
            return Err(self.after_start());
        }
        let generation = pack.generation;
        let matched = pack.matching_step(code, now, skew, stored.last_step);
        if let Some(step) = matched
            && below_floor(step)
            && stored.last_step.is_none_or(|used| step > used)
        {
            return Err(self.after_start());
        }
        self.decide(user, now, |record| {
            let Some(record) = record
                .as_mut()
                .filter(|r| r.pack.as_ref().is_some_and(|p| p.generation == generation))
            else {
                // The pack went (or changed) while the hashes ran: as if there were none.
                return (None, None);
            };
            if let Some(config) = charge
                && let Attempt::Throttled { until } = charge_record(record, now, config)
            {
                return (Some(CodeOutcome::Throttled { until }), None);
            }
            let failure = charge.map(|_| JournalKind::Failure);
            match matched {
                Some(step) if record.last_step.is_none_or(|used| step > used) => {
                    record.last_step = Some(step);
                    record.seen = record.seen.max(now);
                    if charge.is_some() {
                        // As online: a passed code takes back its own charge.
                        record.failures = record.failures.saturating_sub(1);
                        record.next_attempt = 0;
                    }
                    (
                        Some(CodeOutcome::Step(StepOutcome::Accepted)),
                        Some(JournalKind::Use { step, generation }),
                    )
                }
                Some(_) => (Some(CodeOutcome::Step(StepOutcome::Replayed)), failure),
                None => (Some(CodeOutcome::Wrong), failure),
            }
        })
    }

    /// Charges an attempt of `user` to the local throttle and journals it as a failure (an answer
    /// that is no TOTP code cannot pass offline). `None` without a pack that reaches now.
    pub fn charge(
        &self,
        user: &str,
        now: u64,
        skew: u8,
        config: &ThrottleConfig,
    ) -> Result<Option<Attempt>> {
        self.decide(user, now, |record| {
            let Some(record) = record
                .as_mut()
                .filter(|r| r.pack.as_ref().is_some_and(|p| reaches(p, now, skew)))
            else {
                return (None, None);
            };
            match charge_record(record, now, config) {
                attempt @ Attempt::Throttled { .. } => (Some(attempt), None),
                Attempt::Allowed => (Some(Attempt::Allowed), Some(JournalKind::Failure)),
            }
        })
    }

    /// Why a code of a step up to the start floor is not checked offline.
    fn after_start(&self) -> Error {
        Error::Unreachable(format!(
            "the offline store was opened at {} and the fleet database has not been reached \
             since: codes of the steps up to then and two more are not checked offline (a step \
             used online just before a crash or a store failure is lost with it)",
            self.started.max(self.local.closings().1)
        ))
    }

    /// An offline decision on the record of `user` ([`Local::update`]), which may charge it and
    /// journal an entry: not while the sync task writes the database's counts
    /// ([`Offline::pause_charges`]). Then the sync task is woken: it may still be in the
    /// minute's pause of a round from before the database went away. Woken, it finds the
    /// database away and retries every two seconds, so the journal reaches the database within
    /// seconds of the link healing, not up to a minute later.
    fn decide<R>(
        &self,
        user: &str,
        now: u64,
        change: impl Fn(&mut Option<OfflineUser>) -> (R, Option<JournalKind>),
    ) -> Result<R> {
        let charging = self.charges.read().unwrap_or_else(PoisonError::into_inner);
        let outcome = self.local.update(user, now, change);
        drop(charging);
        if outcome.is_ok() {
            self.wake.notify_one();
        }
        outcome
    }

    /// Packs and journal, for `kronctl fleet status`.
    pub fn summary(&self) -> Result<Summary> {
        let mut summary = Summary {
            journal: u32::try_from(self.local.journal_len()).unwrap_or(u32::MAX),
            ..Summary::default()
        };
        for user in self.local.names()? {
            let Some(pack) = self.local.get(&user)?.and_then(|record| record.pack) else {
                continue;
            };
            summary.users += 1;
            summary.newest_fetch = summary.newest_fetch.max(pack.fetched);
            summary.oldest_fetch = match summary.oldest_fetch {
                0 => pack.fetched,
                oldest => oldest.min(pack.fetched),
            };
            let end = pack.end().map_or(0, |step| (step + 1) * pack.params.period);
            summary.first_end = match summary.first_end {
                0 => end,
                first => first.min(end),
            };
        }
        Ok(summary)
    }
}

/// Whether `pack` still has a step a code typed at `now` may be for.
fn reaches(pack: &pack::Pack, now: u64, skew: u8) -> bool {
    let step = now / pack.params.period.max(1);
    pack.end().is_some_and(|end| end + u64::from(skew) >= step)
}

/// The throttle arithmetic of the token store ([`UserRecord::charge_attempt`]) on the offline
/// record's counters.
fn charge_record(record: &mut OfflineUser, now: u64, config: &ThrottleConfig) -> Attempt {
    let mut counters = UserRecord {
        failures: record.failures,
        next_attempt: record.next_attempt,
        last_attempt: record.last_attempt,
        ..UserRecord::default()
    };
    let attempt = counters.charge_attempt(now, config);
    record.failures = counters.failures;
    record.next_attempt = counters.next_attempt;
    record.last_attempt = counters.last_attempt;
    attempt
}
