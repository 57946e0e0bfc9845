//! A stand-in SMS gateway: a local HTTP server that keeps every request otpd makes.
//!
//! [`Gateway::start`] runs `tests/fixtures/gateway.py` (Python's stdlib `ThreadingHTTPServer`)
//! on 127.0.0.1. It records each request (method, path with query, headers, body) as one JSON
//! file in a temp dir and answers with the status the test sets ([`Gateway::answer_with`],
//! default 200), after an optional delay ([`Gateway::delay`]) for timeout tests.
//! [`Gateway::config_section`] is a representative `[sms]` section: a JSON POST with a bearer
//! token read from a root-only secret file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::mailbox::{FixtureServer, WAIT_LIMIT, code_in, poll, read_record};
use crate::scratch;

/// The secret in the file [`Gateway::config_section`] names; otpd sends it as
/// `Authorization: Bearer <SECRET>`. Distinctive, so tests can also look for it in logs.
pub const SECRET: &str = "kt-sms-secret-3f9a61c2";

/// The URL path [`Gateway::config_section`] posts to.
pub const SEND_PATH: &str = "/v1/messages";

/// A running test gateway, killed on drop.
pub struct Gateway {
    server: FixtureServer,
    /// Requests already handed out by [`Gateway::wait_for_request`].
    taken: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("port", &self.server.port)
            .field("dir", &self.server.dir.path())
            .finish()
    }
}

/// One HTTP request the gateway received.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, ...
    pub method: String,
    /// The request target: path and query, as sent (still percent-encoded).
    pub path: String,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (bytes that are not UTF-8 replaced).
    pub body: String,
}

impl Gateway {
    /// Starts the gateway on 127.0.0.1 on a free port, answering 200, and writes the secret
    /// file. Panics with the server's output if it does not start.
    pub fn start() -> Gateway {
        let server = FixtureServer::start("gateway", "kron-gateway.");
        scratch::write_file(&server.dir.path().join("sms-secret"), SECRET, 0o600);
        Gateway {
            server,
            taken: Mutex::new(BTreeSet::new()),
        }
    }

    /// The port the gateway listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port)
    }

    /// The root-only (0600) file holding [`SECRET`].
    pub fn secret_file(&self) -> PathBuf {
        self.server.dir.path().join("sms-secret")
    }

    /// The `[sms]` section of otpd.toml that sends here: `POST /v1/messages` with the JSON body
    /// `{"to": "{phone}", "text": "{message}"}` and `Authorization: Bearer {secret}`. Keys
    /// written right after it (before the next table) belong to the section, so a test may
    /// append `timeout = 2` or templates.
    pub fn config_section(&self) -> String {
        format!(
            "[sms]\nurl = \"{}\"\nmethod = \"POST\"\nbody_format = \"json\"\n\
             body = '{{\"to\": \"{{phone}}\", \"text\": \"{{message}}\"}}'\n\
             headers = {{ Authorization = \"Bearer {{secret}}\" }}\nsecret_file = \"{}\"\n",
            self.url(SEND_PATH),
            self.secret_file().display()
        )
    }

    /// Answers every following request with HTTP status `status`.
    pub fn answer_with(&self, status: u16) {
        assert!(
            (100..=599).contains(&status),
            "not an HTTP status: {status}"
        );
        self.server.set("status", &status.to_string());
    }

    /// Waits `delay` before answering each following request (`Duration::ZERO` to stop), to
    /// test otpd's `timeout`. The request is recorded before the wait.
    pub fn delay(&self, delay: Duration) {
        if delay.is_zero() {
            self.server.unset("delay");
        } else {
            self.server.set("delay", &delay.as_secs_f64().to_string());
        }
    }

    /// Waits (at most [`WAIT_LIMIT`]) for the next request no earlier call returned, and
    /// returns it. Panics listing every request received so far.
    pub fn wait_for_request(&self) -> Request {
        let mut taken = self.taken.lock().unwrap_or_else(|err| err.into_inner());
        let found = poll(WAIT_LIMIT, || {
            self.server
                .records()
                .into_iter()
                .find(|(name, _)| !taken.contains(name))
        });
        let Some((name, path)) = found else {
            panic!(
                "no new request after {WAIT_LIMIT:?}; received so far: {:#?}\n\
                 --- gateway log ---\n{}",
                self.requests(),
                self.server.log()
            );
        };
        taken.insert(name);
        read_request(&path)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.server
            .records()
            .iter()
            .map(|(_, path)| read_request(path))
            .collect()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        self.server.records().len()
    }

    /// Kills the gateway: connections to its port are refused until [`Gateway::start_again`].
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts the gateway again on the same port and directory after [`Gateway::stop`]; the
    /// requests received before, the status and the delay are kept.
    pub fn start_again(&mut self) {
        self.server.start_again();
    }

    /// What the server printed (one line per request, Python errors).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

impl Request {
    /// The first header named `name` (compared without regard to case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON. Panics showing the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("request body is not JSON ({err}):\n{}", self.body))
    }

    /// What the request carried, decoded: a form body (`application/x-www-form-urlencoded`)
    /// percent-decoded, else the body as sent; for a request without a body (`GET`), the
    /// decoded query of the path.
    pub fn text(&self) -> String {
        let form = self
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
        if form {
            form_decode(&self.body)
        } else if self.body.is_empty() {
            self.path
                .split_once('?')
                .map(|(_, query)| form_decode(query))
                .unwrap_or_default()
        } else {
            self.body.clone()
        }
    }

    /// The first run of 6 to 10 ASCII digits in [`Request::text`] that does not follow a `+`
    /// (the code otpd sent; an E.164 phone number is skipped). Panics showing the request if
    /// there is none.
    pub fn code(&self) -> String {
        code_in(&self.text()).unwrap_or_else(|| panic!("no code in the request:\n{self:#?}"))
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(path: &Path) -> Request {
    read_record(path)
}
