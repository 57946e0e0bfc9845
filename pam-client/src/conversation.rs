//! The PAM conversation from the application's side: libpam calls [`converse`] with the
//! module's messages; a [`Converse`] implementation decides what to show and what to answer.

use std::ffi::{CStr, CString, c_int, c_void};

use zeroize::Zeroizing;

use crate::ffi::{
    PAM_BUF_ERR, PAM_CONV_ERR, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SUCCESS,
    PAM_TEXT_INFO, PamConv, PamMessage, PamResponse,
};

/// A message's style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A prompt whose answer is not echoed (a code, a password).
    PromptEchoOff,
    /// A prompt whose answer is echoed.
    PromptEchoOn,
    /// `PAM_ERROR_MSG`.
    Error,
    /// `PAM_TEXT_INFO`.
    Info,
    /// Any other style number.
    Other(c_int),
}

impl Style {
    fn of(style: c_int) -> Style {
        match style {
            PAM_PROMPT_ECHO_OFF => Style::PromptEchoOff,
            PAM_PROMPT_ECHO_ON => Style::PromptEchoOn,
            PAM_ERROR_MSG => Style::Error,
            PAM_TEXT_INFO => Style::Info,
            other => Style::Other(other),
        }
    }

    pub fn is_prompt(self) -> bool {
        matches!(self, Style::PromptEchoOff | Style::PromptEchoOn)
    }
}

/// A conversation that cannot go on (no answer left, a message it does not understand): the
/// module is told PAM_CONV_ERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

/// What an application does with each message of a conversation.
pub trait Converse {
    /// The answer to a prompt, `Ok(None)` for a message that is not one.
    fn message(&mut self, style: Style, text: &str) -> Result<Option<Zeroizing<String>>, Ended>;
}

/// The `pam_conv` that hands every message to `conversation`. It points at `conversation`:
/// keep that alive and otherwise unused until `pam_end` has returned.
pub fn pam_conv<C: Converse>(conversation: &mut C) -> PamConv {
    PamConv {
        conv: Some(converse::<C>),
        appdata_ptr: (conversation as *mut C).cast::<c_void>(),
    }
}

/// The `pam_conv` callback. Linux-PAM passes `msg` as an array of `num_msg` pointers.
unsafe extern "C" fn converse<C: Converse>(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    // A panic must not unwind into libpam's C frames.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the arguments are libpam's, passed straight through; see `answer_all`.
        unsafe { answer_all::<C>(num_msg, msg, resp, appdata_ptr) }
    }))
    .unwrap_or(PAM_CONV_ERR)
}

/// The body of [`converse`].
///
/// # Safety
/// As libpam calls a conversation: `msg` holds `num_msg` valid message pointers, `resp` is a
/// valid out-pointer, and `appdata_ptr` is the `C` registered by [`pam_conv`], alive and not
/// otherwise referenced during the call.
unsafe fn answer_all<C: Converse>(
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
    // SAFETY: `appdata_ptr` is the `C` registered through `pam_conv`; the caller guarantees it
    // is alive and that this is the only reference while libpam runs the stack.
    let conversation = unsafe { &mut *appdata_ptr.cast::<C>() };
    // SAFETY: calloc has no preconditions; libpam takes ownership and frees with free(3).
    let replies = unsafe { libc::calloc(count, size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for index in 0..count {
        // SAFETY: `index < num_msg`, and libpam passes that many pointers in `msg`.
        let message = unsafe { *msg.add(index) };
        if message.is_null() {
            // SAFETY: `replies` holds `count` entries from calloc, each null or strdup'ed.
            unsafe { free_replies(replies, count) };
            return PAM_CONV_ERR;
        }
        // SAFETY: `message` is non-null and libpam's message lives for this call; its `msg` is
        // a NUL-terminated string or null.
        let (style, text) = unsafe {
            let message = &*message;
            let text = if message.msg.is_null() {
                String::new()
            } else {
                CStr::from_ptr(message.msg).to_string_lossy().into_owned()
            };
            (message.msg_style, text)
        };
        let answer = match conversation.message(Style::of(style), &text) {
            Ok(answer) => answer,
            Err(Ended) => {
                // SAFETY: `replies` holds `count` entries from calloc, each null or strdup'ed.
                unsafe { free_replies(replies, count) };
                return PAM_CONV_ERR;
            }
        };
        let Some(answer) = answer else {
            continue;
        };
        let Ok(answer) = CString::new(answer.as_bytes()) else {
            // SAFETY: as above.
            unsafe { free_replies(replies, count) };
            return PAM_CONV_ERR;
        };
        let answer = Zeroizing::new(answer.into_bytes_with_nul());
        // SAFETY: `index < count`, inside the calloc'ed array; strdup copies the NUL-terminated
        // bytes into malloc'ed memory that libpam frees.
        unsafe {
            let copy = libc::strdup(answer.as_ptr().cast());
            if copy.is_null() {
                free_replies(replies, count);
                return PAM_BUF_ERR;
            }
            (*replies.add(index)).resp = copy;
        }
    }
    // SAFETY: `resp` is non-null and points at libpam's out-parameter.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// Frees a reply array built by [`answer_all`] on an error path.
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
