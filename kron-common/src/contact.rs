//! Where codes are sent: a user's email address and phone number (stored by an admin, or
//! derived from the config's patterns), how they are checked, and how they are shown masked.

use email_address::{EmailAddress, Options};
use kron_proto::Channel;
use serde::{Deserialize, Deserializer, Serialize, de};

/// Longest email address SMTP can carry (RFC 5321 path limit less the brackets).
const MAX_EMAIL_LEN: usize = 254;
/// E.164: at most 15 digits after the `+`; fewer than 8 is no reachable number.
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 8..=15;

/// What is stored for a user. `None` means "use the pattern, if any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contact {
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Contact {
    pub fn get(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms => self.phone.as_deref(),
        }
    }

    pub fn set(&mut self, channel: Channel, address: Option<String>) {
        match channel {
            Channel::Email => self.email = address,
            Channel::Sms => self.phone = address,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.phone.is_none()
    }
}

/// `[contacts]`: addresses derived from the user name where none is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Patterns {
    #[serde(deserialize_with = "email_pattern")]
    pub email: Option<String>,
    #[serde(deserialize_with = "phone_pattern")]
    pub phone: Option<String>,
}

impl Patterns {
    /// The address for `user` on `channel`: the stored one, else the pattern's if the result is
    /// a valid address (a user name like `a b` makes no email address).
    pub fn address(&self, stored: &Contact, user: &str, channel: Channel) -> Option<String> {
        if let Some(address) = stored.get(channel) {
            return Some(address.to_owned());
        }
        let pattern = match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms => self.phone.as_deref(),
        }?;
        normalize(channel, &pattern.replace("{user}", user)).ok()
    }
}

/// Checks and normalizes an address typed by an admin: email addresses per RFC 5322 (without a
/// display name), phone numbers to E.164 (`+` and digits; common separators dropped).
pub fn normalize(channel: Channel, input: &str) -> Result<String, String> {
    match channel {
        Channel::Email => normalize_email(input),
        Channel::Sms => normalize_phone(input),
    }
}

fn normalize_email(input: &str) -> Result<String, String> {
    let input = input.trim();
    if input.len() > MAX_EMAIL_LEN {
        return Err(format!(
            "email address longer than {MAX_EMAIL_LEN} characters"
        ));
    }
    let address =
        EmailAddress::parse_with_options(input, Options::default().without_display_text())
            .map_err(|e| format!("not an email address ({e})"))?;
    Ok(address.email())
}

fn normalize_phone(input: &str) -> Result<String, String> {
    let input = input.trim();
    let Some(rest) = input.strip_prefix('+') else {
        return Err(
            "a phone number must start with + and the country code (E.164, e.g. +49 151 2345678)"
                .into(),
        );
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            // Never the character itself: no error echoes the caller's input.
            _ => {
                return Err(
                    "a phone number may hold only digits after the +, with spaces, dots, \
                     dashes and parentheses between them"
                        .into(),
                );
            }
        }
    }
    if !PHONE_DIGITS.contains(&digits.len()) || digits.starts_with('0') {
        return Err(format!(
            "a phone number has {} to {} digits after +, the first not 0",
            PHONE_DIGITS.start(),
            PHONE_DIGITS.end()
        ));
    }
    Ok(format!("+{digits}"))
}

/// The address as prompts and status show it: enough to recognize, not enough to harvest.
pub fn mask(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Email => mask_email(address),
        Channel::Sms => mask_phone(address),
    }
}

/// `alice@example.com` → `a***@example.com`.
fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// `+4915123456712` → `+49 *** ** 12`: the country prefix and the last two digits.
fn mask_phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() < 6 {
        return "***".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head} *** ** {tail}")
}

/// An ordered list of channels from the config (`["email", "sms"]`), at most each once.
/// `Copy`, so a [`crate::rules::Policy`] stays a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Channels([Option<Channel>; 2]);

impl Channels {
    pub fn of(list: &[Channel]) -> Channels {
        let mut channels = Channels::default();
        for (slot, channel) in channels.0.iter_mut().zip(list) {
            *slot = Some(*channel);
        }
        channels
    }

    pub fn iter(&self) -> impl Iterator<Item = Channel> + '_ {
        self.0.iter().flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }

    pub fn contains(&self, channel: Channel) -> bool {
        self.iter().any(|c| c == channel)
    }
}

