//! The one error type of the module, and how each error becomes a PAM code.
//!
//! The rule behind the mapping: whatever goes wrong on otpd's side of the module (not reachable,
//! too slow, broken reply, otpd's own failure) is PAM_AUTHINFO_UNAVAIL, so an administrator can
//! tell "the second factor could not be checked" from "the second factor failed". Whatever the
//! person or the client application can cause (a broken conversation, an unusable answer, a user
//! name otpd refuses) is PAM_AUTH_ERR: stacks sometimes map `authinfo_unavail=ignore`, and a
//! person must never be able to turn a login into "unavailable" by pressing Ctrl-D at the prompt.
//! Nor by anything else they can do to their own process: once otpd has answered a login's
//! first call, a later call of the same login that fails on otpd's side ([`Error::Interrupted`])
//! is PAM_AUTH_ERR, since a person can stop the process at the prompt (Ctrl-Z at sudo's) past the
//! timeout, or ask for a code by email through a slow relay; and a process that cannot make a
//! socket (its descriptor limit, which a set-uid program inherits from its caller) is
//! PAM_SYSTEM_ERR ([`Error::Local`]). Every error denies the login; none returns PAM_SUCCESS or
//! PAM_IGNORE.

use std::fmt;

use pam::constants::PamResultCode;

use crate::args::ArgError;

/// Longest piece of a text from the bus that is quoted to the person or the log.
const MAX_QUOTED: usize = 256;

/// Why a login ended without a verdict from otpd.
#[derive(Debug)]
pub(crate) enum Error {
    /// A module argument in the PAM configuration is invalid.
    Config(ArgError),
    /// A PAM item (user, service, rhost, tty) is missing, unreadable or outside the bounds of
    /// the D-Bus contract.
    Item { item: &'static str, reason: String },
    /// The application's conversation failed, or gave no answer to a prompt.
    Conversation(String),
    /// The person's answer cannot be sent: not UTF-8, or longer than the contract allows.
    Answer(&'static str),
    /// No connection to the bus, or a D-Bus error not from otpd (for example: no one owns the
    /// name, the bus policy refused the call).
    Unreachable(String),
    /// Connecting or an otpd call took longer than `timeout=`.
    Timeout,
    /// otpd's reply breaks the contract: wrong type, failed `Step::validate`, NUL in a text.
    Malformed(String),
    /// otpd kept asking beyond [`crate::login::MAX_PROMPTS`] prompts. The person can drive the
    /// number of prompts (typing a channel asks otpd to send a code and ask again), so this is
    /// theirs to cause, not an outage.
    TooManyRounds,
    /// otpd answered with one of its `io.kron.Otpd1.Error.*` errors.
    Otpd(Refusal, String),
    /// otpd refused the connection: the calling uid holds its share of connections, or all
    /// users but root together hold theirs ([`kron_proto::CONNECTION_LIMIT_LINE`]), or its
    /// socket's listen queue stayed full until the timeout. Anyone who can open connections can
    /// cause it, so it denies like a throttled login rather than reading as an outage.
    TooManyConnections,
    /// This process could not make a socket (out of descriptors or memory): a limit of the
    /// caller's, not otpd's state, so never "unavailable".
    Local(String),
    /// otpd's side failed (not reachable, too slow, a broken reply, its own failure) in a call
    /// after it had answered this login's first: otpd was there, so whatever broke the login
    /// since may be the person's doing (see the module's comment).
    Interrupted(Box<Error>),
}

/// The `io.kron.Otpd1.Error` names, without the transport variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    AccessDenied,
    InvalidArgument,
    NotFound,
    Conflict,
    Throttled,
    Rejected,
    Failed,
}

impl Error {
    /// The PAM code the hook returns for this error.
    pub(crate) fn code(&self) -> PamResultCode {
        use PamResultCode::*;
        match self {
            // A broken configuration line is the service's fault, not otpd's or the person's;
            // it must not look like an outage a stack may be told to ignore.
            Error::Config(_) => PAM_SERVICE_ERR,
            Error::Item { .. }
            | Error::Conversation(_)
            | Error::Answer(_)
            | Error::TooManyRounds
            | Error::Interrupted(_) => PAM_AUTH_ERR,
            Error::TooManyConnections => PAM_MAXTRIES,
            Error::Local(_) => PAM_SYSTEM_ERR,
            Error::Unreachable(_) | Error::Timeout | Error::Malformed(_) => PAM_AUTHINFO_UNAVAIL,
            Error::Otpd(refusal, _) => match refusal {
                // The calling program may not check this user (an unprivileged program asking
                // for someone else): exactly what PAM_CRED_INSUFFICIENT means.
                Refusal::AccessDenied => PAM_CRED_INSUFFICIENT,
                // Too many failures: tells the application to stop retrying.
                Refusal::Throttled => PAM_MAXTRIES,
                // otpd could not decide (storage and the like).
                Refusal::Failed => PAM_AUTHINFO_UNAVAIL,
                // Refused input, unknown or expired login, conflict, wrong code: a failed check.
                Refusal::InvalidArgument
                | Refusal::NotFound
                | Refusal::Conflict
                | Refusal::Rejected => PAM_AUTH_ERR,
            },
        }
    }

