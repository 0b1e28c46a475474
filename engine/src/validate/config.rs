//! The engine's validation configuration: what the operator may tune, with defaults.
//!
//! `EngineConfig` is the document Python passes at construction (JSON, every field
//! optional, unknown fields refused so a typo is an error, not a silent default).
//! `Rules` is the same, resolved once into the shapes the per-payment checks read
//! cheaply: per-currency arrays, sorted BIN lists, prepared HMAC keys.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{MethodKind, Purpose};
use crate::money::Currency;

/// At most this many assertion keys are active at once (rotation keeps two or three).
/// At the bound: the configuration is refused.
pub const ASSERTION_KEYS_MAX: usize = 16;
/// At most this many blocked BIN prefixes. At the bound: the configuration is refused.
pub const BLOCKED_BINS_MAX: usize = 100_000;
/// At most this many wallet providers. At the bound: the configuration is refused.
pub const WALLET_PROVIDERS_MAX: usize = 64;
/// At most this many channel rows per purpose in the method matrix. At the bound: the
/// configuration is refused. Rows are scanned linearly, so the bound keeps that cheap.
pub const CHANNELS_MAX: usize = 32;
/// The shortest HMAC key accepted, in bytes: the SHA-256 output size, as RFC 2104 advises.
pub const ASSERTION_KEY_BYTES_MIN: usize = 32;

/// An amount per currency: `major` whole units scaled by each currency's exponent,
/// except where `minor` names the currency and gives minor units outright.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CurrencyAmounts {
    pub major: i64,
    #[serde(default)]
    pub minor: BTreeMap<String, i64>,
}

impl CurrencyAmounts {
    fn major(major: i64) -> CurrencyAmounts {
        CurrencyAmounts {
            major,
            minor: BTreeMap::new(),
        }
    }
}

/// One active assertion key: its id (carried in the token) and the secret in hex.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AssertionKey {
    pub key_id: String,
    pub secret_hex: String,
}

/// Everything the validation layers let an operator configure. Amounts are `i64`
/// minor units or `CurrencyAmounts`; counts are per subscriber; times are seconds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Smallest and largest amount per purpose (format layer).
    pub bill_payment_amount_min: CurrencyAmounts,
    pub bill_payment_amount_max: CurrencyAmounts,
    pub prepaid_topup_amount_min: CurrencyAmounts,
    pub prepaid_topup_amount_max: CurrencyAmounts,
    /// Purpose name -> channel ("*" for any other channel, including none) -> the
    /// methods accepted ("CARD", "WALLET", "BANK_ACCOUNT", "CARRIER_BALANCE").
    pub method_matrix: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Card BIN prefixes (6 or 8 digits) whose cards are declined.
    pub blocked_bins: Vec<String>,
    /// Wallet providers accepted, as they appear in `Wallet.provider`.
    pub wallet_providers: Vec<String>,
    /// Largest amount per method name.
    pub method_amount_max: BTreeMap<String, CurrencyAmounts>,
    /// The prepaid plan's balance ceiling: a top-up may not take the balance above it.
    pub prepaid_balance_max: CurrencyAmounts,
    /// How far a bill payment may exceed what is owed (the excess becomes credit).
    pub bill_overpay_allowance: CurrencyAmounts,
    /// Settled payments per subscriber per UTC day and calendar month.
    pub daily_count_max: u32,
    pub monthly_count_max: u32,
    /// Settled amount per subscriber per UTC day and calendar month.
    pub daily_amount_max: CurrencyAmounts,
    pub monthly_amount_max: CurrencyAmounts,
    /// Keys that may sign subscriber assertions; several during a rotation.
    pub assertion_keys: Vec<AssertionKey>,
    /// How many years past the current one a card's expiry may lie.
    pub card_expiry_years_ahead_max: u32,
}

