//! OpenSSH end to end: a test-only `sshd` on 127.0.0.1 (its own config, host key, authorized
//! keys and a private /etc/pam.d, see `kron_tests::sshd`) and the real `ssh` client answering
//! keyboard-interactive prompts through SSH_ASKPASS. Each test has its own world, users, sshd
//! and port; nothing of the machine's sshd or PAM configuration is touched.

use kron_tests::namespace::MachineFiles;
use kron_tests::pam::Stack;
use kron_tests::process;
use kron_tests::sshd::{ClientKey, Methods, SshRun, Sshd};
use kron_tests::totp::{self, Oath, unix_now, wrong_code};
use kron_tests::users::random_name;
use kron_tests::{TestGroup, TestUser, Transcript, World, kronctl};

/// The remote command of every login; its output proves the session ran.
const REMOTE: &str = "echo kron-ssh-ok";
const MARKER: &str = "kron-ssh-ok";

const CONTACT: &str = "the kron test desk";

/// The PAM auth lines after which every sshd service here continues the same way.
const REST: &str = "account required pam_permit.so\nsession required pam_permit.so\n\
                    password required pam_deny.so\n";

/// docs/sshd.md's stack for key + code: the key is the first factor, so the auth stack is kron
/// followed by pam_permit (which lets otpd's Skip through, for exempt users). Safe only because
/// `AuthenticationMethods publickey,keyboard-interactive` demands the key first.
fn key_stack(world: &World) -> String {
    format!("{}auth required pam_permit.so\n{REST}", kron_line(world))
}

/// kron alone: every account reaches the code prompt, nothing else is asked. Test-only: a
/// real server must not accept a code without a first factor.
fn code_only_stack(world: &World) -> String {
    format!("{}{REST}", kron_line(world))
}

/// The pam_kron line for `world`'s otpd.
fn kron_line(world: &World) -> String {
    kron_tests::pam::stack_text(Stack::Alone, &[&world.transport_arg(), "timeout=30"])
}

/// An sshd requiring an authorized key, then kron's code.
fn key_then_code(world: &World, user: &TestUser) -> (Sshd, ClientKey) {
    let sshd = Sshd::start_with(&key_stack(world), Methods::KeyThenKeyboardInteractive);
    let key = ClientKey::new();
    sshd.authorize(user.name(), &key);
    (sshd, key)
}

fn assert_logged_in(run: &SshRun, sshd: &Sshd) {
    assert!(
        run.ran(MARKER),
        "login failed: {}\n--- sshd ---\n{}",
        run.describe(),
        sshd.log()
    );
}

fn assert_refused(run: &SshRun, sshd: &Sshd) {
    assert!(
        !run.ran(MARKER) && !run.output.success(),
        "login went through: {}\n--- sshd ---\n{}",
        run.describe(),
        sshd.log()
    );
}

/// The only prompt of a plain code login: kron's, and nothing in front of it.
fn assert_code_prompt_only(run: &SshRun) {
    assert_eq!(run.prompts.len(), 1, "{}", run.describe());
    assert!(
        run.prompts[0].ends_with("Verification code: ") && run.prompts[0].lines().count() == 1,
        "{}",
        run.describe()
    );
}

/// Key then code: an authorized key alone is not enough, the code from oathtool completes the
/// login; without the key (or with another key) the code is never even asked. An exempt user
/// logs in with the key alone, and still not without it. The machine's sshd and PAM files are
/// the same afterwards.
#[test]
fn key_then_code_logs_in() {
    let machine = MachineFiles::snapshot(&["/etc/pam.d/sshd", "/etc/ssh/sshd_config"]);
    let exempt = TestGroup::new();
    let world = World::start(&format!(
        "default_mode = \"require\"\n[[group]]\nname = \"{}\"\nmode = \"exempt\"\n",
        exempt.name()
    ));
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let (sshd, key) = key_then_code(&world, &user);

    let run = sshd
        .client(user.name())
        .key(&key)
        .run_answering(REMOTE, &token.code_for_step(confirmed + 1));
    assert_logged_in(&run, &sshd);
    assert_code_prompt_only(&run);
    let log = sshd.log();
    assert!(
        log.contains(&format!("Partial publickey for {}", user.name()))
            && log.contains(&format!(
                "Accepted keyboard-interactive/pam for {}",
                user.name()
            )),
        "sshd did not take the key first and the code second:\n{log}"
    );

    let no_key = sshd
        .client(user.name())
        .run_answering(REMOTE, &token.code_for_step(confirmed + 2));
    assert_refused(&no_key, &sshd);
    assert!(no_key.prompts.is_empty(), "{}", no_key.describe());

    let stranger = ClientKey::new();
    let other_key = sshd
        .client(user.name())
        .key(&stranger)
        .run_answering(REMOTE, &token.code_for_step(confirmed + 2));
    assert_refused(&other_key, &sshd);
    assert!(other_key.prompts.is_empty(), "{}", other_key.describe());

    let exempt_user = TestUser::with_groups(&[&exempt]);
    let exempt_key = ClientKey::new();
    sshd.authorize(exempt_user.name(), &exempt_key);
    let skipped = sshd
        .client(exempt_user.name())
        .key(&exempt_key)
        .run_answering(REMOTE, "000000");
    assert_logged_in(&skipped, &sshd);
    assert!(skipped.prompts.is_empty(), "{}", skipped.describe());
    let keyless = sshd
        .client(exempt_user.name())
        .run_answering(REMOTE, "000000");
    assert_refused(&keyless, &sshd);

    machine.assert_unchanged();
}

