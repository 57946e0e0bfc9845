//! A real SMTP server on 127.0.0.1 that keeps every message otpd sends.
//!
//! [`Mailbox::start`] runs `tests/fixtures/mailbox.py`: aiosmtpd (Debian's `python3-aiosmtpd`)
//! speaking plain SMTP without TLS or AUTH, which otpd accepts (`security = "none"`) only for a
//! loopback server. The script parses each message with Python's stdlib `email` package (MIME,
//! base64, quoted-printable, RFC 2047 headers) and writes it as one JSON file in a temp dir; a
//! [`Mail`] is that file read back. [`Mailbox::stop`] takes the server down ("SMTP down") and
//! [`Mailbox::refuse_with`] makes it answer messages with an error instead.
//!
//! The helpers run under `/usr/bin/python3`, the interpreter Debian's python3 packages are
//! installed for (a `python3` first on PATH may be another one, without aiosmtpd).

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tempfile::TempDir;

use crate::{process, scratch};

/// How long [`Mailbox::wait_for`] and [`crate::gateway::Gateway::wait_for_request`] wait. otpd
/// sends before it answers the call that asked for the send, so a message is normally there
/// already; the limit is for a loaded machine.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// A running test SMTP server, killed on drop.
pub struct Mailbox {
    server: FixtureServer,
    /// Messages already handed out by [`Mailbox::wait_for`].
    taken: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("port", &self.server.port)
            .field("dir", &self.server.dir.path())
            .finish()
    }
}

/// One message the mailbox accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The `Subject` header, decoded.
    pub subject: String,
    /// The text/plain body, decoded (transfer encoding and charset), with `\n` line ends.
    pub text: String,
    /// The text/html body, decoded, if there is one.
    pub html: Option<String>,
    /// Every other leaf MIME part, in message order.
    pub attachments: Vec<Attachment>,
    /// All headers in order, values decoded.
    pub headers: Vec<(String, String)>,
    /// The message as received (bytes that are not UTF-8 replaced), for assertions on it.
    pub raw: String,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
}

/// A MIME part of a [`Mail`] that is not its text or HTML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The part's file name, empty if it has none.
    pub filename: String,
    /// The part's content type, lower case (`image/png`).
    pub content_type: String,
    /// The decoded content.
    pub data: Vec<u8>,
}

impl Mailbox {
    /// Starts an SMTP server on 127.0.0.1 on a free port and waits until it accepts
    /// connections. Panics with the server's output if it does not start.
    pub fn start() -> Mailbox {
        Mailbox {
            server: FixtureServer::start("mailbox", "kron-mailbox."),
            taken: Mutex::new(BTreeSet::new()),
        }
    }

    /// The port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The `[email]` section of otpd.toml that sends here. Keys written right after it (before
    /// the next table) belong to the section, so a test may append `timeout = 2` or templates.
    pub fn config_section(&self) -> String {
        format!(
            "[email]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             from = \"Kron <kron@test.invalid>\"\n",
            self.server.port
        )
    }

    /// Waits (at most [`WAIT_LIMIT`]) for the next message with `to` among its envelope
    /// recipients (compared without regard to case) that no earlier call returned, and returns
    /// it. Panics listing everything received so far.
    pub fn wait_for(&self, to: &str) -> Mail {
        let mut taken = self.taken.lock().unwrap_or_else(|err| err.into_inner());
        let found = poll(WAIT_LIMIT, || {
            self.server.records().into_iter().find_map(|(name, path)| {
                if taken.contains(&name) {
                    return None;
                }
                let mail = read_mail(&path);
                let addressed = mail.to.iter().any(|rcpt| rcpt.eq_ignore_ascii_case(to));
                addressed.then_some((name, mail))
            })
        });
        let Some((name, mail)) = found else {
            panic!(
                "no new mail to {to} after {WAIT_LIMIT:?}; received so far:\n{}\n\
                 --- mailbox log ---\n{}",
                self.summary(),
                self.server.log()
            );
        };
        taken.insert(name);
        mail
    }

