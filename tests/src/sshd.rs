//! A test-only OpenSSH server on 127.0.0.1, and the OpenSSH client driven through
//! keyboard-interactive with SSH_ASKPASS.
//!
//! [`Sshd::client`] runs the real `ssh` with `SSH_ASKPASS_REQUIRE=force`: every
//! keyboard-interactive prompt goes to an askpass script that writes it to a file and waits for
//! the test to write the answer, so the test sees each prompt (with the PAM_TEXT_INFO and
//! PAM_ERROR_MSG messages sshd puts in front of it) before it answers. Messages sshd sends
//! without a prompt (the refusal after a wrong code) reach the client as the instruction of an
//! empty keyboard-interactive request, which `ssh` prints to stderr.
//!
//! sshd runs in a private mount namespace with a test /etc/pam.d bind-mounted (its PAM service
//! is `sshd`), with its own config and host key in a temp dir. Only the privilege separation
//! directory /run/sshd is created on the machine if missing, as the openssh-server package
//! itself does at boot.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::namespace::PrivateMounts;
use crate::ports::free_port;
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

/// The client's login methods the server asks for (`AuthenticationMethods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// `keyboard-interactive`: the whole PAM auth stack (password + code, or code alone).
    KeyboardInteractive,
    /// `publickey,keyboard-interactive`: an authorized key first, then the PAM auth stack.
    KeyThenKeyboardInteractive,
}

impl Methods {
    fn config(self) -> &'static str {
        match self {
            Methods::KeyboardInteractive => {
                "PubkeyAuthentication no\nAuthenticationMethods keyboard-interactive\n"
            }
            Methods::KeyThenKeyboardInteractive => {
                "PubkeyAuthentication yes\nAuthenticationMethods publickey,keyboard-interactive\n"
            }
        }
    }
}

impl Sshd {
    /// Starts sshd with `pam_stack` as its PAM `sshd` service, keyboard-interactive only.
    pub fn start(pam_stack: &str) -> Sshd {
        Sshd::start_with(pam_stack, Methods::KeyboardInteractive)
    }

    /// Starts sshd with `pam_stack` as its PAM `sshd` service and `methods` required.
    /// Authorized keys are read from the test's own directory ([`Sshd::authorize`]).
    pub fn start_with(pam_stack: &str, methods: Methods) -> Sshd {
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
        let keys = dir.path().join("authorized_keys");
        std::fs::create_dir(&keys).expect("mkdir authorized_keys");
        scratch::set_mode(&keys, 0o755);
        ensure_privsep_dir();
        // Another test may take the free port before sshd binds it: then try another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let config = dir.path().join("sshd_config");
            scratch::write_file(
                &config,
                &config_text(port, &host_key, &keys, methods),
                0o644,
            );
            let log_path = dir.path().join("sshd.log");
            let log = File::create(&log_path).expect("create sshd log");
            let mut command = PrivateMounts::new()
                .bind(&pam_dir, Path::new("/etc/pam.d"))
                .command(&Identity::Root, "/usr/sbin/sshd");
            command.args(["-D", "-e", "-f"]).arg(&config);
            let mut child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn()
                .expect("start sshd");
            match wait_until_listening(&mut child, &log_path, port) {
                Ok(()) => return Sshd { dir, port, child },
                Err(log) if log.contains("Address already in use") && attempts < 5 => {}
                Err(log) => panic!("sshd did not start:\n{log}"),
            }
        }
    }

    /// Lets `user` log in with `key` (first method of [`Methods::KeyThenKeyboardInteractive`]).
    pub fn authorize(&self, user: &str, key: &ClientKey) {
        let path = self.dir.path().join("authorized_keys").join(user);
        scratch::write_file(&path, &key.public(), 0o644);
    }

    /// The OpenSSH client logging in as `user` to this server.
    pub fn client(&self, user: &str) -> SshClient<'_> {
        SshClient {
            sshd: self,
            user: user.to_string(),
            key: None,
            locale: "C.UTF-8".to_string(),
        }
    }

    /// The port sshd listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything sshd logged (it runs with `-e`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Runs `ssh user@127.0.0.1 command` answering every keyboard-interactive prompt with
    /// `answer`; returns ssh's output and the prompts asked, one per line.
    pub fn ssh(&self, user: &str, answer: &str, remote_command: &str) -> (Output, String) {
        let run = self.client(user).run_answering(remote_command, answer);
        let asked = run
            .prompts
            .iter()
            .map(|prompt| format!("{prompt}\n"))
            .collect();
        (run.output, asked)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(port: u16, host_key: &Path, keys: &Path, methods: Methods) -> String {
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM yes\n\
         KbdInteractiveAuthentication yes\nPasswordAuthentication no\n{}\
         AuthorizedKeysFile {}/%u\nPermitRootLogin no\nStrictModes no\n\
         MaxAuthTries 2\nLogLevel VERBOSE\n",
        host_key.display(),
        methods.config(),
        keys.display(),
    )
}

