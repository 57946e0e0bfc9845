//! `kronctl fleet push`: this host's local users pushed into the fleet a page at a time
//! (`FleetPushPage`), so neither otpd nor kronctl holds the whole local store at once (a host
//! may hold a million users, docs/performance.md) and each call stays far inside the bus's
//! bounds on a message and on the wait for an answer.
//!
//! The text is written as the pages come: a line per user, the counts at the end. The JSON
//! object, unchanged since the one-message `FleetPush`, opens with the counts, so its users are
//! kept until the last page has come: each name once in one string, each distinct outcome and
//! reason once (a handful for any number of users), about 25 bytes a user.
//!
//! A push that stops half-way (otpd, the bus or the database gone) is taken up by running it
//! again: pushing a user twice changes nothing, the second time it is a conflict (the fleet's
//! token being the one pushed). The error says how far it got.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;

use kron_proto::ImportResult;
use serde::Serialize;

use crate::cli::Cli;
use crate::client::Otpd;
use crate::error::Error;
use crate::output::stdout_error;
use crate::progress::{Progress, Unit};
use crate::render::one_line;

/// Users pushed per call (otpd takes up to `MAX_PUSH_PAGE`, 1,000). Each is a commit in the
/// fleet's database, about a millisecond next to it but more where a commit waits for a
/// distant synchronous standby: 500 still answer well inside the bus's 25 s at 40 ms a commit.
/// otpd opens the local store for each page, 0.15 to 0.2 s at a million users
/// (docs/performance.md): larger pages would spend less on that, and risk the timeout.
const PAGE: u32 = 500;

pub async fn run(cli: &Cli, otpd: &Otpd) -> Result<(), Error> {
    // The first page before any output: a refusal leaves stdout empty.
    let (mut page, mut next) = push_page(otpd, "").await?;
    let mut report = PushReport::start(std::io::stdout().lock(), cli.json);
    // The JSON comes only at the end: until then a terminal sees how far it is.
    let mut progress = cli
        .json
        .then(|| Progress::new("pushing", Unit::Users, None));
    loop {
        if let Err(error) = report.page(page) {
            return Err(report.stopped(stdout_error(error)));
        }
        if let Some(progress) = &mut progress {
            progress.set(report.counts.users as u64);
        }
        if next.is_empty() {
            drop(progress);
            let counts = report.counts.clone();
            return report
                .finish()
                .map_err(|error| counts.stopped(stdout_error(error)));
        }
        let after = std::mem::take(&mut next);
        (page, next) = match push_page(otpd, &after).await {
            Ok(answer) => answer,
            Err(cause) => return Err(report.stopped(cause)),
        };
        // Would ask for the same page forever.
        if next == after {
            let cause = Error::Protocol("otpd answered the same page of users again".into());
            return Err(report.stopped(cause));
        }
    }
}

async fn push_page(otpd: &Otpd, after: &str) -> Result<(Vec<ImportResult>, String), Error> {
    otpd.proxy()
        .fleet_push_page(after, PAGE)
        .await
        .map_err(|e| otpd.fail(e))
}

/// The users answered so far, by outcome, and the last of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Counts {
    users: usize,
    pushed: usize,
    conflicts: usize,
    skipped: usize,
    last: String,
}

impl Counts {
    fn add(&mut self, result: &ImportResult) {
        self.users += 1;
        match result.outcome.as_str() {
            "pushed" => self.pushed += 1,
            "conflict" => self.conflicts += 1,
            "skipped" => self.skipped += 1,
            _ => {}
        }
        result.user.clone_into(&mut self.last);
    }

    /// `cause`, and how far the push got before it: nothing to say before the first answer.
    fn stopped(&self, cause: Error) -> Error {
        if self.users == 0 {
            return cause;
        }
        let Counts {
            users,
            pushed,
            conflicts,
            skipped,
            last,
        } = self;
        Error::Stopped {
            cause: Box::new(cause),
            done: format!(
                "fleet push stopped after {users} local users (the last: {}; {pushed} pushed, \
                 {conflicts} conflicts, {skipped} skipped). The push is idempotent: run \
                 `kronctl fleet push` again to finish; the users pushed already are then \
                 listed as conflicts.",
                one_line(last)
            ),
        }
    }
}

