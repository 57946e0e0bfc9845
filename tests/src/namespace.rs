//! Programs that only read the machine's own config files (pamtester and sudo read
//! /etc/pam.d, sudo reads /etc/sudoers) run in a private mount namespace where test files are
//! bind-mounted over those paths. The machine's files are never modified, and the mounts vanish
//! with the namespace when the program exits.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::Identity;

/// Optionally starts a new kernel audit session (`--loginuid UID`), mounts `source` over
/// `target` (or, after `--overlay`, a read-only overlay of `layer` on `target`) inside the
/// namespace, then execs the program.
const SCRIPT: &str = r#"set -e
if [ "$1" = "--loginuid" ]; then echo "$2" > /proc/self/loginuid; shift 2; fi
while [ "$1" != "--" ]; do
  if [ "$1" = "--overlay" ]; then
    mount -t overlay kron-test -o "lowerdir=$2:$3" "$3"; shift 3
  else
    mount --bind "$1" "$2"; shift 2
  fi
done
shift
exec "$@""#;

/// A set of mounts to make in a fresh private mount namespace.
#[derive(Debug, Clone, Default)]
pub struct PrivateMounts {
    mounts: Vec<Mount>,
    loginuid: Option<u32>,
}

#[derive(Debug, Clone)]
enum Mount {
    /// `source` shown at `target`.
    Bind { source: PathBuf, target: PathBuf },
    /// The files of `layer` shown over those of the directory `target`.
    Overlay { layer: PathBuf, target: PathBuf },
}

impl PrivateMounts {
    pub fn new() -> PrivateMounts {
        PrivateMounts::default()
    }

    /// Shows `source` at `target` (both must exist and be of the same kind: file or dir).
    pub fn bind(mut self, source: &Path, target: &Path) -> PrivateMounts {
        self.mounts.push(Mount::Bind {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
        });
        self
    }

    /// Shows the files of the directory `layer` over those of the directory `target`, the rest
    /// of `target` still seen, read-only. For a machine file that others replace meanwhile
    /// (useradd renames a new /etc/subuid into place): the kernel drops a bind mount on a file
    /// once that file is replaced, in every namespace, but not one on its directory.
    pub fn overlay(mut self, layer: &Path, target: &Path) -> PrivateMounts {
        self.mounts.push(Mount::Overlay {
            layer: layer.to_path_buf(),
            target: target.to_path_buf(),
        });
        self
    }

    /// Also starts a new kernel audit session for the program, as `pam_loginuid` does at a
    /// login: root writes `uid` to `/proc/self/loginuid` before the mounts, and the kernel gives
    /// the process a fresh `/proc/self/sessionid`, which every process it starts inherits (a
    /// user cannot change it). Each command built this way gets its own session.
    pub fn audit_session(mut self, uid: u32) -> PrivateMounts {
        self.loginuid = Some(uid);
        self
    }

    /// A command that makes the mounts (as root) and then runs `program` as `identity`.
    pub fn command(&self, identity: &Identity, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("unshare");
        command.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            SCRIPT,
            "sh",
        ]);
        if let Some(uid) = self.loginuid {
            command.arg("--loginuid").arg(uid.to_string());
        }
        for mount in &self.mounts {
            match mount {
                Mount::Bind { source, target } => command.arg(source).arg(target),
                Mount::Overlay { layer, target } => command.arg("--overlay").arg(layer).arg(target),
            };
        }
        command.arg("--");
        let inner = identity.command(program);
        command.arg(inner.get_program()).args(inner.get_args());
        command
    }
}

/// The contents of some of the machine's own files, to check at the end of a test that it
/// changed none of them (missing files count too).
#[derive(Debug)]
pub struct MachineFiles {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl MachineFiles {
    /// Reads `paths` now.
    pub fn snapshot(paths: &[&str]) -> MachineFiles {
        MachineFiles {
            files: paths
                .iter()
                .map(|path| (PathBuf::from(path), std::fs::read(path).ok()))
                .collect(),
        }
    }

    /// Panics naming the first file whose contents (or existence) changed since the snapshot.
    pub fn assert_unchanged(&self) {
        for (path, before) in &self.files {
            assert!(
                std::fs::read(path).ok() == *before,
                "the machine's {} was changed",
                path.display()
            );
        }
    }
}
