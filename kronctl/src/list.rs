//! `kronctl list`: every user in the store, asked of otpd a page at a time (`ListPage`) and
//! written as the pages come, so neither otpd nor kronctl holds the whole store at once (otpd
//! serves a million users, docs/performance.md).
//!
//! `--json` writes its one array element by element. The text table cannot: each column is as
//! wide as its widest cell, so no row can be written before the last page has come. It keeps
//! what each row shows (not otpd's whole answer) until then, and writes the table at the end.
#![forbid(unsafe_code)]

use std::io::Write;

use kron_proto::{MAX_LIST_PAGE, UserStatus};

use crate::cli::Cli;
use crate::client::Otpd;
use crate::error::Error;
use crate::output::stdout_error;
use crate::render::{StatusJson, one_line};
use crate::time::Clock;

/// Users asked for per call: the most otpd gives in one answer.
const PAGE: u32 = MAX_LIST_PAGE;

const HEADER: [&str; 5] = ["USER", "TOKEN", "LOCKED", "FAILURES", "LAST USED"];

pub async fn run(cli: &Cli, clock: &Clock) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    // The first page before any output: a refusal leaves stdout empty.
    let (mut page, mut next) = otpd.list_page("", PAGE).await?;
    let mut report =
        ListReport::start(std::io::stdout().lock(), cli.json, *clock).map_err(stdout_error)?;
    loop {
        report.page(&page).map_err(stdout_error)?;
        if next.is_empty() {
            return report.finish().map_err(stdout_error);
        }
        let after = std::mem::take(&mut next);
        (page, next) = otpd.list_page(&after, PAGE).await?;
        // Would ask for the same page forever.
        if next == after {
            return Err(Error::Protocol(
                "otpd answered the same page of users again".into(),
            ));
        }
    }
}

/// The output of `list`, fed a page at a time: the same bytes whatever the pages were.
pub struct ListReport<W: Write> {
    out: W,
    clock: Clock,
    form: Form,
}

enum Form {
    /// Users written so far.
    Json { written: usize },
    /// The rows, and each column's width so far (the header's at first).
    Table { rows: Vec<Row>, widths: [usize; 5] },
}

/// What one line of the table shows, kept until the table is written (a hundred bytes or so
/// a user; the contact fields of [`UserStatus`] are not shown, so not kept).
struct Row {
    /// Already made safe for the terminal ([`one_line`]).
    user: String,
    enrolled: bool,
    pending: bool,
    locked: bool,
    locked_until: u64,
    failures: u32,
    last_used: u64,
}

impl Row {
    fn of(status: &UserStatus) -> Row {
        Row {
            user: one_line(&status.user),
            enrolled: status.enrolled,
            pending: status.pending,
            locked: status.locked,
            locked_until: status.locked_until,
            failures: status.failures,
            last_used: status.last_used,
        }
    }

    fn cells(&self, clock: &Clock) -> [String; 5] {
        let token = match (self.enrolled, self.pending) {
            (true, false) => "enrolled",
            (true, true) => "enrolled+pending",
            (false, true) => "pending",
            (false, false) => "none",
        };
        let locked = match (self.locked, self.locked_until) {
            (false, _) => "no".to_owned(),
            (true, 0) => "yes".to_owned(),
            (true, until) => format!("until {}", clock.short(until)),
        };
        let last_used = match self.last_used {
            0 => "never".to_owned(),
            when => clock.short(when),
        };
        [
            self.user.clone(),
            token.to_owned(),
            locked,
            self.failures.to_string(),
            last_used,
        ]
    }
}

impl<W: Write> ListReport<W> {
    pub fn start(mut out: W, json: bool, clock: Clock) -> std::io::Result<Self> {
        let form = match json {
            true => {
                out.write_all(b"[")?;
                Form::Json { written: 0 }
            }
            false => Form::Table {
                rows: Vec::new(),
                widths: HEADER.map(|title| title.chars().count()),
            },
        };
        Ok(ListReport { out, clock, form })
    }

