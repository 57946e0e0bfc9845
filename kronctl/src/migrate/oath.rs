//! pam_oath's users file (`usersfile=` of pam_oath, liboath's UsersFile format), one token a
//! line, fields separated by blanks:
//!
//! ```text
//! HOTP/T30    root  -  3132333435363738393031323334353637383930  1  287819  2026-11-23T15:09:37L
//! type        user  pin  hex secret                              [ position/counter  last OTP  when ]
//! ```
//!
//! - type: `HOTP`, `HOTP/E[/6|7|8]` (counter-based) or `HOTP/T30`, `HOTP/T60` with an optional
//!   `/6`, `/7`, `/8` (time-based, that many digits, 30 or 60 s). Always HMAC-SHA1.
//! - pin: `-` none, `+` checked by another module, else a password typed before the code.
//! - the last three fields are written back by pam_oath after each success. For time-based
//!   lines the first is *not* a counter: it is the offset, in steps, of the accepted code from
//!   the step of the timestamp, which is local time with an `L` suffix. The last used step is
//!   therefore `floor(when / period) + offset` — exactly how liboath computes it to refuse
//!   replays (verified by logging in through pam_oath, see docs/migration.md).
//!
//! Parsing is pure; local time is converted by the function passed in.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::{Found, Parsed, Token, check_secret_len};

/// Largest users file accepted.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Longest line considered (liboath's secrets fit in 64 hex digits).
const MAX_LINE: usize = 4096;
/// Largest search position (steps from the time of the last code) taken from a line: pam_oath
/// searches a window of a few steps; this is weeks of them.
const MAX_SEARCH_POSITION: u64 = 100_000;

/// A time-stamp as pam_oath writes it (`%Y-%m-%dT%H:%M:%SL`), still in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Every token line of a users file, in file order; `source` names `path:line`.
/// `to_unix` turns a local time into Unix seconds (`None` if it does not exist).
pub fn parse(text: &[u8], path: &str, to_unix: &dyn Fn(LocalTime) -> Option<i64>) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let source = format!("{path}:{number}");
        let Ok(line) = std::str::from_utf8(raw) else {
            found.push(Found::unnamed(
                source,
                "malformed: the line is not text (UTF-8)",
            ));
            continue;
        };
        let mut fields = line.split_ascii_whitespace();
        let Some(kind) = fields.next() else { continue };
        if kind.starts_with('#') {
            continue;
        }
        let Some(user) = fields.next() else {
            found.push(Found::unnamed(source, "malformed: no user name"));
            continue;
        };
        if let Err(reason) = kron_proto::validate_user(user) {
            found.push(Found::unnamed(source, format!("malformed: {reason}")));
            continue;
        }
        let user = user.to_owned();
        let mut notes = Vec::new();
        let mut token = if line.len() > MAX_LINE {
            Err("malformed: line too long".into())
        } else {
            parse_line(kind, fields, to_unix, &mut notes)
        };
        // A line whose columns are out of place can have its key where the user belongs: the
        // report names a user, so such a "user" is not named.
        if token.is_err() && user.len() >= 20 && user.bytes().all(|b| b.is_ascii_hexdigit()) {
            found.push(Found::unnamed(
                source,
                "malformed: the user field looks like a key (columns out of place?)",
            ));
            continue;
        }
        // liboath tries every line of a user in turn; kron keeps one token per user: the first
        // one it can use.
        if token.is_ok() {
            if let Some(first) = first_line_of.get(&user) {
                token = Err(format!(
                    "another token for this user on line {first} comes first \
                     (kron keeps one token per user)"
                ));
                notes.clear();
            } else {
                first_line_of.insert(user.clone(), number);
            }
        }
        found.push(Found {
            user,
            source,
            parsed: Parsed { token, notes },
        });
    }
    found
}

fn parse_line<'a>(
    kind: &str,
    mut fields: impl Iterator<Item = &'a str>,
    to_unix: &dyn Fn(LocalTime) -> Option<i64>,
    notes: &mut Vec<String>,
) -> Result<Token, String> {
    let (period, digits) = token_type(kind)?;
    let pin = fields.next().ok_or("malformed: no PIN field")?;
    let hex = fields.next().ok_or("malformed: no secret")?;
    let secret = decode_hex(hex).ok_or("malformed: the secret is not hexadecimal")?;
    check_secret_len(&secret)?;
    let last_step = match fields.next() {
        None => 0,
        Some(offset) => {
            let offset: i64 = offset
                .parse()
                .map_err(|_| "malformed: invalid search position")?;
            let _last_otp = fields.next().ok_or("malformed: no last OTP")?;
            let when = fields.next().ok_or("malformed: no time of the last OTP")?;
            let local = parse_local_time(when).ok_or("malformed: invalid time of the last OTP")?;
            let unix = to_unix(local).ok_or("malformed: invalid time of the last OTP")?;
            // pam_oath's search position is a handful of steps; anything far off is a broken
            // line, not a token to lock its user out with (or to overflow on).
            if offset.unsigned_abs() > MAX_SEARCH_POSITION {
                return Err("malformed: invalid search position".into());
            }
            let step = unix.div_euclid(period as i64) + offset;
            u64::try_from(step).map_err(|_| "malformed: the last used step is before 1970")?
        }
    };
    if fields.next().is_some() {
        return Err("malformed: extra fields".into());
    }
    if digits == 7 {
        return Err("unsupported: 7-digit codes; kron supports 6 and 8".into());
    }
    match pin {
        "-" | "+" => {}
        _ => notes.push(
            "the PIN is not carried over: kron asks for the code alone (the password module \
             before pam_kron stays the first factor)"
                .into(),
        ),
    }
    Ok(Token {
        secret,
        digits,
        period,
        last_step,
        recovery_codes: Default::default(),
    })
}