/// The defaults are sized for the currency with the least value per major unit that
/// a carrier bills in (2,000 NGN is about a euro), so that no default ever declines a
/// real payment: in euros they are loose. Production sets per-currency values with
/// `CurrencyAmounts::minor`.
impl Default for EngineConfig {
    fn default() -> EngineConfig {
        let all = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut method_matrix = BTreeMap::new();
        // Paying a bill from the line's own credit is how postpaid credit is used up;
        // topping up from that same credit would move money in a circle.
        method_matrix.insert(
            "BILL_PAYMENT".to_string(),
            BTreeMap::from([(
                "*".to_string(),
                all(&["CARD", "WALLET", "BANK_ACCOUNT", "CARRIER_BALANCE"]),
            )]),
        );
        method_matrix.insert(
            "PREPAID_TOPUP".to_string(),
            BTreeMap::from([("*".to_string(), all(&["CARD", "WALLET", "BANK_ACCOUNT"]))]),
        );
        let method_amount_max = BTreeMap::from([
            ("CARD".to_string(), CurrencyAmounts::major(1_000_000)),
            ("WALLET".to_string(), CurrencyAmounts::major(500_000)),
            (
                "BANK_ACCOUNT".to_string(),
                CurrencyAmounts::major(5_000_000),
            ),
            (
                "CARRIER_BALANCE".to_string(),
                CurrencyAmounts::major(100_000),
            ),
        ]);
        EngineConfig {
            bill_payment_amount_min: CurrencyAmounts::major(0),
            bill_payment_amount_max: CurrencyAmounts::major(5_000_000),
            // No minimum by default: any positive amount is a well-formed top-up, and
            // the smallest one worth processing is the operator's call.
            prepaid_topup_amount_min: CurrencyAmounts::major(0),
            prepaid_topup_amount_max: CurrencyAmounts::major(100_000),
            method_matrix,
            blocked_bins: Vec::new(),
            wallet_providers: all(&[
                "airtel_money",
                "apple_pay",
                "google_pay",
                "mpesa",
                "mtn_momo",
                "orange_money",
                "paypal",
            ]),
            method_amount_max,
            prepaid_balance_max: CurrencyAmounts::major(200_000),
            bill_overpay_allowance: CurrencyAmounts::major(100),
            daily_count_max: 100,
            monthly_count_max: 1_000,
            daily_amount_max: CurrencyAmounts::major(2_000_000),
            monthly_amount_max: CurrencyAmounts::major(10_000_000),
            assertion_keys: Vec::new(),
            card_expiry_years_ahead_max: 20,
        }
    }
}

/// Why a configuration was refused; the message names the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl EngineConfig {
    /// Parses the JSON document; absent fields take their defaults.
    pub fn from_json(json: &str) -> Result<EngineConfig, ConfigError> {
        serde_json::from_str(json).map_err(|err| ConfigError(format!("engine config: {err}")))
    }

    /// The configuration as JSON (the defaults, for documentation and tooling).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the config serializes")
    }
}

/// A `CurrencyAmounts` resolved to minor units, indexed by `Currency::index()`.
#[derive(Clone, Debug)]
pub struct PerCurrency(Box<[i64]>);

