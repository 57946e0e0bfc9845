//! Writing a file that holds a secret (the enrollment QR code as PNG, an export, a fleet host's
//! password).
//!
//! The content goes to a temporary file beside the final one (`.NAME.XXXXXX`, created new with
//! mode 0600, so nothing existing is followed or overwritten), is flushed to disk, and only
//! then renamed to `NAME`, with a rename that refuses to replace anything. So `NAME` appears
//! whole or not at all: a crash or a full disk halfway through a large export leaves no
//! truncated file that looks like a good one, and a file that appeared at `NAME` meanwhile (or
//! a planted symlink) is never replaced or followed. An existing `NAME` is refused at once, in
//! [`SecretFile::create`], before otpd is asked for anything, so a refused path leaves no
//! enrollment behind. If the command fails, the temporary file is removed again.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;
use zeroize::Zeroize;

use crate::error::Error;

/// Owner read/write only; the umask can take bits away, never add them.
const MODE: u32 = 0o600;
/// Pixels per QR module in a PNG: about 300 px wide for a typical otpauth URI.
const PNG_SCALE: u32 = 6;

/// A file being written: its content lives in a temporary file beside `path` until
/// [`Self::finish`] moves it there, and the temporary file is removed on drop.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    temp: NamedTempFile,
}

impl SecretFile {
    /// Refuses a `path` that exists (even as a dangling symlink) and creates the temporary
    /// file in its directory, so a path that cannot be written fails here, early.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let cannot_create = |source| Error::Io {
            what: format!("cannot create {}", path.display()),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Err(already_exists(path)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(cannot_create(error)),
        }
        let name = path.file_name().ok_or_else(|| {
            cannot_create(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
        let mut prefix = OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .permissions(Permissions::from_mode(MODE))
            .tempfile_in(directory_of(path))
            .map_err(cannot_create)?;
        Ok(SecretFile {
            path: path.to_owned(),
            temp,
        })
    }

    /// Appends `bytes` (a streamed export); nothing is at the final path until
    /// [`Self::finish`] runs.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.temp
            .as_file_mut()
            .write_all(bytes)
            .map_err(|source| self.write_error(source))
    }

    /// Writes `bytes`, flushes the file to disk, moves it to its path unless something is
    /// there by now, and flushes the directory so the new name survives a crash too.
    pub fn finish(mut self, bytes: &[u8]) -> Result<(), Error> {
        let file = self.temp.as_file_mut();
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| self.write_error(source))?;
        let SecretFile { path, temp } = self;
        // No-clobber (renameat2 RENAME_NOREPLACE, else link + unlink): the check in `create`
        // could be raced; this cannot. On failure the temporary file is dropped, so removed.
        temp.persist_noclobber(&path).map_err(|failed| {
            if failed.error.kind() == io::ErrorKind::AlreadyExists {
                already_exists(&path)
            } else {
                Error::Io {
                    what: format!("cannot move the new file to {}", path.display()),
                    source: failed.error,
                }
            }
        })?;
        File::open(directory_of(&path))
            .and_then(|dir| dir.sync_all())
            .map_err(|source| Error::Io {
                what: format!(
                    "wrote {}, but cannot flush its directory to disk",
                    path.display()
                ),
                source,
            })
    }

    /// Renders `uri` (an otpauth URI, which embeds the secret) as a QR code PNG and writes it
    /// as [`Self::finish`] does; the image is wiped from memory either way.
    pub fn finish_qr_png(self, uri: &str) -> Result<(), Error> {
        let mut image = kron_common::qr::png(uri, PNG_SCALE).map_err(|reason| Error::Io {
            what: "cannot render the QR code as PNG".into(),
            source: io::Error::other(reason),
        })?;
        let written = self.finish(&image);
        image.zeroize();
        written
    }

    fn write_error(&self, source: io::Error) -> Error {
        Error::Io {
            what: format!("cannot write {}", self.path.display()),
            source,
        }
    }
}

fn already_exists(path: &Path) -> Error {
    Error::Io {
        what: format!(
            "{} already exists; refusing to overwrite it (it would hold a secret)",
            path.display()
        ),
        source: io::Error::from_raw_os_error(libc::EEXIST),
    }
}

/// The directory `path` is in; `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn creates_private_file_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qr.png");
        SecretFile::create(&path).unwrap().finish(b"image").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"image");
        assert_eq!(entries(dir.path()), ["qr.png"], "no temporary file left");

        let error = SecretFile::create(&path).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"image",
            "the existing file is untouched"
        );
    }

    #[test]
    fn refuses_symlinks_and_removes_unfinished_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(SecretFile::create(&link).is_err());
        assert!(!target.exists(), "the symlink was not followed");

        let unfinished = dir.path().join("unfinished.png");
        let mut file = SecretFile::create(&unfinished).unwrap();
        file.write(b"half").unwrap();
        drop(file);
        assert!(!unfinished.exists());
        assert_eq!(
            entries(dir.path()),
            ["link.png"],
            "the temporary file is gone"
        );
    }

    /// A crash (here: the value is never dropped) halfway through a streamed export leaves
    /// nothing at the export's path, only a hidden private temporary file beside it.
    #[test]
    fn an_unfinished_file_never_appears_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.age");
        let mut file = SecretFile::create(&path).unwrap();
        file.write(b"first half of an export").unwrap();
        assert!(!path.exists(), "nothing at the final path before finish");
        std::mem::forget(file);
        assert!(!path.exists());
        let names = entries(dir.path());
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with(".backup.age."), "{names:?}");
        let temp = dir.path().join(&names[0]);
        let meta = std::fs::symlink_metadata(&temp).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    /// A file that appears at the path between `create` and `finish` is kept as it is, and the
    /// new content goes nowhere.
    #[test]
    fn a_file_that_appeared_meanwhile_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.age");
        let mut file = SecretFile::create(&path).unwrap();
        file.write(b"secret").unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        let error = file.finish(b" more").unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        assert_eq!(
            entries(dir.path()),
            ["backup.age"],
            "the temporary file is gone"
        );

        // A symlink planted there is not followed either.
        let other = dir.path().join("other.age");
        let target = dir.path().join("target");
        let file = SecretFile::create(&other).unwrap();
        std::os::unix::fs::symlink(&target, &other).unwrap();
        assert!(file.finish(b"secret").is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_bare_name_is_written_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("backup.age")), Path::new("."));
        assert_eq!(
            directory_of(Path::new("/root/backup.age")),
            Path::new("/root")
        );
        assert_eq!(directory_of(Path::new("dir/backup.age")), Path::new("dir"));
    }
}
