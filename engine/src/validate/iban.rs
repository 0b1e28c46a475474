//! IBAN (ISO 13616) in electronic format: the country's length and BBAN structure
//! from the SWIFT registry, the ISO 7064 mod 97-10 check, then the national check
//! digits inside the BBAN where `iban_national` knows them.
//!
//! The registry is `iban_formats.rs`, generated from the `iban_validate` crate's copy.
//! The checks are our own because the crate's parse took 250 to 310 ns per IBAN (it
//! copies the text, tries the paper format after the electronic one, and takes a
//! modulo per character), the whole per-payment budget; this one reads the IBAN as
//! five words and takes 50 to 55 ns (`check_timings`, same runs). The verdicts are
//! the crate's, code for code: tests compare the two over generated IBANs.

use super::formats::{IBAN_LEN_MAX, IBAN_LEN_MIN};
use super::iban_formats::IBAN_FORMATS;
use super::iban_national;
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

/// The BBAN right-aligned in `BBAN_WORDS` words after `'0'` padding (leading zeros
/// leave its number unchanged), then the country and check digits and four bytes of
/// padding: every IBAN is read as the same five words, with no loop over its own
/// length and no tail. The BBAN comes first because the mod 97-10 check reads the
/// IBAN with its first four characters moved to the end.
const BBAN_WORDS: usize = 4;
const HEAD_AT: usize = BBAN_WORDS * 8;
const BUFFER_LEN: usize = HEAD_AT + 8;
const _: () = assert!(HEAD_AT >= IBAN_LEN_MAX - 4 && BUFFER_LEN <= 64);

/// Eight bytes per u64, every byte the same.
const fn bytes(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}
const HIGH_BITS: u64 = bytes(0x80);

/// Bit 7 of each byte of `word` set when the byte is in `low..=high`: adding
/// `0x80 - low` reaches bit 7 from `low` up, adding `0x7f - high` from past `high`
/// up. Exact for bytes below 0x80, which plus less than 0x80 never carry into their
/// neighbour; the caller refuses a word with a higher byte.
#[inline]
fn in_range(word: u64, low: u8, high: u8) -> u64 {
    let from_low = word.wrapping_add(bytes(0x80 - low));
    let past_high = word.wrapping_add(bytes(0x7f - high));
    from_low & !past_high & HIGH_BITS
}

