//! The sled store and group commit: atomic changes, durability, crash safety.

use super::commit::GroupCommit;
use super::*;
use crate::store::error::StoreError;
use crate::store::record::tests::token;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

fn enrolled_store(dir: &Path) -> SledStore {
    let store = SledStore::open(dir).unwrap();
    let pending = Pending {
        token: token(1),
        expires: 1000,
        at_login: false,
        delivered: None,
        link: None,
    };
    store
        .save_pending("alice", pending.clone())
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .confirm("alice", &pending, 10, 100, Charge::Made)
            .unwrap(),
        ConfirmOutcome::Confirmed
    );
    store
}

#[test]
fn racing_acceptances_of_one_step_yield_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(enrolled_store(dir.path()));
    let winners: usize = (0..16)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.accept_step("alice", 11, 200).unwrap() == StepOutcome::Accepted
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| usize::from(t.join().unwrap()))
        .sum();
    assert_eq!(winners, 1);
}

#[test]
fn group_commit_covers_every_caller_with_shared_flushes() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let writes = Arc::new(AtomicU64::new(0));
    let durable = Arc::new(AtomicU64::new(0));
    let flushes = Arc::new(AtomicU64::new(0));
    let (commits, _flusher) = {
        let (writes, durable, flushes) = (writes.clone(), durable.clone(), flushes.clone());
        GroupCommit::start(move || {
            flushes.fetch_add(1, Ordering::SeqCst);
            let covered = writes.load(Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            durable.fetch_max(covered, Ordering::SeqCst);
            Ok(())
        })
        .unwrap()
    };
    let callers = 32;
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (commits, writes, durable) = (commits.clone(), writes.clone(), durable.clone());
            std::thread::spawn(move || {
                let mine = writes.fetch_add(1, Ordering::SeqCst) + 1;
                commits.wrote();
                commits.wait().unwrap();
                assert!(
                    durable.load(Ordering::SeqCst) >= mine,
                    "returned before durable"
                );
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let flushes = flushes.load(Ordering::SeqCst);
    assert!(
        flushes >= 1 && flushes < callers,
        "{flushes} flushes for {callers} callers"
    );
}

#[test]
fn nothing_written_needs_no_flush_and_async_waiters_are_woken() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let flushes = Arc::new(AtomicU64::new(0));
    let counted = flushes.clone();
    let (commits, _flusher) = GroupCommit::start(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ((), none) = own_writes(|| ());
    runtime.block_on(commits.durable_through(none)).unwrap();
    commits.wait().unwrap();
    assert_eq!(flushes.load(Ordering::SeqCst), 0);
    let ((), mine) = own_writes(|| commits.wrote());
    assert_eq!(mine, 1);
    runtime.block_on(commits.durable_through(mine)).unwrap();
    assert_eq!(flushes.load(Ordering::SeqCst), 1);
    runtime.block_on(commits.durable_through(mine)).unwrap();
    assert_eq!(flushes.load(Ordering::SeqCst), 1, "already durable");
}

#[test]
fn group_commit_reports_failures_and_survives_a_panic() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let (commits, _flusher) =
        GroupCommit::start(move || match counted.fetch_add(1, Ordering::SeqCst) {
            0 => Err(StoreError::Io {
                what: "fdatasync of",
                path: "/disk/on/fire".into(),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            }),
            2 => panic!("flush panicked"),
            _ => Ok(()),
        })
        .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        commits.wrote();
        outcomes.push(commits.wait().is_ok());
    }
    assert_eq!(
        outcomes,
        [false, true, false, true],
        "no caller hangs after a panic"
    );
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = enrolled_store(dir.path());
        assert_eq!(
            store.accept_step("alice", 12, 200).unwrap(),
            StepOutcome::Accepted
        );
        store
            .charge_attempt("alice", 300, &ThrottleConfig::default())
            .unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    let record = store.get("alice").unwrap().unwrap();
    assert_eq!(record.last_step, Some(12));
    assert_eq!(record.failures, 1);
    assert_eq!(
        store.accept_step("alice", 12, 201).unwrap(),
        StepOutcome::Replayed
    );
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn reset_and_unlock() {
    let dir = tempfile::tempdir().unwrap();
    let store = enrolled_store(dir.path());
    let config = ThrottleConfig::default();
    for _ in 0..5 {
        store.charge_attempt("alice", 500, &config).unwrap();
    }
    assert!(store.get("alice").unwrap().unwrap().is_locked(500));
    assert!(store.unlock("alice").unwrap());
    assert!(!store.get("alice").unwrap().unwrap().is_locked(500));
    assert!(!store.unlock("nobody").unwrap());
    assert!(
        store.get("nobody").unwrap().is_none(),
        "unlock creates nothing"
    );
    assert!(store.reset("alice").unwrap());
    assert!(!store.reset("alice").unwrap());
    assert!(store.page(None, 1).unwrap().is_empty());
}

#[test]
fn records_written_as_json_are_read_and_rewritten_in_binary() {
    let dir = tempfile::tempdir().unwrap();
    let old = enrolled_store(dir.path()).get("alice").unwrap().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let json = serde_json::to_vec(&old).unwrap();
    store.insert_raw("alice", &json);
    assert_eq!(store.get("alice").unwrap().unwrap(), old);
    assert_eq!(
        store.accept_step("alice", 12, 200).unwrap(),
        StepOutcome::Accepted
    );
    assert_eq!(store.raw("alice").unwrap()[0], 3, "binary now");
    assert_eq!(store.get("alice").unwrap().unwrap().last_step, Some(12));
}

#[test]
fn corrupt_record_is_reported_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store.insert_raw("mallory", b"not json");
    assert!(store.get("mallory").is_err());
    assert!(store.accept_step("mallory", 1, 1).is_err());
    assert_eq!(store.raw("mallory").unwrap(), b"not json");
}

