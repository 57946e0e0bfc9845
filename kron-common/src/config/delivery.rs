//! The `[email]` and `[sms]` sections of otpd.toml (docs/delivery.md, "Configuration").
//!
//! Each key is checked by its own `deserialize_with` function, so toml's error span gives
//! the file:line of the bad key. Checks that involve two keys are in `validate()`, which the
//! caller runs after parsing and maps to the line of the section.

pub use crate::template::BodyFormat;
use crate::template::{self, CODE, ENROLLMENT, GATEWAY, HEADER, LINK};
use email_address::{EmailAddress, Options};
use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, de};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

const MAX_SERVER_BYTES: usize = 253;
const MAX_URL_BYTES: usize = 2048;
const MAX_HEADERS: usize = 32;
const MAX_USERNAME_BYTES: usize = 256;
const DEFAULT_TIMEOUT: u64 = 10;
const MAX_TIMEOUT: u64 = 60;

/// Stand-ins for the values only known at send time (or, for the secret, at start), used to
/// check that the url, headers and body are well formed once filled.
pub(crate) const DUMMY_PHONE: &str = "+4915123456712";
pub(crate) const DUMMY_MESSAGE: &str = "Kron: your verification code is 12345678.";
pub(crate) const DUMMY_SECRET: &str = "dummy-secret";

/// How otpd talks to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the loopback interface (port 25).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
}

/// `[email]`: the SMTP server and the mail templates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    #[serde(deserialize_with = "server")]
    pub server: String,
    /// `None`: the default of `security` (see [`EmailConfig::port`]).
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    #[serde(default, deserialize_with = "username")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "secret_path")]
    pub password_file: Option<PathBuf>,
    /// `kron@example.com` or `Kron <kron@example.com>`; otpd parses it again with its mail
    /// library when it builds the sender (`otpd --check-config` does too).
    #[serde(deserialize_with = "mailbox")]
    pub from: String,
    /// Seconds a whole send may take.
    #[serde(default = "default_timeout", deserialize_with = "timeout")]
    pub timeout: u64,
    #[serde(default = "default_code_subject", deserialize_with = "code_subject")]
    pub code_subject: String,
    #[serde(default = "default_code_body", deserialize_with = "code_body")]
    pub code_body: String,
    #[serde(
        default = "default_enrollment_subject",
        deserialize_with = "enrollment_subject"
    )]
    pub enrollment_subject: String,
    #[serde(
        default = "default_enrollment_body",
        deserialize_with = "enrollment_body"
    )]
    pub enrollment_body: String,
    #[serde(default = "default_link_subject", deserialize_with = "link_subject")]
    pub link_subject: String,
    #[serde(default = "default_link_body", deserialize_with = "link_body")]
    pub link_body: String,
}

impl EmailConfig {
    /// The configured port, else the usual one for `security`.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        })
    }

    /// Checks that involve several keys.
    pub fn validate(&self) -> Result<(), String> {
        if self.security == Security::None && !is_loopback(&self.server) {
            return Err(format!(
                "security = \"none\" sends codes unencrypted and is allowed only for a server \
                 on the loopback interface (localhost, 127.0.0.1, ::1), not {:?}; use \
                 \"starttls\" or \"tls\"",
                self.server
            ));
        }
        match (&self.username, &self.password_file) {
            (Some(_), None) => Err("username needs password_file".into()),
            (None, Some(_)) => Err("password_file needs username".into()),
            _ => Ok(()),
        }
    }
}

/// `[sms]`: the HTTP gateway and the SMS templates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// Template with `{phone}`, `{message}`, `{secret}` (values percent-encoded).
    #[serde(deserialize_with = "url")]
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Template with `{phone}`, `{message}`, `{secret}` (values escaped per `body_format`).
    #[serde(default, deserialize_with = "body")]
    pub body: Option<String>,
    /// Header name → value template with `{secret}`.
    #[serde(default, deserialize_with = "headers")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "secret_path")]
    pub secret_file: Option<PathBuf>,
    /// Seconds a whole send may take.
    #[serde(default = "default_timeout", deserialize_with = "timeout")]
    pub timeout: u64,
    #[serde(default = "default_code_text", deserialize_with = "code_text")]
    pub code_text: String,
    #[serde(
        default = "default_enrollment_text",
        deserialize_with = "enrollment_text"
    )]
    pub enrollment_text: String,
    #[serde(default = "default_link_text", deserialize_with = "link_text")]
    pub link_text: String,
}

