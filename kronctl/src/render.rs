//! Output of every command, as text for people or JSON for scripts.
//!
//! Pure functions from otpd's answers to the exact bytes printed, so tests can pin the shape.
//! Strings that came over the bus are shown through [`one_line`] in text output (JSON escapes
//! them by itself): kronctl may be pointed at any bus, and a peer there must not be able to
//! send terminal escape sequences or fake extra lines.
#![forbid(unsafe_code)]

use std::path::Path;

use kron_proto::{Delivery, Enrollment, UserStatus};
use serde::Serialize;

use crate::time::Clock;

/// Longest text from the bus shown in one message; otpd's texts are short sentences.
const MAX_SHOWN_CHARS: usize = 512;

/// Makes `text` safe to show as part of one terminal line: control characters (newlines,
/// escapes) become spaces and overlong text is cut.
pub fn one_line(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(MAX_SHOWN_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_SHOWN_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// `JBSWY3DPEHPK3PXP` → `JBSW Y3DP EHPK 3PXP`, easier to type into an app by hand.
pub fn group_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Serializes a JSON value as one line. Serializing these plain structs cannot fail.
pub fn json_line(value: &impl Serialize) -> String {
    let mut line = serde_json::to_string(value).expect("plain data serializes");
    line.push('\n');
    line
}

// ---------------------------------------------------------------------------------- enroll

/// What `enroll` shows besides otpd's answer.
#[derive(Debug)]
pub struct EnrollExtras<'a> {
    /// Terminal QR code; `None` if the URI could not be rendered.
    pub qr: Option<&'a str>,
    /// Where the PNG was written, if asked.
    pub png: Option<&'a Path>,
    /// The user as given on the command line, for the `kronctl confirm` hint; `None` for self.
    pub requested_user: Option<&'a str>,
}

pub fn enroll_human(enrollment: &Enrollment, extras: &EnrollExtras<'_>, clock: &Clock) -> String {
    let mut out = format!(
        "Enrolling a TOTP token for {}.\n\n",
        one_line(&enrollment.user)
    );
    match extras.qr {
        Some(qr) => {
            out.push_str("Scan this QR code with your authenticator app:\n\n");
            out.push_str(qr);
            if !qr.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("\nOr enter this secret by hand (time-based):\n");
        }
        None => out.push_str(
            "The QR code cannot be shown here; enter this secret by hand (time-based):\n",
        ),
    }
    out.push_str(&format!(
        "    {}\n",
        one_line(&group_secret(&enrollment.secret))
    ));
    out.push_str(&format!(
        "otpauth URI:\n    {}\n",
        one_line(&enrollment.uri)
    ));
    if let Some(png) = extras.png {
        out.push_str(&format!(
            "QR code image: {} (mode 0600; it holds the secret, delete it once scanned)\n",
            one_line(&png.display().to_string())
        ));
    }
    let confirm = match extras.requested_user {
        Some(user) => format!("kronctl confirm {} CODE", one_line(user)),
        None => "kronctl confirm CODE".to_owned(),
    };
    out.push_str(&format!(
        "\nThe token stays inactive until confirmed. This enrollment expires at {}.\n\
         Finish it with the code the app shows now:\n    {confirm}\n",
        clock.datetime_and_relative(enrollment.expires)
    ));
    out
}

#[derive(Serialize)]
struct EnrollJson<'a> {
    user: &'a str,
    uri: &'a str,
    secret: &'a str,
    expires: u64,
    png: Option<String>,
}

pub fn enroll_json(enrollment: &Enrollment, png: Option<&Path>) -> String {
    json_line(&EnrollJson {
        user: &enrollment.user,
        uri: &enrollment.uri,
        secret: &enrollment.secret,
        expires: enrollment.expires,
        png: png.map(|path| path.display().to_string()),
    })
}

// --------------------------------------------------------------------------------- confirm

pub fn confirm_human(user: Option<&str>) -> String {
    match user {
        Some(user) => format!(
            "Token confirmed for {}; it is active now.\n",
            one_line(user)
        ),
        None => "Token confirmed; it is active now.\n".to_owned(),
    }
}

