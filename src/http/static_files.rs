//! The admin page: the files under `static/`, embedded in the binary at build time and served at
//! `/` (index.html) and `/<file>`.
//!
//! rust-embed's own `warp` feature targets warp 0.3, hence this small filter. Files are looked up
//! in the compiled-in table only (`debug-embed` is on, so debug builds never read the disk either),
//! and a path is refused before the lookup unless every segment is a plain file or folder name:
//! `..`, `.`, hidden names, empty segments, backslashes and percent-escapes (`%2e%2e`) never reach
//! it, so no request can name a file outside `static/`.

use rust_embed::RustEmbed;
use warp::filters::BoxedFilter;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::path::FullPath;
use warp::reply::Response;
use warp::Filter;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// Every embedded file by its path, `GET` or `HEAD` only. A path that names no file is rejected
/// as not found (never answered here), so the API's own 404/405 answers are not masked; a file
/// requested with another method gets 405.
pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path::full()
        .and_then(|path: FullPath| async move { asset(path.as_str()).ok_or_else(warp::reject::not_found) })
        .and(super::get_or_head())
        .map(|(name, body): (String, Vec<u8>)| reply(&name, body))
        .boxed()
}

/// Every request path that names a file of the page (`/` for `index.html`).
pub fn request_paths() -> impl Iterator<Item = String> {
    std::iter::once("/".to_string()).chain(Assets::iter().map(|name| format!("/{name}")))
}

/// The embedded file a request path names, with its name, if the path is a safe one.
fn asset(request_path: &str) -> Option<(String, Vec<u8>)> {
    let name = match request_path.strip_prefix('/')? {
        "" => "index.html",
        other => other,
    };
    let safe_segment = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !name.split('/').all(safe_segment) {
        return None;
    }
    let file = Assets::get(name)?;
    Some((name.to_string(), file.data.into_owned()))
}

fn reply(name: &str, body: Vec<u8>) -> Response {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    // Text files are all UTF-8; saying so stops a browser from guessing.
    let content_type = match mime.type_() {
        mime_guess::mime::TEXT => format!("{mime}; charset=utf-8"),
        _ if mime.subtype() == mime_guess::mime::JAVASCRIPT => format!("{mime}; charset=utf-8"),
        _ => mime.to_string(),
    };
    let mut resp = Response::new(body.into());
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn the_root_is_the_index_page() {
        assert_eq!(asset("/").map(|(n, _)| n).as_deref(), Some("index.html"));
    }

    #[test]
    fn paths_that_could_leave_the_folder_name_nothing() {
        for (path, why) in [
            ("/../Cargo.toml", "parent folder"),
            ("/js/../../Cargo.toml", "parent folder further down"),
            ("/%2e%2e/Cargo.toml", "percent-encoded parent folder"),
            ("/%2E%2E/Cargo.toml", "upper-case percent-encoding"),
            ("/..%2fCargo.toml", "encoded slash"),
            ("/./index.html", "current-folder segment"),
            ("//index.html", "empty segment"),
            ("/js/", "trailing slash names a folder"),
            ("/..\\Cargo.toml", "backslash"),
            ("/.hidden", "hidden file"),
            ("index.html", "no leading slash"),
        ] {
            assert!(asset(path).is_none(), "{path} must name nothing: {why}");
        }
    }
}
