//! A system path resolved inside `--root` as if that directory were `/` (the way a chroot or
//! openat2's RESOLVE_IN_ROOT sees it): an image's `/etc/pam.d/sshd -> /etc/pam.d/common` names
//! the image's `common`, never this machine's, and `..` stops at the root. Without this, the
//! kernel would follow an absolute link out of the image and doctor would judge the host's
//! file as if it were the image's.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed on one path before giving up, the kernel's own limit (ELOOP).
pub const MAX_SYMLINKS: usize = 40;

/// Whether a symlink as the last component is followed (`stat`) or is the answer (`lstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    Follow,
    NoFollow,
}

/// Where `path` (a system path; relative is taken from `/`) is under `root`, every symlink on
/// the way resolved inside `root`. Components that do not exist are kept as they are, so
/// opening the answer fails as opening the path would. More than [`MAX_SYMLINKS`] links (a
/// loop) is an error, ELOOP, as the kernel reports it.
pub fn resolve(root: &Path, path: &Path, last: Last) -> io::Result<PathBuf> {
    // What is left to walk, next component last; `..` kept as `..`.
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, path);
    // What is walked so far, relative to `root`, with no symlink and no `..` in it.
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(component) = pending.pop() {
        if component == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&component);
        if pending.is_empty() && last == Last::NoFollow {
            resolved = candidate;
            break;
        }
        let on_disk = root.join(&candidate);
        // Anything but a link (missing, unreadable, a file with more after it) is kept as it
        // is; opening the result then fails the way it should.
        let is_link = std::fs::symlink_metadata(&on_disk).is_ok_and(|m| m.is_symlink());
        if !is_link {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = std::fs::read_link(&on_disk)?;
        if target.has_root() {
            resolved = PathBuf::new();
        }
        push_components(&mut pending, &target);
    }
    Ok(root.join(resolved))
}

/// Puts the components of `path` on `pending` so that its first one is popped next; the root
/// and `.` are left out (the caller decides where an absolute path starts).
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let start = pending.len();
    for component in path.components() {
        match component {
            Component::Normal(name) => pending.push(name.to_owned()),
            Component::ParentDir => pending.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    pending[start..].reverse();
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// An image with `etc/pam.d/common` (a file) and `etc/pam.d/` in it.
    fn image() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/pam.d")).unwrap();
        std::fs::write(dir.path().join("etc/pam.d/common"), "image's\n").unwrap();
        dir
    }

    fn follow(root: &Path, path: &str) -> io::Result<PathBuf> {
        resolve(root, Path::new(path), Last::Follow)
    }

    #[test]
    fn a_path_without_links_is_the_plain_join() {
        let dir = image();
        let root = dir.path();
        assert_eq!(
            follow(root, "/etc/pam.d/common").unwrap(),
            root.join("etc/pam.d/common")
        );
        assert_eq!(
            follow(root, "/etc/missing/file").unwrap(),
            root.join("etc/missing/file")
        );
        assert_eq!(follow(root, "/").unwrap(), root.join(""));
    }

    #[test]
    fn an_absolute_link_stays_in_the_image() {
        let dir = image();
        let root = dir.path();
        // On this machine /etc/pam.d/common may well exist: it must not be the answer.
        symlink("/etc/pam.d/common", root.join("etc/pam.d/sshd")).unwrap();
        let found = follow(root, "/etc/pam.d/sshd").unwrap();
        assert_eq!(found, root.join("etc/pam.d/common"));
        assert_eq!(std::fs::read_to_string(found).unwrap(), "image's\n");

        // A link in a directory on the way, too.
        symlink("/etc/pam.d", root.join("pam")).unwrap();
        assert_eq!(
            follow(root, "/pam/common").unwrap(),
            root.join("etc/pam.d/common")
        );
    }

    #[test]
    fn a_relative_link_is_taken_from_its_directory() {
        let dir = image();
        let root = dir.path();
        std::fs::create_dir(root.join("etc/pam.d/sub")).unwrap();
        symlink("../common", root.join("etc/pam.d/sub/sudo")).unwrap();
        symlink("common", root.join("etc/pam.d/su")).unwrap();
        assert_eq!(
            follow(root, "/etc/pam.d/sub/sudo").unwrap(),
            root.join("etc/pam.d/common")
        );
        assert_eq!(
            follow(root, "/etc/pam.d/su").unwrap(),
            root.join("etc/pam.d/common")
        );
    }

    #[test]
    fn dot_dot_cannot_climb_out_of_the_image() {
        let dir = image();
        let root = dir.path();
        symlink(
            "../../../../../../../etc/pam.d/common",
            root.join("etc/pam.d/up"),
        )
        .unwrap();
        assert_eq!(
            follow(root, "/etc/pam.d/up").unwrap(),
            root.join("etc/pam.d/common")
        );
        // In the path asked for, as in a link.
        assert_eq!(
            follow(root, "/../../etc/./pam.d/common").unwrap(),
            root.join("etc/pam.d/common")
        );
        symlink("..", root.join("parent")).unwrap();
        assert_eq!(follow(root, "/parent/parent").unwrap(), root.join(""));
    }

    #[test]
    fn a_loop_ends_in_eloop() {
        let dir = image();
        let root = dir.path();
        symlink("/b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        let error = follow(root, "/a").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
        symlink("self", root.join("self")).unwrap();
        assert!(follow(root, "/self/x").is_err());

        // A chain of MAX_SYMLINKS links is fine, one more is not.
        for i in 1..=MAX_SYMLINKS {
            symlink(format!("/chain{}", i - 1), root.join(format!("chain{i}"))).unwrap();
        }
        std::fs::write(root.join("chain0"), "end").unwrap();
        let top = format!("/chain{MAX_SYMLINKS}");
        assert_eq!(follow(root, &top).unwrap(), root.join("chain0"));
        symlink(&top, root.join("one-more")).unwrap();
        assert!(follow(root, "/one-more").is_err());
    }

    #[test]
    fn no_follow_keeps_a_last_link_but_resolves_the_way_to_it() {
        let dir = image();
        let root = dir.path();
        symlink("/etc/pam.d/common", root.join("etc/pam.d/sshd")).unwrap();
        symlink("/etc", root.join("etc-link")).unwrap();
        assert_eq!(
            resolve(root, Path::new("/etc-link/pam.d/sshd"), Last::NoFollow).unwrap(),
            root.join("etc/pam.d/sshd")
        );
    }
}
