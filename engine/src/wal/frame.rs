//! The frame of one log record: length, sequence number, checksum, and the checksum
//! of the record before it.
//!
//! Layout, little endian, 24 bytes of header then the payload:
//!
//! ```text
//! 0  checksum      u32  CRC32C of bytes 4.. of the header and the whole payload
//! 4  size          u32  payload bytes
//! 8  seq           u64  1 for the first record ever, then +1, across segments
//! 16 prev_checksum u32  checksum of record seq-1 (0 before the first record)
//! 20 reserved      u32  zero
//! 24 payload
//! ```
//!
//! The chain (`prev_checksum`) catches a record that is valid on its own but comes
//! from another log or out of order, which a per-record checksum cannot.

/// Header bytes before the payload.
pub const HEADER_BYTES: usize = 24;

/// The largest payload of one record. A full batch of 8,190 transfers encodes to about
/// 1 MiB, of idempotency claims with 255-byte keys to about 2.3 MiB. At the bound: the
/// append is refused (`WalError::RecordTooLarge`) and the decoder treats a larger size
/// field as a broken frame.
pub const RECORD_BYTES_MAX: usize = 4 << 20;

/// A frame that decoded and whose checksum matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub checksum: u32,
    pub seq: u64,
    pub prev_checksum: u32,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Header plus payload bytes.
    pub fn total_bytes(&self) -> usize {
        HEADER_BYTES + self.payload.len()
    }
}

/// Why bytes are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header, or than the size the header claims.
    Short { needed: usize, have: usize },
    /// The size field is over `RECORD_BYTES_MAX` or the reserved field is not zero.
    BadHeader,
    /// The checksum does not match the bytes.
    BadChecksum { stored: u32, computed: u32 },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short { needed, have } => {
                write!(f, "incomplete record: {have} of {needed} bytes")
            }
            FrameError::BadHeader => write!(f, "malformed record header"),
            FrameError::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Appends one framed record to `out`; returns its checksum.
pub fn encode(out: &mut Vec<u8>, seq: u64, prev_checksum: u32, payload: &[u8]) -> u32 {
    assert!(
        payload.len() <= RECORD_BYTES_MAX,
        "callers check the record bound"
    );
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&prev_checksum.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(payload);
    let checksum = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&checksum.to_le_bytes());
    checksum
}

/// Decodes the frame at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < HEADER_BYTES {
        return Err(FrameError::Short {
            needed: HEADER_BYTES,
            have: bytes.len(),
        });
    }
    let size = u32_at(bytes, 4) as usize;
    if size > RECORD_BYTES_MAX || u32_at(bytes, 20) != 0 {
        return Err(FrameError::BadHeader);
    }
    let total = HEADER_BYTES + size;
    if bytes.len() < total {
        return Err(FrameError::Short {
            needed: total,
            have: bytes.len(),
        });
    }
    let stored = u32_at(bytes, 0);
    let computed = crc32c::crc32c(&bytes[4..total]);
    if stored != computed {
        return Err(FrameError::BadChecksum { stored, computed });
    }
    Ok(Frame {
        checksum: stored,
        seq: u64_at(bytes, 8),
        prev_checksum: u32_at(bytes, 16),
        payload: &bytes[HEADER_BYTES..total],
    })
}

/// The sequence number a header claims, without checking anything; for the scan
/// that looks for valid records after a broken one.
pub fn peek_seq(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= HEADER_BYTES).then(|| u64_at(bytes, 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_caught() {
        let mut buf = Vec::new();
        let c1 = encode(&mut buf, 7, 0xdead_beef, b"hello ledger");
        let frame = decode(&buf).unwrap();
        assert_eq!(
            (frame.seq, frame.prev_checksum, frame.checksum),
            (7, 0xdead_beef, c1)
        );
        assert_eq!(frame.payload, b"hello ledger");
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn short_input_is_short_not_a_checksum_error() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 0, &[1; 100]);
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Err(FrameError::Short { .. })),
                "cut {cut}"
            );
        }
    }
}
