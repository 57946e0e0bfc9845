//! Temporary directories and files the tests write.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::TempDir;

/// A fresh directory under the system temp dir that every user may enter and read (0755), so
/// test users can reach a bus socket or a PAM config inside it. Removed on drop.
pub fn public_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temporary directory");
    set_mode(dir.path(), 0o755);
    dir
}

/// A fresh directory only root may enter (0700). Removed on drop.
pub fn private_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temporary directory");
    set_mode(dir.path(), 0o700);
    dir
}

/// Writes `contents` to `path` with permissions `mode`.
pub fn write_file(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    set_mode(path, mode);
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("chmod {:o} {}: {err}", mode, path.display()));
}
