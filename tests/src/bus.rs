//! A private D-Bus system bus for one test.
//!
//! The test starts a real `dbus-daemon` with a generated configuration shaped like Debian's
//! `/usr/share/dbus-1/system.conf` (default deny for method calls and name ownership) that
//! includes the project's `packaging/dbus/io.kron.Otpd.conf`, so every test exercises the
//! shipped policy. The socket lives in a directory every user may enter, so tests can talk to
//! the bus as unprivileged test users too.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{artifacts, process, scratch};

/// A running `dbus-daemon`, killed on drop.
pub struct Bus {
    dir: TempDir,
    child: Child,
    address: String,
    _stdout: BufReader<ChildStdout>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("address", &self.address)
            .finish()
    }
}

impl Bus {
    /// Starts a bus that includes the project's D-Bus policy file.
    pub fn start() -> Bus {
        Bus::start_with_policy(&artifacts::dbus_policy())
    }

    /// Starts a bus that includes `policy` instead of the project's policy file.
    pub fn start_with_policy(policy: &Path) -> Bus {
        Bus::start_with(policy, None)
    }

    /// Starts a bus with the project's policy that refuses messages over `bytes`
    /// (`max_message_size`; the system bus allows 32 MiB).
    pub fn start_with_message_limit(bytes: u64) -> Bus {
        Bus::start_with(&artifacts::dbus_policy(), Some(bytes))
    }

    fn start_with(policy: &Path, max_message_size: Option<u64>) -> Bus {
        let dir = scratch::public_dir("kron-bus.");
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        let mut text = config_text(&socket, policy);
        if let Some(bytes) = max_message_size {
            text = text.replace(
                "</busconfig>",
                &format!("  <limit name=\"max_message_size\">{bytes}</limit>\n</busconfig>"),
            );
        }
        scratch::write_file(&config, &text, 0o644);
        let (child, stdout) = spawn(dir.path());
        let address = format!("unix:path={}", socket.display());
        Bus {
            dir,
            child,
            address,
            _stdout: stdout,
        }
    }

    /// Kills dbus-daemon, as a crash or `systemctl stop dbus` looks to its clients.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = process::wait_bounded(&mut self.child, Duration::from_secs(30));
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts dbus-daemon again on the same socket and configuration, after [`Bus::stop`].
    pub fn start_again(&mut self) {
        let (child, stdout) = spawn(self.dir.path());
        self.child = child;
        self._stdout = stdout;
    }

    /// The address to hand to otpd, kronctl and the module (`unix:path=...`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The socket's path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("bus")
    }

    /// A fresh client connection to this bus, authenticated as the test process (root).
    pub fn connect(&self) -> zbus::Connection {
        connect(&self.address).unwrap_or_else(|err| panic!("connect to {}: {err}", self.address))
    }
}

/// Starts dbus-daemon with the configuration in `dir` and waits until it listens.
fn spawn(dir: &Path) -> (Child, BufReader<ChildStdout>) {
    let config = dir.join("bus.conf");
    let log = File::create(dir.join("dbus-daemon.log")).expect("create bus log");
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .arg("--print-address")
        .arg("--nofork")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start dbus-daemon (is the dbus-daemon package installed?)");
    // dbus-daemon prints its address once it listens; EOF means it failed to start.
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut printed = String::new();
    stdout
        .read_line(&mut printed)
        .expect("read dbus-daemon address");
    if printed.trim().is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.join("dbus-daemon.log")).unwrap_or_default();
        panic!("dbus-daemon did not start:\n{log}");
    }
    (child, stdout)
}

/// Opens a connection to `address`, bounded so a wedged bus cannot hang the test.
pub fn connect(address: &str) -> zbus::Result<zbus::Connection> {
    zbus::block_on(async {
        zbus::connection::Builder::address(address)
            .method_timeout(Duration::from_secs(120))
            .build()
            .await
    })
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = process::wait_bounded(&mut self.child, Duration::from_secs(30));
    }
}

/// A system-bus-like configuration listening on `socket` that includes `policy`; the same
/// template scripts/demo uses.
fn config_text(socket: &Path, policy: &Path) -> String {
    include_str!("../../scripts/private-bus.conf.in")
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@POLICY@", &policy.display().to_string())
}
