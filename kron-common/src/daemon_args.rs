//! The daemons' command lines. They live here, not in the daemons, so packaging can write their
//! man pages from the very definitions they parse with, without building the daemons.

use clap::Parser;
use std::path::PathBuf;

/// otpd — the kron daemon: decides every two-factor login and owns all token state.
#[derive(Debug, Parser)]
#[command(
    name = "otpd",
    version,
    about = "The kron daemon: decides every two-factor login and owns all token state",
    long_about = "otpd serves io.kron.Otpd on the system bus (or --bus). pam_kron.so asks it what each \
login needs; kronctl manages tokens through it. It keeps tokens encrypted in a sled store under \
state_dir and writes every decision to syslog (authpriv). Configuration: otpd.toml(5)."
)]
pub struct OtpdArgs {
    /// Configuration file [default: /etc/kron/otpd.toml; all defaults if that file is absent].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// D-Bus address to serve on (overrides the `bus` config key; default: the system bus).
    #[arg(long, value_name = "ADDRESS")]
    pub bus: Option<String>,
    /// Validate the configuration, print "ok" (or file:line: reason) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Also write audit lines to stderr (foreground runs, tests).
    #[arg(long)]
    pub log_stderr: bool,
}

/// kron-web — the HTTPS page behind kron's one-time enrollment links.
#[derive(Debug, Parser)]
#[command(
    name = "kron-web",
    version,
    about = "The page behind kron's one-time enrollment links",
    long_about = "kron-web serves the page a one-time enrollment link opens (kronctl enroll USER \
--link): the QR code, the key for manual entry and a form to confirm with a code. It reads the \
[web] section of otpd.toml(5), holds no secrets at rest and never reads otpd's store: it asks otpd \
over D-Bus, with the link's token as the only authority. It speaks HTTPS with the configured \
certificate, or plain HTTP on the loopback interface behind a TLS proxy."
)]
pub struct WebArgs {
    /// Configuration file, whose [web] section is read [default: /etc/kron/otpd.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// D-Bus address of the bus otpd is on (overrides the `bus` config key; default: the
    /// system bus).
    #[arg(long, value_name = "ADDRESS")]
    pub bus: Option<String>,
}
