//! otpd: the kron daemon. Owns every decision and all state; see docs/architecture.md.

pub mod audit;
pub mod authz;
pub mod backup;
pub mod crypto;
pub mod daemon;
pub mod delivery;
pub mod encoding;
pub mod engine;
pub mod error;
pub mod grace;
pub mod lifecycle;
pub mod messages;
pub mod outbound;
pub mod policy;
pub mod record;
pub mod recovery;
pub mod sent;
pub mod service;
pub mod sessions;
pub mod store;
pub mod strangers;
pub mod throttle;
pub mod totp;
