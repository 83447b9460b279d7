//! Webhook signatures (guide, section 1): hex HMAC-SHA256 of the exact bytes received.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which configured secret a valid signature was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedWith {
    Current,
    Previous,
}

impl SignedWith {
    pub fn as_str(self) -> &'static str {
        match self {
            SignedWith::Current => "current",
            SignedWith::Previous => "previous",
        }
    }
}

pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks `header` (hex, optionally `sha256=`-prefixed, surrounding whitespace ignored) against
/// the current secret, then the previous one. Comparison is constant-time (`verify_slice`).
pub fn verify(header: Option<&str>, body: &[u8], current: &[u8], previous: Option<&[u8]>) -> Option<SignedWith> {
    let header = header?.trim();
    let hex_sig = header.strip_prefix("sha256=").unwrap_or(header);
    let expected = hex::decode(hex_sig.to_ascii_lowercase()).ok()?;
    let matches = |secret: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    };
    if matches(current) {
        Some(SignedWith::Current)
    } else if previous.is_some_and(matches) {
        Some(SignedWith::Previous)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_in_every_accepted_form() {
        let body = br#"{"event":"client.registered"}"#;
        let sig = sign(b"secret", body);
        assert_eq!(verify(Some(&sig), body, b"secret", None), Some(SignedWith::Current));
        assert_eq!(
            verify(Some(&format!("sha256={sig}")), body, b"secret", None),
            Some(SignedWith::Current)
        );
        assert_eq!(
            verify(Some(&sig.to_uppercase()), body, b"secret", None),
            Some(SignedWith::Current)
        );
        assert_eq!(
            verify(Some(&sig), body, b"new", Some(b"secret")),
            Some(SignedWith::Previous)
        );
    }

    #[test]
    fn wrong_or_missing_signatures_fail() {
        let body = b"{}";
        let sig = sign(b"secret", body);
        assert_eq!(verify(None, body, b"secret", None), None);
        assert_eq!(verify(Some(""), body, b"secret", None), None);
        assert_eq!(verify(Some("zz"), body, b"secret", None), None);
        assert_eq!(verify(Some(&sig), b"{} ", b"secret", None), None);
        assert_eq!(verify(Some(&sig), body, b"other", None), None);
        assert_eq!(verify(Some(&sig[..10]), body, b"secret", None), None);
    }
}