/// A page reads only its own users: a record past its end that cannot be decoded (here a
/// damaged one) fails the pages that reach it, and no other.
#[test]
fn a_page_reads_no_record_after_its_last() {
    let dir = tempfile::tempdir().unwrap();
    let store = enrolled_store(dir.path());
    store.modify("bob", &mut |r| r.failures = 1).unwrap();
    store.insert_raw("mallory", b"not json");
    let names = |page: Vec<(String, UserRecord)>| -> Vec<String> {
        page.into_iter().map(|(user, _)| user).collect()
    };
    assert_eq!(names(store.page(None, 2).unwrap()), ["alice", "bob"]);
    assert_eq!(names(store.page(Some("alice"), 1).unwrap()), ["bob"]);
    assert_eq!(
        names(store.page(Some("al"), 1).unwrap()),
        ["alice"],
        "after is a position"
    );
    assert!(store.page(None, 3).is_err());
    assert!(store.page(Some("bob"), 1).is_err());
    assert!(store.page(Some("mallory"), 5).unwrap().is_empty());
}

#[test]
fn a_broken_store_refuses_once_reported_then_reopens_without_losing_what_was_confirmed() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let store = SledStore::open_reporting(
        dir.path(),
        Box::new(move |event| sink.lock().unwrap().push(event.to_string())),
    )
    .unwrap();
    let pending = Pending {
        token: token(1),
        expires: 1000,
        at_login: false,
        delivered: None,
        link: None,
    };
    store
        .save_pending("alice", pending.clone())
        .unwrap()
        .unwrap();
    store
        .confirm("alice", &pending, 10, 100, Charge::Made)
        .unwrap();
    store.flush().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // A write that is not durable when the store breaks is never reported done.
    let (_, unflushed) = own_writes(|| store.accept_step("alice", 12, 200).unwrap());
    store.break_with(std::io::Error::from_raw_os_error(libc::EIO));
    let lost = runtime.block_on(store.durable_through(unflushed));
    assert!(matches!(lost, Err(ref e) if e.is_reported()), "{lost:?}");
    for _ in 0..20 {
        let refused = store.get("alice").unwrap_err();
        assert!(refused.is_reported(), "{refused}");
    }
    assert_eq!(
        events.lock().unwrap().len(),
        1,
        "{:?}",
        events.lock().unwrap()
    );
    assert!(events.lock().unwrap()[0].contains("Input/output error"));

    // After the pause the next request opens the store again: the confirmed token is there.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let record = store.get("alice").unwrap().unwrap();
    assert!(record.token.is_some());
    let (outcome, write) = own_writes(|| store.accept_step("alice", 20, 300).unwrap());
    assert_eq!(outcome, StepOutcome::Accepted);
    runtime.block_on(store.durable_through(write)).unwrap();
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1].contains("durable again"), "{events:?}");
}

