//! Email over SMTP with lettre: STARTTLS required, implicit TLS, or plain to a loopback
//! relay. One connection per message (sends are rare; no pool to keep alive).

use super::{Content, DeliveryError, Recipient, Values, read_secret, redact};
use crate::error::{Error, describe};
use kron_common::config::{EmailConfig, Security};
use kron_common::template;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;
use tokio::runtime::Handle;

pub(super) struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    config: EmailConfig,
    /// `from` as lettre reads it (the config was checked with a smaller parser).
    from: Mailbox,
    /// "smtp.example.com:587", for error texts.
    server: String,
    /// Right-hand side of Message-IDs.
    hostname: String,
    timeout: Duration,
}

impl EmailSender {
    pub(super) fn new(config: &EmailConfig, hostname: &str) -> Result<EmailSender, Error> {
        config
            .validate()
            .map_err(|e| Error::Config(format!("[email]: {e}")))?;
        let from: Mailbox = config.from.parse().map_err(|e| {
            Error::Config(format!(
                "[email]: from {:?} is not a mail address: {e}",
                config.from
            ))
        })?;
        let server = format!("{}:{}", config.server, config.port());
        let tls_failed = |e: lettre::transport::smtp::Error| {
            Error::Config(format!("[email]: TLS setup for {server}: {}", describe(&e)))
        };
        let builder = match config.security {
            // `starttls_relay` refuses to go on if the server does not offer STARTTLS: a
            // downgrade by whoever sits in between must fail, not send the code in clear.
            Security::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.server)
                    .map_err(tls_failed)?
            }
            Security::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&config.server).map_err(tls_failed)?
            }
            // Allowed by `validate` only for a loopback server.
            Security::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.server)
            }
        };
        let timeout = Duration::from_secs(config.timeout);
        let mut builder = builder
            .port(config.port())
            .timeout(Some(timeout))
            .hello_name(ClientId::Domain(hostname.to_owned()));
        if let (Some(username), Some(path)) = (&config.username, &config.password_file) {
            let password = read_secret(path)?;
            // lettre keeps its own copy of the password for the life of the transport.
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.as_str().to_owned(),
            ));
        }
        Ok(EmailSender {
            transport: builder.build(),
            config: config.clone(),
            from,
            server,
            hostname: hostname.to_owned(),
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
        let mut hidden = super::secrets_of(content);
        hidden.push(to.address);
        let text = |cause: String| {
            format!(
                "email could not be sent via {}: {}",
                self.server,
                redact(&cause, &hidden)
            )
        };
        let message = self
            .message(to, content, values)
            .map_err(|cause| DeliveryError::not_sent(text(cause)))?;
        // Runs on a blocking thread (see `Deliverer`): block_on drives lettre's async
        // transport on the daemon's runtime, bounded as a whole by the configured timeout.
        let sent = runtime.block_on(async {
            // Inside the async block: the timer needs the runtime's context to be created.
            tokio::time::timeout(self.timeout, self.transport.send(message)).await
        });
        match sent {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(e)) => Err(DeliveryError {
                text: text(describe(&e)),
                maybe_sent: maybe_accepted(&e),
            }),
            Err(_elapsed) => Err(DeliveryError::maybe_sent(text(format!(
                "no answer within {} seconds",
                self.timeout.as_secs()
            )))),
        }
    }

    /// The message for `content`; errors never contain the recipient or the content.
    fn message(
        &self,
        to: &Recipient<'_>,
        content: &Content<'_>,
        values: &Values,
    ) -> Result<Message, String> {
        let recipient: Mailbox = to
            .address
            .parse()
            .map_err(|_| "the recipient's address is not a valid email address".to_owned())?;
        let pairs = values.pairs();
        let (subject, body) = match content {
            Content::Code { .. } => (&self.config.code_subject, &self.config.code_body),
            Content::Enrollment { .. } => (
                &self.config.enrollment_subject,
                &self.config.enrollment_body,
            ),
            Content::Link { .. } => (&self.config.link_subject, &self.config.link_body),
        };
        let builder = Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(template::render(subject, &pairs))
            .message_id(Some(self.message_id()?));
        let body = template::render(body, &pairs);
        let built = match content {
            Content::Code { .. } | Content::Link { .. } => {
                builder.singlepart(SinglePart::plain(body))
            }
            Content::Enrollment { qr_png, .. } => builder.multipart(
                MultiPart::mixed()
                    .singlepart(SinglePart::plain(body))
                    .singlepart(
                        Attachment::new("qr.png".to_owned()).body(
                            qr_png.to_vec(),
                            ContentType::parse("image/png")
                                .map_err(|e| format!("building the message: {e}"))?,
                        ),
                    ),
            ),
        };
        built.map_err(|e| format!("building the message: {e}"))
    }

    /// `<random@hostname>`: lettre would use "localhost" without its `hostname` feature.
    fn message_id(&self) -> Result<String, String> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness for a Message-ID: {e}"))?;
        Ok(format!("<{}@{}>", hex::encode(random), self.hostname))
    }
}

