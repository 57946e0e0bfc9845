//! The PAM conversation: prints every message it is shown and answers prompts from a list
//! (or, interactively, from stdin one line per prompt).

use std::collections::VecDeque;
use std::io::{BufRead, Write};

use kron_pam_client::{Converse, Ended, Style};
use zeroize::Zeroizing;

/// Where answers come from and whether messages are printed.
#[derive(Debug)]
pub struct Conversation {
    answers: VecDeque<String>,
    from_stdin: bool,
    quiet: bool,
}

impl Conversation {
    pub fn new(answers: Vec<String>, from_stdin: bool, quiet: bool) -> Conversation {
        Conversation {
            answers: answers.into(),
            from_stdin,
            quiet,
        }
    }

    /// One line per event; continuation lines of a multi-line text start with "| ".
    fn print(&self, kind: &str, text: &str) {
        if self.quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        let mut lines = text.split('\n');
        let _ = writeln!(out, "{kind}: {}", lines.next().unwrap_or_default());
        for line in lines {
            let _ = writeln!(out, "| {line}");
        }
        let _ = out.flush();
    }
}

impl Converse for Conversation {
    /// Records one message; returns the answer for prompts, `Err` when no answer is left.
    fn message(&mut self, style: Style, text: &str) -> Result<Option<Zeroizing<String>>, Ended> {
        match style {
            Style::Info => self.print("INFO", text),
            Style::Error => self.print("ERROR", text),
            Style::PromptEchoOff => self.print("PROMPT", text),
            Style::PromptEchoOn => self.print("PROMPT_ECHO", text),
            Style::Other(other) => {
                self.print("UNKNOWN_STYLE", &other.to_string());
                return Err(Ended);
            }
        }
        if !style.is_prompt() {
            return Ok(None);
        }
        if let Some(answer) = self.answers.pop_front() {
            return Ok(Some(Zeroizing::new(answer)));
        }
        if self.from_stdin {
            let mut line = String::new();
            if std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|_| Ended)?
                > 0
            {
                return Ok(Some(Zeroizing::new(
                    line.trim_end_matches(['\n', '\r']).to_string(),
                )));
            }
        }
        self.print("NO_ANSWER", "conversation error returned");
        Err(Ended)
    }
}
