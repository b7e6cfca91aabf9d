//! Scoped bearer tokens over real HTTP: a token's filter narrows every stream it
//! reads (NDJSON, SSE, `o=1`, `since=`, live), its role is enforced, an expired one
//! is refused saying so, it is never taken for the cluster secret, and Basic users
//! work beside tokens. Each test starts its own server on a free loopback port.

mod common;

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use master_events_events::{catalog::*, Record};
use master_events_router::Router;
use master_events_server::auth::Role;
use master_events_server::tokens::{NewToken, TokenEntry, Tokens};
use serde_json::Value;
use tokio::time::timeout;

use common::TestServer;

const T: Duration = Duration::from_secs(20);

/// A token made as `token create` makes it (fixed bytes: tests only).
fn token(
    seed: u8,
    name: &str,
    role: Role,
    filter: Option<&str>,
    expires: Option<SystemTime>,
) -> NewToken {
    NewToken::new([seed; 32], name, role, filter, expires).expect("a valid token")
}

async fn start(users: &str, tokens: &[&NewToken], secret: Option<&str>) -> TestServer {
    let mut users = common::users(users);
    let entries: Vec<TokenEntry> = tokens.iter().map(|t| t.entry.clone()).collect();
    users.set_tokens(Tokens::from_entries(&entries).expect("tokens"));
    if let Some(secret) = secret {
        users.set_cluster_secret(secret);
    }
    TestServer::builder()
        .archive(4096)
        .with_users(users)
        .start()
        .await
}

fn move_done(vb: u16, bucket: &str) -> Record {
    Record::new(VbucketMoveDone {
        vbucket: vb,
        bucket: bucket.into(),
    })
}

