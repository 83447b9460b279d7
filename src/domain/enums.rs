//! The closed sets of words the guide and SPEC use. Each parses only its own spellings.

use std::fmt;
use std::str::FromStr;

use super::Invalid;

/// Defines an enum that reads and writes exactly the listed words, as text and in JSON.
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(Invalid::new(format!(
                        "{} must be one of {}",
                        $what,
                        [$($word),+].join(", ")
                    ))),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                s.parse()
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str {
                v.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

word_enum!(
    /// The guide's three fund types. Only real funds can be withdrawn.
    FundType, "fundType", { Real => "real", Demo => "demo", Bonus => "bonus" }
);

word_enum!(
    /// A client's KYC state, as the Trading Platform and staff set it.
    KycStatus, "kycStatus", {
        Pending => "pending",
        InReview => "in_review",
        Approved => "approved",
        Rejected => "rejected",
    }
);

word_enum!(
    /// Staff roles, from most to least trusted.
    Role, "role", { Admin => "admin", Manager => "manager", Agent => "agent" }
);

impl Role {
    /// Balances, leverage, impersonation, subaccounts, staff and webhook re-processing.
    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }

    /// Managers and admins may change KYC; agents may only read and add notes.
    pub fn may_change_kyc(self) -> bool {
        matches!(self, Role::Admin | Role::Manager)
    }

    /// The audit log and the webhook log (raw bodies carry client data across all clients)
    /// are for managers and admins.
    pub fn may_read_logs(self) -> bool {
        matches!(self, Role::Admin | Role::Manager)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_through_json() {
        for f in FundType::ALL {
            let json = serde_json::to_string(f).unwrap();
            assert_eq!(&serde_json::from_str::<FundType>(&json).unwrap(), f);
        }
        for k in KycStatus::ALL {
            assert_eq!(&k.as_str().parse::<KycStatus>().unwrap(), k);
        }
        for r in Role::ALL {
            assert_eq!(&r.as_str().parse::<Role>().unwrap(), r);
        }
    }

    #[test]
    fn other_spellings_are_refused_with_the_allowed_words() {
        for bad in ["Real", "REAL", " real", "cash", ""] {
            let err = bad.parse::<FundType>().unwrap_err();
            assert_eq!(err.0, "fundType must be one of real, demo, bonus");
        }
        assert!("in-review".parse::<KycStatus>().is_err());
        assert!("root".parse::<Role>().is_err());
        assert!(serde_json::from_str::<FundType>("1").is_err());
    }

    #[test]
    fn only_admins_are_admins_and_agents_cannot_change_kyc() {
        assert!(Role::Admin.is_admin());
        assert!(!Role::Manager.is_admin());
        assert!(Role::Manager.may_change_kyc());
        assert!(!Role::Agent.may_change_kyc());
    }
}
