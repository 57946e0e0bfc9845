//! Streamed export and import, so a store of any size moves in pieces of at most
//! [`MAX_CHUNK_BYTES`] and otpd's memory stays bounded (docs/kronctl.md, "export", "import"):
//!
//! - `ExportBegin` opens a cursor; each `ExportNext` writes the next users (a page of the store
//!   at a time) into the age file and hands over what is ready.
//! - `ImportBegin` starts a thread that decrypts and checks the file as `ImportChunk` feeds it
//!   (through a small bounded channel), sealing each user as this host stores it into a spool
//!   file in the state directory; `ImportEnd` waits until the whole file is checked. Only
//!   then does `ImportApply` store the spooled users, a batch per call: a wrong passphrase, a
//!   damaged or truncated file stores nothing, however large.
//!
//! Root only; at most [`MAX_EXPORTS`] and [`MAX_IMPORTS`] at once, each bound to its caller and
//! dropped after [`IDLE_LIMIT`] seconds without a call (with its spool file).

use super::Engine;
use super::backup_io::{self, BackupWriter};
use super::lifecycle::record_from_backup;
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::store::crypto::SecretKey;
use crate::store::encoding::{decode, encode};
use crate::store::record::UserRecord;
use kron_proto::{ImportResult, MAX_APPLY, MAX_CHUNK_BYTES};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use zeroize::Zeroizing;

/// Streamed exports at once.
const MAX_EXPORTS: usize = 4;
/// Streamed imports at once.
const MAX_IMPORTS: usize = 2;
/// Seconds a cursor or session lives without a call.
const IDLE_LIMIT: u64 = 600;
/// An `ExportNext` stops adding users once this much is ready: a page of users and one age
/// chunk more still fit in [`MAX_CHUNK_BYTES`].
const EXPORT_TARGET: usize = MAX_CHUNK_BYTES / 2;
/// Users read from the store at a time.
const PAGE: usize = 256;
/// Pieces of a file waiting for the checking thread (each at most [`MAX_CHUNK_BYTES`]).
const QUEUED_CHUNKS: usize = 4;
/// Prefix of spool files in the state directory.
const SPOOL_PREFIX: &str = "import-";

#[derive(Default)]
pub(super) struct Transfers {
    exports: Mutex<HashMap<String, Export>>,
    imports: Mutex<HashMap<String, Import>>,
    /// Spools left by an otpd that stopped are removed once, before this one's first import.
    /// Not at every `ImportBegin`: a session is out of `imports` while one of its calls runs,
    /// and its spool would look left over.
    stale_removed: std::sync::OnceLock<()>,
}

struct Export {
    caller: Caller,
    /// `None` once the file is complete.
    writer: Option<BackupWriter>,
    /// One user's export; `None` for every user.
    only: Option<String>,
    /// The last user written (the store is read after it).
    after: Option<String>,
    last_used: u64,
}

struct Import {
    caller: Caller,
    replace: bool,
    dry_run: bool,
    /// Feeds the checking thread; dropped by `ImportEnd`.
    sender: Option<SyncSender<Vec<u8>>>,
    checking: Option<JoinHandle<Result<u64>>>,
    spool: Spool,
    /// The checked users not applied yet; `None` until `ImportEnd` succeeded.
    reader: Option<BufReader<File>>,
    last_used: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn handle() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(crate::store::crypto::CryptoError::Random)?;
    Ok(hex::encode(bytes))
}

fn require_root(caller: Caller) -> Result<()> {
    match caller.is_root() {
        true => Ok(()),
        false => Err(Error::AccessDenied(
            "only root may export or import tokens".into(),
        )),
    }
}

/// Takes the entry `handle` of `caller` out of `map` (to work on it without the lock).
fn take<T>(
    map: &Mutex<HashMap<String, T>>,
    handle: &str,
    caller: Caller,
    owner: impl Fn(&T) -> Caller,
) -> Result<T> {
    let mut map = lock(map);
    match map.get(handle) {
        None => Err(Error::NotFound(
            "no such transfer (it ended, failed or expired)".into(),
        )),
        Some(entry) if owner(entry) != caller => Err(Error::AccessDenied(
            "this transfer was begun by another caller".into(),
        )),
        Some(_) => map
            .remove(handle)
            .ok_or_else(|| Error::NotFound("no such transfer".into())),
    }
}

