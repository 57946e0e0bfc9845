//! Programs that only read the machine's own config files (pamtester and sudo read
//! /etc/pam.d, sudo reads /etc/sudoers) run in a private mount namespace where test files are
//! bind-mounted over those paths. The machine's files are never modified, and the mounts vanish
//! with the namespace when the program exits.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::Identity;

/// Mounts `source` over `target` inside the namespace, then execs the program.
const SCRIPT: &str = r#"set -e
while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done
shift
exec "$@""#;

/// A set of bind mounts to make in a fresh private mount namespace.
#[derive(Debug, Clone, Default)]
pub struct PrivateMounts {
    binds: Vec<(PathBuf, PathBuf)>,
}

impl PrivateMounts {
    pub fn new() -> PrivateMounts {
        PrivateMounts::default()
    }

    /// Shows `source` at `target` (both must exist and be of the same kind: file or dir).
    pub fn bind(mut self, source: &Path, target: &Path) -> PrivateMounts {
        self.binds
            .push((source.to_path_buf(), target.to_path_buf()));
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
        for (source, target) in &self.binds {
            command.arg(source).arg(target);
        }
        command.arg("--");
        let inner = identity.command(program);
        command.arg(inner.get_program()).args(inner.get_args());
        command
    }
}
