//! Email and SMS (docs/delivery.md) against real servers: the test's SMTP server
//! ([`Mailbox`], aiosmtpd) and SMS gateway ([`Gateway`], a local HTTP server), otpd sending to
//! them, and the real pam_kron.so and kronctl reading the codes back out of the messages.
//!
//! Covered: a fallback code by email and by SMS passes a login without a token, once; a user
//! with a token asks for one at the prompt; validated enrollment at a login and with kronctl;
//! `kronctl enroll --send` by email (QR PNG + URI) and by SMS (the key), confirmed at the
//! login or with `kronctl confirm`; contacts set, masked and cleared. Refusals: a wrong and a
//! used code, the send limits (also across a restart), no contact, SMTP down and the gateway
//! answering 500 (nothing stored, no send budget spent). An expired code is left to otpd's
//! unit tests with a fixed clock: the shortest `validity` is 60 s, too slow for this suite.

use kron_tests::gateway::{self, Gateway};
use kron_tests::mailbox::{Mail, Mailbox};
use kron_tests::messages::{find_otpauth_uri, otpauth_secret};
use kron_tests::pam::PamConfig;
use kron_tests::totp::{self, Oath};
use kron_tests::{Kronctl, Stack, TestUser, Transcript, World, kronctl, process, result, world};
use serde_json::Value;
use std::time::Duration;

const CONTACT: &str = "the kron test desk";

/// The domain of the `[contacts]` email pattern.
const DOMAIN: &str = "example.test";

/// Derives every user's address from the name.
const EMAIL_PATTERN: &str = "[contacts]\nemail = \"{user}@example.test\"\n";

/// A phone number as an admin types it, as otpd stores it (E.164), and as it is shown.
const PHONE_TYPED: &str = "+49 151 2345 6712";
const PHONE: &str = "+4915123456712";
const PHONE_MASKED: &str = "+49 *** ** 12";

/// otpd.toml: the contact text, the top-level `keys`, then `tables` (`[[group]]`,
/// `[contacts]`, `[codes]`), then the `[email]` / `[sms]` sections.
fn config(keys: &str, tables: &str, sections: &[String]) -> String {
    format!(
        "contact = \"{CONTACT}\"\n{keys}\n{tables}\n{}",
        sections.join("\n")
    )
}

/// The address the pattern gives `user`, and how otpd shows it.
fn address(user: &TestUser) -> String {
    format!("{}@{DOMAIN}", user.name())
}

fn masked(user: &TestUser) -> String {
    let first = user.name().chars().next().expect("a name");
    format!("{first}***@{DOMAIN}")
}

/// Everything shown after the first `from` items of `transcript` (an interactive login's
/// transcript grows with each step).
fn shown_since(transcript: &Transcript, from: usize) -> String {
    transcript.shown[from..]
        .iter()
        .map(|shown| shown.text())
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_mentions(transcript: &Transcript, needle: &str) {
    assert!(
        transcript.mentions(needle),
        "{needle:?} not shown:\n{}",
        transcript.raw
    );
}

/// The `secret` of the otpauth URI in an enrollment mail.
fn uri_secret(mail: &Mail) -> String {
    find_otpauth_uri(&mail.text)
        .and_then(otpauth_secret)
        .unwrap_or_else(|| panic!("no otpauth URI with a secret in the mail:\n{}", mail.text))
}

/// The words of `text` that look like a TOTP key: 16 or more base32 characters.
fn base32_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| {
            word.len() >= 16
                && word
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
        .map(str::to_string)
        .collect()
}

fn str_field<'v>(value: &'v Value, key: &str) -> &'v str {
    kronctl::find_key(value, key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
}

fn set_phone(ctl: &Kronctl, user: &TestUser) {
    ctl.run(&["contact", user.name(), "--phone", PHONE_TYPED])
        .assert_success("kronctl contact --phone");
}

