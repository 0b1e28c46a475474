//! Reason codes: why a payment scored as it did, with stable numbers and names.
//!
//! Numbers are the wire form across the Python boundary (0 pads an unused slot) and
//! never change meaning; names are the stable UPPER_SNAKE strings in `PayResponse`.

/// Why a payment scored high, or which rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u16)]
pub enum ReasonCode {
    #[default]
    None = 0,
    AmountHigh = 1,
    AmountUnusualForAccount = 2,
    FirstPayment = 3,
    AccountVelocity = 4,
    MsisdnVelocity = 5,
    CardVelocity = 6,
    CardManyAccounts = 7,
    DeviceVelocity = 8,
    DeviceManyAccounts = 9,
    IpVelocity = 10,
    AccountManyCards = 11,
    NewDevice = 12,
    NewPaymentMethod = 13,
    RecentFailures = 14,
    SimSwapRecent = 15,
    NewAccount = 16,
    PlanType = 17,
    Purpose = 18,
    PaymentMethodType = 19,
    Channel = 20,
    BinCountryMismatch = 21,
    BinUnknown = 22,
    /// A rule matched whose file line names no more specific reason.
    RuleMatched = 23,
}

impl ReasonCode {
    /// Every code, in number order.
    pub const ALL: [ReasonCode; 24] = [
        ReasonCode::None,
        ReasonCode::AmountHigh,
        ReasonCode::AmountUnusualForAccount,
        ReasonCode::FirstPayment,
        ReasonCode::AccountVelocity,
        ReasonCode::MsisdnVelocity,
        ReasonCode::CardVelocity,
        ReasonCode::CardManyAccounts,
        ReasonCode::DeviceVelocity,
        ReasonCode::DeviceManyAccounts,
        ReasonCode::IpVelocity,
        ReasonCode::AccountManyCards,
        ReasonCode::NewDevice,
        ReasonCode::NewPaymentMethod,
        ReasonCode::RecentFailures,
        ReasonCode::SimSwapRecent,
        ReasonCode::NewAccount,
        ReasonCode::PlanType,
        ReasonCode::Purpose,
        ReasonCode::PaymentMethodType,
        ReasonCode::Channel,
        ReasonCode::BinCountryMismatch,
        ReasonCode::BinUnknown,
        ReasonCode::RuleMatched,
    ];

    /// The stable UPPER_SNAKE name.
    pub fn name(self) -> &'static str {
        match self {
            ReasonCode::None => "NONE",
            ReasonCode::AmountHigh => "AMOUNT_HIGH",
            ReasonCode::AmountUnusualForAccount => "AMOUNT_UNUSUAL_FOR_ACCOUNT",
            ReasonCode::FirstPayment => "FIRST_PAYMENT",
            ReasonCode::AccountVelocity => "ACCOUNT_VELOCITY",
            ReasonCode::MsisdnVelocity => "MSISDN_VELOCITY",
            ReasonCode::CardVelocity => "CARD_VELOCITY",
            ReasonCode::CardManyAccounts => "CARD_MANY_ACCOUNTS",
            ReasonCode::DeviceVelocity => "DEVICE_VELOCITY",
            ReasonCode::DeviceManyAccounts => "DEVICE_MANY_ACCOUNTS",
            ReasonCode::IpVelocity => "IP_VELOCITY",
            ReasonCode::AccountManyCards => "ACCOUNT_MANY_CARDS",
            ReasonCode::NewDevice => "NEW_DEVICE",
            ReasonCode::NewPaymentMethod => "NEW_PAYMENT_METHOD",
            ReasonCode::RecentFailures => "RECENT_FAILURES",
            ReasonCode::SimSwapRecent => "SIM_SWAP_RECENT",
            ReasonCode::NewAccount => "NEW_ACCOUNT",
            ReasonCode::PlanType => "PLAN_TYPE",
            ReasonCode::Purpose => "PURPOSE",
            ReasonCode::PaymentMethodType => "PAYMENT_METHOD_TYPE",
            ReasonCode::Channel => "CHANNEL",
            ReasonCode::BinCountryMismatch => "BIN_COUNTRY_MISMATCH",
            ReasonCode::BinUnknown => "BIN_UNKNOWN",
            ReasonCode::RuleMatched => "RULE_MATCHED",
        }
    }

    /// The code named `name`, if any.
    pub fn from_name(name: &str) -> Option<ReasonCode> {
        ReasonCode::ALL
            .iter()
            .copied()
            .find(|code| code.name() == name)
    }
}

/// What to do with a payment. Numbers are the wire form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Decision {
    #[default]
    Approve = 0,
    Review = 1,
    Decline = 2,
}

impl Decision {
    pub const ALL: [Decision; 3] = [Decision::Approve, Decision::Review, Decision::Decline];

    /// The stable name (`FraudAssessment.decision`).
    pub fn name(self) -> &'static str {
        match self {
            Decision::Approve => "APPROVE",
            Decision::Review => "REVIEW",
            Decision::Decline => "DECLINE",
        }
    }
}
