//! The command line of `kronctl`: clap definitions and the checks clap cannot express.
//!
//! Kept apart from everything else so packaging can build the man page kronctl(1) and shell
//! completions from [`command`] without linking the rest of the program's logic.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use kron_proto::DEFAULT_BUS_ADDRESS;

/// Name of the environment variable that may carry `--bus`.
pub const BUS_ENV: &str = "KRON_BUS";

const CONFIRM_USAGE: &str = "kronctl confirm [USER] CODE";

const LONG_ABOUT: &str = "\
kronctl talks to otpd, the kron daemon, over D-Bus to manage TOTP second factors for Linux \
logins: enroll a token and confirm it, show its status, and, as an administrator, list, reset \
and unlock users. `kronctl doctor` checks the machine's sshd, PAM, D-Bus and clock setup.

otpd decides everything: who may do what is checked there, by the uid the bus reports for \
kronctl, never by anything kronctl says. A user may enroll, confirm and inspect their own token; \
root or a member of the configured admin group may act for anyone.";

const AFTER_LONG_HELP: &str = "\
Examples:
  Enroll yourself, scan the QR code, then confirm with the code the app shows:
    kronctl enroll
    kronctl confirm 123456

  Enroll alice as an administrator and save the QR code for her (mode 0600):
    sudo kronctl enroll alice --png /root/alice-qr.png
    sudo kronctl confirm alice 123456

  Inspect and manage users:
    kronctl status
    sudo kronctl list --json
    sudo kronctl unlock alice
    sudo kronctl reset alice

  Talk to an otpd on a private bus:
    KRON_BUS=unix:path=/tmp/test-bus kronctl status

  Check the machine for mistakes that lock admins out or bypass the second factor:
    sudo kronctl doctor

Exit status:
  0  success
  1  otpd failed, or another error (e.g. writing the PNG file)
  2  usage error: bad command line, malformed user name or code
  3  otpd is not reachable (no bus at the address, otpd not running, no answer)
  4  access denied
  5  no such user, token or enrollment
  6  conflict with what is stored (e.g. a confirmed token already exists)
  7  throttled after too many failed attempts; retry later
  8  code rejected (wrong, already used, or the enrollment expired)
kronctl doctor has its own: 0 nothing wrong, 1 something is wrong, 2 usage error.";

/// `kronctl [--bus ADDRESS] [--json] COMMAND`
#[derive(Debug, Parser)]
#[command(
    name = "kronctl",
    version,
    about = "Manage kron two-factor (TOTP) tokens through otpd",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// D-Bus address of the bus otpd is on
    ///
    /// kronctl connects to exactly this address and never consults DBUS_SYSTEM_BUS_ADDRESS.
    /// The command-line flag wins over the KRON_BUS environment variable.
    #[arg(
        long,
        global = true,
        env = BUS_ENV,
        value_name = "ADDRESS",
        default_value = DEFAULT_BUS_ADDRESS
    )]
    pub bus: String,

    /// Print machine-readable JSON on stdout instead of text
    ///
    /// On success stdout holds exactly one JSON value. Errors still go to stderr as one line,
    /// stdout stays empty, and the exit status tells what went wrong.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an enrollment: print a QR code, the otpauth URI, the secret and the deadline
    ///
    /// otpd creates a new secret and keeps it pending until `kronctl confirm` proves that the
    /// authenticator app holds it. Running enroll again restarts the enrollment with a new
    /// secret. A user may enroll only while holding no confirmed token; replacing a confirmed
    /// token needs an administrator's `kronctl reset` first.
    #[command(after_help = "\
