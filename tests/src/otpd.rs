//! The real otpd, on a private bus and a temporary state directory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::bus::{self, Bus};
use crate::namespace::PrivateMounts;
use crate::process::Identity;
use crate::{artifacts, dbus, process, scratch};

/// How long otpd may take to own its name or to stop. Generous: CI is a loaded 2-core machine.
pub const START_LIMIT: Duration = Duration::from_secs(120);

/// A running otpd. Killed on drop; [`Otpd::stderr`] holds everything it logged.
pub struct Otpd {
    dir: TempDir,
    /// Where otpd's socket lives: a directory every user may enter, as /run/kron is.
    run: TempDir,
    config: PathBuf,
    bus_address: String,
    child: Option<Child>,
    /// How otpd is started.
    launch: Launch,
}

/// How [`Otpd`] starts the otpd binary.
#[derive(Debug, Clone)]
enum Launch {
    /// Directly, as root with every capability.
    Plain,
    /// In a mount namespace of its own with a tmpfs of this size (e.g. `16m`) over its state
    /// directory ([`Otpd::start_on_tmpfs`]).
    Tmpfs(String),
    /// As root without any capability, as its systemd unit runs it
    /// ([`Otpd::start_without_capabilities`]).
    NoCapabilities,
    /// In a mount namespace of its own with test files over the machine's
    /// ([`Otpd::start_with_mounts`]).
    Mounts(PrivateMounts),
}

impl std::fmt::Debug for Otpd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otpd")
            .field("config", &self.config)
            .field("bus", &self.bus_address)
            .finish()
    }
}

impl Otpd {
    /// Writes a config (state inside a temp dir, then `extra_toml`) and starts otpd on `bus`.
    ///
    /// `extra_toml` is appended after the `state_dir` line: top-level keys first, then tables
    /// such as `[totp]`, `[throttle]` and `[[group]]`.
    pub fn start(bus: &Bus, extra_toml: &str) -> Otpd {
        Otpd::start_with(bus, extra_toml, Launch::Plain)
    }

    /// As [`Otpd::start`], but as root without any capability (an empty bounding set), as
    /// `CapabilityBoundingSet=` in its unit runs it.
    pub fn start_without_capabilities(bus: &Bus, extra_toml: &str) -> Otpd {
        Otpd::start_with(bus, extra_toml, Launch::NoCapabilities)
    }

    /// As [`Otpd::start`], but otpd's state directory is a small tmpfs (`size` as mount takes
    /// it, e.g. `16m`) mounted in a mount namespace of otpd's own: a file system the test can
    /// fill up ([`Otpd::state_dir_of_process`]) without touching the machine's.
    pub fn start_on_tmpfs(bus: &Bus, extra_toml: &str, size: &str) -> Otpd {
        Otpd::start_with(bus, extra_toml, Launch::Tmpfs(size.to_owned()))
    }

    /// As [`Otpd::start`], but in a mount namespace of otpd's own where `mounts` show test
    /// files at the machine's paths (a test `/etc/subuid`); the machine's files stay as they are.
    pub fn start_with_mounts(bus: &Bus, extra_toml: &str, mounts: PrivateMounts) -> Otpd {
        Otpd::start_with(bus, extra_toml, Launch::Mounts(mounts))
    }

    fn start_with(bus: &Bus, extra_toml: &str, launch: Launch) -> Otpd {
        let dir = scratch::private_dir("kron-otpd.");
        let run = scratch::public_dir("kron-run.");
        let config = dir.path().join("otpd.toml");
        let text = config_text(
            &dir.path().join("state"),
            &run.path().join("otpd.sock"),
            extra_toml,
        );
        scratch::write_file(&config, &text, 0o600);
        let mut otpd = Otpd {
            dir,
            run,
            config,
            bus_address: bus.address().to_string(),
            child: None,
            launch,
        };
        otpd.launch();
        otpd
    }

