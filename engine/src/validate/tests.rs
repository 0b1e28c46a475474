//! The pipeline end to end: every reject code is produced by one near miss of a
//! payment that passes, and layers run in order.

use super::config::{AssertionKey, CurrencyAmounts};
use super::*;
use crate::money::Currency;

/// 2026-11-25T18:00:00Z.
const NOW: i64 = 1_795_629_600;
const SECRET: [u8; 32] = [42; 32];

/// The defaults, with limits at euro scale so that each is reached by a test.
fn config() -> EngineConfig {
    let major = |major| CurrencyAmounts {
        major,
        minor: Default::default(),
    };
    let mut method_amount_max = EngineConfig::default().method_amount_max;
    method_amount_max.insert("CARD".into(), major(10_000));
    EngineConfig {
        bill_payment_amount_max: major(50_000),
        prepaid_topup_amount_max: major(1_000),
        prepaid_balance_max: major(2_000),
        method_amount_max,
        blocked_bins: vec!["520000".into(), "40000001".into()],
        assertion_keys: vec![AssertionKey {
            key_id: "k1".into(),
            secret_hex: "2a".repeat(32),
        }],
        prepaid_topup_amount_min: CurrencyAmounts {
            major: 1,
            minor: Default::default(),
        },
        daily_count_max: 3,
        monthly_count_max: 5,
        ..EngineConfig::default()
    }
}

fn validator() -> Validator {
    let mut v = Validator::new(&config()).unwrap();
    let eur = Currency::from_code("EUR").unwrap();
    for (id, msisdn, plan, status, balance) in [
        (
            "acc-post",
            "+306912345678",
            Plan::Postpaid,
            Status::Barred,
            5_000,
        ),
        (
            "acc-pre",
            "+306912345679",
            Plan::Prepaid,
            Status::Active,
            150_000,
        ),
        (
            "acc-closed",
            "+306912345670",
            Plan::Prepaid,
            Status::Closed,
            0,
        ),
        (
            "acc-susp",
            "+306912345671",
            Plan::Prepaid,
            Status::Suspended,
            0,
        ),
    ] {
        v.subscribers
            .upsert(Subscriber {
                account_id: id.into(),
                msisdn: msisdn.into(),
                plan,
                status,
                currency: eur,
                balance_minor: balance,
                country: *b"GR",
                sim_swapped_at_s: None,
                created_at_s: 1_600_000_000,
            })
            .unwrap();
    }
    v
}

/// A bill payment by card that passes every layer.
fn pay() -> PaymentView<'static> {
    PaymentView {
        idempotency_key: b"k-1",
        account_id: b"acc-post",
        msisdn: b"+306912345678",
        amount_minor: 2_500,
        currency: b"EUR",
        purpose: Purpose::BillPayment,
        method: MethodKind::Card,
        card_pan: b"4111111111111111",
        card_expiry_month: 12,
        card_expiry_year: 2027,
        channel: b"app",
        device_id: b"dev-1",
        ip: b"192.0.2.10",
        ..PaymentView::default()
    }
}

/// The test table under another configuration.
fn with_config(config: &EngineConfig) -> Validator {
    let mut v = Validator::new(config).unwrap();
    v.subscribers = validator().subscribers;
    v
}

fn leak(s: String) -> &'static [u8] {
    Box::leak(s.into_bytes().into_boxed_slice())
}

