//! A test-only OpenSSH server on 127.0.0.1, and the OpenSSH client driven through
//! keyboard-interactive with SSH_ASKPASS.
//!
//! sshd runs in a private mount namespace with a test /etc/pam.d bind-mounted (its PAM service
//! is `sshd`), with its own config and host key in a temp dir. Only the privilege separation
//! directory /run/sshd is created on the machine if missing, as the openssh-server package
//! itself does at boot.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::namespace::PrivateMounts;
use crate::process::{self, Identity, Output};
use crate::scratch;

/// A running sshd, killed on drop.
pub struct Sshd {
    dir: TempDir,
    port: u16,
    child: Child,
}

impl std::fmt::Debug for Sshd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sshd").field("port", &self.port).finish()
    }
}

impl Sshd {
    /// Starts sshd with `pam_stack` as its PAM `sshd` service, keyboard-interactive only.
    pub fn start(pam_stack: &str) -> Sshd {
        let dir = scratch::public_dir("kron-sshd.");
        let pam_dir = dir.path().join("pam.d");
        std::fs::create_dir(&pam_dir).expect("mkdir pam.d");
        scratch::write_file(&pam_dir.join("sshd"), pam_stack, 0o644);
        let host_key = dir.path().join("host_ed25519");
        process::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key),
        )
        .assert_success("ssh-keygen");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        scratch::write_file(&config, &config_text(port, &host_key), 0o644);
        ensure_privsep_dir();

        let log = File::create(dir.path().join("sshd.log")).expect("create sshd log");
        let mut command = PrivateMounts::new()
            .bind(&pam_dir, Path::new("/etc/pam.d"))
            .command(&Identity::Root, "/usr/sbin/sshd");
        command.args(["-D", "-e", "-f"]).arg(&config);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd { dir, port, child };
        sshd.wait_until_listening();
        sshd
    }

    /// Everything sshd logged (it runs with `-e`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Runs `ssh user@127.0.0.1 command` answering every keyboard-interactive prompt with
    /// `answer` through an SSH_ASKPASS script; returns ssh's output and the prompts asked.
    pub fn ssh(&self, user: &str, answer: &str, remote_command: &str) -> (Output, String) {
        let client = scratch::public_dir("kron-ssh.");
        let prompts = client.path().join("prompts");
        let askpass = client.path().join("askpass");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\nprintf '%s\\n' '{answer}'\n",
            prompts.display()
        );
        scratch::write_file(&askpass, &script, 0o755);
        let mut command = Command::new("ssh");
        command
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "kron-tests:0")
            .args(["-F", "/dev/null", "-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "PreferredAuthentications=keyboard-interactive"])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=60"])
            .arg(format!("{user}@127.0.0.1"))
            .arg(remote_command);
        let output = process::run(&mut command);
        let asked = std::fs::read_to_string(&prompts).unwrap_or_default();
        (output, asked)
    }

    fn wait_until_listening(&mut self) {
        let port = self.port;
        process::wait_for("sshd to listen", Duration::from_secs(60), || {
            if let Some(status) = self.child.try_wait().expect("waitpid sshd") {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(port: u16, host_key: &Path) -> String {
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM yes\n\
         KbdInteractiveAuthentication yes\nPasswordAuthentication no\nPubkeyAuthentication no\n\
         AuthenticationMethods keyboard-interactive\nPermitRootLogin no\nStrictModes no\n\
         MaxAuthTries 1\nLogLevel VERBOSE\n",
        host_key.display()
    )
}

/// A TCP port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if !dir.exists() {
        let _ = std::fs::create_dir(dir);
        scratch::set_mode(dir, 0o755);
    }
}
