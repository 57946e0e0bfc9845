//! Throttling bounds an online guesser: after the free attempts even the right code is refused
//! while the backoff lasts, and an admin's `kronctl unlock` ends it.

use kron_tests::totp::wrong_code;
use kron_tests::{TestUser, World, kronctl};

/// A backoff long enough (an hour) that it cannot run out while the test runs.
const CONFIG: &str = "default_mode = \"require\"\n[throttle]\nfree_attempts = 3\nbase_delay = 3600\nmax_delay = 7200\n";

#[test]
fn backoff_refuses_even_the_right_code_until_unlocked() {
    let world = World::start(CONFIG);
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());
    let right = token.code_for_step(confirmed + 1);

    for _ in 0..3 {
        world
            .login(user.name())
            .answer(&wrong_code(&right))
            .run()
            .assert_denied();
    }
    let status = world.kronctl().status(user.name());
    assert!(
        kronctl::flag(&status, "locked"),
        "not locked after the free attempts: {status}"
    );
    assert_eq!(kronctl::number(&status, "failures"), 3, "{status}");
    assert!(
        kronctl::number(&status, "locked_until") > kron_tests::totp::unix_now(),
        "{status}"
    );

    let throttled = world.login(user.name()).answer(&right).run();
    throttled.assert_throttled();
    assert!(
        throttled.mentions("too many"),
        "throttling not explained:\n{}",
        throttled.raw
    );

    let unlock = world.kronctl().json(&["unlock", user.name()]);
    assert_eq!(unlock["changed"], serde_json::Value::Bool(true), "{unlock}");
    let status = world.kronctl().status(user.name());
    assert!(
        !kronctl::flag(&status, "locked"),
        "still locked after unlock: {status}"
    );
    assert_eq!(kronctl::number(&status, "failures"), 0, "{status}");

    // The refused attempt did not use the step up: the right code works now.
    world
        .login(user.name())
        .answer(&right)
        .run()
        .assert_accepted();
}

/// Throttling is per user: one user's failures do not lock another.
#[test]
fn throttling_is_per_user() {
    let world = World::start(CONFIG);
    let guessed = TestUser::new();
    let other = TestUser::new();
    let (guessed_token, _) = world.kronctl().enroll_confirmed_now(guessed.name());
    let (other_token, other_confirmed) = world.kronctl().enroll_confirmed_now(other.name());

    for _ in 0..4 {
        world
            .login(guessed.name())
            .answer(&wrong_code(&guessed_token.code_now()))
            .run()
            .assert_refused();
    }
    world
        .login(other.name())
        .answer(&other_token.code_for_step(other_confirmed + 1))
        .run()
        .assert_accepted();
}
