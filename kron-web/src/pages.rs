//! The HTML of every page kron-web shows. maud escapes every value it is given, so names and
//! texts from otpd or the request can never become markup; the only raw markup is the QR
//! code's SVG, which kron-common draws from the URI (paths only, no text).
//!
//! The pages work without JavaScript (there is none), on a phone (one column, the QR code
//! scales to the screen) and in a text browser (the key is text, the form a plain POST).

use base64::Engine as _;
use kron_common::template::utc_date_time;
use kron_proto::LinkPage;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use sha2::{Digest, Sha256};

/// The one stylesheet, inline; the CSP allows exactly it by its hash.
pub const STYLE: &str = "\
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#1b1f23;background:#f4f5f7}\
main{max-width:32rem;margin:0 auto;padding:1rem;background:#fff;min-height:100vh;box-sizing:border-box}\
h1{font-size:1.4rem;margin:.5rem 0 1rem}\
ol{padding-left:1.25rem}li{margin-bottom:1.25rem}\
figure{margin:.75rem 0}.qr svg{display:block;width:100%;max-width:18rem;height:auto;\
border:1px solid #d0d4d9}\
.key{font:1.15rem/1.6 ui-monospace,'DejaVu Sans Mono',monospace;letter-spacing:.05em;\
word-spacing:.4em;background:#f4f5f7;padding:.5rem .75rem;display:inline-block;user-select:all}\
label{display:block;font-weight:600;margin:.5rem 0 .25rem}\
input{font:1.4rem ui-monospace,monospace;width:9ch;padding:.4rem .5rem;letter-spacing:.1em}\
button{font:inherit;font-weight:600;margin-left:.5rem;padding:.55rem 1.1rem;border:0;\
border-radius:.3rem;background:#1f5fbf;color:#fff}button.first{margin-left:0}\
.error{color:#a40e26;font-weight:600}.meta{color:#57606a;font-size:.9rem}";

