//! otpd: the kron daemon. Owns every decision and all state; see docs/architecture.md.

pub mod qr;
