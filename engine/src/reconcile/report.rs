//! Reading a gateway settlement report: CSV through a column mapping, strictly.
//!
//! Every field is trimmed; the gateway's words for types and statuses are translated
//! through the mapping's `values`; amounts are whole minor units or, with
//! `AmountUnit::Major`, decimals scaled by the currency's ISO 4217 exponent (never
//! through a float); `captured_at` is RFC 3339 with an offset. The first bad row stops
//! the read with its line number, in the words of the Python reader this replaced
//! (`quickpay_engine.reconcile.report`), since operators and tests match on them.

use std::collections::HashMap;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::money::Currency;

/// The report fields a mapping names, in this order.
pub const FIELDS: [&str; 7] = [
    "gateway_reference",
    "merchant_reference",
    "amount",
    "currency",
    "type",
    "status",
    "captured_at",
];

/// How a gateway writes its amounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmountUnit {
    /// Whole minor units ("1250").
    Minor,
    /// Decimal major units ("12.50").
    Major,
}

/// Which CSV column holds each of `FIELDS`, and the gateway's words for ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Header names, in the order of `FIELDS`.
    pub columns: [String; 7],
    pub amount_unit: AmountUnit,
    /// The gateway's word -> ours ("Settled" -> "CAPTURE").
    pub values: HashMap<String, String>,
}

impl Default for Mapping {
    /// The bundled gateway simulators' export.
    fn default() -> Mapping {
        let mut columns = FIELDS.map(String::from);
        columns[2] = "amount_minor".into();
        Mapping {
            columns,
            amount_unit: AmountUnit::Minor,
            values: HashMap::new(),
        }
    }
}

/// What a row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    Capture,
    Refund,
}

impl RowKind {
    /// The name the Python side and the reports use.
    pub fn name(self) -> &'static str {
        match self {
            RowKind::Capture => "CAPTURE",
            RowKind::Refund => "REFUND",
        }
    }
}

/// Where the gateway says the money stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowStatus {
    Settled,
    Voided,
}

impl RowStatus {
    /// The name the Python side and the reports use.
    pub fn name(self) -> &'static str {
        match self {
            RowStatus::Settled => "SETTLED",
            RowStatus::Voided => "VOIDED",
        }
    }
}

/// One line of a settlement report, in our terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The line the record starts on (1 is the header).
    pub line: u64,
    pub gateway_reference: String,
    pub merchant_reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub kind: RowKind,
    pub status: RowStatus,
    pub captured_at_us: i64,
}

/// A report that cannot be read, and the line where it went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportError {
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ReportError {}

fn fail<T>(line: u64, message: String) -> Result<T, ReportError> {
    Err(ReportError { line, message })
}

/// Parses a whole report; the first bad row is the error.
pub fn read_rows(text: &str, mapping: &Mapping) -> Result<Vec<Row>, ReportError> {
    // Flexible: a row longer than the header is accepted (its extra cells ignored), a
    // shorter one is refused below with the count the header has.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    let mut lines = LineCounter::new(text);
    let mut read = |reader: &mut csv::Reader<&[u8]>, record: &mut csv::StringRecord| {
        let more = reader.read_record(record).map_err(|err| ReportError {
            line: lines.line_at(err.position().map_or(0, |p| p.byte())),
            message: format!("malformed CSV ({err})"),
        })?;
        Ok::<_, ReportError>(more.then(|| lines.line_at(reader.position().byte())))
    };
    if read(&mut reader, &mut record)?.is_none() {
        return fail(1, "empty report, expected a header row".into());
    }
    let header: Vec<&str> = record.iter().collect();
    let mut index = [0usize; 7];
    for (slot, name) in index.iter_mut().zip(&mapping.columns) {
        let Some(at) = header.iter().position(|h| h == name) else {
            let message = format!(
                "header lacks a column the mapping names ({} is not in list)",
                py_repr(name)
            );
            return fail(1, message);
        };
        *slot = at;
    }
    let header_len = header.len();
    let width = index.iter().max().expect("seven fields") + 1;
    let mut rows = Vec::new();
    while let Some(line) = read(&mut reader, &mut record)? {
        if record.len() < width {
            return fail(line, format!("expected {header_len} fields"));
        }
        rows.push(row(&record, &index, mapping, line)?);
    }
    Ok(rows)
}

/// Line numbers as Python's csv module counts them (`line_num`): the physical lines
/// read up to the end of a record, a line ending being "\n", "\r\n" or a lone
/// "\r". The csv crate's own record positions skip the count of blank lines.
struct LineCounter<'a> {
    text: &'a [u8],
    counted_to: usize,
    lines: u64,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> LineCounter<'a> {
        LineCounter {
            text: text.as_bytes(),
            counted_to: 0,
            lines: 0,
        }
    }

    /// The line the byte before `end` is on (`end` never goes backwards).
    fn line_at(&mut self, end: u64) -> u64 {
        let end = (end as usize).min(self.text.len());
        let mut at = self.counted_to;
        while let Some(found) = memchr::memchr2(b'\n', b'\r', &self.text[at..end]) {
            let k = at + found;
            // "\r\n" is one ending, counted at its "\r" (the csv reader may stop
            // between the two).
            if !(self.text[k] == b'\n' && k > 0 && self.text[k - 1] == b'\r') {
                self.lines += 1;
            }
            at = k + 1;
        }
        self.counted_to = end.max(self.counted_to);
        // A last line without an ending is a line too.
        let open = end > 0 && !matches!(self.text[end - 1], b'\n' | b'\r');
        self.lines + u64::from(open)
    }
}

