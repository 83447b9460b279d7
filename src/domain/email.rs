use std::fmt;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// An email address. It is matched by its key, trimmed and lower-cased, so that one address
/// always matches itself whatever case the Trading Platform or a staff member typed it in; and it
/// remembers the spelling it was sent in (trimmed), which a client's record shows back, so the
/// platform's SSO handler gets the address it registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    key: String,
    sent: String,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Email, Invalid> {
        let sent = raw.trim();
        let s = sent.to_lowercase();
        let bad = || Invalid::new(format!("'{}' is not a valid email address", clip(raw)));
        if s.is_empty() || s.len() > 254 || sent.len() > 254 {
            return Err(bad());
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"".contains(c))
        {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = !domain.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err(bad());
        }
        Ok(Email {
            key: s,
            sent: sent.to_string(),
        })
    }

    /// The key every lookup and uniqueness check uses (lower case).
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The address as it was sent (trimmed).
    pub fn as_sent(&self) -> &str {
        &self.sent
    }

    /// The spelling as sent, when it differs from the key; `None` when it is the key itself.
    pub fn spelling(&self) -> Option<&str> {
        (self.sent != self.key).then_some(self.sent.as_str())
    }
}

/// One address whatever its spelling.
impl PartialEq for Email {
    fn eq(&self, other: &Email) -> bool {
        self.key == other.key
    }
}

impl Eq for Email {}

impl std::hash::Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// Long hostile input is cut before it is echoed back in an error message.
fn clip(s: &str) -> String {
    let mut out = super::clip(s, 64);
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

impl TryFrom<String> for Email {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.key
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased_and_remember_their_spelling() {
        let email = Email::parse("  John.Doe@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "john.doe@example.com");
        assert_eq!(email.spelling(), Some("John.Doe@Example.COM"));
        assert_eq!(email, Email::parse("john.doe@example.com").unwrap());
        assert_eq!(Email::parse(" john.doe@example.com").unwrap().spelling(), None);
    }

    #[test]
    fn malformed_emails_are_refused() {
        let bad = [
            ("", "empty"),
            ("plainaddress", "no @"),
            ("@example.com", "no local part"),
            ("a@", "no domain"),
            ("a@localhost", "domain without a dot"),
            ("a@b@example.com", "two @"),
            ("a b@example.com", "whitespace inside"),
            ("a@example..com", "empty domain label"),
            ("<script>@x.com", "angle brackets"),
            ("a\u{0}@example.com", "NUL byte"),
        ];
        for (input, why) in bad {
            assert!(Email::parse(input).is_err(), "{input:?} must fail: {why}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    proptest! {
        #[test]
        fn parsing_is_case_insensitive_and_idempotent(local in "[a-zA-Z0-9._+-]{1,30}", domain in "[a-zA-Z0-9-]{1,20}\\.[a-zA-Z]{2,6}") {
            let raw = format!("{local}@{domain}");
            let lower = Email::parse(&raw.to_lowercase()).unwrap();
            let upper = Email::parse(&raw.to_uppercase()).unwrap();
            prop_assert_eq!(&lower, &upper);
            prop_assert_eq!(Email::parse(lower.as_str()).unwrap(), lower);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".*") {
            let _ = Email::parse(&s);
        }
    }
}
