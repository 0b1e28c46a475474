//! Arbitrary payloads framed with valid checksums and chain, so that the fuzzer reaches
//! past the CRC: every record's payload decoder and the ledger's replay of whatever
//! command it decodes to must end in state or a corruption error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quickpay_engine::ledger::{recover, Limits};
use quickpay_engine::wal::{encode, segment_name, ScanMode};

fuzz_target!(|data: &[u8]| {
    // Payloads are separated by the byte pair 0xFF 0x00, so one input is a whole log.
    let mut segment = Vec::new();
    let mut prev = 0;
    let mut seq = 1;
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == [0xFF, 0x00])
            .unwrap_or(rest.len());
        prev = encode(&mut segment, seq, prev, &rest[..end]);
        seq += 1;
        rest = &rest[(end + 2).min(rest.len())..];
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(segment_name(1)), &segment).expect("write segment");
    let limits = Limits {
        accounts_max: 1 << 12,
        transfers_max: 1 << 14,
        ..Limits::default()
    };
    if let Ok((ledger, _)) = recover(dir.path(), limits, ScanMode::ReadOnly) {
        // Whatever replay accepted must still balance.
        assert!(
            ledger.check_balanced().is_ok(),
            "replay left the books unbalanced"
        );
    }
});
