//! Layer 1, formats: is each field well formed, before any table is consulted?
//!
//! Every check here looks at one field's bytes (and, for amounts, the configured
//! bounds). Fields arrive as raw bytes from numpy columns, so nothing assumes UTF-8:
//! every rule accepts only ASCII, which makes non-ASCII input a plain rejection.

use super::assertion::{self, Assertion};
use super::calling_codes::CALLING_CODES;
use super::card;
use super::clock::Now;
use super::{MethodKind, PaymentView, Purpose, RejectCode};
use crate::money::{Currency, AMOUNT_MINOR_MAX};
use crate::validate::config::Rules;

/// E.164 allows at most 15 digits after the '+', country calling code included.
pub const E164_DIGITS_MAX: usize = 15;
/// Bounds of the free-text fields, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
pub const ACCOUNT_ID_LEN_MAX: usize = 64;
pub const WALLET_PROVIDER_LEN_MAX: usize = 32;
pub const WALLET_ID_LEN_MAX: usize = 64;
pub const CHANNEL_LEN_MAX: usize = 32;
pub const DEVICE_ID_LEN_MAX: usize = 128;
/// The longest textual IP address: an IPv6 address with an embedded IPv4 tail.
pub const IP_LEN_MAX: usize = 45;
/// IBANs are 15 (Norway) to 34 characters by ISO 13616; 5 is the shortest string
/// that can carry a country, check digits and a BBAN character.
pub const IBAN_LEN_MIN: usize = 5;
pub const IBAN_LEN_MAX: usize = 34;

/// Possible national-number lengths by country calling code, one table per code
/// length (calling codes are prefix-free, so at most one length matches a number).
/// A zero mask means "not assigned".
static CALLING_CODE_MASKS: [[u32; 1000]; 3] = {
    let mut table = [[0u32; 1000]; 3];
    let mut i = 0;
    while i < CALLING_CODES.len() {
        let (code, mask) = CALLING_CODES[i];
        let digits = if code < 10 {
            0
        } else if code < 100 {
            1
        } else {
            2
        };
        table[digits][code as usize] = mask;
        i += 1;
    }
    table
};

/// Byte classes of the free-text fields, one bit per field rule: a charset check is
/// one table load and AND per byte, without a branch, instead of a chain of range
/// comparisons with an early exit. Valid input, the common case, is read whole
/// either way.
const PRINTABLE: u8 = 1 << 0; // space through tilde: idempotency keys
const DEVICE_ID: u8 = 1 << 1; // printable without space
const ACCOUNT_ID: u8 = 1 << 2; // [A-Za-z0-9_-]
const WALLET_PROVIDER: u8 = 1 << 3; // [a-z0-9_]
const WALLET_ID: u8 = 1 << 4; // [A-Za-z0-9._@+-]
const CHANNEL: u8 = 1 << 5; // [a-z0-9_-]

static BYTE_CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        let c = b as u8;
        let (digit, upper, lower) = (
            c.is_ascii_digit(),
            c.is_ascii_uppercase(),
            c.is_ascii_lowercase(),
        );
        let mut class = PRINTABLE;
        if c != b' ' {
            class |= DEVICE_ID;
        }
        if digit || upper || lower || c == b'_' || c == b'-' {
            class |= ACCOUNT_ID;
        }
        if digit || lower || c == b'_' {
            class |= WALLET_PROVIDER;
        }
        if digit || upper || lower || matches!(c, b'.' | b'_' | b'@' | b'+' | b'-') {
            class |= WALLET_ID;
        }
        if digit || lower || c == b'_' || c == b'-' {
            class |= CHANNEL;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// Whether every byte of `bytes` is in `class`.
#[inline]
fn all_in(bytes: &[u8], class: u8) -> bool {
    bytes
        .iter()
        .fold(class, |acc, &b| acc & BYTE_CLASSES[usize::from(b)])
        != 0
}

/// What the format layer learnt from a well-formed payment, for the layers after it:
/// they use these instead of looking the currency up or parsing the token again.
pub struct WellFormed<'a> {
    pub currency: Currency,
    /// The subscriber assertion, split but not yet verified; None when not given.
    pub assertion: Option<Assertion<'a>>,
}

