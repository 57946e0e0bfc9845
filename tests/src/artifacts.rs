//! Where the build artifacts under test live.
//!
//! The tests run the binaries `cargo build --workspace` produced (`scripts/test` builds first):
//! `otpd`, `kronctl`, `libpam_kron.so`, and this crate's own `pam-host`. They are looked up in
//! the directory of the running test binary's profile (`target/debug` for `cargo test`), so a
//! custom `CARGO_TARGET_DIR` or profile works without configuration. `KRON_TEST_BIN_DIR`
//! overrides the lookup.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The profile directory holding the workspace's binaries (e.g. `target/debug`).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find_bin_dir)
}

fn find_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KRON_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Integration test binaries live in `<target>/<profile>/deps/`.
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|name| name == "deps")
        && let Some(profile) = deps.parent()
    {
        return profile.to_path_buf();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

fn artifact(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`, or scripts/test)",
        path.display()
    );
    path
}

/// The daemon binary.
pub fn otpd() -> PathBuf {
    artifact("otpd")
}

/// The admin and user CLI.
pub fn kronctl() -> PathBuf {
    artifact("kronctl")
}

/// The PAM module, as libpam loads it (absolute path in the generated PAM config).
pub fn pam_module() -> PathBuf {
    artifact("libpam_kron.so")
}

/// This crate's libpam host (built by `cargo test -p kron-tests` itself).
pub fn pam_host() -> PathBuf {
    artifact("pam-host")
}

/// The probe of otpd's socket (built by `cargo test -p kron-tests` itself).
pub fn socket_probe() -> PathBuf {
    artifact("socket-probe")
}

/// This crate's `dbus-call`: one otpd method called as whoever runs it.
pub fn dbus_call() -> PathBuf {
    artifact("dbus-call")
}

/// The workspace root (for the packaging files the tests use as they ship).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The project's D-Bus policy file, included by every test bus.
pub fn dbus_policy() -> PathBuf {
    workspace_root().join("packaging/dbus/io.kron.Otpd.conf")
}
