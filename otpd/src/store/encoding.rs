//! How a user record is written in the store: one format byte, then postcard (serde's compact
//! binary format: fields in declaration order, no names, integers as varints). An enrolled user
//! takes about 100 bytes instead of about 330 as JSON, and that is what sled keeps in memory and
//! on disk at a million users (docs/performance.md). Records written as JSON by earlier versions
//! are still read, and are rewritten in this format by their next change.
//!
//! Postcard carries no field names, so any change to [`UserRecord`] or a type inside it (a field
//! added, removed or moved, an enum variant moved) needs a new format byte and a decoder for the
//! old layout. `the_binary_layout_is_pinned` fails when that is forgotten.
//!
//! | byte | layout |
//! |---|---|
//! | 1 | before one-time links: [`Pending`] without `link` (read by [`v1`], rewritten as 2) |
//! | 2 | the current [`UserRecord`] |

use crate::error::{Error, Result};
use crate::store::record::UserRecord;

/// The first byte of a record in the layout before one-time links.
const BINARY_V1: u8 = 1;
/// The first byte of a record in the current layout. JSON records start with `{`.
const BINARY_V2: u8 = 2;

pub fn encode(record: &UserRecord) -> Result<Vec<u8>> {
    postcard::to_extend(record, vec![BINARY_V2]).map_err(|e| Error::Store(e.to_string()))
}

pub fn decode(user: &str, bytes: &[u8]) -> Result<UserRecord> {
    let unreadable =
        |e: &dyn std::fmt::Display| Error::Store(format!("record of {user} is unreadable: {e}"));
    match bytes.split_first() {
        Some((&BINARY_V2, rest)) => postcard::from_bytes(rest).map_err(|e| unreadable(&e)),
        Some((&BINARY_V1, rest)) => postcard::from_bytes::<v1::UserRecord>(rest)
            .map(UserRecord::from)
            .map_err(|e| unreadable(&e)),
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| unreadable(&e)),
        _ => Err(unreadable(&"unknown format")),
    }
}

/// Layout 1: the record as it was before one-time links, field for field (postcard needs the
/// exact order). Only [`Pending`](crate::store::record::Pending) differs.
mod v1 {
    use crate::delivery::sent::Outbox;
    use crate::store::record::{self, Token};
    use crate::store::recovery::RecoverySet;
    use kron_common::contact::Contact;
    use kron_proto::Channel;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct Pending {
        token: Token,
        expires: u64,
        at_login: bool,
        delivered: Option<Channel>,
    }

    #[derive(Deserialize)]
    pub(super) struct UserRecord {
        token: Option<Token>,
        pending: Option<Pending>,
        last_step: Option<u64>,
        last_used: u64,
        failures: u32,
        next_attempt: u64,
        last_attempt: u64,
        recovery: Option<RecoverySet>,
        contact: Contact,
        outbox: Outbox,
    }

