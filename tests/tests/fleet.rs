//! Fleet mode against a real PostgreSQL with TLS and three otpd hosts (A, B, C), logins through
//! the real pam_kron: one enrollment works everywhere, a code is accepted once fleet-wide (raced
//! 51 times on three hosts, after which each host holds at most two connections), the failure
//! budget and unlock are fleet-wide (a name that is no account costs the database a commit as an
//! account's wrong code does), a reset retires the old token everywhere, logins answering
//! at once on one host are checked in one statement and a batch of checks answers each entry
//! as if alone, host roles read no seed (not even a pending one another host made), cannot
//! search a live sent code, and PUBLIC may execute no function, the database dying mid-login
//! accepts nothing undurable and otpd recovers by itself, idle connections keep alive and ended
//! ones cost no login, bad TLS is refused clearly, config mistakes are named by file:line, and
//! local tokens move into the fleet with `kronctl fleet push`, a page at a time.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kron_proto::{ImportResult, MAX_PUSH_PAGE};
use kron_tests::fleet::{Host, TEST_OFFLINE_WINDOW};
use kron_tests::pam::{Interactive, Running};
use kron_tests::pgbouncer::PgBouncer;
use kron_tests::postgres::{Postgres, TestCa};
use kron_tests::totp::{Oath, base32, decode_base32, steady_step, wrong_code};
use kron_tests::{
    Fleet, Kronctl, TestUser, Transcript, dbus, kronctl, otpd, process, result, scratch,
};

const REQUIRE: &str = "default_mode = \"require\"\n";
/// A backoff that cannot run out while a test runs.
const THROTTLE: &str = "default_mode = \"require\"\n[throttle]\nfree_attempts = 3\nbase_delay = 3600\nmax_delay = 7200\n";

fn results(running: Vec<Running>) -> Vec<String> {
    running
        .into_iter()
        .map(|r| r.wait().result().to_string())
        .collect()
}

