//! What doctor reports: a [`Finding`] per check result, the [`Findings`] gathered so far, and
//! the report printed from them, as text or one line of JSON.
#![forbid(unsafe_code)]

use serde::Serialize;

use crate::cli::DOCTOR_CHECKS;
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

    /// Adds `finding` unless its check is skipped, with no control character left in it.
    pub fn push(&mut self, mut finding: Finding) {
        debug_assert!(
            DOCTOR_CHECKS.contains(&finding.check),
            "unknown check id {}",
            finding.check
        );
        if self.wants(finding.check) {
            // Findings quote what the files checked say (a module, an included file, a word
            // libpam does not know), and an image under --root is anyone's: its terminal
            // escapes must reach neither the text report nor a JSON reader that prints the
            // strings. One place, so no check can forget.
            finding.message = without_controls(&finding.message);
            finding.fix = finding.fix.as_deref().map(without_controls);
            self.list.push(finding);
        }
    }

    pub fn into_vec(self) -> Vec<Finding> {
        self.list
    }
}

/// `text` with line breaks and tabs as spaces and every other control character (ESC, the C1
/// CSI, DEL, ...) written as its escape, `\u{1b}`, so it is shown and never obeyed.
fn without_controls(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_control() && c.is_whitespace() => shown.push(' '),
            c if c.is_control() => shown.extend(c.escape_debug()),
            c => shown.push(c),
        }
    }
    shown
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
    fn findings_hold_no_control_characters() {
        let mut out = Findings::new(&[]);
        out.push(Finding::warning(
            "pam-sshd",
            "cannot read /etc/pam.d/\x1b]0;owned\x07x\u{9b}2J\x7f:\tgone\r\n",
            "remove \x1b[31m",
        ));
        let list = out.into_vec();
        assert_eq!(
            list[0].message,
            "cannot read /etc/pam.d/\\u{1b}]0;owned\\u{7}x\\u{9b}2J\\u{7f}: gone  "
        );
        assert_eq!(list[0].fix.as_deref(), Some("remove \\u{1b}[31m"));
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
}
