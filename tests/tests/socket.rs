//! otpd's own socket, where pam_kron talks D-Bus peer-to-peer: logins without dbus-daemon and
//! through its restarts, otpd restarting under a waiting login, many logins held at once,
//! callers known by the kernel and not by what they claim, and what one connection may send.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kron_tests::namespace::PrivateMounts;
use kron_tests::process::{self, Identity};
use kron_tests::totp::wrong_code;
use kron_tests::users::random_name;
use kron_tests::{Bus, Otpd, TestUser, World, artifacts, kronctl, result, scratch};

const REQUIRE: &str = "default_mode = \"require\"\n";

/// Runs socket-probe as `identity` and returns its stdout lines.
fn probe(identity: &Identity, args: &[&str]) -> Vec<String> {
    let output = process::run(identity.command(artifacts::socket_probe()).args(args));
    output.assert_success(&format!("socket-probe {args:?}"));
    output.stdout.lines().map(str::to_owned).collect()
}

/// Starts socket-probe as `identity`, stdin and stdout piped, for a test that reads its lines as
/// they come and ends it by closing its stdin.
fn spawn_probe(
    identity: &Identity,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = identity
        .command(artifacts::socket_probe())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start socket-probe");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

/// otpd's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("otpd's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// What the tests of a misbehaving peer start from: otpd, a user with a token, the attacker
/// (another user), otpd's socket and its resident memory before the attacker's traffic.
struct Flooded {
    world: World,
    attacker: TestUser,
    user: TestUser,
    token: kron_tests::totp::Oath,
    confirmed: u64,
    socket: String,
    before: u64,
}

impl Flooded {
    fn start() -> Flooded {
        let world = World::start(REQUIRE);
        let user = TestUser::new();
        let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
        let socket = world.otpd.socket_path().display().to_string();
        let before = rss_kib(world.otpd.pid());
        Flooded {
            world,
            attacker: TestUser::new(),
            user,
            token,
            confirmed,
            socket,
            before,
        }
    }
}

/// otpd's memory within 32 MiB of `before` (`what`: what the attacker reported).
fn assert_flat(world: &World, before: u64, what: &str) {
    let after = rss_kib(world.otpd.pid());
    assert!(
        after < before + 32 * 1024,
        "otpd grew from {before} to {after} KiB ({what})"
    );
}

/// With dbus-daemon gone, logins go on over the socket; once it is back, otpd takes its name
/// again by itself and kronctl works within seconds, without a restart of otpd.
#[test]
fn logins_go_on_without_the_bus_and_otpd_returns_to_it() {
    let mut world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());

    world.bus.stop();
    world
        .login(user.name())
        .answer(&wrong_code(&token.code_for_step(confirmed + 1)))
        .run()
        .assert_denied();
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();

    world.bus.start_again();
    let back = Instant::now();
    let status = process::wait_for(
        "kronctl to reach otpd again",
        Duration::from_secs(30),
        || {
            let output = world.kronctl().run_json(&["status", user.name()]);
            output.success().then_some(output.stdout)
        },
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert!(kronctl::flag(&status, "enrolled"), "{status}");
    // Not a timed test: the bound only catches an otpd that never comes back on its own.
    assert!(back.elapsed() < Duration::from_secs(30));
    assert!(
        world.otpd.stderr().contains("lost the bus connection"),
        "{}",
        world.otpd.stderr()
    );
}

/// otpd restarted while a login waits at the prompt: that login fails closed (its session died
/// with the old otpd) as a failed login, not as otpd unavailable (otpd had answered it, and a
/// stack's `authinfo_unavail=ignore` must not let it through), and the next login works.
#[test]
fn a_login_waiting_while_otpd_restarts_fails_closed_and_the_next_works() {
    let mut world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());

    let mut waiting = world.login(user.name()).interactive();
    waiting.until_prompt();
    world.otpd.restart();
    waiting.answer(&token.code_for_step(confirmed + 1));
    let failed = waiting.finish();
    assert_ne!(failed.result(), result::SUCCESS, "{}", failed.raw);
    failed.assert_result(result::AUTH_ERR);

    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
}