Examples:
  kronctl enroll
  kronctl enroll --png ~/kron-qr.png
  sudo kronctl enroll alice --json")]
    Enroll {
        /// Whose token to enroll (administrators); yourself when omitted
        #[arg(value_parser = parse_user)]
        user: Option<String>,

        /// Also write the QR code as a PNG image to FILE
        ///
        /// The file is created with mode 0600 because it holds the secret; an existing file
        /// (or symlink) at FILE is never overwritten. Delete it once the code is scanned.
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },

    /// Confirm the pending enrollment with a code from the authenticator app
    ///
    /// With one argument it is the CODE and the enrollment is your own; with two, the first
    /// is the USER (administrators). otpd checks the code; the token becomes active only then.
    #[command(
        override_usage = "kronctl confirm [OPTIONS] [USER] CODE",
        after_help = "\
Examples:
  kronctl confirm 123456
  sudo kronctl confirm alice 123456"
    )]
    Confirm(ConfirmArgs),

    /// Show whether a user is enrolled, pending, locked, and when a code was last used
    #[command(after_help = "\
Examples:
  kronctl status
  sudo kronctl status alice --json")]
    Status {
        /// Whose status to show (administrators); yourself when omitted
        #[arg(value_parser = parse_user)]
        user: Option<String>,
    },

    /// List every user otpd knows, as a table (administrators)
    List,

    /// Delete a user's token, pending enrollment and counters (administrators)
    ///
    /// The user must enroll again afterwards; until then policy decides whether they may log
    /// in without a second factor.
    Reset {
        /// The user to reset
        #[arg(value_parser = parse_user)]
        user: String,
    },

    /// Clear a user's failed attempts and backoff so they may try codes again (administrators)
    Unlock {
        /// The user to unlock
        #[arg(value_parser = parse_user)]
        user: String,
    },

    /// Check this machine for mistakes that lock admins out or bypass the second factor
    ///
    /// Reads sshd's and PAM's configuration, the D-Bus policy and otpd's config, asks otpd
    /// over the bus, and checks the clock. Prints one line per finding with a one-line fix.
    /// Exit status 0 when nothing is wrong (warnings allowed), 1 when anything is.
    #[command(after_help = DOCTOR_AFTER_HELP)]
    Doctor(DoctorArgs),
}

/// Every check `kronctl doctor` runs, by its stable id (see docs/kronctl.md).
pub const DOCTOR_CHECKS: [&str; 15] = [
    "otpd-config",
    "dbus-policy",
    "otpd-reachable",
    "sshd-config",
    "sshd-usepam",
    "sshd-kbdinteractive",
    "sshd-publickey",
    "sshd-root-login",
    "sshd-match",
    "pam-sshd",
    "pam-sshd-order",
    "pam-sudo",
    "pam-sudo-order",
    "admin-lockout",
    "clock-sync",
];

const DOCTOR_AFTER_HELP: &str = "\
Examples:
  sudo kronctl doctor
  sudo kronctl doctor --json --skip clock-sync
  kronctl doctor --root /mnt/image --skip otpd-reachable --skip admin-lockout

Exit status:
  0  no errors (warnings allowed)
  1  at least one error, or the report could not be written
  2  usage error";

/// `doctor [--root DIR] [--config FILE] [--skip CHECK]...`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Read /etc/ssh, /etc/pam.d, /etc/kron and the D-Bus policy directories under DIR
    ///
    /// For images, chroots and tests. Accounts and groups still come from this machine's NSS,
    /// and otpd is still asked on --bus.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// otpd's config file [default: /etc/kron/otpd.toml under --root]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Do not run CHECK (repeatable, or comma-separated)
    #[arg(
        long,
        value_name = "CHECK",
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(DOCTOR_CHECKS)
    )]
    pub skip: Vec<String>,
}

/// `confirm [USER] CODE`. Clap cannot put an optional positional before a required one, so
/// both are taken in order here and told apart by [`ConfirmArgs::target`].
#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// The USER whose enrollment to confirm (administrators), or the CODE when it is the only
    /// argument
    #[arg(value_name = "USER|CODE")]
    first: String,

    /// The 6 or 8 digit code the authenticator app shows now
    #[arg(value_name = "CODE")]
    second: Option<String>,
}

/// What `confirm` was asked to do, once the positionals are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmTarget {
    /// `None` means the caller (sent to otpd as the empty string).
    pub user: Option<String>,
    pub code: String,
}

