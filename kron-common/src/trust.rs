//! Trusting a file only if root owns it and nobody else can change it or the path to it, the
//! way sshd's StrictModes does (design invariant 11). otpd checks its files at start and with
//! `--check-config`; `kronctl doctor` reports the same list ([`otpd_files`]).
//!
//! Every directory from `/` to the file is checked, symlinks resolved on the way and the
//! directories they lead through checked too: each must be owned by root and writable by
//! neither group nor others. One exception, as the kernel's own `protected_*` rules reason: a
//! root-owned directory with the sticky bit (`/tmp`) may be writable by all, since nobody but
//! an entry's owner can then rename or delete it, and every entry on the path must be root's.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::config::Config;

/// Symlinks followed on one path before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// What is expected at the end of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file others may read but not change (otpd.toml).
    File,
    /// A file only its owner may read (secret.key, password and secret files).
    Secret,
    /// A directory others may not change (the state directory, the store).
    Dir,
}

/// Why a path is not trusted, with the path at fault (the file, or a directory on the way).
#[derive(Debug)]
pub struct Untrusted {
    /// The path that was checked.
    pub target: PathBuf,
    /// Where the problem is: `target` itself or a directory on the way to it.
    pub at: PathBuf,
    /// The first symlink followed on the way, if any.
    pub via: Option<PathBuf>,
    pub problem: Problem,
}

#[derive(Debug)]
pub enum Problem {
    /// Owned by someone other than root.
    Owner { uid: u32 },
    /// Writable by group or others.
    Writable { mode: u32 },
    /// A secret readable (or otherwise accessible) by group or others.
    Accessible { mode: u32 },
    /// Not the kind of file expected.
    WrongType { expected: Kind },
    /// More than `MAX_SYMLINKS` symlinks (a loop).
    Loop,
    /// It could not be looked at.
    Io(std::io::Error),
}

impl Untrusted {
    /// The command that fixes it.
    pub fn fix(&self) -> String {
        let at = self.at.display();
        let directory = self.at != self.target;
        match &self.problem {
            Problem::Owner { .. } if directory => format!(
                "chown root: {at}, or move {} to a directory only root can change",
                self.target.display()
            ),
            Problem::Owner { .. } => format!("chown root: {at}"),
            Problem::Writable { .. } if directory => format!(
                "chmod go-w {at}, or move {} to a directory only root can change",
                self.target.display()
            ),
            Problem::Writable { .. } => format!("chmod go-w {at}"),
            Problem::Accessible { .. } => format!("chmod 600 {at}"),
            Problem::WrongType { .. } | Problem::Loop | Problem::Io(_) => {
                format!("replace {at} with a {} root owns", self.expected_name())
            }
        }
    }

    fn expected_name(&self) -> &'static str {
        match &self.problem {
            Problem::WrongType {
                expected: Kind::Dir,
            } => "directory",
            _ => "regular file",
        }
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.what(), self.fix())
    }
}

impl Untrusted {
    /// What is wrong, without the fix.
    pub fn what(&self) -> String {
        let mut text = String::new();
        let _ = self.write_what(&mut text);
        text
    }

    fn write_what(&self, f: &mut String) -> fmt::Result {
        use std::fmt::Write as _;
        write!(f, "{}", self.target.display())?;
        if self.at != self.target {
            write!(f, ": the directory {} on the way", self.at.display())?;
        }
        if let Some(via) = &self.via {
            write!(f, " (through the symlink {})", via.display())?;
        }
        match &self.problem {
            Problem::Owner { uid } => write!(f, " is owned by uid {uid}, not root")?,
            Problem::Writable { mode } => {
                write!(f, " is writable by group or others (mode {mode:04o})")?
            }
            Problem::Accessible { mode } => {
                write!(f, " is accessible by group or others (mode {mode:04o})")?
            }
            Problem::WrongType { expected } => write!(
                f,
                " is not a {}",
                match expected {
                    Kind::Dir => "directory",
                    _ => "regular file",
                }
            )?,
            Problem::Loop => write!(f, ": too many symlinks")?,
            Problem::Io(e) => write!(f, ": {e}")?,
        }
        Ok(())
    }
}

