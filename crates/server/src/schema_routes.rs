//! The schema routes: `GET /schemas/` (the index of the published JSON Schemas),
//! `GET /schemas/{path}` (one of them, as built into the binary), and the API
//! documents `GET /openapi.json` and `GET /asyncapi.json` ([`crate::openapi`],
//! [`crate::asyncapi`]; generated once, then served from memory).
//!
//! Owns: the two handlers. Promises: they serve exactly the committed `schemas/`
//! (`master_events_events::published`), read role needed (the route table).

use super::*;

/// `GET /schemas/`: the published schema files.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct SchemaIndex {
    /// Their paths under `/schemas/` (`event/becameMaster.json`, ...).
    schemas: Vec<&'static str>,
}

pub(crate) async fn schema_index() -> Response {
    json_response(
        StatusCode::OK,
        &SchemaIndex {
            schemas: published::FILES.iter().map(|(p, _)| *p).collect(),
        },
    )
}

pub(crate) async fn openapi_document() -> Response {
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    api_document(DOC.get_or_init(|| crate::openapi::to_bytes(&crate::openapi::document())))
}

pub(crate) async fn asyncapi_document() -> Response {
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    api_document(DOC.get_or_init(|| crate::openapi::to_bytes(&crate::asyncapi::document())))
}

fn api_document(bytes: &'static [u8]) -> Response {
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) async fn schema_file(Path(path): Path<String>) -> Response {
    match published::get(&path) {
        Some(text) => {
            let mut resp = (StatusCode::OK, text).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/schema+json"),
            );
            resp
        }
        None => error_response(
            StatusCode::NOT_FOUND,
            format!("no schema {path:?}; GET /schemas/ lists them"),
        ),
    }
}
