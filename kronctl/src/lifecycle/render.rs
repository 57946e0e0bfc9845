//! Output of the day-2 commands, as text for people or one line of JSON for scripts. Pure
//! functions; texts that came from otpd or from files being imported go through
//! [`one_line`] in text output.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use kron_proto::ImportResult;
use serde::Serialize;

use crate::render::{group_secret, json_line, one_line};

// -------------------------------------------------------------------------- recovery codes

pub fn recovery_human(user: Option<&str>, codes: &[String]) -> String {
    let whose = match user {
        Some(user) => format!(" for {}", one_line(user)),
        None => String::new(),
    };
    let mut out = format!("New recovery codes{whose}; the previous set no longer works.\n\n");
    for code in codes {
        out.push_str(&format!("    {}\n", one_line(code)));
    }
    out.push_str(
        "\nEach code works once, typed at the prompt for the verification code, when the phone \
         is lost or broken.\nKeep them somewhere safe, away from the phone (printed, or in a \
         password manager): they are not shown again.\n",
    );
    out
}

#[derive(Serialize)]
struct RecoveryJson<'a> {
    /// `null` for your own set.
    user: Option<&'a str>,
    codes: &'a [String],
}

pub fn recovery_json(user: Option<&str>, codes: &[String]) -> String {
    json_line(&RecoveryJson { user, codes })
}

// ---------------------------------------------------------------------------------- export

pub fn export_human(file: &Path, user: Option<&str>, bytes: usize) -> String {
    let what = match user {
        Some(user) => format!("the token of {}", one_line(user)),
        None => "every token".to_owned(),
    };
    let file = one_line(&file.display().to_string());
    format!(
        "Wrote {what} to {file} ({bytes} bytes, age format, encrypted with the passphrase; \
         mode 0600).\nRestore it with `kronctl import {file}`; `age -d {file}` opens it too.\n"
    )
}

#[derive(Serialize)]
struct ExportJson {
    file: String,
    /// `null` when every token was exported.
    user: Option<String>,
    bytes: usize,
}

pub fn export_json(file: &Path, user: Option<&str>, bytes: usize) -> String {
    json_line(&ExportJson {
        file: file.display().to_string(),
        user: user.map(str::to_owned),
        bytes,
    })
}

// ---------------------------------------------------------------------------------- import

/// One user's line of an import report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Empty when no user name could be read from the source.
    pub user: String,
    /// `imported`, `replaced` or `skipped`.
    pub outcome: String,
    /// Why it was skipped; empty otherwise.
    pub reason: String,
    /// File (and line) of a migrated token; `None` for a kron export.
    pub source: Option<String>,
    /// Remarks on what was not carried over.
    pub notes: Vec<String>,
}

impl Row {
    pub fn from_otpd(result: ImportResult) -> Row {
        Row {
            user: result.user,
            outcome: result.outcome,
            reason: result.reason,
            source: None,
            notes: Vec::new(),
        }
    }
}

/// An import report written as the rows come, so a million users never sit in memory: the
/// human text (a line per user, a summary line) or one line of JSON (`users` first, the
/// counts after them).
pub struct ImportReport<W: Write> {
    out: W,
    json: bool,
    dry_run: bool,
    /// imported, replaced, skipped.
    counts: [usize; 3],
    rows: usize,
}

#[derive(Serialize)]
struct RowJson<'a> {
    user: Option<&'a str>,
    outcome: &'a str,
    reason: Option<&'a str>,
    source: Option<&'a str>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct CountsJson {
    imported: usize,
    replaced: usize,
    skipped: usize,
}

impl<W: Write> ImportReport<W> {
    pub fn start(mut out: W, json: bool, dry_run: bool) -> std::io::Result<Self> {
        if json {
            write!(out, "{{\"dry_run\":{dry_run},\"users\":[")?;
        }
        Ok(ImportReport {
            out,
            json,
            dry_run,
            counts: [0; 3],
            rows: 0,
        })
    }

