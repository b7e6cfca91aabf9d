//! The AsyncAPI 3.0 description of the channels events flow on: the stream
//! (NDJSON and Server-Sent Events), the webhook sink's POSTs, and the nats sink's
//! subjects.
//!
//! Owns: [`document`] (served at `GET /asyncapi.json`, committed as
//! `schemas/asyncapi.json` by `master-events schemas`).
//!
//! Promises: each message's payload is a published schema (`stream-line.json`,
//! embedded under `components/schemas` with its references rewritten into this
//! document, as in [`crate::openapi`]), or a CloudEvents envelope around one; the
//! subjects are the nats sink's (`<subject_prefix>.<type>`, gaps on
//! `<subject_prefix>.gap`; `crates/plugins/tests/api_documents.rs` checks the default
//! prefix against the sink's). The document is deterministic and drift-checked.

use serde_json::{json, Value};

/// Where the document is served, and its committed name under `schemas/`.
pub const PATH: &str = "/asyncapi.json";

/// The nats sink's default subject prefix, as this document states it.
pub const NATS_DEFAULT_PREFIX: &str = "master_events";

fn stream_line_schema() -> Value {
    let text = master_events_events::published::get("stream-line.json").unwrap_or("{}");
    let mut value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    crate::openapi::rewrite_refs(&mut value, "#/components/schemas/StreamLine/$defs/");
    if let Value::Object(map) = &mut value {
        map.remove("$schema");
    }
    value
}

