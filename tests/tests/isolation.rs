//! Security boundaries: the caller's environment, the caller's uid, and an absent daemon.

use kron_tests::dbus::{Route, otpd_error, send_as};
use kron_tests::pam::Stack;
use kron_tests::process::Identity;
use kron_tests::totp::wrong_code;
use kron_tests::users::random_name;
use kron_tests::{
    Bus, FakeOtpd, Kronctl, PamConfig, TestGroup, TestUser, Transport, World, kronctl, result,
};

const REQUIRE: &str = "default_mode = \"require\"\n";

/// Every variable a client library might read to find a bus, pointed at `fake`.
fn poisoned_env(fake: &Bus) -> [(&'static str, String); 4] {
    [
        ("DBUS_SYSTEM_BUS_ADDRESS", fake.address().to_string()),
        ("DBUS_SESSION_BUS_ADDRESS", fake.address().to_string()),
        ("DBUS_STARTER_ADDRESS", fake.address().to_string()),
        ("KRON_BUS", fake.address().to_string()),
    ]
}

/// With `socket=` or `bus=` on the PAM line, a bus named in the environment is never used: a
/// wrong code is refused by the real otpd although an impostor on the other bus accepts
/// everything. Run as the user themself, as a screen locker would, so the environment is fully
/// theirs.
#[test]
fn environment_bus_is_ignored_with_socket_or_bus_argument() {
    for transport in Transport::BOTH {
        environment_bus_is_ignored_over(transport);
    }
}

fn environment_bus_is_ignored_over(transport: Transport) {
    let world = World::start_over(transport, REQUIRE);
    let fake_bus = Bus::start();
    let fake = FakeOtpd::start(&fake_bus);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());

    for identity in [Identity::Root, user.identity()] {
        let mut login = world.login(user.name()).as_identity(identity);
        for (key, value) in poisoned_env(&fake_bus) {
            login = login.env(key, &value);
        }
        let denied = login
            .answer(&wrong_code(&token.code_for_step(confirmed + 1)))
            .run();
        denied.assert_denied();
    }
    assert_eq!(fake.calls(), 0, "the module called the impostor");
}

/// Without `socket=` or `bus=`, the module uses its compiled-in socket path and nothing from the
/// environment: the impostor named by DBUS_SYSTEM_BUS_ADDRESS is never asked, and the login is
/// not accepted (on a machine without otpd at that path it is refused).
#[test]
fn environment_bus_is_ignored_without_bus_argument() {
    let fake_bus = Bus::start();
    let fake = FakeOtpd::start(&fake_bus);
    let user = TestUser::new();
    let pam = PamConfig::with_module_args("login", Stack::Probe, &["timeout=10"]);

    for identity in [Identity::Root, user.identity()] {
        let mut login = pam
            .login(user.name())
            .as_identity(identity)
            .answer("123456");
        for (key, value) in poisoned_env(&fake_bus) {
            login = login.env(key, &value);
        }
        let outcome = login.run();
        assert_ne!(
            outcome.result(),
            result::SUCCESS,
            "login accepted:\n{}",
            outcome.raw
        );
    }
    assert_eq!(fake.calls(), 0, "the module called the impostor");
}

/// otpd stopped: the login is refused as unavailable, with a message saying so, whichever way
/// the module reaches it.
#[test]
fn stopped_daemon_denies_with_a_clear_message() {
    for transport in Transport::BOTH {
        stopped_daemon_denies_over(transport);
    }
}

fn stopped_daemon_denies_over(transport: Transport) {
    let mut world = World::start_over(transport, REQUIRE);
    let user = TestUser::new();
    world.otpd.stop();

    let login = world.login(user.name()).answer("123456").run();

    login.assert_result(result::AUTHINFO_UNAVAIL);
    assert!(
        !login.errors().is_empty(),
        "no message shown:\n{}",
        login.raw
    );
    assert!(
        login.prompts().is_empty(),
        "asked for a code nobody can check:\n{}",
        login.raw
    );
}

