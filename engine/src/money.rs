//! Amounts in integer minor units and ISO 4217 currencies.
//!
//! No float ever holds an amount. A currency carries its minor-unit exponent so that
//! a front end can render `amount_minor` without guessing.

/// The largest amount a single payment may carry, in minor units of any currency.
/// At the bound: rejected as `AMOUNT_TOO_LARGE`. 10^12 minor units keeps every sum of
/// a full batch (at most 2^16 payments) far from `i64::MAX`.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000;

/// An ISO 4217 currency with the facts settlement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    numeric: u16,
    exponent: u8,
}

impl Currency {
    /// Looks up an alphabetic code ("EUR"). Case-sensitive, as ISO 4217 is; funds
    /// codes and currencies without a minor unit defined (XAU, XXX) are refused because
    /// no subscriber is billed in them.
    pub fn from_code(code: &str) -> Option<Currency> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let iso = iso_currency::Currency::from_code(code)?;
        let exponent = iso.exponent()?;
        let bytes = code.as_bytes();
        Some(Currency {
            code: [bytes[0], bytes[1], bytes[2]],
            numeric: iso.numeric(),
            exponent: u8::try_from(exponent).ok()?,
        })
    }

    /// The alphabetic code.
    pub fn code(&self) -> &str {
        // The bytes were checked to be ASCII uppercase at construction.
        std::str::from_utf8(&self.code).expect("currency code is ASCII")
    }

    /// The ISO 4217 numeric code (978 for EUR).
    pub fn numeric(&self) -> u16 {
        self.numeric
    }

    /// Digits after the decimal point in the minor unit (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_carry_their_exponent() {
        assert_eq!(Currency::from_code("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::from_code("EUR").unwrap().numeric(), 978);
        assert_eq!(Currency::from_code("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::from_code("KWD").unwrap().exponent(), 3);
        assert_eq!(Currency::from_code("KES").unwrap().code(), "KES");
    }

    #[test]
    fn near_misses_are_refused() {
        assert!(Currency::from_code("eur").is_none());
        assert!(Currency::from_code("EU").is_none());
        assert!(Currency::from_code("EURO").is_none());
        assert!(Currency::from_code("ZZZ").is_none());
        assert!(Currency::from_code("XAU").is_none(), "gold has no minor unit");
        assert!(Currency::from_code("").is_none());
    }
}