/// The output of `fleet push`, fed a page at a time: the same bytes whatever the pages were.
pub struct PushReport<W: Write> {
    out: W,
    counts: Counts,
    /// `None` for text, written as it comes.
    kept: Option<Kept>,
}

/// The users kept for the JSON object.
#[derive(Default)]
struct Kept {
    /// Every name, one after the other.
    names: String,
    /// Per user: where its name ends in `names`, and its outcome and reason in `kinds`.
    rows: Vec<(usize, usize)>,
    kinds: Vec<(String, String)>,
    kind_of: HashMap<(String, String), usize>,
}

impl Kept {
    fn push(&mut self, result: ImportResult) {
        self.names.push_str(&result.user);
        let key = (result.outcome, result.reason);
        let kind = match self.kind_of.get(&key) {
            Some(&kind) => kind,
            None => {
                self.kinds.push(key.clone());
                self.kind_of.insert(key, self.kinds.len() - 1);
                self.kinds.len() - 1
            }
        };
        self.rows.push((self.names.len(), kind));
    }
}

/// One user in the JSON: the fields of [`ImportResult`], in its order.
#[derive(Serialize)]
struct ResultJson<'a> {
    user: &'a str,
    outcome: &'a str,
    reason: &'a str,
}

/// The counts that open the JSON object.
#[derive(Serialize)]
struct CountsJson {
    pushed: usize,
    conflicts: usize,
    skipped: usize,
}

impl<W: Write> PushReport<W> {
    pub fn start(out: W, json: bool) -> Self {
        PushReport {
            out,
            counts: Counts::default(),
            kept: json.then(Kept::default),
        }
    }

    /// The next page of results: counted, and in text written (and flushed) at once.
    pub fn page(&mut self, page: Vec<ImportResult>) -> std::io::Result<()> {
        for result in &page {
            self.counts.add(result);
        }
        if let Some(kept) = &mut self.kept {
            page.into_iter().for_each(|result| kept.push(result));
            return Ok(());
        }
        for result in &page {
            write!(
                self.out,
                "{}: {}",
                one_line(&result.user),
                one_line(&result.outcome)
            )?;
            if !result.reason.is_empty() {
                write!(self.out, " ({})", one_line(&result.reason))?;
            }
            writeln!(self.out)?;
        }
        self.out.flush()
    }

    /// `cause`, and how far the push got before it.
    pub fn stopped(&self, cause: Error) -> Error {
        self.counts.stopped(cause)
    }

