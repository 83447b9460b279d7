use serde::{Deserialize, Deserializer, Serialize};

use super::Invalid;

/// Trading leverage, 1:1 to 1:500 (guide, section 5). Whole numbers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u16")]
pub struct Leverage(u16);

impl Leverage {
    pub const DEFAULT: Leverage = Leverage(100);

    pub fn new(value: i64) -> Result<Leverage, Invalid> {
        if (1..=500).contains(&value) {
            Ok(Leverage(value as u16))
        } else {
            Err(Invalid::new("leverage must be a whole number from 1 to 500"))
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl From<Leverage> for u16 {
    fn from(l: Leverage) -> u16 {
        l.0
    }
}

/// Accepts a JSON integer (`100`); `100.5`, `"100"`, `1e2` and out-of-range values are refused.
impl<'de> Deserialize<'de> for Leverage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Leverage, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let whole = value
            .as_number()
            .map(|n| n.to_string())
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
            .and_then(|s| s.parse::<i64>().ok());
        match whole {
            Some(v) => Leverage::new(v),
            None => Err(Invalid::new("leverage must be a whole number from 1 to 500")),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_leverages_are_accepted() {
        for v in [1, 10, 20, 50, 100, 200, 500] {
            assert_eq!(serde_json::from_str::<Leverage>(&v.to_string()).unwrap().get(), v);
        }
    }

    #[test]
    fn bad_leverages_are_refused() {
        for bad in [
            "0",
            "501",
            "-1",
            "100.5",
            "\"100\"",
            "1e2",
            "null",
            "99999999999999999999",
        ] {
            assert!(serde_json::from_str::<Leverage>(bad).is_err(), "{bad} must fail");
        }
    }

    proptest! {
        #[test]
        fn exactly_one_to_five_hundred_is_valid(v in -10_000i64..10_000) {
            prop_assert_eq!(Leverage::new(v).is_ok(), (1..=500).contains(&v));
        }
    }
}