/// A thousand logins held open at the prompt at once (sshd holds one per person typing) all
/// get their answer: no bus daemon's per-user connection cap stands in between.
#[test]
fn a_thousand_held_logins_all_complete() {
    let world = World::start(REQUIRE);
    let prefix = random_name("kh");
    let socket = world.otpd.socket_path();
    let lines = probe(
        &Identity::Root,
        &["logins", &socket.display().to_string(), "1000", &prefix],
    );
    assert_eq!(lines, ["prompted 1000", "ended 1000"], "{lines:?}");
    // otpd still serves after all of them hung up.
    let user = TestUser::new();
    world
        .login(user.name())
        .answer("123456")
        .run()
        .assert_denied();
}

/// The EXTERNAL identity a client claims must be its own uid (from SO_PEERCRED): root claiming
/// another uid, and a user claiming root or another user, are rejected.
#[test]
fn a_caller_claiming_another_uid_is_refused() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let other = TestUser::new();
    let socket = world.otpd.socket_path().display().to_string();
    let uid = user.uid().to_string();

    assert_eq!(probe(&Identity::Root, &["claim", &socket, "0"]), ["OK"]);
    assert_eq!(
        probe(&Identity::Root, &["claim", &socket, &uid]),
        ["REJECTED"]
    );
    assert_eq!(probe(&user.identity(), &["claim", &socket, &uid]), ["OK"]);
    for claimed in ["0".to_string(), other.uid().to_string()] {
        assert_eq!(
            probe(&user.identity(), &["claim", &socket, &claimed]),
            ["REJECTED"],
            "{} claiming {claimed}",
            user.name()
        );
    }
}

/// Handshake bytes no client sends end their own connection and nothing else: a line break
/// as the very first byte (no NUL before it, no CR), a bare CR LF, a line of garbage. otpd keeps
/// running (the same process) and the next login works.
#[test]
fn a_broken_handshake_ends_only_its_connection() {
    let mut world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let socket = world.otpd.socket_path().display().to_string();
    let pid = world.otpd.pid();

    for text in [
        "\\n",
        "\\nAUTH EXTERNAL 30\\r\\n",
        "\\r\\n",
        "\\0\\n",
        "\\0garbage\\r\\n",
    ] {
        let lines = probe(&user.identity(), &["raw", &socket, text]);
        assert_ne!(lines, ["OK"], "{text:?}");
        assert!(world.otpd.is_running(), "otpd ended after {text:?}");
    }
    assert_eq!(world.otpd.pid(), pid);
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
}

/// A message larger than any login sends is refused at its header, before it is buffered: a
/// user announcing 100 MiB messages on 8 connections leaves otpd's memory where it was, and
/// another user's login works meanwhile.
#[test]
fn oversized_messages_are_refused_before_they_are_buffered() {
    let Flooded {
        world,
        attacker,
        user,
        token,
        confirmed,
        socket,
        before,
    } = Flooded::start();

    let lines = probe(
        &attacker.identity(),
        &["header", &socket, &(100 << 20).to_string(), "8"],
    );
    assert_eq!(lines, vec!["CLOSED"; 8], "{lines:?}");
    assert_flat(&world, before, "");
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
}

/// A user sending call after call on one connection without reading a reply cannot make otpd
/// hold them: the calls otpd takes from a connection wait for their replies to be written, so
/// the rest stay unread in the socket, and otpd's memory stays where it was; the connection is
/// ended once its replies have waited too long. Another user logs in meanwhile and afterwards.
#[test]
fn calls_pipelined_without_reading_replies_are_not_buffered() {
    let Flooded {
        world,
        attacker,
        user,
        token,
        confirmed,
        socket,
        before,
    } = Flooded::start();

    let (mut pipeline, mut lines) =
        spawn_probe(&attacker.identity(), &["pipeline", &socket, "200000"]);
    let sent = lines.next().expect("a line").expect("read");
    // Measured with the connection still open, its replies unread.
    assert_flat(&world, before, &sent);
    world
        .login(user.name())
        .answer(&wrong_code(&token.code_for_step(confirmed + 1)))
        .run()
        .assert_denied();
    // A peer that reads nothing while its replies wait is disconnected (after 10 s).
    process::wait_for(
        "otpd to give up the connection",
        Duration::from_secs(60),
        || {
            world
                .otpd
                .stderr()
                .contains("a peer that read nothing for 10 s was disconnected")
                .then_some(())
        },
    );
    drop(pipeline.stdin.take());
    process::wait_bounded(&mut pipeline, Duration::from_secs(60)).expect("socket-probe ended");
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    assert!(
        rss_kib(world.otpd.pid()) < before + 32 * 1024,
        "otpd kept what the connection made it hold"
    );
}

