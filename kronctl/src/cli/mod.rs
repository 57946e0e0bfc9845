//! The command line of `kronctl`: clap definitions and the checks clap cannot express.
//!
//! Kept apart from everything else so packaging can build the man page kronctl(1) and shell
//! completions from [`command`] without linking the rest of the program's logic.
#![forbid(unsafe_code)]

mod fleet;

pub use fleet::{FleetArgs, FleetCommand, OwnerArgs};

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use kron_proto::{Channel, DEFAULT_BUS_ADDRESS};

/// Name of the environment variable that may carry `--bus`.
pub const BUS_ENV: &str = "KRON_BUS";

const CONFIRM_USAGE: &str = "kronctl confirm [USER] CODE";

const LONG_ABOUT: &str = "\
kronctl talks to otpd, the kron daemon, over D-Bus to manage TOTP second factors for Linux \
logins: enroll a token and confirm it, show its status, make recovery codes, and, as an \
administrator, list, reset and unlock users, back up and restore every token, and migrate \
tokens from google-authenticator and pam_oath. `kronctl doctor` checks the machine's sshd, PAM, \
D-Bus and clock setup.

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

  Recovery codes for a lost phone (yourself: asks for a current code first):
    kronctl recovery-codes
    sudo kronctl recovery-codes alice

  Back up every token, restore it (root; asks for a passphrase):
    sudo kronctl export /root/kron-backup.age
    sudo kronctl import /root/kron-backup.age

  Migrate from google-authenticator or pam_oath, looking first:
    sudo kronctl import --dry-run --google-authenticator --all-homes
    sudo kronctl import --oath-usersfile /etc/users.oath

  Talk to an otpd on a private bus:
    KRON_BUS=unix:path=/tmp/test-bus kronctl status

  Check the machine for mistakes that lock admins out or bypass the second factor:
    sudo kronctl doctor

  Fleet mode (one PostgreSQL database for many hosts, docs/fleet.md):
    sudo kronctl fleet status
    sudo kronctl fleet offline-add alice     # alice can log in here while the database is away
    sudo kronctl fleet push --json

Exit status:
  0  success
  1  otpd failed, or another error (e.g. writing the PNG file)
  2  usage error: bad command line, malformed user name or code
  3  otpd is not reachable (no bus at the address, otpd not running, no answer)
  4  access denied (also: enrolling needs the code sent by email or SMS first)
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
    ///
    /// Where the config asks for validated enrollment, a user who is not an administrator is
    /// first sent a code by email or SMS; kronctl asks for it (on the terminal, or a line on
    /// stdin) before the QR code is shown. With --send, an administrator has the enrollment
    /// sent to the user instead (email: QR code and URI; SMS: the key); nothing secret is
    /// printed, and the user confirms it with a code at the next login or with `kronctl
    /// confirm` before it expires.
    ///
    /// With --link, an administrator gets a one-time URL (and its QR code) instead: the page it
    /// opens (kron-web) shows the QR code and the key and confirms the token with a code; the
    /// link then dies. With --send link --via email|sms, otpd sends that URL to the user, and
    /// the administrator sees neither. A link lives for the config's `link_validity` (default
    /// 24 hours), until used, until `kronctl revoke-link`, until a newer enrollment replaces
    /// it, or until five wrong codes.
    #[command(after_help = "\
Examples:
  kronctl enroll
  kronctl enroll --png ~/kron-qr.png
  sudo kronctl enroll alice --json
  sudo kronctl enroll alice --send email
  sudo kronctl enroll alice --link
  sudo kronctl enroll alice --send link --via sms")]
    Enroll {
        /// Whose token to enroll (administrators); yourself when omitted
        #[arg(value_parser = parse_user)]
        user: Option<String>,

        /// Also write the QR code as a PNG image to FILE
        ///
        /// The file is created with mode 0600 because it holds the secret; an existing file
        /// (or symlink) at FILE is never overwritten. Delete it once the code is scanned.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["send", "link"])]
        png: Option<PathBuf>,

        /// Send the enrollment (email, sms), or a one-time link to it (link, with --via), to
        /// the user's contact instead of showing it (administrators)
        #[arg(long, value_name = "WHAT", requires = "user")]
        send: Option<SendKind>,

        /// Print a one-time link to the enrollment, and its QR code, instead of the enrollment
        /// itself (administrators)
        #[arg(long, requires = "user", conflicts_with = "send")]
        link: bool,

        /// The channel a link goes by, with --send link
        #[arg(long, value_name = "CHANNEL", requires = "send", value_parser = channel_parser())]
        via: Option<Channel>,
    },

    /// Kill the one-time link of a user, and the pending enrollment it shows (administrators)
    #[command(after_help = "\
