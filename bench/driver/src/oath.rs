//! Codes come from liboath (OATH Toolkit), an implementation independent of kron's totp-rs, so
//! a benchmark login proves the modules agree with a third party rather than with themselves.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

type InitFn = unsafe extern "C" fn() -> c_int;
type TotpGenerateFn = unsafe extern "C" fn(
    secret: *const c_char,
    secret_length: usize,
    now: libc::time_t,
    time_step_size: c_uint,
    start_offset: libc::time_t,
    digits: c_uint,
    output_otp: *mut c_char,
) -> c_int;

/// liboath's entry points, loaded at run time from the library package (liboath0, which
/// oathtool and libpam-oath depend on), so building the workspace needs no liboath-dev.
struct Liboath {
    init: InitFn,
    totp_generate: TotpGenerateFn,
}

const OATH_OK: c_int = 0;

static LIBOATH: OnceLock<Result<Liboath, String>> = OnceLock::new();

fn liboath() -> Result<&'static Liboath, String> {
    LIBOATH.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Liboath, String> {
    let name = c"liboath.so.0";
    // SAFETY: `name` is a NUL-terminated string; the handle is never closed, so the symbols
    // stay valid for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        return Err(format!(
            "cannot load liboath.so.0 ({}); install liboath0",
            dl_error()
        ));
    }
    let symbol = |symbol: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: `handle` is a live dlopen handle and `symbol` is NUL-terminated.
        let address = unsafe { libc::dlsym(handle, symbol.as_ptr()) };
        if address.is_null() {
            Err(format!("liboath has no {symbol:?}"))
        } else {
            Ok(address)
        }
    };
    let (init, totp_generate) = (symbol(c"oath_init")?, symbol(c"oath_totp_generate")?);
    // SAFETY: both symbols are functions with exactly these C signatures (liboath/oath.h).
    unsafe {
        Ok(Liboath {
            init: std::mem::transmute::<*mut c_void, InitFn>(init),
            totp_generate: std::mem::transmute::<*mut c_void, TotpGenerateFn>(totp_generate),
        })
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    let text = unsafe { libc::dlerror() };
    if text.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated, read before any other dl call.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// Loads and initialises liboath; call once before any code is computed.
pub fn init() -> Result<(), String> {
    let lib = liboath()?;
    // SAFETY: oath_init takes no arguments; calling it again is allowed (pam_oath does so on
    // every call in this very process).
    match unsafe { (lib.init)() } {
        OATH_OK => Ok(()),
        rc => Err(format!("oath_init failed: {rc}")),
    }
}

/// The 6-digit TOTP code of `secret` for unix time `now` with `period`-second steps.
pub fn totp(secret: &[u8], now: u64, period: u64) -> Result<String, String> {
    let lib = liboath()?;
    let mut out = [0 as c_char; 16];
    let now = libc::time_t::try_from(now).map_err(|_| "time out of range".to_string())?;
    let period = c_uint::try_from(period).map_err(|_| "period out of range".to_string())?;
    // SAFETY: `secret` is valid for `secret.len()` bytes; `out` has room for 6 digits and the
    // terminating NUL that liboath writes.
    let rc = unsafe {
        (lib.totp_generate)(
            secret.as_ptr().cast::<c_char>(),
            secret.len(),
            now,
            period,
            0,
            6,
            out.as_mut_ptr(),
        )
    };
    if rc != OATH_OK {
        return Err(format!("oath_totp_generate failed: {rc}"));
    }
    Ok(out
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| char::from(c as u8))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc6238_sha1_vector() {
        super::init().unwrap();
        // RFC 6238 appendix B, T = 59, SHA1, 8 digits "94287082": the last 6 digits.
        assert_eq!(
            super::totp(b"12345678901234567890", 59, 30).unwrap(),
            "287082"
        );
    }
}
