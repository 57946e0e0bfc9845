//! Finding and reading the tokens of other TOTP systems for `kronctl import
//! --google-authenticator` and `--oath-usersfile`.
//!
//! The parsers ([`google`], [`oath`]) are pure; this module reads the files, safely: never
//! following a symlink, never blocking on a FIFO, bounded in size, and for files found in home
//! directories only when the file belongs to that home's user (a user could otherwise point
//! their file at a file of someone else). Source files are opened read-only and never changed.
//!
//! otpd refuses a whole import if any entry is invalid, so everything otpd would refuse is
//! found here first and reported as skipped; only usable tokens are sent.
//!
//! - `mod.rs`: finding the sources (files, directories, home directories) and reading them safely
//! - `google.rs`: the file format of google-authenticator
//! - `oath.rs`: pam_oath's users file
#![forbid(unsafe_code)]

pub mod google;
pub mod oath;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kron_proto::TokenImport;
use zeroize::Zeroizing;

use crate::sys::passwd::{Account, accounts};

/// The name of google-authenticator's file in a home directory.
pub const GOOGLE_FILE_NAME: &str = ".google_authenticator";

/// A usable token, as otpd wants it (always HMAC-SHA1 for both sources).
#[derive(Debug)]
pub struct Token {
    pub secret: Zeroizing<Vec<u8>>,
    pub digits: u8,
    pub period: u64,
    /// Highest step already used on the old system; 0 when none is known.
    pub last_step: u64,
    /// One-time codes of the old system, as typed.
    pub recovery_codes: Zeroizing<Vec<String>>,
}

/// What a parser made of one token: the token, or why it is skipped; and remarks either way.
#[derive(Debug)]
pub struct Parsed {
    pub token: Result<Token, String>,
    pub notes: Vec<String>,
}

/// One user's entry found in a source.
#[derive(Debug)]
pub struct Found {
    /// Empty when no user name could be read.
    pub user: String,
    /// The file (and line) it came from.
    pub source: String,
    pub parsed: Parsed,
}

impl Found {
    fn skipped(user: &str, source: String, reason: impl Into<String>) -> Found {
        Found {
            user: user.to_owned(),
            source,
            parsed: Parsed {
                token: Err(reason.into()),
                notes: Vec::new(),
            },
        }
    }

    fn unnamed(source: String, reason: impl Into<String>) -> Found {
        Found::skipped("", source, reason)
    }
}

/// Secret lengths otpd accepts (80 to 512 bits): otpd's own check, so the two cannot drift.
pub fn check_secret_len(secret: &[u8]) -> Result<(), String> {
    kron_proto::check_secret_len(secret).map_err(|why| format!("unsupported: {why}"))
}

/// What otpd is sent for `token`. The caller wipes the copy once it is sent.
pub fn to_import(user: &str, token: &Token) -> TokenImport {
    TokenImport {
        user: user.to_owned(),
        secret: token.secret.to_vec(),
        algorithm: "SHA1".into(),
        digits: token.digits,
        period: token.period,
        last_step: token.last_step,
        recovery_codes: token.recovery_codes.to_vec(),
    }
}

/// Marks every entry after the first with the same user as skipped: kron keeps one token per
/// user, and the first source named wins.
pub fn skip_duplicates(found: &mut [Found]) {
    let mut first: HashMap<String, String> = HashMap::new();
    for entry in found.iter_mut() {
        if entry.user.is_empty() || entry.parsed.token.is_err() {
            continue;
        }
        match first.get(&entry.user) {
            Some(source) => {
                entry.parsed.token = Err(format!(
                    "another token for this user was found first ({source})"
                ));
                entry.parsed.notes.clear();
            }
            None => {
                first.insert(entry.user.clone(), entry.source.clone());
            }
        }
    }
}

// ------------------------------------------------------------------------ google-authenticator

