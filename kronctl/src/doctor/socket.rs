//! `otpd-socket`: otpd's own socket, where pam_kron talks to it, exists, is root's, lets every
//! local user connect (the socket and every directory on the way to it), and otpd answers on
//! it.

#![forbid(unsafe_code)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use kron_proto::OtpdProxy;
use zbus::address::transport::{Transport, Unix, UnixSocket};
use zbus::proxy::CacheProperties;

use super::config::Policy;
use super::files::Root;
use super::report::{Finding, Findings};

const CHECK: &str = "otpd-socket";
/// A healthy otpd answers in milliseconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the socket named by the config (its default when there is none). otpd is asked only
/// on a live system (`--root /`): under another root the socket belongs to another machine.
pub async fn check(root: &Root, policy: &Policy, live: bool, out: &mut Findings) {
    if !out.wants(CHECK) {
        return;
    }
    let path = policy
        .config
        .as_ref()
        .map(|config| config.socket.clone())
        .unwrap_or_else(|| kron_proto::DEFAULT_SOCKET_PATH.into());
    let shown = path.display().to_string();
    let metadata = match root
        .path_no_follow(&shown)
        .and_then(std::fs::symlink_metadata)
    {
        Ok(metadata) => metadata,
        Err(error) => {
            out.push(Finding::error(
                CHECK,
                format!(
                    "{shown}: {error}; pam_kron cannot reach otpd and every login it guards fails"
                ),
                "enable the socket (`systemctl enable --now otpd.socket`), or start otpd, which \
                 creates it",
            ));
            return;
        }
    };
    if !metadata.file_type().is_socket() {
        out.push(Finding::error(
            CHECK,
            format!("{shown} is not a socket"),
            "remove it and `systemctl restart otpd.socket otpd`",
        ));
        return;
    }
    if metadata.uid() != 0 {
        out.push(Finding::error(
            CHECK,
            format!(
                "{shown} belongs to uid {}, not root: whoever owns it may serve logins",
                metadata.uid()
            ),
            "remove it and `systemctl restart otpd.socket otpd`",
        ));
        return;
    }
    if metadata.mode() & 0o666 != 0o666 {
        out.push(Finding::warning(
            CHECK,
            format!(
                "{shown} has mode {:o}: users who cannot connect are refused by screen lockers \
                 and other logins that run as the user",
                metadata.mode() & 0o777
            ),
            "set SocketMode=0666 in otpd.socket (the default)",
        ));
        return;
    }
    if let Some(closed) = closed_directory(root, &path) {
        out.push(Finding::warning(
            CHECK,
            format!(
                "{} has mode {:o}: users other than root cannot reach {shown}, so screen \
                 lockers and other logins that run as the user are refused",
                closed.0.display(),
                closed.1
            ),
            format!("chmod 755 {}", closed.0.display()),
        ));
        return;
    }
    if !live {
        out.push(Finding::ok(
            CHECK,
            format!("{shown} is root's socket, 0666"),
        ));
        return;
    }
    match version_on(&path, CALL_TIMEOUT).await {
        Ok(version) => out.push(Finding::ok(
            CHECK,
            format!("otpd {version} answers on {shown}"),
        )),
        Err(reason) => out.push(Finding::error(
            CHECK,
            format!("otpd does not answer on {shown}: {reason}; logins through pam_kron fail"),
            "check `systemctl status otpd.socket otpd` and `journalctl -u otpd`",
        )),
    }
}

/// The first directory on the way to `socket` (as the live system names it, and its mode) that
/// other users cannot search: connecting needs search permission on every one of them.
fn closed_directory(root: &Root, socket: &Path) -> Option<(std::path::PathBuf, u32)> {
    socket
        .ancestors()
        .skip(1)
        .filter(|dir| *dir != Path::new("/") && !dir.as_os_str().is_empty())
        .filter_map(|dir| {
            let mode = root
                .path(&dir.display().to_string())
                .and_then(std::fs::metadata)
                .ok()?
                .mode();
            (mode & 0o001 == 0).then(|| (dir.to_path_buf(), mode & 0o7777))
        })
        .last()
}

