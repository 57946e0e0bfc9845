//! The test SMTP server and SMS gateway checked against hand-written clients, without otpd: if
//! these fail, the delivery tests' failures say nothing about otpd.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use kron_tests::gateway::{self, Gateway};
use kron_tests::mailbox::Mailbox;
use kron_tests::process;

/// Every byte value, so a lossy decoding anywhere shows.
fn binary_payload() -> Vec<u8> {
    (0..=255u8)
        .chain(b"\x89PNG\r\n\x1a\n".iter().copied())
        .collect()
}

/// Standard base64 with `=` padding, wrapped at 76 columns as MIME wants.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    let lines: Vec<&str> = out
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    lines.join("\r\n")
}

/// A multipart/mixed message: a quoted-printable UTF-8 text part with a soft line break, and a
/// base64 PNG attachment; the subject RFC 2047-encoded.
fn mime_message(to: &str, code: &str) -> String {
    [
        "From: Kron <kron@test.invalid>".to_string(),
        format!("To: {to}"),
        // "Ihr Bestätigungscode"
        "Subject: =?utf-8?b?SWhyIEJlc3TDpHRpZ3VuZ3Njb2Rl?=".to_string(),
        "MIME-Version: 1.0".to_string(),
        "Content-Type: multipart/mixed; boundary=\"SEP\"".to_string(),
        String::new(),
        "--SEP".to_string(),
        "Content-Type: text/plain; charset=utf-8".to_string(),
        "Content-Transfer-Encoding: quoted-printable".to_string(),
        String::new(),
        "Your code is ".to_string() + code + ". It is valid for 5 minutes, until 12:05 =",
        "UTC. Gr=C3=BC=C3=9Fe, kron. Call +4915123456712 if this was not you.".to_string(),
        "--SEP".to_string(),
        "Content-Type: image/png".to_string(),
        "Content-Disposition: attachment; filename=\"kron-qr.png\"".to_string(),
        "Content-Transfer-Encoding: base64".to_string(),
        String::new(),
        base64(&binary_payload()),
        "--SEP--".to_string(),
        String::new(),
    ]
    .join("\r\n")
}

/// A minimal SMTP client: sends one message and returns the server's reply to the end of DATA
/// (`Err` with the transcript if an earlier command was refused).
fn smtp_send(port: u16, from: &str, to: &[&str], data: &str) -> Result<String, String> {
    let mut client = SmtpClient::connect(port);
    let greeting = client.reply();
    if !greeting.starts_with("220") {
        return Err(client.transcript);
    }
    client.command("EHLO client.test.invalid", "250")?;
    client.command(&format!("MAIL FROM:<{from}>"), "250")?;
    for rcpt in to {
        client.command(&format!("RCPT TO:<{rcpt}>"), "250")?;
    }
    client.command("DATA", "354")?;
    let end = client.command(&format!("{data}\r\n."), "")?;
    let _ = client.command("QUIT", "221");
    Ok(end)
}

struct SmtpClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    transcript: String,
}

impl SmtpClient {
    fn connect(port: u16) -> SmtpClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the mailbox");
        stream
            .set_read_timeout(Some(process::COMMAND_TIMEOUT))
            .expect("set read timeout");
        SmtpClient {
            writer: stream.try_clone().expect("clone stream"),
            reader: BufReader::new(stream),
            transcript: String::new(),
        }
    }

    /// One reply: "250-..." lines ending with one "250 ..." line; returns the last.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read SMTP reply");
            self.transcript.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_string();
            }
        }
    }

    /// Sends `line`; `Ok(reply)` if the reply starts with `expect`.
    fn command(&mut self, line: &str, expect: &str) -> Result<String, String> {
        let first = line.lines().next().unwrap_or_default();
        self.transcript.push_str(&format!(">> {first}\n"));
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write SMTP command");
        let answer = self.reply();
        if answer.starts_with(expect) {
            Ok(answer)
        } else {
            Err(self.transcript.clone())
        }
    }
}

