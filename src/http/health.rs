//! `GET /healthz` (or HEAD): 200 when the database answers and its writes can be made durable,
//! 503 otherwise (after a failed write to the disk the CRM serves nothing more: see
//! `store::durability`).

use serde_json::json;
use warp::Filter;

use super::error::{respond, ApiError};
use super::{get_or_head, with_state, AppState};

pub fn routes(state: AppState) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    warp::path!("healthz")
        .and(get_or_head())
        .and(with_state(state))
        .then(|state: AppState| async move { respond(check(state).await) })
        .boxed()
}

async fn check(state: AppState) -> Result<impl warp::Reply, ApiError> {
    if state.db.sync_failed() {
        return Err(ApiError::Unavailable);
    }
    state
        .db
        .read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(warp::reply::json(&json!({ "status": "ok" })))
}
