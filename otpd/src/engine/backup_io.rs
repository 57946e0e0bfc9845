//! The backup file written and read a user at a time, so its size is bounded by nothing but
//! the disk: [`BackupWriter`] encrypts users as they come (the caller takes the ciphertext
//! piece by piece), [`read`] decrypts and parses a file as it arrives and hands over each
//! checked user. The plaintext is the same JSON as ever (`{"format":"kron-backup",
//! "version":1,"created":...,"users":[...]}`), so `age -d` opens every file.

use super::backup::{
    Backup, BackupUser, FORMAT, MAX_WORK_FACTOR, VERSION, invalid_entry, passphrase, validate_entry,
};
use crate::error::{Error, Result};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::io::{BufReader, Read, Write};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use zeroize::Zeroizing;

/// Where the age writer puts ciphertext until the caller takes it.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// scrypt's work factor for new files: 2^16, so 64 MiB and about a quarter of a second.
/// age would calibrate it to a second of this machine (2^18: 256 MiB), which otpd would have
/// to hold on top of its own memory; the minimum passphrase strength makes up for the factor
/// of four (docs/security.md).
const WORK_FACTOR: u8 = 16;
/// Held while a file's key is derived from its passphrase ([`read_with_work_limit`]).
static DERIVING: Mutex<()> = Mutex::new(());

/// Most bytes one user's entry may take. An entry is well under 4 KiB (a seed, ten recovery
/// hashes, two addresses); a JSON string has no length of its own, so without a bound one
/// entry of a damaged or hostile file would be buffered whole, however large, before any
/// check could look at it.
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// An export being written. Memory: age's 64 KiB chunk and what the caller has not taken.
pub struct BackupWriter {
    writer: age::stream::StreamWriter<Sink>,
    sink: Sink,
    users: u64,
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::System(format!("encrypting the export failed: {e}"))
}

impl BackupWriter {
    /// A new file encrypted to `pass` (which must be strong), made at `created`.
    pub fn new(pass: &str, created: u64) -> Result<BackupWriter> {
        // A new file: its passphrase must be strong (an old file opens with whatever it has).
        kron_common::passphrase::check_strength(pass).map_err(Error::InvalidArgument)?;
        let sink = Sink::default();
        let mut recipient = age::scrypt::Recipient::new(passphrase(pass)?);
        recipient.set_work_factor(WORK_FACTOR);
        // The file key is wrapped with scrypt here (2^16: 64 MiB): one derivation at a time
        // with imports' and other exports', as in [`read_with_work_limit`].
        let deriving = DERIVING.lock().unwrap_or_else(PoisonError::into_inner);
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(failed)?;
        let mut writer = encryptor.wrap_output(sink.clone()).map_err(failed)?;
        drop(deriving);
        write!(
            writer,
            "{{\"format\":\"{FORMAT}\",\"version\":{VERSION},\"created\":{created},\"users\":["
        )
        .map_err(failed)?;
        Ok(BackupWriter {
            writer,
            sink,
            users: 0,
        })
    }

    /// Appends one user.
    pub fn push(&mut self, user: &BackupUser) -> Result<()> {
        let json = Zeroizing::new(serde_json::to_vec(user).map_err(failed)?);
        if self.users > 0 {
            self.writer.write_all(b",").map_err(failed)?;
        }
        self.writer.write_all(&json).map_err(failed)?;
        self.users += 1;
        Ok(())
    }

    /// Users written so far.
    pub fn users(&self) -> u64 {
        self.users
    }

    /// Ciphertext ready to be taken.
    pub fn ready(&self) -> usize {
        self.sink.lock().len()
    }

    /// Takes the ciphertext written so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut *self.sink.lock())
    }

    /// Ends the file; the rest of the ciphertext.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.writer.write_all(b"]}").map_err(failed)?;
        self.writer.finish().map_err(failed)?;
        Ok(std::mem::take(&mut *self.sink.lock()))
    }
}

/// What a file says of itself besides its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub users: u64,
    pub created: u64,
}

