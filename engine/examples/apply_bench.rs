//! The ledger's CPU cost alone (no log, no Python): 300 batches of 8,190 plain
//! transfers applied in memory, 2.5 M transfers in all.
//!
//!     cargo run --release -p quickpay-engine --example apply_bench
//!
//! Prints transfers per second and the slowest batch (the table growth pauses show
//! there). Figures in benches/RESULTS.md, section "Ledger write-ahead log".

use std::time::Instant;

use quickpay_engine::ledger::{AccountInput, AccountKind, Command, Ledger, Limits, TransferInput};

const EUR: u16 = 978;
const BATCH: u128 = 8_190;
const BATCHES: u128 = 300;

fn main() {
    let mut ledger = Ledger::new(Limits {
        transfers_max: 1 << 26,
        ..Limits::default()
    });
    let account = |id| AccountInput {
        id,
        currency: EUR,
        kind: AccountKind::SettlementCash as u16,
        flags: 0,
    };
    let accounts = vec![account(1), account(2)];
    ledger
        .apply(1, &Command::CreateAccounts { accounts })
        .expect("within bounds");
    let mut slowest_s = 0f64;
    let start = Instant::now();
    for b in 0..BATCHES {
        let transfers = (0..BATCH)
            .map(|j| TransferInput {
                id: b * BATCH + j + 1,
                debit_account_id: 1,
                credit_account_id: 2,
                amount_minor: 1,
                currency: EUR,
                ..TransferInput::default()
            })
            .collect();
        let command = Command::CreateTransfers { transfers };
        let batch_start = Instant::now();
        let codes = ledger.apply(2, &command).expect("within bounds");
        slowest_s = slowest_s.max(batch_start.elapsed().as_secs_f64());
        assert!(codes.iter().all(|&c| c == 0));
    }
    let rate = (BATCHES * BATCH) as f64 / start.elapsed().as_secs_f64();
    println!(
        "{rate:.0} transfers/s applied, slowest batch {:.1} ms",
        slowest_s * 1e3
    );
}
