//! The model's inputs: one row of floats per payment, computed from the payment and
//! the state before it.
//!
//! Names are part of the model file format: a model names the features it weighs, so
//! adding a feature here does not break a shipped model (it gets weight 0). Counts
//! enter as `ln(1 + count)` so that a burst of 50 is not 50 times a single payment.

use super::reasons::ReasonCode;
use super::state::{AccountState, LinkState};
use super::window::log_amount;
use super::FraudInput;
use crate::validate::{MethodKind, Plan, Purpose};

const DAY_S: i64 = 86_400;

/// One model input. The discriminant is the column index in a feature row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Feature {
    LogAmount,
    AmountZ,
    FirstPayment,
    AccountCount1m,
    AccountCount1h,
    AccountCount24h,
    AccountAmount24h,
    MsisdnCount1h,
    MsisdnCount24h,
    CardCount1m,
    CardCount1h,
    CardCount24h,
    CardAccounts24h,
    DeviceCount1h,
    DeviceAccounts24h,
    IpCount1h,
    IpAccounts24h,
    AccountCards24h,
    NewDevice,
    NewMethod,
    AccountFailed24h,
    SimSwap24h,
    SimSwap7d,
    SimSwap24hNewDevice,
    AccountAgeLogDays,
    NewAccount7d,
    PlanPrepaid,
    PurposeTopup,
    MethodCard,
    MethodWallet,
    MethodBank,
    MethodCarrier,
    ChannelApp,
    ChannelWeb,
    ChannelUssd,
    BinCountryMismatch,
    BinUnknown,
}

/// Number of features in a row.
pub const FEATURE_COUNT: usize = Feature::ALL.len();

impl Feature {
    pub const ALL: [Feature; 37] = [
        Feature::LogAmount,
        Feature::AmountZ,
        Feature::FirstPayment,
        Feature::AccountCount1m,
        Feature::AccountCount1h,
        Feature::AccountCount24h,
        Feature::AccountAmount24h,
        Feature::MsisdnCount1h,
        Feature::MsisdnCount24h,
        Feature::CardCount1m,
        Feature::CardCount1h,
        Feature::CardCount24h,
        Feature::CardAccounts24h,
        Feature::DeviceCount1h,
        Feature::DeviceAccounts24h,
        Feature::IpCount1h,
        Feature::IpAccounts24h,
        Feature::AccountCards24h,
        Feature::NewDevice,
        Feature::NewMethod,
        Feature::AccountFailed24h,
        Feature::SimSwap24h,
        Feature::SimSwap7d,
        Feature::SimSwap24hNewDevice,
        Feature::AccountAgeLogDays,
        Feature::NewAccount7d,
        Feature::PlanPrepaid,
        Feature::PurposeTopup,
        Feature::MethodCard,
        Feature::MethodWallet,
        Feature::MethodBank,
        Feature::MethodCarrier,
        Feature::ChannelApp,
        Feature::ChannelWeb,
        Feature::ChannelUssd,
        Feature::BinCountryMismatch,
        Feature::BinUnknown,
    ];

