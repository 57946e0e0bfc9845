//! The offline decisions on a real offline store in a temp dir, with a fixed clock and packs made
//! here the way the database makes them (pack.rs).

use super::local::{JournalKind, Local, OfflineUser};
use super::pack::tests::pack_of;
use super::{Offline, Summary};
use crate::store::crypto::SecretKey;
use crate::store::record::StepOutcome;
use crate::store::vault::CodeOutcome;
use kron_common::config::ThrottleConfig;

/// Step 100 starts at this time; the pack covers steps 100 to 103.
const T: u64 = 100 * 30;
const CODES: [&str; 4] = ["111111", "222222", "333333", "444444"];

fn offline(dir: &std::path::Path) -> Offline {
    started_at(dir, 0)
}

/// [`offline`] of an otpd that started at `started` (the start floor).
fn started_at(dir: &std::path::Path, started: u64) -> Offline {
    let local = open_local(dir, [9u8; 32]);
    let offline = Offline::new(local, 120, 86_400, started);
    offline
        .local()
        .update("alice", T, |record| {
            *record = Some(OfflineUser {
                seen: T,
                last_step: Some(99),
                pack: Some(pack_of(100, &CODES)),
                ..OfflineUser::default()
            });
            ((), None)
        })
        .unwrap();
    offline
}

/// Store events dropped (the recovery test keeps its own).
/// The store in `dir` under `key`, opened again as soon as the one before has let it go: sled's
/// own threads finish their writes after the store is dropped and hold its lock meanwhile.
fn open_local(dir: &std::path::Path, key: [u8; 32]) -> Local {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match Local::open(dir, SecretKey::from_bytes(&key), quiet()) {
            Ok(local) => return local,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open the offline store: {e}"),
        }
    }
}

fn quiet() -> crate::store::health::Report {
    Box::new(|_| {})
}

fn throttle() -> ThrottleConfig {
    ThrottleConfig {
        free_attempts: 2,
        base_delay: 60,
        max_delay: 3600,
    }
}

fn kinds(offline: &Offline) -> Vec<JournalKind> {
    offline
        .local()
        .journal()
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect()
}

#[test]
fn a_code_passes_once_and_only_after_the_newest_step_seen() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    let config = throttle();
    let check = |code: &str, now: u64| o.check("alice", code, now, 1, Some(&config)).unwrap();
    assert_eq!(
        check("222222", T + 35),
        Some(CodeOutcome::Step(StepOutcome::Accepted))
    );
    assert_eq!(
        check("222222", T + 36),
        Some(CodeOutcome::Step(StepOutcome::Replayed))
    );
    // An earlier step than the one used: refused too.
    assert_eq!(
        check("111111", T + 37),
        Some(CodeOutcome::Step(StepOutcome::Replayed))
    );
    assert_eq!(
        kinds(&o),
        [
            JournalKind::Use {
                step: 101,
                generation: 1
            },
            JournalKind::Failure,
            JournalKind::Failure
        ]
    );
    // The two refusals spent the free attempts: the next is throttled, and not journaled.
    assert_eq!(
        check("333333", T + 38),
        Some(CodeOutcome::Throttled { until: T + 37 + 60 })
    );
    assert_eq!(kinds(&o).len(), 3);
    // After the backoff the next step passes, and takes back its own charge.
    assert_eq!(
        check("333333", T + 97),
        Some(CodeOutcome::Step(StepOutcome::Accepted))
    );
    let record = o.local().get("alice").unwrap().unwrap();
    assert_eq!((record.last_step, record.next_attempt), (Some(102), 0));
}

#[test]
fn a_step_used_online_never_passes_offline() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    o.used_online("alice", 101, T + 31).unwrap();
    assert_eq!(
        o.check("alice", "222222", T + 40, 1, Some(&throttle()))
            .unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Replayed))
    );
    assert_eq!(
        o.check("alice", "333333", T + 40, 1, Some(&throttle()))
            .unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Accepted))
    );
}

