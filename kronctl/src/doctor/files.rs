//! Where doctor reads: system paths under `--root` (symlinks resolved inside it), places in
//! files, and bounded reads of configuration files.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::resolve::{Last, resolve};

/// Bound on what one configuration file may hold; sshd_config and PAM files are a few
/// kilobytes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The directory system paths are read under (`--root`, `/` on a live system).
#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(dir: &Path) -> Self {
        Root(dir.to_path_buf())
    }

    /// Where the system path `path` (absolute, e.g. `/etc/ssh/sshd_config`) is on disk, its
    /// symlinks resolved inside the root (`resolve.rs`); an error for a symlink loop.
    pub fn path(&self, path: &str) -> io::Result<PathBuf> {
        self.resolve(path, Last::Follow)
    }

    /// As [`Self::path`], but a symlink as the last component is not followed: for
    /// `symlink_metadata`, which must see the link itself.
    pub fn path_no_follow(&self, path: &str) -> io::Result<PathBuf> {
        self.resolve(path, Last::NoFollow)
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn exists(&self, path: &str) -> bool {
        self.path(path).is_ok_and(|path| path.exists())
    }

    fn resolve(&self, path: &str, last: Last) -> io::Result<PathBuf> {
        if self.0 == Path::new("/") {
            // The live system: the kernel resolves links exactly so, and says ELOOP itself.
            return Ok(PathBuf::from("/").join(path.trim_start_matches('/')));
        }
        resolve(&self.0, Path::new(path), last)
    }
}

/// A place in a configuration file, shown as `file:line` with the system path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Reads the text of a configuration file: an error if it is larger than [`MAX_FILE_BYTES`]
/// (never a silently cut prefix) or not a regular file (a FIFO in an image would hold doctor).
pub fn read_bounded(path: &Path) -> io::Result<String> {
    kron_common::files::read_bounded(path, MAX_FILE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_prefixes_system_paths() {
        let root = Root::new(Path::new("/nonexistent-kron-test-root"));
        assert_eq!(
            root.path("/etc/ssh/sshd_config").unwrap(),
            PathBuf::from("/nonexistent-kron-test-root/etc/ssh/sshd_config")
        );
        assert_eq!(
            Root::new(Path::new("/")).path("/etc/pam.d/sudo").unwrap(),
            PathBuf::from("/etc/pam.d/sudo")
        );
    }

    #[test]
    fn an_images_absolute_link_is_read_in_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/ssh")).unwrap();
        std::fs::write(dir.path().join("etc/ssh/real"), "image's\n").unwrap();
        std::os::unix::fs::symlink("/etc/ssh/real", dir.path().join("etc/ssh/sshd_config"))
            .unwrap();
        let root = Root::new(dir.path());
        assert!(root.exists("/etc/ssh/sshd_config"));
        let text = read_bounded(&root.path("/etc/ssh/sshd_config").unwrap()).unwrap();
        assert_eq!(text, "image's\n");
        // A link to a file this machine has and the image has not: missing in the image.
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/ssh/hosts")).unwrap();
        assert!(!root.exists("/etc/ssh/hosts"));
        assert_eq!(
            root.path_no_follow("/etc/ssh/hosts").unwrap(),
            dir.path().join("etc/ssh/hosts")
        );
    }

    /// A FIFO where an image should have a config file is refused at once (it would hold
    /// doctor until something wrote to it), and a file past the bound is an error, not a prefix.
    #[test]
    fn a_fifo_or_an_oversized_file_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("sshd");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(read_bounded(&fifo).is_err());
        let large = dir.path().join("large");
        std::fs::write(&large, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(read_bounded(&large).is_err());
    }
}