    pub fn row(&mut self, row: &Row) -> std::io::Result<()> {
        match row.outcome.as_str() {
            "imported" => self.counts[0] += 1,
            "replaced" => self.counts[1] += 1,
            _ => self.counts[2] += 1,
        }
        self.rows += 1;
        if self.json {
            let entry = RowJson {
                user: Some(row.user.as_str()).filter(|u| !u.is_empty()),
                outcome: &row.outcome,
                reason: Some(row.reason.as_str()).filter(|r| !r.is_empty()),
                source: row.source.as_deref(),
                notes: &row.notes,
            };
            let comma = if self.rows == 1 { "" } else { "," };
            let text = serde_json::to_string(&entry).expect("plain data serializes");
            return write!(self.out, "{comma}{text}");
        }
        let user = match row.user.as_str() {
            "" => "(unknown user)".to_owned(),
            user => one_line(user),
        };
        let outcome = match (self.dry_run, row.outcome.as_str()) {
            (true, "imported") => "would be imported".to_owned(),
            (true, "replaced") => "would be replaced".to_owned(),
            (_, outcome) => one_line(outcome),
        };
        let source = match &row.source {
            Some(source) => format!(" ({})", one_line(source)),
            None => String::new(),
        };
        let reason = match row.reason.as_str() {
            "" => String::new(),
            reason => format!(": {}", one_line(reason)),
        };
        writeln!(self.out, "{user}: {outcome}{source}{reason}")?;
        for note in &row.notes {
            writeln!(self.out, "    note: {}", one_line(note))?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The counts: the summary line, or the end of the JSON line.
    pub fn finish(mut self) -> std::io::Result<W> {
        let [imported, replaced, skipped] = self.counts;
        if self.json {
            let counts = serde_json::to_string(&CountsJson {
                imported,
                replaced,
                skipped,
            })
            .expect("plain data serializes");
            // `{"imported":..}` without its opening brace continues the object.
            writeln!(self.out, "],{}", &counts[1..])?;
        } else if self.rows == 0 {
            writeln!(self.out, "No tokens found to import.")?;
        } else if self.dry_run {
            writeln!(
                self.out,
                "Dry run, nothing was written: {imported} would be imported, {replaced} \
                 replaced, {skipped} skipped."
            )?;
        } else {
            writeln!(
                self.out,
                "{imported} imported, {replaced} replaced, {skipped} skipped."
            )?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

// ---------------------------------------------------------------------------- export-token

/// The `secret` parameter of an otpauth URI.
fn uri_secret(uri: &str) -> Option<&str> {
    let (_, query) = uri.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))
}

pub fn export_token_human(uri: &str, qr: Option<&str>, png: Option<&Path>) -> String {
    let mut out = String::from("Your token, to add it to another authenticator app.\n\n");
    match qr {
        Some(qr) => {
            out.push_str("Scan this QR code:\n\n");
            out.push_str(qr);
            if !qr.ends_with('\n') {
                out.push('\n');
            }
            out.push('\n');
        }
        None => out.push_str("The QR code cannot be shown here.\n"),
    }
    if let Some(secret) = uri_secret(uri) {
        out.push_str(&format!(
            "Or enter this secret by hand (time-based):\n    {}\n",
            one_line(&group_secret(secret))
        ));
    }
    out.push_str(&format!("otpauth URI:\n    {}\n", one_line(uri)));
    if let Some(png) = png {
        out.push_str(&format!(
            "QR code image: {} (mode 0600; it holds the secret, delete it once scanned)\n",
            one_line(&png.display().to_string())
        ));
    }
    out.push_str(
        "\nAnyone who sees this can make your codes: clear the screen once the app has it.\n",
    );
    out
}

#[derive(Serialize)]
struct ExportTokenJson<'a> {
    uri: &'a str,
    png: Option<String>,
}

pub fn export_token_json(uri: &str, png: Option<&Path>) -> String {
    json_line(&ExportTokenJson {
        uri,
        png: png.map(|path| path.display().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(line: &str) -> Value {
        assert!(
            line.ends_with('\n') && line.trim_end().lines().count() == 1,
            "{line:?}"
        );
        serde_json::from_str(line).unwrap()
    }

    fn report(rows: &[Row], json: bool, dry_run: bool) -> String {
        let mut report = ImportReport::start(Vec::new(), json, dry_run).unwrap();
        for row in rows {
            report.row(row).unwrap();
        }
        String::from_utf8(report.finish().unwrap()).unwrap()
    }

    fn import_human(rows: &[Row], dry_run: bool) -> String {
        report(rows, false, dry_run)
    }

    fn import_json(rows: &[Row], dry_run: bool) -> String {
        report(rows, true, dry_run)
    }

    fn row(user: &str, outcome: &str, reason: &str) -> Row {
        Row {
            user: user.into(),
            outcome: outcome.into(),
            reason: reason.into(),
            source: Some(format!("/home/{user}/.google_authenticator")),
            notes: Vec::new(),
        }
    }

    #[test]
    fn recovery_codes_are_listed_once_each() {
        let codes = vec!["12345-67890".to_string(), "11111-22222".to_string()];
        let text = recovery_human(Some("alice"), &codes);
        assert!(text.starts_with("New recovery codes for alice; the previous set no longer works.\n\n    12345-67890\n    11111-22222\n"), "{text}");
        assert!(text.contains("not shown again"));
        assert!(recovery_human(None, &codes).starts_with("New recovery codes; "));
        assert_eq!(
            parse(&recovery_json(None, &codes)),
            json!({"user": null, "codes": ["12345-67890", "11111-22222"]})
        );
    }

    #[test]
    fn export_says_where_and_how_to_open_it() {
        let text = export_human(Path::new("/root/b.age"), None, 1234);
        assert!(
            text.starts_with("Wrote every token to /root/b.age (1234 bytes"),
            "{text}"
        );
        assert!(text.contains("kronctl import /root/b.age") && text.contains("age -d /root/b.age"));
        assert!(
            export_human(Path::new("f"), Some("al"), 1).starts_with("Wrote the token of al to f")
        );
        assert_eq!(
            parse(&export_json(Path::new("/root/b.age"), Some("al"), 9)),
            json!({"file": "/root/b.age", "user": "al", "bytes": 9})
        );
    }

    #[test]
    fn import_report_in_text() {
        let mut hotp = row("bob", "skipped", "unsupported: counter-based (HOTP) token");
        hotp.notes.push("WINDOW_SIZE 17 not carried over".into());
        let mut unnamed = row("", "skipped", "not a regular file");
        unnamed.source = Some("/x\x1b[2J".into());
        let rows = [
            row("alice", "imported", ""),
            hotp,
            row("carol", "replaced", ""),
            unnamed,
        ];
        assert_eq!(
            import_human(&rows, false),
            "alice: imported (/home/alice/.google_authenticator)\n\
             bob: skipped (/home/bob/.google_authenticator): unsupported: counter-based (HOTP) token\n\
             \x20   note: WINDOW_SIZE 17 not carried over\n\
             carol: replaced (/home/carol/.google_authenticator)\n\
             (unknown user): skipped (/x [2J): not a regular file\n\
             1 imported, 1 replaced, 2 skipped.\n"
        );
        let dry = import_human(&rows[..1], true);
        assert_eq!(
            dry,
            "alice: would be imported (/home/alice/.google_authenticator)\n\
             Dry run, nothing was written: 1 would be imported, 0 replaced, 0 skipped.\n"
        );
        assert_eq!(import_human(&[], false), "No tokens found to import.\n");
        let backup = Row::from_otpd(ImportResult {
            user: "dave".into(),
            outcome: "skipped".into(),
            reason: "already enrolled (use --replace to overwrite)".into(),
        });
        assert_eq!(
            import_human(&[backup], false),
            "dave: skipped: already enrolled (use --replace to overwrite)\n0 imported, 0 replaced, 1 skipped.\n"
        );
    }

    #[test]
    fn import_report_in_json() {
        let mut hotp = row("bob", "skipped", "unsupported");
        hotp.notes.push("n".into());
        let value = parse(&import_json(
            &[row("alice", "imported", ""), hotp, row("", "skipped", "x")],
            true,
        ));
        assert_eq!(
            value,
            json!({
                "dry_run": true, "imported": 1, "replaced": 0, "skipped": 2,
                "users": [
                    {"user": "alice", "outcome": "imported", "reason": null,
                     "source": "/home/alice/.google_authenticator", "notes": []},
                    {"user": "bob", "outcome": "skipped", "reason": "unsupported",
                     "source": "/home/bob/.google_authenticator", "notes": ["n"]},
                    {"user": null, "outcome": "skipped", "reason": "x",
                     "source": "/home//.google_authenticator", "notes": []},
                ]
            })
        );
    }

    #[test]
    fn export_token_shows_qr_secret_and_uri() {
        let uri = "otpauth://totp/Kron:alice@host?secret=JBSWY3DPEHPK3PXP&issuer=Kron";
        let text = export_token_human(uri, Some("QR"), Some(Path::new("/tmp/t.png")));
        assert!(text.contains("QR\n"));
        assert!(text.contains("    JBSW Y3DP EHPK 3PXP\n"));
        assert!(text.contains(&format!("    {uri}\n")));
        assert!(text.contains("/tmp/t.png (mode 0600"));
        assert!(export_token_human(uri, None, None).contains("cannot be shown"));
        assert_eq!(
            uri_secret("otpauth://totp/x?issuer=K&secret=AB&digits=6"),
            Some("AB")
        );
        assert_eq!(uri_secret("otpauth://totp/x"), None);
        assert_eq!(
            parse(&export_token_json(uri, None)),
            json!({"uri": uri, "png": null})
        );
    }
}
