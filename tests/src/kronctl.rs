//! Running `kronctl` against a test bus, as root or as a test user.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

use serde_json::Value;

use crate::bus::Bus;
use crate::process::{self, Identity, Output};
use crate::totp::Oath;
use crate::{artifacts, totp};

/// `kronctl --bus ADDRESS` run as one identity.
#[derive(Debug, Clone)]
pub struct Kronctl {
    address: String,
    identity: Identity,
}

impl Kronctl {
    /// kronctl as root on `bus`.
    pub fn root(bus: &Bus) -> Kronctl {
        Kronctl {
            address: bus.address().to_string(),
            identity: Identity::Root,
        }
    }

    /// kronctl as `identity` on `bus`.
    pub fn as_identity(bus: &Bus, identity: Identity) -> Kronctl {
        Kronctl {
            address: bus.address().to_string(),
            identity,
        }
    }

    /// Runs `kronctl --bus ADDRESS ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        process::run(&mut self.command(false, args))
    }

    /// Runs `kronctl --bus ADDRESS --json ARGS...`.
    pub fn run_json(&self, args: &[&str]) -> Output {
        process::run(&mut self.command(true, args))
    }

    /// Runs `kronctl --json ARGS...`, requires success and parses its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let output = self.run_json(args);
        output.assert_success(&format!("kronctl --json {}", args.join(" ")));
        serde_json::from_str(output.stdout.trim()).unwrap_or_else(|err| {
            panic!(
                "kronctl --json {args:?} printed no JSON ({err}):\n{}",
                output.stdout
            )
        })
    }

    /// Starts an enrollment for `user` and returns its token (`kronctl --json enroll USER`).
    pub fn enroll(&self, user: &str) -> Oath {
        let value = self.json(&["enroll", user]);
        Oath::new(&secret_of(&value))
    }

    /// Enrolls `user` and confirms with the code for `step` (root only); returns the token.
    pub fn enroll_confirmed(&self, user: &str, step: u64) -> Oath {
        let token = self.enroll(user);
        self.run(&["confirm", user, &token.code_for_step(step)])
            .assert_success("kronctl confirm");
        token
    }

    /// Enrolls and confirms `user` with a code for the current step, and returns the token
    /// together with the step that confirmation used up.
    pub fn enroll_confirmed_now(&self, user: &str) -> (Oath, u64) {
        let step = totp::steady_step();
        (self.enroll_confirmed(user, step - 1), step - 1)
    }

    /// Starts `kronctl --bus ADDRESS [--json] ARGS...` with its stdin a pipe the test writes to
    /// while it runs ([`Talking::send_line`]): for a kronctl that reads a code only after it
    /// asked otpd to send one. Not a terminal, so kronctl reads a line from it.
    pub fn spawn(&self, json: bool, args: &[&str]) -> Talking {
        let stdout = tempfile::tempfile().expect("temporary file for stdout");
        let stderr = tempfile::tempfile().expect("temporary file for stderr");
        let mut command = self.command(json, args);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(stdout.try_clone().expect("clone stdout file"))
            .stderr(stderr.try_clone().expect("clone stderr file"))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        Talking {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// `kronctl --json status USER` as a JSON object.
    pub fn status(&self, user: &str) -> Value {
        self.json(&["status", user])
    }

    fn command(&self, json: bool, args: &[&str]) -> Command {
        let mut command = self.identity.command(artifacts::kronctl());
        command
            .env_remove("KRON_BUS")
            .arg("--bus")
            .arg(&self.address);
        if json {
            command.arg("--json");
        }
        command.args(args);
        command
    }
}

/// A kronctl started with [`Kronctl::spawn`]. Killed on drop if still running.
#[derive(Debug)]
pub struct Talking {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: File,
    stderr: File,
}

impl Talking {
    /// Writes `line` and a newline to kronctl's stdin. A kronctl that already exited (it
    /// failed before reading) makes the write fail: that is ignored, [`Talking::finish`] tells.
    pub fn send_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        }
    }

    /// Closes stdin, waits for kronctl to end (bounded) and returns what it did.
    pub fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let status = process::wait_bounded(&mut self.child, process::COMMAND_TIMEOUT)
            .unwrap_or_else(|| {
                panic!("kronctl still running after {:?}", process::COMMAND_TIMEOUT)
            });
        Output {
            status,
            stdout: read_back(&mut self.stdout),
            stderr: read_back(&mut self.stderr),
        }
    }
}

impl Drop for Talking {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn read_back(file: &mut File) -> String {
    let mut bytes = Vec::new();
    file.rewind().expect("rewind output file");
    file.read_to_end(&mut bytes).expect("read output file");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The base32 secret in `kronctl --json enroll` output: the `secret` field, else the `secret`
/// parameter of the otpauth URI.
pub fn secret_of(value: &Value) -> String {
    if let Some(secret) = find_key(value, "secret").and_then(Value::as_str) {
        return secret.to_string();
    }
    let uri = find_key(value, "uri")
        .and_then(Value::as_str)
        .unwrap_or_default();
    crate::messages::otpauth_secret(uri)
        .unwrap_or_else(|| panic!("no secret in kronctl enroll output: {value}"))
}

/// The first value named `key` in `value`, searching nested objects breadth-first.
pub fn find_key<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    let mut queue = vec![value];
    while !queue.is_empty() {
        let mut next = Vec::new();
        for item in queue {
            match item {
                Value::Object(map) => {
                    if let Some(found) = map.get(key) {
                        return Some(found);
                    }
                    next.extend(map.values());
                }
                Value::Array(items) => next.extend(items),
                _ => {}
            }
        }
        queue = next;
    }
    None
}

/// A boolean field of a status object (`enrolled`, `pending`, `locked`).
pub fn flag(status: &Value, key: &str) -> bool {
    find_key(status, key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("no boolean {key:?} in {status}"))
}

/// A number field of a status object (`failures`, `locked_until`, `last_used`).
pub fn number(status: &Value, key: &str) -> u64 {
    find_key(status, key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number {key:?} in {status}"))
}

/// The user objects in `kronctl --json list` output (a bare array or one array inside).
pub fn listed_users(list: &Value) -> Vec<String> {
    let items = match list {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map
            .values()
            .find_map(|value| value.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    items
        .iter()
        .filter_map(|item| {
            find_key(item, "user")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}