impl SmsConfig {
    /// Checks that involve several keys.
    pub fn validate(&self) -> Result<(), String> {
        let body = self.body.as_deref().unwrap_or_default();
        if self.method == HttpMethod::Get && self.body.is_some() {
            return Err(
                "method GET sends no body: put {phone} and {message} into url, or use POST".into(),
            );
        }
        for name in ["phone", "message"] {
            if !template::uses(&self.url, name) && !template::uses(body, name) {
                return Err(format!("url or body must contain {{{name}}}"));
            }
        }
        let uses_secret = template::uses(&self.url, "secret")
            || template::uses(body, "secret")
            || self.headers.values().any(|v| template::uses(v, "secret"));
        match (uses_secret, &self.secret_file) {
            (true, None) => Err("{secret} is used but secret_file is not set".into()),
            (false, Some(_)) => {
                Err("secret_file is set but no url, header or body uses {secret}".into())
            }
            _ => self.check_body(body),
        }
    }

    /// A JSON body must still be JSON once filled: a missing quote or comma would otherwise
    /// show up only as the gateway's error at the first send.
    fn check_body(&self, body: &str) -> Result<(), String> {
        if self.body_format != BodyFormat::Json || self.body.is_none() {
            return Ok(());
        }
        let filled = template::render_with(body, &dummy_values(DUMMY_SECRET), |v| {
            template::escape_body(BodyFormat::Json, v)
        });
        serde_json::from_str::<serde_json::Value>(&filled)
            .map(|_| ())
            .map_err(|e| format!("body is not valid JSON once filled: {e}"))
    }
}

/// Values for checking a gateway template, with `secret` as given.
pub fn dummy_values(secret: &str) -> [(&'static str, &str); 3] {
    [
        ("phone", DUMMY_PHONE),
        ("message", DUMMY_MESSAGE),
        ("secret", secret),
    ]
}

/// Fills a url template with percent-encoded values.
pub fn fill_url(url: &str, values: &[(&str, &str)]) -> String {
    template::render_with(url, values, template::escape_url)
}

/// A filled url, parsed as HTTP does (absolute form).
fn parse_url(filled: &str) -> Result<http::Uri, String> {
    filled
        .parse::<http::Uri>()
        .map_err(|e| format!("url is not a valid URL once filled: {e}"))
}

/// Whether `host` is `localhost` or a loopback address (127.0.0.0/8, ::1). No name
/// resolution: what a name resolves to can change after the check.
pub fn is_loopback(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT
}

fn default_code_subject() -> String {
    "{issuer} verification code".into()
}

fn default_code_body() -> String {
    "Your {issuer} verification code is\n\
     \n\
     \x20   {code}\n\
     \n\
     It is valid for {minutes} minutes and was requested for {user}@{host}.\n\
     \n\
     If this was not you, tell your administrator.\n"
        .into()
}

fn default_enrollment_subject() -> String {
    "{issuer}: set up your authenticator for {user}@{host}".into()
}

fn default_enrollment_body() -> String {
    "A new {issuer} token was created for {user}@{host}.\n\
     \n\
     Scan the attached QR code (qr.png) with your authenticator app, or open this link on\n\
     your phone:\n\
     \n\
     {uri}\n\
     \n\
     To enter it by hand, use this key: {secret}\n\
     \n\
     The token works only after you confirm it: type a code from the app at your next login\n\
     (or with kronctl confirm) before {expires}. After that it is void.\n\
     \n\
     If you did not expect this message, tell your administrator and delete it.\n"
        .into()
}

fn default_code_text() -> String {
    "{issuer}: your verification code is {code}. Valid for {minutes} minutes.".into()
}

fn default_enrollment_text() -> String {
    "{issuer} key for {user}@{host}: {secret}. Confirm it with a code from your app before \
     {expires}."
        .into()
}

fn default_link_subject() -> String {
    "{issuer}: set up your authenticator for {user}@{host}".into()
}

fn default_link_body() -> String {
    "Set up a {issuer} authenticator for {user}@{host}.\n\
     \n\
     Open this link, scan the QR code it shows with your authenticator app, and confirm with\n\
     the code the app then shows:\n\
     \n\
     {url}\n\
     \n\
     The link works once and until {expires}. Do not forward it: whoever opens it first can\n\
     set up the token.\n\
     \n\
     If you did not expect this message, tell your administrator and delete it.\n"
        .into()
}

fn default_link_text() -> String {
    "{issuer}: set up your authenticator for {user}@{host} before {expires}: {url}".into()
}

fn server<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let server = String::deserialize(d)?;
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':');
    if server.is_empty() || server.len() > MAX_SERVER_BYTES || !server.chars().all(valid_char) {
        return Err(de::Error::custom(format!(
            "server must be a host name or IP address of 1 to {MAX_SERVER_BYTES} characters \
             (letters, digits, '-', '.', ':'), not {server:?}"
        )));
    }
    Ok(server)
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match u16::deserialize(d)? {
        0 => Err(de::Error::custom("port must be between 1 and 65535")),
        port => Ok(Some(port)),
    }
}

