//! The machine's real `sudo` with pam_kron in its stack, run by a test user inside a private
//! mount namespace where a test `/etc/pam.d/sudo` and `/etc/sudoers` are bind-mounted
//! (`kron_tests::sudo`): the machine's sudo configuration is never touched.
//!
//! sudo always passes PAM_SILENT; the stacks here give pam_kron `nosilent` (docs/sudo.md) so
//! otpd's messages are shown, except where a test checks what happens without it.

use std::time::Duration;

use kron_tests::namespace::MachineFiles;
use kron_tests::pty::Pty;
use kron_tests::sudo::{self, Sudo};
use kron_tests::totp::wrong_code;
use kron_tests::{Bus, FakeOtpd, TestGroup, TestUser, Transport, World, kronctl, process};

const CONTACT: &str = "the kron test desk";

/// Everyone needs a code for sudo; nothing else is configured.
fn require_sudo() -> String {
    format!(
        "default_mode = \"exempt\"\ncontact = \"{CONTACT}\"\n\
         [[group]]\nname = \"*\"\nmode = \"require\"\nservices = [\"sudo\"]\n"
    )
}

/// sudo's stdout and stderr together (sudo writes messages to either, prompts to stderr).
fn shown(output: &process::Output) -> String {
    format!("{}{}", output.stdout, output.stderr)
}

fn assert_ran(output: &process::Output) {
    output.assert_success("sudo");
    assert_eq!(
        output.stdout.trim_end().lines().last(),
        Some("0"),
        "{}",
        output.describe()
    );
}

fn assert_did_not_run(output: &process::Output) {
    output.assert_failure("sudo");
    assert!(
        !output.stdout.lines().any(|line| line.trim() == "0"),
        "the command ran: {}",
        output.describe()
    );
}

/// `sudo -S`, code on stdin: the right code runs the command, a wrong one and a replayed one
/// do not, each with otpd's message (shown thanks to `nosilent`). The machine's sudo files are
/// the same afterwards.
#[test]
fn sudo_stdin_right_wrong_and_replayed_code() {
    let machine = MachineFiles::snapshot(&["/etc/pam.d/sudo", "/etc/sudoers"]);
    let world = World::start(&require_sudo());
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let sudo = Sudo::new(&world, &user, &["nosilent"], &["passwd_tries=1"]);
    let code = token.code_for_step(confirmed + 1);

    let wrong = sudo.run_stdin(&user, &[&wrong_code(&code)]);
    assert_did_not_run(&wrong);
    assert!(
        shown(&wrong).contains("Verification failed."),
        "{}",
        wrong.describe()
    );

    let right = sudo.run_stdin(&user, &[&code]);
    assert_ran(&right);
    assert!(
        right.stderr.contains("Verification code: "),
        "kron's prompt not shown: {}",
        right.describe()
    );

    let replayed = sudo.run_stdin(&user, &[&code]);
    assert_did_not_run(&replayed);
    assert!(
        shown(&replayed).contains("already used"),
        "{}",
        replayed.describe()
    );
    machine.assert_unchanged();
}

/// sudo's own retries: after a wrong code sudo says "Sorry, try again." and asks again (a new
/// PAM login); the right code on the second try runs the command.
#[test]
fn sudo_retries_after_a_wrong_code() {
    let world = World::start(&require_sudo());
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let sudo = Sudo::new(&world, &user, &["nosilent"], &[]);
    let code = token.code_for_step(confirmed + 1);

    let output = sudo.run_stdin(&user, &[&wrong_code(&code), &code]);

    assert_ran(&output);
    assert_eq!(
        output.stderr.matches("Verification code: ").count(),
        2,
        "{}",
        output.describe()
    );
    assert!(
        shown(&output).contains("Sorry, try again."),
        "{}",
        output.describe()
    );
}

/// `sudo -n` cannot prompt: it fails at once and cleanly, runs nothing, and costs the user
/// none of their failed-code allowance. With `noninteractive_auth` sudo does call PAM; kron's
/// prompt then fails the conversation, which is a refusal too.
#[test]
fn sudo_n_fails_cleanly() {
    let world = World::start(&require_sudo());
    let user = TestUser::new();
    world.kronctl().enroll_confirmed_now(user.name());

    for defaults in [&[][..], &["noninteractive_auth"][..]] {
        let sudo = Sudo::new(&world, &user, &["nosilent"], defaults);
        let mut command = sudo.command(&user, &["-n"]);
        command.args(sudo::COMMAND);
        let output = process::run(&mut command);
        assert_did_not_run(&output);
        assert_eq!(
            output.code(),
            Some(1),
            "{defaults:?}: {}",
            output.describe()
        );
        assert!(
            !output.stderr.contains("Verification code"),
            "{defaults:?}: a prompt was shown: {}",
            output.describe()
        );
        if defaults.is_empty() {
            assert!(
                output.stderr.contains("a password is required"),
                "{}",
                output.describe()
            );
        }
    }
    let status = world.kronctl().status(user.name());
    assert_eq!(kronctl::number(&status, "failures"), 0, "{status}");
}

