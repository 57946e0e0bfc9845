//! The one error type of otpd, its mapping onto the D-Bus errors of `io.kron.Otpd1`, and how
//! an error from a library is written on one line with its causes ([`describe`]).
//! Texts never contain a code or a secret.

#![forbid(unsafe_code)]

use kron_common::config::ConfigError;
use kron_common::rules::RuleError;
use kron_common::users::DirectoryError;
use kron_proto::OtpdError;

pub use crate::store::crypto::CryptoError;
pub use crate::store::error::StoreError;

#[derive(Debug)]
pub enum Error {
    /// The caller may not do this.
    AccessDenied(String),
    /// Malformed or oversize input.
    InvalidArgument(String),
    /// No such user, token or enrollment.
    NotFound(String),
    /// Conflicts with stored state (e.g. a confirmed token exists).
    Conflict(String),
    /// Too many failed attempts; the next one is allowed at this unix time.
    Throttled { until: u64 },
    /// Wrong, reused or expired code.
    Rejected(String),
    /// The configuration is invalid: "file:line: reason".
    Config(String),
    /// The store failed; state is unchanged or the failure is reported before any reply.
    Store(StoreError),
    /// The fleet's database cannot be reached (not: it refused). Only then may a fleet host
    /// answer from its offline packs (docs/fleet.md, "Offline logins").
    Unreachable(String),
    /// Sealing or opening a secret failed (wrong key, tampered record).
    Crypto(CryptoError),
    /// The bus or another system service failed.
    System(String),
    /// NSS could not answer, so no account or group could be checked.
    Directory(DirectoryError),
    /// No rule could be chosen for a login (an unresolvable group of a stronger rule).
    Policy(RuleError),
    /// An email or SMS could not be sent; the text names the channel and cause, never content.
    Delivery(String),
    /// The request needs the validation code sent to the user's contact first.
    ValidationRequired(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::AccessDenied(m) => write!(f, "access denied: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Conflict(m) => write!(f, "conflict: {m}"),
            Error::Throttled { until } => write!(
                f,
                "too many failed attempts; retry after {until} (unix time)"
            ),
            Error::Rejected(m) => write!(f, "rejected: {m}"),
            Error::Config(m) => write!(f, "{m}"),
            Error::Store(m) => write!(f, "store: {m}"),
            Error::Unreachable(m) => write!(f, "store: {m}"),
            Error::Crypto(m) => write!(f, "crypto: {m}"),
            Error::System(m) => write!(f, "{m}"),
            Error::Directory(e) => write!(f, "{e}"),
            Error::Policy(e) => write!(f, "{e}"),
            Error::Delivery(m) => write!(f, "{m}"),
            Error::ValidationRequired(m) => write!(f, "validation required: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Directory(e) => Some(e),
            Error::Policy(e) => Some(e),
            Error::Store(e) => Some(e),
            Error::Crypto(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// A failure of otpd or its surroundings rather than of the request: the caller learns
    /// only "see the log", so it must be logged.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Store(_)
                | Error::Unreachable(_)
                | Error::Crypto(_)
                | Error::System(_)
                | Error::Directory(_)
                | Error::Policy(_)
        )
    }

    /// An internal failure that was logged where it happened (a store that stopped working
    /// logs that once, not once per refused login): the caller need not log it again.
    pub fn is_reported(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_reported())
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e.0)
    }
}

impl From<DirectoryError> for Error {
    fn from(e: DirectoryError) -> Self {
        Error::Directory(e)
    }
}

impl From<RuleError> for Error {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Directory(e) => Error::Directory(e),
            e => Error::Policy(e),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Store(StoreError::Sled(e))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        Error::Crypto(e)
    }
}

impl From<Error> for OtpdError {
    fn from(e: Error) -> Self {
        match e {
            Error::AccessDenied(m) => OtpdError::AccessDenied(m),
            Error::InvalidArgument(m) => OtpdError::InvalidArgument(m),
            Error::NotFound(m) => OtpdError::NotFound(m),
            Error::Conflict(m) => OtpdError::Conflict(m),
            e @ Error::Throttled { .. } => OtpdError::Throttled(e.to_string()),
            Error::Rejected(m) => OtpdError::Rejected(m),
            Error::Delivery(m) => OtpdError::Failed(m),
            Error::ValidationRequired(m) => OtpdError::ValidationRequired(m),
            // Internal details go to the journal, not to the caller.
            e => {
                debug_assert!(e.is_internal());
                OtpdError::Failed("otpd could not complete the request; see its log".into())
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, without repeating a cause the text already has ("error
/// performing TLS handshake: invalid peer certificate: UnknownIssuer"): what an admin needs to
/// see.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
