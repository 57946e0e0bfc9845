//! `kronctl doctor`: checks this machine for the mistakes that lock administrators out or
//! silently bypass the second factor, each with a one-line fix. See docs/kronctl.md.
//!
//! Every check family lives in its own file or folder and reports [`Finding`]s under stable
//! check ids (the list is [`crate::cli::DOCTOR_CHECKS`]). Files are read under `--root`, so an
//! image or a test tree can be checked like a live system; accounts and groups always come
//! from this machine's NSS, and otpd is asked on `--bus`. Policy questions are answered by the
//! library code otpd itself uses (`kron_common::config`, `kron_common::rules`), never by a
//! second implementation.
//!
//! - `mod.rs`: [`run`] and [`diagnose`], the order the checks run and report in
//! - `report.rs`: [`Finding`], [`Findings`] and the report as text or JSON
//! - `files.rs`: [`Root`] (system paths under `--root`), [`Location`], bounded reads
//! - `resolve.rs`: a path's symlinks resolved inside `--root`, never out to this machine
//! - `config.rs`: `otpd-config`, and the policy the other checks consult
//! - `trust.rs`: `file-trust`, otpd's files changeable by root alone (StrictModes)
//! - `dbus.rs`: `dbus-policy`, `otpd-reachable`
//! - `socket.rs`: `otpd-socket`, otpd's own socket where pam_kron reaches it
//! - `sshd/`: sshd's configuration as sshd reads it, and the `sshd-*` checks
//! - `pam/`: the PAM stacks of sshd and sudo as libpam runs them, and the `pam-*` checks
//! - `admins.rs`: `admin-lockout`
//! - `clock.rs`: `clock-sync`
#![forbid(unsafe_code)]

mod admins;
mod clock;
pub(crate) mod config;
mod dbus;
mod files;
pub(crate) mod pam;
mod report;
mod resolve;
mod socket;
pub(crate) mod sshd;
mod trust;

use crate::cli::{Cli, DoctorArgs};
use crate::error::Error;
use crate::output::print;
pub(crate) use files::Root;
pub(crate) use report::Findings;
use report::{Finding, Severity, render_human, render_json};

/// Runs `kronctl doctor`: prints the report and fails with [`Error::Unhealthy`] (exit 1) if
/// any finding is an error.
pub async fn run(cli: &Cli, args: &DoctorArgs) -> Result<(), Error> {
    let findings = diagnose(&cli.bus, args).await;
    let text = if cli.json {
        render_json(&findings)
    } else {
        render_human(&findings)
    };
    print(&text)?;
    match findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count()
    {
        0 => Ok(()),
        errors => Err(Error::Unhealthy { errors }),
    }
}

/// Runs every check that is not skipped, in the order the report shows them.
pub async fn diagnose(bus: &str, args: &DoctorArgs) -> Vec<Finding> {
    let root = Root::new(&args.root);
    let mut out = Findings::new(&args.skip);

    let policy = config::check(&root, args.config.as_deref(), &mut out);
    trust::check(&root, args.config.as_deref(), &policy, &mut out);

    dbus::check_policy_file(&root, &mut out);
    let otpd = if out.wants("otpd-reachable") || out.wants("admin-lockout") {
        dbus::reach(bus).await
    } else {
        Err("otpd was not asked (otpd-reachable was skipped)".to_owned())
    };
    dbus::report_reachable(&otpd, &mut out);
    socket::check(
        &root,
        &policy,
        args.root == std::path::Path::new("/"),
        &mut out,
    )
    .await;

    let sshd_stack = pam::Stack::load(&root, "sshd");
    let sudo_stack = pam::Stack::load(&root, "sudo");
    let sshd = sshd::check(&root, &policy, &sshd_stack, &mut out);
    pam::check(&sshd_stack, &policy, &mut out);
    pam::check(&sudo_stack, &policy, &mut out);

    if out.wants("admin-lockout") {
        let services = admins::Services {
            sshd: sshd.installed,
            root_over_ssh: sshd.root_may_log_in,
            sudo: sudo_stack.exists(),
        };
        admins::check(&policy, &services, otpd.as_ref(), &mut out).await;
    }

    if out.wants("clock-sync") {
        clock::check(&mut out);
    }
    out.into_vec()
}
