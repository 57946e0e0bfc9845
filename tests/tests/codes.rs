//! Codes through the whole chain (libpam → pam_kron.so → dbus-daemon → otpd): right, wrong,
//! replayed, raced, and other token parameters. Expected codes come from oathtool.

use kron_tests::pam::Running;
use kron_tests::totp::{self, Algorithm, wrong_code};
use kron_tests::{TestUser, World, kronctl, result};

const REQUIRE: &str = "default_mode = \"require\"\n";

/// The literal `oathtool --totp -b SECRET` code for "now" logs in.
#[test]
fn code_from_oathtool_is_accepted() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, _) = world.kronctl().enroll_confirmed_now(user.name());

    let login = world.login(user.name()).answer(&token.code_now()).run();

    login.assert_accepted().assert_prompted();
    assert!(
        login.errors().is_empty(),
        "an error was shown on success:\n{}",
        login.raw
    );
}

/// A wrong code is refused and counted; the right one still works afterwards.
#[test]
fn wrong_code_is_refused() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let right = token.code_for_step(confirmed + 1);

    let login = world.login(user.name()).answer(&wrong_code(&right)).run();

    login.assert_denied().assert_prompted();
    assert!(
        !login.errors().is_empty(),
        "no error message on a wrong code:\n{}",
        login.raw
    );
    let status = world.kronctl().status(user.name());
    assert_eq!(kronctl::number(&status, "failures"), 1, "{status}");
    world
        .login(user.name())
        .answer(&right)
        .run()
        .assert_accepted();
}

/// A code accepted once is never accepted again, nor any older one; a later step still is.
#[test]
fn replayed_code_is_refused() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let code = token.code_for_step(confirmed + 1);

    world
        .login(user.name())
        .answer(&code)
        .run()
        .assert_accepted();
    let replay = world.login(user.name()).answer(&code).run();
    replay.assert_denied();
    assert!(
        replay.mentions("already used"),
        "replay not explained:\n{}",
        replay.raw
    );

    // The step used to confirm the enrollment is older than the last accepted one.
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed))
        .run()
        .assert_denied();
    world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 2))
        .run()
        .assert_accepted();
}

/// Twenty logins racing with one code, in twenty processes: exactly one gets in.
#[test]
fn twenty_parallel_logins_with_one_code_succeed_once() {
    let world = World::start(REQUIRE);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let code = token.code_for_step(confirmed + 1);

    let running: Vec<Running> = (0..20)
        .map(|_| world.login(user.name()).answer(&code).spawn())
        .collect();
    let logins: Vec<_> = running.into_iter().map(Running::wait).collect();

    let successes = logins
        .iter()
        .filter(|login| login.result() == result::SUCCESS)
        .count();
    let everything: String = logins.iter().map(|login| login.raw.as_str()).collect();
    assert_eq!(successes, 1, "expected exactly one success:\n{everything}");
    for login in &logins {
        if login.result() != result::SUCCESS {
            login.assert_refused();
        }
    }
}

/// Tokens made with SHA256, 8 digits and 60 s steps work with oathtool's codes for the same.
#[test]
fn sha256_eight_digit_sixty_second_tokens_work() {
    let world = World::start(&format!(
        "{REQUIRE}[totp]\nalgorithm = \"SHA256\"\ndigits = 8\nperiod = 60\n"
    ));
    let user = TestUser::new();
    let enrollment = world.kronctl().json(&["enroll", user.name()]);
    let uri = kronctl::find_key(&enrollment, "uri")
        .and_then(|uri| uri.as_str())
        .unwrap_or_default()
        .to_string();
    for parameter in ["algorithm=SHA256", "digits=8", "period=60"] {
        assert!(uri.contains(parameter), "{parameter} missing from {uri}");
    }
    let token = kronctl::secret_of(&enrollment);
    let token = kron_tests::Oath::new(&token)
        .algorithm(Algorithm::Sha256)
        .digits(8)
        .period(60);
    let step = totp::steady_step_of(60);
    world
        .kronctl()
        .run(&["confirm", user.name(), &token.code_for_step(step - 1)])
        .assert_success("confirm");

    let login = world
        .login(user.name())
        .answer(&token.code_for_step(step))
        .run();

    login.assert_accepted();
    // A six-digit code is never right for an eight-digit token.
    let six = token.clone().digits(6).code_for_step(step + 1);
    world.login(user.name()).answer(&six).run().assert_denied();
}
