//! The harness checked against known peers, without kron: if these fail, the other tests'
//! failures say nothing about kron.

use std::process::Command;

use kron_tests::pam::stack_text;
use kron_tests::process::{self, Identity};
use kron_tests::totp::{Algorithm, Oath};
use kron_tests::{Bus, TestGroup, TestUser, Transcript, dbus, result, scratch};

/// RFC 6238 appendix B vectors, computed by oathtool: the tests' reference TOTP is right.
#[test]
fn oathtool_matches_rfc6238_vectors() {
    let sha1 = Oath::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").digits(8);
    assert_eq!(sha1.code_at(59), "94287082");
    assert_eq!(sha1.code_at(1_111_111_109), "07081804");
    assert_eq!(sha1.code_at(20_000_000_000), "65353130");
    let sha256 = Oath::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA")
        .algorithm(Algorithm::Sha256)
        .digits(8);
    assert_eq!(sha256.code_at(59), "46119246");
    assert_eq!(sha256.code_at(1_111_111_109), "68084774");
    let six = Oath::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_eq!(six.code_at(59), "287082");
    assert_eq!(six.code_for_step(1), "287082");
    // A 60 s step: Unix time 119 is step 1 as well.
    assert_eq!(six.clone().period(60).code_at(119), "287082");
}

/// A private bus answers, users other than root can reach it, and the shipped policy lets only
/// root own io.kron.Otpd.
#[test]
fn private_bus_applies_the_project_policy() {
    let bus = Bus::start();
    let conn = bus.connect();
    assert!(!dbus::name_has_owner(&conn, kron_proto::BUS_NAME));

    let user = TestUser::new();
    let request_name = |identity: &Identity| {
        let mut command = identity.command("dbus-send");
        command
            .arg(format!("--bus={}", bus.address()))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .args([
                "org.freedesktop.DBus.RequestName",
                "string:io.kron.Otpd",
                "uint32:0",
            ]);
        process::run(&mut command)
    };
    let denied = request_name(&user.identity());
    denied.assert_failure("RequestName io.kron.Otpd as a normal user");
    assert!(
        denied.stderr.contains("AccessDenied"),
        "{}",
        denied.describe()
    );

    let allowed = request_name(&Identity::Root);
    allowed.assert_success("RequestName io.kron.Otpd as root");
}

/// pam-host drives a stack of stock modules and reports what it saw.
#[test]
fn pam_host_reports_messages_and_results() {
    let dir = scratch::public_dir("kron-pam.");
    let write =
        |service: &str, text: &str| scratch::write_file(&dir.path().join(service), text, 0o644);
    write(
        "echo",
        "auth optional pam_echo.so hello from pam_echo\nauth required pam_permit.so\n",
    );
    write("deny", "auth required pam_deny.so\n");
    let host = |service: &str, extra: &[&str]| {
        let output = process::run(
            Command::new(kron_tests::artifacts::pam_host())
                .arg("--confdir")
                .arg(dir.path())
                .args(["--service", service, "--user", "nobody"])
                .args(extra),
        );
        Transcript::parse(&output.stdout, &output.stderr)
    };

    let echo = host("echo", &[]);
    echo.assert_result(result::SUCCESS);
    assert!(echo.mentions("hello from pam_echo"), "{}", echo.raw);

    host("deny", &[]).assert_result(result::AUTH_ERR);

    let many = host("echo", &["--repeat", "50", "--quiet"]);
    assert_eq!(many.results.len(), 50, "{}", many.raw);
    let tasks = many.tasks.expect("thread counts");
    assert_eq!(tasks.baseline, tasks.after_all, "{}", many.raw);
    let fds = many.fds.expect("fd counts");
    assert_eq!(fds.after_first, fds.after_all, "{}", many.raw);
}

/// The stack text names the module by absolute path and passes the arguments.
#[test]
fn probe_stack_shape() {
    let text = stack_text(kron_tests::Stack::Probe, &["bus=unix:path=/x"]);
    let first = text.lines().next().expect("a line");
    assert!(
        first.starts_with("auth [success=done ignore=ignore default=die] /"),
        "{text}"
    );
    assert!(first.ends_with("libpam_kron.so bus=unix:path=/x"), "{text}");
    assert!(text.contains("pam_permit.so"), "{text}");
}

/// Test users exist in NSS with their groups, and commands run as them.
#[test]
fn test_users_are_real() {
    let group = TestGroup::new();
    let user = TestUser::with_groups(&[&group]);
    let id = process::run(user.identity().command("id").arg("-Gn"));
    id.assert_success("id as the test user");
    assert!(id.stdout.contains(group.name()), "{}", id.describe());
    let whoami = process::run(&mut user.identity().command("id"));
    assert!(
        whoami.stdout.contains(&format!("uid={}", user.uid())),
        "{}",
        whoami.describe()
    );
    let name = user.name().to_string();
    drop(user);
    assert!(
        nix::unistd::User::from_name(&name)
            .expect("getpwnam")
            .is_none(),
        "{name} was not removed"
    );
}
