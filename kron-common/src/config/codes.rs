//! `[codes]` of otpd.toml: the length and lifetime of codes sent by email or SMS, and the
//! per-user, per-channel send budget (docs/delivery.md).

use serde::{Deserialize, Deserializer, de};

/// `[codes]`: sent codes and the send budget.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodesConfig {
    #[serde(deserialize_with = "digits")]
    pub digits: u8,
    #[serde(deserialize_with = "validity")]
    pub validity: u64,
    #[serde(deserialize_with = "min_interval")]
    pub min_interval: u64,
    #[serde(deserialize_with = "max_sends")]
    pub max_sends: u32,
    #[serde(deserialize_with = "send_window")]
    pub send_window: u64,
}

impl Default for CodesConfig {
    fn default() -> Self {
        CodesConfig {
            digits: 8,
            validity: 300,
            min_interval: 30,
            max_sends: 5,
            send_window: 3600,
        }
    }
}

fn bounded<'de, D: Deserializer<'de>, T>(
    d: D,
    name: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, D::Error>
where
    T: Deserialize<'de> + PartialOrd + std::fmt::Display + Copy,
{
    let value = T::deserialize(d)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(de::Error::custom(format!(
            "{name} must be between {} and {}, not {value}",
            range.start(),
            range.end()
        )))
    }
}

/// 6 to 9 digits: never 10, the length of recovery codes, so the two are never confused.
fn digits<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    bounded(d, "digits", 6..=9)
}

fn validity<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, "validity (seconds)", 60..=3600)
}

fn min_interval<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, "min_interval (seconds)", 0..=3600)
}

fn max_sends<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, "max_sends", 1..=100)
}

fn send_window<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, "send_window (seconds)", 60..=86_400)
}