/// Waits until sshd says it listens (its own log line, not a probe that another test's server
/// on the same port could answer); `Err(log)` if it exited instead.
fn wait_until_listening(child: &mut Child, log: &Path, port: u16) -> Result<(), String> {
    let ready = format!("Server listening on 127.0.0.1 port {port}.");
    process::wait_for("sshd to listen", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if child.try_wait().expect("waitpid sshd").is_some() {
            return Some(Err(text));
        }
        text.contains(&ready).then_some(Ok(()))
    })
}

fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if !dir.exists() {
        let _ = std::fs::create_dir(dir);
        scratch::set_mode(dir, 0o755);
    }
}

/// A client key pair (ed25519, no passphrase) in a private temp dir, removed on drop.
#[derive(Debug)]
pub struct ClientKey {
    dir: TempDir,
}

impl ClientKey {
    /// Generates a fresh key pair.
    pub fn new() -> ClientKey {
        let dir = scratch::private_dir("kron-sshkey.");
        process::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "kron-test", "-f"])
                .arg(dir.path().join("id_ed25519")),
        )
        .assert_success("ssh-keygen (client key)");
        ClientKey { dir }
    }

    /// The private key file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The public key, one authorized_keys line.
    pub fn public(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("id_ed25519.pub")).expect("read public key")
    }
}

impl Default for ClientKey {
    fn default() -> Self {
        ClientKey::new()
    }
}

/// Writes the prompt (`$1`) to `prompt.N`, waits (at most 120 s) for `answer.N` and prints it;
/// N counts the prompts of this ssh run. `%DIR%` is replaced by the exchange directory.
const ASKPASS: &str = r#"#!/bin/sh
dir='%DIR%'
n=0
while [ -e "$dir/prompt.$n" ]; do n=$((n + 1)); done
printf '%s' "$1" > "$dir/.prompt.$n"
mv "$dir/.prompt.$n" "$dir/prompt.$n"
i=0
while [ ! -e "$dir/answer.$n" ]; do
    i=$((i + 1))
    [ "$i" -le 6000 ] || exit 1
    sleep 0.02
done
cat "$dir/answer.$n"
"#;

/// One `ssh` login to a test [`Sshd`].
#[derive(Debug)]
pub struct SshClient<'a> {
    sshd: &'a Sshd,
    user: String,
    key: Option<PathBuf>,
    locale: String,
}

