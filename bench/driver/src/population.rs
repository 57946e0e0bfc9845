//! The benchmark's users: the same names, uids and secrets for all three modules, derived from
//! the user's index alone, so every subcommand (generation, import, logins) agrees without
//! passing secrets around. These are throwaway test secrets, not keys anyone uses.

/// First uid of the benchmark users: far above any real account on the machine.
pub const FIRST_UID: u64 = 2_000_000;
/// Primary group of every benchmark user, `kronbench` (only in the benchmark's private
/// /etc/group).
pub const GID: u64 = 1_999_999;
/// Bytes per secret: 160 bits, as RFC 4226 recommends and kron enrolls.
pub const SECRET_BYTES: usize = 20;
/// TOTP period, seconds, for every module.
pub const PERIOD: u64 = 30;

/// `kb0000042`: short, fixed width, valid for every module and for NSS.
pub fn name(index: u64) -> String {
    format!("kb{index:07}")
}

pub fn uid(index: u64) -> u64 {
    FIRST_UID + index
}

/// The secret of user `index`: splitmix64 over the index (deterministic, not secret).
pub fn secret(index: u64) -> [u8; SECRET_BYTES] {
    let mut state = index.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x6b72_6f6e_6265_6e63;
    let mut out = [0u8; SECRET_BYTES];
    for chunk in out.chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    out
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// RFC 4648 base32 without padding (google-authenticator's secret line).
pub fn base32(bytes: &[u8]) -> String {
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A seeded shuffle of `0..users`: the order in which phases take users, so a sample is spread
/// over the whole population (and over the whole store) rather than its first names.
pub fn shuffled(users: u64, seed: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..users).collect();
    let mut state = seed ^ 0x5eed;
    for i in (1..order.len()).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn secrets_differ_and_repeat() {
        assert_eq!(secret(7), secret(7));
        assert_ne!(secret(7), secret(8));
        let order = shuffled(1000, 1);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }
}