    /// The config file otpd was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// otpd's own socket (the `socket` key), where pam_kron talks to it peer-to-peer.
    pub fn socket_path(&self) -> PathBuf {
        self.run.path().join("otpd.sock")
    }

    /// The store directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The state directory as the running otpd sees it: through `/proc/PID/root`, so on the
    /// tmpfs of [`Otpd::start_on_tmpfs`] too.
    pub fn state_dir_of_process(&self) -> PathBuf {
        let state = self.state_dir();
        Path::new(&format!("/proc/{}/root", self.pid())).join(state.strip_prefix("/").unwrap())
    }

    /// Everything otpd wrote to stderr so far, across restarts.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The pid of the running otpd.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("otpd is running").id()
    }

    /// Stops otpd with SIGTERM ("flush and stop") and returns how it exited.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("otpd is running");
        process::send_signal(child.id(), libc::SIGTERM);
        process::wait_bounded(&mut child, START_LIMIT).unwrap_or_else(|| {
            panic!(
                "otpd ignored SIGTERM for {START_LIMIT:?}:\n{}",
                self.stderr()
            )
        })
    }

    /// Kills otpd with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops otpd and starts it again on the same config and store.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "otpd exited with {status} on SIGTERM:\n{}",
            self.stderr()
        );
        self.launch();
    }

    /// Starts otpd again after [`Otpd::stop`] or [`Otpd::kill`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "otpd is already running");
        self.launch();
    }

    /// True while the otpd process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("waitpid otpd").is_none(),
            None => false,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("otpd.stderr")
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open otpd stderr log");
        let mut command = match &self.launch {
            Launch::Plain => Command::new(artifacts::otpd()),
            Launch::NoCapabilities => {
                let mut command = Command::new("setpriv");
                command
                    .args(NO_CAPABILITIES)
                    .arg("--")
                    .arg(artifacts::otpd());
                command
            }
            // unshare and sh both exec, so the child's pid is otpd's.
            Launch::Mounts(mounts) => mounts.command(&Identity::Root, artifacts::otpd()),
            Launch::Tmpfs(size) => {
                // unshare and sh both exec, so the child's pid is otpd's.
                let state = self.state_dir();
                std::fs::create_dir_all(&state).expect("create the state directory");
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(r#"mount -t tmpfs -o "size=$1,mode=0700" kron-state "$2" && shift 2 && exec "$@""#)
                    .arg("sh")
                    .arg(size)
                    .arg(&state)
                    .arg(artifacts::otpd());
                command
            }
        };
        let child = command
            .arg("--config")
            .arg(&self.config)
            .arg("--bus")
            .arg(&self.bus_address)
            .arg("--log-stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start otpd");
        self.child = Some(child);
        self.wait_until_serving();
    }

    /// Polls the `Version` property until otpd answers; fails early if otpd exits.
    fn wait_until_serving(&mut self) {
        let address = self.bus_address.clone();
        let mut connection: Option<zbus::Connection> = None;
        process::wait_for("otpd to serve io.kron.Otpd", START_LIMIT, || {
            if !self.is_running() {
                panic!("otpd exited during start-up:\n{}", self.stderr());
            }
            if connection.is_none() {
                connection = bus::connect(&address).ok();
            }
            let conn = connection.as_ref()?;
            dbus::version(conn).ok()
        });
    }
}

impl Drop for Otpd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `setpriv` options that leave a root process without any capability.
pub const NO_CAPABILITIES: [&str; 2] = ["--bounding-set=-all", "--inh-caps=-all"];

/// Runs `otpd --check-config --config FILE` and returns what it did.
pub fn check_config(config: &Path) -> process::Output {
    process::run(
        Command::new(artifacts::otpd())
            .arg("--check-config")
            .arg("--config")
            .arg(config),
    )
}

fn config_text(state_dir: &Path, socket: &Path, extra_toml: &str) -> String {
    format!(
        "state_dir = \"{}\"\nsocket = \"{}\"\n{extra_toml}\n",
        state_dir.display(),
        socket.display()
    )
}