impl Engine {
    /// `ExportBegin`: a cursor over every user (`user` = "") or one user's.
    pub fn export_begin(
        &self,
        caller: Caller,
        user: &str,
        passphrase: &str,
        now: u64,
    ) -> Result<String> {
        require_root(caller)?;
        // Refused here, at the start, as `Export` is: a fleet host holds no seed to write, and
        // the first page would fail on one with a less clear error.
        self.require_local_seeds("kronctl export")?;
        let only = match user {
            "" => None,
            user => {
                kron_proto::validate_user(user).map_err(Error::InvalidArgument)?;
                if self.store.get(user)?.is_none() {
                    return Err(Error::NotFound(format!("nothing stored for {user}")));
                }
                Some(user.to_owned())
            }
        };
        let writer = BackupWriter::new(passphrase, now)?;
        let handle = handle()?;
        let mut exports = lock(&self.transfers.exports);
        exports.retain(|_, export| now < export.last_used.saturating_add(IDLE_LIMIT));
        if exports.len() >= MAX_EXPORTS {
            return Err(Error::Conflict(format!(
                "{MAX_EXPORTS} exports are running; wait for one to end"
            )));
        }
        exports.insert(
            handle.clone(),
            Export {
                caller,
                writer: Some(writer),
                only,
                after: None,
                last_used: now,
            },
        );
        Ok(handle)
    }

    /// `ExportNext`: the next piece of the file, the users written so far, and whether the
    /// file is complete.
    pub fn export_next(
        &self,
        caller: Caller,
        handle: &str,
        now: u64,
    ) -> Result<(Vec<u8>, u64, bool)> {
        require_root(caller)?;
        let mut export = take(&self.transfers.exports, handle, caller, |e| e.caller)?;
        let Some(mut writer) = export.writer.take() else {
            return Err(Error::NotFound("the export is complete".into()));
        };
        loop {
            if writer.ready() >= EXPORT_TARGET {
                break;
            }
            let page = match &export.only {
                Some(_) if export.after.is_some() => Vec::new(),
                Some(user) => vec![(user.clone(), self.store.get(user)?.unwrap_or_default())],
                None => self.store.page(export.after.as_deref(), PAGE)?,
            };
            if page.is_empty() {
                let users = writer.users();
                let mut data = writer.take();
                data.extend(writer.finish()?);
                self.audit.record(
                    "exported",
                    &self.subject_of(export.only.as_deref().unwrap_or(""), caller),
                    &format!("{users} tokens"),
                );
                return Ok((data, users, true));
            }
            for (user, record) in page {
                export.after = Some(user.clone());
                if record.token.is_some() || !record.contact.is_empty() {
                    writer.push(&self.backup_user(user, record)?)?;
                }
            }
        }
        let data = writer.take();
        let users = writer.users();
        export.writer = Some(writer);
        export.last_used = now;
        lock(&self.transfers.exports).insert(handle.to_owned(), export);
        Ok((data, users, false))
    }

    /// `ImportBegin`: a session that checks the file as it arrives.
    pub fn import_begin(
        &self,
        caller: Caller,
        passphrase: &str,
        replace: bool,
        dry_run: bool,
        now: u64,
    ) -> Result<String> {
        require_root(caller)?;
        let handle = handle()?;
        let mut imports = lock(&self.transfers.imports);
        imports.retain(|_, import| now < import.last_used.saturating_add(IDLE_LIMIT));
        if imports.len() >= MAX_IMPORTS {
            return Err(Error::Conflict(format!(
                "{MAX_IMPORTS} imports are running; wait for one to end"
            )));
        }
        self.transfers
            .stale_removed
            .get_or_init(|| Spool::remove_stale(&self.config.state_dir));
        let spool = Spool::create(&self.config.state_dir, &handle)?;
        let (sender, receiver) = sync_channel(QUEUED_CHUNKS);
        let checking = spawn_checking(
            receiver,
            Zeroizing::new(passphrase.to_owned()),
            self.key.clone(),
            &spool,
        )?;
        imports.insert(
            handle.clone(),
            Import {
                caller,
                replace,
                dry_run,
                sender: Some(sender),
                checking: Some(checking),
                spool,
                reader: None,
                last_used: now,
            },
        );
        Ok(handle)
    }