#[test]
fn a_step_used_offline_here_is_a_replay_when_the_database_accepts_it_too() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    // Used offline; the database has not had the journal entry yet.
    assert_eq!(
        o.check("alice", "222222", T + 40, 1, Some(&throttle()))
            .unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Accepted))
    );
    // The link is back before the replay: the database takes step 101 as new, this host not.
    assert!(!o.used_online("alice", 101, T + 45).unwrap());
    assert!(!o.used_online("alice", 100, T + 45).unwrap());
    assert!(o.used_online("alice", 102, T + 61).unwrap());
    // The other order: the database's yes recorded first, the offline check of the same code
    // is the replay.
    assert!(o.used_online("alice", 103, T + 91).unwrap());
    assert_eq!(
        o.check("alice", "444444", T + 91, 1, Some(&throttle()))
            .unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Replayed))
    );
    // A user this host has no record of yet.
    assert!(o.used_online("bob", 101, T + 45).unwrap());
    // A reset to a token of 60 s steps (smaller numbers), whose pack the sync task brought:
    // the database takes only that token's codes, so its step 51 is not token 1's step 101,
    // still waiting in the journal.
    o.local()
        .update("alice", T + 100, |record| {
            let pack = record.as_mut().and_then(|r| r.pack.as_mut()).unwrap();
            pack.generation = 2;
            ((), None)
        })
        .unwrap();
    assert!(o.used_online("alice", 51, T + 120).unwrap());
}

#[test]
fn no_step_up_to_the_start_floor_passes_offline_and_online_steps_are_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    // otpd started in step 100: steps up to 102 (two more, the largest skew there is) may have
    // been used online just before, unrecorded here if the otpd before it crashed.
    let o = started_at(dir.path(), T + 5);
    let check = |code: &str, now: u64| o.check("alice", code, now, 1, Some(&throttle()));
    // Refused as unavailable, before any hash, uncharged, nothing journaled.
    assert!(matches!(
        check("222222", T + 40),
        Err(crate::error::Error::Unreachable(_))
    ));
    assert!(matches!(
        check("333333", T + 65),
        Err(crate::error::Error::Unreachable(_))
    ));
    let record = o.local().get("alice").unwrap().unwrap();
    assert_eq!((record.failures, record.last_step), (0, Some(99)));
    assert!(kinds(&o).is_empty());
    // The first step past the floor passes, and its use is a write the reply waits for.
    let (accepted, wrote) = crate::store::own_writes(|| check("444444", T + 65));
    assert_eq!(
        accepted.unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Accepted))
    );
    assert_ne!(wrote, 0);
    // An online step is recorded, and refuses offline, without a write the reply waits for.
    let (new_here, wrote) = crate::store::own_writes(|| o.used_online("bob", 104, T + 120));
    assert!(new_here.unwrap());
    assert_eq!(wrote, 0);
    o.local().flush().unwrap();
    assert_eq!(o.local().get("bob").unwrap().unwrap().last_step, Some(104));
}

#[test]
fn the_start_floor_goes_with_the_newest_steps_and_comes_back_when_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let o = started_at(dir.path(), T + 35);
    let check = |code: &str, now: u64| o.check("alice", code, now, 1, Some(&throttle()));
    let unavailable = |outcome| matches!(outcome, Err(crate::error::Error::Unreachable(_)));
    assert!(unavailable(check("222222", T + 40)));
    // What the sync task does after a round brought every pack user's newest step.
    o.lift_start_floor(o.local().closings().0);
    assert_eq!(
        check("222222", T + 40).unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Accepted))
    );
    // An I/O error closes the store: what no reply waited for is lost, so the floor is back,
    // from the time of the closing (the clock's now, far past this test's steps).
    o.local()
        .break_with(std::io::Error::from_raw_os_error(libc::EIO));
    assert!(o.used_online("alice", 102, T + 65).is_err());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(unavailable(check("333333", T + 65)));
    o.lift_start_floor(o.local().closings().0);
    assert_eq!(
        check("333333", T + 65).unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Accepted))
    );
}

