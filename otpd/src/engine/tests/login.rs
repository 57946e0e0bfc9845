//! The login conversation: codes, replay, throttling, grace, modes, enrollment at login.

use super::*;

#[test]
fn right_code_accepted_once_wrong_refused() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let secret = enroll(&f.engine, "alice");
    assert_eq!(
        kind(&attempt(&f.engine, "alice", "000000", NOW)),
        StepKind::Deny
    );
    let good = code(&secret, NOW);
    assert_eq!(
        kind(&attempt(&f.engine, "alice", &good, NOW)),
        StepKind::Accept
    );
    let replay = attempt(&f.engine, "alice", &good, NOW + 5);
    assert_eq!(kind(&replay), StepKind::Deny);
    assert!(replay.messages[0].text.contains("already used"));
    // The code of the step before is dead too once a later step was used.
    assert_eq!(
        kind(&attempt(&f.engine, "alice", &code(&secret, NOW - 30), NOW)),
        StepKind::Deny
    );
    assert_eq!(
        kind(&attempt(
            &f.engine,
            "alice",
            &code(&secret, NOW + 30),
            NOW + 30
        )),
        StepKind::Accept
    );
}

#[test]
fn throttling_refuses_even_right_codes_until_unlock() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let secret = enroll(&f.engine, "alice");
    for _ in 0..3 {
        assert_eq!(
            kind(&attempt(&f.engine, "alice", "000000", NOW)),
            StepKind::Deny
        );
    }
    let refused = attempt(&f.engine, "alice", &code(&secret, NOW), NOW + 1);
    assert_eq!(kind(&refused), StepKind::Throttled);
    assert!(
        refused.messages[0]
            .text
            .contains("Too many failed attempts"),
        "{refused:?}"
    );
    assert!(f.engine.status(ROOT, "alice", NOW + 1).unwrap().locked);
    assert!(
        f.engine.unlock(Caller::new(1003), "alice").unwrap(),
        "admin group may unlock"
    );
    assert_eq!(
        kind(&attempt(
            &f.engine,
            "alice",
            &code(&secret, NOW + 1),
            NOW + 1
        )),
        StepKind::Accept
    );
    // Backoff ends by itself too.
    for _ in 0..3 {
        attempt(&f.engine, "alice", "000000", NOW + 100);
    }
    assert_eq!(
        kind(&attempt(
            &f.engine,
            "alice",
            &code(&secret, NOW + 130),
            NOW + 130
        )),
        StepKind::Accept
    );
}

/// While a rule's group cannot be resolved (a directory down, a typo), accounts are refused as
/// "unavailable": so is a name that is no account, not prompted, which would tell them apart.
#[test]
fn an_unresolvable_group_refuses_unknown_names_as_it_refuses_accounts() {
    let f = fixture(Config {
        default_mode: Mode::Optional,
        groups: vec![GroupRule {
            name: "ghost-admins".into(),
            mode: Mode::Require,
            services: None,
            grace: 0,
            validate_enrollment: None,
            fallback: None,
        }],
        ..Config::default()
    });
    let known = f.engine.begin_login(ROOT, login("alice", "sshd"), NOW);
    let unknown = f.engine.begin_login(ROOT, login("nobody", "sshd"), NOW);
    let (known, unknown) = (known.unwrap_err(), unknown.unwrap_err());
    assert_eq!(known.to_string(), unknown.to_string());
}