/// (period, digits) of a time-based type; counter-based and unknown types are refused.
fn token_type(kind: &str) -> Result<(u64, u8), String> {
    let mut parts = kind.split('/');
    if parts.next() != Some("HOTP") {
        return Err("malformed: unknown token type".into());
    }
    let (period, digits) = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("E"), None | Some("6" | "7" | "8"), None) => {
            return Err(
                "unsupported: counter-based (HOTP) token; kron supports time-based \
                        tokens only"
                    .into(),
            );
        }
        (Some("T30"), digits, None) => (30, digits),
        (Some("T60"), digits, None) => (60, digits),
        _ => return Err("malformed: unknown token type".into()),
    };
    let digits = match digits {
        None | Some("6") => 6,
        Some("7") => 7,
        Some("8") => 8,
        Some(_) => return Err("malformed: unknown token type".into()),
    };
    Ok((period, digits))
}

fn decode_hex(text: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| char::from(b).to_digit(16);
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(text.len() / 2));
    for pair in text.as_bytes().chunks(2) {
        out.push((nibble(pair[0])? * 16 + nibble(pair[1])?) as u8);
    }
    Some(out)
}

/// `2026-11-23T15:09:37L`
fn parse_local_time(text: &str) -> Option<LocalTime> {
    let text = text.strip_suffix('L')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-');
    let mut time = time.split(':');
    let next = |part: Option<&str>, len: usize| -> Option<u32> {
        let part = part?;
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())?
    };
    let local = LocalTime {
        year: next(date.next(), 4)? as i32,
        month: next(date.next(), 2)?,
        day: next(date.next(), 2)?,
        hour: next(time.next(), 2)?,
        minute: next(time.next(), 2)?,
        second: next(time.next(), 2)?,
    };
    let valid = date.next().is_none()
        && time.next().is_none()
        && (1..=12).contains(&local.month)
        && (1..=31).contains(&local.day)
        && local.hour < 24
        && local.minute < 60
        && local.second <= 60;
    valid.then_some(local)
}

