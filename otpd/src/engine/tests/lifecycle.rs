//! Recovery codes, backup and restore, migration imports, token export.

use super::{NOW, ROOT, code, enroll, fixture, fixture_keyed, kind};
use crate::error::Error;
use crate::policy::LoginRequest;
use crate::policy::authz::Caller;
use kron_common::config::{Config, Mode};
use kron_proto::{StepKind, TokenImport};

const ALICE: Caller = Caller::new(1001);

fn login(engine: &super::Engine, answer: &str, now: u64) -> kron_proto::Step {
    let request = LoginRequest {
        user: "alice".into(),
        service: "sshd".into(),
        ..LoginRequest::default()
    };
    let step = engine.begin_login(ROOT, request, now).unwrap();
    if kind(&step) != StepKind::Prompt {
        return step;
    }
    engine.answer(ROOT, &step.handle, answer, now).unwrap()
}

#[test]
fn recovery_codes_work_once_and_die_on_renewal() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let e = &f.engine;
    let secret = enroll(e, "alice");
    assert!(
        matches!(
            e.recovery_codes(ALICE, "", "000000", NOW),
            Err(Error::Rejected(_))
        ),
        "self needs a code"
    );
    let first = e
        .recovery_codes(ALICE, "", &code(&secret, NOW), NOW)
        .unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(e.status(ROOT, "alice", NOW).unwrap().recovery_codes, 10);
    assert_eq!(kind(&login(e, &first[0], NOW + 1)), StepKind::Accept);
    assert_eq!(
        kind(&login(e, &first[0], NOW + 2)),
        StepKind::Deny,
        "single use"
    );
    assert_eq!(e.status(ROOT, "alice", NOW).unwrap().recovery_codes, 9);
    let second = e.recovery_codes(ROOT, "alice", "", NOW + 3).unwrap();
    assert_eq!(
        kind(&login(e, &first[1], NOW + 4)),
        StepKind::Deny,
        "old set died"
    );
    // Three failures in a row (a wrong proof, the replay, the dead code) set a 30 s wait.
    assert_eq!(kind(&login(e, &second[1], NOW + 5)), StepKind::Throttled);
    assert_eq!(kind(&login(e, &second[1], NOW + 34)), StepKind::Accept);
    assert!(
        matches!(
            e.recovery_codes(ROOT, "bob", "", NOW),
            Err(Error::Conflict(_))
        ),
        "no token"
    );
}

#[test]
fn export_wipe_import_restores_logins_and_used_steps() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let e = &f.engine;
    let secret = enroll(e, "alice");
    let used = code(&secret, NOW);
    assert_eq!(kind(&login(e, &used, NOW)), StepKind::Accept);
    assert!(matches!(
        e.export(ALICE, "", "pw", NOW),
        Err(Error::AccessDenied(_))
    ));
    e.set_contact(ROOT, "bob", "sms", "+4915123456712").unwrap();
    let file = e.export(ROOT, "", "a pass phrase", NOW).unwrap();
    e.reset(ROOT, "alice").unwrap();
    e.set_contact(ROOT, "bob", "sms", "").unwrap();
    assert!(e.import(ROOT, &file, "wrong", false, false).is_err());
    assert!(
        e.import(ROOT, &file[..file.len() / 2], "a pass phrase", false, false)
            .is_err()
    );
    assert!(
        !e.status(ROOT, "alice", NOW).unwrap().enrolled,
        "failed imports change nothing"
    );
    let dry = e.import(ROOT, &file, "a pass phrase", false, true).unwrap();
    assert_eq!(dry[0].outcome, "imported");
    assert!(
        !e.status(ROOT, "alice", NOW).unwrap().enrolled,
        "dry run writes nothing"
    );
    let done = e
        .import(ROOT, &file, "a pass phrase", false, false)
        .unwrap();
    assert_eq!(
        (done[0].user.as_str(), done[0].outcome.as_str()),
        ("alice", "imported")
    );
    assert_eq!(
        e.status(ROOT, "bob", NOW).unwrap().phone,
        "+49 *** ** 12",
        "contacts travel with exports"
    );
    assert_eq!(
        kind(&login(e, &used, NOW + 1)),
        StepKind::Deny,
        "used step stays used"
    );
    assert_eq!(
        kind(&login(e, &code(&secret, NOW + 30), NOW + 30)),
        StepKind::Accept
    );
    let again = e
        .import(ROOT, &file, "a pass phrase", false, false)
        .unwrap();
    assert_eq!(again[0].outcome, "skipped");
    assert_eq!(
        e.import(ROOT, &file, "a pass phrase", true, false).unwrap()[0].outcome,
        "replaced"
    );
    assert_eq!(
        kind(&login(e, &code(&secret, NOW + 30), NOW + 31)),
        StepKind::Deny,
        "replacing with an older export keeps the steps used since"
    );
}