impl ConfirmArgs {
    /// Splits the positionals into user and code and checks both. The messages never repeat
    /// the code: even a mistyped one may be most of a valid code.
    pub fn target(&self) -> Result<ConfirmTarget, String> {
        let (user, code) = match &self.second {
            // `confirm alice`: a user name where the code should be; say what is missing. A
            // code starts with a digit, so anything starting with a digit is treated as a
            // mistyped code and not echoed back.
            None if !self.first.starts_with(|c: char| c.is_ascii_digit())
                && kron_proto::validate_user(&self.first).is_ok() =>
            {
                return Err(format!(
                    "missing CODE after USER {} (usage: {CONFIRM_USAGE})",
                    self.first
                ));
            }
            None => (None, &self.first),
            Some(code) => {
                kron_proto::validate_user(&self.first)
                    .map_err(|reason| format!("invalid USER: {reason}"))?;
                (Some(self.first.clone()), code)
            }
        };
        check_code(code)?;
        Ok(ConfirmTarget {
            user,
            code: code.clone(),
        })
    }
}

/// A code is 6 or 8 ASCII digits. otpd has the last word; this only gives a clear message
/// for an obvious typo (or a user name given without a code) before anything is sent.
pub fn check_code(code: &str) -> Result<(), String> {
    let digits = code.bytes().all(|b| b.is_ascii_digit());
    if !digits || !matches!(code.len(), 6 | 8) {
        return Err(format!(
            "CODE must be the 6 or 8 digits your authenticator app shows (usage: {CONFIRM_USAGE})"
        ));
    }
    Ok(())
}

