//! Crash tests: a child process appends under load (four threads sharing group
//! commits, snapshots now and then) and is killed with SIGKILL at random moments.
//! After each kill the ledger is recovered and checked: every acknowledged batch is
//! there, every batch is all there or not at all, and the books balance.
//!
//! The child is this same test binary, re-run with `QUICKPAY_CRASH_CHILD` set, so no
//! extra build target is needed. 50 kills by default; `QUICKPAY_FULL=1` runs 500.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quickpay_engine::ledger::{
    AccountInput, AccountKind, Command, DurableConfig, DurableLedger, Limits, TransferInput,
};
use quickpay_engine::wal::WalConfig;

const EUR: u16 = 978;
const CHILD_ENV: &str = "QUICKPAY_CRASH_CHILD";
/// Transfer ids of one batch are `batch_id * BATCH_STRIDE + 1 ..`.
const BATCH_STRIDE: u128 = 1 << 16;

fn config() -> DurableConfig {
    DurableConfig {
        wal: WalConfig {
            segment_bytes_max: 64 << 10,
        },
        limits: Limits::default(),
    }
}

fn batch(batch_id: u128, n: u128) -> Command {
    let transfers = (1..=n)
        .map(|j| TransferInput {
            id: batch_id * BATCH_STRIDE + j,
            debit_account_id: 1,
            credit_account_id: 2,
            amount_minor: 1,
            currency: EUR,
            ..TransferInput::default()
        })
        .collect();
    Command::CreateTransfers { transfers }
}

/// The child: append until killed, printing "try" before and "ack" after each batch.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("QUICKPAY_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let (ledger, _) = DurableLedger::open(Path::new(&dir), config()).unwrap();
    let account = |id| AccountInput {
        id,
        currency: EUR,
        kind: AccountKind::SettlementCash as u16,
        flags: 0,
    };
    ledger
        .execute(
            1,
            Command::CreateAccounts {
                accounts: vec![account(1), account(2)],
            },
        )
        .unwrap();
    let ledger = Arc::new(ledger);
    let next = Arc::new(AtomicU64::new(seed * 1_000_000));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (ledger, next) = (ledger.clone(), next.clone());
            std::thread::spawn(move || loop {
                let batch_id = u128::from(next.fetch_add(1, Ordering::Relaxed));
                let n = 1 + (batch_id % 61);
                println!("try {batch_id} {n}");
                let (codes, seq) = ledger.execute(2, batch(batch_id, n)).unwrap();
                assert!(codes.iter().all(|&c| c == 0));
                println!("ack {batch_id} {n} {seq}");
                std::io::stdout().flush().unwrap();
                if t == 0 && batch_id % 97 == 0 {
                    ledger.snapshot().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn acknowledged_batches_survive_sigkill_at_random_moments() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills = if std::env::var("QUICKPAY_FULL").is_ok() {
        500
    } else {
        50
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut acked_total = 0usize;
    let mut torn_tails = 0;
    for round in 0..kills {
        let mut child = Process::new(&exe)
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("QUICKPAY_CRASH_SEED", (round + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(5 + xorshift(&mut rng) % 120));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        let mut tried: HashMap<u128, u128> = HashMap::new();
        let mut acked: Vec<(u128, u128, u64)> = Vec::new();
        for line in &lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["try", id, n] => {
                    tried.insert(id.parse().unwrap(), n.parse().unwrap());
                }
                ["ack", id, n, seq] => acked.push((
                    id.parse().unwrap(),
                    n.parse().unwrap(),
                    seq.parse().unwrap(),
                )),
                _ => {} // a line cut by the kill, or the test harness's own output
            }
        }
        let (ledger, report) = DurableLedger::open(dir.path(), config())
            .unwrap_or_else(|err| panic!("round {round}: recovery refused: {err}"));
        torn_tails += usize::from(report.torn_tail().is_some());
        ledger
            .read(|l| {
                l.check_balanced()
                    .unwrap_or_else(|c| panic!("round {round}: currency {c} unbalanced"));
                for (batch_id, n, seq) in &acked {
                    assert!(
                        *seq <= ledger.last_seq(),
                        "round {round}: acknowledged seq {seq} lost"
                    );
                    for j in 1..=*n {
                        assert!(
                            l.transfer(batch_id * BATCH_STRIDE + j).is_some(),
                            "round {round}: acknowledged transfer {batch_id}/{j} lost"
                        );
                    }
                }
                for (batch_id, n) in &tried {
                    let present = (1..=*n)
                        .filter(|j| l.transfer(batch_id * BATCH_STRIDE + j).is_some())
                        .count();
                    assert!(
                        present == 0 || present as u128 == *n,
                        "round {round}: batch {batch_id} is partly visible ({present} of {n})"
                    );
                }
                // Each transfer moved 1 from account 1 to 2: balances equal the transfer count.
                let (_, transfers) = l.counts();
                let debits = l.account(1).map_or(0, |a| a.balances.debits_posted);
                assert_eq!(debits as usize, transfers, "round {round}");
            })
            .unwrap();
        acked_total += acked.len();
    }
    assert!(
        acked_total > kills,
        "the child made progress between kills ({acked_total} acks)"
    );
    eprintln!("{kills} kills, {acked_total} acknowledged batches, {torn_tails} torn tails");
}
