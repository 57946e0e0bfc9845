//! One-time enrollment links: made by admins, shown and confirmed by the token alone, dead after
//! expiry, use, revocation, replacement or five wrong codes; sent by email without the secret.

use super::{ALICE, BOB, Fixture, NOW, ROOT, code, enroll, fixture_sending};
use crate::delivery::fake::FakeDelivery;
use crate::engine::Engine;
use crate::error::Error;
use crate::policy::authz::Caller;
use kron_common::config::Config;
use kron_proto::{Channel, MAX_LINK_FAILURES};
use std::sync::Arc;

const WEB: Caller = Caller::new(998);
const CLIENT: &str = "192.0.2.10";
const VALIDITY: u64 = 3600;

fn engine(extra: &str) -> (Fixture, Arc<FakeDelivery>) {
    let text = format!(
        "{extra}\n[email]\nserver = \"127.0.0.1\"\nsecurity = \"none\"\n\
         from = \"kron@host.example\"\n\
         [web]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://kron.example.com\"\n\
         link_validity = {VALIDITY}\n"
    );
    let config = Config::parse(&text, "test.toml").unwrap();
    let fake = Arc::new(FakeDelivery::with(&[Channel::Email]));
    (fixture_sending(config, fake.clone()), fake)
}

/// A link for `user` made by root at NOW, and its token.
fn link(engine: &Engine, user: &str) -> String {
    let grant = engine.create_link(ROOT, user, "", NOW).unwrap();
    assert_eq!(grant.expires, NOW + VALIDITY);
    let token = grant
        .url
        .strip_prefix("https://kron.example.com/enroll/")
        .unwrap_or_else(|| panic!("unexpected URL"));
    token.to_owned()
}

fn secret_of(engine: &Engine, token: &str, now: u64) -> Vec<u8> {
    let page = engine.show_link(WEB, token, CLIENT, now).unwrap();
    totp_rs::Secret::try_from_base32(&page.secret)
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn is_dead(result: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::NotFound(m)) if m.starts_with("this link is not valid"))
}

#[test]
fn a_link_shows_its_enrollment_until_confirmed_then_dies() {
    let (engine, _) = engine("");
    let token = link(&engine, "alice");
    let page = engine.show_link(WEB, &token, CLIENT, NOW + 5).unwrap();
    assert_eq!(
        (page.issuer.as_str(), page.user.as_str(), page.host.as_str()),
        ("Kron", "alice", "host")
    );
    assert_eq!((page.expires, page.attempts_left), (NOW + VALIDITY, 5));
    assert!(page.uri.starts_with("otpauth://totp/"));
    // Opening does not consume: a mail scanner's prefetch leaves the same page for the person.
    let again = engine.show_link(WEB, &token, CLIENT, NOW + 6).unwrap();
    assert_eq!(again.secret, page.secret);
    let status = engine.link_status(ROOT, "alice", NOW + 6).unwrap();
    assert!(status.active && status.channel.is_empty());
    assert!(engine.status(ROOT, "alice", NOW + 6).unwrap().pending);

    let secret = secret_of(&engine, &token, NOW + 7);
    let at = NOW + 1000;
    engine
        .confirm_link(WEB, &token, &code(&secret, at), CLIENT, at)
        .unwrap();
    let status = engine.status(ROOT, "alice", at).unwrap();
    assert!(status.enrolled && !status.pending);
    assert!(is_dead(engine.show_link(WEB, &token, CLIENT, at)));
    assert!(is_dead(engine.confirm_link(
        WEB,
        &token,
        &code(&secret, at + 30),
        CLIENT,
        at + 30
    )));
    assert!(!engine.link_status(ROOT, "alice", at).unwrap().active);
    // The confirming code's step is used: it cannot log in again.
    let step = super::attempt(&engine, "alice", &code(&secret, at), at + 1);
    assert_eq!(super::kind(&step), kron_proto::StepKind::Deny);
}

/// A link's code is never charged against the user's throttle, so confirming it takes nothing
/// back from it: the failures and the wait that someone's guesses set stay as they were.
#[test]
fn confirming_a_link_keeps_the_throttle_that_guesses_set() {
    let (engine, _) = engine("");
    let token = link(&engine, "alice");
    let secret = secret_of(&engine, &token, NOW + 1);
    let at = NOW + 1000;
    // Five charged attempts before (wrong codes, typed by whoever guesses), each as soon as
    // the throttle lets it through.
    let mut guess = at - 100;
    for _ in 0..5 {
        let next = engine.store.get("alice").unwrap().unwrap().next_attempt;
        guess = guess.max(next);
        let charged = engine
            .store
            .charge_attempt("alice", guess, &engine.config.throttle)
            .unwrap();
        assert_eq!(charged, crate::store::record::Attempt::Allowed);
    }
    let before = engine.store.get("alice").unwrap().unwrap();
    assert_eq!(before.failures, 5);
    assert!(before.is_locked(at), "the guesses set a wait");

    engine
        .confirm_link(WEB, &token, &code(&secret, at), CLIENT, at)
        .unwrap();
    let after = engine.store.get("alice").unwrap().unwrap();
    assert!(after.token.is_some());
    assert_eq!(
        (after.failures, after.next_attempt, after.last_attempt),
        (before.failures, before.next_attempt, before.last_attempt),
        "a confirmation that was never charged refunds nothing"
    );
    assert!(after.is_locked(at));
}

