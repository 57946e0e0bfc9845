//! The local time zone, from the C library (it knows the tz database and `TZ`): the offset
//! at an instant (`localtime_r`) and local time to Unix seconds (`mktime`).
#![allow(unsafe_code)]

/// The local zone's offset from UTC at `unix`, in seconds east, from `localtime_r`.
pub fn local_offset(unix: u64) -> Option<i64> {
    let time = libc::time_t::try_from(unix).ok()?;
    // Built field by field so no unsafe zeroing is needed; localtime_r overwrites it all.
    let mut tm = libc::tm {
        tm_sec: 0,
        tm_min: 0,
        tm_hour: 0,
        tm_mday: 0,
        tm_mon: 0,
        tm_year: 0,
        tm_wday: 0,
        tm_yday: 0,
        tm_isdst: 0,
        tm_gmtoff: 0,
        tm_zone: std::ptr::null(),
    };
    // SAFETY: both pointers come from live references to properly typed values for the whole
    // call; localtime_r is the reentrant variant (no shared static result), and it reads the
    // environment (TZ) only, which kronctl never modifies.
    let result = unsafe { libc::localtime_r(&time, &mut tm) };
    if result.is_null() {
        return None;
    }
    #[allow(
        clippy::useless_conversion,
        reason = "c_long is 32 bits on 32-bit targets"
    )]
    Some(i64::from(tm.tm_gmtoff))
}

/// Local time `tm` to Unix seconds with the C library's `mktime` (which normalises `tm`);
/// `None` where mktime fails.
pub fn mktime(tm: &mut libc::tm) -> Option<i64> {
    // SAFETY: `tm` is a live, fully initialised value for the whole call; mktime only reads
    // and normalises it and reads the zone (TZ), which kronctl never modifies.
    let unix = unsafe { libc::mktime(tm) };
    #[allow(
        clippy::useless_conversion,
        reason = "time_t is 32 bits on some targets"
    )]
    (unix != -1).then_some(i64::from(unix))
}