/// Every google-authenticator file named by `paths` (a file: its owner is the user; a
/// directory: each file in it, named after its user) and, with `all_homes`, the
/// `~/.google_authenticator` of every account.
pub fn google_sources(paths: &[PathBuf], all_homes: bool) -> Vec<Found> {
    let mut found = Vec::new();
    for path in paths {
        // A directory named by root may be reached through a symlink; files never are.
        if std::fs::metadata(path).is_ok_and(|meta| meta.is_dir()) {
            found.extend(google_directory(path));
        } else {
            found.push(google_file_of_owner(path));
        }
    }
    if all_homes {
        found.extend(google_homes(&accounts()));
    }
    found
}

/// A file named on the command line: the user is its owner.
fn google_file_of_owner(path: &Path) -> Found {
    let source = shown(path);
    let (text, meta) = match read_bounded(path, google::MAX_FILE_BYTES) {
        Ok(read) => read,
        Err(reason) => return Found::unnamed(source, reason),
    };
    match user_name(meta.uid()) {
        Some(user) => google_found(&user, source, &text),
        None => Found::unnamed(
            source,
            format!("its owner (uid {}) has no user name", meta.uid()),
        ),
    }
}

/// A directory laid out like pam_google_authenticator's `secret=/dir/${USER}`: each regular
/// file is the token of the user it is named after. Files of unknown users are reported.
fn google_directory(dir: &Path) -> Vec<Found> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            return vec![Found::unnamed(
                shown(dir),
                format!("cannot read the directory: {}", io_reason(&error)),
            )];
        }
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|entry| entry.file_name())
        .filter(|name| !name.as_bytes().starts_with(b"."))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let source = shown(&path);
            let Some(user) = name
                .to_str()
                .filter(|u| kron_proto::validate_user(u).is_ok())
            else {
                return Found::unnamed(source, "the file name is not a valid user name");
            };
            let Some(uid) = user_uid(user) else {
                return Found::skipped(user, source, "no user of that name on this host");
            };
            match read_bounded(&path, google::MAX_FILE_BYTES) {
                Ok((text, meta)) => match not_the_users_own(&meta, user, uid) {
                    Some(reason) => Found::skipped(user, source, reason),
                    None => google_found(user, source, &text),
                },
                Err(reason) => Found::skipped(user, source, reason),
            }
        })
        .collect()
}

/// Why a file in a token directory cannot be taken as `user`'s token: its name says whose
/// token it is, so only root (pam_google_authenticator's `user=root` layout) or that user may
/// have made it, and it must be no other name's file too. Someone else's file there (a
/// directory users may write to) could be a secret they chose, imported as `user`'s.
fn not_the_users_own(meta: &std::fs::Metadata, user: &str, uid: u32) -> Option<String> {
    if meta.uid() != 0 && meta.uid() != uid {
        return Some(format!(
            "owned by uid {}, neither root nor {user} (uid {uid}): not read",
            meta.uid()
        ));
    }
    if meta.nlink() != 1 {
        return Some(format!("has {} names (hard links): not read", meta.nlink()));
    }
    None
}

/// `~/.google_authenticator` of each account that has one. A missing file is no entry; a file
/// that is a symlink or not owned by the account's user is reported and not read.
fn google_homes(accounts: &[Account]) -> Vec<Found> {
    let mut found = Vec::new();
    for account in accounts {
        if !account.home.is_absolute() || account.home == Path::new("/") {
            continue;
        }
        let path = account.home.join(GOOGLE_FILE_NAME);
        let source = shown(&path);
        let (text, meta) = match open_bounded(&path, google::MAX_FILE_BYTES) {
            Ok(read) => read,
            Err(error) if is_absent(&error) => continue,
            Err(error) => {
                found.push(Found::skipped(
                    &account.name,
                    source,
                    read_reason(&error, google::MAX_FILE_BYTES),
                ));
                continue;
            }
        };
        if meta.uid() != account.uid {
            found.push(Found::skipped(
                &account.name,
                source,
                format!(
                    "owned by uid {}, not by {} (uid {}): not read",
                    meta.uid(),
                    account.name,
                    account.uid
                ),
            ));
            continue;
        }
        found.push(google_found(&account.name, source, &text));
    }
    found
}

fn google_found(user: &str, source: String, text: &[u8]) -> Found {
    Found {
        user: user.to_owned(),
        source,
        parsed: google::parse(text),
    }
}

