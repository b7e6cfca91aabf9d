//! Configuration: registered names, entry-naming errors, filters, running sinks.

use master_events_events::EventType;
use master_events_router::{
    load_config, registered_filters, registered_sinks, start_sinks, ConfigError, Filter, Router,
    RouterConfig,
};

#[test]
fn the_registered_sinks_are_exactly_archiver_and_stdout() {
    let names: Vec<&str> = registered_sinks().iter().map(|r| r.name).collect();
    assert_eq!(names, ["archiver", "stdout"]);
    for r in registered_sinks() {
        assert!(!r.description.is_empty());
        let schema = serde_json::to_value((r.config_schema)()).unwrap_or_default();
        assert_eq!(
            schema["additionalProperties"], false,
            "{}: deny_unknown_fields",
            r.name
        );
    }
}

#[test]
fn the_registered_filters_are_the_builtin_kinds() {
    let names: Vec<&str> = registered_filters().iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        ["and", "bucket", "node", "not", "or", "type", "vbucket"]
    );
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8091"   # not ours: left to the application

[[sinks]]
type = "archiver"
capacity = 81920

[[sinks]]
type = "stdout"
format = "line"
filter = { type = ["vbucketMoveStart"], bucket = "default" }
"#;

#[test]
fn a_good_config_loads_with_its_filters() {
    let config = load_config(GOOD).expect("valid");
    let kinds: Vec<&str> = config.sinks.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["archiver", "stdout"]);
    assert_eq!(config.archive_capacity(), Some(81920));
    assert_eq!(
        config.sinks[1].filter,
        Some(Filter::And(vec![
            Filter::types([EventType::VbucketMoveStart]),
            Filter::bucket("default")
        ]))
    );
    assert_eq!(config.sinks[1].at.line, Some(9));
    let mut rc = RouterConfig::default();
    config.apply_to(&mut rc);
    assert_eq!(rc.archive_capacity, 81920);
    assert!(load_config("").expect("empty is fine").sinks.is_empty());
}

fn err(text: &str) -> String {
    load_config(text).expect_err("must be refused").to_string()
}

#[test]
fn config_errors_name_the_entry() {
    let e = err("[[sinks]]\ntype = \"archiver\"\n[[sinks]]\ntype = \"archiver\"\n[[sinks]]\ntype = \"stdout\"\nfromat = \"json\"\n");
    assert_eq!(e, "sinks[1] (type \"archiver\", line 3): there is one archive: an archiver is already configured at sinks[0]");
    let e = err("[[sinks]]\ntype = \"stdout\"\nfromat = \"json\"\n");
    assert_eq!(
        e,
        "sinks[0] (type \"stdout\", line 1): unknown field `fromat`, expected `format`"
    );
    // No value of the file is quoted (it could be a secret): the key is named.
    let e = err("[[sinks]]\ntype = \"stdout\"\nformat = \"xml\"\n");
    assert_eq!(
        e,
        "sinks[0] (type \"stdout\", line 1): unknown variant (value not shown), expected `json` or `line` (key format, line 3)"
    );
    // The key's own line, in an entry further down.
    let e = err("[[sinks]]\ntype = \"stdout\"\n\n[[sinks]]\ntype = \"stdout\"\n# json or line\nformat = \"xml\"\n");
    assert_eq!(
        e,
        "sinks[1] (type \"stdout\", line 4): unknown variant (value not shown), expected `json` or `line` (key format, line 7)"
    );
    let e = err("[[sinks]]\ntype = \"archiver\"\ncapacity = 0\n");
    assert_eq!(
        e,
        "sinks[0] (type \"archiver\", line 1): capacity must be from 1 to 10000000, not 0"
    );
    let e = err("[[sinks]]\ntype = \"archiver\"\nfilter = { bucket = \"b\" }\n");
    assert_eq!(
        e,
        "sinks[0] (type \"archiver\", line 1): the archiver keeps every event: it takes no filter"
    );
    let e = err("[[sinks]]\ntype = \"stdout\"\nfilter = { type = \"vbucketMoveStrat\" }\n");
    assert_eq!(e, "sinks[0] (type \"stdout\", line 1): filter (line 3): unknown event type (value not shown); did you mean \"vbucketMoveStart\"? (key type)");
    let e = err(
        "[[sinks]]\ntype = \"stdout\"\nfilter = { type = [\"rebalanceStart\", \"vbucketMoveStrat\"] }\n",
    );
    assert_eq!(e, "sinks[0] (type \"stdout\", line 1): filter (line 3): value 2 of the list: unknown event type (value not shown); did you mean \"vbucketMoveStart\"? (key type)");
    let e = err("[[sinks]]\ntype = \"stdout\"\nfilter = { bucket = \"b\", vbuckets = 1 }\n");
    assert!(
        e.starts_with(
            "sinks[0] (type \"stdout\", line 1): filter (line 3): unknown field `vbuckets`, expected one of"
        ),
        "{e}"
    );
}

#[test]
fn unknown_or_missing_sink_types_list_the_registered_ones() {
    let e = load_config("[[sinks]]\ntype = \"stdout\"\n\n[[sinks]]\ntype = \"kafka\"\n")
        .expect_err("unknown");
    assert!(matches!(e, ConfigError::UnknownSinkType { ref kind, .. } if kind == "kafka"));
    assert_eq!(
        e.to_string(),
        "sinks[1] (type \"kafka\", line 4): unknown sink type \"kafka\"; registered sink types: archiver, stdout"
    );
    let e = err("[[sinks]]\nformat = \"json\"\n");
    assert_eq!(
        e,
        "sinks[0] (line 1): missing \"type\"; registered sink types: archiver, stdout"
    );
    let e = err("[[sinks]]\ntype = 3\n");
    assert!(
        e.starts_with("sinks[0] (line 1): \"type\" must be a string"),
        "{e}"
    );
    // TOML errors: line:column, the message and the key, no text of the file.
    let e = err("sinks = 3\n");
    assert_eq!(
        e,
        "1:9: invalid type: integer (value not shown), expected a sequence (key sinks)"
    );
    let e = err("[[sinks]\n");
    assert_eq!(e, "1:9: unclosed array table, expected `]`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_sinks_runs_the_configured_sinks_and_shutdown_flushes_them() {
    let config = load_config(
        "[[sinks]]\ntype = \"archiver\"\ncapacity = 100\n[[sinks]]\ntype = \"stdout\"\nfilter = { type = \"failoverEnded\" }\n",
    )
    .expect("valid");
    let mut rc = RouterConfig::default();
    config.apply_to(&mut rc);
    let router = Router::start(rc);
    let sinks = start_sinks(&router, &config).expect("started");
    assert_eq!(sinks.names(), ["archiver", "stdout"]);
    router.emitter().note(crate::event(1)); // filtered out: nothing printed
    router.shutdown().await;
    crate::within(sinks.shutdown()).await;
}

#[tokio::test]
async fn start_sinks_refuses_an_archiver_that_is_not_the_ring() {
    let config = load_config("[[sinks]]\ntype = \"archiver\"\ncapacity = 100\n").expect("valid");
    let router = Router::start(RouterConfig::default());
    let e = start_sinks(&router, &config).expect_err("mismatch");
    assert!(
        e.to_string().starts_with("sinks[0] (type \"archiver\", line 1): capacity 100 is not the running archive's (4096)"),
        "{e}"
    );
}
