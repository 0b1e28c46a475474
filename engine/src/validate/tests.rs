use super::*;

fn table() -> SubscriberTable {
    let mut table = SubscriberTable::new();
    let eur = Currency::from_code("EUR").unwrap();
    for (id, msisdn, plan, status) in [
        ("acc-post", "+306912345678", Plan::Postpaid, Status::Barred),
        ("acc-pre", "+306912345679", Plan::Prepaid, Status::Active),
        ("acc-closed", "+306912345670", Plan::Prepaid, Status::Closed),
    ] {
        table
            .upsert(Subscriber {
                account_id: id.into(),
                msisdn: msisdn.into(),
                plan,
                status,
                currency: eur,
                balance_minor: 5_000,
                country: *b"GR",
                sim_swapped_at_s: None,
                created_at_s: 1_600_000_000,
            })
            .unwrap();
    }
    table
}

fn pay<'a>() -> PaymentView<'a> {
    PaymentView {
        idempotency_key: "k-1",
        account_id: "acc-post",
        msisdn: "+306912345678",
        amount_minor: 2_500,
        currency: "EUR",
        purpose: Purpose::BillPayment,
        method: MethodKind::Card,
    }
}

fn check(edit: impl FnOnce(&mut PaymentView<'static>)) -> RejectCode {
    let mut p = pay();
    edit(&mut p);
    validate_one(&table(), &p)
}

#[test]
fn a_good_bill_payment_passes_even_when_barred() {
    assert_eq!(check(|_| {}), RejectCode::Ok);
}

#[test]
fn idempotency_key_bounds() {
    let long: &'static str = Box::leak("k".repeat(255).into_boxed_str());
    let too_long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
    assert_eq!(check(|p| p.idempotency_key = long), RejectCode::Ok);
    assert_eq!(check(|p| p.idempotency_key = too_long), RejectCode::IdempotencyKeyInvalid);
    assert_eq!(check(|p| p.idempotency_key = ""), RejectCode::IdempotencyKeyInvalid);
    assert_eq!(check(|p| p.idempotency_key = "k\n1"), RejectCode::IdempotencyKeyInvalid);
}

#[test]
fn account_id_charset() {
    assert!(is_account_id("ACC_01-x"));
    assert!(!is_account_id("acc 01"));
    assert!(!is_account_id(""));
    assert_eq!(check(|p| p.account_id = "acc/01"), RejectCode::AccountIdInvalid);
}

#[test]
fn msisdn_is_e164() {
    assert!(is_e164("+306912345678"));
    assert!(is_e164("+12025550123"));
    assert!(!is_e164("306912345678"), "missing plus");
    assert!(!is_e164("+0306912345678"), "leading zero");
    assert!(!is_e164("+3069123456789012"), "16 digits");
    assert!(!is_e164("+1234567"), "7 digits");
    assert!(!is_e164("+30 6912345678"), "space");
    assert_eq!(check(|p| p.msisdn = "+30691234567a"), RejectCode::MsisdnInvalid);
}

#[test]
fn amount_bounds() {
    assert_eq!(check(|p| p.amount_minor = 1), RejectCode::Ok);
    assert_eq!(check(|p| p.amount_minor = 0), RejectCode::AmountNotPositive);
    assert_eq!(check(|p| p.amount_minor = -1), RejectCode::AmountNotPositive);
    assert_eq!(check(|p| p.amount_minor = AMOUNT_MINOR_MAX), RejectCode::Ok);
    assert_eq!(check(|p| p.amount_minor = AMOUNT_MINOR_MAX + 1), RejectCode::AmountTooLarge);
}

#[test]
fn currency_is_iso_4217() {
    assert_eq!(check(|p| p.currency = "EUX"), RejectCode::CurrencyUnknown);
    assert_eq!(check(|p| p.currency = "eur"), RejectCode::CurrencyUnknown);
    assert_eq!(check(|p| p.currency = "USD"), RejectCode::CurrencyMismatch);
}

#[test]
fn purpose_and_method_are_required() {
    assert_eq!(check(|p| p.purpose = Purpose::Unspecified), RejectCode::PurposeInvalid);
    assert_eq!(check(|p| p.method = MethodKind::Missing), RejectCode::MethodMissing);
}

#[test]
fn account_authentication() {
    assert_eq!(check(|p| p.account_id = "acc-none"), RejectCode::AccountNotFound);
    assert_eq!(check(|p| p.msisdn = "+306912345679"), RejectCode::MsisdnMismatch);
    assert_eq!(
        check(|p| {
            p.account_id = "acc-closed";
            p.msisdn = "+306912345670";
            p.purpose = Purpose::PrepaidTopup;
        }),
        RejectCode::AccountClosed
    );
}

#[test]
fn purpose_must_fit_the_plan() {
    let topup_post = check(|p| p.purpose = Purpose::PrepaidTopup);
    assert_eq!(topup_post, RejectCode::PurposeNotAllowedForPlan);
    let topup_pre = check(|p| {
        p.account_id = "acc-pre";
        p.msisdn = "+306912345679";
        p.purpose = Purpose::PrepaidTopup;
    });
    assert_eq!(topup_pre, RejectCode::Ok);
}

#[test]
fn format_is_checked_before_the_account() {
    let code = check(|p| {
        p.account_id = "acc-none";
        p.amount_minor = 0;
    });
    assert_eq!(code, RejectCode::AmountNotPositive);
}

#[test]
fn batch_gives_one_code_per_payment_in_order() {
    let table = table();
    let mut bad = pay();
    bad.account_id = "acc-none";
    let payments = [pay(), bad, pay()];
    let mut out = [RejectCode::Ok; 3];
    validate_batch(&table, &payments, &mut out);
    assert_eq!(out, [RejectCode::Ok, RejectCode::AccountNotFound, RejectCode::Ok]);
}
