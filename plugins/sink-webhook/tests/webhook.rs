//! The `webhook` sink against an in-test receiver: NDJSON batches with headers, a
//! receiver that goes down and comes back, a tiny queue that counts its drops,
//! retries, refusals and the shutdown deadline.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Receiver};
use master_events_events::catalog::DeleteBucket;
use master_events_events::Record;
use master_events_router::{Chunk, Cursor, Router, RouterConfig, Sink, SinkInput};
use master_events_sink_webhook::{Counters, WebhookConfig, WebhookSink};
use master_events_sinktest::{Observed, Target};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the receiver stays down in the outage test: 2 s, or
/// `MASTER_EVENTS_TEST_WEBHOOK_DOWN_SECS` (2 to 5).
fn down_time() -> Duration {
    let secs = std::env::var("MASTER_EVENTS_TEST_WEBHOOK_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(2)
        .clamp(2, 5);
    Duration::from_secs(secs)
}

const WAIT: Duration = Duration::from_secs(30);

fn event(i: u64) -> Record {
    Record::new(DeleteBucket {
        bucket: format!("b{i}").into(),
    })
}

struct Running {
    router: Router,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn start(config: WebhookConfig) -> Running {
        let router = Router::start(RouterConfig::default());
        let sink = WebhookSink::new(config)
            .expect("valid config")
            .with_router(router.clone());
        let counters = sink.counters();
        let cancel = CancellationToken::new();
        let input = SinkInput::new(
            "webhook",
            router.subscribe(Cursor::Oldest),
            None,
            cancel.clone(),
        );
        let task = tokio::spawn(Box::new(sink).run(input));
        Running {
            router,
            counters,
            cancel,
            task,
        }
    }

    async fn publish(&self, from: u64, n: u64) {
        self.router
            .publish_batch((from..from + n).map(event).collect())
            .await
            .expect("published");
    }

    async fn stop(self) {
        self.router.shutdown().await;
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the sink stops in time")
            .expect("the sink task ends normally");
    }
}

fn quick_retries(url: String) -> WebhookConfig {
    let mut config = WebhookConfig::to_url(url);
    config.linger_ms = 5;
    config.retry_initial_ms = 20;
    config.retry_max_ms = 300;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_ndjson_posts_of_the_exact_lines_with_the_configured_headers() {
    let receiver = Receiver::start().await;
    let mut config = quick_retries(receiver.url());
    config
        .headers
        .insert("Authorization".into(), "Bearer s3cret".into());
    config.headers.insert("X-Team".into(), "ops".into());
    config.batch_max_events = 7;
    let running = Running::start(config);
    running.publish(0, 50).await;
    let mut lines = Vec::new();
    let mut sub = running.router.subscribe(Cursor::Oldest);
    while let Some(Chunk::Events(b)) = sub.try_recv() {
        lines.extend_from_slice(&b.bytes());
    }
    wait_until("all 50 received", WAIT, || receiver.seqs().len() == 50).await;
    running.stop().await;
    assert_eq!(receiver.received(), lines, "the exact wire lines, in order");
    let seen = receiver.seen();
    assert!(
        seen.len() >= 8,
        "batches of at most 7: {} requests",
        seen.len()
    );
    for s in &seen {
        assert_eq!(s.content_type.as_deref(), Some("application/x-ndjson"));
        assert_eq!(s.authorization.as_deref(), Some("Bearer s3cret"));
        assert_eq!(s.custom.as_deref(), Some("ops"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_few_seconds_loses_nothing_within_the_queue_bound() {
    let receiver = Receiver::start().await;
    let running = Running::start(quick_retries(receiver.url()));
    running.publish(0, 100).await;
    wait_until("the first 100 received", WAIT, || {
        receiver.seqs().len() == 100
    })
    .await;

    receiver.down();
    let went_down = Instant::now();
    for i in 0..8 {
        running.publish(100 + i * 50, 50).await;
    }
    let counters = Arc::clone(&running.counters);
    wait_until("the sink has seen the receiver fail", WAIT, || {
        counters.snapshot().failed_attempts >= 2
    })
    .await;
    // The outage lasts its configured time (this is the scenario, not a wait for
    // a condition).
    tokio::time::sleep(down_time().saturating_sub(went_down.elapsed())).await;
    receiver.up().await;

    wait_until("all 500 received", WAIT, || receiver.seqs().len() >= 500).await;
    running.stop().await;
    assert_eq!(
        receiver.seqs(),
        (1..=500).collect::<Vec<_>>(),
        "in order, once each"
    );
    let stats = counters.snapshot();
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    assert_eq!(stats.delivered, 500);
    assert!(stats.failed_attempts >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_queue_counts_the_drops_past_its_bound_and_reports_them_as_a_gap() {
    let receiver = Receiver::start_down().await;
    let mut config = quick_retries(receiver.url());
    config.queue_events = 5;
    let running = Running::start(config);
    running.publish(0, 50).await;
    let counters = Arc::clone(&running.counters);
    wait_until("45 drops counted", WAIT, || {
        counters.snapshot().dropped_queue_full == 45
    })
    .await;
    receiver.up().await;
    wait_until("the 5 queued events and the gap received", WAIT, || {
        receiver.observed().len() == 6
    })
    .await;
    running.stop().await;
    let mut expected: Vec<Observed> = (1..=5)
        .map(|seq| Observed::Event {
            seq,
            event_type: "deleteBucket".into(),
        })
        .collect();
    expected.push(Observed::Gap {
        from_seq: 6,
        to_seq: 50,
    });
    assert_eq!(receiver.observed(), expected);
    let stats = counters.snapshot();
    assert_eq!((stats.delivered, stats.dropped_queue_full), (5, 45));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_until_it_succeeds() {
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let running = Running::start(quick_retries(receiver.url()));
    running.publish(0, 10).await;
    let counters = Arc::clone(&running.counters);
    wait_until("two failed attempts", WAIT, || {
        counters.snapshot().failed_attempts >= 2
    })
    .await;
    receiver.answer(200);
    wait_until("all 10 received", WAIT, || receiver.seqs().len() == 10).await;
    running.stop().await;
    assert_eq!(receiver.seqs(), (1..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_with_a_4xx_is_dropped_and_counted_not_retried() {
    let receiver = Receiver::start().await;
    receiver.answer(400);
    let running = Running::start(quick_retries(receiver.url()));
    running.publish(0, 10).await;
    let counters = Arc::clone(&running.counters);
    wait_until("10 rejected", WAIT, || {
        counters.snapshot().dropped_rejected == 10
    })
    .await;
    receiver.answer(200);
    running.publish(10, 1).await;
    wait_until("the next event received", WAIT, || receiver.seqs() == [11]).await;
    running.stop().await;
    assert_eq!(counters.snapshot().failed_attempts, 0, "no retry of a 4xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_is_queued_then_gives_up_at_its_deadline() {
    // Up: shutdown delivers everything queued, even with a long linger.
    let receiver = Receiver::start().await;
    let mut config = quick_retries(receiver.url());
    config.linger_ms = 60_000;
    config.batch_max_events = 1000;
    let running = Running::start(config);
    running.publish(0, 20).await;
    running.stop().await;
    assert_eq!(receiver.seqs(), (1..=20).collect::<Vec<_>>());

    // Down: shutdown gives up after shutdown_timeout_ms and counts the rest.
    let receiver = Receiver::start_down().await;
    let mut config = quick_retries(receiver.url());
    config.shutdown_timeout_ms = 300;
    let running = Running::start(config);
    running.publish(0, 20).await;
    let counters = Arc::clone(&running.counters);
    wait_until("a failed attempt", WAIT, || {
        counters.snapshot().failed_attempts >= 1
    })
    .await;
    running.stop().await;
    assert_eq!(counters.snapshot().dropped_at_shutdown, 20);
}

#[test]
fn secrets_stay_out_of_debug_output_and_config_errors() {
    let mut config = WebhookConfig::to_url("http://user:hunter2@127.0.0.1:1/x");
    config
        .headers
        .insert("Authorization".into(), "Bearer s3cret".into());
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(shown.contains("Authorization"), "{shown}");

    config
        .headers
        .insert("Authorization".into(), "Bearer s3cret\nX-Evil: 1".into());
    let err = config.check().expect_err("an invalid header value");
    let message = err.to_string();
    assert!(message.contains("Authorization"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");

    let sink = WebhookSink::new(WebhookConfig {
        headers: [("Authorization".to_owned(), "Bearer s3cret".to_owned())].into(),
        ..WebhookConfig::to_url("http://u:hunter2@127.0.0.1:1/")
    })
    .expect("valid");
    let shown = format!("{sink:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn a_bad_url_or_a_zero_bound_is_refused_at_load() {
    for (key_values, expect) in [
        ("url = \"not a url\"", "url"),
        ("url = \"ftp://example.invalid/\"", "https://"),
        (
            "url = \"http://127.0.0.1:1/\"\nqueue_events = 0",
            "queue_events",
        ),
        (
            "url = \"http://127.0.0.1:1/\"\nretry_initial_ms = 500\nretry_max_ms = 100",
            "retry_max_ms",
        ),
    ] {
        let text = format!("[[sinks]]\ntype = \"webhook\"\n{key_values}\n");
        let err = master_events_router::load_config(&text).expect_err("refused");
        assert!(err.to_string().contains(expect), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sinks_state_follows_its_receiver_retrying_then_failing_then_ok() {
    use master_events_router::{SinkHealth, SinkState};
    let receiver = Receiver::start().await;
    let router = Router::start(RouterConfig::default());
    let health = Arc::new(SinkHealth::new("webhook", 0));
    let sink = WebhookSink::new(quick_retries(receiver.url()))
        .expect("valid config")
        .with_health(Arc::clone(&health));
    let cancel = CancellationToken::new();
    let input = SinkInput::new(
        "webhook",
        router.subscribe(Cursor::Oldest),
        None,
        cancel.clone(),
    );
    let task = tokio::spawn(Box::new(sink).run(input));
    let publish = |from: u64| {
        let router = router.clone();
        async move {
            router
                .publish_batch((from..from + 5).map(event).collect())
                .await
                .expect("published")
        }
    };
    receiver.down();
    publish(0).await;
    wait_until("retrying while the receiver is down", WAIT, || {
        health.state() == SinkState::Retrying
    })
    .await;
    let reason = health.snapshot().reason.unwrap_or_default();
    assert!(reason.contains("127.0.0.1"), "{reason}");
    receiver.up().await;
    wait_until("ok once a batch is delivered", WAIT, || {
        health.state() == SinkState::Ok
    })
    .await;
    receiver.answer(400);
    publish(5).await;
    wait_until("failing when the receiver refuses a batch", WAIT, || {
        health.state() == SinkState::Failing
    })
    .await;
    router.shutdown().await;
    cancel.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudevents_format_posts_batches_of_structured_cloudevents_in_seq_order() {
    let receiver = Receiver::start().await;
    let mut config = quick_retries(receiver.url());
    config.format = master_events_sink_webhook::WebhookFormat::Cloudevents;
    config.schema_base_url = Some("https://events.example:9443/".into());
    config.batch_max_events = 7;
    let running = Running::start(config);
    running.publish(0, 20).await;
    let history = running.router.history().to_string();
    wait_until("every batch received", WAIT, || {
        receiver.seen().len() >= 3 && {
            let body = receiver.received();
            serde_json::Deserializer::from_slice(&body)
                .into_iter::<Vec<serde_json::Value>>()
                .filter_map(Result::ok)
                .map(|b| b.len())
                .sum::<usize>()
                == 20
        }
    })
    .await;
    running.stop().await;
    for s in receiver.seen() {
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/cloudevents-batch+json")
        );
    }
    let body = receiver.received();
    let events: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&body)
        .into_iter::<Vec<serde_json::Value>>()
        .flat_map(|b| b.expect("each body is a JSON array"))
        .collect();
    assert_eq!(events.len(), 20);
    let mut previous = String::new();
    for e in &events {
        let seq = e["data"]["seq"].as_u64().expect("the line is the data");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], format!("{history}:{seq}"));
        assert_eq!(e["type"], "io.master-events.event.deleteBucket");
        assert_eq!(
            e["dataschema"],
            "https://events.example:9443/schemas/event/deleteBucket.json"
        );
        let sequence = e["sequence"].as_str().expect("a sequence").to_owned();
        assert!(sequence > previous, "{sequence} after {previous}");
        previous = sequence;
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
}

#[test]
fn the_cloudevents_format_without_a_schema_base_url_is_refused_saying_what_to_set() {
    let mut config = WebhookConfig::to_url("http://127.0.0.1:1/x");
    config.format = master_events_sink_webhook::WebhookFormat::Cloudevents;
    let err = config.check().expect_err("refused").to_string();
    assert!(err.contains("schema_base_url"), "{err}");
    config.schema_base_url = Some("ftp://x".into());
    let err = config.check().expect_err("refused").to_string();
    assert!(err.contains("http:// or https://"), "{err}");
}