fn check_with(v: &Validator, edit: impl FnOnce(&mut PaymentView<'static>)) -> RejectCode {
    let mut p = pay();
    edit(&mut p);
    v.validate_one(&p, NOW)
}

fn check(edit: impl FnOnce(&mut PaymentView<'static>)) -> RejectCode {
    check_with(&validator(), edit)
}

fn topup(p: &mut PaymentView<'static>) {
    p.account_id = b"acc-pre";
    p.msisdn = b"+306912345679";
    p.purpose = Purpose::PrepaidTopup;
}

#[test]
fn a_good_bill_payment_passes_even_when_barred() {
    assert_eq!(check(|_| {}), RejectCode::Ok);
}

#[test]
fn idempotency_key_bounds() {
    assert_eq!(
        check(|p| p.idempotency_key = leak("k".repeat(255))),
        RejectCode::Ok
    );
    assert_eq!(
        check(|p| p.idempotency_key = leak("k".repeat(256))),
        RejectCode::IdempotencyKeyInvalid
    );
    assert_eq!(
        check(|p| p.idempotency_key = b""),
        RejectCode::IdempotencyKeyInvalid
    );
    assert_eq!(
        check(|p| p.idempotency_key = b"k\n1"),
        RejectCode::IdempotencyKeyInvalid
    );
    assert_eq!(
        check(|p| p.idempotency_key = "k\u{e9}".as_bytes()),
        RejectCode::IdempotencyKeyInvalid
    );
}

#[test]
fn account_id_and_msisdn_formats() {
    assert_eq!(
        check(|p| p.account_id = b"acc/01"),
        RejectCode::AccountIdInvalid
    );
    assert_eq!(
        check(|p| p.msisdn = b"+30691234567a"),
        RejectCode::MsisdnInvalid
    );
    assert_eq!(
        check(|p| p.msisdn = b"+2812345678"),
        RejectCode::MsisdnCountryCodeUnknown
    );
    assert_eq!(
        check(|p| p.msisdn = b"+3069123456789"),
        RejectCode::MsisdnMismatch,
        "11 national digits is a Greek length"
    );
    assert_eq!(
        check(|p| p.msisdn = b"+306912345"),
        RejectCode::MsisdnLengthInvalid
    );
}

#[test]
fn amount_bounds() {
    assert_eq!(check(|p| p.amount_minor = 1), RejectCode::Ok);
    assert_eq!(check(|p| p.amount_minor = 0), RejectCode::AmountNotPositive);
    assert_eq!(
        check(|p| p.amount_minor = -1),
        RejectCode::AmountNotPositive
    );
    assert_eq!(
        check(|p| p.amount_minor = i64::MIN),
        RejectCode::AmountNotPositive
    );
    assert_eq!(
        check(|p| p.amount_minor = crate::money::AMOUNT_MINOR_MAX + 1),
        RejectCode::AmountTooLarge
    );
    assert_eq!(
        check(|p| p.amount_minor = i64::MAX),
        RejectCode::AmountTooLarge
    );
    // 50 000 EUR is the bill maximum: it passes the format layer, and the card's
    // own 10 000 EUR limit stops it later.
    assert_eq!(
        check(|p| p.amount_minor = 5_000_000),
        RejectCode::MethodAmountLimitExceeded
    );
    assert_eq!(
        check(|p| p.amount_minor = 5_000_001),
        RejectCode::AmountAbovePurposeMax
    );
    // Top-ups start at 1 EUR.
    assert_eq!(
        check(|p| {
            topup(p);
            p.amount_minor = 100
        }),
        RejectCode::Ok
    );
    assert_eq!(
        check(|p| {
            topup(p);
            p.amount_minor = 99
        }),
        RejectCode::AmountBelowPurposeMin
    );
}

#[test]
fn currency_is_iso_4217() {
    assert_eq!(check(|p| p.currency = b"EUX"), RejectCode::CurrencyUnknown);
    assert_eq!(check(|p| p.currency = b"eur"), RejectCode::CurrencyUnknown);
    assert_eq!(check(|p| p.currency = b"USD"), RejectCode::CurrencyMismatch);
}

#[test]
fn purpose_and_method_are_required() {
    assert_eq!(
        check(|p| p.purpose = Purpose::Unspecified),
        RejectCode::PurposeInvalid
    );
    assert_eq!(
        check(|p| p.method = MethodKind::Missing),
        RejectCode::MethodMissing
    );
}

#[test]
fn card_fields() {
    assert_eq!(
        check(|p| p.card_pan = b"4111111111111112"),
        RejectCode::CardLuhnFailed
    );
    assert_eq!(
        check(|p| p.card_pan = b"4111-1111-1111-1111"),
        RejectCode::CardPanInvalid
    );
    assert_eq!(
        check(|p| p.card_pan = b"1000000000000008"),
        RejectCode::CardSchemeUnknown
    );
    assert_eq!(
        check(|p| p.card_pan = b"41111111111114"),
        RejectCode::CardLengthInvalid
    );
    assert_eq!(
        check(|p| p.card_expiry_month = 0),
        RejectCode::CardExpiryMonthInvalid
    );
    assert_eq!(
        check(|p| p.card_expiry_month = 13),
        RejectCode::CardExpiryMonthInvalid
    );
    assert_eq!(
        check(|p| p.card_expiry_year = 27),
        RejectCode::CardExpiryYearInvalid,
        "two-digit year"
    );
    assert_eq!(check(|p| p.card_expiry_year = 2046), RejectCode::Ok);
    assert_eq!(
        check(|p| p.card_expiry_year = 2047),
        RejectCode::CardExpiryYearInvalid
    );
    // Card data is only checked for card payments.
    assert_eq!(
        check(|p| {
            p.method = MethodKind::BankAccount;
            p.iban = b"DE89370400440532013000";
            p.card_pan = b"x"
        }),
        RejectCode::Ok
    );
}

#[test]
fn card_authorization() {
    assert_eq!(
        check(|p| {
            p.card_expiry_month = 11;
            p.card_expiry_year = 2026
        }),
        RejectCode::Ok
    );
    assert_eq!(
        check(|p| {
            p.card_expiry_month = 10;
            p.card_expiry_year = 2026
        }),
        RejectCode::CardExpired
    );
    assert_eq!(
        check(|p| p.card_pan = b"5200000000000007"),
        RejectCode::CardBinBlocked,
        "6-digit BIN"
    );
    assert_eq!(
        check(|p| p.card_pan = b"5200010000000006"),
        RejectCode::Ok,
        "next BIN"
    );
    assert_eq!(
        check(|p| p.card_pan = b"4000000100000001"),
        RejectCode::CardBinBlocked,
        "8-digit BIN"
    );
    assert_eq!(check(|p| p.card_pan = b"4000000200000000"), RejectCode::Ok);
}

#[test]
fn wallet_and_bank_account_fields() {
    let wallet = |p: &mut PaymentView<'static>| {
        p.method = MethodKind::Wallet;
        p.wallet_provider = b"mpesa";
        p.wallet_id = b"254712345678";
    };
    assert_eq!(check(|p| wallet(p)), RejectCode::Ok);
    assert_eq!(
        check(|p| {
            wallet(p);
            p.wallet_provider = b"M-Pesa"
        }),
        RejectCode::WalletProviderInvalid
    );
    assert_eq!(
        check(|p| {
            wallet(p);
            p.wallet_id = b""
        }),
        RejectCode::WalletIdInvalid
    );
    assert_eq!(
        check(|p| {
            wallet(p);
            p.wallet_provider = b"venmo"
        }),
        RejectCode::WalletProviderUnknown
    );
    let bank = |p: &mut PaymentView<'static>| {
        p.method = MethodKind::BankAccount;
        p.iban = b"GR1601101250000000012300695";
    };
    assert_eq!(check(|p| bank(p)), RejectCode::Ok);
    assert_eq!(
        check(|p| {
            bank(p);
            p.iban = b"GR1601101250000000012300696"
        }),
        RejectCode::IbanChecksumFailed
    );
    assert_eq!(
        check(|p| {
            bank(p);
            p.iban = b"GR16 0110 1250 0000 0001 2300 695"
        }),
        RejectCode::IbanInvalid
    );
    assert_eq!(
        check(|p| {
            bank(p);
            p.iban = b"US64SVBKUS6S3300958879"
        }),
        RejectCode::IbanCountryUnknown
    );
    // Spain: mod 97-10 holds, but the national DC digits (46 where 45 is due) do not.
    assert_eq!(
        check(|p| {
            bank(p);
            p.iban = b"ES9121000418450200051332"
        }),
        RejectCode::Ok
    );
    assert_eq!(
        check(|p| {
            bank(p);
            p.iban = b"ES2921000418460200051332"
        }),
        RejectCode::IbanNationalCheckFailed
    );
}

