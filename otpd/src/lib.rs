//! otpd: the kron daemon. Owns every decision and all state; see docs/architecture.md.

pub mod config;
pub mod crypto;
pub mod error;
pub mod qr;
pub mod record;
pub mod store;
pub mod throttle;
pub mod totp;
pub mod audit;
pub mod authz;
pub mod engine;
pub mod messages;
pub mod policy;
pub mod sessions;
pub mod users;
pub mod service;
pub mod daemon;
