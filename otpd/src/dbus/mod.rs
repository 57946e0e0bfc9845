//! The D-Bus face of otpd: what turns bus messages into engine calls and back.
//!
//! | file | what |
//! |---|---|
//! | `daemon.rs` | start-up and shutdown: arguments, config, state directory, key, store, bus |
//! | `bus.rs` | otpd on the bus: the name `io.kron.Otpd`, and reconnecting when the bus goes |
//! | `service.rs` | the `io.kron.Otpd1` methods: the caller's uid, engine on the right thread, reply once durable |
//! | `listen.rs` | otpd's own socket: systemd's or bound, per-uid connection slots, the `otpd-login` thread |
//! | `subordinate.rs` | whose subordinate uids are whose (`/etc/subuid`), kept off the socket's thread, so their connections count as their owner's |
//! | `peer.rs` | one connection on that socket: SO_PEERCRED read at accept, no lookups |
//! | `bounded.rs` | reading messages with a bound on their size before they are buffered, on the socket and the bus |
//! | `session.rs` | the caller's kernel audit session, for step-up grace |

mod bounded;
mod bus;
pub mod daemon;
pub mod listen;
mod peer;
pub mod service;
mod session;
mod subordinate;
