//! `kronctl doctor` against prepared machines: a good tree and trees with one mistake each,
//! read with `--root`, and a real otpd on a private bus for the checks that ask it.
//!
//! The tree is a Debian 12 layout (sshd_config with a drop-in directory, common-auth as
//! Debian ships it, pam_kron after it) with the shipped D-Bus policy file. Each mistake of
//! the issue is made on a fresh copy and must be found under its check id. `clock-sync`
//! depends on this machine, so no assertion here depends on it (it is a warning at worst).

use std::process::Command;

use kron_tests::process::{self, Output};
use kron_tests::{TestGroup, TestUser, World, artifacts};
use serde_json::Value;
use tempfile::TempDir;

/// A bus address nothing listens on.
const NO_BUS: &str = "unix:path=/nonexistent/kron-doctor-test/bus";

/// Every check that reads only files, so a good tree passes all of them without otpd.
const FILE_CHECKS: [&str; 15] = [
    "otpd-config",
    "file-trust",
    "dbus-policy",
    "otpd-socket",
    "sshd-config",
    "sshd-usepam",
    "sshd-kbdinteractive",
    "sshd-publickey",
    "sshd-no-first-factor",
    "sshd-root-login",
    "sshd-match",
    "pam-sshd",
    "pam-sshd-order",
    "pam-sudo",
    "pam-sudo-order",
];

/// codes everywhere: the strictest policy, so every check has something to insist on.
const REQUIRE: &str = "default_mode = \"require\"\n";

const SSHD_CONFIG: &str = "\
Include /etc/ssh/sshd_config.d/*.conf
PermitRootLogin no
KbdInteractiveAuthentication yes
UsePAM yes
AuthenticationMethods publickey,keyboard-interactive
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
";

const DEBIAN_COMMON_AUTH: &str = "\
# here are the per-package modules (the \"Primary\" block)
auth\t[success=1 default=ignore]\tpam_unix.so nullok
# here's the fallback if no module succeeds
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
auth\toptional\t\t\tpam_cap.so
";

const PAM_SSHD: &str = "\
# PAM configuration for the Secure Shell service
@include common-auth
auth       required     pam_kron.so
account    required     pam_nologin.so
@include common-account
session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so close
session    required     pam_loginuid.so
@include common-session
@include common-password
";

/// docs/sshd.md's key-then-code stack: safe only when sshd has checked a key first.
const KEY_THEN_CODE_SSHD: &str = "\
auth       required     pam_kron.so
auth       required     pam_permit.so
account    required     pam_nologin.so
@include common-account
@include common-session
";

const PAM_SUDO: &str = "\
#%PAM-1.0
session    required   pam_limits.so
@include common-auth
auth       required   pam_kron.so
@include common-account
@include common-session-noninteractive
";

/// A machine's configuration under a temporary directory.
struct Tree {
    dir: TempDir,
}

impl Tree {
    /// A correctly set up machine with `otpd_toml` as /etc/kron/otpd.toml.
    fn good(otpd_toml: &str) -> Tree {
        let tree = Tree {
            dir: tempfile::Builder::new()
                .prefix("kron-doctor.")
                .tempdir()
                .expect("temporary directory"),
        };
        let policy = std::fs::read_to_string(artifacts::dbus_policy()).expect("read policy");
        tree.write("/etc/kron/otpd.toml", otpd_toml)
            .write("/etc/ssh/sshd_config", SSHD_CONFIG)
            .write("/etc/ssh/sshd_config.d/.keep", "")
            .write("/etc/pam.d/common-auth", DEBIAN_COMMON_AUTH)
            .write(
                "/etc/pam.d/common-account",
                "account required pam_unix.so\n",
            )
            .write(
                "/etc/pam.d/common-session",
                "session required pam_unix.so\n",
            )
            .write(
                "/etc/pam.d/common-session-noninteractive",
                "session required pam_unix.so\n",
            )
            .write(
                "/etc/pam.d/common-password",
                "password required pam_unix.so\n",
            )
            .write("/etc/pam.d/sshd", PAM_SSHD)
            .write("/etc/pam.d/sudo", PAM_SUDO)
            .write("/usr/share/dbus-1/system.d/io.kron.Otpd.conf", &policy)
            .socket("/run/kron/otpd.sock", 0o666);
        tree
    }

