//! Secrets stay in memory: otpd, run as its unit runs it (root without capabilities), is not
//! dumpable, so no core dump holds its secrets and a process of the same uid without
//! CAP_SYS_PTRACE cannot read its memory or environment, while it can read those of an
//! ordinary process started the same way.

use std::process::{Command, Stdio};

use kron_tests::otpd::NO_CAPABILITIES;
use kron_tests::{Bus, Otpd, process};

/// Reads `/proc/PID/environ` as root without capabilities.
fn read_environ(pid: u32) -> process::Output {
    process::run(
        Command::new("setpriv")
            .args(NO_CAPABILITIES)
            .arg("--")
            .arg("cat")
            .arg(format!("/proc/{pid}/environ")),
    )
}

#[test]
fn otpd_is_not_dumpable() {
    let bus = Bus::start();
    let otpd = Otpd::start_without_capabilities(&bus, "");

    // The control: an ordinary process of the same uid and capabilities can be read.
    let mut ordinary = Command::new("setpriv")
        .args(NO_CAPABILITIES)
        .args(["--", "sleep", "300"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep");
    // setpriv still holds its capabilities until it has exec'd sleep.
    let comm = format!("/proc/{}/comm", ordinary.id());
    process::wait_for("setpriv to exec sleep", process::COMMAND_TIMEOUT, || {
        std::fs::read_to_string(&comm)
            .ok()
            .filter(|name| name.trim() == "sleep")
    });
    let readable = read_environ(ordinary.id());
    let _ = ordinary.kill();
    let _ = ordinary.wait();
    readable.assert_success("reading a dumpable process's environment");

    let refused = read_environ(otpd.pid());
    refused.assert_failure("reading otpd's environment");
    assert!(
        refused.stderr.contains("Permission denied"),
        "{}",
        refused.describe()
    );
}
