//! Tests of the login loop against a scripted otpd and conversation.

use super::*;
use crate::client::fake::FakeOtpd;
use crate::conversation::ConvError;
use crate::conversation::fake::FakeConversation;
use crate::error::Refusal;
use kron_proto::{MAX_MESSAGES, MAX_PROMPT_LEN, Message};

fn login() -> Login {
    Login {
        user: "alice".into(),
        service: "sshd".into(),
        rhost: "192.0.2.7".into(),
        tty: "ssh".into(),
    }
}

fn prompt(handle: &str, messages: Vec<Message>) -> Step {
    Step {
        kind: StepKind::Prompt as u32,
        messages,
        prompt: "Verification code: ".into(),
        echo: false,
        handle: handle.into(),
    }
}

fn terminal(kind: StepKind, messages: Vec<Message>) -> Step {
    Step::terminal(kind, messages)
}

/// Runs the loop; returns the result with the fakes for inspection.
fn drive(
    replies: Vec<Result<Step, Error>>,
    conv: FakeConversation,
    silent: bool,
) -> (
    Result<Verdict, Error>,
    FakeOtpd,
    FakeConversation,
    Vec<String>,
) {
    let mut otpd = FakeOtpd::replying(replies);
    let mut conv = conv;
    let mut traced = Vec::new();
    let mut trace = |line: &str| traced.push(line.to_owned());
    let result = run(&mut otpd, &mut conv, &login(), silent, &mut trace);
    (result, otpd, conv, traced)
}

#[test]
fn terminal_kinds_map_to_pam_codes() {
    use PamResultCode::*;
    for (kind, code) in [
        (StepKind::Accept, PAM_SUCCESS),
        (StepKind::Deny, PAM_AUTH_ERR),
        (StepKind::Skip, PAM_IGNORE),
        (StepKind::Unavailable, PAM_AUTHINFO_UNAVAIL),
        (StepKind::Throttled, PAM_MAXTRIES),
    ] {
        let (result, otpd, _, _) = drive(
            vec![Ok(terminal(kind, vec![]))],
            FakeConversation::default(),
            false,
        );
        assert_eq!(result.unwrap().code(), code, "{kind:?}");
        assert_eq!(otpd.begun, vec![login()]);
        assert!(otpd.answers.is_empty());
    }
}

#[test]
fn prompt_then_accept() {
    let (result, otpd, conv, _) = drive(
        vec![
            Ok(prompt(
                "h1",
                vec![Message::info("Enter the code from your app.")],
            )),
            Ok(terminal(StepKind::Accept, vec![])),
        ],
        FakeConversation::answering(&["123456"]),
        false,
    );
    assert_eq!(result.unwrap(), Verdict::Accept);
    assert_eq!(otpd.answers, vec![("h1".to_owned(), "123456".to_owned())]);
    assert_eq!(
        conv.shown,
        vec![(MessageLevel::Info, "Enter the code from your app.".into())]
    );
    assert_eq!(conv.asked, vec![("Verification code: ".to_owned(), false)]);
}

#[test]
fn wrong_code_then_deny_shows_the_error() {
    let (result, _, conv, _) = drive(
        vec![
            Ok(prompt("h1", vec![])),
            Ok(terminal(
                StepKind::Deny,
                vec![Message::error("Wrong code.")],
            )),
        ],
        FakeConversation::answering(&["000000"]),
        false,
    );
    assert_eq!(result.unwrap(), Verdict::Deny);
    assert_eq!(
        conv.shown,
        vec![(MessageLevel::Error, "Wrong code.".into())]
    );
}