/// Publishes one event per `(vbucket, bucket)`.
async fn publish(router: &Router, events: &[(u16, &str)]) {
    let recs = events.iter().map(|(vb, b)| move_done(*vb, b)).collect();
    router.publish_batch(recs).await.expect("published");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// `GET /diag/masterEvents{query}` with a bearer token (and `accept`, if any).
async fn get(url: &str, query: &str, bearer: &str, accept: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .get(format!("{url}/diag/masterEvents{query}"))
        .bearer_auth(bearer);
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    timeout(T, req.send())
        .await
        .expect("answered in time")
        .expect("request")
}

/// The `(seq, bucket)` of every event of a whole NDJSON body.
async fn events_of(resp: reqwest::Response) -> Vec<(u64, String)> {
    assert_eq!(resp.status(), 200);
    let text = timeout(T, resp.text()).await.expect("ends").expect("body");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .filter(|v| v["type"] == "vbucketMoveDone")
        .map(|v| {
            (
                v["seq"].as_u64().expect("seq"),
                v["bucket"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// b1 at seqs 1, 3, 5; b2 at 2, 4, 6.
const MIXED: [(u16, &str); 6] = [
    (1, "b1"),
    (2, "b2"),
    (3, "b1"),
    (4, "b2"),
    (5, "b1"),
    (6, "b2"),
];

fn b1(seqs: &[u64]) -> Vec<(u64, String)> {
    seqs.iter().map(|s| (*s, "b1".to_owned())).collect()
}

#[tokio::test]
async fn a_token_scoped_to_a_bucket_sees_only_that_bucket_whatever_the_stream_asks() {
    let t = token(1, "b1-reader", Role::Read, Some("bucket=b1"), None);
    let s = start("ops:pw:admin", &[&t], None).await;
    publish(&s.router, &MIXED).await;
    let bearer = t.token();

    // o=1: the archive, once; asking for everything or for b1 and b2 alike.
    for query in ["?o=1", "?o=1&bucket=b1,b2", "?o=1&type=vbucketMoveDone"] {
        let resp = get(&s.url, query, bearer, None).await;
        assert_eq!(
            resp.headers()
                .get("master-events-token-filter")
                .and_then(|v| v.to_str().ok()),
            Some("on"),
            "{query}"
        );
        assert_eq!(events_of(resp).await, b1(&[1, 3, 5]), "{query}");
    }
    // since=: a resume is narrowed too.
    let resp = get(&s.url, "?o=1&since=2", bearer, None).await;
    assert_eq!(events_of(resp).await, b1(&[3, 5]));
    // A vbucket only b2 has: the intersection may be empty, the stream is.
    let resp = get(&s.url, "?o=1&vbucket=2", bearer, None).await;
    assert_eq!(events_of(resp).await, Vec::new());

    // Another bucket only: 400, the scope stays closed.
    for query in ["?o=1&bucket=b2", "?bucket=b2", "?since=1&bucket=b2,b3"] {
        let resp = get(&s.url, query, bearer, None).await;
        assert_eq!(resp.status(), 400, "{query}");
        let body = resp.text().await.expect("body");
        assert!(
            body.contains("b1-reader") && body.contains("excludes all of them"),
            "{body}"
        );
        assert!(!body.contains(bearer), "{body}");
    }

    // SSE, once.
    let resp = get(&s.url, "?o=1", bearer, Some("text/event-stream")).await;
    assert_eq!(resp.status(), 200);
    let text = timeout(T, resp.text()).await.expect("ends").expect("body");
    let buckets: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).expect("JSON"))
        .filter(|v| v["type"] == "vbucketMoveDone")
        .map(|v| {
            (
                v["seq"].as_u64().unwrap_or(0),
                v["bucket"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(buckets, b1(&[1, 3, 5]), "{text}");

    // Live NDJSON asking for everything: the archive's b1 events, then, of what
    // arrives, b1's only.
    let resp = get(&s.url, "?heartbeat=0", bearer, None).await;
    assert_eq!(resp.status(), 200);
    let mut body = Box::pin(resp.bytes_stream());
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    let mut published = false;
    while seen.len() < 5 {
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let v: Value = serde_json::from_slice(&line).expect("JSON");
            seen.push((
                v["seq"].as_u64().unwrap_or(0),
                v["bucket"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        if seen.len() == 3 && !published {
            published = true;
            publish(&s.router, &[(7, "b2"), (8, "b1"), (9, "b2"), (10, "b1")]).await;
        }
        if seen.len() >= 5 {
            break;
        }
        match timeout(T, body.next()).await.expect("stream stalled") {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            other => panic!("the stream ended: {other:?}"),
        }
    }
    assert_eq!(seen, b1(&[1, 3, 5, 8, 10]));
}

#[tokio::test]
async fn a_token_with_types_and_a_bucket_is_refused_another_type() {
    let t = token(
        2,
        "rebalances",
        Role::Read,
        Some("type=rebalanceStart,rebalanceEnd&bucket=x"),
        None,
    );
    let s = start("", &[&t], None).await;
    publish(&s.router, &[(1, "x")]).await;
    let resp = get(&s.url, "?o=1&type=vbucketMoveDone", t.token(), None).await;
    assert_eq!(resp.status(), 400);
    let resp = get(&s.url, "?o=1", t.token(), None).await;
    assert_eq!(events_of(resp).await, Vec::new());
}

#[tokio::test]
async fn a_read_token_cannot_post_and_a_write_token_can() {
    let read = token(3, "reader", Role::Read, None, None);
    let write = token(4, "writer", Role::Write, None, None);
    let s = start("", &[&read, &write], None).await;
    let line = "{\"type\":\"vbucketMoveDone\",\"vbucket\":1,\"bucket\":\"b1\"}\n";
    let post = |bearer: &str| {
        client()
            .post(format!("{}/diag/masterEvents", s.url))
            .header("content-type", "application/x-ndjson")
            .bearer_auth(bearer)
            .body(line)
            .send()
    };
    let resp = timeout(T, post(read.token()))
        .await
        .expect("in time")
        .expect("request");
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.expect("body");
    assert!(
        body.contains("token \\\"reader\\\" has role read"),
        "{body}"
    );
    let resp = timeout(T, post(write.token()))
        .await
        .expect("in time")
        .expect("request");
    assert_eq!(resp.status(), 200);
    // A write token does not read.
    let resp = get(&s.url, "?o=1", write.token(), None).await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn an_expired_token_gets_401_saying_it_expired() {
    let expired = token(
        5,
        "old-ci",
        Role::Admin,
        None,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
    );
    let s = start("ops:pw:admin", &[&expired], None).await;
    for path in ["/diag/masterEvents?o=1", "/cluster", "/ui"] {
        let resp = timeout(
            T,
            client()
                .get(format!("{}{path}", s.url))
                .bearer_auth(expired.token())
                .send(),
        )
        .await
        .expect("in time")
        .expect("request");
        assert_eq!(resp.status(), 401, "{path}");
        assert!(resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|w| w.starts_with("Bearer") && w.contains("invalid_token")));
        let body = resp.text().await.expect("body");
        assert!(
            body.contains("token \\\"old-ci\\\" expired at 2001-09-09T01:46:40Z"),
            "{body}"
        );
        assert!(!body.contains(expired.token()));
    }
}

#[tokio::test]
async fn a_token_is_never_taken_for_the_cluster_secret() {
    let admin = token(6, "root", Role::Admin, None, None);
    for secret in [Some("the-cluster-secret"), None] {
        let s = start("", &[&admin], secret).await;
        for (method, path) in [
            ("POST", "/cluster/forward"),
            ("POST", "/cluster/replicated"),
            ("GET", "/cluster/vote"),
            ("GET", "/cluster/log"),
        ] {
            let req = match method {
                "GET" => client().get(format!("{}{path}", s.url)),
                _ => client().post(format!("{}{path}", s.url)).body(""),
            };
            let resp = timeout(T, req.bearer_auth(admin.token()).send())
                .await
                .expect("in time")
                .expect("request");
            assert_eq!(resp.status(), 401, "{method} {path} (secret {secret:?})");
        }
        // The admin token is good for the rest.
        let resp = get(&s.url, "?o=1", admin.token(), None).await;
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn a_scoped_token_is_refused_cluster_and_metrics_an_unscoped_one_is_not() {
    let scoped = token(7, "scoped", Role::Read, Some("bucket=b1"), None);
    let whole = token(8, "whole", Role::Read, None, None);
    let s = start("", &[&scoped, &whole], None).await;
    for path in ["/cluster", "/metrics"] {
        for (t, status) in [(&scoped, 403), (&whole, 200)] {
            let resp = timeout(
                T,
                client()
                    .get(format!("{}{path}", s.url))
                    .bearer_auth(t.token())
                    .send(),
            )
            .await
            .expect("in time")
            .expect("request");
            assert_eq!(resp.status(), status, "{path} with {}", t.entry.name);
        }
    }
    for path in ["/ui", "/schemas/"] {
        let resp = timeout(
            T,
            client()
                .get(format!("{}{path}", s.url))
                .bearer_auth(scoped.token())
                .send(),
        )
        .await
        .expect("in time")
        .expect("request");
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn basic_users_still_work_beside_tokens() {
    let t = token(9, "b1", Role::Read, Some("bucket=b1"), None);
    let s = start("ops:pw:read", &[&t], None).await;
    publish(&s.router, &MIXED).await;
    let resp = timeout(
        T,
        client()
            .get(format!("{}/diag/masterEvents?o=1", s.url))
            .basic_auth("ops", Some("pw"))
            .send(),
    )
    .await
    .expect("in time")
    .expect("request");
    assert!(resp.headers().get("master-events-token-filter").is_none());
    assert_eq!(events_of(resp).await.len(), 6, "a user is not narrowed");
    for auth in [
        ("ops", "wrong"),
        ("b1", t.token()), // a token is not a password
    ] {
        let resp = timeout(
            T,
            client()
                .get(format!("{}/diag/masterEvents?o=1", s.url))
                .basic_auth(auth.0, Some(auth.1))
                .send(),
        )
        .await
        .expect("in time")
        .expect("request");
        assert_eq!(resp.status(), 401);
    }
    let resp = get(&s.url, "?o=1", "met_not-a-token", None).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn tokens_alone_close_a_server() {
    let t = token(10, "only", Role::Read, None, None);
    let s = start("", &[&t], None).await;
    let resp = timeout(
        T,
        client()
            .get(format!("{}/diag/masterEvents?o=1", s.url))
            .send(),
    )
    .await
    .expect("in time")
    .expect("request");
    assert_eq!(resp.status(), 401);
    let resp = get(&s.url, "?o=1", t.token(), None).await;
    assert_eq!(resp.status(), 200);
}
