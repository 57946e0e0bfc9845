//! Talking to the person through the application's PAM conversation function.
//!
//! [`Conversation`] is the seam the login loop is written against, so tests can stand in for
//! the application; [`PamConversation`] is the real one on top of pam-bindings' `Conv`.

use kron_proto::MessageLevel;
use pam::constants::{PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_TEXT_INFO};
use pam::conv::Conv;
use pam::module::PamHandle;
use zeroize::Zeroizing;

/// What the person typed at a prompt. Wiped from memory when dropped; never printed.
pub(crate) struct Answer(Zeroizing<Vec<u8>>);

impl Answer {
    /// Copies `bytes` into a buffer sized up front, so no reallocation leaves an unwiped copy.
    pub(crate) fn new(bytes: &[u8]) -> Self {
        let mut buffer = Zeroizing::new(Vec::with_capacity(bytes.len()));
        buffer.extend_from_slice(bytes);
        Answer(buffer)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer([redacted])")
    }
}

/// Why the conversation failed. Holds a PAM code or a short reason, never what was typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConvError(pub String);

/// The application's side of the login, as the loop sees it.
pub(crate) trait Conversation {
    /// Shows one message (PAM_TEXT_INFO or PAM_ERROR_MSG).
    fn show(&mut self, level: MessageLevel, text: &str) -> Result<(), ConvError>;
    /// Asks `prompt` (PAM_PROMPT_ECHO_ON if `echo`, else PAM_PROMPT_ECHO_OFF) and returns the
    /// answer. No answer at all is an error: an empty line is an empty answer.
    fn ask(&mut self, prompt: &str, echo: bool) -> Result<Answer, ConvError>;
}

/// The conversation function the application registered with `pam_start`.
pub(crate) struct PamConversation<'a> {
    conv: Conv<'a>,
}

impl<'a> PamConversation<'a> {
    /// Looks up PAM_CONV. An application without one cannot run a second factor.
    pub(crate) fn new(pamh: &'a PamHandle) -> Result<Self, ConvError> {
        match pamh.get_item::<Conv>() {
            Ok(Some(conv)) => Ok(PamConversation { conv }),
            Ok(None) => Err(ConvError(
                "the application set no conversation function".into(),
            )),
            Err(code) => Err(ConvError(format!("PAM_CONV unavailable: {code:?}"))),
        }
    }
}

impl Conversation for PamConversation<'_> {
    fn show(&mut self, level: MessageLevel, text: &str) -> Result<(), ConvError> {
        let style = match level {
            MessageLevel::Info => PAM_TEXT_INFO,
            MessageLevel::Error => PAM_ERROR_MSG,
        };
        // A reply to a message is allowed by some applications; pam-bindings wipes and frees it.
        self.conv
            .send(style, text)
            .map(drop)
            .map_err(|code| ConvError(format!("showing a message failed: {code:?}")))
    }

    fn ask(&mut self, prompt: &str, echo: bool) -> Result<Answer, ConvError> {
        let style = if echo {
            PAM_PROMPT_ECHO_ON
        } else {
            PAM_PROMPT_ECHO_OFF
        };
        // pam-bindings wipes the application's buffer before freeing it and hands back a
        // SecretBytes that wipes itself on drop; our copy is an Answer, which does the same.
        match self.conv.send(style, prompt) {
            Ok(Some(secret)) => Ok(Answer::new(secret.as_bytes())),
            Ok(None) => Err(ConvError("the application returned no answer".into())),
            Err(code) => Err(ConvError(format!("prompt failed: {code:?}"))),
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted conversation for the tests of the login loop.

    use super::*;
    use std::collections::VecDeque;

    /// Records what was shown and asked; answers from a script.
    #[derive(Default)]
    pub(crate) struct FakeConversation {
        pub shown: Vec<(MessageLevel, String)>,
        pub asked: Vec<(String, bool)>,
        pub answers: VecDeque<Result<Vec<u8>, ConvError>>,
        /// When set, every `show` fails.
        pub fail_show: bool,
    }

    impl FakeConversation {
        pub(crate) fn answering(answers: &[&str]) -> Self {
            FakeConversation {
                answers: answers.iter().map(|a| Ok(a.as_bytes().to_vec())).collect(),
                ..Default::default()
            }
        }
    }

    impl Conversation for FakeConversation {
        fn show(&mut self, level: MessageLevel, text: &str) -> Result<(), ConvError> {
            if self.fail_show {
                return Err(ConvError("show refused".into()));
            }
            self.shown.push((level, text.to_owned()));
            Ok(())
        }

        fn ask(&mut self, prompt: &str, echo: bool) -> Result<Answer, ConvError> {
            self.asked.push((prompt.to_owned(), echo));
            match self.answers.pop_front() {
                Some(Ok(bytes)) => Ok(Answer::new(&bytes)),
                Some(Err(e)) => Err(e),
                None => Err(ConvError("script ran out of answers".into())),
            }
        }
    }
}
