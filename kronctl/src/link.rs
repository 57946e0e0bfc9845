//! One-time enrollment links (docs/delivery.md, "Enrollment links"): `enroll USER --link`
//! prints the URL and its QR code, `enroll USER --send link --via CHANNEL` has otpd send it,
//! `revoke-link USER` kills it, and `status` shows it. The URL is printed once, to the
//! administrator who asked, and never to stderr.

use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroize;

use crate::cli::Cli;
use crate::client::Otpd;
use crate::error::Error;
use crate::output::print;
use crate::render::{json_line, one_line};
use crate::time::Clock;
use kron_proto::Channel;
use kron_proto::{LinkGrant, LinkStatus, UserStatus};

/// `enroll USER --link`.
pub async fn show(cli: &Cli, user: &str, clock: &Clock) -> Result<(), Error> {
    let mut grant = Otpd::connect(&cli.bus).await?.create_link(user, "").await?;
    let mut text = if cli.json {
        grant_json(&grant)
    } else {
        let mut qr = kron_common::qr::terminal(&grant.url).ok();
        let text = grant_human(&grant, qr.as_deref(), clock);
        qr.zeroize();
        text
    };
    let printed = print(&text);
    text.zeroize();
    grant.url.zeroize();
    printed
}

/// `enroll USER --send link --via CHANNEL`.
pub async fn send(cli: &Cli, user: &str, via: Channel, clock: &Clock) -> Result<(), Error> {
    let grant = Otpd::connect(&cli.bus)
        .await?
        .create_link(user, via.as_str())
        .await?;
    print(&if cli.json {
        grant_json(&grant)
    } else {
        format!(
            "A one-time link for {} was sent by {} to {}.\nIt works once, until {}.\n",
            one_line(&grant.user),
            one_line(&grant.channel),
            one_line(&grant.destination),
            clock.datetime_and_relative(grant.expires)
        )
    })
}

/// `revoke-link USER`.
pub async fn revoke(cli: &Cli, user: &str) -> Result<(), Error> {
    let revoked = Otpd::connect(&cli.bus).await?.revoke_link(user).await?;
    print(&if cli.json {
        json_line(&RevokeJson { user, revoked })
    } else if revoked {
        format!(
            "The link of {} is dead, and its enrollment with it.\n",
            one_line(user)
        )
    } else {
        format!("{} has no live link.\n", one_line(user))
    })
}

/// `status [USER]`: the user's status and their link.
pub async fn status(cli: &Cli, user: &str, clock: &Clock) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    let status = otpd.status(user).await?;
    let link = otpd.link_status(user).await?;
    print(&if cli.json {
        status_json(&status, &link)
    } else {
        let mut text = crate::render::status_human(&status, clock);
        text.push_str(&link_line(&link, clock));
        text
    })
}

#[derive(Serialize)]
struct RevokeJson<'a> {
    user: &'a str,
    revoked: bool,
}

#[derive(Serialize)]
struct GrantJson<'a> {
    user: &'a str,
    /// The URL; null when otpd sent it.
    link: Option<String>,
    expires: u64,
    /// null when the URL was printed.
    channel: Option<String>,
    destination: Option<String>,
}

fn grant_json(grant: &LinkGrant) -> String {
    let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    json_line(&GrantJson {
        user: &grant.user,
        link: some(&grant.url),
        expires: grant.expires,
        channel: some(&grant.channel),
        destination: some(&grant.destination),
    })
}

fn grant_human(grant: &LinkGrant, qr: Option<&str>, clock: &Clock) -> String {
    let mut out = format!(
        "A one-time link to set up a token for {}:\n\n    {}\n\n",
        one_line(&grant.user),
        one_line(&grant.url)
    );
    if let Some(qr) = qr {
        out.push_str("Or let them scan it from here:\n\n");
        out.push_str(qr);
        if !qr.ends_with('\n') {
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "It works once, until {}. Give it to {} only: whoever opens it first can set up the \
         token.\nRevoke it with: kronctl revoke-link {}\n",
        clock.datetime_and_relative(grant.expires),
        one_line(&grant.user),
        one_line(&grant.user)
    ));
    out
}

