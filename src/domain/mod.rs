//! Parsed types that cannot hold bad values. Plain Rust: no I/O, no HTTP, no SQL.
//!
//! Requests are turned into these at the edge; everything below the HTTP layer accepts only them.

mod email;
mod enums;
mod ids;
mod leverage;
mod money;

pub use email::Email;
pub use enums::{FundType, KycStatus, Role};
pub use ids::{new_uuid, AccountId, ClientId, StaffId};
pub use leverage::Leverage;
pub use money::{Money, OUT_OF_RANGE};

/// The longest note or KYC remark, in characters, whichever surface it comes through (webhook,
/// service API, admin page): text one of them accepted can always be sent back through another.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// The longest phone number, in characters (see [`is_phone_char`]): what a webhook may set, and
/// so the most digits a search term can share with a phone.
pub const MAX_PHONE_CHARS: usize = 32;

/// What a phone number is written with: digits, spaces and `+-().`. A webhook's phone holds
/// nothing else, and a search term made of them is read as (part of) a phone number.
pub fn is_phone_char(c: char) -> bool {
    c.is_ascii_digit() || " +-().".contains(c)
}

/// Text people write (notes, KYC remarks, an adjustment's reason), held to one rule on every
/// surface: trimmed, at most `max` characters, and no control characters but line breaks and
/// tabs (a NUL or an escape sequence would reach the terminals and spreadsheets that read the
/// ledger, the audit log and its CSV).
pub fn free_text(field: &str, s: &str, max: usize) -> Result<String, Invalid> {
    let s = s.trim();
    if s.chars().count() > max || s.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(Invalid(format!(
            "{field} must be at most {max} characters, without control characters other than line breaks and tabs"
        )));
    }
    Ok(s.to_string())
}

/// [`free_text`] that must not be empty once trimmed (a note's comment).
pub fn required_text(field: &str, s: &str, max: usize) -> Result<String, Invalid> {
    let text = free_text(field, s, max)?;
    if text.is_empty() {
        return Err(Invalid(format!("{field} must not be empty")));
    }
    Ok(text)
}

/// Client text cut before it is echoed in a message or kept in a record: its first `max`
/// characters, control characters dropped.
pub fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).filter(|c| !c.is_control()).collect()
}

/// Why a value was refused; the message is meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Invalid(msg.into())
    }
}
