//! Trust no file (design invariant 11, like sshd's StrictModes), with real files and a real
//! test user: otpd refuses to start, and `otpd --check-config` and `kronctl doctor` report,
//! naming the path and the fix, when its config, state directory, key or a secret file, or a
//! directory on the way to one (through a symlink too), could be changed by someone but root.

use std::path::Path;
use std::process::Command;

use kron_tests::process::{self, Output};
use kron_tests::{TestUser, artifacts, otpd, scratch};

fn chown(path: &Path, user: &TestUser) {
    std::os::unix::fs::chown(path, Some(user.uid()), None).expect("chown");
}

/// `otpd --config FILE` started for real: it must exit at once.
fn start_otpd(config: &Path) -> Output {
    process::run(
        Command::new(artifacts::otpd())
            .arg("--config")
            .arg(config)
            .args(["--bus", "unix:path=/nonexistent/kron-trust-test/bus"]),
    )
}

/// `kronctl doctor --root ROOT --json --skip ...`, only the file checks.
fn doctor(root: &Path) -> serde_json::Value {
    let output = process::run(
        Command::new(artifacts::kronctl())
            .env_remove("KRON_BUS")
            .arg("doctor")
            .arg("--root")
            .arg(root)
            .args([
                "--bus",
                "unix:path=/nonexistent/kron-trust-test/bus",
                "--json",
            ])
            .args(["--skip", "otpd-reachable,admin-lockout,clock-sync"]),
    );
    serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {}", output.describe()))
}

/// The error findings of `file-trust`, as "message / fix".
fn trust_errors(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["check"] == "file-trust" && f["severity"] == "error")
        .map(|f| format!("{} / {}", f["message"], f["fix"]))
        .collect()
}

/// Runs otpd (check-config and a real start) on `config` and asserts both refuse, naming
/// `culprit` and `fix`.
fn assert_refused(config: &Path, culprit: &Path, fix: &str) {
    for (what, output) in [
        ("--check-config", otpd::check_config(config)),
        ("start", start_otpd(config)),
    ] {
        assert_eq!(output.code(), Some(1), "{what}: {}", output.describe());
        let culprit = culprit.display().to_string();
        assert!(
            output.stderr.contains(&culprit) && output.stderr.contains(fix),
            "{what} does not name {culprit} and `{fix}`: {}",
            output.describe()
        );
    }
}

#[test]
fn otpd_and_doctor_refuse_files_others_can_change() {
    let user = TestUser::new();
    let root = scratch::public_dir("kron-trust.");
    let etc = root.path().join("etc/kron");
    let state = root.path().join("var/lib/kron");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    scratch::set_mode(&state, 0o700);
    let config = etc.join("otpd.toml");
    // The state directory as a system path: doctor reads it under --root, otpd as written.
    scratch::write_file(
        &config,
        &format!("state_dir = \"{}\"\n", state.display()),
        0o644,
    );
    otpd::check_config(&config).assert_success("check-config of a trusted tree");

    // The config owned by a user.
    chown(&config, &user);
    assert_refused(&config, &config, "chown root:");
    std::os::unix::fs::chown(&config, Some(0), None).unwrap();

    // The config writable by its group.
    scratch::set_mode(&config, 0o664);
    assert_refused(&config, &config, "chmod go-w");
    scratch::set_mode(&config, 0o644);

    // A directory on the way writable by others.
    scratch::set_mode(&etc, 0o777);
    assert_refused(&config, &etc, "chmod go-w");
    scratch::set_mode(&etc, 0o755);

    // The state directory owned by the user.
    chown(&state, &user);
    assert_refused(&config, &state, "chown root:");
    std::os::unix::fs::chown(&state, Some(0), None).unwrap();

    // The config reached through a symlink into a directory the user owns.
    let theirs = root.path().join("home/user");
    std::fs::create_dir_all(&theirs).unwrap();
    chown(&theirs, &user);
    let moved = theirs.join("otpd.toml");
    std::fs::copy(&config, &moved).unwrap();
    let link = etc.join("linked.toml");
    std::os::unix::fs::symlink(&moved, &link).unwrap();
    assert_refused(&link, &theirs, "chown root:");

    // A secret file others can read.
    let secret = etc.join("sms-secret");
    scratch::write_file(&secret, "s3cret\n", 0o640);
    scratch::write_file(
        &config,
        &format!(
            "state_dir = \"{}\"\n[sms]\nurl = \"https://gw.example.com/send?key={{secret}}\"\n\
             body = '{{\"to\": \"{{phone}}\", \"text\": \"{{message}}\"}}'\n\
             secret_file = \"{}\"\n",
            state.display(),
            secret.display()
        ),
        0o644,
    );
    assert_refused(&config, &secret, "chmod 600");

    // kronctl doctor reports the same, with the same fix; it reads the config's paths under
    // --root, so the config names them as the machine would.
    scratch::write_file(
        &config,
        "state_dir = \"/var/lib/kron\"\n[sms]\nurl = \"https://gw.example.com/send?key={secret}\"\n\
         body = '{\"to\": \"{phone}\", \"text\": \"{message}\"}'\n\
         secret_file = \"/etc/kron/sms-secret\"\n",
        0o644,
    );
    let report = doctor(root.path());
    let errors = trust_errors(&report);
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&secret.display().to_string()) && e.contains("chmod 600")),
        "{report}"
    );
    scratch::set_mode(&secret, 0o600);
    chown(&state, &user);
    let errors = trust_errors(&doctor(root.path()));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&state.display().to_string()),
        "{errors:?}"
    );
    std::os::unix::fs::chown(&state, Some(0), None).unwrap();
    assert!(trust_errors(&doctor(root.path())).is_empty());
}