    /// The counts; in JSON, the whole object.
    pub fn finish(mut self) -> std::io::Result<()> {
        let Counts {
            users,
            pushed,
            conflicts,
            skipped,
            ..
        } = self.counts;
        match &self.kept {
            Some(kept) => {
                let counts = serde_json::to_string(&CountsJson {
                    pushed,
                    conflicts,
                    skipped,
                })
                .expect("plain data serializes");
                // `{"pushed":..,"skipped":0}` without its closing brace opens the object.
                write!(self.out, "{},\"users\":[", &counts[..counts.len() - 1])?;
                let mut start = 0;
                for (index, &(end, kind)) in kept.rows.iter().enumerate() {
                    let (outcome, reason) = &kept.kinds[kind];
                    let row = ResultJson {
                        user: &kept.names[start..end],
                        outcome,
                        reason,
                    };
                    let comma = if index == 0 { "" } else { "," };
                    let text = serde_json::to_string(&row).expect("plain data serializes");
                    write!(self.out, "{comma}{text}")?;
                    start = end;
                }
                self.out.write_all(b"]}\n")?;
            }
            None if users == 0 => self.out.write_all(b"No local tokens to push.\n")?,
            None => writeln!(
                self.out,
                "{pushed} pushed, {conflicts} conflicts, {skipped} skipped"
            )?,
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;
    use crate::render::json_line;

    fn result(user: &str, outcome: &str, reason: &str) -> ImportResult {
        ImportResult {
            user: user.into(),
            outcome: outcome.into(),
            reason: reason.into(),
        }
    }

    fn some_results() -> Vec<ImportResult> {
        vec![
            result("alice", "pushed", ""),
            result(
                "bob",
                "conflict",
                "already enrolled in the fleet; the fleet's token stays",
            ),
            result("carol", "skipped", "no confirmed token on this host"),
            result("dave", "pushed", ""),
            result("ériç \"quoted\"", "pushed", ""),
        ]
    }

    /// The output for `results` arriving in pages of `size`.
    fn report(results: &[ImportResult], size: usize, json: bool) -> String {
        let mut out = Vec::new();
        let mut report = PushReport::start(&mut out, json);
        for page in results.chunks(size) {
            report.page(page.to_vec()).unwrap();
        }
        report.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The object as kronctl wrote it from the one answer of `FleetPush`, before pages: what
    /// scripts read.
    fn whole_json(results: &[ImportResult]) -> String {
        #[derive(Serialize)]
        struct Pushed<'a> {
            pushed: usize,
            conflicts: usize,
            skipped: usize,
            users: &'a [ImportResult],
        }
        let count = |outcome: &str| results.iter().filter(|r| r.outcome == outcome).count();
        json_line(&Pushed {
            pushed: count("pushed"),
            conflicts: count("conflict"),
            skipped: count("skipped"),
            users: results,
        })
    }

    #[test]
    fn json_is_the_one_object_of_before_however_it_was_paged() {
        let results = some_results();
        for size in [1, 2, 3, 5, 10] {
            assert_eq!(
                report(&results, size, true),
                whole_json(&results),
                "pages of {size}"
            );
        }
        assert_eq!(
            report(&[], 1, true),
            "{\"pushed\":0,\"conflicts\":0,\"skipped\":0,\"users\":[]}\n"
        );
        assert_eq!(report(&[], 1, true), whole_json(&[]));
        // An outcome this kronctl does not know is shown, and counted in none.
        let odd = vec![result("x", "imported", ""), result("y", "pushed", "")];
        assert_eq!(report(&odd, 1, true), whole_json(&odd));
    }

    #[test]
    fn text_is_a_line_per_user_and_the_counts_however_it_was_paged() {
        let text = "alice: pushed\n\
                    bob: conflict (already enrolled in the fleet; the fleet's token stays)\n\
                    carol: skipped (no confirmed token on this host)\n\
                    dave: pushed\n\
                    ériç \"quoted\": pushed\n\
                    3 pushed, 1 conflicts, 1 skipped\n";
        for size in [1, 2, 5, 10] {
            assert_eq!(
                report(&some_results(), size, false),
                text,
                "pages of {size}"
            );
        }
        assert_eq!(report(&[], 1, false), "No local tokens to push.\n");
    }

    #[test]
    fn text_neutralizes_terminal_escapes() {
        let evil = result("evil\x1b]0;pwned\x07\nuser: root", "pushed\n", "a\rb");
        let text = report(&[evil], 1, false);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
        assert_eq!(text.lines().count(), 2);
    }

    /// A push stopped half-way says how far it got and that running it again finishes it, with
    /// the exit status of what stopped it; before any answer there is nothing to say.
    #[test]
    fn a_stop_says_how_far_it_got_and_how_to_go_on() {
        let mut report = PushReport::start(Vec::new(), true);
        let unreachable = || Error::Conflict("the database is away".into());
        let before = report.stopped(unreachable());
        assert!(matches!(before, Error::Conflict(_)), "{before}");

        report.page(some_results()[..3].to_vec()).unwrap();
        let stopped = report.stopped(unreachable());
        assert_eq!(stopped.exit_code(), exit::CONFLICT);
        let text = stopped.to_string();
        for expected in [
            "conflict: the database is away — fleet push stopped after 3 local users ",
            "(the last: carol; 1 pushed, 1 conflicts, 1 skipped)",
            "The push is idempotent: run `kronctl fleet push` again to finish",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        assert_eq!(text.lines().count(), 1);
        let unreachable = Error::Unreachable {
            address: "unix:path=/run/bus".into(),
            reason: "gone".into(),
        };
        assert_eq!(report.stopped(unreachable).exit_code(), exit::UNREACHABLE);
        // Nothing of the JSON before the end.
        assert!(report.out.is_empty());
    }
}