#[test]
fn step_up_grace_stays_in_its_session_terminal_and_window() {
    let rule = |grace| GroupRule {
        name: "*".into(),
        mode: Mode::Require,
        services: Some(vec!["sudo".into()]),
        grace,
        validate_enrollment: None,
        fallback: None,
    };
    let config = Config {
        default_mode: Mode::Require,
        groups: vec![rule(300)],
        ..Config::default()
    };
    let f = fixture(config);
    let e = &f.engine;
    let secret = enroll(e, "alice");
    let sudo = |tty: &str| LoginRequest {
        user: "alice".into(),
        service: "sudo".into(),
        rhost: String::new(),
        tty: tty.into(),
    };
    let here = Caller {
        uid: 0,
        session: Some(42),
    };
    let step = e.begin_login(here, sudo("/dev/pts/1"), NOW).unwrap();
    assert_eq!(kind(&step), StepKind::Prompt, "the first sudo asks");
    assert_eq!(
        kind(
            &e.answer(here, &step.handle, &code(&secret, NOW), NOW)
                .unwrap()
        ),
        StepKind::Accept
    );
    assert_eq!(
        kind(&e.begin_login(here, sudo("/dev/pts/1"), NOW + 299).unwrap()),
        StepKind::Accept,
        "within grace"
    );
    assert_eq!(
        kind(&e.begin_login(here, sudo("/dev/pts/1"), NOW + 300).unwrap()),
        StepKind::Prompt,
        "window over"
    );
    assert_eq!(
        kind(&e.begin_login(here, sudo("/dev/pts/2"), NOW + 1).unwrap()),
        StepKind::Prompt,
        "other terminal"
    );
    let other_session = Caller {
        uid: 0,
        session: Some(43),
    };
    assert_eq!(
        kind(
            &e.begin_login(other_session, sudo("/dev/pts/1"), NOW + 1)
                .unwrap()
        ),
        StepKind::Prompt
    );
    assert_eq!(
        kind(
            &e.begin_login(Caller::new(0), sudo("/dev/pts/1"), NOW + 1)
                .unwrap()
        ),
        StepKind::Prompt
    );
    let sshd = LoginRequest {
        service: "sshd".into(),
        ..sudo("/dev/pts/1")
    };
    assert_eq!(
        kind(&e.begin_login(here, sshd, NOW + 1).unwrap()),
        StepKind::Prompt,
        "rule without grace"
    );
    // Off by default.
    let off = fixture(Config {
        default_mode: Mode::Require,
        groups: vec![rule(0)],
        ..Config::default()
    });
    let secret = enroll(&off.engine, "alice");
    let step = off
        .engine
        .begin_login(here, sudo("/dev/pts/1"), NOW)
        .unwrap();
    off.engine
        .answer(here, &step.handle, &code(&secret, NOW), NOW)
        .unwrap();
    assert_eq!(
        kind(
            &off.engine
                .begin_login(here, sudo("/dev/pts/1"), NOW + 1)
                .unwrap()
        ),
        StepKind::Prompt
    );
}

#[test]
fn modes_and_per_service_rules() {
    let config = Config {
        default_mode: Mode::Optional,
        groups: vec![
            GroupRule {
                name: "wheel".into(),
                mode: Mode::Require,
                services: Some(vec!["sudo".into()]),
                grace: 0,
                validate_enrollment: None,
                fallback: None,
            },
            GroupRule {
                name: "users".into(),
                mode: Mode::Exempt,
                services: None,
                grace: 0,
                validate_enrollment: None,
                fallback: None,
            },
        ],
        ..Config::default()
    };
    let f = fixture(config);
    let e = &f.engine;
    // alice: require for sudo, optional elsewhere; no token yet.
    assert_eq!(
        kind(&e.begin_login(ROOT, login("alice", "sshd"), NOW).unwrap()),
        StepKind::Skip
    );
    let sudo = e.begin_login(ROOT, login("alice", "sudo"), NOW).unwrap();
    assert_eq!(
        kind(&sudo),
        StepKind::Prompt,
        "no-token users are prompted like everyone"
    );
    let denied = e.answer(ROOT, &sudo.handle, "123456", NOW).unwrap();
    assert_eq!(kind(&denied), StepKind::Deny);
    assert!(
        denied.messages[1]
            .text
            .contains("your system administrator")
    );
    // bob: exempt everywhere, even with a token.
    enroll(e, "bob");
    assert_eq!(
        kind(&e.begin_login(ROOT, login("bob", "sudo"), NOW).unwrap()),
        StepKind::Skip
    );
    // root: optional, enrolled → asked.
    enroll(e, "root");
    assert_eq!(
        kind(&e.begin_login(ROOT, login("root", "login"), NOW).unwrap()),
        StepKind::Prompt
    );
}

