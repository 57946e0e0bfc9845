//! The one error type of `kronctl`, its one-line messages and its exit codes.
//!
//! Every failure ends in `main` as `kronctl: <message>` on stderr and a distinct exit status,
//! so scripts can branch on the status and people can read the line.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

use kron_proto::OtpdError;
use zbus::fdo;

use crate::render::one_line;

/// Exit statuses. 2 is also what clap uses for a bad command line.
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const ACCESS_DENIED: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const CONFLICT: u8 = 6;
    pub const THROTTLED: u8 = 7;
    pub const REJECTED: u8 = 8;
}

#[derive(Debug)]
pub enum Error {
    /// Bad input noticed by kronctl (e.g. an unparsable bus address) or by otpd
    /// (`InvalidArgument`).
    Usage(String),
    /// No bus at the address, otpd not on it, or no answer in time.
    Unreachable {
        address: String,
        reason: String,
    },
    /// otpd (or the bus policy) refused the caller.
    AccessDenied(String),
    NotFound(String),
    Conflict(String),
    Throttled(String),
    Rejected(String),
    /// otpd reported an internal failure.
    Failed(String),
    /// Enrolling needs the code otpd sends to the user's email or phone first.
    ValidationRequired(String),
    /// otpd answered in a way this kronctl does not understand (version skew, broken reply).
    Protocol(String),
    /// A local file or stdout could not be written.
    Io {
        what: String,
        source: io::Error,
    },
    /// `kronctl doctor` found this many errors; its report on stdout says which.
    Unhealthy {
        errors: usize,
    },
    /// A command that works a page at a time (`fleet push`) stopped after some pages were
    /// done: `done` says how far it got and how to go on, in kronctl's own words (names in it
    /// already shown through `one_line`). The exit status is the cause's.
    Stopped {
        cause: Box<Error>,
        done: String,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Unreachable { .. } => exit::UNREACHABLE,
            Error::AccessDenied(_) | Error::ValidationRequired(_) => exit::ACCESS_DENIED,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Conflict(_) => exit::CONFLICT,
            Error::Throttled(_) => exit::THROTTLED,
            Error::Rejected(_) => exit::REJECTED,
            Error::Failed(_) | Error::Protocol(_) | Error::Io { .. } | Error::Unhealthy { .. } => {
                exit::FAILED
            }
            Error::Stopped { cause, .. } => cause.exit_code(),
        }
    }

    /// Classifies the failure of a call to otpd made over the bus at `address`.
    pub fn from_call(error: zbus::Error, address: &str) -> Self {
        match OtpdError::from(error) {
            OtpdError::AccessDenied(text) => Error::AccessDenied(text),
            OtpdError::InvalidArgument(text) => Error::Usage(text),
            OtpdError::NotFound(text) => Error::NotFound(text),
            OtpdError::Conflict(text) => Error::Conflict(text),
            OtpdError::Throttled(text) => Error::Throttled(text),
            OtpdError::Rejected(text) => Error::Rejected(text),
            OtpdError::Failed(text) => Error::Failed(text),
            OtpdError::ValidationRequired(text) => Error::ValidationRequired(text),
            OtpdError::ZBus(transport) => Error::from_transport(transport, address),
        }
    }

    /// Classifies an error that did not come from otpd itself: connecting, the bus daemon's
    /// own replies, timeouts and malformed answers.
    pub fn from_transport(error: zbus::Error, address: &str) -> Self {
        let unreachable = |reason: String| Error::Unreachable {
            address: address.to_owned(),
            reason,
        };
        match error {
            zbus::Error::Address(reason) => {
                Error::Usage(format!("invalid bus address {address:?}: {reason}"))
            }
            zbus::Error::Connection(source, _) => unreachable(source.to_string()),
            zbus::Error::Handshake(reason) => {
                unreachable(format!("D-Bus handshake failed: {reason}"))
            }
            zbus::Error::InputOutput(source) if source.kind() == io::ErrorKind::TimedOut => {
                unreachable("otpd did not answer in time".into())
            }
            zbus::Error::InputOutput(source) => unreachable(source.to_string()),
            zbus::Error::FDO(fdo) => match *fdo {
                fdo::Error::ServiceUnknown(_) | fdo::Error::NameHasNoOwner(_) => {
                    unreachable(format!(
                        "nothing owns {} on this bus (is otpd running?)",
                        kron_proto::BUS_NAME
                    ))
                }
                fdo::Error::NoReply(_) | fdo::Error::Timeout(_) => {
                    unreachable("otpd did not answer in time".into())
                }
                fdo::Error::AccessDenied(text) => {
                    Error::AccessDenied(format!("the bus refused the call: {text}"))
                }
                fdo::Error::UnknownMethod(_)
                | fdo::Error::UnknownInterface(_)
                | fdo::Error::UnknownObject(_) => Error::Protocol(format!(
                    "otpd does not serve {} (is kronctl from the same kron version as otpd?)",
                    kron_proto::INTERFACE
                )),
                other => Error::Protocol(other.to_string()),
            },
            other => Error::Protocol(other.to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Texts from otpd or the bus are shown through `one_line`: the promise is one line on
        // stderr, and a peer on a bus the user pointed us at must not drive the terminal.
        let (label, text) = match self {
            Error::Usage(text) => ("", text),
            Error::Unreachable { address, reason } => {
                return write!(
                    f,
                    "otpd is not reachable at {}: {}; try `systemctl status otpd`",
                    one_line(address),
                    one_line(reason)
                );
            }
            Error::AccessDenied(text) => ("access denied", text),
            Error::NotFound(text) => ("not found", text),
            Error::Conflict(text) => ("conflict", text),
            Error::Throttled(text) => ("too many failed attempts", text),
            Error::Rejected(text) => ("rejected", text),
            Error::Failed(text) => ("otpd failed", text),
            Error::ValidationRequired(text) => ("validation required", text),
            Error::Protocol(text) => ("unexpected answer from otpd", text),
            Error::Io { what, source } => return write!(f, "{}: {source}", one_line(what)),
            Error::Unhealthy { errors: 1 } => return write!(f, "doctor found 1 error"),
            Error::Unhealthy { errors } => return write!(f, "doctor found {errors} errors"),
            Error::Stopped { cause, done } => return write!(f, "{cause} — {done}"),
        };
        match (label.is_empty(), text.trim().is_empty()) {
            (true, _) => write!(f, "{}", one_line(text)),
            (false, true) => write!(f, "{label}"),
            (false, false) => write!(f, "{label}: {}", one_line(text)),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESS: &str = "unix:path=/nonexistent/bus";

    /// A reply from the bus daemon, as zbus reports it.
    fn bus_error(name: &str, text: &str) -> zbus::Error {
        let fdo = match name {
            "ServiceUnknown" => fdo::Error::ServiceUnknown(text.into()),
            "AccessDenied" => fdo::Error::AccessDenied(text.into()),
            "UnknownMethod" => fdo::Error::UnknownMethod(text.into()),
            "NoReply" => fdo::Error::NoReply(text.into()),
            other => panic!("no fixture for {other}"),
        };
        zbus::Error::FDO(Box::new(fdo))
    }

    #[test]
    fn otpd_errors_have_distinct_exit_codes() {
        let cases = [
            (OtpdError::AccessDenied("x".into()), exit::ACCESS_DENIED),
            (OtpdError::InvalidArgument("x".into()), exit::USAGE),
            (OtpdError::NotFound("x".into()), exit::NOT_FOUND),
            (OtpdError::Conflict("x".into()), exit::CONFLICT),
            (OtpdError::Throttled("x".into()), exit::THROTTLED),
            (OtpdError::Rejected("x".into()), exit::REJECTED),
            (OtpdError::Failed("x".into()), exit::FAILED),
            (
                OtpdError::ValidationRequired("x".into()),
                exit::ACCESS_DENIED,
            ),
        ];
        for (otpd, code) in cases {
            let reply = zbus::Error::DBus(std::sync::Arc::new(otpd));
            assert_eq!(Error::from_call(reply, ADDRESS).exit_code(), code);
        }
    }

    #[test]
    fn connection_failures_name_the_address_and_the_way_out() {
        let refused = io::Error::from(io::ErrorKind::NotFound);
        let address: zbus::Address = ADDRESS.parse().unwrap();
        let error = Error::from_call(
            zbus::Error::Connection(refused.into(), Box::new(address)),
            ADDRESS,
        );
        assert_eq!(error.exit_code(), exit::UNREACHABLE);
        let text = error.to_string();
        assert!(
            text.starts_with("otpd is not reachable at unix:path=/nonexistent/bus: "),
            "{text}"
        );
        assert!(text.ends_with("try `systemctl status otpd`"), "{text}");
    }

    #[test]
    fn bus_daemon_replies_are_classified() {
        let not_running = Error::from_call(bus_error("ServiceUnknown", "no owner"), ADDRESS);
        assert_eq!(not_running.exit_code(), exit::UNREACHABLE);
        assert!(not_running.to_string().contains("is otpd running?"));
        assert_eq!(
            Error::from_call(bus_error("NoReply", "t"), ADDRESS).exit_code(),
            exit::UNREACHABLE
        );
        assert_eq!(
            Error::from_call(bus_error("AccessDenied", "policy"), ADDRESS).exit_code(),
            exit::ACCESS_DENIED
        );
        let skew = Error::from_call(bus_error("UnknownMethod", "nope"), ADDRESS);
        assert_eq!(skew.exit_code(), exit::FAILED);
        assert!(skew.to_string().contains("io.kron.Otpd1"));
        let bad_address = Error::from_transport(zbus::Error::Address("junk".into()), "junk");
        assert_eq!(bad_address.exit_code(), exit::USAGE);
    }

    #[test]
    fn messages_are_one_clean_line() {
        let error = Error::Rejected("wrong code\n\x1b[31mor expired".into());
        assert_eq!(error.to_string(), "rejected: wrong code  [31mor expired");
        assert_eq!(
            Error::Throttled(String::new()).to_string(),
            "too many failed attempts"
        );
        assert_eq!(Error::Usage("bad".into()).to_string(), "bad");
    }
}