    fn path(&self, path: &str) -> std::path::PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    fn write(&self, path: &str, text: &str) -> &Tree {
        let file = self.path(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        self
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path)).expect("read tree file")
    }

    /// Replaces `from` by `to` in `path`, which must contain it.
    fn edit(&self, path: &str, from: &str, to: &str) -> &Tree {
        let text = self.read(path);
        assert!(text.contains(from), "{path} has no {from:?}");
        self.write(path, &text.replacen(from, to, 1))
    }

    /// A unix socket at `path`, mode `mode`, as systemd's otpd.socket leaves it.
    fn socket(&self, path: &str, mode: u32) -> &Tree {
        use std::os::unix::fs::PermissionsExt;
        let file = self.path(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
        drop(std::os::unix::net::UnixListener::bind(&file).expect("bind a socket"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    fn remove(&self, path: &str) -> &Tree {
        let target = self.path(path);
        if target.is_dir() {
            std::fs::remove_dir_all(target).expect("remove dir");
        } else {
            std::fs::remove_file(target).expect("remove file");
        }
        self
    }

    /// `kronctl doctor --root TREE --bus BUS --json ARGS...`.
    fn doctor(&self, bus: &str, args: &[&str]) -> Report {
        let mut command = Command::new(artifacts::kronctl());
        command
            .env_remove("KRON_BUS")
            .arg("doctor")
            .arg("--root")
            .arg(self.dir.path())
            .args(["--bus", bus, "--json"])
            .args(args);
        Report::of(process::run(&mut command))
    }
}

/// A doctor run: exit status and the parsed JSON report.
struct Report {
    output: Output,
    json: Value,
}

impl Report {
    fn of(output: Output) -> Report {
        let json = serde_json::from_str(output.stdout.trim())
            .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {}", output.describe()));
        Report { output, json }
    }

    fn findings(&self) -> &Vec<Value> {
        self.json["findings"].as_array().expect("findings array")
    }

    /// The severities reported for `check`, in order.
    fn severities(&self, check: &str) -> Vec<&str> {
        self.findings()
            .iter()
            .filter(|f| f["check"] == check)
            .map(|f| f["severity"].as_str().expect("severity string"))
            .collect()
    }

    /// The worst severity of `check`; panics if it was not reported.
    fn worst(&self, check: &str) -> &str {
        let severities = self.severities(check);
        ["error", "warning", "ok"]
            .into_iter()
            .find(|s| severities.contains(s))
            .unwrap_or_else(|| panic!("{check} not reported:\n{}", self.pretty()))
    }

    fn messages(&self, check: &str) -> Vec<&str> {
        self.findings()
            .iter()
            .filter(|f| f["check"] == check)
            .map(|f| f["message"].as_str().unwrap_or_default())
            .collect()
    }

    fn pretty(&self) -> String {
        serde_json::to_string_pretty(&self.json).unwrap_or_default()
    }

    fn exit_code(&self) -> Option<i32> {
        self.output.code()
    }

    /// Every finding of `checks` is ok.
    fn assert_ok(&self, checks: &[&str]) {
        for check in checks {
            assert_eq!(self.worst(check), "ok", "{check}:\n{}", self.pretty());
        }
    }
}

#[test]
fn good_tree_passes_every_file_check_and_reports_otpd_missing() {
    let tree = Tree::good(REQUIRE);
    let report = tree.doctor(NO_BUS, &[]);
    report.assert_ok(&FILE_CHECKS);
    assert_eq!(
        report.worst("otpd-reachable"),
        "error",
        "{}",
        report.pretty()
    );
    assert!(
        report.messages("otpd-reachable")[0].contains("/nonexistent/kron-doctor-test/bus"),
        "{}",
        report.pretty()
    );
    assert_eq!(report.json["ok"], Value::Bool(false));
    assert_eq!(report.exit_code(), Some(1), "{}", report.output.describe());
    assert!(
        report
            .output
            .stderr
            .contains("kronctl: doctor found 1 error"),
        "{}",
        report.output.describe()
    );
}

/// Each mistake of the issue, made alone on a good tree, is found by its check.
#[test]
fn each_mistake_is_found_by_its_check() {
    type Mistake = fn(&Tree);
    let mistakes: &[(&str, Mistake, &str, &str)] = &[
        (
            "no login socket",
            |t| {
                t.remove("/run/kron/otpd.sock");
            },
            "otpd-socket",
            "error",
        ),
        (
            "a file where the login socket should be",
            |t| {
                t.remove("/run/kron/otpd.sock")
                    .write("/run/kron/otpd.sock", "");
            },
            "otpd-socket",
            "error",
        ),
        (
            "a login socket users cannot connect to",
            |t| {
                t.remove("/run/kron/otpd.sock")
                    .socket("/run/kron/otpd.sock", 0o600);
            },
            "otpd-socket",
            "warning",
        ),
        (
            "UsePAM no",
            |t| {
                t.edit("/etc/ssh/sshd_config", "UsePAM yes", "UsePAM no");
            },
            "sshd-usepam",
            "error",
        ),
        (
            "UsePAM no in a drop-in, which sshd reads first",
            |t| {
                t.write("/etc/ssh/sshd_config.d/50-cloud.conf", "UsePAM no\n");
            },
            "sshd-usepam",
            "error",
        ),
        (
            "Debian's KbdInteractiveAuthentication no",
            |t| {
                t.edit(
                    "/etc/ssh/sshd_config",
                    "KbdInteractiveAuthentication yes",
                    "KbdInteractiveAuthentication no",
                );
            },
            "sshd-kbdinteractive",
            "error",
        ),
        (
            "the old ChallengeResponseAuthentication no",
            |t| {
                t.edit(
                    "/etc/ssh/sshd_config",
                    "KbdInteractiveAuthentication yes",
                    "ChallengeResponseAuthentication no",
                );
            },
            "sshd-kbdinteractive",
            "error",
        ),
        (
            "no AuthenticationMethods: a key alone logs in",
            |t| {
                t.edit(
                    "/etc/ssh/sshd_config",
                    "AuthenticationMethods publickey,keyboard-interactive\n",
                    "",
                );
            },
            "sshd-publickey",
            "error",
        ),
        (
            "AuthenticationMethods with publickey as an alternative",
            |t| {
                t.edit(
                    "/etc/ssh/sshd_config",
                    "publickey,keyboard-interactive",
                    "publickey,keyboard-interactive publickey",
                );
            },
            "sshd-publickey",
            "error",
        ),
        (
            "a Match block that allows keys alone",
            |t| {
                t.write(
                    "/etc/ssh/sshd_config.d/10-backup.conf",
                    "Match User backup\n    AuthenticationMethods publickey\n",
                );
            },
            "sshd-match",
            "warning",
        ),
        (
            "the key-then-code PAM stack with keyboard-interactive alone: the code is the only factor",
            |t| {
                t.write("/etc/pam.d/sshd", KEY_THEN_CODE_SSHD).edit(
                    "/etc/ssh/sshd_config",
                    "publickey,keyboard-interactive",
                    "keyboard-interactive",
                );
            },
            "sshd-no-first-factor",
            "warning",
        ),
        (
            "root shut out by PermitRootLogin prohibit-password",
            |t| {
                t.edit("/etc/ssh/sshd_config", "PermitRootLogin no\n", "");
            },
            "sshd-root-login",
            "warning",
        ),
        (
            "pam_kron missing from sshd",
            |t| {
                t.edit(
                    "/etc/pam.d/sshd",
                    "auth       required     pam_kron.so\n",
                    "",
                );
            },
            "pam-sshd",
            "error",
        ),
        (
            "pam_kron missing from sudo",
            |t| {
                t.edit("/etc/pam.d/sudo", "auth       required   pam_kron.so\n", "");
            },
            "pam-sudo",
            "error",
        ),
        (
            "pam_kron optional: a wrong code passes",
            |t| {
                t.edit(
                    "/etc/pam.d/sshd",
                    "required     pam_kron.so",
                    "optional pam_kron.so",
                );
            },
            "pam-sshd",
            "error",
        ),
        (
            "pam_kron after a sufficient module",
            |t| {
                t.edit(
                    "/etc/pam.d/sshd",
                    "@include common-auth\n",
                    "auth sufficient pam_unix.so\n@include common-auth\n",
                );
            },
            "pam-sshd-order",
            "error",
        ),
        (
            "pam_kron jumped over by [success=2 ...] in common-auth",
            |t| {
                t.write(
                    "/etc/pam.d/common-auth",
                    "auth [success=2 default=ignore] pam_unix.so nullok\n\
                     auth required pam_kron.so\n\
                     auth requisite pam_deny.so\n\
                     auth required pam_permit.so\n",
                );
                t.edit("/etc/pam.d/sudo", "auth       required   pam_kron.so\n", "");
            },
            "pam-sudo-order",
            "error",
        ),
        (
            "D-Bus policy not installed",
            |t| {
                t.remove("/usr/share/dbus-1/system.d/io.kron.Otpd.conf");
            },
            "dbus-policy",
            "error",
        ),
        (
            "otpd.toml that otpd refuses",
            |t| {
                t.write("/etc/kron/otpd.toml", "default_mode = \"sometimes\"\n");
            },
            "otpd-config",
            "error",
        ),
    ];
    let mut failures = Vec::new();
    for (what, make_mistake, check, expected) in mistakes {
        let tree = Tree::good(REQUIRE);
        make_mistake(&tree);
        let report = tree.doctor(NO_BUS, &["--skip", "otpd-reachable,admin-lockout"]);
        let found = report.worst(check);
        if found != *expected {
            failures.push(format!(
                "{what}: {check} is {found}, expected {expected}\n{}",
                report.pretty()
            ));
            continue;
        }
        let expected_exit = if *expected == "error" { 1 } else { 0 };
        if report.exit_code() != Some(expected_exit) {
            failures.push(format!(
                "{what}: exit {:?}, expected {expected_exit}\n{}",
                report.exit_code(),
                report.output.describe()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The key-then-code PAM stack (pam_kron, then pam_permit for the users pam_kron skips) lets a
/// login through with no factor at all when sshd does not check a key first: found whenever
/// keyboard-interactive alone completes a login and the policy lets anyone skip the code.
#[test]
fn kron_only_stack_without_a_key_is_found() {
    let optional_for_ops = "default_mode = \"require\"\n[[group]]\nname = \"ops\"\nmode = \"optional\"\nservices = [\"sshd\"]\n";
    let cases: &[(&str, &str, &str)] = &[
        ("", "keyboard-interactive", "error"),
        (
            "default_mode = \"exempt\"\n",
            "keyboard-interactive",
            "error",
        ),
        (optional_for_ops, "keyboard-interactive", "error"),
        (
            "default_mode = \"enroll\"\n",
            "keyboard-interactive",
            "error",
        ),
        (REQUIRE, "keyboard-interactive", "warning"),
        // No AuthenticationMethods: keyboard-interactive (and password) alone log in too.
        ("", "any", "error"),
        // Behind a key, as docs/sshd.md says: sound.
        ("", "publickey,keyboard-interactive", "ok"),
        (
            "default_mode = \"exempt\"\n",
            "publickey,keyboard-interactive",
            "ok",
        ),
    ];
    let mut failures = Vec::new();
    for (otpd_toml, methods, expected) in cases {
        let tree = Tree::good(otpd_toml);
        tree.write("/etc/pam.d/sshd", KEY_THEN_CODE_SSHD).edit(
            "/etc/ssh/sshd_config",
            "AuthenticationMethods publickey,keyboard-interactive",
            &format!("AuthenticationMethods {methods}"),
        );
        let report = tree.doctor(NO_BUS, &["--skip", "otpd-reachable,admin-lockout"]);
        let found = report.worst("sshd-no-first-factor");
        if found != *expected {
            failures.push(format!(
                "{otpd_toml:?} with AuthenticationMethods {methods}: sshd-no-first-factor is {found}, expected {expected}\n{}",
                report.pretty()
            ));
        } else if *expected == "error" && report.exit_code() != Some(1) {
            failures.push(format!(
                "{otpd_toml:?} with AuthenticationMethods {methods}: exit {:?}\n{}",
                report.exit_code(),
                report.output.describe()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The reported case: optional by default, keyboard-interactive alone.
    let tree = Tree::good("");
    tree.write("/etc/pam.d/sshd", KEY_THEN_CODE_SSHD).edit(
        "/etc/ssh/sshd_config",
        "publickey,keyboard-interactive",
        "keyboard-interactive",
    );
    let report = tree.doctor(NO_BUS, &["--skip", "otpd-reachable,admin-lockout"]);
    let message = report.messages("sshd-no-first-factor")[0];
    assert!(
        message.contains("pam_permit.so") && message.contains("no factor at all"),
        "{}",
        report.pretty()
    );
    let fix = report
        .findings()
        .iter()
        .find(|f| f["check"] == "sshd-no-first-factor")
        .and_then(|f| f["fix"].as_str())
        .unwrap_or_default();
    assert!(
        fix.contains("AuthenticationMethods publickey,keyboard-interactive")
            && fix.contains("@include common-auth"),
        "{fix}"
    );
    // Every other file check is satisfied by this tree: this check alone finds it.
    let others: Vec<&str> = FILE_CHECKS
        .iter()
        .copied()
        .filter(|c| *c != "sshd-no-first-factor")
        .collect();
    report.assert_ok(&others);
}

/// Password then code (docs/sshd.md): Debian's common-auth before pam_kron, keyboard-interactive
/// alone. pam_unix is the first factor, so no policy makes it a finding.
#[test]
fn password_then_code_passes() {
    for otpd_toml in ["", "default_mode = \"exempt\"\n", REQUIRE] {
        let tree = Tree::good(otpd_toml);
        tree.edit(
            "/etc/ssh/sshd_config",
            "AuthenticationMethods publickey,keyboard-interactive",
            "AuthenticationMethods keyboard-interactive\nPasswordAuthentication no",
        );
        let report = tree.doctor(NO_BUS, &["--skip", "otpd-reachable,admin-lockout"]);
        report.assert_ok(&FILE_CHECKS);
        assert!(
            report.messages("sshd-no-first-factor")[0].contains("pam_unix.so"),
            "{}",
            report.pretty()
        );
    }
}

/// A machine without sshd: the sshd checks say so once and nothing else about sshd.
#[test]
fn no_sshd_skips_the_sshd_checks() {
    let tree = Tree::good(REQUIRE);
    tree.remove("/etc/ssh").remove("/etc/pam.d/sshd");
    let report = tree.doctor(NO_BUS, &["--skip", "otpd-reachable,admin-lockout"]);
    report.assert_ok(&["sshd-config", "pam-sshd", "pam-sudo", "pam-sudo-order"]);
    for check in [
        "sshd-usepam",
        "sshd-kbdinteractive",
        "sshd-publickey",
        "sshd-no-first-factor",
        "sshd-root-login",
        "sshd-match",
    ] {
        assert!(
            report.severities(check).is_empty(),
            "{check}:\n{}",
            report.pretty()
        );
    }
    assert_eq!(report.exit_code(), Some(0), "{}", report.output.describe());
}

/// `--skip` leaves checks out; an unknown check name is a usage error.
#[test]
fn skip_and_usage() {
    let tree = Tree::good(REQUIRE);
    let report = tree.doctor(
        NO_BUS,
        &[
            "--skip",
            "otpd-reachable",
            "--skip",
            "clock-sync,admin-lockout",
        ],
    );
    for check in ["otpd-reachable", "clock-sync", "admin-lockout"] {
        assert!(report.severities(check).is_empty(), "{}", report.pretty());
    }
    assert_eq!(report.json["ok"], Value::Bool(true), "{}", report.pretty());
    assert_eq!(report.exit_code(), Some(0));

    let mut command = Command::new(artifacts::kronctl());
    command.args(["doctor", "--skip", "no-such-check"]);
    let bad = process::run(&mut command);
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
}

/// Human output: one marked line per finding and the fix under the failures.
#[test]
fn human_report_shows_marks_and_fixes() {
    let tree = Tree::good(REQUIRE);
    tree.edit("/etc/ssh/sshd_config", "UsePAM yes", "UsePAM no");
    let mut command = Command::new(artifacts::kronctl());
    command
        .env_remove("KRON_BUS")
        .args([
            "doctor",
            "--skip",
            "otpd-reachable,admin-lockout,clock-sync",
        ])
        .arg("--root")
        .arg(tree.dir.path());
    let output = process::run(&mut command);
    assert_eq!(output.code(), Some(1), "{}", output.describe());
    let lines: Vec<&str> = output.stdout.lines().collect();
    let usepam = lines
        .iter()
        .position(|l| l.starts_with("✗ sshd-usepam"))
        .unwrap_or_else(|| panic!("{}", output.stdout));
    assert!(
        lines[usepam].contains("UsePAM no (/etc/ssh/sshd_config:4)"),
        "{}",
        output.stdout
    );
    assert!(
        lines[usepam + 1]
            .trim_start()
            .starts_with("fix: set `UsePAM yes`"),
        "{}",
        output.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("✓ pam-sshd ")),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stdout
            .ends_with("1 error, 0 warnings: fix the errors above.\n"),
        "{}",
        output.stdout
    );
}

/// With otpd running: an administrator who must give codes but has no token is a lock-out;
/// once enrolled, every check but the clock passes.
#[test]
fn unenrolled_admin_is_a_lockout_until_enrolled() {
    let admins = TestGroup::new();
    let admin = TestUser::with_groups(&[&admins]);
    let otpd_toml = format!(
        "admin_group = \"{group}\"\n[[group]]\nname = \"{group}\"\nmode = \"require\"\nservices = [\"sshd\", \"sudo\"]\n[[group]]\nname = \"*\"\nmode = \"enroll\"\n",
        group = admins.name()
    );
    let world = World::start(&otpd_toml);
    let tree = Tree::good(&otpd_toml);

    let before = tree.doctor(world.bus.address(), &[]);
    assert_eq!(before.worst("otpd-reachable"), "ok", "{}", before.pretty());
    assert_eq!(
        before.worst("admin-lockout"),
        "error",
        "{}",
        before.pretty()
    );
    let lockout = before
        .messages("admin-lockout")
        .into_iter()
        .find(|m| m.starts_with(admin.name()))
        .unwrap_or_else(|| panic!("{} not named:\n{}", admin.name(), before.pretty()));
    assert!(lockout.contains("sshd and sudo"), "{lockout}");
    assert_eq!(before.exit_code(), Some(1));

    world.kronctl().enroll_confirmed_now(admin.name());
    let after = tree.doctor(world.bus.address(), &[]);
    after.assert_ok(&FILE_CHECKS);
    after.assert_ok(&["otpd-reachable", "admin-lockout"]);
    assert_ok_but_clock(&after);
    assert_eq!(after.exit_code(), Some(0), "{}", after.output.describe());
}

/// Every finding is ok except possibly `clock-sync`, which depends on this machine.
fn assert_ok_but_clock(report: &Report) {
    for finding in report.findings() {
        if finding["check"] != "clock-sync" {
            assert_eq!(finding["severity"], "ok", "{finding}\n{}", report.pretty());
        }
    }
}

/// On a live system doctor asks otpd on its socket, the way pam_kron connects: a serving otpd
/// is fine, a socket nobody answers on any more is an error.
#[test]
fn the_login_socket_is_asked_on_a_live_system() {
    let mut world = World::start(REQUIRE);
    let others: Vec<&str> = kronctl_checks()
        .into_iter()
        .filter(|check| *check != "otpd-socket")
        .collect();
    let live = |world: &World| {
        let mut command = Command::new(artifacts::kronctl());
        command
            .env_remove("KRON_BUS")
            .args(["--json", "--bus", world.bus.address(), "doctor", "--config"])
            .arg(world.otpd.config_path())
            .args(["--skip", &others.join(",")]);
        Report::of(process::run(&mut command))
    };
    let serving = live(&world);
    assert_eq!(serving.worst("otpd-socket"), "ok", "{}", serving.pretty());
    assert!(
        serving.messages("otpd-socket")[0].contains("answers on"),
        "{}",
        serving.pretty()
    );
    world.otpd.kill();
    let gone = live(&world);
    assert_eq!(gone.worst("otpd-socket"), "error", "{}", gone.pretty());
    assert_eq!(gone.exit_code(), Some(1));
}

/// Every check id kronctl knows.
fn kronctl_checks() -> Vec<&'static str> {
    let mut checks = FILE_CHECKS.to_vec();
    checks.extend(["otpd-reachable", "admin-lockout", "clock-sync"]);
    checks
}
