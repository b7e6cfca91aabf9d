//! The schema routes: `GET /schemas/` (the index of the published JSON Schemas)
//! and `GET /schemas/{path}` (one of them, as built into the binary).
//!
//! Owns: the two handlers. Promises: they serve exactly the committed `schemas/`
//! (`master_events_events::published`), read role needed (the route table).

use super::*;

#[derive(Serialize)]
pub(crate) struct SchemaIndex {
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