fn username<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() || name.len() > MAX_USERNAME_BYTES || name.chars().any(char::is_control) {
        return Err(de::Error::custom(format!(
            "username must be 1 to {MAX_USERNAME_BYTES} bytes without control characters"
        )));
    }
    Ok(Some(name))
}

fn secret_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(de::Error::custom(format!(
            "{} must be an absolute path",
            path.display()
        )));
    }
    Ok(Some(path))
}

fn mailbox<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    EmailAddress::parse_with_options(text.trim(), Options::default().with_display_text()).map_err(
        |e| {
            de::Error::custom(format!(
                "from must be an address like \"Kron <kron@example.com>\", not {text:?}: {e}"
            ))
        },
    )?;
    Ok(text.trim().to_owned())
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        n @ 1..=MAX_TIMEOUT => Ok(n),
        n => Err(de::Error::custom(format!(
            "timeout must be between 1 and {MAX_TIMEOUT} seconds, not {n}"
        ))),
    }
}

/// A template field: `key` names it in errors, `allowed` are its placeholders, `required`
/// must each appear, `any_of` (if not empty) must have at least one that appears.
fn template_field<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    allowed: &[&str],
    required: &[&str],
    any_of: &[&str],
) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let check = || -> Result<(), String> {
        template::check(&text, allowed)?;
        for name in required {
            template::require(&text, name)?;
        }
        if !any_of.is_empty() && !any_of.iter().any(|name| template::uses(&text, name)) {
            let names: Vec<String> = any_of.iter().map(|n| format!("{{{n}}}")).collect();
            return Err(format!("must contain {}", names.join(" or ")));
        }
        Ok(())
    };
    check().map_err(|e| de::Error::custom(format!("{key} {e}")))?;
    Ok(text)
}

/// Subjects show up in mail server logs, lists and notifications: never secrets in them,
/// and no line breaks.
fn subject_field<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    allowed: &[&str],
) -> Result<String, D::Error> {
    let text = template_field(d, key, allowed, &[], &[])?;
    if text.chars().any(char::is_control) {
        return Err(de::Error::custom(format!(
            "{key} must be one line without control characters"
        )));
    }
    Ok(text)
}

const CODE_SUBJECT: &[&str] = &["user", "host", "issuer", "minutes"];
const ENROLLMENT_SUBJECT: &[&str] = &["user", "host", "issuer", "expires"];

fn code_subject<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    subject_field(d, "code_subject", CODE_SUBJECT)
}

fn code_body<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template_field(d, "code_body", CODE, &["code"], &[])
}

