//! The rows one settlement batch writes, built without touching a database: payment
//! history, review queue, billing, AR ledger, provisioning, audit and outbox. The same
//! rows, column for column and byte for byte, as `quickpay_engine.store.rows.build`
//! (which the PostgreSQL store still uses; a test holds the two together). Every key
//! derives from the payment id, so a redo of the same batch changes nothing.

use std::collections::HashMap;

use super::audit::{chain_hash, continue_from, AuditRow};
use super::canonical::Object;

pub const PREPAID: u8 = 1;
pub const POSTPAID: u8 = 2;
pub const ACTIVE: u8 = 1;
pub const SUSPENDED: u8 = 2;
pub const BARRED: u8 = 3;
pub const CLOSED: u8 = 4;
pub const BILL_PAYMENT: u8 = 1;
pub const SETTLED: u8 = 1;
pub const DECLINED: u8 = 2;
pub const FAILED: u8 = 3;

/// A line state's name, as the events and the audit trail spell it.
pub fn status_name(status: u8) -> &'static str {
    match status {
        ACTIVE => "ACTIVE",
        SUSPENDED => "SUSPENDED",
        BARRED => "BARRED",
        CLOSED => "CLOSED",
        _ => "UNSPECIFIED",
    }
}

/// The fraud scorer's verdict on a payment, as stored: reasons joined by commas.
#[derive(Clone, Copy, Debug)]
pub struct Fraud<'a> {
    pub score: i64,
    pub decision: &'a str,
    pub reasons: &'a str,
}

/// What the pipeline decided for one payment. `decline_reason` empty means settle.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'a> {
    pub payment_id: &'a str,
    pub idempotency_key: &'a str,
    pub fingerprint: &'a str,
    pub account_id: &'a str,
    pub msisdn: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub purpose: u8,
    pub method_kind: u8,
    pub method_display: &'a str,
    pub channel: &'a str,
    pub device_id: &'a str,
    pub ip: &'a str,
    /// The caller that sent the payment (the access file's name; "" without one).
    pub sender: &'a str,
    pub decline_reason: &'a str,
    pub decline_detail: &'a str,
    pub gateway: &'a str,
    pub gateway_reference: &'a str,
    pub fraud: Option<Fraud<'a>>,
    /// Held for fraud review: queued for an analyst.
    pub review: bool,
    /// A technical failure: FAILED, not DECLINED.
    pub failed: bool,
}

/// An account's billing balance and line state as the batch moves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub msisdn: String,
    pub plan: u8,
    pub status: u8,
    pub balance_minor: i64,
}

/// A provisioning rule (see `quickpay_engine.store.provisioning`): `from_status` lines of
/// `plan` become `to_status` once the balance allows.
#[derive(Clone, Debug)]
pub struct Rule {
    pub rule_id: String,
    pub plan: u8,
    pub from_status: u8,
    pub to_status: u8,
    pub owed_max_minor: i64,
    pub credit_min_minor: i64,
}

impl Rule {
    fn fires(&self, plan: u8, status: u8, balance_minor: i64) -> bool {
        if plan != self.plan || status != self.from_status {
            return false;
        }
        if plan == POSTPAID {
            balance_minor <= self.owed_max_minor
        } else {
            balance_minor >= self.credit_min_minor
        }
    }
}

/// The line state after a settlement and the rule that set it ("" when none fired). A
/// closed line never changes here.
pub fn state_after(rules: &[Rule], plan: u8, status: u8, balance: i64) -> (u8, &str) {
    if status == CLOSED {
        return (status, "");
    }
    rules
        .iter()
        .find(|rule| rule.fires(plan, status, balance))
        .map_or((status, ""), |rule| (rule.to_status, rule.rule_id.as_str()))
}

/// The confirmation id of a settled payment: its payment id's unique part under "cnf_".
pub fn confirmation_id(payment_id: &str) -> String {
    format!(
        "cnf_{}",
        payment_id.strip_prefix("pay_").unwrap_or(payment_id)
    )
}

/// One payment's outcome as the commit decided it; the confirmation's fields are
/// meaningful for SETTLED only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: u8,
    pub ledger_sequence: i64,
    pub balance_after_minor: i64,
    pub service_state_after: u8,
}

#[derive(Debug)]
pub struct PaymentRow<'a> {
    pub seq: i64,
    pub d: Decision<'a>,
    pub status: u8,
    pub confirmation_id: Option<String>,
    pub settled_at_us: Option<i64>,
    pub balance_after_minor: Option<i64>,
    pub service_state_after: Option<u8>,
}

#[derive(Debug)]
pub struct BillingRow<'a> {
    pub payment_id: &'a str,
    pub account_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub balance_delta_minor: i64,
    pub balance_after_minor: i64,
}

#[derive(Debug)]
pub struct ArRow<'a> {
    pub payment_id: &'a str,
    pub leg: i64,
    pub ar_account: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    pub currency: &'a str,
}

