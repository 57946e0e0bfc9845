//! `[fleet]` of otpd.toml: the PostgreSQL database a fleet of hosts shares (docs/fleet.md).
//!
//! Each key is checked by its own `deserialize_with` function, so toml's error span names the
//! file:line of the bad key; the checks across keys are in [`FleetConfig::validate`], which the
//! caller maps to the line of the section. Secrets never appear in the file itself: the URL may
//! not carry a password, which lives in `password_file` (or a client certificate is used).
//! `offline_window` and `offline_keep` shape offline logins (docs/fleet.md, "Offline logins").

use serde::{Deserialize, Deserializer, de};
use std::path::PathBuf;

/// Longest connection URL accepted.
const MAX_URL_BYTES: usize = 2048;
/// Longest host name in the fleet (a DNS label's length is plenty for a name).
pub const MAX_HOST_NAME: usize = 63;
/// Default `offline_window`: a working day of logins while the database is away.
pub const DEFAULT_OFFLINE_WINDOW: u64 = 8 * 3600;
/// Longest `offline_window`: a week. The database caps it again (its `offline_max_window`).
pub const MAX_OFFLINE_WINDOW: u64 = 7 * 86_400;
/// Shortest `offline_window` other than 0: two 30 s steps.
pub const MIN_OFFLINE_WINDOW: u64 = 60;
/// Default `offline_keep`: users who logged in on this host within 30 days keep a pack.
pub const DEFAULT_OFFLINE_KEEP: u64 = 30 * 86_400;

/// `[fleet]`: where the shared store is and how this host proves who it is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `postgresql://ROLE@HOST[,HOST...][:PORT]/DB?target_session_attrs=read-write`.
    #[serde(deserialize_with = "url")]
    pub url: String,
    /// This host's name in the fleet; `None` means the machine's host name.
    #[serde(default, deserialize_with = "host")]
    pub host: Option<String>,
    /// The CA that signed the database servers' certificates: TLS is always on and verified.
    #[serde(deserialize_with = "path")]
    pub ca_file: PathBuf,
    /// The host role's password (first line), owned by root, mode 0600.
    #[serde(default, deserialize_with = "some_path")]
    pub password_file: Option<PathBuf>,
    /// A client certificate instead of a password (PEM), with its key.
    #[serde(default, deserialize_with = "some_path")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "some_path")]
    pub key_file: Option<PathBuf>,
    /// Seconds ahead of now an offline pack lets this host check codes while the database is
    /// away; 0 turns offline logins off (every login then needs the database).
    #[serde(
        default = "default_offline_window",
        deserialize_with = "offline_window"
    )]
    pub offline_window: u64,
    /// Seconds a user keeps a pack on this host after their last login here (or after
    /// `kronctl fleet offline-add`).
    #[serde(default = "default_offline_keep", deserialize_with = "offline_keep")]
    pub offline_keep: u64,
}

impl FleetConfig {
    /// Checks that involve several keys.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.password_file, &self.cert_file, &self.key_file) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
            (None, None, None) => Err(
                "the host must prove who it is: set password_file, or cert_file and key_file"
                    .into(),
            ),
            (Some(_), _, _) => Err(
                "password_file and cert_file/key_file exclude each other; keep one of them".into(),
            ),
            (None, Some(_), None) => Err("cert_file needs key_file".into()),
            (None, None, Some(_)) => Err("key_file needs cert_file".into()),
        }
    }
}