#[test]
fn one_enrollment_works_on_every_host_and_a_reset_retires_it_everywhere() {
    let fleet = Fleet::start(REQUIRE);
    let (a, b, c) = (fleet.host(0), fleet.host(1), fleet.host(2));
    let user = TestUser::new();
    let (token, confirmed) = a.kronctl().enroll_confirmed_now(user.name());
    let code = token.code_for_step(confirmed + 1);

    b.login(user.name()).answer(&code).run().assert_accepted();
    let replay = c.login(user.name()).answer(&code).run();
    replay.assert_denied();
    assert!(replay.mentions("already used"), "{}", replay.raw);
    let status = c.kronctl().status(user.name());
    assert!(kronctl::flag(&status, "enrolled"), "{status}");
    assert!(kronctl::number(&status, "last_used") > 0, "{status}");
    assert!(kronctl::listed_users(&b.kronctl().json(&["list"])).contains(&user.name().to_string()));
    // On a schema before version 13 (here: its page function taken away) a page is read from
    // kron.list_users(), and otpd says how to upgrade.
    const PAGE: &str = "kron.list_users_after(text, integer)";
    fleet.db.sql(
        "kron",
        &format!("REVOKE EXECUTE ON FUNCTION {PAGE} FROM kron_host"),
    );
    assert!(kronctl::listed_users(&c.kronctl().json(&["list"])).contains(&user.name().to_string()));
    let log = c.otpd.stderr();
    assert!(
        log.contains("reading a page of users failed") && log.contains("kronctl fleet init"),
        "{log}"
    );
    fleet.db.sql(
        "kron",
        &format!("GRANT EXECUTE ON FUNCTION {PAGE} TO kron_host"),
    );

    // Recovery codes made on A work once, on C; a contact set on B shows on C.
    let made = a.kronctl().json(&["recovery-codes", user.name()]);
    let codes: Vec<String> = made["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{made}");
    let recovered = c.login(user.name()).answer(&codes[0]).run();
    recovered.assert_accepted();
    b.login(user.name()).answer(&codes[0]).run().assert_denied();
    b.kronctl()
        .run(&["contact", user.name(), "--email", "someone@example.test"])
        .assert_success("kronctl contact on B");
    let status = c.kronctl().status(user.name());
    assert_eq!(status["email"], "s***@example.test", "{status}");
    assert_eq!(kronctl::number(&status, "recovery_codes"), 9, "{status}");

    // Reset on B: A refuses a code of the old token that was never used.
    let reset = b.kronctl().json(&["reset", user.name()]);
    assert_eq!(reset["changed"], serde_json::Value::Bool(true), "{reset}");
    a.login(user.name())
        .answer(&token.code_for_step(confirmed + 2))
        .run()
        .assert_denied();
    assert!(!kronctl::flag(&a.kronctl().status(user.name()), "enrolled"));

    // Every decision is in the audit table with the host that made it, read as the owner.
    let log = a.kronctl().json(&[
        "fleet",
        "log",
        user.name(),
        "--url",
        &fleet.owner_url(a.proxy.port()),
        "--owner-password-file",
        &fleet.db.owner_password_file().display().to_string(),
    ]);
    let rows = log.as_array().expect("an array of rows").clone();
    let seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or_default().to_string(),
                r["event"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for expected in [
        ("a", "enrolled"),
        ("b", "accepted"),
        ("c", "rejected"),
        ("b", "reset"),
    ] {
        assert!(
            seen.iter().any(|(h, e)| h == expected.0 && e == expected.1),
            "{expected:?} missing from the fleet log: {seen:?}"
        );
    }

    // init again changes nothing and says so; status shows the link.
    let again = fleet.init(&a.kronctl(), a.proxy.port());
    again.assert_success("kronctl fleet init (again)");
    assert!(
        again.stdout.contains("nothing to apply"),
        "{}",
        again.stdout
    );
    let status = b.kronctl().json(&["fleet", "status"]);
    assert_eq!(
        status["reachable"],
        serde_json::Value::Bool(true),
        "{status}"
    );
    assert_eq!(status["primary"], serde_json::Value::Bool(true), "{status}");
    assert_eq!(status["schema_version"], 15, "{status}");
    assert_eq!(status["database_host"], "b", "{status}");

    // A host holds no seed to export: refused at once, by name, with nothing written.
    let dir = scratch::private_dir("kron-fleet-export.");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "a long pass phrase\n").unwrap();
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let file = dir.path().join("export.age");
    let export = a.kronctl().run(&[
        "export",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(!export.status.success(), "{}", export.describe());
    assert!(
        export.stderr.contains("not available on a fleet host"),
        "{}",
        export.describe()
    );
    assert!(!file.exists());

    // A host that served logins, its database connections open, stops cleanly on SIGTERM.
    let mut fleet = fleet;
    let host = &mut fleet.hosts[1].otpd;
    let stopped = host.stop();
    let log = host.stderr();
    assert!(stopped.success(), "otpd on b exited with {stopped}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// 17 users × the three steps of the window = 51 races; each sends one code to A, B and C at
/// the same moment, and exactly one of the three logins may pass. The losers are charged as
/// replays; the free attempts are raised so no winner is ever throttled by its own race.
#[test]
fn the_same_code_on_three_hosts_at_once_logs_in_exactly_once() {
    let fleet = Fleet::start("default_mode = \"require\"\n[throttle]\nfree_attempts = 10\n");
    let users: Vec<TestUser> = (0..17).map(|_| TestUser::new()).collect();
    let tokens: Vec<Oath> = (0..users.len())
        .map(|i| Oath::new(&base32(&[i as u8 + 1; 20])))
        .collect();
    let dir = scratch::private_dir("kron-fleet-users.");
    let file = dir.path().join("users.oath");
    let lines: String = users
        .iter()
        .enumerate()
        .map(|(i, user)| format!("HOTP/T30 {} - {}\n", user.name(), hex(&[i as u8 + 1; 20])))
        .collect();
    scratch::write_file(&file, &lines, 0o600);
    let imported =
        fleet
            .host(0)
            .kronctl()
            .json(&["import", "--oath-usersfile", &file.display().to_string()]);
    assert_eq!(imported["imported"], 17, "{imported}");

    let now = steady_step();
    let started = Instant::now();
    let mut races = 0;
    for step in [now - 1, now, now + 1] {
        let mut running = Vec::new();
        for (user, token) in users.iter().zip(&tokens) {
            let code = token.code_for_step(step);
            for host in &fleet.hosts {
                running.push((user.name(), host.login(user.name()).answer(&code).spawn()));
            }
        }
        let mut by_user: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (user, login) in running {
            by_user
                .entry(user)
                .or_default()
                .push(login.wait().result().to_string());
        }
        for (user, outcomes) in by_user {
            races += 1;
            let passed = outcomes.iter().filter(|r| *r == result::SUCCESS).count();
            assert_eq!(passed, 1, "{user} step {step}: {outcomes:?}");
            assert!(
                outcomes
                    .iter()
                    .all(|r| r == result::SUCCESS || r == result::AUTH_ERR),
                "{user} step {step}: {outcomes:?}"
            );
        }
    }
    assert_eq!(races, 51);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the races took {:?}",
        started.elapsed()
    );

    // 17 simultaneous logins on each host left it with at most two connections (docs/fleet.md):
    // they were pipelined, not given more.
    let per_host = fleet.db.sql(
        "kron",
        "SELECT h.host || ' ' || count(*) FROM pg_stat_activity a \
         JOIN kron.hosts h ON h.role = a.usename \
         WHERE a.datname = 'kron' AND a.backend_type = 'client backend' \
         GROUP BY h.host ORDER BY h.host",
    );
    let counts: Vec<&str> = per_host.lines().collect();
    assert_eq!(counts.len(), 3, "{per_host}");
    assert!(
        counts
            .iter()
            .all(|line| line.ends_with(" 1") || line.ends_with(" 2")),
        "{per_host}"
    );
}

#[test]
fn wrong_codes_on_three_hosts_spend_one_budget_and_unlock_on_c_frees_a() {
    let fleet = Fleet::start(THROTTLE);
    let (a, c) = (fleet.host(0), fleet.host(2));
    let user = TestUser::new();
    let (token, confirmed) = a.kronctl().enroll_confirmed_now(user.name());
    let right = token.code_for_step(confirmed + 1);
    let wrong = wrong_code(&right);

    // Six wrong guesses at once, two per host: the budget of three is charged before any is
    // checked, so exactly three are checked (and refused) and three are throttled.
    let running: Vec<Running> = fleet
        .hosts
        .iter()
        .flat_map(|host| [host, host])
        .map(|host| host.login(user.name()).answer(&wrong).spawn())
        .collect();
    let outcomes = results(running);
    let denied = outcomes.iter().filter(|r| *r == result::AUTH_ERR).count();
    let throttled = outcomes.iter().filter(|r| *r == result::MAXTRIES).count();
    assert_eq!((denied, throttled), (3, 3), "{outcomes:?}");
    let status = c.kronctl().status(user.name());
    assert!(kronctl::flag(&status, "locked"), "{status}");
    assert_eq!(kronctl::number(&status, "failures"), 3, "{status}");
    a.login(user.name()).answer(&right).run().assert_throttled();

    let unlock = c.kronctl().json(&["unlock", user.name()]);
    assert_eq!(unlock["changed"], serde_json::Value::Bool(true), "{unlock}");
    a.login(user.name()).answer(&right).run().assert_accepted();

    // A host whose clock is far off (here: says it is 2100, or a day ago) makes the user wait
    // the backoff counted on the database's clock: not until its own future, nor a wait
    // already over; through a code check and through the general path's charge alike. And a
    // host ahead is judged on the database's clock too: its next guess is throttled.
    let as_b = |sql: &str| fleet.sql_as_host("b", sql);
    let check = |now: &str| {
        format!(
            "SELECT outcome FROM kron.check_code('{}', '{wrong}', {now}, 1, true, 0, 60, 60, NULL)",
            user.name()
        )
    };
    let ahead = "4102444800";
    let behind = "extract(epoch FROM now())::bigint - 86400";
    let charge = |now: &str| format!("SELECT kron.charge('{}', {now}, 0, 60, 60)", user.name());
    for (what, call) in [
        ("a code check from a host ahead", check(ahead)),
        ("a charge from a host ahead", charge(ahead)),
        ("a code check from a host behind", check(behind)),
        ("a charge from a host behind", charge(behind)),
    ] {
        c.kronctl().json(&["unlock", user.name()]);
        as_b(&call);
        let row = fleet.db.sql(
            "kron",
            &format!(
                "SELECT failures, next_attempt BETWEEN kron.db_now() + 1 AND kron.db_now() + 60, \
                 last_attempt <= kron.db_now() FROM kron.users WHERE name = '{}'",
                user.name()
            ),
        );
        assert_eq!(row, "1|t|t", "{what}");
    }
    assert_eq!(
        as_b(&check(ahead)),
        "throttled",
        "the next guess of a host ahead"
    );

    // A name that is no account is refused with a wrong code's words, and its answer costs the
    // database a commit as an account's charge does (its time would tell the two apart).
    let paced = || {
        fleet.db.sql(
            "kron",
            "SELECT coalesce(sum(writes), 0) FROM kron.pacing WHERE host = 'a'",
        )
    };
    let before = paced();
    let stranger = a
        .login(&kron_tests::users::random_name("kx"))
        .answer(&wrong)
        .run();
    stranger.assert_denied();
    let other = TestUser::new();
    c.kronctl().enroll_confirmed_now(other.name());
    let known = a.login(other.name()).answer(&wrong).run();
    known.assert_denied();
    assert_eq!(stranger.messages(), known.messages(), "{}", stranger.raw);
    assert_eq!(
        paced().parse::<i64>().unwrap(),
        before.parse::<i64>().unwrap() + 1,
        "one pacing write for the unknown name's answer"
    );
}

#[test]
fn host_roles_read_no_seed_and_a_dump_holds_none() {
    let fleet = Fleet::start(REQUIRE);
    let user = TestUser::new();
    let (token, _) = fleet.host(0).kronctl().enroll_confirmed_now(user.name());
    let password = fleet.password_of("b");
    for sql in [
        "SELECT seed FROM kron.users",
        "SELECT * FROM kron.audit",
        "SELECT kron.seed_key()",
        &format!("SELECT pg_read_file('{}')", fleet.db.key_file().display()),
        "INSERT INTO kron.audit (at, host, event) VALUES (now(), 'x', 'forged')",
        "SELECT * FROM kron.fleet_log(NULL, 10)",
        "SELECT * FROM kron.check_one('x', '123456', 0, 1, true, 3, 1, 60, NULL, NULL, NULL)",
    ] {
        let output = fleet.db.psql_as("kron_b", &password, sql);
        output.assert_failure(sql);
        assert!(
            output.stderr.contains("permission denied"),
            "{sql}: {}",
            output.describe()
        );
    }
    // What a host may call tells it nothing secret.
    let row = fleet.db.psql_as(
        "kron_b",
        &password,
        &format!("SELECT kron.get_user('{}')", user.name()),
    );
    row.assert_success("kron.get_user as a host");
    let seed_hex = hex(&decode_base32(token.secret()));
    assert!(
        !row.stdout.to_lowercase().contains(&seed_hex),
        "{}",
        row.stdout
    );

    let dump = fleet.db.dump();
    assert!(
        dump.contains("kron.users"),
        "the dump is of the kron database"
    );
    assert!(
        !dump.to_lowercase().contains(&seed_hex),
        "a plain seed in the dump"
    );
    assert!(!dump.contains(token.secret()), "a base32 seed in the dump");

    // Schema public, which the owner's enrolling functions search for pgcrypto, open to every
    // role as before PostgreSQL 15: `fleet init` closes it, as the owner of the database owns it.
    let kronctl = fleet.host(0).kronctl();
    let may_create = "SELECT has_schema_privilege('kron_b', 'public', 'CREATE')";
    fleet
        .db
        .sql("kron", "GRANT CREATE ON SCHEMA public TO PUBLIC");
    assert_eq!(fleet.db.sql("kron", may_create), "t");
    let init = fleet.init(&kronctl, fleet.db.port());
    init.assert_success("fleet init with public open");
    assert!(
        init.stdout.contains("revoked CREATE on schema public"),
        "{}",
        init.describe()
    );
    assert_eq!(fleet.db.sql("kron", may_create), "f");
    // Owned by someone else (a database from an older template), it cannot be closed by the
    // owner: `fleet init` and `add-host` refuse, name the roles and the fix, and change nothing.
    fleet.db.sql(
        "kron",
        "ALTER SCHEMA public OWNER TO postgres; GRANT CREATE ON SCHEMA public TO PUBLIC",
    );
    let refused = fleet.init(&kronctl, fleet.db.port());
    refused.assert_failure("fleet init with public open to hosts and not the owner's");
    for said in [
        "kron_a",
        "kron_host",
        "As public's owner (postgres)",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    ] {
        assert!(
            refused.stderr.contains(said),
            "{said}: {}",
            refused.describe()
        );
    }
    let add = fleet.run_add_host(&kronctl, "d", fleet.db.port());
    add.assert_failure("add-host with public open");
    assert_eq!(
        fleet.db.sql(
            "kron",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'kron_d'"
        ),
        "0",
        "the refused add-host left its role"
    );
    fleet
        .db
        .sql("kron", "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    fleet
        .init(&kronctl, fleet.db.port())
        .assert_success("fleet init with public closed again");

    // No function of schema kron may be executed by PUBLIC, not even one the owner creates
    // there later without a REVOKE of its own (the owner's default privileges, schema version
    // 14); and `fleet init` refuses to leave one that may, naming it, and changes nothing.
    let for_public = "SELECT count(*) FROM pg_proc WHERE pronamespace = 'kron'::regnamespace \
                      AND has_function_privilege('public', oid, 'EXECUTE')";
    assert_eq!(fleet.db.sql("kron", for_public), "0");
    fleet.db.sql(
        "kron",
        "SET ROLE kron_owner; CREATE FUNCTION kron.probe() RETURNS integer LANGUAGE sql \
         AS 'SELECT 1'",
    );
    assert_eq!(
        fleet.db.sql("kron", for_public),
        "0",
        "a new function of the owner's is executable by PUBLIC"
    );
    fleet
        .db
        .sql("kron", "GRANT EXECUTE ON FUNCTION kron.probe() TO PUBLIC");
    let refused = fleet.init(&kronctl, fleet.db.port());
    refused.assert_failure("fleet init with a function PUBLIC may execute");
    assert!(
        refused.stderr.contains("kron.probe()"),
        "{}",
        refused.describe()
    );
    fleet.db.sql("kron", "DROP FUNCTION kron.probe()");
    fleet
        .init(&kronctl, fleet.db.port())
        .assert_success("fleet init with no function for PUBLIC");
}

/// `fleet add-host` sends the server the password's SCRAM verifier, never the password (with
/// every statement logged, the log holds none), gives the role the settings every host role
/// logs in with, gives a host of this fleet a new password when run again, and takes over no
/// role that is not this fleet's host of that name (the owner's, one made by hand).
#[test]
fn add_host_sets_up_its_role_and_takes_over_no_other_role() {
    let fleet = Fleet::start(REQUIRE);
    let kronctl = fleet.host(0).kronctl();
    let settings = fleet.db.sql(
        "kron",
        "SELECT array_to_string(s.setconfig, ' ') FROM pg_db_role_setting s \
         JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'kron_a' AND s.setdatabase = 0",
    );
    assert!(
        settings.contains("synchronous_commit=on") && settings.contains("lock_timeout=2s"),
        "{settings}"
    );
    // A host role without them (added before schema version 7) gets them from `fleet init`.
    fleet.db.sql("postgres", "ALTER ROLE kron_b RESET ALL");
    let init = fleet.init(&kronctl, fleet.db.port());
    init.assert_success("fleet init");
    assert!(
        init.stdout.contains("host role kron_b: settings given"),
        "{}",
        init.stdout
    );
    let again = fleet
        .db
        .sql("kron", "SELECT kron.host_role_ready('kron_b')");
    assert_eq!(again, "t");

    fleet
        .db
        .sql("postgres", "ALTER SYSTEM SET log_statement = 'all'");
    fleet.db.sql("postgres", "SELECT pg_reload_conf()");
    for round in ["new", "again"] {
        fleet.add_host_section(&kronctl, "e", fleet.db.port());
        let password = fleet.password_of("e");
        fleet
            .db
            .psql_as("kron_e", &password, "SELECT 1")
            .assert_success(&format!("kron_e logs in with its {round} password"));
        let log = fleet.db.log();
        assert!(log.contains("kron_e"), "statements are logged:\n{log}");
        assert!(
            !log.contains(&password),
            "the {round} password in the server's log"
        );
    }
    fleet.db.sql("postgres", "ALTER SYSTEM RESET log_statement");
    fleet.db.sql("postgres", "SELECT pg_reload_conf()");

    fleet.db.sql("postgres", "CREATE ROLE kron_zed LOGIN");
    for name in ["owner", "zed"] {
        let output = fleet.run_add_host(&kronctl, name, fleet.db.port());
        output.assert_failure(&format!("add-host {name}"));
        assert!(
            output
                .stderr
                .contains(&format!("role kron_{name} already exists")),
            "{}",
            output.describe()
        );
        assert!(
            !fleet.password_file(name).exists(),
            "{name}: a password file"
        );
    }
    // The owner's own password still works: init again as the owner.
    fleet
        .init(&kronctl, fleet.db.port())
        .assert_success("fleet init as the owner after add-host owner");
    let members = fleet.db.sql(
        "kron",
        "SELECT count(*) FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid \
         JOIN pg_roles m ON m.oid = a.member \
         WHERE g.rolname = 'kron_host' AND m.rolname IN ('kron_owner', 'kron_zed')",
    );
    assert_eq!(members, "0", "a stranger made a member of kron_host");

    // kron_host is the cluster's: a member that is not this fleet's host (another fleet in the
    // same cluster) could call this fleet's functions, and `fleet init` refuses the cluster.
    fleet.db.sql("postgres", "GRANT kron_host TO kron_zed");
    let refused = fleet.init(&kronctl, fleet.db.port());
    refused.assert_failure("fleet init with a stranger in kron_host");
    assert!(
        refused
            .stderr
            .contains("members that are not hosts of this fleet (kron_zed)"),
        "{}",
        refused.describe()
    );
}

/// An admin's open transaction holding a user's row delays that user's login only: its code
/// check waits for the row until the host role's `lock_timeout` (2 s) and is refused alone,
/// before the host would give up on the statement (3 s) and on both of its connections with
/// it; nothing is charged or used, so the same code passes once the row is free.
#[test]
fn a_row_held_by_an_open_transaction_delays_only_its_own_login() {
    let fleet = Fleet::start_with(REQUIRE, "offline_window = 0\n");
    let a = fleet.host(0);
    let busy = TestUser::new();
    let (token, confirmed) = a.kronctl().enroll_confirmed_now(busy.name());
    let code = token.code_for_step(confirmed + 1);
    let mut admin = fleet.db.session("kron");
    admin.send(&format!(
        "BEGIN; SELECT 1 FROM kron.users WHERE name = '{}' FOR UPDATE;",
        busy.name()
    ));
    process::wait_for(
        "the admin's transaction open",
        Duration::from_secs(10),
        || {
            let open = fleet.db.sql(
                "kron",
                "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = 'postgres' AND state = 'idle in transaction'",
            );
            (open == "1").then_some(())
        },
    );
    let mark = a.otpd.stderr().len();
    // Refused by the lock wait, not by the host giving up on its statement (which would log
    // the database unreachable); otpd had answered the login's BeginLogin, so its failure at
    // the answer is a failed login, never "unavailable".
    let refused = a.login(busy.name()).answer(&code).run();
    assert_eq!(refused.result(), result::AUTH_ERR, "{}", refused.raw);
    let log = &a.otpd.stderr()[mark..];
    assert!(!log.contains("unreachable"), "{log}");

    drop(admin);
    let passed = a.login(busy.name()).answer(&code).run();
    assert_eq!(passed.result(), result::SUCCESS, "{}", passed.raw);
}

/// Logins on one host that answer while its check lane is busy queue and go to the database
/// together, as one `kron.check_codes`: each still gets its own outcome, each wrong code is
/// charged once, and nothing is accepted twice. The lane is held busy by one login whose commit
/// waits for a synchronous standby that does not exist (the test names one, then removes it).
#[test]
fn logins_answering_at_once_on_one_host_are_checked_in_one_statement() {
    let fleet = Fleet::start("default_mode = \"require\"\n[throttle]\nfree_attempts = 10\n");
    let a = fleet.host(0);
    let users: Vec<TestUser> = (0..26).map(|_| TestUser::new()).collect();
    let secret = |i: usize| [i as u8 + 101; 20];
    let dir = scratch::private_dir("kron-fleet-batch.");
    let file = dir.path().join("users.oath");
    let lines: String = users
        .iter()
        .enumerate()
        .map(|(i, user)| format!("HOTP/T30 {} - {}\n", user.name(), hex(&secret(i))))
        .collect();
    scratch::write_file(&file, &lines, 0o600);
    let imported = a
        .kronctl()
        .json(&["import", "--oath-usersfile", &file.display().to_string()]);
    assert_eq!(imported["imported"], 26, "{imported}");
    let code = |i: usize, step: u64| Oath::new(&base32(&secret(i))).code_for_step(step);
    let calls = |function: &str| -> u64 {
        fleet
            .db
            .sql(
                "kron",
                &format!(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions \
                     WHERE schemaname = 'kron' AND funcname = '{function}'"
                ),
            )
            .parse()
            .expect("a count")
    };
    let standby = |name: &str| {
        fleet.db.sql(
            "kron",
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{name}'"),
        );
        fleet.db.sql("kron", "SELECT pg_reload_conf()");
        kron_tests::process::wait_for("the reloaded setting", Duration::from_secs(10), || {
            (fleet.db.sql("kron", "SHOW synchronous_standby_names") == name).then_some(())
        });
        // The server's other processes take the reload in their own time.
        std::thread::sleep(Duration::from_millis(500));
    };

    let step = steady_step();
    // Every other user waits at the prompt first (their rows are read now), so that their
    // answers can all reach the host within the moment the lane is held: otpd gives up on a
    // statement after 3 s.
    let mut waiting: Vec<(usize, Interactive)> = (1..users.len())
        .map(|i| (i, a.login(users[i].name()).interactive()))
        .collect();
    for (i, login) in &mut waiting {
        let shown = login.until_prompt();
        assert!(shown.raw.contains("PROMPT"), "user {i}: {}", shown.raw);
    }
    standby("kron_test_nobody");
    // The lane: the first user's check commits and then waits for the standby.
    let first = a.login(users[0].name()).answer(&code(0, step)).spawn();
    kron_tests::process::wait_for("a commit waiting", Duration::from_secs(10), || {
        let waiting = fleet.db.sql(
            "kron",
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
        );
        (waiting != "0").then_some(())
    });
    // Every other user answers now, right codes and wrong ones; they queue on the host.
    for (i, login) in &mut waiting {
        let right = code(*i, step);
        let answer = if *i % 2 == 0 {
            right
        } else {
            wrong_code(&right)
        };
        login.answer(&answer);
    }
    // Well within otpd's 3 s for a statement, counted from the first check's.
    std::thread::sleep(Duration::from_millis(800));
    standby("");
    assert_eq!(first.wait().result(), result::SUCCESS);
    for (i, login) in waiting {
        let expected = if i % 2 == 0 {
            result::SUCCESS
        } else {
            result::AUTH_ERR
        };
        let login = login.finish();
        assert_eq!(login.result(), expected, "user {i}: {}", login.raw);
    }
    for (i, user) in users.iter().enumerate().skip(1) {
        let status = a.kronctl().status(user.name());
        let failures = if i % 2 == 0 { 0 } else { 1 };
        assert_eq!(
            kronctl::number(&status, "failures"),
            failures,
            "user {i}: {status}"
        );
        // The code that passed does not pass again.
        if i % 2 == 0 {
            a.login(user.name())
                .answer(&code(i, step))
                .run()
                .assert_denied();
        }
    }
    // Some `kron.check_codes` carried more than one code: more codes were checked inside it
    // (every check is one `kron.check_one`, alone ones through `kron.check_code`) than it was
    // called. The statistics reach the view within a few seconds of the statements.
    kron_tests::process::wait_for(
        "batched checks in pg_stat_user_functions",
        Duration::from_secs(30),
        || {
            let batched = calls("check_one").saturating_sub(calls("check_code"));
            let statements = calls("check_codes");
            (statements > 0 && batched > statements).then_some(())
        },
    );
}

/// What a host sends when several of its logins answer at once: one statement for all their
/// code checks (`kron.check_codes`) and one for all their rows (`kron.get_users`), each entry
/// checked as alone, in one transaction. The same code twice in one batch passes once.
#[test]
fn a_batch_of_checks_answers_each_entry_as_if_alone() {
    let fleet = Fleet::start(REQUIRE);
    let (user, other) = (TestUser::new(), TestUser::new());
    let (token, confirmed) = fleet.host(0).kronctl().enroll_confirmed_now(user.name());
    fleet.host(0).kronctl().enroll_confirmed_now(other.name());
    let right = token.code_for_step(confirmed + 1);
    let now = (confirmed + 1) * 30;
    let password = fleet.password_of("b");
    let as_host = |sql: &str| fleet.db.psql_as("kron_b", &password, sql);

    // The same user twice with the same code, another user with a wrong code, and a user the
    // fleet does not know, in an order that is not the names' order.
    let names = format!(
        "ARRAY['nobody-here', '{u}', '{o}', '{u}']",
        u = user.name(),
        o = other.name()
    );
    let codes = format!(
        "ARRAY['{right}', '{right}', '{}', '{right}']",
        wrong_code(&right)
    );
    let checked = as_host(&format!(
        "SELECT k || ' ' || outcome || ' ' || coalesce(accepted_step::text, '-') \
         FROM kron.check_codes({names}, {codes}, array_fill({now}::bigint, ARRAY[4]), \
         array_fill(1, ARRAY[4]), array_fill(true, ARRAY[4]), array_fill(3, ARRAY[4]), \
         array_fill(1::bigint, ARRAY[4]), array_fill(60::bigint, ARRAY[4]), \
         array_fill(NULL::text, ARRAY[4])) ORDER BY k"
    ));
    checked.assert_success("kron.check_codes as a host");
    let step = confirmed + 1;
    assert_eq!(
        checked.stdout.trim(),
        format!("1 not-totp -\n2 accepted {step}\n3 wrong -\n4 replayed -"),
        "{}",
        checked.describe()
    );
    let failures = fleet.db.sql(
        "kron",
        &format!(
            "SELECT failures FROM kron.users WHERE name = '{}'",
            other.name()
        ),
    );
    assert_eq!(failures, "1", "the wrong code was charged once");

    // A batch is all one length, and at most 64.
    for (sql, error) in [
        (
            "SELECT * FROM kron.check_codes(ARRAY['a', 'b'], ARRAY['1'], NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL)",
            "arrays of one length",
        ),
        (
            "SELECT * FROM kron.get_users(array_fill('a'::text, ARRAY[65]))",
            "at most 64",
        ),
    ] {
        let output = as_host(sql);
        output.assert_failure(sql);
        assert!(
            output.stderr.contains(error),
            "{sql}: {}",
            output.describe()
        );
    }

    // Rows as kron.get_user gives them: no seed, and nothing for an unknown name.
    let rows = as_host(&format!(
        "SELECT k || ' ' || coalesce(user_row ->> 'name', '-') || ' ' || \
         coalesce(user_row ->> 'has_token', '-') || ' ' || \
         coalesce((user_row ? 'seed')::text, '-') FROM kron.get_users(ARRAY['{}', 'nobody-here']) ORDER BY k",
        user.name()
    ));
    rows.assert_success("kron.get_users as a host");
    assert_eq!(
        rows.stdout.trim(),
        format!("1 {} true false\n2 - - -", user.name()),
        "{}",
        rows.describe()
    );

    // Every function bounds the skew a host may ask for to two steps: a code five steps old is
    // not found with a skew of a million (which would also be two million HMACs), one two steps
    // old is.
    let matching = |skew: u32, age: u64| {
        fleet.db.sql(
            "kron",
            &format!(
                "SELECT coalesce(kron.matching_step('\\x01'::bytea, 'SHA1', 6, 30, {skew}, \
                 kron.totp_code('\\x01'::bytea, 1000, 'SHA1', 6), {} * 30, NULL)::text, 'none')",
                1000 + age
            ),
        )
    };
    assert_eq!(matching(1_000_000, 5), "none");
    assert_eq!(matching(1_000_000, 2), "1000");
    assert_eq!(matching(1, 2), "none");
}

/// The database dies with SIGKILL while logins run on all three hosts: every login that was
/// accepted has its step in the database after recovery, the login answered while it was away
/// is refused, and the hosts log in again once it is back, with no restart of otpd.
#[test]
fn the_database_killed_mid_login_accepts_nothing_undurable_and_otpd_recovers() {
    let fleet = Fleet::start(REQUIRE);
    let b = fleet.host(1);
    let user = TestUser::new();
    let (token, confirmed) = fleet.host(0).kronctl().enroll_confirmed_now(user.name());

    // Logins of many users in flight on every host while the server dies.
    let users: Vec<TestUser> = (0..9).map(|_| TestUser::new()).collect();
    let tokens: Vec<Oath> = users
        .iter()
        .map(|u| fleet.host(0).kronctl().enroll_confirmed_now(u.name()).0)
        .collect();
    let step = steady_step();
    let waiting = {
        let mut login = b.login(user.name()).interactive();
        login.until_prompt();
        login
    };
    let running: Vec<(usize, Running)> = users
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(i, (u, t))| {
            let host = &fleet.hosts[i % 3];
            (
                i,
                host.login(u.name())
                    .answer(&t.code_for_step(step + 1))
                    .spawn(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    fleet.db.kill();

    // The login that was waiting at its prompt answers now: refused, not accepted (as a
    // failed login: after an answer, "unavailable" could be of the person's making).
    let mut waiting = waiting;
    waiting.answer(&token.code_for_step(confirmed + 1));
    let outcome = waiting.finish();
    assert_eq!(outcome.result(), result::AUTH_ERR, "{}", outcome.raw);
    assert!(
        outcome.raw.contains("cannot reach its database"),
        "{}",
        outcome.raw
    );
    // Each login passed, or was refused because the database went away: before its prompt as
    // unavailable, after its answer as a failed login (pam_kron: what follows an answer may be
    // of the person's making), never for a wrong code.
    let outcomes: Vec<(usize, Transcript)> =
        running.into_iter().map(|(i, r)| (i, r.wait())).collect();
    assert!(
        b.otpd.stderr().contains("fleet database"),
        "no clear log line:\n{}",
        b.otpd.stderr()
    );
    // While the database is away a name that is no account gets what an account without an
    // offline pack here gets: not a prompt, which would tell the two apart.
    let known = b.login(user.name()).answer("123456").run();
    let stranger = b
        .login(&kron_tests::users::random_name("kx"))
        .answer("123456")
        .run();
    assert_eq!(known.result(), result::AUTHINFO_UNAVAIL, "{}", known.raw);
    assert_eq!(
        stranger.result(),
        result::AUTHINFO_UNAVAIL,
        "{}",
        stranger.raw
    );
    assert_eq!(stranger.shown, known.shown, "{}", stranger.raw);

    fleet.db.start_server();
    for (i, login) in &outcomes {
        let refused_away = login.result() == result::AUTHINFO_UNAVAIL
            || (login.result() == result::AUTH_ERR
                && (login.mentions("cannot reach its database")
                    || login.mentions("could not finish this login")));
        assert!(
            login.result() == result::SUCCESS || refused_away,
            "{}",
            login.raw
        );
        if login.result() == result::SUCCESS {
            let stored = fleet.db.sql(
                "kron",
                &format!(
                    "SELECT last_step FROM kron.users WHERE name = '{}'",
                    users[*i].name()
                ),
            );
            assert_eq!(stored, (step + 1).to_string(), "accepted but not durable");
        }
    }
    // Recovery by itself: within seconds the same host logs the user in.
    logs_in_again(b, user.name(), &token.code_for_step(confirmed + 1));
}

/// A host's idle connections send TCP keepalives after a minute, and a database that ends them
/// (an administrator's `pg_terminate_backend`, `idle_session_timeout`, a crash of the server and
/// its restart) costs no login: the next statement finds its connection ended before sending
/// anything on it and connects again. Offline logins are off, so a login that met an ended
/// connection would fail, not pass offline.
#[test]
fn idle_connections_keep_alive_and_ended_ones_cost_no_login() {
    let fleet = Fleet::start_with(REQUIRE, "offline_window = 0\n");
    let a = fleet.host(0);
    let port = a.proxy.port();
    let users: Vec<TestUser> = (0..5).map(|_| TestUser::new()).collect();
    let tokens: Vec<(Oath, u64)> = users
        .iter()
        .map(|u| a.kronctl().enroll_confirmed_now(u.name()))
        .collect();
    let log_in = |i: usize, when: &str| {
        let (token, confirmed) = &tokens[i];
        let login = a
            .login(users[i].name())
            .answer(&token.code_for_step(confirmed + 1))
            .run();
        assert_eq!(login.result(), result::SUCCESS, "{when}: {}", login.raw);
        // Its audit row goes in the background; once it is in, no statement is in flight.
        let audited = format!(
            "SELECT count(*) FROM kron.audit WHERE \"user\" = '{}' AND event = 'accepted'",
            users[i].name()
        );
        process::wait_for("the login's audit row", Duration::from_secs(30), || {
            (fleet.db.sql("kron", &audited) == "1").then_some(())
        });
    };
    // What the host logged since `mark`, which must not say the database was unreachable.
    let reached = |mark: usize, when: &str| {
        let stderr = a.otpd.stderr();
        let since = stderr.get(mark..).unwrap_or_default();
        assert!(
            !since.contains("unreachable"),
            "{when}: a statement met an ended connection:\n{since}"
        );
    };
    // Until the server's end of every connection of host a has reached it (none established
    // any more: CLOSE_WAIT there): then what the server sent waits unread in host a's sockets.
    let ended_by_server = |when: &str| none_established(when, port, None, Duration::from_secs(30));

    // Ends host a's sessions from the server's side; how many it ended.
    let end_sessions = || {
        fleet.db.sql(
            "kron",
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) \
             FROM pg_stat_activity WHERE application_name = 'otpd' AND usename = 'kron_a'",
        )
    };

    log_in(0, "first login");
    // Idle, they keep a keepalive timer of a minute at most (two hours by default), so a NAT or
    // load balancer on the way does not drop them without a word.
    let timers = keepalive_timers(port);
    assert!(!timers.is_empty(), "no connection of host a to its proxy");
    assert!(
        timers.iter().all(|t| *t <= Duration::from_secs(60)),
        "keepalive timers {timers:?}"
    );

    let mark = a.otpd.stderr().len();
    let ended = end_sessions();
    assert_ne!(ended, "0", "host a held no connection to end");
    ended_by_server("host a's connections ended by pg_terminate_backend");
    log_in(1, "after pg_terminate_backend");
    reached(mark, "after pg_terminate_backend");
    let stderr = a.otpd.stderr();
    assert!(
        stderr[mark..].contains("the server had ended an idle connection"),
        "no line about the replaced connection:\n{stderr}"
    );

    // The server ends host a's sessions idle for a second (its new ones, made by the next
    // login).
    fleet
        .db
        .sql("kron", "ALTER ROLE kron_a SET idle_session_timeout = '1s'");
    end_sessions();
    ended_by_server("host a's connections ended again");
    let mark = a.otpd.stderr().len();
    log_in(2, "with idle_session_timeout");
    ended_by_server("host a's connections ended by idle_session_timeout");
    fleet
        .db
        .sql("kron", "ALTER ROLE kron_a RESET idle_session_timeout");
    log_in(3, "after idle_session_timeout");
    reached(mark, "after idle_session_timeout");

    // The server killed and started again: no notice, the sockets just close. A background
    // statement may meet the server away and say so; what counts is after it is back.
    fleet.db.kill();
    ended_by_server("host a's connections ended by the crash");
    fleet.db.start_server();
    let mark = a.otpd.stderr().len();
    log_in(4, "after the server's restart");
    reached(mark, "after the server's restart");
}

/// A database machine that answers nothing (dead, or behind a firewall that drops) costs a
/// login no wait for a timeout once the host knows the database is away: the login that finds
/// out waits for its statement's timeout, and that closes both of the host's connections (they
/// share the dead way), so a login whose statement went out on the other one meanwhile is
/// refused then too, not at its own timeout; after it, connects go on in the background, and a
/// login waits for one half a second at most and is refused (offline logins are off) while the
/// connect still waits for an answer. When the machine answers again, logins pass again by
/// themselves.
///
/// The bounds on waiting below are not on speed: the login on the other connection ends with
/// the first (its own timeout would come 3 s after its statement, 2 s later), and each login
/// after them waits less than half the connect timeout (5 s), where a link that connected
/// itself waited out a whole connect timeout.
#[test]
fn a_database_that_answers_nothing_holds_no_login_for_a_connect() {
    let fleet = Fleet::start_with(REQUIRE, "offline_window = 0\n");
    let a = fleet.host(0);
    let port = a.proxy.port();
    let user = TestUser::new();
    let (token, confirmed) = a.kronctl().enroll_confirmed_now(user.name());
    let log_in = || {
        a.login(user.name())
            .answer(&token.code_for_step(confirmed + 1))
            .run()
    };
    let first = log_in();
    assert_eq!(first.result(), result::SUCCESS, "{}", first.raw);
    // Statements take turns on the two connections: both are open.
    process::wait_for("two connections of host a", Duration::from_secs(30), || {
        let open = tcp_to(port)
            .iter()
            .filter(|c| c.state == ESTABLISHED)
            .count();
        (open == 2).then_some(())
    });
    // A login at its prompt: its user was read while the database still answered.
    let prompted = TestUser::new();
    let (prompted_token, prompted_step) = a.kronctl().enroll_confirmed_now(prompted.name());
    let mut held = a.login(prompted.name()).interactive();
    held.until_prompt();
    // Nothing of host a's in flight but what the logins below send: an audit row written in the
    // background (20 ms after its event) would meet the black hole too, and time out first.
    std::thread::sleep(Duration::from_millis(300));
    let busy = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'kron_a' AND state <> 'idle'";
    process::wait_for(
        "host a's statements answered",
        Duration::from_secs(10),
        || (fleet.db.sql("kron", busy) == "0").then_some(()),
    );

    a.proxy.black_hole();
    // The first login finds out: its statement has no answer in time, and it is refused.
    let found_out = a
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .spawn();
    // Meanwhile the held login's code check goes out on the other connection (the first has a
    // statement in flight), and gets no answer either.
    std::thread::sleep(Duration::from_secs(2));
    let answered = Instant::now();
    held.answer(&prompted_token.code_for_step(prompted_step + 1));
    let found_out = found_out.wait();
    assert_eq!(
        found_out.result(),
        result::AUTHINFO_UNAVAIL,
        "{}",
        found_out.raw
    );
    let held = held.finish();
    let waited = answered.elapsed();
    // Refused as a failed login: otpd answered its BeginLogin.
    assert_eq!(held.result(), result::AUTH_ERR, "{}", held.raw);
    assert!(
        waited < Duration::from_millis(2900),
        "the check on the other connection waited {waited:?}, for a timeout of its own"
    );
    assert!(
        a.otpd
            .stderr()
            .contains("until it is back, logins that need the fleet database are refused"),
        "{}",
        a.otpd.stderr()
    );
    // Both connections went with that timeout, not only the one it happened on: the other would
    // stay open until a statement on it timed out too.
    none_established(
        "both of host a's connections closed",
        port,
        a.proxy.filler_port(),
        Duration::from_secs(5),
    );
    // Now at once, and then past the second a failed connect waits before the next: each login
    // starts a connect in the background or finds one under way, and is refused while it waits.
    for attempt in 0..4 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(1200));
        }
        refused_within(
            &format!("attempt {attempt}"),
            Duration::from_millis(2500),
            log_in,
        );
        if attempt == 0 {
            assert!(
                tcp_to(port).iter().any(|c| c.state == SYN_SENT),
                "no connect of host a waits for an answer"
            );
        }
    }

    a.proxy.heal();
    // Enrolled through host b, whose link never broke: a fresh code for host a.
    let later = TestUser::new();
    let (token, confirmed) = fleet.host(1).kronctl().enroll_confirmed_now(later.name());
    logs_in_again(a, later.name(), &token.code_for_step(confirmed + 1));
}

/// A host behind a real PgBouncer in transaction mode (docs/fleet.md, "Scale"), which has one
/// server connection for it: the host's two connections share it, the statements of concurrent
/// logins arrive pipelined, and each login gets its own answer; a used code is refused through
/// it; a connection PgBouncer closes while idle (`client_idle_timeout`) costs no login.
#[test]
fn a_host_behind_pgbouncer_in_transaction_mode_logs_in() {
    let fleet = Fleet::start(REQUIRE);
    let a = fleet.host(0);
    let section = fleet.add_host_section(&a.kronctl(), "d", fleet.db.port());
    let password = fleet.password_of("d");
    let bouncer = PgBouncer::start(
        &fleet.db,
        &[("kron_d", password.as_str())],
        "client_idle_timeout = 3\n",
    );
    let direct = format!("@127.0.0.1:{}/", fleet.db.port());
    assert!(section.contains(&direct), "{section}");
    let section = section.replace(&direct, &format!("@127.0.0.1:{}/", bouncer.port()));
    let bus = kron_tests::Bus::start();
    let d = kron_tests::Otpd::start(
        &bus,
        &format!("{REQUIRE}{section}offline_window = {TEST_OFFLINE_WINDOW}\n"),
    );
    let pam = kron_tests::world::stack(
        &bus,
        &d,
        kron_tests::world::Transport::Socket,
        "login",
        kron_tests::Stack::Probe,
    );
    let users: Vec<TestUser> = (0..13).map(|_| TestUser::new()).collect();
    let tokens: Vec<(Oath, u64)> = users
        .iter()
        .map(|u| a.kronctl().enroll_confirmed_now(u.name()))
        .collect();
    let code = |i: usize| tokens[i].0.code_for_step(tokens[i].1 + 1);

    let running: Vec<Running> = (0..12)
        .map(|i| pam.login(users[i].name()).answer(&code(i)).spawn())
        .collect();
    for (i, login) in running.into_iter().enumerate() {
        let login = login.wait();
        assert_eq!(
            login.result(),
            result::SUCCESS,
            "login {i}: {}\n{}\n{}",
            login.raw,
            d.stderr(),
            bouncer.log()
        );
    }
    // Both of host d's connections to PgBouncer are open (established, or closed by it since:
    // CLOSE_WAIT here), and the server saw one connection of kron_d at most: they shared it.
    let states: Vec<String> = tcp_to(bouncer.port())
        .into_iter()
        .map(|c| c.state)
        .filter(|state| state == ESTABLISHED || state == CLOSE_WAIT)
        .collect();
    assert_eq!(
        states.len(),
        2,
        "host d's connections to PgBouncer: {states:?}"
    );
    let servers = fleet.db.sql(
        "kron",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'kron_d'",
    );
    assert!(
        servers == "0" || servers == "1",
        "{servers} server connections"
    );

    let replay = pam.login(users[0].name()).answer(&code(0)).run();
    replay.assert_denied();
    assert!(replay.mentions("already used"), "{}", replay.raw);

    // Idle for longer than client_idle_timeout: PgBouncer closes both, and the next login does
    // not notice.
    none_established(
        "PgBouncer closing host d's idle connections",
        bouncer.port(),
        None,
        Duration::from_secs(30),
    );
    let mark = d.stderr().len();
    let login = pam.login(users[12].name()).answer(&code(12)).run();
    assert_eq!(login.result(), result::SUCCESS, "{}", login.raw);
    let since = d.stderr()[mark..].to_string();
    assert!(!since.contains("unreachable"), "{since}");
    // Said once a minute at most: maybe already when an earlier idle time of the host's own
    // (its first offline sync, then the enrollments) had PgBouncer close a connection.
    let stderr = d.stderr();
    assert!(
        stderr.contains("the server had ended an idle connection"),
        "{stderr}"
    );
}

/// Runs `login`, which is refused as unavailable (`PAM_AUTHINFO_UNAVAIL`) having waited less
/// than `limit`: a bound on waiting for a timeout, not on speed.
fn refused_within(what: &str, limit: Duration, login: impl FnOnce() -> Transcript) {
    let began = Instant::now();
    let login = login();
    let waited = began.elapsed();
    assert_eq!(
        login.result(),
        result::AUTHINFO_UNAVAIL,
        "{what}: {}",
        login.raw
    );
    assert!(waited < limit, "{what}: the login waited {waited:?}");
}

/// Logs `user` in on `host` with `code` until it passes (refused as unavailable meanwhile), for
/// a minute at most: a host finds the database back by itself, and says so.
fn logs_in_again(host: &Host, user: &str, code: &str) {
    process::wait_for("a login on the host again", Duration::from_secs(60), || {
        let login = host.login(user).answer(code).run();
        if login.result() == result::SUCCESS {
            return Some(());
        }
        // Refused while the database is away: unavailable before the prompt, a failed login if
        // it went away again after it.
        let away = login.result() == result::AUTHINFO_UNAVAIL
            || (login.result() == result::AUTH_ERR && login.mentions("cannot reach its database"));
        assert!(away, "{}\n{}", login.raw, host.otpd.stderr());
        std::thread::sleep(Duration::from_millis(300));
        None
    });
    let stderr = host.otpd.stderr();
    assert!(stderr.contains("reachable again"), "{stderr}");
}

/// `st` of an established TCP connection in /proc/net/tcp.
const ESTABLISHED: &str = "01";
/// `st` of a connect that has had no answer yet.
const SYN_SENT: &str = "02";
/// `st` of a connection the other side has closed and this side not yet.
const CLOSE_WAIT: &str = "08";

/// A TCP connection to a port on 127.0.0.1, as /proc/net/tcp shows it.
struct Tcp {
    /// The local port.
    local: u16,
    state: String,
    /// `tr`: 2 is the keepalive timer, 0 none.
    timer: String,
    /// `tm->when`: clock ticks, 100 a second, until the timer fires.
    ticks: u64,
}

/// This side's TCP connections to 127.0.0.1:`port` (the proxy's own are to other ports, but for
/// the one a black hole fills its queue with).
fn tcp_to(port: u16) -> Vec<Tcp> {
    let remote = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (timer, when) = fields.get(5)?.split_once(':')?;
            let local = fields.get(1)?.split_once(':')?.1;
            (fields.get(2) == Some(&remote.as_str())).then(|| Tcp {
                local: u16::from_str_radix(local, 16).unwrap_or(0),
                state: fields.get(3).copied().unwrap_or_default().to_owned(),
                timer: timer.to_owned(),
                ticks: u64::from_str_radix(when, 16).unwrap_or(u64::MAX),
            })
        })
        .collect()
}

/// Waits, at most `limit`, until none of this side's connections to 127.0.0.1:`port` is
/// established any more (closed, or closed by the other side: CLOSE_WAIT), but for the one from
/// local port `except` (a black hole's own).
fn none_established(what: &str, port: u16, except: Option<u16>, limit: Duration) {
    process::wait_for(what, limit, || {
        tcp_to(port)
            .iter()
            .all(|c| c.state != ESTABLISHED || Some(c.local) == except)
            .then_some(())
    });
}

/// The keepalive timers of the established connections to 127.0.0.1:`port`, read again while
/// one has another timer running (data not yet acknowledged).
fn keepalive_timers(port: u16) -> Vec<Duration> {
    process::wait_for(
        "a keepalive timer on every connection",
        Duration::from_secs(5),
        || {
            let open: Vec<Tcp> = tcp_to(port)
                .into_iter()
                .filter(|c| c.state == ESTABLISHED)
                .collect();
            open.iter().all(|c| c.timer == "02").then(|| {
                open.iter()
                    .map(|c| Duration::from_millis(c.ticks.saturating_mul(10)))
                    .collect()
            })
        },
    )
}

#[test]
fn a_wrong_ca_or_host_name_is_refused_with_a_clear_error() {
    let fleet = Fleet::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = fleet.host(0).kronctl().enroll_confirmed_now(user.name());
    let other = TestCa::new("another CA");
    let password_file = fleet.password_file("c").display().to_string();
    let port = fleet.host(2).proxy.port();
    // 127.0.0.2 is a loopback address too, but not a name in the server's certificate.
    let elsewhere = kron_tests::proxy::Proxy::start_on("127.0.0.2", fleet.db.port());
    for (url, ca, expected) in [
        (Postgres::url("kron_c", port), other.cert(), "UnknownIssuer"),
        (
            format!("postgresql://kron_c@127.0.0.2:{}/kron", elsewhere.port()),
            fleet.db.ca.cert(),
            "not valid for name",
        ),
    ] {
        let section = format!(
            "{REQUIRE}[fleet]\nurl = \"{url}\"\nhost = \"c\"\nca_file = \"{}\"\npassword_file = \"{password_file}\"\n",
            ca.display()
        );
        let bus = kron_tests::Bus::start();
        let host = kron_tests::Otpd::start(&bus, &section);
        let pam = kron_tests::world::stack(
            &bus,
            &host,
            kron_tests::world::Transport::Socket,
            "login",
            kron_tests::Stack::Probe,
        );
        let login = pam
            .login(user.name())
            .answer(&token.code_for_step(confirmed + 1))
            .run();
        assert_eq!(login.result(), result::AUTHINFO_UNAVAIL, "{}", login.raw);
        let status = Kronctl::root(&bus).json(&["fleet", "status"]);
        assert_eq!(
            status["reachable"],
            serde_json::Value::Bool(false),
            "{status}"
        );
        let error = status["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("certificate") && error.contains(expected),
            "{expected}: {error}"
        );
        assert!(host.stderr().contains(expected), "{}", host.stderr());
    }
}

#[test]
fn fleet_config_mistakes_are_named_with_file_and_line() {
    let dir = scratch::private_dir("kron-fleet-config.");
    let base = "[fleet]\nurl = \"postgresql://kron_a@db/kron\"\nca_file = \"/etc/kron/ca.pem\"\n";
    for (text, line, words) in [
        (base.to_string(), 1, "password_file, or cert_file and key_file"),
        (format!("{base}password_file = \"pw\"\n"), 4, "absolute"),
        (
            "[fleet]\nca_file = \"/c\"\npassword_file = \"/p\"\nurl = \"postgresql://a:secret@db/kron\"\n".into(),
            4,
            "must not hold a password",
        ),
        (
            format!("{base}password_file = \"/p\"\nhost = \"Web 01\"\n"),
            5,
            "host must be",
        ),
        (
            "[fleet]\nurl = \"postgresql://a@db/kron?sslmode=require\"\n".into(),
            2,
            "verify-full",
        ),
        (format!("{base}password_file = \"/p\"\nport = 5432\n"), 5, "unknown field"),
        (
            format!("{base}password_file = \"/p\"\n\noffline_window = 30\n"),
            6,
            "offline_window must be 0",
        ),
        (
            format!("{base}password_file = \"/p\"\noffline_keep = 60\n"),
            5,
            "offline_keep must be",
        ),
        (
            format!("{base}password_file = \"/p\"\ncert_file = \"/c\"\nkey_file = \"/k\"\n"),
            1,
            "exclude each other",
        ),
    ] {
        let path = dir.path().join("otpd.toml");
        scratch::write_file(&path, &text, 0o600);
        let output = otpd::check_config(&path);
        output.assert_failure(&text);
        let prefix = format!("{}:{line}:", path.display());
        assert!(
            output.stderr.contains(&prefix) && output.stderr.contains(words),
            "{text}\nexpected {prefix} … {words}:\n{}",
            output.stderr
        );
    }
}

/// Host D joins the fleet with more local users than `kronctl fleet push` sends per call (it
/// pages with `FleetPushPage`): every user once, in order, a user the fleet has keeps the
/// fleet's token (a conflict); pushed again, every user is a conflict and nothing changes (the
/// recovery from a push stopped half-way); a page's `after` on the real database; the old
/// one-message `FleetPush` still answers.
#[test]
fn push_moves_local_tokens_into_the_fleet_and_reports_conflicts() {
    let fleet = Fleet::start(REQUIRE);
    let (a, b) = (fleet.host(0), fleet.host(1));
    let local_only = TestUser::new();
    let both = TestUser::new();
    // Host D begins with its own store.
    let bus = kron_tests::Bus::start();
    let mut d = kron_tests::Otpd::start(&bus, REQUIRE);
    let d_ctl = Kronctl::root(&bus);
    let (local_token, local_step) = d_ctl.enroll_confirmed_now(local_only.name());
    d_ctl.enroll_confirmed_now(both.name());
    let (fleet_token, fleet_step) = a.kronctl().enroll_confirmed_now(both.name());
    // More users than a page, imported (they need no accounts).
    let imported: Vec<String> = (0..MAX_PUSH_PAGE + 10)
        .map(|i| format!("pushed-{i:05}"))
        .collect();
    dbus::import_tokens(&bus.connect(), &imported);
    // D joins the fleet.
    let proxy = kron_tests::proxy::Proxy::start(fleet.db.port());
    let section = fleet.add_host_section(&d_ctl, "d", proxy.port());
    let mut text = std::fs::read_to_string(d.config_path()).expect("read otpd.toml");
    text.push_str(&section);
    std::fs::write(d.config_path(), text).expect("write otpd.toml");
    d.restart();

    let count = imported.len() + 2;
    let pushed = d_ctl.json(&["fleet", "push"]);
    assert_eq!(pushed["pushed"], count - 1, "{pushed}");
    assert_eq!(pushed["conflicts"], 1, "{pushed}");
    assert_eq!(pushed["skipped"], 0, "{pushed}");
    let users = pushed["users"].as_array().expect("users").clone();
    let names: Vec<&str> = users
        .iter()
        .map(|u| u["user"].as_str().unwrap_or_default())
        .collect();
    let mut once_in_order = names.clone();
    once_in_order.sort_unstable();
    once_in_order.dedup();
    assert_eq!(names, once_in_order);
    assert_eq!(names.len(), count);
    let outcome_of = |name: &str| {
        users
            .iter()
            .find(|u| u["user"] == name)
            .map(|u| u["outcome"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(outcome_of(local_only.name()).as_deref(), Some("pushed"));
    assert_eq!(outcome_of(both.name()).as_deref(), Some("conflict"));
    assert_eq!(outcome_of(&imported[0]).as_deref(), Some("pushed"));

    // Again, in text: every user a conflict, a line each as the pages come, the counts last.
    let again = d_ctl.run(&["fleet", "push"]);
    again.assert_success("kronctl fleet push, again");
    let lines: Vec<&str> = again.stdout.lines().collect();
    assert_eq!(lines.len(), count + 1, "{}", again.stdout);
    assert_eq!(
        lines[count],
        format!("0 pushed, {count} conflicts, 0 skipped")
    );
    // A page after a position, and the one-message method.
    let conn = bus.connect();
    let (page, next): (Vec<ImportResult>, String) = dbus::decode(
        &dbus::call(&conn, "FleetPushPage", &("pushed-00004", 2u32)).expect("FleetPushPage"),
    );
    let page_names: Vec<&str> = page.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(page_names, ["pushed-00005", "pushed-00006"]);
    assert_eq!(next, "pushed-00006");
    assert!(page.iter().all(|r| r.outcome == "conflict"), "{page:?}");
    let whole: Vec<ImportResult> =
        dbus::decode(&dbus::call(&conn, "FleetPush", &()).expect("FleetPush"));
    assert_eq!(whole.len(), count);
    assert!(whole.iter().all(|r| r.outcome == "conflict"));

    // The pushed token logs in on B; the fleet's token of the other user stays.
    b.login(local_only.name())
        .answer(&local_token.code_for_step(local_step + 1))
        .run()
        .assert_accepted();
    b.login(both.name())
        .answer(&fleet_token.code_for_step(fleet_step + 1))
        .run()
        .assert_accepted();
    let not_fleet = Kronctl::root(&fleet.host(2).bus);
    assert!(
        not_fleet.status(both.name())["enrolled"]
            .as_bool()
            .unwrap_or(false)
    );
    drop(d);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Email codes are one live code per user, fleet-wide: sent when a login begins on A, taken
/// on B (which sends none of its own), refused on C afterwards.
#[test]
fn a_code_sent_by_email_is_live_on_every_host_and_used_once() {
    let mailbox = kron_tests::mailbox::Mailbox::start();
    let fleet = Fleet::start(&format!(
        "default_mode = \"require\"\nfallback = [\"email\"]\n[contacts]\nemail = \"{{user}}@example.test\"\n[codes]\nmin_interval = 0\n{}\n",
        mailbox.config_section()
    ));
    let user = TestUser::new();
    let to = format!("{}@example.test", user.name());
    let mut begun = fleet.host(0).login(user.name()).interactive();
    begun.until_prompt();
    let code = mailbox.wait_for(&to).code();
    drop(begun);

    let accepted = fleet.host(1).login(user.name()).answer(&code).run();
    accepted.assert_accepted();
    assert!(accepted.mentions("sent by email to"), "{}", accepted.raw);
    assert_eq!(mailbox.count(), 1, "host B sent a second code");
    fleet
        .host(2)
        .login(user.name())
        .answer(&code)
        .run()
        .assert_denied();
}

/// An enrollment begun at a login shows its QR code again only on the host where it began: the
/// database gives a pending seed only to the host that saved it (a host role asking for
/// another's gets nothing), and only while it is live by the database's clock, whatever time
/// the host gives. A login on another host begins a new enrollment. A reset drops the pending
/// enrollment with its host.
#[test]
fn a_pending_enrollment_shows_its_seed_only_to_the_host_that_began_it() {
    let fleet = Fleet::start("default_mode = \"enroll\"\n");
    let (a, b) = (fleet.host(0), fleet.host(1));
    let user = TestUser::new();
    let shown_on = |host: &Host| {
        let mut login = host.login(user.name()).interactive();
        let shown = login.until_prompt();
        drop(login);
        shown
            .enrollment_secret()
            .unwrap_or_else(|| panic!("no secret shown on {}:\n{}", host.name, shown.raw))
    };
    let on_a = shown_on(a);
    assert_eq!(shown_on(a), on_a, "A shows its own enrollment again");

    // Asked directly as each host's role, with the id every host reads and a time of 0: only
    // A gets the seed.
    let pending_seed = format!(
        "SELECT coalesce(encode(kron.pending_seed('{u}', \
         decode(substr(kron.get_user('{u}') ->> 'pend_id', 3), 'hex'), 0), 'hex'), 'none')",
        u = user.name()
    );
    assert_eq!(
        fleet.sql_as_host("a", &pending_seed),
        hex(&decode_base32(&on_a))
    );
    assert_eq!(fleet.sql_as_host("b", &pending_seed), "none");
    let row = fleet.sql_as_host("b", &format!("SELECT kron.get_user('{}')", user.name()));
    assert!(
        row.contains("pend_id") && !row.contains("pend_host"),
        "{row}"
    );

    // A login on B begins an enrollment of its own, which B shows again and A cannot read.
    let on_b = shown_on(b);
    assert_ne!(on_b, on_a, "B showed the seed of A's enrollment");
    assert_eq!(shown_on(b), on_b, "B shows its own enrollment again");
    assert_eq!(fleet.sql_as_host("a", &pending_seed), "none");
    assert_eq!(
        fleet.sql_as_host("b", &pending_seed),
        hex(&decode_base32(&on_b))
    );

    // Expired by the database's clock: nothing, though the host says it is 1970.
    fleet.db.sql(
        "kron",
        &format!(
            "UPDATE kron.users SET pend_expires = kron.db_now() - 1 WHERE name = '{}'",
            user.name()
        ),
    );
    assert_eq!(fleet.sql_as_host("b", &pending_seed), "none");

    let reset = fleet.host(2).kronctl().json(&["reset", user.name()]);
    assert_eq!(reset["changed"], serde_json::Value::Bool(true), "{reset}");
    assert_eq!(
        fleet.db.sql(
            "kron",
            &format!(
                "SELECT pend_id IS NULL AND pend_host IS NULL FROM kron.users WHERE name = '{}'",
                user.name()
            )
        ),
        "t"
    );
}

/// A batch of audit rows the database refuses (here: the grant taken away) is logged, not
/// dropped in silence, and reaches the audit table once the database takes it again.
#[test]
fn a_refused_audit_batch_is_logged_and_sent_again() {
    const WRITE: &str = "kron.audit_write(bigint[], text[], text[], text[], text[], text[], \
                         bigint[], text[])";
    let fleet = Fleet::start(REQUIRE);
    let a = fleet.host(0);
    let user = TestUser::new();
    let (token, confirmed) = a.kronctl().enroll_confirmed_now(user.name());
    fleet.db.sql(
        "kron",
        &format!("REVOKE EXECUTE ON FUNCTION {WRITE} FROM kron_host"),
    );
    a.login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    process::wait_for(
        "the refused audit batch logged",
        Duration::from_secs(60),
        || {
            a.otpd
                .stderr()
                .contains("the fleet database refused")
                .then_some(())
        },
    );
    let accepted = format!(
        "SELECT count(*) FROM kron.audit WHERE host = 'a' AND event = 'accepted' AND \"user\" = '{}'",
        user.name()
    );
    assert_eq!(fleet.db.sql("kron", &accepted), "0");
    fleet.db.sql(
        "kron",
        &format!("GRANT EXECUTE ON FUNCTION {WRITE} TO kron_host"),
    );
    process::wait_for("the held batch written", Duration::from_secs(60), || {
        (fleet.db.sql("kron", &accepted) == "1").then_some(())
    });
}
