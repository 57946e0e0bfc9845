//! The PAM conversation: prints every message it is shown and answers prompts from a list
//! (or, interactively, from stdin one line per prompt).

use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_int, c_void};
use std::io::{BufRead, Write};

use crate::ffi::{
    PAM_BUF_ERR, PAM_CONV_ERR, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SUCCESS,
    PAM_TEXT_INFO, PamConv, PamMessage, PamResponse,
};

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

    /// The `pam_conv` to hand to `pam_start_confdir`. It points at `self`: keep `self` alive
    /// and otherwise unused until `pam_end` has returned.
    pub fn pam_conv(&mut self) -> PamConv {
        PamConv {
            conv: Some(converse),
            appdata_ptr: (self as *mut Conversation).cast::<c_void>(),
        }
    }

    /// Records one message; returns the answer for prompts, `Err` when no answer is left.
    fn handle(&mut self, style: c_int, text: &str) -> Result<Option<String>, ()> {
        match style {
            PAM_TEXT_INFO => self.print("INFO", text),
            PAM_ERROR_MSG => self.print("ERROR", text),
            PAM_PROMPT_ECHO_OFF => self.print("PROMPT", text),
            PAM_PROMPT_ECHO_ON => self.print("PROMPT_ECHO", text),
            other => {
                self.print("UNKNOWN_STYLE", &other.to_string());
                return Err(());
            }
        }
        if !matches!(style, PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON) {
            return Ok(None);
        }
        if let Some(answer) = self.answers.pop_front() {
            return Ok(Some(answer));
        }
        if self.from_stdin {
            let mut line = String::new();
            if std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|_| ())?
                > 0
            {
                return Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()));
            }
        }
        self.print("NO_ANSWER", "conversation error returned");
        Err(())
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

/// The `pam_conv` callback. Linux-PAM passes `msg` as an array of `num_msg` pointers.
unsafe extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(num_msg) else {
        return PAM_CONV_ERR;
    };
    if count == 0 || msg.is_null() || resp.is_null() || appdata_ptr.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: `appdata_ptr` is the `Conversation` pam-host registered via `pam_conv`; it lives
    // until `pam_end` returns and nothing else touches it while libpam runs the stack on this
    // thread, so this is the only reference.
    let conversation = unsafe { &mut *appdata_ptr.cast::<Conversation>() };
    // SAFETY: calloc has no preconditions; libpam takes ownership and frees with free(3).
    let replies = unsafe { libc::calloc(count, size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for index in 0..count {
        // SAFETY: libpam passes `num_msg` valid message pointers in `msg`, each to a message
        // whose `msg` is a NUL-terminated string (or null) for the duration of this call.
        let (style, text) = unsafe {
            let message = &**msg.add(index);
            let text = if message.msg.is_null() {
                String::new()
            } else {
                CStr::from_ptr(message.msg).to_string_lossy().into_owned()
            };
            (message.msg_style, text)
        };
        let answer = match conversation.handle(style, &text) {
            Ok(answer) => answer,
            Err(()) => {
                // SAFETY: `replies` holds `count` entries from calloc, each null or strdup'ed.
                unsafe { free_replies(replies, count) };
                return PAM_CONV_ERR;
            }
        };
        if let Some(answer) = answer {
            let Ok(answer) = CString::new(answer) else {
                // SAFETY: as above.
                unsafe { free_replies(replies, count) };
                return PAM_CONV_ERR;
            };
            // SAFETY: `index < count`, inside the calloc'ed array; strdup copies a valid C string
            // into malloc'ed memory that libpam frees.
            unsafe {
                let copy = libc::strdup(answer.as_ptr());
                if copy.is_null() {
                    free_replies(replies, count);
                    return PAM_BUF_ERR;
                }
                (*replies.add(index)).resp = copy;
            }
        }
    }
    // SAFETY: `resp` is non-null and points at libpam's out-parameter.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// Frees a reply array built by `converse` on an error path.
///
/// # Safety
/// `replies` must point at `count` calloc'ed `PamResponse`s whose `resp` is null or malloc'ed.
unsafe fn free_replies(replies: *mut PamResponse, count: usize) {
    for index in 0..count {
        // SAFETY: the caller guarantees `replies` has `count` entries owning their strings.
        unsafe { libc::free((*replies.add(index)).resp.cast::<c_void>()) };
    }
    // SAFETY: `replies` came from calloc and is not used after this.
    unsafe { libc::free(replies.cast::<c_void>()) };
}
