//! The one error type of the HTTP layer, and the recover handler that turns every rejection
//! into `{"error": "..."}` with a fitting status.

use std::convert::Infallible;

use serde_json::json;
use serde_json::value::RawValue;
use warp::http::{header, StatusCode};
use warp::reply::{Reply, Response};
use warp::Rejection;

use crate::domain::{Invalid, Money};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body was not received in time")]
    Timeout,
    #[error("too many requests")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    /// The guide's insufficient-funds body: the amounts are JSON numbers there.
    #[error("{message}")]
    InsufficientFunds {
        message: String,
        required: Money,
        available: Money,
    },
    #[error("the service is temporarily unavailable")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl warp::reject::Reject for ApiError {}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            StoreError::InsufficientFunds {
                fund,
                required,
                available,
            } => ApiError::InsufficientFunds {
                message: format!("Insufficient {fund} funds"),
                required,
                available,
            },
            StoreError::Unavailable => ApiError::Unavailable,
            StoreError::Sqlite(e) => ApiError::Internal(e.into()),
            StoreError::Other(e) => ApiError::Internal(e),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InsufficientFunds { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client sees. Internal errors are logged with their cause chain and
    /// reported as a generic message only.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "Internal server error".into(),
            ApiError::TooManyRequests { message, .. } => message.clone(),
            ApiError::Unavailable => "The database is busy; nothing was changed, please retry".into(),
            other => other.to_string(),
        }
    }

    /// The JSON body, with fields in the order the guide shows them (`error`, `required`,
    /// `available`), which a `serde_json::Value` map would sort.
    pub fn body(&self) -> Box<RawValue> {
        let body = match self {
            ApiError::InsufficientFunds {
                message,
                required,
                available,
            } => ErrorBody {
                error: message.clone(),
                required: Some(required.to_json_number()),
                available: Some(available.to_json_number()),
            },
            other => ErrorBody {
                error: other.public_message(),
                required: None,
                available: None,
            },
        };
        serde_json::value::to_raw_value(&body).unwrap_or_else(|_| fallback_body())
    }
}

#[derive(serde::Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    required: Option<serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<serde_json::Number>,
}

fn fallback_body() -> Box<RawValue> {
    RawValue::from_string(r#"{"error":"Internal server error"}"#.to_string()).unwrap_or_default()
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        self.render()
    }
}

impl ApiError {
    /// The response for this error, without logging it (a rejection holds it by reference).
    fn render(&self) -> Response {
        let mut resp = warp::reply::with_status(warp::reply::json(&self.body()), self.status()).into_response();
        match self {
            ApiError::TooManyRequests { retry_after_secs, .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, (*retry_after_secs).into());
            }
            ApiError::Unavailable => {
                resp.headers_mut().insert(header::RETRY_AFTER, 1.into());
            }
            ApiError::PayloadTooLarge(_) | ApiError::Timeout => close_connection(&mut resp),
            _ => {}
        }
        resp
    }
}

/// Marks an answer to a request whose body was left unread on the connection: hyper cannot
/// reuse that connection, and without this a keep-alive client sends its next request into a
/// closed socket.
pub fn close_connection(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
}

/// Renders a handler's result: success as it is, errors as JSON.
pub fn respond<T: Reply>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(reply) => reply.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every rejection warp produces ends here, so no response is ever plain text.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    use warp::reject::*;
    let error = if let Some(e) = rejection.find::<ApiError>() {
        // ApiError is not Clone (it may hold an anyhow chain); rebuild the parts that matter.
        return Ok(e.render());
    } else if rejection.is_not_found() {
        ApiError::NotFound("Not found".into())
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        return Ok(status_json(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"));
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge("Request body too large".into())
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        ApiError::UnsupportedMediaType("Content-Type must be application/json".into())
    } else if let Some(e) = rejection.find::<InvalidQuery>() {
        ApiError::BadRequest(format!("invalid query string: {e}"))
    } else if let Some(e) = rejection.find::<MissingHeader>() {
        ApiError::BadRequest(format!("missing header {}", e.name()))
    } else if let Some(e) = rejection.find::<InvalidHeader>() {
        ApiError::BadRequest(format!("invalid header {}", e.name()))
    } else if rejection.find::<LengthRequired>().is_some() {
        return Ok(status_json(StatusCode::LENGTH_REQUIRED, "Content-Length required"));
    } else {
        ApiError::BadRequest("Bad request".into())
    };
    Ok(error.into_response())
}

fn status_json(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(warp::reply::json(&json!({ "error": message })), status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insufficient_funds_body_is_byte_for_byte_the_guides() {
        let e = ApiError::InsufficientFunds {
            message: "Insufficient real funds for withdrawal".into(),
            required: Money::parse("500").unwrap(),
            available: Money::parse("250").unwrap(),
        };
        assert_eq!(
            e.body().get(),
            r#"{"error":"Insufficient real funds for withdrawal","required":500.00,"available":250.00}"#
        );
    }

    #[test]
    fn internal_errors_tell_the_client_nothing() {
        let e = ApiError::Internal(anyhow::anyhow!("disk /dev/sda1 exploded at 0xdeadbeef"));
        assert_eq!(e.body().get(), r#"{"error":"Internal server error"}"#);
    }
}
