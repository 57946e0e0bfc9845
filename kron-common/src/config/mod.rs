//! `/etc/kron/otpd.toml`: parsing and validation. Every error names file:line.

mod codes;
mod delivery;
mod fleet;
mod shadowed;
mod web;

pub use codes::CodesConfig;
pub use delivery::{
    BodyFormat, EmailConfig, HttpMethod, Security, SmsConfig, check_header, dummy_values, fill_url,
    is_loopback,
};
pub use fleet::{
    DEFAULT_OFFLINE_KEEP, DEFAULT_OFFLINE_WINDOW, FleetConfig, MAX_HOST_NAME, MAX_OFFLINE_WINDOW,
    check_host_name, check_url,
};
pub use web::{DEFAULT_LINK_VALIDITY, WebConfig};

use crate::contact::{Channels, Patterns};
use kron_proto::Channel;
use serde::{Deserialize, Deserializer, de};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/kron/otpd.toml";
/// Largest config file otpd reads; anything bigger is a mistake, not a config.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
const MAX_RULES: usize = 1000;
/// Longest step-up grace: an hour, so a forgotten terminal does not stay privileged all day.
pub const MAX_GRACE: u64 = 3600;

/// An invalid config: the message starts with "file:line: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// What a login needs for a user, as decided by the first matching rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Must pass a code; no token → denied.
    Require,
    /// Ask only if a token is enrolled.
    Optional,
    /// No token → enroll during this login.
    Enroll,
    /// Never ask.
    Exempt,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Require => "require",
            Mode::Optional => "optional",
            Mode::Enroll => "enroll",
            Mode::Exempt => "exempt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Algorithm {
    SHA1,
    SHA256,
    SHA512,
}

/// Parameters for new tokens and the verification window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    pub algorithm: Algorithm,
    #[serde(deserialize_with = "digits")]
    pub digits: u8,
    #[serde(deserialize_with = "period")]
    pub period: u64,
    #[serde(deserialize_with = "skew")]
    pub skew: u8,
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            algorithm: Algorithm::SHA1,
            digits: 6,
            period: 30,
            skew: 1,
        }
    }
}

/// Backoff after failed attempts; see docs/throttling.md for the arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    #[serde(deserialize_with = "free_attempts")]
    pub free_attempts: u32,
    #[serde(deserialize_with = "positive_secs")]
    pub base_delay: u64,
    #[serde(deserialize_with = "positive_secs")]
    pub max_delay: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            free_attempts: 3,
            base_delay: 30,
            max_delay: 4 * 3600,
        }
    }
}

/// One `[[group]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    /// NSS group name, or `*` for every user.
    #[serde(deserialize_with = "group_name")]
    pub name: String,
    pub mode: Mode,
    /// PAM services the rule applies to; `None` = all.
    #[serde(default, deserialize_with = "services")]
    pub services: Option<Vec<String>>,
    /// Step-up grace in seconds: a login this rule decides is not asked again within this
    /// long of a code passed in the same login session and terminal. 0 = off (the default).
    #[serde(default, deserialize_with = "grace")]
    pub grace: u64,
    /// Channels a code is sent on before an enrollment is shown; `None` = the top-level list.
    #[serde(default)]
    pub validate_enrollment: Option<Channels>,
    /// Channels a login code may be sent on instead of TOTP; `None` = the top-level list.
    #[serde(default)]
    pub fallback: Option<Channels>,
}

