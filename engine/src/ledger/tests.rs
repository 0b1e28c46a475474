//! The ledger against hand-checked cases and, with proptest, against a simple model.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const EUR: u16 = 978;
const USD: u16 = 840;
const S: u64 = 1_000_000_000;

fn account(id: u128, currency: u16, flags: u16) -> AccountInput {
    AccountInput {
        id,
        currency,
        kind: AccountKind::SubscriberReceivable as u16,
        flags,
    }
}

fn transfer(id: u128, dr: u128, cr: u128, amount: i64) -> TransferInput {
    TransferInput {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount_minor: amount,
        currency: EUR,
        ..TransferInput::default()
    }
}

fn post(id: u128, pending: u128, amount: i64) -> TransferInput {
    TransferInput {
        id,
        pending_id: pending,
        amount_minor: amount,
        flags: transfer_flags::POST_PENDING,
        ..TransferInput::default()
    }
}

fn void(id: u128, pending: u128) -> TransferInput {
    TransferInput {
        flags: transfer_flags::VOID_PENDING,
        ..post(id, pending, 0)
    }
}

fn ledger_with_accounts() -> Ledger {
    let mut ledger = Ledger::new(Limits::default());
    let accounts = vec![
        account(1, EUR, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        account(2, EUR, 0),
        account(3, EUR, 0),
        account(4, USD, 0),
    ];
    let codes = ledger
        .apply(0, &Command::CreateAccounts { accounts })
        .unwrap();
    assert_eq!(codes, vec![0; 4]);
    ledger
}

fn run(ledger: &mut Ledger, now_ns: u64, transfers: Vec<TransferInput>) -> Vec<TransferResult> {
    let codes = ledger
        .apply(now_ns, &Command::CreateTransfers { transfers })
        .unwrap();
    codes
        .into_iter()
        .map(|c| TransferResult::from_u16(c).unwrap())
        .collect()
}

fn balances(ledger: &Ledger, id: u128) -> (i64, i64, i64, i64) {
    let b = ledger.account(id).unwrap().balances;
    (
        b.debits_pending,
        b.debits_posted,
        b.credits_pending,
        b.credits_posted,
    )
}

#[test]
fn accounts_validate_in_order_and_are_idempotent() {
    let mut ledger = ledger_with_accounts();
    use AccountResult as A;
    let cases = vec![
        (account(0, EUR, 0), A::IdMustNotBeZero),
        (account(u128::MAX, EUR, 0), A::IdMustNotBeIntMax),
        (account(9, EUR, 1 << 7), A::ReservedFlag),
        (account(9, EUR, 0b110), A::FlagsAreMutuallyExclusive),
        (account(9, 999, 0), A::CurrencyInvalid),
        (
            AccountInput {
                kind: 0,
                ..account(9, EUR, 0)
            },
            A::KindInvalid,
        ),
        (account(2, EUR, 0), A::Exists),
        (account(2, USD, 0), A::ExistsWithDifferentFields),
        (account(9, EUR, 0), A::Ok),
    ];
    let (inputs, expected): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let codes = ledger
        .apply(1, &Command::CreateAccounts { accounts: inputs })
        .unwrap();
    let codes: Vec<_> = codes
        .into_iter()
        .map(|c| AccountResult::from_u16(c).unwrap())
        .collect();
    assert_eq!(codes, expected);
}

#[test]
fn plain_transfer_moves_posted_balances_and_near_misses_are_refused() {
    let mut ledger = ledger_with_accounts();
    use TransferResult as R;
    let mut usd = transfer(15, 4, 2, 5);
    usd.currency = USD;
    let results = run(
        &mut ledger,
        1,
        vec![
            transfer(10, 2, 3, 500),
            transfer(10, 2, 3, 500),
            transfer(10, 2, 3, 501),
            transfer(11, 2, 2, 1),
            transfer(12, 2, 3, 0),
            transfer(13, 2, 3, -1),
            transfer(14, 2, 99, 1),
            usd,
            transfer(16, 2, 3, crate::money::AMOUNT_MINOR_MAX + 1),
            TransferInput {
                flags: 1 << 9,
                ..transfer(17, 2, 3, 1)
            },
            TransferInput {
                timeout_s: 5,
                ..transfer(18, 2, 3, 1)
            },
        ],
    );
    assert_eq!(
        results,
        vec![
            R::Ok,
            R::Exists,
            R::ExistsWithDifferentFields,
            R::AccountsMustBeDifferent,
            R::AmountMustNotBeZero,
            R::AmountMustNotBeNegative,
            R::CreditAccountNotFound,
            R::CurrencyMismatch,
            R::AmountTooLarge,
            R::ReservedFlag,
            R::TimeoutReservedForPendingTransfer,
        ]
    );
    assert_eq!(balances(&ledger, 2), (0, 500, 0, 0));
    assert_eq!(balances(&ledger, 3), (0, 0, 0, 500));
    ledger.check_balanced().unwrap();
}

#[test]
fn a_prepaid_account_cannot_spend_more_than_its_credits_holds_included() {
    let mut ledger = ledger_with_accounts();
    use TransferResult as R;
    let mut hold = transfer(21, 1, 3, 60);
    hold.flags = transfer_flags::PENDING;
    let results = run(
        &mut ledger,
        1,
        vec![
            transfer(20, 2, 1, 100),
            hold,
            transfer(22, 1, 3, 41),
            transfer(23, 1, 3, 40),
        ],
    );
    assert_eq!(results, vec![R::Ok, R::Ok, R::ExceedsCredits, R::Ok]);
    assert_eq!(balances(&ledger, 1), (60, 40, 0, 100));
}

#[test]
fn pending_post_for_less_then_repeat_and_void_are_refused() {
    let mut ledger = ledger_with_accounts();
    use TransferResult as R;
    let hold = TransferInput {
        flags: transfer_flags::PENDING,
        ..transfer(30, 2, 3, 100)
    };
    assert_eq!(run(&mut ledger, 1, vec![hold]), vec![R::Ok]);
    assert_eq!(balances(&ledger, 2), (100, 0, 0, 0));
    let results = run(
        &mut ledger,
        2,
        vec![
            post(31, 30, 101),
            TransferInput {
                debit_account_id: 3,
                ..post(31, 30, 70)
            },
            post(31, 99, 70),
            post(31, 31, 70),
            post(31, 30, 70),
            post(32, 30, 70),
            void(33, 30),
        ],
    );
    assert_eq!(
        results,
        vec![
            R::ExceedsPendingTransferAmount,
            R::PendingTransferHasDifferentDebitAccountId,
            R::PendingTransferNotFound,
            R::PendingIdMustBeDifferent,
            R::Ok,
            R::PendingTransferAlreadyPosted,
            R::PendingTransferAlreadyPosted,
        ]
    );
    assert_eq!(balances(&ledger, 2), (0, 70, 0, 0));
    assert_eq!(balances(&ledger, 3), (0, 0, 0, 70));
    assert_eq!(ledger.pending_status(30), Some(PendingStatus::Posted));
    assert_eq!(
        run(&mut ledger, 3, vec![post(34, 31, 0)]),
        vec![R::PendingTransferNotPending]
    );
}

#[test]
fn a_hold_expires_at_its_timeout_and_releases_the_funds() {
    let mut ledger = ledger_with_accounts();
    use TransferResult as R;
    let hold = TransferInput {
        flags: transfer_flags::PENDING,
        timeout_s: 2,
        ..transfer(40, 2, 3, 100)
    };
    assert_eq!(run(&mut ledger, 10 * S, vec![hold]), vec![R::Ok]);
    // One nanosecond before the deadline the hold still stands and can be voided...
    let mut probe = ledger.clone();
    assert_eq!(run(&mut probe, 12 * S - 1, vec![void(41, 40)]), vec![R::Ok]);
    // ...at the deadline it is gone, even with nothing else in the batch.
    assert_eq!(run(&mut ledger, 12 * S, vec![]), vec![]);
    assert_eq!(ledger.pending_status(40), Some(PendingStatus::Expired));
    assert_eq!(balances(&ledger, 2), (0, 0, 0, 0));
    assert_eq!(
        run(&mut ledger, 13 * S, vec![post(41, 40, 0)]),
        vec![R::PendingTransferExpired]
    );
    ledger.check_balanced().unwrap();
}

#[test]
fn a_linked_chain_applies_all_or_nothing() {
    let mut ledger = ledger_with_accounts();
    use TransferResult as R;
    let linked = |t: TransferInput| TransferInput {
        flags: t.flags | transfer_flags::LINKED,
        ..t
    };
    let results = run(
        &mut ledger,
        1,
        vec![
            linked(transfer(50, 2, 3, 10)),
            linked(TransferInput {
                flags: transfer_flags::PENDING,
                ..transfer(51, 2, 3, 10)
            }),
            transfer(52, 2, 99, 10),
            transfer(53, 2, 3, 7),
            linked(transfer(54, 2, 3, 1)),
        ],
    );
    assert_eq!(
        results,
        vec![
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::CreditAccountNotFound,
            R::Ok,
            R::LinkedEventChainOpen,
        ]
    );
    assert!(ledger.transfer(50).is_none() && ledger.transfer(51).is_none());
    assert!(ledger.pending_status(51).is_none());
    assert_eq!(balances(&ledger, 2), (0, 7, 0, 0));
    let results = run(
        &mut ledger,
        2,
        vec![linked(transfer(50, 2, 3, 10)), transfer(51, 2, 3, 10)],
    );
    assert_eq!(
        results,
        vec![R::Ok, R::Ok],
        "a failed chain left nothing behind"
    );
}

#[test]
fn payment_states_follow_the_saga_and_unfinished_ones_are_listed() {
    let mut ledger = Ledger::new(Limits::default());
    let apply = |ledger: &mut Ledger, now: u64, entries: Vec<(u128, u8)>| {
        ledger
            .apply(
                now,
                &Command::PaymentStates {
                    retention_ns: 100 * S,
                    entries,
                },
            )
            .unwrap()
    };
    use PaymentResult as P;
    let codes = apply(
        &mut ledger,
        S,
        vec![(1, 1), (2, 1), (3, 1), (0, 1), (4, 9), (5, 3), (1, 1)],
    );
    let expected = [
        P::Ok,
        P::Ok,
        P::Ok,
        P::PaymentIdMustNotBeZero,
        P::StateInvalid,
        P::TransitionInvalid,
        P::Exists,
    ];
    assert_eq!(codes, expected.map(|c| c as u16));
    let codes = apply(
        &mut ledger,
        2 * S,
        vec![(1, 2), (1, 3), (2, 4), (3, 3), (2, 2)],
    );
    let expected = [
        P::Ok,
        P::Ok,
        P::Ok,
        P::TransitionInvalid,
        P::TransitionInvalid,
    ];
    assert_eq!(codes, expected.map(|c| c as u16));
    assert_eq!(
        ledger.unfinished_payments(),
        vec![(3, PaymentState::Reserved)]
    );
    // Finished payments are remembered for the retention window, then forgotten.
    assert_eq!(
        apply(&mut ledger, 50 * S, vec![(1, 1)]),
        vec![P::TransitionInvalid as u16]
    );
    assert_eq!(apply(&mut ledger, 103 * S, vec![]), Vec::<u16>::new());
    assert_eq!(ledger.payment_state(1), None);
    assert_eq!(
        ledger.payment_state(3),
        Some(PaymentState::Reserved),
        "unfinished never expire"
    );
}

#[test]
fn idempotency_keys_replay_mismatch_and_expire() {
    let mut ledger = Ledger::new(Limits::default());
    let claim = |key: &str, fingerprint: u128| ClaimInput {
        key: key.into(),
        fingerprint,
        payment_id: 7,
    };
    let claims = vec![
        claim("k1", 1),
        claim("k1", 1),
        claim("k1", 2),
        claim("", 1),
        claim(&"x".repeat(256), 1),
    ];
    let codes = ledger
        .apply(
            S,
            &Command::ClaimKeys {
                retention_ns: 10 * S,
                claims,
            },
        )
        .unwrap();
    use ClaimResult as C;
    let expected = [
        C::New,
        C::Replay,
        C::PayloadMismatch,
        C::KeyInvalid,
        C::KeyInvalid,
    ];
    assert_eq!(codes, expected.map(|c| c as u16));
    let entries = vec![
        ("k1".to_string(), 5),
        ("k1".into(), 5),
        ("k1".into(), 6),
        ("k2".into(), 5),
        ("k1".into(), 0),
    ];
    let codes = ledger
        .apply(2 * S, &Command::SetOutcomes { entries })
        .unwrap();
    use EntryResult as E;
    let expected = [
        E::Ok,
        E::Exists,
        E::ExistsWithDifferentValue,
        E::NotFound,
        E::ValueInvalid,
    ];
    assert_eq!(codes, expected.map(|c| c as u16));
    assert_eq!(ledger.idempotency_entry("k1").unwrap().outcome, 5);
    let claims = vec![claim("k1", 2)];
    let codes = ledger
        .apply(
            12 * S,
            &Command::ClaimKeys {
                retention_ns: 10 * S,
                claims,
            },
        )
        .unwrap();
    assert_eq!(codes, vec![C::New as u16], "an expired key is free again");
}

#[test]
fn decisions_are_recorded_once_and_forgotten() {
    let mut ledger = Ledger::new(Limits::default());
    let entries = vec![
        ("g1".to_string(), 1),
        ("g1".into(), 1),
        ("g1".into(), 2),
        ("g2".into(), 3),
        ("".into(), 1),
    ];
    let codes = ledger
        .apply(1, &Command::RecordDecisions { entries })
        .unwrap();
    use EntryResult as E;
    assert_eq!(
        codes,
        [
            E::Ok,
            E::Exists,
            E::ExistsWithDifferentValue,
            E::ValueInvalid,
            E::KeyInvalid
        ]
        .map(|c| c as u16)
    );
    assert_eq!(ledger.decisions(), vec![("g1".to_string(), 1)]);
    let codes = ledger
        .apply(
            2,
            &Command::ForgetDecisions {
                gtids: vec!["g1".into(), "g1".into()],
            },
        )
        .unwrap();
    assert_eq!(codes, vec![E::Ok as u16, E::NotFound as u16]);
}

#[test]
fn bounds_refuse_the_whole_batch() {
    let limits = Limits {
        accounts_max: 2,
        transfers_max: 1,
        ..Limits::default()
    };
    let mut ledger = Ledger::new(limits);
    let accounts = vec![account(1, EUR, 0), account(2, EUR, 0), account(3, EUR, 0)];
    let err = ledger
        .apply(0, &Command::CreateAccounts { accounts })
        .unwrap_err();
    assert_eq!(
        err,
        LedgerError::CapacityExceeded {
            table: "accounts",
            max: 2
        }
    );
    assert_eq!(
        ledger.counts(),
        (0, 0),
        "nothing of a refused batch is applied"
    );
    let too_many = vec![account(1, EUR, 0); BATCH_MAX + 1];
    let err = ledger
        .apply(0, &Command::CreateAccounts { accounts: too_many })
        .unwrap_err();
    assert_eq!(
        err,
        LedgerError::BatchTooLarge {
            len: BATCH_MAX + 1,
            max: BATCH_MAX
        }
    );
}

// ---- The model ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    Plain {
        id: u8,
        dr: u8,
        cr: u8,
        amount: i64,
    },
    Pending {
        id: u8,
        dr: u8,
        cr: u8,
        amount: i64,
        timeout_s: u32,
    },
    Post {
        id: u8,
        pending: u8,
        amount: i64,
    },
    Void {
        id: u8,
        pending: u8,
    },
}

