//! Cells of fixed-width text columns (numpy `S<n>`): a value is the bytes before its
//! first NUL, numpy's padding.

/// The index of the first NUL byte of `cell`, or its length when it has none.
///
/// Eight bytes per step rather than one: the batch reads twelve text cells per
/// payment, and a byte-at-a-time search was a tenth of the whole validation. A word
/// has a zero byte where `(w - 0x01..01) & !w & 0x80..80` has a bit; the lowest such
/// bit is always a true zero (a borrow only propagates upward, past it), so on the
/// little-endian words built here its position is the first NUL's.
#[inline]
pub fn first_nul(cell: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_at = |word: [u8; 8]| {
        let word = u64::from_le_bytes(word);
        let found = word.wrapping_sub(ONES) & !word & HIGHS;
        (found != 0).then(|| found.trailing_zeros() as usize / 8)
    };
    let len = cell.len();
    if len < 8 {
        return cell.iter().position(|&b| b == 0).unwrap_or(len);
    }
    let mut chunks = cell.chunks_exact(8);
    for (k, chunk) in chunks.by_ref().enumerate() {
        if let Some(at) = zero_at(chunk.try_into().expect("an 8-byte chunk")) {
            return k * 8 + at;
        }
    }
    if chunks.remainder().is_empty() {
        return len;
    }
    // The tail: the last eight bytes, overlapping bytes already found non-zero, so
    // a zero in this word is past them.
    let last: [u8; 8] = cell[len - 8..].try_into().expect("eight bytes");
    zero_at(last).map_or(len, |at| len - 8 + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn agrees_with_a_byte_search(cell in proptest::collection::vec(proptest::prop_oneof![Just(0u8), 1u8..=255], 0..80)) {
            let expected = cell.iter().position(|&b| b == 0).unwrap_or(cell.len());
            proptest::prop_assert_eq!(first_nul(&cell), expected);
        }
    }

    use proptest::strategy::Just;

    #[test]
    fn every_position_of_every_width() {
        for width in 0..40 {
            let full = vec![b'x'; width];
            assert_eq!(first_nul(&full), width);
            for at in 0..width {
                let mut cell = full.clone();
                cell[at] = 0;
                assert_eq!(first_nul(&cell), at, "width {width}, NUL at {at}");
                // 0x80 and 0x01 bytes around the NUL must not fool the word test.
                cell.iter_mut().take(at).for_each(|b| *b = 0x80);
                cell.iter_mut().skip(at + 1).for_each(|b| *b = 0x01);
                assert_eq!(
                    first_nul(&cell),
                    at,
                    "width {width}, NUL at {at}, high bytes"
                );
            }
        }
    }
}
