//! The headers every response carries, pages and errors alike: a Content-Security-Policy that
//! allows the page's one inline style (by its hash) and nothing else (no script, no image, no
//! font, no frame, forms only to this origin), no referrer, no caching, no sniffing, no framing,
//! and HSTS when browsers reach the page over TLS.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use std::sync::Arc;

/// The header set, built once.
#[derive(Debug, Clone)]
pub struct SecurityHeaders(Vec<(HeaderName, HeaderValue)>);

/// A year: the usual HSTS lifetime.
const HSTS: &str = "max-age=31536000";

impl SecurityHeaders {
    /// `style_hash` is the CSP source of the inline style ("'sha256-...'"); `hsts` whether
    /// browsers see this page over TLS (kron-web's own, or its proxy's).
    pub fn new(style_hash: &str, hsts: bool) -> SecurityHeaders {
        let csp = format!(
            "default-src 'none'; style-src {style_hash}; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        let mut list = vec![
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::X_FRAME_OPTIONS, "DENY".to_owned()),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin".to_owned(),
            ),
            (
                HeaderName::from_static("x-robots-tag"),
                "noindex, nofollow".to_owned(),
            ),
        ];
        if hsts {
            list.push((header::STRICT_TRANSPORT_SECURITY, HSTS.to_owned()));
        }
        SecurityHeaders(
            list.into_iter()
                .filter_map(|(name, value)| Some((name, HeaderValue::from_str(&value).ok()?)))
                .collect(),
        )
    }
}

/// The middleware: sets every header on `response`.
pub async fn secure(
    State(headers): State<Arc<SecurityHeaders>>,
    mut response: Response,
) -> Response {
    let map = response.headers_mut();
    for (name, value) in &headers.0 {
        map.insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_only_over_tls() {
        let names = |h: SecurityHeaders| h.0.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert!(
            names(SecurityHeaders::new("'sha256-x'", true))
                .contains(&header::STRICT_TRANSPORT_SECURITY)
        );
        assert!(
            !names(SecurityHeaders::new("'sha256-x'", false))
                .contains(&header::STRICT_TRANSPORT_SECURITY)
        );
        let all = SecurityHeaders::new("'sha256-x'", false);
        let csp = &all.0[0].1;
        assert_eq!(
            csp.to_str().ok(),
            Some(
                "default-src 'none'; style-src 'sha256-x'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'"
            )
        );
    }
}
