//! Module arguments: the words after `pam_kron.so` on the PAM configuration line.
//!
//! Only the configuration line is read, never the environment: sudo and su run the module with
//! the invoking user's environment, so anything read from there would be under that user's
//! control (design.md §3.1).
//!
//! Decisions, documented in docs/pam_kron.md:
//! - a known argument with a bad value (`timeout=0`, `bus=tcp:...`, `debug=yes`) is a
//!   configuration error: the login is denied with PAM_SERVICE_ERR, never run with a guessed
//!   value; so are `socket=` and `bus=` together (which one was meant is a guess);
//! - an unknown argument is logged and ignored, as mature modules do, so that a line written for a
//!   newer version still works with this one;
//! - a repeated argument is logged, and the last one counts.

use std::ffi::CStr;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zbus::address::transport::{Transport as DbusTransport, UnixSocket};

/// Default bound on each exchange with otpd (connect + authenticate, or one method call).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted `timeout=`; a login that waits a minute for a daemon is already broken.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 60;
/// Longest accepted `bus=` address (bytes).
pub(crate) const MAX_BUS_LEN: usize = 1024;
/// How much of an unknown or bad argument is quoted in the log.
const MAX_QUOTED: usize = 64;

/// Where otpd is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// otpd's own socket, D-Bus peer-to-peer (`socket=`, the default).
    Socket(PathBuf),
    /// A bus otpd is on (`bus=`): through the bus daemon.
    Bus(String),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Socket(path) => write!(f, "socket {}", path.display()),
            Transport::Bus(address) => write!(f, "bus {address}"),
        }
    }
}

/// The parsed module arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Args {
    /// Where otpd is reached.
    pub transport: Transport,
    /// Bound on each exchange with otpd.
    pub timeout: Duration,
    /// Log each step of the login to syslog (never codes, answers or message texts).
    pub debug: bool,
    /// Show otpd's messages even when the application passes PAM_SILENT: sudo up to 1.9.13
    /// always does, which would hide "wrong code", "try again in …" and enrollment texts.
    pub nosilent: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            transport: Transport::Socket(PathBuf::from(kron_proto::DEFAULT_SOCKET_PATH)),
            timeout: DEFAULT_TIMEOUT,
            debug: false,
            nosilent: false,
        }
    }
}

/// A known argument with a value the module refuses to run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArgError {
    /// `bus` or `timeout` without `=VALUE`.
    MissingValue(&'static str),
    /// `debug=...`: a flag takes no value.
    UnexpectedValue(&'static str),
    /// The value is not UTF-8.
    NotUtf8(&'static str),
    /// `bus=` is empty, too long, not a `unix:` address, or does not parse.
    BadBus(String),
    /// `socket=` is not an absolute path that fits a unix socket address.
    BadSocket(String),
    /// Both `socket=` and `bus=`.
    SocketAndBus,
    /// `timeout=` is not whole seconds in 1..=MAX_TIMEOUT_SECS.
    BadTimeout(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::MissingValue(key) => write!(f, "argument `{key}` needs a value: {key}=VALUE"),
            ArgError::UnexpectedValue(key) => write!(f, "argument `{key}` takes no value"),
            ArgError::NotUtf8(key) => write!(f, "value of `{key}=` is not UTF-8"),
            ArgError::BadBus(why) => write!(f, "bad bus= address: {why}"),
            ArgError::BadSocket(why) => write!(f, "bad socket= path: {why}"),
            ArgError::SocketAndBus => {
                write!(f, "socket= and bus= both given: name one way to reach otpd")
            }
            ArgError::BadTimeout(value) => write!(
                f,
                "bad timeout={value}: expected whole seconds from 1 to {MAX_TIMEOUT_SECS}"
            ),
        }
    }
}

/// The result of parsing, with what should be logged either way.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub args: Result<Args, ArgError>,
    /// Ignored or repeated arguments, for the log (LOG_WARNING).
    pub warnings: Vec<String>,
}