#[derive(Serialize)]
struct ConfirmJson<'a> {
    /// `null` when the caller confirmed their own token.
    user: Option<&'a str>,
    confirmed: bool,
}

pub fn confirm_json(user: Option<&str>) -> String {
    json_line(&ConfirmJson {
        user,
        confirmed: true,
    })
}

// ---------------------------------------------------------------------------------- status

/// The JSON shape of one user: spelled out here rather than serializing the wire type, so the
/// CLI's documented output does not change when the D-Bus struct does.
#[derive(Serialize)]
pub(crate) struct StatusJson<'a> {
    user: &'a str,
    enrolled: bool,
    pending: bool,
    locked: bool,
    /// Unix seconds; 0 when not locked.
    locked_until: u64,
    failures: u32,
    /// Unix seconds; 0 when never.
    last_used: u64,
    /// Unused recovery codes.
    recovery_codes: u32,
    /// Masked; "" when none.
    email: &'a str,
    /// Masked; "" when none.
    phone: &'a str,
}

impl<'a> From<&'a UserStatus> for StatusJson<'a> {
    fn from(status: &'a UserStatus) -> Self {
        StatusJson {
            user: &status.user,
            enrolled: status.enrolled,
            pending: status.pending,
            locked: status.locked,
            locked_until: status.locked_until,
            failures: status.failures,
            last_used: status.last_used,
            recovery_codes: status.recovery_codes,
            email: &status.email,
            phone: &status.phone,
        }
    }
}

pub fn status_json(status: &UserStatus) -> String {
    json_line(&StatusJson::from(status))
}

fn token_state(status: &UserStatus) -> &'static str {
    match (status.enrolled, status.pending) {
        (true, false) => "enrolled",
        (true, true) => "enrolled; a new enrollment waits for `kronctl confirm`",
        (false, true) => "pending; the enrollment waits for `kronctl confirm`",
        (false, false) => "not enrolled",
    }
}

pub fn status_human(status: &UserStatus, clock: &Clock) -> String {
    let locked = match (status.locked, status.locked_until) {
        (false, _) => "no".to_owned(),
        (true, 0) => "yes".to_owned(),
        (true, until) => format!("yes, until {}", clock.datetime_and_relative(until)),
    };
    let last_used = match status.last_used {
        0 => "never".to_owned(),
        when => clock.datetime_and_ago(when),
    };
    let recovery = match status.recovery_codes {
        0 => "none".to_owned(),
        1 => "1 code left".to_owned(),
        left => format!("{left} codes left"),
    };
    format!(
        "user:      {}\ntoken:     {}\nrecovery:  {recovery}\nlocked:    {locked}\nfailures:  {}\n\
         last used: {last_used}\n{}",
        one_line(&status.user),
        token_state(status),
        status.failures,
        contact_lines(status),
    )
}

/// "email:     a***@example.com\nphone:     none\n".
fn contact_lines(status: &UserStatus) -> String {
    let shown = |masked: &str| match masked {
        "" => "none".to_owned(),
        masked => one_line(masked),
    };
    format!(
        "email:     {}\nphone:     {}\n",
        shown(&status.email),
        shown(&status.phone)
    )
}

// ------------------------------------------------------------------------- contacts, sending

#[derive(Serialize)]
struct ContactJson<'a> {
    user: &'a str,
    email: &'a str,
    phone: &'a str,
}

pub fn contact_json(status: &UserStatus) -> String {
    json_line(&ContactJson {
        user: &status.user,
        email: &status.email,
        phone: &status.phone,
    })
}

pub fn contact_human(status: &UserStatus) -> String {
    format!(
        "user:      {}\n{}",
        one_line(&status.user),
        contact_lines(status)
    )
}

fn by(channel: &str) -> &'static str {
    match channel {
        "sms" => "by SMS",
        _ => "by email",
    }
}

/// Told on stderr before kronctl asks for the validation code.
pub fn code_sent_human(delivery: &Delivery, clock: &Clock) -> String {
    format!(
        "A verification code was sent {} to {}; it is valid until {}.",
        by(&delivery.channel),
        one_line(&delivery.destination),
        clock.datetime_and_relative(delivery.expires)
    )
}

