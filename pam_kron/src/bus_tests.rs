//! The real D-Bus client against a private `dbus-daemon` and a scripted otpd.
//!
//! The parent test starts the bus and the scripted otpd, then re-runs this test binary for the
//! `child_*` tests, so that what they measure (threads, fds, credentials) belongs to a process of
//! their own:
//! - `child_logins` runs logins through `DbusOtpd` + the login loop, and checks that after many
//!   of them the process has no more threads and fds than before: nothing outlives a PAM call;
//! - `child_as_setuid_host` runs as ruid 65534 / euid 0 — what sudo or su look like while they
//!   run PAM — and checks that the module authenticates as the effective uid. dbus-daemon's
//!   EXTERNAL check compares the claimed uid with SO_PEERCRED, which Linux records from the
//!   effective uid at connect(); claiming the real uid (the control) is refused.
//!
//! Needs `dbus-daemon` (and root for the setuid case); skipped with a note without them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kron_proto::{Message, OtpdError, Step, StepKind};
use pam::constants::PamResultCode;
use zbus::connection::Builder;

use crate::args::Transport;
use crate::client::{DbusOtpd, Otpd};
use crate::conversation::fake::FakeConversation;
use crate::error::Error;
use crate::items::Login;
use crate::login::{self, Verdict};

const NOBODY: libc::uid_t = 65534;

