//! Staff authentication for every staff route: a bearer JWT (see `security::tokens`) whose user
//! still exists, is not disabled, and has had none of the changes that end sessions (a password,
//! role or enabled-state change) since the token was issued.

use serde_json::json;
use warp::filters::path::FullPath;
use warp::http::{HeaderMap, Method};
use warp::Filter;

use super::error::ApiError;
use super::refusals::{record, recorded_path, refusals_entry};
use super::{client_ip, with_state, AppState};
use crate::domain::Role;
use crate::security::tokens;
use crate::store::audit::{self, actions, actors, Audit};
use crate::store::staff::{self, StaffUser};
use crate::store::StoreError;

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
/// that matched by path answers 401 rather than falling through to 404. A refusal is audited
/// (`auth.unauthorized`, the guide's "all authentication attempts"), at most
/// `ratelimit::UNAUTHENTICATED_AUDITS_PER_MINUTE` entries per address and minute.
pub fn staff(
    state: AppState,
) -> impl Filter<Extract = (Result<StaffSession, ApiError>,), Error = std::convert::Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(client_ip())
        .and(with_state(state))
        .then(
            |method: Method, path: FullPath, headers: HeaderMap, ip: String, state: AppState| async move {
                let header = headers.get("authorization").and_then(|v| v.to_str().ok());
                let refused = match authenticate(&state, header, ip.clone()).await {
                    Ok(session) => return Ok(session),
                    // The database could not tell (busy, unavailable): not the caller's doing.
                    Err(Failure::Store(e)) => return Err(e.into()),
                    Err(Failure::Refused(refused)) => refused,
                };
                // Counted per address (an IPv6 /64) and target, so refusals carried into an entry
                // about one staff member's genuine token are that member's, not other refusals'.
                let key = format!("{} {}", super::address_key(&ip), refused.target);
                if let Some(unrecorded) = state.staff_unauthorized_notices.allow(&key) {
                    let details = json!({
                        "method": method.as_str(),
                        "path": recorded_path(path.as_str()),
                        "reason": refused.reason,
                    });
                    let entry = refusals_entry(
                        actors::ANONYMOUS,
                        actions::STAFF_UNAUTHORIZED,
                        refused.target,
                        ip,
                        details,
                        unrecorded,
                    );
                    record(&state, entry).await;
                }
                Err(ApiError::Unauthorized("Authentication required: log in again".into()))
            },
        )
}

enum Failure {
    Refused(Refused),
    Store(StoreError),
}

impl From<Refused> for Failure {
    fn from(refused: Refused) -> Failure {
        Failure::Refused(refused)
    }
}

/// Why a staff request was not authenticated, for its audit entry (never the token itself).
struct Refused {
    reason: &'static str,
    /// `staff:<email>` when the token was genuine but names a user it no longer admits.
    target: String,
}

impl Refused {
    fn token(reason: &'static str) -> Refused {
        Refused {
            reason,
            target: String::new(),
        }
    }

    fn session(reason: &'static str, user: &StaffUser) -> Refused {
        Refused {
            reason,
            target: audit::target("staff", &user.email),
        }
    }
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

async fn authenticate(state: &AppState, header: Option<&str>, ip: String) -> Result<StaffSession, Failure> {
    let token = match (header, bearer(header)) {
        (_, Some(token)) => token,
        (None, None) => return Err(Refused::token("no Authorization header").into()),
        (Some(_), None) => return Err(Refused::token("not a Bearer token").into()),
    };
    let current = tokens::verify_staff(token, &[state.secrets.jwt.bytes()]);
    let previous = || {
        let secret = state.secrets.jwt_previous.as_ref()?;
        tokens::verify_staff(token, &[secret.bytes()])
    };
    let (claims, signed_with_previous) = match current {
        Some(claims) => (claims, false),
        None => (
            previous().ok_or_else(|| Refused::token("a token that is malformed, forged or expired"))?,
            true,
        ),
    };
    let (user, claims) = match state
        .db
        .read(move |conn| staff::get(conn, &claims.sub).map(|u| (u, claims)))
        .await
    {
        Ok(found) => found,
        Err(StoreError::NotFound(_)) => return Err(Refused::token("a token for a user that does not exist").into()),
        Err(e) => return Err(Failure::Store(e)),
    };
    // Disabling or re-enabling the user, a new role and a new password each end every earlier
    // session at once, for good: they move the user's session generation on. A token must also
    // name the role the user has.
    if user.disabled {
        return Err(Refused::session("a disabled user", &user).into());
    }
    match claims.gen {
        None => return Err(Refused::session("a session from before session generations (V7)", &user).into()),
        Some(generation) if generation != user.session_generation || claims.role != user.role => {
            return Err(Refused::session("a session that has ended", &user).into())
        }
        Some(_) => {}
    }
    Ok(StaffSession {
        user,
        ip,
        signed_with_previous,
    })
}
