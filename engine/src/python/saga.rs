//! The settlement saga's ledger steps (reserve, capture, void, settle, anchor), each
//! run whole on a core thread and handed back through `Completions`.
//!
//! A step is what `quickpay_engine.settlement.ledger_book` did in Python on a worker
//! thread, several ledger commands in a row (the subscribers' accounts opened where
//! missing, the holds, the states), with the same records in the log. Two things
//! differ. The commands are queued for the log one after the other and the step waits
//! once, for the last: one fdatasync per step where each command used to wait for one
//! of its own. And no Python runs on the thread: the arguments are converted on the
//! event loop, the future is set by `Completions::drain`.
//!
//! A step's future gets None when every command was applied, or the message of the
//! first refusal (the result codes the saga does not accept), which the Python side
//! raises as `LedgerRefused`; a log failure is raised as the exception `Ledger`'s
//! synchronous calls raise. Either way, what was queued before it is durable when the
//! future is set.

use std::sync::Arc;

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;

use super::check_len;
use super::completions::{Completions, Finish};
use super::ledger::{to_py, Ledger};
use crate::ledger::{
    self as core, transfer_flags, AccountInput, AccountResult, AnchorResult, Command, DurableError,
    DurableLedger, PaymentResult, TransferInput, TransferResult,
};
use crate::money::Currency;

/// The threads the steps run on, named as the Python pool's were (`ledger_0`...): a
/// few, so that steps of concurrent batches share group commits.
pub(super) const SAGA_THREADS: usize = 4;
pub(super) const SAGA_THREAD_NAME: &str = "ledger";

// Settlement states and account kinds, as the ledger numbers them (ledger_book.py).
const RESERVED: u8 = 1;
const CAPTURED: u8 = 2;
const SETTLED: u8 = 3;
const ROLLED_BACK: u8 = 4;
const KIND_CLEARING: u16 = 3;

/// What a step's future is set to: None (done) or a refusal's message.
type Outcome = Result<Option<String>, DurableError>;

/// A stable nonzero 128-bit id for a name: blake2b with a 16-byte digest over the parts
/// joined by U+001F, big-endian (`derived_id` in ledger_book.py; a test holds the two
/// to the same ids).
pub(crate) fn derived_id(parts: &[&str]) -> u128 {
    let mut hash = Blake2b::<U16>::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash.update([0x1f]);
        }
        hash.update(part.as_bytes());
    }
    let digest: [u8; 16] = hash.finalize().into();
    u128::from_be_bytes(digest).max(1)
}

/// A payment's ledger id: the 32 hex digits of `pay_<hex>`.
fn payment_number(payment_id: &str) -> PyResult<u128> {
    let hex = payment_id.strip_prefix("pay_").unwrap_or(payment_id);
    u128::from_str_radix(hex, 16)
        .map_err(|_| PyValueError::new_err(format!("{payment_id:?} is not a payment id")))
}

fn payment_numbers(payment_ids: &[String]) -> PyResult<Vec<u128>> {
    payment_ids.iter().map(|p| payment_number(p)).collect()
}

/// The first refusal among `codes` (any code not in `ok`), worded as `_check` in
/// ledger_book.py words it.
fn refused(
    kind: &str,
    codes: &[u16],
    ok: &[u16],
    name: fn(u16) -> Option<&'static str>,
) -> Option<String> {
    let bad: Vec<u16> = codes.iter().copied().filter(|c| !ok.contains(c)).collect();
    if bad.is_empty() {
        return None;
    }
    let mut names: Vec<String> = bad
        .iter()
        .map(|c| name(*c).map_or_else(|| c.to_string(), str::to_string))
        .collect();
    names.sort();
    names.dedup();
    Some(format!(
        "ledger refused {} {kind} events: {}",
        bad.len(),
        names.join(", ")
    ))
}

fn account_name(c: u16) -> Option<&'static str> {
    AccountResult::from_u16(c).map(AccountResult::name)
}
fn transfer_name(c: u16) -> Option<&'static str> {
    TransferResult::from_u16(c).map(TransferResult::name)
}
fn payment_name(c: u16) -> Option<&'static str> {
    PaymentResult::from_u16(c).map(PaymentResult::name)
}
fn anchor_name(c: u16) -> Option<&'static str> {
    AnchorResult::from_u16(c).map(AnchorResult::name)
}

