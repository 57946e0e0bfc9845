//! The D-Bus contract between `pam_kron.so`, `kronctl` and `otpd`.
//!
//! One file holds every name, type and bound that crosses the bus, so the module, the CLI and
//! the daemon cannot drift apart. The interface name carries a version: an incompatible change
//! gets `io.kron.Otpd2`, never a silent edit of `Otpd1`.
//!
//! A login is a short conversation driven by otpd:
//! 1. the module calls [`OtpdProxy::begin_login`] with what PAM knows;
//! 2. otpd answers with a [`Step`]: show its messages, then either ask `prompt` and send the
//!    answer back with [`OtpdProxy::answer`], or stop with the outcome in `kind`;
//! 3. this repeats until a step is terminal ([`StepKind::is_terminal`]).

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use zbus::{Type, proxy};

/// Well-known bus name otpd owns. Only root may own it (see the D-Bus policy file).
pub const BUS_NAME: &str = "io.kron.Otpd";
/// Object path of the one object otpd serves.
pub const OBJECT_PATH: &str = "/io/kron/Otpd";
/// Versioned interface name.
pub const INTERFACE: &str = "io.kron.Otpd1";
/// Address used when neither a module argument nor a command-line flag names one.
pub const DEFAULT_BUS_ADDRESS: &str = "unix:path=/run/dbus/system_bus_socket";
/// otpd's own socket, where pam_kron talks D-Bus peer-to-peer (no bus daemon in between).
pub const DEFAULT_SOCKET_PATH: &str = "/run/kron/otpd.sock";
/// Longest path a unix socket address can hold (`sun_path` less its terminating NUL).
pub const MAX_SOCKET_PATH_LEN: usize = 107;
/// Seconds otpd waits for an email or SMS server during a login before it prompts anyway (the
/// send goes on by itself). pam_kron's `timeout=` must be longer, or a slow server makes the
/// login "unavailable"; `kronctl doctor` says so.
pub const LOGIN_SEND_WAIT_SECS: u64 = 3;
/// The SASL line otpd's socket answers a connection with, instead of `OK`, when the caller's
/// uid already holds its share of connections (or all users but root together hold theirs);
/// then it hangs up. A client must take it as a refusal of this login (pam_kron:
/// PAM_MAXTRIES), never as otpd being unreachable: a person who can open connections must not
/// be able to turn their own login into "unavailable", which a stack may be told to let
/// through.
pub const CONNECTION_LIMIT_LINE: &[u8] =
    b"ERROR io.kron.Otpd1.Error.Throttled too many connections\r\n";

/// Bytes of a D-Bus message's fixed header: endianness, type, flags, version, body length,
/// serial, and the length of the header fields that follow it.
pub const MESSAGE_FIXED_HEADER: usize = 16;

/// What the first [`MESSAGE_FIXED_HEADER`] bytes of a D-Bus message say of it: its byte order,
/// the length of its header (fixed part and fields, padded to 8: where the body starts) and of
/// the whole message. `None` for an endianness byte D-Bus does not define. In `u64`, where
/// no announced length can overflow, so each reader bounds them before it buffers anything:
/// otpd's socket and pam_kron's client both read messages from peers they do not trust.
pub fn message_lengths(
    head: &[u8; MESSAGE_FIXED_HEADER],
) -> Option<(zbus::wire::Endian, u64, u64)> {
    use zbus::wire::Endian;
    let endian = match head[0] {
        b'l' => Endian::Little,
        b'B' => Endian::Big,
        _ => return None,
    };
    let u32_at = |at: usize| {
        let bytes = [head[at], head[at + 1], head[at + 2], head[at + 3]];
        u64::from(match endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        })
    };
    let header = (MESSAGE_FIXED_HEADER as u64 + u32_at(12)).next_multiple_of(8);
    Some((endian, header, header + u32_at(4)))
}

/// An out-of-band channel for codes and enrollments. Its name (`"email"`, `"sms"`) is what the
/// config, the D-Bus methods and the prompt use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Email, Channel::Sms];

    /// The name in config, on D-Bus and at the prompt ("email", "sms").
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Longest user name accepted anywhere (bytes).
pub const MAX_USER_LEN: usize = 256;
/// Longest PAM service, rhost or tty string accepted (bytes).
pub const MAX_FIELD_LEN: usize = 1024;
/// Longest answer a person may type at a prompt (bytes).
pub const MAX_RESPONSE_LEN: usize = 512;
/// Longest login handle (bytes).
pub const MAX_HANDLE_LEN: usize = 64;
/// Most messages one step may carry.
pub const MAX_MESSAGES: usize = 16;
/// Longest message text (bytes); a terminal QR code fits comfortably.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Longest prompt text (bytes).
pub const MAX_PROMPT_LEN: usize = 256;

