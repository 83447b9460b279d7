use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Invalid;

/// Every id the CRM makes is a UUIDv7: its leading bits are the time, so a row inserted now lands
/// at the end of its table's unique index. With random (v4) ids each row of a batch dirtied a
/// different index page, and every dirty page is written to the WAL and the database again.
pub fn new_uuid() -> Uuid {
    Uuid::now_v7()
}

/// Distinct id types so a client id can never be passed where an account id is expected.
macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(new_uuid())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                Uuid::parse_str(s)
                    .map($name)
                    .map_err(|_| Invalid::new(format!("{} must be a UUID", $what)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(ClientId, "client id");
uuid_id!(AccountId, "account id");
uuid_id!(StaffId, "staff user id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_uuids_only() {
        let id = ClientId::new();
        assert_eq!(id.to_string().parse::<ClientId>().unwrap(), id);
        for bad in ["", "123", "not-a-uuid", "../etc/passwd"] {
            assert!(bad.parse::<AccountId>().is_err(), "{bad} must fail");
        }
    }
}