/// Bit 7 of each byte gathered into one byte, byte k's into bit k: the multiplier
/// moves each flag to bit 56 + k, no two products overlapping (so nothing carries).
#[inline]
fn gather(flags: u64) -> u64 {
    ((flags >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Eight ASCII digits (first in the lowest byte) to their value, 0 to 99,999,999:
/// neighbouring digits, then pairs, then quadruples are combined by one multiply
/// each, every lane staying below its width.
#[inline]
fn eight_digits(word: u64) -> u64 {
    let digits = word & bytes(0x0f);
    let pairs = (digits.wrapping_mul(10 << 8 | 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs.wrapping_mul(100 << 16 | 1) >> 16) & 0x0000_ffff_0000_ffff;
    quads.wrapping_mul(10_000 << 32 | 1) >> 32
}

/// `10^k mod 97` for every width eight characters can have (a letter is two digits).
const POW10_MOD97: [u64; 17] = {
    let mut table = [1u64; 17];
    let mut k = 1;
    while k < table.len() {
        table[k] = table[k - 1] * 10 % 97;
        k += 1;
    }
    table
};

/// Appends eight characters of [A-Z0-9] to the running remainder `acc`, each letter
/// as two digits (A = 10 to Z = 35). A word of digits, nearly every word of a real
/// BBAN, takes `eight_digits`; one with a letter goes character by character. The
/// word's value (below 10^16) does not depend on `acc`, so the CPU computes the
/// words side by side; only the append is sequential.
#[inline]
fn append_mod97(acc: u64, word: u64, letters: u64) -> u64 {
    let (value, width) = if letters == 0 {
        (eight_digits(word), 8)
    } else {
        letter_word(word)
    };
    (acc * POW10_MOD97[width] + value % 97) % 97
}

/// The value and width in digits of a word of [A-Z0-9] with a letter in it. Wrapping
/// arithmetic, with no overflow checks, because none can overflow: every byte is a
/// digit or a letter (checked before), so `c - zero` is 0 to 35, and sixteen digits
/// stay below 10^16.
#[inline(never)]
fn letter_word(word: u64) -> (u64, usize) {
    word.to_le_bytes()
        .iter()
        .fold((0u64, 0usize), |(value, width), &c| {
            let letter = c >= b'A';
            let (scale, zero) = if letter { (100, b'A' - 10) } else { (10, b'0') };
            let digit = u64::from(c.wrapping_sub(zero));
            (
                value.wrapping_mul(scale).wrapping_add(digit),
                width + 1 + usize::from(letter),
            )
        })
}

/// An IBAN in electronic format: 5 to 34 uppercase letters and digits, two letters
/// of country then two check digits (else `IbanInvalid`); ISO 7064 mod 97-10 (else
/// `IbanChecksumFailed`); a country with an IBAN format (else `IbanCountryUnknown`);
/// and the country's BBAN length and structure (else `IbanInvalid`). The checksum
/// comes before the country, as in iban_validate, whose verdicts these are.
pub fn check_international(iban: &[u8]) -> Option<RejectCode> {
    let len = iban.len();
    if !(IBAN_LEN_MIN..=IBAN_LEN_MAX).contains(&len) {
        return Some(RejectCode::IbanInvalid);
    }
    let (head, bban) = iban.split_at(4);
    let pad = HEAD_AT - bban.len();
    let mut buffer = [b'0'; BUFFER_LEN];
    buffer[pad..HEAD_AT].copy_from_slice(bban);
    buffer[HEAD_AT..HEAD_AT + 4].copy_from_slice(head);
    let words: [u64; BUFFER_LEN / 8] =
        std::array::from_fn(|k| u64::from_le_bytes(buffer[k * 8..k * 8 + 8].try_into().unwrap()));
    // Bit p of `digits` (`letters`) says buffer byte p is a digit (uppercase letter);
    // the padding counts as digits. These masks answer the charset, the shape of the
    // country and check digits and the BBAN structure with a few bit operations.
    let (mut digits, mut letters, mut high) = (0u64, 0u64, 0u64);
    for (k, &word) in words.iter().enumerate() {
        high |= word & HIGH_BITS;
        digits |= gather(in_range(word, b'0', b'9')) << (8 * k);
        letters |= gather(in_range(word, b'A', b'Z')) << (8 * k);
    }
    const EVERY: u64 = (1 << BUFFER_LEN) - 1;
    const COUNTRY: u64 = 0b0011 << HEAD_AT;
    const CHECK_DIGITS: u64 = 0b1100 << HEAD_AT;
    // `in_range` is exact only for bytes below 0x80; those above are refused first.
    if high != 0
        || digits | letters != EVERY
        || letters & COUNTRY != COUNTRY
        || digits & CHECK_DIGITS != CHECK_DIGITS
    {
        return Some(RejectCode::IbanInvalid);
    }
    let bban_remainder = words[..BBAN_WORDS]
        .iter()
        .enumerate()
        .fold(0, |acc, (k, &word)| {
            append_mod97(acc, word, letters >> (8 * k) & 0xff)
        });
    // The country's letters are two digits each, the check digits one: six digits.
    let [c0, c1, d0, d1] = [head[0], head[1], head[2], head[3]].map(u64::from);
    let head_value = (c0 - 55) * 10_000 + (c1 - 55) * 100 + (d0 - 48) * 10 + (d1 - 48);
    let remainder = (bban_remainder * POW10_MOD97[6] + head_value) % 97;
    // Check digits 00 and 01 pass mod 97 as 97 and 98 would, but the standard
    // computes 98 - r, 2 to 98, never them; iban_validate refuses them too.
    if remainder != 1 || matches!(&head[2..], b"00" | b"01") {
        return Some(RejectCode::IbanChecksumFailed);
    }
    let Some(format) = bban_format(head[0], head[1]) else {
        return Some(RejectCode::IbanCountryUnknown);
    };
    let (bban_digits, bban_letters) = (digits >> pad, letters >> pad);
    if bban.len() != usize::from(format.len)
        || u64::from(format.digits) & !bban_digits != 0
        || u64::from(format.letters) & !bban_letters != 0
    {
        return Some(RejectCode::IbanInvalid);
    }
    None
}

/// `check_international`, then the country's national check digits inside the BBAN
/// (`iban_national`), else `IbanNationalCheckFailed`.
pub fn check(iban: &[u8]) -> Option<RejectCode> {
    if let Some(code) = check_international(iban) {
        return Some(code);
    }
    if !iban_national::passes([iban[0], iban[1]], &iban[4..]) {
        return Some(RejectCode::IbanNationalCheckFailed);
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
            assert_eq!(
                check_international(valid),
                None,
                "{}",
                String::from_utf8_lossy(valid)
            );
        }
        let cases: [(&[u8], RejectCode, &str); 11] = [
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
                b"DE89370400440532013\xb000",
                RejectCode::IbanInvalid,
                "non-ASCII",
            ),
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
            assert_eq!(check_international(iban), Some(code), "{why}");
            assert_eq!(reference(iban), Some(code), "{why} (crate)");
        }
        // GB's bank code is four letters: a digit there breaks the structure even
        // with check digits that pass.
        let gb_digit_bank = with_check_digits(*b"GB", b"1EST12345698765432");
        assert_eq!(
            check_international(&gb_digit_bank),
            Some(RejectCode::IbanInvalid)
        );
        let de_too_long = with_check_digits(*b"DE", b"3704004405320130001");
        assert_eq!(
            check_international(&de_too_long),
            Some(RejectCode::IbanInvalid)
        );
        assert_eq!(
            check_international(&[b'A'; 35]),
            Some(RejectCode::IbanInvalid),
            "over 34"
        );
    }

    /// The case: a Spanish IBAN whose mod 97 was made over a mistyped account
    /// passes every international check and is refused for its national DC digits;
    /// the same account with its right DC passes. A country with no national check
    /// (Germany) is untouched.
    #[test]
    fn a_wrong_national_check_is_refused_though_mod97_passes() {
        let wrong_dc = with_check_digits(*b"ES", b"21000418460200051332");
        assert_eq!(check_international(&wrong_dc), None);
        assert_eq!(check(&wrong_dc), Some(RejectCode::IbanNationalCheckFailed));
        assert_eq!(check(b"ES9121000418450200051332"), None);
        let german = with_check_digits(*b"DE", b"370400440532013999");
        assert_eq!(check(&german), None);
        // The international verdicts come first.
        assert_eq!(
            check(b"ES9121000418450200051333"),
            Some(RejectCode::IbanChecksumFailed)
        );
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
            assert_eq!(check_international(&iban), None);
            let mut twin_iban = iban.clone();
            twin_iban[2..4].copy_from_slice(twin);
            assert_eq!(naive_mod97(&[&twin_iban[4..], &twin_iban[..4]].concat()), 1);
            assert_eq!(
                check_international(&twin_iban),
                Some(RejectCode::IbanChecksumFailed)
            );
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
                    assert_eq!(
                        check_international(&iban),
                        expected,
                        "{}",
                        String::from_utf8_lossy(&iban)
                    );
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
    fn word_helpers_agree_with_byte_by_byte() {
        for b in 0..=0x7fu8 {
            let word = u64::from_le_bytes([b'5', b, b'A', b, b'Z', b, 0x7f, b]);
            let expected = |low: u8, high: u8| {
                word.to_le_bytes()
                    .iter()
                    .enumerate()
                    .map(|(k, &c)| u64::from((low..=high).contains(&c)) << k)
                    .sum::<u64>()
            };
            assert_eq!(
                gather(in_range(word, b'0', b'9')),
                expected(b'0', b'9'),
                "{b:#x}"
            );
            assert_eq!(
                gather(in_range(word, b'A', b'Z')),
                expected(b'A', b'Z'),
                "{b:#x}"
            );
        }
        for text in [
            b"00000000",
            b"99999999",
            b"12345678",
            b"00000097",
            b"90000001",
        ] {
            let value: u64 = std::str::from_utf8(text).unwrap().parse().unwrap();
            assert_eq!(eight_digits(u64::from_le_bytes(*text)), value);
        }
        for text in [b"ZZZZZZZZ", b"A1B2C3D4", b"0000000A", b"Z9999999"] {
            let letters = text
                .iter()
                .enumerate()
                .map(|(k, &c)| u64::from(c >= b'A') << k)
                .sum();
            let remainder = append_mod97(0, u64::from_le_bytes(*text), letters);
            assert_eq!(
                remainder,
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
            *counts.entry(check_international(&iban)).or_insert(0) += 1;
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
            prop_assert_eq!(check_international(&iban), reference(&iban), "{}", String::from_utf8_lossy(&iban));
        }

        /// Arbitrary text of IBAN characters, and arbitrary bytes: no format at all.
        #[test]
        fn agrees_with_the_crate_on_any_text(text in "[A-Z]{2}[0-9]{2}[A-Z0-9]{0,32}|[A-Z0-9]{0,40}", bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(check_international(text.as_bytes()), reference(text.as_bytes()), "{}", text);
            prop_assert_eq!(check_international(&bytes), reference(&bytes), "{:?}", bytes);
        }
    }
}