/// Checks a fleet connection URL: the scheme, no password in it, and no TLS mode weaker than
/// `verify-full` (which is what otpd always does). Shared by the config and `kronctl fleet`.
pub fn check_url(text: &str) -> Result<(), String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!("url is longer than {MAX_URL_BYTES} bytes"));
    }
    let Some(rest) = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
    else {
        return Err("url must start with postgresql://".into());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err(
                "url must not hold a password; put it into password_file (root, mode 0600)".into(),
            );
        }
    } else {
        return Err("url must name the role: postgresql://ROLE@HOST/DB".into());
    }
    if authority
        .rsplit_once('@')
        .is_some_and(|(_, hosts)| hosts.is_empty())
    {
        return Err("url must name at least one database host".into());
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // The driver decodes `%xx` in names: `pass%77ord` would be `password` to it.
        if key.contains('%') {
            return Err(format!(
                "url parameter {key}: write parameter names without %-escapes"
            ));
        }
        match key {
            "sslmode" if value != "verify-full" => {
                return Err(format!(
                    "sslmode={value} is not allowed: otpd always verifies the server against \
                     ca_file (verify-full); leave sslmode out or set it to verify-full"
                ));
            }
            "password" => {
                return Err(
                    "url must not hold a password; put it into password_file (root, mode 0600)"
                        .into(),
                );
            }
            "sslrootcert" | "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!(
                    "{key} in the url is not used; set ca_file, cert_file and key_file in [fleet]"
                ));
            }
            // What Linux accepts for the socket options; anything else would fail every connect.
            "keepalives_idle" | "keepalives_interval" => check_count(key, value, 1..=32767)?,
            "keepalives_retries" => check_count(key, value, 1..=127)?,
            _ => {}
        }
    }
    Ok(())
}

/// A URL parameter that must be a whole number in `range`.
fn check_count(key: &str, value: &str, range: std::ops::RangeInclusive<u32>) -> Result<(), String> {
    match value.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(()),
        _ => Err(format!(
            "url parameter {key} must be a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// Checks a host name: 1 to 63 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let good = !name.is_empty()
        && name.len() <= MAX_HOST_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if good {
        Ok(())
    } else {
        Err(format!(
            "host must be 1 to {MAX_HOST_NAME} characters of a-z, 0-9, '-', '_' and '.', \
             starting with a letter or digit"
        ))
    }
}

fn default_offline_window() -> u64 {
    DEFAULT_OFFLINE_WINDOW
}

fn default_offline_keep() -> u64 {
    DEFAULT_OFFLINE_KEEP
}

fn offline_window<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        n @ (0 | MIN_OFFLINE_WINDOW..=MAX_OFFLINE_WINDOW) => Ok(n),
        n => Err(de::Error::custom(format!(
            "offline_window must be 0 (offline logins off) or between {MIN_OFFLINE_WINDOW} and \
             {MAX_OFFLINE_WINDOW} seconds, not {n}"
        ))),
    }
}

fn offline_keep<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        n @ 3600..=31_536_000 => Ok(n),
        n => Err(de::Error::custom(format!(
            "offline_keep must be between 3600 seconds and 365 days (31536000), not {n}"
        ))),
    }
}

fn url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    check_url(&text).map_err(de::Error::custom)?;
    Ok(text)
}

fn host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    check_host_name(&name).map_err(de::Error::custom)?;
    Ok(Some(name))
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(de::Error::custom(format!(
            "{} must be an absolute path",
            path.display()
        )));
    }
    Ok(path)
}

fn some_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    path(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for good in [
            "postgresql://kron_web01@db1.example.com,db2.example.com/kron?target_session_attrs=read-write",
            "postgres://kron_a@127.0.0.1:5432/kron?sslmode=verify-full",
            "postgresql://a@b/c?keepalives_idle=300&keepalives_interval=5&keepalives_retries=3",
            "postgresql://a@b/c?keepalives=0",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "mysql://a@b/c",
            "postgresql://a:secret@b/c",
            "postgresql://b/c",
            "postgresql://a@/c",
            "postgresql://a@b/c?sslmode=require",
            "postgresql://a@b/c?sslmode=disable",
            "postgresql://a@b/c?password=x",
            "postgresql://a@b/c?sslrootcert=/x",
            "postgresql://a@b/c?pass%77ord=x",
            "postgresql://a@b/c?keepalives_idle=0",
            "postgresql://a@b/c?keepalives_idle=40000",
            "postgresql://a@b/c?keepalives_interval=-1",
            "postgresql://a@b/c?keepalives_retries=0",
            "postgresql://a@b/c?keepalives_retries=200",
            "postgresql://a@b/c?keepalives_retries=1.5",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names() {
        assert!(check_host_name("web01").is_ok());
        assert!(check_host_name("db-1.example_x").is_ok());
        for bad in ["", "Web01", "-a", "a b", "a'b", &"a".repeat(64)] {
            assert!(check_host_name(bad).is_err(), "{bad:?}");
        }
    }
}