#[test]
fn echo_is_honoured_and_several_rounds_work() {
    let mut enroll = prompt("h1", vec![Message::info("QR"), Message::info("secret")]);
    enroll.echo = true;
    enroll.prompt = "Type yes: ".into();
    let (result, otpd, conv, _) = drive(
        vec![
            Ok(enroll),
            Ok(prompt("h2", vec![])),
            Ok(terminal(StepKind::Accept, vec![Message::info("Enrolled.")])),
        ],
        FakeConversation::answering(&["yes", "654321"]),
        false,
    );
    assert_eq!(result.unwrap(), Verdict::Accept);
    assert_eq!(
        conv.asked,
        vec![
            ("Type yes: ".into(), true),
            ("Verification code: ".into(), false)
        ]
    );
    assert_eq!(conv.shown.len(), 3);
    assert_eq!(otpd.answers[1], ("h2".into(), "654321".into()));
}

#[test]
fn unavailable_without_messages_gets_a_default_text() {
    let (result, _, conv, _) = drive(
        vec![Ok(terminal(StepKind::Unavailable, vec![]))],
        FakeConversation::default(),
        false,
    );
    assert_eq!(result.unwrap(), Verdict::Unavailable);
    assert_eq!(
        conv.shown,
        vec![(MessageLevel::Error, UNAVAILABLE_TEXT.into())]
    );

    let (_, _, conv, _) = drive(
        vec![Ok(terminal(
            StepKind::Unavailable,
            vec![Message::error("store broken")],
        ))],
        FakeConversation::default(),
        false,
    );
    assert_eq!(
        conv.shown,
        vec![(MessageLevel::Error, "store broken".into())]
    );
}

#[test]
fn silent_suppresses_messages_but_still_prompts() {
    let (result, otpd, conv, _) = drive(
        vec![
            Ok(prompt(
                "h1",
                vec![Message::info("hello"), Message::error("careful")],
            )),
            Ok(terminal(
                StepKind::Deny,
                vec![Message::error("Wrong code.")],
            )),
        ],
        FakeConversation::answering(&["1"]),
        true,
    );
    assert_eq!(result.unwrap(), Verdict::Deny);
    assert!(conv.shown.is_empty());
    assert_eq!(conv.asked.len(), 1);
    assert_eq!(otpd.answers.len(), 1);

    let (_, _, conv, _) = drive(
        vec![Ok(terminal(StepKind::Unavailable, vec![]))],
        FakeConversation::default(),
        true,
    );
    assert!(conv.shown.is_empty());
}

fn expect_malformed(step: Step) {
    let (result, otpd, conv, _) = drive(vec![Ok(step)], FakeConversation::answering(&["1"]), false);
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Malformed(_)), "{error:?}");
    assert_eq!(error.code(), PamResultCode::PAM_AUTHINFO_UNAVAIL);
    // Nothing of a malformed step is shown or asked.
    assert!(conv.shown.is_empty() && conv.asked.is_empty());
    assert!(otpd.answers.is_empty());
}

#[test]
fn malformed_steps_are_authinfo_unavail() {
    let mut step = terminal(StepKind::Accept, vec![]);
    step.kind = 0;
    expect_malformed(step.clone());
    step.kind = 7;
    expect_malformed(step);
    expect_malformed(prompt("", vec![]));
    expect_malformed(prompt(&"h".repeat(100), vec![]));
    expect_malformed(terminal(
        StepKind::Accept,
        vec![Message {
            level: 3,
            text: "x".into(),
        }],
    ));
    expect_malformed(terminal(
        StepKind::Accept,
        vec![Message::info("x"); MAX_MESSAGES + 1],
    ));
    let mut long_prompt = prompt("h", vec![]);
    long_prompt.prompt = "p".repeat(MAX_PROMPT_LEN + 1);
    expect_malformed(long_prompt);
    expect_malformed(terminal(StepKind::Deny, vec![Message::info("a\0b")]));
    let mut nul_prompt = prompt("h", vec![]);
    nul_prompt.prompt = "code\0".into();
    expect_malformed(nul_prompt);
    // Escape sequences would drive the person's terminal: no control character but a
    // message's line breaks.
    expect_malformed(terminal(
        StepKind::Deny,
        vec![Message::info("\x1b]0;owned\x07")],
    ));
    expect_malformed(terminal(StepKind::Deny, vec![Message::info("a\u{9b}31m")]));
    let mut escaping_prompt = prompt("h", vec![]);
    escaping_prompt.prompt = "\x1b[2Jcode: ".into();
    expect_malformed(escaping_prompt);
    let mut two_line_prompt = prompt("h", vec![]);
    two_line_prompt.prompt = "code\nagain: ".into();
    expect_malformed(two_line_prompt);
}