/// Longest export passphrase accepted (bytes); longer input is a mistake.
pub const MAX_PASSPHRASE: usize = 1024;
/// Lengths of a TOTP secret (bytes) that otpd imports: RFC 4226 asks for at least 128 bits
/// (16 bytes) and recommends 160, but google-authenticator's 80-bit secrets must come across.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 10..=64;

/// Checks a secret's length against [`SECRET_LEN`].
pub fn check_secret_len(secret: &[u8]) -> Result<(), String> {
    if !SECRET_LEN.contains(&secret.len()) {
        return Err(format!(
            "a secret of {} bytes is outside {}..={}",
            secret.len(),
            SECRET_LEN.start(),
            SECRET_LEN.end()
        ));
    }
    Ok(())
}

/// What the module must do after rendering a step's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum StepKind {
    /// Ask `prompt` (echo as `echo` says) and send the answer with `Answer`.
    Prompt = 1,
    /// The second factor passed: PAM_SUCCESS.
    Accept = 2,
    /// Refused (wrong code, throttled, not allowed): PAM_AUTH_ERR.
    Deny = 3,
    /// Nothing to check for this login (exempt, or optional and not enrolled): PAM_IGNORE,
    /// so the rest of the stack decides and kron never grants access on its own.
    Skip = 4,
    /// otpd could not decide (store failure and the like): PAM_AUTHINFO_UNAVAIL.
    Unavailable = 5,
    /// Refused because of too many failed attempts: PAM_MAXTRIES, so applications (sudo, sshd)
    /// stop retrying instead of repeating the refusal.
    Throttled = 6,
}

impl StepKind {
    /// True for every kind that ends the login conversation.
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepKind::Prompt)
    }
}

impl TryFrom<u32> for StepKind {
    type Error = u32;
    fn try_from(raw: u32) -> Result<Self, u32> {
        Ok(match raw {
            1 => StepKind::Prompt,
            2 => StepKind::Accept,
            3 => StepKind::Deny,
            4 => StepKind::Skip,
            5 => StepKind::Unavailable,
            6 => StepKind::Throttled,
            other => return Err(other),
        })
    }
}

/// How a message is shown: `PAM_TEXT_INFO` or `PAM_ERROR_MSG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MessageLevel {
    Info = 1,
    Error = 2,
}

impl TryFrom<u32> for MessageLevel {
    type Error = u32;
    fn try_from(raw: u32) -> Result<Self, u32> {
        match raw {
            1 => Ok(MessageLevel::Info),
            2 => Ok(MessageLevel::Error),
            other => Err(other),
        }
    }
}

/// One text for the person at the terminal: `(level, text)`, level as [`MessageLevel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Message {
    pub level: u32,
    pub text: String,
}

impl Message {
    pub fn info(text: impl Into<String>) -> Self {
        Message {
            level: MessageLevel::Info as u32,
            text: text.into(),
        }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Message {
            level: MessageLevel::Error as u32,
            text: text.into(),
        }
    }
}

/// One turn of the login conversation, from otpd to the module.
///
/// D-Bus signature `(ua(us)sbs)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Step {
    /// A [`StepKind`] as u32; anything else is a malformed reply.
    pub kind: u32,
    /// Shown in order before the prompt or the outcome.
    pub messages: Vec<Message>,
    /// The question to ask; empty unless `kind` is `Prompt`.
    pub prompt: String,
    /// Whether the answer may be echoed (never for codes).
    pub echo: bool,
    /// Opaque handle to pass to `Answer`; empty on terminal steps.
    pub handle: String,
}

/// Why a [`Step`] from the bus was refused by the receiving side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    UnknownKind(u32),
    UnknownLevel(u32),
    TooManyMessages,
    MessageTooLong,
    PromptTooLong,
    HandleTooLong,
    PromptWithoutHandle,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::UnknownKind(k) => write!(f, "unknown step kind {k}"),
            StepError::UnknownLevel(l) => write!(f, "unknown message level {l}"),
            StepError::TooManyMessages => write!(f, "too many messages in one step"),
            StepError::MessageTooLong => write!(f, "message too long"),
            StepError::PromptTooLong => write!(f, "prompt too long"),
            StepError::HandleTooLong => write!(f, "login handle too long"),
            StepError::PromptWithoutHandle => write!(f, "prompt step without a handle"),
        }
    }
}

