//! Ingest over real TCP: a body whose headers say it cannot be read as UTF-8 NDJSON
//! (a `Content-Encoding` other than identity, a `charset` other than utf-8) is
//! refused with 415 and a message, and nothing of it is taken. Each test starts its
//! own server on a free loopback port.

mod common;

use std::time::Duration;

use serde_json::Value;
use tokio::time::timeout;

use common::TestServer;

const T: Duration = Duration::from_secs(20);

async fn start() -> TestServer {
    // ServerConfig's default listens on 127.0.0.1:0, a free port.
    TestServer::builder().start().await
}

/// POSTs `body` with `headers`; the status and the reply (JSON when it is).
async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/diag/masterEvents"))
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = timeout(T, req.send())
        .await
        .expect("answered in time")
        .expect("request");
    let status = resp.status().as_u16();
    let text = timeout(T, resp.text())
        .await
        .expect("body in time")
        .unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const LINE: &str = "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n";

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[tokio::test]
async fn a_gzip_content_encoding_is_refused_with_415_and_nothing_is_taken() {
    let s = start().await;
    for encoding in ["gzip", "deflate, gzip", "identity, br"] {
        let (status, reply) = post(
            &s.url,
            &[
                ("content-type", "application/x-ndjson"),
                ("content-encoding", encoding),
            ],
            LINE.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, 415, "{encoding}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains("Content-Encoding"), "{reply}");
        assert!(error.contains("uncompressed"), "{reply}");
    }
    assert_eq!(s.router.last_seq(), 0, "nothing was taken");
    // identity is no encoding at all.
    let (status, reply) = post(
        &s.url,
        &[
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "identity"),
        ],
        LINE.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn a_charset_other_than_utf8_is_refused_with_415() {
    let s = start().await;
    for content_type in [
        "application/x-ndjson; charset=utf-16",
        "application/json; charset=\"UTF-16LE\"",
        "text/plain;charset=iso-8859-1",
    ] {
        let (status, reply) = post(&s.url, &[("content-type", content_type)], utf16le(LINE)).await;
        assert_eq!(status, 415, "{content_type}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains("charset"), "{reply}");
        assert!(error.contains("UTF-8"), "{reply}");
    }
    assert_eq!(s.router.last_seq(), 0, "nothing was taken");
    for content_type in [
        "application/x-ndjson; charset=utf-8",
        "application/x-ndjson; charset=\"UTF-8\"",
    ] {
        let (status, reply) = post(
            &s.url,
            &[("content-type", content_type)],
            LINE.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, 200, "{content_type}: {reply}");
    }
}