Examples:
  sudo kronctl revoke-link alice")]
    RevokeLink {
        /// Whose link to revoke
        #[arg(value_parser = parse_user)]
        user: String,
    },

    /// Show or set the email address and phone number codes are sent to (administrators)
    ///
    /// Without options, shows both (masked). Phone numbers are in international form
    /// (+49 151 2345678). Addresses derived from the config's [contacts] patterns apply where
    /// none is set. A user cannot set their own.
    #[command(after_help = "\
Examples:
  sudo kronctl contact alice --email alice@example.com --phone '+49 151 2345 6712'
  sudo kronctl contact alice --clear-phone
  sudo kronctl contact alice")]
    Contact(ContactArgs),

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

    /// Make a fresh set of recovery codes, show them once; the previous set stops working
    ///
    /// Each code works once, typed at the ordinary code prompt, for a lost or broken phone.
    /// Renewing your own set needs a current code from your app (or a recovery code): from
    /// --code, else asked on the terminal (or read from stdin). Administrators renewing
    /// someone else's set need none.
    #[command(after_help = "\
Examples:
  kronctl recovery-codes
  sudo kronctl recovery-codes alice --json")]
    RecoveryCodes(RecoveryCodesArgs),

    /// Write every token (or one user's) to FILE, encrypted with a passphrase (root)
    ///
    /// The file is in the age format: `age -d FILE` opens it too. It holds every secret, the
    /// last used time steps and the recovery code hashes. The passphrase is asked twice on the
    /// terminal, or read from --passphrase-file, or from stdin when stdin is not a terminal;
    /// never from the command line; it must have at least 12 characters and be hard to guess.
    /// FILE is created with mode 0600 and never overwritten; it is written under a temporary
    /// name beside it and renamed to FILE only once complete and on disk, so a failure or a
    /// crash never leaves a truncated export at FILE. The file is fetched from otpd piece by
    /// piece (progress on a terminal), so stores of any size export.
    #[command(after_help = "\
Examples:
  sudo kronctl export /root/kron-backup.age
  sudo kronctl export alice.age --user alice --passphrase-file /root/pass")]
    Export(ExportArgs),

    /// Restore an export, or migrate tokens from google-authenticator or pam_oath (root)
    ///
    /// Without a source flag, PATH is a file written by `kronctl export`. With
    /// --google-authenticator, each PATH is a ~/.google_authenticator-format file (the user is
    /// its owner) or a directory of such files named after their users; --all-homes also reads
    /// every user's ~/.google_authenticator. With --oath-usersfile, PATH is pam_oath's users
    /// file. Prints what happened to each user: imported, replaced, or skipped and why, and a
    /// summary (a progress bar on stderr when it is a terminal). Users who already have a
    /// token are skipped unless --replace. Source files are never changed.
    #[command(
        override_usage = "kronctl import [OPTIONS] FILE\n       \
                          kronctl import [OPTIONS] --google-authenticator [--all-homes] [PATH]...\n       \
                          kronctl import [OPTIONS] --oath-usersfile PATH",
        after_help = "\
Examples:
  sudo kronctl import /root/kron-backup.age
  sudo kronctl import --dry-run --google-authenticator --all-homes
  sudo kronctl import --google-authenticator /home/alice/.google_authenticator /var/lib/ga/
  sudo kronctl import --oath-usersfile /etc/users.oath --json"
    )]
    Import(ImportArgs),

    /// Show your own token as a QR code and otpauth URI, to add it to a second app
    ///
    /// Needs a current code (from --code, else asked), and works only where otpd's config has
    /// `allow_token_export = true` (off by default).
    #[command(after_help = "\
Examples:
  kronctl export-token
  kronctl export-token --png ~/token.png")]
    ExportToken(ExportTokenArgs),

    /// Check this machine for mistakes that lock admins out or bypass the second factor
    ///
    /// Reads sshd's and PAM's configuration, the D-Bus policy and otpd's config, asks otpd
    /// over the bus, and checks the clock. Prints one line per finding with a one-line fix.
    /// Exit status 0 when nothing is wrong (warnings allowed), 1 when anything is.
    #[command(after_help = DOCTOR_AFTER_HELP)]
    Doctor(DoctorArgs),

    /// Set up and inspect fleet mode: one PostgreSQL database for many hosts (root)
    ///
    /// init and add-host connect as the database's owner with the credentials given for that
    /// call only; status and push use this host's [fleet] section; log reads the fleet's audit
    /// table. Every other command works unchanged on a fleet host and acts on the whole fleet.
    /// See docs/fleet.md.
    Fleet(FleetArgs),
}

