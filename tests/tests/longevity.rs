//! A long-lived libpam host (a screen locker, a display manager, sshd's monitor) must not
//! collect threads or file descriptors: 1000 logins in one process leave both unchanged.

use kron_tests::users::random_name;
use kron_tests::{TestGroup, TestUser, World, result};

#[test]
fn thousand_logins_in_one_process_leave_threads_and_fds_unchanged() {
    let exempt = TestGroup::new();
    let world = World::start(&format!(
        "default_mode = \"require\"\n[[group]]\nname = \"{}\"\nmode = \"exempt\"\n",
        exempt.name()
    ));
    let skipped = TestUser::with_groups(&[&exempt]);
    let enrolled: Vec<TestUser> = (0..3).map(|_| TestUser::new()).collect();
    let tokens: Vec<_> = enrolled
        .iter()
        .map(|user| world.kronctl().enroll_confirmed_now(user.name()))
        .collect();
    let unknown = random_name("kx");
    const SKIPS: u64 = 1000;
    const DENIALS: u64 = 100;

    // In one pam-host process: a real accepted login for each enrolled user (first, while
    // their codes are fresh), 1000 skip logins (exempt), then 100 refused logins of an
    // unknown user (prompt + answer).
    let mut login = world.login(enrolled[0].name());
    for user in &enrolled[1..] {
        login = login.then_user(user.name());
    }
    for (token, confirmed) in &tokens {
        login = login.answer(&token.code_for_step(confirmed + 1));
    }
    login = login
        .then_user(skipped.name())
        .repeat(SKIPS)
        .then_user(&unknown)
        .repeat(DENIALS)
        .quiet();
    for _ in 0..DENIALS {
        login = login.answer("000000");
    }
    let run = login.run();

    let expected = enrolled.len() as u64 + SKIPS + DENIALS;
    assert_eq!(run.results.len() as u64, expected, "{}", run.raw);
    let (accepts, rest) = run.results.split_at(enrolled.len());
    let (skips, denials) = rest.split_at(SKIPS as usize);
    assert!(
        accepts.iter().all(|r| r == result::SUCCESS),
        "an accept login failed:\n{}",
        run.raw
    );
    assert!(
        skips.iter().all(|r| r == result::SUCCESS),
        "a skip login failed:\n{}",
        run.raw
    );
    assert!(
        // After three failures the unknown name is throttled like an account (PAM_MAXTRIES).
        denials
            .iter()
            .all(|r| r == result::AUTH_ERR || r == result::MAXTRIES),
        "an unknown user was not refused:\n{}",
        run.raw
    );

    let tasks = run.tasks.expect("thread counts printed");
    let fds = run.fds.expect("fd counts printed");
    assert_eq!(
        tasks.baseline, 1,
        "pam-host starts with one thread: {tasks:?}"
    );
    assert_eq!(
        tasks.after_all, tasks.baseline,
        "threads left behind: {tasks:?}"
    );
    assert_eq!(
        fds.after_all, fds.after_first,
        "fds leaked over {expected} logins: {fds:?}"
    );
}
