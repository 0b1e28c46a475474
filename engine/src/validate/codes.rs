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
    MsisdnInvalid = 3, "MSISDN_INVALID", "msisdn", "msisdn must be E.164: '+' then 8 to 15 digits, no leading zero";
    AmountNotPositive = 4, "AMOUNT_NOT_POSITIVE", "amount.amount_minor", "amount_minor must be greater than zero";
    AmountTooLarge = 5, "AMOUNT_TOO_LARGE", "amount.amount_minor", "amount_minor is above the per-payment maximum";
    CurrencyUnknown = 6, "CURRENCY_UNKNOWN", "amount.currency", "currency must be an ISO 4217 alphabetic code with a minor unit";
    PurposeInvalid = 7, "PURPOSE_INVALID", "purpose", "purpose must be BILL_PAYMENT or PREPAID_TOPUP";
    MethodMissing = 8, "METHOD_MISSING", "method", "a payment method is required";
    // Business declines (DECLINED), 100 and up.
    AccountNotFound = 100, "ACCOUNT_NOT_FOUND", "", "no account with this account_id";
    MsisdnMismatch = 101, "MSISDN_MISMATCH", "", "the msisdn is not the one bound to this account";
    AccountClosed = 102, "ACCOUNT_CLOSED", "", "the account is closed and takes no payments";
    CurrencyMismatch = 103, "CURRENCY_MISMATCH", "", "the payment currency is not the account's currency";
    PurposeNotAllowedForPlan = 104, "PURPOSE_NOT_ALLOWED_FOR_PLAN", "", "bill payments are for postpaid lines, top-ups for prepaid lines";
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
        assert_eq!(RejectCode::PurposeNotAllowedForPlan.name(), "PURPOSE_NOT_ALLOWED_FOR_PLAN");
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
