//! Day-2 operations: recovery codes, encrypted backup and restore, migration from other
//! systems, and a user copying their own token to a second app.

use super::backup::{self, Backup, BackupRecovery, BackupToken, BackupUser};
use super::backup_io;
use super::verdict::Verdict;
use super::{Engine, pages};
use crate::audit::Subject;
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::store::crypto::SecretKey;
use crate::store::record::{ImportOutcome, Token, UserRecord};
use crate::store::recovery::{self, RecoverySet, Scheme};
use crate::totp::{self, TokenParams};
use kron_proto::{ImportResult, MAX_IMPORT_TOKENS, MAX_ONE_MESSAGE_USERS, TokenImport};
use zeroize::Zeroizing;

impl Engine {
    /// A fresh recovery set for `user` ("" = the caller); the old set dies. A user renewing
    /// their own set must pass a current code; admins need none.
    pub fn recovery_codes(
        &self,
        caller: Caller,
        user: &str,
        code: &str,
        now: u64,
    ) -> Result<Vec<String>> {
        self.require_self_unless_admin(caller, user)?;
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_manage(&account, &self.config, &*self.directory)?;
        // Renewing one's own set always takes a current code, admins included; only root may
        // renew without one.
        if account.uid == caller.uid && !caller.is_root() {
            self.limiter.spend(caller, now)?;
            self.prove_code(&user, code, caller, now)?;
        }
        let (codes, set) = recovery::generate(self.recovery_keying(), &user, now)?;
        if !self.store.set_recovery(&user, set)? {
            return Err(Error::Conflict(format!(
                "{user} has no token; enroll one first"
            )));
        }
        self.audit
            .record("recovery-codes", &self.subject_of(&user, caller), "new set");
        Ok(codes.iter().map(|c| c.to_string()).collect())
    }

    /// The caller's own token as an otpauth URI, after a current code, if the config allows.
    pub fn export_token(&self, caller: Caller, code: &str, now: u64) -> Result<String> {
        if !self.config.allow_token_export {
            return Err(Error::AccessDenied(
                "token export is turned off (allow_token_export)".into(),
            ));
        }
        let user = self.resolve_target(caller, "")?;
        self.require_local_seeds("token export")?;
        self.limiter.spend(caller, now)?;
        self.prove_code(&user, code, caller, now)?;
        let token = self
            .store
            .get(&user)?
            .and_then(|r| r.token)
            .ok_or_else(|| Error::NotFound(format!("{user} has no token")))?;
        let secret = self.key.open(&user, &token.secret)?;
        let uri = self.otpauth_uri(&user, &secret, token.params)?;
        self.audit
            .record("token-exported", &self.subject_of(&user, caller), "");
        Ok(uri)
    }

    /// `Export`: every token (`user` = "") or one user's, encrypted to `passphrase`, in one
    /// message (root only). kronctl streams instead (`ExportBegin`, transfer.rs); this stays
    /// because `io.kron.Otpd1` never loses a method (an older kronctl, a site's script), but
    /// only for a store of at most [`MAX_ONE_MESSAGE_USERS`] ([`pages::one_message`]): a
    /// larger store is refused after a bounded read, never held whole (with its file) in
    /// memory.
    pub fn export(
        &self,
        caller: Caller,
        user: &str,
        passphrase: &str,
        now: u64,
    ) -> Result<Vec<u8>> {
        require_root(caller)?;
        self.require_local_seeds("kronctl export")?;
        let records = if user.is_empty() {
            pages::one_message(&*self.store)?.ok_or_else(|| {
                Error::Conflict(format!(
                    "the store holds more than {MAX_ONE_MESSAGE_USERS} users, too many for one \
                     message; a newer kronctl streams the export (ExportBegin)"
                ))
            })?
        } else {
            kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
            let record = self
                .store
                .get(user)?
                .ok_or_else(|| Error::NotFound(format!("nothing stored for {user}")))?;
            vec![(user.to_owned(), record)]
        };
        let users = records
            .into_iter()
            .filter(|(_, record)| record.token.is_some() || !record.contact.is_empty())
            .map(|(user, record)| self.backup_user(user, record))
            .collect::<Result<Vec<_>>>()?;
        let count = users.len();
        let sealed = backup_io::seal(&Backup::new(now, users), passphrase)?;
        self.audit.record(
            "exported",
            &self.subject_of(user, caller),
            &format!("{count} tokens"),
        );
        Ok(sealed)
    }

    /// Restores an export (root only); see [`Engine::store_imports`].
    pub fn import(
        &self,
        caller: Caller,
        data: &[u8],
        passphrase: &str,
        replace: bool,
        dry_run: bool,
    ) -> Result<Vec<ImportResult>> {
        require_root(caller)?;
        let backup = backup_io::open(data, passphrase)?;
        let records = backup
            .users
            .iter()
            .map(|entry| Ok((entry.user.clone(), record_from_backup(&self.key, entry)?)))
            .collect::<Result<Vec<_>>>()?;
        self.store_imports(caller, records, replace, dry_run)
    }