impl std::error::Error for StepError {}

impl Step {
    /// Checks every bound of the contract and returns the step's kind.
    /// The module calls this on each reply and denies on error (fail closed).
    pub fn validate(&self) -> Result<StepKind, StepError> {
        let kind = StepKind::try_from(self.kind).map_err(StepError::UnknownKind)?;
        if self.messages.len() > MAX_MESSAGES {
            return Err(StepError::TooManyMessages);
        }
        for message in &self.messages {
            MessageLevel::try_from(message.level).map_err(StepError::UnknownLevel)?;
            if message.text.len() > MAX_MESSAGE_LEN {
                return Err(StepError::MessageTooLong);
            }
        }
        if self.prompt.len() > MAX_PROMPT_LEN {
            return Err(StepError::PromptTooLong);
        }
        if self.handle.len() > MAX_HANDLE_LEN {
            return Err(StepError::HandleTooLong);
        }
        if kind == StepKind::Prompt && self.handle.is_empty() {
            return Err(StepError::PromptWithoutHandle);
        }
        Ok(kind)
    }

    /// A terminal step with the given messages.
    pub fn terminal(kind: StepKind, messages: Vec<Message>) -> Self {
        debug_assert!(kind.is_terminal());
        Step {
            kind: kind as u32,
            messages,
            prompt: String::new(),
            echo: false,
            handle: String::new(),
        }
    }
}

/// A pending enrollment, as returned to `kronctl enroll`. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Enrollment {
    /// Whose token this is.
    pub user: String,
    /// `otpauth://totp/...` URI for authenticator apps.
    pub uri: String,
    /// Base32 secret for manual entry.
    pub secret: String,
    /// Unix time (seconds) after which the pending token is void.
    pub expires: u64,
}

/// What `Status`, `List` and `ListPage` report for one user. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct UserStatus {
    pub user: String,
    /// A confirmed token exists.
    pub enrolled: bool,
    /// An unconfirmed enrollment is waiting (and not yet expired).
    pub pending: bool,
    /// Code checks are currently refused because of failed attempts.
    pub locked: bool,
    /// Unix time when the next attempt is allowed; 0 when not locked.
    pub locked_until: u64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Unix time of the last accepted code; 0 if never.
    pub last_used: u64,
    /// Unused recovery codes left.
    pub recovery_codes: u32,
    /// The email address codes go to, masked (`a***@example.com`); "" if none.
    pub email: String,
    /// The phone number codes go to, masked (`+49 *** ** 12`); "" if none.
    pub phone: String,
}

/// Where a code or an enrollment was sent. Never the full address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Delivery {
    /// "email" or "sms".
    pub channel: String,
    /// The masked address (`a***@example.com`, `+49 *** ** 12`).
    pub destination: String,
    /// Unix time the code or the enrollment expires.
    pub expires: u64,
}

/// A token brought in from another system (google-authenticator, pam_oath) by `kronctl import`.
/// Travels only from root's kronctl to otpd; otpd seals the secret at once. `Debug` hides the
/// secret and the codes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TokenImport {
    pub user: String,
    /// Raw secret bytes (not base32).
    pub secret: Vec<u8>,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    /// 6 or 8.
    pub digits: u8,
    /// 30 or 60 seconds.
    pub period: u64,
    /// Highest time step already used on the old system (0 = none): it stays used.
    pub last_step: u64,
    /// One-time codes of the old system (e.g. scratch codes); they become recovery codes.
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("user", &self.user)
            .field("uri", &"<redacted>")
            .field("secret", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl std::fmt::Debug for TokenImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenImport")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("last_step", &self.last_step)
            .field("recovery_codes", &self.recovery_codes.len())
            .finish()
    }
}

/// What an import did, or would do with `dry_run`, for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ImportResult {
    pub user: String,
    /// `imported`, `replaced` or `skipped`; from a fleet push, `pushed` or `conflict`.
    pub outcome: String,
    /// Why it was skipped; empty otherwise.
    pub reason: String,
}

