//! Temporary real users and groups.
//!
//! otpd resolves a user's groups through NSS (`getgrouplist`), so policy tests need accounts
//! that really exist: `useradd`/`groupadd` create them with random names (`kt`/`kg` + 8 hex
//! digits, comment `kron-test`) and drop removes them. `scripts/test` also removes leftovers of
//! a run that was killed. Declare groups before the users in them, so users are dropped first.

use std::fs::File;
use std::io::Read;
use std::process::Command;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::process::{self, Identity};

/// The comment (GECOS) every test account carries, so leftovers can be found and removed.
pub const ACCOUNT_COMMENT: &str = "kron-test";

/// A temporary group, removed on drop.
#[derive(Debug)]
pub struct TestGroup {
    name: String,
}

impl TestGroup {
    /// Creates a group with a fresh random name.
    pub fn new() -> TestGroup {
        let name = random_name("kg");
        account_command(Command::new("groupadd").arg(&name), "groupadd");
        TestGroup { name }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for TestGroup {
    fn default() -> Self {
        TestGroup::new()
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _lock = account_lock();
        let _ = process::run(Command::new("groupdel").arg(&self.name));
    }
}

/// A temporary user without a home directory, removed on drop.
#[derive(Debug)]
pub struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    /// Creates a user with a fresh random name and only its own user group.
    pub fn new() -> TestUser {
        TestUser::with_groups(&[])
    }

    /// Creates a user that is also a member of `groups`.
    pub fn with_groups(groups: &[&TestGroup]) -> TestUser {
        let name = random_name("kt");
        let mut command = Command::new("useradd");
        command.args(["-M", "-s", "/bin/sh", "-c", ACCOUNT_COMMENT]);
        if !groups.is_empty() {
            let names: Vec<&str> = groups.iter().map(|group| group.name()).collect();
            command.arg("-G").arg(names.join(","));
        }
        command.arg(&name);
        account_command(&mut command, "useradd");
        let user = nix::unistd::User::from_name(&name)
            .expect("getpwnam")
            .unwrap_or_else(|| panic!("{name} was created but NSS does not know it"));
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }

    /// The login name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The numeric user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// This user as an identity to run helper programs as.
    pub fn identity(&self) -> Identity {
        Identity::User {
            name: self.name.clone(),
            uid: self.uid,
            gid: self.gid,
        }
    }
}

impl Default for TestUser {
    fn default() -> Self {
        TestUser::new()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _lock = account_lock();
        let removed = process::run(Command::new("userdel").arg(&self.name));
        if !removed.success() {
            let _ = process::run(Command::new("userdel").arg("-f").arg(&self.name));
        }
    }
}

/// A name that no other test (or earlier run) uses: `prefix` + 8 random hex digits.
pub fn random_name(prefix: &str) -> String {
    let mut bytes = [0u8; 4];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Runs an account tool under the account lock, retrying while another tool holds the
/// shadow-utils locks (tests in other processes may create accounts at the same time).
fn account_command(command: &mut Command, what: &str) {
    let mut last = None;
    for _ in 0..20 {
        let output = {
            let _lock = account_lock();
            process::run(command)
        };
        if output.success() {
            return;
        }
        last = Some(output);
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{what} failed: {}",
        last.expect("at least one attempt").describe()
    );
}

/// Serializes account changes of all test threads and processes on this machine.
fn account_lock() -> Flock<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/kron-tests-accounts.lock")
        .or_else(|_| {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open("/tmp/kron-tests-accounts.lock")
        })
        .expect("open account lock file");
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, err)| err)
        .expect("flock account lock")
}
