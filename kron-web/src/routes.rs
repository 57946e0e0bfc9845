//! The routes: `GET /enroll/TOKEN` shows a link's opening page (nothing secret), `POST
//! /enroll/TOKEN` with `show` shows the key and the code form, and with `code` confirms it;
//! everything else, and every link that cannot be used, gets the neutral page. Opening and
//! showing consume nothing; only a confirmed code does, in otpd.

use crate::headers::{self, SecurityHeaders};
use crate::otpd::{Failure, Otpd};
use crate::pages;
use crate::server::{Peer, Serving};
use axum::body::Body;
use axum::extract::Request;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Extension, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use kron_common::config::WebConfig;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body: the form is one short field.
const MAX_BODY_BYTES: usize = 1024;
/// Longest wait for a request's body once its headers are in: a client that sends its form a
/// byte a minute loses the connection (408) instead of holding one of the server's places.
/// (The answer from otpd may take longer: that wait is not the client's.)
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest code accepted from the form (otpd bounds it again).
const MAX_CODE_LEN: usize = 32;
/// Module size of the QR code's SVG (the page scales it).
const QR_MODULE: u32 = 6;

struct App {
    otpd: Otpd,
    /// Plain HTTP on loopback: the client's address comes from the proxy's X-Forwarded-For.
    behind_proxy: bool,
}

pub fn router(otpd: Otpd, web: &WebConfig, tls: bool) -> Router {
    let app = Arc::new(App {
        otpd,
        behind_proxy: !tls,
    });
    let hsts = tls || is_https(&web.public_url);
    let headers = Arc::new(SecurityHeaders::new(&pages::style_hash(), hsts));
    Router::new()
        .route("/enroll/{token}", get(show).post(confirm))
        .fallback(not_found)
        .with_state(app)
        .layer(middleware::from_fn(body_in_time))
        .layer(middleware::map_response_with_state(
            headers,
            headers::secure,
        ))
}

/// Whether `url` is https (the config accepts the scheme in any case, as URLs have it).
fn is_https(url: &str) -> bool {
    url.get(.."https://".len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// Reads the request's body (at most [`MAX_BODY_BYTES`]) within [`BODY_TIMEOUT`] before any
/// route sees the request. Only then is the request served ([`Serving`]): its connection
/// cannot be closed for a newcomer from here until its response is written.
async fn body_in_time(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            if let Some(serving) = parts.extensions.get::<Serving>()
                && !serving.begin()
            {
                // Closed for a newcomer while the body came in: nothing was done for it.
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONNECTION, "close")],
                    Html(pages::unavailable()),
                )
                    .into_response();
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => bad_request(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            Html(pages::bad_request()),
        )
            .into_response(),
    }
}

/// One of the page's two forms: the opening page's button (`show`), or the code (`code`).
#[derive(Deserialize)]
struct LinkForm {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    show: Option<String>,
}

async fn show(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    request_headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(token) = well_formed(token) else {
        return neutral();
    };
    let client = app.client(peer, &request_headers);
    match app.otpd.show(&token, &client).await {
        Ok(shown) => Html(pages::opening(&shown)).into_response(),
        Err(failure) => failed(failure),
    }
}

async fn confirm(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    request_headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    form: Result<Form<LinkForm>, FormRejection>,
) -> Response {
    let Some(token) = well_formed(token) else {
        return neutral();
    };
    let client = app.client(peer, &request_headers);
    let code = match form {
        Ok(Form(LinkForm {
            code: Some(code), ..
        })) if code.len() <= MAX_CODE_LEN => zeroize::Zeroizing::new(code),
        Ok(Form(LinkForm {
            code: None,
            show: Some(_),
        })) => return page(&app, &token, &client, None).await,
        _ => return bad_request(),
    };
    // Shown after success; asked first, so the success page can still name user and host.
    let shown = match app.otpd.show(&token, &client).await {
        Ok(shown) => shown,
        Err(failure) => return failed(failure),
    };
    match app.otpd.confirm(&token, code.trim(), &client).await {
        Ok(()) => Html(pages::confirmed(&shown)).into_response(),
        Err(Failure::WrongCode) => {
            let error = "That code was not accepted. Check the time on your phone and type the \
                         code the app shows now.";
            page(&app, &token, &client, Some(error)).await
        }
        Err(failure) => failed(failure),
    }
}

