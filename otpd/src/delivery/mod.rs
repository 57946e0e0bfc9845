//! Codes and enrollments sent out of band: email over SMTP (`email`), SMS through an HTTP
//! gateway (`sms`). The engine decides what to send and when; this module only renders the
//! configured templates and hands the result to the server, so the engine's tests use
//! [`fake::FakeDelivery`] and never touch the network.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Deliver`] trait, the message values, secret files, [`Deliverer`] |
//! | `email.rs` | email over SMTP with lettre |
//! | `sms.rs` | SMS through an HTTP gateway with reqwest |
//! | `sent.rs` | codes sent to a user: their stored MAC and the per-channel send budget |
//!
//! Contacts (addresses, patterns, masking) and the `[email]`/`[sms]` config live in
//! `kron_common`, where kronctl reads them too.

#![forbid(unsafe_code)]

mod email;
pub mod sent;
mod sms;

use crate::error::Error;
use kron_common::config::{EmailConfig, SmsConfig};
use kron_common::trust;
use kron_proto::Channel;
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

/// What to send. The texts around these values come from the config's templates.
pub enum Content<'a> {
    /// A one-time code, for validated enrollment or a fallback login.
    Code {
        code: &'a str,
        /// Seconds the code stays valid.
        valid_for: u64,
    },
    /// A token to set up (`kronctl enroll USER --send`): email carries the QR as a PNG
    /// attachment and the otpauth URI, SMS the base32 secret for manual entry.
    Enrollment {
        uri: &'a str,
        secret: &'a str,
        qr_png: &'a [u8],
        /// Unix time the enrollment expires.
        expires: u64,
    },
    /// A one-time enrollment link (`kronctl enroll USER --send link`): only the URL travels,
    /// never the secret.
    Link {
        url: &'a str,
        /// Unix time the link dies.
        expires: u64,
    },
}

/// Who receives it: the account name (for templates) and the full address or number.
pub struct Recipient<'a> {
    pub user: &'a str,
    pub address: &'a str,
}

/// Why a message could not be sent. The text names the channel, the server and the cause,
/// never the content (it may hold a code or a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    pub text: String,
    /// Whether the server may have taken the message anyway: no answer came in time, or the
    /// connection broke after the message went out. Such a send stays counted against the
    /// budget (a slow gateway that still delivers must not make sends free). False when the
    /// server answered with a refusal or no connection was made.
    pub maybe_sent: bool,
}

impl DeliveryError {
    /// Nothing reached a server that could have taken it.
    pub fn not_sent(text: String) -> DeliveryError {
        DeliveryError {
            text,
            maybe_sent: false,
        }
    }

    /// The message may have been taken.
    pub fn maybe_sent(text: String) -> DeliveryError {
        DeliveryError {
            text,
            maybe_sent: true,
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `error` or one of its sources is an I/O error that means no connection was made
/// (refused, no route, no such address): nothing can have been delivered.
fn never_connected(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            );
        }
        cause = e.source();
    }
    false
}

/// Sends messages. Called from blocking threads; each call returns once the server has
/// accepted the message (SMTP `250`, HTTP 2xx) or the configured timeout has passed.
pub trait Deliver: Send + Sync {
    /// Whether `channel` is configured.
    fn has(&self, channel: Channel) -> bool;
    fn send(
        &self,
        channel: Channel,
        to: &Recipient<'_>,
        content: &Content<'_>,
    ) -> Result<(), DeliveryError>;
}

/// Shared senders (tests keep a handle on the fake they hand the engine).
impl<T: Deliver + ?Sized> Deliver for std::sync::Arc<T> {
    fn has(&self, channel: Channel) -> bool {
        (**self).has(channel)
    }

    fn send(
        &self,
        channel: Channel,
        to: &Recipient<'_>,
        content: &Content<'_>,
    ) -> Result<(), DeliveryError> {
        (**self).send(channel, to, content)
    }
}

/// The real senders, built once at daemon start from the `[email]` and `[sms]` sections.
///
/// `send` is synchronous because the engine calls it from a blocking thread (tokio's
/// `spawn_blocking`); it drives the async SMTP and HTTP clients on the daemon's runtime with
/// `Handle::block_on`. So it must never be called from async code (block_on panics there),
/// and the runtime must be a multi-thread one (a current-thread runtime's IO is driven only
/// by its own `Runtime::block_on`).
pub struct Deliverer {
    email: Option<email::EmailSender>,
    sms: Option<sms::SmsSender>,
    issuer: String,
    hostname: String,
    runtime: tokio::runtime::Handle,
}

