//! The route table: every route the server answers, the name it is counted under
//! in the metrics, and who may call it, per method.
//!
//! Owns: [`ROUTES`] (one [`Route`] per path pattern), [`Access`], and what is
//! derived from the table: the route a path falls under ([`find`]), its metrics
//! label ([`label`]), and the list a 404 gives ([`listing`]).
//!
//! Promises:
//! - Deny by default. The server mounts exactly the routes of this table (a path
//!   in it with no handler stops the server at start), and its guard checks each
//!   request against the table before any handler runs: a method a route does not
//!   list is a `405`; a path the table does not hold needs the `read` role before
//!   it learns it is a `404`. A route is open only where the table says
//!   [`Access::Public`].
//! - One list: the metrics label and the 404's list of routes come from here, so a
//!   new route is counted under its own name and shown, never as "other".

use axum::http::Method;

use crate::auth::Role;

/// Who may call a route with a given method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials (`/health`, `/ready`, `/`).
    Public,
    /// A user or token with this role (a token's filter narrows what it reads).
    Role(Role),
    /// A user or token with this role and no filter: the route describes every
    /// event (`/cluster`, `/metrics`), so a scoped token is refused it.
    Unscoped(Role),
    /// Another node of the cluster (the cluster secret); with no secret
    /// configured, an `admin` user, or anyone when no users are. Never a token.
    Node,
}

/// One route of the table.
#[derive(Debug)]
pub struct Route {
    /// The path pattern, as mounted (`{*path}` matches the rest of a path).
    pub path: &'static str,
    /// Its name in the metrics (`master_events_http_requests_total{route}`).
    pub label: &'static str,
    /// Who may `GET` (and `HEAD`) it; `None`: the method is not allowed.
    pub get: Option<Access>,
    /// Who may `POST` to it; `None`: the method is not allowed.
    pub post: Option<Access>,
}

impl Route {
    /// Who may call this route with `method`; `None` when it does not take it.
    pub fn access(&self, method: &Method) -> Option<Access> {
        if method == Method::GET || method == Method::HEAD {
            self.get
        } else if method == Method::POST {
            self.post
        } else {
            None
        }
    }

    /// The methods it takes, for an `Allow` header.
    pub fn allow(&self) -> &'static str {
        match (self.get.is_some(), self.post.is_some()) {
            (true, true) => "GET, HEAD, POST",
            (true, false) => "GET, HEAD",
            (false, true) => "POST",
            (false, false) => "",
        }
    }
}

const fn route(
    path: &'static str,
    label: &'static str,
    get: Option<Access>,
    post: Option<Access>,
) -> Route {
    Route {
        path,
        label,
        get,
        post,
    }
}

const READ: Option<Access> = Some(Access::Role(Role::Read));

/// Every route of the server.
pub const ROUTES: &[Route] = &[
    route("/", "/", Some(Access::Public), None),
    route(
        "/diag/masterEvents",
        "/diag/masterEvents",
        READ,
        Some(Access::Role(Role::Write)),
    ),
    route("/schemas", "/schemas", READ, None),
    route("/schemas/", "/schemas", READ, None),
    route("/schemas/{*path}", "/schemas", READ, None),
    route(
        "/cluster",
        "/cluster",
        Some(Access::Unscoped(Role::Read)),
        None,
    ),
    route(
        "/cluster/forward",
        "/cluster/forward",
        None,
        Some(Access::Node),
    ),
    route(
        "/cluster/replicated",
        "/cluster/replicated",
        None,
        Some(Access::Node),
    ),
    route("/cluster/vote", "/cluster/vote", Some(Access::Node), None),
    route("/cluster/log", "/cluster/log", Some(Access::Node), None),
    route(
        "/metrics",
        "/metrics",
        Some(Access::Unscoped(Role::Read)),
        None,
    ),
    route("/health", "/health", Some(Access::Public), None),
    route("/ready", "/ready", Some(Access::Public), None),
    route("/ui", "/ui", READ, None),
    route("/ui/", "/ui", READ, None),
    route("/openapi.json", "/openapi.json", READ, None),
    route("/asyncapi.json", "/asyncapi.json", READ, None),
];

/// The route `path` falls under, if any.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| match r.path.strip_suffix("{*path}") {
            Some(prefix) => path.len() > prefix.len() && path.starts_with(prefix),
            None => r.path == path,
        })
}

/// The metrics label of `path`: its route's, or `other`.
pub fn label(path: &str) -> &'static str {
    find(path).map_or("other", |r| r.label)
}

/// The routes a user may call, for a 404's message (the node-to-node routes and
/// `/` left out), each once.
pub fn listing() -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in ROUTES {
        let user_route = [r.get, r.post].iter().flatten().any(|a| *a != Access::Node);
        let shown = if r.label == "/schemas" {
            "/schemas/"
        } else {
            r.label
        };
        if user_route && r.path != "/" && !names.contains(&shown) {
            names.push(shown);
        }
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_under_their_route_and_unknown_ones_under_none() {
        assert_eq!(
            find("/schemas/event/deleteBucket.json").map(|r| r.label),
            Some("/schemas")
        );
        assert_eq!(find("/schemas/").map(|r| r.path), Some("/schemas/"));
        assert_eq!(
            find("/cluster/log").map(|r| r.get),
            Some(Some(Access::Node))
        );
        assert!(find("/cluster/other").is_none());
        assert!(find("/diag/masterEvents/x").is_none());
        assert_eq!(label("/nope"), "other");
        assert_eq!(label("/ui/"), "/ui");
    }

    #[test]
    fn only_health_ready_and_the_redirect_are_public() {
        let public: Vec<&str> = ROUTES
            .iter()
            .filter(|r| [r.get, r.post].contains(&Some(Access::Public)))
            .map(|r| r.path)
            .collect();
        assert_eq!(public, ["/", "/health", "/ready"]);
        for r in ROUTES.iter().filter(|r| r.path.starts_with("/cluster/")) {
            for a in [r.get, r.post].into_iter().flatten() {
                assert_eq!(a, Access::Node, "{}", r.path);
            }
        }
    }

    #[test]
    fn the_404_lists_every_user_route_once() {
        assert_eq!(
            listing(),
            "/diag/masterEvents, /schemas/, /cluster, /metrics, /health, /ready, /ui, \
             /openapi.json, /asyncapi.json"
        );
    }

    #[test]
    fn a_method_a_route_does_not_list_is_not_allowed() {
        let health = find("/health").expect("a route");
        assert_eq!(health.access(&Method::POST), None);
        assert_eq!(health.access(&Method::HEAD), Some(Access::Public));
        assert_eq!(health.allow(), "GET, HEAD");
        let forward = find("/cluster/forward").expect("a route");
        assert_eq!(forward.access(&Method::GET), None);
        assert_eq!(forward.access(&Method::DELETE), None);
    }
}