/// Parses the module arguments. The first bad value wins; warnings are collected regardless.
pub(crate) fn parse(raw: &[&CStr]) -> Parsed {
    let mut args = Args::default();
    let mut warnings = Vec::new();
    let mut error = None;
    let mut seen: Vec<&'static str> = Vec::new();
    let (mut socket, mut bus) = (None, None);

    for arg in raw {
        let bytes = arg.to_bytes();
        let (key, value) = match bytes.iter().position(|&b| b == b'=') {
            Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
            None => (bytes, None),
        };
        let result = match key {
            b"bus" => apply("bus", value, &mut seen, &mut warnings, |v| {
                bus = Some(parse_bus(v)?);
                Ok(())
            }),
            b"socket" => apply("socket", value, &mut seen, &mut warnings, |v| {
                socket = Some(parse_socket(v)?);
                Ok(())
            }),
            b"timeout" => apply("timeout", value, &mut seen, &mut warnings, |v| {
                args.timeout = parse_timeout(v)?;
                Ok(())
            }),
            b"debug" => flag("debug", value, &mut args.debug),
            b"nosilent" => flag("nosilent", value, &mut args.nosilent),
            _ => {
                warnings.push(format!("unknown argument {} ignored", quote(bytes)));
                Ok(())
            }
        };
        if let Err(e) = result {
            error.get_or_insert(e);
        }
    }
    match (socket, bus) {
        (Some(_), Some(_)) => {
            error.get_or_insert(ArgError::SocketAndBus);
        }
        (Some(path), None) => args.transport = Transport::Socket(path),
        (None, Some(address)) => args.transport = Transport::Bus(address),
        (None, None) => {}
    }

    Parsed {
        args: match error {
            Some(e) => Err(e),
            None => Ok(args),
        },
        warnings,
    }
}

/// Handles a flag: it takes no value.
fn flag(key: &'static str, value: Option<&[u8]>, field: &mut bool) -> Result<(), ArgError> {
    match value {
        None => {
            *field = true;
            Ok(())
        }
        Some(_) => Err(ArgError::UnexpectedValue(key)),
    }
}

/// Handles `key=value`: requires the value, decodes it, notes repeats, and applies it.
fn apply(
    key: &'static str,
    value: Option<&[u8]>,
    seen: &mut Vec<&'static str>,
    warnings: &mut Vec<String>,
    set: impl FnOnce(&str) -> Result<(), ArgError>,
) -> Result<(), ArgError> {
    let value = value.ok_or(ArgError::MissingValue(key))?;
    let value = std::str::from_utf8(value).map_err(|_| ArgError::NotUtf8(key))?;
    if seen.contains(&key) {
        warnings.push(format!(
            "argument `{key}=` given more than once; the last one counts"
        ));
    } else {
        seen.push(key);
    }
    set(value)
}

/// Accepts only `unix:` addresses: only a local socket carries the caller's credentials, which
/// otpd authorizes every call by, and other transports (tcp, autolaunch, unixexec) either cannot
/// or would reach outside the configured socket.
fn parse_bus(value: &str) -> Result<String, ArgError> {
    if value.is_empty() {
        return Err(ArgError::BadBus("empty address".into()));
    }
    if value.len() > MAX_BUS_LEN {
        return Err(ArgError::BadBus(format!("longer than {MAX_BUS_LEN} bytes")));
    }
    if !value.starts_with("unix:") {
        return Err(ArgError::BadBus(format!(
            "{} is not a unix: address",
            quote(value.as_bytes())
        )));
    }
    let address = value
        .parse::<zbus::Address>()
        .map_err(|e| ArgError::BadBus(format!("{}: {e}", quote(value.as_bytes()))))?;
    // Only a socket file, which its directory's owner decides who may create: an abstract name
    // has no owner and no permissions, so any local user who binds it first (while the bus is
    // down) would answer in otpd's place.
    match address.transport() {
        DbusTransport::Unix(unix) => match unix.path() {
            // A path that cannot fit a socket address would fail at every login, and must
            // fail as the configuration mistake it is, not as the bus being away.
            UnixSocket::File(path)
                if path.is_absolute()
                    && path.as_os_str().len() > kron_proto::MAX_SOCKET_PATH_LEN =>
            {
                Err(ArgError::BadBus(format!(
                    "a socket path longer than {} bytes",
                    kron_proto::MAX_SOCKET_PATH_LEN
                )))
            }
            UnixSocket::File(path) if path.is_absolute() => Ok(value.to_owned()),
            UnixSocket::Abstract(_) => Err(ArgError::BadBus(
                "an abstract socket has no owner: any local user could answer on it; \
                 use unix:path="
                    .into(),
            )),
            _ => Err(ArgError::BadBus(format!(
                "{} is not unix:path= with an absolute path",
                quote(value.as_bytes())
            ))),
        },
        _ => Err(ArgError::BadBus(format!(
            "{} is not a unix: address",
            quote(value.as_bytes())
        ))),
    }
}

