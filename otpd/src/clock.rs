//! The wall clock, in the unit every decision uses: whole seconds since the Unix epoch. The
//! engine takes the time as an argument (unit tests inject it); this is where the daemon reads
//! it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 for a clock set before it.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