fn enrollment_subject<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    subject_field(d, "enrollment_subject", ENROLLMENT_SUBJECT)
}

fn enrollment_body<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template_field(d, "enrollment_body", ENROLLMENT, &[], &["uri", "secret"])
}

const LINK_SUBJECT: &[&str] = &["user", "host", "issuer", "expires"];

fn link_subject<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    subject_field(d, "link_subject", LINK_SUBJECT)
}

fn link_body<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template_field(d, "link_body", LINK, &["url"], &[])
}

fn link_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template_field(d, "link_text", LINK, &["url"], &[])
}

fn code_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template_field(d, "code_text", CODE, &["code"], &[])
}

fn enrollment_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template_field(d, "enrollment_text", ENROLLMENT, &["secret"], &[])
}

fn url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    check_url(&text).map_err(de::Error::custom)?;
    Ok(text)
}

fn check_url(text: &str) -> Result<(), String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!("url is longer than {MAX_URL_BYTES} bytes"));
    }
    template::check(text, GATEWAY).map_err(|e| format!("url {e}"))?;
    const ORIGIN_RULE: &str = "url may use placeholders only in its path and query, and may not \
                               contain a user or password (use headers and {secret})";
    // Scheme, host and port come before the path: no placeholder may stand there.
    let origin_text = match text.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}{authority}")
        }
        None => String::new(),
    };
    if !template::placeholders(&origin_text).is_empty() {
        return Err(ORIGIN_RULE.into());
    }
    let url = parse_url(&fill_url(text, &dummy_values(DUMMY_SECRET)))?;
    // The same URL filled with other values must reach the same server: placeholders
    // belong in the path and query, never in the scheme, host or port.
    let other = parse_url(&fill_url(
        text,
        &[("phone", "1"), ("message", "2"), ("secret", "3")],
    ))?;
    let origin = |u: &http::Uri| {
        (
            u.scheme_str().map(str::to_ascii_lowercase),
            u.host().map(str::to_ascii_lowercase),
            u.port_u16(),
        )
    };
    let has_user = url
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'));
    if origin(&url) != origin(&other) || has_user {
        return Err(ORIGIN_RULE.into());
    }
    let host = url.host().unwrap_or_default();
    let scheme = url.scheme_str().unwrap_or_default().to_ascii_lowercase();
    match scheme.as_str() {
        "https" if !host.is_empty() => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        _ => Err(format!(
            "url must be https:// (http:// only to localhost or 127.0.0.1), not {scheme}://{host}"
        )),
    }
}

fn body<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    template::check(&text, GATEWAY).map_err(|e| de::Error::custom(format!("body {e}")))?;
    Ok(Some(text))
}

fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let headers = BTreeMap::<String, String>::deserialize(d)?;
    if headers.len() > MAX_HEADERS {
        return Err(de::Error::custom(format!(
            "at most {MAX_HEADERS} headers, not {}",
            headers.len()
        )));
    }
    for (name, value) in &headers {
        check_header(name, value, DUMMY_SECRET).map_err(de::Error::custom)?;
    }
    Ok(headers)
}

