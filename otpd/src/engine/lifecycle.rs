//! Day-2 operations: recovery codes, encrypted backup and restore, migration from other
//! systems, and a user copying their own token to a second app.

use super::Engine;
use super::backup::{self, Backup, BackupToken, BackupUser};
use super::verdict::Verdict;
use crate::audit::Subject;
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::store::record::{ImportOutcome, Token, UserRecord};
use crate::store::recovery;
use crate::totp::{self, TokenParams};
use kron_proto::{ImportResult, MAX_IMPORT_TOKENS, TokenImport};
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
        let user = self.resolve_target(caller, user)?;
        let account = self.existing_account(&user)?;
        caller.may_manage(&account, &self.config, &*self.directory)?;
        // Renewing one's own set always takes a current code, admins included; only root may
        // renew without one.
        if account.uid == caller.uid && !caller.is_root() {
            self.limiter.spend(caller, now)?;
            self.prove_code(&user, code, caller, now)?;
        }
        let (codes, set) = recovery::generate(now).map_err(Error::System)?;
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

    /// Every token (`user` = "") or one user's, encrypted to `passphrase` (root only).
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
            self.store.list()?
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
        let sealed = backup::seal(&Backup::new(now, users), passphrase)?;
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
        let backup = backup::open(data, passphrase)?;
        let records = backup
            .users
            .iter()
            .map(|entry| Ok((entry.user.clone(), self.record_from_backup(entry)?)))
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
        let mut records = Vec::with_capacity(tokens.len());
        for token in tokens {
            let secret = Zeroizing::new(token.secret.clone());
            let record = self
                .record_from_import(&token, &secret, now)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", token.user)))?;
            records.push((token.user.clone(), record));
        }
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
        Ok(BackupUser {
            user,
            token,
            last_step: record.last_step,
            last_used: record.last_used,
            recovery: record.recovery,
            contact: record.contact,
        })
    }

    pub(super) fn record_from_backup(&self, entry: &BackupUser) -> Result<UserRecord> {
        let token = match &entry.token {
            Some(token) => {
                let secret =
                    backup::decode_secret(&token.secret).map_err(Error::InvalidArgument)?;
                Some(Token {
                    params: token.params,
                    secret: self.key.seal(&entry.user, &secret)?,
                    created: token.created,
                })
            }
            None => None,
        };
        Ok(UserRecord {
            token,
            last_step: entry.last_step,
            last_used: entry.last_used,
            recovery: entry.recovery.clone(),
            contact: entry.contact.clone(),
            ..UserRecord::default()
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
            Some(recovery::from_existing(
                &token.recovery_codes,
                token.digits,
                now,
            )?)
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

fn require_root(caller: Caller) -> Result<()> {
    if caller.is_root() {
        Ok(())
    } else {
        Err(Error::AccessDenied(
            "only root may export or import tokens".into(),
        ))
    }
}
