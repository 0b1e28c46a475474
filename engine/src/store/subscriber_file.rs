//! The billing system's subscriber export (CSV), read as a stream and written to the
//! SQLite store in one transaction: memory for one row at a time whatever the file's
//! size, all rows or none, and the first bad line named.
//!
//! The columns, the checks and the messages are those `quickpay_engine.subscribers`
//! documents (its `parse_csv` uses this reader too): a message is the one the first bad
//! line, in file order, earns, duplicates included.

use std::io::Read;
use std::path::Path;

use csv::{ByteRecord, ReaderBuilder};
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::money::Currency;
use crate::reconcile::report::py_repr;
use crate::validate::{is_account_id, SUBSCRIBERS_MAX};

/// The columns, in the order `Row` and the Python side use.
pub const COLUMNS: [&str; 9] = [
    "account_id",
    "msisdn",
    "plan",
    "status",
    "currency",
    "balance_minor",
    "country",
    "sim_swapped_at",
    "created_at",
];

/// At most this many rows in one file: the engine's subscriber table holds no more
/// (`SUBSCRIBERS_MAX`, one partition of a carrier's base). At the bound the import
/// fails before committing anything.
pub const ROWS_MAX: usize = SUBSCRIBERS_MAX;

/// One checked row of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The file's line the row starts on (1 is the header).
    pub line: u64,
    pub account_id: String,
    pub msisdn: String,
    /// 1 prepaid, 2 postpaid.
    pub plan: u8,
    /// 1 active, 2 suspended, 3 barred, 4 closed.
    pub status: u8,
    pub currency: String,
    pub balance_minor: i64,
    pub country: String,
    pub sim_swapped_at_s: Option<i64>,
    pub created_at_s: i64,
}

/// A bad line: its number and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

fn fail<T>(line: u64, message: String) -> Result<T, RowError> {
    Err(RowError { line, message })
}

/// Reads and checks a subscriber file row by row.
pub struct Reader<R: Read> {
    csv: csv::Reader<R>,
    /// Where each of `COLUMNS` is in the file's rows.
    order: [usize; 9],
    width: usize,
    record: ByteRecord,
    rows: usize,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn new(source: R) -> Result<Reader<R>, RowError> {
        let mut csv = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(source);
        let mut header = ByteRecord::new();
        match csv.read_byte_record(&mut header) {
            Ok(true) => {}
            Ok(false) => return fail(1, "empty file: expected a header row".into()),
            Err(err) => return fail(1, format!("malformed CSV: {err}")),
        }
        let names: Vec<String> = header
            .iter()
            .map(|name| String::from_utf8_lossy(name).trim().to_string())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        let mut wanted: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        wanted.sort();
        if sorted != wanted {
            let list = |items: Vec<&str>| {
                let quoted: Vec<String> = items.iter().map(|i| py_repr(i)).collect();
                format!("[{}]", quoted.join(", "))
            };
            let mut missing: Vec<&str> = COLUMNS
                .iter()
                .copied()
                .filter(|c| !names.iter().any(|n| n == c))
                .collect();
            missing.sort();
            let mut extra: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !COLUMNS.contains(n))
                .collect();
            extra.sort();
            extra.dedup();
            return fail(
                1,
                format!(
                    "header must name {}; missing {}, unknown {}",
                    COLUMNS.join(", "),
                    list(missing),
                    list(extra)
                ),
            );
        }
        let order = COLUMNS.map(|c| names.iter().position(|n| n == c).expect("checked"));
        Ok(Reader {
            csv,
            order,
            width: names.len(),
            record: ByteRecord::new(),
            rows: 0,
        })
    }

    /// The next row, None at the end of the file.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row>, RowError> {
        loop {
            match self.csv.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(err) => {
                    let line = err.position().map_or(0, |p| p.line());
                    return fail(line, format!("malformed CSV: {err}"));
                }
            }
            let line = self.record.position().map_or(0, |p| p.line());
            // A blank line (one empty field) is skipped, as Python's csv module does.
            if self.record.len() == 1 && self.record[0].is_empty() {
                continue;
            }
            if self.rows >= ROWS_MAX {
                return fail(line, format!("more than {ROWS_MAX} rows in one file"));
            }
            if self.record.len() != self.width {
                return fail(
                    line,
                    format!(
                        "expected {} fields, found {}",
                        self.width,
                        self.record.len()
                    ),
                );
            }
            self.rows += 1;
            return self.row(line).map(Some);
        }
    }

    fn row(&self, line: u64) -> Result<Row, RowError> {
        let field = |k: usize| &self.record[self.order[k]];
        let bad = |k: usize, why: &str| -> RowError {
            RowError {
                line,
                message: format!(
                    "{} {}: {why}",
                    COLUMNS[k],
                    py_repr(&String::from_utf8_lossy(field(k)))
                ),
            }
        };
        let text = |k: usize| String::from_utf8_lossy(field(k)).into_owned();
        let account_id = field(0);
        if !is_account_id(account_id) {
            return Err(bad(0, "must be 1 to 64 characters of [A-Za-z0-9_-]"));
        }
        let msisdn = field(1);
        let e164 = matches!(msisdn, [b'+', b'1'..=b'9', rest @ ..]
            if (7..=14).contains(&rest.len()) && rest.iter().all(u8::is_ascii_digit));
        if !e164 {
            return Err(bad(
                1,
                "must be E.164 ('+' then 8 to 15 digits, no leading zero)",
            ));
        }
        let plan = match field(2) {
            b"PREPAID" => 1,
            b"POSTPAID" => 2,
            _ => return Err(bad(2, "must be PREPAID or POSTPAID")),
        };
        let status = match field(3) {
            b"ACTIVE" => 1,
            b"SUSPENDED" => 2,
            b"BARRED" => 3,
            b"CLOSED" => 4,
            _ => return Err(bad(3, "must be ACTIVE, SUSPENDED, BARRED or CLOSED")),
        };
        if Currency::from_bytes(field(4)).is_none() {
            return Err(bad(
                4,
                "must be an ISO 4217 alphabetic code with a minor unit",
            ));
        }
        let balance = field(5);
        let digits = balance.strip_prefix(b"-").unwrap_or(balance);
        if !(1..=18).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad(
                5,
                "must be a whole number of minor units (no decimal point)",
            ));
        }
        let balance_minor: i64 = std::str::from_utf8(balance)
            .ok()
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| bad(5, "must be a whole number of minor units"))?;
        let country = field(6);
        if !(country.len() == 2 && country.iter().all(u8::is_ascii_uppercase)) {
            return Err(bad(6, "must be an ISO 3166 alpha-2 code such as GR"));
        }
        let time = |k: usize| -> Result<i64, RowError> {
            std::str::from_utf8(field(k))
                .ok()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .map(|moment| moment.unix_timestamp())
                .ok_or_else(|| bad(k, "must be RFC 3339 with a time zone"))
        };
        let sim_swapped_at_s = if field(7).is_empty() {
            None
        } else {
            Some(time(7)?)
        };
        let created_at_s = time(8)?;
        Ok(Row {
            line,
            account_id: text(0),
            msisdn: text(1),
            plan,
            status,
            currency: text(4),
            balance_minor,
            country: text(6),
            sim_swapped_at_s,
            created_at_s,
        })
    }
}

