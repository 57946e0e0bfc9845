//! `kronctl doctor`: checks this machine for the mistakes that lock administrators out or
//! silently bypass the second factor, each with a one-line fix. See docs/kronctl.md.
//!
//! Every check family lives in its own file and reports [`Finding`]s under stable check ids
//! (the list is [`crate::cli::DOCTOR_CHECKS`]). Files are read under `--root`, so an image or
//! a test tree can be checked like a live system; accounts and groups always come from this
//! machine's NSS, and otpd is asked on `--bus`. Policy questions are answered by otpd's own
//! library code (`otpd::config`, `otpd::policy`), never by a second implementation.

mod admins;
mod clock;
pub(crate) mod config;
mod dbus;
mod files;
pub(crate) mod pam;
pub(crate) mod sshd;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{Cli, DOCTOR_CHECKS, DoctorArgs};
use crate::error::Error;
use crate::render::one_line;

/// How bad a finding is. `Ok` also carries "not applicable here" notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

/// One result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable kebab-case id of the check, one of [`DOCTOR_CHECKS`].
    pub check: &'static str,
    pub severity: Severity,
    /// What was found, in one line.
    pub message: String,
    /// What to do about it, in one line; `None` when nothing needs doing.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Finding {
            check,
            severity: Severity::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warning(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            check,
            severity: Severity::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn error(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check,
            severity: Severity::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The findings so far; checks the user asked to skip are neither run nor reported.
#[derive(Debug)]
pub struct Findings {
    skip: Vec<String>,
    list: Vec<Finding>,
}

impl Findings {
    pub fn new(skip: &[String]) -> Self {
        Findings {
            skip: skip.to_vec(),
            list: Vec::new(),
        }
    }

    /// Whether `check` should run at all.
    pub fn wants(&self, check: &str) -> bool {
        !self.skip.iter().any(|skipped| skipped == check)
    }

    pub fn push(&mut self, finding: Finding) {
        debug_assert!(
            DOCTOR_CHECKS.contains(&finding.check),
            "unknown check id {}",
            finding.check
        );
        if self.wants(finding.check) {
            self.list.push(finding);
        }
    }

    pub fn into_vec(self) -> Vec<Finding> {
        self.list
    }
}

/// The directory system paths are read under (`--root`, `/` on a live system).
#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(dir: &Path) -> Self {
        Root(dir.to_path_buf())
    }

    /// Where the system path `path` (absolute, e.g. `/etc/ssh/sshd_config`) is on disk.
    pub fn path(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }

    pub fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }
}

/// A place in a configuration file, shown as `file:line` with the system path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Runs `kronctl doctor`: prints the report and fails with [`Error::Unhealthy`] (exit 1) if
/// any finding is an error.
pub async fn run(cli: &Cli, args: &DoctorArgs) -> Result<(), Error> {
    let findings = diagnose(&cli.bus, args).await;
    let text = if cli.json {
        render_json(&findings)
    } else {
        render_human(&findings)
    };
    crate::commands::print(&text)?;
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
    files::check(&root, args.config.as_deref(), &policy, &mut out);

    dbus::check_policy_file(&root, &mut out);
    let otpd = if out.wants("otpd-reachable") || out.wants("admin-lockout") {
        dbus::reach(bus).await
    } else {
        Err("otpd was not asked (otpd-reachable was skipped)".to_owned())
    };
    dbus::report_reachable(&otpd, &mut out);

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

#[derive(Serialize)]
struct ReportJson<'a> {
    ok: bool,
    findings: &'a [Finding],
}

/// `{"ok": bool, "findings": [{"check", "severity", "message", "fix"}]}` on one line.
pub fn render_json(findings: &[Finding]) -> String {
    let report = ReportJson {
        ok: !findings.iter().any(|f| f.severity == Severity::Error),
        findings,
    };
    let mut line = serde_json::to_string(&report).expect("plain data serializes");
    line.push('\n');
    line
}

/// One line per finding (`✓`, `!`, `✗`), the fix indented under warnings and errors, and a
/// summary line.
pub fn render_human(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for finding in findings {
        let mark = match finding.severity {
            Severity::Ok => '✓',
            Severity::Warning => '!',
            Severity::Error => '✗',
        };
        out.push_str(&format!(
            "{mark} {:<width$}  {}\n",
            finding.check,
            one_line(&finding.message)
        ));
        if let Some(fix) = &finding.fix {
            out.push_str(&format!("  {:<width$}  fix: {}\n", "", one_line(fix)));
        }
    }
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    out.push_str(&match (errors, warnings) {
        (0, 0) => "\nNo problems found.\n".to_owned(),
        (0, w) => format!("\nNo errors, {}.\n", plural(w, "warning")),
        (e, w) => format!(
            "\n{}, {}: fix the errors above.\n",
            plural(e, "error"),
            plural(w, "warning")
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sample() -> Vec<Finding> {
        vec![
            Finding::ok("sshd-usepam", "UsePAM yes (/etc/ssh/sshd_config:3)"),
            Finding::warning("clock-sync", "not synchronised", "enable NTP"),
            Finding::error("pam-sudo", "pam_kron.so missing\n\x1b[31m", "add it"),
        ]
    }

    #[test]
    fn json_report_shape() {
        let line = render_json(&sample());
        assert!(line.ends_with('\n') && line.trim_end().lines().count() == 1);
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ok"], json!(false));
        assert_eq!(
            value["findings"][0],
            json!({"check": "sshd-usepam", "severity": "ok",
                   "message": "UsePAM yes (/etc/ssh/sshd_config:3)", "fix": null})
        );
        assert_eq!(value["findings"][1]["severity"], json!("warning"));
        assert_eq!(value["findings"][2]["fix"], json!("add it"));
        let good: Value = serde_json::from_str(&render_json(&sample()[..2])).unwrap();
        assert_eq!(good["ok"], json!(true));
    }

    #[test]
    fn human_report_marks_each_line_and_shows_fixes() {
        let text = render_human(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "✓ sshd-usepam  UsePAM yes (/etc/ssh/sshd_config:3)"
        );
        assert_eq!(lines[1], "! clock-sync   not synchronised");
        assert_eq!(lines[2], "               fix: enable NTP");
        assert!(lines[3].starts_with("✗ pam-sudo     pam_kron.so missing"));
        assert!(!text.contains('\x1b'));
        assert!(
            text.ends_with("1 error, 1 warning: fix the errors above.\n"),
            "{text}"
        );
        assert!(render_human(&sample()[..1]).ends_with("No problems found.\n"));
    }

    #[test]
    fn skipped_checks_are_not_reported() {
        let mut out = Findings::new(&["clock-sync".to_owned()]);
        assert!(!out.wants("clock-sync"));
        out.push(Finding::ok("clock-sync", "x"));
        out.push(Finding::ok("pam-sudo", "y"));
        let list = out.into_vec();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].check, "pam-sudo");
    }

    #[test]
    fn root_prefixes_system_paths() {
        let root = Root::new(Path::new("/tmp/tree"));
        assert_eq!(
            root.path("/etc/ssh/sshd_config"),
            PathBuf::from("/tmp/tree/etc/ssh/sshd_config")
        );
        assert_eq!(
            Root::new(Path::new("/")).path("/etc/pam.d/sudo"),
            PathBuf::from("/etc/pam.d/sudo")
        );
    }
}
