//! Card numbers: digits, Luhn, scheme by issuer range, length by scheme, expiry.
//!
//! The scheme table is ours, not a crate's: the crates that offer one cover fewer
//! schemes (Mir, UnionPay and Maestro are often missing) and allocate per call. The
//! ranges are the schemes' published IIN ranges, most specific first.

use super::clock::Now;
use super::config::Rules;
use super::RejectCode;

/// PANs are 12 (the shortest Maestro) to 19 digits (ISO/IEC 7812).
pub const PAN_DIGITS_MIN: usize = 12;
pub const PAN_DIGITS_MAX: usize = 19;
/// Expiry years before this are malformed, not merely expired.
pub const EXPIRY_YEAR_MIN: u32 = 2000;

/// A card scheme the engine accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    UnionPay,
    Maestro,
    Mir,
}

impl Scheme {
    /// The PAN lengths the scheme issues, as a bit mask (bit n: n digits).
    fn lengths(self) -> u32 {
        const fn span(lo: u32, hi: u32) -> u32 {
            ((1 << (hi + 1)) - 1) & !((1 << lo) - 1)
        }
        match self {
            Scheme::Visa => 1 << 13 | 1 << 16 | 1 << 19,
            Scheme::Mastercard => 1 << 16,
            Scheme::Amex => 1 << 15,
            Scheme::Discover | Scheme::Jcb | Scheme::UnionPay | Scheme::Mir => span(16, 19),
            Scheme::Maestro => span(12, 19),
        }
    }
}

