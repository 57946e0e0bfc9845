//! What a login showed the person: parsing pam-host's transcript.
//!
//! pam-host writes one line per event: `INFO: text`, `ERROR: text`, `PROMPT: text` (echo off),
//! `PROMPT_ECHO: text`, further lines of a multi-line message as `| text`, then
//! `RESULT: PAM_NAME` for every login, and for runs of several logins `TASKS: a b c` and
//! `FDS: a b c` (before the first login, after the first, after the last).

/// One thing the conversation function was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Info(String),
    Error(String),
    Prompt { text: String, echo: bool },
}

impl Shown {
    /// The text, whatever the kind.
    pub fn text(&self) -> &str {
        match self {
            Shown::Info(text) | Shown::Error(text) | Shown::Prompt { text, .. } => text,
        }
    }
}

/// Counts of the host's threads or fds: before any login, after the first, after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub baseline: u64,
    pub after_first: u64,
    pub after_all: u64,
}

/// Everything one pam-host run printed, parsed.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub shown: Vec<Shown>,
    pub results: Vec<String>,
    pub tasks: Option<Counts>,
    pub fds: Option<Counts>,
    /// Raw stdout and stderr, for assertion messages.
    pub raw: String,
}

impl Transcript {
    /// Parses pam-host's stdout (`raw` keeps it and `stderr` for messages).
    pub fn parse(stdout: &str, stderr: &str) -> Transcript {
        let mut transcript = Transcript {
            raw: format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}"),
            ..Default::default()
        };
        for line in stdout.lines() {
            if let Some(rest) = line.strip_prefix("| ") {
                transcript.continue_last(rest);
            } else if line == "|" {
                transcript.continue_last("");
            } else if let Some((key, value)) = line.split_once(": ") {
                transcript.add(key, value);
            }
        }
        transcript
    }

    fn continue_last(&mut self, text: &str) {
        if let Some(last) = self.shown.last_mut() {
            let (Shown::Info(body) | Shown::Error(body) | Shown::Prompt { text: body, .. }) = last;
            body.push('\n');
            body.push_str(text);
        }
    }

    fn add(&mut self, key: &str, value: &str) {
        match key {
            "INFO" => self.shown.push(Shown::Info(value.to_string())),
            "ERROR" => self.shown.push(Shown::Error(value.to_string())),
            "PROMPT" => self.shown.push(Shown::Prompt {
                text: value.to_string(),
                echo: false,
            }),
            "PROMPT_ECHO" => self.shown.push(Shown::Prompt {
                text: value.to_string(),
                echo: true,
            }),
            "RESULT" => self.results.push(value.to_string()),
            "TASKS" => self.tasks = parse_counts(value),
            "FDS" => self.fds = parse_counts(value),
            _ => {}
        }
    }

    /// The result of the only (or last) login.
    pub fn result(&self) -> &str {
        self.results
            .last()
            .map(String::as_str)
            .unwrap_or("<no result>")
    }

    /// Panics with the whole transcript unless the last login ended with `expected`.
    pub fn assert_result(&self, expected: &str) -> &Self {
        assert_eq!(
            self.result(),
            expected,
            "unexpected PAM result; transcript:\n{}",
            self.raw
        );
        self
    }

    /// True when pam_kron returned PAM_IGNORE in a probe stack (the skip marker was shown).
    pub fn skipped(&self) -> bool {
        self.mentions(crate::pam::SKIP_MARKER)
    }

    /// Probe stack: otpd accepted the second factor (PAM_SUCCESS, not by skipping).
    pub fn assert_accepted(&self) -> &Self {
        self.assert_result("PAM_SUCCESS");
        assert!(
            !self.skipped(),
            "kron skipped instead of accepting:\n{}",
            self.raw
        );
        self
    }

    /// Probe stack: pam_kron returned PAM_IGNORE and the rest of the stack decided.
    pub fn assert_skipped(&self) -> &Self {
        self.assert_result("PAM_SUCCESS");
        assert!(self.skipped(), "kron did not skip:\n{}", self.raw);
        self
    }

    /// otpd denied the login (PAM_AUTH_ERR).
    pub fn assert_denied(&self) -> &Self {
        self.assert_result("PAM_AUTH_ERR")
    }

    /// Panics unless the last login was refused for too many failed attempts (PAM_MAXTRIES).
    pub fn assert_throttled(&self) -> &Self {
        self.assert_result("PAM_MAXTRIES")
    }

    /// Panics unless the last login was refused, by a wrong or used code or by the throttle.
    pub fn assert_refused(&self) -> &Self {
        assert!(
            matches!(self.result(), "PAM_AUTH_ERR" | "PAM_MAXTRIES"),
            "expected a refusal; transcript:\n{}",
            self.raw
        );
        self
    }

    /// Panics unless a code was asked (one prompt at least).
    pub fn assert_prompted(&self) -> &Self {
        assert!(
            !self.prompts().is_empty(),
            "no prompt was shown:\n{}",
            self.raw
        );
        self
    }

    /// Panics if anything was asked.
    pub fn assert_not_prompted(&self) -> &Self {
        assert!(
            self.prompts().is_empty(),
            "a prompt was shown:\n{}",
            self.raw
        );
        self
    }

    /// The prompts shown, in order.
    pub fn prompts(&self) -> Vec<&Shown> {
        self.shown
            .iter()
            .filter(|shown| matches!(shown, Shown::Prompt { .. }))
            .collect()
    }

    /// The info and error messages shown, in order.
    pub fn messages(&self) -> Vec<&Shown> {
        self.shown
            .iter()
            .filter(|shown| !matches!(shown, Shown::Prompt { .. }))
            .collect()
    }

    /// The error messages shown, in order.
    pub fn errors(&self) -> Vec<&str> {
        self.shown
            .iter()
            .filter_map(|shown| match shown {
                Shown::Error(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// All texts shown (messages and prompts) joined with newlines.
    pub fn all_text(&self) -> String {
        self.shown
            .iter()
            .map(Shown::text)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// True if any text shown contains `needle`, ignoring ASCII case.
    pub fn mentions(&self, needle: &str) -> bool {
        self.all_text()
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
    }

    /// The enrollment secret shown in the messages: the `secret` of an otpauth URI, else the
    /// base32 text after the last colon of a line ("...key manually: ABCD EFGH ...").
    pub fn enrollment_secret(&self) -> Option<String> {
        let text = self.all_text();
        find_otpauth_uri(&text)
            .and_then(otpauth_secret)
            .or_else(|| secret_after_colon(&text))
    }
}

fn parse_counts(value: &str) -> Option<Counts> {
    let numbers: Vec<u64> = value
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    match numbers[..] {
        [baseline, after_first, after_all] => Some(Counts {
            baseline,
            after_first,
            after_all,
        }),
        _ => None,
    }
}

/// The first `otpauth://` URI in `text`.
pub fn find_otpauth_uri(text: &str) -> Option<&str> {
    let start = text.find("otpauth://")?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '>')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The `secret` query parameter of an otpauth URI.
pub fn otpauth_secret(uri: &str) -> Option<String> {
    let (_, query) = uri.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))
        .map(|secret| secret.to_string())
        .filter(|secret| is_base32(secret))
}

/// The first line whose text after its last colon is, without spaces, 16+ base32 characters.
fn secret_after_colon(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (_, tail) = line.rsplit_once(':')?;
        let joined: String = tail.chars().filter(|c| !c.is_whitespace()).collect();
        (joined.len() >= 16 && is_base32(&joined)).then_some(joined)
    })
}

