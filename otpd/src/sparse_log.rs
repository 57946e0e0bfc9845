//! A report that load could repeat on every request (a refused message, a refused batch of
//! statements): one line at most once a minute, so a flood of them cannot flood the log.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a report is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Where such reports go: the line, at most once a minute; the others are dropped.
#[derive(Clone)]
pub struct SparseLog {
    log: Arc<dyn Fn(&str) + Send + Sync>,
    last: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for SparseLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SparseLog")
    }
}

impl SparseLog {
    pub fn new(log: impl Fn(&str) + Send + Sync + 'static) -> SparseLog {
        SparseLog {
            log: Arc::new(log),
            last: Arc::default(),
        }
    }

    /// A log to `log` that shares this one's pace: a line said through either counts for both.
    pub fn sharing(&self, log: impl Fn(&str) + Send + Sync + 'static) -> SparseLog {
        SparseLog {
            log: Arc::new(log),
            last: self.last.clone(),
        }
    }

    /// Logs `line` unless a line was logged less than a minute ago.
    pub fn say(&self, line: &str) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            *last = Some(now);
            (self.log)(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_sharing_a_pace_say_one_line_between_them() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let pace = SparseLog::new(|_| {});
        let to = |tag: &'static str| {
            let lines = lines.clone();
            pace.sharing(move |line| lines.lock().unwrap().push(format!("{tag}: {line}")))
        };
        let (one, other) = (to("one"), to("other"));
        one.say("first");
        other.say("second");
        one.say("third");
        assert_eq!(*lines.lock().unwrap(), ["one: first"]);
    }
}
