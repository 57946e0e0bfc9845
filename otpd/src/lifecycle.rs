//! Day-2 operations: recovery codes, encrypted backup and restore, migration from other
//! systems, and a user copying their own token to a second app.

use crate::audit::Subject;
use crate::authz::Caller;
use crate::backup::{self, Backup, BackupToken, BackupUser};
use crate::engine::{Engine, Verdict};
use crate::error::{Error, Result};
use crate::record::{ImportOutcome, Token, UserRecord};
use crate::recovery;
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
    fn store_imports(
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

    fn backup_user(&self, user: String, record: UserRecord) -> Result<BackupUser> {
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

    fn record_from_backup(&self, entry: &BackupUser) -> Result<UserRecord> {
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

    fn record_from_import(
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
    fn prove_code(&self, user: &str, code: &str, caller: Caller, now: u64) -> Result<()> {
        if code.len() > kron_proto::MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("code too long".into()));
        }
        // Only the token (or a recovery code) proves the token: a code sent by email does not.
        let verdict = self.verify(user, code, None, now)?;
        self.audit.record(
            verdict.event(),
            &self.subject_of(user, caller),
            "kronctl proof",
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

    fn subject_of<'a>(&self, user: &'a str, caller: Caller) -> Subject<'a> {
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

#[cfg(test)]
mod tests {
    use crate::authz::Caller;
    use crate::engine::LoginRequest;
    use crate::engine::tests::{NOW, ROOT, code, enroll, fixture, kind};
    use crate::error::Error;
    use kron_common::config::{Config, Mode};
    use kron_proto::{StepKind, TokenImport};

    const ALICE: Caller = Caller::new(1001);

    fn login(engine: &crate::engine::Engine, answer: &str, now: u64) -> kron_proto::Step {
        let request = LoginRequest {
            user: "alice".into(),
            service: "sshd".into(),
            ..LoginRequest::default()
        };
        let step = engine.begin_login(ROOT, request, now).unwrap();
        if kind(&step) != StepKind::Prompt {
            return step;
        }
        engine.answer(ROOT, &step.handle, answer, now).unwrap()
    }

    #[test]
    fn recovery_codes_work_once_and_die_on_renewal() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let e = &f.engine;
        let secret = enroll(e, "alice");
        assert!(
            matches!(
                e.recovery_codes(ALICE, "", "000000", NOW),
                Err(Error::Rejected(_))
            ),
            "self needs a code"
        );
        let first = e
            .recovery_codes(ALICE, "", &code(&secret, NOW), NOW)
            .unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(e.status(ROOT, "alice", NOW).unwrap().recovery_codes, 10);
        assert_eq!(kind(&login(e, &first[0], NOW + 1)), StepKind::Accept);
        assert_eq!(
            kind(&login(e, &first[0], NOW + 2)),
            StepKind::Deny,
            "single use"
        );
        assert_eq!(e.status(ROOT, "alice", NOW).unwrap().recovery_codes, 9);
        let second = e.recovery_codes(ROOT, "alice", "", NOW + 3).unwrap();
        assert_eq!(
            kind(&login(e, &first[1], NOW + 4)),
            StepKind::Deny,
            "old set died"
        );
        // Three failures in a row (a wrong proof, the replay, the dead code) set a 30 s wait.
        assert_eq!(kind(&login(e, &second[1], NOW + 5)), StepKind::Throttled);
        assert_eq!(kind(&login(e, &second[1], NOW + 34)), StepKind::Accept);
        assert!(
            matches!(
                e.recovery_codes(ROOT, "bob", "", NOW),
                Err(Error::Conflict(_))
            ),
            "no token"
        );
    }

    #[test]
    fn export_wipe_import_restores_logins_and_used_steps() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let e = &f.engine;
        let secret = enroll(e, "alice");
        let used = code(&secret, NOW);
        assert_eq!(kind(&login(e, &used, NOW)), StepKind::Accept);
        assert!(matches!(
            e.export(ALICE, "", "pw", NOW),
            Err(Error::AccessDenied(_))
        ));
        e.set_contact(ROOT, "bob", "sms", "+4915123456712").unwrap();
        let file = e.export(ROOT, "", "pass phrase", NOW).unwrap();
        e.reset(ROOT, "alice").unwrap();
        e.set_contact(ROOT, "bob", "sms", "").unwrap();
        assert!(e.import(ROOT, &file, "wrong", false, false).is_err());
        assert!(
            e.import(ROOT, &file[..file.len() / 2], "pass phrase", false, false)
                .is_err()
        );
        assert!(
            !e.status(ROOT, "alice", NOW).unwrap().enrolled,
            "failed imports change nothing"
        );
        let dry = e.import(ROOT, &file, "pass phrase", false, true).unwrap();
        assert_eq!(dry[0].outcome, "imported");
        assert!(
            !e.status(ROOT, "alice", NOW).unwrap().enrolled,
            "dry run writes nothing"
        );
        let done = e.import(ROOT, &file, "pass phrase", false, false).unwrap();
        assert_eq!(
            (done[0].user.as_str(), done[0].outcome.as_str()),
            ("alice", "imported")
        );
        assert_eq!(
            e.status(ROOT, "bob", NOW).unwrap().phone,
            "+49 *** ** 12",
            "contacts travel with exports"
        );
        assert_eq!(
            kind(&login(e, &used, NOW + 1)),
            StepKind::Deny,
            "used step stays used"
        );
        assert_eq!(
            kind(&login(e, &code(&secret, NOW + 30), NOW + 30)),
            StepKind::Accept
        );
        let again = e.import(ROOT, &file, "pass phrase", false, false).unwrap();
        assert_eq!(again[0].outcome, "skipped");
        assert_eq!(
            e.import(ROOT, &file, "pass phrase", true, false).unwrap()[0].outcome,
            "replaced"
        );
        assert_eq!(
            kind(&login(e, &code(&secret, NOW + 30), NOW + 31)),
            StepKind::Deny,
            "replacing with an older export keeps the steps used since"
        );
    }

    #[test]
    fn migrated_tokens_keep_secret_used_steps_and_scratch_codes() {
        let f = fixture(Config {
            default_mode: Mode::Require,
            ..Config::default()
        });
        let e = &f.engine;
        let secret = b"0123456789".to_vec(); // 80 bits, as google-authenticator makes them
        let token = TokenImport {
            user: "alice".into(),
            secret: secret.clone(),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            last_step: NOW / 30,
            recovery_codes: vec!["12345678".into()],
        };
        let bad = TokenImport {
            user: "bob".into(),
            digits: 7,
            ..token.clone()
        };
        assert!(
            e.import_tokens(ROOT, vec![token.clone(), bad], false, false, NOW)
                .is_err()
        );
        assert!(
            !e.status(ROOT, "alice", NOW).unwrap().enrolled,
            "one bad entry stops the whole import"
        );
        assert_eq!(
            e.import_tokens(ROOT, vec![token.clone()], false, false, NOW)
                .unwrap()[0]
                .outcome,
            "imported"
        );
        assert_eq!(
            kind(&login(e, &code(&secret, NOW), NOW)),
            StepKind::Deny,
            "step used before stays used"
        );
        assert_eq!(
            kind(&login(e, &code(&secret, NOW + 30), NOW + 30)),
            StepKind::Accept
        );
        assert_eq!(
            kind(&login(e, "12345678", NOW + 31)),
            StepKind::Accept,
            "scratch code"
        );
        assert_eq!(kind(&login(e, "12345678", NOW + 32)), StepKind::Deny);
        assert!(matches!(
            e.import_tokens(ALICE, vec![token], false, false, NOW),
            Err(Error::AccessDenied(_))
        ));
    }

    #[test]
    fn token_export_needs_config_and_a_code() {
        let off = fixture(Config::default());
        let secret = enroll(&off.engine, "alice");
        assert!(matches!(
            off.engine.export_token(ALICE, &code(&secret, NOW), NOW),
            Err(Error::AccessDenied(_))
        ));
        let on = fixture(Config {
            allow_token_export: true,
            ..Config::default()
        });
        let secret = enroll(&on.engine, "alice");
        assert!(matches!(
            on.engine.export_token(ALICE, "000000", NOW),
            Err(Error::Rejected(_))
        ));
        let uri = on
            .engine
            .export_token(ALICE, &code(&secret, NOW), NOW)
            .unwrap();
        assert!(uri.starts_with("otpauth://totp/"));
    }
}
