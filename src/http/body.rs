//! Reading request bodies safely: bounded in size whether or not `Content-Length` is sent
//! (warp's `content_length_limit` only reads the header), bounded in time, and parsed into
//! typed requests with errors that name the offending field.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::Filter;

use super::error::ApiError;
use super::server::BodyTimeout;

/// Staff and service requests are small; webhooks have their own configurable limit.
pub const DEFAULT_LIMIT: usize = 64 * 1024;
/// A client that trickles its body slower than this is cut off, unless the accept loop says
/// otherwise (`body_timeout_secs`).
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Like [`raw`], for a JSON request (every staff and service body): a body declared as any other
/// content type is refused (400). For logins it also keeps other websites out: a browser sends a
/// cross-origin `text/plain` or form body without asking, but a JSON one only after a preflight
/// the CRM never grants, so a page a staff member visits cannot send logins (and burn the
/// office's throttle) in their name.
pub fn json(
    limit: usize,
) -> impl Filter<Extract = (Result<Bytes, ApiError>,), Error = std::convert::Infallible> + Clone {
    warp::header::optional::<String>("content-type")
        .recover(|_| async { Ok::<_, std::convert::Infallible>(None) })
        .unify()
        .and(raw(limit))
        .map(|content_type: Option<String>, body: Result<Bytes, ApiError>| {
            let is_json = content_type
                .as_deref()
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
            // A body refused already (413, 408) keeps its own answer; no body at all (a request
            // that takes the defaults) has nothing to declare.
            let no_body = |b: &Bytes| b.iter().all(u8::is_ascii_whitespace);
            if is_json || body.as_ref().map_or(true, no_body) {
                body
            } else {
                Err(ApiError::BadRequest("Content-Type must be application/json".into()))
            }
        })
}

/// Extracts the raw body, or the reason it was refused (413, 408). Never rejects, so the handler
/// decides what to record about a refused request.
pub fn raw(
    limit: usize,
) -> impl Filter<Extract = (Result<Bytes, ApiError>,), Error = std::convert::Infallible> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::ext::optional::<BodyTimeout>())
        .and(warp::body::stream())
        .then(
            move |declared: Option<u64>, timeout: Option<BodyTimeout>, stream| async move {
                if declared.is_some_and(|n| n > limit as u64) {
                    return Err(too_large(limit));
                }
                let timeout = timeout.map_or(BODY_TIMEOUT, |t| t.0);
                match tokio::time::timeout(timeout, collect(stream, limit)).await {
                    Ok(result) => result,
                    Err(_) => Err(ApiError::Timeout),
                }
            },
        )
        .recover(|_| async {
            Ok::<_, std::convert::Infallible>(Err(ApiError::BadRequest("unreadable request body".into())))
        })
        .unify()
}

async fn collect<S, B>(stream: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| ApiError::BadRequest("the request body could not be read".into()))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(too_large(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("Request body too large: the limit is {limit} bytes"))
}

/// Parses a JSON object body into `T`. Errors name the field path (`data.amount: ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde accepts a JSON array for a struct (fields by position); no request of ours is one.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = strip_position(&inner.to_string());
        // serde_path_to_error writes "?" where a syntax error left no field to name.
        if path.is_empty() || path == "." || path == "?" {
            ApiError::BadRequest(format!("invalid JSON body: {msg}"))
        } else {
            ApiError::BadRequest(format!("{path}: {msg}"))
        }
    })?;
    de.end()
        .map_err(|_| ApiError::BadRequest("invalid JSON body: trailing characters after the object".into()))?;
    refuse_duplicate_keys(bytes)?;
    Ok(value)
}

/// Refuses a body in which some object names a key twice. serde keeps the last one silently
/// (for struct fields nested in a map, and for `Map` fields such as a webhook's `data`), so
/// `{"amount":"1","amount":"1000"}` would be booked as 1000 while another reader of the same
/// signed bytes (a log, the platform's own records) may well see 1: an ambiguous body is refused.
fn refuse_duplicate_keys(bytes: &[u8]) -> Result<(), ApiError> {
    serde_json::from_slice::<UniqueKeys>(bytes)
        .map(|_| ())
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {}", strip_position(&e.to_string()))))
}

/// Any JSON value, checked for repeated keys on the way through (serde_json's nesting limit
/// still applies, so deep bodies cannot exhaust the stack here either).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    // With `arbitrary_precision` a number also arrives here, as a one-key map.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("an object names the same key twice"));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// serde_json appends " at line L column C"; people reading a field error don't need it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[allow(dead_code)]
        data: serde_json::Map<String, serde_json::Value>,
    }

    #[test]
    fn a_key_named_twice_at_any_depth_is_refused() {
        assert!(parse_json::<Body>(br#"{"data": {"amount": "1", "n": 100.5, "list": [{"a": 1}]}}"#).is_ok());
        for body in [
            r#"{"data": {"amount": "1", "amount": "1000"}}"#,
            r#"{"data": {"list": [{"a": 1, "a": 2}]}}"#,
            r#"{"data": {"x": {"y": {}, "y": {}}}}"#,
        ] {
            let e = parse_json::<Body>(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("same key twice"), "{body}: {e}");
        }
    }
}