/// Decrypts and parses an export from `input`, checking each user entry and handing it to
/// `on_user`; returns how many users the file holds and when it was made. Only `Ok` says that every entry came from
/// an intact file of the right format: the file's end (age's final chunk) is checked last, so
/// `on_user` must keep what it is given aside until then.
pub fn read(
    input: impl Read,
    pass: &str,
    on_user: &mut dyn FnMut(BackupUser) -> Result<()>,
) -> Result<FileInfo> {
    read_with_work_limit(input, pass, MAX_WORK_FACTOR, on_user)
}

/// [`read`], refusing files whose scrypt work factor is above `max_work_factor` (the fuzz
/// target keeps it small, so each input stays cheap).
pub(crate) fn read_with_work_limit(
    input: impl Read,
    pass: &str,
    max_work_factor: u8,
    on_user: &mut dyn FnMut(BackupUser) -> Result<()>,
) -> Result<FileInfo> {
    let decryptor = age::Decryptor::new_buffered(BufReader::new(input))
        .map_err(|e| Error::InvalidArgument(format!("not an age file or damaged: {e}")))?;
    let mut identity = age::scrypt::Identity::new(passphrase(pass)?);
    identity.set_max_work_factor(max_work_factor);
    // One scrypt at a time, an export's included: each takes 2^(factor + 10) bytes while it
    // runs (256 MiB at the largest factor accepted), and two at once would pass the unit's
    // MemoryMax.
    let deriving = DERIVING.lock().unwrap_or_else(PoisonError::into_inner);
    let decrypted = decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity));
    drop(deriving);
    let reader = decrypted.map_err(|e| match e {
        // Not through age's own text for it: that subtracts the work factor this machine
        // would pick from the one the file asks for, which overflows when the file asks
        // for less (a panic in a debug build; found by the `backup` fuzz target).
        age::DecryptError::ExcessiveWork { required, .. } => Error::InvalidArgument(format!(
            "the file asks for scrypt work factor {required}, more than the \
                 {max_work_factor} otpd accepts"
        )),
        e => Error::Rejected(format!("cannot decrypt the file (wrong passphrase?): {e}")),
    })?;
    read_plain(reader, on_user)
}

/// The decrypted JSON of an export, parsed and checked as it comes (see [`read`]).
pub(crate) fn read_plain(
    plain: impl Read,
    on_user: &mut dyn FnMut(BackupUser) -> Result<()>,
) -> Result<FileInfo> {
    let since_entry = Rc::new(Cell::new(0));
    let bounded = EntryBound {
        inner: plain,
        read: since_entry.clone(),
    };
    let mut json = serde_json::Deserializer::from_reader(BufReader::new(bounded));
    let mut state = State {
        on_user,
        failure: None,
        users: 0,
        since_entry,
    };
    let parsed = File { state: &mut state }
        .deserialize(&mut json)
        .and_then(|header| json.end().map(|()| header));
    if let Some(failure) = state.failure {
        return Err(failure);
    }
    let header = parsed.map_err(|e| match e.classify() {
        serde_json::error::Category::Io if state.since_entry.get() > MAX_ENTRY_BYTES => {
            Error::InvalidArgument(format!(
                "entry {} of the file is larger than {MAX_ENTRY_BYTES} bytes",
                state.users + 1
            ))
        }
        serde_json::error::Category::Io => {
            Error::InvalidArgument(format!("the file is truncated or was modified: {e}"))
        }
        _ => Error::InvalidArgument(format!("the file is not a kron export: {e}")),
    })?;
    match header {
        (Some(format), Some(VERSION), Some(created)) if format == FORMAT => Ok(FileInfo {
            users: state.users,
            created,
        }),
        (format, version, _) => Err(Error::InvalidArgument(format!(
            "unsupported export format {:?} version {}",
            format.unwrap_or_default(),
            version.map_or_else(|| "none".to_owned(), |v| v.to_string())
        ))),
    }
}

