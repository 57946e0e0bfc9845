//! What the kernel says about the system clock: `ntp_adjtime` as a read-only query.
#![allow(unsafe_code)]

/// What the kernel says about its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelClock {
    pub synchronised: bool,
    /// Maximum error estimate, microseconds.
    pub max_error_us: i64,
}

/// The kernel's clock state, read without changing anything.
pub fn kernel_clock() -> std::io::Result<KernelClock> {
    // SAFETY: `timex` is a plain C struct of integers, for which all-zero bytes are a valid
    // value; `modes = 0` makes ntp_adjtime a read-only query.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: `tx` is a valid, exclusively borrowed `timex` that outlives the call; with
    // `modes = 0` the kernel only writes the current state into it and changes nothing.
    let state = unsafe { libc::ntp_adjtime(&mut tx) };
    if state == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(KernelClock {
        synchronised: state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0,
        max_error_us: tx.maxerror,
    })
}
