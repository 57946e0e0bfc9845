//! The machine's real `sudo` with pam_kron in its stack, without touching the machine's sudo.
//!
//! Each [`Sudo`] writes a test `/etc/pam.d/sudo` (pam_kron alone in `auth`, pam_permit for
//! account and session) and a test `/etc/sudoers` (the test user may run `/usr/bin/id` as
//! root), and runs sudo in a private mount namespace where both are bind-mounted over the
//! machine's files. The namespace, and the mounts with it, end when sudo does.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::namespace::PrivateMounts;
use crate::pam::{self, Stack};
use crate::process::{self, Output};
use crate::pty::Pty;
use crate::users::TestUser;
use crate::world::MODULE_TIMEOUT_SECS;
use crate::{World, scratch};

/// What the sudo commands of the tests run: prints the uid it runs as ("0").
pub const COMMAND: [&str; 4] = ["-u", "root", "/usr/bin/id", "-u"];

/// A test sudo configuration for one user.
#[derive(Debug)]
pub struct Sudo {
    /// The test's `pam.d/sudo` and `sudoers`, removed on drop.
    _etc: TempDir,
    user_uid: u32,
    mounts: PrivateMounts,
}

impl Sudo {
    /// pam_kron reaching `world`'s otpd as its own stacks do (its socket, or its bus),
    /// `timeout=` and `extra_args` (e.g. `nosilent`); `defaults` are extra sudoers `Defaults`
    /// lines (e.g. `passwd_tries=1`).
    pub fn new(world: &World, user: &TestUser, extra_args: &[&str], defaults: &[&str]) -> Sudo {
        let reach = world.transport_arg();
        let mut args = vec![reach.as_str()];
        args.extend_from_slice(extra_args);
        Sudo::with_module_args(user, &args, defaults)
    }

    /// pam_kron with exactly `module_args` plus `timeout=` (no `socket=` or `bus=` unless
    /// listed).
    pub fn with_module_args(user: &TestUser, module_args: &[&str], defaults: &[&str]) -> Sudo {
        let etc = scratch::public_dir("kron-sudo.");
        let pam_dir = etc.path().join("pam.d");
        std::fs::create_dir(&pam_dir).expect("mkdir pam.d");
        let timeout = format!("timeout={MODULE_TIMEOUT_SECS}");
        let mut args = module_args.to_vec();
        args.push(&timeout);
        let stack = format!(
            "{}account required pam_permit.so\nsession required pam_permit.so\n",
            pam::stack_text(Stack::Alone, &args)
        );
        scratch::write_file(&pam_dir.join("sudo"), &stack, 0o644);
        let sudoers = etc.path().join("sudoers");
        let mut rules = String::from(
            "Defaults !lecture\nDefaults timestamp_timeout=0\nDefaults !fqdn\n\
             Defaults !syslog\nroot ALL=(ALL:ALL) ALL\n",
        );
        for line in defaults {
            rules.push_str(&format!("Defaults {line}\n"));
        }
        rules.push_str(&format!("{} ALL=(root) /usr/bin/id\n", user.name()));
        scratch::write_file(&sudoers, &rules, 0o440);
        let mounts = PrivateMounts::new()
            .bind(&pam_dir, Path::new("/etc/pam.d"))
            .bind(&sudoers, Path::new("/etc/sudoers"));
        Sudo {
            _etc: etc,
            user_uid: user.uid(),
            mounts,
        }
    }

    /// `sudo ARGS...` run by `user` inside the namespace, without a terminal.
    pub fn command(&self, user: &TestUser, args: &[&str]) -> Command {
        let mut command = self.mounts.command(&user.identity(), "sudo");
        command.args(args);
        command
    }

    /// `sudo -S -u root /usr/bin/id -u` run by `user` without a terminal, the code(s) on
    /// stdin, one per line.
    pub fn run_stdin(&self, user: &TestUser, codes: &[&str]) -> Output {
        let mut command = self.command(user, &["-S"]);
        command.args(COMMAND);
        process::run_with_input(&mut command, &lines(codes))
    }

    /// `sh -c script` run by `user` in a new audit session of its own (as after a login
    /// through pam_loginuid), inside the namespace; no terminal unless the caller gives one.
    pub fn session(&self, user: &TestUser, script: &str) -> Command {
        let mounts = self.mounts.clone().audit_session(self.user_uid);
        let mut command = mounts.command(&user.identity(), "/bin/sh");
        command.args(["-c", script]);
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        command
    }

    /// [`Sudo::session`] on a new pty: what a person typing at a terminal after logging in
    /// does. sudo takes PAM_TTY from that terminal.
    pub fn terminal(&self, user: &TestUser, script: &str) -> Pty {
        Pty::spawn(self.session(user, script))
    }
}

/// `codes` as input lines.
pub fn lines(codes: &[&str]) -> String {
    codes.iter().map(|code| format!("{code}\n")).collect()
}

/// A shell line running sudo's test command and then printing `kron-rc=<its exit status>`.
pub fn script_line(args: &str) -> String {
    format!("sudo {args} -u root /usr/bin/id -u; echo kron-rc=$?")
}