/// Whether the server may have taken the message despite `e`: not when it answered with an
/// SMTP error code (4xx, 5xx: refused, whenever in the dialogue), the TLS handshake or the
/// client's own authentication step failed, or no connection was made. A connection that broke,
/// or an answer that could not be read, may have come after the message was accepted.
fn maybe_accepted(e: &lettre::transport::smtp::Error) -> bool {
    !(e.is_transient()
        || e.is_permanent()
        || e.is_tls()
        || e.is_client()
        || super::never_connected(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(extra: &str) -> EmailSender {
        let config: EmailConfig = toml::from_str(&format!(
            "server = \"localhost\"\nsecurity = \"none\"\nport = 2525\n\
             from = \"Kron <kron@example.com>\"\n{extra}"
        ))
        .unwrap();
        EmailSender::new(&config, "host1.example.com").unwrap()
    }

    fn text(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn code_mail_is_plain_text_with_the_code() {
        let sender = sender("");
        let content = Content::Code {
            code: "12345678",
            valid_for: 300,
        };
        let to = Recipient {
            user: "alice",
            address: "alice@example.com",
        };
        let values = Values::new("Kron", "host1", "alice", &content);
        let message = text(&sender.message(&to, &content, &values).unwrap());
        assert!(
            message.contains("Subject: Kron verification code"),
            "{message}"
        );
        assert!(message.contains("To: alice@example.com"), "{message}");
        assert!(
            message.contains("From: Kron <kron@example.com>"),
            "{message}"
        );
        assert!(
            message.contains("Content-Type: text/plain; charset=utf-8"),
            "{message}"
        );
        assert!(message.contains("12345678"), "{message}");
        assert!(message.contains("valid for 5 minutes"), "{message}");
        assert!(message.contains("alice@host1"), "{message}");
        assert!(message.contains("@host1.example.com>"), "{message}");
        assert!(!message.contains("multipart"), "{message}");
    }

    #[test]
    fn enrollment_mail_has_the_qr_attachment() {
        let sender = sender("enrollment_body = \"key {secret}, until {expires}\"");
        let content = Content::Enrollment {
            uri: "otpauth://totp/Kron:alice@host1?secret=JBSWY3DPEHPK3PXP",
            secret: "JBSWY3DPEHPK3PXP",
            qr_png: b"\x89PNG fake",
            expires: 1_772_373_900,
        };
        let to = Recipient {
            user: "alice",
            address: "alice@example.com",
        };
        let values = Values::new("Kron", "host1", "alice", &content);
        let message = text(&sender.message(&to, &content, &values).unwrap());
        assert!(message.contains("multipart/mixed"), "{message}");
        assert!(message.contains("Content-Type: image/png"), "{message}");
        assert!(
            message.contains("Content-Disposition: attachment; filename=\"qr.png\""),
            "{message}"
        );
        assert!(
            message.contains("key JBSWY3DPEHPK3PXP, until 2026-03-01 14:05 UTC"),
            "{message}"
        );
        assert!(
            message.contains("Subject: Kron: set up your authenticator"),
            "{message}"
        );
    }

    #[test]
    fn invalid_recipient_is_refused_without_naming_it() {
        let sender = sender("");
        let content = Content::Code {
            code: "12345678",
            valid_for: 300,
        };
        let to = Recipient {
            user: "alice",
            address: "not an address",
        };
        let values = Values::new("Kron", "host1", "alice", &content);
        let error = sender.message(&to, &content, &values).unwrap_err();
        assert!(!error.contains("not an address"), "{error}");
    }

    /// A minimal SMTP server on loopback for one session, without STARTTLS; returns the
    /// commands and the message data it received.
    fn fake_smtp() -> (u16, std::thread::JoinHandle<(Vec<String>, String)>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut commands, mut data) = (Vec::new(), String::new());
            stream.write_all(b"220 fake ESMTP\r\n").unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let command = line.trim_end().to_owned();
                commands.push(command.clone());
                let reply: &[u8] = match command.split(' ').next().unwrap_or("") {
                    "EHLO" => b"250-fake\r\n250 8BITMIME\r\n",
                    "DATA" => {
                        stream.write_all(b"354 go ahead\r\n").unwrap();
                        while !data.ends_with("\r\n.\r\n") {
                            if reader.read_line(&mut data).unwrap_or(0) == 0 {
                                break;
                            }
                        }
                        b"250 queued\r\n"
                    }
                    "QUIT" => {
                        stream.write_all(b"221 bye\r\n").unwrap();
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                stream.write_all(reply).unwrap();
            }
            (commands, data)
        });
        (port, thread)
    }

    fn send_to(sender: &EmailSender, content: &Content<'_>) -> Result<(), DeliveryError> {
        let to = Recipient {
            user: "alice",
            address: "alice@example.com",
        };
        let values = Values::new("Kron", "host1", "alice", content);
        crate::delivery::on_blocking_thread(|handle| sender.send(handle, &to, content, &values))
    }

    const CODE: Content<'static> = Content::Code {
        code: "12345678",
        valid_for: 300,
    };

    #[test]
    fn plain_smtp_to_loopback_relay() {
        let (port, server) = fake_smtp();
        let config: EmailConfig = toml::from_str(&format!(
            "server = \"127.0.0.1\"\nsecurity = \"none\"\nport = {port}\n\
             from = \"Kron <kron@example.com>\"\n"
        ))
        .unwrap();
        send_to(
            &EmailSender::new(&config, "host1.example.com").unwrap(),
            &CODE,
        )
        .unwrap();
        let (commands, data) = server.join().unwrap();
        assert_eq!(commands[0], "EHLO host1.example.com");
        assert!(
            commands.contains(&"MAIL FROM:<kron@example.com>".to_owned()),
            "{commands:?}"
        );
        assert!(
            commands.contains(&"RCPT TO:<alice@example.com>".to_owned()),
            "{commands:?}"
        );
        assert!(data.contains("12345678"), "{data}");
    }

    #[test]
    fn starttls_is_required_not_opportunistic() {
        let (port, server) = fake_smtp();
        let config: EmailConfig = toml::from_str(&format!(
            "server = \"127.0.0.1\"\nport = {port}\nfrom = \"kron@example.com\"\n"
        ))
        .unwrap();
        let error = send_to(&EmailSender::new(&config, "host1").unwrap(), &CODE).unwrap_err();
        let (commands, data) = server.join().unwrap();
        assert!(
            error
                .text
                .starts_with(&format!("email could not be sent via 127.0.0.1:{port}: ")),
            "{error}"
        );
        assert!(
            !commands.iter().any(|c| c.starts_with("MAIL")),
            "sent in clear: {commands:?}"
        );
        assert!(data.is_empty());
        assert!(!error.maybe_sent, "{error:?}");
    }

    #[test]
    fn unreachable_server_names_server_not_content() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // A port nobody listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config: EmailConfig = toml::from_str(&format!(
            "server = \"127.0.0.1\"\nsecurity = \"none\"\nport = {port}\n\
             from = \"kron@example.com\"\ntimeout = 5\n"
        ))
        .unwrap();
        let sender = EmailSender::new(&config, "host1").unwrap();
        let content = Content::Code {
            code: "12345678",
            valid_for: 300,
        };
        let to = Recipient {
            user: "alice",
            address: "alice@example.com",
        };
        let values = Values::new("Kron", "host1", "alice", &content);
        let handle = runtime.handle().clone();
        let error = std::thread::scope(|scope| {
            scope
                .spawn(|| sender.send(&handle, &to, &content, &values))
                .join()
                .unwrap()
        })
        .unwrap_err();
        assert!(
            error
                .text
                .starts_with(&format!("email could not be sent via 127.0.0.1:{port}: ")),
            "{error}"
        );
        assert!(
            !error.text.contains("12345678") && !error.text.contains("alice@"),
            "{error}"
        );
        // Refused at connect: nothing reached a server, the send is handed back.
        assert!(!error.maybe_sent, "{error:?}");
    }
}
