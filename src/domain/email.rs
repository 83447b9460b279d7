use std::fmt;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// An email address, trimmed and lower-cased, so that one address always matches itself
/// whatever case the Trading Platform or a staff member typed it in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, Invalid> {
        let s = raw.trim().to_lowercase();
        let bad = || Invalid::new(format!("'{}' is not a valid email address", clip(raw)));
        if s.is_empty() || s.len() > 254 {
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
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  John.Doe@Example.COM ").unwrap().as_str(),
            "john.doe@example.com"
        );
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
