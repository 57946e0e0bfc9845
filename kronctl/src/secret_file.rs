//! Writing a file that holds a secret (the enrollment QR code as PNG, an export).
//!
//! The file is created new with mode 0600 before otpd is asked for anything, so a refused path
//! leaves no enrollment behind; `O_EXCL` also means an existing file or a planted symlink is
//! never followed or overwritten. If the command fails before the image is written, the empty
//! file is removed again.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use crate::error::Error;

/// Owner read/write only; the umask can take bits away, never add them.
const MODE: u32 = 0o600;
/// Pixels per QR module in a PNG: about 300 px wide for a typical otpauth URI.
const PNG_SCALE: u32 = 6;

/// A freshly created, still empty file that is removed on drop unless [`Self::finish`] ran.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl SecretFile {
    pub fn create(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .open(path)
            .map_err(|source| {
                let what = match source.kind() {
                    io::ErrorKind::AlreadyExists => {
                        format!(
                            "{} already exists; refusing to overwrite it (it would hold a secret)",
                            path.display()
                        )
                    }
                    _ => format!("cannot create {}", path.display()),
                };
                Error::Io { what, source }
            })?;
        Ok(SecretFile {
            path: path.to_owned(),
            file,
            keep: false,
        })
    }

    /// Appends `bytes` (a streamed export); the file is still removed on drop unless
    /// [`Self::finish`] runs.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file.write_all(bytes).map_err(|source| Error::Io {
            what: format!("cannot write {}", self.path.display()),
            source,
        })
    }

    /// Writes `bytes`, flushes them to disk and keeps the file.
    pub fn finish(mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_all())
            .map_err(|source| Error::Io {
                what: format!("cannot write {}", self.path.display()),
                source,
            })?;
        self.keep = true;
        Ok(())
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
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: the file is empty, so a failure here leaks nothing.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kronctl-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn creates_private_file_and_refuses_to_overwrite() {
        let dir = scratch_dir("create");
        let path = dir.join("qr.png");
        SecretFile::create(&path).unwrap().finish(b"image").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"image");

        let error = SecretFile::create(&path).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"image",
            "the existing file is untouched"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_symlinks_and_removes_unfinished_files() {
        let dir = scratch_dir("symlink");
        let target = dir.join("target");
        let link = dir.join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(SecretFile::create(&link).is_err());
        assert!(!target.exists(), "the symlink was not followed");

        let unfinished = dir.join("unfinished.png");
        drop(SecretFile::create(&unfinished).unwrap());
        assert!(!unfinished.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