const ACCOUNT_OK: &[u16] = &[AccountResult::Ok as u16, AccountResult::Exists as u16];
const TRANSFER_OK: &[u16] = &[TransferResult::Ok as u16, TransferResult::Exists as u16];
// A payment journalled but never held (a crash between the two) has no hold to void:
// that is the end state wanted.
const VOID_OK: &[u16] = &[
    TransferResult::Ok as u16,
    TransferResult::Exists as u16,
    TransferResult::PendingTransferNotFound as u16,
];
const STATE_OK: &[u16] = &[PaymentResult::Ok as u16, PaymentResult::Exists as u16];
const ANCHOR_OK: &[u16] = &[
    AnchorResult::Ok as u16,
    AnchorResult::Behind as u16,
    AnchorResult::Exists as u16,
];

/// Commands queued for the log by one step; `end` waits for the last to be durable.
struct Step {
    ledger: Arc<DurableLedger>,
    now_ns: u64,
    retention_ns: u64,
    last_seq: u64,
}

impl Step {
    fn submit(&mut self, command: Command) -> Result<Vec<u16>, DurableError> {
        let (codes, seq) = self.ledger.submit(self.now_ns, command)?;
        self.last_seq = self.last_seq.max(seq);
        Ok(codes)
    }

    /// Waits for what was queued, then gives the step's outcome.
    fn end(self, outcome: Outcome) -> Outcome {
        let waited = if self.last_seq > 0 {
            self.ledger.wait_durable(self.last_seq)
        } else {
            Ok(())
        };
        match (outcome, waited) {
            (Err(err), _) | (Ok(_), Err(err)) => Err(err),
            (Ok(refusal), Ok(())) => Ok(refusal),
        }
    }

    /// Opens the accounts in `wanted` (id, currency, kind) the ledger does not hold.
    fn open(&mut self, wanted: &[(u128, u16, u16)]) -> Outcome {
        for chunk in wanted.chunks(core::BATCH_MAX) {
            let missing = self.ledger.read(|l| {
                chunk
                    .iter()
                    .filter(|(id, _, _)| l.account(*id).is_none())
                    .map(|&(id, currency, kind)| AccountInput {
                        id,
                        currency,
                        kind,
                        flags: 0,
                    })
                    .collect::<Vec<_>>()
            })?;
            if missing.is_empty() {
                continue;
            }
            let codes = self.submit(Command::CreateAccounts { accounts: missing })?;
            if let Some(refusal) = refused("account", &codes, ACCOUNT_OK, account_name) {
                return Ok(Some(refusal));
            }
        }
        Ok(None)
    }

    fn states(&mut self, holds: &[u128], state: u8) -> Outcome {
        for chunk in holds.chunks(core::BATCH_MAX) {
            let codes = self.submit(Command::PaymentStates {
                retention_ns: self.retention_ns,
                entries: chunk.iter().map(|&h| (h, state)).collect(),
            })?;
            if let Some(refusal) = refused("payment", &codes, STATE_OK, payment_name) {
                return Ok(Some(refusal));
            }
        }
        Ok(None)
    }

    /// Posts (`post`) or voids each payment's hold, then logs `state`. A post or void
    /// names only the hold: its accounts, amount and currency come from the pending
    /// transfer.
    fn finish(&mut self, payment_ids: &[String], holds: &[u128], post: bool) -> Outcome {
        let (name, flag, ok, state) = if post {
            ("post", transfer_flags::POST_PENDING, TRANSFER_OK, SETTLED)
        } else {
            ("void", transfer_flags::VOID_PENDING, VOID_OK, ROLLED_BACK)
        };
        for (ids, holds) in payment_ids
            .chunks(core::BATCH_MAX)
            .zip(holds.chunks(core::BATCH_MAX))
        {
            let transfers = ids
                .iter()
                .zip(holds)
                .map(|(p, &hold)| TransferInput {
                    id: derived_id(&[name, p]),
                    debit_account_id: 0,
                    credit_account_id: 0,
                    amount_minor: 0, // the whole hold
                    pending_id: hold,
                    payment_id: hold,
                    timeout_s: 0,
                    currency: 0,
                    flags: flag,
                })
                .collect();
            let codes = self.submit(Command::CreateTransfers { transfers })?;
            if let Some(refusal) = refused("transfer", &codes, ok, transfer_name) {
                return Ok(Some(refusal));
            }
        }
        self.states(holds, state)
    }