#[test]
fn context_fields() {
    assert_eq!(
        check(|p| {
            p.channel = b"";
            p.device_id = b"";
            p.ip = b""
        }),
        RejectCode::Ok,
        "all optional"
    );
    assert_eq!(check(|p| p.channel = b"App"), RejectCode::ChannelInvalid);
    assert_eq!(
        check(|p| p.device_id = b"dev 1"),
        RejectCode::DeviceIdInvalid
    );
    assert_eq!(check(|p| p.ip = b"2001:db8::10"), RejectCode::Ok);
    assert_eq!(check(|p| p.ip = b"192.0.2.300"), RejectCode::IpInvalid);
}

#[test]
fn account_authentication() {
    assert_eq!(
        check(|p| p.account_id = b"acc-none"),
        RejectCode::AccountNotFound
    );
    assert_eq!(
        check(|p| p.msisdn = b"+306912345679"),
        RejectCode::MsisdnMismatch
    );
    assert_eq!(
        check(|p| {
            topup(p);
            p.account_id = b"acc-closed";
            p.msisdn = b"+306912345670"
        }),
        RejectCode::AccountClosed
    );
    assert_eq!(
        check(|p| {
            topup(p);
            p.account_id = b"acc-susp";
            p.msisdn = b"+306912345671"
        }),
        RejectCode::AccountStatusForbidsPurpose
    );
    assert_eq!(
        check(|p| p.purpose = Purpose::PrepaidTopup),
        RejectCode::PurposeNotAllowedForPlan
    );
    assert_eq!(check(topup), RejectCode::Ok);
    // A barred prepaid line tops up to be restored.
    let mut v = validator();
    let mut barred = v.subscribers.get("acc-pre").unwrap().clone();
    barred.status = Status::Barred;
    v.subscribers.upsert(barred).unwrap();
    assert_eq!(check_with(&v, topup), RejectCode::Ok);
}

