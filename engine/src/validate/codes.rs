//! Reject codes: every way a payment can fail validation, with a stable number.
//!
//! Numbers are never reused or renumbered; clients and dashboards key on them. Codes
//! below 100 are format failures (the request is malformed: gRPC INVALID_ARGUMENT
//! naming `field()`); codes from 100 are business declines (`status = DECLINED`, the
//! name as `decline_reason`).

macro_rules! reject_codes {
    ($( $name:ident = $num:literal, $upper:literal, $field:literal, $text:literal; )*) => {
        /// Why a payment was rejected; `Ok` is zero so a fresh result array means "passed".
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum RejectCode {
            Ok = 0,
            $( $name = $num, )*
        }

        impl RejectCode {
            /// Every code, `Ok` first; for tables, stubs and tests.
            pub const ALL: &'static [RejectCode] = &[RejectCode::Ok, $( RejectCode::$name, )*];

            /// The stable UPPER_SNAKE name, used as `decline_reason`.
            pub fn name(self) -> &'static str {
                match self {
                    RejectCode::Ok => "OK",
                    $( RejectCode::$name => $upper, )*
                }
            }

            /// The request field a format failure is about; empty for declines.
            pub fn field(self) -> &'static str {
                match self {
                    RejectCode::Ok => "",
                    $( RejectCode::$name => $field, )*
                }
            }

            /// A sentence for a human (the gRPC message, `decline_detail`).
            pub fn text(self) -> &'static str {
                match self {
                    RejectCode::Ok => "passed",
                    $( RejectCode::$name => $text, )*
                }
            }

            /// The code with this number, if any.
            pub fn from_u16(number: u16) -> Option<RejectCode> {
                RejectCode::ALL.iter().copied().find(|code| *code as u16 == number)
            }
        }
    };
}