impl std::error::Error for Untrusted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            Problem::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Who may own trusted files: root, and the user otpd runs as (itself, in tests and
/// development; root in production).
#[derive(Debug, Clone, Copy)]
pub struct Owners {
    also: u32,
}

impl Owners {
    /// Root only (what `kronctl doctor` expects of otpd's files).
    pub fn root() -> Owners {
        Owners { also: 0 }
    }

    /// Root and the effective user of this process.
    pub fn root_and_me() -> Owners {
        Owners {
            also: nix::unistd::geteuid().as_raw(),
        }
    }

    fn allows(self, uid: u32) -> bool {
        uid == 0 || uid == self.also
    }
}

/// Checks `target` (absolute, or relative to the current directory) and every directory on
/// the way to it. With `missing_ok`, a target that does not exist (or a missing directory on
/// the way) passes if the part that exists is safe (otpd creates its state directory).
pub fn check(target: &Path, kind: Kind, owners: Owners, missing_ok: bool) -> Result<(), Untrusted> {
    check_within(Path::new("/"), target, kind, owners, missing_ok)
}

/// [`check`] inside the system image at `root` (`kronctl doctor --root`): `target` is a path
/// under `root`, an absolute symlink on the way leads to `root` again and `..` stops there, as
/// they would for a system booted from the image, never to this host's files.
pub fn check_within(
    root: &Path,
    target: &Path,
    kind: Kind,
    owners: Owners,
    missing_ok: bool,
) -> Result<(), Untrusted> {
    let absolute = match target.is_absolute() {
        true => target.to_owned(),
        false => std::env::current_dir()
            .map(|dir| dir.join(target))
            .unwrap_or_else(|_| target.to_owned()),
    };
    let inside = absolute.strip_prefix(root).unwrap_or(&absolute);
    let untrusted = |at: &Path, via: &Option<PathBuf>, problem| Untrusted {
        target: target.to_owned(),
        at: at.to_owned(),
        via: via.clone(),
        problem,
    };
    let mut left: VecDeque<OsString> = components(inside);
    let mut here = root.to_owned();
    let mut via: Option<PathBuf> = None;
    let mut links = 0;
    check_dir(&here, owners).map_err(|p| untrusted(&here, &via, p))?;
    while let Some(name) = left.pop_front() {
        if name == ".." {
            if here != root {
                here.pop();
            }
            continue;
        }
        let next = here.join(&name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            // What is missing is created by otpd, as root, with the rest of the path.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => return Ok(()),
            Err(e) => return Err(untrusted(&next, &via, Problem::Io(e))),
        };
        if meta.file_type().is_symlink() {
            // The link itself sits in `here`, which was found safe: nobody else can swap it,
            // unless `here` is a sticky directory others may write to (/tmp), where whoever
            // owns the link may replace it: then that must be root or us.
            if !owners.allows(meta.uid()) && others_may_write(&here) {
                return Err(untrusted(&next, &via, Problem::Owner { uid: meta.uid() }));
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(untrusted(&next, &via, Problem::Loop));
            }
            let link =
                std::fs::read_link(&next).map_err(|e| untrusted(&next, &via, Problem::Io(e)))?;
            via.get_or_insert_with(|| next.clone());
            if link.is_absolute() {
                here = root.to_owned();
            }
            for part in components(&link).into_iter().rev() {
                left.push_front(part);
            }
            continue;
        }
        here = next;
        let last = left.is_empty();
        let problem = match (last, kind) {
            (false, _) | (true, Kind::Dir) => {
                if !meta.is_dir() {
                    Some(Problem::WrongType {
                        expected: Kind::Dir,
                    })
                } else {
                    check_dir(&here, owners).err()
                }
            }
            (true, file_kind) => check_opened(&meta, file_kind, owners).err(),
        };
        if let Some(problem) = problem {
            // A directory on the way is named as such; the target by its own path.
            let at = if last {
                target.to_owned()
            } else {
                here.clone()
            };
            return Err(untrusted(&at, &via, problem));
        }
    }
    Ok(())
}

/// The parts of `path` after its root, `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether group or others may write to `dir` (a sticky one that [`check_dir`] lets pass).
fn others_may_write(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|meta| meta.mode() & 0o022 != 0)
}