#[test]
fn subscriber_assertions() {
    let token = |account: &str, msisdn: &str, expires: i64| {
        leak(assertion::sign("k1", &SECRET, account, msisdn, expires))
    };
    assert_eq!(
        check(|p| p.assertion = token("acc-post", "+306912345678", NOW + 300)),
        RejectCode::Ok
    );
    assert_eq!(
        check(|p| p.assertion = b"v1.k1.acc-post"),
        RejectCode::AssertionMalformed
    );
    assert_eq!(
        check(|p| p.assertion = leak(assertion::sign(
            "k2",
            &SECRET,
            "acc-post",
            "+306912345678",
            NOW + 300
        ))),
        RejectCode::AssertionKeyUnknown
    );
    assert_eq!(
        check(|p| p.assertion = leak(assertion::sign(
            "k1",
            &[1; 32],
            "acc-post",
            "+306912345678",
            NOW + 300
        ))),
        RejectCode::AssertionSignatureInvalid
    );
    assert_eq!(
        check(|p| p.assertion = token("acc-post", "+306912345678", NOW)),
        RejectCode::AssertionExpired
    );
    assert_eq!(
        check(|p| p.assertion = token("acc-pre", "+306912345679", NOW + 300)),
        RejectCode::AssertionSubjectMismatch
    );
}

#[test]
fn method_matrix() {
    assert_eq!(
        check(|p| {
            topup(p);
            p.method = MethodKind::CarrierBalance
        }),
        RejectCode::MethodNotAllowed
    );
    let mut config = config();
    config
        .method_matrix
        .get_mut("BILL_PAYMENT")
        .unwrap()
        .insert("ussd".into(), vec!["CARRIER_BALANCE".into()]);
    let v = with_config(&config);
    assert_eq!(
        check_with(&v, |p| p.channel = b"ussd"),
        RejectCode::MethodNotAllowed
    );
    assert_eq!(
        check_with(&v, |p| p.channel = b"web"),
        RejectCode::Ok,
        "the * row"
    );
}

