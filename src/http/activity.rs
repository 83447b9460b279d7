//! The activity timeline over HTTP: its paging parameters (shared with the service API's
//! `GET /api/service/clients/:email/activity`) and the staff route `GET /api/clients/:id/activity`.

use percent_encoding::percent_decode_str;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use super::auth::{self, StaffSession};
use super::error::{respond, ApiError};
use super::{with_state, AppState};
use crate::domain::ClientId;
use crate::store::activity::{self, Cursor};
use crate::store::clients;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// `?limit=` (1-200, default 50) and `?before=` (a `nextCursor` from the previous page).
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub before: Option<Cursor>,
    pub limit: u32,
}

impl PageRequest {
    pub fn parse(query: &str) -> Result<PageRequest, ApiError> {
        let mut page = PageRequest {
            before: None,
            limit: DEFAULT_LIMIT,
        };
        let (mut seen_limit, mut seen_before) = (false, false);
        for (key, value) in query_pairs(query)? {
            let seen = match key.as_str() {
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
                        })?;
                    &mut seen_limit
                }
                "before" => {
                    page.before = Some(Cursor::parse(&value)?);
                    &mut seen_before
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter '{}': expected limit or before",
                        other.chars().take(40).collect::<String>()
                    )))
                }
            };
            if std::mem::replace(seen, true) {
                return Err(ApiError::BadRequest(format!("{key} is given more than once")));
            }
        }
        Ok(page)
    }
}

/// The query string, or "" when there is none. Never rejects, so a matched route answers itself.
pub fn raw_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// `application/x-www-form-urlencoded` pairs, decoded; malformed UTF-8 is a 400.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| ApiError::BadRequest("the query string is not valid UTF-8".into()))
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// `GET /api/clients/:id/activity`: the same timeline for any signed-in staff member.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "clients" / String / "activity")
        .and(warp::get())
        .and(auth::staff(state.clone()))
        .and(raw_query())
        .and(with_state(state))
        .then(
            |id: String, session: Result<StaffSession, ApiError>, query: String, state: AppState| async move {
                respond(staff_timeline(state, session, id, query).await)
            },
        )
        .boxed()
}

async fn staff_timeline(
    state: AppState,
    session: Result<StaffSession, ApiError>,
    id: String,
    query: String,
) -> Result<impl warp::Reply, ApiError> {
    session?;
    let client_id = id.parse::<ClientId>()?.to_string();
    let page = PageRequest::parse(&query)?;
    let timeline = state
        .db
        .read(move |conn| {
            clients::get(conn, &client_id)?;
            activity::timeline(conn, &client_id, page.before.as_ref(), page.limit)
        })
        .await?;
    Ok(warp::reply::json(&timeline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_to_fifty_and_accepts_up_to_two_hundred() {
        assert_eq!(PageRequest::parse("").unwrap().limit, 50);
        assert_eq!(PageRequest::parse("limit=200").unwrap().limit, 200);
        assert_eq!(PageRequest::parse("limit=1&").unwrap().limit, 1);
    }

    #[test]
    fn bad_paging_parameters_are_refused() {
        for (query, why) in [
            ("limit=0", "an empty page is no page"),
            ("limit=201", "above the maximum"),
            ("limit=-1", "negative"),
            ("limit=ten", "not a number"),
            ("limit=", "empty"),
            ("limit=1.5", "not whole"),
            ("limit=1&limit=2", "ambiguous"),
            ("before=xyz", "not a cursor"),
            ("page=2", "unknown parameter, probably a typo"),
            ("limit=%FF", "not UTF-8"),
        ] {
            assert!(PageRequest::parse(query).is_err(), "{query}: {why}");
        }
    }
}
