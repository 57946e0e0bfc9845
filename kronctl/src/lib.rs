//! `kronctl`: the command-line client of otpd, for users (enroll, confirm, status, recovery
//! codes) and administrators (list, reset, unlock, export, import and migration), and
//! `kronctl doctor`, which checks the machine's setup.
//! See docs/kronctl.md.
//!
//! It holds no policy: otpd authorizes every call by the caller's uid and decides everything;
//! kronctl turns a command line into one D-Bus call and the answer into text or JSON.
//!
//! - `lib.rs`: [`main`], the whole program; `main.rs` is one line over it
//! - `cli.rs`: the command line (clap); man pages and completions are generated from it
//! - `commands.rs`: one function per subcommand: ask otpd, render the answer, print it
//! - `list.rs`: `list`, a page of users at a time, written as the pages come
//! - `lifecycle/`: `recovery-codes`, `export`, `import` and `export-token`
//! - `doctor/`: `kronctl doctor`, one file or folder per family of checks
//! - `migrate/`: tokens of google-authenticator and pam_oath, found and parsed for `import`
//! - `client.rs`: the connection to otpd: one explicit bus address, one proxy
//! - `render.rs`: every command's output as text or JSON, pure functions
//! - `output.rs`: writing the output to stdout
//! - `error.rs`: the one error type, its one-line messages and exit codes
//! - `passphrase.rs`: passphrases and codes, from a file, the terminal or stdin
//! - `secret_file.rs`: new 0600 files that hold a secret (QR code PNGs, exports), renamed
//!   into place only once whole
//! - `time.rs`: dates in the local zone and "in 10 minutes"
//! - `sys/`: the few C library calls std and nix do not wrap: the only unsafe code
#![deny(unsafe_code)]

pub mod cli;
mod client;
mod commands;
mod doctor;
mod error;
mod fleet;
#[doc(hidden)]
pub mod fuzz;
mod lifecycle;
mod link;
mod list;
mod migrate;
mod output;
mod passphrase;
mod progress;
mod render;
mod secret_file;
mod sys;
mod time;

use std::process::ExitCode;

/// The whole of `kronctl`: parses the command line, makes the call, prints the answer.
pub fn main() -> ExitCode {
    // Usage errors exit 2 from here, with clap's message; --help and --version exit 0.
    let cli = cli::parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit());
    // zbus's own executor on this thread: kronctl makes one call and needs no runtime of its own.
    match zbus::block_on(commands::run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kronctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