#[test]
fn migrated_tokens_keep_secret_used_steps_and_scratch_codes() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let e = &f.engine;
    let secret = b"0123456789".to_vec(); // 80 bits, as google-authenticator makes them
    let token = TokenImport {
        user: "alice".into(),
        secret: secret.clone(),
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        last_step: NOW / 30,
        recovery_codes: vec!["12345678".into()],
    };
    let bad = TokenImport {
        user: "bob".into(),
        digits: 7,
        ..token.clone()
    };
    assert!(
        e.import_tokens(ROOT, vec![token.clone(), bad], false, false, NOW)
            .is_err()
    );
    assert!(
        !e.status(ROOT, "alice", NOW).unwrap().enrolled,
        "one bad entry stops the whole import"
    );
    assert_eq!(
        e.import_tokens(ROOT, vec![token.clone()], false, false, NOW)
            .unwrap()[0]
            .outcome,
        "imported"
    );
    assert_eq!(
        kind(&login(e, &code(&secret, NOW), NOW)),
        StepKind::Deny,
        "step used before stays used"
    );
    assert_eq!(
        kind(&login(e, &code(&secret, NOW + 30), NOW + 30)),
        StepKind::Accept
    );
    assert_eq!(
        kind(&login(e, "12345678", NOW + 31)),
        StepKind::Accept,
        "scratch code"
    );
    assert_eq!(kind(&login(e, "12345678", NOW + 32)), StepKind::Deny);
    assert!(matches!(
        e.import_tokens(ALICE, vec![token], false, false, NOW),
        Err(Error::AccessDenied(_))
    ));
}

#[test]
fn token_export_needs_config_and_a_code() {
    let off = fixture(Config::default());
    let secret = enroll(&off.engine, "alice");
    assert!(matches!(
        off.engine.export_token(ALICE, &code(&secret, NOW), NOW),
        Err(Error::AccessDenied(_))
    ));
    let on = fixture(Config {
        allow_token_export: true,
        ..Config::default()
    });
    let secret = enroll(&on.engine, "alice");
    assert!(matches!(
        on.engine.export_token(ALICE, "000000", NOW),
        Err(Error::Rejected(_))
    ));
    let uri = on
        .engine
        .export_token(ALICE, &code(&secret, NOW), NOW)
        .unwrap();
    assert!(uri.starts_with("otpauth://totp/"));
}

#[test]
fn recovery_codes_move_with_an_export_to_a_host_with_another_key() {
    let config = Config {
        default_mode: Mode::Require,
        ..Config::default()
    };
    let here = fixture(config.clone());
    enroll(&here.engine, "alice");
    let codes = here.engine.recovery_codes(ROOT, "alice", "", NOW).unwrap();
    let file = here.engine.export(ROOT, "", "a pass phrase", NOW).unwrap();
    let there = fixture_keyed(config, 11);
    there
        .engine
        .import(ROOT, &file, "a pass phrase", false, false)
        .unwrap();
    assert_eq!(
        kind(&login(&there.engine, &codes[0], NOW + 1)),
        StepKind::Accept
    );
    assert_eq!(
        kind(&login(&there.engine, &codes[0], NOW + 2)),
        StepKind::Deny
    );
}