/// No socket or no bus at the configured address: refused as unavailable.
#[test]
fn missing_bus_denies() {
    let user = TestUser::new();
    let dir = kron_tests::scratch::public_dir("kron-nobus.");
    for reach in [
        format!("bus=unix:path={}/no-such-socket", dir.path().display()),
        format!("socket={}/no-such-socket", dir.path().display()),
    ] {
        let pam = PamConfig::with_module_args("login", Stack::Probe, &[&reach, "timeout=10"]);
        pam.login(user.name())
            .answer("123456")
            .run()
            .assert_result(result::AUTHINFO_UNAVAIL);
    }
}

/// A user may run a login check for themself (a screen locker) but not for anyone else, on the
/// socket as on the bus.
#[test]
fn user_cannot_begin_login_for_another_user() {
    for transport in Transport::BOTH {
        user_cannot_begin_login_for_another_user_over(transport);
    }
}

fn user_cannot_begin_login_for_another_user_over(transport: Transport) {
    let world = World::start_over(transport, REQUIRE);
    let caller = TestUser::new();
    let victim = TestUser::new();
    world.kronctl().enroll_confirmed_now(victim.name());

    let other = world
        .login(victim.name())
        .as_identity(caller.identity())
        .answer("123456")
        .run();
    assert_ne!(other.result(), result::SUCCESS, "{}", other.raw);
    assert!(
        other.prompts().is_empty(),
        "a code was asked for another user:\n{}",
        other.raw
    );

    let victim_arg = format!("string:{}", victim.name());
    for route in Route::both(&world) {
        let raw = send_as(
            &caller.identity(),
            &route,
            "BeginLogin",
            &[&victim_arg, "string:login", "string:", "string:"],
        );
        raw.assert_failure("BeginLogin for another user");
        assert!(
            raw.stderr.contains(&otpd_error("AccessDenied")),
            "{route:?}: {}",
            raw.describe()
        );
    }

    // Their own login is checked normally: asked, then refused (no token under require).
    let own = world
        .login(caller.name())
        .as_identity(caller.identity())
        .answer("123456")
        .run();
    own.assert_denied().assert_prompted();
}

/// kronctl as an ordinary user: management of others is refused (exit 4), own status works,
/// and the other user's token is untouched.
#[test]
fn user_cannot_manage_another_user() {
    let world = World::start(REQUIRE);
    let caller = TestUser::new();
    let victim = TestUser::new();
    world.kronctl().enroll_confirmed_now(victim.name());
    let as_caller = Kronctl::as_identity(&world.bus, caller.identity());

    for args in [
        vec!["status", victim.name()],
        vec!["reset", victim.name()],
        vec!["unlock", victim.name()],
        vec!["enroll", victim.name()],
        vec!["confirm", victim.name(), "123456"],
        vec!["list"],
    ] {
        let output = as_caller.run(&args);
        assert_eq!(
            output.code(),
            Some(4),
            "kronctl {args:?} as a user: {}",
            output.describe()
        );
    }
    let own = as_caller.json(&["status"]);
    assert_eq!(
        kronctl::find_key(&own, "user").and_then(|u| u.as_str()),
        Some(caller.name()),
        "{own}"
    );
    let own_by_name = as_caller.json(&["status", caller.name()]);
    assert!(!kronctl::flag(&own_by_name, "enrolled"), "{own_by_name}");

    let victim_status = world.kronctl().status(victim.name());
    assert!(
        kronctl::flag(&victim_status, "enrolled"),
        "the victim's token changed: {victim_status}"
    );
}