/// The private bus of one test run, killed and removed on drop.
struct Bus {
    child: Child,
    dir: PathBuf,
    address: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the parent with pid `parent` leaves the bus address for its children.
fn dir_for(parent: u32) -> PathBuf {
    Path::new("/tmp").join(format!("pam_kron-bus-{parent}"))
}

fn start_bus() -> Bus {
    let dir = dir_for(std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bus.conf");
    std::fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--nopidfile", "--print-address"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut address = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let address = address.trim().to_owned();
    std::fs::write(dir.join("address"), &address).unwrap();
    Bus {
        child,
        dir,
        address,
    }
}

/// A scripted otpd, by user name:
/// - `alice`: prompt (handle `h-alice`), then Accept for `123456`, Deny otherwise;
/// - `bob`: Skip; `carol`: Unavailable;
/// - `throttled`: the Throttled error; `garbage`: a step of unknown kind;
/// - `slow`: never answers in time;
/// - Cancel of `h-alice` succeeds, of anything else is NotFound.
pub(crate) struct ScriptedOtpd;

#[zbus::interface(name = "io.kron.Otpd1")]
impl ScriptedOtpd {
    async fn begin_login(
        &self,
        user: &str,
        _service: &str,
        _rhost: &str,
        _tty: &str,
    ) -> Result<Step, OtpdError> {
        match user {
            "alice" => Ok(Step {
                kind: StepKind::Prompt as u32,
                messages: vec![Message::info("Open your authenticator app.")],
                prompt: "Verification code: ".into(),
                echo: false,
                handle: "h-alice".into(),
            }),
            "bob" => Ok(Step::terminal(StepKind::Skip, vec![])),
            "carol" => Ok(Step::terminal(StepKind::Unavailable, vec![])),
            "throttled" => Err(OtpdError::Throttled("try again in 30 s".into())),
            "garbage" => Ok(Step {
                kind: 42,
                ..Step::terminal(StepKind::Deny, vec![])
            }),
            "slow" => {
                let runtime = zruntime::SharedRuntime::current().unwrap();
                runtime.sleep(Duration::from_secs(10)).await;
                Ok(Step::terminal(StepKind::Accept, vec![]))
            }
            _ => Err(OtpdError::NotFound("no such user".into())),
        }
    }

    async fn answer(&self, handle: &str, response: &str) -> Result<Step, OtpdError> {
        match (handle, response) {
            ("h-alice", "123456") => Ok(Step::terminal(StepKind::Accept, vec![])),
            ("h-alice", _) => Ok(Step::terminal(
                StepKind::Deny,
                vec![Message::error("Wrong code.")],
            )),
            _ => Err(OtpdError::NotFound("unknown login".into())),
        }
    }

    async fn cancel(&self, handle: &str) -> Result<(), OtpdError> {
        match handle {
            "h-alice" => Ok(()),
            _ => Err(OtpdError::NotFound("unknown login".into())),
        }
    }
}

/// Re-runs this binary for the ignored test `name`, optionally as ruid 65534 / euid 0.
pub(crate) fn run_child(name: &str, as_setuid_host: bool) {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let mut child = Command::new(exe);
    child.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    if as_setuid_host {
        // SAFETY: the closure runs in the forked child before exec and only calls setresuid,
        // which is async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut child, || {
                // Real uid nobody, effective and saved uid root: a setuid-root binary run by an
                // ordinary user. exec of a non-setuid binary keeps all three.
                if libc::setresuid(NOBODY, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let output = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run:\n{stdout}\n{stderr}"
    );
}

#[test]
fn over_a_real_bus() {
    if Command::new("dbus-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs dbus-daemon");
        return;
    }
    let bus = start_bus();
    assert!(
        bus.address.starts_with("unix:"),
        "dbus-daemon printed {:?}",
        bus.address
    );
    // Served by zruntime's helper thread while this thread waits for the children.
    let server = zbus::block_on(
        Builder::address(bus.address.as_str())
            .name("io.kron.Otpd")
            .serve_at("/io/kron/Otpd", ScriptedOtpd)
            .build(),
    )
    .unwrap();

    run_child("bus_tests::child_logins", false);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        run_child("bus_tests::child_as_setuid_host", true);
    } else {
        eprintln!("setuid case skipped: needs root");
    }
    drop(server);
}

/// The address the parent test wrote.
fn parent_bus_address() -> String {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::fs::read_to_string(dir_for(parent as u32).join("address")).expect("run by over_a_real_bus")
}

/// One whole login, as the hook runs it: connect, loop, close.
fn login_as(bus: &str, user: &str, answers: &[&str], timeout: Duration) -> Result<Verdict, Error> {
    let login = Login {
        user: user.into(),
        service: "sshd".into(),
        rhost: "192.0.2.1".into(),
        tty: "ssh".into(),
    };
    let mut conv = FakeConversation::answering(answers);
    let mut otpd = DbusOtpd::connect(&Transport::Bus(bus.to_owned()), timeout)?;
    login::run(&mut otpd, &mut conv, &login, false, &mut |_| {})
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
#[ignore = "run by over_a_real_bus in a process of its own"]
fn child_logins() {
    let bus = parent_bus_address();
    let timeout = Duration::from_secs(5);
    let (threads, fds) = (count("/proc/self/task"), count("/proc/self/fd"));

    for _ in 0..25 {
        assert_eq!(
            login_as(&bus, "alice", &["123456"], timeout).unwrap(),
            Verdict::Accept
        );
        assert_eq!(
            login_as(&bus, "alice", &["000000"], timeout).unwrap(),
            Verdict::Deny
        );
        assert_eq!(login_as(&bus, "bob", &[], timeout).unwrap(), Verdict::Skip);
        assert_eq!(
            login_as(&bus, "carol", &[], timeout).unwrap(),
            Verdict::Unavailable
        );
        let throttled = login_as(&bus, "throttled", &[], timeout).unwrap_err();
        assert_eq!(throttled.code(), PamResultCode::PAM_MAXTRIES);
        let garbage = login_as(&bus, "garbage", &[], timeout).unwrap_err();
        assert!(matches!(garbage, Error::Malformed(_)), "{garbage:?}");
        assert_eq!(garbage.code(), PamResultCode::PAM_AUTHINFO_UNAVAIL);
    }
    let slow = login_as(&bus, "slow", &[], Duration::from_secs(1)).unwrap_err();
    assert!(matches!(slow, Error::Timeout), "{slow:?}");

    // Nothing outlives a login: no helper thread, no socket, no epoll or timer fd.
    assert_eq!(count("/proc/self/task"), threads, "threads left behind");
    assert_eq!(count("/proc/self/fd"), fds, "fds left behind");
}

#[test]
#[ignore = "run by over_a_real_bus as ruid 65534 / euid 0"]
fn child_as_setuid_host() {
    // SAFETY: getuid and geteuid have no preconditions.
    let (ruid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    assert_eq!(
        (ruid, euid),
        (NOBODY, 0),
        "must run as the setuid child of over_a_real_bus"
    );
    let bus = parent_bus_address();

    // The module's own connect: EXTERNAL as the effective uid, which the bus accepts.
    assert_eq!(
        login_as(&bus, "alice", &["123456"], Duration::from_secs(5)).unwrap(),
        Verdict::Accept
    );

    // Control: claiming the real uid, as a client using getuid() would, is refused.
    let refused = DbusOtpd::connect_as(&Transport::Bus(bus.clone()), Duration::from_secs(5), ruid)
        .and_then(|mut otpd| {
            otpd.begin_login(&Login {
                user: "alice".into(),
                service: "sudo".into(),
                rhost: String::new(),
                tty: String::new(),
            })
        });
    assert!(
        matches!(&refused, Err(Error::Unreachable(why)) if why.contains("refused")),
        "claiming the real uid should be refused by dbus-daemon: {refused:?}"
    );
}