/// What `FleetStatus` reports: this host's `[fleet]` settings and what the database says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct FleetStatus {
    /// otpd.toml has a `[fleet]` section; everything else is empty without one.
    pub configured: bool,
    /// This host's name in the fleet (the `host` key, else the machine's name).
    pub host: String,
    /// The connection URL (it never holds a password).
    pub url: String,
    /// A statement was answered just now.
    pub reachable: bool,
    /// Why not, when not reachable; "" otherwise.
    pub error: String,
    /// The schema version `kronctl fleet init` left; 0 if unknown.
    pub schema_version: u32,
    pub server_version: String,
    /// The server takes writes (not a standby in recovery).
    pub primary: bool,
    /// The name the database knows this host's role by (kron.hosts).
    pub database_host: String,
    /// Standbys the server reports (`pg_stat_replication`), where the role may see them.
    pub replicas: Vec<FleetReplica>,
    /// `offline_window` in seconds; 0: offline logins are off on this host.
    pub offline_window: u64,
    /// Since when (unix time) this host has reached the database, or has not (`reachable`
    /// says which); when otpd started if nothing changed since.
    pub since: u64,
    /// Users with an offline pack on this host.
    pub pack_users: u32,
    /// The newest and the oldest fetch of a pack (unix time; 0: no pack).
    pub pack_newest: u64,
    pub pack_oldest: u64,
    /// When the first pack runs out (unix time; 0: no pack).
    pub pack_ends: u64,
    /// Offline uses and failures waiting to be replayed in the database.
    pub journal_waiting: u32,
    /// Every host of the fleet as the database knows its packs; empty when unreachable.
    pub hosts: Vec<FleetHost>,
}

/// One host of the fleet as the database knows its offline packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct FleetHost {
    pub host: String,
    /// Users it holds a pack of.
    pub users: u32,
    /// Its newest pack fetch (unix time; 0: none).
    pub fetched: u64,
    /// It had replayed its journal as of then (unix time; 0: no pack).
    pub synced: u64,
}

/// One standby of the fleet's database, as `pg_stat_replication` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct FleetReplica {
    pub name: String,
    pub state: String,
    pub sync_state: String,
}

/// One row of the fleet's audit table, for `kronctl fleet log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct FleetLogEntry {
    /// Unix time of the decision.
    pub at: u64,
    /// The host that decided, as the database knows its role.
    pub host: String,
    pub event: String,
    pub user: String,
    pub service: String,
    pub rhost: String,
    pub tty: String,
    pub caller_uid: u32,
    pub detail: String,
}

/// Most rows one `FleetLog` call returns.
pub const MAX_FLEET_LOG: u32 = 100_000;

/// Longest export file otpd accepts for import in one `Import` call (the streamed methods,
/// `ImportBegin` and on, take files of any size). On the bus the message bound (a little over
/// [`MAX_CHUNK_BYTES`]) is reached first.
pub const MAX_BACKUP_BYTES: usize = 256 * 1024 * 1024;
/// Largest piece of an export file in one `ExportNext` answer or `ImportChunk` call.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Most users one `ImportApply` call applies.
pub const MAX_APPLY: u32 = 10_000;
/// Most users one `ListPage` answer holds: a page of the largest records stays a few MiB in
/// otpd's memory and far inside the bus's message bound.
pub const MAX_LIST_PAGE: u32 = 1000;
/// Most local users one `FleetPushPage` call pushes: each is a statement and a commit in the
/// fleet's database, and the page's answer stays far inside the bus's message bound.
pub const MAX_PUSH_PAGE: u32 = 1000;
/// Most users `List`, `Export` and `FleetPush`, which answer in one message, answer for. Past
/// it they refuse and name their paged or streamed successor (`ListPage`, `ExportBegin`,
/// `FleetPushPage`): a store of a million users, read whole, would pass otpd's memory limit,
/// and its answer the bus's bound.
pub const MAX_ONE_MESSAGE_USERS: usize = 10_000;
/// Most tokens in one `ImportTokens` call.
pub const MAX_IMPORT_TOKENS: usize = 100_000;

/// Longest one-time link token accepted (bytes): the user name in base64url (at most 342
/// characters for 256 bytes), a dot, and 43 characters of randomness.
pub const MAX_LINK_TOKEN_LEN: usize = 400;
/// Longest client address kron-web passes with a link call (bytes); an IPv6 address with a
/// zone fits.
pub const MAX_CLIENT_LEN: usize = 64;
/// Wrong codes after which a one-time link dies.
pub const MAX_LINK_FAILURES: u32 = 5;
/// Longest link validity otpd accepts in its config (seconds): 7 days.
pub const MAX_LINK_VALIDITY: u64 = 7 * 86_400;

