//! One login through the real libpam: `pam_start_confdir` + `pam_authenticate` + `pam_end`,
//! with a conversation that types the current code (computed by liboath when the prompt comes)
//! and ignores informational text.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::oath;

#[repr(C)]
struct PamHandle {
    _private: [u8; 0],
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

pub const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start_confdir(
        service_name: *const c_char,
        user: *const c_char,
        pam_conversation: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut PamHandle, pam_status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
}

/// What the conversation needs: whose code to type.
struct Typist<'a> {
    secret: &'a [u8],
    prompts: u32,
}

/// The result and timing of one login.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// pam_authenticate's result (or pam_start's, if that failed).
    pub code: c_int,
    /// pam_start_confdir → pam_end, the whole cost a login application pays.
    pub total: Duration,
    /// pam_authenticate alone.
    pub authenticate: Duration,
    /// Prompts answered (1 for every module here).
    pub prompts: u32,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == PAM_SUCCESS
    }
}

/// A PAM service in a private config directory (never /etc/pam.d).
#[derive(Debug)]
pub struct Service {
    name: CString,
    confdir: CString,
}

impl Service {
    pub fn new(name: &str, confdir: &str) -> Result<Service, String> {
        Ok(Service {
            name: CString::new(name).map_err(|_| "service name contains NUL")?,
            confdir: CString::new(confdir).map_err(|_| "confdir contains NUL")?,
        })
    }

    /// Logs `user` in once, typing the current code of `secret` at the prompt.
    pub fn login(&self, user: &str, secret: &[u8]) -> Outcome {
        let user = CString::new(user).expect("generated user names contain no NUL");
        let mut typist = Typist { secret, prompts: 0 };
        let conv = PamConv {
            conv: Some(converse),
            appdata_ptr: (&raw mut typist).cast::<c_void>(),
        };
        let mut handle: *mut PamHandle = std::ptr::null_mut();
        let start = Instant::now();
        // SAFETY: every string is a live NUL-terminated C string, `conv` and the `typist` it
        // points at outlive pam_end below, and `handle` is a valid out-pointer.
        let started = unsafe {
            pam_start_confdir(
                self.name.as_ptr(),
                user.as_ptr(),
                &conv,
                self.confdir.as_ptr(),
                &mut handle,
            )
        };
        if started != PAM_SUCCESS || handle.is_null() {
            return Outcome {
                code: started,
                total: start.elapsed(),
                authenticate: Duration::ZERO,
                prompts: 0,
            };
        }
        let auth_start = Instant::now();
        // SAFETY: `handle` came from a successful pam_start_confdir and is not yet ended.
        let code = unsafe { pam_authenticate(handle, 0) };
        let authenticate = auth_start.elapsed();
        // SAFETY: as above; the handle is not used after pam_end.
        unsafe { pam_end(handle, code) };
        Outcome {
            code,
            total: start.elapsed(),
            authenticate,
            prompts: typist.prompts,
        }
    }
}

/// The symbolic text of a PAM result, from libpam.
pub fn describe(code: c_int) -> String {
    // SAFETY: pam_strerror accepts a null handle in Linux-PAM and returns a static string.
    let text = unsafe { pam_strerror(std::ptr::null_mut(), code) };
    if text.is_null() {
        return format!("PAM error {code}");
    }
    // SAFETY: non-null results of pam_strerror are NUL-terminated static strings.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `pam_conv` callback: answers prompts with the current code, ignores everything else.
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
    // SAFETY: `appdata_ptr` is the `Typist` that `Service::login` registered; it lives until
    // pam_end returns and nothing else touches it while libpam runs the stack on this thread.
    let typist = unsafe { &mut *appdata_ptr.cast::<Typist<'_>>() };
    // SAFETY: calloc has no preconditions; libpam takes ownership and frees with free(3).
    let replies = unsafe { libc::calloc(count, size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for index in 0..count {
        // SAFETY: Linux-PAM passes `num_msg` valid message pointers in `msg`.
        let style = unsafe { (**msg.add(index)).msg_style };
        if !matches!(style, PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON) {
            continue;
        }
        typist.prompts += 1;
        let Ok(code) = oath::totp(typist.secret, unix_now(), crate::population::PERIOD) else {
            // SAFETY: `replies` holds `count` calloc'ed entries, each null or strdup'ed.
            unsafe { free_replies(replies, count) };
            return PAM_CONV_ERR;
        };
        let code = CString::new(code).expect("digits contain no NUL");
        // SAFETY: `index < count`; strdup copies a valid C string into memory libpam frees.
        unsafe {
            let copy = libc::strdup(code.as_ptr());
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