    /// Enrolls tokens migrated from another system (root only).
    pub fn import_tokens(
        &self,
        caller: Caller,
        tokens: Vec<TokenImport>,
        replace: bool,
        dry_run: bool,
        now: u64,
    ) -> Result<Vec<ImportResult>> {
        require_root(caller)?;
        if tokens.len() > MAX_IMPORT_TOKENS {
            return Err(Error::InvalidArgument(format!(
                "more than {MAX_IMPORT_TOKENS} tokens in one import"
            )));
        }
        // Sealing the secrets and hashing the recovery codes, on every core.
        let records = on_all_cores(&tokens, |index, token| {
            let secret = Zeroizing::new(token.secret.clone());
            let record = self.record_from_import(token, &secret, now).map_err(|e| {
                Error::InvalidArgument(backup::invalid_entry(index, &token.user, &e))
            })?;
            Ok((token.user.clone(), record))
        })?;
        self.store_imports(caller, records, replace, dry_run)
    }

    /// Stores checked records: users holding a confirmed token are kept unless `replace`.
    /// Everything was validated before the first write, so a bad entry changes nothing.
    pub(super) fn store_imports(
        &self,
        caller: Caller,
        records: Vec<(String, UserRecord)>,
        replace: bool,
        dry_run: bool,
    ) -> Result<Vec<ImportResult>> {
        let mut results = Vec::with_capacity(records.len());
        for (user, record) in records {
            let outcome = if dry_run {
                self.store
                    .get(&user)?
                    .unwrap_or_default()
                    .import_outcome(replace)
            } else if let Some(vault) = self.store.vault() {
                // The seed goes to the fleet's database, which encrypts it; sealed only in
                // memory until here.
                let seed = match &record.token {
                    Some(token) => Some(self.key.open(&user, &token.secret)?),
                    None => None,
                };
                vault.import(&user, &record, seed.as_deref().map(Vec::as_slice), replace)?
            } else {
                let incoming = match &record.token {
                    Some(token) => Some((token.params, self.key.open(&user, &token.secret)?)),
                    None => None,
                };
                let same_token = |stored: &Token| {
                    incoming.as_ref().is_some_and(|(params, secret)| {
                        stored.params == *params
                            && self
                                .key
                                .open(&user, &stored.secret)
                                .is_ok_and(|s| s == *secret)
                    })
                };
                self.store.import(&user, record, replace, &same_token)?
            };
            let (outcome, reason) = match outcome {
                ImportOutcome::Imported => ("imported", String::new()),
                ImportOutcome::Replaced => ("replaced", String::new()),
                ImportOutcome::Kept => (
                    "skipped",
                    "already enrolled (use --replace to overwrite)".to_string(),
                ),
            };
            if !dry_run && outcome != "skipped" {
                self.grace.forget(&user);
                self.audit
                    .record("imported", &self.subject_of(&user, caller), outcome);
            }
            results.push(ImportResult {
                user,
                outcome: outcome.into(),
                reason,
            });
        }
        Ok(results)
    }

    pub(super) fn backup_user(&self, user: String, record: UserRecord) -> Result<BackupUser> {
        let token = match &record.token {
            Some(token) => {
                let secret = self.key.open(&user, &token.secret)?;
                Some(BackupToken {
                    params: token.params,
                    secret: totp::base32(&secret),
                    created: token.created,
                })
            }
            None => None,
        };
        let recovery = record
            .recovery
            .as_ref()
            .map(|set| self.backup_recovery(&user, set))
            .transpose()?;
        Ok(BackupUser {
            user,
            token,
            last_step: record.last_step,
            last_used: record.last_used,
            recovery,
            contact: record.contact,
        })
    }

    /// A recovery set as exported: its key opened, so the set works on another host.
    fn backup_recovery(&self, user: &str, set: &RecoverySet) -> Result<BackupRecovery> {
        let key = match &set.scheme {
            Scheme::Argon2id => None,
            Scheme::HmacSha256 { key } => Some(hex::encode(self.key.open(user, key)?.as_slice())),
        };
        Ok(BackupRecovery {
            salt: set.salt.clone(),
            hashes: set.hashes.clone(),
            created: set.created,
            scheme: match set.scheme {
                Scheme::Argon2id => backup::ARGON2ID.into(),
                Scheme::HmacSha256 { .. } => backup::HMAC_SHA256.into(),
            },
            key,
        })
    }

