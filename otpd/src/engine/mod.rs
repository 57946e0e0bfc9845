//! The daemon's core: login conversations and token management, independent of D-Bus.
//! Every entry point takes the caller's uid (as the bus reported it) and the current time, so
//! unit tests drive it with a fixed clock and fake accounts.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Engine`]: what it holds, and the helpers every part uses |
//! | `login.rs` | the login conversation: `BeginLogin`, `Answer`, enrollment at login |
//! | `verdict.rs` | the verdict on a typed code: TOTP, recovery or sent code, throttle charge, replay |
//! | `tokens.rs` | token management: enroll, confirm, status, list, reset, unlock |
//! | `pages.rs` | reading a store a page at a time: page bounds, where the next page begins, one-message answers |
//! | `outbound.rs` | email and SMS: contacts, sending codes within the budget, delivered enrollments |
//! | `sending.rs` | one code on its way: the send, its outcome, a login's bounded wait for it |
//! | `links.rs` | one-time enrollment links: make, revoke, report, and the page's show and confirm |
//! | `lifecycle.rs` | recovery codes, backup and restore, migration imports, token export |
//! | `backup.rs` | the backup file: JSON in an age file encrypted to a passphrase |
//! | `backup_io.rs` | that file written and read a user at a time (any size, bounded memory), or in one piece |
//! | `transfer.rs` | streamed export and import: the cursors and sessions between calls |
//! | `fleet.rs` | `kronctl fleet`: init, add-host, status, push (a page at a time), log (root) |
//! | `sessions.rs` | logins waiting at the prompt, in memory and bounded |
//! | `messages.rs` | every text a person sees during a login |
//! | `tests/` | the engine's unit tests, by part, on a fixed clock |

#![forbid(unsafe_code)]

mod backup;
pub(crate) mod backup_io;
pub mod fleet;
mod lifecycle;
mod links;
mod login;
mod messages;
mod outbound;
mod pages;
mod sending;
mod sessions;
#[cfg(test)]
mod tests;
mod tokens;
mod transfer;
mod verdict;

use crate::audit::{Audit, Subject};
use crate::delivery::Deliver;
use crate::error::{Error, Result};
use crate::policy::LoginRequest;
use crate::policy::authz::Caller;
use crate::policy::grace::GraceLedger;
use crate::policy::links::LinkLimiter;
use crate::policy::strangers::{SelfServiceLimiter, StrangerThrottle};
use crate::store::crypto::SecretKey;
use crate::store::record::{Pending, Token};
use crate::store::{Durable, Store};
use crate::totp::{self, TokenParams};
use kron_common::config::Config;
use kron_common::users::Directory;
use kron_proto::{Step, StepKind};
use sessions::Sessions;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Everything a decision needs. The parts in the files beside this one are `impl Engine`
/// blocks; nothing outside the engine sees its fields.
pub struct Engine {
    config: Config,
    /// Shared with a send that finishes after its login stopped waiting (`outbound.rs`), as
    /// are `audit`, `delivery` and `sending`.
    store: Arc<dyn Store>,
    /// Shared with the threads that check an import as it arrives (`transfer.rs`).
    key: Arc<SecretKey>,
    directory: Box<dyn Directory>,
    audit: Arc<Audit>,
    sessions: Sessions,
    grace: GraceLedger,
    strangers: StrangerThrottle,
    limiter: SelfServiceLimiter,
    links: LinkLimiter,
    transfers: transfer::Transfers,
    hostname: String,
    delivery: Arc<dyn Deliver>,
    /// Codes whose email or SMS is being sent (`outbound.rs`).
    sending: Arc<crate::delivery::sent::SendsInFlight>,
    /// How long a login waits for its code's send before it prompts anyway (`outbound.rs`).
    send_wait: std::time::Duration,
}