/// A one-time enrollment link just made (`CreateLink`). `url` is "" when otpd sent the link
/// itself: the admin never sees a link that went to the user. `Debug` hides the URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LinkGrant {
    pub user: String,
    /// `https://host/enroll/TOKEN`; "" when sent by email or SMS.
    pub url: String,
    /// Unix time after which the link is dead.
    pub expires: u64,
    /// "" when the URL was returned, else "email" or "sms".
    pub channel: String,
    /// Where it was sent, masked; "" when not sent.when returned.
    pub destination: String,
}

/// The live one-time link of a user (`LinkStatus`), as kronctl shows it. Never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LinkStatus {
    /// A live link exists; the other fields are 0 or "" when not.
    pub active: bool,
    /// Unix time the link was made.
    pub created: u64,
    /// Unix time after which it is dead.
    pub expires: u64,
    /// Wrong codes typed on its page so far (it dies at [`MAX_LINK_FAILURES`]).
    pub failures: u32,
    /// "" when the URL was handed to an admin, else "email" or "sms".
    pub channel: String,
    /// Where it was sent, masked; "" when not sent.
    pub destination: String,
}

/// What the page of a live link shows (`ShowLink`), for kron-web. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LinkPage {
    /// The `issuer` of otpd's config: the name in authenticator apps.
    pub issuer: String,
    pub user: String,
    /// The host the token is for.
    pub host: String,
    /// `otpauth://totp/...`, for the QR code.
    pub uri: String,
    /// Base32 secret for manual entry.
    pub secret: String,
    /// Unix time after which the link is dead.
    pub expires: u64,
    /// Wrong codes the page still accepts before the link dies.
    pub attempts_left: u32,
}

impl std::fmt::Debug for LinkGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkGrant")
            .field("user", &self.user)
            .field("url", &"<redacted>")
            .field("expires", &self.expires)
            .field("channel", &self.channel)
            .field("destination", &self.destination)
            .finish()
    }
}

impl std::fmt::Debug for LinkPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkPage")
            .field("issuer", &self.issuer)
            .field("user", &self.user)
            .field("host", &self.host)
            .field("uri", &"<redacted>")
            .field("secret", &"<redacted>")
            .field("expires", &self.expires)
            .field("attempts_left", &self.attempts_left)
            .finish()
    }
}

/// Errors otpd returns, as D-Bus error names `io.kron.Otpd1.Error.<Variant>`.
/// Texts never contain codes or secrets.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.kron.Otpd1.Error")]
pub enum OtpdError {
    /// Transport-level failure on the client side.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not do this for this user.
    AccessDenied(String),
    /// A malformed or oversize argument.
    InvalidArgument(String),
    /// No such user, token or enrollment.
    NotFound(String),
    /// The request conflicts with what is stored (e.g. a confirmed token already exists).
    Conflict(String),
    /// Too many failed attempts; retry later.
    Throttled(String),
    /// The code was wrong, already used or the enrollment expired.
    Rejected(String),
    /// otpd could not complete the request (storage, a mail or SMS server, and the like).
    Failed(String),
    /// The request needs the code sent to the user's contact (`SendEnrollmentCode`) first.
    ValidationRequired(String),
}

