//! The login loop: ask otpd, render its step, send the answer, until a terminal step.
//!
//! Written against [`Otpd`] and [`Conversation`] so the tests drive it with fakes. It holds no
//! policy: which steps come, and when, is otpd's business. It only enforces the contract
//! (`Step::validate` on every reply, NUL-free texts, bounded answers) and a bound on the number of
//! prompts, and fails closed on everything else.

use kron_proto::{MAX_RESPONSE_LEN, MessageLevel, Step, StepKind};
use pam::constants::PamResultCode;
use zeroize::{Zeroize, Zeroizing};

use crate::client::Otpd;
use crate::conversation::{Answer, Conversation};
use crate::error::Error;
use crate::items::Login;

/// Most prompts in one login. Enrollment needs one or two, a code one; a daemon that keeps
/// asking is broken, and the login must not loop forever.
pub(crate) const MAX_PROMPTS: usize = 8;

/// Shown when otpd says Unavailable without a message of its own.
pub(crate) const UNAVAILABLE_TEXT: &str = "Two-factor authentication is unavailable; login denied.";

/// otpd's verdict on the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    Deny,
    Skip,
    Unavailable,
    Throttled,
}

impl Verdict {
    /// The PAM code for the verdict (docs/architecture.md).
    pub(crate) fn code(self) -> PamResultCode {
        match self {
            Verdict::Accept => PamResultCode::PAM_SUCCESS,
            Verdict::Deny => PamResultCode::PAM_AUTH_ERR,
            // kron checked nothing, so it must not grant anything: the rest of the stack decides.
            Verdict::Skip => PamResultCode::PAM_IGNORE,
            Verdict::Unavailable => PamResultCode::PAM_AUTHINFO_UNAVAIL,
            Verdict::Throttled => PamResultCode::PAM_MAXTRIES,
        }
    }
}

/// How the loop reports what it does (for `debug`). Kinds and counts only: never a message text
/// (an enrollment step carries the secret), a prompt's answer, or a handle.
pub(crate) type Trace<'a> = &'a mut dyn FnMut(&str);

/// Runs one login to its verdict. With `silent` (PAM_SILENT), messages are not shown; prompts
/// are still asked, since the login cannot go on without them.
pub(crate) fn run<O: Otpd, C: Conversation>(
    otpd: &mut O,
    conv: &mut C,
    login: &Login,
    silent: bool,
    trace: Trace<'_>,
) -> Result<Verdict, Error> {
    let mut step = Scrubbed(otpd.begin_login(login)?);
    let mut prompts = 0;
    loop {
        // A broken step after an answer is otpd's side failing once it had answered.
        let kind = check(&step.0).map_err(|e| match prompts {
            0 => e,
            _ => e.after_first_answer(),
        })?;
        trace(&format!(
            "step {kind:?} with {} message(s)",
            step.0.messages.len()
        ));
        if kind == StepKind::Prompt && prompts == MAX_PROMPTS {
            return Err(Error::TooManyRounds);
        }
        if !silent && kind != StepKind::Prompt {
            show_messages(conv, &step.0)?;
        }
        let verdict = match kind {
            StepKind::Prompt => {
                prompts += 1;
                // The answer, or why there is none: then otpd is told at once that this login
                // will not be answered, so it does not hold it until its deadline.
                let asked = prompt(conv, &step.0, silent)
                    .and_then(|answer| response(&answer).map(|r| Zeroizing::new(r.to_owned())));
                let response = match asked {
                    Ok(response) => response,
                    Err(e) => {
                        let _ = otpd.cancel(&step.0.handle);
                        return Err(e);
                    }
                };
                step = Scrubbed(
                    otpd.answer(&step.0.handle, &response)
                        .map_err(Error::after_first_answer)?,
                );
                continue;
            }
            StepKind::Accept => Verdict::Accept,
            StepKind::Deny => Verdict::Deny,
            StepKind::Skip => Verdict::Skip,
            StepKind::Throttled => Verdict::Throttled,
            StepKind::Unavailable => {
                if !silent && step.0.messages.is_empty() {
                    conv.show(MessageLevel::Error, UNAVAILABLE_TEXT)
                        .map_err(|e| Error::Conversation(e.0))?;
                }
                // Only before any answer: once the person has answered a prompt, what follows
                // may be of their making (a channel typed when no login can wait any more), and
                // must not read as otpd unavailable, which a stack may let through.
                match prompts {
                    0 => Verdict::Unavailable,
                    _ => Verdict::Deny,
                }
            }
        };
        return Ok(verdict);
    }
}

/// Shows a prompt step's messages (unless `silent`) and asks its question.
fn prompt<C: Conversation>(conv: &mut C, step: &Step, silent: bool) -> Result<Answer, Error> {
    if !silent {
        show_messages(conv, step)?;
    }
    conv.ask(&step.prompt, step.echo)
        .map_err(|e| Error::Conversation(e.0))
}

/// The contract's checks on a reply: `Step::validate`, plus no control character in any text
/// but the line breaks of a message (a QR code is lines of block characters). A NUL cannot be
/// carried by a C string (truncating would show something otpd did not send); an escape
/// sequence would drive the person's terminal. otpd sends neither, so one is a malformed reply.
fn check(step: &Step) -> Result<StepKind, Error> {
    let kind = step
        .validate()
        .map_err(|e| Error::Malformed(e.to_string()))?;
    let control = |text: &str, allowed: &[char]| {
        text.chars()
            .any(|c| c.is_control() && !allowed.contains(&c))
    };
    if control(&step.prompt, &[]) || step.messages.iter().any(|m| control(&m.text, &['\n'])) {
        return Err(Error::Malformed("a control character in a text".into()));
    }
    Ok(kind)
}

fn show_messages<C: Conversation>(conv: &mut C, step: &Step) -> Result<(), Error> {
    for message in &step.messages {
        // validate() has checked the level; a failure here would still be a malformed reply.
        let level = MessageLevel::try_from(message.level)
            .map_err(|l| Error::Malformed(format!("unknown message level {l}")))?;
        conv.show(level, &message.text)
            .map_err(|e| Error::Conversation(e.0))?;
    }
    Ok(())
}

/// The answer as the contract's `response` string. An answer that cannot be sent is a failed
/// check, decided here because otpd could only refuse it too.
fn response(answer: &Answer) -> Result<&str, Error> {
    let bytes = answer.as_bytes();
    if bytes.len() > MAX_RESPONSE_LEN {
        return Err(Error::Answer("longer than the contract allows"));
    }
    std::str::from_utf8(bytes).map_err(|_| Error::Answer("not UTF-8"))
}

/// A step whose texts are wiped when it is dropped: an enrollment step carries the token's
/// secret (URI and QR) in its messages.
struct Scrubbed(Step);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        for message in &mut self.0.messages {
            message.text.zeroize();
        }
        self.0.prompt.zeroize();
        self.0.handle.zeroize();
    }
}

#[cfg(test)]
mod tests;