/// Calls flagged as wanting no reply escape the count of calls waiting for their replies, yet
/// zbus runs each one (and answers one it cannot dispatch): otpd ends the connection at the
/// first, so 200,000 of them pipelined leave its memory where it was. Another user logs in
/// meanwhile.
#[test]
fn calls_that_want_no_reply_end_the_connection() {
    let Flooded {
        world,
        attacker,
        user,
        token,
        confirmed,
        socket,
        before,
    } = Flooded::start();

    let (mut flood, mut lines) =
        spawn_probe(&attacker.identity(), &["unanswered", &socket, "200000"]);
    let sent = lines.next().expect("a line").expect("read");
    assert_flat(&world, before, &sent);
    assert!(
        world
            .otpd
            .stderr()
            .contains("a call that wants no reply refused"),
        "not logged:\n{}",
        world.otpd.stderr()
    );
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    drop(flood.stdin.take());
    process::wait_bounded(&mut flood, Duration::from_secs(60)).expect("socket-probe ended");
}

/// Opens `count` connections as `identity` through the handshake (socket-probe `hold`): the
/// verdict of each, and the probe, which holds them until [`release`].
fn hold(identity: &Identity, socket: &str, count: usize) -> (std::process::Child, Vec<String>) {
    let count = count.to_string();
    let mut args = vec!["hold", socket, &count];
    // A contained process claims the uid otpd knows it by (its own inside is root).
    let known_as = match identity {
        Identity::Contained { uid } => Some(uid.to_string()),
        _ => None,
    };
    args.extend(known_as.as_deref());
    let (holder, mut lines) = spawn_probe(identity, &args);
    let count: usize = count.parse().expect("a count");
    let verdicts = (0..count)
        .map(|_| lines.next().expect("a line").expect("read"))
        .collect();
    (holder, verdicts)
}

/// Ends a [`hold`]: its connections close.
fn release(mut holder: std::process::Child) {
    drop(holder.stdin.take());
    process::wait_bounded(&mut holder, Duration::from_secs(60)).expect("socket-probe ended");
}

/// One user cannot hold more connections than `max_connections_per_uid`; the refusal is
/// said (a login of that user is denied as throttled, never "unavailable", which a stack may
/// let through) and logged, other users and root are not affected, and the slots come back
/// when the connections end.
#[test]
fn connections_per_uid_are_bounded_and_the_limit_logged() {
    let world = World::start(&format!("{REQUIRE}max_connections_per_uid = 3\n"));
    let hog = TestUser::new();
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    world.kronctl().enroll_confirmed_now(hog.name());
    let socket = world.otpd.socket_path().display().to_string();

    let (holder, held) = hold(&hog.identity(), &socket, 4);
    assert_eq!(held, ["OK", "OK", "OK", "LIMIT"], "{held:?}");
    // The hog's own PAM login (a screen locker's, say) while it holds its share.
    let own = world
        .login(hog.name())
        .as_identity(hog.identity())
        .answer("123456")
        .run();
    assert_eq!(own.result(), result::MAXTRIES, "{}", own.raw);
    assert!(
        world
            .otpd
            .stderr()
            .contains(&format!("uid {} holds 3 connections", hog.uid())),
        "{}",
        world.otpd.stderr()
    );
    // Others log in meanwhile.
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    release(holder);
    process::wait_for("the slots to come back", Duration::from_secs(30), || {
        let lines = probe(&hog.identity(), &["claim", &socket, &hog.uid().to_string()]);
        (lines == ["OK"]).then_some(())
    });
}

