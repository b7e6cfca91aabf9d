//! What the webhook sink logs while its receiver is down, its queue overflows and
//! its shutdown deadline passes says what happened, and never carries the
//! `Authorization` value nor the URL's password. (Its own test binary: it installs
//! the process-wide log subscriber.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until, Receiver};
use master_events_events::catalog::DeleteBucket;
use master_events_events::Record;
use master_events_router::{Cursor, Router, RouterConfig, Sink, SinkInput};
use master_events_sink_webhook::{WebhookConfig, WebhookSink};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_say_what_happened_without_the_authorization_or_the_url_password() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .init();

    let receiver = Receiver::start_down().await;
    let url = receiver.url().replace("http://", "http://user:hunter2@");
    let mut config = WebhookConfig::to_url(url);
    config
        .headers
        .insert("Authorization".into(), "Bearer s3cret-token".into());
    config.queue_events = 3;
    config.retry_initial_ms = 10;
    config.retry_max_ms = 50;
    config.shutdown_timeout_ms = 200;
    let sink = WebhookSink::new(config).expect("valid");
    let counters = sink.counters();
    let router = Router::start(RouterConfig::default());
    let cancel = CancellationToken::new();
    let input = SinkInput::new(
        "webhook",
        router.subscribe(Cursor::Oldest),
        None,
        cancel.clone(),
    );
    let task = tokio::spawn(Box::new(sink).run(input));
    router
        .publish_batch(
            (0..10)
                .map(|i| {
                    Record::new(DeleteBucket {
                        bucket: format!("b{i}").into(),
                    })
                })
                .collect(),
        )
        .await
        .expect("published");
    wait_until("drops and failures", Duration::from_secs(30), || {
        let s = counters.snapshot();
        s.dropped_queue_full == 7 && s.failed_attempts >= 1
    })
    .await;
    router.shutdown().await;
    cancel.cancel();
    task.await.expect("the sink ends");

    let logs =
        String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(logs.contains("cannot deliver"), "{logs}");
    assert!(logs.contains("queue is full"), "{logs}");
    assert!(logs.contains("shutdown deadline"), "{logs}");
    assert!(!logs.contains("s3cret-token"), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
}
