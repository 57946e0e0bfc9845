//! The engine's unit tests, by part, all on a fixed clock with fake accounts and a real sled
//! store in a temporary directory. This file holds the fixtures they share.

mod fleet;
mod lifecycle;
mod links;
mod list;
mod login;
mod outbound;
mod tokens;
mod transfer;

use super::*;
use crate::store::SledStore;
use kron_common::config::{GroupRule, Mode};
use kron_common::users::fake::FakeDirectory;

pub(super) const NOW: u64 = 1_800_000_000;
pub(super) const ROOT: Caller = Caller::new(0);
pub(super) const ALICE: Caller = Caller::new(1001);
pub(super) const BOB: Caller = Caller::new(1002);

pub(super) struct Fixture {
    pub(super) engine: Engine,
    pub(super) _dir: tempfile::TempDir,
}

/// A fixture stands for its engine wherever one is wanted; its store's directory goes with it.
impl std::ops::Deref for Fixture {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

pub(super) fn fixture(config: Config) -> Fixture {
    fixture_sending(config, std::sync::Arc::default())
}

/// A fixture whose `secret.key` is all `byte` (another host than [`fixture`]'s).
pub(super) fn fixture_keyed(config: Config, byte: u8) -> Fixture {
    fixture_with(config, std::sync::Arc::default(), byte)
}

/// A fixture whose email and SMS go to `delivery`.
pub(super) fn fixture_sending(
    config: Config,
    delivery: std::sync::Arc<crate::delivery::fake::FakeDelivery>,
) -> Fixture {
    fixture_with(config, delivery, 9)
}

fn fixture_with(
    mut config: Config,
    delivery: std::sync::Arc<crate::delivery::fake::FakeDelivery>,
    key: u8,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // Import spools go to the state directory.
    config.state_dir = dir.path().to_owned();
    let directory = FakeDirectory::default()
        .with_user("root", 0, &["root"])
        .with_user("alice", 1001, &["wheel"])
        .with_user("bob", 1002, &["users"])
        .with_user("admin", 1003, &["kron-admin"]);
    let engine = Engine::new(
        config,
        Box::new(SledStore::open(&dir.path().join("store")).unwrap()),
        SecretKey::from_bytes(&[key; 32]),
        Box::new(directory),
        Audit::new(false),
        "host".into(),
        Box::new(delivery),
    );
    Fixture { engine, _dir: dir }
}

pub(super) fn login(user: &str, service: &str) -> LoginRequest {
    LoginRequest {
        user: user.into(),
        service: service.into(),
        rhost: "192.0.2.1".into(),
        tty: "pts/1".into(),
    }
}

pub(super) fn kind(step: &Step) -> StepKind {
    step.validate().unwrap()
}

/// Enrolls `user` at NOW - 300 and returns the base32 secret.
pub(super) fn enroll(engine: &Engine, user: &str) -> Vec<u8> {
    let enrollment = engine.enroll(ROOT, user, "", NOW - 300).unwrap();
    let secret = totp_rs::Secret::try_from_base32(&enrollment.secret)
        .unwrap()
        .as_bytes()
        .to_vec();
    engine
        .confirm(ROOT, user, &code(&secret, NOW - 300), NOW - 300)
        .unwrap();
    secret
}

pub(super) fn code(secret: &[u8], at: u64) -> String {
    totp::code_at(
        secret,
        TokenParams::from(&kron_common::config::TotpConfig::default()),
        at,
    )
}

pub(super) fn attempt(engine: &Engine, user: &str, answer: &str, now: u64) -> Step {
    let step = engine.begin_login(ROOT, login(user, "sshd"), now).unwrap();
    if kind(&step) != StepKind::Prompt {
        return step;
    }
    engine.answer(ROOT, &step.handle, answer, now).unwrap()
}

/// Tokens for `names`, each with a secret of its own (`salt` tells two sets for the same names
/// apart), to import: users with tokens need no accounts.
pub(super) fn tokens(
    names: impl IntoIterator<Item = String>,
    salt: u8,
) -> Vec<kron_proto::TokenImport> {
    names
        .into_iter()
        .map(|user| kron_proto::TokenImport {
            secret: [user.as_bytes(), &[salt; 10]].concat(),
            user,
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            last_step: 0,
            recovery_codes: Vec::new(),
        })
        .collect()
}

/// `user00000`, `user00001`, … `count` names in the store's order.
pub(super) fn numbered_users(count: u32) -> impl Iterator<Item = String> {
    (0..count).map(|index| format!("user{index:05}"))
}