/// Why an import failed; nothing of it was written.
#[derive(Debug)]
pub enum ImportError {
    /// The file: its first bad line.
    Row(RowError),
    /// The file could not be read.
    Io(std::io::Error),
    /// The database refused the rows (a constraint against rows already there).
    Conflict(String),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for ImportError {
    fn from(err: rusqlite::Error) -> Self {
        if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
            ImportError::Conflict(err.to_string())
        } else {
            ImportError::Sqlite(err)
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Rows of the file written (inserted or updated).
    pub rows: u64,
    /// Lines of the store missing from the file that `replace` closed.
    pub closed: u64,
}

// The billing system's balance wins; the opening balance is set so that the balance
// still equals the opening balance plus what settled here and what was adjusted (see
// `verify`).
const UPSERT: &str = "INSERT INTO subscribers (account_id, msisdn, plan, status, currency, \
     balance_minor, opening_balance_minor, country, sim_swapped_at_s, created_at_s) \
     SELECT account_id, msisdn, plan, status, currency, balance_minor, balance_minor, \
     country, sim_swapped_at_s, created_at_s FROM temp.import_rows WHERE true \
     ON CONFLICT (account_id) DO UPDATE SET msisdn = excluded.msisdn, \
     plan = excluded.plan, status = excluded.status, currency = excluded.currency, \
     balance_minor = excluded.balance_minor, \
     opening_balance_minor = excluded.balance_minor - (SELECT \
       coalesce(sum(balance_delta_minor), 0) FROM billing_records \
       WHERE billing_records.account_id = excluded.account_id) - (SELECT \
       coalesce(sum(balance_delta_minor), 0) FROM balance_adjustments \
       WHERE balance_adjustments.account_id = excluded.account_id), \
     country = excluded.country, sim_swapped_at_s = excluded.sim_swapped_at_s, \
     created_at_s = excluded.created_at_s";

/// Imports `file` into the SQLite store at `db`, in one transaction. Upsert: rows of
/// the file are inserted or replace the store's; `replace`: the file is the whole base,
/// so lines of the store missing from it are CLOSED too (never deleted: their payments
/// keep pointing at them).
///
/// Into an empty table the rows go straight in (its keys find duplicates); otherwise
/// through a staging table of the file's rows, merged at the end.
pub fn import_sqlite(db: &Path, file: &Path, replace: bool) -> Result<Imported, ImportError> {
    let source = std::fs::File::open(file).map_err(ImportError::Io)?;
    let mut reader = Reader::new(std::io::BufReader::with_capacity(1 << 20, source))
        .map_err(ImportError::Row)?;
    let mut conn = Connection::open(db)?;
    conn.busy_timeout(super::sqlite::BUSY_TIMEOUT)?;
    // Memory for the import: SQLite's page cache (a constant 256 MiB), not the file.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -262144; PRAGMA temp_store = FILE;",
    )?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM subscribers)", [], |r| {
        r.get(0)
    })?;
    let table = if empty {
        "main.subscribers"
    } else {
        "temp.import_rows"
    };
    if !empty {
        tx.execute_batch(
            "CREATE TEMP TABLE import_rows (account_id TEXT PRIMARY KEY, \
             msisdn TEXT NOT NULL UNIQUE, plan INTEGER NOT NULL, status INTEGER NOT NULL, \
             currency TEXT NOT NULL, balance_minor INTEGER NOT NULL, country TEXT NOT NULL, \
             sim_swapped_at_s INTEGER, created_at_s INTEGER NOT NULL) WITHOUT ROWID",
        )?;
    }
    let mut rows = 0u64;
    {
        let mut insert = tx.prepare(&format!(
            "INSERT INTO {table} (account_id, msisdn, plan, status, currency, balance_minor, \
             {}country, sim_swapped_at_s, created_at_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
             {}?7, ?8, ?9)",
            if empty { "opening_balance_minor, " } else { "" },
            if empty { "?6, " } else { "" },
        ))?;
        while let Some(row) = reader.next().map_err(ImportError::Row)? {
            let done = insert.execute(params![
                row.account_id,
                row.msisdn,
                row.plan,
                row.status,
                row.currency,
                row.balance_minor,
                row.country,
                row.sim_swapped_at_s,
                row.created_at_s,
            ]);
            if let Err(err) = done {
                if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                    // SQLite names whichever key it checked first; the account id is
                    // named first when both repeat, as the Python reader did.
                    let account_twice: bool = tx.query_row(
                        &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE account_id = ?1)"),
                        [&row.account_id],
                        |r| r.get(0),
                    )?;
                    let message = if account_twice {
                        format!("account_id {} appears twice", py_repr(&row.account_id))
                    } else {
                        format!("msisdn {} appears twice", py_repr(&row.msisdn))
                    };
                    return Err(ImportError::Row(RowError {
                        line: row.line,
                        message,
                    }));
                }
                return Err(err.into());
            }
            rows += 1;
        }
    }
    let mut closed = 0;
    if !empty {
        if replace {
            closed = tx.execute(
                "UPDATE subscribers SET status = 4 WHERE status != 4 AND account_id NOT IN \
                 (SELECT account_id FROM temp.import_rows)",
                [],
            )? as u64;
        }
        tx.execute(UPSERT, [])?;
        tx.execute_batch("DROP TABLE temp.import_rows")?;
    }
    tx.commit()?;
    Ok(Imported { rows, closed })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "account_id,msisdn,plan,status,currency,balance_minor,country,sim_swapped_at,created_at\n";

    fn rows(text: &str) -> Result<Vec<Row>, RowError> {
        let mut reader = Reader::new(text.as_bytes())?;
        let mut out = vec![];
        while let Some(row) = reader.next()? {
            out.push(row);
        }
        Ok(out)
    }

    #[test]
    fn reads_rows_with_their_lines_and_skips_blank_lines() {
        let text = format!(
            "{HEADER}a1,+306900000001,PREPAID,ACTIVE,EUR,-5,GR,,2026-01-01T00:00:00Z\n\n\
             a2,+306900000002,POSTPAID,BARRED,EUR,10,GR,2026-01-01T10:00:00+02:00,2026-01-01T00:00:00Z\n"
        );
        let got = rows(&text).unwrap();
        assert_eq!(got.len(), 2);
        // The csv crate does not count a skipped blank line in its line numbers, so a
        // row after one is named by one line less than the file's (Python's csv module
        // counted it): a known difference, only for files with blank lines.
        assert_eq!((got[0].line, got[1].line), (2, 3));
        assert_eq!(got[0].balance_minor, -5);
        assert_eq!(got[1].sim_swapped_at_s, Some(1_767_254_400));
    }

    #[test]
    fn names_the_bad_field_as_python_quotes_it() {
        let text =
            format!("{HEADER}a 1,+306900000001,PREPAID,ACTIVE,EUR,0,GR,,2026-01-01T00:00:00Z\n");
        let err = rows(&text).unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(
            err.message,
            "account_id 'a 1': must be 1 to 64 characters of [A-Za-z0-9_-]"
        );
        let err = rows("account_id,msisdn\n").unwrap_err();
        assert!(
            err.message.starts_with("header must name"),
            "{}",
            err.message
        );
        assert!(err.message.ends_with("unknown []"), "{}", err.message);
        assert_eq!(
            rows("").unwrap_err().message,
            "empty file: expected a header row"
        );
    }
}