    /// What the person is told (as PAM_ERROR_MSG, unless PAM_SILENT). Never holds a code, an
    /// answer or a secret: texts from otpd's errors are, by contract, free of them.
    pub(crate) fn user_message(&self) -> String {
        const DENIED: &str = "login denied.";
        match self {
            Error::Config(_) => {
                format!("Two-factor authentication is misconfigured (pam_kron arguments); {DENIED}")
            }
            Error::Item { item, .. } => {
                format!("Two-factor authentication cannot check this login (bad {item}); {DENIED}")
            }
            Error::Conversation(_) => {
                format!("Two-factor authentication could not talk to you; {DENIED}")
            }
            Error::Answer(_) => format!("The answer was not accepted; {DENIED}"),
            Error::Unreachable(_) => {
                format!("Two-factor authentication is unavailable (otpd not reachable); {DENIED}")
            }
            Error::Timeout => format!(
                "Two-factor authentication is unavailable (otpd did not answer in time); {DENIED}"
            ),
            Error::Malformed(_) => format!(
                "Two-factor authentication is unavailable (invalid reply from otpd); {DENIED}"
            ),
            Error::TooManyRounds => format!("Too many prompts in one login; {DENIED}"),
            Error::TooManyConnections => {
                format!("Too many logins at once; {DENIED}")
            }
            Error::Local(_) => {
                format!("Two-factor authentication could not run in this process; {DENIED}")
            }
            Error::Interrupted(_) => {
                format!("Two-factor authentication could not finish this login; {DENIED}")
            }
            Error::Otpd(refusal, text) => {
                let what = match refusal {
                    Refusal::AccessDenied => "Two-factor authentication refused this program",
                    Refusal::Throttled => "Too many failed attempts",
                    Refusal::Failed => "Two-factor authentication is unavailable",
                    Refusal::InvalidArgument
                    | Refusal::NotFound
                    | Refusal::Conflict
                    | Refusal::Rejected => "Two-factor authentication failed",
                };
                if text.is_empty() {
                    format!("{what}; {DENIED}")
                } else {
                    format!("{what} ({}); {DENIED}", sanitize(text))
                }
            }
        }
    }

    /// This error met in a call after otpd answered the login's first: a failure on otpd's side
    /// becomes [`Error::Interrupted`], anything else stays what it is.
    pub(crate) fn after_first_answer(self) -> Error {
        match self.code() {
            PamResultCode::PAM_AUTHINFO_UNAVAIL => Error::Interrupted(Box::new(self)),
            _ => self,
        }
    }

    /// Whether the conversation still works, so that the person can be told.
    pub(crate) fn can_tell_user(&self) -> bool {
        !matches!(self, Error::Conversation(_))
    }

    /// Whether this is a fault of the system (logged at LOG_ERR) rather than a failed login
    /// (LOG_NOTICE).
    pub(crate) fn is_fault(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Unreachable(_)
                | Error::Timeout
                | Error::Malformed(_)
                | Error::Otpd(Refusal::Failed, _)
                | Error::Local(_)
        ) || matches!(self, Error::Interrupted(cause) if cause.is_fault())
    }
}