/// Client side of `io.kron.Otpd1`, used by `pam_kron.so` and `kronctl`.
#[proxy(
    interface = "io.kron.Otpd1",
    default_service = "io.kron.Otpd",
    default_path = "/io/kron/Otpd"
)]
pub trait Otpd {
    /// Starts a login check for `user` (root, or the user themself).
    fn begin_login(&self, user: &str, service: &str, rhost: &str, tty: &str) -> zbus::Result<Step>;
    /// Sends the answer to the prompt of the step that carried `handle`.
    fn answer(&self, handle: &str, response: &str) -> zbus::Result<Step>;
    /// Forgets the login waiting at the prompt of the step that carried `handle`: the module's
    /// conversation ended early (the client went away, the person interrupted). Only the caller
    /// that began the login may; an unknown or finished handle is no error.
    fn cancel(&self, handle: &str) -> zbus::Result<()>;
    /// Starts (or restarts) an enrollment. Empty `user` means the caller. Where the caller must
    /// prove the user's contact first (docs/delivery.md), `code` is the code that
    /// `send_enrollment_code` sent; otherwise "".
    fn enroll(&self, user: &str, code: &str) -> zbus::Result<Enrollment>;
    /// Sends the validation code `enroll` needs to the user's email or phone (self-service).
    fn send_enrollment_code(&self, user: &str) -> zbus::Result<Delivery>;
    /// Makes a pending enrollment and sends it to the user by "email" or "sms" (admin). The
    /// token still needs a confirming code within the enrollment window.
    fn deliver_enrollment(&self, user: &str, channel: &str) -> zbus::Result<Delivery>;
    /// Sets the address of `user` on `channel` ("email", "sms"); "" clears it (admin). True if
    /// it changed.
    fn set_contact(&self, user: &str, channel: &str, address: &str) -> zbus::Result<bool>;
    /// Confirms the pending enrollment with a code from the new token.
    fn confirm(&self, user: &str, code: &str) -> zbus::Result<()>;
    /// Reports one user. Empty `user` means the caller.
    fn status(&self, user: &str) -> zbus::Result<UserStatus>;
    /// Reports every user in the store (admin), in one message: refused as `Conflict` when the
    /// store holds more than [`MAX_ONE_MESSAGE_USERS`]. `list_page` reads a store of any size.
    fn list(&self) -> zbus::Result<Vec<UserStatus>>;
    /// Reports up to `limit` (1 to [`MAX_LIST_PAGE`]) users after the name `after` ("" = from
    /// the first), in the store's order (admin), and the `after` of the next page: "" when
    /// this page is the last.
    fn list_page(&self, after: &str, limit: u32) -> zbus::Result<(Vec<UserStatus>, String)>;
    /// Deletes a user's token, pending enrollment and counters (admin). True if anything existed.
    fn reset(&self, user: &str) -> zbus::Result<bool>;
    /// Clears a user's failure counter and backoff (admin). True if the user was throttled.
    fn unlock(&self, user: &str) -> zbus::Result<bool>;
    /// Makes a fresh set of recovery codes for `user` ("" = the caller), invalidating the old
    /// set, and returns them (shown once). A user renewing their own set must pass `code`, a
    /// current code from their token; root and admins pass "".
    fn recovery_codes(&self, user: &str, code: &str) -> zbus::Result<Vec<String>>;
    /// Exports every token (`user` = "") or one user's, encrypted to `passphrase` in the age
    /// format (root only). Returns the file contents. Every token in one message: refused as
    /// `Conflict` when the store holds more than [`MAX_ONE_MESSAGE_USERS`]; `export_begin`
    /// streams a store of any size.
    fn export(&self, user: &str, passphrase: &str) -> zbus::Result<Vec<u8>>;
    /// Restores an export (root only). Existing users are skipped unless `replace`; with
    /// `dry_run` nothing is written. A damaged file or wrong passphrase changes nothing.
    fn import(
        &self,
        data: &[u8],
        passphrase: &str,
        replace: bool,
        dry_run: bool,
    ) -> zbus::Result<Vec<ImportResult>>;
    /// Enrolls tokens migrated from another system (root only), as `import` does.
    fn import_tokens(
        &self,
        tokens: Vec<TokenImport>,
        replace: bool,
        dry_run: bool,
    ) -> zbus::Result<Vec<ImportResult>>;
    /// The caller's own token as an otpauth URI, to add it to a second app: only with a
    /// current code, and only where `allow_token_export` is on.
    fn export_token(&self, code: &str) -> zbus::Result<String>;
    /// Makes a one-time enrollment link for `user` (admin): a new pending enrollment whose
    /// page kron-web shows. `channel` "" returns the URL; "email" or "sms" sends it to the
    /// user's contact instead. A newer enrollment or link replaces it.
    fn create_link(&self, user: &str, channel: &str) -> zbus::Result<LinkGrant>;
    /// Kills the live link of `user` and its pending enrollment (admin). True if there was one.
    fn revoke_link(&self, user: &str) -> zbus::Result<bool>;
    /// The live link of `user` ("" = the caller), without its token.
    fn link_status(&self, user: &str) -> zbus::Result<LinkStatus>;
    /// What the page of the link `token` shows (kron-web; the token is the capability).
    /// `client` is the browser's address, for rate limiting. Opening consumes nothing.
    /// Dead, unknown and malformed tokens all get the same `NotFound`.
    fn show_link(&self, token: &str, client: &str) -> zbus::Result<LinkPage>;
    /// Confirms the enrollment of link `token` with `code` (kron-web): the token becomes
    /// active and the link dies. A wrong code is `Rejected`; the fifth kills the link.
    fn confirm_link(&self, token: &str, code: &str, client: &str) -> zbus::Result<()>;
    /// Starts a streamed export of every token (`user` = "") or one user's, encrypted to
    /// `passphrase` (root only): the same age file as `export`, fetched piece by piece with
    /// `export_next`, so a store of any size never is one message. Returns the handle.
    fn export_begin(&self, user: &str, passphrase: &str) -> zbus::Result<String>;
    /// The next piece of the file (at most [`MAX_CHUNK_BYTES`]), the users written so far,
    /// and whether this piece is the last.
    fn export_next(&self, handle: &str) -> zbus::Result<(Vec<u8>, u64, bool)>;
    /// Starts a streamed import of an export file (root only); returns the handle. The file
    /// follows in `import_chunk` calls; nothing is stored before `import_end` has checked all
    /// of it.
    fn import_begin(&self, passphrase: &str, replace: bool, dry_run: bool) -> zbus::Result<String>;
    /// The next piece of the file (at most [`MAX_CHUNK_BYTES`]).
    fn import_chunk(&self, handle: &str, data: &[u8]) -> zbus::Result<()>;
    /// The whole file was sent: decrypts and checks the rest of it, and returns how many
    /// users it holds. A wrong passphrase, a damaged or truncated file ends the import here,
    /// with nothing stored.
    fn import_end(&self, handle: &str) -> zbus::Result<u64>;
    /// Stores (or with `dry_run` judges) up to `max` more users of a checked file and reports
    /// them, with whether that was the last.
    fn import_apply(&self, handle: &str, max: u32) -> zbus::Result<(Vec<ImportResult>, bool)>;
    /// Creates or upgrades the fleet's schema, roles, functions and grants (root), connecting
    /// as the database owner `url` names. kronctl reads the owner's files as root and sends
    /// what they hold (otpd's sandbox cannot read root's home): `owner_password` ("" for none)
    /// and `ca_pem`, the certificates of `ca_file` ("" and "": this host's `[fleet]` ones).
    /// `key_file` is the seed key's path on the database server ("" keeps the one set before).
    /// Returns what it did, one line each.
    fn fleet_init(
        &self,
        url: &str,
        ca_file: &str,
        ca_pem: &str,
        owner_password: &str,
        key_file: &str,
    ) -> zbus::Result<Vec<String>>;
    /// Creates (or gives the new `password` to) the role of host `name` (root) and returns the
    /// host's complete `[fleet]` section, which names `ca_file` and `password_file`. kronctl
    /// made the password and wrote it aside first (otpd's sandbox cannot write /etc), and puts
    /// it in place once this answers. Owner arguments as for `FleetInit`.
    #[allow(clippy::too_many_arguments)]
    fn fleet_add_host(
        &self,
        name: &str,
        url: &str,
        ca_file: &str,
        ca_pem: &str,
        owner_password: &str,
        password: &str,
        password_file: &str,
    ) -> zbus::Result<String>;
    /// This host's fleet settings and what its database says (root).
    fn fleet_status(&self) -> zbus::Result<FleetStatus>;
    /// Gives `user` an offline pack on this host ahead of a first login here (root); true if
    /// the user had none.
    fn fleet_offline_add(&self, user: &str) -> zbus::Result<bool>;
    /// Moves this host's local tokens into the fleet (root); a user the fleet already knows
    /// keeps the fleet token and is reported as a conflict. Every local user in one message:
    /// refused as `Conflict` when the local store holds more than [`MAX_ONE_MESSAGE_USERS`];
    /// `fleet_push_page` pushes a store of any size.
    fn fleet_push(&self) -> zbus::Result<Vec<ImportResult>>;
    /// Pushes up to `limit` (1 to [`MAX_PUSH_PAGE`]) of this host's local users after the name
    /// `after` ("" = from the first), in the local store's order, as `fleet_push` does (root),
    /// and answers their results and the `after` of the next page: "" when this page was the
    /// last. Pushing a page again changes nothing: its users are then conflicts.
    fn fleet_push_page(&self, after: &str, limit: u32)
    -> zbus::Result<(Vec<ImportResult>, String)>;
    /// The fleet's audit rows for `user` ("" = everyone), newest first (root), read as the role
    /// `url` names (the owner, or one granted kron_auditor); `password` and `ca_pem` as for
    /// `FleetInit`.
    fn fleet_log(
        &self,
        url: &str,
        ca_file: &str,
        ca_pem: &str,
        password: &str,
        user: &str,
        limit: u32,
    ) -> zbus::Result<Vec<FleetLogEntry>>;
    /// Daemon version, for `kronctl doctor` and packaging checks.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// Checks a user name for use as a store key and in otpauth labels: 1..=256 bytes of printable
/// ASCII or UTF-8 without whitespace, control characters, `/`, `\` or `:`.
pub fn validate_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("user name is empty".into());
    }
    if user.len() > MAX_USER_LEN {
        return Err(format!("user name longer than {MAX_USER_LEN} bytes"));
    }
    if user.starts_with('-') {
        return Err("user name starts with '-'".into());
    }
    // The error does not quote the character: it would repeat the caller's input.
    if user
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '\\' | ':'))
    {
        return Err("user name contains whitespace, a control character, '/', '\\' or ':'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_kinds_round_trip() {
        for kind in [
            StepKind::Prompt,
            StepKind::Accept,
            StepKind::Deny,
            StepKind::Skip,
            StepKind::Unavailable,
            StepKind::Throttled,
        ] {
            assert_eq!(StepKind::try_from(kind as u32), Ok(kind));
        }
        assert_eq!(StepKind::try_from(0), Err(0));
        assert_eq!(StepKind::try_from(99), Err(99));
    }

    #[test]
    fn validate_refuses_malformed_steps() {
        let mut step = Step::terminal(StepKind::Accept, vec![Message::info("ok")]);
        assert_eq!(step.validate(), Ok(StepKind::Accept));
        step.kind = 42;
        assert_eq!(step.validate(), Err(StepError::UnknownKind(42)));
        step.kind = StepKind::Prompt as u32;
        assert_eq!(step.validate(), Err(StepError::PromptWithoutHandle));
        step.handle = "h".repeat(MAX_HANDLE_LEN + 1);
        assert_eq!(step.validate(), Err(StepError::HandleTooLong));
        step.handle = "h".into();
        step.messages = vec![Message {
            level: 7,
            text: String::new(),
        }];
        assert_eq!(step.validate(), Err(StepError::UnknownLevel(7)));
        step.messages = vec![Message::info("x"); MAX_MESSAGES + 1];
        assert_eq!(step.validate(), Err(StepError::TooManyMessages));
        step.messages = vec![Message::info("x".repeat(MAX_MESSAGE_LEN + 1))];
        assert_eq!(step.validate(), Err(StepError::MessageTooLong));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let enrollment = Enrollment {
            user: "alice".into(),
            uri: "otpauth://totp/x?secret=JBSWY3DP".into(),
            secret: "JBSWY3DP".into(),
            expires: 1,
        };
        assert!(!format!("{enrollment:?}").contains("JBSWY3DP"));
        let token = TokenImport {
            user: "alice".into(),
            secret: b"0123456789".to_vec(),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            last_step: 0,
            recovery_codes: vec!["87654321".into()],
        };
        let shown = format!("{token:?}");
        assert!(
            !shown.contains("87654321") && !shown.contains("48, 49"),
            "{shown}"
        );
        let page = LinkPage {
            issuer: "Kron".into(),
            user: "alice".into(),
            host: "h".into(),
            uri: "otpauth://totp/x?secret=JBSWY3DP".into(),
            secret: "JBSWY3DP".into(),
            expires: 1,
            attempts_left: 5,
        };
        assert!(!format!("{page:?}").contains("JBSWY3DP"));
        let grant = LinkGrant {
            user: "alice".into(),
            url: "https://kron.example/enroll/YWxpY2U.secret".into(),
            expires: 1,
            channel: String::new(),
            destination: String::new(),
        };
        assert!(!format!("{grant:?}").contains("secret"));
    }

    #[test]
    fn user_names_are_bounded() {
        assert!(validate_user("alice").is_ok());
        assert!(validate_user("alice@EXAMPLE.COM").is_ok());
        assert!(validate_user("").is_err());
        assert!(validate_user("-rf").is_err());
        assert!(validate_user("a b").is_err());
        assert!(validate_user("a:b").is_err());
        assert!(validate_user("../etc").is_err());
        assert!(validate_user("a\nb").is_err());
        assert!(validate_user(&"a".repeat(MAX_USER_LEN + 1)).is_err());
    }
}