/// Operators write channels in upper case too: a "USSD" row is the "ussd" channel
/// that requests arrive as (the API lower-cases theirs), and one channel named twice
/// in two spellings is refused rather than silently merged.
#[test]
fn method_matrix_channels_are_case_insensitive() {
    let mut config = config();
    let bill = config.method_matrix.get_mut("BILL_PAYMENT").unwrap();
    bill.insert("USSD".into(), vec!["CARRIER_BALANCE".into()]);
    let v = with_config(&config);
    assert_eq!(
        check_with(&v, |p| p.channel = b"ussd"),
        RejectCode::MethodNotAllowed,
        "the USSD row applies to ussd"
    );
    config
        .method_matrix
        .get_mut("BILL_PAYMENT")
        .unwrap()
        .insert("ussd".into(), vec!["CARD".into()]);
    let Err(err) = Validator::new(&config) else {
        panic!("one channel named twice must be refused")
    };
    assert!(err.0.contains("named twice"), "{}", err.0);
}

#[test]
fn method_amount_limits() {
    let mut config = config();
    config.method_amount_max.insert(
        "CARD".into(),
        CurrencyAmounts {
            major: 1_000,
            minor: [("EUR".to_string(), 2_500)].into(),
        },
    );
    let v = with_config(&config);
    assert_eq!(check_with(&v, |p| p.amount_minor = 2_500), RejectCode::Ok);
    assert_eq!(
        check_with(&v, |p| p.amount_minor = 2_501),
        RejectCode::MethodAmountLimitExceeded
    );
}

#[test]
fn balances() {
    // Prepaid: 1 500 EUR + 500 EUR = 2 000 EUR, the plan maximum.
    assert_eq!(
        check(|p| {
            topup(p);
            p.amount_minor = 50_000
        }),
        RejectCode::Ok
    );
    assert_eq!(
        check(|p| {
            topup(p);
            p.amount_minor = 50_001
        }),
        RejectCode::TopupAbovePlanMaximum
    );
    // Postpaid owes 50 EUR; the allowance is 100 EUR.
    assert_eq!(check(|p| p.amount_minor = 15_000), RejectCode::Ok);
    assert_eq!(
        check(|p| p.amount_minor = 15_001),
        RejectCode::BillOverpayment
    );
}

#[test]
fn carrier_balance_counts_pending_holds() {
    let mut v = validator();
    let eur = Currency::from_code("EUR").unwrap();
    let mut credit = v.subscribers.get("acc-post").unwrap().clone();
    credit.balance_minor = -3_000; // a postpaid line 30 EUR in credit
    v.subscribers.upsert(credit).unwrap();
    let carrier = |p: &mut PaymentView<'static>| {
        p.method = MethodKind::CarrierBalance;
        p.amount_minor = 3_000;
    };
    assert_eq!(check_with(&v, carrier), RejectCode::Ok);
    assert_eq!(
        check_with(&v, |p| {
            carrier(p);
            p.amount_minor = 3_001
        }),
        RejectCode::InsufficientCredit
    );
    v.subscribers.reserve_holds(&[("acc-post", 1)]).unwrap();
    assert_eq!(check_with(&v, carrier), RejectCode::InsufficientCredit);
    v.subscribers.release_holds(&[("acc-post", 1)]).unwrap();
    assert_eq!(check_with(&v, carrier), RejectCode::Ok);
    assert_eq!(eur.code(), "EUR");
}

#[test]
fn a_subscriber_no_payment_could_match_is_refused() {
    let mut v = validator();
    let mut bad = v.subscribers.get("acc-post").unwrap().clone();
    bad.account_id = "acc/1".into();
    assert!(matches!(
        v.subscribers.upsert(bad.clone()),
        Err(TableError::Malformed { .. })
    ));
    bad.account_id = "acc-1".into();
    bad.msisdn = "+12345678901234567".into();
    assert!(matches!(
        v.subscribers.upsert(bad.clone()),
        Err(TableError::Malformed { .. })
    ));
    bad.msisdn = "+306912345677".into();
    assert_eq!(v.subscribers.upsert(bad), Ok(()));
    assert_eq!(v.subscribers.len(), 5);
}

