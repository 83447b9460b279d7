//! Query strings of the staff list endpoints: parsed without ever rejecting after the path
//! matched, page sizes, and opaque keyset cursors.

use std::collections::HashMap;

use warp::Filter;

use super::error::ApiError;

pub type Params = HashMap<String, String>;

/// The query string as a map (empty when absent), or the 400 to answer.
pub fn params() -> impl Filter<Extract = (Result<Params, ApiError>,), Error = std::convert::Infallible> + Clone {
    warp::query::<Params>()
        .map(Ok)
        .or(warp::any().map(|| Err(ApiError::BadRequest("invalid query string".into()))))
        .unify()
}

/// 400 for a parameter the endpoint does not take: a misspelt filter (`targt=`) must not
/// silently widen a list or an export to everything.
pub fn only(params: &Params, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(ApiError::BadRequest(format!(
            "unknown query parameter '{}'; use {}",
            unknown.chars().take(40).collect::<String>(),
            allowed.join(", ")
        ))),
    }
}

/// A non-empty parameter, trimmed; an empty one counts as absent, as an HTML form sends it.
pub fn text<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// `limit`: a whole number from 1 to `max`, `default` when absent.
pub fn limit(params: &Params, default: u32, max: u32) -> Result<u32, ApiError> {
    match text(params, "limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be a whole number from 1 to {max}"))),
    }
}

/// Encodes a keyset position so clients treat it as opaque.
pub fn encode_cursor(parts: &[&str]) -> String {
    hex::encode(parts.join("\n"))
}

/// Decodes a cursor made by [`encode_cursor`] with `n` parts; anything else is a 400.
pub fn decode_cursor(raw: &str, n: usize) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor: pass back nextCursor as it was given".into());
    let bytes = hex::decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\n').map(str::to_string).collect();
    if parts.len() != n || parts.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(parts)
}

/// Splits a page fetched with one row more than asked: the rows to show, and whether more exist.
pub fn page<T>(mut rows: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    (rows, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode_cursor(&["2025-01-01T00:00:00.000Z", "abc"]);
        assert_eq!(decode_cursor(&c, 2).unwrap(), ["2025-01-01T00:00:00.000Z", "abc"]);
        for bad in ["zz", "", "00", &encode_cursor(&["only one"])] {
            assert!(decode_cursor(bad, 2).is_err(), "{bad:?} must fail");
        }
    }

    #[test]
    fn limits_outside_the_range_are_refused() {
        let p = |v: &str| Params::from([("limit".to_string(), v.to_string())]);
        assert_eq!(limit(&Params::new(), 50, 100).unwrap(), 50);
        assert_eq!(limit(&p("100"), 50, 100).unwrap(), 100);
        for bad in ["0", "101", "-1", "abc", "1.5"] {
            assert!(limit(&p(bad), 50, 100).is_err(), "{bad} must fail");
        }
    }
}