    /// Every message received so far, oldest first.
    pub fn all(&self) -> Vec<Mail> {
        self.server
            .records()
            .iter()
            .map(|(_, path)| read_mail(path))
            .collect()
    }

    /// How many messages were received so far.
    pub fn count(&self) -> usize {
        self.server.records().len()
    }

    /// From now on, answers the end of every message with `reply` (a whole SMTP reply line
    /// such as `"550 5.7.1 Refused by the test"`, or `451 ...` for a temporary failure)
    /// and keeps nothing, until [`Mailbox::accept`].
    pub fn refuse_with(&self, reply: &str) {
        let code = reply.get(..3).unwrap_or_default();
        assert!(
            code.bytes().all(|b| b.is_ascii_digit()) && matches!(code.as_bytes()[0], b'4' | b'5'),
            "an SMTP refusal starts with a 4xx or 5xx code: {reply:?}"
        );
        self.server.set("reply", reply);
    }

    /// Accepts messages again after [`Mailbox::refuse_with`].
    pub fn accept(&self) {
        self.server.unset("reply");
    }

    /// Kills the server: connections to its port are refused until [`Mailbox::start_again`].
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts the server again on the same port and directory after [`Mailbox::stop`]; the
    /// messages received before are kept.
    pub fn start_again(&mut self) {
        self.server.start_again();
    }

    /// What the server printed (aiosmtpd's log, Python errors).
    pub fn log(&self) -> String {
        self.server.log()
    }

    fn summary(&self) -> String {
        let lines: Vec<String> = self
            .all()
            .iter()
            .map(|mail| format!("  to {:?}: {:?}", mail.to, mail.subject))
            .collect();
        if lines.is_empty() {
            "  (nothing)".to_string()
        } else {
            lines.join("\n")
        }
    }
}

impl Mail {
    /// The first run of 6 to 10 ASCII digits in the text (the code otpd sent). Panics showing
    /// the text if there is none.
    pub fn code(&self) -> String {
        code_in(&self.text).unwrap_or_else(|| panic!("no code in the mail text:\n{}", self.text))
    }

    /// The first header named `name` (compared without regard to case), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The attachments of content type `content_type` (`"image/png"`).
    pub fn attachments_of_type(&self, content_type: &str) -> Vec<&Attachment> {
        self.attachments
            .iter()
            .filter(|part| part.content_type.eq_ignore_ascii_case(content_type))
            .collect()
    }
}

/// A mail as the helper script writes it.
#[derive(Deserialize)]
struct MailRecord {
    helo: String,
    from: String,
    to: Vec<String>,
    raw: String,
    headers: Vec<(String, String)>,
    subject: String,
    text: String,
    html: Option<String>,
    attachments: Vec<AttachmentRecord>,
    parse_error: Option<String>,
}

#[derive(Deserialize)]
struct AttachmentRecord {
    filename: String,
    content_type: String,
    data: Vec<u8>,
}

fn read_mail(path: &Path) -> Mail {
    let record: MailRecord = read_record(path);
    if let Some(error) = record.parse_error {
        panic!(
            "the mailbox could not parse a message ({error}):\n{}",
            record.raw
        );
    }
    Mail {
        from: record.from,
        to: record.to,
        subject: record.subject,
        text: record.text,
        html: record.html,
        attachments: record
            .attachments
            .into_iter()
            .map(|part| Attachment {
                filename: part.filename,
                content_type: part.content_type,
                data: part.data,
            })
            .collect(),
        headers: record.headers,
        raw: record.raw,
        helo: record.helo,
    }
}

/// Reads one JSON record a helper script wrote.
pub(crate) fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}:\n{text}", path.display()))
}