#[test]
fn expired_unknown_malformed_revoked_and_replaced_links_read_alike() {
    let (engine, _) = engine("");
    let token = link(&engine, "alice");
    let (user_part, random_part) = token.split_once('.').unwrap();
    let mut flipped = random_part.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let forged = format!("{user_part}.{}", String::from_utf8(flipped).unwrap());
    for bad in [forged.as_str(), "", "garbage", "Ym9i.AAAA"] {
        let result = engine.show_link(WEB, bad, CLIENT, NOW + 1);
        assert!(is_dead(result), "{bad}");
    }
    assert!(matches!(
        engine.show_link(WEB, &"a".repeat(401), CLIENT, NOW),
        Err(Error::InvalidArgument(m)) if !m.contains("aaaa")
    ));
    assert!(matches!(
        engine.show_link(WEB, &token, "not-an-address", NOW),
        Err(Error::InvalidArgument(m)) if !m.contains("not-an")
    ));

    let token = link(&engine, "alice");
    assert!(engine.revoke_link(ROOT, "alice").unwrap());
    assert!(!engine.revoke_link(ROOT, "alice").unwrap());
    assert!(is_dead(engine.show_link(WEB, &token, CLIENT, NOW + 1)));

    let token = link(&engine, "alice");
    let newer = link(&engine, "alice");
    assert!(is_dead(engine.show_link(WEB, &token, CLIENT, NOW + 1)));
    assert!(engine.show_link(WEB, &newer, CLIENT, NOW + 1).is_ok());
    // kronctl enroll makes a new pending enrollment: the link's is gone.
    engine.enroll(ROOT, "alice", "", NOW + 2).unwrap();
    assert!(is_dead(engine.show_link(WEB, &newer, CLIENT, NOW + 3)));

    // (Times only go forward: the rate limits keep time too.)
    let token = link(&engine, "bob");
    assert!(engine.show_link(WEB, &token, CLIENT, NOW + 4).is_ok());
    assert!(is_dead(engine.show_link(
        WEB,
        &token,
        CLIENT,
        NOW + VALIDITY
    )));
}

#[test]
fn five_wrong_codes_kill_the_link() {
    let (engine, _) = engine("");
    let token = link(&engine, "alice");
    let secret = secret_of(&engine, &token, NOW);
    let right = code(&secret, NOW + 60);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    for n in 1..=MAX_LINK_FAILURES {
        let result = engine.confirm_link(WEB, &token, &wrong, CLIENT, NOW + 60);
        assert!(
            matches!(&result, Err(Error::Rejected(m)) if !m.contains(&wrong)),
            "{result:?}"
        );
        let left = engine.show_link(WEB, &token, CLIENT, NOW + 60);
        if n < MAX_LINK_FAILURES {
            assert_eq!(left.unwrap().attempts_left, MAX_LINK_FAILURES - n);
        } else {
            assert!(is_dead(left));
        }
    }
    assert!(is_dead(engine.confirm_link(
        WEB,
        &token,
        &right,
        CLIENT,
        NOW + 60
    )));
    assert!(!engine.status(ROOT, "alice", NOW + 60).unwrap().pending);
}

#[test]
fn only_admins_make_and_revoke_links_and_not_over_a_token() {
    let (engine, _) = engine("");
    assert!(matches!(
        engine.create_link(ALICE, "bob", "", NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        engine.create_link(BOB, "bob", "", NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        engine.revoke_link(BOB, "bob"),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        engine.link_status(BOB, "alice", NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(engine.link_status(BOB, "bob", NOW).is_ok(), "oneself");
    enroll(&engine, "alice");
    assert!(matches!(
        engine.create_link(ROOT, "alice", "", NOW),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        engine.create_link(ROOT, "bob", "fax", NOW),
        Err(Error::InvalidArgument(_))
    ));
    let no_web = super::fixture(Config::default());
    assert!(matches!(
        no_web.create_link(ROOT, "bob", "", NOW),
        Err(Error::InvalidArgument(m)) if m.contains("[web]")
    ));
}

#[test]
fn a_sent_link_carries_the_url_and_never_the_secret() {
    let (engine, fake) = engine("");
    engine
        .set_contact(ROOT, "bob", "email", "bob@example.com")
        .unwrap();
    let grant = engine.create_link(ROOT, "bob", "email", NOW).unwrap();
    assert!(grant.url.is_empty(), "the admin does not see a sent link");
    assert_eq!(
        (grant.channel.as_str(), grant.destination.as_str()),
        ("email", "b***@example.com")
    );
    let sent = fake.last().unwrap();
    assert_eq!(sent.to, "bob@example.com");
    let token = sent
        .payload
        .strip_prefix("https://kron.example.com/enroll/")
        .unwrap()
        .to_owned();
    assert!(engine.show_link(WEB, &token, CLIENT, NOW + 1).is_ok());
    let status = engine.link_status(ROOT, "bob", NOW + 1).unwrap();
    assert_eq!(
        (status.channel.as_str(), status.destination.as_str()),
        ("email", "b***@example.com")
    );
    // A failed send stores no link.
    fake.failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        engine.create_link(ROOT, "bob", "email", NOW + 60),
        Err(Error::Delivery(_))
    ));
    assert!(
        engine.show_link(WEB, &token, CLIENT, NOW + 61).is_ok(),
        "the link it would have replaced lives on"
    );
}

#[test]
fn requests_are_limited_per_client() {
    let (engine, _) = engine("");
    let token = link(&engine, "alice");
    let mut refused = None;
    for n in 0..100 {
        let client = format!("198.51.100.{}", n % 2 + 1);
        if let Err(Error::Throttled { .. }) = engine.show_link(WEB, "garbage", &client, NOW) {
            refused = Some(n);
            break;
        }
    }
    assert!(refused.is_some_and(|n| n >= 30), "{refused:?}");
    assert!(
        engine.show_link(WEB, &token, CLIENT, NOW).is_ok(),
        "another client is not held up"
    );
}