/// All users but root together hold at most `max_connections_users` (one person may have
/// thousands of uids); root's logins go on past it.
#[test]
fn users_together_hold_at_most_their_share() {
    let world = World::start(&format!("{REQUIRE}max_connections_users = 2\n"));
    let (first, second, user) = (TestUser::new(), TestUser::new(), TestUser::new());
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let socket = world.otpd.socket_path().display().to_string();

    let (holder, held) = hold(&first.identity(), &socket, 2);
    assert_eq!(held, ["OK", "OK"], "{held:?}");
    let other = probe(
        &second.identity(),
        &["claim", &socket, &second.uid().to_string()],
    );
    assert_eq!(other, ["LIMIT"], "another uid, over the users' share");
    assert!(
        world.otpd.stderr().contains("(max_connections_users)"),
        "{}",
        world.otpd.stderr()
    );
    // Root's (sshd's) logins are not counted there.
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    release(holder);
}

/// A person's subordinate uids (a rootless container runs as them) count as that person in
/// `max_connections_per_uid`: one container's many uids cannot take the users' shared share
/// and lock other users' own PAM logins out; the refusal names both uids. otpd runs with a
/// test `/etc/subuid` in a mount namespace of its own (laid over /etc: other tests' useradd
/// replaces the machine's file meanwhile).
#[test]
fn subordinate_uids_count_as_their_owners() {
    let (owner, other) = (TestUser::new(), TestUser::new());
    // Far above any uid useradd hands out, as subordinate ranges are.
    let first = 1_800_000_000 + (owner.uid() % 1000) * 65_536;
    // Shown as /etc, which otpd trusts only if root alone can change it.
    let etc = scratch::public_dir("kron-etc.");
    let subuid = format!("{}:{first}:65536\n", owner.name());
    scratch::write_file(&etc.path().join("subuid"), &subuid, 0o644);
    let bus = Bus::start();
    let otpd = Otpd::start_with_mounts(
        &bus,
        "max_connections_per_uid = 3\nmax_connections_users = 5\n",
        PrivateMounts::new().overlay(etc.path(), Path::new("/etc")),
    );
    process::wait_for("otpd to read /etc/subuid", Duration::from_secs(60), || {
        otpd.stderr()
            .contains("subordinate uids: /etc/subuid lists 1 range of 1 user")
            .then_some(())
    });
    let socket = otpd.socket_path().display().to_string();

    let (own, held) = hold(&owner.identity(), &socket, 1);
    assert_eq!(held, ["OK"], "{held:?}");
    let container = Identity::Contained { uid: first + 5 };
    let (containers, held) = hold(&container, &socket, 3);
    assert_eq!(held, ["OK", "OK", "LIMIT"], "the owner's limit, shared");
    let another = first + 65_535;
    let refused = probe(
        &Identity::Contained { uid: another },
        &["claim", &socket, &another.to_string()],
    );
    assert_eq!(refused, ["LIMIT"], "another of the owner's uids");
    // The same uid outside any container is an account of its own (a directory's id mapping
    // may hand out uids inside someone's range): charged as itself.
    let account = probe(
        &Identity::Unnamed { uid: another },
        &["claim", &socket, &another.to_string()],
    );
    assert_eq!(account, ["OK"], "an account whose uid lies in the range");
    assert!(
        otpd.stderr().contains(&format!(
            "refusing uid {} (a subordinate uid of uid {})",
            first + 5,
            owner.uid()
        )),
        "{}",
        otpd.stderr()
    );
    // Another user's own logins have their place in the users' share.
    let (others, held) = hold(&other.identity(), &socket, 2);
    assert_eq!(held, ["OK", "OK"], "{held:?}");
    // A uid past the range is nobody's: charged as itself, not to the owner at their limit.
    let past = first + 65_536;
    let claim_past = || {
        probe(
            &Identity::Unnamed { uid: past },
            &["claim", &socket, &past.to_string()],
        )
    };
    assert_eq!(claim_past(), ["LIMIT"], "the users' share is full now");
    release(others);
    assert_eq!(claim_past(), ["OK"]);
    release(containers);
    release(own);
}