    fn anchor(&mut self, seq: u64, hash: [u8; 32]) -> Outcome {
        let codes = self.submit(Command::AnchorAudit { seq, hash })?;
        Ok(refused("anchor", &codes, ANCHOR_OK, anchor_name))
    }
}

/// One payment's hold, as `saga_reserve` takes it.
struct Hold {
    id: u128,
    account: u128,
    clearing: u128,
    amount_minor: i64,
    currency: u16,
}

fn none_or_refusal(py: Python<'_>, outcome: Outcome) -> PyResult<Py<PyAny>> {
    match outcome {
        Ok(refusal) => Ok(refusal.into_pyobject(py)?.into_any().unbind()),
        Err(err) => Err(to_py(err)),
    }
}

impl Ledger {
    /// Runs `step` on a saga thread and sets `future` from its outcome.
    fn spawn_step(
        &self,
        done: &Completions,
        future: Py<PyAny>,
        now_ns: u64,
        step: impl FnOnce(&mut Step) -> Outcome + Send + 'static,
    ) -> PyResult<()> {
        let ledger = self.get()?;
        let retention_ns = self.retention_ns;
        let queue = done.queue();
        self.workers
            .spawn(Box::new(move || {
                let mut running = Step {
                    ledger,
                    now_ns,
                    retention_ns,
                    last_seq: 0,
                };
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&mut running)));
                let finish: Finish = match outcome {
                    Ok(outcome) => {
                        let outcome = running.end(outcome);
                        Box::new(move |py| none_or_refusal(py, outcome))
                    }
                    Err(_) => {
                        Box::new(|_| Err(super::EngineError::new_err("a ledger step panicked")))
                    }
                };
                queue.complete(future, finish);
            }))
            .map_err(|err| super::EngineError::new_err(format!("ledger threads: {err}")))
    }
}

/// The ledger's numeric code of a currency the engine bills in (`currency_numeric`, as
/// `_numeric` in ledger_book.py takes it), or the refusal `_numeric` raises.
fn numeric(currency: &str) -> Result<u16, String> {
    Currency::from_code(currency)
        .map(|c| c.numeric())
        .ok_or_else(|| format!("'{currency}' is not an ISO 4217 currency"))
}

/// Each currency of `currencies` once: its number, clearing and adjustment accounts; or
/// the refusal of the first that is not a currency.
fn currency_accounts(currencies: &[String]) -> Result<FxHashMap<&str, (u16, u128, u128)>, String> {
    let mut by_code: FxHashMap<&str, (u16, u128, u128)> = FxHashMap::default();
    for code in currencies {
        if !by_code.contains_key(code.as_str()) {
            let number = numeric(code)?;
            let clearing = derived_id(&["clearing", code]);
            let adjustments = derived_id(&["adjustments", code]);
            by_code.insert(code, (number, clearing, adjustments));
        }
    }
    Ok(by_code)
}

/// The accounts that holds of `subscribers` (id, currency, kind) in `currencies` need,
/// for `Step::open`: the subscribers (a repeated one keeps its last kind), then each
/// currency's clearing and adjustment accounts. Called per chunk of `core::BATCH_MAX`
/// rows: a subscriber repeated in two chunks is opened by the first (a later kind is a
/// label the ledger keeps as it was, as for an account it already holds).
fn wanted_accounts(
    subscribers: impl Iterator<Item = (u128, u16, u16)>,
    currencies: &[String],
    by_code: &FxHashMap<&str, (u16, u128, u128)>,
) -> Vec<(u128, u16, u16)> {
    let mut wanted: Vec<(u128, u16, u16)> = Vec::with_capacity(currencies.len() + 2);
    let mut at: FxHashMap<u128, usize> = FxHashMap::default();
    let mut want = |id: u128, currency: u16, kind: u16| match at.get(&id) {
        Some(&i) => wanted[i] = (id, currency, kind),
        None => {
            at.insert(id, wanted.len());
            wanted.push((id, currency, kind));
        }
    };
    for (id, currency, kind) in subscribers {
        want(id, currency, kind);
    }
    for code in currencies {
        let (number, clearing, adjustments) = by_code[code.as_str()];
        want(clearing, number, KIND_CLEARING);
        want(adjustments, number, KIND_CLEARING);
    }
    wanted
}