/// A minimal HTTP/1.1 client: one request, `Connection: close`; returns (status, body).
fn http_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(process::COMMAND_TIMEOUT))
        .expect("set read timeout");
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `text` parsed by Python's tomllib (the same TOML 1.0 otpd's `toml` crate reads), as JSON.
fn parse_toml(text: &str) -> serde_json::Value {
    let output = process::run_with_input(
        Command::new("/usr/bin/python3").args([
            "-c",
            "import json, sys, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))",
        ]),
        text,
    );
    output.assert_success(&format!("parse as TOML:\n{text}"));
    serde_json::from_str(&output.stdout).expect("tomllib prints JSON")
}

#[test]
fn mailbox_decodes_a_mime_message_with_an_attachment() {
    let mailbox = Mailbox::start();
    let to = "alice@example.com";
    let end = smtp_send(
        mailbox.port(),
        "kron@test.invalid",
        &[to, "audit@example.com"],
        &mime_message(to, "40123456"),
    )
    .unwrap_or_else(|transcript| panic!("SMTP refused:\n{transcript}"));
    assert!(end.starts_with("250"), "{end}");

    let mail = mailbox.wait_for("ALICE@example.com");
    assert_eq!(mail.from, "kron@test.invalid");
    assert_eq!(mail.to, ["alice@example.com", "audit@example.com"]);
    assert_eq!(mail.helo, "client.test.invalid");
    assert_eq!(mail.subject, "Ihr Bestätigungscode");
    assert_eq!(mail.header("to"), Some(to));
    assert_eq!(
        mail.text.trim_end(),
        "Your code is 40123456. It is valid for 5 minutes, until 12:05 UTC. Grüße, kron. \
         Call +4915123456712 if this was not you."
    );
    assert_eq!(mail.html, None);
    assert_eq!(mail.code(), "40123456");
    assert_eq!(mail.attachments.len(), 1, "{mail:#?}");
    let png = mail.attachments_of_type("image/png");
    assert_eq!(png.len(), 1);
    assert_eq!(png[0].filename, "kron-qr.png");
    assert_eq!(png[0].data, binary_payload());
    assert!(mail.raw.contains("Content-Transfer-Encoding: base64"));
    assert_eq!(mailbox.count(), 1);
    assert_eq!(mailbox.all(), [mail]);
}

#[test]
fn mailbox_hands_out_each_mail_once_in_order() {
    let mailbox = Mailbox::start();
    for (to, code) in [
        ("bob@example.com", "111111"),
        ("carol@example.com", "222222"),
        ("bob@example.com", "3333333333"),
    ] {
        smtp_send(
            mailbox.port(),
            "kron@test.invalid",
            &[to],
            &mime_message(to, code),
        )
        .unwrap_or_else(|transcript| panic!("SMTP refused:\n{transcript}"));
    }
    assert_eq!(mailbox.wait_for("bob@example.com").code(), "111111");
    assert_eq!(mailbox.wait_for("bob@example.com").code(), "3333333333");
    assert_eq!(mailbox.wait_for("carol@example.com").code(), "222222");
    assert_eq!(mailbox.count(), 3);
}

#[test]
fn mailbox_refuses_and_goes_down_when_told() {
    let mut mailbox = Mailbox::start();
    let to = "dave@example.com";
    mailbox.refuse_with("550 5.7.1 Refused by the test");
    let end = smtp_send(
        mailbox.port(),
        "kron@test.invalid",
        &[to],
        &mime_message(to, "123456"),
    )
    .unwrap_or_else(|transcript| panic!("SMTP refused before DATA:\n{transcript}"));
    assert_eq!(end, "550 5.7.1 Refused by the test");
    assert_eq!(mailbox.count(), 0);

    mailbox.accept();
    let port = mailbox.port();
    mailbox.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a stopped mailbox still accepts connections"
    );
    mailbox.start_again();
    assert_eq!(mailbox.port(), port);
    smtp_send(
        port,
        "kron@test.invalid",
        &[to],
        &mime_message(to, "654321"),
    )
    .unwrap_or_else(|transcript| panic!("SMTP refused:\n{transcript}"));
    assert_eq!(mailbox.wait_for(to).code(), "654321");
}

