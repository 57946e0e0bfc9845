//! What otpd and kronctl both read, and nothing that talks to a network or a store:
//!
//! | module | what |
//! |---|---|
//! | `daemon_args` | otpd's command line (clap), for the daemon and its man page |
//! | `config` | `/etc/kron/otpd.toml` parsed and checked, every error naming file:line; `[email]`, `[sms]` and `[codes]` included |
//! | `template` | the placeholder language of the email and SMS texts |
//! | `contact` | email addresses and phone numbers: patterns, checks, masking; channel lists |
//! | `rules` | which `[[group]]` rule applies to an account and PAM service |
//! | `users` | accounts and groups through NSS (the `Directory` trait) |
//! | `passphrase` | how strong an export passphrase must be |
//! | `qr` | QR codes for enrollment: terminal text and PNG |
//! | `trust` | otpd's files, and whether root alone can change them and the path to them (StrictModes) |
//!
//! otpd decides logins with these; `kronctl doctor` predicts them with the very same code, and
//! kronctl links neither tokio, sled nor the SMTP and HTTP clients.

#![forbid(unsafe_code)]

pub mod config;
pub mod contact;
pub mod daemon_args;
pub mod passphrase;
pub mod qr;
pub mod rules;
pub mod template;
pub mod trust;
pub mod users;