/// The first format failure of a payment, as `Err`. Order: the fields every payment
/// has, then the amount (whose bounds need currency and purpose), then the method's
/// own fields, then the optional context fields.
pub fn check<'a>(
    rules: &Rules,
    p: &PaymentView<'a>,
    now: &Now,
) -> Result<WellFormed<'a>, RejectCode> {
    if !is_idempotency_key(p.idempotency_key) {
        return Err(RejectCode::IdempotencyKeyInvalid);
    }
    if !is_account_id(p.account_id) {
        return Err(RejectCode::AccountIdInvalid);
    }
    if let Some(code) = check_msisdn(p.msisdn) {
        return Err(code);
    }
    if p.amount_minor <= 0 {
        return Err(RejectCode::AmountNotPositive);
    }
    if p.amount_minor > AMOUNT_MINOR_MAX {
        return Err(RejectCode::AmountTooLarge);
    }
    let Some(currency) = Currency::from_bytes(p.currency) else {
        return Err(RejectCode::CurrencyUnknown);
    };
    if p.purpose == Purpose::Unspecified {
        return Err(RejectCode::PurposeInvalid);
    }
    let (min, max) = rules.purpose_bounds(p.purpose, currency);
    if p.amount_minor < min {
        return Err(RejectCode::AmountBelowPurposeMin);
    }
    if p.amount_minor > max {
        return Err(RejectCode::AmountAbovePurposeMax);
    }
    let method = match p.method {
        MethodKind::Missing => Some(RejectCode::MethodMissing),
        MethodKind::Card => card::check_pan(p.card_pan).or_else(|| {
            card::check_expiry_format(rules, p.card_expiry_month, p.card_expiry_year, now)
        }),
        MethodKind::Wallet if !is_wallet_provider(p.wallet_provider) => {
            Some(RejectCode::WalletProviderInvalid)
        }
        MethodKind::Wallet if !is_wallet_id(p.wallet_id) => Some(RejectCode::WalletIdInvalid),
        MethodKind::Wallet => None,
        MethodKind::BankAccount => check_iban(p.iban),
        MethodKind::CarrierBalance => None,
    };
    if let Some(code) = method {
        return Err(code);
    }
    if !is_channel(p.channel) {
        return Err(RejectCode::ChannelInvalid);
    }
    if !is_device_id(p.device_id) {
        return Err(RejectCode::DeviceIdInvalid);
    }
    if !p.ip.is_empty() && !is_ip(p.ip) {
        return Err(RejectCode::IpInvalid);
    }
    let assertion = if p.assertion.is_empty() {
        None
    } else {
        Some(assertion::parse(p.assertion).ok_or(RejectCode::AssertionMalformed)?)
    };
    Ok(WellFormed {
        currency,
        assertion,
    })
}

/// 1 to 255 printable ASCII characters (space through tilde).
pub fn is_idempotency_key(key: &[u8]) -> bool {
    (1..=IDEMPOTENCY_KEY_LEN_MAX).contains(&key.len()) && all_in(key, PRINTABLE)
}

/// 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_account_id(id: &[u8]) -> bool {
    (1..=ACCOUNT_ID_LEN_MAX).contains(&id.len()) && all_in(id, ACCOUNT_ID)
}

/// E.164: '+', a non-zero first digit, digits only, at most 15 of them; a country
/// calling code that is assigned; and a national significant number of a length
/// possible under that code (libphonenumber's metadata, see `calling_codes.rs`).
pub fn check_msisdn(msisdn: &[u8]) -> Option<RejectCode> {
    let [b'+', digits @ ..] = msisdn else {
        return Some(RejectCode::MsisdnInvalid);
    };
    if digits.first().is_none_or(|&d| d == b'0') || !digits.iter().all(u8::is_ascii_digit) {
        return Some(RejectCode::MsisdnInvalid);
    }
    if digits.len() > E164_DIGITS_MAX {
        return Some(RejectCode::MsisdnLengthInvalid);
    }
    let mut code = 0usize;
    for (i, &d) in digits.iter().take(3).enumerate() {
        code = code * 10 + usize::from(d - b'0');
        let mask = CALLING_CODE_MASKS[i][code];
        if mask != 0 {
            let national = digits.len() - (i + 1);
            return (mask >> national.min(31) & 1 == 0).then_some(RejectCode::MsisdnLengthInvalid);
        }
    }
    Some(RejectCode::MsisdnCountryCodeUnknown)
}

/// Whether `msisdn` passes `check_msisdn`.
pub fn is_e164(msisdn: &[u8]) -> bool {
    check_msisdn(msisdn).is_none()
}

/// An IBAN in electronic format (uppercase letters and digits, no spaces), of its
/// country's length and BBAN structure by the SWIFT registry, passing ISO 7064
/// mod 97-10; see `iban.rs`. The spaced paper format and lowercase are refused: the
/// wire format is the electronic one.
pub fn check_iban(iban: &[u8]) -> Option<RejectCode> {
    super::iban::check(iban)
}

/// 1 to 32 characters of `[a-z0-9_]`.
pub fn is_wallet_provider(provider: &[u8]) -> bool {
    (1..=WALLET_PROVIDER_LEN_MAX).contains(&provider.len()) && all_in(provider, WALLET_PROVIDER)
}

