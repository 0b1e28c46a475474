//! IBAN (ISO 13616) in electronic format: the country's length and BBAN structure
//! from the SWIFT registry, and the ISO 7064 mod 97-10 check.
//!
//! The registry is `iban_formats.rs`, generated from the `iban_validate` crate's copy.
//! The checks are our own because the crate's parse took ~300 ns per IBAN (it copies
//! the text, tries the paper format, and takes a modulo per character), the whole
//! per-payment budget; this one pass costs a small fraction of that. The verdicts are
//! the crate's, code for code: a test compares the two over generated IBANs.

use super::formats::{IBAN_LEN_MAX, IBAN_LEN_MIN};
use super::iban_formats::IBAN_FORMATS;
use super::RejectCode;

/// A country's BBAN: its length and the positions that must be digits or letters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct BbanFormat {
    len: u8,
    digits: u32,
    letters: u32,
}

/// The index in `IBAN_FORMATS` plus one of each country, by `(first - 'A') * 26 +
/// (second - 'A')`; zero for a country with no IBAN format.
static COUNTRY_INDEX: [u8; 26 * 26] = {
    assert!(IBAN_FORMATS.len() < 255, "indexes fit in a byte");
    let mut table = [0u8; 26 * 26];
    let mut i = 0;
    while i < IBAN_FORMATS.len() {
        let ([first, second], _, _, _) = IBAN_FORMATS[i];
        table[(first - b'A') as usize * 26 + (second - b'A') as usize] = i as u8 + 1;
        i += 1;
    }
    table
};

/// The BBAN format of an uppercase two-letter country, if it has one.
fn bban_format(first: u8, second: u8) -> Option<BbanFormat> {
    let at = usize::from(first - b'A') * 26 + usize::from(second - b'A');
    let index = usize::from(COUNTRY_INDEX[at]).checked_sub(1)?;
    let (_, len, digits, letters) = IBAN_FORMATS[index];
    Some(BbanFormat {
        len,
        digits,
        letters,
    })
}

/// `10^k mod 97` for every width a chunk of `CHUNK` characters can have.
const POW10_MOD97: [u64; 2 * CHUNK + 1] = {
    let mut table = [1u64; 2 * CHUNK + 1];
    let mut k = 1;
    while k < table.len() {
        table[k] = table[k - 1] * 10 % 97;
        k += 1;
    }
    table
};
/// Characters per chunk of the mod 97 check: a letter stands for two digits, so a
/// chunk is at most 16 digits, below 10^16, and fits a u64 with room to spare.
const CHUNK: usize = 8;

/// Folds `chars` ([A-Z0-9], at most `CHUNK` of them) into the running remainder
/// `acc`: the chunk's decimal value (each letter as two digits, A = 10 to Z = 35) is
/// built without a modulo, then appended to `acc` at once. A chunk's value does not
/// depend on `acc`, so consecutive chunks are computed side by side by the CPU; only
/// the short append step is sequential.
#[inline]
fn fold_mod97(acc: u64, chars: &[u8]) -> u64 {
    debug_assert!(chars.len() <= CHUNK);
    let (mut value, mut width) = (0u64, 0usize);
    for &c in chars {
        let letter = c >= b'A';
        let (scale, zero) = if letter { (100, b'A' - 10) } else { (10, b'0') };
        value = value * scale + u64::from(c - zero);
        width += 1 + usize::from(letter);
    }
    (acc * POW10_MOD97[width] + value % 97) % 97
}

/// ISO 7064 mod 97-10 over an IBAN of [A-Z0-9]: the text with its first four
/// characters moved to the end, read as a decimal number, is 1 modulo 97. Check
/// digits 00 and 01 are refused as the standard computes them never (98 - r is 2 to
/// 98), as iban_validate does.
fn mod97_passes(iban: &[u8]) -> bool {
    let (head, bban) = iban.split_at(4);
    let acc = bban.chunks(CHUNK).fold(0, fold_mod97);
    fold_mod97(acc, head) == 1 && !matches!(&head[2..], b"00" | b"01")
}