/// The scheme whose issuer range holds the PAN, by its leading digits.
pub fn scheme(pan: &[u8]) -> Option<Scheme> {
    let lead = |n: usize| {
        pan[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (p2, p3, p4) = (lead(2), lead(3), lead(4));
    Some(match p4 {
        2200..=2204 => Scheme::Mir,
        2221..=2720 => Scheme::Mastercard,
        3528..=3589 => Scheme::Jcb,
        6011 => Scheme::Discover,
        6304 | 6390 => Scheme::Maestro,
        _ => match (p2, p3) {
            (34 | 37, _) => Scheme::Amex,
            (40..=49, _) => Scheme::Visa,
            (51..=55, _) => Scheme::Mastercard,
            (50 | 56..=58, _) => Scheme::Maestro,
            (_, 644..=649) | (65, _) => Scheme::Discover,
            (62, _) => Scheme::UnionPay,
            (67, _) => Scheme::Maestro,
            _ => return None,
        },
    })
}

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_ok(digits: &[u8]) -> bool {
    // Digit values doubled and reduced (2 * d, less 9 above 9), looked up rather than
    // branched on: the doubled positions alternate, which a branch predicts poorly.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let v = usize::from(d - b'0') % 10;
        sum += if i % 2 == 1 { DOUBLED[v] } else { v as u32 };
    }
    sum % 10 == 0
}

/// Digits, Luhn, scheme, scheme length; the first failure.
pub fn check_pan(pan: &[u8]) -> Option<RejectCode> {
    if !(PAN_DIGITS_MIN..=PAN_DIGITS_MAX).contains(&pan.len())
        || !pan.iter().all(u8::is_ascii_digit)
    {
        return Some(RejectCode::CardPanInvalid);
    }
    if !luhn_ok(pan) {
        return Some(RejectCode::CardLuhnFailed);
    }
    let Some(scheme) = scheme(pan) else {
        return Some(RejectCode::CardSchemeUnknown);
    };
    (scheme.lengths() >> pan.len() & 1 == 0).then_some(RejectCode::CardLengthInvalid)
}

/// Month 1 to 12; year from 2000 up to the configured number of years past the
/// current one (a card is not issued for longer).
pub fn check_expiry_format(rules: &Rules, month: u32, year: u32, now: &Now) -> Option<RejectCode> {
    if !(1..=12).contains(&month) {
        return Some(RejectCode::CardExpiryMonthInvalid);
    }
    let latest = now.date.year + i64::from(rules.card_expiry_years_ahead_max);
    if year < EXPIRY_YEAR_MIN || i64::from(year) > latest {
        return Some(RejectCode::CardExpiryYearInvalid);
    }
    None
}

/// A card is good through the last second of its expiry month, UTC.
pub fn expired(month: u32, year: u32, now: &Now) -> bool {
    let today = now.date;
    (i64::from(year), month) < (today.year, today.month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_of_every_scheme_pass() {
        for (pan, expected) in [
            ("4111111111111111", Scheme::Visa),
            ("4222222222222", Scheme::Visa),
            ("5555555555554444", Scheme::Mastercard),
            ("2223003122003222", Scheme::Mastercard),
            ("378282246310005", Scheme::Amex),
            ("6011111111111117", Scheme::Discover),
            ("3530111333300000", Scheme::Jcb),
            ("6200000000000005", Scheme::UnionPay),
            ("6759649826438453", Scheme::Maestro),
            ("2200000000000004", Scheme::Mir),
        ] {
            assert_eq!(scheme(pan.as_bytes()), Some(expected), "{pan}");
            assert_eq!(check_pan(pan.as_bytes()), None, "{pan}");
        }
    }

    #[test]
    fn near_misses() {
        assert_eq!(
            check_pan(b"4111111111111112"),
            Some(RejectCode::CardLuhnFailed)
        );
        assert_eq!(
            check_pan(b"4111 1111 1111 1111"),
            Some(RejectCode::CardPanInvalid)
        );
        assert_eq!(
            check_pan(b"41111111111"),
            Some(RejectCode::CardPanInvalid),
            "11 digits"
        );
        assert_eq!(
            check_pan(b"41111111111111111111"),
            Some(RejectCode::CardPanInvalid),
            "20 digits"
        );
        // Luhn-valid, but 14 digits is no Visa length, 16 no Amex length.
        assert_eq!(
            check_pan(b"41111111111114"),
            Some(RejectCode::CardLengthInvalid)
        );
        assert_eq!(
            check_pan(b"3782822463100052"),
            Some(RejectCode::CardLengthInvalid)
        );
        // Luhn-valid with an unassigned leading range (1, 9).
        assert_eq!(
            check_pan(b"1000000000000008"),
            Some(RejectCode::CardSchemeUnknown)
        );
        assert_eq!(
            check_pan(b"9000000000000001"),
            Some(RejectCode::CardSchemeUnknown)
        );
    }

    #[test]
    fn expiry_is_inclusive_of_the_whole_month() {
        let end_of_november_2026 = 1_796_083_199; // 2026-11-30T23:59:59Z
        assert!(!expired(11, 2026, &Now::at(end_of_november_2026)));
        assert!(expired(11, 2026, &Now::at(end_of_november_2026 + 1)));
        assert!(expired(10, 2026, &Now::at(end_of_november_2026)));
        assert!(!expired(1, 2027, &Now::at(end_of_november_2026)));
    }

    proptest::proptest! {
        #[test]
        fn luhn_agrees_with_the_textbook_loop(digits in "[0-9]{0,19}") {
            let textbook = digits.bytes().rev().enumerate().map(|(i, d)| {
                let v = u32::from(d - b'0') * if i % 2 == 1 { 2 } else { 1 };
                if v > 9 { v - 9 } else { v }
            }).sum::<u32>() % 10 == 0;
            proptest::prop_assert_eq!(luhn_ok(digits.as_bytes()), textbook);
        }

        #[test]
        fn changing_one_digit_breaks_luhn(body in "[0-9]{11,18}", pos in 0usize..19, delta in 1u8..10) {
            let mut pan: Vec<u8> = body.into_bytes();
            let check = (0..10u8).map(|d| b'0' + d).find(|&d| { pan.push(d); let ok = luhn_ok(&pan); pan.pop(); ok }).unwrap();
            pan.push(check);
            proptest::prop_assert!(luhn_ok(&pan));
            let pos = pos % pan.len();
            pan[pos] = b'0' + (pan[pos] - b'0' + delta) % 10;
            proptest::prop_assert!(!luhn_ok(&pan));
        }
    }
}