/// `recovery-codes [USER] [--code CODE]`
#[derive(Debug, Args)]
pub struct RecoveryCodesArgs {
    /// Whose codes to renew (administrators); yourself when omitted
    #[arg(value_parser = parse_user)]
    pub user: Option<String>,

    /// A current code from your app, or a recovery code, proving it is you (self-service)
    ///
    /// Asked on the terminal when omitted and the set is your own.
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
}

/// `export FILE [--user USER] [--passphrase-file FILE]`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the export; must not exist yet
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Only this user's token (to move a person to another host)
    #[arg(long, value_name = "USER", value_parser = parse_user)]
    pub user: Option<String>,

    /// Read the passphrase from the first line of this file (root's or yours, mode 0600)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `import [FILE | --google-authenticator PATH... | --oath-usersfile PATH] ...`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export to restore, or the files and directories of the chosen source
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// PATHs are google-authenticator files or directories of them
    #[arg(long, conflicts_with = "oath_usersfile")]
    pub google_authenticator: bool,

    /// Also read ~/.google_authenticator of every account (with --google-authenticator)
    #[arg(long, requires = "google_authenticator")]
    pub all_homes: bool,

    /// PATH is pam_oath's users file
    #[arg(long)]
    pub oath_usersfile: bool,

    /// Overwrite the tokens of users who already have one
    #[arg(long)]
    pub replace: bool,

    /// Print what would happen; write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Read the export's passphrase from the first line of this file (root's or yours, mode 0600)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["google_authenticator", "oath_usersfile"]
    )]
    pub passphrase_file: Option<PathBuf>,
}

/// Where `import` reads from, once its arguments are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A file written by `kronctl export`.
    Backup(PathBuf),
    GoogleAuthenticator {
        paths: Vec<PathBuf>,
        all_homes: bool,
    },
    OathUsersfile(PathBuf),
}

impl ImportArgs {
    /// The source, with the arity clap cannot check on one shared positional.
    pub fn source(&self) -> Result<ImportSource, String> {
        if self.google_authenticator {
            if self.paths.is_empty() && !self.all_homes {
                return Err("--google-authenticator needs a PATH or --all-homes".into());
            }
            return Ok(ImportSource::GoogleAuthenticator {
                paths: self.paths.clone(),
                all_homes: self.all_homes,
            });
        }
        let [path] = self.paths.as_slice() else {
            return Err(if self.oath_usersfile {
                "--oath-usersfile takes exactly one PATH: the users file".into()
            } else {
                "import takes exactly one FILE (or --google-authenticator / --oath-usersfile)"
                    .into()
            });
        };
        Ok(if self.oath_usersfile {
            ImportSource::OathUsersfile(path.clone())
        } else {
            ImportSource::Backup(path.clone())
        })
    }
}

/// `export-token [--code CODE] [--png FILE]`
#[derive(Debug, Args)]
pub struct ExportTokenArgs {
    /// A current code from your app, proving it is you; asked on the terminal when omitted
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,

    /// Also write the QR code as a PNG image to FILE (mode 0600, never overwritten)
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
}

/// Every check `kronctl doctor` runs, by its stable id (see docs/kronctl.md).
pub const DOCTOR_CHECKS: [&str; 18] = [
    "otpd-config",
    "file-trust",
    "dbus-policy",
    "otpd-reachable",
    "otpd-socket",
    "sshd-config",
    "sshd-usepam",
    "sshd-kbdinteractive",
    "sshd-publickey",
    "sshd-no-first-factor",
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
    /// For images, chroots and tests. Symlinks are resolved inside DIR, as if it were /: an
    /// absolute link names a file under DIR, never this machine's. Accounts and groups still
    /// come from this machine's NSS, and otpd is still asked on --bus.
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

/// What `enroll --send` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendKind {
    /// The enrollment, by email (QR code and URI)
    Email,
    /// The enrollment, by SMS (the key)
    Sms,
    /// A one-time link to the enrollment, by the channel --via names
    Link,
}

