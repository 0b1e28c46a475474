//! Payment ids ("pay_" and 32 hex digits, time-ordered; see
//! `quickpay_engine/settlement/payment_ids.py`, which keeps the clock, the random source
//! and the last id made): the draws sorted and formatted here, a batch in one call.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Random bits of an id below its 48 bits of milliseconds.
const RANDOM_BITS: u32 = 80;
const RANDOM_BYTES: usize = (RANDOM_BITS / 8) as usize;
/// The random bits kept when an id has to be moved above the last one made.
const STEP_BITS: u32 = 40;

/// The ids of one call: the 80-bit draws in `raw` (10 bytes each, big-endian) sorted,
/// each under `clock_ms`, and any that would not be above the id before it (starting
/// from `last`) moved to that id plus 1 plus its top 40 bits. Returns the ids and the
/// new last id's number.
#[pyfunction]
fn make_payment_ids(clock_ms: u64, raw: &[u8], last: u128) -> PyResult<(Vec<String>, u128)> {
    if raw.len() % RANDOM_BYTES != 0 {
        return Err(PyValueError::new_err(format!(
            "raw: {} bytes, not a whole number of {RANDOM_BYTES}-byte draws",
            raw.len()
        )));
    }
    if clock_ms >> 48 != 0 {
        return Err(PyValueError::new_err(
            "clock_ms: past the 48 bits an id keeps",
        ));
    }
    let mut draws: Vec<u128> = raw
        .chunks_exact(RANDOM_BYTES)
        .map(|draw| draw.iter().fold(0u128, |n, &b| n << 8 | u128::from(b)))
        .collect();
    draws.sort_unstable();
    let base = u128::from(clock_ms) << RANDOM_BITS;
    let mut last = last;
    let mut ids = Vec::with_capacity(draws.len());
    for draw in draws {
        let mut number = base | draw;
        if number <= last {
            number = last
                .checked_add(1 + (draw >> (RANDOM_BITS - STEP_BITS)))
                .ok_or_else(|| PyValueError::new_err("payment ids exhausted"))?;
        }
        ids.push(format!("pay_{number:032x}"));
        last = number;
    }
    Ok((ids, last))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(make_payment_ids, m)?)?;
    Ok(())
}