/// sled's drop ends with `sync_all().unwrap()`, which panics on the errors only a sync sees:
/// closing the store after such a failure still records all of it (the close is counted, the
/// failure reported, the next reopen paced), and the panic stays inside the close.
#[test]
fn a_close_whose_drop_panics_is_still_recorded() {
    use super::sled::{Opening, Shared, SledDb};
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("sync_all failed (a test's stand-in for sled's drop)");
        }
    }
    struct Fragile {
        sled: SledDb,
        _bomb: Bomb,
    }
    impl Opening for Fragile {
        fn at(dir: &Path) -> std::result::Result<Fragile, StoreError> {
            Ok(Fragile {
                sled: SledDb::open(dir)?,
                _bomb: Bomb,
            })
        }
        fn sled(&self) -> &SledDb {
            &self.sled
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let report: super::health::Report =
        Box::new(move |event| seen.lock().unwrap().push(event.to_string()));
    let (shared, _flusher) = Shared::<Fragile>::open(&dir.path().join("store"), report).unwrap();
    shared.close(Arc::new(StoreError::Io {
        what: "fdatasync of",
        path: dir.path().join("store/db"),
        source: std::io::Error::from_raw_os_error(libc::EIO),
    }));
    assert_eq!(shared.closings().0, 1);
    assert_eq!(
        events.lock().unwrap().len(),
        1,
        "{:?}",
        events.lock().unwrap()
    );
    assert!(
        shared.with(|_| Ok(())).is_err(),
        "the reopen waits its turn after the failure"
    );
}

/// The store's files are read from the device when it opens, not from pages the kernel kept:
/// after a failed write-back those may hold what the device never got.
#[test]
fn opening_the_store_reads_from_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("blobs")).unwrap();
    let files = [store.join("db"), store.join("blobs/1")];
    for file in &files {
        std::fs::write(file, vec![7u8; 256 * 1024]).unwrap();
        std::fs::File::open(file).unwrap().sync_all().unwrap();
        std::fs::read(file).unwrap();
        assert!(resident_pages(file) > 0, "{} is cached", file.display());
    }
    super::sled::read_from_the_device(&store).unwrap();
    for file in &files {
        assert_eq!(
            resident_pages(file),
            0,
            "{} is still cached",
            file.display()
        );
    }
}

/// Opening the store goes through it: a file of the store's directory that sled does not
/// read itself is no longer cached once the store is open.
#[test]
fn the_store_is_opened_from_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let aside = store.join("aside");
    std::fs::write(&aside, vec![7u8; 256 * 1024]).unwrap();
    std::fs::read(&aside).unwrap();
    assert!(resident_pages(&aside) > 0);
    let _open = SledStore::open(&store).unwrap();
    assert_eq!(resident_pages(&aside), 0);
}

/// How many bytes of `path` the kernel holds in its cache (util-linux's fincore, which asks
/// mincore; this module has no unsafe code of its own).
fn resident_pages(path: &Path) -> u64 {
    let output = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}