impl Deliverer {
    /// Reads the secret files and builds the clients. Errors are `Error::Config` naming the
    /// section or the file and what to fix.
    pub fn new(
        email: Option<&EmailConfig>,
        sms: Option<&SmsConfig>,
        issuer: &str,
        hostname: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Deliverer, Error> {
        Ok(Deliverer {
            email: email
                .map(|config| email::EmailSender::new(config, hostname))
                .transpose()?,
            sms: sms.map(sms::SmsSender::new).transpose()?,
            issuer: issuer.to_owned(),
            hostname: hostname.to_owned(),
            runtime,
        })
    }
}

impl Deliver for Deliverer {
    fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email.is_some(),
            Channel::Sms => self.sms.is_some(),
        }
    }

    fn send(
        &self,
        channel: Channel,
        to: &Recipient<'_>,
        content: &Content<'_>,
    ) -> Result<(), DeliveryError> {
        let values = Values::new(&self.issuer, &self.hostname, to.user, content);
        let not_configured = || {
            DeliveryError::not_sent(format!(
                "{0} is not configured (otpd.toml has no [{0}] section)",
                channel.as_str()
            ))
        };
        match channel {
            Channel::Email => self.email.as_ref().ok_or_else(not_configured)?.send(
                &self.runtime,
                to,
                content,
                &values,
            ),
            Channel::Sms => self.sms.as_ref().ok_or_else(not_configured)?.send(
                &self.runtime,
                to,
                content,
                &values,
            ),
        }
    }
}

/// The values of one message's templates. Held in `Zeroizing` because they include the code
/// or the token's secret.
struct Values(Vec<(&'static str, Zeroizing<String>)>);

impl Values {
    fn new(issuer: &str, host: &str, user: &str, content: &Content<'_>) -> Values {
        let mut values = vec![
            ("user", Zeroizing::new(user.to_owned())),
            ("host", Zeroizing::new(host.to_owned())),
            ("issuer", Zeroizing::new(issuer.to_owned())),
        ];
        match content {
            Content::Code { code, valid_for } => {
                values.push(("code", Zeroizing::new((*code).to_owned())));
                values.push((
                    "minutes",
                    Zeroizing::new(valid_for.div_ceil(60).to_string()),
                ));
            }
            Content::Enrollment {
                uri,
                secret,
                expires,
                ..
            } => {
                values.push(("uri", Zeroizing::new((*uri).to_owned())));
                values.push(("secret", Zeroizing::new((*secret).to_owned())));
                values.push(("expires", Zeroizing::new(utc_date_time(*expires))));
            }
            Content::Link { url, expires } => {
                values.push(("url", Zeroizing::new((*url).to_owned())));
                values.push(("expires", Zeroizing::new(utc_date_time(*expires))));
            }
        }
        Values(values)
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect()
    }
}

pub(crate) use kron_common::template::utc_date_time;

/// What the content carries that no error text may show: the code, the secret, the URI.
fn secrets_of<'a>(content: &Content<'a>) -> Vec<&'a str> {
    match content {
        Content::Code { code, .. } => vec![code],
        Content::Enrollment { uri, secret, .. } => vec![uri, secret],
        Content::Link { url, .. } => vec![url],
    }
}

/// A server's error text without any of `hidden` (the recipient, the code, the secret, the
/// message), in case the server echoes what it was sent.
fn redact(text: &str, hidden: &[&str]) -> String {
    let mut text = text.to_owned();
    for value in hidden.iter().filter(|value| !value.is_empty()) {
        text = text.replace(value, "[...]");
    }
    text
}

/// Largest secret file: a password or an API token, never a document.
const MAX_SECRET_BYTES: u64 = 4096;

