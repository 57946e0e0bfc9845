//! What otpd and kronctl both read, and nothing that talks to a network or a store:
//!
//! | module | what |
//! |---|---|
//! | `daemon_args` | otpd's and kron-web's command lines (clap), for the daemons and their man pages |
//! | `config` | `/etc/kron/otpd.toml` parsed and checked, every error naming file:line; `[email]`, `[sms]`, `[codes]` and `[web]` included |
//! | `files` | reading a config file with a bound on its size |
//! | `template` | the placeholder language of the email and SMS texts |
//! | `contact` | email addresses and phone numbers: patterns, checks, masking; channel lists |
//! | `rules` | which `[[group]]` rule applies to an account and PAM service |
//! | `users` | accounts and groups through NSS (the `Directory` trait) |
//! | `qr` | QR codes for enrollment: terminal text, PNG, and SVG for kron-web's page |
//! | `passphrase` | how strong an export passphrase must be |
//! | `trust` | otpd's files, and whether root alone can change them and the path to them (StrictModes) |
//!
//! otpd decides logins with these; `kronctl doctor` predicts them with the very same code, and
//! kronctl links neither tokio, sled nor the SMTP and HTTP clients.

#![forbid(unsafe_code)]

pub mod config;
pub mod contact;
pub mod daemon_args;
pub mod files;
pub mod passphrase;
pub mod qr;
pub mod rules;
pub mod template;
pub mod trust;
pub mod users;
