//! A progress line on stderr while a long command runs (an import of 10,000 users, an export
//! of a million): drawn only when stderr is a terminal, at most ten times a second, and wiped
//! when done, so pipes, logs and `--json` output never see it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW_EVERY: Duration = Duration::from_millis(100);
const BAR_WIDTH: usize = 30;

/// What is counted.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Users,
    Bytes,
}

pub struct Progress {
    what: &'static str,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    shown: Option<Instant>,
    on: bool,
}

impl Progress {
    /// `total` when it is known (a bar), else a running count.
    pub fn new(what: &'static str, unit: Unit, total: Option<u64>) -> Progress {
        Progress {
            what,
            unit,
            total,
            done: 0,
            shown: None,
            on: std::io::stderr().is_terminal(),
        }
    }

    /// `n` more done.
    pub fn advance(&mut self, n: u64) {
        self.set(self.done.saturating_add(n));
    }

    /// `done` so far.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if !self.on || self.shown.is_some_and(|at| at.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.shown = Some(Instant::now());
        let line = self.line();
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K{line}");
        let _ = stderr.flush();
    }

    /// Wipes the line (the command prints its own summary).
    pub fn finish(self) {}

    fn line(&self) -> String {
        let amount = |n: u64| match self.unit {
            Unit::Users => format!("{n} users"),
            Unit::Bytes => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
        };
        match self.total.filter(|&t| t > 0) {
            Some(total) => {
                let filled = (self.done.min(total) as usize * BAR_WIDTH) / total as usize;
                format!(
                    "{} [{}{}] {} of {}",
                    self.what,
                    "#".repeat(filled),
                    "-".repeat(BAR_WIDTH - filled),
                    amount(self.done),
                    amount(total)
                )
            }
            None => format!("{}: {}", self.what, amount(self.done)),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.on && self.shown.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_a_bar_or_a_count() {
        let mut bar = Progress::new("importing", Unit::Users, Some(10_000));
        bar.on = false;
        bar.set(2_500);
        assert_eq!(
            bar.line(),
            format!(
                "importing [{}{}] 2500 users of 10000 users",
                "#".repeat(7),
                "-".repeat(23)
            )
        );
        let mut count = Progress::new("exporting", Unit::Bytes, None);
        count.on = false;
        count.advance(3 * 1024 * 1024);
        assert_eq!(count.line(), "exporting: 3.0 MiB");
    }
}
