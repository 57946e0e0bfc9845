//! Export and import stream (issue 16, item 6): a store whose export is several times larger
//! than the largest message the bus takes moves through `kronctl export` and `kronctl import`
//! in pieces, with otpd's memory bounded while it writes the file, and arrives whole, as
//! `kronctl list` of both stores shows (a page at a time, memory bounded too; the one-message
//! `List` refuses a store this large). A migration of many users (`--oath-usersfile`, in
//! batches) fills the store first.

use std::path::Path;
use std::process::Command;

use kron_tests::otpd::Otpd;
use kron_tests::pam::Stack;
use kron_tests::process;
use kron_tests::world::{self, Transport, World};
use kron_tests::{Bus, artifacts, dbus, scratch};
use serde_json::Value;

/// Users in the store: an export of several MiB.
const USERS: usize = 30_000;
/// The largest message the test buses carry: a fraction of the export.
const MESSAGE_LIMIT: u64 = 2 * 1024 * 1024;
const PASS: &str = "correct horse battery staple";

fn world() -> World {
    let bus = Bus::start_with_message_limit(MESSAGE_LIMIT);
    let otpd = Otpd::start(&bus, "");
    let pam = world::stack(&bus, &otpd, Transport::Socket, world::SERVICE, Stack::Probe);
    World {
        pam,
        otpd,
        bus,
        transport: Transport::Socket,
    }
}

/// pam_oath's users file for `USERS` made-up users (none needs an account to be imported).
fn users_file(path: &Path) {
    let mut text = String::new();
    for index in 0..USERS {
        let secret: String = (0..20)
            .map(|byte| format!("{:02x}", (index * 31 + byte * 7) % 251))
            .collect();
        text.push_str(&format!("HOTP/T30\tkx{index:06}\t-\t{secret}\n"));
    }
    scratch::write_file(path, &text, 0o600);
}

/// `kronctl --json ARGS...` as root on `world`, run by python3 so its peak memory (ru_maxrss
/// of the child, KiB) is known: the JSON line and that figure.
fn kronctl_measured(world: &World, args: &[&str]) -> (Value, u64) {
    let script = "import json, resource, subprocess, sys\n\
                  done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n\
                  sys.stderr.write(done.stderr)\n\
                  print(json.dumps({'status': done.returncode, 'stdout': done.stdout,\n\
                  'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n";
    let output = process::run(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(artifacts::kronctl())
            .args(["--bus", world.bus.address(), "--json"])
            .args(args),
    );
    output.assert_success("python3 running kronctl");
    let run: Value = serde_json::from_str(output.stdout.trim()).expect("python3's JSON");
    assert_eq!(run["status"], 0, "kronctl {args:?}: {}", output.describe());
    let json = serde_json::from_str(run["stdout"].as_str().unwrap_or_default().trim())
        .unwrap_or_else(|e| panic!("kronctl {args:?} printed no JSON ({e}): {run}"));
    (json, run["maxrss_kib"].as_u64().unwrap_or(0))
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

#[test]
fn a_store_larger_than_a_bus_message_moves_in_pieces_with_bounded_memory() {
    let dir = scratch::private_dir("kron-transfer.");
    let oath = dir.path().join("users.oath");
    users_file(&oath);
    let pass = dir.path().join("pass");
    scratch::write_file(&pass, &format!("{PASS}\n"), 0o600);
    let file = dir.path().join("all.age");
    let (file_arg, pass_arg) = (file.to_str().unwrap(), pass.to_str().unwrap());

    let here = world();
    let (migrated, _) = kronctl_measured(
        &here,
        &["import", "--oath-usersfile", oath.to_str().unwrap()],
    );
    assert_eq!(migrated["imported"], USERS, "{}", migrated["skipped"]);

    // otpd's peak memory while it writes the whole file, from here on.
    let pid = here.otpd.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset otpd's peak RSS");
    let before = status_kib(pid, "VmRSS:");
    let (exported, kronctl_kib) =
        kronctl_measured(&here, &["export", file_arg, "--passphrase-file", pass_arg]);
    let bytes = exported["bytes"].as_u64().expect("bytes");
    assert!(
        bytes > 3 * MESSAGE_LIMIT,
        "the export ({bytes} bytes) should be larger than three bus messages"
    );
    assert_eq!(bytes, std::fs::metadata(&file).unwrap().len());
    // scrypt's 64 MiB (a fixed work factor), and little else, whatever the size of the store.
    let grew = status_kib(pid, "VmHWM:").saturating_sub(before);
    assert!(
        grew < 96 * 1024,
        "otpd grew by {grew} KiB while writing a {bytes}-byte export"
    );
    assert!(
        kronctl_kib < 32 * 1024,
        "kronctl export peaked at {kronctl_kib} KiB"
    );

    // The same users arrive on another host, through a bus that takes no whole file either.
    let there = world();
    let (restored, kronctl_kib) =
        kronctl_measured(&there, &["import", file_arg, "--passphrase-file", pass_arg]);
    assert_eq!(restored["imported"], USERS, "{}", restored["skipped"]);
    assert!(
        kronctl_kib < 32 * 1024,
        "kronctl import peaked at {kronctl_kib} KiB"
    );

    // Both stores listed whole, a page at a time, with otpd's and kronctl's memory bounded as
    // for the export; the one-message `List` refuses a store this large, naming `ListPage`.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset otpd's peak RSS");
    let before = status_kib(pid, "VmRSS:");
    let (ours, kronctl_kib) = kronctl_measured(&here, &["list"]);
    let grew = status_kib(pid, "VmHWM:").saturating_sub(before);
    assert!(grew < 16 * 1024, "otpd grew by {grew} KiB while listing");
    assert!(
        kronctl_kib < 32 * 1024,
        "kronctl list peaked at {kronctl_kib} KiB"
    );
    let (theirs, _) = kronctl_measured(&there, &["list"]);
    let ours = ours.as_array().expect("an array of users");
    assert_eq!(ours.len(), USERS);
    assert!(ours.iter().all(|user| user["enrolled"] == true));
    assert_eq!(
        Some(ours),
        theirs.as_array(),
        "the same users on both hosts"
    );
    let refused = dbus::call(&here.bus.connect(), "List", &()).expect_err("List of 30,000");
    assert_eq!(refused.name, dbus::otpd_error("Conflict"), "{refused}");
    assert!(refused.text.contains("ListPage"), "{refused}");
}