#[pymethods]
impl Ledger {
    /// Opens the ledger accounts of these subscribers (`kinds`: one per subscriber) and
    /// their currencies' clearing and adjustment accounts, where the ledger does not hold
    /// them yet, as the reserve step does first; returns once that is durable, with the
    /// GIL released meanwhile. For the refunds and balance adjustments, which run
    /// outside the saga. None, or the message of the first refusal.
    fn open_accounts(
        &self,
        py: Python<'_>,
        now_ns: u64,
        account_ids: Vec<String>,
        kinds: Vec<u16>,
        currencies: Vec<String>,
    ) -> PyResult<Option<String>> {
        let n = account_ids.len();
        for (column, len) in [("kinds", kinds.len()), ("currencies", currencies.len())] {
            check_len(column, len, n)?;
        }
        let ledger = self.get()?;
        let retention_ns = self.retention_ns;
        py.detach(move || {
            let mut step = Step {
                ledger,
                now_ns,
                retention_ns,
                last_seq: 0,
            };
            let outcome = (|| {
                let by_code = match currency_accounts(&currencies) {
                    Ok(by_code) => by_code,
                    Err(refusal) => return Ok(Some(refusal)),
                };
                for start in (0..n).step_by(core::BATCH_MAX) {
                    let end = (start + core::BATCH_MAX).min(n);
                    let subscribers = (start..end).map(|i| {
                        let (currency, _, _) = by_code[currencies[i].as_str()];
                        (
                            derived_id(&["subscriber", &account_ids[i]]),
                            currency,
                            kinds[i],
                        )
                    });
                    let wanted = wanted_accounts(subscribers, &currencies[start..end], &by_code);
                    if let Some(refusal) = step.open(&wanted)? {
                        return Ok(Some(refusal));
                    }
                }
                Ok(None)
            })();
            step.end(outcome)
        })
        .map_err(to_py)
    }

    /// The saga's reserve step: opens the subscribers' accounts (and their currencies'
    /// clearing and adjustment accounts) where missing, holds each payment's amount
    /// (a pending transfer from clearing to the subscriber, id the payment's) and logs
    /// RESERVED; `future` is set once all of it is durable.
    #[allow(clippy::too_many_arguments)]
    fn saga_reserve(
        &self,
        done: &Completions,
        future: Py<PyAny>,
        now_ns: u64,
        payment_ids: Vec<String>,
        account_ids: Vec<String>,
        kinds: Vec<u16>,
        amounts_minor: Vec<i64>,
        currencies: Vec<String>,
    ) -> PyResult<()> {
        let n = payment_ids.len();
        for (column, len) in [
            ("account_ids", account_ids.len()),
            ("kinds", kinds.len()),
            ("amounts_minor", amounts_minor.len()),
            ("currencies", currencies.len()),
        ] {
            check_len(column, len, n)?;
        }
        let holds = payment_numbers(&payment_ids)?;
        self.spawn_step(done, future, now_ns, move |step| {
            let by_code = match currency_accounts(&currencies) {
                Ok(by_code) => by_code,
                Err(refusal) => return Ok(Some(refusal)),
            };
            let moves: Vec<Hold> = (0..n)
                .map(|i| {
                    let (currency, clearing, _) = by_code[currencies[i].as_str()];
                    Hold {
                        id: holds[i],
                        account: derived_id(&["subscriber", &account_ids[i]]),
                        clearing,
                        amount_minor: amounts_minor[i],
                        currency,
                    }
                })
                .collect();
            let mut start = 0;
            for chunk in moves.chunks(core::BATCH_MAX) {
                let end = start + chunk.len();
                let wanted = wanted_accounts(
                    chunk
                        .iter()
                        .zip(&kinds[start..end])
                        .map(|(m, &kind)| (m.account, m.currency, kind)),
                    &currencies[start..end],
                    &by_code,
                );
                start = end;
                if let Some(refusal) = step.open(&wanted)? {
                    return Ok(Some(refusal));
                }
                let transfers = chunk
                    .iter()
                    .map(|m| TransferInput {
                        id: m.id,
                        debit_account_id: m.clearing,
                        credit_account_id: m.account,
                        amount_minor: m.amount_minor,
                        pending_id: 0,
                        payment_id: m.id,
                        timeout_s: 0, // no timeout: only the saga ends a hold
                        currency: m.currency,
                        flags: transfer_flags::PENDING,
                    })
                    .collect();
                let codes = step.submit(Command::CreateTransfers { transfers })?;
                if let Some(refusal) = refused("transfer", &codes, TRANSFER_OK, transfer_name) {
                    return Ok(Some(refusal));
                }
            }
            step.states(&holds, RESERVED)
        })
    }

