//! The tiny template language of the `[email]` and `[sms]` sections.
//!
//! `{name}` is a placeholder (a letter, then letters, digits or `_`); `{{name}}` writes the
//! text `{name}` literally. Every other brace is plain text, so a JSON body such as
//! `{"to": "{phone}"}` needs no escaping. Templates are checked when the config is read
//! ([`check`]): an unknown placeholder is an error then, so [`render`] can assume validity.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// Longest template, body or text otpd accepts; messages are short and this bounds the
/// memory a send can take.
pub const MAX_TEMPLATE_BYTES: usize = 4096;

/// Placeholders of the templates for sent codes.
pub const CODE: &[&str] = &["user", "host", "issuer", "code", "minutes"];
/// Placeholders of the templates for delivered enrollments.
pub const ENROLLMENT: &[&str] = &["user", "host", "issuer", "uri", "secret", "expires"];
/// Placeholders of the templates for one-time enrollment links.
pub const LINK: &[&str] = &["user", "host", "issuer", "url", "expires"];
/// Placeholders of the SMS gateway's url and body.
pub const GATEWAY: &[&str] = &["phone", "message", "secret"];
/// Placeholders of the SMS gateway's header values.
pub const HEADER: &[&str] = &["secret"];

/// What a URL component keeps unescaped: RFC 3986's unreserved characters. Everything
/// else (`+`, `/`, `?`, `&`, `#`, `%`, spaces) is percent-encoded, so a value can never
/// change the structure of the URL around it.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How the SMS body is written, and so how values are escaped in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Json,
    Form,
    Text,
}

impl BodyFormat {
    /// The Content-Type otpd sends unless a configured header sets one.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Json => "application/json",
            BodyFormat::Form => "application/x-www-form-urlencoded",
            BodyFormat::Text => "text/plain; charset=utf-8",
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits a template into text and placeholders.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut index = 0;
    while let Some(offset) = template[index..].find('{') {
        let open = index + offset;
        if let Some((name, end)) = escaped_at(template, open) {
            // `{{name}}`: keep `{name}` as text.
            push_text(&mut pieces, &template[text_start..open]);
            push_text(&mut pieces, &template[open + 1..open + 1 + name.len() + 2]);
            text_start = end;
            index = end;
        } else if let Some((name, end)) = placeholder_at(template, open) {
            push_text(&mut pieces, &template[text_start..open]);
            pieces.push(Piece::Placeholder(name));
            text_start = end;
            index = end;
        } else {
            index = open + 1;
        }
    }
    push_text(&mut pieces, &template[text_start..]);
    pieces
}

fn push_text<'a>(pieces: &mut Vec<Piece<'a>>, text: &'a str) {
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
}

/// `{name}` starting at `open`: the name and the index after the closing brace.
fn placeholder_at(template: &str, open: usize) -> Option<(&str, usize)> {
    let rest = template.get(open + 1..)?;
    let length = rest
        .char_indices()
        .take_while(|&(i, c)| {
            c.is_ascii_alphabetic() || (i > 0 && (c.is_ascii_digit() || c == '_'))
        })
        .count();
    if length == 0 || !rest[length..].starts_with('}') {
        return None;
    }
    Some((&rest[..length], open + 1 + length + 1))
}

/// `{{name}}` starting at `open`: the name and the index after the closing braces.
fn escaped_at(template: &str, open: usize) -> Option<(&str, usize)> {
    if !template.get(open + 1..)?.starts_with('{') {
        return None;
    }
    let (name, end) = placeholder_at(template, open + 1)?;
    template
        .get(end..)?
        .starts_with('}')
        .then_some((name, end + 1))
}

/// The placeholders a template uses, in order, with repeats.
pub fn placeholders(template: &str) -> Vec<&str> {
    pieces(template)
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Placeholder(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Whether `template` uses `{name}`.
pub fn uses(template: &str, name: &str) -> bool {
    placeholders(template).contains(&name)
}

/// Checks size and placeholders: every placeholder must be in `allowed`.
pub fn check(template: &str, allowed: &[&str]) -> Result<(), String> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "is longer than {MAX_TEMPLATE_BYTES} bytes ({} bytes)",
            template.len()
        ));
    }
    if let Some(unknown) = placeholders(template)
        .into_iter()
        .find(|name| !allowed.contains(name))
    {
        let known: Vec<String> = allowed.iter().map(|name| format!("{{{name}}}")).collect();
        return Err(format!(
            "has an unknown placeholder {{{unknown}}} (known here: {}; write {{{{{unknown}}}}} \
             for the literal text)",
            known.join(", ")
        ));
    }
    Ok(())
}

/// Checks that `template` uses `{name}`.
pub fn require(template: &str, name: &str) -> Result<(), String> {
    if uses(template, name) {
        Ok(())
    } else {
        Err(format!("must contain {{{name}}}"))
    }
}