// ------------------------------------------------------------------------------ pam_oath

/// Every line of pam_oath's users file at `path`.
pub fn oath_source(path: &Path) -> Vec<Found> {
    match read_bounded(path, oath::MAX_FILE_BYTES) {
        Ok((text, _)) => oath::parse(&text, &shown(path), &oath::mktime),
        Err(reason) => vec![Found::unnamed(shown(path), reason)],
    }
}

// ---------------------------------------------------------------------------------- files

/// Reads a regular file of at most `limit` bytes without following a final symlink and without
/// blocking on a FIFO or device. The error is a reason for the report.
fn read_bounded(
    path: &Path,
    limit: u64,
) -> Result<(Zeroizing<Vec<u8>>, std::fs::Metadata), String> {
    open_bounded(path, limit).map_err(|error| read_reason(&error, limit))
}

/// Why a file could not be read, for the report.
#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    NotRegular,
    TooLarge,
}

fn open_bounded(
    path: &Path,
    limit: u64,
) -> Result<(Zeroizing<Vec<u8>>, std::fs::Metadata), ReadError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge);
    }
    let mut text = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    // The file may grow between fstat and read: never read more than the bound.
    file.take(limit + 1)
        .read_to_end(&mut text)
        .map_err(ReadError::Io)?;
    if text.len() as u64 > limit {
        return Err(ReadError::TooLarge);
    }
    Ok((text, meta))
}

fn is_absent(error: &ReadError) -> bool {
    matches!(error, ReadError::Io(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)))
}

fn read_reason(error: &ReadError, limit: u64) -> String {
    match error {
        ReadError::Io(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            "a symbolic link: not followed (name the file it points to)".into()
        }
        ReadError::Io(e) => format!("cannot read: {}", io_reason(e)),
        ReadError::NotRegular => "not a regular file".into(),
        ReadError::TooLarge => format!("larger than {limit} bytes"),
    }
}

/// The OS's text for an I/O error, without Rust's "(os error N)" suffix.
fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

// ------------------------------------------------------------------------------ accounts

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

