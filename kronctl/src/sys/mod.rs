//! The few C library calls neither std nor nix wraps, each behind a safe function: the only
//! unsafe code in kronctl (every other module forbids it), every block with its `// SAFETY:`.
//!
//! - `terminal.rs`: echo off on the terminal while a secret is typed (termios)
//! - `ntp.rs`: whether the kernel's clock is synchronised (`ntp_adjtime`, read-only)
//! - `localtime.rs`: the local zone's offset (`localtime_r`) and local time to Unix seconds (`mktime`)
//! - `passwd.rs`: every account NSS lists (`getpwent`)

pub mod localtime;
pub mod ntp;
pub mod passwd;
pub mod terminal;