impl GroupRule {
    pub fn applies_to_service(&self, service: &str) -> bool {
        self.services
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == service))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(deserialize_with = "issuer")]
    pub issuer: String,
    pub state_dir: PathBuf,
    pub bus: Option<String>,
    /// otpd's own socket: pam_kron talks D-Bus peer-to-peer there (docs/architecture.md).
    #[serde(deserialize_with = "socket_path")]
    pub socket: PathBuf,
    /// Connections to the socket one ordinary user (not root) may hold at once, the user's
    /// subordinate uids (`/etc/subuid`) included.
    #[serde(deserialize_with = "connections")]
    pub max_connections_per_uid: u32,
    /// Connections root may hold at once: sshd and sudo run the module as root, one
    /// connection per login in progress.
    #[serde(deserialize_with = "connections")]
    pub max_connections_root: u32,
    /// Connections every uid but root may hold together (many users, or many uids no range
    /// in `/etc/subuid` gives an owner).
    #[serde(deserialize_with = "connections")]
    pub max_connections_users: u32,
    pub default_mode: Mode,
    pub admin_group: String,
    /// Whom to ask, in every refusal a person sees.
    #[serde(deserialize_with = "contact_text")]
    pub contact: String,
    #[serde(deserialize_with = "positive_secs")]
    pub enroll_window: u64,
    #[serde(deserialize_with = "positive_secs")]
    pub login_timeout: u64,
    /// Users may export their own token (`kronctl export-token`) after passing a code.
    pub allow_token_export: bool,
    /// Channels for validated enrollment where no rule names its own (docs/delivery.md).
    pub validate_enrollment: Channels,
    /// Fallback channels where no rule names its own.
    pub fallback: Channels,
    pub contacts: Patterns,
    pub codes: CodesConfig,
    pub email: Option<EmailConfig>,
    pub sms: Option<SmsConfig>,
    /// kron-web and one-time enrollment links; `None`: no links (docs/delivery.md).
    pub web: Option<WebConfig>,
    /// The shared PostgreSQL store of a fleet (docs/fleet.md); `None`: sled on this host.
    pub fleet: Option<FleetConfig>,
    pub totp: TotpConfig,
    pub throttle: ThrottleConfig,
    #[serde(rename = "group", deserialize_with = "rules")]
    pub groups: Vec<GroupRule>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            issuer: "Kron".into(),
            state_dir: PathBuf::from("/var/lib/kron"),
            bus: None,
            socket: PathBuf::from(kron_proto::DEFAULT_SOCKET_PATH),
            max_connections_per_uid: 64,
            max_connections_root: 4096,
            max_connections_users: 1024,
            default_mode: Mode::Optional,
            admin_group: "kron-admin".into(),
            contact: "your system administrator".into(),
            enroll_window: 600,
            login_timeout: 300,
            allow_token_export: false,
            validate_enrollment: Channels::default(),
            fallback: Channels::default(),
            contacts: Patterns::default(),
            codes: CodesConfig::default(),
            email: None,
            sms: None,
            web: None,
            fleet: None,
            totp: TotpConfig::default(),
            throttle: ThrottleConfig::default(),
            groups: Vec::new(),
        }
    }
}

impl Config {
    /// Reads and validates `path`. A missing file at the default path means "all defaults"
    /// (a fresh install); a missing file named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match crate::files::read_bounded(path, MAX_CONFIG_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(e) => return Err(ConfigError(format!("{}: {e}", path.display()))),
        };
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start)).unwrap_or(1);
            ConfigError(format!("{origin}:{line}: {}", e.message()))
        })?;
        if !config.state_dir.is_absolute() {
            let line = find_key_line(text, "state_dir").unwrap_or(1);
            return Err(ConfigError(format!(
                "{origin}:{line}: state_dir must be an absolute path"
            )));
        }
        if config.throttle.max_delay < config.throttle.base_delay {
            // max_delay may be left at its default: then base_delay is the one to look at.
            let line = find_key_line(text, "max_delay")
                .or_else(|| find_key_line(text, "base_delay"))
                .unwrap_or(1);
            return Err(ConfigError(format!(
                "{origin}:{line}: max_delay must not be below base_delay"
            )));
        }
        config.check_channels(text, origin)?;
        shadowed::check(&config.groups, text, origin)?;
        Ok(config)
    }

    /// Cross-key checks of the email and SMS settings: each section's own rules, and every
    /// channel named in a list has its section.
    fn check_channels(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let section_error = |section: &str, reason: String| {
            let line = find_section_line(text, section).unwrap_or(1);
            ConfigError(format!("{origin}:{line}: [{section}]: {reason}"))
        };
        if let Some(email) = &self.email {
            email.validate().map_err(|e| section_error("email", e))?;
        }
        if let Some(sms) = &self.sms {
            sms.validate().map_err(|e| section_error("sms", e))?;
        }
        if let Some(web) = &self.web {
            web.validate().map_err(|e| section_error("web", e))?;
        }
        if let Some(fleet) = &self.fleet {
            fleet.validate().map_err(|e| section_error("fleet", e))?;
        }
        // Top-level keys come before any table in TOML: their first occurrence is theirs. A
        // rule's are found by the rule's own place in the file.
        let rule_places = toml::from_str::<RulePlaces>(text).unwrap_or_default();
        let lists = [
            ("validate_enrollment", Some(self.validate_enrollment), None),
            ("fallback", Some(self.fallback), None),
        ]
        .into_iter()
        .chain(self.groups.iter().enumerate().flat_map(|(index, rule)| {
            let place = rule_places.group.get(index);
            [
                (
                    "validate_enrollment",
                    rule.validate_enrollment,
                    place.and_then(|p| p.validate_enrollment.as_ref()),
                ),
                (
                    "fallback",
                    rule.fallback,
                    place.and_then(|p| p.fallback.as_ref()),
                ),
            ]
        }));
        for (key, channels, place) in lists {
            for channel in channels.iter().flat_map(|c| c.iter()) {
                if !self.has_channel(channel) {
                    let line = place
                        .map(|spanned| line_of(text, spanned.span().start))
                        .or_else(|| find_key_line(text, key))
                        .unwrap_or(1);
                    return Err(ConfigError(format!(
                        "{origin}:{line}: {key} names \"{0}\" but there is no [{0}] section",
                        channel.as_str()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `channel` has its config section.
    pub fn has_channel(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email.is_some(),
            Channel::Sms => self.sms.is_some(),
        }
    }

    /// The address otpd serves on: `--bus`, else the `bus` key, else the system bus.
    pub fn bus_address(&self, flag: Option<&str>) -> String {
        flag.map(str::to_owned)
            .or_else(|| self.bus.clone())
            .unwrap_or_else(|| kron_proto::DEFAULT_BUS_ADDRESS.to_owned())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Where each `[[group]]` rule's channel lists are in the file.
#[derive(Deserialize, Default)]
struct RulePlaces {
    #[serde(default)]
    group: Vec<RuleKeys>,
}

#[derive(Deserialize)]
struct RuleKeys {
    validate_enrollment: Option<toml::Spanned<toml::Value>>,
    fallback: Option<toml::Spanned<toml::Value>>,
}

fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.starts_with(key) && line[key.len()..].trim_start().starts_with('=')
        })
        .map(|index| index + 1)
}

/// The line of `[section]` (a comment may follow the header), else of `section = {…}`.
fn find_section_line(text: &str, section: &str) -> Option<usize> {
    let header = format!("[{section}]");
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(&header)
                .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
        })
        .map(|index| index + 1)
        .or_else(|| find_key_line(text, section))
}

fn socket_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    let length = path.as_os_str().len();
    if !path.is_absolute() || length > kron_proto::MAX_SOCKET_PATH_LEN {
        return Err(de::Error::custom(format!(
            "socket must be an absolute path of at most {} bytes",
            kron_proto::MAX_SOCKET_PATH_LEN
        )));
    }
    Ok(path)
}

fn connections<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        n @ 1..=65_536 => Ok(n),
        n => Err(de::Error::custom(format!(
            "expected a number of connections between 1 and 65536, not {n}"
        ))),
    }
}