/// Checks one header with `secret` filled in; otpd repeats this at start with the real one.
pub fn check_header(name: &str, value: &str, secret: &str) -> Result<(), String> {
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
    template::check(value, HEADER).map_err(|e| format!("header {header_name} {e}"))?;
    let filled = template::render(value, &[("secret", secret)]);
    HeaderValue::from_str(&filled).map_err(|_| {
        format!(
            "header {header_name} is not a valid HTTP header value once filled (no control \
             characters or line breaks)"
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "server = \"smtp.example.com\"\nfrom = \"Kron <kron@example.com>\"\n";
    const SMS: &str = "url = \"https://api.example.com/v1/messages\"\n\
                       body = '{\"to\": \"{phone}\", \"text\": \"{message}\"}'\n";

    fn email(extra: &str) -> Result<EmailConfig, String> {
        toml::from_str::<EmailConfig>(&format!("{EMAIL}{extra}")).map_err(|e| e.to_string())
    }

    fn email_error(extra: &str) -> String {
        match email(extra) {
            Ok(config) => config.validate().expect_err("expected an error"),
            Err(e) => e,
        }
    }

    fn sms(text: &str) -> Result<SmsConfig, String> {
        toml::from_str::<SmsConfig>(text).map_err(|e| e.to_string())
    }

    fn sms_error(text: &str) -> String {
        match sms(text) {
            Ok(config) => config.validate().expect_err("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn email_defaults() {
        let config = email("").unwrap();
        config.validate().unwrap();
        assert_eq!(config.security, Security::StartTls);
        assert_eq!(config.port(), 587);
        assert_eq!(config.timeout, 10);
        assert_eq!(config.from, "Kron <kron@example.com>");
        assert_eq!(config.username, None);
        assert!(template::uses(&config.code_body, "code"));
        assert!(template::uses(&config.enrollment_body, "uri"));
        assert!(template::uses(&config.enrollment_body, "expires"));
        assert!(config.enrollment_body.contains("qr.png"));
    }

    #[test]
    fn email_full_and_ports() {
        let config = email(
            "port = 2525\nsecurity = \"tls\"\nusername = \"kron\"\n\
             password_file = \"/etc/kron/smtp-password\"\ntimeout = 60\n\
             code_subject = \"{issuer} code\"\ncode_body = \"{code}\"\n\
             enrollment_subject = \"Welcome {user}\"\nenrollment_body = \"{secret}\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.port(), 2525);
        assert_eq!(email("security = \"tls\"").unwrap().port(), 465);
        let local = toml::from_str::<EmailConfig>(
            "server = \"localhost\"\nsecurity = \"none\"\nfrom = \"kron@example.com\"\n",
        )
        .unwrap();
        local.validate().unwrap();
        assert_eq!(local.port(), 25);
    }

    #[test]
    fn email_rules() {
        assert!(email_error("port = 0").contains("port"));
        assert!(email_error("security = \"ssl\"").contains("unknown variant"));
        assert!(email_error("timeout = 0").contains("between 1 and 60"));
        assert!(email_error("timeout = 61").contains("between 1 and 60"));
        assert!(email_error("colour = 1").contains("unknown field"));
        assert!(email_error("password_file = \"smtp-password\"").contains("absolute"));
        assert!(email_error("username = \"kron\"").contains("needs password_file"));
        assert!(email_error("password_file = \"/p\"").contains("needs username"));
        assert!(email_error("security = \"none\"").contains("loopback"));
        assert!(email_error("code_body = \"no code here\"").contains("must contain {code}"));
        assert!(email_error("code_body = \"{code} {secret}\"").contains("unknown placeholder"));
        assert!(email_error("code_subject = \"{code}\"").contains("unknown placeholder"));
        assert!(email_error("enrollment_subject = \"{secret}\"").contains("unknown"));
        assert!(email_error("code_subject = \"a\\nb\"").contains("one line"));
        assert!(email_error("enrollment_body = \"{expires}\"").contains("{uri} or {secret}"));
        let long = format!("code_body = \"{{code}}{}\"", "x".repeat(4096));
        assert!(email_error(&long).contains("4096"));
        for bad in ["", "smtp example.com", "smtp/example.com"] {
            let text = format!("server = {bad:?}\nfrom = \"kron@example.com\"\n");
            let error = toml::from_str::<EmailConfig>(&text)
                .unwrap_err()
                .to_string();
            assert!(error.contains("server must be"), "{error}");
        }
        let long_server = format!("server = \"{}\"\nfrom = \"a@b.c\"\n", "a".repeat(254));
        assert!(toml::from_str::<EmailConfig>(&long_server).is_err());
        let bad_from = "server = \"smtp.example.com\"\nfrom = \"not an address\"\n";
        assert!(
            toml::from_str::<EmailConfig>(bad_from)
                .unwrap_err()
                .to_string()
                .contains("from must be")
        );
    }

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "LOCALHOST.",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "smtp.example.com",
            "128.0.0.1",
            "::2",
            "localhost.example.com",
            "",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn sms_defaults_and_full() {
        let config = sms(SMS).unwrap();
        config.validate().unwrap();
        assert_eq!(config.method, HttpMethod::Post);
        assert_eq!(config.body_format, BodyFormat::Json);
        assert_eq!(config.timeout, 10);
        assert!(template::uses(&config.code_text, "code"));
        assert!(template::uses(&config.enrollment_text, "secret"));
        let full = sms(&format!(
            "{SMS}method = \"PUT\"\nbody_format = \"json\"\n\
             headers = {{ Authorization = \"Bearer {{secret}}\", X-Kind = \"otp\" }}\n\
             secret_file = \"/etc/kron/sms-secret\"\ntimeout = 5\n\
             code_text = \"{{code}}\"\nenrollment_text = \"{{secret}} {{uri}}\"\n"
        ))
        .unwrap();
        full.validate().unwrap();
        assert_eq!(full.headers.len(), 2);
        let get = sms(
            "url = \"http://127.0.0.1:8080/send?to={phone}&text={message}&key={secret}\"\n\
             method = \"GET\"\nsecret_file = \"/s\"\n",
        )
        .unwrap();
        get.validate().unwrap();
        let form = sms(
            "url = \"https://gw.example.com/{phone}\"\nbody_format = \"form\"\n\
             body = \"text={message}\"\n",
        )
        .unwrap();
        form.validate().unwrap();
    }

    #[test]
    fn sms_rules() {
        let with = |extra: &str| sms_error(&format!("{SMS}{extra}"));
        assert!(sms_error("url = \"http://api.example.com/{phone}/{message}\"").contains("https"));
        assert!(sms_error("url = \"ftp://localhost/{phone}/{message}\"").contains("https"));
        assert!(sms_error("url = \"not a url {phone} {message}\"").contains("valid URL"));
        assert!(sms_error("url = \"https://{phone}.example.com/{message}\"").contains("path"));
        assert!(sms_error("url = \"https://u:p@example.com/{phone}/{message}\"").contains("user"));
        assert!(sms_error("url = \"https://example.com/{to}\"").contains("unknown placeholder"));
        assert!(
            sms_error("url = \"https://example.com/x\"\nbody = \"{message}\"")
                .contains("must contain {phone}")
        );
        assert!(
            sms_error(
                "url = \"https://example.com/{phone}\"\nbody = \"x\"\nbody_format = \"text\""
            )
            .contains("must contain {message}")
        );
        assert!(with("method = \"GET\"").contains("GET sends no body"));
        assert!(with("method = \"DELETE\"").contains("unknown variant"));
        assert!(with("body_format = \"xml\"").contains("unknown variant"));
        assert!(with("headers = { Authorization = \"Bearer {secret}\" }").contains("secret_file"));
        assert!(with("secret_file = \"/s\"").contains("no url, header or body uses"));
        assert!(with("secret_file = \"s\"").contains("absolute"));
        assert!(with("headers = { \"Bad Name\" = \"x\" }").contains("header name"));
        assert!(with("headers = { X-A = \"a\\nb\" }").contains("header value"));
        assert!(with("headers = { X-A = \"{phone}\" }").contains("unknown placeholder"));
        assert!(with("timeout = 61").contains("between 1 and 60"));
        assert!(with("code_text = \"hello\"").contains("must contain {code}"));
        assert!(with("enrollment_text = \"{uri}\"").contains("must contain {secret}"));
        assert!(with("sender = \"x\"").contains("unknown field"));
        let many: Vec<String> = (0..33).map(|i| format!("X-{i} = \"v\"")).collect();
        assert!(with(&format!("headers = {{ {} }}", many.join(", "))).contains("at most 32"));
        let json =
            "url = \"https://example.com/\"\nbody = '{\"to\": \"{phone}\" \"t\": \"{message}\"}'";
        assert!(sms_error(json).contains("not valid JSON"));
        let long = format!(
            "url = \"https://example.com/\"\nbody = \"{{phone}}{{message}}{}\"",
            "x".repeat(4096)
        );
        assert!(sms_error(&long).contains("4096"));
    }
}
