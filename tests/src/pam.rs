//! PAM stacks written per test, and logins through them with pam-host.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use tempfile::TempDir;

use crate::messages::Transcript;
use crate::process::{self, Identity};
use crate::{artifacts, scratch};

/// pam_echo's text in a [`Stack::Probe`] stack: shown only when pam_kron returned PAM_IGNORE.
pub const SKIP_MARKER: &str = "kron-tests: pam_kron ignored this login";

/// How long an interactive login may go without printing anything.
pub const READ_LIMIT: Duration = Duration::from_secs(120);

/// The shape of the `auth` stack around pam_kron.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// `auth required pam_kron.so`: the module's result is the stack's result, except that
    /// PAM_IGNORE from the only module makes libpam fail the stack.
    Alone,
    /// `auth required pam_kron.so` then `auth required pam_permit.so`: how kron is deployed
    /// after a first factor. A Skip (PAM_IGNORE) leaves the decision to the rest of the stack,
    /// here pam_permit, so it ends in PAM_SUCCESS; a Deny or Unavailable still fails the stack.
    ThenPermit,
    /// Tells every outcome apart: `[success=done ignore=ignore default=die] pam_kron.so`, then
    /// `pam_echo.so` showing [`SKIP_MARKER`], then `pam_permit.so`. Accept ends in PAM_SUCCESS
    /// without the marker, Skip in PAM_SUCCESS with it, anything else in the module's own code.
    Probe,
}

/// A private PAM config directory holding one service file.
#[derive(Debug)]
pub struct PamConfig {
    dir: TempDir,
    service: String,
}

impl PamConfig {
    /// A config for `service` with pam_kron given exactly `module_args` (no `bus=` unless
    /// listed: then the module must use its compiled default address).
    pub fn with_module_args(service: &str, stack: Stack, module_args: &[&str]) -> PamConfig {
        let dir = scratch::public_dir("kron-pam.");
        let text = stack_text(stack, module_args);
        scratch::write_file(&dir.path().join(service), &text, 0o644);
        PamConfig {
            dir,
            service: service.to_string(),
        }
    }

    /// The directory to pass to `pam_start_confdir`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The service file's path (what a private-namespace test bind-mounts into /etc/pam.d).
    pub fn service_file(&self) -> PathBuf {
        self.dir.path().join(&self.service)
    }

    /// The PAM service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A login of `user` through this stack.
    pub fn login(&self, user: &str) -> Login {
        Login {
            confdir: self.dir.path().to_path_buf(),
            service: self.service.clone(),
            plans: vec![(user.to_string(), 1)],
            answers: Vec::new(),
            rhost: None,
            tty: None,
            identity: Identity::Root,
            env: Vec::new(),
            quiet: false,
        }
    }
}

/// The text of a service file for `stack`.
pub fn stack_text(stack: Stack, module_args: &[&str]) -> String {
    let module = artifacts::pam_module();
    let kron = |control: &str| {
        format!(
            "auth {control} {} {}\n",
            module.display(),
            module_args.join(" ")
        )
    };
    match stack {
        Stack::Alone => kron("required"),
        Stack::ThenPermit => kron("required") + "auth required pam_permit.so\n",
        Stack::Probe => {
            kron("[success=done ignore=ignore default=die]")
                + &format!("auth optional pam_echo.so {SKIP_MARKER}\n")
                + "auth required pam_permit.so\n"
        }
    }
}

/// One pam-host run: one or more logins in one process.
#[derive(Debug, Clone)]
pub struct Login {
    confdir: PathBuf,
    service: String,
    plans: Vec<(String, u64)>,
    answers: Vec<String>,
    rhost: Option<String>,
    tty: Option<String>,
    identity: Identity,
    env: Vec<(String, String)>,
    quiet: bool,
}

impl Login {
    /// Answers the next prompt with `text` (answers are used in order across all logins).
    pub fn answer(mut self, text: &str) -> Login {
        self.answers.push(text.to_string());
        self
    }

    /// Runs the most recently added user's login `count` times.
    pub fn repeat(mut self, count: u64) -> Login {
        self.plans.last_mut().expect("a user").1 = count;
        self
    }

    /// Then logs in `user` once in the same process.
    pub fn then_user(mut self, user: &str) -> Login {
        self.plans.push((user.to_string(), 1));
        self
    }