/// A wrong code and a replayed code are refused, each with a message the person understands;
/// the right code between them works.
#[test]
fn wrong_and_replayed_codes_are_refused() {
    let world = World::start("default_mode = \"require\"\n");
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let (sshd, key) = key_then_code(&world, &user);
    let client = || sshd.client(user.name()).key(&key);
    let code = token.code_for_step(confirmed + 1);

    let wrong = client().run_answering(REMOTE, &wrong_code(&code));
    assert_refused(&wrong, &sshd);
    assert!(
        wrong.output.stderr.contains("Verification failed."),
        "{}",
        wrong.describe()
    );

    let right = client().run_answering(REMOTE, &code);
    assert_logged_in(&right, &sshd);

    let replayed = client().run_answering(REMOTE, &code);
    assert_refused(&replayed, &sshd);
    assert!(
        replayed.output.stderr.contains("already used"),
        "{}",
        replayed.describe()
    );
}

/// `enroll` mode over SSH: a user without a token sees the QR (UTF-8 half blocks), the key
/// for manual entry and the deadline in front of the prompt. A wrong code saves nothing and the
/// next login shows the same secret; the code oathtool computes from the secret read off the
/// session saves the token and the login goes on; the login after that asks for a code only.
/// A client in the C locale gets the QR as escapes (OpenSSH's doing), but the key for manual
/// entry is plain ASCII and works.
#[test]
fn forced_enrollment_over_ssh() {
    let world = World::start("default_mode = \"enroll\"\n");
    let user = TestUser::new();
    let (sshd, key) = key_then_code(&world, &user);
    let client = || sshd.client(user.name()).key(&key);
    let step = totp::steady_step();

    let wrong = client().locale("C").run(REMOTE, |prompt| {
        wrong_code(&Oath::new(&enrollment_secret(prompt)).code_for_step(step))
    });
    assert_refused(&wrong, &sshd);
    assert_eq!(wrong.prompts.len(), 1, "{}", wrong.describe());
    let c_locale = &wrong.prompts[0];
    assert!(
        c_locale.contains("\\342\\226\\210")
            && c_locale.contains("Or enter this key manually: ")
            && c_locale.contains("This setup expires in 10 minutes (at ")
            && c_locale.ends_with("Verification code: "),
        "{}",
        wrong.describe()
    );
    assert!(
        wrong
            .output
            .stderr
            .contains("Wrong code; the token was not saved."),
        "{}",
        wrong.describe()
    );
    let status = world.kronctl().status(user.name());
    assert!(
        !kronctl::flag(&status, "enrolled") && kronctl::flag(&status, "pending"),
        "{status}"
    );

    let mut token = None;
    let enrolled = client().run(REMOTE, |prompt| {
        let oath = Oath::new(&enrollment_secret(prompt));
        let code = oath.code_for_step(step);
        token = Some(oath);
        code
    });
    assert_logged_in(&enrolled, &sshd);
    let token = token.expect("the enrollment prompt was shown");
    let shown = &enrolled.prompts[0];
    for block in ['▀', '▄', '█'] {
        assert!(shown.contains(block), "no {block} in the QR:\n{shown}");
    }
    assert!(
        shown.contains("Or enter this key manually: ")
            && shown.contains("This setup expires in ")
            && shown.ends_with("Verification code: "),
        "{}",
        enrolled.describe()
    );
    assert_eq!(
        enrollment_secret(c_locale),
        token.secret(),
        "the second login showed another secret"
    );
    assert!(
        enrolled
            .output
            .stderr
            .contains("Two-factor authentication is now set up"),
        "{}",
        enrolled.describe()
    );
    assert!(kronctl::flag(
        &world.kronctl().status(user.name()),
        "enrolled"
    ));

    let next = client().run_answering(REMOTE, &token.code_for_step(step + 1));
    assert_logged_in(&next, &sshd);
    assert_code_prompt_only(&next);
}

