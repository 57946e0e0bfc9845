//! Every text a person sees during a login. Kept together so they stay consistent and never
//! reveal more than intended: a wrong code, an unknown account and a missing token all read the
//! same.

use kron_common::contact::Channels;
use kron_proto::Channel;
use kron_proto::Message;

pub const CODE_PROMPT: &str = "Verification code: ";

pub fn rejected(contact: &str) -> Vec<Message> {
    vec![
        Message::error("Verification failed."),
        Message::info(format!(
            "If you have no authenticator token yet, ask {contact} to set one up."
        )),
    ]
}

pub fn replayed() -> Vec<Message> {
    vec![Message::error(
        "That code was already used. Wait for the next code and try again.",
    )]
}

pub fn throttled(until: u64, now: u64) -> Vec<Message> {
    vec![Message::error(format!(
        "Too many failed attempts. Try again in {} (after {}).",
        duration(until.saturating_sub(now)),
        utc(until)
    ))]
}

pub fn recovery_used(left: usize) -> Vec<Message> {
    let mut shown = vec![Message::info(format!(
        "Recovery code accepted; {left} left."
    ))];
    if left <= 3 {
        shown.push(Message::info(
            "Make a new set soon with `kronctl recovery-codes`.",
        ));
    }
    shown
}

pub fn login_expired() -> Vec<Message> {
    vec![Message::error(
        "The login took too long. Please start again.",
    )]
}

/// The fleet's database is away and this login cannot be checked offline here.
pub fn unreachable() -> Vec<Message> {
    vec![Message::error(
        "Two-factor authentication cannot reach its database; please try again later.",
    )]
}

pub fn too_many_resends() -> Vec<Message> {
    vec![Message::error(
        "No more codes can be sent during this login. Please start again.",
    )]
}

pub fn busy() -> Vec<Message> {
    vec![Message::error(
        "Two-factor authentication is busy; please try again in a moment.",
    )]
}

pub fn enrollment(qr: &str, base32: &str, expires: u64, now: u64) -> Vec<Message> {
    vec![
        Message::info(
            "Two-factor authentication must be set up for this account before you can log in.",
        ),
        Message::info(
            "Scan this QR code with an authenticator app (Google Authenticator, Microsoft Authenticator, ...):",
        ),
        Message::info(qr.trim_end().to_owned()),
        Message::info(format!(
            "Or enter this key manually: {}",
            group_in_fours(base32)
        )),
        Message::info(format!(
            "Then enter the code the app shows. This setup expires in {} (at {}).",
            duration(expires.saturating_sub(now)),
            utc(expires)
        )),
    ]
}

pub fn enrollment_wrong_code(expires: u64, now: u64) -> Vec<Message> {
    vec![
        Message::error("Wrong code; the token was not saved."),
        Message::info(format!(
            "Log in again to retry with the same QR code within {}.",
            duration(expires.saturating_sub(now))
        )),
    ]
}

pub fn enrollment_expired() -> Vec<Message> {
    vec![Message::error(
        "The setup expired and nothing was saved. Log in again for a new QR code.",
    )]
}

pub fn enrollment_replaced() -> Vec<Message> {
    vec![Message::error(
        "The setup was replaced by a newer one and nothing was saved. Log in again.",
    )]
}

pub fn enrolled() -> Vec<Message> {
    vec![Message::info(
        "Two-factor authentication is now set up for this account.",
    )]
}

/// "by email" / "by SMS".
fn by(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "by email",
        Channel::Sms => "by SMS",
    }
}

pub fn code_sent(channel: Channel, masked: &str, expires: u64, now: u64) -> Message {
    Message::info(format!(
        "A verification code was sent {} to {masked}. It is valid for {}.",
        by(channel),
        duration(expires.saturating_sub(now))
    ))
}

pub fn code_underway(channel: Channel, masked: &str, expires: u64, now: u64) -> Message {
    Message::info(format!(
        "A verification code is on its way {} to {masked}; it may take a moment to arrive. It is \
         valid for {}.",
        by(channel),
        duration(expires.saturating_sub(now))
    ))
}

/// `Or type "email" to get a code by email.`, naming every offered channel.
pub fn fallback_hint(offer: Channels) -> Option<Message> {
    let words: Vec<String> = offer
        .iter()
        .map(|c| format!("\"{}\"", c.as_str()))
        .collect();
    let ways: Vec<&str> = offer.iter().map(by).collect();
    (!words.is_empty()).then(|| {
        Message::info(format!(
            "Or type {} to get a code {}.",
            words.join(" or "),
            ways.join(" or ")
        ))
    })
}

pub fn send_spent(channel: Channel, until: u64, now: u64) -> Message {
    Message::error(format!(
        "No more codes can be sent {} just now. Try again in {} (after {}).",
        by(channel),
        duration(until.saturating_sub(now)),
        utc(until)
    ))
}

pub fn sends_busy(channel: Channel) -> Message {
    Message::error(format!(
        "Too many codes are being sent just now; none could be sent {}. Try again in a minute.",
        by(channel)
    ))
}

pub fn send_failed(channel: Channel, contact: &str) -> Message {
    Message::error(format!(
        "The code could not be sent {}. Try again later, or ask {contact}.",
        by(channel)
    ))
}

pub fn no_contact_for_enrollment(contact: &str) -> Vec<Message> {
    vec![Message::error(format!(
        "Setting up two-factor authentication needs a verification code sent to your email \
         address or phone, and none is on file for this account. Ask {contact} to add one."
    ))]
}

pub fn code_accepted() -> Message {
    Message::info("Code accepted.")
}

pub fn delivered_enrollment(channel: Channel) -> Message {
    Message::info(format!(
        "To finish setting up the token sent to you {}, enter the code your authenticator app \
         shows for it.",
        by(channel)
    ))
}

fn group_in_fours(text: &str) -> String {
    text.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// "45 seconds", "3 minutes", "2 hours 5 minutes": whole minutes rounded up, so the user
/// never retries too early and 3599 s reads "1 hour", not "60 minutes".
pub fn duration(seconds: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if seconds < 60 {
        return plural(seconds, "second");
    }
    let minutes = seconds.div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0, minutes) => plural(minutes, "minute"),
        (hours, 0) => plural(hours, "hour"),
        (hours, minutes) => format!("{} {}", plural(hours, "hour"), plural(minutes, "minute")),
    }
}

/// "14:05 UTC": servers log in UTC and a login prompt has no reliable time zone.
pub fn utc(unix: u64) -> String {
    let seconds_of_day = unix % 86_400;
    format!(
        "{:02}:{:02} UTC",
        seconds_of_day / 3600,
        seconds_of_day % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(61), "2 minutes");
        assert_eq!(duration(3600), "1 hour");
        assert_eq!(duration(14400 + 59), "4 hours 1 minute");
        assert_eq!(duration(3599), "1 hour", "never \"60 minutes\"");
        assert_eq!(duration(7199), "2 hours", "never \"1 hour 60 minutes\"");
        assert_eq!(utc(1_700_000_000), "22:13 UTC");
        assert_eq!(group_in_fours("ABCDEFGHIJ"), "ABCD EFGH IJ");
        assert_eq!(
            rejected("ops"),
            rejected("ops"),
            "one text for every refusal"
        );
    }
}
