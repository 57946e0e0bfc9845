//! kronctl against the real otpd: enroll, confirm, status, list (of more than one page), reset,
//! unlock, text and JSON, and the documented exit codes (2 usage, 3 unreachable, 4 access
//! denied, 5 not found, 6 conflict, 8 rejected).

use kron_proto::{MAX_LIST_PAGE, UserStatus};
use kron_tests::totp::{self, wrong_code};
use kron_tests::{Bus, Kronctl, Oath, TestUser, World, dbus, kronctl};
use serde_json::Value;

const REQUIRE: &str = "default_mode = \"require\"\n";

/// The whole admin life cycle of one token, in JSON.
#[test]
fn admin_life_cycle_in_json() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let ctl = world.kronctl();

    let enrollment = ctl.json(&["enroll", user.name()]);
    assert_eq!(enrollment["user"], Value::from(user.name()), "{enrollment}");
    let uri = enrollment["uri"].as_str().unwrap_or_default();
    assert!(uri.starts_with("otpauth://totp/"), "{enrollment}");
    assert!(
        kronctl::number(&enrollment, "expires") > totp::unix_now(),
        "{enrollment}"
    );
    let token = Oath::new(&kronctl::secret_of(&enrollment));
    assert_eq!(
        kron_tests::messages::otpauth_secret(uri).as_deref(),
        Some(token.secret()),
        "{enrollment}"
    );

    let pending = ctl.status(user.name());
    assert!(
        kronctl::flag(&pending, "pending") && !kronctl::flag(&pending, "enrolled"),
        "{pending}"
    );

    let step = totp::steady_step();
    let wrong = ctl.run(&[
        "confirm",
        user.name(),
        &wrong_code(&token.code_for_step(step)),
    ]);
    assert_eq!(wrong.code(), Some(8), "{}", wrong.describe());
    assert!(kronctl::flag(&ctl.status(user.name()), "pending"));

    let confirmed = ctl.json(&["confirm", user.name(), &token.code_for_step(step)]);
    assert_eq!(confirmed["confirmed"], Value::Bool(true), "{confirmed}");
    let enrolled = ctl.status(user.name());
    assert!(
        kronctl::flag(&enrolled, "enrolled") && !kronctl::flag(&enrolled, "pending"),
        "{enrolled}"
    );
    assert!(kronctl::number(&enrolled, "last_used") > 0, "{enrolled}");

    let listed = kronctl::listed_users(&ctl.json(&["list"]));
    assert!(listed.iter().any(|name| name == user.name()), "{listed:?}");

    // A confirmed token is replaced only after a reset.
    let again = ctl.run(&["enroll", user.name()]);
    assert_eq!(again.code(), Some(6), "{}", again.describe());

    let reset = ctl.json(&["reset", user.name()]);
    assert_eq!(reset["changed"], Value::Bool(true), "{reset}");
    let gone = ctl.status(user.name());
    assert!(
        !kronctl::flag(&gone, "enrolled") && !kronctl::flag(&gone, "pending"),
        "{gone}"
    );
    let reset_again = ctl.json(&["reset", user.name()]);
    assert_eq!(reset_again["changed"], Value::Bool(false), "{reset_again}");

    let unlock = ctl.json(&["unlock", user.name()]);
    assert_eq!(unlock["changed"], Value::Bool(false), "{unlock}");

    // After the reset the user has no token: under require, the login is refused.
    world
        .login(user.name())
        .answer(&token.code_for_step(step + 1))
        .run()
        .assert_denied();
}

/// The human output shows what a person needs.
#[test]
fn text_output_is_for_people() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let ctl = world.kronctl();

    let enroll = ctl.run(&["enroll", user.name()]);
    enroll.assert_success("kronctl enroll");
    assert!(
        enroll.stdout.contains("otpauth://totp/"),
        "{}",
        enroll.stdout
    );
    assert!(
        enroll.stdout.lines().count() >= 15,
        "no QR code:\n{}",
        enroll.stdout
    );
    assert!(
        enroll.stdout.contains("expires"),
        "no deadline:\n{}",
        enroll.stdout
    );

    let status = ctl.run(&["status", user.name()]);
    status.assert_success("kronctl status");
    assert!(
        status.stdout.contains(user.name()) && status.stdout.contains("pending"),
        "{}",
        status.stdout
    );

    let list = ctl.run(&["list"]);
    list.assert_success("kronctl list");
    assert!(list.stdout.contains(user.name()), "{}", list.stdout);
}

