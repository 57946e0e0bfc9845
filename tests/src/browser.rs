//! A real browser for the tests: Debian's headless Chromium, driven through chromedriver's
//! WebDriver interface (plain HTTP on loopback, JSON bodies), trusting one test CA through
//! the NSS database of a fresh home directory, as a person's browser trusts its CAs.
//!
//! The network log (chromedriver's "performance" log: DevTools Network events) shows every
//! request the page made and every response header the browser received.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{ports, process, scratch};

/// Chromium's switches for this machine: headless, no sandbox (tests run as root), no GPU, no
/// QUIC, and nothing that phones home (the network is closed anyway).
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long chromedriver may take to answer its first request.
const START_LIMIT: Duration = Duration::from_secs(60);

/// One WebDriver session in a Chromium of its own. Closed and killed on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _home: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("base", &self.base).finish()
    }
}

/// An element found on the page (its WebDriver reference).
#[derive(Debug, Clone)]
pub struct Element(String);

/// The key of an element reference in WebDriver's JSON (W3C WebDriver, "Elements").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a Chromium that trusts `ca_pem`, with a window of
    /// `width` x `height` CSS pixels (a phone: 412 x 915).
    pub fn start(ca_pem: &Path, width: u32, height: u32) -> Browser {
        let home = scratch::private_dir("kron-browser.");
        let nssdb = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).expect("create the NSS database directory");
        let db = format!("sql:{}", nssdb.display());
        let certutil = |args: &[&str]| {
            process::run(Command::new("certutil").args(args))
                .assert_success(&format!("certutil {args:?}"));
        };
        certutil(&["-N", "-d", &db, "--empty-password"]);
        let ca = ca_pem.display().to_string();
        certutil(&[
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "kron-test-ca",
            "-i",
            &ca,
        ]);

        let port = ports::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (is the chromium-driver package installed?)");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        process::wait_for("chromedriver to answer", START_LIMIT, || {
            agent.get(format!("{base}/status")).call().ok()
        });
        let profile = home.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": false,
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
                "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
            }}
        });
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _home: home,
        };
        let value = browser.post("/session", capabilities);
        browser.session = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {value}"))
            .to_owned();
        browser
    }

    /// Opens `url` and waits until it has loaded.
    pub fn goto(&self, url: &str) {
        self.command("/url", json!({ "url": url }));
    }

    /// Like [`Browser::goto`], but a failed load (no server) is returned, not a panic.
    pub fn try_goto(&self, url: &str) -> Result<(), Value> {
        self.try_command("/url", json!({ "url": url })).map(drop)
    }

    /// The page's HTML as the browser holds it now.
    pub fn source(&self) -> String {
        self.get("/source").as_str().unwrap_or_default().to_owned()
    }

    /// The visible text of the page.
    pub fn text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let encoded = self.get("/screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot")
    }

    /// The first element matching `css`.
    pub fn find(&self, css: &str) -> Element {
        let value = self.command("/element", json!({ "using": "css selector", "value": css }));
        Element(
            value[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {value}"))
                .to_owned(),
        )
    }

    /// Types `text` into `element`.
    pub fn type_into(&self, element: &Element, text: &str) {
        self.command(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        );
    }

    /// Clicks `element` (and waits for the navigation it starts).
    pub fn click(&self, element: &Element) {
        self.command(&format!("/element/{}/click", element.0), json!({}));
    }

    /// Clicks `element`, which submits a form, and waits until the page it leads to has loaded.
    /// (chromedriver's click does not always wait for a POST's navigation.)
    pub fn submit_with(&self, element: &Element) {
        self.execute("window.kronOldPage = true;", json!([]));
        self.click(element);
        process::wait_for("the next page", START_LIMIT, || {
            let loaded = self.try_command(
                "/execute/sync",
                json!({
                    "script": "return !window.kronOldPage && document.readyState === 'complete';",
                    "args": []
                }),
            );
            (loaded.ok()? == Value::Bool(true)).then_some(())
        });
    }

    /// Runs `script` in the page and returns its value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.command("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Sets how long a navigation may take before the command returns an error.
    pub fn page_load_timeout(&self, limit: Duration) {
        self.command(
            "/timeouts",
            json!({ "pageLoad": u64::try_from(limit.as_millis()).unwrap_or(u64::MAX) }),
        );
    }

    /// The DevTools events logged since the last call (`Network.requestWillBeSent`, ...), each
    /// as `{"method": ..., "params": ...}`.
    pub fn network_events(&self) -> Vec<Value> {
        let entries = self.command("/se/log", json!({ "type": "performance" }));
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let message: Value = serde_json::from_str(entry["message"].as_str()?).ok()?;
                let inner = message["message"].clone();
                inner["method"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Network."))
                    .then_some(inner)
            })
            .collect()
    }

    /// The browser console's messages since the last call (CSP violations land there).
    pub fn console(&self) -> Vec<String> {
        let entries = self.command("/se/log", json!({ "type": "browser" }));
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| Some(entry["message"].as_str()?.to_owned()))
            .collect()
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let response = self.agent.get(&url).call().expect("WebDriver GET");
        unwrap_value(path, response)
    }

    fn command(&self, path: &str, body: Value) -> Value {
        self.try_command(path, body)
            .unwrap_or_else(|error| panic!("WebDriver {path} failed: {error}"))
    }

    fn try_command(&self, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut response = self
            .agent
            .post(&url)
            .send_json(body)
            .expect("WebDriver POST");
        let status = response.status();
        let value: Value = response.body_mut().read_json().expect("WebDriver JSON");
        match status.is_success() {
            true => Ok(value["value"].clone()),
            false => Err(value["value"].clone()),
        }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .post(&url)
            .send_json(body)
            .expect("WebDriver POST");
        let value: Value = response.body_mut().read_json().expect("WebDriver JSON");
        value["value"].clone()
    }
}

fn unwrap_value(path: &str, mut response: ureq::http::Response<ureq::Body>) -> Value {
    let status = response.status();
    let value: Value = response.body_mut().read_json().expect("WebDriver JSON");
    assert!(status.is_success(), "WebDriver {path}: {value}");
    value["value"].clone()
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.agent.delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