#[test]
fn holds_are_all_or_nothing() {
    let mut v = validator();
    let err = v
        .subscribers
        .reserve_holds(&[("acc-post", 10), ("acc-none", 10)])
        .unwrap_err();
    assert_eq!(
        err,
        StateError::UnknownAccount {
            row: 1,
            account_id: "acc-none".into()
        }
    );
    assert_eq!(v.subscribers.entry(b"acc-post").unwrap().held_minor, 0);
    v.subscribers.reserve_holds(&[("acc-post", 10)]).unwrap();
    let err = v
        .subscribers
        .release_holds(&[("acc-post", 5), ("acc-post", 6)])
        .unwrap_err();
    assert!(matches!(err, StateError::ReleaseExceedsHold { row: 1, .. }));
    assert_eq!(v.subscribers.entry(b"acc-post").unwrap().held_minor, 10);
    assert!(matches!(
        v.subscribers.reserve_holds(&[("acc-post", 0)]),
        Err(StateError::AmountInvalid { .. })
    ));
}

#[test]
fn daily_and_monthly_limits() {
    let mut v = validator();
    let settle = |v: &mut Validator, at: i64| {
        v.subscribers
            .record_settled(&[("acc-post", 100, at)])
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(check_with(&v, |_| {}), RejectCode::Ok);
        settle(&mut v, NOW);
    }
    assert_eq!(check_with(&v, |_| {}), RejectCode::DailyCountLimit);
    // The next UTC day the daily count starts over; the month keeps counting.
    let tomorrow = NOW + 86_400;
    assert_eq!(v.validate_one(&pay(), tomorrow), RejectCode::Ok);
    settle(&mut v, tomorrow);
    settle(&mut v, tomorrow);
    assert_eq!(
        v.validate_one(&pay(), tomorrow),
        RejectCode::MonthlyCountLimit
    );
    // December is a new month.
    assert_eq!(v.validate_one(&pay(), 1_796_083_200), RejectCode::Ok);
    // A settlement reported for a past day does not count against today.
    let mut fresh = validator();
    settle(&mut fresh, NOW);
    settle(&mut fresh, NOW - 86_400);
    assert_eq!(
        fresh
            .subscribers
            .entry(b"acc-post")
            .unwrap()
            .usage
            .day_count,
        1
    );
}

#[test]
fn daily_and_monthly_amount_limits() {
    let mut config = config();
    config.daily_amount_max = CurrencyAmounts {
        major: 30,
        minor: Default::default(),
    };
    config.monthly_amount_max = CurrencyAmounts {
        major: 40,
        minor: Default::default(),
    };
    let mut v = with_config(&config);
    v.subscribers
        .record_settled(&[("acc-post", 500, NOW)])
        .unwrap();
    assert_eq!(check_with(&v, |p| p.amount_minor = 2_500), RejectCode::Ok);
    assert_eq!(
        check_with(&v, |p| p.amount_minor = 2_501),
        RejectCode::DailyAmountLimit
    );
    v.subscribers
        .record_settled(&[("acc-post", 2_000, NOW - 86_400)])
        .unwrap();
    assert_eq!(check_with(&v, |p| p.amount_minor = 1_500), RejectCode::Ok);
    assert_eq!(
        check_with(&v, |p| p.amount_minor = 1_501),
        RejectCode::MonthlyAmountLimit
    );
}

#[test]
fn every_code_is_reached_by_this_file() {
    // The names of codes exercised above; a new code without a test fails here.
    let source = include_str!("tests.rs");
    for code in RejectCode::ALL.iter().skip(1) {
        let variant = format!("RejectCode::{code:?}");
        assert!(
            source.matches(&variant).count() >= 1,
            "{variant} has no test"
        );
    }
}

#[test]
fn format_is_checked_before_the_account() {
    assert_eq!(
        check(|p| {
            p.account_id = b"acc-none";
            p.amount_minor = 0
        }),
        RejectCode::AmountNotPositive
    );
    assert_eq!(
        check(|p| {
            p.account_id = b"acc-none";
            p.ip = b"x"
        }),
        RejectCode::IpInvalid
    );
}