/// Proof 1 (fallback): a user without a token gets a code by email as the login begins and
/// passes with it. A wrong code is refused and charged; the live code is not sent again; a
/// used code is refused, and the next login sends a fresh one.
#[test]
fn email_code_passes_a_login_without_token_once() {
    let mailbox = Mailbox::start();
    let world = World::start(&config(
        "default_mode = \"require\"\nfallback = [\"email\"]\n",
        &format!("{EMAIL_PATTERN}[codes]\nmin_interval = 0\n"),
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();
    let to = address(&user);

    let mut login = world.login(user.name()).interactive();
    let first = login.until_prompt();
    assert_mentions(
        &first,
        &format!(
            "A verification code was sent by email to {}. It is valid for 5 minutes.",
            masked(&user)
        ),
    );
    assert_mentions(&first, "Or type \"email\" to get a code by email.");
    assert!(!first.mentions(&to), "full address shown:\n{}", first.raw);
    assert_eq!(
        first.prompts().last().map(|p| p.text()),
        Some("Verification code: ")
    );
    let mail = mailbox.wait_for(&to);
    assert_eq!(mail.to, std::slice::from_ref(&to), "{mail:#?}");
    assert_eq!(mail.from, "kron@test.invalid", "{mail:#?}");
    let code = mail.code();
    assert_eq!(code.len(), 8, "default digits:\n{}", mail.text);

    login.answer(&totp::wrong_code(&code));
    login.finish().assert_denied();
    let status = world.kronctl().status(user.name());
    assert_eq!(
        kronctl::number(&status, "failures"),
        1,
        "a wrong sent code is charged: {status}"
    );

    // Still live: the next login says so without sending another, and the code passes.
    let accepted = world.login(user.name()).answer(&code).run();
    accepted.assert_accepted();
    assert_mentions(&accepted, "sent by email to");
    assert_eq!(mailbox.count(), 1, "a live code was sent again");

    // Used: the next login sends a fresh code, and the used one is refused.
    world.login(user.name()).answer(&code).run().assert_denied();
    let fresh = mailbox.wait_for(&to).code();
    assert_ne!(fresh, code);
    world
        .login(user.name())
        .answer(&fresh)
        .run()
        .assert_accepted();

    let log = world.otpd.stderr();
    assert!(
        !log.contains(&code) && !log.contains(&fresh),
        "a sent code in otpd's log:\n{log}"
    );
}

/// The send limit: with `min_interval = 3600`, the login after a used code cannot get a new
/// one, and says when it can; a restart does not reset the limit.
#[test]
fn a_second_send_within_min_interval_is_refused() {
    let mailbox = Mailbox::start();
    let mut world = World::start(&config(
        "default_mode = \"require\"\nfallback = [\"email\"]\n",
        &format!("{EMAIL_PATTERN}[codes]\nmin_interval = 3600\n"),
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();

    let mut login = world.login(user.name()).interactive();
    login.until_prompt();
    login.answer(&mailbox.wait_for(&address(&user)).code());
    login.finish().assert_accepted();

    assert_send_refused(&world, &user, &mailbox, "");
    world.otpd.restart();
    assert_send_refused(&world, &user, &mailbox, " after a restart");
}

fn assert_send_refused(world: &World, user: &TestUser, mailbox: &Mailbox, when: &str) {
    let refused = world.login(user.name()).answer("12345678").run();
    refused.assert_throttled().assert_not_prompted();
    assert!(
        refused
            .errors()
            .iter()
            .any(|e| e.contains("No more codes can be sent by email just now. Try again in")),
        "no send-limit message{when}:\n{}",
        refused.raw
    );
    assert_eq!(mailbox.count(), 1, "a second code was sent{when}");
}

/// A user with a token is offered a code by email, gets it by typing `email` at the prompt
/// (mode optional), and passes with it; `max_sends = 1` refuses a second send in the same
/// login but keeps the prompt, and the TOTP code still passes after asking.
#[test]
fn a_user_with_a_token_may_ask_for_an_email_code() {
    let mailbox = Mailbox::start();
    let world = World::start(&config(
        "default_mode = \"optional\"\nfallback = [\"email\"]\n",
        &format!("{EMAIL_PATTERN}[codes]\nmin_interval = 0\nmax_sends = 1\n"),
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();
    // Confirmed with the current step; the login below uses the next one (within the skew).
    let step = totp::unix_now() / 30;
    let token = world.kronctl().enroll_confirmed(user.name(), step);

    let mut login = world.login(user.name()).interactive();
    let first = login.until_prompt();
    assert_mentions(&first, "Or type \"email\" to get a code by email.");
    assert!(!first.mentions("was sent"), "sent unasked:\n{}", first.raw);
    assert_eq!(mailbox.count(), 0, "a code was sent unasked");

    login.answer("email");
    let asked = login.until_prompt();
    let told = shown_since(&asked, first.shown.len());
    assert!(
        told.contains(&format!("sent by email to {}", masked(&user))),
        "{}",
        asked.raw
    );
    let code = mailbox.wait_for(&address(&user)).code();

    login.answer("email");
    let again = login.until_prompt();
    assert!(
        shown_since(&again, asked.shown.len())
            .contains("No more codes can be sent by email just now. Try again in"),
        "{}",
        again.raw
    );
    login.answer(&code);
    login.finish().assert_accepted();
    assert_eq!(mailbox.count(), 1);

    let with_totp = world
        .login(user.name())
        .answer("email")
        .answer(&token.code_for_step(step + 1))
        .run();
    with_totp.assert_accepted();
    assert_eq!(with_totp.prompts().len(), 2, "{}", with_totp.raw);
}

/// Proof 1 (validated enrollment): mode `enroll` (a rule that inherits the top-level
/// `validate_enrollment`) mails a code first; only after it the QR and key are shown, and the
/// oathtool code for that key saves the token.
#[test]
fn enrollment_at_login_is_validated_by_email() {
    let mailbox = Mailbox::start();
    let world = World::start(&config(
        "validate_enrollment = [\"email\"]\n",
        &format!("[[group]]\nname = \"*\"\nmode = \"enroll\"\n{EMAIL_PATTERN}"),
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();

    let mut login = world.login(user.name()).interactive();
    let first = login.until_prompt();
    assert_mentions(&first, &format!("sent by email to {}", masked(&user)));
    assert!(
        first.enrollment_secret().is_none(),
        "the key was shown before the code:\n{}",
        first.raw
    );
    let status = world.kronctl().status(user.name());
    assert!(!kronctl::flag(&status, "pending"), "{status}");

    login.answer(&mailbox.wait_for(&address(&user)).code());
    let enrollment = login.until_prompt();
    let after = shown_since(&enrollment, first.shown.len());
    assert!(
        after.starts_with("Code accepted.") && after.contains("Or enter this key manually:"),
        "{}",
        enrollment.raw
    );
    let secret = enrollment
        .enrollment_secret()
        .unwrap_or_else(|| panic!("no key shown:\n{}", enrollment.raw));
    login.answer(&Oath::new(&secret).code_now());
    login.finish().assert_accepted();

    let status = world.kronctl().status(user.name());
    assert!(kronctl::flag(&status, "enrolled"), "{status}");
    assert_eq!(mailbox.count(), 1);
}

/// Validated enrollment without any contact is refused at once, naming `contact`; at the
/// login and with kronctl. A contact an admin sets is then used.
#[test]
fn validated_enrollment_needs_a_contact() {
    let mailbox = Mailbox::start();
    let world = World::start(&config(
        "default_mode = \"enroll\"\nvalidate_enrollment = [\"email\"]\n",
        "",
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();

    let refused = world.login(user.name()).answer("12345678").run();
    refused.assert_denied().assert_not_prompted();
    assert_mentions(&refused, "none is on file");
    assert_mentions(&refused, CONTACT);
    assert!(refused.enrollment_secret().is_none(), "{}", refused.raw);

    let by_kronctl = Kronctl::as_identity(&world.bus, user.identity()).run(&["enroll"]);
    assert_eq!(by_kronctl.code(), Some(5), "{}", by_kronctl.describe());
    assert!(
        by_kronctl.stderr.contains(CONTACT),
        "{}",
        by_kronctl.describe()
    );
    assert_eq!(mailbox.count(), 0);

    let stored = format!("someone.else@{DOMAIN}");
    world
        .kronctl()
        .run(&["contact", user.name(), "--email", &stored])
        .assert_success("kronctl contact --email");
    let sent = world.login(user.name()).answer("12345678").run();
    assert_mentions(&sent, &format!("sent by email to s***@{DOMAIN}"));
    mailbox.wait_for(&stored);
}

/// `kronctl enroll` by the user themself (not an admin): the code goes by email, kronctl
/// reads it from stdin and then shows the token. A wrong code stores nothing (exit 8); root
/// enrolling is never asked.
#[test]
fn kronctl_enroll_by_the_user_is_validated_by_email() {
    let mailbox = Mailbox::start();
    let world = World::start(&config(
        "default_mode = \"optional\"\nvalidate_enrollment = [\"email\"]\n",
        EMAIL_PATTERN,
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();
    let other = TestUser::new();
    let own = Kronctl::as_identity(&world.bus, user.identity());

    let mut enroll = own.spawn(true, &["enroll"]);
    let code = mailbox.wait_for(&address(&user)).code();
    enroll.send_line(&code);
    let output = enroll.finish();
    output.assert_success("kronctl enroll with the mailed code");
    assert!(
        output.stderr.contains(&format!(
            "A verification code was sent by email to {}",
            masked(&user)
        )),
        "{}",
        output.describe()
    );
    let enrollment: Value = serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|err| panic!("no JSON ({err}): {}", output.describe()));
    let token = Oath::new(&kronctl::secret_of(&enrollment));
    own.run(&["confirm", &token.code_now()])
        .assert_success("kronctl confirm");
    assert!(kronctl::flag(&own.json(&["status"]), "enrolled"));

    let mut wrong = Kronctl::as_identity(&world.bus, other.identity()).spawn(true, &["enroll"]);
    let right = mailbox.wait_for(&address(&other)).code();
    wrong.send_line(&totp::wrong_code(&right));
    let refused = wrong.finish();
    assert_eq!(refused.code(), Some(8), "{}", refused.describe());
    assert!(refused.stdout.trim().is_empty(), "{}", refused.describe());
    let status = world.kronctl().status(other.name());
    assert!(
        !kronctl::flag(&status, "pending") && !kronctl::flag(&status, "enrolled"),
        "{status}"
    );

    world.kronctl().enroll(other.name());
    assert_eq!(mailbox.count(), 2, "root was asked for a code");
}

/// Proof 2: the SMS gateway gets a JSON POST with the bearer secret, the number in E.164 and
/// the code; the code passes a login (a `[[group]]` rule's own `fallback`). Contacts are
/// shown masked and cleared by an admin; without a phone, nothing is sent.
#[test]
fn sms_code_passes_a_login() {
    let gateway = Gateway::start();
    let world = World::start(&config(
        "",
        "[[group]]\nname = \"*\"\nmode = \"require\"\nfallback = [\"sms\"]\n",
        &[gateway.config_section()],
    ));
    let user = TestUser::new();
    let ctl = world.kronctl();

    let contact = ctl.json(&[
        "contact",
        user.name(),
        "--email",
        "alice.kron@example.test",
        "--phone",
        PHONE_TYPED,
    ]);
    assert_eq!(str_field(&contact, "user"), user.name(), "{contact}");
    assert_eq!(
        str_field(&contact, "email"),
        "a***@example.test",
        "{contact}"
    );
    assert_eq!(str_field(&contact, "phone"), PHONE_MASKED, "{contact}");
    let status = ctl.status(user.name());
    assert_eq!(str_field(&status, "phone"), PHONE_MASKED, "{status}");

    let mut login = world.login(user.name()).interactive();
    let first = login.until_prompt();
    assert_mentions(&first, &format!("sent by SMS to {PHONE_MASKED}."));
    assert_mentions(&first, "Or type \"sms\" to get a code by SMS.");
    assert!(!first.mentions(PHONE), "full number shown:\n{}", first.raw);
    let request = gateway.wait_for_request();
    assert_eq!(request.method, "POST", "{request:#?}");
    assert_eq!(request.path, gateway::SEND_PATH, "{request:#?}");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {}", gateway::SECRET).as_str()),
        "{request:#?}"
    );
    assert!(
        request
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "{request:#?}"
    );
    let body = request.json();
    assert_eq!(body["to"], Value::from(PHONE), "{body}");
    let code = request.code();
    assert!(str_field(&body, "text").contains(&code), "{body}");
    login.answer(&code);
    login.finish().assert_accepted();

    let log = world.otpd.stderr();
    assert!(
        !log.contains(gateway::SECRET) && !log.contains(&code),
        "the gateway secret or the code in otpd's log:\n{log}"
    );

    let cleared = ctl.json(&["contact", user.name(), "--clear-phone"]);
    assert_eq!(str_field(&cleared, "phone"), "", "{cleared}");
    assert_eq!(
        str_field(&cleared, "email"),
        "a***@example.test",
        "{cleared}"
    );
    let without = world.login(user.name()).answer("12345678").run();
    without.assert_denied();
    assert_mentions(&without, CONTACT);
    assert_eq!(gateway.count(), 1, "sent without a phone number");
}

/// A gateway slower than pam_kron's default `timeout=5`, within otpd's own `[sms] timeout`
/// (10 s by default): the login prompts once otpd has waited its 3 s, saying the code is on its
/// way, and the code passes. Before, the module gave up on `BeginLogin` and the login failed as
/// "unavailable" (which `authinfo_unavail=ignore` lets through) while the code still arrived.
/// The login runs through a stack with the module's default timeout.
#[test]
fn a_gateway_slower_than_the_module_still_gets_a_prompt() {
    let gateway = Gateway::start();
    gateway.delay(Duration::from_secs(7));
    let world = World::start(&config(
        "",
        "[[group]]\nname = \"*\"\nmode = \"require\"\nfallback = [\"sms\"]\n",
        &[gateway.config_section()],
    ));
    let user = TestUser::new();
    world
        .kronctl()
        .json(&["contact", user.name(), "--phone", PHONE_TYPED]);
    let reach = world::transport_arg(&world.bus, &world.otpd, world::Transport::Socket);
    let default_timeout =
        PamConfig::with_module_args("kron-default-timeout", Stack::Probe, &[&reach]);

    let mut login = default_timeout.login(user.name()).interactive();
    let first = login.until_prompt();
    assert_mentions(&first, &format!("on its way by SMS to {PHONE_MASKED}"));
    let code = gateway.wait_for_request().code();
    login.answer(&code);
    login.finish().assert_accepted();
    process::wait_for(
        "the late send's audit line",
        Duration::from_secs(20),
        || {
            world
                .otpd
                .stderr()
                .contains("event=code-sent")
                .then_some(())
        },
    );
}

/// Proof 3: SMTP down. The login is refused as unavailable with a clear message, `--send`
/// fails with exit 1 and stores no pending enrollment, and neither spends the send budget:
/// once the server is back, both work at once (within the default `min_interval`).
#[test]
fn smtp_down_refuses_clearly_and_saves_nothing() {
    let mut mailbox = Mailbox::start();
    let world = World::start(&config(
        "default_mode = \"require\"\nfallback = [\"email\"]\n",
        EMAIL_PATTERN,
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();
    let delivered = TestUser::new();
    let ctl = world.kronctl();
    mailbox.stop();

    let down = world.login(user.name()).answer("12345678").run();
    down.assert_result(result::AUTHINFO_UNAVAIL)
        .assert_not_prompted();
    assert!(
        down.errors().iter().any(|e| e.contains(&format!(
            "The code could not be sent by email. Try again later, or ask {CONTACT}."
        ))),
        "{}",
        down.raw
    );
    let send = ctl.run(&["enroll", delivered.name(), "--send", "email"]);
    assert_eq!(send.code(), Some(1), "{}", send.describe());
    assert!(
        send.stderr.contains("could not be sent by email"),
        "{}",
        send.describe()
    );
    let status = ctl.status(delivered.name());
    assert!(
        !kronctl::flag(&status, "pending") && !kronctl::flag(&status, "enrolled"),
        "a failed delivery left {status}"
    );

    mailbox.start_again();
    let mut login = world.login(user.name()).interactive();
    assert_mentions(&login.until_prompt(), "sent by email to");
    login.answer(&mailbox.wait_for(&address(&user)).code());
    login.finish().assert_accepted();
    ctl.run(&["enroll", delivered.name(), "--send", "email"])
        .assert_success("kronctl enroll --send email once the server is back");
    mailbox.wait_for(&address(&delivered));
}

/// Proof 3: the gateway answers 500. Refused as unavailable naming the channel and the
/// contact, `--send sms` stores nothing, the log has the gateway's answer; once it answers
/// 200 a fresh code works.
#[test]
fn gateway_error_refuses_clearly_and_saves_nothing() {
    let gateway = Gateway::start();
    let world = World::start(&config(
        "default_mode = \"require\"\nfallback = [\"sms\"]\n",
        "",
        &[gateway.config_section()],
    ));
    let user = TestUser::new();
    let delivered = TestUser::new();
    let ctl = world.kronctl();
    set_phone(&ctl, &user);
    set_phone(&ctl, &delivered);
    gateway.answer_with(500);

    let refused = world.login(user.name()).answer("12345678").run();
    refused
        .assert_result(result::AUTHINFO_UNAVAIL)
        .assert_not_prompted();
    assert!(
        refused.errors().iter().any(|e| e.contains(&format!(
            "The code could not be sent by SMS. Try again later, or ask {CONTACT}."
        ))),
        "{}",
        refused.raw
    );
    gateway.wait_for_request();
    let send = ctl.run(&["enroll", delivered.name(), "--send", "sms"]);
    assert_eq!(send.code(), Some(1), "{}", send.describe());
    assert!(
        send.stderr.contains("could not be sent by sms")
            || send.stderr.contains("could not be sent by SMS"),
        "{}",
        send.describe()
    );
    gateway.wait_for_request();
    let status = ctl.status(delivered.name());
    assert!(!kronctl::flag(&status, "pending"), "{status}");
    assert!(
        world.otpd.stderr().contains("500"),
        "the gateway's answer is not in otpd's log:\n{}",
        world.otpd.stderr()
    );

    gateway.answer_with(200);
    let mut login = world.login(user.name()).interactive();
    assert_mentions(&login.until_prompt(), "sent by SMS to");
    login.answer(&gateway.wait_for_request().code());
    login.finish().assert_accepted();
}

/// Proof 4: `kronctl enroll USER --send email` mails the otpauth URI, the key and a QR PNG;
/// the admin sees where it went but not the secret; the token is pending until the next
/// login confirms it with the oathtool code.
#[test]
fn enrollment_sent_by_email_is_confirmed_at_login() {
    let mailbox = Mailbox::start();
    let world = World::start(&config(
        "default_mode = \"require\"\n",
        EMAIL_PATTERN,
        &[mailbox.config_section()],
    ));
    let user = TestUser::new();
    let ctl = world.kronctl();

    let send = ctl.run_json(&["enroll", user.name(), "--send", "email"]);
    send.assert_success("kronctl enroll --send email");
    let delivery: Value = serde_json::from_str(send.stdout.trim())
        .unwrap_or_else(|err| panic!("no JSON ({err}): {}", send.describe()));
    assert_eq!(str_field(&delivery, "user"), user.name(), "{delivery}");
    assert_eq!(str_field(&delivery, "channel"), "email", "{delivery}");
    assert_eq!(
        str_field(&delivery, "destination"),
        masked(&user),
        "{delivery}"
    );
    assert!(
        kronctl::number(&delivery, "expires") > totp::unix_now(),
        "{delivery}"
    );

    let mail = mailbox.wait_for(&address(&user));
    let secret = uri_secret(&mail);
    assert!(
        mail.text.contains(&secret),
        "no key for manual entry:\n{}",
        mail.text
    );
    let images = mail.attachments_of_type("image/png");
    assert_eq!(images.len(), 1, "{mail:#?}");
    assert_eq!(images[0].filename, "qr.png");
    let png = &images[0].data;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.get(12..16) == Some(b"IHDR".as_slice()),
        "not a PNG: {:?}",
        &png[..png.len().min(16)]
    );
    let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    assert!(width >= 100, "a {width} px QR code");
    assert!(
        !send.stdout.contains(&secret) && !send.stderr.contains(&secret),
        "the secret was shown to the admin: {}",
        send.describe()
    );
    let pending = ctl.status(user.name());
    assert!(
        kronctl::flag(&pending, "pending") && !kronctl::flag(&pending, "enrolled"),
        "{pending}"
    );

    let mut login = world.login(user.name()).interactive();
    let first = login.until_prompt();
    assert_mentions(
        &first,
        "To finish setting up the token sent to you by email, enter the code your \
         authenticator app shows for it.",
    );
    assert!(
        first.enrollment_secret().is_none(),
        "the key was shown at the login:\n{}",
        first.raw
    );
    login.answer(&Oath::new(&secret).code_now());
    login.finish().assert_accepted();
    let enrolled = ctl.status(user.name());
    assert!(
        kronctl::flag(&enrolled, "enrolled") && !kronctl::flag(&enrolled, "pending"),
        "{enrolled}"
    );
}

/// Proof 4: `kronctl enroll USER --send sms` sends the key for manual entry; `kronctl
/// confirm` with the oathtool code for it activates the token.
#[test]
fn enrollment_sent_by_sms_carries_the_key() {
    let gateway = Gateway::start();
    let world = World::start(&config(
        "default_mode = \"require\"\n",
        "",
        &[gateway.config_section()],
    ));
    let user = TestUser::new();
    let ctl = world.kronctl();
    set_phone(&ctl, &user);

    let send = ctl.run(&["enroll", user.name(), "--send", "sms"]);
    send.assert_success("kronctl enroll --send sms");
    assert!(send.stdout.contains(PHONE_MASKED), "{}", send.describe());

    let request = gateway.wait_for_request();
    let body = request.json();
    assert_eq!(body["to"], Value::from(PHONE), "{body}");
    let keys = base32_words(str_field(&body, "text"));
    let [secret] = keys.as_slice() else {
        panic!("not exactly one key in the SMS: {body}");
    };
    assert!(
        !send.stdout.contains(secret.as_str()),
        "{}",
        send.describe()
    );
    assert!(kronctl::flag(&ctl.status(user.name()), "pending"));

    ctl.run(&["confirm", user.name(), &Oath::new(secret).code_now()])
        .assert_success("kronctl confirm the delivered token");
    let status = ctl.status(user.name());
    assert!(kronctl::flag(&status, "enrolled"), "{status}");
}
