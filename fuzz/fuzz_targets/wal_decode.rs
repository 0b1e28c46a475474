//! Arbitrary bytes as a log segment: the frame decoder, the payload decoder and
//! recovery (read-only) must answer with records, a torn tail or a corruption error,
//! never a panic, a hang or an allocation proportional to a length field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quickpay_engine::ledger::{verify, Entry, Limits};
use quickpay_engine::wal::{decode, segment_name};

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    while pos < data.len() {
        match decode(&data[pos..]) {
            Ok(frame) => {
                let _ = borsh::from_slice::<Entry>(frame.payload);
                pos += frame.total_bytes();
            }
            Err(_) => break,
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(segment_name(1)), data).expect("write segment");
    let _ = verify(dir.path(), Limits::default());
});