/// Missing the enrollment deadline: the right code typed after it denies and saves nothing, and
/// the next login shows a new secret.
#[test]
fn enrollment_past_its_deadline_saves_nothing() {
    const WINDOW: u64 = 3;
    let world = World::start(&format!(
        "default_mode = \"enroll\"\nenroll_window = {WINDOW}\n"
    ));
    let user = TestUser::new();
    let (sshd, key) = key_then_code(&world, &user);

    let mut expired_secret = String::new();
    let late = sshd.client(user.name()).key(&key).run(REMOTE, |prompt| {
        expired_secret = enrollment_secret(prompt);
        let oath = Oath::new(&expired_secret);
        assert!(
            prompt.contains("This setup expires in 3 seconds"),
            "{prompt}"
        );
        // The deadline is at most WINDOW seconds after now; wait until it has surely passed.
        let past = unix_now() + WINDOW + 2;
        process::wait_for(
            "the enrollment deadline",
            std::time::Duration::from_secs(30),
            || (unix_now() >= past).then_some(()),
        );
        oath.code_now()
    });

    assert_refused(&late, &sshd);
    assert!(
        late.output.stderr.contains("took too long")
            || late.output.stderr.contains("setup expired"),
        "the person is not told why: {}",
        late.describe()
    );
    let status = world.kronctl().status(user.name());
    assert!(!kronctl::flag(&status, "enrolled"), "{status}");

    // The next login starts a new enrollment with a new secret.
    let again = sshd
        .client(user.name())
        .key(&key)
        .run_answering(REMOTE, "000000");
    assert_refused(&again, &sshd);
    assert_eq!(again.prompts.len(), 1, "{}", again.describe());
    assert_ne!(
        enrollment_secret(&again.prompts[0]),
        expired_secret,
        "the expired secret was shown again"
    );
}

/// What a refused login shows does not tell whether the account exists or has a token: an
/// unknown account, an account without a token (require mode) and a wrong code read exactly
/// the same. A throttled account is told when to retry. (Code-only keyboard-interactive, so
/// that every account reaches the code prompt.)
#[test]
fn refusals_read_the_same_for_every_account() {
    let world = World::start(&format!(
        "default_mode = \"require\"\ncontact = \"{CONTACT}\"\n\
         [throttle]\nfree_attempts = 1\nbase_delay = 3600\nmax_delay = 7200\n"
    ));
    let enrolled = TestUser::new();
    let without_token = TestUser::new();
    let unknown = random_name("kt");
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(enrolled.name());
    let sshd = Sshd::start(&code_only_stack(&world));
    let code = token.code_for_step(confirmed + 1);

    let wrong = sshd
        .client(enrolled.name())
        .run_answering(REMOTE, &wrong_code(&code));
    let no_token = sshd
        .client(without_token.name())
        .run_answering(REMOTE, "123456");
    let nobody = sshd.client(&unknown).run_answering(REMOTE, "123456");

    for run in [&wrong, &no_token, &nobody] {
        assert_refused(run, &sshd);
        assert_code_prompt_only(run);
    }
    assert!(
        wrong.output.stderr.contains("Verification failed.")
            && wrong.output.stderr.contains(CONTACT),
        "{}",
        wrong.describe()
    );
    assert_eq!(wrong.shown_anonymized(), no_token.shown_anonymized());
    assert_eq!(wrong.shown_anonymized(), nobody.shown_anonymized());

    let throttled = sshd.client(enrolled.name()).run_answering(REMOTE, &code);
    assert_refused(&throttled, &sshd);
    assert!(
        throttled.output.stderr.contains("Try again in"),
        "not told when to retry: {}",
        throttled.describe()
    );
}