/// 1 to 64 characters of `[A-Za-z0-9._@+-]` (phone numbers, e-mail-like handles, ids).
pub fn is_wallet_id(id: &[u8]) -> bool {
    (1..=WALLET_ID_LEN_MAX).contains(&id.len()) && all_in(id, WALLET_ID)
}

/// At most 32 characters of `[a-z0-9_-]`; empty means "not given". Channel names are
/// case-insensitive: the API lower-cases ASCII letters before validation, so the core
/// sees (and stores) one spelling and refuses upper case as not normalized.
pub fn is_channel(channel: &[u8]) -> bool {
    channel.len() <= CHANNEL_LEN_MAX && all_in(channel, CHANNEL)
}

/// At most 128 printable ASCII characters without spaces; empty means "not given".
pub fn is_device_id(device_id: &[u8]) -> bool {
    device_id.len() <= DEVICE_ID_LEN_MAX && all_in(device_id, DEVICE_ID)
}

/// An IPv4 address in dotted-quad form or an IPv6 address (RFC 4291 text forms, no
/// zone index). IPv6 goes to the standard library's strict parser; IPv4, nearly every
/// request's case, to `is_ipv4`, which accepts exactly what the standard library does
/// at a fraction of its cost (a property test holds the two together).
pub fn is_ip(ip: &[u8]) -> bool {
    if ip.len() > IP_LEN_MAX {
        return false;
    }
    // IPv4 first, in one pass: it refuses a ':' at once, and a text without one is
    // never IPv6, so only those go on to the IPv6 parser. Scanning for ':' up front
    // cost nearly as much as the IPv4 check itself.
    is_ipv4(ip)
        || (ip.contains(&b':')
            && std::str::from_utf8(ip).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok()))
}

/// Four decimal octets 0 to 255 separated by dots, each 1 to 3 digits without a
/// leading zero (as `std::net::Ipv4Addr` parses them: "01.2.3.4" is refused).
#[inline]
pub fn is_ipv4(ip: &[u8]) -> bool {
    ipv4_octets(ip).is_some()
}

