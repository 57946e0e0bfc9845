//! The D-Bus face of otpd: what turns bus messages into engine calls and back.
//!
//! | file | what |
//! |---|---|
//! | `daemon.rs` | start-up and shutdown: arguments, config, state directory, key, store, bus |
//! | `service.rs` | the `io.kron.Otpd1` methods: caller uid from the bus, engine on the right thread, reply once durable |

pub mod daemon;
pub mod service;