fn row(
    cells: &csv::StringRecord,
    index: &[usize; 7],
    mapping: &Mapping,
    line: u64,
) -> Result<Row, ReportError> {
    let cell = |field: usize| cells[index[field]].trim();
    let kind = match word(&mapping.values, cell(4)) {
        "CAPTURE" => RowKind::Capture,
        "REFUND" => RowKind::Refund,
        _ => {
            let message = format!(
                "type {} is not one of ('CAPTURE', 'REFUND')",
                py_repr(&cells[index[4]])
            );
            return fail(line, message);
        }
    };
    // A gateway that writes its record type in the status column ("Captured") means
    // the money is settled.
    let status = match word(&mapping.values, cell(5)) {
        "SETTLED" | "CAPTURE" | "REFUND" => RowStatus::Settled,
        "VOIDED" => RowStatus::Voided,
        _ => {
            let message = format!(
                "status {} is not one of ('SETTLED', 'VOIDED')",
                py_repr(&cells[index[5]])
            );
            return fail(line, message);
        }
    };
    let currency = cell(3);
    Ok(Row {
        line,
        gateway_reference: cell(0).to_string(),
        merchant_reference: cell(1).to_string(),
        amount_minor: amount(cell(2), currency, mapping.amount_unit, line)?,
        currency: currency.to_string(),
        kind,
        status,
        captured_at_us: captured_at_us(cell(6), line)?,
    })
}

/// Our word for a gateway's (trimmed) word: its translation, else itself.
fn word<'a>(values: &'a HashMap<String, String>, text: &'a str) -> &'a str {
    values.get(text).map_or(text, String::as_str)
}

fn amount(text: &str, currency: &str, unit: AmountUnit, line: u64) -> Result<i64, ReportError> {
    if unit == AmountUnit::Minor {
        return text.parse().or_else(|_| {
            let message = format!(
                "amount {} is not a whole number of minor units",
                py_repr(text)
            );
            fail(line, message)
        });
    }
    let Some(exponent) = Currency::from_code(currency).map(|c| c.exponent()) else {
        return fail(
            line,
            format!("currency {} is not ISO 4217", py_repr(currency)),
        );
    };
    match major_to_minor(text, exponent) {
        Ok(minor) => Ok(minor),
        Err(Decimals::NotANumber) => {
            fail(line, format!("amount {} is not a number", py_repr(text)))
        }
        Err(Decimals::TooMany) => fail(
            line,
            format!("amount {} has more decimals than {currency}", py_repr(text)),
        ),
    }
}

/// Why a decimal text is not an amount in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decimals {
    NotANumber,
    TooMany,
}

/// "12.50" at exponent 2 is 1250; "1.5e1" at 0 is 15; "1.005" at 2 is too many
/// decimals (nothing is rounded); a value outside i64 is not a number we can hold.
pub(super) fn major_to_minor(text: &str, exponent: u8) -> Result<i64, Decimals> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, power) = match rest.find(['e', 'E']) {
        Some(at) => {
            let power: i32 = rest[at + 1..].parse().map_err(|_| Decimals::NotANumber)?;
            (&rest[..at], power)
        }
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_ok(whole) || !digits_ok(fraction) {
        return Err(Decimals::NotANumber);
    }
    // The value is digits x 10^scale, digits being whole and fraction run together.
    let digits = whole.bytes().chain(fraction.bytes());
    let scale = i64::from(power) + i64::from(exponent) - fraction.len() as i64;
    let mut minor: i128 = 0;
    let mut dropped = 0i64;
    let keep = digits.clone().count() as i64 + scale.min(0);
    for (k, digit) in digits.enumerate() {
        let digit = i128::from(digit - b'0');
        if (k as i64) < keep {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(digit))
                .filter(|m| *m <= i128::from(i64::MAX))
                .ok_or(Decimals::NotANumber)?;
        } else if digit != 0 {
            dropped += 1;
        }
    }
    if dropped > 0 {
        return Err(Decimals::TooMany);
    }
    // Zero stays zero whatever the exponent; anything else overflows within 19 steps.
    for _ in 0..if minor == 0 { 0 } else { scale.max(0) } {
        minor = minor
            .checked_mul(10)
            .filter(|m| *m <= i128::from(i64::MAX))
            .ok_or(Decimals::NotANumber)?;
    }
    let minor = i64::try_from(minor).map_err(|_| Decimals::NotANumber)?;
    Ok(if negative { -minor } else { minor })
}

fn captured_at_us(text: &str, line: u64) -> Result<i64, ReportError> {
    match OffsetDateTime::parse(text, &Rfc3339) {
        // Whole microseconds, rounded toward the past as a clock reading is.
        Ok(moment) => Ok(moment.unix_timestamp_nanos().div_euclid(1_000) as i64),
        Err(_) => fail(
            line,
            format!(
                "captured_at {} must be RFC 3339 with a time zone",
                py_repr(text)
            ),
        ),
    }
}

/// A string as Python's `repr` writes it, since the messages quote cells that way.
pub(crate) fn py_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}