#[derive(Serialize)]
struct DeliveryJson<'a> {
    user: &'a str,
    channel: &'a str,
    destination: &'a str,
    /// Unix seconds.
    expires: u64,
}

pub fn delivery_json(user: &str, delivery: &Delivery) -> String {
    json_line(&DeliveryJson {
        user,
        channel: &delivery.channel,
        destination: &delivery.destination,
        expires: delivery.expires,
    })
}

pub fn delivery_human(user: &str, delivery: &Delivery, clock: &Clock) -> String {
    format!(
        "The enrollment for {} was sent {} to {}.\nIt stays inactive until {} enters a code from \
         the app at the next login (or with `kronctl confirm`), before {}.\n",
        one_line(user),
        by(&delivery.channel),
        one_line(&delivery.destination),
        one_line(user),
        clock.datetime_and_relative(delivery.expires)
    )
}

// ----------------------------------------------------------------------- reset and unlock

/// An administrative action on one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAction {
    Reset,
    Unlock,
}

/// `changed` is otpd's answer: whether there was anything to reset or unlock.
pub fn admin_human(action: AdminAction, user: &str, changed: bool) -> String {
    let user = one_line(user);
    match (action, changed) {
        (AdminAction::Reset, true) => {
            format!("reset {user}: token, pending enrollment and counters removed\n")
        }
        (AdminAction::Reset, false) => format!("reset {user}: nothing to reset\n"),
        (AdminAction::Unlock, true) => {
            format!("unlock {user}: failed attempts and backoff cleared\n")
        }
        (AdminAction::Unlock, false) => format!("unlock {user}: not locked, nothing to do\n"),
    }
}

#[derive(Serialize)]
struct AdminJson<'a> {
    user: &'a str,
    action: AdminAction,
    changed: bool,
}

