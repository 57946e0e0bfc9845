//! The audit trail: one line per decision to syslog (facility authpriv), never a code or a
//! secret. Optionally mirrored to stderr for foreground runs and tests.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

pub struct Audit {
    syslog: Mutex<Syslog>,
    stderr: bool,
    /// A second destination of every decision (a fleet's audit table).
    sink: Option<Box<dyn AuditSink>>,
}

/// Where decisions go besides syslog: a fleet's audit table (store/postgres/audit.rs).
pub trait AuditSink: Send + Sync {
    fn record(&self, event: &str, subject: &Subject<'_>, detail: &str);
}

struct Syslog {
    logger: Option<Logger<LoggerBackend, Formatter3164>>,
    /// When a connect was last tried.
    last_try: Option<Instant>,
}

const RECONNECT_EVERY: Duration = Duration::from_secs(10);

/// Who a decision was about and where the request came from.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    pub user: &'a str,
    pub service: &'a str,
    pub rhost: &'a str,
    pub tty: &'a str,
    pub caller_uid: u32,
}

/// A [`Subject`] that owns its text: for a record written after the call that made it
/// returned (a send finishing on its own thread).
#[derive(Debug, Clone, Default)]
pub struct OwnedSubject {
    user: String,
    service: String,
    rhost: String,
    tty: String,
    caller_uid: u32,
}

impl OwnedSubject {
    pub fn of(subject: &Subject<'_>) -> OwnedSubject {
        OwnedSubject {
            user: subject.user.to_owned(),
            service: subject.service.to_owned(),
            rhost: subject.rhost.to_owned(),
            tty: subject.tty.to_owned(),
            caller_uid: subject.caller_uid,
        }
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            user: &self.user,
            service: &self.service,
            rhost: &self.rhost,
            tty: &self.tty,
            caller_uid: self.caller_uid,
        }
    }
}

#[derive(Clone, Copy)]
enum Severity {
    Info,
    Notice,
}

fn connect() -> Option<Logger<LoggerBackend, Formatter3164>> {
    let formatter = Formatter3164 {
        facility: Facility::LOG_AUTHPRIV,
        hostname: None,
        process: "otpd".into(),
        pid: std::process::id(),
    };
    syslog::unix(formatter).ok()
}

impl Audit {
    pub fn new(stderr: bool) -> Audit {
        // No syslog socket (a container, a test) must not stop logins; stderr still works.
        Audit {
            syslog: Mutex::new(Syslog {
                logger: connect(),
                last_try: Some(Instant::now()),
            }),
            stderr,
            sink: None,
        }
    }

    /// The same audit, also writing every decision to `sink`.
    pub fn with_sink(mut self, sink: Box<dyn AuditSink>) -> Audit {
        self.sink = Some(sink);
        self
    }

    /// Records `event` (accepted, rejected, throttled, ...) with an optional free-text detail.
    pub fn record(&self, event: &str, subject: &Subject<'_>, detail: &str) {
        let severity = match event {
            "accepted" | "enrolled" | "skipped" | "enroll-started" => Severity::Info,
            _ => Severity::Notice,
        };
        self.write(severity, &format_line(event, subject, detail));
        if let Some(sink) = &self.sink {
            sink.record(event, subject, detail);
        }
    }

    /// A daemon-level message (start, stop, errors) that is not about one user.
    pub fn daemon(&self, message: &str) {
        let line: String = format!("otpd: {message}")
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        self.write(Severity::Notice, &line);
    }

    fn write(&self, severity: Severity, line: &str) {
        if self.stderr {
            eprintln!("{line}");
        }
        let mut state = self
            .syslog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // One reconnect per line when the socket went away (journald restarted), but no more
        // than one try every RECONNECT_EVERY when there is no syslog at all: a login must not
        // pay for connects that keep failing.
        for _ in 0..2 {
            if state.logger.is_none() {
                if state
                    .last_try
                    .is_some_and(|at| at.elapsed() < RECONNECT_EVERY)
                {
                    return;
                }
                state.last_try = Some(Instant::now());
                state.logger = connect();
            }
            let Some(logger) = state.logger.as_mut() else {
                return;
            };
            let sent = match severity {
                Severity::Info => logger.info(line),
                Severity::Notice => logger.notice(line),
            };
            if sent.is_ok() {
                return;
            }
            state.logger = None;
        }
    }
}

fn format_line(event: &str, subject: &Subject<'_>, detail: &str) -> String {
    let mut line = format!("kron event={event}");
    for (key, value) in [
        ("user", subject.user),
        ("service", subject.service),
        ("rhost", subject.rhost),
        ("tty", subject.tty),
    ] {
        if !value.is_empty() {
            let _ = write!(line, " {key}={}", sanitize(value));
        }
    }
    let _ = write!(line, " caller_uid={}", subject.caller_uid);
    if !detail.is_empty() {
        let detail: String = detail
            .chars()
            .take(256)
            .map(|c| if c.is_control() || c == '"' { '\'' } else { c })
            .collect();
        let _ = write!(line, " detail=\"{detail}\"");
    }
    line
}

/// Keeps one event on one line whatever a remote host name or user name contains.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .take(256)
        .map(|c| if c.is_control() || c == ' ' { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_single_and_escaped() {
        let subject = Subject {
            user: "alice",
            service: "sshd",
            rhost: "evil\nhost name",
            tty: "",
            caller_uid: 0,
        };
        let line = format_line("rejected", &subject, "wrong \"code\"");
        assert_eq!(
            line,
            "kron event=rejected user=alice service=sshd rhost=evil_host_name caller_uid=0 detail=\"wrong 'code'\""
        );
    }
}
