//! Staff session tokens and SSO impersonation tokens: both HS256 JWTs, with rules that keep
//! either from ever being accepted as the other (different secrets, and a staff token must
//! carry `iss = "crm"` and `typ = "staff"`, which an SSO token never has).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::Role;

pub const STAFF_ISSUER: &str = "crm";
pub const STAFF_TYPE: &str = "staff";
/// A staff session lasts a working day.
pub const STAFF_TTL_SECS: i64 = 8 * 3600;
/// The guide: SSO tokens expire after 15 minutes.
pub const SSO_TTL_SECS: i64 = 900;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaffClaims {
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub typ: String,
    /// The user's session generation when the token was issued (see `staff::set_role` and the
    /// others that move it on). Tokens from before it existed have none and are refused, as a
    /// session that ended with the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen: Option<i64>,
}

/// The guide's SSO payload, exactly: `{clientEmail, impersonatedBy, iat, exp}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SsoClaims {
    pub client_email: String,
    pub impersonated_by: String,
    pub iat: i64,
    pub exp: i64,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An HS256 JWT of `claims`. The header is written `{"alg":"HS256","typ":"JWT"}`, key for key as
/// in the guide's example token (`eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...`); jsonwebtoken writes
/// `typ` first, which any JWT library accepts but a platform comparing prefixes would not.
fn sign_hs256(claims: &impl Serialize, secret: &[u8]) -> anyhow::Result<String> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)?;
    mac.update(signing_input.as_bytes());
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    ))
}

pub fn issue_staff(
    secret: &[u8],
    staff_id: &str,
    role: Role,
    generation: i64,
) -> anyhow::Result<(String, StaffClaims)> {
    let iat = now_secs();
    let claims = StaffClaims {
        sub: staff_id.to_string(),
        role,
        iat,
        exp: iat + STAFF_TTL_SECS,
        iss: STAFF_ISSUER.into(),
        typ: STAFF_TYPE.into(),
        gen: Some(generation),
    };
    Ok((sign_hs256(&claims, secret)?, claims))
}

/// Accepts a staff token signed with any of `secrets` (the current one, then the previous one
/// during rotation). No leeway: an expired token is expired.
pub fn verify_staff(token: &str, secrets: &[&[u8]]) -> Option<StaffClaims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_issuer(&[STAFF_ISSUER]);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
    secrets.iter().find_map(|secret| {
        decode::<StaffClaims>(token, &DecodingKey::from_secret(secret), &validation)
            .ok()
            .map(|data| data.claims)
            .filter(|c| c.typ == STAFF_TYPE && c.iat <= now_secs() + 5)
    })
}

pub fn issue_sso(secret: &[u8], client_email: &str, impersonated_by: &str) -> anyhow::Result<(String, SsoClaims)> {
    let iat = now_secs();
    let claims = SsoClaims {
        client_email: client_email.to_string(),
        impersonated_by: impersonated_by.to_string(),
        iat,
        exp: iat + SSO_TTL_SECS,
    };
    Ok((sign_hs256(&claims, secret)?, claims))
}

/// What the Trading Platform does with an SSO token; used by the tests and `crm doctor`.
pub fn verify_sso(token: &str, secret: &[u8]) -> Option<SsoClaims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iat"]);
    decode::<SsoClaims>(token, &DecodingKey::from_secret(secret), &validation)
        .ok()
        .map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_tokens_round_trip_with_current_or_previous_secret() {
        let (token, _) = issue_staff(b"old", "u1", Role::Admin, 0).unwrap();
        assert_eq!(verify_staff(&token, &[b"old"]).unwrap().sub, "u1");
        assert_eq!(verify_staff(&token, &[b"new", b"old"]).unwrap().role, Role::Admin);
        assert!(verify_staff(&token, &[b"new"]).is_none());
    }

    #[test]
    fn an_sso_token_is_never_a_staff_token_even_with_the_same_secret() {
        let (sso, _) = issue_sso(b"same", "c@example.com", "admin@example.com").unwrap();
        assert!(verify_staff(&sso, &[b"same"]).is_none());
        let (staff, _) = issue_staff(b"same", "u1", Role::Admin, 0).unwrap();
        assert!(verify_sso(&staff, b"same").is_none());
    }

    #[test]
    fn tokens_start_with_the_guides_header() {
        let (sso, _) = issue_sso(b"s", "c@example.com", "admin@example.com").unwrap();
        let (staff, _) = issue_staff(b"s", "u1", Role::Admin, 0).unwrap();
        for token in [sso, staff] {
            assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."), "{token}");
        }
    }

    #[test]
    fn sso_tokens_last_fifteen_minutes_and_carry_the_guide_payload() {
        let (token, claims) = issue_sso(b"s", "c@example.com", "admin@example.com").unwrap();
        assert_eq!(claims.exp - claims.iat, 900);
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&base64_decode(payload)).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["clientEmail", "exp", "iat", "impersonatedBy"]);
    }

    #[test]
    fn unsigned_and_expired_tokens_are_refused() {
        // alg=none, with a valid-looking payload.
        let header = base64_encode(br#"{"alg":"none","typ":"JWT"}"#);
        let now = now_secs();
        let body = base64_encode(
            format!(
                r#"{{"sub":"u1","role":"admin","iat":{now},"exp":{},"iss":"crm","typ":"staff","gen":0}}"#,
                now + 60
            )
            .as_bytes(),
        );
        assert!(verify_staff(&format!("{header}.{body}."), &[b"k"]).is_none());
        let expired = StaffClaims {
            sub: "u1".into(),
            role: Role::Admin,
            iat: now - 100,
            exp: now - 1,
            iss: STAFF_ISSUER.into(),
            typ: STAFF_TYPE.into(),
            gen: Some(0),
        };
        let token = sign_hs256(&expired, b"k").unwrap();
        assert!(verify_staff(&token, &[b"k"]).is_none());
    }

    fn base64_encode(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
    }
}
