//! A one-time enrollment link as stored: part of the pending enrollment it shows, so the link
//! and its enrollment live, get replaced and die together, in one atomic change of the user's
//! record. Only the SHA-256 of the link's random part is kept, never the token.

pub use crate::store::record::LinkRecord;
use crate::store::record::{Pending, UserRecord};
use kron_proto::MAX_LINK_FAILURES;

/// What became of a wrong code typed on a link's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongCode {
    /// Counted; this many wrong codes are still allowed.
    Counted { left: u32 },
    /// That was the last one: the link and its enrollment are gone.
    Killed,
    /// The link was not there any more (replaced, confirmed or revoked meanwhile).
    Gone,
}

impl UserRecord {
    /// The pending enrollment whose link has `hash`, if it is alive at `now`: not expired, not
    /// out of attempts, and no confirmed token (which only an admin reset replaces). `hash` is
    /// compared in constant time.
    pub fn live_link(&self, hash: &[u8], now: u64) -> Option<&Pending> {
        if self.token.is_some() {
            return None;
        }
        self.live_pending(now).filter(|pending| {
            pending.link.as_ref().is_some_and(|link| {
                link.failures < MAX_LINK_FAILURES
                    && constant_time_eq::constant_time_eq(&link.hash, hash)
            })
        })
    }

    /// Counts a wrong code against the link with `hash`; the last allowed one removes the
    /// pending enrollment with its link.
    pub fn wrong_link_code(&mut self, hash: &[u8], now: u64) -> WrongCode {
        let Some(link) = self
            .pending
            .as_mut()
            .filter(|p| now < p.expires)
            .and_then(|p| p.link.as_mut())
            .filter(|link| constant_time_eq::constant_time_eq(&link.hash, hash))
        else {
            return WrongCode::Gone;
        };
        link.failures = link.failures.saturating_add(1);
        match MAX_LINK_FAILURES.saturating_sub(link.failures) {
            0 => {
                self.pending = None;
                WrongCode::Killed
            }
            left => WrongCode::Counted { left },
        }
    }

    /// Removes the pending enrollment if it has a link (`kronctl revoke-link`). True if it had.
    pub fn revoke_link(&mut self) -> bool {
        if self.pending.as_ref().is_some_and(|p| p.link.is_some()) {
            self.pending = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::tests::token;

    fn with_link(hash: u8, expires: u64) -> UserRecord {
        UserRecord {
            pending: Some(Pending {
                token: token(2),
                expires,
                at_login: false,
                delivered: None,
                link: Some(LinkRecord {
                    hash: vec![hash; 32],
                    created: 10,
                    failures: 0,
                    sent: None,
                }),
            }),
            ..UserRecord::default()
        }
    }

    #[test]
    fn a_link_lives_until_expiry_by_its_hash_only() {
        let record = with_link(7, 100);
        assert!(record.live_link(&[7; 32], 99).is_some());
        assert!(record.live_link(&[7; 32], 100).is_none(), "expired");
        assert!(record.live_link(&[8; 32], 50).is_none(), "another hash");
        assert!(record.live_link(&[7; 31], 50).is_none(), "a prefix");
        let mut enrolled = record.clone();
        enrolled.token = Some(token(1));
        assert!(enrolled.live_link(&[7; 32], 50).is_none(), "a token exists");
        let mut plain = record;
        plain.pending.as_mut().unwrap().link = None;
        assert!(plain.live_link(&[7; 32], 50).is_none(), "no link");
    }

    #[test]
    fn five_wrong_codes_kill_the_link() {
        let mut record = with_link(7, 100);
        for left in (1..MAX_LINK_FAILURES).rev() {
            assert_eq!(
                record.wrong_link_code(&[7; 32], 50),
                WrongCode::Counted { left }
            );
            assert!(record.live_link(&[7; 32], 50).is_some());
        }
        assert_eq!(record.wrong_link_code(&[7; 32], 50), WrongCode::Killed);
        assert_eq!(record.pending, None, "the enrollment dies with its link");
        assert_eq!(record.wrong_link_code(&[7; 32], 50), WrongCode::Gone);
        assert_eq!(
            with_link(7, 100).wrong_link_code(&[8; 32], 50),
            WrongCode::Gone
        );
    }

    #[test]
    fn revoking_removes_only_a_linked_enrollment() {
        let mut record = with_link(7, 100);
        assert!(record.revoke_link());
        assert!(!record.revoke_link());
        let mut plain = with_link(7, 100);
        plain.pending.as_mut().unwrap().link = None;
        assert!(!plain.revoke_link());
        assert!(
            plain.pending.is_some(),
            "an enrollment without a link stays"
        );
    }
}