impl Engine {
    pub fn new(
        config: Config,
        store: Box<dyn Store>,
        key: SecretKey,
        directory: Box<dyn Directory>,
        audit: Audit,
        hostname: String,
        delivery: Box<dyn Deliver>,
    ) -> Engine {
        Engine {
            config,
            store: Arc::from(store),
            key: Arc::new(key),
            directory,
            audit: Arc::new(audit),
            sessions: Sessions::default(),
            grace: GraceLedger::default(),
            strangers: StrangerThrottle::default(),
            limiter: SelfServiceLimiter::default(),
            links: LinkLimiter::default(),
            transfers: transfer::Transfers::default(),
            hostname,
            delivery: Arc::from(delivery),
            sending: Default::default(),
            send_wait: sending::LOGIN_SEND_WAIT,
        }
    }

    /// Resolves once store write number `write` ([`crate::store::own_writes`]) and all before
    /// it are on the device; replies wait for it.
    pub fn durable_through(&self, write: u64) -> Durable {
        self.store.durable_through(write)
    }

    /// Until when a login's call may wait for the email or SMS it sends: [`Engine::send_wait`]
    /// from now, taken as otpd begins on the call.
    fn send_deadline(&self) -> sending::SendWait {
        sending::SendWait::Until(std::time::Instant::now() + self.send_wait)
    }

    /// How long a login waits for its code's send (tests shorten it).
    #[cfg(test)]
    pub(crate) fn set_send_wait(&mut self, wait: std::time::Duration) {
        self.send_wait = wait;
    }

    /// The configuration otpd runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Logs an internal failure (its text holds no code or secret).
    pub fn log_failure(&self, error: &Error) {
        self.audit.daemon(&format!("request failed: {error}"));
    }

    /// Logs a daemon-level event (start, stop).
    pub fn log_event(&self, message: &str) {
        self.audit.daemon(message);
    }

    /// Authorization before validation (design invariant 9): a caller who is neither root nor
    /// an admin may name only themself, as "" or by their own account's name. Anything else is
    /// refused before the argument is looked at, valid name or not, so the error tells such a
    /// caller nothing about it.
    fn require_self_unless_admin(&self, caller: Caller, user: &str) -> Result<()> {
        if user.is_empty() || caller.is_admin(&self.config, &*self.directory)? {
            return Ok(());
        }
        let own = kron_proto::validate_user(user).is_ok()
            && self
                .directory
                .by_name(user)?
                .is_some_and(|account| account.uid == caller.uid);
        if own {
            Ok(())
        } else {
            Err(Error::AccessDenied(format!(
                "only root or members of {} may act for other users",
                self.config.admin_group
            )))
        }
    }

    /// "" means the caller; anything else must be a well-formed user name.
    fn resolve_target(&self, caller: Caller, user: &str) -> Result<String> {
        if user.is_empty() {
            return self
                .directory
                .name_of(caller.uid)?
                .ok_or_else(|| Error::NotFound(format!("uid {} has no user name", caller.uid)));
        }
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        // The account's own name when NSS knows it (see begin_login); as given otherwise.
        Ok(self
            .directory
            .by_name(user)?
            .map_or_else(|| user.to_owned(), |account| account.name))
    }

    /// The target of an admin operation (reset, unlock, contact, sent enrollment, link):
    /// admins only, and only root may act on root or on another admin, the admin's own account
    /// included: each of these replaces or opens the second factor without asking for it, so an
    /// admin's session (or malware in it, with the password) would otherwise give itself a new
    /// token and pass sudo. Names NSS no longer knows (deleted users) are allowed.
    fn managed_target(&self, caller: Caller, user: &str) -> Result<String> {
        caller.require_admin(&self.config, &*self.directory)?;
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        match self.directory.by_name(user)? {
            Some(account) if account.uid == caller.uid && !caller.is_root() => {
                Err(Error::AccessDenied(
                    "only root may manage the token of an admin, your own included: ask root"
                        .into(),
                ))
            }
            Some(account) => {
                caller.may_manage(&account, &self.config, &*self.directory)?;
                Ok(account.name)
            }
            None => Ok(user.to_owned()),
        }
    }

