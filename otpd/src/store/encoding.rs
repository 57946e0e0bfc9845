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
//! | 1 | [`Pending`](crate::store::record::Pending) without `link`, recovery sets without a scheme (argon2id): read by [`old`] |
//! | 2 | recovery sets without a scheme (argon2id): read by [`old`] |
//! | 3 | the current [`UserRecord`] (recovery sets name their `scheme`) |
//!
//! Old layouts are rewritten as the current one by the record's next change.

use crate::error::Result;
use crate::store::error::StoreError;
use crate::store::record::UserRecord;

/// Before one-time links and before recovery sets named their scheme.
const BINARY_V1: u8 = 1;
/// With one-time links; recovery sets still all argon2id.
const BINARY_V2: u8 = 2;
/// The first byte of a record in the current layout. JSON records start with `{`.
const BINARY_V3: u8 = 3;

pub fn encode(record: &UserRecord) -> Result<Vec<u8>> {
    postcard::to_extend(record, vec![BINARY_V3]).map_err(|e| {
        StoreError::Record {
            user: String::new(),
            source: Box::new(e),
        }
        .into()
    })
}

pub fn decode(user: &str, bytes: &[u8]) -> Result<UserRecord> {
    let unreadable = |source: postcard::Error| StoreError::Record {
        user: user.to_owned(),
        source: Box::new(source),
    };
    Ok(match bytes.split_first() {
        Some((&BINARY_V3, rest)) => postcard::from_bytes(rest).map_err(unreadable)?,
        Some((&BINARY_V2, rest)) => postcard::from_bytes::<old::RecordV2>(rest)
            .map_err(unreadable)?
            .into(),
        Some((&BINARY_V1, rest)) => postcard::from_bytes::<old::RecordV1>(rest)
            .map_err(unreadable)?
            .into(),
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| StoreError::Record {
            user: user.to_owned(),
            source: Box::new(e),
        })?,
        _ => {
            return Err(StoreError::UnknownFormat {
                user: user.to_owned(),
            }
            .into());
        }
    })
}

/// Layouts 1 and 2, field for field (postcard needs the exact order). Only
/// [`Pending`](crate::store::record::Pending) (no `link` in 1) and the recovery set (no
/// `scheme` in either: argon2id) differ from the current layout.
mod old {
    use crate::delivery::sent::Outbox;
    use crate::store::link::LinkRecord;
    use crate::store::record::{self, Token};
    use crate::store::recovery::{RecoverySet, Scheme};
    use kron_common::contact::Contact;
    use kron_proto::Channel;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct PendingV1 {
        token: Token,
        expires: u64,
        at_login: bool,
        delivered: Option<Channel>,
    }

    #[derive(Deserialize)]
    struct Recovery {
        #[serde(with = "crate::serde_hex::hex_bytes")]
        salt: Vec<u8>,
        #[serde(with = "crate::serde_hex::hex_list")]
        hashes: Vec<Vec<u8>>,
        created: u64,
    }

    impl From<Recovery> for RecoverySet {
        fn from(set: Recovery) -> Self {
            RecoverySet {
                salt: set.salt,
                hashes: set.hashes,
                created: set.created,
                scheme: Scheme::Argon2id,
            }
        }
    }

    /// Every field but `pending` and `recovery`, which differ between the layouts.
    #[derive(Deserialize)]
    struct Common<P> {
        token: Option<Token>,
        pending: Option<P>,
        last_step: Option<u64>,
        last_used: u64,
        failures: u32,
        next_attempt: u64,
        last_attempt: u64,
        recovery: Option<Recovery>,
        contact: Contact,
        outbox: Outbox,
    }

    #[derive(Deserialize)]
    pub(super) struct RecordV1(Common<PendingV1>);

    #[derive(Deserialize)]
    pub(super) struct RecordV2(Common<record::Pending>);

    impl<P> Common<P> {
        fn upgrade(self, pending: impl FnOnce(P) -> record::Pending) -> record::UserRecord {
            record::UserRecord {
                token: self.token,
                pending: self.pending.map(pending),
                last_step: self.last_step,
                last_used: self.last_used,
                failures: self.failures,
                next_attempt: self.next_attempt,
                last_attempt: self.last_attempt,
                recovery: self.recovery.map(RecoverySet::from),
                contact: self.contact,
                outbox: self.outbox,
            }
        }
    }