/// What the parse carries along: the callback, its first error, the users so far, and the
/// bytes read since the last entry ended.
struct State<'a> {
    on_user: &'a mut dyn FnMut(BackupUser) -> Result<()>,
    failure: Option<Error>,
    users: u64,
    since_entry: Rc<Cell<u64>>,
}

/// The decrypted stream, failing once [`MAX_ENTRY_BYTES`] have been read since the last entry
/// ended (the parser resets the count after each). What the parser's buffer reads ahead is
/// counted early, a few KiB at most.
struct EntryBound<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for EntryBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read.get() > MAX_ENTRY_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "an entry over the bound",
            ));
        }
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// The file's object: `format`, `version`, `created` (returned), `users` (each to `on_user`).
struct File<'s, 'a> {
    state: &'s mut State<'a>,
}

type Header = (Option<String>, Option<u32>, Option<u64>);

impl<'de> DeserializeSeed<'de> for File<'_, '_> {
    type Value = Header;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Header, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for File<'_, '_> {
    type Value = Header;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a kron export")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> std::result::Result<Header, M::Error> {
        let (mut format, mut version, mut created) = (None, None, None);
        let mut users = false;
        while let Some(key) = map.next_key::<String>()? {
            let twice = match key.as_str() {
                "format" => format.replace(map.next_value::<String>()?).is_some(),
                "version" => version.replace(map.next_value::<u32>()?).is_some(),
                "created" => created.replace(map.next_value::<u64>()?).is_some(),
                "users" => {
                    map.next_value_seed(Users {
                        state: &mut *self.state,
                    })?;
                    std::mem::replace(&mut users, true)
                }
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["format", "version", "created", "users"],
                    ));
                }
            };
            if twice {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
        }
        if !users {
            return Err(de::Error::missing_field("users"));
        }
        Ok((format, version, created))
    }
}

/// The `users` array, one checked entry at a time.
struct Users<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for Users<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Users<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of users")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> std::result::Result<(), S::Error> {
        while let Some(mut entry) = seq.next_element::<BackupUser>()? {
            let index = self.state.users as usize;
            let outcome = validate_entry(&mut entry)
                .map_err(|e| Error::InvalidArgument(invalid_entry(index, &entry.user, &e)))
                .and_then(|()| (self.state.on_user)(entry));
            if let Err(e) = outcome {
                self.state.failure = Some(e);
                return Err(de::Error::custom("stopped"));
            }
            self.state.users += 1;
            self.state.since_entry.set(0);
        }
        Ok(())
    }
}

/// Serialises and encrypts `backup` to `pass` in one piece (the `Export` method).
pub fn seal(backup: &Backup, pass: &str) -> Result<Vec<u8>> {
    let mut writer = BackupWriter::new(pass, backup.created)?;
    for user in &backup.users {
        writer.push(user)?;
    }
    let mut out = writer.take();
    out.extend(writer.finish()?);
    Ok(out)
}