fn parse_user(raw: &str) -> Result<String, String> {
    kron_proto::validate_user(raw)?;
    Ok(raw.to_owned())
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses a command line, including the checks clap's derive cannot express, so every usage
/// error is reported by clap in one format and exits with status 2.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    if let Command::Confirm(confirm) = &cli.command
        && let Err(reason) = confirm.target()
    {
        let mut cmd = command();
        let confirm_cmd = cmd
            .find_subcommand_mut("confirm")
            .expect("confirm is defined");
        return Err(confirm_cmd.error(ErrorKind::ValueValidation, reason));
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_from(std::iter::once("kronctl").chain(args.iter().copied()))
    }

    fn confirm_target(args: &[&str]) -> ConfirmTarget {
        match parse(args).unwrap().command {
            Command::Confirm(confirm) => confirm.target().unwrap(),
            other => panic!("expected confirm, got {other:?}"),
        }
    }

    #[test]
    fn definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn confirm_with_one_positional_is_the_code_for_self() {
        let target = confirm_target(&["confirm", "123456"]);
        assert_eq!(
            target,
            ConfirmTarget {
                user: None,
                code: "123456".into()
            }
        );
    }

    #[test]
    fn confirm_with_two_positionals_is_user_then_code() {
        let target = confirm_target(&["confirm", "alice", "12345678"]);
        assert_eq!(
            target,
            ConfirmTarget {
                user: Some("alice".into()),
                code: "12345678".into()
            }
        );
    }

    #[test]
    fn confirm_refuses_bad_codes_without_echoing_them() {
        for args in [
            &["confirm", "12345"][..],
            &["confirm", "1234567"],
            &["confirm", "123456789"],
            &["confirm", "12a456"],
            &["confirm", "12a456b"],
            &["confirm", "١٢٣٤٥٦"], // Arabic-Indic digits are not ASCII digits
            &["confirm", "alice", "bob"],
            &["confirm", "alice", ""],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} must be refused"));
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}");
            assert_eq!(err.exit_code(), 2);
            assert!(!err.to_string().contains("12a456"));
        }
    }

    #[test]
    fn confirm_with_only_a_user_says_the_code_is_missing() {
        let err = parse(&["confirm", "alice"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(
            err.to_string().contains("missing CODE after USER alice"),
            "{err}"
        );
    }

    #[test]
    fn confirm_refuses_bad_user_and_wrong_arity() {
        let err = parse(&["confirm", "a:b", "123456"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(parse(&["confirm"]).is_err());
        assert_eq!(
            parse(&["confirm", "alice", "123456", "extra"])
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn user_arguments_are_validated() {
        for args in [
            &["status", "a b"][..],
            &["reset", "-rf"],
            &["unlock", "../x"],
            &["enroll", ""],
        ] {
            assert!(parse(args).is_err(), "{args:?} must be refused");
        }
        assert!(parse(&["reset"]).is_err(), "reset needs a USER");
        assert!(parse(&["unlock"]).is_err(), "unlock needs a USER");
    }

    #[test]
    fn enroll_takes_optional_user_and_png() {
        let cli = parse(&["enroll", "bob", "--png", "/tmp/q.png", "--json"]).unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Enroll { user, png } => {
                assert_eq!(user.as_deref(), Some("bob"));
                assert_eq!(png, Some(PathBuf::from("/tmp/q.png")));
            }
            other => panic!("expected enroll, got {other:?}"),
        }
        assert!(matches!(
            parse(&["enroll"]).unwrap().command,
            Command::Enroll {
                user: None,
                png: None
            }
        ));
    }

    #[test]
    fn doctor_takes_root_config_and_skips() {
        let cli = parse(&[
            "doctor",
            "--root",
            "/mnt/image",
            "--config",
            "/tmp/otpd.toml",
            "--skip",
            "clock-sync,otpd-reachable",
            "--skip",
            "admin-lockout",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Doctor(args) => {
                assert_eq!(args.root, PathBuf::from("/mnt/image"));
                assert_eq!(args.config, Some(PathBuf::from("/tmp/otpd.toml")));
                assert_eq!(args.skip, ["clock-sync", "otpd-reachable", "admin-lockout"]);
            }
            other => panic!("expected doctor, got {other:?}"),
        }
        match parse(&["doctor"]).unwrap().command {
            Command::Doctor(args) => {
                assert_eq!(args.root, PathBuf::from("/"));
                assert_eq!(args.config, None);
                assert!(args.skip.is_empty());
            }
            other => panic!("expected doctor, got {other:?}"),
        }
        let err = parse(&["doctor", "--skip", "nonsense"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn doctor_check_ids_are_unique_kebab_case() {
        let mut ids = DOCTOR_CHECKS.to_vec();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), DOCTOR_CHECKS.len());
        for id in DOCTOR_CHECKS {
            assert!(
                id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{id}"
            );
        }
    }

    #[test]
    fn bus_has_the_documented_env_and_default() {
        let cmd = command();
        let bus = cmd.get_arguments().find(|a| a.get_id() == "bus").unwrap();
        assert_eq!(bus.get_env(), Some(std::ffi::OsStr::new(BUS_ENV)));
        assert_eq!(bus.get_default_values(), [DEFAULT_BUS_ADDRESS]);
    }

    /// Flag vs environment precedence, without mutating this process's environment (which is
    /// unsafe while other test threads read it): the same `bus` argument is pointed at `PATH`,
    /// a variable that is always set, and must lose against an explicit flag.
    #[test]
    fn bus_flag_wins_over_environment() {
        let env_value = std::env::var("PATH").expect("PATH is set");
        let parse_with_env = |args: &[&str]| {
            let matches = command()
                .mut_arg("bus", |arg| arg.env("PATH"))
                .try_get_matches_from(std::iter::once("kronctl").chain(args.iter().copied()))
                .unwrap();
            Cli::from_arg_matches(&matches).unwrap()
        };
        assert_eq!(parse_with_env(&["status"]).bus, env_value);
        assert_eq!(
            parse_with_env(&["--bus", "unix:path=/x", "status"]).bus,
            "unix:path=/x"
        );
        // Global flags may also follow the subcommand.
        assert_eq!(
            parse_with_env(&["status", "--bus", "unix:path=/y"]).bus,
            "unix:path=/y"
        );
    }

    #[test]
    fn bus_defaults_without_flag_or_environment() {
        let matches = command()
            .mut_arg("bus", |arg| arg.env("KRON_TEST_VARIABLE_THAT_IS_NEVER_SET"))
            .try_get_matches_from(["kronctl", "list"])
            .unwrap();
        assert_eq!(
            Cli::from_arg_matches(&matches).unwrap().bus,
            DEFAULT_BUS_ADDRESS
        );
    }
}