    pub(super) fn record_from_import(
        &self,
        token: &TokenImport,
        secret: &[u8],
        now: u64,
    ) -> std::result::Result<UserRecord, String> {
        kron_proto::validate_user(&token.user)?;
        kron_proto::check_secret_len(secret)?;
        let params = TokenParams {
            algorithm: backup::parse_algorithm(&token.algorithm)?,
            digits: token.digits,
            period: token.period,
        };
        backup::validate_params(params)?;
        let recovery = if token.recovery_codes.is_empty() {
            None
        } else {
            recovery::check_existing(&token.recovery_codes, token.digits)?;
            Some(
                recovery::from_existing(
                    &token.recovery_codes,
                    self.recovery_keying(),
                    &token.user,
                    now,
                )
                .map_err(|e| e.to_string())?,
            )
        };
        Ok(UserRecord {
            token: Some(Token {
                params,
                secret: self
                    .key
                    .seal(&token.user, secret)
                    .map_err(|e| e.to_string())?,
                created: now,
            }),
            last_step: (token.last_step > 0).then_some(token.last_step),
            recovery,
            ..UserRecord::default()
        })
    }

    /// Self-service proof: a current code (or recovery code), with throttling and replay
    /// prevention exactly as at login.
    pub(super) fn prove_code(
        &self,
        user: &str,
        code: &str,
        caller: Caller,
        now: u64,
    ) -> Result<()> {
        if code.len() > kron_proto::MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("code too long".into()));
        }
        // Only the token (or a recovery code) proves the token: a code sent by email does not.
        let (verdict, checked) = self.verify(user, code, None, now)?;
        self.audit.record(
            verdict.event(),
            &self.subject_of(user, caller),
            &checked.note("kronctl proof"),
        );
        match verdict {
            Verdict::Accepted | Verdict::AcceptedRecovery { .. } | Verdict::AcceptedSent => Ok(()),
            Verdict::Throttled { until } => Err(Error::Throttled { until }),
            Verdict::Replayed => Err(Error::Rejected(
                "that code was already used; wait for the next one".into(),
            )),
            Verdict::Wrong => Err(Error::Rejected("wrong code".into())),
            Verdict::NoToken => Err(Error::NotFound(format!("{user} has no token"))),
        }
    }

    pub(super) fn subject_of<'a>(&self, user: &'a str, caller: Caller) -> Subject<'a> {
        Subject {
            user,
            caller_uid: caller.uid,
            ..Subject::default()
        }
    }
}

/// An entry of an export as stored here: its secrets sealed under this host's `key`.
pub(super) fn record_from_backup(key: &SecretKey, entry: &BackupUser) -> Result<UserRecord> {
    let token = match &entry.token {
        Some(token) => {
            let secret = backup::decode_secret(&token.secret).map_err(Error::InvalidArgument)?;
            Some(Token {
                params: token.params,
                secret: key.seal(&entry.user, &secret)?,
                created: token.created,
            })
        }
        None => None,
    };
    Ok(UserRecord {
        token,
        last_step: entry.last_step,
        last_used: entry.last_used,
        recovery: entry
            .recovery
            .as_ref()
            .map(|set| recovery_from_backup(key, &entry.user, set))
            .transpose()?,
        contact: entry.contact.clone(),
        ..UserRecord::default()
    })
}

/// An exported recovery set as stored here: its key sealed under this host's `key`.
fn recovery_from_backup(key: &SecretKey, user: &str, set: &BackupRecovery) -> Result<RecoverySet> {
    let scheme = match &set.key {
        None => Scheme::Argon2id,
        Some(set_key) => {
            let set_key = Zeroizing::new(
                hex::decode(set_key).map_err(|_| Error::InvalidArgument("bad key".into()))?,
            );
            Scheme::HmacSha256 {
                key: key.seal(user, &set_key)?,
            }
        }
    };
    Ok(RecoverySet {
        salt: set.salt.clone(),
        hashes: set.hashes.clone(),
        created: set.created,
        scheme,
    })
}

/// Threads one call spreads its work over at most: otpd's unit caps its tasks (`TasksMax=128`,
/// shared with tokio's pools and sled's), and a machine of a hundred cores must not make an
/// import fail for want of one.
const MAX_WORK_THREADS: usize = 16;

/// `work` on every item, split over the machine's cores (at most [`MAX_WORK_THREADS`]),
/// results in the order of `items`; the first error (in that order) if any fails.
fn on_all_cores<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(usize, &T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORK_THREADS);
    let per_thread = items.len().div_ceil(cores).max(64);
    let work = &work;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(per_thread)
            .enumerate()
            .map(|(part, chunk)| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, item)| work(part * per_thread + i, item))
                        .collect::<Result<Vec<R>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for part in parts {
            let done = part
                .join()
                .map_err(|_| Error::System("an import thread panicked".into()))?;
            out.extend(done?);
        }
        Ok(out)
    })
}

fn require_root(caller: Caller) -> Result<()> {
    if caller.is_root() {
        Ok(())
    } else {
        Err(Error::AccessDenied(
            "only root may export or import tokens".into(),
        ))
    }
}
