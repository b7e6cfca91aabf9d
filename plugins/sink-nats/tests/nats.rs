//! The `nats` sink against a real `nats-server`: every event in order on its type's
//! subject, prefix and filter, reconnecting after a server restart, a shutdown that
//! never hangs on a frozen server, and credentials that stay secret.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{event, seqs, wait_until, NatsTarget, Running, WAIT};
use master_events_events::Record;
use master_events_router::{Cursor, Filter, Router, RouterConfig, Sink, SinkInput, SinkState};
use master_events_sink_nats::{NatsConfig, NatsSink};
use master_events_sinktest::Observed;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_in_order_on_the_subject_of_its_type() {
    let target = NatsTarget::start().await;
    let running = Running::start(NatsConfig::to_server(target.server.url()), None);
    for batch in 0..6 {
        running.publish(batch * 500, 500).await;
    }
    wait_until("3000 received", || target.messages().len() >= 3000).await;
    running.stop().await;
    let messages = target.messages();
    assert_eq!(seqs(&messages), (1..=3000).collect::<Vec<_>>());
    for (subject, observed) in &messages {
        let Observed::Event { event_type, .. } = observed else {
            panic!("no gap expected: {observed:?}");
        };
        assert_eq!(subject, &format!("master_events.{event_type}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_prefix_and_the_filter_are_honoured() {
    let target = NatsTarget::with_prefix("ops.events").await;
    let mut config = NatsConfig::to_server(target.server.url());
    config.subject_prefix = "ops.events".into();
    let filter: Filter = toml::from_str("type = [\"deleteBucket\"]").expect("filter");
    let running = Running::start(config, Some(filter));
    running.publish(0, 100).await;
    running.stop().await;
    wait_until("50 received", || target.messages().len() >= 50).await;
    let messages = target.messages();
    assert_eq!(seqs(&messages), (1..=100).step_by(2).collect::<Vec<_>>());
    assert!(messages
        .iter()
        .all(|(subject, _)| subject == "ops.events.deleteBucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_reconnects_after_the_server_restarts() {
    let mut target = NatsTarget::start().await;
    let running = Running::start(NatsConfig::to_server(target.server.url()), None);
    running.publish(0, 10).await;
    wait_until("the first 10 received", || target.messages().len() >= 10).await;

    let restarted = Instant::now();
    target.server.restart();
    target.resubscribe().await;
    // Core NATS is at-most-once: what the client writes before it notices the lost
    // connection is gone. The sink's health shows when it is connected again: `ok`,
    // entered after the restart.
    wait_until("the sink reports it reconnected", || {
        let now = running.health.snapshot();
        now.state == SinkState::Ok && now.for_secs < restarted.elapsed().as_secs_f64()
    })
    .await;
    running.publish(10, 10).await;
    wait_until("the next 10 received after the restart", || {
        seqs(&target.messages()).contains(&20)
    })
    .await;
    running.stop().await;
    let after = seqs(&target.messages());
    assert_eq!(
        after,
        (11..=20).collect::<Vec<_>>(),
        "in order after reconnecting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_hang_on_a_frozen_server() {
    let target = NatsTarget::start().await;
    let mut config = NatsConfig::to_server(target.server.url());
    config.shutdown_timeout_ms = 300;
    let running = Running::start(config, None);
    running.publish(0, 10).await;
    wait_until("the first 10 received", || target.messages().len() >= 10).await;
    target.server.freeze();
    running.publish(10, 2000).await;
    let took = running.stop().await;
    target.server.thaw();
    assert!(took < WAIT, "stopped in {took:?}");
}

#[test]
fn credentials_stay_secret_and_never_go_in_a_url() {
    let mut config = NatsConfig::to_server("nats://127.0.0.1:4222");
    config.user = Some("events".into());
    config.password = Some("hunter2".into());
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(NatsSink::new(config.clone()).is_ok());
    let shown = format!("{:?}", NatsSink::new(config).expect("valid"));
    assert!(!shown.contains("hunter2"), "{shown}");

    for (keys, expect) in [
        (
            "servers = [\"nats://u:hunter2@127.0.0.1:4222\"]",
            "must not carry credentials",
        ),
        (
            "servers = [\"nats://s3cret-token@127.0.0.1:4222\"]",
            "must not carry credentials",
        ),
        ("user = \"events\"", "user and password go together"),
        ("subject_prefix = \"a..b\"", "subject_prefix"),
        ("subject_prefix = \"a.>\"", "subject_prefix"),
        ("servers = [\"http://127.0.0.1:4222\"]", "servers"),
        ("max_pending = 0", "max_pending"),
    ] {
        let text = format!("[[sinks]]\ntype = \"nats\"\n{keys}\n");
        let err = master_events_router::load_config(&text).expect_err(keys);
        let message = err.to_string();
        assert!(message.contains(expect), "{keys}: {message}");
        assert!(
            !message.contains("hunter2") && !message.contains("s3cret-token"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_count_what_was_published() {
    let target = NatsTarget::start().await;
    let running = Running::start(NatsConfig::to_server(target.server.url()), None);
    running.publish(0, 25).await;
    let counters = Arc::clone(&running.counters);
    running.stop().await;
    let stats = counters.snapshot();
    assert_eq!(
        (
            stats.published,
            stats.dropped_queue_full,
            stats.dropped_at_shutdown
        ),
        (25, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sinks_state_is_retrying_while_its_server_is_gone_and_ok_once_back() {
    use master_events_router::{SinkHealth, SinkState};
    let mut target = NatsTarget::start().await;
    let router = Router::start(RouterConfig::default());
    let health = Arc::new(SinkHealth::new("nats", 0));
    let sink = NatsSink::new(NatsConfig::to_server(target.server.url()))
        .expect("valid config")
        .with_health(Arc::clone(&health));
    let cancel = CancellationToken::new();
    let input = SinkInput::new(
        "nats",
        router.subscribe(Cursor::Oldest),
        None,
        cancel.clone(),
    );
    let task = tokio::spawn(Box::new(sink).run(input));
    router
        .publish_batch((0..3).map(|i| Record::new(event(i))).collect())
        .await
        .expect("published");
    wait_until("the first events received", || target.messages().len() >= 3).await;
    assert_eq!(health.state(), SinkState::Ok);
    target.server.kill();
    wait_until("retrying once the server is gone", || {
        health.state() == SinkState::Retrying
    })
    .await;
    target.server.restart();
    wait_until("ok once reconnected", || health.state() == SinkState::Ok).await;
    router.shutdown().await;
    cancel.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}
