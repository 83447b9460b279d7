//! Staff authentication for every staff route: a bearer JWT (see `security::tokens`) whose user
//! still exists, is not disabled, and has not changed password since the token was issued.

use warp::Filter;

use super::error::ApiError;
use super::{client_ip, with_state, AppState};
use crate::domain::Role;
use crate::security::tokens;
use crate::store::audit::Audit;
use crate::store::staff::{self, StaffUser};

/// The staff member making a request.
#[derive(Debug, Clone)]
pub struct StaffSession {
    pub user: StaffUser,
    pub ip: String,
    /// The token was signed with `JWT_SECRET_PREVIOUS` (rotation in progress).
    pub signed_with_previous: bool,
}

impl StaffSession {
    /// How this person appears as `actor` in the audit log and on ledger entries.
    pub fn actor(&self) -> String {
        format!("staff:{}", self.user.email)
    }

    pub fn role(&self) -> Role {
        self.user.role
    }

    /// An audit entry by this person from this address. During a rotation it also records that
    /// the session was signed with the previous secret, so `crm doctor` can tell when that
    /// secret stops being used.
    pub fn audit(&self, action: &str, target: impl Into<String>) -> Audit {
        let entry = Audit::new(self.actor(), action, target).ip(&self.ip);
        if self.signed_with_previous {
            entry.detail("jwt", "previous")
        } else {
            entry
        }
    }

    /// 403 unless the user is an admin (the guide's admin-only endpoints).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.user.role.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("Administrator role required".into()))
        }
    }

    /// 403 unless the user may read the audit and webhook logs (admins and managers).
    pub fn require_log_rights(&self) -> Result<(), ApiError> {
        if self.user.role.may_read_logs() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("Manager or administrator role required".into()))
        }
    }

    /// 403 unless the user may change KYC (admins and managers).
    pub fn require_kyc_rights(&self) -> Result<(), ApiError> {
        if self.user.role.may_change_kyc() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("Manager or administrator role required".into()))
        }
    }
}

/// Extracts the authenticated staff session, or the 401 to answer. Never rejects, so a route
/// that matched by path answers 401 rather than falling through to 404.
pub fn staff(
    state: AppState,
) -> impl Filter<Extract = (Result<StaffSession, ApiError>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(client_ip())
        .and(with_state(state))
        .then(
            |headers: warp::http::HeaderMap, ip: String, state: AppState| async move {
                let header = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                authenticate(&state, header, ip).await
            },
        )
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

async fn authenticate(state: &AppState, header: Option<String>, ip: String) -> Result<StaffSession, ApiError> {
    let unauthorized = || ApiError::Unauthorized("Authentication required: log in again".into());
    let token = bearer(header.as_deref()).ok_or_else(unauthorized)?;
    let current = tokens::verify_staff(token, &[state.secrets.jwt.bytes()]);
    let previous = || {
        let secret = state.secrets.jwt_previous.as_ref()?;
        tokens::verify_staff(token, &[secret.bytes()])
    };
    let (claims, signed_with_previous) = match current {
        Some(claims) => (claims, false),
        None => (previous().ok_or_else(unauthorized)?, true),
    };
    let user = state
        .db
        .read(move |conn| staff::get(conn, &claims.sub).map(|u| (u, claims)))
        .await
        .map_err(|_| unauthorized());
    let (user, claims) = user?;
    // Disabling or re-enabling the user, a new role and a new password each end every earlier
    // session at once, for good: they move the user's session generation on.
    if user.disabled || claims.gen != user.session_generation {
        return Err(unauthorized());
    }
    Ok(StaffSession {
        user,
        ip,
        signed_with_previous,
    })
}
