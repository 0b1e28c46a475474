//! Amounts in integer minor units and ISO 4217 currencies.
//!
//! No float ever holds an amount. A currency carries its minor-unit exponent so that
//! a front end can render `amount_minor` without guessing.

use std::sync::OnceLock;

/// The largest amount a single payment may carry, in minor units of any currency.
/// At the bound: rejected as `AMOUNT_TOO_LARGE`. 10^12 minor units keeps every sum of
/// a full batch (at most 2^16 payments) far from `i64::MAX`.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000;

/// Codes the `iso_currency` data marks as superseded that ISO 4217 still lists as
/// current. The crate records VES as replaced by VED, but the 2021 redenomination
/// added VED beside VES; Venezuelan subscribers are billed in VES.
const SUPERSEDED_BUT_CURRENT: &[&str] = &["VES"];

/// An ISO 4217 currency with the facts settlement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    numeric: u16,
    exponent: u8,
    /// Position in `Currency::all()`, for per-currency tables such as limits.
    index: u8,
}

/// Every accepted currency, and a direct index from the three letters to it.
struct CurrencyTable {
    all: Vec<Currency>,
    /// `index + 1` of the currency spelled by three uppercase letters (26^3 slots), 0
    /// for none. A direct table because the lookup runs once per payment.
    by_letters: Box<[u8]>,
}

fn letters_slot(code: &[u8]) -> Option<usize> {
    match code {
        &[a, b, c] if code.iter().all(u8::is_ascii_uppercase) => {
            Some(usize::from(a - b'A') * 676 + usize::from(b - b'A') * 26 + usize::from(c - b'A'))
        }
        _ => None,
    }
}

fn table() -> &'static CurrencyTable {
    static TABLE: OnceLock<CurrencyTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut all = Vec::new();
        let mut by_letters = vec![0u8; 26 * 26 * 26].into_boxed_slice();
        for slot in 0..by_letters.len() {
            let letters = [
                (slot / 676) as u8 + b'A',
                (slot / 26 % 26) as u8 + b'A',
                (slot % 26) as u8 + b'A',
            ];
            let code = std::str::from_utf8(&letters).expect("letters are ASCII");
            let Some(iso) = iso_currency::Currency::from_code(code) else {
                continue;
            };
            if !is_billable(iso, code) {
                continue;
            }
            let Some(exponent) = iso.exponent().and_then(|e| u8::try_from(e).ok()) else {
                continue;
            };
            let index = u8::try_from(all.len()).expect("fewer than 256 ISO 4217 currencies");
            all.push(Currency {
                code: letters,
                numeric: iso.numeric(),
                exponent,
                index,
            });
            by_letters[slot] = index + 1;
        }
        CurrencyTable { all, by_letters }
    })
}

/// A currency a subscriber can be billed in: current, not a fund or a metal or a
/// testing code, with a minor unit defined.
fn is_billable(iso: iso_currency::Currency, code: &str) -> bool {
    let superseded = iso.is_superseded().is_some() && !SUPERSEDED_BUT_CURRENT.contains(&code);
    !iso.is_fund() && !iso.is_special() && !superseded && iso.exponent().is_some()
}

impl Currency {
    /// Looks up an alphabetic code ("EUR"). Case-sensitive, as ISO 4217 is; funds
    /// codes, superseded codes (HRK) and codes without a minor unit (XAU, XXX) are
    /// refused because no subscriber is billed in them.
    pub fn from_code(code: &str) -> Option<Currency> {
        Currency::from_bytes(code.as_bytes())
    }

    /// `from_code` on raw bytes, as they arrive in a batch column.
    #[inline]
    pub fn from_bytes(code: &[u8]) -> Option<Currency> {
        let table = table();
        let index = table.by_letters[letters_slot(code)?];
        (index != 0).then(|| table.all[usize::from(index - 1)])
    }

    /// Every accepted currency, in alphabetical order.
    pub fn all() -> &'static [Currency] {
        &table().all
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

    /// Position in `Currency::all()`.
    pub fn index(&self) -> usize {
        usize::from(self.index)
    }

    /// `major` whole units in minor units (500 EUR is 50_000), or None on overflow.
    pub fn major_to_minor(&self, major: i64) -> Option<i64> {
        10i64
            .checked_pow(u32::from(self.exponent))
            .and_then(|scale| major.checked_mul(scale))
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
        assert_eq!(Currency::from_code("CLP").unwrap().exponent(), 0);
        assert_eq!(Currency::from_code("TND").unwrap().exponent(), 3);
        assert_eq!(Currency::from_code("VES").unwrap().numeric(), 928);
    }

    #[test]
    fn near_misses_are_refused() {
        assert!(Currency::from_code("eur").is_none());
        assert!(Currency::from_code("EU").is_none());
        assert!(Currency::from_code("EURO").is_none());
        assert!(Currency::from_code("ZZZ").is_none());
        assert!(
            Currency::from_code("XAU").is_none(),
            "gold has no minor unit"
        );
        assert!(Currency::from_code("XXX").is_none(), "the no-currency code");
        assert!(Currency::from_code("CLF").is_none(), "a funds code");
        assert!(
            Currency::from_code("HRK").is_none(),
            "superseded by EUR in 2023"
        );
        assert!(Currency::from_code("").is_none());
        assert!(Currency::from_bytes(b"E\xffR").is_none());
    }

    #[test]
    fn the_table_is_the_full_list_in_order() {
        let all = Currency::all();
        // ISO 4217 lists about 180 current currencies; a sample would be far fewer.
        assert!((150..=200).contains(&all.len()), "{}", all.len());
        for (i, currency) in all.iter().enumerate() {
            assert_eq!(currency.index(), i);
            assert_eq!(Currency::from_code(currency.code()), Some(*currency));
        }
        assert!(all.windows(2).all(|w| w[0].code() < w[1].code()));
    }

    #[test]
    fn major_units_scale_by_the_exponent() {
        assert_eq!(
            Currency::from_code("EUR").unwrap().major_to_minor(500),
            Some(50_000)
        );
        assert_eq!(
            Currency::from_code("JPY").unwrap().major_to_minor(500),
            Some(500)
        );
        assert_eq!(
            Currency::from_code("KWD").unwrap().major_to_minor(500),
            Some(500_000)
        );
        assert_eq!(
            Currency::from_code("EUR").unwrap().major_to_minor(i64::MAX),
            None
        );
    }
}
