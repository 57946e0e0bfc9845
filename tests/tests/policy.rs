//! Policy modes and rules as a person at the login prompt sees them.

use kron_tests::pam::Stack;
use kron_tests::totp::{self, Oath};
use kron_tests::users::random_name;
use kron_tests::{TestGroup, TestUser, World, kronctl, result};

const CONTACT: &str = "the kron test desk";

fn config(default_mode: &str) -> String {
    format!("default_mode = \"{default_mode}\"\ncontact = \"{CONTACT}\"\n")
}

/// require, no token: the login is refused and the person is told whom to ask.
#[test]
fn require_without_token_is_denied_naming_the_contact() {
    let world = World::start(&config("require"));
    let user = TestUser::new();

    let login = world.login(user.name()).answer("123456").run();

    login.assert_denied();
    assert!(
        login.mentions(CONTACT),
        "the contact is not named:\n{}",
        login.raw
    );
}

/// optional, no token: nothing is asked and the rest of the stack decides.
#[test]
fn optional_without_token_skips() {
    let world = World::start(&config("optional"));
    let user = TestUser::new();

    world
        .login(user.name())
        .run()
        .assert_skipped()
        .assert_not_prompted();
}

/// optional with a token: the code is asked and checked.
#[test]
fn optional_with_token_asks_for_the_code() {
    let world = World::start(&config("optional"));
    let user = TestUser::new();
    let (token, confirmed) = world.kronctl().enroll_confirmed_now(user.name());

    let login = world
        .login(user.name())
        .answer(&token.code_for_step(confirmed + 1))
        .run();

    login.assert_accepted().assert_prompted();
    let wrong = totp::wrong_code(&token.code_for_step(confirmed + 2));
    world
        .login(user.name())
        .answer(&wrong)
        .run()
        .assert_denied();
}

/// enroll, no token: the login shows a QR code, the secret and the deadline; the code from
/// that secret saves the token, and the next login asks for a code.
#[test]
fn enroll_mode_enrolls_during_login() {
    let world = World::start(&config("enroll"));
    let user = TestUser::new();
    let step = totp::steady_step();

    let mut login = world.login(user.name()).interactive();
    let shown = login.until_prompt();
    let secret = shown
        .enrollment_secret()
        .unwrap_or_else(|| panic!("no secret shown:\n{}", shown.raw));
    let qr_lines = shown
        .messages()
        .iter()
        .map(|m| m.text().lines().count())
        .max()
        .unwrap_or(0);
    assert!(qr_lines >= 10, "no QR code shown:\n{}", shown.raw);
    assert!(
        shown.mentions("expire"),
        "no deadline shown:\n{}",
        shown.raw
    );
    let token = Oath::new(&secret);
    login.answer(&token.code_for_step(step));
    let finished = login.finish();

    finished.assert_accepted();
    let status = world.kronctl().status(user.name());
    assert!(
        kronctl::flag(&status, "enrolled"),
        "token not saved: {status}"
    );

    let next = world
        .login(user.name())
        .answer(&token.code_for_step(step + 1))
        .run();
    next.assert_accepted().assert_prompted();
    assert!(
        next.enrollment_secret().is_none(),
        "enrolled again:\n{}",
        next.raw
    );
}

/// enroll: a wrong code saves nothing and the next login shows the same enrollment again.
#[test]
fn enroll_mode_wrong_code_saves_nothing() {
    let world = World::start(&config("enroll"));
    let user = TestUser::new();

    let mut login = world.login(user.name()).interactive();
    let first_secret = login
        .until_prompt()
        .enrollment_secret()
        .expect("secret shown");
    login.answer(&totp::wrong_code(&Oath::new(&first_secret).code_now()));
    login.finish().assert_denied();

    let status = world.kronctl().status(user.name());
    assert!(
        !kronctl::flag(&status, "enrolled"),
        "a wrong code saved the token: {status}"
    );
    let mut again = world.login(user.name()).interactive();
    let second_secret = again
        .until_prompt()
        .enrollment_secret()
        .expect("secret shown");
    assert_eq!(
        first_secret, second_secret,
        "a retry within the window shows the same QR code"
    );
}