/// An IBAN in electronic format: 5 to 34 uppercase letters and digits, two letters
/// of country then two check digits (else `IbanInvalid`); mod 97-10 (else
/// `IbanChecksumFailed`); a country with an IBAN format (else `IbanCountryUnknown`);
/// and the country's BBAN length and structure (else `IbanInvalid`). The checksum
/// comes before the country, as in iban_validate, whose verdicts these are.
pub fn check(iban: &[u8]) -> Option<RejectCode> {
    let len = iban.len();
    if !(IBAN_LEN_MIN..=IBAN_LEN_MAX).contains(&len) {
        return Some(RejectCode::IbanInvalid);
    }
    // One pass: bit i of `digits` (`letters`) says character i is a digit
    // (uppercase letter). The masks answer the charset, the country and check digit
    // shape and the BBAN structure, each with a few bit operations.
    let (mut digits, mut letters) = (0u64, 0u64);
    for (i, &b) in iban.iter().enumerate() {
        digits |= u64::from(b.wrapping_sub(b'0') < 10) << i;
        letters |= u64::from(b.wrapping_sub(b'A') < 26) << i;
    }
    let every = (1u64 << len) - 1;
    if digits | letters != every || letters & 0b0011 != 0b0011 || digits & 0b1100 != 0b1100 {
        return Some(RejectCode::IbanInvalid);
    }
    if !mod97_passes(iban) {
        return Some(RejectCode::IbanChecksumFailed);
    }
    let Some(format) = bban_format(iban[0], iban[1]) else {
        return Some(RejectCode::IbanCountryUnknown);
    };
    let (bban_digits, bban_letters) = (digits >> 4, letters >> 4);
    if len - 4 != usize::from(format.len)
        || u64::from(format.digits) & !bban_digits != 0
        || u64::from(format.letters) & !bban_letters != 0
    {
        return Some(RejectCode::IbanInvalid);
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The check as it was before this module: our charset rule, then the
    /// iban_validate crate, its errors mapped to our codes.
    fn reference(iban: &[u8]) -> Option<RejectCode> {
        let charset = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
        if !(IBAN_LEN_MIN..=IBAN_LEN_MAX).contains(&iban.len()) || !iban.iter().all(charset) {
            return Some(RejectCode::IbanInvalid);
        }
        let text = std::str::from_utf8(iban).expect("checked ASCII");
        match text.parse::<iban::Iban>() {
            Ok(_) => None,
            Err(iban::ParseIbanError::UnknownCountry(_)) => Some(RejectCode::IbanCountryUnknown),
            Err(iban::ParseIbanError::InvalidBaseIban {
                source: iban::ParseBaseIbanError::InvalidChecksum,
            }) => Some(RejectCode::IbanChecksumFailed),
            Err(_) => Some(RejectCode::IbanInvalid),
        }
    }

    /// The remainder modulo 97 one digit at a time, the textbook way, to make check
    /// digits independently of `fold_mod97`.
    fn naive_mod97(text: &[u8]) -> u32 {
        text.iter().fold(0, |acc, &c| {
            let value = u32::from(c.to_digit36());
            if value < 10 {
                (acc * 10 + value) % 97
            } else {
                (acc * 100 + value) % 97
            }
        })
    }

    trait Digit36 {
        fn to_digit36(self) -> u8;
    }
    impl Digit36 for u8 {
        fn to_digit36(self) -> u8 {
            char::from(self).to_digit(36).expect("[A-Z0-9]") as u8
        }
    }

    /// `country` + check digits + `bban`, with the check digits that make it pass.
    fn with_check_digits(country: [u8; 2], bban: &[u8]) -> Vec<u8> {
        let mut rearranged = bban.to_vec();
        rearranged.extend_from_slice(&country);
        rearranged.extend_from_slice(b"00");
        let check = 98 - naive_mod97(&rearranged);
        let mut iban = country.to_vec();
        iban.extend_from_slice(format!("{check:02}").as_bytes());
        iban.extend_from_slice(bban);
        iban
    }

    const DIGITS: &[u8] = b"0123456789";
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    /// A BBAN of `len` characters that fits the digit and letter positions given,
    /// choosing each character from `picks` (one per position, any value).
    fn bban_from(len: usize, digits: u32, letters: u32, picks: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|i| {
                let alphabet = if digits >> i & 1 == 1 {
                    DIGITS
                } else if letters >> i & 1 == 1 {
                    LETTERS
                } else {
                    ALNUM
                };
                alphabet[usize::from(picks[i % picks.len()]) % alphabet.len()]
            })
            .collect()
    }

    #[test]
    fn known_ibans_and_their_near_misses() {
        for valid in [
            &b"DE89370400440532013000"[..],
            b"GB82WEST12345698765432",
            b"NO9386011117947",
            b"GR1601101250000000012300695",
            b"BR1800360305000010009795493C1",
            b"MT84MALT011000012345MTLCAST001S",
        ] {
            assert_eq!(check(valid), None, "{}", String::from_utf8_lossy(valid));
        }
        let cases: [(&[u8], RejectCode, &str); 10] = [
            (
                b"DE89370400440532013001",
                RejectCode::IbanChecksumFailed,
                "last digit",
            ),
            (
                b"DE8937040044053201300",
                RejectCode::IbanChecksumFailed,
                "one short",
            ),
            (
                b"DE89 3704 0044 0532 0130 00",
                RejectCode::IbanInvalid,
                "paper format",
            ),
            (
                b"de89370400440532013000",
                RejectCode::IbanInvalid,
                "lowercase",
            ),
            (
                b"US64SVBKUS6S3300958879",
                RejectCode::IbanCountryUnknown,
                "no IBAN in the US",
            ),
            (b"DE", RejectCode::IbanInvalid, "too short"),
            (
                b"D189370400440532013000",
                RejectCode::IbanInvalid,
                "digit in the country",
            ),
            (
                b"DEA9370400440532013000",
                RejectCode::IbanInvalid,
                "letter in check digits",
            ),
            (
                b"GB00WEST12345698765432",
                RejectCode::IbanChecksumFailed,
                "check digits 00",
            ),
            (
                b"DE01370400440532013000",
                RejectCode::IbanChecksumFailed,
                "check digits 01",
            ),
        ];
        for (iban, code, why) in cases {
            assert_eq!(check(iban), Some(code), "{why}");
            assert_eq!(reference(iban), Some(code), "{why} (crate)");
        }
        // GB's bank code is four letters: a digit there breaks the structure even
        // with check digits that pass.
        let gb_digit_bank = with_check_digits(*b"GB", b"1EST12345698765432");
        assert_eq!(check(&gb_digit_bank), Some(RejectCode::IbanInvalid));
        let de_too_long = with_check_digits(*b"DE", b"3704004405320130001");
        assert_eq!(check(&de_too_long), Some(RejectCode::IbanInvalid));
        assert_eq!(check(&[b'A'; 35]), Some(RejectCode::IbanInvalid), "over 34");
    }

    /// Check digits 97 and 98 have twins, 00 and 01, that pass mod 97 as well; the
    /// standard never issues those, and both checks refuse them.
    #[test]
    fn check_digits_00_and_01_are_refused_even_when_mod97_passes() {
        for (issued, twin) in [(b"97", b"00"), (b"98", b"01")] {
            let iban = (0u64..)
                .map(|n| with_check_digits(*b"DE", format!("{n:018}").as_bytes()))
                .find(|iban| &iban[2..4] == issued)
                .expect("some account number has them");
            assert_eq!(check(&iban), None);
            let mut twin_iban = iban.clone();
            twin_iban[2..4].copy_from_slice(twin);
            assert_eq!(naive_mod97(&[&twin_iban[4..], &twin_iban[..4]].concat()), 1);
            assert_eq!(check(&twin_iban), Some(RejectCode::IbanChecksumFailed));
            assert_eq!(reference(&twin_iban), Some(RejectCode::IbanChecksumFailed));
        }
    }

    /// Every one of the 676 two-letter countries, with a BBAN of each country's
    /// shape (or of DE's when it has none) and passing check digits: ours and the
    /// crate agree on every one, so the generated table is the crate's registry.
    #[test]
    fn every_country_agrees_with_the_crate() {
        let mut known = 0;
        for first in b'A'..=b'Z' {
            for second in b'A'..=b'Z' {
                let format = bban_format(first, second);
                known += usize::from(format.is_some());
                let BbanFormat {
                    len,
                    digits,
                    letters,
                } = format.unwrap_or(BbanFormat {
                    len: 18,
                    digits: 0x3ffff,
                    letters: 0,
                });
                for picks in [&[0u8][..], &[7, 3, 29, 11, 5], &[35, 1, 18]] {
                    let bban = bban_from(usize::from(len), digits, letters, picks);
                    let iban = with_check_digits([first, second], &bban);
                    let expected = format.is_none().then_some(RejectCode::IbanCountryUnknown);
                    assert_eq!(check(&iban), expected, "{}", String::from_utf8_lossy(&iban));
                    assert_eq!(
                        reference(&iban),
                        expected,
                        "{}",
                        String::from_utf8_lossy(&iban)
                    );
                }
            }
        }
        assert_eq!(known, IBAN_FORMATS.len());
    }

    #[test]
    fn chunked_mod97_is_the_textbook_remainder() {
        for text in [
            &b"0"[..],
            b"96",
            b"97",
            b"ZZZZZZZZ",
            b"99999999999999999",
            b"A1B2C3D4E5F6G7H8I9J0KLMNOPQRSTUVWX",
        ] {
            let chunked = text.chunks(CHUNK).fold(0, fold_mod97);
            assert_eq!(
                chunked,
                u64::from(naive_mod97(text)),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// How a generated IBAN is damaged before both checks judge it.
    #[derive(Clone, Debug)]
    enum Damage {
        None,
        Replace(usize, u8),
        Swap(usize),
        Delete(usize),
        Insert(usize, u8),
        Country([u8; 2]),
        CheckDigits([u8; 2]),
        /// Another country, another character, or a character more or less, with
        /// check digits made again so the checksum passes and the registry decides.
        Resigned(Box<Damage>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        let any_alnum = prop::sample::select(ALNUM.to_vec());
        let any_byte = prop_oneof![4 => any_alnum.clone(), 1 => any::<u8>()];
        prop_oneof![
            3 => Just(Damage::None),
            3 => (0usize..40, any_byte.clone()).prop_map(|(at, b)| Damage::Replace(at, b)),
            2 => (0usize..40).prop_map(Damage::Swap),
            1 => (0usize..40).prop_map(Damage::Delete),
            1 => (0usize..40, any_byte).prop_map(|(at, b)| Damage::Insert(at, b)),
            2 => prop::array::uniform2(prop::sample::select(LETTERS.to_vec())).prop_map(Damage::Country),
            1 => prop::array::uniform2(prop::sample::select(DIGITS.to_vec())).prop_map(Damage::CheckDigits),
            3 => prop_oneof![
                prop::array::uniform2(prop::sample::select(LETTERS.to_vec())).prop_map(Damage::Country),
                (4usize..40, prop::sample::select(ALNUM.to_vec())).prop_map(|(at, b)| Damage::Replace(at, b)),
                (4usize..40).prop_map(Damage::Delete),
                (4usize..40, prop::sample::select(ALNUM.to_vec())).prop_map(|(at, b)| Damage::Insert(at, b)),
            ].prop_map(|inner| Damage::Resigned(Box::new(inner))),
        ]
    }

    fn apply(mut iban: Vec<u8>, damage: &Damage) -> Vec<u8> {
        let len = iban.len();
        match *damage {
            Damage::Resigned(ref inner) => {
                let damaged = apply(iban, inner);
                return with_check_digits([damaged[0], damaged[1]], &damaged[4..]);
            }
            Damage::None => {}
            Damage::Replace(at, b) => iban[at % len] = b,
            Damage::Swap(at) => iban.swap(at % (len - 1), at % (len - 1) + 1),
            Damage::Delete(at) => {
                iban.remove(at % len);
            }
            Damage::Insert(at, b) => iban.insert(at % (len + 1), b),
            Damage::Country(country) => iban[..2].copy_from_slice(&country),
            Damage::CheckDigits(check) => iban[2..4].copy_from_slice(&check),
        }
        iban
    }

    /// A registry country's valid IBAN, then damaged (or not).
    fn damaged_iban() -> impl Strategy<Value = Vec<u8>> {
        (
            0..IBAN_FORMATS.len(),
            prop::collection::vec(any::<u8>(), 30),
            damage(),
        )
            .prop_map(|(index, picks, damage)| {
                let (country, len, digits, letters) = IBAN_FORMATS[index];
                let bban = bban_from(usize::from(len), digits, letters, &picks);
                apply(with_check_digits(country, &bban), &damage)
            })
    }

    /// The generator is not degenerate: every verdict occurs, none rarely.
    #[test]
    fn damaged_ibans_reach_every_verdict() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = damaged_iban();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let iban = strategy.new_tree(&mut runner).unwrap().current();
            *counts.entry(check(&iban)).or_insert(0) += 1;
        }
        for code in [
            None,
            Some(RejectCode::IbanInvalid),
            Some(RejectCode::IbanChecksumFailed),
            Some(RejectCode::IbanCountryUnknown),
        ] {
            assert!(
                counts.get(&code).copied().unwrap_or(0) > 200,
                "{code:?}: {counts:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// A valid IBAN of a registry country, then damaged (or not): ours and the
        /// crate give the same code (`damaged_ibans_reach_every_verdict` shows the
        /// inputs reach every branch).
        #[test]
        fn agrees_with_the_crate_on_damaged_ibans(iban in damaged_iban()) {
            prop_assert_eq!(check(&iban), reference(&iban), "{}", String::from_utf8_lossy(&iban));
        }

        /// Arbitrary text of IBAN characters, and arbitrary bytes: no format at all.
        #[test]
        fn agrees_with_the_crate_on_any_text(text in "[A-Z]{2}[0-9]{2}[A-Z0-9]{0,32}|[A-Z0-9]{0,40}", bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(check(text.as_bytes()), reference(text.as_bytes()), "{}", text);
            prop_assert_eq!(check(&bytes), reference(&bytes), "{:?}", bytes);
        }
    }
}