/// Raw D-Bus as an ordinary user, on the bus and on otpd's socket: every call about another user
/// is AccessDenied, including setting their contact or sending them codes or an enrollment.
#[test]
fn user_raw_calls_for_another_user_are_access_denied() {
    let world = World::start(REQUIRE);
    let caller = TestUser::new();
    let victim = TestUser::new();
    let denied = otpd_error("AccessDenied");
    let victim_arg = format!("string:{}", victim.name());
    let calls: [(&str, &[&str]); 10] = [
        ("Status", &[&victim_arg]),
        ("Export", &[&victim_arg, "string:a long enough passphrase"]),
        ("RecoveryCodes", &[&victim_arg, "string:"]),
        (
            "Import",
            &[
                "array:byte:1,2,3",
                "string:a long enough passphrase",
                "boolean:false",
                "boolean:true",
            ],
        ),
        ("Reset", &[&victim_arg]),
        ("Unlock", &[&victim_arg]),
        ("Enroll", &[&victim_arg, "string:"]),
        ("SendEnrollmentCode", &[&victim_arg]),
        ("DeliverEnrollment", &[&victim_arg, "string:email"]),
        (
            "SetContact",
            &[&victim_arg, "string:email", "string:mallory@example.test"],
        ),
    ];
    for route in Route::both(&world) {
        for (member, args) in calls {
            let output = send_as(&caller.identity(), &route, member, args);
            output.assert_failure(member);
            assert!(
                output.stderr.contains(&denied),
                "{member} over {route:?}: {}",
                output.describe()
            );
        }
        let output = send_as(&caller.identity(), &route, "List", &[]);
        assert!(
            output.stderr.contains(&denied),
            "List over {route:?}: {}",
            output.describe()
        );
        // Refused before the limit is looked at (0 is out of bounds).
        for (member, limit) in ["ListPage", "FleetPushPage"]
            .into_iter()
            .flat_map(|member| ["uint32:10", "uint32:0"].map(|limit| (member, limit)))
        {
            let output = send_as(&caller.identity(), &route, member, &["string:", limit]);
            assert!(
                output.stderr.contains(&denied),
                "{member} {limit} over {route:?}: {}",
                output.describe()
            );
        }
    }
}

/// Members of `admin_group` manage other users; everyone else does not.
#[test]
fn admin_group_members_may_manage_others() {
    let admins = TestGroup::new();
    let world = World::start(&format!("{REQUIRE}admin_group = \"{}\"\n", admins.name()));
    let admin = TestUser::with_groups(&[&admins]);
    let victim = TestUser::new();
    world.kronctl().enroll_confirmed_now(victim.name());
    let as_admin = Kronctl::as_identity(&world.bus, admin.identity());

    let listed = kronctl::listed_users(&as_admin.json(&["list"]));
    assert!(
        listed.iter().any(|user| user == victim.name()),
        "{listed:?}"
    );
    let reset = as_admin.json(&["reset", victim.name()]);
    assert_eq!(reset["changed"], serde_json::Value::Bool(true), "{reset}");
    assert!(!kronctl::flag(
        &world.kronctl().status(victim.name()),
        "enrolled"
    ));
}

/// A user cannot use `status` to learn whether an account exists: a name NSS does not know
/// is refused like any other user's (exit 4).
#[test]
fn user_cannot_probe_unknown_accounts() {
    let world = World::start(REQUIRE);
    let caller = TestUser::new();
    let as_caller = Kronctl::as_identity(&world.bus, caller.identity());
    let output = as_caller.run(&["status", &random_name("kx")]);
    assert_eq!(output.code(), Some(4), "{}", output.describe());
}

/// A known module argument with a bad value is a configuration error: the login fails closed
/// (PAM_SERVICE_ERR) rather than running with a guessed value.
#[test]
fn bad_module_arguments_fail_closed() {
    let world = World::start("default_mode = \"exempt\"\n");
    let user = TestUser::new();
    let bus_arg = format!("bus={}", world.bus.address());
    let socket_arg = world.transport_arg();
    for args in [
        vec!["bus=tcp:host=127.0.0.1,port=1".to_string()],
        vec![bus_arg.clone(), "timeout=0".into()],
        vec![bus_arg.clone(), "timeout=soon".into()],
        vec!["bus=".into()],
        vec!["socket=otpd.sock".into()],
        vec!["socket=".into()],
        // Both ways at once: which one was meant would be a guess.
        vec![socket_arg.clone(), bus_arg.clone()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pam = PamConfig::with_module_args("login", Stack::Probe, &args);
        let login = pam.login(user.name()).run();
        login.assert_result("PAM_SERVICE_ERR");
    }
    // The same user with good arguments is skipped (exempt): the refusals came from the args.
    world.login(user.name()).run().assert_skipped();
}
