//! `kronctl`: the command-line client of otpd, for users (enroll, confirm, status, recovery
//! codes) and administrators (list, reset, unlock, export, import and migration), and
//! `kronctl doctor`, which checks the machine's setup.
//! See docs/kronctl.md.
//!
//! It holds no policy: otpd authorizes every call by the caller's uid and decides everything;
//! kronctl turns a command line into one D-Bus call and the answer into text or JSON.

pub mod cli;
mod client;
mod commands;
mod doctor;
mod error;
mod fleet;
mod lifecycle;
mod migrate;
mod passphrase;
mod render;
mod secret_file;
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