pub fn admin_json(action: AdminAction, user: &str, changed: bool) -> String {
    json_line(&AdminJson {
        user,
        action,
        changed,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    // 2025-01-02 14:04:05 UTC
    pub(crate) const NOW: u64 = 1_735_826_645;

    fn clock() -> Clock {
        Clock::fixed(NOW, 3600)
    }

    /// An enrolled user with an email address, for the tests of what kronctl prints.
    pub(crate) fn status(user: &str) -> UserStatus {
        UserStatus {
            user: user.into(),
            enrolled: true,
            pending: false,
            locked: false,
            locked_until: 0,
            failures: 0,
            last_used: 0,
            recovery_codes: 0,
            email: "a***@example.com".into(),
            phone: String::new(),
        }
    }

    fn enrollment() -> Enrollment {
        Enrollment {
            user: "alice".into(),
            uri: "otpauth://totp/Kron:alice@host?secret=JBSWY3DPEHPK3PXP&issuer=Kron".into(),
            secret: "JBSWY3DPEHPK3PXP".into(),
            expires: NOW + 600,
        }
    }

    fn parse(line: &str) -> Value {
        assert!(
            line.ends_with('\n') && line.trim_end().lines().count() == 1,
            "one line: {line:?}"
        );
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn status_json_has_every_documented_field() {
        let mut locked = status("bob");
        locked.locked = true;
        locked.locked_until = NOW + 60;
        locked.failures = 5;
        locked.last_used = NOW - 10;
        assert_eq!(
            parse(&status_json(&locked)),
            json!({
                "user": "bob", "enrolled": true, "pending": false, "locked": true,
                "locked_until": NOW + 60, "failures": 5, "last_used": NOW - 10,
                "recovery_codes": 0, "email": "a***@example.com", "phone": "",
            })
        );
    }

    #[test]
    fn enroll_json_shape() {
        assert_eq!(
            parse(&enroll_json(&enrollment(), None)),
            json!({
                "user": "alice",
                "uri": "otpauth://totp/Kron:alice@host?secret=JBSWY3DPEHPK3PXP&issuer=Kron",
                "secret": "JBSWY3DPEHPK3PXP",
                "expires": NOW + 600,
                "png": null,
            })
        );
        let with_png = parse(&enroll_json(&enrollment(), Some(Path::new("/tmp/q.png"))));
        assert_eq!(with_png["png"], json!("/tmp/q.png"));
    }

    #[test]
    fn confirm_and_admin_json_shapes() {
        assert_eq!(
            parse(&confirm_json(None)),
            json!({"user": null, "confirmed": true})
        );
        assert_eq!(
            parse(&confirm_json(Some("al"))),
            json!({"user": "al", "confirmed": true})
        );
        assert_eq!(
            parse(&admin_json(AdminAction::Reset, "al", true)),
            json!({"user": "al", "action": "reset", "changed": true})
        );
        assert_eq!(
            parse(&admin_json(AdminAction::Unlock, "al", false))["action"],
            json!("unlock")
        );
    }

    #[test]
    fn enroll_human_shows_everything_needed_to_finish() {
        let qr = kron_common::qr::terminal(&enrollment().uri).unwrap();
        let extras = EnrollExtras {
            qr: Some(&qr),
            png: Some(Path::new("/tmp/q.png")),
            requested_user: None,
        };
        let text = enroll_human(&enrollment(), &extras, &clock());
        assert!(text.contains(&qr));
        assert!(text.contains("    JBSW Y3DP EHPK 3PXP\n"));
        assert!(text.contains(&enrollment().uri));
        assert!(text.contains("/tmp/q.png (mode 0600"));
        assert!(text.contains("expires at 2025-01-02 15:14:05 +01:00 (in 10 minutes)"));
        assert!(text.ends_with("    kronctl confirm CODE\n"), "{text}");

        let extras = EnrollExtras {
            qr: None,
            png: None,
            requested_user: Some("alice"),
        };
        let text = enroll_human(&enrollment(), &extras, &clock());
        assert!(text.contains("cannot be shown"));
        assert!(!text.contains("QR code image"));
        assert!(text.ends_with("    kronctl confirm alice CODE\n"), "{text}");
    }

    #[test]
    fn status_human_reads_well() {
        assert_eq!(
            status_human(&status("alice"), &clock()),
            "user:      alice\n\
             token:     enrolled\n\
             recovery:  none\n\
             locked:    no\n\
             failures:  0\n\
             last used: never\n\
             email:     a***@example.com\n\
             phone:     none\n"
        );
        let mut locked = status("bob");
        locked.enrolled = false;
        locked.pending = true;
        locked.locked = true;
        locked.locked_until = NOW + 300;
        locked.failures = 7;
        locked.last_used = NOW - 2 * 86_400;
        locked.recovery_codes = 9;
        assert_eq!(
            status_human(&locked, &clock()),
            "user:      bob\n\
             token:     pending; the enrollment waits for `kronctl confirm`\n\
             recovery:  9 codes left\n\
             locked:    yes, until 2025-01-02 15:09:05 +01:00 (in 5 minutes)\n\
             failures:  7\n\
             last used: 2024-12-31 15:04:05 +01:00 (2 days ago)\n\
             email:     a***@example.com\n\
             phone:     none\n"
        );
    }

    #[test]
    fn status_human_neutralizes_terminal_escapes() {
        let text = status_human(&status("evil\x1b]0;pwned\x07\nuser: root"), &clock());
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
        assert_eq!(text.lines().count(), 8);
    }

    #[test]
    fn admin_human_says_what_happened() {
        assert_eq!(
            admin_human(AdminAction::Reset, "alice", true),
            "reset alice: token, pending enrollment and counters removed\n"
        );
        assert_eq!(
            admin_human(AdminAction::Reset, "alice", false),
            "reset alice: nothing to reset\n"
        );
        assert_eq!(
            admin_human(AdminAction::Unlock, "alice", true),
            "unlock alice: failed attempts and backoff cleared\n"
        );
        assert_eq!(
            admin_human(AdminAction::Unlock, "alice", false),
            "unlock alice: not locked, nothing to do\n"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(group_secret("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
        assert_eq!(group_secret("ABCDEF"), "ABCD EF");
        assert_eq!(group_secret(""), "");
        assert_eq!(one_line("a\nb\tc"), "a b c");
        let long = "x".repeat(MAX_SHOWN_CHARS + 10);
        assert_eq!(one_line(&long).chars().count(), MAX_SHOWN_CHARS + 1);
    }
}