/// "link:      active until ..., sent by email to a***@example.com, 1 wrong code\n".
fn link_line(link: &LinkStatus, clock: &Clock) -> String {
    if !link.active {
        return "link:      none\n".to_owned();
    }
    let mut line = format!(
        "link:      active until {}",
        clock.datetime_and_relative(link.expires)
    );
    if !link.channel.is_empty() {
        line.push_str(&format!(
            ", sent by {} to {}",
            one_line(&link.channel),
            one_line(&link.destination)
        ));
    }
    match link.failures {
        0 => {}
        1 => line.push_str(", 1 wrong code"),
        n => line.push_str(&format!(", {n} wrong codes")),
    }
    line.push('\n');
    line
}

#[derive(Serialize)]
struct LinkJson {
    created: u64,
    expires: u64,
    failures: u32,
    channel: Option<String>,
    destination: Option<String>,
}

/// The status JSON with a `"link"` member: the live link, or null.
fn status_json(status: &UserStatus, link: &LinkStatus) -> String {
    let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let mut value: Value =
        serde_json::from_str(&crate::render::status_json(status)).unwrap_or(Value::Null);
    let link = link.active.then(|| LinkJson {
        created: link.created,
        expires: link.expires,
        failures: link.failures,
        channel: some(&link.channel),
        destination: some(&link.destination),
    });
    if let Value::Object(map) = &mut value {
        map.insert(
            "link".into(),
            serde_json::to_value(link).unwrap_or(Value::Null),
        );
    }
    json_line(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_772_373_600;

    fn grant(url: &str, channel: &str) -> LinkGrant {
        LinkGrant {
            user: "alice".into(),
            url: url.into(),
            expires: T + 86_400,
            channel: channel.into(),
            destination: if channel.is_empty() {
                ""
            } else {
                "a***@example.com"
            }
            .into(),
        }
    }

    #[test]
    fn grants_print_the_url_in_a_link_field() {
        let json: Value =
            serde_json::from_str(&grant_json(&grant("https://k.example/enroll/x.y", ""))).unwrap();
        assert_eq!(json["link"], "https://k.example/enroll/x.y");
        assert_eq!(json["channel"], Value::Null);
        let sent: Value = serde_json::from_str(&grant_json(&grant("", "email"))).unwrap();
        assert_eq!(sent["link"], Value::Null);
        assert_eq!(sent["destination"], "a***@example.com");
        let clock = Clock::fixed(T, 0);
        let text = grant_human(
            &grant("https://k.example/enroll/x.y", ""),
            Some("QR"),
            &clock,
        );
        assert!(
            text.contains("    https://k.example/enroll/x.y\n"),
            "{text}"
        );
        assert!(text.contains("kronctl revoke-link alice"), "{text}");
    }

    #[test]
    fn status_shows_the_link() {
        let clock = Clock::fixed(T, 0);
        let mut link = LinkStatus {
            active: false,
            created: 0,
            expires: 0,
            failures: 0,
            channel: String::new(),
            destination: String::new(),
        };
        assert_eq!(link_line(&link, &clock), "link:      none\n");
        link = LinkStatus {
            active: true,
            created: T,
            expires: T + 3600,
            failures: 2,
            channel: "sms".into(),
            destination: "+49 *** ** 12".into(),
        };
        let line = link_line(&link, &clock);
        assert!(line.starts_with("link:      active until "), "{line}");
        assert!(
            line.ends_with(", sent by sms to +49 *** ** 12, 2 wrong codes\n"),
            "{line}"
        );
        let status = UserStatus {
            user: "alice".into(),
            enrolled: false,
            pending: true,
            locked: false,
            locked_until: 0,
            failures: 0,
            last_used: 0,
            recovery_codes: 0,
            email: String::new(),
            phone: String::new(),
        };
        let json: Value = serde_json::from_str(&status_json(&status, &link)).unwrap();
        assert_eq!(json["link"]["failures"], 2);
        assert_eq!(json["user"], "alice");
    }
}
