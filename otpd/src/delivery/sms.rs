//! SMS through an HTTP gateway with reqwest: the configured url, headers and body, filled
//! with the phone number, the message text and the gateway secret.

use super::{Content, DeliveryError, Recipient, Values, read_secret, redact};
use crate::error::{Error, describe};
use kron_common::config::{self, HttpMethod, SmsConfig};
use kron_common::template;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Response, Url};
use std::time::Duration;
use tokio::runtime::Handle;
use zeroize::Zeroizing;

/// How much of a gateway's error answer goes into the error text (and so the log).
const MAX_ANSWER_BYTES: usize = 200;
/// Most of a gateway's answer read to make that excerpt (a value to take out may straddle the
/// first 200 bytes).
const MAX_ANSWER_READ: usize = 4096;

pub(super) struct SmsSender {
    client: Client,
    config: SmsConfig,
    secret: Zeroizing<String>,
    /// The configured headers, filled with the secret once at start.
    headers: HeaderMap,
    /// The gateway's host, for error texts (never the full URL: it may hold the secret).
    gateway: String,
    timeout: Duration,
}

impl SmsSender {
    pub(super) fn new(config: &SmsConfig) -> Result<SmsSender, Error> {
        let invalid = |e: String| Error::Config(format!("[sms]: {e}"));
        config.validate().map_err(invalid)?;
        let secret = match &config.secret_file {
            Some(path) => read_secret(path)?,
            None => Zeroizing::new(String::new()),
        };
        // The config was checked with a stand-in secret; the real one must fit as well.
        let url = Url::parse(&config::fill_url(
            &config.url,
            &config::dummy_values(&secret),
        ))
        .map_err(|e| invalid(format!("url is not a valid URL once filled: {e}")))?;
        let headers = headers(config, &secret).map_err(invalid)?;
        let timeout = Duration::from_secs(config.timeout);
        let client = Client::builder()
            .timeout(timeout)
            // A redirect could carry the message to a server the config does not name.
            .redirect(reqwest::redirect::Policy::none())
            // The gateway is reached directly: the config names it, the environment must not
            // reroute it.
            .no_proxy()
            .user_agent(concat!("kron-otpd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("building the HTTP client: {}", describe(&e))))?;
        Ok(SmsSender {
            client,
            config: config.clone(),
            secret,
            headers,
            gateway: url.host_str().unwrap_or_default().to_owned(),
            timeout,
        })
    }

    pub(super) fn send(
        &self,
        runtime: &Handle,
        to: &Recipient<'_>,
        content: &Content<'_>,
        values: &Values,
    ) -> Result<(), DeliveryError> {
        let text = Zeroizing::new(template::render(
            self.text_template(content),
            &values.pairs(),
        ));
        let mut raw = super::secrets_of(content);
        raw.extend([to.address, text.as_str(), self.secret.as_str()]);
        // As sent, too: a gateway may echo the request's URL or body, where each value is
        // escaped (`+49…` as `%2B49…`).
        let escaped: Vec<Zeroizing<String>> = raw
            .iter()
            .flat_map(|value| {
                [
                    template::escape_url(value),
                    template::escape_body(config::BodyFormat::Json, value),
                    template::escape_body(config::BodyFormat::Form, value),
                ]
            })
            .map(Zeroizing::new)
            .collect();
        let mut hidden = raw;
        hidden.extend(escaped.iter().map(|value| value.as_str()));
        let described = |cause: String| {
            format!(
                "sms could not be sent via gateway {}: {}",
                self.gateway,
                redact(&cause, &hidden)
            )
        };
        let fail = |cause: String| DeliveryError::not_sent(described(cause));
        let filled = [
            ("phone", to.address),
            ("message", text.as_str()),
            ("secret", self.secret.as_str()),
        ];
        // Never show the URL: it holds the phone number, the message and maybe the secret.
        let url = Url::parse(&config::fill_url(&self.config.url, &filled))
            .map_err(|_| fail("the url is not valid once filled".into()))?;
        let body = self.config.body.as_deref().map(|body| {
            Zeroizing::new(template::render_with(body, &filled, |value| {
                template::escape_body(self.config.body_format, value)
            }))
        });
        // Runs on a blocking thread (see `Deliverer`): block_on drives reqwest on the
        // daemon's runtime, bounded as a whole by the configured timeout.
        let answer = runtime.block_on(async {
            // Inside the async block: the timer needs the runtime's context to be created.
            tokio::time::timeout(
                self.timeout,
                self.post(url, body.as_ref().map(|b| b.as_str()), &hidden),
            )
            .await
        });
        match answer {
            Ok(result) => result.map_err(|failed| DeliveryError {
                text: described(failed.cause),
                maybe_sent: failed.maybe_sent,
            }),
            Err(_elapsed) => Err(DeliveryError::maybe_sent(described(format!(
                "no answer within {} seconds",
                self.timeout.as_secs()
            )))),
        }
    }

    fn text_template(&self, content: &Content<'_>) -> &str {
        match content {
            Content::Code { .. } => &self.config.code_text,
            Content::Enrollment { .. } => &self.config.enrollment_text,
            Content::Link { .. } => &self.config.link_text,
        }
    }

    /// Sends the request; Ok on 2xx, else what the gateway answered.
    async fn post(&self, url: Url, body: Option<&str>, hidden: &[&str]) -> Result<(), Failed> {
        let method = match self.config.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
        };
        let mut request = self
            .client
            .request(method, url)
            .headers(self.headers.clone());
        if self.config.method != HttpMethod::Get {
            request = request.body(body.unwrap_or_default().to_owned());
        }
        let response = request.send().await.map_err(|e| Failed {
            // A request that never got a connection (or was never built) reached no gateway;
            // one that timed out or broke on the way may have been taken.
            maybe_sent: !(e.is_connect() || e.is_builder() || super::never_connected(&e)),
            cause: describe(&e.without_url()),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The gateway answered with a refusal: nothing was taken.
        let excerpt = answer_excerpt(response, hidden).await;
        Err(Failed {
            cause: if excerpt.is_empty() {
                format!("gateway answered {status}")
            } else {
                format!("gateway answered {status}: {excerpt}")
            },
            maybe_sent: false,
        })
    }
}

/// The configured headers filled with `secret`, plus a Content-Type for the body format
/// unless one is configured.
fn headers(config: &SmsConfig, secret: &str) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in &config.headers {
        config::check_header(name, value, secret)?;
        let uses_secret = template::uses(value, "secret");
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(&template::render(value, &[("secret", secret)]))
            .map_err(|_| format!("header {name} is not a valid HTTP header value"))?;
        // Keeps the secret out of any Debug output of the request.
        value.set_sensitive(uses_secret);
        map.insert(name, value);
    }
    if config.method != HttpMethod::Get && !map.contains_key(CONTENT_TYPE) {
        map.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(config.body_format.content_type()),
        );
    }
    Ok(map)
}

/// Why a request failed, before the secrets are taken out of the cause.
struct Failed {
    cause: String,
    maybe_sent: bool,
}

/// The start of a gateway's answer, on one line: without any of `hidden`, at most 200 bytes,
/// control characters replaced by spaces. The values are taken out of what was read before it
/// is cut or its blanks joined, either of which could leave part of one that no longer matches.
async fn answer_excerpt(mut response: Response, hidden: &[&str]) -> String {
    let mut bytes = Zeroizing::new(Vec::new());
    while bytes.len() < MAX_ANSWER_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_ANSWER_READ);
    let redacted = redact(&String::from_utf8_lossy(&bytes), hidden);
    let text: String = redacted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > MAX_ANSWER_BYTES {
        let mut end = MAX_ANSWER_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::os::unix::fs::PermissionsExt;

    /// One HTTP request as the test server saw it.
    struct Seen {
        request_line: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Accepts one request on loopback, answers `status` with `answer`, returns what it saw.
    fn serve_once(
        status: &'static str,
        answer: &'static str,
    ) -> (u16, std::thread::JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                headers.push((name.to_owned(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .unwrap();
            Seen {
                request_line: request_line.trim_end().to_owned(),
                headers,
                body: String::from_utf8(body).unwrap(),
            }
        });
        (port, thread)
    }

    fn secret_file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let path = dir.path().join("sms-secret");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn sms_config(text: &str, secret: &std::path::Path) -> SmsConfig {
        toml::from_str(&text.replace("SECRET_FILE", &secret.display().to_string())).unwrap()
    }

    /// Sends `content` from a plain thread (as from spawn_blocking) on a multi-thread runtime.
    fn send(config: &SmsConfig, content: &Content<'_>) -> Result<(), DeliveryError> {
        let sender = SmsSender::new(config).unwrap();
        let to = Recipient {
            user: "alice",
            address: "+4915123456712",
        };
        let values = Values::new("Kron", "host1", "alice", content);
        crate::delivery::on_blocking_thread(|handle| sender.send(handle, &to, content, &values))
    }

    const CODE: Content<'static> = Content::Code {
        code: "12345678",
        valid_for: 300,
    };

    #[test]
    fn json_post_with_secret_header() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "s3cr3t-token\n");
        let (port, server) = serve_once("200 OK", "{\"id\": 1}");
        let config = sms_config(
            &format!(
                "url = \"http://127.0.0.1:{port}/v1/messages?from=kron\"\n\
                 body = '{{\"to\": \"{{phone}}\", \"text\": \"{{message}}\"}}'\n\
                 headers = {{ Authorization = \"Bearer {{secret}}\" }}\n\
                 secret_file = \"SECRET_FILE\"\n\
                 code_text = \"Code \\\"{{code}}\\\" & more\\nline two\"\n"
            ),
            &secret,
        );
        send(&config, &CODE).unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen.request_line, "POST /v1/messages?from=kron HTTP/1.1");
        assert_eq!(seen.header("authorization"), Some("Bearer s3cr3t-token"));
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert!(seen.header("user-agent").unwrap().starts_with("kron-otpd/"));
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(body["to"], "+4915123456712");
        assert_eq!(body["text"], "Code \"12345678\" & more\nline two");
    }

    #[test]
    fn form_put_and_get_with_url_values() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "k&y");
        let (port, server) = serve_once("201 Created", "");
        let config = sms_config(
            &format!(
                "url = \"http://localhost:{port}/send/{{phone}}\"\nmethod = \"PUT\"\n\
                 body_format = \"form\"\nbody = \"key={{secret}}&text={{message}}\"\n\
                 secret_file = \"SECRET_FILE\"\ncode_text = \"a&b = {{code}}\"\n"
            ),
            &secret,
        );
        send(&config, &CODE).unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen.request_line, "PUT /send/%2B4915123456712 HTTP/1.1");
        assert_eq!(
            seen.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(seen.body, "key=k%26y&text=a%26b+%3D+12345678");

        let (port, server) = serve_once("200 OK", "");
        let config = sms_config(
            &format!(
                "url = \"http://127.0.0.1:{port}/send?to={{phone}}&text={{message}}&key={{secret}}\"\n\
                 method = \"GET\"\nsecret_file = \"SECRET_FILE\"\n\
                 headers = {{ Content-Type = \"text/x-custom\" }}\n"
            ),
            &secret,
        );
        send(&config, &CODE).unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            seen.request_line,
            "GET /send?to=%2B4915123456712&text=Kron%3A%20your%20verification%20code%20is%20\
             12345678.%20Valid%20for%205%20minutes.&key=k%26y HTTP/1.1"
        );
        assert_eq!(seen.body, "");
        assert_eq!(seen.header("content-type"), Some("text/x-custom"));
    }

    #[test]
    fn text_body_and_enrollment() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "unused");
        let (port, server) = serve_once("200 OK", "");
        let config = sms_config(
            &format!(
                "url = \"http://localhost:{port}/\"\nbody_format = \"text\"\n\
                 body = \"{{phone}} {{message}}\"\n"
            ),
            &secret,
        );
        let enrollment = Content::Enrollment {
            uri: "otpauth://totp/x",
            secret: "JBSWY3DPEHPK3PXP",
            qr_png: b"",
            expires: 1_772_373_900,
        };
        send(&config, &enrollment).unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            seen.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            seen.body,
            "+4915123456712 Kron key for alice@host1: JBSWY3DPEHPK3PXP. Confirm it with a \
             code from your app before 2026-03-01 14:05 UTC."
        );
    }

    #[test]
    fn gateway_error_names_status_and_host_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "s3cr3t");
        let (port, server) = serve_once(
            "500 Internal Server Error",
            "quota exceeded\r\n\x1b[31mfor +4915123456712 text 12345678 key s3cr3t",
        );
        let config = sms_config(
            &format!(
                "url = \"http://127.0.0.1:{port}/{{phone}}?key={{secret}}\"\n\
                 body = '{{\"text\": \"{{message}}\"}}'\nsecret_file = \"SECRET_FILE\"\n"
            ),
            &secret,
        );
        let error = send(&config, &CODE).unwrap_err().text;
        server.join().unwrap();
        assert!(
            error.starts_with("sms could not be sent via gateway 127.0.0.1: gateway answered 500"),
            "{error}"
        );
        assert!(error.contains("quota exceeded"), "{error}");
        for leaked in ["4915123456712", "12345678", "s3cr3t", "\x1b", "\n"] {
            assert!(!error.contains(leaked), "{leaked:?} in {error}");
        }
    }

    /// A gateway that echoes the request as it was sent (values escaped) shows none of them,
    /// even where one straddles the cut at 200 bytes; its refusal hands the send back.
    #[test]
    fn an_echoed_request_is_redacted_before_it_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "k+y=s3cr3t");
        // The echoed phone number starts 7 bytes before the cut at 200.
        let padding: &'static str = Box::leak("x".repeat(178).into_boxed_str());
        let answer: &'static str = Box::leak(
            format!("{padding} bad request: /%2B4915123456712?key=k%2By%3Ds3cr3t").into_boxed_str(),
        );
        let (port, server) = serve_once("400 Bad Request", answer);
        let config = sms_config(
            &format!(
                "url = \"http://127.0.0.1:{port}/{{phone}}?key={{secret}}\"\n\
                 body = '{{\"text\": \"{{message}}\"}}'\nsecret_file = \"SECRET_FILE\"\n"
            ),
            &secret,
        );
        let error = send(&config, &CODE).unwrap_err();
        server.join().unwrap();
        assert!(!error.maybe_sent, "{error:?}");
        for leaked in ["4915", "s3cr3t", "k%2By", "%3Ds3"] {
            assert!(!error.text.contains(leaked), "{leaked:?} in {}", error.text);
        }
    }

    /// A gateway that takes the request and answers nothing in time may have sent the SMS:
    /// the send stays counted.
    #[test]
    fn no_answer_in_time_may_have_been_sent() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "s3cr3t");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(stream);
        });
        let config = sms_config(
            &format!(
                "url = \"http://127.0.0.1:{port}/{{phone}}?key={{secret}}\"\n\
                 body = '{{\"text\": \"{{message}}\"}}'\nsecret_file = \"SECRET_FILE\"\ntimeout = 1\n"
            ),
            &secret,
        );
        let error = send(&config, &CODE).unwrap_err();
        silent.join().unwrap();
        assert!(error.maybe_sent, "{error:?}");
        // reqwest's own timeout or the one around it, whichever comes first.
        assert!(
            error.text.contains("timed out") || error.text.contains("no answer within"),
            "{}",
            error.text
        );
    }

    #[test]
    fn unreachable_gateway_and_no_redirects() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "s3cr3t");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "url = \"http://127.0.0.1:{port}/{{phone}}?key={{secret}}&m={{message}}\"\n\
             method = \"GET\"\nsecret_file = \"SECRET_FILE\"\n"
        );
        let refused = send(&sms_config(&text, &secret), &CODE).unwrap_err();
        assert!(
            !refused.maybe_sent,
            "no connection, nothing sent: {refused:?}"
        );
        let error = refused.text;
        assert!(
            error.starts_with("sms could not be sent via gateway 127.0.0.1: "),
            "{error}"
        );
        assert!(
            !error.contains("s3cr3t") && !error.contains("12345678"),
            "{error}"
        );
        assert!(!error.contains("4915123456712"), "{error}");

        // A redirect is an answer, not something to follow.
        let (port, server) = serve_once("302 Found\r\nLocation: http://127.0.0.1:9/", "");
        let text = text.replace(&format!(":{}/", port_of(&text)), &format!(":{port}/"));
        let error = send(&sms_config(&text, &secret), &CODE).unwrap_err().text;
        server.join().unwrap();
        assert!(error.contains("gateway answered 302"), "{error}");
    }

    fn port_of(text: &str) -> u16 {
        let start = text.find("127.0.0.1:").unwrap() + "127.0.0.1:".len();
        let end = start + text[start..].find('/').unwrap();
        text[start..end].parse().unwrap()
    }

    #[test]
    fn real_secret_must_fit_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "line one\nline two\n");
        let config = sms_config(
            "url = \"https://sms.example.com/{phone}\"\nbody = \"{message}\"\n\
             body_format = \"text\"\nheaders = { X-Key = \"{secret}\" }\n\
             secret_file = \"SECRET_FILE\"\n",
            &secret,
        );
        let error = SmsSender::new(&config).err().unwrap().to_string();
        assert!(
            error.contains("X-Key") || error.contains("x-key"),
            "{error}"
        );
        assert!(!error.contains("line one"), "{error}");
    }
}