#[test]
fn unknown_user_reads_like_a_wrong_code() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let secret = enroll(&f.engine, "alice");
    // Each answer writes, so each reply waits for the disk alike (a reply that waited for
    // none would tell an unknown name by its speed).
    let (unknown, unknown_wrote) =
        crate::store::own_writes(|| attempt(&f.engine, "nobody", "123456", NOW));
    let (wrong, wrong_wrote) =
        crate::store::own_writes(|| attempt(&f.engine, "alice", "123456", NOW));
    assert!(
        unknown_wrote > 0 && wrong_wrote > 0,
        "{unknown_wrote} {wrong_wrote}"
    );
    assert_eq!(kind(&unknown), StepKind::Deny);
    assert_eq!(unknown.messages, wrong.messages);
    assert!(
        f.engine.store.get("nobody").unwrap().is_none(),
        "unknown names create no records"
    );
    let _ = secret;
}

/// An answer that arrives throttled writes nothing for an account (its record is unchanged),
/// so nor does one for a name that is no account: a paced write there alone would tell them
/// apart by a flush.
#[test]
fn a_throttled_answer_writes_alike_for_accounts_and_unknown_names() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        throttle: kron_common::config::ThrottleConfig {
            free_attempts: 1,
            base_delay: 3600,
            max_delay: 7200,
        },
        ..Config::default()
    });
    enroll(&f.engine, "alice");
    let wrote = |user: &str| {
        let first = f
            .engine
            .begin_login(ROOT, login(user, "sshd"), NOW)
            .unwrap();
        let second = f
            .engine
            .begin_login(ROOT, login(user, "sshd"), NOW)
            .unwrap();
        f.engine.answer(ROOT, &first.handle, "123456", NOW).unwrap();
        let (step, wrote) = crate::store::own_writes(|| {
            f.engine
                .answer(ROOT, &second.handle, "123456", NOW)
                .unwrap()
        });
        assert_eq!(kind(&step), StepKind::Throttled, "{user}");
        wrote
    };
    assert_eq!(wrote("nobody"), wrote("alice"));
}

#[test]
fn aliases_of_one_account_share_its_token() {
    let f = fixture(Config::default());
    let e = &f.engine;
    let secret = enroll(e, "alice");
    // SSSD-style: another spelling NSS resolves to the same account.
    let mut directory = FakeDirectory::default()
        .with_user("root", 0, &["root"])
        .with_user("alice", 1001, &["wheel"]);
    let account = directory.users["alice"].clone();
    directory.users.insert("ALICE".into(), account);
    let Fixture { engine, _dir } = f;
    let e = Engine {
        directory: Box::new(directory),
        ..engine
    };
    let step = e.begin_login(ROOT, login("ALICE", "sshd"), NOW).unwrap();
    assert_eq!(
        kind(&step),
        StepKind::Prompt,
        "optional mode still asks: the token is found"
    );
    assert_eq!(
        kind(
            &e.answer(ROOT, &step.handle, &code(&secret, NOW), NOW)
                .unwrap()
        ),
        StepKind::Accept
    );
    assert!(matches!(
        e.enroll(ROOT, "ALICE", "", NOW),
        Err(Error::Conflict(_))
    ));
    assert!(e.store.get("ALICE").unwrap().is_none());
}

#[test]
fn throttling_reads_the_same_with_or_without_account_or_token() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    enroll(&f.engine, "alice");
    // alice has a token, bob has none, nobody does not exist.
    for user in ["alice", "bob", "nobody"] {
        for _ in 0..3 {
            assert_eq!(
                kind(&attempt(&f.engine, user, "000000", NOW)),
                StepKind::Deny
            );
        }
    }
    let throttled: Vec<Step> = ["alice", "bob", "nobody"]
        .iter()
        .map(|user| attempt(&f.engine, user, "000000", NOW + 1))
        .collect();
    for step in &throttled {
        assert_eq!(kind(step), StepKind::Throttled, "{step:?}");
        assert_eq!(step.messages, throttled[0].messages);
    }
    assert!(
        f.engine.store.get("nobody").unwrap().is_none(),
        "still no record"
    );
}

