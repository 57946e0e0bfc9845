//! `clock-sync`: the system clock is kept synchronised.
//!
//! A TOTP code is valid for its 30-second step (and `skew` steps either side), computed from
//! the server's clock: a clock that drifts a minute refuses every right code. The kernel knows
//! whether something (chrony, ntpd, systemd-timesyncd) disciplines the clock: `ntp_adjtime`
//! reports `STA_UNSYNC` (or state `TIME_ERROR`) when nothing has for a while. Only when that
//! call fails is `timedatectl` asked instead. This is the machine's clock even with `--root`.
//!
//! An unsynchronised clock is a warning, not an error: the codes work as long as the clock
//! happens to be right, and doctor cannot measure by how much it is off.
#![forbid(unsafe_code)]

use std::process::Command;

use super::report::{Finding, Findings};
use crate::sys::ntp::{KernelClock, kernel_clock};

const CHECK: &str = "clock-sync";
const FIX: &str = "enable time synchronisation: `timedatectl set-ntp true`, or install chrony or systemd-timesyncd";
/// Absolute, so nothing from PATH decides what runs.
const TIMEDATECTL: &str = "/usr/bin/timedatectl";

/// `timedatectl show -p NTPSynchronized --value`: `Some(true|false)`, or `None` if unknown.
fn timedatectl() -> Option<bool> {
    let output = Command::new(TIMEDATECTL)
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .env_clear()
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn finding(
    kernel: std::io::Result<KernelClock>,
    fallback: impl FnOnce() -> Option<bool>,
) -> Finding {
    match kernel {
        Ok(clock) if clock.synchronised => Finding::ok(
            CHECK,
            format!(
                "the kernel reports the clock synchronised (maximum error {} ms)",
                clock.max_error_us / 1000
            ),
        ),
        Ok(_) => Finding::warning(
            CHECK,
            "the kernel reports the clock is not synchronised (STA_UNSYNC): if it drifts more than a code step (30 s), right codes are refused",
            FIX,
        ),
        Err(error) => match fallback() {
            Some(true) => Finding::ok(CHECK, "timedatectl reports the clock synchronised"),
            Some(false) => Finding::warning(
                CHECK,
                "timedatectl reports the clock is not synchronised: if it drifts more than a code step (30 s), right codes are refused",
                FIX,
            ),
            None => Finding::warning(
                CHECK,
                format!(
                    "cannot tell whether the clock is synchronised (ntp_adjtime: {error}; timedatectl gave no answer)"
                ),
                "check with `timedatectl` or `chronyc tracking` that the clock is synchronised",
            ),
        },
    }
}

pub fn check(out: &mut Findings) {
    out.push(finding(kernel_clock(), timedatectl));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Severity;

    #[test]
    fn the_kernel_answers_a_read_only_query() {
        let clock = kernel_clock().expect("ntp_adjtime with modes 0 needs no privilege");
        assert!(clock.max_error_us >= 0);
    }

    #[test]
    fn verdicts() {
        let synced = Ok(KernelClock {
            synchronised: true,
            max_error_us: 250_000,
        });
        let ok = finding(synced, || panic!("not asked"));
        assert_eq!(ok.severity, Severity::Ok);
        assert!(ok.message.contains("250 ms"));
        let unsynced = Ok(KernelClock {
            synchronised: false,
            max_error_us: 16_000_000,
        });
        assert_eq!(finding(unsynced, || None).severity, Severity::Warning);
        let failed = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(finding(failed(), || Some(true)).severity, Severity::Ok);
        assert_eq!(
            finding(failed(), || Some(false)).severity,
            Severity::Warning
        );
        let unknown = finding(failed(), || None);
        assert_eq!(unknown.severity, Severity::Warning);
        assert!(unknown.message.contains("cannot tell"));
    }
}