fn user_uid(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|user| user.uid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const GA: &str = "QIYPSYQ6RMBXKMBSNHIOWV5BBI\n\" DISALLOW_REUSE 7\n\" TOTP_AUTH\n12345678\n";

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kronctl-migrate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    fn reason(found: &Found) -> &str {
        found.parsed.token.as_ref().unwrap_err()
    }

    #[test]
    fn reading_refuses_symlinks_fifos_and_big_files() {
        let dir = scratch_dir("read");
        let file = dir.join("file");
        std::fs::write(&file, GA).unwrap();
        let (text, _) = read_bounded(&file, 1024).unwrap();
        assert_eq!(&*text, GA.as_bytes());
        assert_eq!(read_bounded(&file, 10).unwrap_err(), "larger than 10 bytes");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(
            read_bounded(&link, 1024)
                .unwrap_err()
                .starts_with("a symbolic link")
        );
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(read_bounded(&fifo, 1024).unwrap_err(), "not a regular file");
        assert_eq!(
            read_bounded(&dir.join("missing"), 1024).unwrap_err(),
            "cannot read: No such file or directory"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_named_file_belongs_to_its_owner() {
        let dir = scratch_dir("owner");
        let file = dir.join("anything");
        std::fs::write(&file, GA).unwrap();
        let found = google_sources(std::slice::from_ref(&file), false);
        assert_eq!(found.len(), 1);
        let me = user_name(nix::unistd::geteuid().as_raw()).unwrap();
        assert_eq!(found[0].user, me);
        assert_eq!(found[0].parsed.token.as_ref().unwrap().last_step, 7);
        let missing = google_sources(&[dir.join("nope")], false);
        assert_eq!(missing[0].user, "");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_names_users_by_file_name() {
        let dir = scratch_dir("dir");
        let me = user_name(nix::unistd::geteuid().as_raw()).unwrap();
        std::fs::write(dir.join(&me), GA).unwrap();
        std::fs::write(dir.join("kron-no-such-user-x"), GA).unwrap();
        std::fs::write(dir.join(".hidden"), GA).unwrap();
        std::fs::write(dir.join("a:b"), GA).unwrap();
        std::fs::create_dir(dir.join("subdir")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("nobody")).unwrap();
        let found = google_sources(std::slice::from_ref(&dir), false);
        let summary: Vec<(String, Result<(), String>)> = found
            .iter()
            .map(|f| {
                (
                    f.user.clone(),
                    f.parsed.token.as_ref().map(|_| ()).map_err(Clone::clone),
                )
            })
            .collect();
        assert!(
            summary.contains(&(
                String::new(),
                Err("the file name is not a valid user name".into())
            )),
            "{summary:?}"
        );
        assert!(summary.contains(&(
            "kron-no-such-user-x".into(),
            Err("no user of that name on this host".into())
        )));
        assert!(summary.contains(&(me.clone(), Ok(()))));
        let link = found.iter().find(|f| f.user == "nobody").unwrap();
        assert!(
            reason(link).starts_with("a symbolic link"),
            "{}",
            reason(link)
        );
        assert_eq!(
            found.len(),
            4,
            "no hidden files, no directories: {summary:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn homes_need_a_regular_file_owned_by_the_user() {
        let dir = scratch_dir("homes");
        let me = nix::unistd::geteuid().as_raw();
        let mine = dir.join("mine");
        let theirs = dir.join("theirs");
        let linked = dir.join("linked");
        let none = dir.join("none");
        for home in [&mine, &theirs, &linked, &none] {
            std::fs::create_dir(home).unwrap();
        }
        std::fs::write(mine.join(GOOGLE_FILE_NAME), GA).unwrap();
        std::fs::write(theirs.join(GOOGLE_FILE_NAME), GA).unwrap();
        std::fs::set_permissions(
            theirs.join(GOOGLE_FILE_NAME),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        std::os::unix::fs::symlink(mine.join(GOOGLE_FILE_NAME), linked.join(GOOGLE_FILE_NAME))
            .unwrap();
        let account = |name: &str, uid: u32, home: &Path| Account {
            name: name.into(),
            uid,
            home: home.to_owned(),
        };
        let found = google_homes(&[
            account("mine", me, &mine),
            account("theirs", me + 1, &theirs),
            account("linked", me, &linked),
            account("none", me, &none),
            account("nohome", me, Path::new("/nonexistent/kron")),
            account("slash", me, Path::new("/")),
            account("relative", me, Path::new("home")),
        ]);
        let users: Vec<&str> = found.iter().map(|f| f.user.as_str()).collect();
        assert_eq!(users, ["mine", "theirs", "linked"]);
        assert!(found[0].parsed.token.is_ok());
        assert!(reason(&found[1]).starts_with(&format!("owned by uid {me}, not by theirs")));
        assert!(reason(&found[2]).starts_with("a symbolic link"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn accounts_include_root() {
        let accounts = accounts();
        assert!(
            accounts.iter().any(|a| a.name == "root" && a.uid == 0),
            "{accounts:?}"
        );
    }

    #[test]
    fn duplicates_after_the_first_are_skipped() {
        let mut found = vec![
            google_found("alice", "/a".into(), GA.as_bytes()),
            Found::skipped("bob", "/b".into(), "unsupported"),
            google_found("bob", "/c".into(), GA.as_bytes()),
            google_found("alice", "/d".into(), GA.as_bytes()),
        ];
        skip_duplicates(&mut found);
        assert!(found[0].parsed.token.is_ok());
        assert!(found[2].parsed.token.is_ok(), "the first usable one counts");
        assert_eq!(
            reason(&found[3]),
            "another token for this user was found first (/a)"
        );
    }

    #[test]
    fn imports_carry_everything_otpd_needs() {
        let parsed = google::parse(GA.as_bytes());
        let token = parsed.token.unwrap();
        let imports = [to_import("alice", &token)];
        assert_eq!(imports[0].algorithm, "SHA1");
        assert_eq!(
            (imports[0].digits, imports[0].period, imports[0].last_step),
            (6, 30, 7)
        );
        assert_eq!(imports[0].recovery_codes, ["12345678"]);
        assert_eq!(imports[0].secret, *token.secret);
    }
}