fn check_dir(dir: &Path, owners: Owners) -> Result<(), Problem> {
    let meta = std::fs::metadata(dir).map_err(Problem::Io)?;
    if !meta.is_dir() {
        return Err(Problem::WrongType {
            expected: Kind::Dir,
        });
    }
    if !owners.allows(meta.uid()) {
        return Err(Problem::Owner { uid: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky && meta.uid() == 0) {
        return Err(Problem::Writable { mode });
    }
    Ok(())
}

/// Checks one file by its metadata, the path to it aside: a regular file of one of `owners`
/// that nobody else may change (`Kind::File`) or access at all (`Kind::Secret`). The last step
/// of [`check`], and [`open_trusted`]'s check of the opened descriptor.
fn check_opened(meta: &std::fs::Metadata, kind: Kind, owners: Owners) -> Result<(), Problem> {
    let file_type = meta.file_type();
    if !file_type.is_file() || file_type.is_fifo() {
        return Err(Problem::WrongType { expected: kind });
    }
    if !owners.allows(meta.uid()) {
        return Err(Problem::Owner { uid: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    match kind {
        Kind::Secret if mode & 0o077 != 0 => Err(Problem::Accessible { mode }),
        _ if mode & 0o022 != 0 => Err(Problem::Writable { mode }),
        _ => Ok(()),
    }
}

/// Whether [`open_trusted`] opens through a symlink at the end of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalLink {
    /// Through it, as [`check`] goes: a path from the config, whose files otpd checks all the
    /// way (certbot's `live/` certificates and `/etc/ssl/certs` are links).
    Follow,
    /// Not at all (`O_NOFOLLOW`: the open fails with `ELOOP`): a secret's path a person typed.
    Refuse,
}

/// Opens `path` for reading and checks the opened file as [`check`] checks the file at the end
/// of a path: a regular file of one of `owners` that nobody else may change (`Kind::File`) or
/// access at all (`Kind::Secret`). What is checked is what is then read, whatever is at the
/// path by then. Gives the file and its metadata (one `fstat`).
///
/// The open never waits and never takes a terminal (`O_NONBLOCK | O_NOCTTY`, and `O_CLOEXEC`
/// as always): a FIFO or a device is refused as not a regular file instead of holding the
/// caller, and a regular file reads the same (neither flag changes anything for one). The
/// directories on the way are not looked at: a caller that needs them checked calls [`check`]
/// first.
///
/// In the error `at` is `path` and `via` is `None`: the descriptor tells nothing of the way. An
/// open or `fstat` that fails is [`Problem::Io`] (`NotFound` for a missing file, `ELOOP` for a
/// refused link), for the caller to word or act on. Nothing is read from the file here, so no
/// error can hold any of it.
pub fn open_trusted(
    path: &Path,
    kind: Kind,
    owners: Owners,
    link: FinalLink,
) -> Result<(std::fs::File, std::fs::Metadata), Untrusted> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let untrusted = |problem| Untrusted {
        target: path.to_owned(),
        at: path.to_owned(),
        via: None,
        problem,
    };
    let mut flags = OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if link == FinalLink::Refuse {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| untrusted(Problem::Io(e)))?;
    let meta = file.metadata().map_err(|e| untrusted(Problem::Io(e)))?;
    check_opened(&meta, kind, owners).map_err(untrusted)?;
    Ok((file, meta))
}

/// Every file otpd trusts with `config` read from `config_path` (`None`: the default path,
/// absent): the config, the state directory, `secret.key`, the store and what is directly in
/// it, and the `[email]` and `[sms]` secret files. Each with its kind and whether it may be
/// missing yet (otpd creates the state directory, the key and the store). The paths of the
/// config are taken under `root` (`/` for otpd, `kronctl doctor --root` for an image).
pub fn otpd_files(
    config: &Config,
    config_path: Option<&Path>,
    root: &Path,
) -> Vec<(PathBuf, Kind, bool)> {
    let under = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    let mut files = Vec::new();
    if let Some(path) = config_path {
        files.push((path.to_owned(), Kind::File, false));
    }
    let state = &under(&config.state_dir);
    files.push((state.clone(), Kind::Dir, true));
    files.push((state.join("secret.key"), Kind::Secret, true));
    let store = state.join("store");
    files.push((store.clone(), Kind::Dir, true));
    if let Ok(entries) = std::fs::read_dir(&store) {
        let mut inside: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        inside.sort();
        for path in inside {
            let kind = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => Kind::Dir,
                _ => Kind::File,
            };
            // Gone meanwhile (sled replaces snapshots): nothing to trust.
            files.push((path, kind, true));
        }
    }
    // A fleet's CA and client certificate decide which database a host believes.
    if let Some(fleet) = &config.fleet {
        let public = std::iter::once(fleet.ca_file.clone()).chain(fleet.cert_file.clone());
        files.extend(public.map(|p| (under(&p), Kind::File, false)));
    }
    let fleet = config.fleet.as_ref();
    let secrets = [
        config.email.as_ref().and_then(|e| e.password_file.clone()),
        config.sms.as_ref().and_then(|s| s.secret_file.clone()),
        fleet.and_then(|f| f.password_file.clone()),
        fleet.and_then(|f| f.key_file.clone()),
    ];
    files.extend(
        secrets
            .into_iter()
            .flatten()
            .map(|p| (under(&p), Kind::Secret, false)),
    );
    files
}

/// [`check`] on every file of [`otpd_files`]: the first that is not trusted.
pub fn check_otpd_files(
    config: &Config,
    config_path: Option<&Path>,
    owners: Owners,
) -> Result<(), Untrusted> {
    for (path, kind, missing_ok) in otpd_files(config, config_path, Path::new("/")) {
        check(&path, kind, owners, missing_ok)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private tree under the temp dir (root's 1777 /tmp when run as root).
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        dir
    }

    #[test]
    fn writable_files_dirs_and_symlinked_dirs_are_named_with_a_fix() {
        let dir = tree();
        let me = Owners::root_and_me();
        let file = dir.path().join("otpd.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        check(&file, Kind::File, me, false).unwrap();
        assert!(
            check(&file, Kind::Secret, me, false).is_err(),
            "readable secret"
        );

        chmod(&file, 0o664);
        let error = check(&file, Kind::File, me, false).unwrap_err();
        assert!(matches!(error.problem, Problem::Writable { mode: 0o664 }));
        assert!(error.to_string().contains("fix: chmod go-w"), "{error}");
        chmod(&file, 0o644);

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let inside = open.join("otpd.toml");
        std::fs::write(&inside, "").unwrap();
        let error = check(&inside, Kind::File, me, false).unwrap_err();
        assert_eq!(error.at, open, "{error}");
        assert!(error.to_string().contains("on the way"), "{error}");

        // A symlink from a safe place into the open directory is no way around it.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let error = check(&link.join("otpd.toml"), Kind::File, me, false).unwrap_err();
        assert_eq!(error.at, open);
        assert_eq!(error.via.as_deref(), Some(link.as_path()));

        // The sticky bit makes an open root directory safe (/tmp); without root it does not.
        chmod(&open, 0o1777);
        let sticky = check(&inside, Kind::File, me, false);
        assert_eq!(sticky.is_ok(), nix::unistd::geteuid().is_root());

        assert!(check(&dir.path().join("missing"), Kind::Dir, me, true).is_ok());
        assert!(check(&dir.path().join("missing"), Kind::Dir, me, false).is_err());
        assert!(matches!(
            check(&file, Kind::Dir, me, false).unwrap_err().problem,
            Problem::WrongType { .. }
        ));
    }

    /// In an image (`doctor --root`), an absolute link leads into the image, not to this
    /// host's file of that name, and `..` stops at the image's root.
    #[test]
    fn links_in_an_image_stay_in_the_image() {
        let image = tree();
        let me = Owners::root_and_me();
        let etc = image.path().join("etc/kron");
        std::fs::create_dir_all(&etc).unwrap();
        chmod(&image.path().join("etc"), 0o755);
        chmod(&etc, 0o755);
        // The image's real file is open to everyone; a host file of the same path may be fine.
        let real = etc.join("real.toml");
        std::fs::write(&real, "").unwrap();
        chmod(&real, 0o666);
        let link = etc.join("otpd.toml");
        std::os::unix::fs::symlink("/etc/kron/real.toml", &link).unwrap();
        let error = check_within(image.path(), &link, Kind::File, me, false).unwrap_err();
        assert!(matches!(error.problem, Problem::Writable { .. }), "{error}");
        chmod(&real, 0o644);
        check_within(image.path(), &link, Kind::File, me, false).unwrap();
        // `..` past the image's root stays at it.
        let up = etc.join("up.toml");
        std::os::unix::fs::symlink("../../../../../../etc/kron/real.toml", &up).unwrap();
        check_within(image.path(), &up, Kind::File, me, false).unwrap();
        // Outside the image, the host's /etc/kron/real.toml (absent) would have been read.
        assert!(check(&link, Kind::File, me, false).is_err());
    }

    /// In a sticky directory others may write to, a link someone else made could be swapped
    /// for another: refused, where the same link of root's (or ours) is followed.
    #[test]
    fn a_strangers_link_in_a_sticky_directory_is_not_followed() {
        if !nix::unistd::geteuid().is_root() {
            return; // Only root can give a link away.
        }
        let dir = tree();
        let sticky = dir.path().join("tmp");
        std::fs::create_dir(&sticky).unwrap();
        chmod(&sticky, 0o1777);
        let file = dir.path().join("otpd.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        let link = sticky.join("kron.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let me = Owners::root_and_me();
        check(&link, Kind::File, me, false).unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &link,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let error = check(&link, Kind::File, me, false).unwrap_err();
        assert!(
            matches!(error.problem, Problem::Owner { uid: 65534 }),
            "{error}"
        );
    }

    fn problem_opening(path: &Path, kind: Kind, owners: Owners, link: FinalLink) -> Problem {
        match open_trusted(path, kind, owners, link) {
            Ok(_) => panic!("{} was opened", path.display()),
            Err(error) => {
                // The file itself is named, never a directory or a link on the way.
                assert_eq!(
                    (&error.target, &error.at),
                    (&path.to_owned(), &path.to_owned())
                );
                assert!(error.via.is_none(), "{error}");
                error.problem
            }
        }
    }

    #[test]
    fn opened_files_are_read_only_if_theirs_alone_to_change() {
        use std::io::Read;
        let dir = tree();
        let me = Owners::root_and_me();
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2\n").unwrap();
        chmod(&file, 0o600);
        let (mut opened, meta) = open_trusted(&file, Kind::Secret, me, FinalLink::Refuse).unwrap();
        assert_eq!(meta.len(), 8);
        let mut text = String::new();
        opened.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hunter2\n");

        // A secret others may read; a file its group may change.
        chmod(&file, 0o640);
        let problem = problem_opening(&file, Kind::Secret, me, FinalLink::Follow);
        assert!(
            matches!(problem, Problem::Accessible { mode: 0o640 }),
            "{problem:?}"
        );
        open_trusted(&file, Kind::File, me, FinalLink::Follow).unwrap();
        chmod(&file, 0o664);
        let problem = problem_opening(&file, Kind::File, me, FinalLink::Follow);
        assert!(
            matches!(problem, Problem::Writable { mode: 0o664 }),
            "{problem:?}"
        );
        // What the file holds is in no error.
        let error = open_trusted(&file, Kind::Secret, me, FinalLink::Follow).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");

        // Not a regular file: a directory, and a FIFO (refused, not waited on for a writer).
        let problem = problem_opening(dir.path(), Kind::File, me, FinalLink::Follow);
        assert!(matches!(problem, Problem::WrongType { .. }), "{problem:?}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let problem = problem_opening(&fifo, Kind::Secret, me, FinalLink::Follow);
        assert!(matches!(problem, Problem::WrongType { .. }), "{problem:?}");

        let missing = dir.path().join("missing");
        let problem = problem_opening(&missing, Kind::File, me, FinalLink::Follow);
        assert!(
            matches!(&problem, Problem::Io(e) if e.kind() == std::io::ErrorKind::NotFound),
            "{problem:?}"
        );
    }

    /// Followed, a link leads to its file, and that file is what is checked; refused, the
    /// open fails however good the file behind it is.
    #[test]
    fn a_final_symlink_is_followed_only_when_asked() {
        let dir = tree();
        let me = Owners::root_and_me();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let (_, meta) = open_trusted(&link, Kind::File, me, FinalLink::Follow).unwrap();
        assert!(meta.is_file());
        let problem = problem_opening(&link, Kind::File, me, FinalLink::Refuse);
        assert!(
            matches!(&problem, Problem::Io(e) if e.raw_os_error() == Some(nix::libc::ELOOP)),
            "{problem:?}"
        );
        chmod(&file, 0o666);
        let problem = problem_opening(&link, Kind::File, me, FinalLink::Follow);
        assert!(
            matches!(problem, Problem::Writable { mode: 0o666 }),
            "{problem:?}"
        );
    }

    /// Another user's file is refused, however closed its mode; root's own only when only root
    /// is trusted.
    #[test]
    fn another_users_file_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return; // Only root can give a file away.
        }
        let dir = tree();
        let file = dir.path().join("secret.key");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o600);
        open_trusted(&file, Kind::Secret, Owners::root(), FinalLink::Refuse).unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        for owners in [Owners::root(), Owners::root_and_me()] {
            let problem = problem_opening(&file, Kind::Secret, owners, FinalLink::Refuse);
            assert!(
                matches!(problem, Problem::Owner { uid: 65534 }),
                "{problem:?}"
            );
        }
        // A link of root's to it does not make it root's.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let problem = problem_opening(&link, Kind::Secret, Owners::root(), FinalLink::Follow);
        assert!(
            matches!(problem, Problem::Owner { uid: 65534 }),
            "{problem:?}"
        );
    }

    #[test]
    fn symlink_loops_end() {
        let dir = tree();
        let a = dir.path().join("a");
        std::os::unix::fs::symlink(&a, &a).unwrap();
        assert!(matches!(
            check(&a, Kind::File, Owners::root_and_me(), false)
                .unwrap_err()
                .problem,
            Problem::Loop
        ));
    }
}
