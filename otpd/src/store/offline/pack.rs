//! A pack: for one user and one token (its generation), a bcrypt hash of the code of every time
//! step in a run, made by the database (`kron.offline_pack`) from the seed, which never leaves it.
//! Which step a typed code matches is a pure function of the pack, the code, the clock and the
//! newest step already used, so unit tests drive it with a fixed clock.
//!
//! Why bcrypt: a host must be able to check a code alone, so whoever has root on it can check
//! codes too, 10^6 candidates per step. A fast hash (HMAC, salted SHA-256) gives every code of
//! the window away in milliseconds; bcrypt (cost 6 by default, the database's `offline_cost`)
//! costs about 5 ms a candidate on a core here, so the code of one step costs hours of a core
//! and seconds to minutes of a GPU. docs/fleet.md states what that means for a root compromise.

use crate::totp::TokenParams;
use serde::{Deserialize, Serialize};

/// What the database hashes for a step: a label, the step and the code (at most 46 bytes, under
/// bcrypt's 72), so a hash of one step never matches at another.
pub fn hashed_input(step: u64, code: &str) -> String {
    format!("kron-offline-v1:{step}:{code}")
}

/// Hashes of a run of consecutive steps under one bcrypt salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The step of the first hash.
    pub first: u64,
    /// bcrypt's setting: `$2a$`, the cost, `$` and the 22-character salt.
    pub setting: String,
    /// The 31-character hash of each step from `first` on.
    pub hashes: Vec<String>,
}

impl Chunk {
    /// The last step this chunk covers.
    fn last(&self) -> Option<u64> {
        (self.hashes.len() as u64)
            .checked_sub(1)
            .map(|n| self.first + n)
    }

    fn hash_of(&self, step: u64) -> Option<String> {
        let index = usize::try_from(step.checked_sub(self.first)?).ok()?;
        self.hashes
            .get(index)
            .map(|hash| format!("{}{hash}", self.setting))
    }
}

/// The hashes of one user's next codes, as this host holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    /// The token the hashes are of: a reset or a new token makes them worthless.
    pub generation: i64,
    pub params: TokenParams,
    /// In step order, without gaps or overlaps.
    pub chunks: Vec<Chunk>,
    /// When the newest chunk was fetched (unix time).
    pub fetched: u64,
}

impl Pack {
    /// The last step the pack covers, if any.
    pub fn end(&self) -> Option<u64> {
        self.chunks.iter().filter_map(Chunk::last).max()
    }

    /// The first step the pack covers, if any.
    pub fn start(&self) -> Option<u64> {
        self.chunks
            .iter()
            .find(|c| !c.hashes.is_empty())
            .map(|c| c.first)
    }

    /// Whether the pack still has a hash for the step `now` falls in.
    pub fn covers(&self, now: u64) -> bool {
        let step = now / self.params.period.max(1);
        self.start().is_some_and(|s| s <= step) && self.end().is_some_and(|e| e >= step)
    }

    /// Appends a chunk that follows on; a chunk that overlaps or leaves a gap replaces the
    /// whole pack (the database only ever starts two steps back).
    pub fn extend(&mut self, chunk: Chunk) {
        match self.end() {
            Some(end) if chunk.first == end + 1 => self.chunks.push(chunk),
            _ => self.chunks = vec![chunk],
        }
        self.chunks.retain(|c| !c.hashes.is_empty());
    }

    /// Drops the hashes of steps before `step`: they can never be typed again.
    pub fn forget_before(&mut self, step: u64) {
        for chunk in &mut self.chunks {
            if let Some(drop) = step.checked_sub(chunk.first).filter(|&n| n > 0) {
                let drop = usize::try_from(drop)
                    .unwrap_or(usize::MAX)
                    .min(chunk.hashes.len());
                chunk.hashes.drain(..drop);
                chunk.first += drop as u64;
            }
        }
        self.chunks.retain(|c| !c.hashes.is_empty());
    }

    /// Steps covered.
    pub fn steps(&self) -> usize {
        self.chunks.iter().map(|c| c.hashes.len()).sum()
    }

    /// Whether `code` is the code of `step`, by the pack (false for a step it does not cover).
    fn is_code_of(&self, step: u64, code: &str) -> bool {
        let Some(hash) = self.chunks.iter().find_map(|c| c.hash_of(step)) else {
            return false;
        };
        bcrypt::verify(hashed_input(step, code), &hash).unwrap_or(false)
    }