/// A QR code is a message of several lines: its line breaks are shown as they are.
#[test]
fn a_message_of_several_lines_is_shown() {
    let lines = "\u{2588}\u{2580}\n\u{2584}\u{2588}";
    let (result, _, conv, _) = drive(
        vec![Ok(terminal(StepKind::Accept, vec![Message::info(lines)]))],
        FakeConversation::default(),
        false,
    );
    assert_eq!(result.unwrap(), Verdict::Accept);
    assert_eq!(conv.shown.len(), 1, "{:?}", conv.shown);
}

#[test]
fn a_malformed_step_after_a_prompt_is_refused_too() {
    let mut bad = terminal(StepKind::Accept, vec![]);
    bad.kind = 99;
    let (result, _, _, _) = drive(
        vec![Ok(prompt("h", vec![])), Ok(bad)],
        FakeConversation::answering(&["1"]),
        false,
    );
    // otpd had answered the login once: a failed login, never "unavailable".
    let error = result.unwrap_err();
    assert!(
        matches!(&error, Error::Interrupted(cause) if matches!(**cause, Error::Malformed(_))),
        "{error}"
    );
    assert_eq!(error.code(), PamResultCode::PAM_AUTH_ERR);
}

#[test]
fn too_many_prompts_stop_the_login() {
    let replies = (0..=MAX_PROMPTS)
        .map(|i| Ok(prompt(&format!("h{i}"), vec![])))
        .collect();
    let answers = vec!["1"; MAX_PROMPTS + 1];
    let (result, otpd, conv, _) = drive(replies, FakeConversation::answering(&answers), false);
    let error = result.unwrap_err();
    assert!(matches!(error, Error::TooManyRounds));
    // The person can make otpd ask again (a channel typed at the prompt): never "unavailable",
    // which a stack may be told to ignore.
    assert_eq!(error.code(), PamResultCode::PAM_AUTH_ERR);
    assert!(!error.is_fault());
    assert_eq!(conv.asked.len(), MAX_PROMPTS);
    assert_eq!(otpd.answers.len(), MAX_PROMPTS);
}

#[test]
fn exactly_max_prompts_is_allowed() {
    let mut replies: Vec<_> = (0..MAX_PROMPTS)
        .map(|i| Ok(prompt(&format!("h{i}"), vec![])))
        .collect();
    replies.push(Ok(terminal(StepKind::Accept, vec![])));
    let answers = vec!["1"; MAX_PROMPTS];
    let (result, _, _, _) = drive(replies, FakeConversation::answering(&answers), false);
    assert_eq!(result.unwrap(), Verdict::Accept);
}

#[test]
fn conversation_failure_is_auth_err() {
    let mut conv = FakeConversation::default();
    conv.answers
        .push_back(Err(ConvError("PAM_CONV_ERR".into())));
    let (result, otpd, _, _) = drive(vec![Ok(prompt("h", vec![]))], conv, false);
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Conversation(_)));
    assert_eq!(error.code(), PamResultCode::PAM_AUTH_ERR);
    assert!(!error.can_tell_user());
    assert!(otpd.answers.is_empty());
    assert_eq!(otpd.cancelled, ["h"], "otpd is told the login ended");

    let conv = FakeConversation {
        fail_show: true,
        ..Default::default()
    };
    let (result, otpd, _, _) = drive(
        vec![Ok(prompt("h", vec![Message::info("QR")]))],
        conv,
        false,
    );
    assert!(matches!(result, Err(Error::Conversation(_))));
    assert_eq!(otpd.cancelled, ["h"]);
}