#[derive(Debug)]
pub struct ProvisioningRow<'a> {
    pub payment_id: &'a str,
    pub account_id: &'a str,
    pub msisdn: String,
    pub state_before: u8,
    pub state_after: u8,
    pub rule_id: String,
}

#[derive(Debug)]
pub struct ReviewRow<'a> {
    pub payment_id: &'a str,
    pub account_id: &'a str,
    pub score: i64,
    pub reasons: &'a str,
}

#[derive(Debug)]
pub struct Event<'a> {
    pub event_id: String,
    pub kind: &'static str,
    pub payment_id: &'a str,
    pub account_id: &'a str,
    pub payload: String,
}

/// Every table's rows for a batch, in the order the store writes them, and each
/// payment's outcome. `touched`: the accounts the batch moved, in first-touch order.
#[derive(Debug, Default)]
pub struct BatchRows<'a> {
    pub payments: Vec<PaymentRow<'a>>,
    pub reviews: Vec<ReviewRow<'a>>,
    pub billing: Vec<BillingRow<'a>>,
    pub ar: Vec<ArRow<'a>>,
    pub provisioning: Vec<ProvisioningRow<'a>>,
    pub audit: Vec<AuditRow>,
    pub outbox: Vec<Event<'a>>,
    pub outcomes: Vec<Outcome>,
    pub touched: Vec<&'a str>,
}

/// Why a batch's rows could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A settlement names an account the billing database no longer has.
    MissingAccount(String),
    /// The account's balance would leave the 64-bit range.
    BalanceOverflow(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::MissingAccount(account) => write!(f, "{account}"),
            BuildError::BalanceOverflow(account) => {
                write!(f, "account {account}: balance out of range")
            }
        }
    }
}

/// The rows for a batch. `accounts` is updated in place as payments apply, in order;
/// `head` is the trail's last row (None: none yet); payment rows are numbered from
/// `first_seq` (the confirmation's ledger sequence).
#[allow(clippy::too_many_arguments)]
pub fn build<'a>(
    decisions: &[Decision<'a>],
    accounts: &mut HashMap<String, Account>,
    rules: &[Rule],
    head: Option<&AuditRow>,
    first_seq: i64,
    now_us: i64,
    audit_key: &[u8],
) -> Result<BatchRows<'a>, BuildError> {
    let mut rows = BatchRows::default();
    let (marker, (mut audit_seq, mut audit_hash)) = continue_from(head, audit_key);
    rows.audit = marker;
    for (offset, d) in decisions.iter().enumerate() {
        let seq = first_seq + offset as i64;
        let (content, mut payment) = if !d.decline_reason.is_empty() {
            let content = Object::new()
                .str("account_id", d.account_id)
                .int("amount_minor", d.amount_minor)
                .str("currency", d.currency)
                .str("decline_reason", d.decline_reason)
                .str("kind", "payment.declined")
                .str("payment_id", d.payment_id)
                .finish();
            let payload = Object::new()
                .int("amount_minor", d.amount_minor)
                .str("currency", d.currency)
                .str("decline_detail", d.decline_detail)
                .str("decline_reason", d.decline_reason)
                .finish();
            rows.outbox.push(event("decline", d, payload));
            let status = if d.failed { FAILED } else { DECLINED };
            rows.outcomes.push(Outcome {
                status,
                ledger_sequence: seq,
                balance_after_minor: 0,
                service_state_after: 0,
            });
            let row = PaymentRow {
                seq,
                d: *d,
                status,
                confirmation_id: None,
                settled_at_us: None,
                balance_after_minor: None,
                service_state_after: None,
            };
            (content, row)
        } else {
            settle(&mut rows, d, seq, accounts, rules, now_us)?
        };
        if d.review {
            let (score, reasons) = d.fraud.map_or((0, ""), |f| (f.score, f.reasons));
            rows.reviews.push(ReviewRow {
                payment_id: d.payment_id,
                account_id: d.account_id,
                score,
                reasons,
            });
        }
        payment.seq = seq;
        rows.payments.push(payment);
        audit_seq += 1;
        let row_hash = chain_hash(audit_key, &audit_hash, audit_seq, &content);
        rows.audit.push(AuditRow {
            seq: audit_seq,
            prev_hash: std::mem::replace(&mut audit_hash, row_hash.clone()),
            content,
            row_hash,
        });
    }
    Ok(rows)
}