/// otpd's `Version`, asked peer-to-peer on `path` the way pam_kron connects, each step within
/// `timeout`.
async fn version_on(path: &Path, timeout: Duration) -> Result<String, String> {
    let address = zbus::Address::from(Transport::Unix(Unix::new(UnixSocket::File(
        path.to_path_buf(),
    ))));
    // `method_timeout` bounds calls only: the connect and the handshake get a timer of their
    // own, or a socket that accepts and never answers would hang doctor.
    let build = zbus::connection::Builder::address(address)
        .p2p()
        .method_timeout(timeout)
        .build();
    // Inside `zbus::block_on` this is the runtime that call drives on this thread, so the timer
    // starts no thread.
    let runtime =
        zruntime::SharedRuntime::current().map_err(|e| format!("no runtime for the timer: {e}"))?;
    let connection = runtime
        .timeout(timeout, build)
        .await
        .map_err(|_| format!("no answer to the handshake within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let proxy = OtpdProxy::builder(&connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let version = proxy.version().await.map_err(|e| e.to_string());
    drop(proxy);
    let _ = connection.close().await;
    version
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Severity;

    fn policy_with(socket: &Path) -> Policy {
        let text = format!("socket = \"{}\"\n", socket.display());
        Policy {
            config: Some(kron_common::config::Config::parse(&text, "otpd.toml").unwrap()),
            origin: "otpd.toml".into(),
        }
    }

    #[test]
    fn a_missing_socket_or_a_file_is_an_error_a_socket_of_root_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let policy = policy_with(Path::new("/run/kron/otpd.sock"));
        let on_disk = dir.path().join("run/kron/otpd.sock");
        let mut out = Findings::new(&[]);
        zbus::block_on(check(&root, &policy, false, &mut out));
        std::fs::create_dir_all(on_disk.parent().unwrap()).unwrap();
        std::fs::write(&on_disk, "").unwrap();
        zbus::block_on(check(&root, &policy, false, &mut out));
        std::fs::remove_file(&on_disk).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&on_disk).unwrap();
        std::fs::set_permissions(
            &on_disk,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        zbus::block_on(check(&root, &policy, false, &mut out));
        drop(listener);
        let severities: Vec<Severity> = out.into_vec().iter().map(|f| f.severity).collect();
        assert_eq!(
            severities,
            [Severity::Error, Severity::Error, Severity::Ok],
            "tests run as root, so the socket is root's"
        );
    }

    #[test]
    fn a_directory_that_keeps_other_users_out_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let policy = policy_with(Path::new("/run/kron/otpd.sock"));
        let kron = dir.path().join("run/kron");
        std::fs::create_dir_all(&kron).unwrap();
        let on_disk = kron.join("otpd.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&on_disk).unwrap();
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap()
        };
        chmod(&on_disk, 0o666);
        chmod(&kron, 0o700);
        let mut out = Findings::new(&[]);
        zbus::block_on(check(&root, &policy, false, &mut out));
        chmod(&kron, 0o755);
        zbus::block_on(check(&root, &policy, false, &mut out));
        let findings = out.into_vec();
        assert_eq!(findings[0].severity, Severity::Warning, "{findings:?}");
        assert!(
            findings[0].message.starts_with("/run/kron has mode 700"),
            "{findings:?}"
        );
        assert_eq!(findings[1].severity, Severity::Ok, "{findings:?}");
    }

    #[test]
    fn a_socket_that_accepts_and_never_answers_does_not_hang_doctor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.sock");
        // Connections complete in the kernel's backlog; nothing ever reads or writes them.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let answer = zbus::block_on(version_on(&path, Duration::from_millis(300)));
        let reason = answer.unwrap_err();
        assert!(reason.contains("no answer to the handshake"), "{reason}");
    }

    #[test]
    fn a_socket_nobody_serves_is_an_error_on_a_live_system() {
        let dir = tempfile::tempdir().unwrap();
        // Reachable by everyone, as /run/kron is.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = dir.path().join("otpd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        drop(listener);
        // Bound but not listening any more: connect is refused.
        let mut out = Findings::new(&[]);
        zbus::block_on(check(
            &Root::new(Path::new("/")),
            &policy_with(&path),
            true,
            &mut out,
        ));
        let finding = &out.into_vec()[0];
        assert_eq!(finding.severity, Severity::Error, "{finding:?}");
        assert!(finding.message.contains("does not answer"), "{finding:?}");
    }
}