/// The line for syslog: what happened, with details from the bus, never an answer.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "configuration error: {e}"),
            Error::Item { item, reason } => write!(f, "PAM item {item}: {reason}"),
            Error::Conversation(why) => write!(f, "conversation failed: {why}"),
            Error::Answer(why) => write!(f, "answer not sent: {why}"),
            Error::Unreachable(why) => write!(f, "otpd not reachable: {}", sanitize(why)),
            Error::Timeout => write!(f, "otpd did not answer in time"),
            Error::Malformed(why) => write!(f, "malformed reply from otpd: {}", sanitize(why)),
            Error::TooManyRounds => write!(f, "otpd asked too many prompts"),
            Error::TooManyConnections => {
                write!(
                    f,
                    "otpd refused the connection: too many connections at once"
                )
            }
            Error::Local(why) => write!(f, "cannot make a socket: {why}"),
            Error::Interrupted(cause) => write!(f, "after otpd's first answer: {cause}"),
            Error::Otpd(refusal, text) => write!(f, "otpd: {refusal:?}: {}", sanitize(text)),
        }
    }
}

/// Bounds a text that came over the bus and drops control characters, so that it can neither
/// flood a terminal or log nor carry escape sequences.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED)
        .collect();
    if text
        .chars()
        .filter(|c| !c.is_control())
        .nth(MAX_QUOTED)
        .is_some()
    {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use PamResultCode::*;

    #[test]
    fn otpd_side_failures_are_authinfo_unavail() {
        for e in [
            Error::Unreachable("x".into()),
            Error::Timeout,
            Error::Malformed("x".into()),
            Error::Otpd(Refusal::Failed, String::new()),
        ] {
            assert_eq!(e.code(), PAM_AUTHINFO_UNAVAIL, "{e}");
            assert!(e.is_fault());
        }
    }

    #[test]
    fn person_side_failures_are_auth_err() {
        for e in [
            Error::Conversation("x".into()),
            Error::Answer("x"),
            Error::Item {
                item: "user",
                reason: "x".into(),
            },
            Error::Otpd(Refusal::InvalidArgument, String::new()),
            Error::Otpd(Refusal::NotFound, String::new()),
            Error::Otpd(Refusal::Conflict, String::new()),
            Error::Otpd(Refusal::Rejected, String::new()),
            Error::TooManyRounds,
        ] {
            assert_eq!(e.code(), PAM_AUTH_ERR, "{e}");
        }
    }

    #[test]
    fn special_refusals() {
        assert_eq!(
            Error::Otpd(Refusal::AccessDenied, String::new()).code(),
            PAM_CRED_INSUFFICIENT
        );
        assert_eq!(
            Error::Otpd(Refusal::Throttled, String::new()).code(),
            PAM_MAXTRIES
        );
        // Whoever can open connections as the caller's uid can cause it: never "unavailable".
        assert_eq!(Error::TooManyConnections.code(), PAM_MAXTRIES);
        assert!(!Error::TooManyConnections.is_fault());
        assert_eq!(
            Error::Config(ArgError::MissingValue("bus")).code(),
            PAM_SERVICE_ERR
        );
        // The calling process's own limits: never "unavailable".
        assert_eq!(Error::Local("EMFILE".into()).code(), PAM_SYSTEM_ERR);
    }

    /// Once otpd has answered a login, its side failing later is a failed login, never
    /// "unavailable": the person may have caused it (stopped the process past the timeout).
    #[test]
    fn otpd_failing_after_its_first_answer_is_auth_err() {
        for e in [
            Error::Unreachable("x".into()),
            Error::Timeout,
            Error::Malformed("x".into()),
            Error::Otpd(Refusal::Failed, String::new()),
        ] {
            let later = e.after_first_answer();
            assert_eq!(later.code(), PAM_AUTH_ERR, "{later}");
            assert!(later.is_fault(), "{later}");
        }
        // Anything else keeps its meaning.
        for (e, code) in [
            (Error::Otpd(Refusal::Throttled, String::new()), PAM_MAXTRIES),
            (
                Error::Otpd(Refusal::AccessDenied, String::new()),
                PAM_CRED_INSUFFICIENT,
            ),
            (Error::Conversation("x".into()), PAM_AUTH_ERR),
        ] {
            assert_eq!(e.after_first_answer().code(), code);
        }
    }

    #[test]
    fn messages_are_clear_and_sanitized() {
        assert_eq!(
            Error::Unreachable("connection refused".into()).user_message(),
            "Two-factor authentication is unavailable (otpd not reachable); login denied."
        );
        let e = Error::Otpd(Refusal::Throttled, "try again in 30 s\x1b[2J".into());
        assert_eq!(
            e.user_message(),
            "Too many failed attempts (try again in 30 s[2J); login denied."
        );
        let long = Error::Otpd(Refusal::Rejected, "x".repeat(10_000));
        assert!(long.user_message().len() < 400);
        assert!(long.user_message().contains("..."));
    }
}