#[test]
fn steps_used_online_are_no_replay_of_each_other_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    // Two logins the database accepted, recorded here in the other order.
    assert!(o.used_online("alice", 102, T + 61).unwrap());
    assert!(o.used_online("alice", 101, T + 61).unwrap());
    // A guard per check in flight, gone with the last.
    let (first, second) = (o.checking_online("alice"), o.checking_online("alice"));
    drop(first);
    assert!(o.checking_online_now("alice") && !o.checking_online_now("bob"));
    drop(second);
    assert!(!o.checking_online_now("alice"));
}

#[test]
fn a_watch_is_quiet_only_without_online_checks_of_its_user_from_its_start_on() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    let watch = o.watch_online("alice");
    let other = o.checking_online("bob");
    assert!(watch.quiet(), "a check of another user");
    drop((watch, other));

    // A check in flight when the watch begins: its step may reach the database after the
    // pack's answer, and this host before the pack is stored.
    let check = o.checking_online("alice");
    let watch = o.watch_online("alice");
    drop(check);
    assert!(!watch.quiet());
    drop(watch);

    // A check that begins and ends while the watch lasts.
    let watch = o.watch_online("alice");
    drop(o.checking_online("alice"));
    assert!(!watch.quiet());
    drop(watch);

    // The watch goes with its guard: the next one starts afresh.
    let watch = o.watch_online("alice");
    assert!(watch.quiet());
    let check = o.checking_online("alice");
    assert!(!watch.quiet(), "a check in flight now");
    drop(check);
}

#[test]
fn the_sync_task_pausing_charges_holds_them_off_until_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::sync::Arc::new(offline(dir.path()));
    let paused = o.pause_charges();
    let (sender, done) = std::sync::mpsc::channel();
    let charging = {
        let o = o.clone();
        std::thread::spawn(move || {
            let attempt = o.charge("alice", T + 1, 1, &throttle()).unwrap();
            sender.send(()).unwrap();
            attempt
        })
    };
    assert!(
        done.recv_timeout(std::time::Duration::from_millis(200))
            .is_err(),
        "a charge ran while the sync task wrote the database's counts"
    );
    assert!(kinds(&o).is_empty());
    drop(paused);
    assert!(charging.join().unwrap().is_some());
    assert_eq!(kinds(&o), [JournalKind::Failure]);
}

#[test]
fn an_online_step_is_kept_beside_the_record_until_the_record_next_changes() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    assert!(o.used_online("alice", 101, T + 40).unwrap());
    // Beside the record (a small write, not the record and its pack), and every read has it.
    assert_eq!(o.local().online_step("alice"), Some((101, T + 40)));
    let record = o.local().get("alice").unwrap().unwrap();
    assert_eq!((record.last_step, record.seen), (Some(101), T + 40));
    assert_eq!(o.local().names().unwrap(), ["alice"]);
    // An older step does not lower it; an offline check refuses the steps up to it.
    assert!(o.used_online("alice", 100, T + 41).unwrap());
    assert_eq!(o.local().online_step("alice"), Some((101, T + 41)));
    assert_eq!(
        o.check("alice", "222222", T + 40, 1, Some(&throttle()))
            .unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Replayed))
    );
    // That check changed the record (a charge): the step moved in, and stays after a reopen.
    assert_eq!(o.local().online_step("alice"), None);
    // On the device before the store goes (sled's own writes still running would hold its
    // lock against the reopen).
    o.local().flush().unwrap();
    drop(o);
    let o = Offline::new(open_local(dir.path(), [9u8; 32]), 120, 86_400, 0);
    let record = o.local().get("alice").unwrap().unwrap();
    assert_eq!((record.last_step, record.seen), (Some(101), T + 41));

    // A step left beside no record (its user dropped while the login ran) goes into the record
    // made for that user later.
    o.local().used_online("carol", 105, T + 50).unwrap();
    assert!(o.local().get("carol").unwrap().is_none());
    assert!(o.add("carol", T + 60).unwrap());
    assert_eq!(o.local().online_step("carol"), None);
    let record = o.local().get("carol").unwrap().unwrap();
    assert_eq!((record.last_step, record.seen), (Some(105), T + 60));
}