    /// The saga's step after the gateways: logs CAPTURED for `captured`, voids the
    /// holds of `voided` and logs ROLLED_BACK for them, one wait for both.
    fn saga_capture_and_void(
        &self,
        done: &Completions,
        future: Py<PyAny>,
        now_ns: u64,
        captured: Vec<String>,
        voided: Vec<String>,
    ) -> PyResult<()> {
        let captured = payment_numbers(&captured)?;
        let void_holds = payment_numbers(&voided)?;
        self.spawn_step(done, future, now_ns, move |step| {
            let first = step.states(&captured, CAPTURED)?;
            let second = step.finish(&voided, &void_holds, false)?;
            Ok(first.or(second))
        })
    }

    /// Posts (`post`) or voids each payment's hold and logs SETTLED or ROLLED_BACK; then,
    /// when `head` (seq, hex hash) is given, anchors the audit trail's head. Both are
    /// done even when the first is refused, and the first refusal is the outcome.
    #[pyo3(signature = (done, future, now_ns, payment_ids, post, head=None))]
    fn saga_finish(
        &self,
        done: &Completions,
        future: Py<PyAny>,
        now_ns: u64,
        payment_ids: Vec<String>,
        post: bool,
        head: Option<(u64, String)>,
    ) -> PyResult<()> {
        let holds = payment_numbers(&payment_ids)?;
        let head = head
            .map(|(seq, hex)| {
                let mut hash = [0u8; 32];
                let ok = hex.len() == 64
                    && hash.iter_mut().enumerate().all(|(i, b)| {
                        u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                            .map(|v| *b = v)
                            .is_ok()
                    });
                ok.then_some((seq, hash)).ok_or_else(|| {
                    PyValueError::new_err(format!("audit head hash {hex:?} is not 32 hex bytes"))
                })
            })
            .transpose()?;
        self.spawn_step(done, future, now_ns, move |step| {
            let first = if holds.is_empty() {
                Ok(None)
            } else {
                step.finish(&payment_ids, &holds, post)
            };
            let second = match head {
                Some((seq, hash)) => step.anchor(seq, hash),
                None => Ok(None),
            };
            match (first, second) {
                (Err(err), _) => Err(err),
                (Ok(a), Ok(b)) => Ok(a.or(b)),
                (Ok(a), Err(err)) => a.map_or(Err(err), |refusal| Ok(Some(refusal))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids hashlib.blake2b(digest_size=16) gives the same names in Python
    /// (`ledger_book.derived_id`), computed there once and kept here.
    #[test]
    fn derived_ids_are_the_ones_python_derives() {
        assert_eq!(
            derived_id(&["subscriber", "acc-1"]),
            0xd840_d0b2_bf83_f8e7_7d19_7706_08e3_412e
        );
        assert_eq!(
            derived_id(&["post", "pay_00000000000000000000000000000001"]),
            0xf389_4352_d399_772f_1235_ede1_2eb2_c2cf
        );
        assert_eq!(
            derived_id(&["clearing", "KES"]),
            0x43f7_b5f7_2e16_dce3_ef0b_f419_d477_b336
        );
    }

    #[test]
    fn refusals_name_each_code_once_in_order() {
        let codes = [0, 23, 19, 23, 9];
        let message = refused("transfer", &codes, TRANSFER_OK, transfer_name);
        assert_eq!(
            message.as_deref(),
            Some(
                "ledger refused 3 transfer events: PENDING_ID_MUST_BE_DIFFERENT, \
                 PENDING_TRANSFER_NOT_FOUND"
            )
        );
        assert_eq!(
            refused("transfer", &[0, 19], TRANSFER_OK, transfer_name),
            None
        );
    }
}