/// Decrypts and parses an export in one piece (the `Import` method); every user entry is
/// checked before it is returned.
pub fn open(data: &[u8], pass: &str) -> Result<Backup> {
    if data.len() > kron_proto::MAX_BACKUP_BYTES {
        return Err(Error::InvalidArgument(
            "the file is too large to be a kron export".into(),
        ));
    }
    let mut users = Vec::new();
    let info = read(data, pass, &mut |user| {
        users.push(user);
        Ok(())
    })?;
    Ok(Backup::new(info.created, users))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backup::{BackupToken, BackupUser};
    use crate::totp::TokenParams;
    use kron_common::config::Algorithm;

    fn sample() -> Backup {
        Backup::new(
            7,
            vec![BackupUser {
                user: "alice".into(),
                token: Some(BackupToken {
                    params: TokenParams {
                        algorithm: Algorithm::SHA1,
                        digits: 6,
                        period: 30,
                    },
                    secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into(),
                    created: 1,
                }),
                last_step: Some(99),
                last_used: 5,
                recovery: None,
                contact: kron_common::contact::Contact {
                    email: Some("alice@example.com".into()),
                    phone: None,
                },
            }],
        )
    }

    #[test]
    fn round_trip_and_refusals() {
        let sealed = seal(&sample(), "correct horse").unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1"));
        assert!(
            !String::from_utf8_lossy(&sealed).contains("JBSWY3DP"),
            "secret not in clear"
        );
        assert_eq!(open(&sealed, "correct horse").unwrap(), sample());
        assert!(matches!(open(&sealed, "wrong"), Err(Error::Rejected(_))));
        assert!(
            open(&sealed[..sealed.len() - 10], "correct horse").is_err(),
            "truncated"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 20;
        tampered[last] ^= 1;
        assert!(open(&tampered, "correct horse").is_err(), "tampered");
        assert!(open(b"garbage", "x").is_err());
        assert!(seal(&sample(), "").is_err());
        assert!(
            matches!(seal(&sample(), "x"), Err(Error::InvalidArgument(m)) if m.contains("too short")),
            "a 1-byte passphrase is refused"
        );
    }

    fn sample_file() -> Vec<u8> {
        let mut writer = BackupWriter::new("correct horse battery", 7).unwrap();
        let mut file = writer.take();
        file.extend(writer.finish().unwrap());
        file
    }

    #[test]
    fn a_file_asking_for_more_work_than_accepted_is_refused_without_a_panic() {
        // The file asks for 2^16; accepting at most 2^2 is below what this machine would pick,
        // the case age's own error text overflows on.
        let refused =
            read_with_work_limit(&sample_file()[..], "correct horse battery", 2, &mut |_| {
                Ok(())
            });
        assert!(
            matches!(refused, Err(Error::InvalidArgument(ref m)) if m.contains("work factor 16")),
            "{refused:?}"
        );
    }

    #[test]
    fn an_empty_file_round_trips_and_a_plain_reader_checks_every_entry() {
        let info = read(&sample_file()[..], "correct horse battery", &mut |_| Ok(())).unwrap();
        assert_eq!(
            info,
            FileInfo {
                users: 0,
                created: 7
            }
        );
        let bad = br#"{"format":"kron-backup","version":1,"created":1,"users":[{"user":"a b","token":null,"last_step":null,"last_used":0,"recovery":null}]}"#;
        let refused = read_plain(&bad[..], &mut |_| Ok(()));
        assert!(
            matches!(refused, Err(Error::InvalidArgument(ref m)) if m.starts_with("entry 1:")),
            "{refused:?}"
        );
        let foreign = br#"{"format":"other","version":1,"created":1,"users":[]}"#;
        assert!(read_plain(&foreign[..], &mut |_| Ok(())).is_err());
    }

    /// One entry with a string of several MiB is refused as it is read, not buffered whole;
    /// entries of any number, each small, are not bounded together.
    #[test]
    fn an_entry_is_bounded_the_file_is_not() {
        let entry = |user: &str| {
            format!(
                r#"{{"user":"{user}","token":null,"last_step":null,"last_used":0,"recovery":null}}"#
            )
        };
        let file = |entries: Vec<String>| {
            format!(
                r#"{{"format":"kron-backup","version":1,"created":1,"users":[{}]}}"#,
                entries.join(",")
            )
        };
        let huge = file(vec![entry("alice"), entry(&"b".repeat(3 << 20))]);
        let mut seen = 0;
        let refused = read_plain(huge.as_bytes(), &mut |_| {
            seen += 1;
            Ok(())
        });
        assert!(
            matches!(&refused, Err(Error::InvalidArgument(m))
                if m == &format!("entry 2 of the file is larger than {MAX_ENTRY_BYTES} bytes")),
            "{refused:?}"
        );
        assert_eq!(seen, 1, "the entry before it was read");
        let many = file((0..20_000).map(|i| entry(&format!("u{i}"))).collect());
        assert!(many.len() as u64 > MAX_ENTRY_BYTES);
        let info = read_plain(many.as_bytes(), &mut |_| Ok(())).unwrap();
        assert_eq!(info.users, 20_000);
    }
}
