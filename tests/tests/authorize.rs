//! Authorize first, then validate (design invariant 9), over the real bus: an unprivileged
//! caller gets AccessDenied from every method it has no right to, whatever it sends, and no
//! error, for it or for root, repeats what was sent.

use kron_proto::StepKind;
use kron_tests::dbus::{self, CallError, otpd_error};
use kron_tests::process::Identity;
use kron_tests::{TestUser, World};

/// What `dbus-call` makes its `@N` arguments of.
const MARKER: &str = "ECHO-MARKER";
/// The size the issue saw echoed back: 10 MB.
const HUGE: &str = "@10000000";
const BIG: &str = "@65536";

/// What otpd answers a call of more than its bus bound (`dbus/bounded.rs`): it is refused
/// before anything is read, so before the caller's right is looked at.
const TOO_LARGE: &str = "org.freedesktop.DBus.Error.InvalidArgs";

/// `error` is `name` (or, for a call carrying a 10 MB argument, the bus bound's refusal), short,
/// and does not repeat the input.
fn assert_quiet(what: &str, args: &[&str], error: &CallError, name: &str) {
    let huge = args.contains(&HUGE);
    assert!(
        error.name == otpd_error(name) || (huge && error.name == TOO_LARGE),
        "{what}: {error}"
    );
    assert!(!error.text.contains(MARKER), "{what} echoes its input");
    assert!(
        error.text.len() < 200,
        "{what}: a {}-byte error text",
        error.text.len()
    );
}

#[test]
fn unprivileged_callers_are_refused_before_their_input_is_looked_at() {
    let world = World::start("default_mode = \"require\"\n");
    let caller = TestUser::new();
    let other = TestUser::new();
    let address = world.bus.address().to_owned();
    let me = caller.identity();

    // A login root began for someone else, so its handle is real.
    let conn = world.bus.connect();
    let step = dbus::begin_login(&conn, other.name(), "login").expect("BeginLogin as root");
    assert_eq!(step.kind, StepKind::Prompt as u32, "{step:?}");

    let cases: &[(&str, &[&str])] = &[
        ("SetContact", &[other.name(), HUGE, HUGE]),
        ("DeliverEnrollment", &[other.name(), HUGE]),
        ("SetContact", &[BIG, BIG, BIG]),
        ("DeliverEnrollment", &[BIG, BIG]),
        ("Reset", &[BIG]),
        ("Unlock", &[BIG]),
        ("List", &[]),
        ("ListPage", &["", "10"]),
        ("ListPage", &[BIG, "0"]),
        ("FleetPush", &[]),
        ("FleetPushPage", &["", "10"]),
        ("FleetPushPage", &[BIG, "0"]),
        ("Status", &[BIG]),
        ("Status", &[other.name()]),
        ("Enroll", &[BIG, BIG]),
        ("Confirm", &[BIG, BIG]),
        ("Confirm", &[other.name(), BIG]),
        ("SendEnrollmentCode", &[BIG]),
        ("RecoveryCodes", &[BIG, BIG]),
        ("BeginLogin", &[BIG, BIG, BIG, BIG]),
        ("BeginLogin", &[other.name(), BIG, BIG, BIG]),
        ("Answer", &[&step.handle, BIG]),
        ("Export", &[BIG, BIG]),
        ("Import", &[BIG, BIG]),
        ("ImportTokens", &[BIG]),
        ("ExportToken", &[BIG]),
    ];
    for (method, args) in cases {
        let what = format!("{method} as a user");
        let error = dbus::call_as(&me, &address, method, args)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_quiet(&what, args, &error, "AccessDenied");
    }
    assert!(world.otpd.stderr().lines().all(|l| !l.contains(MARKER)));
}

#[test]
fn errors_for_root_name_what_is_wrong_without_repeating_it() {
    let world = World::start("default_mode = \"require\"\n");
    let user = TestUser::new();
    let address = world.bus.address().to_owned();
    let root = Identity::Root;
    let cases: &[(&str, &[&str])] = &[
        ("SetContact", &[user.name(), HUGE, ""]),
        ("DeliverEnrollment", &[user.name(), HUGE]),
        ("Status", &["@300"]),
        ("Reset", &["ECHO-MARKER with blanks"]),
        ("BeginLogin", &["ECHO-MARKER/slash", "login", "", ""]),
        ("ImportTokens", &[BIG]),
        ("ListPage", &[BIG, "10"]),
        ("ListPage", &["", "0"]),
        ("ListPage", &["", "4294967295"]),
        // Checked before the push looks for a fleet (this host has none).
        ("FleetPushPage", &[BIG, "10"]),
        ("FleetPushPage", &["", "0"]),
        ("FleetPushPage", &["", "4294967295"]),
    ];
    for (method, args) in cases {
        let what = format!("{method} as root");
        let error = dbus::call_as(&root, &address, method, args)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_quiet(&what, args, &error, "InvalidArgument");
    }
}