    /// The step `code` is valid for at `now` within ±`skew` steps, as
    /// [`crate::totp::matching_step`] decides online: the earliest one after `used`, else the
    /// earliest one (a replay, which the caller refuses); `None` if none, or if the pack does
    /// not cover the step. Steps after `used` are tried first, so a fresh code costs at most
    /// 2 × skew + 1 hashes.
    pub fn matching_step(&self, code: &str, now: u64, skew: u8, used: Option<u64>) -> Option<u64> {
        if code.len() != usize::from(self.params.digits)
            || !code.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let origin = now / self.params.period.max(1);
        let window = origin.saturating_sub(u64::from(skew))..=origin + u64::from(skew);
        let fresh = |step: &u64| used.is_none_or(|u| *step > u);
        window
            .clone()
            .filter(fresh)
            .find(|&step| self.is_code_of(step, code))
            .or_else(|| {
                window
                    .filter(|s| !fresh(s))
                    .find(|&step| self.is_code_of(step, code))
            })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use kron_common::config::Algorithm;

    /// A pack made here the way the database makes one (bcrypt cost 4 to keep tests quick),
    /// for `codes` of consecutive steps from `first`.
    pub fn pack_of(first: u64, codes: &[&str]) -> Pack {
        let salt = [7u8; 16];
        let hashes: Vec<String> = codes
            .iter()
            .enumerate()
            .map(|(i, code)| {
                let full = bcrypt::hash_with_salt(hashed_input(first + i as u64, code), 4, salt)
                    .expect("bcrypt")
                    .format_for_version(bcrypt::Version::TwoA);
                full[29..].to_string()
            })
            .collect();
        let setting = bcrypt::hash_with_salt("x", 4, salt)
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoA)[..29]
            .to_string();
        Pack {
            generation: 1,
            params: TokenParams {
                algorithm: Algorithm::SHA1,
                digits: 6,
                period: 30,
            },
            chunks: vec![Chunk {
                first,
                setting,
                hashes,
            }],
            fetched: first * 30,
        }
    }

    #[test]
    fn a_hash_made_by_pgcrypto_checks_here() {
        // crypt('kron-offline-v1:59883234:287082', '$2a$04$.E8LWWeD5e7NNNucIAZkiO') on
        // PostgreSQL 15's pgcrypto.
        let pack = Pack {
            generation: 0,
            params: TokenParams {
                algorithm: Algorithm::SHA1,
                digits: 6,
                period: 30,
            },
            chunks: vec![Chunk {
                first: 59883234,
                setting: "$2a$04$.E8LWWeD5e7NNNucIAZkiO".into(),
                hashes: vec!["o7zlxN78WanvBqWzir6Zj6nc3jj0zOy".into()],
            }],
            fetched: 0,
        };
        let now = 59883234 * 30 + 5;
        assert_eq!(pack.matching_step("287082", now, 1, None), Some(59883234));
        assert_eq!(pack.matching_step("287083", now, 1, None), None);
    }

    #[test]
    fn codes_match_their_step_once_within_the_window() {
        let pack = pack_of(100, &["111111", "222222", "333333", "444444"]);
        let now = 101 * 30 + 10;
        assert_eq!(pack.matching_step("222222", now, 1, None), Some(101));
        assert_eq!(pack.matching_step("111111", now, 1, None), Some(100));
        assert_eq!(pack.matching_step("333333", now, 1, None), Some(102));
        // Outside ±1 step.
        assert_eq!(pack.matching_step("444444", now, 1, None), None);
        assert_eq!(pack.matching_step("444444", now, 2, None), Some(103));
        // A used step is still found (the caller refuses it as a replay).
        assert_eq!(pack.matching_step("222222", now, 1, Some(101)), Some(101));
        for bad in ["22222", "2222222", "22222a", "999999"] {
            assert_eq!(pack.matching_step(bad, now, 1, None), None, "{bad}");
        }
    }

    #[test]
    fn after_the_pack_runs_out_nothing_matches() {
        let pack = pack_of(100, &["111111", "222222"]);
        assert!(pack.covers(101 * 30 + 29));
        // The clock moved past the last step: the last code is still in the skew window at
        // step 102, and never after.
        assert!(!pack.covers(102 * 30));
        assert_eq!(pack.matching_step("222222", 102 * 30, 1, None), Some(101));
        assert_eq!(pack.matching_step("222222", 103 * 30, 1, None), None);
        assert_eq!(pack.matching_step("111111", 99 * 30, 0, None), None);
    }

    #[test]
    fn chunks_follow_on_and_old_steps_go() {
        let mut pack = pack_of(100, &["111111", "222222"]);
        let next = pack_of(102, &["333333"]).chunks.remove(0);
        pack.extend(next);
        assert_eq!(
            (pack.start(), pack.end(), pack.steps()),
            (Some(100), Some(102), 3)
        );
        pack.forget_before(101);
        assert_eq!(
            (pack.start(), pack.end(), pack.steps()),
            (Some(101), Some(102), 2)
        );
        assert_eq!(pack.matching_step("333333", 102 * 30, 0, None), Some(102));
        assert_eq!(pack.matching_step("111111", 100 * 30, 0, None), None);
        // A chunk that leaves a gap replaces the pack.
        pack.extend(pack_of(200, &["555555"]).chunks.remove(0));
        assert_eq!((pack.start(), pack.end()), (Some(200), Some(200)));
        pack.forget_before(1000);
        assert_eq!((pack.start(), pack.end(), pack.steps()), (None, None, 0));
    }
}
