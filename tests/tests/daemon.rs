//! otpd as a process: restarts and crashes lose nothing, config errors name file:line, bad
//! D-Bus input is refused without harm (and nobody can take otpd's bus name from it), and
//! secrets stay out of logs and plain files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kron_proto::{MAX_FIELD_LEN, MAX_RESPONSE_LEN, MAX_USER_LEN, StepKind};
use kron_tests::dbus::{self, otpd_error};
use kron_tests::totp::wrong_code;
use kron_tests::{TestUser, World, artifacts, kronctl, otpd, scratch};

const REQUIRE: &str = "default_mode = \"require\"\n";

/// Tokens, the last used step and counters survive a clean restart.
#[test]
fn restart_loses_nothing() {
    let mut world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let code = token.code_for_step(confirmed + 1);
    world
        .login(user.name())
        .answer(&code)
        .run()
        .assert_accepted();

    world.otpd.restart();

    world.login(user.name()).answer(&code).run().assert_denied();
    assert!(kronctl::flag(
        &world.kronctl().status(user.name()),
        "enrolled"
    ));
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 2))
        .run()
        .assert_accepted();
}

/// What otpd reported as done is on disk even if otpd is killed right after (SIGKILL).
#[test]
fn crash_loses_nothing_reported() {
    let mut world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let code = token.code_for_step(confirmed + 1);
    world
        .login(user.name())
        .answer(&code)
        .run()
        .assert_accepted();

    world.otpd.kill();
    world.otpd.start_again();

    world.login(user.name()).answer(&code).run().assert_denied();
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 2))
        .run()
        .assert_accepted();
}

/// A refusal is as durable as an acceptance: the attempts a guesser was charged survive a
/// SIGKILL right after the replies, so killing otpd hands out no free attempts.
#[test]
fn crash_keeps_the_charges_of_refused_codes() {
    let mut world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let right = token.code_for_step(confirmed + 1);
    for _ in 0..2 {
        world
            .login(user.name())
            .answer(&wrong_code(&right))
            .run()
            .assert_denied();
    }

    world.otpd.kill();
    world.otpd.start_again();

    let status = world.kronctl().status(user.name());
    assert_eq!(kronctl::number(&status, "failures"), 2, "{status}");
}

/// `otpd --check-config`: "ok" for good files (the shipped one included), file:line and exit
/// 1 for bad ones.
#[test]
fn check_config_reports_file_and_line() {
    let dir = scratch::private_dir("kron-config.");
    let shipped = artifacts::workspace_root().join("conf/otpd.toml");
    let good = otpd::check_config(&shipped);
    good.assert_success("check-config of conf/otpd.toml");
    assert_eq!(good.stdout.trim(), "ok", "{}", good.describe());

    let cases = [
        (
            "bad-mode.toml",
            "issuer = \"x\"\n\ndefault_mode = \"sometimes\"\n",
            3,
        ),
        ("bad-digits.toml", "# comment\n[totp]\ndigits = 7\n", 3),
        ("unknown-key.toml", "issuer = \"x\"\ncolour = \"blue\"\n", 2),
        ("syntax.toml", "issuer = \"x\"\n[throttle\n", 2),
        (
            "bad-rule.toml",
            "[[group]]\nname = \"wheel\"\nmode = \"maybe\"\n",
            3,
        ),
        (
            "dead-rule.toml",
            "[[group]]\nname = \"wheel\"\nmode = \"require\"\nservices = [\"sudo\", \"sshd\"]\n\n\
             [[group]]\nname = \"wheel\"\nmode = \"exempt\"\nservices = [\"sshd\"]\n",
            6,
        ),
        (
            "unknown-rule-key.toml",
            "[[group]]\nname = \"wheel\"\nmode = \"require\"\nservice = [\"sudo\"]\n",
            4,
        ),
        (
            "unknown-contacts-key.toml",
            "[contacts]\nmail = \"{user}@example.com\"\n",
            2,
        ),
    ];
    for (name, text, line) in cases {
        let path = dir.path().join(name);
        scratch::write_file(&path, text, 0o600);
        let output = otpd::check_config(&path);
        assert_eq!(output.code(), Some(1), "{name}: {}", output.describe());
        let expected = format!("{}:{line}:", path.display());
        let printed = format!("{}{}", output.stdout, output.stderr);
        assert!(
            printed.contains(&expected),
            "{name}: expected {expected:?} in {}",
            output.describe()
        );
    }

    let missing = otpd::check_config(&dir.path().join("missing.toml"));
    assert_eq!(missing.code(), Some(1), "{}", missing.describe());
}