    /// The stable name used in model and rules files.
    pub fn name(self) -> &'static str {
        match self {
            Feature::LogAmount => "log_amount",
            Feature::AmountZ => "amount_z",
            Feature::FirstPayment => "first_payment",
            Feature::AccountCount1m => "account_count_1m",
            Feature::AccountCount1h => "account_count_1h",
            Feature::AccountCount24h => "account_count_24h",
            Feature::AccountAmount24h => "account_amount_24h",
            Feature::MsisdnCount1h => "msisdn_count_1h",
            Feature::MsisdnCount24h => "msisdn_count_24h",
            Feature::CardCount1m => "card_count_1m",
            Feature::CardCount1h => "card_count_1h",
            Feature::CardCount24h => "card_count_24h",
            Feature::CardAccounts24h => "card_accounts_24h",
            Feature::DeviceCount1h => "device_count_1h",
            Feature::DeviceAccounts24h => "device_accounts_24h",
            Feature::IpCount1h => "ip_count_1h",
            Feature::IpAccounts24h => "ip_accounts_24h",
            Feature::AccountCards24h => "account_cards_24h",
            Feature::NewDevice => "new_device",
            Feature::NewMethod => "new_method",
            Feature::AccountFailed24h => "account_failed_24h",
            Feature::SimSwap24h => "sim_swap_24h",
            Feature::SimSwap7d => "sim_swap_7d",
            Feature::SimSwap24hNewDevice => "sim_swap_24h_new_device",
            Feature::AccountAgeLogDays => "account_age_log_days",
            Feature::NewAccount7d => "new_account_7d",
            Feature::PlanPrepaid => "plan_prepaid",
            Feature::PurposeTopup => "purpose_topup",
            Feature::MethodCard => "method_card",
            Feature::MethodWallet => "method_wallet",
            Feature::MethodBank => "method_bank",
            Feature::MethodCarrier => "method_carrier",
            Feature::ChannelApp => "channel_app",
            Feature::ChannelWeb => "channel_web",
            Feature::ChannelUssd => "channel_ussd",
            Feature::BinCountryMismatch => "bin_country_mismatch",
            Feature::BinUnknown => "bin_unknown",
        }
    }

    /// The feature named `name`, if any.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The reason code reported when this feature pushes a score up.
    pub fn reason(self) -> ReasonCode {
        use Feature::*;
        match self {
            LogAmount => ReasonCode::AmountHigh,
            AmountZ => ReasonCode::AmountUnusualForAccount,
            FirstPayment => ReasonCode::FirstPayment,
            AccountCount1m | AccountCount1h | AccountCount24h | AccountAmount24h => {
                ReasonCode::AccountVelocity
            }
            MsisdnCount1h | MsisdnCount24h => ReasonCode::MsisdnVelocity,
            CardCount1m | CardCount1h | CardCount24h => ReasonCode::CardVelocity,
            CardAccounts24h => ReasonCode::CardManyAccounts,
            DeviceCount1h => ReasonCode::DeviceVelocity,
            DeviceAccounts24h => ReasonCode::DeviceManyAccounts,
            IpCount1h | IpAccounts24h => ReasonCode::IpVelocity,
            AccountCards24h => ReasonCode::AccountManyCards,
            NewDevice => ReasonCode::NewDevice,
            NewMethod => ReasonCode::NewPaymentMethod,
            AccountFailed24h => ReasonCode::RecentFailures,
            SimSwap24h | SimSwap7d | SimSwap24hNewDevice => ReasonCode::SimSwapRecent,
            AccountAgeLogDays | NewAccount7d => ReasonCode::NewAccount,
            PlanPrepaid => ReasonCode::PlanType,
            PurposeTopup => ReasonCode::Purpose,
            MethodCard | MethodWallet | MethodBank | MethodCarrier => ReasonCode::PaymentMethodType,
            ChannelApp | ChannelWeb | ChannelUssd => ReasonCode::Channel,
            BinCountryMismatch => ReasonCode::BinCountryMismatch,
            BinUnknown => ReasonCode::BinUnknown,
        }
    }
}

/// What the BIN table said about the payment's card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinLookup {
    /// Not a card payment, or no BIN given.
    NoCard,
    Unknown,
    Country([u8; 2]),
}

/// Everything a feature row is computed from.
pub struct Context<'a> {
    pub input: &'a FraudInput<'a>,
    pub at_s: i64,
    pub account: Option<&'a AccountState>,
    pub msisdn: Option<&'a LinkState>,
    pub card: Option<&'a LinkState>,
    pub device: Option<&'a LinkState>,
    pub ip: Option<&'a LinkState>,
    /// Keys of the device and of the method (card fingerprint, or the method kind).
    pub device_key: u64,
    pub method_key: u64,
    pub bin: BinLookup,
}

/// `ln(1 + n)` for the counts windows and sets hold, precomputed: a payment needs
/// about fifteen of them, and a table read costs a fraction of a logarithm. 4,096
/// entries (32 KiB, filled once) cover the busiest keys too, such as a mobile carrier's
/// NAT prefix in an hour; only the lines of the counts in use are ever loaded. Larger
/// counts compute the logarithm.
const COUNT_TABLE_LEN: usize = 4_096;
static LN_1P: std::sync::LazyLock<[f64; COUNT_TABLE_LEN]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|n| (n as f64).ln_1p()));