    /// Sets PAM_RHOST.
    pub fn rhost(mut self, rhost: &str) -> Login {
        self.rhost = Some(rhost.to_string());
        self
    }

    /// Sets PAM_TTY.
    pub fn tty(mut self, tty: &str) -> Login {
        self.tty = Some(tty.to_string());
        self
    }

    /// Runs pam-host as `identity` instead of root.
    pub fn as_identity(mut self, identity: Identity) -> Login {
        self.identity = identity;
        self
    }

    /// Adds a variable to pam-host's otherwise empty environment (PATH aside).
    pub fn env(mut self, key: &str, value: &str) -> Login {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Prints only results and counts, not every message (for long runs).
    pub fn quiet(mut self) -> Login {
        self.quiet = true;
        self
    }

    /// Runs the logins to completion.
    pub fn run(&self) -> Transcript {
        let output = process::run(&mut self.command(false));
        Transcript::parse(&output.stdout, &output.stderr)
    }

    /// Starts the logins without waiting (for parallel runs); finish with [`Running::wait`].
    pub fn spawn(&self) -> Running {
        let stdout = tempfile::tempfile().expect("temporary file");
        let stderr = tempfile::tempfile().expect("temporary file");
        let child = self
            .command(false)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("clone file"))
            .stderr(stderr.try_clone().expect("clone file"))
            .spawn()
            .expect("start pam-host");
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Starts the logins answering prompts interactively from [`Interactive::answer`].
    pub fn interactive(&self) -> Interactive {
        let mut child = self
            .command(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pam-host");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Interactive {
            child,
            stdin,
            lines,
            seen: String::new(),
        }
    }

    fn command(&self, answers_stdin: bool) -> Command {
        let mut command = self.identity.command(artifacts::pam_host());
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        command
            .arg("--confdir")
            .arg(&self.confdir)
            .arg("--service")
            .arg(&self.service);
        for (user, count) in &self.plans {
            command
                .arg("--user")
                .arg(user)
                .arg("--repeat")
                .arg(count.to_string());
        }
        for answer in &self.answers {
            command.arg("--answer").arg(answer);
        }
        if let Some(rhost) = &self.rhost {
            command.arg("--rhost").arg(rhost);
        }
        if let Some(tty) = &self.tty {
            command.arg("--tty").arg(tty);
        }
        if answers_stdin {
            command.arg("--answers-stdin");
        }
        if self.quiet {
            command.arg("--quiet");
        }
        command
    }
}

/// A pam-host started with [`Login::spawn`].
#[derive(Debug)]
pub struct Running {
    child: Child,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

impl Running {
    /// Waits for the logins to finish (bounded) and parses what they printed.
    pub fn wait(mut self) -> Transcript {
        process::wait_bounded(&mut self.child, process::COMMAND_TIMEOUT)
            .expect("pam-host finished in time");
        Transcript::parse(&read_file(&mut self.stdout), &read_file(&mut self.stderr))
    }
}

fn read_file(file: &mut std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    file.rewind().expect("rewind");
    file.read_to_string(&mut text)
        .expect("read pam-host output");
    text
}

/// A pam-host that answers prompts as the test tells it.
#[derive(Debug)]
pub struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: String,
}

impl Interactive {
    /// Reads output until the next prompt and returns the transcript so far.
    pub fn until_prompt(&mut self) -> Transcript {
        loop {
            match self.lines.recv_timeout(READ_LIMIT) {
                Ok(line) => {
                    let is_prompt = line.starts_with("PROMPT");
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if is_prompt {
                        return Transcript::parse(&self.seen, "");
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "pam-host printed nothing for {READ_LIMIT:?}:\n{}",
                    self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("pam-host ended without a prompt:\n{}", self.seen)
                }
            }
        }
    }

    /// Answers the current prompt.
    pub fn answer(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{text}").expect("write answer to pam-host");
        stdin.flush().expect("flush answer");
    }

    /// Closes stdin, waits for pam-host to end and returns the whole transcript.
    pub fn finish(mut self) -> Transcript {
        drop(self.stdin.take());
        while let Ok(line) = self.lines.recv_timeout(READ_LIMIT) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        process::wait_bounded(&mut self.child, process::COMMAND_TIMEOUT)
            .expect("pam-host finished in time");
        Transcript::parse(&self.seen, &stderr)
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