/// Malformed and oversize calls get D-Bus errors; otpd keeps serving.
#[test]
fn malformed_calls_are_refused_without_harm() {
    let mut world = World::start(REQUIRE);
    let conn = world.bus.connect();
    let invalid = otpd_error("InvalidArgument");
    let long_user = "a".repeat(MAX_USER_LEN + 1);
    let huge_user = "a".repeat(200_000);
    let long_service = "s".repeat(MAX_FIELD_LEN + 1);

    let expect_error =
        |what: &str, outcome: Result<zbus::message::Message, dbus::CallError>, name: &str| {
            let error = outcome.err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(error.name, name, "{what}: {error}");
        };
    expect_error(
        "BeginLogin(s)",
        dbus::call(&conn, "BeginLogin", &("root",)),
        "org.freedesktop.DBus.Error.InvalidArgs",
    );
    expect_error(
        "BeginLogin(uuuu)",
        dbus::call(&conn, "BeginLogin", &(1u32, 2u32, 3u32, 4u32)),
        "org.freedesktop.DBus.Error.InvalidArgs",
    );
    expect_error(
        "Status()",
        dbus::call(&conn, "Status", &()),
        "org.freedesktop.DBus.Error.InvalidArgs",
    );
    expect_error(
        "NoSuchMethod",
        dbus::call(&conn, "NoSuchMethod", &()),
        "org.freedesktop.DBus.Error.UnknownMethod",
    );
    expect_error(
        "long user",
        dbus::call(&conn, "BeginLogin", &(long_user.as_str(), "login", "", "")),
        &invalid,
    );
    expect_error(
        "huge user",
        dbus::call(&conn, "BeginLogin", &(huge_user.as_str(), "login", "", "")),
        &invalid,
    );
    expect_error(
        "user with /",
        dbus::call(&conn, "BeginLogin", &("../etc", "login", "", "")),
        &invalid,
    );
    expect_error(
        "user with newline",
        dbus::call(&conn, "Status", &("a\nb",)),
        &invalid,
    );
    expect_error(
        "long service",
        dbus::call(
            &conn,
            "BeginLogin",
            &("root", long_service.as_str(), "", ""),
        ),
        &invalid,
    );
    expect_error(
        "huge Status",
        dbus::call(&conn, "Status", &(huge_user.as_str(),)),
        &invalid,
    );
    expect_error(
        "huge Reset",
        dbus::call(&conn, "Reset", &(huge_user.as_str(),)),
        &invalid,
    );

    // A prompt's answer is bounded too, and a made-up handle gets no further than a refusal.
    let user = TestUser::new();
    let step = dbus::begin_login(&conn, user.name(), "login").expect("BeginLogin");
    assert_eq!(step.kind, StepKind::Prompt as u32, "{step:?}");
    let long_answer = "1".repeat(MAX_RESPONSE_LEN + 1);
    expect_error(
        "long answer",
        dbus::call(
            &conn,
            "Answer",
            &(step.handle.as_str(), long_answer.as_str()),
        ),
        &invalid,
    );
    match dbus::answer(&conn, "made-up-handle", "123456") {
        Ok(step) => assert_eq!(step.kind, StepKind::Deny as u32, "{step:?}"),
        Err(error) => assert!(error.name.starts_with("io.kron.Otpd1.Error."), "{error}"),
    }

    assert!(
        world.otpd.is_running(),
        "otpd died:\n{}",
        world.otpd.stderr()
    );
    dbus::version(&conn).expect("otpd still answers");

    // Even a process the bus lets own the name (root) cannot take it from a running otpd:
    // otpd does not allow replacement, so kronctl never ends up talking to an impostor.
    let taken = zbus::block_on(async {
        zbus::fdo::DBusProxy::new(&conn)
            .await?
            .request_name(
                kron_proto::BUS_NAME.try_into().unwrap(),
                zbus::fdo::RequestNameFlags::REPLACE_EXISTING
                    | zbus::fdo::RequestNameFlags::DO_NOT_QUEUE,
            )
            .await
    });
    assert_eq!(
        taken.expect("RequestName answered"),
        zbus::fdo::RequestNameReply::Exists,
        "the name was taken over"
    );
    dbus::version(&conn).expect("otpd still owns its name");
}

/// Neither the secret nor any code appears in otpd's log; the store is private to root and
/// holds the secret only encrypted.
#[test]
fn secrets_stay_out_of_logs_and_plain_files() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let confirm_code = token.code_for_step(confirmed);
    let login_code = token.code_for_step(confirmed + 1);
    world
        .login(user.name())
        .answer(&login_code)
        .run()
        .assert_accepted();
    world
        .login(user.name())
        .answer(&login_code)
        .run()
        .assert_denied();

    let log = world.otpd.stderr();
    assert!(
        log.contains(user.name()),
        "no audit line names the user:\n{log}"
    );
    for (what, needle) in [
        ("secret", token.secret()),
        ("confirm code", &confirm_code),
        ("login code", &login_code),
    ] {
        assert!(!log.contains(needle), "the {what} is in otpd's log:\n{log}");
    }

    let raw_secret = base32_decode(token.secret());
    let mut files = 0;
    walk(&world.otpd.state_dir(), &mut |path, is_dir| {
        let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        if !is_dir {
            files += 1;
            let bytes = std::fs::read(path).expect("read store file");
            assert!(
                !contains(&bytes, token.secret().as_bytes()),
                "base32 secret in {}",
                path.display()
            );
            assert!(
                !contains(&bytes, &raw_secret),
                "raw secret in {}",
                path.display()
            );
        }
    });
    assert!(files > 0, "the store wrote no files");
}

fn walk(path: &Path, visit: &mut dyn FnMut(&Path, bool)) {
    let is_dir = path.is_dir();
    visit(path, is_dir);
    if is_dir {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            walk(&entry.expect("dir entry").path(), visit);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// RFC 4648 base32 without padding, enough to find the raw secret bytes.
fn base32_decode(text: &str) -> Vec<u8> {
    let (mut buffer, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            other => panic!("not base32: {other}"),
        };
        buffer = (buffer << 5) | u64::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// Every decision is audited with who, where from and on whose behalf; a remote host name
/// cannot forge a log line.
#[test]
fn audit_lines_name_the_login_and_resist_forgery() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());

    world
        .login(user.name())
        .rhost("192.0.2.7")
        .tty("pts/7")
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    world
        .login(user.name())
        .rhost("x\nkron event=accepted user=root")
        .answer("000000")
        .run()
        .assert_denied();

    let log = world.otpd.stderr();
    let accepted = format!(
        "event=accepted user={} service=login rhost=192.0.2.7 tty=pts/7 caller_uid=0",
        user.name()
    );
    assert!(
        log.contains(&accepted),
        "no audit line {accepted:?} in:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|line| line.starts_with("kron event=accepted user=root")),
        "a forged line made it into the log:\n{log}"
    );
}