#[test]
fn enroll_mode_shows_qr_and_saves_only_on_the_right_code_before_the_deadline() {
    let f = fixture(Config {
        default_mode: Mode::Enroll,
        ..Config::default()
    });
    let e = &f.engine;
    let first = e.begin_login(ROOT, login("bob", "sshd"), NOW).unwrap();
    assert_eq!(kind(&first), StepKind::Prompt);
    let texts: Vec<&str> = first.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains('▀') || t.contains('▄')),
        "QR shown"
    );
    let key_line = texts
        .iter()
        .find(|t| t.starts_with("Or enter this key manually: "))
        .unwrap();
    let base32: String = key_line["Or enter this key manually: ".len()..]
        .split_whitespace()
        .collect();
    let secret = totp_rs::Secret::try_from_base32(&base32)
        .unwrap()
        .as_bytes()
        .to_vec();
    // Wrong code: nothing saved, and the same QR comes back.
    assert_eq!(
        kind(&e.answer(ROOT, &first.handle, "000000", NOW).unwrap()),
        StepKind::Deny
    );
    assert!(!e.status(ROOT, "bob", NOW).unwrap().enrolled);
    let again = e.begin_login(ROOT, login("bob", "sshd"), NOW + 10).unwrap();
    assert_eq!(
        again.messages[3], first.messages[3],
        "same secret offered again"
    );
    // Right code: saved, login passes, and the code cannot be replayed.
    let right = code(&secret, NOW + 10);
    let done = e.answer(ROOT, &again.handle, &right, NOW + 10).unwrap();
    assert_eq!(kind(&done), StepKind::Accept);
    assert!(e.status(ROOT, "bob", NOW + 10).unwrap().enrolled);
    assert_eq!(kind(&attempt(e, "bob", &right, NOW + 11)), StepKind::Deny);
    // A missed deadline saves nothing.
    let late = e.begin_login(ROOT, login("alice", "sshd"), NOW).unwrap();
    let window = e.config.enroll_window;
    let late_secret = {
        let line = late
            .messages
            .iter()
            .find(|m| m.text.starts_with("Or enter"))
            .unwrap();
        let b32: String = line.text["Or enter this key manually: ".len()..]
            .split_whitespace()
            .collect();
        totp_rs::Secret::try_from_base32(&b32)
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let step = e
        .answer(
            ROOT,
            &late.handle,
            &code(&late_secret, NOW + window),
            NOW + window,
        )
        .unwrap();
    assert_eq!(kind(&step), StepKind::Deny);
    assert!(!e.status(ROOT, "alice", NOW + window).unwrap().enrolled);
}

#[test]
fn only_the_caller_that_began_a_login_has_its_record_looked_at_for_a_quick_answer() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let secret = enroll(&f.engine, "alice");
    f.engine
        .recovery_codes(ROOT, "alice", "", NOW)
        .expect("recovery codes");
    let step = f
        .engine
        .begin_login(ALICE, login("alice", "sudo"), NOW)
        .unwrap();
    assert_eq!(kind(&step), StepKind::Prompt);
    // Eight digits may be one of alice's recovery codes: her own answer goes to a blocking
    // thread, which only her record could tell.
    assert!(!f.engine.answer_is_quick(ALICE, &step.handle, "12345678"));
    assert!(
        f.engine
            .answer_is_quick(ALICE, &step.handle, &code(&secret, NOW))
    );
    // Anyone else's is refused at once, whatever alice's record holds.
    assert!(f.engine.answer_is_quick(BOB, &step.handle, "12345678"));
    assert!(matches!(
        f.engine.answer(BOB, &step.handle, "12345678", NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(f.engine.answer_is_quick(ALICE, "no-such-login", "12345678"));
}
