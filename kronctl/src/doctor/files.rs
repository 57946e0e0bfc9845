//! Where doctor reads: system paths under `--root`, places in files, and bounded reads of
//! configuration files.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

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

    /// Where the system path `path` (absolute, e.g. `/etc/ssh/sshd_config`) is on disk.
    pub fn path(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }

    pub fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
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

/// Reads the text of a configuration file, at most [`MAX_FILE_BYTES`] of it.
pub fn read_bounded(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_prefixes_system_paths() {
        let root = Root::new(Path::new("/tmp/tree"));
        assert_eq!(
            root.path("/etc/ssh/sshd_config"),
            PathBuf::from("/tmp/tree/etc/ssh/sshd_config")
        );
        assert_eq!(
            Root::new(Path::new("/")).path("/etc/pam.d/sudo"),
            PathBuf::from("/etc/pam.d/sudo")
        );
    }
}
