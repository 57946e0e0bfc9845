//! End to end through a stock PAM application, pamtester, in a private mount namespace where a
//! test /etc/pam.d is bind-mounted, so the machine's own configuration stays untouched. sudo
//! and sshd have their own files: `sudo.rs` and `sshd.rs`.

use std::path::Path;

use kron_tests::namespace::PrivateMounts;
use kron_tests::pam::Stack;
use kron_tests::process::{self, Identity};
use kron_tests::totp::wrong_code;
use kron_tests::{TestUser, World};

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