/// Local time to Unix seconds with the C library's `mktime`, as liboath does (daylight
/// saving time decided by the zone rules: `tm_isdst = -1`).
pub fn mktime(local: LocalTime) -> Option<i64> {
    let mut tm = libc::tm {
        tm_sec: local.second as libc::c_int,
        tm_min: local.minute as libc::c_int,
        tm_hour: local.hour as libc::c_int,
        tm_mday: local.day as libc::c_int,
        tm_mon: local.month as libc::c_int - 1,
        tm_year: local.year - 1900,
        tm_wday: 0,
        tm_yday: 0,
        tm_isdst: -1,
        tm_gmtoff: 0,
        tm_zone: std::ptr::null(),
    };
    crate::sys::localtime::mktime(&mut tm)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "3132333435363738393031323334353637383930";

    /// Local time read as UTC, with the civil-from-days arithmetic spelled out.
    fn utc(t: LocalTime) -> Option<i64> {
        let (y, m) = if t.month <= 2 {
            (t.year - 1, t.month + 9)
        } else {
            (t.year, t.month - 3)
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m as i32 + 2) / 5 + t.day as i32 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = i64::from(era) * 146_097 + i64::from(doe) - 719_468;
        Some(days * 86_400 + i64::from(t.hour * 3600 + t.minute * 60 + t.second))
    }

    fn parse_text(text: &str) -> Vec<Found> {
        parse(text.as_bytes(), "/etc/users.oath", &utc)
    }

    #[test]
    fn the_line_pam_oath_wrote_back_gives_the_last_used_step() {
        // After logging in with the code of step 59848220 at 15:09:37 UTC (step 59848219):
        // pam_oath wrote offset 1.
        let found = parse_text(&format!(
            "HOTP/T30\troot\t-\t{SECRET}\t1\t287819\t2026-11-23T15:09:37L\n"
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].user, "root");
        assert_eq!(found[0].source, "/etc/users.oath:1");
        let token = found[0].parsed.token.as_ref().unwrap();
        assert_eq!(*token.secret, b"12345678901234567890");
        assert_eq!((token.digits, token.period), (6, 30));
        assert_eq!(
            utc(parse_local_time("2026-11-23T15:09:37L").unwrap()),
            Some(1_795_446_577)
        );
        assert_eq!(token.last_step, 1_795_446_577 / 30 + 1);
        assert!(found[0].parsed.notes.is_empty());
    }

    #[test]
    fn types_digits_and_periods() {
        let found = parse_text(&format!(
            "# comment\n\nHOTP/T60/8 alice - {SECRET}\nHOTP/T30/6 bob + {SECRET} -1 123456 \
             2026-11-23T15:09:37L\nHOTP carol - {SECRET} 5\nHOTP/E/8 dave - {SECRET}\n\
             HOTP/T30/7 erin - {SECRET}\nTOTP frank - {SECRET}\nHOTP/T45 gina - {SECRET}\n"
        ));
        let users: Vec<_> = found.iter().map(|f| f.user.as_str()).collect();
        assert_eq!(
            users,
            ["alice", "bob", "carol", "dave", "erin", "frank", "gina"]
        );
        let alice = found[0].parsed.token.as_ref().unwrap();
        assert_eq!((alice.digits, alice.period, alice.last_step), (8, 60, 0));
        let bob = found[1].parsed.token.as_ref().unwrap();
        assert_eq!(bob.last_step, 1_795_446_577 / 30 - 1, "a negative offset");
        assert_eq!(found[1].source, "/etc/users.oath:4");
        for hotp in &found[2..4] {
            assert!(
                hotp.parsed
                    .token
                    .as_ref()
                    .unwrap_err()
                    .starts_with("unsupported: counter-based")
            );
        }
        assert!(
            found[4]
                .parsed
                .token
                .as_ref()
                .unwrap_err()
                .contains("7-digit")
        );
        for unknown in &found[5..7] {
            assert_eq!(
                unknown.parsed.token.as_ref().unwrap_err(),
                "malformed: unknown token type"
            );
        }
    }

    #[test]
    fn pins_duplicates_and_malformed_lines() {
        let found = parse_text(&format!(
            "HOTP/T30 alice 1234 {SECRET}\nHOTP/T30 alice - {SECRET}\nHOTP/T30 bob - zz\n\
             HOTP/T30 carol - {SECRET} 0 123456\nHOTP/T30 dave - {SECRET} 0 1 2026-13-01T00:00:00L\n\
             HOTP/T30 erin - 31323334\nHOTP/T30\nHOTP/T30 a:b - {SECRET}\n\
             HOTP/T30 fay - {SECRET} 0 1 2026-11-23T15:09:37L extra\n\
             HOTP/T30 gil - {SECRET} 9223372036854775807 1 2026-11-23T15:09:37L\n\
             HOTP/T30 {SECRET} -\n"
        ));
        assert!(found[0].parsed.token.is_ok());
        assert!(found[0].parsed.notes[0].starts_with("the PIN is not carried over"));
        assert_eq!(
            found[1].parsed.token.as_ref().unwrap_err(),
            "another token for this user on line 1 comes first (kron keeps one token per user)"
        );
        let reasons: Vec<&str> = found[2..]
            .iter()
            .map(|f| f.parsed.token.as_ref().unwrap_err().as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "malformed: the secret is not hexadecimal",
                "malformed: no time of the last OTP",
                "malformed: invalid time of the last OTP",
                "unsupported: a secret of 4 bytes is outside 10..=64",
                "malformed: no user name",
                "malformed: user name contains whitespace, a control character, '/', '\\' or ':'",
                "malformed: extra fields",
                "malformed: invalid search position",
                "malformed: the user field looks like a key (columns out of place?)",
            ]
        );
        assert_eq!(found[6].user, "", "no user to name");
        // Nothing of a secret is ever quoted.
        for f in &found {
            if let Err(reason) = &f.parsed.token {
                assert!(!reason.contains("3132"), "{reason}");
            }
        }
    }

    #[test]
    fn crlf_and_non_utf8_lines() {
        let mut text = format!("HOTP/T30 alice - {SECRET}\r\n").into_bytes();
        text.extend_from_slice(b"HOTP/T30 \xff - 00\n");
        let found = parse(&text, "f", &utc);
        assert!(found[0].parsed.token.is_ok());
        assert_eq!(
            found[1].parsed.token.as_ref().unwrap_err(),
            "malformed: the line is not text (UTF-8)"
        );
    }

    #[test]
    fn mktime_reads_local_time() {
        // Whatever the zone, a day later is 86400 s later away from DST changes, and the
        // result is within a day of the same wall time in UTC.
        let t = parse_local_time("2026-07-01T12:00:00L").unwrap();
        let unix = mktime(t).unwrap();
        assert!((unix - utc(t).unwrap()).abs() <= 86_400);
        let next = LocalTime { day: 2, ..t };
        assert_eq!(mktime(next).unwrap() - unix, 86_400);
        assert_eq!(parse_local_time("2026-07-01T12:00:00"), None);
        assert_eq!(parse_local_time("2026-7-01T12:00:00L"), None);
    }
}
