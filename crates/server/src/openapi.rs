//! The OpenAPI 3.1 description of the HTTP API, generated from the route table.
//!
//! Owns: [`document`] (served at `GET /openapi.json`, committed as
//! `schemas/openapi.json` by `master-events schemas`) and the words of each
//! operation ([`operation`]).
//!
//! Promises:
//! - The paths, methods and security of the document are the route table's
//!   ([`crate::routes::ROUTES`]): a route cannot be served and missing from it, nor
//!   described and not served. [`operation`] gives the words for every route and
//!   method, and a test fails on one without them (or with words for a route the
//!   table does not hold).
//! - Response bodies that are this server's own types take their schemas from those
//!   types (`schemars`), under `components/schemas`. The stream's lines and the ingest
//!   body are the published schemas `stream-line.json` and `ingest-line.json`
//!   (embedded as the components `StreamLine` and `IngestLine`, their internal
//!   references rewritten to point into this document; the same files are served at
//!   `/schemas/`).
//! - The document is deterministic (the same bytes from the same code), so its
//!   committed copy is drift-checked like the event schemas.

use axum::http::Method;
use schemars::generate::{Contract, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::auth::Role;
use crate::routes::{Access, ROUTES};

/// Where the document is served, and its committed name under `schemas/`.
pub const PATH: &str = "/openapi.json";

/// A body: its content type and JSON Schema.
pub type Content = (&'static str, Value);

/// One operation's words and shapes.
pub struct Operation {
    /// One line.
    pub summary: &'static str,
    /// More, in Markdown (may be empty).
    pub description: &'static str,
    /// Query (and header) parameters: name, where (`query`/`header`/`path`), its
    /// JSON Schema, what it does.
    pub parameters: Vec<(&'static str, &'static str, Value, &'static str)>,
    /// The request body: content type and schema.
    pub body: Option<Content>,
    /// Responses: status, description, content type and schema (if a body).
    pub responses: Vec<(u16, &'static str, Option<Content>)>,
}

fn string() -> Value {
    json!({"type": "string"})
}
fn uint() -> Value {
    json!({"type": "integer", "minimum": 0})
}
fn flag() -> Value {
    json!({"type": "string", "enum": ["1", "true", "0", "false"]})
}
fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}
fn json_body(name: &str) -> Option<Content> {
    Some(("application/json", schema_ref(name)))
}

/// The schemas of this server's own response types, by component name.
struct Types {
    generator: schemars::SchemaGenerator,
    refs: Map<String, Value>,
}

impl Types {
    fn new() -> Types {
        let mut settings = SchemaSettings::draft2020_12();
        settings.definitions_path = "/components/schemas".into();
        settings.contract = Contract::Serialize;
        settings.meta_schema = None;
        Types {
            generator: settings.into_generator(),
            refs: Map::new(),
        }
    }

    fn add<T: JsonSchema>(&mut self, name: &str) {
        let schema = self.generator.subschema_for::<T>();
        if schema.get("$ref").is_none() {
            self.refs.insert(name.to_owned(), schema.to_value());
        }
    }

    fn into_components(mut self) -> Map<String, Value> {
        let mut all = self.generator.take_definitions(true);
        all.append(&mut self.refs);
        all
    }
}

/// A published schema file embedded as a component: its `#/$defs/...` references
/// rewritten to `#/components/schemas/NAME/$defs/...`, its `$schema` left out (the
/// document's dialect is the same, draft 2020-12).
fn embedded(file: &str, name: &str) -> Value {
    let text = master_events_events::published::get(file).unwrap_or("{}");
    let mut value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let prefix = format!("#/components/schemas/{name}/$defs/");
    rewrite_refs(&mut value, &prefix);
    if let Value::Object(map) = &mut value {
        map.remove("$schema");
        map.insert(
            "$comment".into(),
            Value::String(format!(
                "The published schemas/{file}, also served at /schemas/{file}."
            )),
        );
    }
    value
}

pub(crate) fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(rest) = r.strip_prefix("#/$defs/") {
                            *r = format!("{prefix}{rest}");
                        }
                    }
                    (_, v) => rewrite_refs(v, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

/// The words of the operation `method` on the route `path` (a path of the route
/// table), or `None` when there are none.
pub fn operation(path: &str, method: &Method) -> Option<Operation> {
    let get = method == Method::GET;
    let post = method == Method::POST;
    let error = |status: u16, what: &'static str| (status, what, json_body("ErrorBody"));
    let op = |summary, description| Operation {
        summary,
        description,
        parameters: Vec::new(),
        body: None,
        responses: Vec::new(),
    };
    Some(match path {
        "/" if get => Operation {
            responses: vec![(303, "To `/ui`, the live page.", None)],
            ..op("The live page is where a browser goes.", "")
        },
        "/diag/masterEvents" if get => Operation {
            parameters: vec![
                ("o", "query", flag(), "`1`: the retained archive once, then the response ends."),
                ("since", "query", uint(), "Resume after this seq (exclusive)."),
                ("history", "query", string(), "The history `since` belongs to (a different one gets a `reset` frame, then the archive)."),
                ("start", "query", json!({"type": "string", "enum": ["now"]}), "`now`: live events only."),
                ("type", "query", string(), "Event types, comma-separated (OR)."),
                ("bucket", "query", string(), "Buckets, comma-separated (OR)."),
                ("vbucket", "query", string(), "Vbuckets, comma-separated (OR)."),
                ("node", "query", string(), "Nodes: an event's `node`, `host` or `origin` (OR)."),
                ("heartbeat", "query", json!({"type": "number", "minimum": 0, "maximum": 86400}), "Seconds between heartbeats on an idle stream (`0`: none)."),
                ("format", "query", json!({"type": "string", "enum": ["json", "cloudevents"]}), "`cloudevents`: every line a CloudEvents 1.0 structured-mode event."),
                ("Last-Event-ID", "header", string(), "SSE: `HISTORY:SEQ`, resumes like `since`/`history`."),
            ],
            responses: vec![
                (200, "An endless stream (or, with `o=1`, the archive): one line per event or control frame (heartbeat, gap, reset). Response header `Master-Events-History` names the archive's history.", Some(("application/x-ndjson", schema_ref("StreamLine")))),
                error(400, "A bad parameter, named."),
                error(401, "No or wrong credentials."),
                error(503, "Too many open streams."),
            ],
            ..op(
                "The event stream: the retained events from a cursor, then live ones.",
                "NDJSON, each line a `StreamLine` (the published `stream-line.json`). With `Accept: text/event-stream`, Server-Sent Events: `id: HISTORY:SEQ` and `data: LINE` per event, `event: heartbeat|gap|reset` for frames. docs/api.md.",
            )
        },
        "/diag/masterEvents" if post => Operation {
            parameters: vec![
                ("stream", "query", flag(), "`1`: a feed, lines taken as they arrive until the body ends."),
                ("legacy", "query", flag(), "`1`: lines of ns_server's 2012 form are rewritten in the current form first (docs/legacy-logs.md)."),
                ("Master-Events-Origin", "header", string(), "A client origin: each line's `originSeq` is kept, and each (origin, originSeq) sequenced once (safe retries)."),
            ],
            body: Some(("application/x-ndjson", schema_ref("IngestLine"))),
            responses: vec![
                (200, "Committed: the events' seqs (a feed: `Fed`, the same fields).", json_body("Accepted")),
                (202, "Queued on this node for its master (not sequenced yet).", Some(("application/json", json!({"type": "object"})))),
                (400, "A bad line, named with its number and field (nothing of the body is taken; a feed keeps the lines before it).", json_body("Refusal")),
                error(401, "No or wrong credentials."),
                error(413, "Over the body limit."),
                error(415, "A content type other than NDJSON or JSON lines."),
            ],
            ..op(
                "Send events: one JSON object per line (`IngestLine`, the published `ingest-line.json`).",
                "The server stamps `seq`, `ts` and `origin`. docs/api.md.",
            )
        },
        "/schemas" | "/schemas/" if get => Operation {
            responses: vec![(200, "The paths of the published schema files.", json_body("SchemaIndex"))],
            ..op("The published JSON Schemas.", "")
        },
        "/schemas/{*path}" if get => Operation {
            parameters: vec![("path", "path", string(), "A schema file's path, e.g. `event/becameMaster.json`.")],
            responses: vec![
                (200, "The schema.", Some(("application/schema+json", json!({"type": "object"})))),
                error(404, "No such schema."),
            ],
            ..op("One published JSON Schema.", "")
        },
        "/cluster" if get => Operation {
            responses: vec![
                (200, "This node, its master, its link to it, its archive and sinks.", json_body("ClusterStatus")),
                error(403, "A token with a filter: this route describes every event."),
            ],
            ..op("Cluster state as this node sees it.", "")
        },
        "/cluster/forward" if post => Operation {
            body: Some(("application/x-ndjson", schema_ref("IngestLine"))),
            responses: vec![
                (200, "Sequenced.", json_body("Accepted")),
                error(409, "Another epoch."),
            ],
            ..op("Node to node: a follower's queued events.", "docs/cluster.md, \"Replication\".")
        },
        "/cluster/replicated" if post => Operation {
            parameters: vec![
                ("node", "query", string(), "The follower."),
                ("run", "query", string(), "Its replication run."),
                ("epoch", "query", uint(), "The master's epoch."),
                ("seq", "query", uint(), "The follower holds the archive up to this seq."),
            ],
            responses: vec![(200, "Taken.", None), error(409, "Another epoch, or beyond the archive.")],
            ..op("Node to node: how far a follower holds the master's archive.", "docs/cluster.md.")
        },
        "/cluster/vote" if get => Operation {
            parameters: vec![
                ("epoch", "query", uint(), "The epoch to promise."),
                ("node", "query", string(), "The node asking."),
            ],
            responses: vec![(200, "The promise and this node's log position.", Some(("application/json", json!({"type": "object"})))), error(409, "A newer epoch was promised.")],
            ..op("Node to node: promise an epoch.", "docs/cluster.md.")
        },
        "/cluster/log" if get => Operation {
            parameters: vec![
                ("last", "query", uint(), "The asking node's last seq."),
                ("epochs", "query", string(), "Its epoch table."),
                ("node", "query", string(), "The node asking."),
                ("follow", "query", uint(), "Follow the log while this node is the master of this epoch."),
            ],
            responses: vec![(200, "NDJSON: a start line, events, commit and gap lines.", Some(("application/x-ndjson", json!({"type": "object"})))), error(409, "Another epoch.")],
            ..op("Node to node: this node's log after a point.", "docs/cluster.md.")
        },
        "/metrics" if get => Operation {
            responses: vec![
                (200, "Prometheus / OpenMetrics text.", Some(("application/openmetrics-text", string()))),
                error(403, "A token with a filter."),
            ],
            ..op("Metrics.", "docs/api.md lists the series.")
        },
        "/health" if get => Operation {
            responses: vec![(200, "Alive.", Some(("application/json", json!({"type": "object", "properties": {"status": {"const": "ok"}}}))))],
            ..op("Liveness (no credentials).", "")
        },
        "/ready" if get => Operation {
            responses: vec![
                (200, "Ready.", Some(("application/json", json!({"type": "object", "properties": {"ready": {"const": true}}})))),
                (503, "Not ready, and why.", Some(("application/json", json!({"type": "object", "properties": {"ready": {"const": false}, "reason": {"type": "string"}}})))),
            ],
            ..op("Readiness (no credentials).", "")
        },
        "/ui" | "/ui/" if get => Operation {
            responses: vec![(200, "The page.", Some(("text/html", string())))],
            ..op("The live page.", "")
        },
        PATH | "/asyncapi.json" if get => Operation {
            responses: vec![(200, "The document.", Some(("application/json", json!({"type": "object"}))))],
            ..op(
                if path == PATH { "This description (OpenAPI 3.1)." } else { "The channels: the stream, the webhook and NATS payloads (AsyncAPI 3.0)." },
                "",
            )
        },
        _ => return None,
    })
}

fn security(access: Access) -> (Value, String) {
    let users = json!([{"basicAuth": []}, {"bearerAuth": []}]);
    match access {
        Access::Public => (json!([]), "No credentials.".into()),
        Access::Role(role) => (users, format!("Role `{}` or above.", role_name(role))),
        Access::Unscoped(role) => (
            users,
            format!("Role `{}` or above, and no token filter.", role_name(role)),
        ),
        Access::Node => (
            json!([{"clusterSecret": []}]),
            "Another node of the cluster (the cluster secret).".into(),
        ),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Read => "read",
        Role::Write => "write",
        Role::Admin => "admin",
    }
}

/// The OpenAPI path of a route-table path (`{*path}` → `{path}`).
pub fn openapi_path(path: &str) -> String {
    path.replace("{*path}", "{path}")
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let part = part.trim_start_matches('{').trim_end_matches('}');
        let part = part.trim_start_matches('*');
        let mut chars = part.chars().filter(|c| c.is_ascii_alphanumeric());
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    if path == "/" {
        id.push_str("Root");
    } else if path.ends_with('/') {
        id.push_str("Index");
    }
    id
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut item = Map::new();
        for (method, access) in [(Method::GET, route.get), (Method::POST, route.post)] {
            let Some(access) = access else { continue };
            let Some(op) = operation(route.path, &method) else {
                continue;
            };
            let (security, who) = security(access);
            let mut responses = Map::new();
            for (status, description, content) in op.responses {
                let mut r = Map::new();
                r.insert("description".into(), json!(description));
                if let Some((ty, schema)) = content {
                    r.insert("content".into(), json!({ ty: {"schema": schema} }));
                }
                responses.insert(status.to_string(), Value::Object(r));
            }
            let mut o = Map::new();
            o.insert(
                "operationId".into(),
                json!(operation_id(&method, route.path)),
            );
            o.insert("summary".into(), json!(op.summary));
            let description = if op.description.is_empty() {
                who
            } else {
                format!("{} {who}", op.description)
            };
            o.insert("description".into(), json!(description));
            if !op.parameters.is_empty() {
                let params: Vec<Value> = op
                    .parameters
                    .into_iter()
                    .map(|(name, place, schema, description)| {
                        json!({
                            "name": name,
                            "in": place,
                            "required": place == "path",
                            "description": description,
                            "schema": schema,
                        })
                    })
                    .collect();
                o.insert("parameters".into(), Value::Array(params));
            }
            if let Some((ty, schema)) = op.body {
                o.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": { ty: {"schema": schema} }}),
                );
            }
            o.insert("responses".into(), Value::Object(responses));
            o.insert("security".into(), security);
            item.insert(method.as_str().to_lowercase(), Value::Object(o));
        }
        paths.insert(openapi_path(route.path), Value::Object(item));
    }

    let mut types = Types::new();
    types.add::<crate::ErrorBody>("ErrorBody");
    types.add::<crate::ingest::Accepted>("Accepted");
    types.add::<crate::ingest::Refusal>("Refusal");
    types.add::<crate::feed::Fed>("Fed");
    types.add::<crate::feed::FeedRefusal>("FeedRefusal");
    types.add::<crate::schema_routes::SchemaIndex>("SchemaIndex");
    types.add::<crate::status_routes::ClusterStatus<'static>>("ClusterStatus");
    let mut schemas = types.into_components();
    schemas.insert(
        "StreamLine".into(),
        embedded("stream-line.json", "StreamLine"),
    );
    schemas.insert(
        "IngestLine".into(),
        embedded("ingest-line.json", "IngestLine"),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "master-events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of master-events, the cluster-wide activity event router: stream and send ns_server's master activity events, read the cluster's state. Generated from the server's route table; docs/api.md has the prose.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic", "description": "A configured user; or a bearer token as the password of the user `token`."},
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "A token made by `master-events token create`."},
                "clusterSecret": {"type": "http", "scheme": "bearer", "description": "The cluster secret, shared by the nodes of a cluster (never a token)."},
            },
        },
        "security": [{"basicAuth": []}, {"bearerAuth": []}],
    })
}

/// The document as committed: pretty JSON with a final newline.
pub fn to_bytes(doc: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(doc).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_method_of_the_table_has_an_operation_and_no_other_does() {
        for route in ROUTES {
            for (method, access) in [(Method::GET, route.get), (Method::POST, route.post)] {
                let described = operation(route.path, &method).is_some();
                assert_eq!(
                    described,
                    access.is_some(),
                    "{method} {}: served {} but described {described}",
                    route.path,
                    access.is_some()
                );
            }
        }
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), ROUTES.len());
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("item").values() {
                ids.push(op["operationId"].as_str().expect("an id").to_owned());
            }
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "{ids:?}");
    }

    #[test]
    fn every_reference_points_into_the_document() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap_or_default().to_owned());
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn public_routes_need_no_credentials_and_node_routes_the_cluster_secret() {
        let doc = document();
        assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
        assert_eq!(
            doc["paths"]["/cluster/vote"]["get"]["security"],
            json!([{"clusterSecret": []}])
        );
        assert_eq!(
            doc["paths"]["/diag/masterEvents"]["post"]["requestBody"]["content"]
                ["application/x-ndjson"]["schema"]["$ref"],
            "#/components/schemas/IngestLine"
        );
    }
}