/// Accounts 0..4 exist (0 is prepaid EUR, 3 is USD); 4 does not.
const MODEL_CURRENCY: [u16; 5] = [EUR, EUR, EUR, USD, EUR];

fn op_strategy() -> impl Strategy<Value = Op> {
    let id = 1u8..30;
    let acct = 0u8..5;
    prop_oneof![
        (id.clone(), acct.clone(), acct.clone(), 1i64..60)
            .prop_map(|(id, dr, cr, amount)| Op::Plain { id, dr, cr, amount }),
        (id.clone(), acct.clone(), acct, 1i64..60, 0u32..3).prop_map(
            |(id, dr, cr, amount, timeout_s)| Op::Pending {
                id,
                dr,
                cr,
                amount,
                timeout_s
            }
        ),
        (id.clone(), 1u8..30, 0i64..70).prop_map(|(id, pending, amount)| Op::Post {
            id,
            pending,
            amount
        }),
        (id, 1u8..30).prop_map(|(id, pending)| Op::Void { id, pending }),
    ]
}

fn to_input(op: Op) -> TransferInput {
    let acct = |a: u8| u128::from(a) + 1;
    match op {
        Op::Plain { id, dr, cr, amount } => TransferInput {
            currency: MODEL_CURRENCY[dr as usize],
            ..transfer(id.into(), acct(dr), acct(cr), amount)
        },
        Op::Pending {
            id,
            dr,
            cr,
            amount,
            timeout_s,
        } => TransferInput {
            currency: MODEL_CURRENCY[dr as usize],
            flags: transfer_flags::PENDING,
            timeout_s,
            ..transfer(id.into(), acct(dr), acct(cr), amount)
        },
        Op::Post {
            id,
            pending,
            amount,
        } => post(id.into(), pending.into(), amount),
        Op::Void { id, pending } => void(id.into(), pending.into()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MStatus {
    Plain,
    Pending(u64),
    Posted,
    Voided,
    Expired,
    Resolver,
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// id -> (input, dr, cr, amount, status)
    transfers: HashMap<u128, (TransferInput, usize, usize, i64, MStatus)>,
    /// per account: debits pending, posted, credits pending, posted
    balances: [[i64; 4]; 4],
}

impl Model {
    fn expire(&mut self, now: u64) {
        for (_, (_, dr, cr, amount, status)) in self.transfers.iter_mut() {
            if let MStatus::Pending(at) = *status {
                if at != 0 && at <= now {
                    *status = MStatus::Expired;
                    self.balances[*dr][0] -= *amount;
                    self.balances[*cr][2] -= *amount;
                }
            }
        }
    }

    fn apply(&mut self, now: u64, op: Op) -> TransferResult {
        use TransferResult as R;
        let input = to_input(op);
        let mut unlinked = input;
        unlinked.flags &= !transfer_flags::LINKED;
        let exists = |m: &Model| {
            m.transfers.get(&input.id).map(|(old, ..)| {
                let mut old = *old;
                old.flags &= !transfer_flags::LINKED;
                if old == unlinked {
                    R::Exists
                } else {
                    R::ExistsWithDifferentFields
                }
            })
        };
        match op {
            Op::Plain { dr, cr, amount, .. } | Op::Pending { dr, cr, amount, .. } => {
                if dr == cr {
                    return R::AccountsMustBeDifferent;
                }
                if let Some(code) = exists(self) {
                    return code;
                }
                let (dr, cr) = (dr as usize, cr as usize);
                if dr == 4 {
                    return R::DebitAccountNotFound;
                }
                if cr == 4 {
                    return R::CreditAccountNotFound;
                }
                if MODEL_CURRENCY[dr] != MODEL_CURRENCY[cr] {
                    return R::CurrencyMismatch;
                }
                let b = self.balances[dr];
                if dr == 0 && b[0] + b[1] + amount > b[3] {
                    return R::ExceedsCredits;
                }
                let status = match op {
                    Op::Pending { timeout_s, .. } => {
                        self.balances[dr][0] += amount;
                        self.balances[cr][2] += amount;
                        MStatus::Pending(if timeout_s == 0 {
                            0
                        } else {
                            now + u64::from(timeout_s) * S
                        })
                    }
                    _ => {
                        self.balances[dr][1] += amount;
                        self.balances[cr][3] += amount;
                        MStatus::Plain
                    }
                };
                self.transfers
                    .insert(input.id, (input, dr, cr, amount, status));
                R::Ok
            }
            Op::Post { id, pending, .. } | Op::Void { id, pending } => {
                if id == pending {
                    return R::PendingIdMustBeDifferent;
                }
                if let Some(code) = exists(self) {
                    return code;
                }
                let Some(&(_, dr, cr, held, status)) = self.transfers.get(&u128::from(pending))
                else {
                    return R::PendingTransferNotFound;
                };
                let posting = matches!(op, Op::Post { .. });
                let amount = if let Op::Post { amount, .. } = op {
                    amount
                } else {
                    0
                };
                if !matches!(
                    status,
                    MStatus::Pending(_) | MStatus::Posted | MStatus::Voided | MStatus::Expired
                ) {
                    return R::PendingTransferNotPending;
                }
                if posting && amount > held {
                    return R::ExceedsPendingTransferAmount;
                }
                match status {
                    MStatus::Posted => return R::PendingTransferAlreadyPosted,
                    MStatus::Voided => return R::PendingTransferAlreadyVoided,
                    MStatus::Expired => return R::PendingTransferExpired,
                    _ => {}
                }
                let posted = if !posting {
                    0
                } else if amount == 0 {
                    held
                } else {
                    amount
                };
                self.balances[dr][0] -= held;
                self.balances[cr][2] -= held;
                self.balances[dr][1] += posted;
                self.balances[cr][3] += posted;
                let new = if posting {
                    MStatus::Posted
                } else {
                    MStatus::Voided
                };
                self.transfers.get_mut(&u128::from(pending)).unwrap().4 = new;
                self.transfers
                    .insert(input.id, (input, dr, cr, posted, MStatus::Resolver));
                R::Ok
            }
        }
    }
}

fn model_ledger() -> Ledger {
    let mut ledger = Ledger::new(Limits::default());
    let accounts = (0..4u8)
        .map(|a| {
            let flags = if a == 0 {
                account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS
            } else {
                0
            };
            account(u128::from(a) + 1, MODEL_CURRENCY[a as usize], flags)
        })
        .collect();
    ledger
        .apply(0, &Command::CreateAccounts { accounts })
        .unwrap();
    ledger
}

/// Balances recomputed from the ledger's own transfers, to compare with the accounts'.
fn balances_from_transfers(
    ledger: &Ledger,
    ids: impl Iterator<Item = u128>,
) -> HashMap<u128, [i64; 4]> {
    let mut out: HashMap<u128, [i64; 4]> = HashMap::new();
    for id in ids {
        let Some(t) = ledger.transfer(id) else {
            continue;
        };
        let flags = t.input.flags;
        let (d, c) = (t.debit_account_id, t.credit_account_id);
        if flags & transfer_flags::PENDING != 0 {
            if ledger.pending_status(id) == Some(PendingStatus::Pending) {
                out.entry(d).or_default()[0] += t.amount_minor;
                out.entry(c).or_default()[2] += t.amount_minor;
            }
        } else if flags & transfer_flags::VOID_PENDING == 0 {
            out.entry(d).or_default()[1] += t.amount_minor;
            out.entry(c).or_default()[3] += t.amount_minor;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ledger_matches_the_model_and_stays_balanced(
        batches in prop::collection::vec(
            (prop::collection::vec(op_strategy(), 1..5), any::<bool>(), 0u64..2 * S),
            1..40,
        )
    ) {
        let mut ledger = model_ledger();
        let mut model = Model::default();
        let mut now = S;
        for (ops, linked, step) in batches {
            now += step;
            model.expire(now);
            let mut inputs: Vec<TransferInput> = ops.iter().map(|&op| to_input(op)).collect();
            let n = inputs.len();
            if linked {
                inputs.iter_mut().take(n - 1).for_each(|t| t.flags |= transfer_flags::LINKED);
            }
            let mut expected = Vec::with_capacity(n);
            if linked {
                let mut trial = model.clone();
                let codes: Vec<_> = ops.iter().map(|&op| trial.apply(now, op)).collect();
                match codes.iter().position(|c| *c != TransferResult::Ok) {
                    None => { model = trial; expected = codes; }
                    Some(bad) => {
                        expected = vec![TransferResult::LinkedEventFailed; n];
                        expected[bad] = codes[bad];
                    }
                }
                // Linked inputs are stored with the flag; the model must know it too.
                if expected.iter().all(|c| *c == TransferResult::Ok) {
                    for t in &inputs {
                        model.transfers.get_mut(&t.id).unwrap().0 = *t;
                    }
                }
            } else {
                for &op in &ops {
                    expected.push(model.apply(now, op));
                }
            }
            let got = run(&mut ledger, now, inputs);
            prop_assert_eq!(&got, &expected);
            prop_assert!(ledger.check_balanced().is_ok());
            let recomputed = balances_from_transfers(&ledger, 1..30);
            for a in 0..4u8 {
                let id = u128::from(a) + 1;
                let (dp, dpo, cp, cpo) = balances(&ledger, id);
                prop_assert_eq!([dp, dpo, cp, cpo], model.balances[a as usize]);
                prop_assert_eq!([dp, dpo, cp, cpo], recomputed.get(&id).copied().unwrap_or_default());
            }
        }
        // A snapshot image restores the same ledger.
        let image = ledger.image();
        let restored = Ledger::from_image(Limits::default(), LedgerImage::decode(&image.encode()).unwrap());
        prop_assert_eq!(restored.image(), image);
    }
}

#[test]
fn the_record_layout_is_borsh_of_the_entry() {
    // durable.rs writes now_ns, command and results one after the other instead of
    // encoding an Entry; this pins that the two are the same bytes.
    let command = Command::CreateTransfers {
        transfers: vec![transfer(1, 2, 3, 4)],
    };
    let entry = Entry {
        now_ns: 77,
        command: command.clone(),
        results: vec![0, 19],
    };
    let mut bytes = 77u64.to_le_bytes().to_vec();
    borsh::to_writer(&mut bytes, &command).unwrap();
    borsh::to_writer(&mut bytes, &vec![0u16, 19]).unwrap();
    assert_eq!(bytes, borsh::to_vec(&entry).unwrap());
}

#[test]
fn after_an_fsync_error_the_durable_ledger_refuses_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = DurableLedger::open(dir.path(), DurableConfig::default()).unwrap();
    let accounts = vec![account(1, EUR, 0), account(2, EUR, 0)];
    ledger
        .execute(1, Command::CreateAccounts { accounts })
        .unwrap();
    crate::wal::failpoint::arm();
    let transfers = vec![transfer(10, 1, 2, 5)];
    let err = ledger
        .execute(2, Command::CreateTransfers { transfers })
        .unwrap_err();
    let poisoned = matches!(&err, DurableError::Wal(crate::wal::WalError::Poisoned { cause }) if cause.contains("os error 5"));
    assert!(poisoned, "{err}");
    // Memory holds transfer 10, the disk may not: nobody may see or build on it.
    assert!(ledger.read(|l| l.transfer(10).is_some()).is_err());
    let transfers = vec![transfer(11, 1, 2, 5)];
    assert!(ledger
        .execute(3, Command::CreateTransfers { transfers })
        .is_err());
    drop(ledger);
    // A restart recovers from what is really on disk.
    let (ledger, report) = DurableLedger::open(dir.path(), DurableConfig::default()).unwrap();
    assert_eq!(
        report.records_replayed, 2,
        "the record was written, only its sync failed"
    );
    ledger.read(|l| l.check_balanced()).unwrap().unwrap();
}

fn payment_states(retention_ns: u64, entries: Vec<(u128, u8)>) -> Command {
    Command::PaymentStates {
        retention_ns,
        entries,
    }
}

fn sweep(ledger: &mut Ledger, now_ns: u64, retention_ns: u64) {
    ledger
        .apply(now_ns, &payment_states(retention_ns, Vec::new()))
        .unwrap();
}

fn hold(id: u128, dr: u128, cr: u128, amount: i64) -> TransferInput {
    TransferInput {
        flags: transfer_flags::PENDING,
        ..transfer(id, dr, cr, amount)
    }
}

#[test]
fn transfers_older_than_the_window_are_forgotten_unless_something_may_still_need_them() {
    let mut ledger = ledger_with_accounts();
    let of_payment = |t: TransferInput, payment: u128| TransferInput {
        payment_id: payment,
        ..t
    };
    let codes = run(
        &mut ledger,
        S,
        vec![
            transfer(10, 2, 3, 5), // plain (a refund): kept for good
            hold(11, 2, 3, 7),     // still pending: kept until it ends
            hold(12, 2, 3, 9),     // voided at once: forgotten
            void(13, 12),
            of_payment(hold(20, 2, 3, 4), 7), // payment 7's hold and post, while
            of_payment(post(21, 20, 4), 7),   // payment 7 is not finished: kept
        ],
    );
    assert_eq!(codes, vec![TransferResult::Ok; 6]);
    let states = |ledger: &mut Ledger, now: u64, entries: Vec<(u128, u8)>| {
        ledger
            .apply(now, &payment_states(100 * S, entries))
            .unwrap()
    };
    states(&mut ledger, S, vec![(7, 1), (7, 2)]); // RESERVED, CAPTURED
    let before: Vec<_> = (1..=3).map(|a| balances(&ledger, a)).collect();
    sweep(&mut ledger, 50 * S, 100 * S);
    assert_eq!(ledger.counts().1, 6, "nothing is older than the window yet");

    sweep(&mut ledger, 150 * S, 100 * S);
    for id in [12, 13] {
        assert!(ledger.transfer(id).is_none(), "transfer {id} forgotten");
    }
    for id in [10, 11, 20, 21] {
        assert!(ledger.transfer(id).is_some(), "transfer {id} kept");
    }
    assert!(
        ledger.pending_status(12).is_none(),
        "with its pending state"
    );
    assert_eq!(ledger.pending_status(11), Some(PendingStatus::Pending));
    let after: Vec<_> = (1..=3).map(|a| balances(&ledger, a)).collect();
    assert_eq!(before, after, "balances never change by forgetting");
    ledger.check_balanced().unwrap();
    // A redo of the plain transfer finds it, however late.
    assert_eq!(
        run(&mut ledger, 151 * S, vec![transfer(10, 2, 3, 5)]),
        vec![TransferResult::Exists]
    );

    // The kept hold can still be posted; once ended, and payment 7 finished, they go.
    assert_eq!(
        run(&mut ledger, 151 * S, vec![post(14, 11, 7)]),
        vec![TransferResult::Ok]
    );
    assert_eq!(
        balances(&ledger, 2).1,
        5 + 4 + 7,
        "posted debits of account 2"
    );
    states(&mut ledger, 152 * S, vec![(7, 3)]); // SETTLED
    sweep(&mut ledger, 200 * S, 100 * S);
    for id in [11, 20, 21] {
        assert!(
            ledger.transfer(id).is_none(),
            "transfer {id} forgotten once ended"
        );
    }
    assert!(ledger.pending_status(11).is_none() && ledger.pending_status(20).is_none());
    assert!(
        ledger.transfer(14).is_some(),
        "the post is younger than the window"
    );
    sweep(&mut ledger, 252 * S, 100 * S);
    assert_eq!(ledger.counts().1, 1, "only the plain transfer is left");
    ledger.check_balanced().unwrap();
}

#[test]
fn forgetting_makes_room_under_the_transfer_bound() {
    let limits = Limits {
        transfers_max: 2,
        ..Limits::default()
    };
    let mut ledger = Ledger::new(limits);
    let accounts = vec![account(2, EUR, 0), account(3, EUR, 0)];
    ledger
        .apply(0, &Command::CreateAccounts { accounts })
        .unwrap();
    run(&mut ledger, S, vec![hold(1, 2, 3, 1), void(2, 1)]);
    let more = Command::CreateTransfers {
        transfers: vec![hold(3, 2, 3, 1)],
    };
    assert!(matches!(
        ledger.apply(2 * S, &more),
        Err(LedgerError::CapacityExceeded { .. })
    ));
    sweep(&mut ledger, 20 * S, 10 * S);
    assert_eq!(ledger.apply(21 * S, &more).unwrap(), vec![0]);
}

#[test]
fn a_later_state_of_a_tracked_payment_is_never_refused_for_room() {
    let limits = Limits {
        payments_max: 1,
        ..Limits::default()
    };
    let mut ledger = Ledger::new(limits);
    let states = |entries: Vec<(u128, u8)>| payment_states(100 * S, entries);
    assert_eq!(ledger.apply(S, &states(vec![(7, 1)])).unwrap(), vec![0]);
    // CAPTURED comes after the gateway took the money: it must always be recorded.
    assert_eq!(ledger.apply(S, &states(vec![(7, 2)])).unwrap(), vec![0]);
    assert!(matches!(
        ledger.apply(S, &states(vec![(8, 1)])),
        Err(LedgerError::CapacityExceeded { .. })
    ));
}

#[test]
fn a_restored_ledger_forgets_exactly_what_the_live_one_does() {
    // Enough transfers to cross a chunk, at several times: holds voided at once, holds
    // that end at different times, and plain transfers kept for good. The live ledger
    // and one restored from its image midway keep the same transfers after each sweep,
    // also when the window grows between sweeps.
    let mut live = ledger_with_accounts();
    let mut id = 100u128;
    let mut holds = Vec::new();
    for step in 0..8u64 {
        let mut batch = Vec::new();
        for _ in 0..5_000 {
            id += 1;
            batch.push(hold(id, 2, 3, 1));
            if id % 997 == 0 {
                holds.push(id);
            } else if id % 101 == 0 {
                batch.push(transfer(id + (1 << 90), 2, 3, 1));
            } else {
                batch.push(void(id + (1 << 100), id));
            }
        }
        for chunk in batch.chunks(BATCH_MAX) {
            run(&mut live, (step + 1) * 10 * S, chunk.to_vec());
        }
    }
    let mut restored = Ledger::from_image(Limits::default(), live.image());
    for (round, (now, window)) in [(45u64, 30u64), (70, 30), (95, 60), (140, 30)]
        .into_iter()
        .enumerate()
    {
        // Some holds end between sweeps, the same ones in both ledgers.
        let ending: Vec<TransferInput> = holds
            .iter()
            .skip(round)
            .step_by(5)
            .map(|&h| post(h + (1 << 110), h, 1))
            .collect();
        for ledger in [&mut live, &mut restored] {
            run(ledger, now * S, ending.clone());
            sweep(ledger, now * S + 1, window * S);
        }
        assert_eq!(live.image(), restored.image(), "after the sweep at {now} s");
        live.check_balanced().unwrap();
        if round == 1 {
            restored = Ledger::from_image(Limits::default(), restored.image());
        }
    }
    assert!(live.counts().1 < 40_000, "the sweeps forgot something");
    let pending_left = holds
        .iter()
        .filter(|&&h| live.pending_status(h) == Some(PendingStatus::Pending))
        .count();
    assert!(pending_left > 0, "some holds are still pending and kept");
    for &h in &holds {
        if live.pending_status(h) == Some(PendingStatus::Pending) {
            assert!(
                live.transfer(h).is_some(),
                "a pending hold is never forgotten"
            );
        }
    }
}

fn anchor(seq: u64, byte: u8) -> Command {
    Command::AnchorAudit {
        seq,
        hash: [byte; 32],
    }
}

#[test]
fn the_audit_anchor_keeps_the_furthest_head() {
    let mut ledger = Ledger::new(Limits::default());
    assert_eq!(ledger.audit_anchor(), AuditAnchor::default());
    let code = |ledger: &mut Ledger, command: Command| ledger.apply(1, &command).unwrap();
    assert_eq!(
        code(&mut ledger, anchor(0, 1)),
        vec![AnchorResult::SeqMustNotBeZero as u16]
    );
    assert_eq!(
        code(&mut ledger, anchor(5, 1)),
        vec![AnchorResult::Ok as u16]
    );
    assert_eq!(
        code(&mut ledger, anchor(5, 1)),
        vec![AnchorResult::Exists as u16]
    );
    assert_eq!(
        code(&mut ledger, anchor(5, 2)),
        vec![AnchorResult::ExistsWithDifferentHash as u16]
    );
    // Commits anchor from several threads: an older head arriving late changes nothing.
    assert_eq!(
        code(&mut ledger, anchor(9, 3)),
        vec![AnchorResult::Ok as u16]
    );
    assert_eq!(
        code(&mut ledger, anchor(7, 4)),
        vec![AnchorResult::Behind as u16]
    );
    assert_eq!(
        ledger.audit_anchor(),
        AuditAnchor {
            seq: 9,
            hash: [3; 32]
        }
    );
}

#[test]
fn the_audit_anchor_survives_replay_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = DurableLedger::open(dir.path(), DurableConfig::default()).unwrap();
    ledger.execute(1, anchor(3, 7)).unwrap();
    drop(ledger);
    let (ledger, report) = DurableLedger::open(dir.path(), DurableConfig::default()).unwrap();
    assert_eq!(report.records_replayed, 1);
    let held = ledger.read(|l| l.audit_anchor()).unwrap();
    assert_eq!(
        held,
        AuditAnchor {
            seq: 3,
            hash: [7; 32]
        }
    );
    // The snapshot removes the record; the anchor must live on in the snapshot.
    ledger.execute(2, anchor(4, 8)).unwrap();
    ledger.snapshot().unwrap();
    drop(ledger);
    let (ledger, report) = DurableLedger::open(dir.path(), DurableConfig::default()).unwrap();
    assert_eq!(report.records_replayed, 0);
    let held = ledger.read(|l| l.audit_anchor()).unwrap();
    assert_eq!(
        held,
        AuditAnchor {
            seq: 4,
            hash: [8; 32]
        }
    );
}

#[test]
fn a_snapshot_body_from_before_audit_anchors_still_loads() {
    let mut ledger = Ledger::new(Limits::default());
    let accounts = vec![account(1, EUR, 0), account(2, EUR, 0)];
    ledger
        .apply(1, &Command::CreateAccounts { accounts })
        .unwrap();
    let image = ledger.image();
    // What earlier builds wrote: the derived encoding, with no anchor after it.
    let old_body = borsh::to_vec(&image).unwrap();
    let loaded = LedgerImage::decode(&old_body).unwrap();
    assert_eq!(loaded.audit_anchor, AuditAnchor::default());
    assert_eq!(loaded, image);
    // Trailing bytes that are not a whole anchor are refused, not ignored.
    let mut torn = image.encode();
    torn.pop();
    assert!(LedgerImage::decode(&torn).is_err());
}

#[test]
fn the_anchor_record_layout_is_pinned() {
    // Log records outlive builds: variant 7, then seq and hash.
    let bytes = borsh::to_vec(&anchor(2, 0xAB)).unwrap();
    let mut expected = vec![7u8];
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(&[0xAB; 32]);
    assert_eq!(bytes, expected);
}
