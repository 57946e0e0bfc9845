//! A user row as `kron.get_user` returns it (JSON, never a seed) and the [`UserRecord`] the
//! engine works on. Where a sled record holds a sealed seed, a fleet record holds a reference:
//! nothing for the confirmed token, the pending enrollment's random id for a pending one (so
//! "is this still the enrollment the code was checked against" compares as before).

use super::link::database_error;
use crate::delivery::sent::Outbox;
use crate::error::Result;
use crate::store::crypto::Sealed;
use crate::store::record::{Pending, Token, UserRecord};
use crate::store::recovery::RecoverySet;
use crate::totp::TokenParams;
use kron_common::config::Algorithm;
use kron_common::contact::Contact;
use kron_proto::Channel;
use serde::Deserialize;

/// Bytes of a pending enrollment's id.
pub const PENDING_ID_BYTES: usize = 16;

/// A row of `kron.users` as `to_jsonb` renders it, less the seeds.
#[derive(Debug, Deserialize)]
pub struct UserRow {
    pub name: String,
    pub version: i64,
    pub generation: i64,
    has_token: bool,
    algorithm: Option<Algorithm>,
    digits: Option<u8>,
    period: Option<u64>,
    created: Option<u64>,
    last_step: Option<u64>,
    last_used: u64,
    failures: u32,
    next_attempt: u64,
    last_attempt: u64,
    /// bytea as `to_jsonb` writes it: `"\\x0102…"`.
    pend_id: Option<String>,
    pend_algorithm: Option<Algorithm>,
    pend_digits: Option<u8>,
    pend_period: Option<u64>,
    pend_created: Option<u64>,
    pend_expires: Option<u64>,
    pend_at_login: Option<bool>,
    pend_delivered: Option<Channel>,
    recovery: Option<RecoverySet>,
    #[serde(default)]
    contact: Contact,
    #[serde(default)]
    outbox: Outbox,
}

impl UserRow {
    pub fn parse(json: &str) -> Result<UserRow> {
        serde_json::from_str(json)
            .map_err(|e| database_error(format!("fleet database: unreadable user row: {e}")))
    }

    pub fn record(&self) -> Result<UserRecord> {
        let malformed =
            || database_error(format!("fleet database: malformed row of {}", self.name));
        let token = match self.has_token {
            false => None,
            true => Some(Token {
                params: TokenParams {
                    algorithm: self.algorithm.ok_or_else(malformed)?,
                    digits: self.digits.ok_or_else(malformed)?,
                    period: self.period.ok_or_else(malformed)?,
                },
                secret: reference(Vec::new()),
                created: self.created.unwrap_or(0),
            }),
        };
        let pending = match &self.pend_id {
            None => None,
            Some(id) => Some(Pending {
                token: Token {
                    params: TokenParams {
                        algorithm: self.pend_algorithm.ok_or_else(malformed)?,
                        digits: self.pend_digits.ok_or_else(malformed)?,
                        period: self.pend_period.ok_or_else(malformed)?,
                    },
                    secret: reference(
                        id.strip_prefix("\\x")
                            .and_then(|hex| hex::decode(hex).ok())
                            .ok_or_else(malformed)?,
                    ),
                    created: self.pend_created.unwrap_or(0),
                },
                expires: self.pend_expires.unwrap_or(0),
                at_login: self.pend_at_login.unwrap_or(false),
                delivered: self.pend_delivered,
                // Links are not made in fleet mode (the page would need the seed).
                link: None,
            }),
        };
        Ok(UserRecord {
            token,
            pending,
            last_step: self.last_step,
            last_used: self.last_used,
            failures: self.failures,
            next_attempt: self.next_attempt,
            last_attempt: self.last_attempt,
            recovery: self.recovery.clone(),
            contact: self.contact.clone(),
            outbox: self.outbox.clone(),
        })
    }
}

/// The stand-in for a seed that stays in the database: its id, and no ciphertext.
pub fn reference(id: Vec<u8>) -> Sealed {
    Sealed {
        nonce: id,
        ciphertext: Vec::new(),
    }
}

/// The id of a pending enrollment (see [`reference`]).
pub fn pending_id(pending: &Pending) -> &[u8] {
    &pending.token.secret.nonce
}

/// The algorithm's name as the database functions take it.
pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::SHA1 => "SHA1",
        Algorithm::SHA256 => "SHA256",
        Algorithm::SHA512 => "SHA512",
    }
}

/// JSON text for a jsonb parameter.
pub fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| database_error(format!("encoding a row: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_records_without_seeds() {
        let row = UserRow::parse(
            r#"{"name": "alice", "has_token": true, "digits": 6, "period": 30, "created": 1,
            "algorithm": "SHA1", "outbox": {}, "contact": {"email": "a@x"}, "pend_id": "\\x0102",
            "pend_algorithm": "SHA1", "pend_digits": 6, "pend_period": 30, "pend_created": 5,
            "pend_expires": 9, "pend_at_login": true, "pend_delivered": "sms", "version": 6,
            "failures": 2, "recovery": {"salt": "01", "hashes": ["bb"], "created": 1},
            "last_step": 59883058, "last_used": 5, "generation": 1, "last_attempt": 0,
            "next_attempt": 0}"#,
        )
        .unwrap();
        let record = row.record().unwrap();
        assert!(record.token.as_ref().unwrap().secret.ciphertext.is_empty());
        let pending = record.pending.as_ref().unwrap();
        assert_eq!(pending_id(pending), [1, 2]);
        assert_eq!(pending.delivered, Some(Channel::Sms));
        assert_eq!(record.recovery.unwrap().hashes, vec![vec![0xbb]]);
        assert_eq!(record.contact.email.as_deref(), Some("a@x"));
        assert_eq!((record.failures, record.last_step), (2, Some(59883058)));
    }
}
