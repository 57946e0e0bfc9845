//! `kronctl fleet`: set up the fleet's database, add a host, show this host's link, move local
//! tokens into the fleet (a page at a time), read the fleet's audit. Root only; the owner's
//! credentials come with each call (paths otpd reads as root) and are never stored.

use super::{Engine, pages};
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::store::postgres::{admin, schema};
use crate::store::record::UserRecord;
use crate::store::{SledStore, Store};
use kron_proto::{FleetLogEntry, FleetStatus, ImportResult, MAX_ONE_MESSAGE_USERS, MAX_PUSH_PAGE};
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// What kronctl sends for a call as the database owner: it read the files as root (otpd's
/// sandbox reads neither root's home nor anything outside it) and names the CA file for the
/// host's section. `ca_file` "": this host's own (otpd reads it); `password` "": none.
pub struct OwnerArgs {
    pub url: String,
    pub ca_file: String,
    pub ca_pem: String,
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for OwnerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerArgs")
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl OwnerArgs {
    /// The owner for `schema` and `admin`, with `ca_file` resolved by [`Engine::ca_file`].
    fn owner<'a>(&'a self, ca_file: &'a Path) -> schema::Owner<'a> {
        schema::Owner {
            url: &self.url,
            ca_file,
            ca_pem: (!self.ca_pem.is_empty()).then_some(self.ca_pem.as_bytes()),
            password: (!self.password.is_empty()).then_some(self.password.as_str()),
        }
    }
}

impl Engine {
    /// Creates or upgrades the fleet's schema (`kronctl fleet init`).
    pub fn fleet_init(
        &self,
        caller: Caller,
        runtime: &Handle,
        owner: &OwnerArgs,
        key_file: &str,
    ) -> Result<Vec<String>> {
        require_root(caller)?;
        let ca_file = self.ca_file(&owner.ca_file)?;
        let said = schema::init(
            runtime,
            &owner.owner(&ca_file),
            (!key_file.is_empty()).then_some(key_file),
        )?;
        self.audit
            .daemon(&format!("fleet init: {}", said.join("; ")));
        Ok(said)
    }

    /// Creates the role of a host and returns its `[fleet]` section (`kronctl fleet add-host`).
    pub fn fleet_add_host(
        &self,
        caller: Caller,
        runtime: &Handle,
        owner: &OwnerArgs,
        name: &str,
        (password, password_file): (&str, &str),
    ) -> Result<String> {
        require_root(caller)?;
        let ca_file = self.ca_file(&owner.ca_file)?;
        let section = schema::add_host(
            runtime,
            &owner.owner(&ca_file),
            name,
            password,
            &absolute(password_file)?,
        )?;
        self.audit
            .daemon(&format!("fleet add-host: role for host {name} set"));
        Ok(section)
    }

    /// This host's link to its fleet, its offline packs and journal (`kronctl fleet status`).
    pub fn fleet_status(&self, caller: Caller) -> Result<FleetStatus> {
        require_root(caller)?;
        let Some(store) = self.store.fleet() else {
            return Ok(FleetStatus::default());
        };
        let mut status = admin::status(store);
        if let Some(offline) = self.store.offline() {
            let summary = offline.summary()?;
            status.offline_window = offline.window();
            status.pack_users = summary.users;
            status.pack_newest = summary.newest_fetch;
            status.pack_oldest = summary.oldest_fetch;
            status.pack_ends = summary.first_end;
            status.journal_waiting = summary.journal;
        }
        Ok(status)
    }

    /// Gives `user` an offline pack on this host ahead of a first login here (`kronctl fleet
    /// offline-add`): kept for `offline_keep` from now. True if the user had none here.
    pub fn fleet_offline_add(&self, caller: Caller, user: &str, now: u64) -> Result<bool> {
        require_root(caller)?;
        kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        let offline = self
            .store
            .offline()
            .filter(|o| o.enabled())
            .ok_or_else(|| {
                Error::Conflict(
                    "offline logins are off on this host: it needs a [fleet] section with \
                     offline_window above 0"
                        .into(),
                )
            })?;
        let added = offline.add(user, now)?;
        self.audit.daemon(&format!(
            "fleet offline-add: {user} gets an offline pack on this host"
        ));
        Ok(added)
    }

    /// `FleetPush`: moves the tokens of this host's sled store into the fleet and answers for
    /// every local user in one message. kronctl pushes a page at a time instead
    /// ([`Engine::fleet_push_page`]); this stays because `io.kron.Otpd1` never loses a method
    /// (an older kronctl, a site's script), but only for a local store of at most
    /// [`MAX_ONE_MESSAGE_USERS`]: a larger one is refused before anything is pushed.
    pub fn fleet_push(&self, caller: Caller) -> Result<Vec<ImportResult>> {
        require_root(caller)?;
        match self.local_store()? {
            Some(local) => self.push_whole(caller, &local),
            None => Ok(Vec::new()),
        }
    }

