//! Rate limits for the page of one-time links (`ShowLink`, `ConfirmLink`): per client address
//! and per link, each a token bucket in memory (GCRA: one "theoretical arrival time" per key).
//!
//! They bound load and noise, not guessing: a link token has 256 random bits, and wrong codes
//! are bounded per link by the store (five kill the link). So a full table lets requests
//! through rather than lock out everyone (many addresses are cheap to an attacker, and IPv6
//! ones especially: a client is counted by its /64).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Requests one client may make at once, and then one per `CLIENT_INTERVAL` seconds.
const CLIENT_BURST: u64 = 30;
const CLIENT_INTERVAL: u64 = 4;
/// Requests for one link at once (opening, a mail scanner, a few codes), then one per
/// `LINK_INTERVAL` seconds.
const LINK_BURST: u64 = 20;
const LINK_INTERVAL: u64 = 10;
/// Keys tracked at once per table.
const MAX_KEYS: usize = 65_536;

/// The buckets of both kinds.
#[derive(Default)]
pub struct LinkLimiter {
    clients: Buckets<IpAddr>,
    links: Buckets<[u8; 32]>,
}

impl LinkLimiter {
    /// Spends one request of `client`'s budget; `Err(until)` when it is spent.
    pub fn spend_client(&self, client: IpAddr, now: u64) -> Result<(), u64> {
        self.clients
            .spend(network_of(client), now, CLIENT_INTERVAL, CLIENT_BURST)
    }

    /// Spends one request of the budget of the link whose token hashes to `hash`.
    pub fn spend_link(&self, hash: [u8; 32], now: u64) -> Result<(), u64> {
        self.links.spend(hash, now, LINK_INTERVAL, LINK_BURST)
    }
}

/// What one client is counted as: an IPv4 address, or the /64 of an IPv6 address (one
/// subscriber's network); an IPv4 address mapped into IPv6 counts as the IPv4 address.
fn network_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::from(segments)
            }
        },
    }
}

/// Theoretical arrival times by key.
struct Buckets<K> {
    tats: Mutex<HashMap<K, u64>>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            tats: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Buckets<K> {
    /// GCRA: a request is allowed while the key's arrival time, pushed on by `interval` per
    /// request, stays within `burst` intervals of now.
    fn spend(&self, key: K, now: u64, interval: u64, burst: u64) -> Result<(), u64> {
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        if tats.len() >= MAX_KEYS && !tats.contains_key(&key) {
            // Keys whose bucket has refilled limit nothing: drop them first.
            tats.retain(|_, tat| *tat > now);
            if tats.len() >= MAX_KEYS {
                return Ok(());
            }
        }
        let tat = tats.entry(key).or_insert(now);
        let next = (*tat).max(now).saturating_add(interval);
        let limit = now.saturating_add(interval.saturating_mul(burst));
        if next > limit {
            return Err(next - limit + now);
        }
        *tat = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_a_burst_then_a_steady_rate() {
        let limiter = LinkLimiter::default();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..CLIENT_BURST {
            limiter.spend_client(client, 1000).unwrap();
        }
        let until = limiter.spend_client(client, 1000).unwrap_err();
        assert_eq!(until, 1000 + CLIENT_INTERVAL);
        assert!(limiter.spend_client(client, until).is_ok());
        assert!(limiter.spend_client(client, until).is_err());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(limiter.spend_client(other, 1000).is_ok(), "per address");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let limiter = LinkLimiter::default();
        for n in 0..CLIENT_BURST {
            let address: IpAddr = format!("2001:db8:1:2::{n:x}").parse().unwrap();
            limiter.spend_client(address, 50).unwrap();
        }
        let sibling: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(limiter.spend_client(sibling, 50).is_err());
        let neighbour: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.spend_client(neighbour, 50).is_ok());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(network_of(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_link_gets_its_own_budget() {
        let limiter = LinkLimiter::default();
        for _ in 0..LINK_BURST {
            limiter.spend_link([1; 32], 0).unwrap();
        }
        assert!(limiter.spend_link([1; 32], 0).is_err());
        assert!(limiter.spend_link([2; 32], 0).is_ok());
        assert!(limiter.spend_link([1; 32], LINK_INTERVAL).is_ok());
    }
}