/// otpd run by hand creates its socket; a stale socket left by a killed otpd is replaced, and
/// a socket someone still serves is not taken over.
#[test]
fn otpd_binds_its_socket_and_never_steals_a_live_one() {
    let mut world = World::start(REQUIRE);
    let socket = world.otpd.socket_path();
    let metadata = std::fs::metadata(&socket).expect("otpd created its socket");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o666);

    world.otpd.kill();
    assert!(socket.exists(), "a killed otpd leaves its socket");
    world.otpd.start_again();
    let user = TestUser::new();
    world
        .login(user.name())
        .answer("123456")
        .run()
        .assert_denied();

    // A second otpd with the same config refuses to start rather than steal the socket.
    let output = process::run(
        Command::new(artifacts::otpd())
            .arg("--config")
            .arg(world.otpd.config_path())
            .arg("--bus")
            .arg(world.bus.address()),
    );
    output.assert_failure("a second otpd on a served socket");
    assert!(
        output.stderr.contains("another process"),
        "{}",
        output.describe()
    );
    world
        .login(user.name())
        .answer("123456")
        .run()
        .assert_denied();
}

/// A login whose conversation ends at the prompt (the person's client gone) is forgotten by otpd
/// at once, not at its deadline: pam_kron cancels it when its conversation fails, on the socket
/// and on the bus, and on the socket a connection that simply ends takes its logins with it.
#[test]
fn a_login_that_ends_at_the_prompt_is_forgotten_at_once() {
    for transport in kron_tests::Transport::BOTH {
        let world = World::start_over(transport, REQUIRE);
        let user = TestUser::new();
        world.kronctl().enroll_confirmed_now(user.name());
        let mut waiting = world.login(user.name()).interactive();
        waiting.until_prompt();
        // No answer: stdin closes, the conversation fails, the module says Cancel.
        let ended = waiting.finish();
        assert_ne!(ended.result(), result::SUCCESS, "{}", ended.raw);
        process::wait_for("otpd to forget the login", Duration::from_secs(30), || {
            world
                .otpd
                .stderr()
                .contains("a login waiting at its prompt was cancelled")
                .then_some(())
        });
    }

    let world = World::start(REQUIRE);
    let user = TestUser::new();
    world.kronctl().enroll_confirmed_now(user.name());
    let mut waiting = world.login(user.name()).interactive();
    waiting.until_prompt();
    // SIGKILL: no Cancel is ever sent, the connection just ends.
    drop(waiting);
    process::wait_for("otpd to forget the login", Duration::from_secs(30), || {
        world
            .otpd
            .stderr()
            .contains("a login waiting at its prompt was cancelled")
            .then_some(())
    });
}

/// Through the bus, which any local user can reach too: 8 connections sending SetContact with
/// 30 MiB arguments are answered with an error at once, otpd stays within 32 MiB of where it
/// was, and another user's login goes on meanwhile.
#[test]
fn oversized_calls_through_the_bus_are_dropped_unbuffered() {
    let world = World::start(REQUIRE);
    let attacker = TestUser::new();
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let before = rss_kib(world.otpd.pid());
    let mut flood = attacker
        .identity()
        .command(artifacts::socket_probe())
        .args([
            "bus-flood",
            world.bus.address(),
            "8",
            &(30 << 20).to_string(),
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start socket-probe");
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run()
        .assert_accepted();
    let mut peak = before;
    while flood.try_wait().expect("waitpid").is_none() {
        peak = peak.max(rss_kib(world.otpd.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut answers = String::new();
    use std::io::Read;
    flood
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut answers)
        .expect("read");
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), 24, "{answers:?}");
    // Refused by otpd (InvalidArgs), or already by dbus-daemon when too many big messages
    // for otpd queue at once (LimitsExceeded): never accepted, never an otpd failure.
    assert!(
        answers.iter().all(|a| matches!(
            *a,
            "org.freedesktop.DBus.Error.InvalidArgs" | "org.freedesktop.DBus.Error.LimitsExceeded"
        )),
        "{answers:?}"
    );
    assert!(
        answers.contains(&"org.freedesktop.DBus.Error.InvalidArgs"),
        "no call reached otpd: {answers:?}"
    );
    assert!(
        peak < before + 32 * 1024,
        "otpd grew from {before} to {peak} KiB"
    );
    assert!(
        world.otpd.stderr().contains("bus: a D-Bus message of"),
        "{}",
        world.otpd.stderr()
    );
}