fn is_base32(word: &str) -> bool {
    !word.is_empty()
        && word
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multiline_messages_and_results() {
        let stdout = "INFO: first\n| second\n|\nERROR: bad\nPROMPT: Code: \nRESULT: PAM_AUTH_ERR\n";
        let transcript = Transcript::parse(stdout, "");
        assert_eq!(transcript.shown[0], Shown::Info("first\nsecond\n".into()));
        assert_eq!(transcript.errors(), ["bad"]);
        assert_eq!(transcript.prompts().len(), 1);
        assert_eq!(transcript.result(), "PAM_AUTH_ERR");
    }

    #[test]
    fn finds_secrets() {
        let grouped = Transcript::parse(
            "INFO: Or enter this key manually: JBSW Y3DP EHPK 3PXP\n",
            "",
        );
        assert_eq!(
            grouped.enrollment_secret().as_deref(),
            Some("JBSWY3DPEHPK3PXP")
        );
        let uri = "INFO: otpauth://totp/K:a@h?secret=JBSWY3DPEHPK3PXP&issuer=K\n";
        assert_eq!(
            Transcript::parse(uri, "").enrollment_secret().as_deref(),
            Some("JBSWY3DPEHPK3PXP")
        );
        assert_eq!(
            Transcript::parse("INFO: Code: 123456\n", "").enrollment_secret(),
            None
        );
    }

    #[test]
    fn parses_counts() {
        let transcript = Transcript::parse("TASKS: 1 1 1\nFDS: 3 4 4\n", "");
        assert_eq!(
            transcript.fds,
            Some(Counts {
                baseline: 3,
                after_first: 4,
                after_all: 4
            })
        );
    }
}
