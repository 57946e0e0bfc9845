//! Email and SMS: fallback codes, validated enrollment, delivered enrollments, contacts.

use super::{Fixture, NOW, ROOT, code, enroll, fixture_sending, kind, login};
use crate::delivery::fake::FakeDelivery;
use crate::engine::Engine;
use crate::error::Error;
use crate::policy::authz::Caller;
use kron_common::config::Config;
use kron_proto::Channel;
use kron_proto::{Step, StepKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const ALICE: Caller = Caller::new(1001);

/// An engine with `extra` config and email + SMS sections, sending to a fake.
fn engine(extra: &str) -> (Fixture, Arc<FakeDelivery>) {
    let text = format!(
        "contact = \"the help desk\"\n{extra}\n\
         [email]\nserver = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"kron@host.example\"\n\
         [sms]\nurl = \"http://127.0.0.1:9/send\"\nbody = '{{\"to\": \"{{phone}}\", \"text\": \"{{message}}\"}}'\n"
    );
    let config = Config::parse(&text, "test.toml").unwrap();
    let fake = Arc::new(FakeDelivery::with(&[Channel::Email, Channel::Sms]));
    let engine = fixture_sending(config, fake.clone());
    (engine, fake)
}

fn texts(step: &Step) -> String {
    step.messages
        .iter()
        .map(|m| m.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn begin(engine: &Engine, user: &str, now: u64) -> Step {
    engine.begin_login(ROOT, login(user, "sshd"), now).unwrap()
}

fn answer(engine: &Engine, step: &Step, response: &str, now: u64) -> Step {
    assert_eq!(kind(step), StepKind::Prompt, "{}", texts(step));
    engine.answer(ROOT, &step.handle, response, now).unwrap()
}

fn set_email(engine: &Engine, user: &str) {
    engine
        .set_contact(ROOT, user, "email", &format!("{user}@example.com"))
        .unwrap();
}

#[test]
fn fallback_without_token_sends_a_code_that_passes_once() {
    let (e, fake) = engine("default_mode = \"require\"\nfallback = [\"email\"]");
    set_email(&e, "alice");
    let step = begin(&e, "alice", NOW);
    assert!(
        texts(&step).contains("sent by email to a***@example.com. It is valid for 5 minutes"),
        "{}",
        texts(&step)
    );
    assert!(texts(&step).contains("Or type \"email\""));
    let sent = fake.last().unwrap();
    assert_eq!(
        (sent.channel, sent.to.as_str()),
        (Channel::Email, "alice@example.com")
    );
    assert_eq!(sent.payload.len(), 8);
    let stored = e.store.get("alice").unwrap().unwrap();
    let json = serde_json::to_string(&stored).unwrap();
    assert!(!json.contains(&sent.payload), "only a MAC is stored");

    assert_eq!(kind(&answer(&e, &step, "00000000", NOW)), StepKind::Deny);
    let again = begin(&e, "alice", NOW + 1);
    assert_eq!(
        fake.count(),
        1,
        "the live code is asked for, not sent again"
    );
    assert!(texts(&again).contains("was sent by email"));
    assert_eq!(
        kind(&answer(&e, &again, &sent.payload, NOW + 1)),
        StepKind::Accept
    );
    let reused = begin(&e, "alice", NOW + 31);
    assert_eq!(fake.count(), 2, "a used code is gone; a new one is sent");
    assert_eq!(
        kind(&answer(&e, &reused, &sent.payload, NOW + 31)),
        StepKind::Deny
    );
}

#[test]
fn expired_codes_and_other_purposes_are_refused() {
    let (e, fake) =
        engine("default_mode = \"require\"\nfallback = [\"email\"]\n[codes]\nvalidity = 60");
    set_email(&e, "alice");
    let step = begin(&e, "alice", NOW);
    let sent = fake.last().unwrap().payload;
    assert_eq!(
        kind(&answer(&e, &step, &sent, NOW + 60)),
        StepKind::Deny,
        "expired"
    );

    let (e, fake) = engine("default_mode = \"enroll\"\nvalidate_enrollment = [\"email\"]");
    set_email(&e, "alice");
    begin(&e, "alice", NOW);
    let enrollment_code = fake.last().unwrap().payload;
    assert!(matches!(
        e.verify(
            "alice",
            &enrollment_code,
            Some(crate::delivery::sent::Expected::any(
                crate::delivery::sent::Purpose::Login
            )),
            NOW
        )
        .unwrap()
        .0,
        crate::engine::verdict::Verdict::NoToken
    ));
}

#[test]
fn a_token_holder_may_ask_for_a_code_at_the_prompt() {
    let (e, fake) = engine("default_mode = \"require\"\nfallback = [\"email\", \"sms\"]");
    e.set_contact(ROOT, "alice", "sms", "+49 151 2345 6712")
        .unwrap();
    let secret = enroll(&e, "alice");
    let step = begin(&e, "alice", NOW);
    assert_eq!(fake.count(), 0, "nothing is sent unasked");
    assert!(
        texts(&step).contains("Or type \"sms\" to get a code by SMS."),
        "{}",
        texts(&step)
    );
    let step = answer(&e, &step, "SMS", NOW);
    assert!(
        texts(&step).contains("sent by SMS to +49 *** ** 12"),
        "{}",
        texts(&step)
    );
    let sent = fake.last().unwrap();
    assert_eq!(sent.to, "+4915123456712");
    let again = answer(&e, &step, "sms", NOW + 1);
    assert!(
        texts(&again).contains("No more codes can be sent by SMS"),
        "{}",
        texts(&again)
    );
    assert_eq!(
        kind(&answer(&e, &again, &sent.payload, NOW + 2)),
        StepKind::Accept
    );
    let totp = begin(&e, "alice", NOW + 30);
    assert_eq!(
        kind(&answer(&e, &totp, &code(&secret, NOW + 30), NOW + 30)),
        StepKind::Accept
    );
}

/// A code sent during one login passes only logins whose rule offers its channel: asked for
/// at an sshd prompt whose rule offers email, it does not pass sudo where the rule offers no
/// fallback (a stolen password and mailbox would otherwise pass a rule set to need the device)
/// or only SMS; it still passes the next sshd login.
#[test]
fn a_sent_code_passes_only_rules_that_offer_its_channel() {
    let (e, fake) = engine(
        "default_mode = \"require\"\nfallback = [\"email\"]\n\
         [[group]]\nname = \"*\"\nmode = \"require\"\nservices = [\"sudo\"]\nfallback = []\n\
         [[group]]\nname = \"*\"\nmode = \"require\"\nservices = [\"su\"]\nfallback = [\"sms\"]\n",
    );
    set_email(&e, "alice");
    e.set_contact(ROOT, "alice", "sms", "+49 151 2345 6712")
        .unwrap();
    let secret = enroll(&e, "alice");
    let abandoned = begin(&e, "alice", NOW);
    answer(&e, &abandoned, "email", NOW);
    let sent = fake.last().unwrap();
    assert_eq!(sent.channel, Channel::Email);
    for (service, wants) in [("sudo", "no fallback"), ("su", "SMS only")] {
        let step = e
            .begin_login(ROOT, login("alice", service), NOW + 1)
            .unwrap();
        assert_eq!(
            kind(&answer(&e, &step, &sent.payload, NOW + 1)),
            StepKind::Deny,
            "the emailed code passed {service} ({wants})"
        );
    }
    // The rules' own codes still pass: sudo's the token's, sshd's the email.
    let sudo = e
        .begin_login(ROOT, login("alice", "sudo"), NOW + 30)
        .unwrap();
    assert_eq!(
        kind(&answer(&e, &sudo, &code(&secret, NOW + 30), NOW + 30)),
        StepKind::Accept
    );
    let sshd = begin(&e, "alice", NOW + 31);
    assert_eq!(
        kind(&answer(&e, &sshd, &sent.payload, NOW + 31)),
        StepKind::Accept
    );
}

/// A caller other than root names the PAM service itself: enrollment at such a login asks
/// for the validation `kronctl enroll` would, even where the named service's rule asks none.
#[test]
fn a_user_naming_a_service_enrolls_no_more_freely_than_kronctl() {
    let (e, fake) = engine(
        "default_mode = \"optional\"\nvalidate_enrollment = [\"email\"]\n\
         [[group]]\nname = \"*\"\nmode = \"enroll\"\nservices = [\"login\"]\nvalidate_enrollment = []\n",
    );
    set_email(&e, "alice");
    let as_alice = e.begin_login(ALICE, login("alice", "login"), NOW).unwrap();
    assert_eq!(kind(&as_alice), StepKind::Prompt);
    assert_eq!(fake.count(), 1, "a validation code went out first");
    assert!(
        texts(&as_alice).contains("sent by email"),
        "{}",
        texts(&as_alice)
    );
    // The console's own login (root) enrolls as its rule says.
    let console = begin_as(&e, ROOT, "login");
    assert!(
        texts(&console).contains("Scan this QR code"),
        "{}",
        texts(&console)
    );
}

fn begin_as(engine: &Engine, caller: Caller, service: &str) -> Step {
    engine
        .begin_login(caller, login("alice", service), NOW + 1)
        .unwrap()
}

/// Step-up grace follows a pass with the device, never one with a code sent by email: a rule
/// that offers no fallback itself must not let the mailbox through by grace either.
#[test]
fn a_login_passed_with_a_sent_code_gives_no_grace() {
    let (e, fake) = engine(
        "default_mode = \"require\"\nfallback = [\"email\"]\n\
         [[group]]\nname = \"*\"\nmode = \"require\"\nservices = [\"sudo\"]\nfallback = []\ngrace = 300\n",
    );
    set_email(&e, "alice");
    let secret = enroll(&e, "alice");
    let here = Caller {
        uid: 0,
        session: Some(42),
    };
    let answer = |step: &Step, response: &str, now| e.answer(here, &step.handle, response, now);
    let sshd = e.begin_login(here, login("alice", "sshd"), NOW).unwrap();
    let sent = answer(&sshd, "email", NOW).unwrap();
    let code_sent = fake.last().unwrap().payload;
    assert_eq!(
        kind(&answer(&sent, &code_sent, NOW).unwrap()),
        StepKind::Accept
    );
    let sudo = e
        .begin_login(here, login("alice", "sudo"), NOW + 1)
        .unwrap();
    assert_eq!(
        kind(&sudo),
        StepKind::Prompt,
        "no grace from an emailed code"
    );
    // The device's code gives it.
    assert_eq!(
        kind(&answer(&sudo, &code(&secret, NOW + 30), NOW + 30).unwrap()),
        StepKind::Accept
    );
    let again = e
        .begin_login(here, login("alice", "sudo"), NOW + 31)
        .unwrap();
    assert_eq!(
        kind(&again),
        StepKind::Accept,
        "grace after the device's code"
    );
}

/// The person at the prompt decides how often a channel is typed: past `MAX_RESENDS` the
/// login is refused (a Deny, which pam_kron reports as a failed check), never left asking until
/// pam_kron gives up on it as unavailable. Spent budgets count as asks too.
#[test]
fn a_login_sends_again_at_most_max_resends_times() {
    use crate::engine::login::MAX_RESENDS;
    let (e, fake) =
        engine("default_mode = \"require\"\nfallback = [\"email\"]\n[codes]\nmin_interval = 0");
    set_email(&e, "alice");
    enroll(&e, "alice");
    let mut step = begin(&e, "alice", NOW);
    for asked in 1..=MAX_RESENDS {
        step = answer(&e, &step, "email", NOW + u64::from(asked));
        assert_eq!(kind(&step), StepKind::Prompt, "{}", texts(&step));
    }
    let sent = fake.count();
    let refused = answer(&e, &step, "email", NOW + 10);
    assert_eq!(kind(&refused), StepKind::Deny, "{}", texts(&refused));
    assert!(
        texts(&refused).contains("No more codes can be sent during this login"),
        "{}",
        texts(&refused)
    );
    assert_eq!(fake.count(), sent, "nothing sent past the limit");
    // A new login may ask again.
    let step = begin(&e, "alice", NOW + 11);
    assert_eq!(
        kind(&answer(&e, &step, "email", NOW + 12)),
        StepKind::Prompt
    );
}

#[test]
fn a_failed_send_stores_nothing_and_says_so() {
    let (e, fake) =
        engine("default_mode = \"require\"\nfallback = [\"email\"]\n[codes]\nmax_sends = 1");
    set_email(&e, "alice");
    fake.failing.store(true, Ordering::SeqCst);
    let step = begin(&e, "alice", NOW);
    assert_eq!(kind(&step), StepKind::Unavailable);
    assert!(
        texts(&step).contains("could not be sent by email")
            && texts(&step).contains("the help desk")
    );
    let record = e.store.get("alice").unwrap().unwrap();
    assert_eq!(
        record.outbox,
        crate::delivery::sent::Outbox::default(),
        "no code, no budget spent"
    );
    fake.failing.store(false, Ordering::SeqCst);
    let step = begin(&e, "alice", NOW + 1);
    assert_eq!(
        kind(&answer(&e, &step, &fake.last().unwrap().payload, NOW + 1)),
        StepKind::Accept
    );
    let spent = begin(&e, "alice", NOW + 2);
    assert_eq!(kind(&spent), StepKind::Throttled, "{}", texts(&spent));
    assert!(texts(&spent).contains("No more codes can be sent by email"));
}

/// alice, enrolled, with an email address and a phone number, at the prompt of a login after
/// asking for a code by email (sent, live).
fn emailed_with_a_phone_too() -> (Fixture, Arc<FakeDelivery>, Step) {
    let (e, fake) = engine("default_mode = \"require\"\nfallback = [\"email\", \"sms\"]");
    set_email(&e, "alice");
    e.set_contact(ROOT, "alice", "sms", "+49 151 2345 6712")
        .unwrap();
    enroll(&e, "alice");
    let step = begin(&e, "alice", NOW);
    let step = answer(&e, &step, "email", NOW);
    assert!(texts(&step).contains("sent by email"), "{}", texts(&step));
    (e, fake, step)
}

/// A user holding a live email code asks for one by SMS and the gateway refuses it: the
/// refused send stores nothing, so the email code still passes.
#[test]
fn a_refused_send_leaves_the_live_code_of_another_channel() {
    let (e, fake, step) = emailed_with_a_phone_too();
    let emailed = fake.last().unwrap().payload;
    let before = e.store.get("alice").unwrap().unwrap().outbox;

    fake.failing.store(true, Ordering::SeqCst);
    let step = answer(&e, &step, "sms", NOW + 1);
    assert!(
        texts(&step).contains("could not be sent by SMS"),
        "{}",
        texts(&step)
    );
    assert_eq!(
        e.store.get("alice").unwrap().unwrap().outbox,
        before,
        "the email code and the budget as they were"
    );
    assert_eq!(
        kind(&answer(&e, &step, &emailed, NOW + 2)),
        StepKind::Accept
    );
}

/// A send of alice's begun by hand: its code reserved as a login's send would reserve it, its
/// send under way (the guard). With the code it replaced, and what releasing it on a refusal
/// does (as the send's own thread would).
struct ByHand {
    code: crate::delivery::sent::SentCode,
    replaced: Option<crate::delivery::sent::SentCode>,
    guard: crate::delivery::sent::InFlight,
}

impl ByHand {
    fn sms(e: &Engine) -> ByHand {
        let code = crate::delivery::sent::SentCode {
            purpose: crate::delivery::sent::Purpose::Login,
            channel: Channel::Sms,
            mac: vec![7; 32],
            expires: NOW + 600,
        };
        let guard = e.sending.try_start(&code.mac, 32).unwrap();
        let mut replaced = None;
        e.store
            .modify("alice", &mut |record| {
                replaced = record
                    .outbox
                    .reserve(code.clone(), NOW + 1, &e.config.codes)
                    .replaced;
            })
            .unwrap();
        ByHand {
            code,
            replaced,
            guard,
        }
    }

    fn refused(self, e: &Engine) {
        self.guard
            .refused(self.replaced.as_ref(), std::time::Duration::from_secs(600));
        e.store
            .modify("alice", &mut |record| {
                let back = self.guard.put_back(self.replaced.as_ref());
                record
                    .outbox
                    .release(Channel::Sms, &self.code.mac, NOW + 1, back.as_ref());
            })
            .unwrap();
    }
}

fn live_code(e: &Engine) -> Option<crate::delivery::sent::SentCode> {
    e.store.get("alice").unwrap().unwrap().outbox.code
}

/// A login's SMS is still on its way when a send that replaced its code is refused: the SMS
/// code comes back, since it may yet arrive (the person asked by email at the prompt while the
/// SMS was slow; its code must still pass when it comes). Refused in turn, it brings back the
/// email code live before it.
#[test]
fn a_refused_send_puts_back_a_code_still_on_its_way() {
    let (e, fake, _) = emailed_with_a_phone_too();
    let emailed = live_code(&e).expect("the emailed code");
    let sms = ByHand::sms(&e);
    fake.failing.store(true, Ordering::SeqCst);
    let second = begin(&e, "alice", NOW + 40);
    let refused = answer(&e, &second, "email", NOW + 40);
    assert!(
        texts(&refused).contains("could not be sent by email"),
        "{}",
        texts(&refused)
    );
    assert_eq!(
        live_code(&e),
        Some(sms.code.clone()),
        "the SMS code may still arrive: put back"
    );
    sms.refused(&e);
    assert_eq!(live_code(&e), Some(emailed), "the code before both");
}

/// Two sends of one user, both refused, the first before the second: the second must not bring
/// back the first's code, never delivered, as the code the user "was sent", but the code live
/// before both (delivered) comes back.
#[test]
fn a_refused_send_never_brings_back_a_code_refused_before_it() {
    let (mut e, fake, _) = emailed_with_a_phone_too();
    e.engine.set_send_wait(std::time::Duration::from_millis(50));
    let emailed = live_code(&e).expect("the emailed code");
    let sms = ByHand::sms(&e);
    // The second login's email is on its way when the SMS is refused (its release finds the
    // email's code live and leaves it).
    fake.hold();
    let second = begin(&e, "alice", NOW + 40);
    let asked = answer(&e, &second, "email", NOW + 40);
    assert!(
        texts(&asked).contains("on its way by email"),
        "{}",
        texts(&asked)
    );
    sms.refused(&e);
    // Then the email is refused too.
    fake.failing.store(true, Ordering::SeqCst);
    fake.let_go();
    sends_finished(&e, &fake);
    assert_eq!(
        live_code(&e),
        Some(emailed),
        "the SMS code was refused: the code before it instead"
    );
}

/// With as many sends under way as otpd allows, a login that needs one is refused as throttled
/// (it fails closed), never as otpd being away; nothing is reserved.
#[test]
fn a_login_past_the_sends_under_way_is_throttled() {
    let (e, fake) = engine("default_mode = \"require\"\nfallback = [\"email\"]");
    set_email(&e, "alice");
    let held: Vec<_> = (0..crate::engine::sending::MAX_SENDS_IN_FLIGHT)
        .map(|i| e.sending.try_start(&[i as u8; 32], usize::MAX).unwrap())
        .collect();
    let step = begin(&e, "alice", NOW);
    assert_eq!(kind(&step), StepKind::Throttled, "{}", texts(&step));
    assert!(texts(&step).contains("Too many codes"), "{}", texts(&step));
    assert_eq!(fake.count(), 0);
    assert_eq!(
        e.store
            .get("alice")
            .unwrap()
            .map(|r| r.outbox)
            .unwrap_or_default(),
        crate::delivery::sent::Outbox::default()
    );
    drop(held);
    let step = begin(&e, "alice", NOW + 1);
    assert!(
        texts(&step).contains("was sent by email"),
        "{}",
        texts(&step)
    );
}

/// A login's wait for its code counts from when otpd began on the call, for every channel it
/// tries: the email refused after 600 ms, the SMS gets what is left of the second and is still
/// on its way when the login prompts (a wait per channel would have waited for it).
#[test]
fn a_second_channel_waits_only_for_what_is_left_of_the_logins_time() {
    let (mut e, fake) = engine("default_mode = \"require\"\nfallback = [\"email\", \"sms\"]");
    e.engine
        .set_send_wait(std::time::Duration::from_millis(1000));
    set_email(&e, "alice");
    e.set_contact(ROOT, "alice", "sms", "+49 151 2345 6712")
        .unwrap();
    *fake.refusing.lock().unwrap() = Some(Channel::Email);
    *fake.delay.lock().unwrap() = std::time::Duration::from_millis(600);
    let step = begin(&e, "alice", NOW);
    assert_eq!(kind(&step), StepKind::Prompt, "{}", texts(&step));
    assert!(
        texts(&step).contains("on its way by SMS"),
        "{}",
        texts(&step)
    );
    sends_finished(&e, &fake);
    assert_eq!(fake.last().unwrap().channel, Channel::Sms);
}

/// Waits (up to 10 s) for the sends left to finish on their own threads.
fn sends_finished(e: &Engine, fake: &FakeDelivery) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.sending.count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a send never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        !fake.gave_up.load(Ordering::SeqCst),
        "a held send was never let go"
    );
}

/// A server slower than a login waits for (a relay slower than pam_kron's `timeout=` made the
/// login "unavailable" while the code still arrived): the login prompts, saying the code is on
/// its way, the send finishes by itself and its code passes.
#[test]
fn a_slow_send_prompts_and_its_code_passes_once_it_arrives() {
    let (mut e, fake) = engine("default_mode = \"require\"\nfallback = [\"email\"]");
    e.engine.set_send_wait(std::time::Duration::from_millis(50));
    set_email(&e, "alice");
    fake.hold();
    let step = begin(&e, "alice", NOW);
    assert_eq!(kind(&step), StepKind::Prompt, "{}", texts(&step));
    assert!(
        texts(&step).contains("on its way by email to a***@example.com")
            && texts(&step).contains("valid for 5 minutes")
            && texts(&step).contains("Or type \"email\""),
        "{}",
        texts(&step)
    );
    assert_eq!(fake.count(), 0, "the server has not taken it yet");
    fake.let_go();
    sends_finished(&e, &fake);
    assert_eq!(fake.count(), 1);
    let sent = fake.last().unwrap().payload;
    assert_eq!(kind(&answer(&e, &step, &sent, NOW + 5)), StepKind::Accept);
}

/// A send the login stopped waiting for and the server then refuses hands its budget back and
/// leaves no code, as a refusal in time does: the next login sends a new one.
#[test]
fn a_slow_send_refused_later_hands_its_budget_back() {
    let (mut e, fake) =
        engine("default_mode = \"require\"\nfallback = [\"email\"]\n[codes]\nmax_sends = 1");
    e.engine.set_send_wait(std::time::Duration::from_millis(50));
    set_email(&e, "alice");
    fake.hold();
    fake.failing.store(true, Ordering::SeqCst);
    let step = begin(&e, "alice", NOW);
    assert!(texts(&step).contains("on its way"), "{}", texts(&step));
    fake.let_go();
    sends_finished(&e, &fake);
    assert_eq!(
        e.store.get("alice").unwrap().unwrap().outbox,
        crate::delivery::sent::Outbox::default(),
        "no code, no budget spent"
    );
    fake.failing.store(false, Ordering::SeqCst);
    let step = begin(&e, "alice", NOW + 1);
    assert!(
        texts(&step).contains("was sent by email"),
        "{}",
        texts(&step)
    );
    assert_eq!(
        kind(&answer(&e, &step, &fake.last().unwrap().payload, NOW + 1)),
        StepKind::Accept
    );
}

/// A code asked for at the prompt from a slow server: the prompt comes back in time too.
#[test]
fn a_slow_send_asked_for_at_the_prompt_prompts_again() {
    let (mut e, fake) = engine("default_mode = \"require\"\nfallback = [\"email\"]");
    e.engine.set_send_wait(std::time::Duration::from_millis(50));
    set_email(&e, "alice");
    enroll(&e, "alice");
    let step = begin(&e, "alice", NOW);
    fake.hold();
    let step = answer(&e, &step, "email", NOW + 1);
    assert_eq!(kind(&step), StepKind::Prompt, "{}", texts(&step));
    assert!(
        texts(&step).contains("on its way by email"),
        "{}",
        texts(&step)
    );
    fake.let_go();
    sends_finished(&e, &fake);
    let sent = fake.last().unwrap().payload;
    assert_eq!(kind(&answer(&e, &step, &sent, NOW + 2)), StepKind::Accept);
}

/// A send that failed after the server may have taken it (no answer in time, the connection
/// lost) stays counted: a gateway that is slow but delivers must not make sends free.
#[test]
fn a_send_that_may_have_gone_out_stays_counted() {
    let (e, fake) =
        engine("default_mode = \"require\"\nfallback = [\"email\"]\n[codes]\nmax_sends = 1");
    set_email(&e, "alice");
    fake.failing.store(true, Ordering::SeqCst);
    fake.maybe_sent.store(true, Ordering::SeqCst);
    let step = begin(&e, "alice", NOW);
    assert_eq!(kind(&step), StepKind::Unavailable, "{}", texts(&step));
    let record = e.store.get("alice").unwrap().unwrap();
    assert_eq!(record.outbox.sends.len(), 1, "the send is counted");
    fake.failing.store(false, Ordering::SeqCst);
    // Its code is kept (it may arrive): the next login asks for it and sends nothing new.
    let again = begin(&e, "alice", NOW + 60);
    assert_eq!(kind(&again), StepKind::Prompt, "{}", texts(&again));
    let spent = answer(&e, &again, "email", NOW + 61);
    assert!(
        texts(&spent).contains("No more codes can be sent by email"),
        "{}",
        texts(&spent)
    );
    assert_eq!(fake.count(), 0);
}

#[test]
fn validated_enrollment_at_login_proves_the_contact_before_the_qr() {
    let (e, fake) = engine("default_mode = \"enroll\"\nvalidate_enrollment = [\"email\"]");
    let refused = begin(&e, "alice", NOW);
    assert_eq!(kind(&refused), StepKind::Deny);
    assert!(
        texts(&refused).contains("none is on file") && texts(&refused).contains("the help desk")
    );
    set_email(&e, "alice");
    let step = begin(&e, "alice", NOW);
    assert!(!texts(&step).contains("otpauth") && !texts(&step).contains("key manually"));
    assert_eq!(kind(&answer(&e, &step, "12345678", NOW)), StepKind::Deny);
    let step = begin(&e, "alice", NOW + 1);
    let qr = answer(&e, &step, &fake.last().unwrap().payload, NOW + 1);
    assert_eq!(kind(&qr), StepKind::Prompt);
    assert!(texts(&qr).starts_with("Code accepted."));
    let key: String = texts(&qr)
        .lines()
        .find_map(|l| l.strip_prefix("Or enter this key manually: "))
        .unwrap()
        .replace(' ', "");
    let secret = totp_rs::Secret::try_from_base32(&key)
        .unwrap()
        .as_bytes()
        .to_vec();
    assert_eq!(
        kind(&answer(&e, &qr, &code(&secret, NOW + 1), NOW + 1)),
        StepKind::Accept
    );
    assert!(e.status(ROOT, "alice", NOW).unwrap().enrolled);
}

#[test]
fn kronctl_enroll_by_a_user_needs_the_validation_code_admins_do_not() {
    let (e, fake) = engine("validate_enrollment = [\"email\"]");
    assert!(matches!(
        e.enroll(ALICE, "", "", NOW),
        Err(Error::ValidationRequired(_))
    ));
    assert!(matches!(
        e.send_enrollment_code(ALICE, "", NOW),
        Err(Error::NotFound(_))
    ));
    set_email(&e, "alice");
    let delivery = e.send_enrollment_code(ALICE, "", NOW).unwrap();
    assert_eq!(
        (delivery.channel.as_str(), delivery.destination.as_str()),
        ("email", "a***@example.com")
    );
    assert!(matches!(
        e.enroll(ALICE, "", "99999999", NOW),
        Err(Error::Rejected(_))
    ));
    let sent = fake.last().unwrap().payload;
    assert!(e.enroll(ALICE, "", &sent, NOW).is_ok());
    assert!(
        matches!(e.enroll(ALICE, "", &sent, NOW), Err(Error::Rejected(_))),
        "used"
    );
    assert!(
        e.enroll(ROOT, "bob", "", NOW).is_ok(),
        "admins are not asked"
    );
}

#[test]
fn a_delivered_enrollment_is_confirmed_at_login() {
    let (e, fake) = engine("default_mode = \"require\"");
    assert!(matches!(
        e.deliver_enrollment(ROOT, "bob", "email", NOW),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        e.deliver_enrollment(ALICE, "bob", "email", NOW),
        Err(Error::AccessDenied(_))
    ));
    set_email(&e, "bob");
    fake.failing.store(true, Ordering::SeqCst);
    assert!(matches!(
        e.deliver_enrollment(ROOT, "bob", "email", NOW),
        Err(Error::Delivery(_))
    ));
    let status = e.status(ROOT, "bob", NOW).unwrap();
    assert!(!status.pending, "nothing half-saved");
    let earlier = e.enroll(ROOT, "bob", "", NOW).unwrap();
    assert!(matches!(
        e.deliver_enrollment(ROOT, "bob", "email", NOW),
        Err(Error::Delivery(_))
    ));
    let earlier_secret = totp_rs::Secret::try_from_base32(&earlier.secret)
        .unwrap()
        .as_bytes()
        .to_vec();
    e.confirm(ROOT, "bob", &code(&earlier_secret, NOW), NOW)
        .expect("the enrollment a failed delivery would have replaced still works");
    e.reset(ROOT, "bob").unwrap();
    fake.failing.store(false, Ordering::SeqCst);
    let delivery = e.deliver_enrollment(ROOT, "bob", "email", NOW).unwrap();
    assert_eq!(delivery.destination, "b***@example.com");
    let secret = totp_rs::Secret::try_from_base32(&fake.last().unwrap().payload)
        .unwrap()
        .as_bytes()
        .to_vec();
    let step = begin(&e, "bob", NOW + 60);
    assert!(
        texts(&step).contains("token sent to you by email"),
        "{}",
        texts(&step)
    );
    assert_eq!(
        kind(&answer(&e, &step, &code(&secret, NOW + 60), NOW + 60)),
        StepKind::Accept
    );
    assert!(e.status(ROOT, "bob", NOW + 60).unwrap().enrolled);
    assert!(matches!(
        e.deliver_enrollment(ROOT, "bob", "email", NOW + 120),
        Err(Error::Conflict(_))
    ));
}

#[test]
fn contacts_are_set_by_admins_checked_masked_and_outlive_a_reset() {
    let (e, _) = engine("[contacts]\nemail = \"{user}@corp.example\"");
    assert_eq!(
        e.status(ROOT, "bob", NOW).unwrap().email,
        "b***@corp.example"
    );
    assert!(matches!(
        e.set_contact(ALICE, "alice", "email", "x@y.example"),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        e.set_contact(ROOT, "bob", "sms", "0151 234"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.set_contact(ROOT, "bob", "fax", "1"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        e.set_contact(ROOT, "bob", "sms", "+49 151 2345 6712")
            .unwrap()
    );
    assert!(
        !e.set_contact(ROOT, "bob", "sms", "+4915123456712").unwrap(),
        "unchanged"
    );
    enroll(&e, "bob");
    e.reset(ROOT, "bob").unwrap();
    let status = e.status(ROOT, "bob", NOW).unwrap();
    assert_eq!(
        (status.enrolled, status.phone.as_str()),
        (false, "+49 *** ** 12")
    );
    e.set_contact(ROOT, "bob", "sms", "").unwrap();
    assert_eq!(e.status(ROOT, "bob", NOW).unwrap().phone, "");
}