/// What sudo shows on refusal does not tell a user without a token from a wrong code, and a
/// throttled user is told when to retry. Without `nosilent`, sudo's PAM_SILENT hides otpd's
/// messages (the prompt is still asked).
#[test]
fn sudo_messages() {
    let world = World::start(&format!(
        "{}[throttle]\nfree_attempts = 1\nbase_delay = 3600\nmax_delay = 7200\n",
        require_sudo()
    ));
    let enrolled = TestUser::new();
    let without_token = TestUser::new();
    // Its own user: each failure counts, with or without a token.
    let silenced = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(enrolled.name());
    let code = token.code_for_step(confirmed + 1);
    let once = ["passwd_tries=1"];

    let silent = Sudo::new(&world, &silenced, &[], &once).run_stdin(&silenced, &["123456"]);
    assert_did_not_run(&silent);
    assert!(
        silent.stderr.contains("Verification code: "),
        "{}",
        silent.describe()
    );
    assert!(
        !shown(&silent).contains("Verification failed"),
        "{}",
        silent.describe()
    );

    let no_token = Sudo::new(&world, &without_token, &["nosilent"], &once)
        .run_stdin(&without_token, &["123456"]);
    let wrong = Sudo::new(&world, &enrolled, &["nosilent"], &once)
        .run_stdin(&enrolled, &[&wrong_code(&code)]);
    assert_did_not_run(&no_token);
    assert_did_not_run(&wrong);
    assert!(
        shown(&wrong).contains("Verification failed.") && shown(&wrong).contains(CONTACT),
        "{}",
        wrong.describe()
    );
    assert_eq!(
        shown(&wrong).replace(enrolled.name(), "USER"),
        shown(&no_token).replace(without_token.name(), "USER"),
        "a wrong code and a missing token read differently"
    );

    // The free attempt is used up: sudo's next tries are refused before any prompt, saying when
    // to retry; even the right code is never asked for.
    let throttled = Sudo::new(&world, &enrolled, &["nosilent"], &[]).run_stdin(&enrolled, &[&code]);
    assert_did_not_run(&throttled);
    assert!(
        shown(&throttled).contains("Try again in"),
        "not told when to retry: {}",
        throttled.describe()
    );
    assert!(
        !throttled.stderr.contains("Verification code"),
        "{}",
        throttled.describe()
    );
}

/// One sudo on a terminal: waits for kron's prompt, types `code`, and checks the command ran.
fn sudo_on_terminal(terminal: &mut Pty, code: &str) {
    terminal.expect("Verification code: ");
    terminal.send_line(code);
    terminal.expect("kron-rc=0");
}

/// Two sudo invocations from one shell: same terminal, same audit session.
fn two_sudos() -> String {
    format!("{}; {}", sudo::script_line(""), sudo::script_line(""))
}

/// Step-up grace on (`grace = 300` on the sudo rule): after a passed code, a second sudo in the
/// same login session and terminal is not asked again, and otpd audits it. Another session
/// (a new login on another terminal) is asked again; so is a second `sudo -S` without any
/// terminal (no PAM_TTY), even inside one session.
#[test]
fn sudo_step_up_grace_stays_in_its_session() {
    let admins = TestGroup::new();
    let world = World::start(&format!(
        "default_mode = \"exempt\"\n[[group]]\nname = \"{}\"\nmode = \"require\"\n\
         services = [\"sudo\"]\ngrace = 300\n",
        admins.name()
    ));
    let user = TestUser::with_groups(&[&admins]);
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let sudo = Sudo::new(&world, &user, &["nosilent"], &[]);

    let mut terminal = sudo.terminal(&user, &two_sudos());
    sudo_on_terminal(&mut terminal, &token.code_for_step(confirmed + 1));
    let (which, _) = terminal.expect_any(&["Verification code: ", "kron-rc="]);
    assert_eq!(
        which,
        1,
        "asked again within the grace period:\n{}",
        terminal.transcript()
    );
    let (status, transcript) = terminal.finish();
    assert!(status.success(), "{transcript}");
    assert_eq!(
        transcript.matches("kron-rc=0").count(),
        2,
        "the second sudo failed:\n{transcript}"
    );
    assert_eq!(
        transcript.matches("Verification code: ").count(),
        1,
        "{transcript}"
    );
    let graced: Vec<String> = world
        .otpd
        .stderr()
        .lines()
        .filter(|line| line.contains("step-up grace"))
        .map(str::to_string)
        .collect();
    assert_eq!(graced.len(), 1, "{}", world.otpd.stderr());
    assert!(
        graced[0].contains(user.name()) && graced[0].contains("service=sudo"),
        "{graced:?}"
    );

    // Another login session on another terminal: asked again.
    let mut other = sudo.terminal(&user, &sudo::script_line(""));
    sudo_on_terminal(&mut other, &token.code_for_step(confirmed + 2));
    other.finish();

    // No terminal: no grace, even for two sudos in one audit session. The second gets a wrong
    // code on stdin and must be refused. (Another user of the group: the first one's codes for
    // the next steps are not valid yet.)
    let second = TestUser::with_groups(&[&admins]);
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(second.name());
    let sudo = Sudo::new(&world, &second, &["nosilent"], &[]);
    let script = format!("{}; {}", sudo::script_line("-S"), sudo::script_line("-S"));
    let code = token.code_for_step(confirmed + 1);
    let output = process::run_with_input(
        &mut sudo.session(&second, &script),
        &sudo::lines(&[&code, &wrong_code(&code)]),
    );
    assert!(
        output.stdout.contains("kron-rc=0") && output.stdout.contains("kron-rc=1"),
        "{}",
        output.describe()
    );
}

