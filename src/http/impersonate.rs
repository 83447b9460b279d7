//! `POST /api/clients/:id/impersonate` (guide, section 3): an admin gets a 15-minute SSO token
//! for the Trading Platform, signed with `SSO_SECRET`, with exactly the guide's payload
//! `{clientEmail, impersonatedBy, iat, exp}`. The session row and the audit entry are written in
//! the same transaction; the token itself is never stored or logged.

use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use super::auth::{self, StaffSession};
use super::error::{respond, ApiError};
use super::refusals::{audited, path_target};
use super::{with_state, AppState};
use crate::domain::{new_uuid, ClientId};
use crate::security::tokens;
use crate::store::audit::{self, actions, Audit};
use crate::store::sso::{self, SsoSession};
use crate::store::{clients, now, StoreError};

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    warp::path!("api" / "clients" / String / "impersonate")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(auth::staff(state))
        .then(|id, state, session| async move { respond(impersonate(state, session, id).await) })
        .boxed()
}

async fn impersonate(
    state: AppState,
    session: Result<StaffSession, ApiError>,
    raw_id: String,
) -> Result<impl Reply, ApiError> {
    let session = session?;
    // The role is checked before the id, and a malformed id is audited like any refusal.
    let parsed = raw_id.parse::<ClientId>();
    let entry = session
        .audit(actions::IMPERSONATE, path_target("client", &raw_id, &parsed))
        .detail("staffEmail", session.user.email.clone());
    let result = async {
        session.require_admin()?;
        start_session(&state, &session, parsed?.to_string(), entry.clone()).await
    }
    .await;
    let (token, claims) = audited(&state, entry, result).await?;
    let base = state.settings.trading_platform_url.trim_end_matches('/');
    let url = format!("{base}/sso/impersonate?token={token}");
    Ok(warp::reply::json(&SsoReply {
        sso_token: token,
        sso_url: url,
        expires_in: claims.exp - claims.iat,
    }))
}

/// The guide's answer, in its order (a `json!` map would sort the keys).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SsoReply {
    sso_token: String,
    sso_url: String,
    expires_in: i64,
}

/// Issues the token for the client's email and records the session, in one transaction.
async fn start_session(
    state: &AppState,
    session: &StaffSession,
    client_id: String,
    entry: Audit,
) -> Result<(String, tokens::SsoClaims), ApiError> {
    let secret = state.secrets.sso.clone();
    let (staff_id, staff_email) = (session.user.id.clone(), session.user.email.clone());
    Ok(state
        .db
        .write(move |tx| {
            let client = clients::get(tx, &client_id)?;
            let (token, claims) = tokens::issue_sso(secret.bytes(), &client.email, &staff_email)?;
            let row = SsoSession {
                id: new_uuid().to_string(),
                client_id: client.id.clone(),
                staff_id: staff_id.clone(),
                staff_email: staff_email.clone(),
                issued_at: now(),
                expires_at: rfc3339(claims.exp)?,
            };
            sso::insert(tx, &row)?;
            let entry = entry
                .clone()
                .detail("clientEmail", client.email.clone())
                .detail("sessionId", row.id.clone())
                .detail("expiresAt", row.expires_at.clone());
            audit::append(tx, &entry)?;
            Ok((token, claims))
        })
        .await?)
}

fn rfc3339(epoch_secs: i64) -> Result<String, StoreError> {
    chrono::DateTime::from_timestamp(epoch_secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("SSO expiry out of range")))
}
