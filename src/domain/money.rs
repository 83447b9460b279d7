use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Invalid;

/// An exact amount of money: a whole number of hundred-millionths (8 decimal places).
///
/// It is stored the same way in SQLite (an INTEGER), so `SUM` over the ledger is exact and no
/// float appears anywhere between a request and the database. Parsing accepts only plain decimal
/// text (`"100"`, `"-50.25"`, `"0.12345678"`): no exponents, no `NaN`, no more than 8 decimals,
/// and nothing beyond ±`MAX` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

const SCALE: i64 = 100_000_000;
const DECIMALS: usize = 8;
/// Ten billion units of any currency: far beyond any balance a small broker holds, and small
/// enough that three balances added together still fit in an i64 of hundred-millionths.
const MAX_UNITS: i64 = 10_000_000_000;
const MAX_ATOMS: i64 = MAX_UNITS * SCALE;
/// Said wherever an amount or a balance would leave the range.
pub const OUT_OF_RANGE: &str = "the supported range is -10,000,000,000 to 10,000,000,000";

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn parse(raw: &str) -> Result<Money, Invalid> {
        let bad = |why: &str| Invalid::new(format!("'{}' is not a valid amount: {why}", super::clip(raw, 40)));
        // "+5.00" reads as the guide's "positive = credit"; a sign is taken once.
        let (negative, digits) = match (raw.strip_prefix('-'), raw.strip_prefix('+')) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => (false, raw),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (digits, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
            return Err(bad("use plain decimal digits such as \"100.00\""));
        }
        let frac = frac.unwrap_or("");
        if frac.len() > DECIMALS {
            return Err(bad("at most 8 decimal places are supported"));
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > 11 {
            return Err(bad(OUT_OF_RANGE));
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad("not a number"))?
        };
        let frac_atoms: i64 = format!("{frac:0<8}").parse().map_err(|_| bad("not a number"))?;
        // Checked: eleven digits can exceed the range, and must never wrap around.
        let atoms = whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(frac_atoms))
            .filter(|a| *a <= MAX_ATOMS)
            .ok_or_else(|| bad(OUT_OF_RANGE))?;
        Ok(Money(if negative { -atoms } else { atoms }))
    }

    /// Rebuilds an amount read back from the database (hundred-millionths).
    pub fn from_atoms(atoms: i64) -> Result<Money, Invalid> {
        if atoms.abs() > MAX_ATOMS {
            return Err(Invalid::new("the amount is out of the supported range"));
        }
        Ok(Money(atoms))
    }

    pub fn atoms(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn abs(self) -> Money {
        Money(self.0.abs())
    }

    /// Sum, or `None` when the result leaves the supported range.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).filter(|a| a.abs() <= MAX_ATOMS).map(Money)
    }

    /// An account's total over its three funds. Each fund is held within the range on its own,
    /// so a demo or bonus grant never leaves a real deposit without room; the total, up to three
    /// times the range, still fits (see `MAX_UNITS`). It is shown, never stored or parsed back.
    pub fn total(funds: [Money; 3]) -> Money {
        Money(funds.iter().fold(0i64, |sum, m| sum.saturating_add(m.0)))
    }

    /// The amount as a JSON number with the same digits as its text form (`500.00`).
    /// Only for the guide's insufficient-funds error, which shows numbers.
    pub fn to_json_number(self) -> serde_json::Number {
        // With serde_json's arbitrary_precision the literal is kept as written: no float involved.
        serde_json::from_str(&self.to_string()).unwrap_or_else(|_| serde_json::Number::from(0))
    }
}