#[test]
fn mailbox_config_section_is_valid_toml() {
    let mailbox = Mailbox::start();
    let config = parse_toml(&format!("{}timeout = 2\n", mailbox.config_section()));
    let email = &config["email"];
    assert_eq!(email["server"], "127.0.0.1");
    assert_eq!(email["port"], u64::from(mailbox.port()));
    assert_eq!(email["security"], "none");
    assert_eq!(email["from"], "Kron <kron@test.invalid>");
    assert_eq!(email["timeout"], 2);
}

#[test]
fn gateway_records_requests_and_answers_with_the_status_set() {
    let gateway = Gateway::start();
    let body_json = r#"{"to": "+4915123456712", "text": "Your kron code is 87654321."}"#;
    let auth = format!("Bearer {}", gateway::SECRET);
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let (status, reply) = http_request(
        gateway.port(),
        "POST",
        "/v1/messages?x=1",
        &headers,
        body_json,
    );
    assert_eq!(status, 200, "{reply}");

    let request = gateway.wait_for_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/messages?x=1");
    assert_eq!(request.header("authorization"), Some(auth.as_str()));
    assert_eq!(request.header("CONTENT-TYPE"), Some("application/json"));
    assert_eq!(request.body, body_json);
    assert_eq!(request.text(), body_json);
    assert_eq!(request.json()["to"], "+4915123456712");
    assert_eq!(request.code(), "87654321");

    gateway.answer_with(500);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = "to=%2B4915123456&text=Code+123456+%C3%BCber+kron";
    let (status, reply) = http_request(gateway.port(), "PUT", "/again", &form, body);
    assert_eq!(status, 500, "{reply}");
    let request = gateway.wait_for_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("PUT", "/again")
    );
    assert_eq!(request.text(), "to=+4915123456&text=Code 123456 über kron");
    assert_eq!(request.code(), "123456");

    gateway.answer_with(200);
    let target = "/send?to=%2B49151234&text=Code%3A%201234567";
    let (status, _) = http_request(gateway.port(), "GET", target, &[], "");
    assert_eq!(status, 200);
    let request = gateway.wait_for_request();
    assert_eq!(request.method, "GET");
    assert_eq!(request.code(), "1234567");
    assert_eq!(gateway.count(), 3);
    assert_eq!(gateway.requests()[0].body, body_json);
}

#[test]
fn gateway_delays_and_goes_down_when_told() {
    let mut gateway = Gateway::start();
    gateway.delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (status, _) = http_request(gateway.port(), "POST", "/slow", &[], "x");
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    gateway.delay(Duration::ZERO);

    let port = gateway.port();
    gateway.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a stopped gateway still accepts connections"
    );
    gateway.start_again();
    let (status, _) = http_request(port, "POST", "/back", &[], "x");
    assert_eq!(status, 200);
    assert_eq!(gateway.count(), 2);
}

#[test]
fn gateway_config_section_is_valid_toml_with_a_private_secret_file() {
    let gateway = Gateway::start();
    let config = parse_toml(&gateway.config_section());
    let sms = &config["sms"];
    assert_eq!(sms["url"], gateway.url(gateway::SEND_PATH));
    assert_eq!(sms["method"], "POST");
    assert_eq!(sms["body_format"], "json");
    assert_eq!(sms["body"], r#"{"to": "{phone}", "text": "{message}"}"#);
    assert_eq!(sms["headers"]["Authorization"], "Bearer {secret}");
    let secret_file = gateway.secret_file();
    assert_eq!(sms["secret_file"], secret_file.display().to_string());
    assert_eq!(
        std::fs::read_to_string(&secret_file).expect("read secret file"),
        gateway::SECRET
    );
    let mode = std::fs::metadata(&secret_file)
        .expect("stat secret file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