fn count(n: u32) -> f64 {
    match LN_1P.get(n as usize) {
        Some(&x) => x,
        None => f64::from(n).ln_1p(),
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Fills `row` (one slot per `Feature`, indexed by discriminant).
pub fn compute(ctx: &Context<'_>, row: &mut [f64; FEATURE_COUNT]) {
    use Feature::*;
    let input = ctx.input;
    let at_s = ctx.at_s;
    // Saturating: times come from callers, and a corrupt one must not panic the engine.
    let day_ago_s = at_s.saturating_sub(DAY_S);
    // A link key's windows at its own clock (which out-of-order input cannot rewind);
    // only the windows a feature reads are summed. An unseen key counts nothing.
    let minute =
        |s: Option<&LinkState>| s.map_or(0, |s| s.velocity.minute(at_s.max(s.last_seen_s)).count);
    let hour =
        |s: Option<&LinkState>| s.map_or(0, |s| s.velocity.hour(at_s.max(s.last_seen_s)).count);
    let day =
        |s: Option<&LinkState>| s.map_or(0, |s| s.velocity.day(at_s.max(s.last_seen_s)).count);
    let accounts = |s: Option<&LinkState>| s.map_or(0, |s| s.accounts.count_since(day_ago_s));
    let mut set = |f: Feature, v: f64| row[f as usize] = v;

    let log_amount_now = log_amount(input.amount_minor);
    set(LogAmount, log_amount_now);
    let (history, known_device, known_method) = match ctx.account {
        Some(acct) => {
            let v = acct.velocity.totals(at_s.max(acct.last_seen_s));
            set(AmountZ, acct.amounts.z(log_amount_now));
            set(AccountCount1m, count(v.minute.count));
            set(AccountCount1h, count(v.hour.count));
            set(AccountCount24h, count(v.day.count));
            set(AccountAmount24h, log_amount(v.day.amount_minor));
            set(AccountCards24h, count(acct.cards.count_since(day_ago_s)));
            set(
                AccountFailed24h,
                count(acct.failed.totals(at_s.max(acct.last_seen_s)).count),
            );
            (
                acct.amounts.settled() > 0,
                ctx.device_key != 0 && acct.devices.contains(ctx.device_key),
                acct.methods.contains(ctx.method_key),
            )
        }
        None => {
            for f in [
                AmountZ,
                AccountCount1m,
                AccountCount1h,
                AccountCount24h,
                AccountAmount24h,
            ] {
                set(f, 0.0);
            }
            set(AccountCards24h, 0.0);
            set(AccountFailed24h, 0.0);
            (false, false, false)
        }
    };
    set(FirstPayment, flag(!history));
    // With no settled history every device and method is new; that is what
    // first_payment says, so "new" is only raised against an established habit.
    let new_device = history && !known_device;
    set(NewDevice, flag(new_device));
    set(NewMethod, flag(history && !known_method));

    let (m, c, d, ip) = (ctx.msisdn, ctx.card, ctx.device, ctx.ip);
    set(MsisdnCount1h, count(hour(m)));
    set(MsisdnCount24h, count(day(m)));
    set(CardCount1m, count(minute(c)));
    set(CardCount1h, count(hour(c)));
    set(CardCount24h, count(day(c)));
    set(CardAccounts24h, count(accounts(c)));
    set(DeviceCount1h, count(hour(d)));
    set(DeviceAccounts24h, count(accounts(d)));
    set(IpCount1h, count(hour(ip)));
    set(IpAccounts24h, count(accounts(ip)));

    let swap_age_s = input.sim_swapped_at_s.map(|t| at_s.saturating_sub(t));
    let swap_24h = matches!(swap_age_s, Some(age) if (0..DAY_S).contains(&age));
    let swap_7d = matches!(swap_age_s, Some(age) if (0..7 * DAY_S).contains(&age));
    set(SimSwap24h, flag(swap_24h));
    set(SimSwap7d, flag(swap_7d));
    set(SimSwap24hNewDevice, flag(swap_24h && new_device));
    let age_s = at_s.saturating_sub(input.created_at_s).max(0);
    set(AccountAgeLogDays, (age_s as f64 / DAY_S as f64).ln_1p());
    set(NewAccount7d, flag(age_s < 7 * DAY_S));
    set(PlanPrepaid, flag(input.plan == Plan::Prepaid));
    set(PurposeTopup, flag(input.purpose == Purpose::PrepaidTopup));
    set(MethodCard, flag(input.method == MethodKind::Card));
    set(MethodWallet, flag(input.method == MethodKind::Wallet));
    set(MethodBank, flag(input.method == MethodKind::BankAccount));
    set(
        MethodCarrier,
        flag(input.method == MethodKind::CarrierBalance),
    );
    let channel = Channel::parse(input.channel);
    set(ChannelApp, flag(channel == Channel::App));
    set(ChannelWeb, flag(channel == Channel::Web));
    set(ChannelUssd, flag(channel == Channel::Ussd));
    let (mismatch, unknown) = match ctx.bin {
        BinLookup::NoCard => (false, false),
        BinLookup::Unknown => (false, true),
        BinLookup::Country(cc) => (cc != input.country, false),
    };
    set(BinCountryMismatch, flag(mismatch));
    set(BinUnknown, flag(unknown));
}

/// The channels the model tells apart; anything else (IVR, retail agents) is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    App,
    Web,
    Ussd,
    Other,
}

impl Channel {
    /// Case-insensitive: gateways spell channels as they like.
    pub fn parse(channel: &str) -> Channel {
        if channel.eq_ignore_ascii_case("app") {
            Channel::App
        } else if channel.eq_ignore_ascii_case("web") {
            Channel::Web
        } else if channel.eq_ignore_ascii_case("ussd") {
            Channel::Ussd
        } else {
            Channel::Other
        }
    }
}
