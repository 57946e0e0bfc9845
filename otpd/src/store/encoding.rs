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
//! | 1 | recovery sets without a scheme (argon2id): [`v1::Record`] |
//! | 2 | recovery sets name their scheme (`RecoverySet::scheme`): [`UserRecord`] |

use crate::error::Result;
use crate::store::error::StoreError;
use crate::store::record::UserRecord;

/// Records of versions whose recovery sets were all argon2id.
const BINARY_V1: u8 = 1;
/// The first byte of a record in the current layout. JSON records start with `{`.
const BINARY_V2: u8 = 2;

pub fn encode(record: &UserRecord) -> Result<Vec<u8>> {
    postcard::to_extend(record, vec![BINARY_V2]).map_err(|e| {
        StoreError::Record {
            user: String::new(),
            source: Box::new(e),
        }
        .into()
    })
}

pub fn decode(user: &str, bytes: &[u8]) -> Result<UserRecord> {
    let unreadable = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Record {
        user: user.to_owned(),
        source,
    };
    Ok(match bytes.split_first() {
        Some((&BINARY_V2, rest)) => {
            postcard::from_bytes(rest).map_err(|e| unreadable(Box::new(e)))?
        }
        Some((&BINARY_V1, rest)) => postcard::from_bytes::<v1::Record>(rest)
            .map_err(|e| unreadable(Box::new(e)))?
            .into(),
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| unreadable(Box::new(e)))?,
        _ => {
            return Err(StoreError::UnknownFormat {
                user: user.to_owned(),
            }
            .into());
        }
    })
}

/// Format byte 1: [`UserRecord`] as it was before recovery sets named their scheme.
mod v1 {
    use crate::delivery::sent::Outbox;
    use crate::store::record::{Pending, Token, UserRecord};
    use crate::store::recovery::{RecoverySet, Scheme};
    use kron_common::contact::Contact;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Record {
        token: Option<Token>,
        pending: Option<Pending>,
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
    struct Recovery {
        #[serde(with = "crate::serde_hex::hex_bytes")]
        salt: Vec<u8>,
        #[serde(with = "crate::serde_hex::hex_list")]
        hashes: Vec<Vec<u8>>,
        created: u64,
    }

    impl From<Record> for UserRecord {
        fn from(old: Record) -> UserRecord {
            UserRecord {
                token: old.token,
                pending: old.pending,
                last_step: old.last_step,
                last_used: old.last_used,
                failures: old.failures,
                next_attempt: old.next_attempt,
                last_attempt: old.last_attempt,
                recovery: old.recovery.map(|set| RecoverySet {
                    salt: set.salt,
                    hashes: set.hashes,
                    created: set.created,
                    scheme: Scheme::Argon2id,
                }),
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
    fn records_of_format_1_are_read_with_argon2_recovery_sets() {
        // A record as format 1 wrote it (the full record of the day).
        let old = hex::decode(concat!(
            "010101081e1801010101010101010101010101010101010101010101010124020202020202020202",
            "02020202020202020202020202020202020202020202020202020280e2cfaa060101081e18010101",
            "01010101010101010101010101010101010101010124020202020202020202020202020202020202",
            "02020202020202020202020202020202020280e2cfaa0684e9cfaa0601010001aad4821b81e2cfaa",
            "0602bce2cfaa0682e2cfaa060104040404040202050502060683e2cfaa06010d61406578616d706c",
            "652e636f6d01082b343933303132330101010403030303ace4cfaa0600",
        ))
        .unwrap();
        let mut expected = full_record();
        if let Some(set) = expected.recovery.as_mut() {
            set.scheme = Scheme::Argon2id;
        }
        assert_eq!(decode("alice", &old).unwrap(), expected);
        let again = encode(&decode("alice", &old).unwrap()).unwrap();
        assert_eq!(again[0], BINARY_V2, "rewritten in the current format");
    }

    #[test]
    fn the_binary_layout_is_pinned() {
        // Changing this means every store written so far reads differently: add a format
        // byte and keep a decoder for this layout instead (see the module comment).
        let expected = concat!(
            "020101081e1801010101010101010101010101010101010101010101010124020202020202020202",
            "02020202020202020202020202020202020202020202020202020280e2cfaa060101081e18010101",
            "01010101010101010101010101010101010101010124020202020202020202020202020202020202",
            "02020202020202020202020202020202020280e2cfaa0684e9cfaa0601010001aad4821b81e2cfaa",
            "0602bce2cfaa0682e2cfaa060104040404040202050502060683e2cfaa0601020707020808010d61",
            "406578616d706c652e636f6d01082b343933303132330101010403030303ace4cfaa0600",
        );
        assert_eq!(hex::encode(encode(&full_record()).unwrap()), expected);
    }

    #[test]
    fn garbage_is_an_error_that_names_the_user() {
        for bytes in [&b""[..], b"\x07abc", b"\x01\xff\xff", b"{not json"] {
            let error = decode("mallory", bytes).unwrap_err().to_string();
            assert!(error.contains("mallory"), "{error}");
        }
    }
}