#[test]
fn batch_gives_one_code_per_payment_in_order() {
    let v = validator();
    let mut bad = pay();
    bad.account_id = b"acc-none";
    let payments = [pay(), bad, pay()];
    let mut out = [RejectCode::Ok; 3];
    v.validate_batch(&payments, NOW, &mut out);
    assert_eq!(
        out,
        [RejectCode::Ok, RejectCode::AccountNotFound, RejectCode::Ok]
    );
}

#[test]
fn config_errors_name_the_setting() {
    let bad = |json: &str| {
        EngineConfig::from_json(json)
            .and_then(|c| Rules::new(&c).map(|_| ()))
            .unwrap_err()
            .0
    };
    assert!(bad(r#"{"daily_count_mx": 1}"#).contains("daily_count_mx"));
    assert!(bad(r#"{"blocked_bins": ["12345"]}"#).contains("blocked_bins"));
    assert!(bad(r#"{"method_matrix": {"BILL_PAYMENT": {"*": ["CASH"]}}}"#).contains("CASH"));
    assert!(
        bad(r#"{"assertion_keys": [{"key_id": "k", "secret_hex": "00"}]}"#).contains("at least 32")
    );
    assert!(bad(r#"{"prepaid_balance_max": {"major": 1, "minor": {"XYZ": 1}}}"#).contains("XYZ"));
    let defaults = EngineConfig::from_json(&EngineConfig::default().to_json()).unwrap();
    assert_eq!(defaults, EngineConfig::default());
    assert_eq!(
        EngineConfig::from_json("{}").unwrap(),
        EngineConfig::default()
    );
}

/// Per-check timings, to find where the pipeline's time goes. Not a test of
/// behaviour: run by hand with
/// `cargo test --release -p quickpay-engine -- --ignored --nocapture check_timings`.
#[test]
#[ignore]
fn check_timings() {
    use std::hint::black_box;
    use std::time::Instant;
    fn time(label: &str, n: usize, mut f: impl FnMut(usize)) {
        let start = Instant::now();
        for i in 0..n {
            f(i);
        }
        println!(
            "{label:28} {:8.1} ns",
            start.elapsed().as_nanos() as f64 / n as f64
        );
    }
    let n = 1_000_000;
    let v = validator();
    let token = assertion::sign("k1", &SECRET, "acc-post", "+306912345678", NOW + 300);
    time("is_ip v4", n, |_| {
        assert!(formats::is_ip(black_box(b"192.0.2.10")))
    });
    time("is_ip v6", n, |_| {
        assert!(formats::is_ip(black_box(b"2001:db8::10")))
    });
    time("check_msisdn", n, |_| {
        assert!(formats::check_msisdn(black_box(b"+306912345678")).is_none())
    });
    time("check_pan", n, |_| {
        assert!(card::check_pan(black_box(b"4111111111111111")).is_none())
    });
    time("check_iban", n, |_| {
        assert!(formats::check_iban(black_box(b"DE89370400440532013000")).is_none())
    });
    time("iban_validate (reference)", n, |_| {
        assert!(black_box("DE89370400440532013000")
            .parse::<::iban::Iban>()
            .is_ok())
    });
    time("currency", n, |_| {
        assert!(Currency::from_bytes(black_box(b"EUR")).is_some())
    });
    time("civil_date", n, |i| {
        assert!(Now::at(black_box(NOW + i as i64)).date.year > 2000)
    });
    time("table lookup", n, |_| {
        assert!(v.subscribers.entry(black_box(b"acc-post")).is_some())
    });
    time("assertion verify", n, |_| {
        assert!(assertion::verify(
            &v.rules,
            black_box(token.as_bytes()),
            b"acc-post",
            b"+306912345678",
            NOW
        )
        .is_none())
    });
    let p = pay();
    time("pipeline, card", n, |_| {
        assert_eq!(v.validate_one(black_box(&p), NOW), RejectCode::Ok)
    });
    let mut w = pay();
    w.method = MethodKind::Wallet;
    w.wallet_provider = b"mpesa";
    w.wallet_id = b"254712345678";
    time("pipeline, wallet", n, |_| {
        assert_eq!(v.validate_one(black_box(&w), NOW), RejectCode::Ok)
    });
}