/// The whole document.
pub fn document() -> Value {
    let cloudevent = json!({
        "type": "object",
        "description": "A CloudEvents 1.0 structured-mode event (docs/api.md, \"CloudEvents\"): `data` is the stream line.",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "HISTORY:SEQ"},
            "source": {"type": "string", "description": "/clusters/HISTORY/nodes/ORIGIN"},
            "type": {"type": "string", "description": "io.master-events.event.TYPE, or io.master-events.control.FRAME"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "dataschema": {"type": "string", "format": "uri"},
            "sequence": {"type": "string", "description": "The seq, 20 digits (the sequence extension)."},
            "data": {"$ref": "#/components/schemas/StreamLine"},
        },
    });
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "master-events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Where ns_server's master activity events flow from master-events: its HTTP stream, and the webhook and NATS sinks. Each message is one line of the published stream-line.json (an event, or a heartbeat, gap or reset frame), or a CloudEvents envelope around one. The HTTP routes themselves are in /openapi.json.",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "http": {
                "host": "127.0.0.1:9898",
                "protocol": "http",
                "description": "A master-events server (https with --tls-cert). Its stream channel is read with GET.",
                "security": [{"$ref": "#/components/securitySchemes/basicAuth"}, {"$ref": "#/components/securitySchemes/bearerAuth"}],
            },
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The NATS server a `nats` sink publishes to (its `url`).",
            },
        },
        "channels": {
            "stream": {
                "address": "/diag/masterEvents",
                "title": "The event stream",
                "description": "GET /diag/masterEvents: one line per event or control frame, as NDJSON (application/x-ndjson) or Server-Sent Events (Accept: text/event-stream; `id: HISTORY:SEQ`, `data: LINE`). With format=cloudevents each line is a CloudEvent.",
                "servers": [{"$ref": "#/servers/http"}],
                "messages": {
                    "streamLine": {"$ref": "#/components/messages/streamLine"},
                    "streamLineSse": {"$ref": "#/components/messages/streamLineSse"},
                    "cloudEvent": {"$ref": "#/components/messages/cloudEvent"},
                },
            },
            "webhook": {
                "address": "{url}",
                "title": "The webhook sink's POSTs",
                "description": "A `webhook` sink POSTs batches to its configured `url`: NDJSON of stream lines (format = \"ndjson\"), or a CloudEvents batch (format = \"cloudevents\", application/cloudevents-batch+json).",
                "parameters": {"url": {"description": "The sink's `url`."}},
                "messages": {
                    "ndjsonBatch": {"$ref": "#/components/messages/ndjsonBatch"},
                    "cloudEventsBatch": {"$ref": "#/components/messages/cloudEventsBatch"},
                },
            },
            "natsEvents": {
                "address": "{prefix}.{type}",
                "title": "The nats sink's event subjects",
                "description": "A `nats` sink publishes each event to <subject_prefix>.<type>: over core NATS, or, with `jetstream = { stream = ... }`, into that JetStream stream, each message with the headers Nats-Msg-Id (HISTORY:SEQ), Master-Events-Seq and Master-Events-History, exactly once and in seq order (docs/scaling.md). With format = \"cloudevents\" every message also carries the CloudEvents 1.0 binary-mode headers (ce-id, ce-source, ce-type, ce-time, ce-dataschema, ce-sequence); the payload is always the stream line.",
                "servers": [{"$ref": "#/servers/nats"}],
                "parameters": {
                    "prefix": {"default": NATS_DEFAULT_PREFIX, "description": "The sink's `subject_prefix`."},
                    "type": {"description": "The event type, e.g. vbucketMoveStart."},
                },
                "messages": {"streamLine": {"$ref": "#/components/messages/streamLine"}},
            },
            "natsGaps": {
                "address": "{prefix}.gap",
                "title": "The nats sink's gap subject",
                "description": "What the sink had to drop (or never got), as a gap line (in JetStream mode, Master-Events-Seq is the last seq of its range).",
                "servers": [{"$ref": "#/servers/nats"}],
                "parameters": {
                    "prefix": {"default": NATS_DEFAULT_PREFIX, "description": "The sink's `subject_prefix`."},
                },
                "messages": {"streamLine": {"$ref": "#/components/messages/streamLine"}},
            },
        },
        "operations": {
            "readStream": {
                "action": "receive",
                "channel": {"$ref": "#/channels/stream"},
                "summary": "Read the stream (GET /diag/masterEvents).",
                "messages": [
                    {"$ref": "#/channels/stream/messages/streamLine"},
                    {"$ref": "#/channels/stream/messages/streamLineSse"},
                    {"$ref": "#/channels/stream/messages/cloudEvent"},
                ],
            },
            "receiveWebhook": {
                "action": "receive",
                "channel": {"$ref": "#/channels/webhook"},
                "summary": "What a webhook receiver is sent.",
                "messages": [
                    {"$ref": "#/channels/webhook/messages/ndjsonBatch"},
                    {"$ref": "#/channels/webhook/messages/cloudEventsBatch"},
                ],
            },
            "receiveNatsEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/natsEvents"},
                "summary": "Subscribe to <prefix>.> for every event.",
                "messages": [{"$ref": "#/channels/natsEvents/messages/streamLine"}],
            },
            "receiveNatsGaps": {
                "action": "receive",
                "channel": {"$ref": "#/channels/natsGaps"},
                "summary": "Subscribe to <prefix>.gap for what was missed.",
                "messages": [{"$ref": "#/channels/natsGaps/messages/streamLine"}],
            },
        },
        "components": {
            "schemas": {
                "StreamLine": stream_line_schema(),
                "CloudEvent": cloudevent,
            },
            "messages": {
                "streamLine": {
                    "name": "streamLine",
                    "title": "One stream line",
                    "contentType": "application/x-ndjson",
                    "payload": {"$ref": "#/components/schemas/StreamLine"},
                },
                "streamLineSse": {
                    "name": "streamLineSse",
                    "title": "One stream line as a Server-Sent Event",
                    "contentType": "text/event-stream",
                    "summary": "`id: HISTORY:SEQ` (events) or `event: heartbeat|gap|reset` (frames), then `data: LINE`.",
                    "payload": {"$ref": "#/components/schemas/StreamLine"},
                },
                "cloudEvent": {
                    "name": "cloudEvent",
                    "title": "One stream line as a CloudEvent (format=cloudevents)",
                    "contentType": "application/cloudevents+json",
                    "payload": {"$ref": "#/components/schemas/CloudEvent"},
                },
                "ndjsonBatch": {
                    "name": "ndjsonBatch",
                    "title": "A webhook batch: stream lines, one a line",
                    "contentType": "application/x-ndjson",
                    "payload": {"$ref": "#/components/schemas/StreamLine"},
                },
                "cloudEventsBatch": {
                    "name": "cloudEventsBatch",
                    "title": "A webhook batch of CloudEvents",
                    "contentType": "application/cloudevents-batch+json",
                    "payload": {"type": "array", "items": {"$ref": "#/components/schemas/CloudEvent"}},
                },
            },
            "securitySchemes": {
                "basicAuth": {"type": "userPassword", "description": "A configured user (HTTP Basic); or a token as the password of the user `token`."},
                "bearerAuth": {"type": "httpApiKey", "name": "Authorization", "in": "header", "description": "`Bearer TOKEN`, a token made by `master-events token create`."},
            },
        },
    })
}
