//! The nats sink's JetStream mode against a real `nats-server -js`: every event in
//! the stream exactly once and in seq order, with its message id, across a NATS
//! server restart mid-stream and a restart of the sink itself; a gap message for
//! what the archive no longer had; an existing stream that cannot take the subjects
//! reported with its cause.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{event, NatsServer, WAIT};
use master_events_events::Record;
use master_events_router::{Router, RouterConfig, Sink, SinkHealth, SinkInput, SinkState};
use master_events_sink_nats::jetstream::{JetStreamConfig, HISTORY_HEADER, SEQ_HEADER};
use master_events_sink_nats::{NatsConfig, NatsSink};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const STREAM: &str = "EVENTS";

fn js_server() -> NatsServer {
    NatsServer::start_with_config("jetstream { store_dir: \"js\" }\n")
}

fn config(url: &str) -> NatsConfig {
    let mut c = NatsConfig::to_server(url);
    c.jetstream = Some(JetStreamConfig {
        stream: STREAM.into(),
        subjects: None,
        replicas: 1,
        max_age_secs: 0,
        max_bytes: -1,
        duplicate_window_secs: 120,
        ack_window: 64,
        ack_timeout_ms: 2000,
    });
    c.shutdown_timeout_ms = 2000;
    c
}

/// One run of the sink on `router`, as `serve` starts it (from its start cursor).
struct SinkRun {
    health: Arc<SinkHealth>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl SinkRun {
    fn start(router: &Router, config: NatsConfig) -> SinkRun {
        let health = Arc::new(SinkHealth::new("nats", 0));
        let sink = NatsSink::new(config)
            .expect("valid config")
            .with_health(Arc::clone(&health))
            .with_router(router.clone());
        let cancel = CancellationToken::new();
        let input = SinkInput::new(
            "nats",
            router.subscribe(sink.start_cursor()),
            None,
            cancel.clone(),
        );
        let task = tokio::spawn(Box::new(sink).run(input));
        SinkRun {
            health,
            cancel,
            task,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the sink stops in time")
            .expect("the sink ends normally");
    }
}

async fn publish(router: &Router, from: u64, n: u64) {
    router
        .publish_batch((from..from + n).map(|i| Record::new(event(i))).collect())
        .await
        .expect("published");
}

/// Every message of the stream: (subject, seq header, msg id).
async fn stream_messages(url: &str) -> Vec<(String, u64, String)> {
    let client = common::connect(url).await;
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream(STREAM).await else {
        return Vec::new();
    };
    let info = stream.info().await.expect("info").clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if seq == 0 {
            continue;
        }
        let m = stream.get_raw_message(seq).await.expect("message");
        let header = |n: &str| {
            m.headers
                .get(n)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        out.push((
            m.subject.to_string(),
            header(SEQ_HEADER).parse().unwrap_or(0),
            header("Nats-Msg-Id"),
        ));
        assert!(
            !header(HISTORY_HEADER).is_empty(),
            "every message names its history"
        );
    }
    out
}

/// The stream is one gap message ending just before `oldest` (its seq header is the
/// end of its range), then every event `oldest..=last` once, in order.
fn assert_one_gap_then_every_event(messages: &[(String, u64, String)], oldest: u64, last: u64) {
    assert_eq!(messages[0].0, "master_events.gap", "{messages:?}");
    assert_eq!(
        messages[0].1,
        oldest - 1,
        "the gap ends where the archive begins"
    );
    let seqs: Vec<u64> = messages[1..].iter().map(|m| m.1).collect();
    assert_eq!(seqs, (oldest..=last).collect::<Vec<_>>());
}

async fn wait_for_count(url: &str, n: usize) -> Vec<(String, u64, String)> {
    let start = Instant::now();
    loop {
        let messages = stream_messages(url).await;
        if messages.len() >= n {
            return messages;
        }
        assert!(
            start.elapsed() < WAIT,
            "the stream holds {} messages, not {n}",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_in_the_stream_once_in_order_across_a_server_and_a_sink_restart() {
    let mut server = js_server();
    let url = server.url();
    let router = Router::start(RouterConfig::default());
    let history = router.history().to_string();
    let first = SinkRun::start(&router, config(&url));
    publish(&router, 0, 300).await;
    wait_for_count(&url, 100).await;
    // The NATS server goes away mid-stream and comes back (its store kept).
    server.kill();
    publish(&router, 300, 200).await;
    server.restart();
    wait_for_count(&url, 500).await;
    first.stop().await;
    // The sink restarts: it reads the router from its oldest event and must send
    // only what the stream does not hold.
    publish(&router, 500, 100).await;
    let second = SinkRun::start(&router, config(&url));
    let messages = wait_for_count(&url, 600).await;
    assert_eq!(second.health.state(), SinkState::Ok);
    // Once the sink has stopped (every publish it made acknowledged or given up),
    // nothing more can arrive: a late duplicate would be in the stream by now.
    second.stop().await;
    router.shutdown().await;
    let messages_after = stream_messages(&url).await;
    assert_eq!(messages.len(), messages_after.len(), "a late duplicate");
    let seqs: Vec<u64> = messages.iter().map(|m| m.1).collect();
    assert_eq!(
        seqs,
        (1..=600).collect::<Vec<_>>(),
        "exactly once, in seq order"
    );
    for (subject, seq, id) in &messages {
        assert_eq!(id, &format!("{history}:{seq}"));
        let ty = if (seq - 1) % 2 == 0 {
            "deleteBucket"
        } else {
            "vbucketMoveDone"
        };
        assert_eq!(subject, &format!("master_events.{ty}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_archive_no_longer_had_is_one_gap_message_with_the_exact_range() {
    let server = js_server();
    let url = server.url();
    let router = Router::start(RouterConfig {
        archive_capacity: 100,
        ..RouterConfig::default()
    });
    // 300 events before the sink starts: the archive keeps the last 100 or so.
    for i in 0..3 {
        publish(&router, i * 100, 100).await;
    }
    let oldest = router.oldest_seq().expect("an archive");
    assert!(oldest > 1);
    let run = SinkRun::start(&router, config(&url));
    let expected = (300 - oldest + 1) as usize + 1;
    let messages = wait_for_count(&url, expected).await;
    run.stop().await;
    router.shutdown().await;
    assert_one_gap_then_every_event(&messages, oldest, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_take_the_subjects_is_reported_with_its_cause() {
    let server = js_server();
    let url = server.url();
    let client = common::connect(&url).await;
    jetstream::new(client)
        .create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await
        .expect("a stream of other subjects");
    let router = Router::start(RouterConfig::default());
    let run = SinkRun::start(&router, config(&url));
    publish(&router, 0, 5).await;
    let start = Instant::now();
    loop {
        let status = run.health.snapshot();
        if status.state == SinkState::Retrying
            && status
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("do not take master_events.>"))
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "not reported: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop().await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudevents_format_adds_binary_mode_headers_to_every_message() {
    let server = js_server();
    let url = server.url();
    let router = Router::start(RouterConfig::default());
    let history = router.history().to_string();
    let mut c = config(&url);
    c.format = master_events_sink_nats::NatsFormat::Cloudevents;
    c.schema_base_url = Some("https://events.example:9443/".into());
    let run = SinkRun::start(&router, c);
    publish(&router, 0, 10).await;
    wait_for_count(&url, 10).await;
    run.stop().await;
    router.shutdown().await;

    let client = common::connect(&url).await;
    let stream = jetstream::new(client)
        .get_stream(STREAM)
        .await
        .expect("the stream");
    for seq in 1..=10u64 {
        let m = stream.get_raw_message(seq).await.expect("a message");
        let h = |n: &str| {
            m.headers
                .get(n)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let ty = if (seq - 1) % 2 == 0 {
            "deleteBucket"
        } else {
            "vbucketMoveDone"
        };
        assert_eq!(h("ce-specversion"), "1.0");
        assert_eq!(h("ce-id"), format!("{history}:{seq}"));
        assert_eq!(h("ce-type"), format!("io.master-events.event.{ty}"));
        assert_eq!(
            h("ce-dataschema"),
            format!("https://events.example:9443/schemas/event/{ty}.json")
        );
        assert_eq!(h("ce-sequence"), format!("{seq:020}"));
        assert!(h("ce-time").ends_with('Z'));
        assert_eq!(h("Nats-Msg-Id"), format!("{history}:{seq}"));
        let data: serde_json::Value = serde_json::from_slice(&m.payload).expect("the line");
        assert_eq!(data["seq"], seq, "the payload is the event line");
    }
}

#[test]
fn the_cloudevents_format_without_a_schema_base_url_is_refused_saying_what_to_set() {
    let mut c = NatsConfig::to_server("nats://127.0.0.1:4222");
    c.format = master_events_sink_nats::NatsFormat::Cloudevents;
    let err = c.check().expect_err("refused").to_string();
    assert!(err.contains("schema_base_url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_messages_carry_the_cloudevents_headers_too() {
    use futures_util::StreamExt as _;
    let server = NatsServer::start();
    let url = server.url();
    let client = common::connect(&url).await;
    let mut sub = common::subscribe_in_place(&client, "master_events").await;
    let router = Router::start(RouterConfig::default());
    let history = router.history().to_string();
    let mut c = NatsConfig::to_server(&url);
    c.format = master_events_sink_nats::NatsFormat::Cloudevents;
    c.schema_base_url = Some("http://127.0.0.1:9898".into());
    let run = SinkRun::start(&router, c);
    publish(&router, 0, 3).await;
    for seq in 1..=3u64 {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("a message in time")
            .expect("a message");
        let headers = m.headers.expect("headers");
        let h = |n: &str| {
            headers
                .get(n)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(h("ce-id"), format!("{history}:{seq}"));
        assert_eq!(
            h("ce-source").split("/nodes/").next(),
            Some(format!("/clusters/{history}").as_str())
        );
    }
    run.stop().await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_file_authenticates_and_a_wrong_seed_is_refused_without_showing_it() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    ));
    let url = server.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, user.seed().expect("a seed")).expect("write the seed");

    let router = Router::start(RouterConfig::default());
    let mut c = NatsConfig::to_server(&url);
    c.nkey_seed_file = Some(seed_file.clone());
    let run = SinkRun::start(&router, c);
    // What the sink publishes reaches a subscriber holding the same key.
    let seed = user.seed().expect("a seed");
    let client = async_nats::ConnectOptions::new()
        .nkey(seed)
        .connect(&url)
        .await
        .expect("the test's own nkey connection");
    let mut sub = common::subscribe_in_place(&client, "master_events").await;
    publish(&router, 0, 3).await;
    use futures_util::StreamExt as _;
    for _ in 0..3 {
        tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("a message in time")
            .expect("a message");
    }
    run.stop().await;

    // Another user's seed: refused, the sink says so, the seed never shown.
    let stranger = nkeys::KeyPair::new_user();
    let wrong = dir.path().join("stranger.nk");
    let wrong_seed = stranger.seed().expect("a seed");
    std::fs::write(&wrong, &wrong_seed).expect("write");
    let mut c = NatsConfig::to_server(&url);
    c.nkey_seed_file = Some(wrong);
    let run = SinkRun::start(&router, c);
    let start = Instant::now();
    loop {
        let status = run.health.snapshot();
        if status.state == SinkState::Retrying {
            assert!(
                !status.reason.unwrap_or_default().contains(&wrong_seed),
                "the seed is never shown"
            );
            break;
        }
        assert!(start.elapsed() < WAIT, "not reported: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop().await;
    router.shutdown().await;

    // A file that holds no seed is refused when the sink is built, naming the file.
    let junk = dir.path().join("junk.nk");
    std::fs::write(&junk, "not a seed").expect("write");
    let mut c = NatsConfig::to_server(&url);
    c.nkey_seed_file = Some(junk.clone());
    let err = NatsSink::new(c).expect_err("refused").to_string();
    assert!(
        err.contains("junk.nk") && !err.contains("not a seed"),
        "{err}"
    );
    let mut both = NatsConfig::to_server(&url);
    both.nkey_seed_file = Some(seed_file);
    both.token = Some("t".into());
    assert!(both.check().is_err(), "one kind of credentials at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_sharing_a_stream_each_resume_after_their_own_newest_message() {
    let server = js_server();
    let url = server.url();
    let fleet = |prefix: &str| {
        let mut c = config(&url);
        c.subject_prefix = prefix.into();
        if let Some(js) = c.jetstream.as_mut() {
            js.subjects = Some(vec!["fleet.>".into()]);
        }
        c
    };
    let (a, b) = (
        Router::start(RouterConfig::default()),
        Router::start(RouterConfig::default()),
    );
    let run_a = SinkRun::start(&a, fleet("fleet.a"));
    let run_b = SinkRun::start(&b, fleet("fleet.b"));
    publish(&a, 0, 200).await;
    publish(&b, 0, 150).await;
    wait_for_count(&url, 350).await;
    run_a.stop().await;
    // B goes on: its messages are the stream's newest when A comes back.
    publish(&b, 150, 150).await;
    wait_for_count(&url, 500).await;
    // Everything A publishes from now on, even what JetStream would drop as a
    // duplicate, reaches a plain subscriber.
    let client = common::connect(&url).await;
    let mut seen_a = common::subscribe_in_place(&client, "fleet.a").await;
    publish(&a, 200, 100).await;
    let run_a = SinkRun::start(&a, fleet("fleet.a"));
    let messages = wait_for_count(&url, 600).await;
    let mut republished = Vec::new();
    while republished.len() < 100 {
        let m = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut seen_a))
            .await
            .expect("A publishes its new events")
            .expect("the subscription lives");
        let seq = m
            .headers
            .as_ref()
            .and_then(|h| h.get(SEQ_HEADER))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        republished.push(seq.parse::<u64>().unwrap_or(0));
    }
    assert_eq!(
        republished,
        (201..=300).collect::<Vec<_>>(),
        "A resumed after its own newest message, not from another cluster's"
    );
    run_a.stop().await;
    run_b.stop().await;
    let of = |prefix: &str| -> Vec<u64> {
        messages
            .iter()
            .filter(|m| m.0.starts_with(prefix))
            .map(|m| m.1)
            .collect()
    };
    assert_eq!(
        of("fleet.a."),
        (1..=300).collect::<Vec<_>>(),
        "A once, in order"
    );
    assert_eq!(
        of("fleet.b."),
        (1..=300).collect::<Vec<_>>(),
        "B once, in order"
    );
    let (ha, hb) = (a.history().to_string(), b.history().to_string());
    assert!(messages.iter().all(|(s, seq, id)| *id
        == format!(
            "{}:{seq}",
            if s.starts_with("fleet.a.") { &ha } else { &hb }
        )));
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn subject_filters_cover_as_nats_wildcards_do() {
    use master_events_sink_nats::jetstream::covers;
    assert!(covers("fleet.>", "fleet.a.>"));
    assert!(covers(">", "fleet.a.>"));
    assert!(covers("fleet.*.>", "fleet.a.>"));
    assert!(covers("fleet.a.>", "fleet.a.>"));
    assert!(covers("fleet.a.>", "fleet.a.vbucketMoveDone"));
    assert!(!covers("fleet.a.>", "fleet.>"), "narrower than the pattern");
    assert!(!covers("fleet.b.>", "fleet.a.>"));
    assert!(!covers("fleet.*", "fleet.a.>"), "one token, not the rest");
    assert!(!covers("fleet.a", "fleet.a.>"));
    assert!(!covers("fleet.a.>", "fleet.a"), "`>` needs a token after");
}

#[test]
fn stream_subjects_that_are_not_filters_are_refused_naming_the_key() {
    let mut c = config("nats://127.0.0.1:4222");
    if let Some(js) = c.jetstream.as_mut() {
        js.subjects = Some(vec!["fleet.>.x".into()]);
    }
    let e = NatsSink::new(c)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("jetstream.subjects"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_reported_the_router_goes_on_and_what_it_evicted_is_a_gap() {
    let mut server = js_server();
    let url = server.url();
    server.kill();
    let router = Router::start(RouterConfig {
        archive_capacity: 100,
        ..RouterConfig::default()
    });
    let run = SinkRun::start(&router, config(&url));
    // Down at start: the sink says so.
    let start = Instant::now();
    while run.health.state() != SinkState::Retrying {
        assert!(
            start.elapsed() < WAIT,
            "the sink does not report the server down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The router is not slowed: 300 events through an archive of 100 complete.
    tokio::time::timeout(WAIT, async {
        for i in 0..3 {
            publish(&router, i * 100, 100).await;
        }
    })
    .await
    .expect("publishing is never held by the sink");
    let oldest = router.oldest_seq().expect("an archive");
    assert!(oldest > 1, "the archive evicted the first events");
    // Back: it recovers by itself, announces what the archive no longer had, then
    // delivers every retained event.
    server.restart();
    let expected = (300 - oldest + 1) as usize + 1;
    let messages = wait_for_count(&url, expected).await;
    let start = Instant::now();
    while run.health.state() != SinkState::Ok {
        assert!(start.elapsed() < WAIT, "the sink does not recover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop().await;
    router.shutdown().await;
    assert_one_gap_then_every_event(&messages, oldest, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_servers_max_payload_is_a_gap_message_and_the_rest_flows() {
    let server =
        NatsServer::start_with_config("jetstream { store_dir: \"js\" }\nmax_payload: 4096\n");
    let url = server.url();
    let router = Router::start(RouterConfig::default());
    let sink = SinkRun::start(&router, config(&url));
    // Every third event is ~6 KB: over the server's 4 KiB max_payload.
    let records: Vec<Record> = (0..30u64)
        .map(|i| {
            if i % 3 == 2 {
                Record::new(master_events_events::catalog::DeleteBucket {
                    bucket: format!("big{i}-{}", "x".repeat(6000)).into(),
                })
            } else {
                Record::new(event(i))
            }
        })
        .collect();
    router.publish_batch(records).await.expect("published");
    let messages = wait_for_count(&url, 30).await;
    sink.stop().await;
    router.shutdown().await;
    let seqs: Vec<u64> = messages.iter().map(|m| m.1).collect();
    assert_eq!(
        seqs,
        (1..=30).collect::<Vec<_>>(),
        "one message a seq, in order"
    );
    for (subject, seq, _) in &messages {
        if seq % 3 == 0 {
            assert_eq!(subject, "master_events.gap", "seq {seq} was too large");
        } else {
            assert_ne!(subject, "master_events.gap", "seq {seq}");
        }
    }
}
