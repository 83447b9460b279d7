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
    Ok(value)
}

/// serde_json appends " at line L column C"; people reading a field error don't need it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