/// At least two decimals, at most eight, trailing zeros beyond the second trimmed.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / SCALE as u64;
        let frac = format!("{:08}", abs % SCALE as u64);
        let frac = frac.trim_end_matches('0');
        let frac = if frac.len() < 2 {
            format!("{frac:0<2}")
        } else {
            frac.to_string()
        };
        write!(f, "{sign}{whole}.{frac}")
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Accepts a decimal string or a JSON number. Numbers arrive as their literal text
/// (serde_json's `arbitrary_precision`), so `0.1` is exactly one tenth, never a float.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Money::parse(&s),
            serde_json::Value::Number(n) => Money::parse(&n.to_string()),
            _ => Err(Invalid::new(
                "an amount must be a decimal string such as \"100.00\" or a number",
            )),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn formats_with_two_to_eight_decimals() {
        assert_eq!(m("100").to_string(), "100.00");
        assert_eq!(m("100.5").to_string(), "100.50");
        assert_eq!(m("-50.00").to_string(), "-50.00");
        assert_eq!(m("0.12345678").to_string(), "0.12345678");
        assert_eq!(m("0.10000000").to_string(), "0.10");
        assert_eq!(m("-0").to_string(), "0.00");
        assert_eq!(m("0007.1").to_string(), "7.10");
    }

    #[test]
    fn tenths_add_up_exactly() {
        let tenth = m("0.1");
        let sum = (0..10).fold(Money::ZERO, |acc, _| acc.checked_add(tenth).unwrap());
        assert_eq!(sum, m("1"));
    }

    #[test]
    fn bad_amounts_are_refused() {
        let bad = [
            ("", "empty"),
            ("abc", "not a number"),
            ("NaN", "NaN"),
            ("Infinity", "infinity"),
            ("1e5", "exponent"),
            ("1E-2", "exponent"),
            ("0.123456789", "nine decimals"),
            ("1.", "dangling point"),
            (".5", "no whole part"),
            ("+-5", "two signs"),
            ("-+5", "two signs"),
            ("++5", "two signs"),
            ("+", "a sign alone"),
            (" 5", "whitespace"),
            ("5 ", "whitespace"),
            ("1,000", "thousands separator"),
            ("--5", "double sign"),
            ("10000000000.00000001", "just above the range"),
            ("99999999999999999999999", "far beyond the range"),
            ("95516109551", "eleven digits, beyond the range"),
            // Found by fuzzing: once wrapped around i64 and came back as a huge positive amount.
            ("-0095516109551", "eleven digits after leading zeros, negative"),
            ("99999999999.99999999", "the largest eleven-digit amount"),
            ("0x10", "hex"),
            ("１", "full-width digit"),
        ];
        for (input, why) in bad {
            assert!(Money::parse(input).is_err(), "{input:?} must fail: {why}");
        }
        assert!(Money::parse("10000000000").is_ok(), "the maximum itself is allowed");
        let e = Money::parse("12345678901").unwrap_err().to_string();
        assert!(e.contains("10,000,000,000"), "the refusal names the range: {e}");
        assert_eq!(m("+5.00"), m("5"), "an explicit plus is a credit");
    }

    #[test]
    fn json_strings_and_numbers_parse_without_floats() {
        let from = |j: &str| serde_json::from_str::<Money>(j);
        assert_eq!(from("\"100.00\"").unwrap(), m("100"));
        assert_eq!(from("0.1").unwrap(), m("0.1"));
        assert_eq!(from("12345678.12345678").unwrap().to_string(), "12345678.12345678");
        for bad in ["1e3", "true", "null", "[1]", "{}", "0.000000001"] {
            assert!(from(bad).is_err(), "{bad} must fail");
        }
    }

    #[test]
    fn json_number_keeps_its_digits() {
        assert_eq!(serde_json::to_string(&m("500").to_json_number()).unwrap(), "500.00");
    }

    #[test]
    fn sums_beyond_the_range_are_refused() {
        assert!(m("10000000000").checked_add(m("0.00000001")).is_none());
    }

    #[test]
    fn a_total_of_three_full_funds_is_exact() {
        let full = m("10000000000");
        assert_eq!(Money::total([full, full, full]).to_string(), "30000000000.00");
        assert_eq!(Money::total([m("0.1"), m("0.2"), m("-0.3")]), Money::ZERO);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(atoms in -MAX_ATOMS..=MAX_ATOMS) {
            let money = Money::from_atoms(atoms).unwrap();
            prop_assert_eq!(Money::parse(&money.to_string()).unwrap(), money);
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".*") {
            let _ = Money::parse(&s);
        }

        #[test]
        fn addition_is_exact(a in -MAX_ATOMS/2..MAX_ATOMS/2, b in -MAX_ATOMS/2..MAX_ATOMS/2) {
            let sum = Money(a).checked_add(Money(b)).unwrap();
            prop_assert_eq!(sum.atoms(), a + b);
        }
    }
}