reject_codes! {
    // Format failures (INVALID_ARGUMENT), 1..=99.
    IdempotencyKeyInvalid = 1, "IDEMPOTENCY_KEY_INVALID", "idempotency_key", "idempotency_key must be 1 to 255 printable ASCII characters";
    AccountIdInvalid = 2, "ACCOUNT_ID_INVALID", "account_id", "account_id must be 1 to 64 characters of [A-Za-z0-9_-]";
    MsisdnInvalid = 3, "MSISDN_INVALID", "msisdn", "msisdn must be E.164: '+' then digits, no leading zero";
    AmountNotPositive = 4, "AMOUNT_NOT_POSITIVE", "amount.amount_minor", "amount_minor must be greater than zero";
    AmountTooLarge = 5, "AMOUNT_TOO_LARGE", "amount.amount_minor", "amount_minor is above the per-payment maximum";
    CurrencyUnknown = 6, "CURRENCY_UNKNOWN", "amount.currency", "currency must be an ISO 4217 alphabetic code with a minor unit";
    PurposeInvalid = 7, "PURPOSE_INVALID", "purpose", "purpose must be BILL_PAYMENT or PREPAID_TOPUP";
    MethodMissing = 8, "METHOD_MISSING", "method", "a payment method is required";
    MsisdnCountryCodeUnknown = 9, "MSISDN_COUNTRY_CODE_UNKNOWN", "msisdn", "msisdn does not start with an assigned country calling code";
    MsisdnLengthInvalid = 10, "MSISDN_LENGTH_INVALID", "msisdn", "msisdn has a length no number under its country calling code has (at most 15 digits)";
    AmountBelowPurposeMin = 11, "AMOUNT_BELOW_PURPOSE_MIN", "amount.amount_minor", "amount_minor is below the minimum for this purpose and currency";
    AmountAbovePurposeMax = 12, "AMOUNT_ABOVE_PURPOSE_MAX", "amount.amount_minor", "amount_minor is above the maximum for this purpose and currency";
    CardPanInvalid = 13, "CARD_PAN_INVALID", "method.card.pan", "pan must be 12 to 19 digits";
    CardLuhnFailed = 14, "CARD_LUHN_FAILED", "method.card.pan", "pan fails the Luhn check digit";
    CardSchemeUnknown = 15, "CARD_SCHEME_UNKNOWN", "method.card.pan", "pan does not belong to a supported card scheme";
    CardLengthInvalid = 16, "CARD_LENGTH_INVALID", "method.card.pan", "pan length is not one its card scheme issues";
    CardExpiryMonthInvalid = 17, "CARD_EXPIRY_MONTH_INVALID", "method.card.expiry_month", "expiry_month must be 1 to 12";
    CardExpiryYearInvalid = 18, "CARD_EXPIRY_YEAR_INVALID", "method.card.expiry_year", "expiry_year must be a four-digit year no further ahead than cards are issued";
    IbanInvalid = 19, "IBAN_INVALID", "method.bank_account.iban", "iban must be an electronic-format IBAN (uppercase, no spaces) of its country's length and structure";
    IbanChecksumFailed = 20, "IBAN_CHECKSUM_FAILED", "method.bank_account.iban", "iban fails the ISO 7064 mod 97-10 check";
    IbanCountryUnknown = 21, "IBAN_COUNTRY_UNKNOWN", "method.bank_account.iban", "iban starts with a country that has no IBAN format";
    WalletProviderInvalid = 22, "WALLET_PROVIDER_INVALID", "method.wallet.provider", "provider must be 1 to 32 characters of [a-z0-9_]";
    WalletIdInvalid = 23, "WALLET_ID_INVALID", "method.wallet.wallet_id", "wallet_id must be 1 to 64 characters of [A-Za-z0-9._@+-]";
    ChannelInvalid = 24, "CHANNEL_INVALID", "channel", "channel must be at most 32 characters of [a-z0-9_-] once lower-cased (channel names are case-insensitive)";
    DeviceIdInvalid = 25, "DEVICE_ID_INVALID", "device_id", "device_id must be at most 128 printable ASCII characters without spaces";
    IpInvalid = 26, "IP_INVALID", "ip", "ip must be an IPv4 or IPv6 address";
    AssertionMalformed = 27, "ASSERTION_MALFORMED", "subscriber_assertion", "subscriber_assertion must be v1.<key id>.<account id>.<msisdn>.<expiry s>.<64 hex digits>";
    IbanNationalCheckFailed = 28, "IBAN_NATIONAL_CHECK_FAILED", "method.bank_account.iban", "iban passes mod 97-10 but fails its country's national check digits (such as Spain's DC, France's RIB key or Italy's CIN): the account number is mistyped";
    // Business declines (DECLINED), 100 and up.
    AccountNotFound = 100, "ACCOUNT_NOT_FOUND", "", "no account with this account_id";
    MsisdnMismatch = 101, "MSISDN_MISMATCH", "", "the msisdn is not the one bound to this account";
    AccountClosed = 102, "ACCOUNT_CLOSED", "", "the account is closed and takes no payments";
    CurrencyMismatch = 103, "CURRENCY_MISMATCH", "", "the payment currency is not the account's currency";
    PurposeNotAllowedForPlan = 104, "PURPOSE_NOT_ALLOWED_FOR_PLAN", "", "bill payments are for postpaid lines, top-ups for prepaid lines";
    AccountStatusForbidsPurpose = 105, "ACCOUNT_STATUS_FORBIDS_PURPOSE", "", "a suspended line may pay its bill but takes no top-up";
    AssertionKeyUnknown = 106, "ASSERTION_KEY_UNKNOWN", "", "the subscriber assertion is signed with a key that is not active";
    AssertionSignatureInvalid = 107, "ASSERTION_SIGNATURE_INVALID", "", "the subscriber assertion's signature does not verify";
    AssertionExpired = 108, "ASSERTION_EXPIRED", "", "the subscriber assertion has expired";
    AssertionSubjectMismatch = 109, "ASSERTION_SUBJECT_MISMATCH", "", "the subscriber assertion is for another account or msisdn";
    MethodNotAllowed = 110, "METHOD_NOT_ALLOWED", "", "this payment method is not accepted for this purpose on this channel";
    CardExpired = 111, "CARD_EXPIRED", "", "the card has expired";
    CardBinBlocked = 112, "CARD_BIN_BLOCKED", "", "cards of this issuer range are not accepted";
    WalletProviderUnknown = 113, "WALLET_PROVIDER_UNKNOWN", "", "this wallet provider is not supported";
    MethodAmountLimitExceeded = 114, "METHOD_AMOUNT_LIMIT_EXCEEDED", "", "the amount is above the limit for this payment method";
    TopupAbovePlanMaximum = 115, "TOPUP_ABOVE_PLAN_MAXIMUM", "", "the top-up would take the prepaid balance above the plan maximum";
    BillOverpayment = 116, "BILL_OVERPAYMENT", "", "the amount is above what is owed plus the overpayment allowance";
    InsufficientCredit = 117, "INSUFFICIENT_CREDIT", "", "the line's credit, less pending holds, does not cover the amount";
    DailyCountLimit = 118, "DAILY_COUNT_LIMIT", "", "the subscriber has reached the number of payments allowed today";
    DailyAmountLimit = 119, "DAILY_AMOUNT_LIMIT", "", "the payment would take the subscriber above today's amount limit";
    MonthlyCountLimit = 120, "MONTHLY_COUNT_LIMIT", "", "the subscriber has reached the number of payments allowed this month";
    MonthlyAmountLimit = 121, "MONTHLY_AMOUNT_LIMIT", "", "the payment would take the subscriber above this month's amount limit";
}

impl RejectCode {
    /// A format failure: the request itself is malformed.
    pub fn is_format(self) -> bool {
        let n = self as u16;
        (1..100).contains(&n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_upper_snake_and_numbers_are_unique() {
        assert_eq!(RejectCode::MsisdnMismatch.name(), "MSISDN_MISMATCH");
        assert_eq!(
            RejectCode::PurposeNotAllowedForPlan.name(),
            "PURPOSE_NOT_ALLOWED_FOR_PLAN"
        );
        let mut numbers: Vec<u16> = RejectCode::ALL.iter().map(|c| *c as u16).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), RejectCode::ALL.len());
    }

    #[test]
    fn format_codes_name_a_field_and_declines_do_not() {
        for code in RejectCode::ALL.iter().copied().skip(1) {
            assert_eq!(code.is_format(), !code.field().is_empty(), "{code:?}");
            assert_eq!(RejectCode::from_u16(code as u16), Some(code));
        }
        assert_eq!(RejectCode::from_u16(99), None);
    }
}
