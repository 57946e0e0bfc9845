//! Running helper programs with bounded waits, as root or as a test user.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any one helper program may run before the test gives up on it. Generous on purpose:
/// a loaded 2-core CI machine must never turn a slow run into a failure.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// How often bounded waits look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The outcome of one finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with everything the command printed unless it succeeded.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what} failed: {}", self.describe());
        self
    }

    /// Panics with everything the command printed if it succeeded.
    pub fn assert_failure(&self, what: &str) -> &Self {
        assert!(
            !self.success(),
            "{what} unexpectedly succeeded: {}",
            self.describe()
        );
        self
    }

    /// Status, stdout and stderr, for assertion messages.
    pub fn describe(&self) -> String {
        let mut text = format!("{}", self.status);
        let _ = write!(text, "\n--- stdout ---\n{}", self.stdout);
        let _ = write!(text, "\n--- stderr ---\n{}", self.stderr);
        text
    }
}

/// Runs `command` to completion with empty stdin.
pub fn run(command: &mut Command) -> Output {
    run_with_input(command, "")
}

/// Runs `command` to completion, writing `input` to its stdin and then closing it.
///
/// Output goes to temporary files rather than pipes, so a chatty program cannot block on a full
/// pipe while we wait for it. Panics if it runs longer than [`COMMAND_TIMEOUT`].
pub fn run_with_input(command: &mut Command, input: &str) -> Output {
    let stdout = tempfile::tempfile().expect("temporary file for stdout");
    let stderr = tempfile::tempfile().expect("temporary file for stderr");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(stdout.try_clone().expect("clone stdout file"))
        .stderr(stderr.try_clone().expect("clone stderr file"))
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A program that exits without reading its input makes this fail with EPIPE: that is fine.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let status = wait_bounded(&mut child, COMMAND_TIMEOUT)
        .unwrap_or_else(|| panic!("{command:?} still running after {COMMAND_TIMEOUT:?}"));
    Output {
        status,
        stdout: read_all(stdout),
        stderr: read_all(stderr),
    }
}

/// A command started with [`spawn`]: it runs on while the test does other things (answers its
/// prompts), its output going to temporary files as with [`run`].
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    stdout: File,
    stderr: File,
}

/// Starts `command` with stdin from /dev/null and its output in temporary files.
pub fn spawn(command: &mut Command) -> Spawned {
    let stdout = tempfile::tempfile().expect("temporary file for stdout");
    let stderr = tempfile::tempfile().expect("temporary file for stderr");
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("clone stdout file"))
        .stderr(stderr.try_clone().expect("clone stderr file"))
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    Spawned {
        child,
        stdout,
        stderr,
    }
}

impl Spawned {
    /// True once the command has exited (it is not reaped yet for [`Spawned::finish`]).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the command to end, at most [`COMMAND_TIMEOUT`], and returns its output.
    pub fn finish(mut self) -> Output {
        let status = wait_bounded(&mut self.child, COMMAND_TIMEOUT)
            .unwrap_or_else(|| panic!("command still running after {COMMAND_TIMEOUT:?}"));
        Output {
            status,
            stdout: read_all(self.stdout.try_clone().expect("clone stdout file")),
            stderr: read_all(self.stderr.try_clone().expect("clone stderr file")),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, at most `limit`; kills it and returns `None` past that.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `probe` until it returns `Some`, at most `limit`; panics naming `what` past that.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what} after {limit:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Sends `signal` to the process `pid` (ignoring a process that is already gone).
pub fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits in pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is a child we
    // started and have not reaped yet, so it cannot name a recycled process.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn read_all(mut file: File) -> String {
    use std::io::Seek;
    let mut text = String::new();
    file.rewind().expect("rewind output file");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read output file");
    text.push_str(&String::from_utf8_lossy(&bytes));
    text
}

/// Who a helper program runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The test process itself (root in CI).
    Root,
    /// A test user: the program runs through `setpriv` with that user's uid, gid and groups.
    User { name: String, uid: u32, gid: u32 },
    /// A uid no account has: the program runs through `setpriv` with that uid, the same
    /// number as gid and no groups, in the machine's own user namespace.
    Unnamed { uid: u32 },
    /// A rootless container's process: as [`Identity::Unnamed`], then in a user namespace of
    /// its own whose root is that uid (`unshare --user --map-root-user`), as a container
    /// runtime maps a subordinate uid.
    Contained { uid: u32 },
}

impl Identity {
    /// A command that runs `program` as this identity.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Identity::Root => Command::new(program),
            Identity::User { uid, gid, .. } => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                command
            }
            Identity::Unnamed { uid } => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                command
            }
            Identity::Contained { uid } => {
                let mut command = Identity::Unnamed { uid: *uid }.command("unshare");
                command
                    .arg("--user")
                    .arg("--map-root-user")
                    .arg("--")
                    .arg(program);
                command
            }
        }
    }
}
