//! `GET /ui`: the live page — the events as they arrive, with filters, and the
//! progress of the current rebalance.
//!
//! Owns: the page ([`page`], the files of `crates/server/ui/`, built into the binary)
//! and the headers it is served with.
//!
//! Promises:
//! - One self-contained document: the style and the script are put inline when the
//!   page is first served (from `ui/style.css` and `ui/app.js`), so it works at
//!   `/ui` and `/ui/` alike and behind a path prefix, and it loads nothing from
//!   another origin (no CDN, no font, no image).
//! - The page reads the server with two `EventSource`s on `/diag/masterEvents`
//!   (Server-Sent Events): one for the events table, with the user's filters, one
//!   for the rebalance view. An `EventSource` cannot send headers: with
//!   authentication on, the browser's Basic-auth prompt for the page (which needs
//!   the read role, like the stream) provides the credentials — a user's, or a
//!   token as the password of the user `token` ([`crate::auth::TOKEN_USER`]), whose
//!   filter then applies to the page's streams; they never go in a URL.
//! - A Content-Security-Policy allows only the page's own script and style (by
//!   their SHA-256 hashes) and connections to this origin; the script puts received
//!   text in the page as text, never as HTML.
//! - What the page shows (see `ui/app.js`): the events newest first, capped at 500
//!   rows, with their counters in elements of fixed ids (`#event-count`, `#last-seq`,
//!   `#gap-count`, `#status`); gap frames as highlighted rows and a banner; for the
//!   current rebalance, `#moves-done` / `#moves-total` (distinct bucket/vbucket pairs
//!   named by `updateFastForwardMap` or `vbucketMoveStart` since `rebalanceStart`),
//!   `#moves-inflight`, and per mover node the moves in flight and done.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const INDEX_HTML: &str = include_str!("../ui/index.html");
const STYLE_CSS: &str = include_str!("../ui/style.css");
const APP_JS: &str = include_str!("../ui/app.js");

/// Where the style goes in `index.html`.
const STYLE_MARK: &str = "<!--STYLE-->";
/// Where the script goes in `index.html`.
const SCRIPT_MARK: &str = "<!--SCRIPT-->";

/// The page, assembled once, and its Content-Security-Policy.
struct Page {
    html: String,
    csp: HeaderValue,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = INDEX_HTML
        .replace(STYLE_MARK, &format!("<style>{STYLE_CSS}</style>"))
        .replace(SCRIPT_MARK, &format!("<script>{APP_JS}</script>"));
    let csp = format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(APP_JS),
        sha256_source(STYLE_CSS)
    );
    Page {
        html,
        // The policy is ASCII made here; should it ever not be a valid header, the
        // strictest policy is served instead (the page then shows unstyled).
        csp: HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
    }
});

/// A CSP source expression for an inline element with this content.
fn sha256_source(content: &str) -> String {
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(content.as_bytes()))
    )
}

/// `GET /ui` and `GET /ui/`: the live page (read role, checked by the route
/// table's guard).
pub(crate) async fn page() -> Response {
    let page = &*PAGE;
    let mut resp = (StatusCode::OK, page.html.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, page.csp.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_its_style_and_script_and_loads_nothing_else() {
        let html = &PAGE.html;
        assert!(!html.contains(STYLE_MARK) && !html.contains(SCRIPT_MARK));
        assert!(html.contains(&format!("<script>{APP_JS}</script>")));
        assert!(html.contains(&format!("<style>{STYLE_CSS}</style>")));
        assert!(!html.contains("<script src"), "no external script");
        assert!(!html.contains("https://") && !html.contains("http://"));
        assert!(APP_JS.contains("new EventSource("));
        assert!(APP_JS.contains("/diag/masterEvents"));
    }

    #[test]
    fn the_page_has_the_ids_tests_and_users_read() {
        for id in [
            "status",
            "event-count",
            "last-seq",
            "gap-count",
            "moves-done",
            "moves-total",
            "moves-inflight",
            "event-rows",
        ] {
            assert!(
                INDEX_HTML.contains(&format!("id=\"{id}\"")),
                "index.html lacks #{id}"
            );
        }
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let csp = PAGE.csp.to_str().unwrap_or_default().to_owned();
        assert!(csp.contains(&sha256_source(APP_JS)), "{csp}");
        assert!(csp.contains(&sha256_source(STYLE_CSS)), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
}