impl SendKind {
    /// The channel an enrollment itself goes by; `None` for a link (it goes by --via).
    pub fn enrollment_channel(self) -> Option<Channel> {
        match self {
            SendKind::Email => Some(Channel::Email),
            SendKind::Sms => Some(Channel::Sms),
            SendKind::Link => None,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ContactArgs {
    /// Whose contact to show or set
    #[arg(value_parser = parse_user)]
    pub user: String,

    /// Set the email address
    #[arg(long, value_name = "ADDRESS", conflicts_with = "clear_email")]
    pub email: Option<String>,

    /// Set the phone number (international form: +, country code, number)
    #[arg(long, value_name = "NUMBER", conflicts_with = "clear_phone")]
    pub phone: Option<String>,

    /// Remove the stored email address
    #[arg(long)]
    pub clear_email: bool,

    /// Remove the stored phone number
    #[arg(long)]
    pub clear_phone: bool,
}

impl ContactArgs {
    /// The changes asked for, as (channel, address; "" clears).
    pub fn changes(&self) -> Vec<(Channel, &str)> {
        let mut changes = Vec::new();
        match (&self.email, self.clear_email) {
            (Some(address), _) => changes.push((Channel::Email, address.as_str())),
            (None, true) => changes.push((Channel::Email, "")),
            (None, false) => {}
        }
        match (&self.phone, self.clear_phone) {
            (Some(number), _) => changes.push((Channel::Sms, number.as_str())),
            (None, true) => changes.push((Channel::Sms, "")),
            (None, false) => {}
        }
        changes
    }
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

/// A code that proves who you are: a TOTP code or a recovery code (6 to 12 digits, dashes
/// and blanks allowed, as the codes are shown). Never repeated in the message.
pub fn check_proof_code(code: &str) -> Result<(), String> {
    let digits = code.bytes().filter(u8::is_ascii_digit).count();
    let clean = code
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'-' || b == b' ');
    if !clean || !(6..=12).contains(&digits) {
        return Err(
            "CODE must be the code your authenticator app shows, or one of your recovery codes"
                .into(),
        );
    }
    Ok(())
}

/// A channel by the name otpd and the config know it by (`email`, `sms`), which `--help` and
/// the completions list as the possible values.
fn channel_parser() -> impl TypedValueParser<Value = Channel> {
    PossibleValuesParser::new(Channel::ALL.map(Channel::as_str))
        .try_map(|name| Channel::parse(&name).ok_or("not a channel"))
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
    if let Command::Enroll { send, via, .. } = &cli.command {
        let reason = match (send, via) {
            (Some(SendKind::Link), None) => Some("--send link needs --via email or --via sms"),
            (Some(SendKind::Email | SendKind::Sms), Some(_)) => {
                Some("--via goes with --send link only")
            }
            _ => None,
        };
        if let Some(reason) = reason {
            let mut cmd = command();
            let enroll = cmd
                .find_subcommand_mut("enroll")
                .expect("enroll is defined");
            return Err(enroll.error(ErrorKind::ArgumentConflict, reason));
        }
    }
    if let Command::Confirm(confirm) = &cli.command
        && let Err(reason) = confirm.target()
    {
        let mut cmd = command();
        let confirm_cmd = cmd
            .find_subcommand_mut("confirm")
            .expect("confirm is defined");
        return Err(confirm_cmd.error(ErrorKind::ValueValidation, reason));
    }
    // Checked here rather than by a value parser, whose message would repeat the code.
    let proof = match &cli.command {
        Command::RecoveryCodes(args) => args.code.as_deref().map(|c| ("recovery-codes", c)),
        Command::ExportToken(args) => args.code.as_deref().map(|c| ("export-token", c)),
        _ => None,
    };
    if let Some((name, code)) = proof
        && let Err(reason) = check_proof_code(code)
    {
        let mut cmd = command();
        let sub = cmd.find_subcommand_mut(name).expect("defined above");
        return Err(sub.error(ErrorKind::ValueValidation, reason));
    }
    if let Command::Import(import) = &cli.command
        && let Err(reason) = import.source()
    {
        let mut cmd = command();
        let import_cmd = cmd
            .find_subcommand_mut("import")
            .expect("import is defined");
        return Err(import_cmd.error(ErrorKind::WrongNumberOfValues, reason));
    }
    Ok(cli)
}

#[cfg(test)]
mod tests;