/// After the free attempts an enrolled account, an account without a token and a name that
/// does not exist are all throttled alike, so guessing a few times at the code prompt does not
/// tell them apart.
#[test]
fn throttling_does_not_tell_enrolled_accounts_apart() {
    let world = World::start(&format!(
        "default_mode = \"require\"\ncontact = \"{CONTACT}\"\n\
         [throttle]\nfree_attempts = 1\nbase_delay = 3600\nmax_delay = 7200\n"
    ));
    let enrolled = TestUser::new();
    let unknown = random_name("kt");
    world.kronctl().enroll_confirmed_now(enrolled.name());
    let sshd = Sshd::start(&code_only_stack(&world));
    let twice = |user: &str| {
        sshd.client(user).run_answering(REMOTE, "000000");
        sshd.client(user).run_answering(REMOTE, "000000")
    };

    let (enrolled, nobody) = (twice(enrolled.name()), twice(&unknown));

    assert_eq!(enrolled.shown_anonymized(), nobody.shown_anonymized());
}

/// otpd stopped: the login is refused with a message saying two-factor authentication is
/// unavailable, and no code is asked that nobody could check. Back up, it works again.
#[test]
fn stopped_daemon_refuses_the_login() {
    let mut world = World::start("default_mode = \"require\"\n");
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let (sshd, key) = key_then_code(&world, &user);
    world.otpd.stop();

    let refused = sshd
        .client(user.name())
        .key(&key)
        .run_answering(REMOTE, &token.code_for_step(confirmed + 1));
    assert_refused(&refused, &sshd);
    assert!(refused.prompts.is_empty(), "{}", refused.describe());
    assert!(
        refused
            .output
            .stderr
            .contains("Two-factor authentication is unavailable"),
        "{}",
        refused.describe()
    );

    world.otpd.start_again();
    let back = sshd
        .client(user.name())
        .key(&key)
        .run_answering(REMOTE, &token.code_for_step(confirmed + 1));
    assert_logged_in(&back, &sshd);
}

/// Password then code, all through keyboard-interactive (docs/sshd.md): the password module
/// first, then kron. A wrong password ends the login before kron is asked, so someone without
/// the password cannot spend the user's failed-code allowance.
#[test]
fn password_then_code_logs_in() {
    let world = World::start("default_mode = \"require\"\n");
    let user = TestUser::new();
    let password = format!("pw-{}", random_name("x"));
    set_password(&user, &password);
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    // Debian's common-auth, then kron.
    let stack = format!(
        "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n\
         auth required pam_permit.so\n{}account required pam_permit.so\n\
         session required pam_permit.so\npassword required pam_deny.so\n",
        kron_line(&world)
    );
    let sshd = Sshd::start(&stack);
    let code = token.code_for_step(confirmed + 1);
    let answer = |password: String| {
        let code = code.clone();
        move |prompt: &str| {
            if prompt.ends_with("Password: ") {
                password.clone()
            } else {
                code.clone()
            }
        }
    };

    let bad_password = sshd
        .client(user.name())
        .run(REMOTE, answer(format!("{password}-not")));
    assert_refused(&bad_password, &sshd);
    assert_eq!(bad_password.prompts.len(), 1, "{}", bad_password.describe());
    let status = world.kronctl().status(user.name());
    assert_eq!(kronctl::number(&status, "failures"), 0, "{status}");

    let run = sshd
        .client(user.name())
        .run(REMOTE, answer(password.clone()));
    assert_logged_in(&run, &sshd);
    assert_eq!(run.prompts.len(), 2, "{}", run.describe());
    assert!(run.prompts[0].ends_with("Password: "), "{}", run.describe());
    assert!(
        run.prompts[1].ends_with("Verification code: "),
        "{}",
        run.describe()
    );
}

/// Gives `user` a password, retrying while another test's useradd/userdel holds the shadow
/// lock.
fn set_password(user: &TestUser, password: &str) {
    let input = format!("{}:{password}\n", user.name());
    let mut last = None;
    for _ in 0..40 {
        let output = process::run_with_input(&mut std::process::Command::new("chpasswd"), &input);
        if output.success() {
            return;
        }
        last = Some(output);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("chpasswd failed: {}", last.expect("one attempt").describe());
}

/// The enrollment secret shown in front of the code prompt ("Or enter this key manually").
fn enrollment_secret(prompt: &str) -> String {
    let shown = prompt
        .lines()
        .map(|line| format!("INFO: {line}\n"))
        .collect::<String>();
    Transcript::parse(&shown, "")
        .enrollment_secret()
        .unwrap_or_else(|| panic!("no enrollment secret in the prompt:\n{prompt}"))
}
