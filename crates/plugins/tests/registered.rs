//! Every sink the binary is meant to have is linked and registered: a plugin crate
//! that nothing references would silently vanish, so the list is pinned here.

#[test]
fn the_exact_list_of_registered_sinks() {
    assert_eq!(
        master_events_plugins::sink_names(),
        vec!["archiver", "counts", "file", "http", "kafka", "nats", "stdout", "tsv", "webhook"]
    );
}

#[test]
fn every_registered_sink_has_a_description_and_a_config_schema() {
    for reg in master_events_plugins::registered_sinks() {
        assert!(!reg.description.is_empty(), "{}", reg.name);
        let schema = (reg.config_schema)().to_value();
        assert!(schema.is_object(), "{}: {schema}", reg.name);
    }
}

#[test]
fn filters_are_listed() {
    let names: Vec<&str> = master_events_plugins::registered_filters()
        .iter()
        .map(|f| f.name)
        .collect();
    for key in ["type", "bucket", "vbucket", "node", "and", "or", "not"] {
        assert!(names.contains(&key), "{key} missing from {names:?}");
    }
}

#[test]
fn sink_metrics_encode_as_prometheus_text() {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(master_events_plugins::SinkMetrics::collector());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
    for line in [
        "master_events_sink_delivered_total{sink=\"webhook\"} 0",
        "master_events_sink_dropped_total{sink=\"nats\",reason=\"queue_full\"} 0",
        "master_events_sink_missed_total{sink=\"webhook\"} 0",
        "master_events_sink_dropped_total{sink=\"file\",reason=\"write_error\"} 0",
        "master_events_kafka_sink_transactions_total{outcome=\"committed\"} 0",
        "master_events_kafka_sink_fenced_total{sink=\"kafka\"} 0",
    ] {
        assert!(out.contains(line), "{line} missing from\n{out}");
    }
}

#[test]
fn a_file_sinks_state_and_held_events_are_metrics_by_log_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = master_events_sink_file::FileConfig::in_dir(dir.path());
    let sink = master_events_sink_file::FileSink::open(&config, None).expect("opens");
    let path = dir.path().join("master_events.log").display().to_string();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(master_events_plugins::SinkMetrics::collector());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
    for line in [
        format!("master_events_file_sink_state{{path=\"{path}\",state=\"ok\"}} 1"),
        format!("master_events_file_sink_state{{path=\"{path}\",state=\"retrying\"}} 0"),
        format!("master_events_file_sink_held_events{{path=\"{path}\"}} 0"),
    ] {
        assert!(out.contains(&line), "{line} missing from\n{out}");
    }
    drop(sink);
}

#[test]
fn only_the_configured_sink_types_have_metrics() {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(master_events_plugins::SinkMetrics::collector_for(&[
        "stdout", "webhook",
    ]));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
    assert!(
        out.contains("master_events_sink_delivered_total{sink=\"webhook\"} 0"),
        "{out}"
    );
    for absent in ["sink=\"nats\"", "sink=\"file\""] {
        assert!(!out.contains(absent), "{absent} in\n{out}");
    }
}

/// A crate under `plugins/` that this crate does not link would register nothing and
/// fail nothing: each must be a dependency here and named in `src/lib.rs`.
#[test]
fn every_plugin_crate_of_the_workspace_is_linked() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(here.join("Cargo.toml")).expect("our Cargo.toml");
    let lib = std::fs::read_to_string(here.join("src/lib.rs")).expect("our lib.rs");
    let plugins = here.join("../../plugins");
    let mut checked = 0;
    for entry in std::fs::read_dir(&plugins).expect("plugins/ is readable") {
        let dir = entry.expect("an entry").path();
        let Ok(toml) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{} has a package name", dir.display()));
        assert!(
            manifest.contains(&format!("{name} = ")),
            "plugins/{} ({name}) is not a dependency of crates/plugins",
            dir.display()
        );
        let ident = name.replace('-', "_");
        assert!(
            lib.contains(&format!("use {ident} as _;")),
            "crates/plugins/src/lib.rs does not link {name} (`use {ident} as _;`)"
        );
        checked += 1;
    }
    assert!(checked >= 4, "found the plugin crates: {checked}");
}

#[test]
fn the_asyncapi_documents_nats_prefix_is_the_nats_sinks_default() {
    let config = master_events_sink_nats::NatsConfig::to_server("nats://127.0.0.1:4222");
    assert_eq!(
        config.subject_prefix,
        master_events_server::asyncapi::NATS_DEFAULT_PREFIX
    );
}