/// The key of a live link and its form (with `error` above the form), or the failure's page.
async fn page(app: &App, token: &str, client: &str, error: Option<&str>) -> Response {
    match app.otpd.show(token, client).await {
        Ok(shown) => {
            let qr = kron_common::qr::svg(&shown.uri, QR_MODULE).ok();
            let error = error.map(|e| {
                format!(
                    "{e} {} more wrong code{} and this link stops working.",
                    shown.attempts_left,
                    if shown.attempts_left == 1 { "" } else { "s" }
                )
            });
            let status = match error {
                Some(_) => StatusCode::UNPROCESSABLE_ENTITY,
                None => StatusCode::OK,
            };
            let html = pages::enrollment(&shown, qr.as_deref(), error.as_deref());
            (status, Html(html)).into_response()
        }
        Err(failure) => failed(failure),
    }
}

fn failed(failure: Failure) -> Response {
    match failure {
        Failure::Dead | Failure::WrongCode => neutral(),
        Failure::Busy => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Html(pages::busy())).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
        Failure::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, Html(pages::unavailable())).into_response()
        }
    }
}

/// A request that is not one of the page's forms.
fn bad_request() -> Response {
    (StatusCode::BAD_REQUEST, Html(pages::bad_request())).into_response()
}

/// The neutral page, for every link that cannot be used and every other path.
fn neutral() -> Response {
    (StatusCode::NOT_FOUND, Html(pages::dead())).into_response()
}

async fn not_found() -> Response {
    neutral()
}

/// The token, if it can be one (URL-safe base64 and a dot, bounded); anything else gets the
/// neutral page without asking otpd.
fn well_formed(token: Result<Path<String>, PathRejection>) -> Option<zeroize::Zeroizing<String>> {
    let Path(token) = token.ok()?;
    let token = zeroize::Zeroizing::new(token);
    let shape = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    (!token.is_empty() && token.len() <= kron_proto::MAX_LINK_TOKEN_LEN && token.bytes().all(shape))
        .then_some(token)
}

impl App {
    /// The browser's address, for otpd's rate limits: the TCP peer; behind the proxy (plain
    /// HTTP, loopback only), the last X-Forwarded-For entry, which is the address the proxy
    /// itself saw (nginx's `$proxy_add_x_forwarded_for` appends it).
    fn client(&self, peer: Peer, headers: &HeaderMap) -> String {
        let forwarded = || {
            let value = headers.get_all("x-forwarded-for").iter().next_back()?;
            let last = value.to_str().ok()?.rsplit(',').next()?.trim();
            last.parse::<IpAddr>().ok()
        };
        let address = match self.behind_proxy {
            true => forwarded().unwrap_or(peer.0.ip()),
            false => peer.0.ip(),
        };
        address.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Result<Path<String>, PathRejection> {
        Ok(Path(text.to_owned()))
    }

    #[test]
    fn only_token_shaped_paths_reach_otpd() {
        assert!(well_formed(path("YWxpY2U.abc-_DEF")).is_some());
        for bad in ["", "a/b", "a b", "<script>", "a%20b", &"a".repeat(401)] {
            assert!(well_formed(path(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn https_is_told_in_any_case() {
        for url in [
            "https://kron.example.com",
            "HTTPS://kron.example.com",
            "Https://x",
        ] {
            assert!(is_https(url), "{url}");
        }
        for url in [
            "http://localhost:8080",
            "HTTP://localhost",
            "https:/",
            "",
            "ht",
        ] {
            assert!(!is_https(url), "{url}");
        }
    }

    #[test]
    fn the_client_is_the_peer_unless_behind_the_proxy() {
        let peer = Peer("127.0.0.1:5000".parse().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.4"),
        );
        let direct = App {
            otpd: Otpd::new(String::new()),
            behind_proxy: false,
        };
        assert_eq!(direct.client(peer, &headers), "127.0.0.1");
        let proxied = App {
            otpd: Otpd::new(String::new()),
            behind_proxy: true,
        };
        assert_eq!(proxied.client(peer, &headers), "198.51.100.4");
        assert_eq!(proxied.client(peer, &HeaderMap::new()), "127.0.0.1");
        headers.insert("x-forwarded-for", HeaderValue::from_static("junk"));
        assert_eq!(proxied.client(peer, &headers), "127.0.0.1");
    }
}
