//! Result codes of the ledger: one per event in a batch, with stable numbers.
//!
//! Numbers are never reused or renumbered; the orchestrator, dashboards and the log
//! itself (replay compares them) key on them. Zero is success so that a fresh result
//! array means "applied". The order of the checks is the order of the numbers within
//! each group, as in TigerBeetle: the first failing check names the code.

macro_rules! result_codes {
    ($(#[$doc:meta])* $enum:ident { $( $name:ident = $num:literal, $upper:literal; )* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum $enum {
            $( $name = $num, )*
        }

        impl $enum {
            /// Every code in number order; for tables, stubs and tests.
            pub const ALL: &'static [$enum] = &[$( $enum::$name, )*];

            /// The stable UPPER_SNAKE name.
            pub fn name(self) -> &'static str {
                match self {
                    $( $enum::$name => $upper, )*
                }
            }

            /// The code with this number, if any.
            pub fn from_u16(number: u16) -> Option<$enum> {
                $enum::ALL.iter().copied().find(|code| *code as u16 == number)
            }
        }
    };
}

result_codes! {
    /// The outcome of creating one account.
    AccountResult {
        Ok = 0, "OK";
        LinkedEventFailed = 1, "LINKED_EVENT_FAILED";
        LinkedEventChainOpen = 2, "LINKED_EVENT_CHAIN_OPEN";
        IdMustNotBeZero = 3, "ID_MUST_NOT_BE_ZERO";
        IdMustNotBeIntMax = 4, "ID_MUST_NOT_BE_INT_MAX";
        ReservedFlag = 5, "RESERVED_FLAG";
        FlagsAreMutuallyExclusive = 6, "FLAGS_ARE_MUTUALLY_EXCLUSIVE";
        CurrencyInvalid = 7, "CURRENCY_INVALID";
        KindInvalid = 8, "KIND_INVALID";
        ExistsWithDifferentFields = 9, "EXISTS_WITH_DIFFERENT_FIELDS";
        Exists = 10, "EXISTS";
    }
}

result_codes! {
    /// The outcome of creating one transfer (plain, pending, post or void).
    TransferResult {
        Ok = 0, "OK";
        LinkedEventFailed = 1, "LINKED_EVENT_FAILED";
        LinkedEventChainOpen = 2, "LINKED_EVENT_CHAIN_OPEN";
        IdMustNotBeZero = 3, "ID_MUST_NOT_BE_ZERO";
        IdMustNotBeIntMax = 4, "ID_MUST_NOT_BE_INT_MAX";
        ReservedFlag = 5, "RESERVED_FLAG";
        FlagsAreMutuallyExclusive = 6, "FLAGS_ARE_MUTUALLY_EXCLUSIVE";
        PendingIdMustBeZero = 7, "PENDING_ID_MUST_BE_ZERO";
        PendingIdMustNotBeZero = 8, "PENDING_ID_MUST_NOT_BE_ZERO";
        PendingIdMustBeDifferent = 9, "PENDING_ID_MUST_BE_DIFFERENT";
        TimeoutReservedForPendingTransfer = 10, "TIMEOUT_RESERVED_FOR_PENDING_TRANSFER";
        AmountMustNotBeNegative = 11, "AMOUNT_MUST_NOT_BE_NEGATIVE";
        AmountMustNotBeZero = 12, "AMOUNT_MUST_NOT_BE_ZERO";
        AmountTooLarge = 13, "AMOUNT_TOO_LARGE";
        DebitAccountIdMustNotBeZero = 14, "DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO";
        CreditAccountIdMustNotBeZero = 15, "CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO";
        AccountsMustBeDifferent = 16, "ACCOUNTS_MUST_BE_DIFFERENT";
        CurrencyMustNotBeZero = 17, "CURRENCY_MUST_NOT_BE_ZERO";
        ExistsWithDifferentFields = 18, "EXISTS_WITH_DIFFERENT_FIELDS";
        Exists = 19, "EXISTS";
        DebitAccountNotFound = 20, "DEBIT_ACCOUNT_NOT_FOUND";
        CreditAccountNotFound = 21, "CREDIT_ACCOUNT_NOT_FOUND";
        CurrencyMismatch = 22, "CURRENCY_MISMATCH";
        PendingTransferNotFound = 23, "PENDING_TRANSFER_NOT_FOUND";
        PendingTransferNotPending = 24, "PENDING_TRANSFER_NOT_PENDING";
        PendingTransferHasDifferentDebitAccountId = 25, "PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID";
        PendingTransferHasDifferentCreditAccountId = 26, "PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID";
        PendingTransferHasDifferentCurrency = 27, "PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY";
        ExceedsPendingTransferAmount = 28, "EXCEEDS_PENDING_TRANSFER_AMOUNT";
        PendingTransferHasDifferentAmount = 29, "PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT";
        PendingTransferAlreadyPosted = 30, "PENDING_TRANSFER_ALREADY_POSTED";
        PendingTransferAlreadyVoided = 31, "PENDING_TRANSFER_ALREADY_VOIDED";
        PendingTransferExpired = 32, "PENDING_TRANSFER_EXPIRED";
        OverflowsBalance = 33, "OVERFLOWS_BALANCE";
        ExceedsCredits = 34, "EXCEEDS_CREDITS";
        ExceedsDebits = 35, "EXCEEDS_DEBITS";
    }
}

result_codes! {
    /// The outcome of recording one payment settlement state.
    PaymentResult {
        Ok = 0, "OK";
        PaymentIdMustNotBeZero = 1, "PAYMENT_ID_MUST_NOT_BE_ZERO";
        StateInvalid = 2, "STATE_INVALID";
        TransitionInvalid = 3, "TRANSITION_INVALID";
        Exists = 4, "EXISTS";
    }
}

result_codes! {
    /// The outcome of claiming one idempotency key.
    ClaimResult {
        New = 0, "NEW";
        Replay = 1, "REPLAY";
        PayloadMismatch = 2, "PAYLOAD_MISMATCH";
        KeyInvalid = 3, "KEY_INVALID";
    }
}

result_codes! {
    /// The outcome of recording one outcome or one two-phase-commit decision.
    EntryResult {
        Ok = 0, "OK";
        NotFound = 1, "NOT_FOUND";
        ValueInvalid = 2, "VALUE_INVALID";
        Exists = 3, "EXISTS";
        ExistsWithDifferentValue = 4, "EXISTS_WITH_DIFFERENT_VALUE";
        KeyInvalid = 5, "KEY_INVALID";
    }
}

result_codes! {
    /// The outcome of anchoring the audit trail's head (one event per record).
    AnchorResult {
        Ok = 0, "OK";
        Behind = 1, "BEHIND";
        Exists = 2, "EXISTS";
        ExistsWithDifferentHash = 3, "EXISTS_WITH_DIFFERENT_HASH";
        SeqMustNotBeZero = 4, "SEQ_MUST_NOT_BE_ZERO";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_and_round_trip() {
        for (i, code) in TransferResult::ALL.iter().enumerate() {
            assert_eq!(*code as u16 as usize, i);
            assert_eq!(TransferResult::from_u16(*code as u16), Some(*code));
        }
        for (i, code) in AccountResult::ALL.iter().enumerate() {
            assert_eq!(*code as u16 as usize, i);
        }
        assert_eq!(TransferResult::from_u16(36), None);
        assert_eq!(
            TransferResult::Exists as u16,
            19,
            "numbers are part of the contract"
        );
        assert_eq!(TransferResult::ExceedsCredits.name(), "EXCEEDS_CREDITS");
    }
}
