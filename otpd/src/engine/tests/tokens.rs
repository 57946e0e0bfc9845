//! Token management: who may enroll, confirm, reset and see whom; malformed input; expiry.

use super::*;
use kron_proto::{MAX_FIELD_LEN, MAX_RESPONSE_LEN};

#[test]
fn admins_cannot_act_on_root_or_other_admins() {
    let f = fixture(Config::default());
    let e = &f.engine;
    enroll(e, "root");
    let admin = Caller::new(1003);
    assert!(matches!(
        e.reset(admin, "root"),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        e.recovery_codes(admin, "root", "", NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(e.enroll(admin, "admin", "", NOW).is_ok(), "their own");
    assert!(e.enroll(admin, "bob", "", NOW).is_ok());
    assert!(e.reset(ROOT, "root").unwrap());
}

/// What replaces or opens a second factor without asking for it (reset, unlock, a contact, a
/// sent enrollment, a link) is not for an admin's own account: a session of theirs (or malware
/// in it, with the password) would give itself a new token and pass sudo. Root may.
#[test]
fn admins_cannot_reset_or_open_their_own_token() {
    let f = fixture(Config::default());
    let e = &f.engine;
    let admin = Caller::new(1003);
    enroll(e, "admin");
    let denied = |result: Result<bool>| matches!(result, Err(Error::AccessDenied(_)));
    assert!(denied(e.reset(admin, "admin")));
    assert!(denied(e.unlock(admin, "admin")));
    assert!(denied(e.set_contact(
        admin,
        "admin",
        "email",
        "x@example.com"
    )));
    assert!(denied(e.revoke_link(admin, "admin")));
    assert!(
        e.set_contact(admin, "bob", "email", "bob@example.com")
            .unwrap()
    );
    assert!(e.reset(ROOT, "admin").unwrap());
}

#[test]
fn confirming_codes_are_throttled_and_kronctl_enrollments_not_shown_at_login() {
    let f = fixture(Config {
        default_mode: Mode::Enroll,
        ..Config::default()
    });
    let e = &f.engine;
    let enrollment = e.enroll(ROOT, "bob", "", NOW).unwrap();
    let step = e.begin_login(ROOT, login("bob", "sshd"), NOW).unwrap();
    assert!(
        !step
            .messages
            .iter()
            .any(|m| m.text.contains(&enrollment.secret[..4])),
        "the admin's pending QR is not shown to whoever logs in"
    );
    for _ in 0..3 {
        assert!(matches!(
            e.confirm(ROOT, "bob", "000000", NOW),
            Err(Error::Rejected(_) | Error::NotFound(_))
        ));
    }
    assert!(
        e.status(ROOT, "bob", NOW).unwrap().locked,
        "wrong confirming codes count"
    );
}

#[test]
fn callers_act_only_within_their_rights() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let e = &f.engine;
    enroll(e, "bob");
    // A user may check their own login (screen locker) but not another's, known or not.
    assert!(
        e.begin_login(ALICE, login("alice", "xscreensaver"), NOW)
            .is_ok()
    );
    assert!(matches!(
        e.begin_login(ALICE, login("bob", "sshd"), NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        e.begin_login(ALICE, login("nobody", "sshd"), NOW),
        Err(Error::AccessDenied(_))
    ));
    // An answer from another caller is refused.
    let step = e.begin_login(ROOT, login("bob", "sshd"), NOW).unwrap();
    assert!(matches!(
        e.answer(ALICE, &step.handle, "123456", NOW),
        Err(Error::AccessDenied(_))
    ));
    // Management.
    assert!(matches!(e.reset(ALICE, "bob"), Err(Error::AccessDenied(_))));
    assert!(matches!(
        e.unlock(ALICE, "bob"),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(e.list(ALICE, NOW), Err(Error::AccessDenied(_))));
    assert!(matches!(
        e.status(ALICE, "bob", NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        e.enroll(ALICE, "bob", "", NOW),
        Err(Error::AccessDenied(_))
    ));
    assert_eq!(e.status(ALICE, "", NOW).unwrap().user, "alice");
    // Self-enrollment only while holding no confirmed token; never replacing one.
    assert!(e.enroll(ALICE, "", "", NOW).is_ok());
    assert!(matches!(
        e.enroll(BOB, "", "", NOW),
        Err(Error::Conflict(_))
    ));
    assert!(
        matches!(e.enroll(ROOT, "bob", "", NOW), Err(Error::Conflict(_))),
        "even root resets first"
    );
    assert!(e.reset(Caller::new(1003), "bob").unwrap());
    assert!(e.enroll(BOB, "", "", NOW).is_ok());
    assert_eq!(e.list(ROOT, NOW).unwrap().len(), 2);
}

#[test]
fn malformed_input_is_refused_without_changing_state() {
    let f = fixture(Config {
        default_mode: Mode::Require,
        ..Config::default()
    });
    let e = &f.engine;
    enroll(e, "alice");
    let before = e.store.get("alice").unwrap();
    for user in ["", "a b", "x:y", &"a".repeat(300)] {
        assert!(matches!(
            e.begin_login(ROOT, login(user, "sshd"), NOW),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            e.reset(ROOT, user),
            Err(Error::InvalidArgument(_))
        ));
    }
    let mut long = login("alice", "sshd");
    long.rhost = "r".repeat(MAX_FIELD_LEN + 1);
    assert!(matches!(
        e.begin_login(ROOT, long, NOW),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.answer(ROOT, "nohandle", &"1".repeat(MAX_RESPONSE_LEN + 1), NOW),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        kind(&e.answer(ROOT, "nohandle", "123456", NOW).unwrap()),
        StepKind::Deny
    );
    assert!(matches!(
        e.confirm(ROOT, "alice", "12", NOW),
        Err(Error::Conflict(_))
    ));
    assert_eq!(e.store.get("alice").unwrap(), before);
}

#[test]
fn pending_enrollment_expires() {
    let f = fixture(Config::default());
    let e = &f.engine;
    let enrollment = e.enroll(ROOT, "bob", "", NOW).unwrap();
    assert!(e.status(ROOT, "bob", NOW).unwrap().pending);
    let secret = totp_rs::Secret::try_from_base32(&enrollment.secret)
        .unwrap()
        .as_bytes()
        .to_vec();
    let at = enrollment.expires;
    assert!(!e.status(ROOT, "bob", at).unwrap().pending);
    assert!(matches!(
        e.confirm(ROOT, "bob", &code(&secret, at), at),
        Err(Error::NotFound(_))
    ));
    assert!(!e.status(ROOT, "bob", at).unwrap().enrolled);
}
