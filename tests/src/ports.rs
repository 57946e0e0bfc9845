//! TCP ports for the servers the tests start (PostgreSQL, PgBouncer, sshd, kron-web,
//! chromedriver).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;

/// The lowest port handed out; ports below are left to the machine's own services.
const FLOOR: u16 = 10_000;

/// A port on 127.0.0.1 that nobody listens on now, taken below the kernel's ephemeral range.
///
/// Why not the port of a bind to port 0: that port comes from the ephemeral range, and between
/// this check and the server's own bind the kernel may give it to any outgoing connection
/// (another test's client on loopback); the server then cannot bind and does not start. Below
/// the range only another listener can hold it. Two tests drawing the same one of some 20,000
/// ports at the same moment is unlikely; PostgreSQL's first start and sshd retry on another
/// port if it happens, the other servers' tests would fail with a bind error.
pub fn free_port() -> u16 {
    let ceiling = ephemeral_low().unwrap_or(32_768);
    if ceiling <= FLOOR + 1_000 {
        return any_port();
    }
    let span = u64::from(ceiling - FLOOR);
    for _ in 0..1_000 {
        let candidate = FLOOR + (random() % span) as u16;
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
    any_port()
}

/// The first port of `net.ipv4.ip_local_port_range`.
fn ephemeral_low() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A port the kernel picks (from the ephemeral range).
fn any_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A random number (std's per-process random hasher keys; no cryptographic use).
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
}
