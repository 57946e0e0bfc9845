//! Human-readable times: local wall-clock dates and "in 10 minutes" / "3 hours ago".
//!
//! Formatting is pure arithmetic on (unix time, UTC offset) so tests can pin both; only
//! [`Zone::Local`] asks the C library for the offset (it knows the tz database and `TZ`), which
//! avoids a date-time dependency for a few lines of output.
#![forbid(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use crate::sys::localtime::local_offset;

/// Latest time formatted as a date (9999-12-31 23:59:59 UTC); later values are shown raw.
const MAX_DATE: u64 = 253_402_300_799;

/// Where wall-clock times are shown.
#[derive(Debug, Clone, Copy)]
enum Zone {
    /// The system's local time zone, offset looked up per instant (DST changes).
    Local,
    /// A fixed offset in seconds east of UTC, so tests do not depend on the machine's zone.
    #[cfg(test)]
    Fixed(i64),
}

/// The current time plus the zone to show times in.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    now: u64,
    zone: Zone,
}

impl Clock {
    /// Now, in the local time zone.
    pub fn local() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Clock {
            now,
            zone: Zone::Local,
        }
    }

    /// A fixed instant and offset, for tests.
    #[cfg(test)]
    pub fn fixed(now: u64, offset_seconds: i64) -> Self {
        Clock {
            now,
            zone: Zone::Fixed(offset_seconds),
        }
    }

    /// `2025-01-02 15:04:05 +01:00`
    pub fn datetime(&self, unix: u64) -> String {
        self.format(unix, true)
    }

    /// `2025-01-02 15:04`, for table columns.
    pub fn short(&self, unix: u64) -> String {
        self.format(unix, false)
    }

    /// `in 10 minutes`, `3 hours ago`, `now`.
    pub fn relative(&self, unix: u64) -> String {
        if unix >= self.now {
            match unix - self.now {
                0 => "now".into(),
                ahead => format!("in {}", span(ahead)),
            }
        } else {
            format!("{} ago", span(self.now - unix))
        }
    }

    /// `3 hours ago`, for instants that lie in the past by nature (last use): one stamped in
    /// the current second, or a little ahead by clock skew, reads `just now`.
    pub fn ago(&self, unix: u64) -> String {
        match self.now.checked_sub(unix) {
            Some(0) | None => "just now".into(),
            Some(behind) => format!("{} ago", span(behind)),
        }
    }

    /// `2025-01-02 15:04:05 +01:00 (3 hours ago)`
    pub fn datetime_and_ago(&self, unix: u64) -> String {
        format!("{} ({})", self.datetime(unix), self.ago(unix))
    }

    /// `2025-01-02 15:04:05 +01:00 (in 10 minutes)`
    pub fn datetime_and_relative(&self, unix: u64) -> String {
        format!("{} ({})", self.datetime(unix), self.relative(unix))
    }

    fn offset(&self, unix: u64) -> i64 {
        match self.zone {
            #[cfg(test)]
            Zone::Fixed(offset) => offset,
            // An unknown zone is shown as UTC, with its "+00:00" saying so.
            Zone::Local => local_offset(unix).unwrap_or(0),
        }
    }

    fn format(&self, unix: u64, long: bool) -> String {
        if unix > MAX_DATE {
            return format!("@{unix}");
        }
        let offset = self.offset(unix);
        // Both fit easily: unix <= MAX_DATE and real offsets are under a day.
        let local = unix as i64 + offset;
        let (year, month, day) = civil_from_days(local.div_euclid(86_400));
        let second_of_day = local.rem_euclid(86_400);
        let (hour, minute, second) = (
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
        );
        if !long {
            return format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}");
        }
        let sign = if offset < 0 { '-' } else { '+' };
        let (off_h, off_m) = (offset.abs() / 3600, offset.abs() / 60 % 60);
        format!(
            "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} {sign}{off_h:02}:{off_m:02}"
        )
    }
}

/// A length of time as [`span`] writes it (`8 hours`).
pub fn duration(seconds: u64) -> String {
    span(seconds)
}

/// `1 second`, `10 minutes`, `5 hours`, `3 days`: the largest unit that reads naturally,
/// rounded down so a deadline is never overstated.
fn span(seconds: u64) -> String {
    let (count, unit) = match seconds {
        0..60 => (seconds, "second"),
        60..3_600 => (seconds / 60, "minute"),
        3_600..172_800 => (seconds / 3_600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = (if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    }) as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2025-01-02 14:04:05 UTC
    const T: u64 = 1_735_826_645;

    #[test]
    fn formats_dates_in_a_fixed_zone() {
        assert_eq!(Clock::fixed(T, 0).datetime(T), "2025-01-02 14:04:05 +00:00");
        assert_eq!(
            Clock::fixed(T, 3600).datetime(T),
            "2025-01-02 15:04:05 +01:00"
        );
        assert_eq!(
            Clock::fixed(T, -(5 * 3600 + 1800)).datetime(T),
            "2025-01-02 08:34:05 -05:30"
        );
        assert_eq!(Clock::fixed(T, 10 * 3600).short(T), "2025-01-03 00:04");
        assert_eq!(Clock::fixed(0, 0).datetime(0), "1970-01-01 00:00:00 +00:00");
        assert_eq!(Clock::fixed(0, -3600).short(0), "1969-12-31 23:00");
    }

    #[test]
    fn calendar_edges() {
        // 2024-02-29 (leap day) and 2000-03-01 (after a 400-year leap day).
        assert_eq!(Clock::fixed(0, 0).short(1_709_164_800), "2024-02-29 00:00");
        assert_eq!(Clock::fixed(0, 0).short(951_868_800), "2000-03-01 00:00");
        assert_eq!(
            Clock::fixed(0, 0).datetime(MAX_DATE),
            "9999-12-31 23:59:59 +00:00"
        );
        assert_eq!(
            Clock::fixed(0, 0).datetime(u64::MAX),
            format!("@{}", u64::MAX)
        );
    }

    #[test]
    fn relative_times_round_down() {
        let clock = Clock::fixed(T, 0);
        assert_eq!(clock.relative(T), "now");
        assert_eq!(clock.relative(T + 1), "in 1 second");
        assert_eq!(clock.relative(T + 59), "in 59 seconds");
        assert_eq!(clock.relative(T + 600), "in 10 minutes");
        assert_eq!(clock.relative(T + 599), "in 9 minutes");
        assert_eq!(clock.relative(T - 3 * 3600 - 5), "3 hours ago");
        assert_eq!(clock.relative(T - 60), "1 minute ago");
        assert_eq!(clock.relative(T - 47 * 3600), "47 hours ago");
        assert_eq!(clock.relative(T - 3 * 86_400), "3 days ago");
        assert_eq!(clock.ago(T), "just now");
        assert_eq!(clock.ago(T + 20), "just now");
        assert_eq!(clock.ago(T - 90), "1 minute ago");
        assert_eq!(
            clock.datetime_and_ago(T - 3600),
            "2025-01-02 13:04:05 +00:00 (1 hour ago)"
        );
        assert_eq!(
            clock.datetime_and_relative(T + 600),
            "2025-01-02 14:14:05 +00:00 (in 10 minutes)"
        );
    }

    #[test]
    fn local_zone_gives_a_plausible_offset() {
        let offset = local_offset(T).expect("localtime_r works");
        assert!(offset.abs() <= 14 * 3600, "offset {offset}");
        let shown = Clock::local().datetime(T);
        assert_eq!(shown.len(), "2025-01-02 14:04:05 +00:00".len(), "{shown}");
    }
}
