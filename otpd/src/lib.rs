//! otpd: the kron daemon. Owns every decision and all state; see docs/architecture.md.
//!
//! | folder / file | what |
//! |---|---|
//! | `dbus/` | the D-Bus face: start-up (`daemon.rs`) and the `io.kron.Otpd1` methods (`service.rs`) |
//! | `engine/` | the core: login conversations, token management, email and SMS, backups |
//! | `policy/` | where a login is decided, who may do what, step-up grace, unknown names |
//! | `store/` | all durable state: the `Store` trait and its sled backend, records, encryption, throttle arithmetic, recovery codes |
//! | `delivery/` | sending email and SMS, and the sent codes with their budget |
//! | `totp.rs` | TOTP per RFC 6238 through totp-rs |
//! | `audit.rs` | one syslog line per decision |
//! | `supervise.rs` | background tasks whose panic ends otpd rather than their work |
//! | `error.rs` | the one error type, and its D-Bus mapping |
//! | `serde_hex.rs` | byte strings in records: hex in JSON, bytes in postcard |
//!
//! Layers only call downwards: dbus → engine → policy → store → delivery, with `totp`,
//! `audit`, `serde_hex`, `sparse_log`, `supervise` and `error` below them all.

pub mod audit;
pub mod clock;
pub mod dbus;
pub mod delivery;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod policy;
pub mod serde_hex;
pub mod sparse_log;
pub mod store;
pub mod supervise;
pub mod totp;