impl SshClient<'_> {
    /// Runs the client with `LC_ALL=locale` instead of `C.UTF-8`. OpenSSH escapes what the
    /// locale cannot print: under `C` the QR's half blocks arrive as `\342\226\200` escapes.
    pub fn locale(mut self, locale: &str) -> Self {
        self.locale = locale.to_string();
        self
    }

    /// Offers `key` (publickey first, then keyboard-interactive); without it the client tries
    /// keyboard-interactive only.
    pub fn key(mut self, key: &ClientKey) -> Self {
        self.key = Some(key.path());
        self
    }

    /// Runs `ssh user@127.0.0.1 remote_command`, answering each keyboard-interactive prompt
    /// with what `answer` returns for the prompt's text.
    pub fn run(&self, remote_command: &str, mut answer: impl FnMut(&str) -> String) -> SshRun {
        let exchange = scratch::private_dir("kron-askpass.");
        let askpass = exchange.path().join("askpass");
        let script = ASKPASS.replace("%DIR%", &exchange.path().display().to_string());
        scratch::write_file(&askpass, &script, 0o700);
        let mut command = Command::new("ssh");
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", &self.locale)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "kron-tests:0")
            .args(["-F", "/dev/null", "-p", &self.sshd.port.to_string()])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=60"])
            .args(["-o", "BatchMode=no", "-o", "LogLevel=INFO"]);
        match &self.key {
            Some(key) => {
                command
                    .args([
                        "-o",
                        "PreferredAuthentications=publickey,keyboard-interactive",
                    ])
                    .args(["-o", "IdentitiesOnly=yes", "-i"])
                    .arg(key);
            }
            None => {
                command
                    .args(["-o", "PreferredAuthentications=keyboard-interactive"])
                    .args(["-o", "PubkeyAuthentication=no"]);
            }
        }
        command
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(remote_command);
        let mut ssh = process::spawn(&mut command);

        let mut prompts = Vec::new();
        let deadline = Instant::now() + process::COMMAND_TIMEOUT;
        loop {
            let prompt = exchange.path().join(format!("prompt.{}", prompts.len()));
            if let Ok(text) = std::fs::read_to_string(&prompt) {
                let reply = answer(&text);
                let staged = exchange.path().join(".answer");
                scratch::write_file(&staged, &reply, 0o600);
                let target = exchange.path().join(format!("answer.{}", prompts.len()));
                std::fs::rename(&staged, &target).expect("hand the answer to askpass");
                prompts.push(text);
                continue;
            }
            if ssh.has_exited() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ssh still running after {:?}; prompts: {prompts:?}\n--- sshd ---\n{}",
                process::COMMAND_TIMEOUT,
                self.sshd.log()
            );
            std::thread::sleep(process::POLL_INTERVAL);
        }
        SshRun {
            output: ssh.finish(),
            prompts,
            user: self.user.clone(),
        }
    }

    /// [`SshClient::run`] answering every prompt with `answer`.
    pub fn run_answering(&self, remote_command: &str, answer: &str) -> SshRun {
        self.run(remote_command, |_| answer.to_string())
    }
}

/// What one ssh run did and showed.
#[derive(Debug)]
pub struct SshRun {
    pub output: Output,
    /// Each keyboard-interactive prompt as askpass got it (messages in front of the prompt).
    pub prompts: Vec<String>,
    user: String,
}

impl SshRun {
    /// True when the remote command printed `marker` (the login went through).
    pub fn ran(&self, marker: &str) -> bool {
        self.output.stdout.contains(marker)
    }

    /// Everything the person saw: the prompts, in order, then ssh's stderr.
    pub fn shown(&self) -> String {
        let mut text = self.prompts.join("\n");
        text.push('\n');
        text.push_str(&self.output.stderr);
        text
    }

    /// [`SshRun::shown`] with the user name replaced by `USER` and ssh's host-key notice
    /// dropped: what may be compared between logins of different accounts.
    /// `shown` with the user name and the retry time masked: two logins a moment apart may
    /// be told "1 hour" and "59 minutes" and still be throttled alike.
    pub fn shown_anonymized(&self) -> String {
        self.shown()
            .replace(&self.user, "USER")
            .lines()
            .filter(|line| !line.starts_with("Warning: Permanently added"))
            .map(mask_retry_time)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The prompts, ssh's status and output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "prompts: {:#?}\nssh: {}",
            self.prompts,
            self.output.describe()
        )
    }
}

/// "Try again in 1 hour (after 17:54 UTC)." → "Try again in WHEN." so that only the wording
/// is compared.
fn mask_retry_time(line: &str) -> String {
    const START: &str = "Try again in ";
    match (line.find(START), line.rfind(" UTC)")) {
        (Some(start), Some(end)) if start < end => format!(
            "{}{START}WHEN{}",
            &line[..start],
            &line[end + " UTC)".len()..]
        ),
        _ => line.to_owned(),
    }
}
