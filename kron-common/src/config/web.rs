//! `[web]` of otpd.toml: kron-web, the page behind one-time enrollment links
//! (docs/delivery.md, "Enrollment links"). otpd reads `public_url` and `link_validity` to make
//! links; kron-web reads `listen` and the TLS files to serve them.

use super::delivery::is_loopback;
use serde::{Deserialize, Deserializer, de};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Longest `public_url`: a link must still fit in an SMS and a QR code.
const MAX_PUBLIC_URL_BYTES: usize = 512;
/// Default lifetime of a link: a day, long enough to reach a person who reads mail once.
pub const DEFAULT_LINK_VALIDITY: u64 = 86_400;

/// `[web]`: where kron-web listens and what links start with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address and port kron-web listens on.
    pub listen: SocketAddr,
    /// What links start with (`https://kron.example.com:8443`), without a trailing slash.
    #[serde(deserialize_with = "public_url")]
    pub public_url: String,
    /// PEM certificate chain; with `tls_key`. Both absent: plain HTTP (loopback only).
    #[serde(default, deserialize_with = "absolute")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key: owned by root, readable by kron-web's group and nobody else (0640).
    #[serde(default, deserialize_with = "absolute")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a link lives, 1 to 7 days' worth (604800).
    #[serde(default = "default_validity", deserialize_with = "link_validity")]
    pub link_validity: u64,
}

impl WebConfig {
    /// Checks that involve several keys.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), Some(_)) => Ok(()),
            (None, None) if self.listen.ip().is_loopback() => Ok(()),
            (None, None) => Err(format!(
                "without tls_cert and tls_key kron-web speaks plain HTTP, which is allowed only \
                 on the loopback interface behind a TLS proxy (listen = \"127.0.0.1:{}\"), not \
                 on {}",
                self.listen.port(),
                self.listen.ip()
            )),
            _ => Err("tls_cert and tls_key go together".into()),
        }
    }

    /// Whether kron-web serves TLS itself (else it is behind a proxy on loopback).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The URL of the link with `token`.
    pub fn link_url(&self, token: &str) -> String {
        format!("{}/enroll/{token}", self.public_url)
    }
}

fn default_validity() -> u64 {
    DEFAULT_LINK_VALIDITY
}

fn link_validity<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let max = kron_proto::MAX_LINK_VALIDITY;
    match u64::deserialize(d)? {
        n @ 1..=kron_proto::MAX_LINK_VALIDITY => Ok(n),
        n => Err(de::Error::custom(format!(
            "link_validity must be between 1 and {max} seconds (7 days), not {n}"
        ))),
    }
}

fn absolute<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(de::Error::custom(format!(
            "{} must be an absolute path",
            path.display()
        )));
    }
    Ok(Some(path))
}

/// `https://host[:port][/path]`, or `http://` to a loopback host (a test or a local proxy):
/// no user, query or fragment, since the token is appended to it.
fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    check_public_url(&text).map_err(de::Error::custom)
}

fn check_public_url(text: &str) -> Result<String, String> {
    if text.len() > MAX_PUBLIC_URL_BYTES {
        return Err(format!(
            "public_url is longer than {MAX_PUBLIC_URL_BYTES} bytes"
        ));
    }
    if text.contains('#') || text.contains('?') {
        return Err("public_url may not hold a user, password, query or fragment".into());
    }
    let url = text
        .parse::<http::Uri>()
        .map_err(|e| format!("public_url is not a URL: {e}"))?;
    let host = url.host().unwrap_or_default();
    let scheme = url.scheme_str().unwrap_or_default().to_ascii_lowercase();
    let scheme_ok = match scheme.as_str() {
        "https" => !host.is_empty(),
        "http" => is_loopback(host),
        _ => false,
    };
    if !scheme_ok {
        return Err(format!(
            "public_url must be https:// (http:// only for localhost), not {scheme}://{host}"
        ));
    }
    if url
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        return Err("public_url may not hold a user, password, query or fragment".into());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        let config: WebConfig = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn tls_or_loopback() {
        let config = parse(
            "listen = \"0.0.0.0:8443\"\npublic_url = \"https://kron.example.com:8443/\"\n\
             tls_cert = \"/etc/kron/web.crt\"\ntls_key = \"/etc/kron/web.key\"\n",
        )
        .unwrap();
        assert_eq!(config.public_url, "https://kron.example.com:8443");
        assert_eq!(config.link_validity, DEFAULT_LINK_VALIDITY);
        assert!(config.tls());
        assert_eq!(
            config.link_url("abc.def"),
            "https://kron.example.com:8443/enroll/abc.def"
        );
        let proxied =
            parse("listen = \"127.0.0.1:8080\"\npublic_url = \"https://kron.example.com/kron\"\n")
                .unwrap();
        assert!(!proxied.tls());
        assert_eq!(proxied.public_url, "https://kron.example.com/kron");
        assert!(
            parse("listen = \"0.0.0.0:8080\"\npublic_url = \"https://kron.example.com\"\n")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            parse(
                "listen = \"[::1]:8080\"\npublic_url = \"https://k.example\"\n\
                 tls_cert = \"/c\"\n"
            )
            .unwrap_err()
            .contains("go together")
        );
    }

    #[test]
    fn bounds() {
        let base = "listen = \"127.0.0.1:8080\"\n";
        for bad in [
            "public_url = \"http://kron.example.com\"",
            "public_url = \"ftp://kron.example.com\"",
            "public_url = \"https://kron.example.com/?x=1\"",
            "public_url = \"https://u:p@kron.example.com/\"",
            "public_url = \"not a url\"",
            "public_url = \"https://k.example\"\nlink_validity = 0",
            "public_url = \"https://k.example\"\nlink_validity = 604801",
            "public_url = \"https://k.example\"\ntls_cert = \"relative.crt\"",
        ] {
            assert!(parse(&format!("{base}{bad}\n")).is_err(), "{bad}");
        }
        let local = parse(&format!(
            "{base}public_url = \"http://localhost:8080\"\nlink_validity = 604800\n"
        ))
        .unwrap();
        assert_eq!(local.link_validity, 604_800);
    }
}