/// The CSP source that allows [`STYLE`]: `'sha256-BASE64'`.
pub fn style_hash() -> String {
    let digest = Sha256::digest(STYLE.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn layout(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
    .into_string()
}

/// `JBSWY3DPEHPK3PXP` → `JBSW Y3DP EHPK 3PXP`.
pub fn group_key(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|group| String::from_utf8_lossy(group).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn title(page: &LinkPage) -> String {
    format!("Set up your authenticator – {}", page.issuer)
}

/// The top of a live link's pages: who and where, and until when.
fn heading(page: &LinkPage) -> Markup {
    html! {
        h1 { "Set up your authenticator" }
        p {
            "For " b { (page.user) } " on " b { (page.host) } " (" (page.issuer) "). "
            "This link works once, until " (utc_date_time(page.expires)) "."
        }
    }
}

/// What opening a link shows: who and where, and a button that shows the key. Nothing secret:
/// mail and chat scanners fetch the links they pass on (and may keep what they fetched), but
/// they do not submit forms.
pub fn opening(page: &LinkPage) -> String {
    let body = html! {
        (heading(page))
        p {
            "The next page shows your new token's key, as a QR code to scan with your "
            "authenticator app and as text. Open it where nobody can see your screen."
        }
        form method="post" autocomplete="off" {
            input type="hidden" name="show" value="key";
            button.first type="submit" { "Show the key" }
        }
        p.meta { "Keep this link to yourself: whoever has it can set up the token." }
    };
    layout(&title(page), body)
}

/// The key of a live link: who and where, the QR code, the key, the form. `error` is shown
/// above the form (after a wrong code).
pub fn enrollment(page: &LinkPage, qr_svg: Option<&str>, error: Option<&str>) -> String {
    let body = html! {
        (heading(page))
        ol {
            @if let Some(svg) = qr_svg {
                li {
                    "Scan this QR code with your authenticator app:"
                    figure.qr role="img" aria-label="QR code of the token" {
                        (PreEscaped(svg))
                    }
                }
            }
            li {
                "Or enter this key by hand (time-based, " (page.issuer) "):"
                br;
                code.key { (group_key(&page.secret)) }
            }
            li {
                form method="post" autocomplete="off" {
                    label for="code" { "Then type the code the app shows:" }
                    input id="code" name="code" type="text" inputmode="numeric"
                        autocomplete="one-time-code" maxlength="12" size="9" required
                        autofocus[error.is_some()];
                    button type="submit" { "Confirm" }
                }
                @if let Some(error) = error {
                    p.error { (error) }
                }
            }
        }
        p.meta {
            "The token is active once confirmed; this link then stops working. "
            "Keep this page to yourself: whoever has it can set up the token."
        }
    };
    layout(&title(page), body)
}

/// After a confirmed code.
pub fn confirmed(page: &LinkPage) -> String {
    let body = html! {
        h1 { "Done" }
        p {
            "Your authenticator is set up for " b { (page.user) } " on " b { (page.host) } ". "
            "Use the codes it shows when you log in. This link no longer works."
        }
    };
    layout("Authenticator set up", body)
}

/// Every link that cannot be used, whatever the reason: the same page.
pub fn dead() -> String {
    let body = html! {
        h1 { "This link is not valid" }
        p {
            "It may have expired, been used already or been withdrawn. "
            "Ask your administrator for a new one."
        }
    };
    layout("Link not valid", body)
}

/// Too many requests from this address or for this link.
pub fn busy() -> String {
    let body = html! {
        h1 { "Too many requests" }
        p { "Please wait a minute, then open the link again." }
    };
    layout("Too many requests", body)
}

/// otpd could not be asked.
pub fn unavailable() -> String {
    let body = html! {
        h1 { "Temporarily unavailable" }
        p { "The service cannot answer right now. Please try again in a few minutes." }
    };
    layout("Temporarily unavailable", body)
}

/// A request that is not one of the page's forms.
pub fn bad_request() -> String {
    let body = html! {
        h1 { "Bad request" }
        p { "Open the link again and use the page's buttons." }
    };
    layout("Bad request", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> LinkPage {
        LinkPage {
            issuer: "Kron <Corp>".into(),
            user: "alice&\"bob\"".into(),
            host: "host".into(),
            uri: "otpauth://totp/x".into(),
            secret: "JBSWY3DPEHPK3PXPJBSW".into(),
            expires: 1_772_373_959,
            attempts_left: 5,
        }
    }

    #[test]
    fn values_are_escaped_and_the_key_grouped() {
        let html = enrollment(&page(), Some("<svg></svg>"), Some("Wrong <code>"));
        assert!(html.contains("alice&amp;&quot;bob&quot;"), "{html}");
        assert!(html.contains("Kron &lt;Corp&gt;"));
        assert!(html.contains("Wrong &lt;code&gt;"));
        assert!(html.contains("JBSW Y3DP EHPK 3PXP JBSW"));
        assert!(html.contains("2026-03-01 14:05 UTC"));
        assert!(html.contains("<svg></svg>"));
        assert!(html.contains(r#"<form method="post""#));
        assert_eq!(html.matches("<input").count(), 1, "one text field");
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no assets"
        );
    }

    #[test]
    fn the_opening_page_holds_nothing_secret() {
        let html = opening(&page());
        assert!(html.contains("alice&amp;&quot;bob&quot;"), "{html}");
        assert!(html.contains("2026-03-01 14:05 UTC"));
        assert!(!html.contains("JBSW"), "no key: {html}");
        assert!(
            !html.contains("otpauth") && !html.contains("<svg"),
            "no QR code"
        );
        assert!(html.contains(r#"<form method="post""#));
        assert!(html.contains(r#"name="show""#));
        assert!(!html.contains(r#"name="code""#));
    }

    #[test]
    fn the_style_hash_matches_the_inline_style() {
        let hash = style_hash();
        assert!(
            hash.starts_with("'sha256-") && hash.ends_with("='"),
            "{hash}"
        );
        assert!(dead().contains(STYLE));
        assert!(!dead().contains("alice"));
    }
}