    /// The next page of users; in JSON written (and flushed) at once.
    pub fn page(&mut self, page: &[UserStatus]) -> std::io::Result<()> {
        match &mut self.form {
            Form::Json { written } => {
                for status in page {
                    let comma = if *written == 0 { "" } else { "," };
                    let text = serde_json::to_string(&StatusJson::from(status))
                        .expect("plain data serializes");
                    write!(self.out, "{comma}{text}")?;
                    *written += 1;
                }
                self.out.flush()
            }
            Form::Table { rows, widths } => {
                for status in page {
                    let row = Row::of(status);
                    for (width, cell) in widths.iter_mut().zip(row.cells(&self.clock)) {
                        *width = (*width).max(cell.chars().count());
                    }
                    rows.push(row);
                }
                Ok(())
            }
        }
    }

    /// Ends the JSON array, or writes the whole table.
    pub fn finish(mut self) -> std::io::Result<()> {
        match &self.form {
            Form::Json { .. } => self.out.write_all(b"]\n")?,
            Form::Table { rows, .. } if rows.is_empty() => {
                self.out.write_all(b"No users in the store.\n")?
            }
            Form::Table { rows, widths } => {
                line(&mut self.out, &HEADER.map(str::to_owned), widths)?;
                for row in rows {
                    line(&mut self.out, &row.cells(&self.clock), widths)?;
                }
            }
        }
        self.out.flush()
    }
}

/// Left-aligned columns separated by two spaces, no trailing blanks.
fn line(out: &mut impl Write, cells: &[String; 5], widths: &[usize; 5]) -> std::io::Result<()> {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    writeln!(out, "{}", line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::json_line;
    use serde_json::{Value, json};

    use crate::render::tests::{NOW, status};

    /// The output for `statuses` arriving in pages of `size`.
    fn report(statuses: &[UserStatus], size: usize, json: bool) -> String {
        let mut out = Vec::new();
        let mut report = ListReport::start(&mut out, json, Clock::fixed(NOW, 3600)).unwrap();
        for page in statuses.chunks(size) {
            report.page(page).unwrap();
        }
        report.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    fn some_users() -> Vec<UserStatus> {
        let mut bob = status("bob");
        bob.locked = true;
        bob.locked_until = NOW + 300;
        bob.failures = 12;
        bob.last_used = NOW;
        let mut carol = status("carol-long-name");
        carol.enrolled = false;
        carol.pending = true;
        let mut dave = status("dave");
        dave.pending = true;
        dave.locked = true;
        dave.email = String::new();
        dave.phone = "+49 *** ** 12".into();
        vec![status("alice"), bob, carol, dave]
    }

    #[test]
    fn json_is_one_array_of_status_objects_however_it_was_paged() {
        assert_eq!(report(&[], 1, true), "[]\n");
        let users = some_users();
        // The shape scripts read: the array serialized whole, as kronctl wrote it before pages.
        let whole = json_line(&users.iter().map(StatusJson::from).collect::<Vec<_>>());
        for size in [1, 2, 3, 4, 10] {
            assert_eq!(report(&users, size, true), whole, "pages of {size}");
        }
        let value: Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(
            value[0],
            json!({
                "user": "alice", "enrolled": true, "pending": false, "locked": false,
                "locked_until": 0, "failures": 0, "last_used": 0, "recovery_codes": 0,
                "email": "a***@example.com", "phone": "",
            })
        );
        assert_eq!(value.as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn text_is_an_aligned_table_however_it_was_paged() {
        let table = "USER             TOKEN             LOCKED                  FAILURES  LAST USED\n\
                     alice            enrolled          no                      0         never\n\
                     bob              enrolled          until 2025-01-02 15:09  12        2025-01-02 15:04\n\
                     carol-long-name  pending           no                      0         never\n\
                     dave             enrolled+pending  yes                     0         never\n";
        for size in [1, 2, 3, 4, 10] {
            assert_eq!(report(&some_users(), size, false), table, "pages of {size}");
        }
        // The widest cell of the last page widens the columns of the first.
        assert_eq!(
            report(&some_users()[..3], 1, false),
            "USER             TOKEN     LOCKED                  FAILURES  LAST USED\n\
             alice            enrolled  no                      0         never\n\
             bob              enrolled  until 2025-01-02 15:09  12        2025-01-02 15:04\n\
             carol-long-name  pending   no                      0         never\n"
        );
        assert_eq!(report(&[], 1, false), "No users in the store.\n");
    }

    #[test]
    fn text_neutralizes_terminal_escapes() {
        let text = report(&[status("evil\x1b]0;pwned\x07\nuser: root")], 1, false);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
        assert_eq!(text.lines().count(), 2);
    }
}
