//! `GET /api/openapi.json`: the API reference, hand-written in `openapi.json` beside this file
//! and embedded in the binary. `tests/openapi.rs` fails when a route exists that it does not
//! describe.

use warp::filters::BoxedFilter;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::reply::{Reply, Response};
use warp::Filter;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path!("api" / "openapi.json")
        .and(warp::get())
        .map(|| {
            let mut resp = DOCUMENT.into_response();
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_in_openapi_3() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    }
}