#[test]
fn after_the_window_nothing_passes_and_unknown_users_have_no_pack() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    // The pack ends with step 103; at step 105 even its last code is outside the skew.
    let late = 105 * 30 + 1;
    assert_eq!(o.record("alice", late, 1).unwrap(), None);
    assert_eq!(
        o.check("alice", "444444", late, 1, Some(&throttle()))
            .unwrap(),
        None
    );
    assert_eq!(o.charge("alice", late, 1, &throttle()).unwrap(), None);
    // Within the window the record the engine decides on has the token and the step floor.
    let record = o.record("alice", T + 5, 1).unwrap().unwrap();
    assert_eq!(record.last_step, Some(99));
    assert!(record.token.is_some() && record.recovery.is_none());
    assert_eq!(o.record("bob", T, 1).unwrap(), None);
    assert_eq!(o.check("bob", "111111", T, 1, None).unwrap(), None);
    assert!(o.local().journal().unwrap().is_empty());
}

#[test]
fn the_journal_and_the_step_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let o = offline(dir.path());
        o.check("alice", "222222", T + 35, 1, Some(&throttle()))
            .unwrap();
        o.local().flush().unwrap();
    }
    let local = open_local(dir.path(), [9u8; 32]);
    let o = Offline::new(local, 120, 86_400, 0);
    assert_eq!(o.local().journal_len(), 1);
    assert_eq!(
        o.check("alice", "222222", T + 40, 1, Some(&throttle()))
            .unwrap(),
        Some(CodeOutcome::Step(StepOutcome::Replayed))
    );
    // Records are sealed under the key: another key does not open them.
    drop(o);
    let other = open_local(dir.path(), [8u8; 32]);
    assert!(other.get("alice").is_err());
    let raw = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(raw > 0);
}

#[test]
fn the_summary_counts_packs_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let o = offline(dir.path());
    o.add("bob", T).unwrap();
    o.charge("alice", T + 1, 1, &throttle()).unwrap();
    assert_eq!(
        o.summary().unwrap(),
        Summary {
            users: 1,
            newest_fetch: T,
            oldest_fetch: T,
            first_end: 104 * 30,
            journal: 1,
        }
    );
}

#[test]
fn a_broken_offline_store_refuses_then_reopens_by_itself_keeping_what_was_durable() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let local = Local::open(
        dir.path(),
        SecretKey::from_bytes(&[9u8; 32]),
        Box::new(move |event| sink.lock().unwrap().push(event.to_string())),
    )
    .unwrap();
    let o = Offline::new(local, 120, 86_400, 0);
    o.used_online("alice", 7, T).unwrap();
    o.local().flush().unwrap();

    // An I/O error closes it: every use is refused (fail closed), reported once.
    o.local()
        .break_with(std::io::Error::from_raw_os_error(libc::EIO));
    for _ in 0..10 {
        assert!(o.used_online("alice", 8, T + 30).is_err());
    }
    assert_eq!(
        events.lock().unwrap().len(),
        1,
        "{:?}",
        events.lock().unwrap()
    );

    // After the pause the next use opens it again, with what was durable before.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    o.used_online("alice", 9, T + 60).unwrap();
    o.local().flush().unwrap();
    assert_eq!(o.local().get("alice").unwrap().unwrap().last_step, Some(9));
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1].contains("durable again"), "{events:?}");
}