    /// `ImportChunk`: the next piece of the file, handed to the checking thread (waiting while
    /// it is behind). A file the thread already refused ends the import with its reason.
    pub fn import_chunk(
        &self,
        caller: Caller,
        handle: &str,
        data: Vec<u8>,
        now: u64,
    ) -> Result<()> {
        require_root(caller)?;
        let mut import = take(&self.transfers.imports, handle, caller, |i| i.caller)?;
        if data.len() > MAX_CHUNK_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a piece of more than {MAX_CHUNK_BYTES} bytes"
            )));
        }
        let Some(sender) = &import.sender else {
            return Err(Error::Conflict("the file was already ended".into()));
        };
        if sender.send(data).is_err() {
            // The thread stopped: it refused the file. Its reason ends the import.
            import.sender = None;
            return match import.finish_checking() {
                Err(e) => Err(e),
                Ok(_) => Err(Error::InvalidArgument(
                    "the file goes on after its end".into(),
                )),
            };
        }
        import.last_used = now;
        lock(&self.transfers.imports).insert(handle.to_owned(), import);
        Ok(())
    }

    /// `ImportEnd`: the file is complete; waits until it is checked and returns its users.
    pub fn import_end(&self, caller: Caller, handle: &str, now: u64) -> Result<u64> {
        require_root(caller)?;
        let mut import = take(&self.transfers.imports, handle, caller, |i| i.caller)?;
        import.sender = None;
        let users = import.finish_checking()?;
        import.reader = Some(import.spool.reader()?);
        import.last_used = now;
        lock(&self.transfers.imports).insert(handle.to_owned(), import);
        Ok(users)
    }

    /// `ImportApply`: stores (or judges, with dry-run) up to `max` more checked users.
    pub fn import_apply(
        &self,
        caller: Caller,
        handle: &str,
        max: u32,
        now: u64,
    ) -> Result<(Vec<ImportResult>, bool)> {
        require_root(caller)?;
        let mut import = take(&self.transfers.imports, handle, caller, |i| i.caller)?;
        if max == 0 || max > MAX_APPLY {
            return Err(Error::InvalidArgument(format!(
                "apply 1 to {MAX_APPLY} users at a time"
            )));
        }
        let Some(reader) = import.reader.as_mut() else {
            return Err(Error::Conflict(
                "the file is not checked yet (ImportEnd)".into(),
            ));
        };
        let mut records = Vec::new();
        while records.len() < max as usize {
            match Spool::next(reader)? {
                Some(entry) => records.push(entry),
                None => break,
            }
        }
        let done = records.len() < max as usize;
        let results = self.store_imports(caller, records, import.replace, import.dry_run)?;
        if !done {
            import.last_used = now;
            lock(&self.transfers.imports).insert(handle.to_owned(), import);
        }
        Ok((results, done))
    }
}

impl Import {
    /// Waits for the checking thread: the users of a whole, intact file, or why not.
    fn finish_checking(&mut self) -> Result<u64> {
        let checking = self
            .checking
            .take()
            .ok_or_else(|| Error::Conflict("the file was already ended".into()))?;
        checking
            .join()
            .map_err(|_| Error::System("the import check panicked".into()))?
    }
}

