//! The validated field types of webhook payloads. Each refuses bad input with a message that,
//! placed after the field's path by `serde_path_to_error`, tells the platform what to fix.

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::{free_text, is_phone_char, AccountId, Money, MAX_PHONE_CHARS, MAX_TEXT_CHARS};

fn string_or_integer<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.to_string().bytes().all(|b| b.is_ascii_digit()) => Ok(n.to_string()),
        _ => Err(D::Error::custom(format!("{what} must be a string"))),
    }
}

fn string<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        _ => Err(D::Error::custom(format!("{what} must be a string"))),
    }
}

/// An identifier from the platform (`clientId`, `transactionId`, event `id`): 1 to 128 visible
/// characters. A whole JSON number is taken as its digits.
pub struct Reference(pub String);

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string_or_integer(d, "an identifier")?;
        if s.is_empty() || s.chars().count() > 128 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(D::Error::custom(
                "an identifier must be 1 to 128 characters without spaces or control characters",
            ));
        }
        Ok(Reference(s))
    }
}

/// A first or last name: trimmed, at most 100 characters, no control characters.
pub struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d, "a name")?;
        let s = s.trim();
        if s.chars().count() > 100 || s.chars().any(char::is_control) {
            return Err(D::Error::custom(
                "a name must be at most 100 characters without control characters",
            ));
        }
        Ok(Name(s.to_string()))
    }
}

/// A phone number as people write it: digits, spaces and `+-().`, at most 32 characters.
pub struct Phone(pub String);

impl<'de> Deserialize<'de> for Phone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d, "a phone number")?;
        let s = s.trim();
        if s.chars().count() > MAX_PHONE_CHARS
            || !s.chars().all(is_phone_char)
            || (!s.is_empty() && !s.chars().any(|c| c.is_ascii_digit()))
        {
            return Err(D::Error::custom(format!(
                "a phone number must be at most {MAX_PHONE_CHARS} characters of digits, spaces and +-()."
            )));
        }
        Ok(Phone(s.to_string()))
    }
}

/// KYC notes, held to [`free_text`]'s rule like notes on every other surface.
pub struct Notes(pub String);

impl<'de> Deserialize<'de> for Notes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d, "kycNotes")?;
        free_text("kycNotes", &s, MAX_TEXT_CHARS)
            .map(Notes)
            .map_err(D::Error::custom)
    }
}

/// An ISO 4217-style code: three letters, stored upper-case.
pub struct Currency(pub String);

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d, "currency")?;
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(D::Error::custom("currency must be a three-letter code such as \"USD\""));
        }
        Ok(Currency(s.to_ascii_uppercase()))
    }
}

/// An amount that must be above zero: the event name says which way the money moves.
pub struct Positive(pub Money);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Money::deserialize(d)?;
        if m.is_negative() || m.is_zero() {
            return Err(D::Error::custom("amount must be greater than zero"));
        }
        Ok(Positive(m))
    }
}

/// An account's UUID.
pub struct AccountRef(pub String);

impl<'de> Deserialize<'de> for AccountRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d, "accountId")?;
        let id: AccountId = s.trim().parse().map_err(D::Error::custom)?;
        Ok(AccountRef(id.to_string()))
    }
}

/// The event's RFC 3339 time (kept for the audit trail; ordering is by receipt).
pub struct Timestamp(pub String);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d, "timestamp")?;
        chrono::DateTime::parse_from_rfc3339(&s)
            .map_err(|_| D::Error::custom("timestamp must be an RFC 3339 time such as \"2025-10-13T19:00:00Z\""))?;
        Ok(Timestamp(s))
    }
}
