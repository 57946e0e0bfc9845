//! End to end through stock PAM applications: pamtester, sudo and sshd, each in a private
//! mount namespace where a test /etc/pam.d (and /etc/sudoers) is bind-mounted, so the machine's
//! own configuration stays untouched.

use std::path::Path;

use kron_tests::namespace::PrivateMounts;
use kron_tests::pam::Stack;
use kron_tests::process::{self, Identity};
use kron_tests::sshd::Sshd;
use kron_tests::totp::wrong_code;
use kron_tests::{TestGroup, TestUser, World, scratch};

const REQUIRE: &str = "default_mode = \"require\"\n";

/// pamtester (libpam's misc_conv reading the code from stdin) through a deployment-shaped
/// stack: pam_kron required, then pam_permit standing in for the rest.
#[test]
fn pamtester_authenticates_with_the_right_code_only() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let pam = world.stack("kron-pamtester", Stack::ThenPermit);
    let pamtester = |code: &str| {
        let mut command = PrivateMounts::new()
            .bind(pam.dir(), Path::new("/etc/pam.d"))
            .command(&Identity::Root, "pamtester");
        command.args(["-v", pam.service(), user.name(), "authenticate"]);
        process::run_with_input(&mut command, &format!("{code}\n"))
    };

    let right = token.code_for_step(confirmed + 1);
    let wrong = pamtester(&wrong_code(&token.code_for_step(confirmed + 2)));
    wrong.assert_failure("pamtester with a wrong code");
    let ok = pamtester(&right);
    ok.assert_success("pamtester with the right code");
    assert!(
        ok.stdout.contains("successfully authenticated")
            || ok.stderr.contains("successfully authenticated")
    );
    pamtester(&right).assert_failure("pamtester replaying the code");
    assert!(
        !Path::new("/etc/pam.d").join(pam.service()).exists(),
        "the machine's /etc/pam.d was changed"
    );
}

/// sudo, run by a test user, asks for the code through its own conversation. A group rule
/// limited to the sudo service makes the code required there.
#[test]
fn sudo_requires_the_code() {
    let admins = TestGroup::new();
    let world = World::start(&format!(
        "default_mode = \"exempt\"\n[[group]]\nname = \"{}\"\nmode = \"require\"\nservices = [\"sudo\"]\n",
        admins.name()
    ));
    let user = TestUser::with_groups(&[&admins]);
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());

    let etc = scratch::public_dir("kron-sudo.");
    let pam_dir = etc.path().join("pam.d");
    std::fs::create_dir(&pam_dir).expect("mkdir pam.d");
    let kron_line = kron_tests::pam::stack_text(
        Stack::Alone,
        &[&format!("bus={}", world.bus.address()), "timeout=30"],
    );
    let sudo_pam =
        format!("{kron_line}account required pam_permit.so\nsession required pam_permit.so\n");
    scratch::write_file(&pam_dir.join("sudo"), &sudo_pam, 0o644);
    let sudoers = etc.path().join("sudoers");
    let rules = format!(
        "Defaults !lecture\nDefaults passwd_tries=1\nDefaults timestamp_timeout=0\nDefaults !fqdn\n\
         root ALL=(ALL:ALL) ALL\n{} ALL=(root) /usr/bin/id\n",
        user.name()
    );
    scratch::write_file(&sudoers, &rules, 0o440);
    let mounts = PrivateMounts::new()
        .bind(&pam_dir, Path::new("/etc/pam.d"))
        .bind(&sudoers, Path::new("/etc/sudoers"));
    let sudo = |code: &str| {
        let mut command = mounts.command(&user.identity(), "sudo");
        command.args(["-S", "-u", "root", "/usr/bin/id", "-u"]);
        process::run_with_input(&mut command, &format!("{code}\n"))
    };

    let wrong = sudo(&wrong_code(&token.code_for_step(confirmed + 1)));
    wrong.assert_failure("sudo with a wrong code");
    let ok = sudo(&token.code_for_step(confirmed + 1));
    ok.assert_success("sudo with the right code");
    assert_eq!(ok.stdout.trim(), "0", "{}", ok.describe());
    assert!(
        ok.stderr.contains("Verification code"),
        "kron's prompt not shown: {}",
        ok.describe()
    );
}

/// sshd on 127.0.0.1 with kron as its only auth module, and the OpenSSH client answering the
/// keyboard-interactive prompt through SSH_ASKPASS.
#[test]
fn ssh_keyboard_interactive_requires_the_code() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let kron_line = kron_tests::pam::stack_text(
        Stack::Alone,
        &[&format!("bus={}", world.bus.address()), "timeout=30"],
    );
    let sshd = Sshd::start(&format!(
        "{kron_line}account required pam_permit.so\nsession required pam_permit.so\npassword required pam_deny.so\n"
    ));

    let (wrong, _) = sshd.ssh(
        user.name(),
        &wrong_code(&token.code_for_step(confirmed + 1)),
        "echo kron-ok",
    );
    assert!(
        !wrong.stdout.contains("kron-ok"),
        "logged in with a wrong code: {}\n{}",
        wrong.describe(),
        sshd.log()
    );

    let (ok, prompts) = sshd.ssh(
        user.name(),
        &token.code_for_step(confirmed + 1),
        "echo kron-ok",
    );
    assert!(
        ok.stdout.contains("kron-ok"),
        "{}\n--- sshd ---\n{}",
        ok.describe(),
        sshd.log()
    );
    assert!(
        prompts.contains("Verification code"),
        "kron's prompt not asked: {prompts:?}"
    );
}