/// The thread that decrypts and checks the file as it arrives, spooling each user sealed
/// under `key`.
fn spawn_checking(
    receiver: Receiver<Vec<u8>>,
    passphrase: Zeroizing<String>,
    key: Arc<SecretKey>,
    spool: &Spool,
) -> Result<JoinHandle<Result<u64>>> {
    let mut writer = spool.writer()?;
    std::thread::Builder::new()
        .name("otpd-import".into())
        .spawn(move || {
            let input = Chunks {
                receiver,
                current: Vec::new(),
                at: 0,
            };
            let info = backup_io::read(input, &passphrase, &mut |entry| {
                let record = record_from_backup(&key, &entry)?;
                Spool::push(&mut writer, &entry.user, &record)
            })?;
            writer
                .flush()
                .map_err(|e| Error::System(format!("the import spool: {e}")))?;
            Ok(info.users)
        })
        .map_err(|e| Error::System(format!("cannot start the import check: {e}")))
}

/// The pieces of the file as one stream; its end when `ImportEnd` drops the sender.
struct Chunks {
    receiver: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.receiver.recv() {
                Ok(next) => {
                    self.current = next;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The checked users of an import waiting to be stored: a file in the state directory (0600,
/// secrets sealed as in the store), removed with the session. Each entry: the user name and
/// the encoded record, each after its length (u32, big-endian).
struct Spool {
    path: PathBuf,
}

fn spool_error(e: std::io::Error) -> Error {
    Error::System(format!("the import spool: {e}"))
}

impl Spool {
    fn create(dir: &Path, handle: &str) -> Result<Spool> {
        let path = dir.join(format!("{SPOOL_PREFIX}{handle}"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(spool_error)?;
        Ok(Spool { path })
    }

    /// Spool files an otpd that stopped left behind (a session's own goes with it: `Drop`).
    fn remove_stale(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(SPOOL_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn writer(&self) -> Result<BufWriter<File>> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(spool_error)?;
        Ok(BufWriter::new(file))
    }

    fn reader(&self) -> Result<BufReader<File>> {
        Ok(BufReader::new(File::open(&self.path).map_err(spool_error)?))
    }

    fn push(out: &mut impl Write, user: &str, record: &UserRecord) -> Result<()> {
        let encoded = encode(record)?;
        for part in [user.as_bytes(), &encoded] {
            let len = u32::try_from(part.len())
                .map_err(|_| Error::System("an import entry is too large".into()))?;
            out.write_all(&len.to_be_bytes()).map_err(spool_error)?;
            out.write_all(part).map_err(spool_error)?;
        }
        Ok(())
    }

    fn next(input: &mut impl Read) -> Result<Option<(String, UserRecord)>> {
        let Some(user) = read_part(input, true)? else {
            return Ok(None);
        };
        let user = String::from_utf8(user)
            .map_err(|_| Error::System("the import spool is damaged".into()))?;
        let record = read_part(input, false)?
            .ok_or_else(|| Error::System("the import spool is damaged".into()))?;
        Ok(Some((user.clone(), decode(&user, &record)?)))
    }
}

/// One length-prefixed part; `None` at the end of the file where one may end.
fn read_part(input: &mut impl Read, may_end: bool) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if may_end && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(spool_error(e)),
    }
    let mut part = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut part).map_err(spool_error)?;
    Ok(Some(part))
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::tests::{NOW, ROOT, fixture};
    use kron_common::config::Config;

    /// A spool left by an otpd that stopped goes before the first import; the spool of a
    /// session whose call is running (out of the map meanwhile) stays when another begins.
    #[test]
    fn only_spools_left_by_a_stopped_otpd_are_removed() {
        let f = fixture(Config::default());
        let dir = f.engine.config.state_dir.clone();
        let stale = dir.join(format!("{}left-over", super::SPOOL_PREFIX));
        std::fs::write(&stale, b"").unwrap();
        let first = f
            .engine
            .import_begin(ROOT, "pass", false, false, NOW)
            .unwrap();
        assert!(!stale.exists(), "a stopped otpd's spool is removed");
        let running = super::take(&f.engine.transfers.imports, &first, ROOT, |i| i.caller).unwrap();
        let second = f
            .engine
            .import_begin(ROOT, "pass", false, false, NOW)
            .unwrap();
        assert!(
            running.spool.path.exists(),
            "a running session's spool stays"
        );
        drop(running);
        let _ = second;
    }
}