/// `list` of a store larger than one page (`ListPage` answers at most `MAX_LIST_PAGE`): every
/// user once, in order, in one JSON array and in one aligned table; the old one-message `List`
/// still answers a store of this size.
#[test]
fn list_reads_every_page() {
    let world = World::start(REQUIRE);
    let ctl = world.kronctl();
    let count = MAX_LIST_PAGE as usize + MAX_LIST_PAGE as usize / 5;
    let users: Vec<String> = (0..count).map(|i| format!("paged-{i:05}")).collect();
    let conn = world.bus.connect();
    dbus::import_tokens(&conn, &users);

    assert_eq!(kronctl::listed_users(&ctl.json(&["list"])), users);

    let text = ctl.run(&["list"]);
    text.assert_success("kronctl list");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), count + 1, "a header and a line per user");
    assert!(lines[0].starts_with("USER "), "{}", lines[0]);
    let shown: Vec<&str> = lines[1..]
        .iter()
        .map(|line| line.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(shown, users);
    let token_column = lines[0].find("TOKEN").expect("a TOKEN column");
    assert!(
        lines[1..]
            .iter()
            .all(|line| line[token_column..].starts_with("enrolled")),
        "aligned on every page"
    );

    let whole: Vec<UserStatus> = dbus::decode(&dbus::call(&conn, "List", &()).expect("List"));
    assert_eq!(whole.len(), count);

    // An otpd older than this kronctl (upgraded, not yet restarted) has no `ListPage`: kronctl
    // lists with its one-message `List`.
    let older_bus = Bus::start();
    let _older = kron_tests::FakeOtpd::start(&older_bus);
    let listed = Kronctl::root(&older_bus).json(&["list"]);
    assert_eq!(
        kronctl::listed_users(&listed),
        vec![kron_tests::fake_otpd::FAKE_LISTED_USER.to_string()]
    );
}

/// A user enrolls and confirms their own token, and then cannot replace it by themself.
#[test]
fn user_self_service() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let ctl = Kronctl::as_identity(&world.bus, user.identity());

    let enrollment = ctl.json(&["enroll"]);
    assert_eq!(enrollment["user"], Value::from(user.name()), "{enrollment}");
    let token = Oath::new(&kronctl::secret_of(&enrollment));
    let step = totp::steady_step();
    ctl.run(&["confirm", &token.code_for_step(step - 1)])
        .assert_success("confirm own token");
    assert!(kronctl::flag(&ctl.json(&["status"]), "enrolled"));

    let replace = ctl.run(&["enroll"]);
    assert_eq!(replace.code(), Some(6), "{}", replace.describe());
    let reset = ctl.run(&["reset", user.name()]);
    assert_eq!(reset.code(), Some(4), "{}", reset.describe());

    world
        .login(user.name())
        .answer(&token.code_for_step(step))
        .run()
        .assert_accepted();
}

/// Input kronctl or otpd refuses, and an unreachable otpd.
#[test]
fn refusals_have_their_exit_codes() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let ctl = world.kronctl();

    let not_digits = ctl.run(&["confirm", user.name(), "12ab56"]);
    assert_eq!(not_digits.code(), Some(2), "{}", not_digits.describe());
    let no_pending = ctl.run(&["confirm", user.name(), "123456"]);
    assert_eq!(no_pending.code(), Some(5), "{}", no_pending.describe());
    let no_account = ctl.run(&["enroll", &kron_tests::users::random_name("kx")]);
    assert_eq!(no_account.code(), Some(5), "{}", no_account.describe());
    let bad_name = ctl.run(&["reset", "a/b"]);
    assert_eq!(bad_name.code(), Some(2), "{}", bad_name.describe());

    let empty_bus = Bus::start();
    let unreachable = Kronctl::root(&empty_bus).run(&["status", user.name()]);
    assert_eq!(unreachable.code(), Some(3), "{}", unreachable.describe());
    assert!(
        !unreachable.stderr.is_empty(),
        "no message:\n{}",
        unreachable.describe()
    );
}

/// Restarting an enrollment replaces the secret; the old one no longer confirms.
#[test]
fn enrolling_again_replaces_the_pending_secret() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let ctl = world.kronctl();
    let first = ctl.enroll(user.name());
    let second = ctl.enroll(user.name());
    assert_ne!(first.secret(), second.secret());

    let step = totp::steady_step();
    let stale = ctl.run(&["confirm", user.name(), &first.code_for_step(step)]);
    assert_eq!(stale.code(), Some(8), "{}", stale.describe());
    ctl.run(&["confirm", user.name(), &second.code_for_step(step)])
        .assert_success("confirm");
}