/// The octets of an IPv4 address in the form `is_ipv4` accepts, or None. The fraud
/// scorer keys velocity by the /24 with it, at a fraction of the standard parser's cost.
#[inline]
pub fn ipv4_octets(ip: &[u8]) -> Option<[u8; 4]> {
    // Octet by octet: up to three digits, then a dot between octets. A fourth digit
    // is left over and refused where the dot (or the end) should be.
    let mut octets = [0u8; 4];
    let mut rest = ip;
    for (k, octet) in octets.iter_mut().enumerate() {
        let digits = rest
            .iter()
            .take(3)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let value = rest[..digits]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        *octet = u8::try_from(value).ok()?;
        rest = &rest[digits..];
        if k < 3 {
            rest = rest.strip_prefix(b".")?;
        }
    }
    rest.is_empty().then_some(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msisdn_rules_and_their_near_misses() {
        assert_eq!(check_msisdn(b"+306912345678"), None);
        assert_eq!(check_msisdn(b"+12025550123"), None);
        assert_eq!(check_msisdn(b"+447911123456"), None);
        assert_eq!(check_msisdn(b"+4915112345678"), None);
        assert_eq!(
            check_msisdn(b"306912345678"),
            Some(RejectCode::MsisdnInvalid),
            "missing plus"
        );
        assert_eq!(
            check_msisdn(b"+0306912345678"),
            Some(RejectCode::MsisdnInvalid),
            "leading zero"
        );
        assert_eq!(
            check_msisdn(b"+30 6912345678"),
            Some(RejectCode::MsisdnInvalid),
            "space"
        );
        assert_eq!(check_msisdn(b"+"), Some(RejectCode::MsisdnInvalid));
        assert_eq!(check_msisdn(b""), Some(RejectCode::MsisdnInvalid));
        assert_eq!(
            check_msisdn(b"+1202555012"),
            Some(RejectCode::MsisdnLengthInvalid),
            "NANP is 10 digits"
        );
        assert_eq!(
            check_msisdn(b"+120255501234"),
            Some(RejectCode::MsisdnLengthInvalid)
        );
        assert_eq!(
            check_msisdn(b"+4915112345678901"),
            Some(RejectCode::MsisdnLengthInvalid),
            "16 digits"
        );
        assert_eq!(
            check_msisdn(b"+2812345678"),
            Some(RejectCode::MsisdnCountryCodeUnknown),
            "28x is spare"
        );
        assert_eq!(
            check_msisdn(b"+9991234567"),
            Some(RejectCode::MsisdnCountryCodeUnknown)
        );
        assert_eq!(
            check_msisdn(b"+80012345678"),
            None,
            "international freephone"
        );
    }

    #[test]
    fn iban_rules_and_their_near_misses() {
        assert_eq!(check_iban(b"DE89370400440532013000"), None);
        assert_eq!(check_iban(b"GB82WEST12345698765432"), None);
        assert_eq!(check_iban(b"NO9386011117947"), None);
        assert_eq!(
            check_iban(b"DE89370400440532013001"),
            Some(RejectCode::IbanChecksumFailed)
        );
        assert_eq!(
            check_iban(b"DE8937040044053201300"),
            Some(RejectCode::IbanChecksumFailed)
        );
        assert_eq!(
            check_iban(b"DE89 3704 0044 0532 0130 00"),
            Some(RejectCode::IbanInvalid),
            "paper format"
        );
        assert_eq!(
            check_iban(b"de89370400440532013000"),
            Some(RejectCode::IbanInvalid),
            "lowercase"
        );
        // A valid mod 97 checksum over a country with no IBAN format.
        assert_eq!(
            check_iban(b"US64SVBKUS6S3300958879"),
            Some(RejectCode::IbanCountryUnknown)
        );
        assert_eq!(check_iban(b"DE"), Some(RejectCode::IbanInvalid));
    }

    #[test]
    fn context_fields() {
        assert!(is_ip(b"192.0.2.1") && is_ip(b"2001:db8::1") && is_ip(b"::ffff:192.0.2.1"));
        assert!(
            !is_ip(b"192.0.2.256")
                && !is_ip(b"192.0.2")
                && !is_ip(b"fe80::1%eth0")
                && !is_ip(b"01.2.3.4")
        );
        assert!(is_channel(b"app") && is_channel(b"") && is_channel(b"ussd-2"));
        assert!(!is_channel(b"App") && !is_channel(&[b'a'; 33]));
        assert!(is_device_id(b"a1:b2:c3") && is_device_id(b""));
        assert!(!is_device_id(b"a b") && !is_device_id(&[b'a'; 129]));
        assert!(
            is_wallet_provider(b"mpesa")
                && !is_wallet_provider(b"M-Pesa")
                && !is_wallet_provider(b"")
        );
        assert!(
            is_wallet_id(b"user+1@example.com") && !is_wallet_id(b"user 1") && !is_wallet_id(b"")
        );
    }

    /// The byte-class table against the rules as written out, for every byte, alone
    /// and inside an otherwise valid value.
    #[test]
    fn byte_classes_are_the_documented_charsets() {
        type ClassRule = (u8, fn(u8) -> bool);
        let rules: [ClassRule; 6] = [
            (PRINTABLE, |b| (0x20..=0x7e).contains(&b)),
            (DEVICE_ID, |b| (0x21..=0x7e).contains(&b)),
            (ACCOUNT_ID, |b| {
                b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
            }),
            (WALLET_PROVIDER, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
            }),
            (WALLET_ID, |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-')
            }),
            (CHANNEL, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
            }),
        ];
        for (class, rule) in rules {
            for b in 0..=255u8 {
                assert_eq!(
                    all_in(&[b], class),
                    rule(b),
                    "class {class:#x}, byte {b:#x}"
                );
                assert_eq!(
                    all_in(&[b'1', b, b'2'], class),
                    rule(b),
                    "class {class:#x}, byte {b:#x}"
                );
            }
            assert!(all_in(b"", class));
        }
    }

    proptest::proptest! {
        #[test]
        fn ipv4_agrees_with_the_standard_library(text in "[0-9.]{0,17}", octets in proptest::array::uniform4(0u32..300)) {
            let dotted = format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], octets[3]);
            let padded = format!("{:02}.{}.{:03}.{}", octets[0], octets[1], octets[2], octets[3]);
            for candidate in [text.as_str(), dotted.as_str(), padded.as_str()] {
                let parsed = candidate.parse::<std::net::Ipv4Addr>().ok().map(|a| a.octets());
                proptest::prop_assert_eq!(is_ipv4(candidate.as_bytes()), parsed.is_some(), "{}", candidate);
                proptest::prop_assert_eq!(ipv4_octets(candidate.as_bytes()), parsed, "{}", candidate);
            }
        }

        #[test]
        fn no_msisdn_over_fifteen_digits_passes(digits in "[1-9][0-9]{15,20}") {
            let msisdn = format!("+{digits}");
            proptest::prop_assert_eq!(check_msisdn(msisdn.as_bytes()), Some(RejectCode::MsisdnLengthInvalid));
        }

        #[test]
        fn any_non_digit_after_the_plus_fails(prefix in "[1-9][0-9]{3,6}", bad in "[^0-9]", suffix in "[0-9]{3,6}") {
            let msisdn = format!("+{prefix}{bad}{suffix}");
            proptest::prop_assert_eq!(check_msisdn(msisdn.as_bytes()), Some(RejectCode::MsisdnInvalid));
        }
    }
}