    impl From<UserRecord> for record::UserRecord {
        fn from(old: UserRecord) -> Self {
            record::UserRecord {
                token: old.token,
                pending: old.pending.map(|p| record::Pending {
                    token: p.token,
                    expires: p.expires,
                    at_login: p.at_login,
                    delivered: p.delivered,
                    link: None,
                }),
                last_step: old.last_step,
                last_used: old.last_used,
                failures: old.failures,
                next_attempt: old.next_attempt,
                last_attempt: old.last_attempt,
                recovery: old.recovery,
                contact: old.contact,
                outbox: old.outbox,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::sent::{Outbox, Purpose, SentCode};
    use crate::store::crypto::Sealed;
    use crate::store::link::LinkRecord;
    use crate::store::record::Token;
    use crate::store::recovery::RecoverySet;
    use crate::totp::TokenParams;
    use kron_common::contact::Contact;
    use kron_proto::Channel;

    /// Every field set, so every type inside the record is in the bytes below.
    fn full_record() -> UserRecord {
        let token = Token {
            params: TokenParams {
                algorithm: kron_common::config::Algorithm::SHA256,
                digits: 8,
                period: 30,
            },
            secret: Sealed {
                nonce: vec![1; 24],
                ciphertext: vec![2; 36],
            },
            created: 1_700_000_000,
        };
        let outbox = Outbox {
            code: Some(SentCode {
                purpose: Purpose::Enrollment,
                channel: Channel::Sms,
                mac: vec![3; 4],
                expires: 1_700_000_300,
            }),
            ..Outbox::default()
        };
        UserRecord {
            token: Some(token.clone()),
            pending: Some(crate::store::record::Pending {
                token,
                expires: 1_700_000_900,
                at_login: true,
                delivered: Some(Channel::Email),
                link: Some(LinkRecord {
                    hash: vec![7; 4],
                    created: 1_700_000_004,
                    failures: 1,
                    sent: Some(Channel::Sms),
                }),
            }),
            last_step: Some(56_666_666),
            last_used: 1_700_000_001,
            failures: 2,
            next_attempt: 1_700_000_060,
            last_attempt: 1_700_000_002,
            recovery: Some(RecoverySet {
                salt: vec![4; 4],
                hashes: vec![vec![5; 2], vec![6; 2]],
                created: 1_700_000_003,
            }),
            contact: Contact {
                email: Some("a@example.com".into()),
                phone: Some("+4930123".into()),
            },
            outbox,
        }
    }

    #[test]
    fn records_round_trip_in_both_formats() {
        let record = full_record();
        let binary = encode(&record).unwrap();
        assert_eq!(binary[0], BINARY_V2);
        assert_eq!(decode("alice", &binary).unwrap(), record);
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(
            decode("alice", &json).unwrap(),
            record,
            "records from before"
        );
        assert!(
            binary.len() * 2 < json.len(),
            "{} vs {}",
            binary.len(),
            json.len()
        );
    }

    #[test]
    fn the_binary_layout_is_pinned() {
        // Changing this means every store written so far reads differently: add a format
        // byte and keep a decoder for this layout instead (see the module comment).
        let expected = concat!(
            "020101081e1801010101010101010101010101010101010101010101010124020202020202020202",
            "02020202020202020202020202020202020202020202020202020280e2cfaa060101081e18010101",
            "01010101010101010101010101010101010101010124020202020202020202020202020202020202",
            "02020202020202020202020202020202020280e2cfaa0684e9cfaa0601010001040707070784e2cf",
            "aa0601010101aad4821b81e2cfaa0602bce2cfaa0682e2cfaa060104040404040202050502060683",
            "e2cfaa06010d61406578616d706c652e636f6d01082b343933303132330101010403030303ace4cf",
            "aa0600",
        );
        assert_eq!(hex::encode(encode(&full_record()).unwrap()), expected);
    }

    #[test]
    fn layout_1_is_still_read() {
        // full_record() as layout 1 wrote it, before one-time links.
        let v1 = concat!(
            "010101081e1801010101010101010101010101010101010101010101010124020202020202020202",
            "02020202020202020202020202020202020202020202020202020280e2cfaa060101081e18010101",
            "01010101010101010101010101010101010101010124020202020202020202020202020202020202",
            "02020202020202020202020202020202020280e2cfaa0684e9cfaa0601010001aad4821b81e2cfaa",
            "0602bce2cfaa0682e2cfaa060104040404040202050502060683e2cfaa06010d61406578616d706c",
            "652e636f6d01082b343933303132330101010403030303ace4cfaa0600",
        );
        let mut expected = full_record();
        expected.pending.as_mut().unwrap().link = None;
        let bytes = hex::decode(v1).unwrap();
        assert_eq!(decode("alice", &bytes).unwrap(), expected);
        assert_eq!(encode(&expected).unwrap()[0], BINARY_V2, "rewritten as 2");
    }

    #[test]
    fn garbage_is_an_error_that_names_the_user() {
        for bytes in [&b""[..], b"\x07abc", b"\x01\xff\xff", b"{not json"] {
            let error = decode("mallory", bytes).unwrap_err().to_string();
            assert!(error.contains("mallory"), "{error}");
        }
    }
}