impl<'de> Deserialize<'de> for Channels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut list = Vec::new();
        for name in &names {
            let channel = Channel::parse(name).ok_or_else(|| {
                de::Error::custom(format!(
                    "unknown channel {name:?}; use \"email\" or \"sms\""
                ))
            })?;
            if list.contains(&channel) {
                return Err(de::Error::custom(format!("channel {name:?} listed twice")));
            }
            list.push(channel);
        }
        Ok(Channels::of(&list))
    }
}

fn email_pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    pattern(d, Channel::Email, "{user}@example.com")
}

fn phone_pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    pattern(d, Channel::Sms, "+49151{user}")
}

/// A pattern must mention `{user}` and give a valid address for a plain user name.
fn pattern<'de, D: Deserializer<'de>>(
    d: D,
    channel: Channel,
    example: &str,
) -> Result<Option<String>, D::Error> {
    let pattern = String::deserialize(d)?;
    if pattern.is_empty() {
        return Ok(None);
    }
    if !pattern.contains("{user}") {
        return Err(de::Error::custom(format!(
            "a contact pattern must contain {{user}}, e.g. {example:?}"
        )));
    }
    let sample = match channel {
        Channel::Email => "user",
        Channel::Sms => "1234567",
    };
    normalize(channel, &pattern.replace("{user}", sample))
        .map_err(|e| de::Error::custom(format!("pattern {pattern:?}: {e}")))?;
    Ok(Some(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_normalized() {
        assert_eq!(
            normalize(Channel::Email, " alice@example.com ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "alice",
            "a@",
            "@b",
            "a b@c.d",
            &format!("{}@x.y", "a".repeat(260)),
        ] {
            assert!(normalize(Channel::Email, bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize(Channel::Sms, "+49 (151) 2345-67.12").unwrap(),
            "+4915123456712"
        );
        for bad in [
            "0151 234567",
            "+49",
            "+0151234567",
            "+49151x234567",
            "+1234567890123456",
        ] {
            assert!(normalize(Channel::Sms, bad).is_err(), "{bad}");
        }
    }

    /// No error echoes the caller's input (design invariant 9): not even the one bad character.
    #[test]
    fn a_bad_phone_number_is_refused_without_its_characters() {
        for (bad, shown) in [
            ("+49151<234567", "<"),
            ("+4915123\u{7}4567", "\\u{7}"),
            ("+49x", "'x'"),
        ] {
            let error = normalize(Channel::Sms, bad).unwrap_err();
            assert!(!error.contains(shown), "{error}");
            assert!(error.contains("only digits"), "{error}");
        }
    }

    #[test]
    fn masks_keep_little() {
        assert_eq!(
            mask(Channel::Email, "alice@example.com"),
            "a***@example.com"
        );
        assert_eq!(mask(Channel::Sms, "+4915123456712"), "+49 *** ** 12");
    }

    #[test]
    fn stored_addresses_win_over_patterns() {
        let patterns: Patterns = toml::from_str("email = \"{user}@corp.example\"").unwrap();
        let mut stored = Contact::default();
        assert_eq!(
            patterns.address(&stored, "bob", Channel::Email).as_deref(),
            Some("bob@corp.example")
        );
        assert_eq!(patterns.address(&stored, "bob", Channel::Sms), None);
        assert_eq!(patterns.address(&stored, "a b", Channel::Email), None);
        stored.email = Some("robert@home.example".into());
        assert_eq!(
            patterns.address(&stored, "bob", Channel::Email).as_deref(),
            Some("robert@home.example")
        );
    }

    #[test]
    fn patterns_and_channel_lists_are_validated() {
        assert!(toml::from_str::<Patterns>("email = \"x@example.com\"").is_err());
        assert!(toml::from_str::<Patterns>("email = \"{user}\"").is_err());
        #[derive(Deserialize)]
        struct List {
            list: Channels,
        }
        let list: List = toml::from_str("list = [\"sms\", \"email\"]").unwrap();
        assert_eq!(
            list.list.iter().collect::<Vec<_>>(),
            [Channel::Sms, Channel::Email]
        );
        assert!(toml::from_str::<List>("list = [\"sms\", \"sms\"]").is_err());
        assert!(toml::from_str::<List>("list = [\"fax\"]").is_err());
    }
}