    fn existing_account(&self, user: &str) -> Result<kron_common::users::Account> {
        self.directory
            .by_name(user)?
            .ok_or_else(|| Error::NotFound(format!("no such user: {user}")))
    }

    /// A new pending enrollment and its seed (to show once). Where the store keeps the seeds
    /// (a fleet), the record holds a random id instead of the sealed seed.
    fn new_pending(
        &self,
        user: &str,
        now: u64,
        at_login: bool,
    ) -> Result<(Pending, Zeroizing<Vec<u8>>)> {
        let secret =
            totp::new_secret().map_err(|e| Error::System(format!("no randomness: {e}")))?;
        let sealed = match self.store.vault() {
            None => self.key.seal(user, &secret)?,
            Some(_) => {
                let mut id = vec![0u8; crate::store::postgres::row::PENDING_ID_BYTES];
                getrandom::fill(&mut id)
                    .map_err(|e| Error::System(format!("no randomness: {e}")))?;
                crate::store::postgres::row::reference(id)
            }
        };
        let pending = Pending {
            token: Token {
                params: TokenParams::from(&self.config.totp),
                secret: sealed,
                created: now,
            },
            expires: now.saturating_add(self.config.enroll_window),
            at_login,
            delivered: None,
            link: None,
        };
        Ok((pending, secret))
    }

    /// Stores a new pending enrollment unless a confirmed token exists (then false): sealed in
    /// the record, or with its seed handed to the store that keeps the seeds.
    fn save_new_pending(&self, user: &str, pending: &Pending, seed: &[u8]) -> Result<bool> {
        match self.store.vault() {
            None => Ok(self.store.save_pending(user, pending.clone())?.is_ok()),
            Some(vault) => vault.save_pending(user, pending, seed),
        }
    }

    /// The seed of a stored pending enrollment, to show it again; `None` if it is gone.
    fn pending_secret(
        &self,
        user: &str,
        pending: &Pending,
        now: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.store.vault() {
            None => self.key.open(user, &pending.token.secret).map(Some),
            Some(vault) => vault.pending_seed(user, pending, now),
        }
    }

    /// The stored form of a sent code: under this host's key, or the fleet's.
    fn code_mac(&self, user: &str, purpose: &str, code: &str) -> Result<Vec<u8>> {
        match self.store.vault() {
            None => Ok(self.key.code_mac(user, purpose, code)),
            Some(vault) => vault.code_mac(user, purpose, code),
        }
    }

    /// What keys a new recovery set: this host's key, or nothing host-bound on a fleet host,
    /// where the set must work on every host (store/recovery.rs).
    fn recovery_keying(&self) -> crate::store::recovery::Keying<'_> {
        match self.store.vault() {
            None => crate::store::recovery::Keying::Local(&self.key),
            Some(_) => crate::store::recovery::Keying::Portable,
        }
    }

    /// Refuses what needs a stored seed on this host, which a fleet host never has.
    fn require_local_seeds(&self, what: &str) -> Result<()> {
        match self.store.vault() {
            None => Ok(()),
            Some(_) => Err(Error::Conflict(format!(
                "{what} is not available on a fleet host: the seeds stay in the fleet's \
                 database (docs/fleet.md)"
            ))),
        }
    }

    fn otpauth_uri(&self, user: &str, secret: &[u8], params: TokenParams) -> Result<String> {
        let account = format!("{user}@{}", self.hostname);
        totp::otpauth_uri(secret, params, &self.config.issuer, &account).map_err(Error::System)
    }
}

/// The refusal for too many failed attempts: PAM_MAXTRIES, so applications stop retrying.
pub(crate) fn throttled(until: u64, now: u64) -> Step {
    Step::terminal(StepKind::Throttled, messages::throttled(until, now))
}

pub(crate) fn subject(request: &LoginRequest, caller: Caller) -> Subject<'_> {
    Subject {
        user: &request.user,
        service: &request.service,
        rhost: &request.rhost,
        tty: &request.tty,
        caller_uid: caller.uid,
    }
}