/// exempt: never asked, even with a token.
#[test]
fn exempt_is_never_asked() {
    let world = World::start(&config("exempt"));
    let user = TestUser::new();
    world.kronctl().enroll_confirmed_now(user.name());

    world
        .login(user.name())
        .run()
        .assert_skipped()
        .assert_not_prompted();
}

/// A group rule limited to `sudo` applies to the sudo service only, and only to members.
#[test]
fn group_rule_applies_only_to_its_services() {
    let group = TestGroup::new();
    let world = World::start(&format!(
        "{}[[group]]\nname = \"{}\"\nmode = \"require\"\nservices = [\"sudo\"]\n",
        config("optional"),
        group.name()
    ));
    let member = TestUser::with_groups(&[&group]);
    let outsider = TestUser::new();
    let sudo = world.stack("sudo", Stack::Probe);

    let member_sudo = sudo.login(member.name()).answer("123456").run();
    member_sudo.assert_denied().assert_prompted();
    assert!(member_sudo.mentions(CONTACT), "{}", member_sudo.raw);
    world.login(member.name()).run().assert_skipped();
    sudo.login(outsider.name()).run().assert_skipped();
}

/// Rules match in file order and the first match wins.
#[test]
fn first_matching_rule_wins() {
    let relaxed = TestGroup::new();
    let world = World::start(&format!(
        "{}[[group]]\nname = \"{}\"\nmode = \"exempt\"\n[[group]]\nname = \"*\"\nmode = \"require\"\n",
        config("optional"),
        relaxed.name()
    ));
    let member = TestUser::with_groups(&[&relaxed]);
    let other = TestUser::new();

    world.login(member.name()).run().assert_skipped();
    world
        .login(other.name())
        .answer("123456")
        .run()
        .assert_denied();
}

/// An unknown user is asked for a code like anyone else and then refused with the very texts
/// a known user without a token gets: nothing reveals that the account does not exist.
#[test]
fn unknown_user_is_prompted_then_denied_without_revealing_it() {
    let world = World::start(&config("require"));
    let known = TestUser::new();
    let unknown = random_name("kx");

    let unknown_login = world.login(&unknown).answer("123456").run();
    let known_login = world.login(known.name()).answer("123456").run();

    unknown_login.assert_denied().assert_prompted();
    known_login.assert_denied();
    assert_eq!(
        unknown_login.shown, known_login.shown,
        "the two refusals differ"
    );
    for word in ["unknown", "exist", "no such", "not found"] {
        assert!(
            !unknown_login.mentions(word),
            "{word:?} shown:\n{}",
            unknown_login.raw
        );
    }
}

/// Why test stacks put pam_permit after pam_kron: a Skip is PAM_IGNORE, which never grants
/// access by itself. Alone in the stack it fails the login; followed by pam_permit (standing in
/// for the first factor) it leaves the decision to that module.
#[test]
fn skip_leaves_the_decision_to_the_rest_of_the_stack() {
    let world = World::start(&config("exempt"));
    let user = TestUser::new();

    let alone = world.stack("alone", Stack::Alone).login(user.name()).run();
    assert_ne!(
        alone.result(),
        result::SUCCESS,
        "PAM_IGNORE alone granted access:\n{}",
        alone.raw
    );
    world
        .stack("permit", Stack::ThenPermit)
        .login(user.name())
        .run()
        .assert_result(result::SUCCESS);
}

/// The `issuer` and host name label the token in authenticator apps.
#[test]
fn issuer_names_the_token() {
    let world = World::start(&format!("{}issuer = \"KronTests\"\n", config("enroll")));
    let user = TestUser::new();
    let enrollment = world.kronctl().json(&["enroll", user.name()]);
    let uri = kronctl::find_key(&enrollment, "uri")
        .and_then(|uri| uri.as_str())
        .unwrap_or_default();
    assert!(uri.starts_with("otpauth://totp/KronTests:"), "{uri}");
    let label = [format!("{}@", user.name()), format!("{}%40", user.name())];
    assert!(
        label.iter().any(|label| uri.contains(label.as_str())),
        "{uri}"
    );
    assert!(uri.contains("issuer=KronTests"), "{uri}");
}