/// Fills the placeholders from `values` as they are.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    render_with(template, values, |value| value.to_owned())
}

/// Fills the placeholders from `values`, each passed through `escape` first.
pub fn render_with(
    template: &str,
    values: &[(&str, &str)],
    escape: impl Fn(&str) -> String,
) -> String {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(name) => match values.iter().find(|(key, _)| *key == name) {
                Some((_, value)) => out.push_str(&escape(value)),
                // Checked at config time; should a caller forget a value, the placeholder
                // stays visible instead of vanishing silently.
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// Escapes a value for an SMS body of `format`: inside a JSON string (the template supplies
/// the quotes), as a form value, or as is.
pub fn escape_body(format: BodyFormat, value: &str) -> String {
    match format {
        BodyFormat::Json => json_string_content(value),
        BodyFormat::Form => form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        BodyFormat::Text => value.to_owned(),
    }
}

/// Percent-encodes a value as one URL component (path segment or query value).
pub fn escape_url(value: &str) -> String {
    utf8_percent_encode(value, URL_COMPONENT).to_string()
}

/// The inside of the JSON string literal for `value`.
fn json_string_content(value: &str) -> String {
    // Serializing a str cannot fail; the fallback only keeps this free of unwrap.
    let quoted = serde_json::to_string(value).unwrap_or_else(|_| String::from("\"\""));
    quoted
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

/// "2026-03-01 14:05 UTC": a deadline as the texts (`{expires}`) and kron-web's page show it.
/// UTC because the recipient's time zone is unknown.
pub fn utc_date_time(unix: u64) -> String {
    let time = i64::try_from(unix)
        .ok()
        .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok());
    match time {
        Some(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        // Beyond year 9999: not a real deadline, but still say something readable.
        None => format!("unix time {unix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_dates_in_utc() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date_time(1_772_373_959), "2026-03-01 14:05 UTC");
        assert_eq!(utc_date_time(u64::MAX), format!("unix time {}", u64::MAX));
    }

    #[test]
    fn renders_placeholders_and_keeps_other_braces() {
        let values = [("user", "alice"), ("code", "12345678")];
        assert_eq!(
            render("{user}: {code}, again {code}", &values),
            "alice: 12345678, again 12345678"
        );
        assert_eq!(
            render(r#"{"to": "{user}", "x": {"y": 1}}"#, &values),
            r#"{"to": "alice", "x": {"y": 1}}"#
        );
        assert_eq!(render("{{user}} is {user}", &values), "{user} is alice");
        assert_eq!(render("{ user } {0} {} {", &values), "{ user } {0} {} {");
        assert_eq!(render("{user", &values), "{user");
        assert_eq!(render("", &values), "");
        assert_eq!(render("{missing}", &values), "{missing}");
    }

    #[test]
    fn lists_placeholders() {
        assert_eq!(placeholders("a {b} {{c}} {d_1} {9} {e"), vec!["b", "d_1"]);
        assert!(uses("{phone}", "phone"));
        assert!(!uses("{{phone}}", "phone"));
    }

    #[test]
    fn checks_names_and_size() {
        assert!(check("{user} {code}", CODE).is_ok());
        let error = check("{usr} {code}", CODE).unwrap_err();
        assert!(error.contains("unknown placeholder {usr}"), "{error}");
        assert!(error.contains("{user}"), "{error}");
        assert!(check("{{usr}}", CODE).is_ok());
        assert!(check(&"x".repeat(MAX_TEMPLATE_BYTES), CODE).is_ok());
        assert!(
            check(&"x".repeat(MAX_TEMPLATE_BYTES + 1), CODE)
                .unwrap_err()
                .contains("longer than 4096")
        );
        assert_eq!(
            require("{user}", "code").unwrap_err(),
            "must contain {code}"
        );
        assert!(require("{code}", "code").is_ok());
    }

    #[test]
    fn escapes_json_form_text_and_url() {
        let message = "Say \"hi\" & go\nnow é";
        let json = render_with(r#"{"text": "{message}"}"#, &[("message", message)], |v| {
            escape_body(BodyFormat::Json, v)
        });
        assert_eq!(json, r#"{"text": "Say \"hi\" & go\nnow é"}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["text"], message);

        let form = render_with(
            "to={phone}&text={message}",
            &[("phone", "+49151"), ("message", message)],
            |v| escape_body(BodyFormat::Form, v),
        );
        assert_eq!(form, "to=%2B49151&text=Say+%22hi%22+%26+go%0Anow+%C3%A9");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs[1], ("text".into(), message.into()));

        assert_eq!(escape_body(BodyFormat::Text, message), message);
        assert_eq!(
            escape_url("+49 151/a?b&c#d%"),
            "%2B49%20151%2Fa%3Fb%26c%23d%25"
        );
        assert_eq!(escape_url("AZaz09-._~"), "AZaz09-._~");
    }
}
