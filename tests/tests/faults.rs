//! Faults otpd must survive by itself (issue 16): a full file system under the state
//! directory refuses what must be recorded, says so once, loses nothing confirmed, and works
//! again within seconds of space coming back, without a restart.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use kron_tests::pam::Stack;
use kron_tests::totp::wrong_code;
use kron_tests::world::{self, Transport, World};
use kron_tests::{Bus, Otpd, TestUser, kronctl, result};

/// Enough free attempts that the refused logins below never throttle the user.
const CONFIG: &str = "default_mode = \"require\"\n[throttle]\nfree_attempts = 10\n";

/// Writes zeros to `path` until the file system is full; returns how much was written.
fn fill(path: &Path) -> u64 {
    let mut file = File::create(path).expect("create the filler");
    let mut written = 0u64;
    for size in [1024 * 1024, 4096, 512] {
        let chunk = vec![0u8; size];
        while file.write_all(&chunk).is_ok() {
            written += size as u64;
        }
    }
    let _ = file.sync_all();
    written
}

fn store_lines(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("store:") && line.contains(needle))
        .count()
}

#[test]
fn a_full_disk_refuses_once_logged_loses_nothing_and_recovers_without_a_restart() {
    let bus = Bus::start();
    let otpd = Otpd::start_on_tmpfs(&bus, CONFIG, "16m");
    let pam = world::stack(&bus, &otpd, Transport::Socket, world::SERVICE, Stack::Probe);
    let mut world = World {
        pam,
        otpd,
        bus,
        transport: Transport::Socket,
    };
    let pid = world.otpd.pid();
    let alice = TestUser::new();
    let bob = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(alice.name());
    let used = token.code_for_step(confirmed + 1);
    world
        .login(alice.name())
        .answer(&used)
        .run()
        .assert_accepted();

    let filler = world.otpd.state_dir_of_process().join("filler");
    assert!(fill(&filler) > 0, "nothing could be written to the tmpfs");

    // sled may still take a few writes into pages it already has; then writes fail.
    let mut refused = None;
    for attempt in 0..500 {
        let output = world.kronctl().run(&["enroll", bob.name()]);
        if !output.success() {
            assert!(
                output.stderr.contains("see its log"),
                "{}",
                output.describe()
            );
            refused = Some(attempt);
            break;
        }
    }
    assert!(refused.is_some(), "enrollments kept working on a full disk");

    // Logins that must record something (the attempt's charge) are refused, fail closed.
    for _ in 0..5 {
        let login = world.login(alice.name()).answer(&wrong_code(&used)).run();
        login.assert_result(result::AUTHINFO_UNAVAIL);
    }
    let log = world.otpd.stderr();
    assert_eq!(
        store_lines(&log, "file system is full"),
        1,
        "one line for the failure, not one per login:\n{log}"
    );
    assert_eq!(
        log.matches("request failed").count(),
        0,
        "refusals are not logged one by one:\n{log}"
    );

    // Space comes back: logins work again within seconds, in the same process.
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    let fresh = token.code_for_step(confirmed + 2);
    loop {
        let login = world.login(alice.name()).answer(&fresh).run();
        if login.result() == result::SUCCESS {
            break;
        }
        login.assert_result(result::AUTHINFO_UNAVAIL);
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "logins still refused 10 s after space came back:\n{}",
            world.otpd.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(world.otpd.is_running(), "otpd exited");
    assert_eq!(world.otpd.pid(), pid, "otpd was not restarted");
    assert_eq!(
        store_lines(&world.otpd.stderr(), "durable again"),
        1,
        "{}",
        world.otpd.stderr()
    );

    // Nothing confirmed was lost: the token is there and its used codes stay used.
    assert!(kronctl::flag(
        &world.kronctl().status(alice.name()),
        "enrolled"
    ));
    world
        .login(alice.name())
        .answer(&used)
        .run()
        .assert_denied();
    world
        .login(alice.name())
        .answer(&fresh)
        .run()
        .assert_denied();
}