    impl From<RecordV1> for record::UserRecord {
        fn from(old: RecordV1) -> Self {
            old.0.upgrade(|p| record::Pending {
                token: p.token,
                expires: p.expires,
                at_login: p.at_login,
                delivered: p.delivered,
                link: None::<LinkRecord>,
            })
        }
    }

    impl From<RecordV2> for record::UserRecord {
        fn from(old: RecordV2) -> Self {
            old.0.upgrade(|p| p)
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
    use crate::store::recovery::{RecoverySet, Scheme};
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
                scheme: Scheme::HmacSha256 {
                    key: Sealed {
                        nonce: vec![7; 2],
                        ciphertext: vec![8; 2],
                    },
                },
            }),
            contact: Contact {
                email: Some("a@example.com".into()),
                phone: Some("+4930123".into()),
            },
            outbox,
        }
    }

    /// `full_record()` as an older layout could hold it: argon2id recovery set, and no link
    /// before layout 2.
    fn as_of(layout: u8) -> UserRecord {
        let mut record = full_record();
        if let Some(set) = record.recovery.as_mut() {
            set.scheme = Scheme::Argon2id;
        }
        if layout < 2 {
            record.pending.as_mut().unwrap().link = None;
        }
        record
    }

    #[test]
    fn records_round_trip_in_both_formats() {
        let record = full_record();
        let binary = encode(&record).unwrap();
        assert_eq!(binary[0], BINARY_V3);
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
            "030101081e1801010101010101010101010101010101010101010101010124020202020202020202",
            "02020202020202020202020202020202020202020202020202020280e2cfaa060101081e18010101",
            "01010101010101010101010101010101010101010124020202020202020202020202020202020202",
            "02020202020202020202020202020202020280e2cfaa0684e9cfaa0601010001040707070784e2cf",
            "aa0601010101aad4821b81e2cfaa0602bce2cfaa0682e2cfaa060104040404040202050502060683",
            "e2cfaa0601020707020808010d61406578616d706c652e636f6d01082b3439333031323301010104",
            "03030303ace4cfaa0600",
        );
        assert_eq!(hex::encode(encode(&full_record()).unwrap()), expected);
    }

    #[test]
    fn layout_1_is_still_read() {
        // The record as layout 1 wrote it: no link, an argon2id recovery set.
        let v1 = concat!(
            "010101081e1801010101010101010101010101010101010101010101010124020202020202020202",
            "02020202020202020202020202020202020202020202020202020280e2cfaa060101081e18010101",
            "01010101010101010101010101010101010101010124020202020202020202020202020202020202",
            "02020202020202020202020202020202020280e2cfaa0684e9cfaa0601010001aad4821b81e2cfaa",
            "0602bce2cfaa0682e2cfaa060104040404040202050502060683e2cfaa06010d61406578616d706c",
            "652e636f6d01082b343933303132330101010403030303ace4cfaa0600",
        );
        let record = decode("alice", &hex::decode(v1).unwrap()).unwrap();
        assert_eq!(record, as_of(1));
        assert_eq!(encode(&record).unwrap()[0], BINARY_V3, "rewritten as 3");
    }

    #[test]
    fn layout_2_is_still_read() {
        // The record as layout 2 wrote it: a link, an argon2id recovery set.
        let v2 = concat!(
            "020101081e1801010101010101010101010101010101010101010101010124020202020202020202",
            "02020202020202020202020202020202020202020202020202020280e2cfaa060101081e18010101",
            "01010101010101010101010101010101010101010124020202020202020202020202020202020202",
            "02020202020202020202020202020202020280e2cfaa0684e9cfaa0601010001040707070784e2cf",
            "aa0601010101aad4821b81e2cfaa0602bce2cfaa0682e2cfaa060104040404040202050502060683",
            "e2cfaa06010d61406578616d706c652e636f6d01082b343933303132330101010403030303ace4cf",
            "aa0600",
        );
        let record = decode("alice", &hex::decode(v2).unwrap()).unwrap();
        assert_eq!(record, as_of(2));
        assert_eq!(encode(&record).unwrap()[0], BINARY_V3, "rewritten as 3");
    }

    #[test]
    fn garbage_is_an_error_that_names_the_user() {
        for bytes in [
            &b""[..],
            b"\x07abc",
            b"\x01\xff\xff",
            b"\x03\xff",
            b"{not json",
        ] {
            let error = decode("mallory", bytes).unwrap_err().to_string();
            assert!(error.contains("mallory"), "{error}");
        }
    }
}