fn digits<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    match u8::deserialize(d)? {
        n @ (6 | 8) => Ok(n),
        n => Err(de::Error::custom(format!("digits must be 6 or 8, not {n}"))),
    }
}

fn period<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        n @ (30 | 60) => Ok(n),
        n => Err(de::Error::custom(format!(
            "period must be 30 or 60 seconds, not {n}"
        ))),
    }
}

fn skew<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    match u8::deserialize(d)? {
        n @ 0..=2 => Ok(n),
        n => Err(de::Error::custom(format!(
            "skew must be 0, 1 or 2 steps, not {n}"
        ))),
    }
}

fn free_attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        n @ 1..=10 => Ok(n),
        n => Err(de::Error::custom(format!(
            "free_attempts must be between 1 and 10, not {n}"
        ))),
    }
}

fn positive_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        n @ 1..=86_400 => Ok(n),
        n => Err(de::Error::custom(format!(
            "expected seconds between 1 and 86400, not {n}"
        ))),
    }
}

fn grace<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        n @ 0..=MAX_GRACE => Ok(n),
        n => Err(de::Error::custom(format!(
            "grace must be between 0 and {MAX_GRACE} seconds, not {n}"
        ))),
    }
}

fn issuer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let issuer = String::deserialize(d)?;
    if issuer.is_empty()
        || issuer.len() > 64
        || issuer.contains(':')
        || issuer.chars().any(char::is_control)
    {
        return Err(de::Error::custom(
            "issuer must be 1 to 64 characters without ':' or control characters",
        ));
    }
    Ok(issuer)
}

/// Longest `contact`: a name, a phone number or an address, with a few words.
const MAX_CONTACT_LEN: usize = 256;

/// `contact` goes into the messages pam_kron shows, and pam_kron refuses a reply holding a
/// control character (an escape sequence would drive the person's terminal) as malformed: a tab
/// or a carriage return here would turn every refusal into "unavailable".
fn contact_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let contact = String::deserialize(d)?;
    if contact.is_empty()
        || contact.len() > MAX_CONTACT_LEN
        || contact.chars().any(char::is_control)
    {
        return Err(de::Error::custom(format!(
            "contact must be 1 to {MAX_CONTACT_LEN} bytes without control characters (tabs, \
             line breaks)"
        )));
    }
    Ok(contact)
}