/// The first maximal run of 6 to 10 ASCII digits in `text` that does not follow a `+` (an
/// E.164 phone number is not a code).
pub(crate) fn code_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if !bytes[start].is_ascii_digit() {
            start += 1;
            continue;
        }
        let end = bytes[start..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |len| start + len);
        let after_plus = start > 0 && bytes[start - 1] == b'+';
        if (6..=10).contains(&(end - start)) && !after_plus {
            return Some(text[start..end].to_string());
        }
        start = end;
    }
    None
}

/// A Python helper from `tests/fixtures/` listening on 127.0.0.1, recording into a private
/// temp dir one `NNNNNN.json` per message or request. Killed on drop.
pub(crate) struct FixtureServer {
    pub(crate) dir: TempDir,
    pub(crate) port: u16,
    script: PathBuf,
    child: Option<Child>,
}

/// How long a helper may take to listen. Python starts in well under a second; the limit is
/// for a loaded machine, and a helper that exits (a missing module) fails at once.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The interpreter Debian's python3-* packages are installed for.
const PYTHON: &str = "/usr/bin/python3";

impl FixtureServer {
    /// Runs `tests/fixtures/<name>.py DIR` on a free port.
    pub(crate) fn start(name: &str, dir_prefix: &str) -> FixtureServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(format!("{name}.py"));
        let mut server = FixtureServer {
            dir: scratch::private_dir(dir_prefix),
            port: 0,
            script,
            child: None,
        };
        server.launch(None);
        server
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "the test server is already running");
        self.launch(Some(self.port));
    }

    /// Everything the helper printed, across restarts.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The finished records, oldest first, as (file name, path).
    pub(crate) fn records(&self) -> Vec<(String, PathBuf)> {
        let entries = std::fs::read_dir(self.dir.path())
            .unwrap_or_else(|err| panic!("read {}: {err}", self.dir.path().display()));
        let mut records: Vec<(String, PathBuf)> = entries
            .map(|entry| entry.expect("read directory entry"))
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let number = name.strip_suffix(".json")?;
                number
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| (name.clone(), entry.path()))
            })
            .collect();
        records.sort();
        records
    }

    /// Writes the control file `name` (replaced atomically, so the helper never reads half).
    pub(crate) fn set(&self, name: &str, value: &str) {
        let temporary = self.dir.path().join(format!(".{name}.tmp"));
        scratch::write_file(&temporary, value, 0o600);
        std::fs::rename(&temporary, self.dir.path().join(name))
            .unwrap_or_else(|err| panic!("rename {}: {err}", temporary.display()));
    }

    /// Removes the control file `name`.
    pub(crate) fn unset(&self, name: &str) {
        match std::fs::remove_file(self.dir.path().join(name)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("remove {name}: {err}"),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn launch(&mut self, port: Option<u16>) {
        let port_file = self.dir.path().join("port");
        self.unset("port");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open test server log");
        let mut command = Command::new(PYTHON);
        command
            .arg(&self.script)
            .arg(self.dir.path())
            .args(port.map(|port| port.to_string()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        let mut child = command.spawn().unwrap_or_else(|err| {
            panic!("cannot start {command:?}: {err} (is the python3 package installed?)")
        });
        let listening = poll(START_LIMIT, || {
            if child.try_wait().expect("waitpid test server").is_some() {
                return Some(None);
            }
            let port: u16 = std::fs::read_to_string(&port_file).ok()?.parse().ok()?;
            TcpStream::connect(("127.0.0.1", port)).ok()?;
            Some(Some(port))
        });
        self.child = Some(child);
        match listening.flatten() {
            Some(port) => self.port = port,
            None => {
                self.stop();
                panic!(
                    "{} did not listen within {START_LIMIT:?} (is python3-aiosmtpd installed? \
                     scripts/test installs it):\n{}",
                    self.script.display(),
                    self.log()
                );
            }
        }
    }
}

/// Polls `probe` until it returns `Some`, at most `limit`; `None` past that.
pub(crate) fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(process::POLL_INTERVAL);
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.stop();
    }
}