/// Reads a password or API secret: a regular file owned by root (or by otpd's own user, as in
/// tests) that group and others cannot access, at most 4 KiB, one trailing newline ignored.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, Error> {
    let fail = |reason: String| Error::Config(format!("{}: {reason}", path.display()));
    let (file, _) = trust::open_trusted(
        path,
        trust::Kind::Secret,
        trust::Owners::root_and_me(),
        trust::FinalLink::Follow,
    )
    .map_err(|untrusted| {
        fail(match untrusted.problem {
            trust::Problem::Io(e) => e.to_string(),
            trust::Problem::Owner { uid } => format!(
                "is owned by uid {uid}, not root; run chown root: {}",
                path.display()
            ),
            trust::Problem::Accessible { mode } | trust::Problem::Writable { mode } => format!(
                "is accessible by group or others (mode {mode:o}); run chmod 600 {}",
                path.display()
            ),
            _ => "is not a regular file".into(),
        })
    })?;
    // Room for all of it up front: a buffer that grew would leave copies of the secret behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES as usize + 1));
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(fail(format!("is larger than {MAX_SECRET_BYTES} bytes")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("is not UTF-8 text".into()))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(fail("is empty".into()));
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Runs `work` as the engine runs a send: on a plain thread (like spawn_blocking's), with the
/// handle of a multi-thread runtime.
#[cfg(test)]
fn on_blocking_thread<R: Send>(work: impl FnOnce(&tokio::runtime::Handle) -> R + Send) -> R {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let handle = runtime.handle().clone();
    std::thread::scope(|scope| scope.spawn(|| work(&handle)).join().unwrap())
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::sync::Mutex;

    /// One message the fake accepted.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Sent {
        pub channel: Channel,
        pub to: String,
        /// The code, the base32 secret of an enrollment, or the URL of a link.
        pub payload: String,
    }

    /// Records what it is asked to send; `failing` makes every send fail (`refusing` those of
    /// one channel), as one that may have reached the server with `maybe_sent`;
    /// [`FakeDelivery::hold`] keeps sends waiting, as a slow server does, until
    /// [`FakeDelivery::let_go`] (at most 10 s, then the send panics: a test that waits on a
    /// held send fails rather than hangs); `delay` makes every send take that long.
    #[derive(Default)]
    pub struct FakeDelivery {
        pub channels: Vec<Channel>,
        pub sent: Mutex<Vec<Sent>>,
        pub failing: std::sync::atomic::AtomicBool,
        pub maybe_sent: std::sync::atomic::AtomicBool,
        pub refusing: Mutex<Option<Channel>>,
        pub delay: Mutex<std::time::Duration>,
        /// A held send was not let go in time (its panic is on a send's own thread).
        pub gave_up: std::sync::atomic::AtomicBool,
        held: Mutex<bool>,
        let_go: std::sync::Condvar,
    }

    impl FakeDelivery {
        pub fn with(channels: &[Channel]) -> FakeDelivery {
            FakeDelivery {
                channels: channels.to_vec(),
                ..FakeDelivery::default()
            }
        }

        pub fn last(&self) -> Option<Sent> {
            self.sent.lock().unwrap().last().cloned()
        }

        pub fn count(&self) -> usize {
            self.sent.lock().unwrap().len()
        }

        /// Sends from now on wait until [`FakeDelivery::let_go`].
        pub fn hold(&self) {
            *self.held.lock().unwrap() = true;
        }

        /// Lets the waiting sends, and the next ones, through.
        pub fn let_go(&self) {
            *self.held.lock().unwrap() = false;
            self.let_go.notify_all();
        }
    }

    impl Deliver for FakeDelivery {
        fn has(&self, channel: Channel) -> bool {
            self.channels.contains(&channel)
        }

        fn send(
            &self,
            channel: Channel,
            to: &Recipient<'_>,
            content: &Content<'_>,
        ) -> Result<(), DeliveryError> {
            let held = self.held.lock().unwrap();
            let (held, waited) = self
                .let_go
                .wait_timeout_while(held, std::time::Duration::from_secs(10), |held| *held)
                .unwrap();
            drop(held);
            if waited.timed_out() {
                self.gave_up
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                panic!("a held send was not let go within 10 s");
            }
            let delay = *self.delay.lock().unwrap();
            std::thread::sleep(delay);
            if self.failing.load(std::sync::atomic::Ordering::SeqCst)
                || *self.refusing.lock().unwrap() == Some(channel)
            {
                return Err(DeliveryError {
                    text: format!("{} server unreachable", channel.as_str()),
                    maybe_sent: self.maybe_sent.load(std::sync::atomic::Ordering::SeqCst),
                });
            }
            let payload = match content {
                Content::Code { code, .. } => code.to_string(),
                Content::Enrollment { secret, .. } => secret.to_string(),
                Content::Link { url, .. } => url.to_string(),
            };
            self.sent.lock().unwrap().push(Sent {
                channel,
                to: to.address.to_owned(),
                payload,
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::describe;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &tempfile::TempDir, text: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.path().join("secret");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn config_error(result: Result<Zeroizing<String>, Error>) -> String {
        match result {
            Err(Error::Config(message)) => message,
            Err(other) => panic!("expected a config error, got {other:?}"),
            Ok(_) => panic!("expected a config error"),
        }
    }

    #[test]
    fn secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, b"hunter2\n", 0o600);
        assert_eq!(read_secret(&path).unwrap().as_str(), "hunter2");
        let path = write(&dir, b"hunter2\r\n", 0o400);
        assert_eq!(read_secret(&path).unwrap().as_str(), "hunter2");
        let path = write(&dir, b" keep spaces \n\n", 0o600);
        assert_eq!(read_secret(&path).unwrap().as_str(), " keep spaces \n");

        let path = write(&dir, b"hunter2\n", 0o644);
        let error = config_error(read_secret(&path));
        assert_eq!(
            error,
            format!(
                "{0}: is accessible by group or others (mode 644); run chmod 600 {0}",
                path.display()
            )
        );
        assert!(!error.contains("hunter2"));
        let path = write(&dir, b"x", 0o620);
        assert!(config_error(read_secret(&path)).contains("chmod 600"));
        let path = write(&dir, b"\n", 0o600);
        assert!(config_error(read_secret(&path)).ends_with("is empty"));
        let path = write(&dir, &[b'x'; 4097], 0o600);
        assert!(config_error(read_secret(&path)).ends_with("larger than 4096 bytes"));
        let path = write(&dir, &[b'x'; 4096], 0o600);
        assert_eq!(read_secret(&path).unwrap().len(), 4096);
        let path = write(&dir, b"\xff\xfe", 0o600);
        assert!(config_error(read_secret(&path)).ends_with("not UTF-8 text"));
        assert!(config_error(read_secret(dir.path())).ends_with("is not a regular file"));
        let missing = dir.path().join("missing");
        assert!(config_error(read_secret(&missing)).starts_with(&*missing.to_string_lossy()));
    }

    #[test]
    fn template_values() {
        let code = Content::Code {
            code: "12345678",
            valid_for: 301,
        };
        let values = Values::new("Kron", "host1", "alice", &code);
        let pairs = values.pairs();
        assert!(pairs.contains(&("minutes", "6")));
        assert!(pairs.contains(&("code", "12345678")));
        assert!(pairs.contains(&("user", "alice")));
        assert!(pairs.contains(&("host", "host1")));
        assert!(pairs.contains(&("issuer", "Kron")));
        let code = Content::Code {
            code: "1",
            valid_for: 300,
        };
        assert!(
            Values::new("K", "h", "u", &code)
                .pairs()
                .contains(&("minutes", "5"))
        );
    }

    #[test]
    fn redaction_and_causes() {
        assert_eq!(
            redact("550 <a@b.c> rejected 1234", &["a@b.c", "1234", ""]),
            "550 <[...]> rejected [...]"
        );
        #[derive(Debug)]
        struct Outer(std::io::Error, &'static str);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.1)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let cause = || std::io::Error::other("refused");
        assert_eq!(describe(&Outer(cause(), "connect")), "connect: refused");
        // A cause the text already shows is not repeated.
        assert_eq!(
            describe(&Outer(cause(), "connect: refused")),
            "connect: refused"
        );
    }

    #[test]
    fn deliverer_channels() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let email: EmailConfig = toml::from_str(
            "server = \"localhost\"\nsecurity = \"none\"\nfrom = \"kron@example.com\"\n",
        )
        .unwrap();
        let deliverer = Deliverer::new(
            Some(&email),
            None,
            "Kron",
            "host1",
            runtime.handle().clone(),
        )
        .unwrap();
        assert!(deliverer.has(Channel::Email));
        assert!(!deliverer.has(Channel::Sms));
        let error = deliverer
            .send(
                Channel::Sms,
                &Recipient {
                    user: "alice",
                    address: "+4915123456712",
                },
                &Content::Code {
                    code: "12345678",
                    valid_for: 300,
                },
            )
            .unwrap_err();
        assert_eq!(
            error.text,
            "sms is not configured (otpd.toml has no [sms] section)"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, b"pw\n", 0o644);
        let insecure: EmailConfig = toml::from_str(&format!(
            "server = \"smtp.example.com\"\nfrom = \"kron@example.com\"\nusername = \"kron\"\n\
             password_file = \"{}\"\n",
            path.display()
        ))
        .unwrap();
        let result = Deliverer::new(Some(&insecure), None, "Kron", "h", runtime.handle().clone());
        match result {
            Err(Error::Config(message)) => assert!(message.contains("chmod 600"), "{message}"),
            _ => panic!("expected a config error"),
        }
    }
}