/// An absolute path that fits `sun_path`. Relative paths would depend on the application's
/// working directory.
fn parse_socket(value: &str) -> Result<PathBuf, ArgError> {
    if !value.starts_with('/') {
        return Err(ArgError::BadSocket(format!(
            "{} is not an absolute path",
            quote(value.as_bytes())
        )));
    }
    if value.len() > kron_proto::MAX_SOCKET_PATH_LEN {
        return Err(ArgError::BadSocket(format!(
            "longer than {} bytes",
            kron_proto::MAX_SOCKET_PATH_LEN
        )));
    }
    Ok(PathBuf::from(value))
}

/// Whole seconds, ASCII digits only (no sign, no space, no unit), 1..=MAX_TIMEOUT_SECS.
fn parse_timeout(value: &str) -> Result<Duration, ArgError> {
    let bad = || ArgError::BadTimeout(quote(value.as_bytes()));
    // The length check keeps the parse from overflowing; leading zeros are harmless.
    if value.is_empty() || value.len() > 4 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: u64 = value.parse().map_err(|_| bad())?;
    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// A printable, bounded rendering of an argument for the log.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_QUOTED)]);
    let ellipsis = if bytes.len() > MAX_QUOTED { "..." } else { "" };
    format!("\"{}{ellipsis}\"", text.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&CStr]) -> Parsed {
        parse(args)
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let parsed = run(&[]);
        assert_eq!(parsed.args, Ok(Args::default()));
        assert_eq!(
            parsed.args.unwrap().transport,
            Transport::Socket(PathBuf::from(kron_proto::DEFAULT_SOCKET_PATH))
        );
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn known_arguments_are_applied() {
        let parsed = run(&[
            c"bus=unix:path=/tmp/kron bus",
            c"timeout=12",
            c"debug",
            c"nosilent",
        ]);
        let args = parsed.args.unwrap();
        assert_eq!(
            args.transport,
            Transport::Bus("unix:path=/tmp/kron bus".into())
        );
        assert_eq!(args.timeout, Duration::from_secs(12));
        assert!(args.debug && args.nosilent);
        assert!(!Args::default().nosilent);
        assert_eq!(
            run(&[c"nosilent=1"]).args,
            Err(ArgError::UnexpectedValue("nosilent"))
        );
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn only_socket_files_are_accepted_as_buses() {
        for address in [
            c"bus=unix:abstract=/tmp/dbus-x",
            c"bus=unix:dir=/tmp",
            c"bus=unix:tmpdir=/tmp",
            c"bus=unix:path=relative/bus",
        ] {
            assert!(
                matches!(run(&[address]).args, Err(ArgError::BadBus(_))),
                "{address:?}"
            );
        }
        let abstract_name = run(&[c"bus=unix:abstract=/tmp/dbus-x"]).args.unwrap_err();
        assert!(
            abstract_name.to_string().contains("no owner"),
            "{abstract_name}"
        );
    }

    #[test]
    fn socket_paths_are_absolute_and_fit_the_address() {
        assert_eq!(
            run(&[c"socket=/tmp/kron test/otpd.sock"])
                .args
                .unwrap()
                .transport,
            Transport::Socket(PathBuf::from("/tmp/kron test/otpd.sock"))
        );
        for bad in [c"socket=", c"socket=otpd.sock", c"socket=./otpd.sock"] {
            assert!(
                matches!(run(&[bad]).args, Err(ArgError::BadSocket(_))),
                "{bad:?} should be refused"
            );
        }
        let long = format!("socket=/{}", "a".repeat(kron_proto::MAX_SOCKET_PATH_LEN));
        let long = std::ffi::CString::new(long).unwrap();
        assert!(matches!(run(&[&long]).args, Err(ArgError::BadSocket(_))));
        // The same bound for a bus's socket: a configuration error, never "unavailable".
        let long = format!(
            "bus=unix:path=/{}",
            "a".repeat(kron_proto::MAX_SOCKET_PATH_LEN)
        );
        let long = std::ffi::CString::new(long).unwrap();
        assert!(matches!(run(&[&long]).args, Err(ArgError::BadBus(_))));
        assert_eq!(
            run(&[c"socket=/run/kron/otpd.sock", c"bus=unix:path=/x"]).args,
            Err(ArgError::SocketAndBus),
            "which one was meant would be a guess"
        );
    }

    #[test]
    fn timeout_bounds() {
        assert_eq!(
            run(&[c"timeout=1"]).args.unwrap().timeout,
            Duration::from_secs(1)
        );
        assert_eq!(
            run(&[c"timeout=60"]).args.unwrap().timeout,
            Duration::from_secs(60)
        );
        assert_eq!(
            run(&[c"timeout=007"]).args.unwrap().timeout,
            Duration::from_secs(7)
        );
        for bad in [
            c"timeout=0",
            c"timeout=61",
            c"timeout=",
            c"timeout=-1",
            c"timeout=+5",
            c"timeout= 5",
            c"timeout=5s",
            c"timeout=1.5",
            c"timeout=abc",
            c"timeout=99999999999999999999999",
        ] {
            assert!(
                matches!(run(&[bad]).args, Err(ArgError::BadTimeout(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn bad_bus_addresses_are_refused() {
        for bad in [
            c"bus=",
            c"bus=tcp:host=127.0.0.1,port=1234",
            c"bus=unixexec:path=/bin/sh",
            c"bus=autolaunch:",
            c"bus=/run/dbus/system_bus_socket",
            c"bus=unix:",
            c"bus=unix:path",
        ] {
            assert!(
                matches!(run(&[bad]).args, Err(ArgError::BadBus(_))),
                "{bad:?} should be refused"
            );
        }
        let long = format!("bus=unix:path=/{}", "a".repeat(MAX_BUS_LEN));
        let long = std::ffi::CString::new(long).unwrap();
        assert!(matches!(run(&[&long]).args, Err(ArgError::BadBus(_))));
    }

    #[test]
    fn values_must_be_present_and_flags_take_none() {
        assert_eq!(run(&[c"bus"]).args, Err(ArgError::MissingValue("bus")));
        assert_eq!(
            run(&[c"timeout"]).args,
            Err(ArgError::MissingValue("timeout"))
        );
        assert_eq!(
            run(&[c"debug=1"]).args,
            Err(ArgError::UnexpectedValue("debug"))
        );
        assert_eq!(
            run(&[c"debug="]).args,
            Err(ArgError::UnexpectedValue("debug"))
        );
    }

    #[test]
    fn non_utf8_values_are_refused() {
        let raw = std::ffi::CString::new(b"bus=unix:path=/tmp/\xff".to_vec()).unwrap();
        assert_eq!(run(&[&raw]).args, Err(ArgError::NotUtf8("bus")));
    }

    #[test]
    fn unknown_arguments_are_ignored_with_a_warning() {
        let parsed = run(&[c"use_first_pass", c"nullok=1", c"debug"]);
        assert!(parsed.args.unwrap().debug);
        assert_eq!(parsed.warnings.len(), 2);
        assert!(parsed.warnings[0].contains("use_first_pass"));
        // Case matters, as it does for every PAM module.
        assert_eq!(run(&[c"DEBUG"]).warnings.len(), 1);
    }

    #[test]
    fn warnings_are_bounded_and_printable() {
        let raw = std::ffi::CString::new(format!("x\x1b[2J{}", "y".repeat(500))).unwrap();
        let parsed = run(&[&raw]);
        let warning = &parsed.warnings[0];
        assert!(!warning.contains('\x1b'));
        assert!(warning.len() < 200, "{warning}");
    }

    #[test]
    fn repeats_warn_and_the_last_counts() {
        let parsed = run(&[c"timeout=3", c"timeout=4"]);
        assert_eq!(parsed.args.unwrap().timeout, Duration::from_secs(4));
        assert_eq!(parsed.warnings.len(), 1);
    }

    #[test]
    fn the_first_error_wins_and_warnings_survive() {
        let parsed = run(&[c"frobnicate", c"timeout=0", c"bus=tcp:"]);
        assert!(matches!(parsed.args, Err(ArgError::BadTimeout(_))));
        assert_eq!(parsed.warnings.len(), 1);
    }
}
