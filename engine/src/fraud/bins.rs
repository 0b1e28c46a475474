//! The card BIN table: issuer country by the first 6 to 8 digits of a card number.
//!
//! File format, one entry a line: `BIN,CC` (for example `457173,GB`), `#` comments and
//! blank lines ignored. The longest matching prefix wins.

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

use super::FraudError;

/// At most this many entries (the public BIN ranges number in the hundreds of
/// thousands). At the bound: loading fails with the line number.
pub const BINS_MAX: usize = 1_000_000;

/// BIN prefixes (6, 7 or 8 digits) to ISO 3166 alpha-2 country.
#[derive(Clone, Debug, Default)]
pub struct BinTable {
    /// Keyed by (digits, prefix value) so that 457173 and 04571730 never collide.
    /// FxHash: one to three lookups run per card payment, and the keys are the
    /// operator's file, not a caller's choice (a lookup inserts nothing).
    countries: HashMap<(u8, u32), [u8; 2], FxBuildHasher>,
}

fn parse_bin(bin: &str) -> Option<(u8, u32)> {
    if !(6..=8).contains(&bin.len()) || !bin.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((bin.len() as u8, bin.parse().ok()?))
}

impl BinTable {
    /// Parses a BIN file; a bad line fails the whole load with its number.
    pub fn parse(text: &str) -> Result<BinTable, FraudError> {
        let mut table = BinTable::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| FraudError::Bins(format!("line {line_no}: {why}: {line:?}"));
            let (bin, country) = line.split_once(',').ok_or_else(|| bad("expected BIN,CC"))?;
            let key = parse_bin(bin.trim()).ok_or_else(|| bad("BIN must be 6 to 8 digits"))?;
            let cc = match country.trim().as_bytes() {
                &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [a, b],
                _ => return Err(bad("country must be ISO 3166 alpha-2, uppercase")),
            };
            if table.countries.len() >= BINS_MAX {
                return Err(bad(&format!("over the bound of {BINS_MAX} entries")));
            }
            table.countries.insert(key, cc);
        }
        Ok(table)
    }

    /// The issuer country of a card whose number starts with `bin` (6 to 8 digits;
    /// longer input is cut to 8), by longest prefix.
    pub fn country(&self, bin: &str) -> Option<[u8; 2]> {
        let bytes = &bin.as_bytes()[..bin.len().min(8)];
        // The prefix values of 6, 7 and 8 digits in one pass; a prefix with a
        // non-digit has no value (no entry can match it).
        let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut values = [0u32; 9];
        let mut value = 0u32;
        for (i, &b) in bytes[..digits].iter().enumerate() {
            value = value * 10 + u32::from(b - b'0');
            values[i + 1] = value;
        }
        (6..=digits)
            .rev()
            .find_map(|len| self.countries.get(&(len as u8, values[len])).copied())
    }

    pub fn len(&self) -> usize {
        self.countries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.countries.is_empty()
    }
}