/// Step-up grace off (the default): every sudo asks for a code, even seconds apart in one
/// session and terminal.
#[test]
fn sudo_without_grace_asks_every_time() {
    let world = World::start(&require_sudo());
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let sudo = Sudo::new(&world, &user, &["nosilent"], &[]);

    let mut terminal = sudo.terminal(&user, &two_sudos());
    sudo_on_terminal(&mut terminal, &token.code_for_step(confirmed + 1));
    sudo_on_terminal(&mut terminal, &token.code_for_step(confirmed + 2));
    let (status, transcript) = terminal.finish();
    assert!(status.success(), "{transcript}");
    assert!(
        !world.otpd.stderr().contains("step-up grace"),
        "{}",
        world.otpd.stderr()
    );
}

/// `DBUS_SYSTEM_BUS_ADDRESS` set by the user who runs sudo, pointing at an impostor that
/// accepts everything, changes nothing: with `bus=` the real otpd still refuses a wrong code
/// and accepts the right one; without `socket=` or `bus=` the module uses its compiled-in
/// socket, never the impostor, and sudo is refused.
#[test]
fn sudo_ignores_the_invoking_users_bus_address() {
    let world = World::start_over(Transport::Bus, &require_sudo());
    let fake_bus = Bus::start();
    let fake = FakeOtpd::start(&fake_bus);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let code = token.code_for_step(confirmed + 1);
    let poisoned = |sudo: &Sudo, input: &str| {
        let mut command = sudo.command(&user, &["-S"]);
        command
            .args(sudo::COMMAND)
            .env("DBUS_SYSTEM_BUS_ADDRESS", fake_bus.address())
            .env("DBUS_SESSION_BUS_ADDRESS", fake_bus.address());
        process::run_with_input(&mut command, &sudo::lines(&[input]))
    };

    let with_bus = Sudo::new(&world, &user, &["nosilent"], &["passwd_tries=1"]);
    assert_did_not_run(&poisoned(&with_bus, &wrong_code(&code)));
    assert_ran(&poisoned(&with_bus, &code));

    let without_bus = Sudo::with_module_args(&user, &["nosilent"], &["passwd_tries=1"]);
    assert_did_not_run(&poisoned(&without_bus, &token.code_for_step(confirmed + 2)));

    assert_eq!(fake.calls(), 0, "the module asked the impostor");
}

/// sudo connects to otpd's socket as root whoever runs it: a user holding sudo prompts open
/// (here five, with room for four of root's) must not fill root's connections and lock every
/// sshd and sudo login out. Past half of root's connections, otpd charges a root peer's
/// connection to its real uid: the user's fifth prompt is refused as over the user's
/// limit, and root logs in meanwhile.
#[test]
fn sudo_prompts_held_open_count_against_the_user_not_root() {
    let world = World::start(&format!(
        "max_connections_per_uid = 2\nmax_connections_root = 4\n{}",
        require_sudo()
    ));
    let user = TestUser::new();
    world.kronctl().enroll_confirmed_now(user.name());
    let sudo = Sudo::new(&world, &user, &["nosilent"], &[]);
    // `sudo -S` waiting for the code on a stdin nobody writes to.
    let mut held: Vec<std::process::Child> = (0..5)
        .map(|_| {
            let mut command = sudo.command(&user, &["-S"]);
            command
                .args(sudo::COMMAND)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            command.spawn().expect("start sudo")
        })
        .collect();
    let refused = process::wait_for("a connection refused", Duration::from_secs(60), || {
        let log = world.otpd.stderr();
        log.lines()
            .find(|line| line.contains("connections, its limit"))
            .map(str::to_owned)
    });
    assert!(
        refused.contains(&format!("uid {} holds 2 connections", user.uid()))
            && refused.contains("through set-uid programs"),
        "{refused}"
    );

    // Root's own logins go on: otpd serves the connection and decides (this service is exempt;
    // a refused connection would fail the login closed).
    let other = TestUser::new();
    let login = world.login(other.name()).run();
    assert_eq!(login.result(), kron_tests::result::SUCCESS, "{}", login.raw);

    for child in &mut held {
        drop(child.stdin.take());
    }
    for child in &mut held {
        process::wait_bounded(child, Duration::from_secs(60)).expect("sudo ended");
    }
}
