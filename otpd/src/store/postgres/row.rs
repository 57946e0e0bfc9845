//! A user row as `kron.get_user` returns it (JSON, never a seed) and the [`UserRecord`] the
//! engine works on. Where a sled record holds a sealed seed, a fleet record holds a reference:
//! nothing for the confirmed token, the pending enrollment's random id for a pending one (so
//! "is this still the enrollment the code was checked against" compares as before).

use crate::delivery::sent::Outbox;
use crate::error::{Error, Result};
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

#[derive(Debug, Deserialize)]
pub struct UserRow {
    pub name: String,
    pub version: i64,
    pub generation: i64,
    token: Option<TokenRow>,
    pending: Option<PendingRow>,
    last_step: Option<u64>,
    last_used: u64,
    failures: u32,
    next_attempt: u64,
    last_attempt: u64,
    recovery: Option<RecoverySet>,
    #[serde(default)]
    contact: Contact,
    #[serde(default)]
    outbox: Outbox,
}

#[derive(Debug, Deserialize)]
struct TokenRow {
    algorithm: Algorithm,
    digits: u8,
    period: u64,
    created: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct PendingRow {
    id: String,
    algorithm: Algorithm,
    digits: u8,
    period: u64,
    created: u64,
    expires: u64,
    at_login: bool,
    delivered: Option<Channel>,
}

impl UserRow {
    pub fn parse(json: &str) -> Result<UserRow> {
        serde_json::from_str(json)
            .map_err(|e| Error::Store(format!("fleet database: unreadable user row: {e}")))
    }

    pub fn record(&self) -> Result<UserRecord> {
        let token = self.token.as_ref().map(|t| Token {
            params: TokenParams {
                algorithm: t.algorithm,
                digits: t.digits,
                period: t.period,
            },
            secret: reference(Vec::new()),
            created: t.created.unwrap_or(0),
        });
        let pending = match &self.pending {
            None => None,
            Some(p) => Some(Pending {
                token: Token {
                    params: TokenParams {
                        algorithm: p.algorithm,
                        digits: p.digits,
                        period: p.period,
                    },
                    secret: reference(hex::decode(&p.id).map_err(|_| {
                        Error::Store("fleet database: malformed pending id".into())
                    })?),
                    created: p.created,
                },
                expires: p.expires,
                at_login: p.at_login,
                delivered: p.delivered,
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
    serde_json::to_string(value).map_err(|e| Error::Store(format!("encoding a row: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_records_without_seeds() {
        let row = UserRow::parse(
            r#"{"name": "alice", "token": {"digits": 6, "period": 30, "created": 1, "algorithm": "SHA1"},
            "outbox": {}, "contact": {"email": "a@x"}, "pending": {"id": "0102", "algorithm": "SHA1",
            "digits": 6, "period": 30, "created": 5, "expires": 9, "at_login": true, "delivered": "sms"},
            "version": 6, "failures": 2, "recovery": {"salt": "01", "hashes": ["bb"], "created": 1},
            "last_step": 59883058, "last_used": 5, "generation": 1, "last_attempt": 0, "next_attempt": 0}"#,
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