#[test]
fn unusable_answers_are_not_sent() {
    let long = "9".repeat(MAX_RESPONSE_LEN + 1);
    let (result, otpd, _, _) = drive(
        vec![Ok(prompt("h", vec![]))],
        FakeConversation::answering(&[&long]),
        false,
    );
    assert!(matches!(result, Err(Error::Answer(_))));
    assert!(otpd.answers.is_empty());
    assert_eq!(otpd.cancelled, ["h"]);

    let mut conv = FakeConversation::default();
    conv.answers.push_back(Ok(vec![0xff, 0xfe]));
    let (result, otpd, _, _) = drive(vec![Ok(prompt("h", vec![]))], conv, false);
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Answer(_)));
    assert_eq!(error.code(), PamResultCode::PAM_AUTH_ERR);
    assert!(otpd.answers.is_empty());
}

#[test]
fn an_empty_answer_is_sent_as_is() {
    let (result, otpd, _, _) = drive(
        vec![
            Ok(prompt("h", vec![])),
            Ok(terminal(StepKind::Deny, vec![])),
        ],
        FakeConversation::answering(&[""]),
        false,
    );
    assert_eq!(result.unwrap(), Verdict::Deny);
    assert_eq!(otpd.answers, vec![("h".into(), String::new())]);
}

#[test]
fn transport_and_otpd_errors_pass_through_until_otpd_answered_once() {
    let (result, _, conv, _) = drive(
        vec![Err(Error::Unreachable("no".into()))],
        FakeConversation::default(),
        false,
    );
    assert_eq!(
        result.unwrap_err().code(),
        PamResultCode::PAM_AUTHINFO_UNAVAIL
    );
    assert!(conv.shown.is_empty());

    // After otpd's first answer its side failing (the person may have stopped the process at
    // the prompt past the timeout) is a failed login, never "unavailable".
    for failure in [
        Error::Timeout,
        Error::Unreachable("closed".into()),
        Error::Otpd(Refusal::Failed, "store".into()),
    ] {
        let (result, _, _, _) = drive(
            vec![Ok(prompt("h", vec![])), Err(failure)],
            FakeConversation::answering(&["1"]),
            false,
        );
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Interrupted(_)), "{error}");
        assert_eq!(error.code(), PamResultCode::PAM_AUTH_ERR);
    }

    let (result, _, _, _) = drive(
        vec![
            Ok(prompt("h", vec![])),
            Err(Error::Otpd(Refusal::Throttled, "wait".into())),
        ],
        FakeConversation::answering(&["1"]),
        false,
    );
    assert_eq!(result.unwrap_err().code(), PamResultCode::PAM_MAXTRIES);
}

#[test]
fn trace_never_holds_texts_or_answers() {
    let (_, _, _, traced) = drive(
        vec![
            Ok(prompt(
                "secret-handle",
                vec![Message::info("otpauth://totp/x?secret=ABC")],
            )),
            Ok(terminal(StepKind::Accept, vec![])),
        ],
        FakeConversation::answering(&["424242"]),
        false,
    );
    assert_eq!(traced.len(), 2);
    for line in traced {
        assert!(!line.contains("424242") && !line.contains("secret") && !line.contains("otpauth"));
    }
}

#[test]
fn unavailable_after_an_answer_is_a_failed_login() {
    let (result, _, conv, _) = drive(
        vec![
            Ok(prompt("h", vec![])),
            Ok(terminal(StepKind::Unavailable, vec![])),
        ],
        FakeConversation::answering(&["email"]),
        false,
    );
    assert_eq!(result.unwrap(), Verdict::Deny);
    assert!(
        conv.shown.iter().any(|(_, text)| text == UNAVAILABLE_TEXT),
        "{:?}",
        conv.shown
    );
}