/// A settled payment's rows (billing, AR, provisioning, events); its audit content and
/// payment row are returned.
fn settle<'a>(
    rows: &mut BatchRows<'a>,
    d: &Decision<'a>,
    seq: i64,
    accounts: &mut HashMap<String, Account>,
    rules: &[Rule],
    now_us: i64,
) -> Result<(String, PaymentRow<'a>), BuildError> {
    let account = accounts
        .get_mut(d.account_id)
        .ok_or_else(|| BuildError::MissingAccount(d.account_id.to_string()))?;
    // A bill payment lowers what is owed; a top-up raises the credit.
    let bill = d.purpose == BILL_PAYMENT;
    let delta = if bill {
        d.amount_minor.checked_neg()
    } else {
        Some(d.amount_minor)
    };
    let balance = delta
        .and_then(|delta| account.balance_minor.checked_add(delta))
        .ok_or_else(|| BuildError::BalanceOverflow(d.account_id.to_string()))?;
    let delta = balance - account.balance_minor;
    account.balance_minor = balance;
    let before = account.status;
    let (after, rule_id) = state_after(rules, account.plan, before, balance);
    account.status = after;
    if !rows.touched.contains(&d.account_id) {
        rows.touched.push(d.account_id);
    }
    let confirmation_id = confirmation_id(d.payment_id);
    rows.billing.push(BillingRow {
        payment_id: d.payment_id,
        account_id: d.account_id,
        amount_minor: d.amount_minor,
        currency: d.currency,
        balance_delta_minor: delta,
        balance_after_minor: balance,
    });
    // Money came in through the gateway's clearing account and pays down what the
    // subscriber owes (a bill) or becomes credit the carrier owes them (a top-up).
    let clearing = if d.gateway.is_empty() {
        "direct"
    } else {
        d.gateway
    };
    let credited = if bill {
        "receivable"
    } else {
        "prepaid_liability"
    };
    rows.ar.push(ArRow {
        payment_id: d.payment_id,
        leg: 1,
        ar_account: format!("gateway_clearing:{clearing}"),
        debit_minor: d.amount_minor,
        credit_minor: 0,
        currency: d.currency,
    });
    rows.ar.push(ArRow {
        payment_id: d.payment_id,
        leg: 2,
        ar_account: format!("{credited}:{}", d.account_id),
        debit_minor: 0,
        credit_minor: d.amount_minor,
        currency: d.currency,
    });
    if after != before {
        rows.provisioning.push(ProvisioningRow {
            payment_id: d.payment_id,
            account_id: d.account_id,
            msisdn: account.msisdn.clone(),
            state_before: before,
            state_after: after,
            rule_id: rule_id.to_string(),
        });
        let payload = Object::new()
            .str("msisdn", &account.msisdn)
            .str("state_after", status_name(after))
            .str("state_before", status_name(before))
            .finish();
        rows.outbox.push(event("service_state", d, payload));
    }
    let content = Object::new()
        .str("account_id", d.account_id)
        .int("amount_minor", d.amount_minor)
        .int("balance_after_minor", balance)
        .str("currency", d.currency)
        .str("gateway", d.gateway)
        .str("gateway_reference", d.gateway_reference)
        .str("kind", "payment.settled")
        .str("payment_id", d.payment_id)
        .str("state_after", status_name(after))
        .str("state_before", status_name(before))
        .finish();
    let payload = Object::new()
        .int("amount_minor", d.amount_minor)
        .int("balance_after_minor", balance)
        .str("confirmation_id", &confirmation_id)
        .str("currency", d.currency)
        .str("gateway", d.gateway)
        .str("gateway_reference", d.gateway_reference)
        .int("ledger_sequence", seq)
        .int("purpose", i64::from(d.purpose))
        .str("service_state_after", status_name(after))
        .finish();
    rows.outbox.push(event("settlement", d, payload));
    rows.outcomes.push(Outcome {
        status: SETTLED,
        ledger_sequence: seq,
        balance_after_minor: balance,
        service_state_after: after,
    });
    let row = PaymentRow {
        seq,
        d: *d,
        status: SETTLED,
        confirmation_id: Some(confirmation_id),
        settled_at_us: Some(now_us),
        balance_after_minor: Some(balance),
        service_state_after: Some(after),
    };
    Ok((content, row))
}

/// The request as the saga's journal keeps it (`quickpay_engine.store.rows.intent_json`):
/// every field but the method detail, so no card number is ever written.
pub fn intent_json(d: &Decision<'_>) -> String {
    Object::new()
        .str("account_id", d.account_id)
        .int("amount_minor", d.amount_minor)
        .str("channel", d.channel)
        .str("currency", d.currency)
        .str("device_id", d.device_id)
        .str("fingerprint", d.fingerprint)
        .str("idempotency_key", d.idempotency_key)
        .str("ip", d.ip)
        .str("method_display", d.method_display)
        .int("method_kind", i64::from(d.method_kind))
        .str("msisdn", d.msisdn)
        .int("purpose", i64::from(d.purpose))
        .str("sender", d.sender)
        .finish()
}

/// An outbox event; its id derives from the payment, so a redo adds no duplicate.
fn event<'a>(kind: &'static str, d: &Decision<'a>, payload: String) -> Event<'a> {
    Event {
        event_id: format!("evt_{kind}_{}", d.payment_id),
        kind,
        payment_id: d.payment_id,
        account_id: d.account_id,
        payload,
    }
}
