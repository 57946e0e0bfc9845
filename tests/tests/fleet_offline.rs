//! Offline logins in fleet mode (docs/fleet.md, "Offline logins") against the real PostgreSQL
//! and three hosts of the fleet tests. Host B's link to the database is cut by its TCP proxy
//! (the database keeps running, so A stays online): B logs users in from its packs, each step
//! once, refuses users without a pack, throttles wrong codes locally, keeps its journal through
//! a SIGKILL, and replays it when the link heals; A then refuses the steps B used, and a code
//! used on both in one step is reported. Packs run out after the window; an admin can give a
//! user a pack ahead of a first login.

use std::time::Duration;

use kron_tests::fleet::{Host, TEST_OFFLINE_WINDOW};
use kron_tests::pam::PamConfig;
use kron_tests::totp::{Oath, base32, unix_now, wrong_code};
use kron_tests::{Fleet, Stack, TestUser, process, result, scratch, world};

/// Wrong codes: three free, then an hour's wait (which cannot run out while the test runs).
const THROTTLE: &str = "default_mode = \"require\"\n[throttle]\nfree_attempts = 3\nbase_delay = 3600\nmax_delay = 7200\n";

fn number(status: &serde_json::Value, key: &str) -> u64 {
    status[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: {status}"))
}

fn reachable(status: &serde_json::Value) -> bool {
    status["reachable"].as_bool() == Some(true)
}

fn wait_for_packs(host: &Host, users: u64) {
    host.wait_for_status(&format!("{users} offline packs on {}", host.name), |s| {
        reachable(s) && number(s, "pack_users") >= users
    });
}

/// One row count of `sql` on the fleet's database.
fn count(fleet: &Fleet, sql: &str) -> u64 {
    fleet
        .db
        .sql("kron", sql)
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn a_host_cut_off_logs_in_from_its_packs_once_and_reports_when_back() {
    let mut fleet = Fleet::start(THROTTLE);
    let (used_twice, replayed_later, no_pack, guesser) = (
        TestUser::new(),
        TestUser::new(),
        TestUser::new(),
        TestUser::new(),
    );
    let a = fleet.host(0);
    let (t1, c1) = a.kronctl().enroll_confirmed_now(used_twice.name());
    let (t2, c2) = a.kronctl().enroll_confirmed_now(replayed_later.name());
    let (t3, c3) = a.kronctl().enroll_confirmed_now(no_pack.name());
    let (t4, c4) = a.kronctl().enroll_confirmed_now(guesser.name());

    // Online logins on B give B packs of these three users (not of `no_pack`).
    let b = fleet.host(1);
    for (user, token, confirmed) in [
        (&used_twice, &t1, c1),
        (&replayed_later, &t2, c2),
        (&guesser, &t4, c4),
    ] {
        let login = b
            .login(user.name())
            .answer(&token.code_for_step(confirmed + 1))
            .run();
        login.assert_accepted();
    }
    wait_for_packs(b, 3);
    assert!(
        b.otpd.stderr().contains("detail=\"checked online\""),
        "{}",
        b.otpd.stderr()
    );

    b.proxy.cut();
    // No pack on B: refused, as every login was before offline logins.
    let refused = b
        .login(no_pack.name())
        .answer(&t3.code_for_step(c3 + 1))
        .run();
    assert_eq!(
        refused.result(),
        result::AUTHINFO_UNAVAIL,
        "{}",
        refused.raw
    );

    // Wrong codes offline hit the local throttle: three refused, then throttled.
    let wrong = wrong_code(&t4.code_for_step(c4 + 2));
    for _ in 0..3 {
        b.login(guesser.name()).answer(&wrong).run().assert_denied();
    }
    b.login(guesser.name())
        .answer(&t4.code_for_step(c4 + 2))
        .run()
        .assert_throttled();

    // The current code passes offline, once.
    let code = t1.code_for_step(c1 + 2);
    b.login(used_twice.name())
        .answer(&code)
        .run()
        .assert_accepted();
    let again = b.login(used_twice.name()).answer(&code).run();
    again.assert_denied();
    assert!(again.mentions("already used"), "{}", again.raw);
    assert!(
        b.otpd.stderr().contains("detail=\"checked offline\""),
        "{}",
        b.otpd.stderr()
    );
    // A, online, cannot know: the same code passes there too (the documented risk, within the
    // same step window), and is reported once B is back.
    a.login(used_twice.name())
        .answer(&code)
        .run()
        .assert_accepted();

    // An offline use, then otpd killed at once: the use is in the journal after the restart.
    b.login(replayed_later.name())
        .answer(&t2.code_for_step(c2 + 2))
        .run()
        .assert_accepted();
    fleet.hosts[1].otpd.kill();
    fleet.hosts[1].otpd.start_again();
    let b = fleet.host(1);
    let status = b.fleet_status();
    assert!(!reachable(&status), "{status}");
    // Two uses; four failures (three wrong codes, one replay); the throttled try is not charged.
    assert_eq!(number(&status, "journal_waiting"), 6, "{status}");
    assert_eq!(number(&status, "pack_users"), 3, "{status}");
    // The restarted otpd checks offline as before (its decisions before the kill reached
    // syslog, not yet the audit table: these will), but only once the clock is two steps past
    // its start: a step used online just before a crash could be lost with it (the start
    // floor). Until then a code is refused as unavailable, uncharged and not journaled (otpd
    // says it cannot reach its database; pam_kron reports that as a failed login, since it
    // comes after an answer).
    let wrong = wrong_code(&t1.code_for_step(c1 + 3));
    let mut unavailable = 0;
    process::wait_for(
        "B checking codes offline after its restart",
        Duration::from_secs(100),
        || {
            let login = b.login(used_twice.name()).answer(&wrong).run();
            login.assert_denied();
            if login.mentions("cannot reach its database") {
                unavailable += 1;
                std::thread::sleep(Duration::from_secs(2));
                return None;
            }
            Some(())
        },
    );
    assert!(unavailable > 0, "no start floor after the restart");
    assert_eq!(number(&b.fleet_status(), "journal_waiting"), 7);
    // A use after the restart, of the step after the clock's (the floor's last step may be the
    // clock's own).
    let step = t2.current_step() + 1;
    b.login(replayed_later.name())
        .answer(&t2.code_for_step(step))
        .run()
        .assert_accepted();
    assert_eq!(number(&b.fleet_status(), "journal_waiting"), 8);
    let a = fleet.host(0);

    // The link heals: the journal reaches the database within seconds.
    b.proxy.heal();
    b.wait_for_status("B's journal replayed", |s| {
        reachable(s) && number(s, "journal_waiting") == 0
    });
    let last_step = fleet.db.sql(
        "kron",
        &format!(
            "SELECT last_step FROM kron.users WHERE name = '{}'",
            replayed_later.name()
        ),
    );
    assert_eq!(last_step, step.to_string());
    // B's step is still valid by the clock: refused as used. The step before it: refused too.
    let login = a
        .login(replayed_later.name())
        .answer(&t2.code_for_step(step))
        .run();
    login.assert_denied();
    assert!(login.mentions("already used"), "{}", login.raw);
    a.login(replayed_later.name())
        .answer(&t2.code_for_step(step - 1))
        .run()
        .assert_denied();
    let failures = count(
        &fleet,
        &format!(
            "SELECT failures FROM kron.users WHERE name = '{}'",
            guesser.name()
        ),
    );
    assert!(failures >= 3, "offline failures were not added: {failures}");

    // The code used on A and offline on B in one step: a security event in B's syslog and in
    // the audit table.
    assert!(
        b.otpd.stderr().contains("security: double use")
            && b.otpd.stderr().contains(used_twice.name()),
        "{}",
        b.otpd.stderr()
    );
    let double = count(
        &fleet,
        &format!(
            "SELECT count(*) FROM kron.audit WHERE event = 'double-use' AND \"user\" = '{}' \
             AND host = 'b' AND detail LIKE '%on host a and offline on host b%'",
            used_twice.name()
        ),
    );
    assert_eq!(double, 1);

    // Replaying an entry again changes nothing.
    let id = fleet.db.sql(
        "kron",
        &format!(
            "SELECT encode(id, 'hex') FROM kron.offline_journal WHERE name = '{}' AND kind = 'use' \
             ORDER BY at LIMIT 1",
            replayed_later.name()
        ),
    );
    let before = fleet.db.sql(
        "kron",
        "SELECT last_step, failures, version FROM kron.users ORDER BY name",
    );
    // B's role replays an entry by hand (`kron.offline_replay` with these arguments); its answer.
    let replay_on_b = |arguments: String| {
        fleet.sql_as_host("b", &format!("SELECT kron.offline_replay({arguments})"))
    };
    let again = replay_on_b(format!(
        "'\\x{id}', '{}', 'use', {}, 0, 0, 3, 3600, 7200",
        replayed_later.name(),
        c2 + 5
    ));
    assert_eq!(again, "already");
    // Sent again after a security event (B stopped before taking it off its journal), the
    // answer says the event again, so B can still log it.
    let double_id = fleet.db.sql(
        "kron",
        &format!(
            "SELECT encode(id, 'hex') FROM kron.offline_journal WHERE name = '{}' \
             AND outcome LIKE 'double-use:%'",
            used_twice.name()
        ),
    );
    let again = replay_on_b(format!(
        "'\\x{double_id}', '{}', 'use', 1, 0, 0, 3, 3600, 7200",
        used_twice.name()
    ));
    assert_eq!(again, "already:double-use:a");
    // A use of a step no pack can have held (a host with a forged journal) is refused and
    // reported: it would lock the user's codes out until then. (Of the token in use: one of
    // another token is reported as retired, and changes nothing either.)
    let generation = fleet.db.sql(
        "kron",
        &format!(
            "SELECT generation FROM kron.users WHERE name = '{}'",
            replayed_later.name()
        ),
    );
    let forged = replay_on_b(format!(
        "'\\x{}', '{}', 'use', 9223372036854775807, {generation}, 0, 3, 3600, 7200",
        "ab".repeat(16),
        replayed_later.name()
    ));
    assert_eq!(forged, "refused");
    assert_eq!(
        fleet.db.sql(
            "kron",
            "SELECT last_step, failures, version FROM kron.users ORDER BY name"
        ),
        before
    );
    // A failure dated far ahead (a host clock running ahead, or a forged journal) counts from
    // the database's now: the user waits the backoff of one more failure, not until 2100.
    let ahead = replay_on_b(format!(
        "'\\x{}', '{}', 'failure', NULL, NULL, 4102444800, 1, 60, 60",
        "cd".repeat(16),
        replayed_later.name()
    ));
    assert_eq!(ahead, "applied");
    let waits = fleet.db.sql(
        "kron",
        &format!(
            "SELECT next_attempt <= kron.db_now() + 60 AND last_attempt <= kron.db_now() \
             FROM kron.users WHERE name = '{}'",
            replayed_later.name()
        ),
    );
    assert_eq!(
        waits.trim(),
        "t",
        "the failure dated ahead set a wait past now + 60 s"
    );

    // Every decision in the audit table says where it was checked (B's offline rows arrive
    // once the link is back).
    process::wait_for(
        "B's offline decisions in the audit table",
        Duration::from_secs(60),
        || {
            let offline = count(
                &fleet,
                "SELECT count(*) FROM kron.audit WHERE host = 'b' AND detail LIKE 'checked offline%'",
            );
            (offline >= 1).then_some(())
        },
    );
    assert!(
        count(
            &fleet,
            "SELECT count(*) FROM kron.audit WHERE host = 'a' AND event = 'accepted' \
             AND detail = 'checked online'"
        ) >= 1
    );
    // And the database knows which host holds whose packs.
    let status = b.fleet_status();
    let hosts = status["hosts"].as_array().expect("hosts").clone();
    let b_row = hosts.iter().find(|h| h["host"] == "b").expect("host b");
    assert_eq!(b_row["users"], 3, "{status}");
}

/// A database that goes silent (its machine dead, a firewall that drops: nothing is refused,
/// nothing answers) is found away soon enough for the login that meets it to be checked offline
/// within pam_kron's default timeout (5 s): a host gives up on a login's statement after 3 s.
/// Before, it waited 10 s, the module gave up first, and every login of those seconds was
/// refused although the host held the user's pack. The logins run through a stack with the
/// module's default timeout.
#[test]
fn a_login_that_meets_a_silent_database_is_checked_offline_in_time() {
    let fleet = Fleet::start(THROTTLE);
    let (first, second) = (TestUser::new(), TestUser::new());
    let a = fleet.host(0);
    let (t1, c1) = a.kronctl().enroll_confirmed_now(first.name());
    let (t2, c2) = a.kronctl().enroll_confirmed_now(second.name());
    let b = fleet.host(1);
    let reach = world::transport_arg(&b.bus, &b.otpd, world::Transport::Socket);
    let default_timeout =
        PamConfig::with_module_args("kron-default-timeout", Stack::Probe, &[&reach]);
    for (user, token, confirmed) in [(&first, &t1, c1), (&second, &t2, c2)] {
        default_timeout
            .login(user.name())
            .answer(&token.code_for_step(confirmed + 1))
            .run()
            .assert_accepted();
    }
    wait_for_packs(b, 2);

    b.proxy.black_hole();
    let met = default_timeout
        .login(first.name())
        .answer(&t1.code_for_step(c1 + 2))
        .run();
    met.assert_accepted();
    assert!(
        b.otpd.stderr().contains("detail=\"checked offline\""),
        "{}",
        b.otpd.stderr()
    );
    // Known away now: the next login waits for no timeout at all.
    default_timeout
        .login(second.name())
        .answer(&t2.code_for_step(c2 + 2))
        .run()
        .assert_accepted();

    b.proxy.heal();
    b.wait_for_status("B's journal replayed", |s| {
        reachable(s) && number(s, "journal_waiting") == 0
    });
}

#[test]
fn packs_run_out_after_the_window_and_an_admin_adds_a_user_ahead() {
    // Packs of one minute: the database gives steps up to a minute ahead, never more.
    let fleet = Fleet::start_with("default_mode = \"require\"\n", "offline_window = 60\n");
    let (a, c) = (fleet.host(0), fleet.host(2));
    let user = TestUser::new();
    let (token, _) = a.kronctl().enroll_confirmed_now(user.name());

    // The user never logged in on C: an admin gives them a pack there.
    let added = c.kronctl().json(&["fleet", "offline-add", user.name()]);
    assert_eq!(added["changed"], serde_json::Value::Bool(true), "{added}");
    wait_for_packs(c, 1);
    assert!(
        c.kronctl()
            .run(&["fleet", "offline-add", "no such user!"])
            .code()
            != Some(0)
    );

    c.proxy.cut();
    let status = c.fleet_status();
    let ends = number(&status, "pack_ends");
    assert!(
        ends <= unix_now() + 60 + 30,
        "a pack reaches past the window: {status}"
    );
    c.login(user.name())
        .answer(&token.code_now())
        .run()
        .assert_accepted();

    // Once the clock is a step past the pack's last one (the skew), nothing passes offline.
    process::wait_for("the pack to run out", Duration::from_secs(180), || {
        (unix_now() >= ends + 31).then_some(())
    });
    let late = c.login(user.name()).answer(&token.code_now()).run();
    assert_eq!(late.result(), result::AUTHINFO_UNAVAIL, "{}", late.raw);
    c.proxy.heal();
    c.wait_for_status("C back online", |s| {
        reachable(s) && number(s, "journal_waiting") == 0
    });
    c.login(user.name())
        .answer(&token.code_now())
        .run()
        .assert_accepted();
}

/// A pack the database refuses for one user (here a seed it cannot decrypt; or a row an
/// administrator holds locked past the lock timeout) holds back no other user's: the users after
/// them in the round still get theirs, and the refusal is logged.
#[test]
fn a_pack_refused_for_one_user_holds_back_no_other_users() {
    let fleet = Fleet::start("default_mode = \"require\"\n");
    let (a, c) = (fleet.host(0), fleet.host(2));
    let mut users = [TestUser::new(), TestUser::new()];
    users.sort_by(|x, y| x.name().cmp(y.name()));
    for user in &users {
        a.kronctl().enroll_confirmed_now(user.name());
    }
    // The first in the round's (name) order.
    fleet.db.sql(
        "kron",
        &format!(
            "UPDATE kron.users SET seed = '\\x00' WHERE name = '{}'",
            users[0].name()
        ),
    );
    for user in &users {
        c.kronctl()
            .run(&["fleet", "offline-add", user.name()])
            .assert_success("kronctl fleet offline-add");
    }
    wait_for_packs(c, 1);
    process::wait_for("the refusal logged", Duration::from_secs(60), || {
        c.otpd.stderr().contains("offline packs: ").then_some(())
    });
    let status = c.fleet_status();
    assert_eq!(number(&status, "pack_users"), 1, "{status}");
}

/// At any `offline_cost` one pack statement does about the same bcrypt work (schema version
/// 8): at cost 11 the database hashes three steps a statement, whatever a host asks for, and a
/// host still fills its pack at once by asking again from where each answer ends. Before, a
/// statement of 120 steps at a high cost outlived the host's statement timeout, and no pack was
/// ever stored.
#[test]
fn a_high_offline_cost_fills_packs_in_small_statements() {
    let fleet = Fleet::start("default_mode = \"require\"\n");
    fleet.db.sql(
        "kron",
        "UPDATE kron.settings SET value = '11' WHERE key = 'offline_cost'",
    );
    let (a, b) = (fleet.host(0), fleet.host(1));
    let user = TestUser::new();
    let (token, confirmed) = a.kronctl().enroll_confirmed_now(user.name());

    // As a host, asking for the most steps a statement may carry.
    let hashes = fleet.sql_as_host(
        "c",
        &format!(
            "SELECT jsonb_array_length(kron.offline_pack('{}', 0, 480)->'hashes')",
            user.name()
        ),
    );
    assert_eq!(hashes, "3", "kron.offline_pack as host c");

    b.login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    // The pack reaches the end of the window (10 minutes; a step's slack for the clock).
    b.wait_for_status("B's pack covering the window", |s| {
        reachable(s)
            && number(s, "pack_users") == 1
            && number(s, "pack_ends") + 60 >= unix_now() + TEST_OFFLINE_WINDOW
    });
    let log = b.otpd.stderr();
    assert!(!log.contains("unreachable"), "{log}");
}

/// A step B accepted offline stays used on B after the link heals, while the database, which
/// has not had B's journal entry yet, would take it as new: B refuses it as used. (Before, the
/// same code passed a second time on B, online, and the replay reported nothing, as the
/// database ignores a host's own steps.) The replay is held back here by the database refusing
/// it, which also shows that a refused replay no longer holds back the rest of the round: a
/// reset meanwhile still drops the old token's pack on B.
#[test]
fn a_step_used_offline_stays_used_on_that_host_until_the_database_has_it() {
    const REPLAY: &str = "kron.offline_replay(bytea, text, text, bigint, bigint, bigint, \
                          integer, bigint, bigint)";
    let fleet = Fleet::start(THROTTLE);
    let (user, reset_later, doubled) = (TestUser::new(), TestUser::new(), TestUser::new());
    let a = fleet.host(0);
    let (t1, c1) = a.kronctl().enroll_confirmed_now(user.name());
    let (t2, c2) = a.kronctl().enroll_confirmed_now(reset_later.name());
    let (t3, c3) = a.kronctl().enroll_confirmed_now(doubled.name());
    let b = fleet.host(1);
    for (user, token, confirmed) in [
        (&user, &t1, c1),
        (&reset_later, &t2, c2),
        (&doubled, &t3, c3),
    ] {
        b.login(user.name())
            .answer(&token.code_for_step(confirmed + 1))
            .run()
            .assert_accepted();
    }
    wait_for_packs(b, 3);

    fleet.db.sql(
        "kron",
        &format!("REVOKE EXECUTE ON FUNCTION {REPLAY} FROM kron_host"),
    );
    b.proxy.cut();
    let code = t1.code_for_step(c1 + 2);
    b.login(user.name()).answer(&code).run().assert_accepted();
    // One code of `doubled` used twice: offline on B, online on A.
    let double = t3.code_for_step(c3 + 2);
    b.login(doubled.name())
        .answer(&double)
        .run()
        .assert_accepted();
    let used_offline_by = unix_now();
    a.login(doubled.name())
        .answer(&double)
        .run()
        .assert_accepted();
    // The rounds after the heal run at least two seconds after the uses (below).
    std::thread::sleep(Duration::from_millis(2500));
    b.proxy.heal();
    b.wait_for_status("B back, its replay refused", |s| {
        reachable(s) && number(s, "journal_waiting") == 2
    });
    process::wait_for(
        "B's refused replay logged",
        Duration::from_secs(120),
        || b.otpd.stderr().contains("offline packs: ").then_some(()),
    );

    // Online on B: the database takes the step, B does not.
    let again = b.login(user.name()).answer(&code).run();
    again.assert_denied();
    assert!(again.mentions("already used"), "{}", again.raw);

    // A reset on A reaches B although B's replay is still refused: the old token's pack goes.
    let reset = a.kronctl().json(&["reset", reset_later.name()]);
    assert_eq!(reset["changed"], serde_json::Value::Bool(true), "{reset}");
    b.wait_for_status("the reset token's pack dropped on B", |s| {
        number(s, "pack_users") == 2 && number(s, "journal_waiting") == 2
    });
    // Those rounds did not record B as synced past the entries still waiting, so the database
    // keeps A's online use of `doubled`'s step for B's replay to find.
    let synced: u64 = fleet
        .db
        .sql(
            "kron",
            &format!(
                "SELECT synced_at FROM kron.offline_packs WHERE host = 'b' AND name = '{}'",
                doubled.name()
            ),
        )
        .parse()
        .expect("synced_at");
    // A round before the cut may have recorded the second of the uses, and the database's
    // clock rounds to the nearest second: hence the one second.
    assert!(
        synced <= used_offline_by + 1,
        "B recorded as synced at {synced}, past its waiting entries ({used_offline_by})"
    );

    // The replay allowed again: the journal reaches the database, and the double use of
    // `doubled`'s code is reported.
    fleet.db.sql(
        "kron",
        &format!("GRANT EXECUTE ON FUNCTION {REPLAY} TO kron_host"),
    );
    b.wait_for_status("B's journal replayed", |s| {
        reachable(s) && number(s, "journal_waiting") == 0
    });
    assert_eq!(
        count(
            &fleet,
            &format!(
                "SELECT count(*) FROM kron.audit WHERE host = 'b' AND event = 'double-use' \
                 AND \"user\" = '{}'",
                doubled.name()
            ),
        ),
        1
    );
}

/// A reset to a token of a longer period (30 s steps to 60 s) makes the new token's steps about
/// half the old one's. B's pack of the new token brings that token's newest step, where before B
/// kept the old token's, far larger, and refused every code of the new token offline (for
/// decades: until the new steps caught up). And B's offline use of the old token, replayed after
/// the reset, is reported as a use of a retired token, not as a step beyond any pack.
#[test]
fn a_new_token_of_a_longer_period_logs_in_offline() {
    let fleet = Fleet::start("default_mode = \"require\"\n");
    let (a, b) = (fleet.host(0), fleet.host(1));
    let user = TestUser::new();
    let (old, confirmed) = a.kronctl().enroll_confirmed_now(user.name());
    b.login(user.name())
        .answer(&old.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    wait_for_packs(b, 1);
    b.proxy.cut();
    b.login(user.name())
        .answer(&old.code_for_step(confirmed + 2))
        .run()
        .assert_accepted();

    let reset = a.kronctl().json(&["reset", user.name()]);
    assert_eq!(reset["changed"], serde_json::Value::Bool(true), "{reset}");
    let secret = [7u8; 20];
    let dir = scratch::private_dir("kron-fleet-period.");
    let file = dir.path().join("users.oath");
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    scratch::write_file(&file, &format!("HOTP/T60 {} - {hex}\n", user.name()), 0o600);
    let imported = a
        .kronctl()
        .json(&["import", "--oath-usersfile", &file.display().to_string()]);
    assert_eq!(imported["imported"], 1, "{imported}");
    let new = Oath::new(&base32(&secret)).period(60);
    b.proxy.heal();
    b.wait_for_status("B's journal replayed", |s| {
        reachable(s) && number(s, "journal_waiting") == 0
    });
    let audited = |event: &str| {
        count(
            &fleet,
            &format!(
                "SELECT count(*) FROM kron.audit WHERE host = 'b' AND event = '{event}' \
                 AND \"user\" = '{}'",
                user.name()
            ),
        )
    };
    assert_eq!(
        (audited("offline-retired"), audited("offline-refused")),
        (1, 0)
    );

    // B's next round drops the old token's pack and fetches the new token's. The database
    // records the fetch just before B stores it under the round's start time, a few seconds
    // earlier at most; the old pack's is a round (a minute) older.
    let fetched = process::wait_for(
        "B's pack of the new token",
        Duration::from_secs(150),
        || {
            let row = fleet.db.sql(
                "kron",
                &format!(
                    "SELECT p.fetched_at FROM kron.offline_packs p JOIN kron.users u \
                     ON u.name = p.name AND u.generation = p.generation \
                     WHERE p.host = 'b' AND p.name = '{}'",
                    user.name()
                ),
            );
            row.parse::<u64>().ok()
        },
    );
    b.wait_for_status("B holding the new token's pack", |s| {
        number(s, "pack_users") == 1 && number(s, "pack_newest") + 30 >= fetched
    });

    b.proxy.cut();
    let code = new.code_now();
    b.login(user.name()).answer(&code).run().assert_accepted();
    let again = b.login(user.name()).answer(&code).run();
    again.assert_denied();
    assert!(again.mentions("already used"), "{}", again.raw);
    b.proxy.heal();
    b.wait_for_status("B's journal replayed", |s| {
        reachable(s) && number(s, "journal_waiting") == 0
    });
}

/// A pack B fetches while a check on another host holds the user (an open transaction that
/// took a step, here by hand) waits for that check to commit, and then holds its step as used:
/// cut off right after, B refuses that step's code offline and takes the next one. Before
/// schema version 11 the pack was made from the row as it was before the check, and the step
/// passed once more on B.
#[test]
fn a_pack_made_while_a_check_holds_the_user_holds_its_step_as_used() {
    let fleet = Fleet::start("default_mode = \"require\"\n");
    let b = fleet.host(1);
    let user = TestUser::new();
    let (token, _) = fleet.host(0).kronctl().enroll_confirmed_now(user.name());
    let step = kron_tests::totp::steady_step();
    let mut check = fleet.db.session("kron");
    check.send(&format!(
        "BEGIN; UPDATE kron.users SET last_step = {step}, version = version + 1 \
         WHERE name = '{}';",
        user.name()
    ));
    b.kronctl()
        .run(&["fleet", "offline-add", user.name()])
        .assert_success("kronctl fleet offline-add");
    // Host roles give up on a lock after 5 s: the commit comes as soon as B's pack waits.
    process::wait_for(
        "B's pack waiting for the user's row",
        Duration::from_secs(4),
        || {
            let waiting = fleet.db.sql(
                "kron",
                "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = 'kron_b' AND wait_event_type = 'Lock'",
            );
            (waiting == "1").then_some(())
        },
    );
    check.send("COMMIT;");
    wait_for_packs(b, 1);
    b.proxy.cut();
    let refused = b
        .login(user.name())
        .answer(&token.code_for_step(step))
        .run();
    refused.assert_denied();
    assert!(refused.mentions("already used"), "{}", refused.raw);
    b.login(user.name())
        .answer(&token.code_for_step(step + 1))
        .run()
        .assert_accepted();
}