fn group_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name == "*" {
        return Ok(name);
    }
    kron_proto::validate_user(&name)
        .map_err(|e| de::Error::custom(e.replace("user name", "group name")))?;
    Ok(name)
}

fn services<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "services must name at least one PAM service (omit it to match all)",
        ));
    }
    if let Some(bad) = list.iter().find(|s| {
        s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        return Err(de::Error::custom(format!(
            "invalid PAM service name {bad:?}"
        )));
    }
    Ok(Some(list))
}

fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<GroupRule>, D::Error> {
    let rules = Vec::<GroupRule>::deserialize(d)?;
    if rules.len() > MAX_RULES {
        return Err(de::Error::custom(format!(
            "more than {MAX_RULES} [[group]] rules"
        )));
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match Config::parse(text, "otpd.toml") {
            Err(ConfigError(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    /// Cross-key errors name the line at fault: a rule's own list (not the top-level one), a
    /// section header with a comment after it, base_delay when max_delay is left at its default.
    /// `contact` is shown in refusals: a control character there would make pam_kron refuse
    /// every such reply as malformed ("unavailable"), so it is a config error at its line.
    #[test]
    fn a_contact_with_a_control_character_is_refused_at_its_line() {
        for bad in [
            "contact = \"the\\thelp desk\"",
            "contact = \"\"",
            "contact = \"a\\r\"",
        ] {
            let error = error_of(&format!("issuer = \"x\"\n{bad}\n"));
            assert!(error.starts_with("otpd.toml:2:"), "{bad}: {error}");
            assert!(error.contains("contact must be"), "{bad}: {error}");
        }
        let fine = Config::parse(
            "contact = \"the help desk, +49 30 1234 (24 h)\"\n",
            "otpd.toml",
        );
        assert_eq!(fine.unwrap().contact, "the help desk, +49 30 1234 (24 h)");
    }

    #[test]
    fn cross_key_errors_name_the_line_at_fault() {
        let rule = "fallback = [\"email\"]\n\
                    [email]   # the relay\nserver = \"mail.example.com\"\nfrom = \"kron@example.com\"\n\
                    [[group]]\nname = \"wheel\"\nmode = \"require\"\nfallback = [\"email\"]\n\
                    [[group]]\nname = \"ops\"\nmode = \"require\"\nfallback = [\"sms\"]\n";
        let error = error_of(rule);
        assert!(
            error.starts_with("otpd.toml:12: fallback names \"sms\""),
            "{error}"
        );
        let relay =
            "server = \"mail.example.com\"\nsecurity = \"none\"\nfrom = \"kron@example.com\"\n";
        let section = format!("[email]   # the relay\n{relay}");
        let error = error_of(&section);
        assert!(error.starts_with("otpd.toml:1: [email]"), "{error}");
        let section = format!("issuer = \"x\"\n\n[email] # relay\n{relay}");
        let error = error_of(&section);
        assert!(error.starts_with("otpd.toml:3: [email]"), "{error}");
        let delay = "issuer = \"x\"\n[throttle]\nbase_delay = 20000\n";
        let error = error_of(delay);
        assert!(error.starts_with("otpd.toml:3: max_delay"), "{error}");
    }

    #[test]
    fn defaults_are_safe() {
        let config = Config::parse("", "otpd.toml").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.totp.skew, 1);
        assert_eq!(config.bus_address(None), kron_proto::DEFAULT_BUS_ADDRESS);
        assert_eq!(config.bus_address(Some("unix:path=/x")), "unix:path=/x");
    }

    #[test]
    fn shipped_config_parses_to_defaults() {
        let text = include_str!("../../../conf/otpd.toml");
        assert_eq!(Config::parse(text, "otpd.toml").unwrap(), Config::default());
    }

    #[test]
    fn full_config_parses() {
        let config = Config::parse(
            r#"
issuer = "Example"
state_dir = "/srv/kron"
default_mode = "require"
[totp]
algorithm = "SHA256"
digits = 8
period = 60
[[group]]
name = "wheel"
mode = "require"
services = ["sudo", "sshd"]
grace = 300
[[group]]
name = "*"
mode = "exempt"
"#,
            "otpd.toml",
        )
        .unwrap();
        assert_eq!(config.groups.len(), 2);
        assert!(config.groups[0].applies_to_service("sudo"));
        assert!(!config.groups[0].applies_to_service("login"));
        assert!(config.groups[1].applies_to_service("login"));
        assert_eq!(config.totp.digits, 8);
        assert_eq!((config.groups[0].grace, config.groups[1].grace), (300, 0));
    }

    #[test]
    fn every_table_refuses_unknown_keys_at_their_line() {
        let sections = [
            "",
            "[totp]\n",
            "[throttle]\n",
            "[[group]]\nname = \"wheel\"\nmode = \"require\"\n",
            "[contacts]\n",
            "[codes]\n",
            "[email]\nserver = \"mail.example.com\"\nfrom = \"kron@example.com\"\n",
            "[sms]\nurl = \"https://gw.example.com/send\"\nbody = \"{\\\"to\\\": \\\"{phone}\\\", \\\"text\\\": \\\"{message}\\\"}\"\n",
        ];
        for section in sections {
            let good = format!("issuer = \"x\"\n{section}");
            Config::parse(&good, "otpd.toml").unwrap_or_else(|e| panic!("{e}\n{good}"));
            let bad = format!("{good}colour = \"blue\"\n");
            let line = bad.lines().count();
            let error = error_of(&bad);
            assert!(
                error.starts_with(&format!("otpd.toml:{line}:")) && error.contains("colour"),
                "{error}\n{bad}"
            );
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            error_of("issuer = \"x\"\n\ndefault_mode = \"maybe\"\n")
                .split(':')
                .nth(1),
            Some("3")
        );
        assert!(error_of("[totp]\ndigits = 7\n").starts_with("otpd.toml:2:"));
        assert!(error_of("[totp]\ndigits = 7\n").contains("6 or 8"));
        assert!(error_of("\n\nbogus_key = 1\n").starts_with("otpd.toml:3:"));
        assert!(
            error_of("[[group]]\nname = \"wheel\"\nmode = \"require\"\nservices = []\n")
                .starts_with("otpd.toml:4:")
        );
        assert!(error_of("state_dir = \"relative\"\n").starts_with("otpd.toml:1:"));
        assert!(error_of("\nsocket = \"otpd.sock\"\n").starts_with("otpd.toml:2:"));
        assert!(error_of("max_connections_per_uid = 0\n").contains("between 1 and 65536"));
        assert!(
            error_of("[throttle]\nbase_delay = 60\nmax_delay = 30\n").starts_with("otpd.toml:3:")
        );
        assert!(error_of("issuer = \"a:b\"\n").contains("issuer"));
        assert!(
            error_of("[[group]]\nname = \"w\"\nmode = \"require\"\ngrace = 7200\n")
                .starts_with("otpd.toml:4:")
        );
        assert!(error_of("not toml at all [").starts_with("otpd.toml:1:"));
    }

    #[test]
    fn fleet_section_errors_name_the_line() {
        let good = "[fleet]\nurl = \"postgresql://kron_a@db/kron\"\nca_file = \"/etc/kron/ca.pem\"\npassword_file = \"/etc/kron/pw\"\n";
        let config = Config::parse(good, "otpd.toml").unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(fleet.host, None);
        assert_eq!(
            (fleet.offline_window, fleet.offline_keep),
            (8 * 3600, 30 * 86_400)
        );
        let off = Config::parse(&format!("{good}offline_window = 0\n"), "otpd.toml").unwrap();
        assert_eq!(off.fleet.unwrap().offline_window, 0);
        assert!(
            error_of(&format!("{good}offline_window = 30\n"))
                .starts_with("otpd.toml:5: offline_window must be 0")
        );
        assert!(
            error_of(&format!("{good}\noffline_window = 700000\n")).starts_with("otpd.toml:6:")
        );
        assert!(
            error_of(&format!("{good}offline_keep = 60\n"))
                .starts_with("otpd.toml:5: offline_keep must be")
        );
        assert!(
            error_of(
                "\n[fleet]\nurl = \"postgresql://kron_a@db/kron\"\nca_file = \"/etc/kron/ca.pem\"\n"
            )
            .starts_with("otpd.toml:2: [fleet]: the host must prove")
        );
        assert!(
            error_of("[fleet]\nca_file = \"/c\"\nurl = \"postgresql://a:pw@db/kron\"\n")
                .starts_with("otpd.toml:3:")
        );
        assert!(
            error_of("[fleet]\nurl = \"postgresql://a@db/kron\"\nca_file = \"ca.pem\"\n")
                .starts_with("otpd.toml:3:")
        );
        assert!(error_of(&format!("{good}host = \"Bad Name\"\n")).starts_with("otpd.toml:5:"));
        assert!(
            error_of(&format!("{good}cert_file = \"/c\"\nkey_file = \"/k\"\n"))
                .contains("exclude each other")
        );
        assert!(error_of(&format!("{good}bogus = 1\n")).starts_with("otpd.toml:5:"));
    }
}