impl PerCurrency {
    fn resolve(setting: &str, amounts: &CurrencyAmounts) -> Result<PerCurrency, ConfigError> {
        if amounts.major < 0 {
            return Err(ConfigError(format!("{setting}.major must not be negative")));
        }
        for (code, &minor) in &amounts.minor {
            if Currency::from_code(code).is_none() {
                return Err(ConfigError(format!(
                    "{setting}.minor: {code:?} is not an ISO 4217 currency"
                )));
            }
            if minor < 0 {
                return Err(ConfigError(format!(
                    "{setting}.minor.{code} must not be negative"
                )));
            }
        }
        let values = Currency::all()
            .iter()
            .map(|currency| match amounts.minor.get(currency.code()) {
                Some(&minor) => Ok(minor),
                // A large major amount in a currency with a wide exponent can exceed
                // i64; such a limit means "no limit", so it saturates.
                None => Ok(currency.major_to_minor(amounts.major).unwrap_or(i64::MAX)),
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(PerCurrency(values.into_boxed_slice()))
    }

    /// The amount in minor units of `currency`.
    #[inline]
    pub fn get(&self, currency: Currency) -> i64 {
        self.0[currency.index()]
    }
}

/// Which methods one (purpose, channel) cell accepts, as a bit per `MethodKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodMask(u8);

impl MethodMask {
    #[inline]
    pub fn allows(self, method: MethodKind) -> bool {
        self.0 & (1 << method as u8) != 0
    }
}

/// One purpose's row of the method matrix.
#[derive(Clone, Debug, Default)]
struct ChannelRow {
    channels: Vec<(Box<[u8]>, MethodMask)>,
    any_other: Option<MethodMask>,
}

/// A prepared HMAC-SHA256 key: the inner and outer pads are computed once here, and
/// each verification clones the prepared state.
#[derive(Clone)]
pub struct PreparedKey {
    pub key_id: Box<[u8]>,
    pub mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        write!(
            f,
            "PreparedKey({:?})",
            String::from_utf8_lossy(&self.key_id)
        )
    }
}

/// The configuration resolved for the per-payment checks.
#[derive(Clone, Debug)]
pub struct Rules {
    pub amount_min: [PerCurrency; 2],
    pub amount_max: [PerCurrency; 2],
    matrix: [ChannelRow; 2],
    /// Sorted, for binary search: 6-digit and 8-digit BIN prefixes.
    blocked_bins_6: Vec<u32>,
    blocked_bins_8: Vec<u32>,
    wallet_providers: Vec<Box<[u8]>>,
    /// Indexed by `MethodKind as usize - 1`.
    method_amount_max: [PerCurrency; 4],
    pub prepaid_balance_max: PerCurrency,
    pub bill_overpay_allowance: PerCurrency,
    pub daily_count_max: u32,
    pub monthly_count_max: u32,
    pub daily_amount_max: PerCurrency,
    pub monthly_amount_max: PerCurrency,
    pub assertion_keys: Vec<PreparedKey>,
    pub card_expiry_years_ahead_max: u32,
}

fn purpose_slot(purpose: Purpose) -> usize {
    match purpose {
        Purpose::BillPayment => 0,
        Purpose::PrepaidTopup => 1,
        Purpose::Unspecified => unreachable!("the format layer refuses an unspecified purpose"),
    }
}

fn method_from_name(name: &str) -> Option<MethodKind> {
    match name {
        "CARD" => Some(MethodKind::Card),
        "WALLET" => Some(MethodKind::Wallet),
        "BANK_ACCOUNT" => Some(MethodKind::BankAccount),
        "CARRIER_BALANCE" => Some(MethodKind::CarrierBalance),
        _ => None,
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

impl Rules {
    /// Checks and resolves a configuration.
    pub fn new(config: &EngineConfig) -> Result<Rules, ConfigError> {
        let amount = PerCurrency::resolve;
        let matrix = [
            Rules::channel_row(config, "BILL_PAYMENT")?,
            Rules::channel_row(config, "PREPAID_TOPUP")?,
        ];
        if let Some(name) = config
            .method_matrix
            .keys()
            .find(|k| *k != "BILL_PAYMENT" && *k != "PREPAID_TOPUP")
        {
            return Err(ConfigError(format!(
                "method_matrix: unknown purpose {name:?}"
            )));
        }
        let (blocked_bins_6, blocked_bins_8) = Rules::blocked_bins(&config.blocked_bins)?;
        let wallet_providers = Rules::wallet_providers(&config.wallet_providers)?;
        let mut method_amount_max = Vec::with_capacity(4);
        for name in ["CARD", "WALLET", "BANK_ACCOUNT", "CARRIER_BALANCE"] {
            let setting = format!("method_amount_max.{name}");
            let limit = config
                .method_amount_max
                .get(name)
                .cloned()
                .unwrap_or(CurrencyAmounts::major(i64::MAX));
            method_amount_max.push(amount(&setting, &limit)?);
        }
        if let Some(name) = config
            .method_amount_max
            .keys()
            .find(|k| method_from_name(k).is_none())
        {
            return Err(ConfigError(format!(
                "method_amount_max: unknown method {name:?}"
            )));
        }
        Ok(Rules {
            amount_min: [
                amount("bill_payment_amount_min", &config.bill_payment_amount_min)?,
                amount("prepaid_topup_amount_min", &config.prepaid_topup_amount_min)?,
            ],
            amount_max: [
                amount("bill_payment_amount_max", &config.bill_payment_amount_max)?,
                amount("prepaid_topup_amount_max", &config.prepaid_topup_amount_max)?,
            ],
            matrix,
            blocked_bins_6,
            blocked_bins_8,
            wallet_providers,
            method_amount_max: method_amount_max.try_into().expect("four methods"),
            prepaid_balance_max: amount("prepaid_balance_max", &config.prepaid_balance_max)?,
            bill_overpay_allowance: amount(
                "bill_overpay_allowance",
                &config.bill_overpay_allowance,
            )?,
            daily_count_max: config.daily_count_max,
            monthly_count_max: config.monthly_count_max,
            daily_amount_max: amount("daily_amount_max", &config.daily_amount_max)?,
            monthly_amount_max: amount("monthly_amount_max", &config.monthly_amount_max)?,
            assertion_keys: Rules::assertion_keys(&config.assertion_keys)?,
            card_expiry_years_ahead_max: config.card_expiry_years_ahead_max,
        })
    }

    fn channel_row(config: &EngineConfig, purpose: &str) -> Result<ChannelRow, ConfigError> {
        let mut row = ChannelRow::default();
        let Some(channels) = config.method_matrix.get(purpose) else {
            return Ok(row);
        };
        if channels.len() > CHANNELS_MAX {
            return Err(ConfigError(format!(
                "method_matrix.{purpose}: more than {CHANNELS_MAX} channels"
            )));
        }
        for (channel, methods) in channels {
            let mut mask = 0u8;
            for name in methods {
                let method = method_from_name(name).ok_or_else(|| {
                    ConfigError(format!(
                        "method_matrix.{purpose}.{channel}: unknown method {name:?}"
                    ))
                })?;
                mask |= 1 << method as u8;
            }
            // Channel names are case-insensitive, as in requests: a "USSD" row is the
            // "ussd" channel, and naming one channel twice is refused, not merged.
            let name = channel.to_ascii_lowercase();
            if name == "*" {
                row.any_other = Some(MethodMask(mask));
            } else if super::formats::is_channel(name.as_bytes()) && !name.is_empty() {
                if row
                    .channels
                    .iter()
                    .any(|(known, _)| **known == *name.as_bytes())
                {
                    return Err(ConfigError(format!(
                        "method_matrix.{purpose}: channel {channel:?} is named twice (case does not count)"
                    )));
                }
                row.channels
                    .push((name.as_bytes().into(), MethodMask(mask)));
            } else {
                return Err(ConfigError(format!(
                    "method_matrix.{purpose}: {channel:?} is not a channel name"
                )));
            }
        }
        Ok(row)
    }

    fn blocked_bins(bins: &[String]) -> Result<(Vec<u32>, Vec<u32>), ConfigError> {
        if bins.len() > BLOCKED_BINS_MAX {
            return Err(ConfigError(format!(
                "blocked_bins: more than {BLOCKED_BINS_MAX} entries"
            )));
        }
        let (mut six, mut eight) = (Vec::new(), Vec::new());
        for bin in bins {
            let digits = bin.bytes().all(|b| b.is_ascii_digit());
            match (digits, bin.len()) {
                (true, 6) => six.push(bin.parse().expect("six digits fit u32")),
                (true, 8) => eight.push(bin.parse().expect("eight digits fit u32")),
                _ => {
                    return Err(ConfigError(format!(
                        "blocked_bins: {bin:?} is not a 6- or 8-digit BIN"
                    )))
                }
            }
        }
        six.sort_unstable();
        eight.sort_unstable();
        Ok((six, eight))
    }

    fn wallet_providers(providers: &[String]) -> Result<Vec<Box<[u8]>>, ConfigError> {
        if providers.len() > WALLET_PROVIDERS_MAX {
            return Err(ConfigError(format!(
                "wallet_providers: more than {WALLET_PROVIDERS_MAX} entries"
            )));
        }
        providers
            .iter()
            .map(|p| {
                if super::formats::is_wallet_provider(p.as_bytes()) {
                    Ok(p.as_bytes().into())
                } else {
                    Err(ConfigError(format!(
                        "wallet_providers: {p:?} is not 1 to 32 characters of [a-z0-9_]"
                    )))
                }
            })
            .collect()
    }

    fn assertion_keys(keys: &[AssertionKey]) -> Result<Vec<PreparedKey>, ConfigError> {
        if keys.len() > ASSERTION_KEYS_MAX {
            return Err(ConfigError(format!(
                "assertion_keys: more than {ASSERTION_KEYS_MAX} keys"
            )));
        }
        let mut prepared: Vec<PreparedKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !super::assertion::is_key_id(key.key_id.as_bytes()) {
                return Err(ConfigError(format!(
                    "assertion_keys: {:?} is not 1 to 32 characters of [A-Za-z0-9_-]",
                    key.key_id
                )));
            }
            if prepared.iter().any(|k| *k.key_id == *key.key_id.as_bytes()) {
                return Err(ConfigError(format!(
                    "assertion_keys: key id {:?} appears twice",
                    key.key_id
                )));
            }
            let secret = decode_hex(&key.secret_hex).ok_or_else(|| {
                ConfigError(format!(
                    "assertion_keys.{}: secret_hex is not hex",
                    key.key_id
                ))
            })?;
            if secret.len() < ASSERTION_KEY_BYTES_MIN {
                return Err(ConfigError(format!(
                    "assertion_keys.{}: secret is {} bytes, at least {ASSERTION_KEY_BYTES_MIN} required",
                    key.key_id,
                    secret.len()
                )));
            }
            let mac =
                Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes a key of any length");
            prepared.push(PreparedKey {
                key_id: key.key_id.as_bytes().into(),
                mac,
            });
        }
        Ok(prepared)
    }

    /// The methods accepted for `purpose` on `channel`; none when the matrix has
    /// neither the channel nor a "*" row.
    #[inline]
    pub fn methods_for(&self, purpose: Purpose, channel: &[u8]) -> MethodMask {
        let row = &self.matrix[purpose_slot(purpose)];
        row.channels
            .iter()
            .find(|(name, _)| **name == *channel)
            .map(|(_, mask)| *mask)
            .or(row.any_other)
            .unwrap_or(MethodMask(0))
    }

    /// Whether the card's BIN (its first 6 or 8 digits) is on the block list.
    #[inline]
    pub fn bin_blocked(&self, pan: &[u8]) -> bool {
        let prefix = |n: usize| {
            pan[..n]
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        };
        (pan.len() >= 6 && self.blocked_bins_6.binary_search(&prefix(6)).is_ok())
            || (pan.len() >= 8 && self.blocked_bins_8.binary_search(&prefix(8)).is_ok())
    }

    /// Whether the wallet provider is configured.
    #[inline]
    pub fn wallet_provider_known(&self, provider: &[u8]) -> bool {
        self.wallet_providers.iter().any(|p| **p == *provider)
    }

    /// The largest amount `method` may carry in `currency`.
    #[inline]
    pub fn method_amount_max(&self, method: MethodKind, currency: Currency) -> i64 {
        self.method_amount_max[method as usize - 1].get(currency)
    }

    /// The purpose's bounds in `currency`, (min, max) in minor units.
    #[inline]
    pub fn purpose_bounds(&self, purpose: Purpose, currency: Currency) -> (i64, i64) {
        let slot = purpose_slot(purpose);
        (
            self.amount_min[slot].get(currency),
            self.amount_max[slot].get(currency),
        )
    }
}