    /// `FleetPushPage`: pushes up to `limit` local users after the name `after` ("" = from
    /// the first) as [`Engine::fleet_push`] does, and answers their results and the `after` of
    /// the next page, "" when this one is the last. Each call opens the local store and reads
    /// only its page: nothing is held between calls, and a push stopped anywhere is taken up
    /// by running it again (pushed users are then conflicts, their fleet token the one pushed).
    pub fn fleet_push_page(
        &self,
        caller: Caller,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<ImportResult>, String)> {
        require_root(caller)?;
        pages::check(after, limit, MAX_PUSH_PAGE)?;
        match self.local_store()? {
            Some(local) => self.push_page(caller, &local, after, limit),
            None => Ok((Vec::new(), String::new())),
        }
    }

    /// This host's own sled store, to push into its fleet: `None` when the host never had
    /// one. Refused where there is no fleet to push to.
    fn local_store(&self) -> Result<Option<SledStore>> {
        if self.store.fleet().is_none() {
            return Err(Error::Conflict(
                "this host has no [fleet] section: there is no fleet to push to".into(),
            ));
        }
        let dir = self.config.state_dir.join("store");
        if !dir.join("db").exists() {
            return Ok(None);
        }
        SledStore::open(&dir).map(Some)
    }

    /// [`Engine::fleet_push`] once the local store is open (unit tests pass one of their own).
    pub(super) fn push_whole(
        &self,
        caller: Caller,
        local: &dyn Store,
    ) -> Result<Vec<ImportResult>> {
        let records = pages::one_message(local)?.ok_or_else(|| {
            Error::Conflict(format!(
                "this host's local store holds more than {MAX_ONE_MESSAGE_USERS} users, too \
                 many for one answer; a newer kronctl pushes them a page at a time \
                 (FleetPushPage)"
            ))
        })?;
        self.push_records(caller, records)
    }

    /// [`Engine::fleet_push_page`] once the local store is open (unit tests pass one of their
    /// own).
    pub(super) fn push_page(
        &self,
        caller: Caller,
        local: &dyn Store,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<ImportResult>, String)> {
        let (records, next) = pages::page(local, after, limit)?;
        Ok((self.push_records(caller, records)?, next))
    }

    /// Stores the tokens of `records`, local users, in this host's store (the fleet): users
    /// it already has keep its token and are reported as conflicts, users without a
    /// confirmed token are skipped. Results in the order of names, as the pages go.
    fn push_records(
        &self,
        caller: Caller,
        records: Vec<(String, UserRecord)>,
    ) -> Result<Vec<ImportResult>> {
        let (with_token, without): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|(_, record)| record.token.is_some());
        let mut results = self.store_imports(caller, with_token, false, false)?;
        for result in &mut results {
            if result.outcome == "skipped" {
                result.outcome = "conflict".into();
                result.reason = "already enrolled in the fleet; the fleet's token stays".into();
            } else {
                result.outcome = "pushed".into();
            }
        }
        results.extend(without.into_iter().map(|(user, _)| ImportResult {
            user,
            outcome: "skipped".into(),
            reason: "no confirmed token on this host".into(),
        }));
        results.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(results)
    }

    /// The fleet's audit rows (`kronctl fleet log`), read as the role `owner` names.
    pub fn fleet_log(
        &self,
        caller: Caller,
        runtime: &Handle,
        owner: &OwnerArgs,
        user: &str,
        limit: u32,
    ) -> Result<Vec<FleetLogEntry>> {
        require_root(caller)?;
        if !user.is_empty() {
            kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
        }
        let ca_file = self.ca_file(&owner.ca_file)?;
        admin::log(runtime, &owner.owner(&ca_file), user, limit)
    }

    /// The CA file given, else this host's `[fleet]` one.
    fn ca_file(&self, given: &str) -> Result<PathBuf> {
        match (given, &self.config.fleet) {
            ("", Some(fleet)) => Ok(fleet.ca_file.clone()),
            ("", None) => Err(Error::InvalidArgument(
                "give --ca-file: this host has no [fleet] section to take it from".into(),
            )),
            (path, _) => absolute(path),
        }
    }
}

fn require_root(caller: Caller) -> Result<()> {
    match caller.is_root() {
        true => Ok(()),
        false => Err(Error::AccessDenied("only root may manage the fleet".into())),
    }
}

fn absolute(path: &str) -> Result<PathBuf> {
    let path = Path::new(path);
    match path.is_absolute() {
        true => Ok(path.to_path_buf()),
        false => Err(Error::InvalidArgument("file paths must be absolute".into())),
    }
}
