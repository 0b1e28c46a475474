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
use rusqlite::{ErrorCode, OptionalExtension, ToSql, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::sqlite::{open_wal, Synchronous};
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

impl Row {
    /// The values a row is written with: `?1` to `?9` of `INSERT` and `update`.
    fn values(&self) -> [&dyn ToSql; 9] {
        [
            &self.account_id,
            &self.msisdn,
            &self.plan,
            &self.status,
            &self.currency,
            &self.balance_minor,
            &self.country,
            &self.sim_swapped_at_s,
            &self.created_at_s,
        ]
    }
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

/// A source whose reads a signal interrupted are tried again (a file that is a pipe
/// waits in read(2), where any signal to the process ends the wait with EINTR).
pub struct Retrying<R>(pub R);

impl<R: Read> Read for Retrying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                done => return done,
            }
        }
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

/// A new line, from `Row::values`; its opening balance is the file's balance.
const INSERT: &str = "INSERT INTO subscribers (account_id, msisdn, plan, status, currency, \
     balance_minor, opening_balance_minor, country, sim_swapped_at_s, created_at_s) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9)";

// The billing system's balance wins; the opening balance is set so that the balance
// still equals the opening balance plus what settled here and what was adjusted (see
// `verify`): that sum is the row's own balance less its opening balance, so no index of
// billing by account is needed to find it (schema 7 dropped billing_by_account).
const OPENING: &str = "?6 - (balance_minor - opening_balance_minor)";

/// A held line rewritten from `Row::values`, found by its rowid (`?10`; `?1`, the
/// account id, is bound but not read: the rowid finds the row). `number`: the msisdn
/// too, which touches its index, so only when the number changed. The opening balance's
/// expression reads the row's balances as they were before this update.
fn update(number: bool) -> String {
    let msisdn = if number { "msisdn = ?2, " } else { "" };
    format!(
        "UPDATE subscribers SET {msisdn}plan = ?3, status = ?4, currency = ?5, \
         balance_minor = ?6, opening_balance_minor = {OPENING}, country = ?7, \
         sim_swapped_at_s = ?8, created_at_s = ?9 WHERE rowid = ?10"
    )
}

/// The store's copy of a line, as a file row compares with it.
struct Held {
    rowid: i64,
    msisdn: String,
    plan: u8,
    status: u8,
    currency: String,
    balance_minor: i64,
    country: String,
    sim_swapped_at_s: Option<i64>,
    created_at_s: i64,
}

impl Held {
    fn same_as(&self, row: &Row) -> bool {
        self.msisdn == row.msisdn
            && self.plan == row.plan
            && self.status == row.status
            && self.currency == row.currency
            && self.balance_minor == row.balance_minor
            && self.country == row.country
            && self.sim_swapped_at_s == row.sim_swapped_at_s
            && self.created_at_s == row.created_at_s
    }
}

/// The rowids of the store's lines the file named so far: a line named twice is a
/// duplicate, and `replace` closes the ones never named. A bit per rowid (1.2 MiB for
/// ten million lines), however long the ids.
#[derive(Default)]
struct Seen(Vec<u64>);

impl Seen {
    /// Marks `rowid`; false if it was marked already.
    fn mark(&mut self, rowid: i64) -> bool {
        let at = usize::try_from(rowid).unwrap_or(0);
        let (word, bit) = (at / 64, 1u64 << (at % 64));
        if word >= self.0.len() {
            self.0.resize(word + 1 + word / 8, 0);
        }
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    fn has(&self, rowid: i64) -> bool {
        let at = usize::try_from(rowid).unwrap_or(0);
        self.0
            .get(at / 64)
            .is_some_and(|w| w & (1u64 << (at % 64)) != 0)
    }
}

/// Imports `file` into the SQLite store at `db`, in one transaction. Upsert: rows of
/// the file are inserted or replace the store's; `replace`: the file is the whole base,
/// so lines of the store missing from it are CLOSED too (never deleted: their payments
/// keep pointing at them).
///
/// Into an empty table the rows go straight in (its keys find duplicates). Into a
/// loaded one each row is looked up by its account id and written only where it
/// differs from the store's copy (a carrier's daily export changes a few lines of its
/// base), the msisdn's index only touched when the number changed; a bitmap of the
/// rowids named finds a line named twice and, for `replace`, the lines to close.
pub fn import_sqlite(db: &Path, file: &Path, replace: bool) -> Result<Imported, ImportError> {
    let source = std::fs::File::open(file).map_err(ImportError::Io)?;
    let mut reader = Reader::new(std::io::BufReader::with_capacity(1 << 20, Retrying(source)))
        .map_err(ImportError::Row)?;
    let mut conn = open_wal(db, Synchronous::Full)?;
    // Memory for the import: SQLite's page cache (a constant 256 MiB), not the file.
    conn.execute_batch("PRAGMA cache_size = -262144; PRAGMA temp_store = FILE;")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM subscribers)", [], |r| {
        r.get(0)
    })?;
    let imported = if empty {
        insert_all(&tx, &mut reader)?
    } else {
        merge(&tx, &mut reader, replace)?
    };
    tx.commit()?;
    Ok(imported)
}

/// The message for a row SQLite refused as a duplicate of a key.
fn duplicate(row: &Row, account_twice: bool) -> ImportError {
    let message = if account_twice {
        format!("account_id {} appears twice", py_repr(&row.account_id))
    } else {
        format!("msisdn {} appears twice", py_repr(&row.msisdn))
    };
    ImportError::Row(RowError {
        line: row.line,
        message,
    })
}

/// Every row inserted into an empty table.
fn insert_all<R: Read>(
    tx: &rusqlite::Transaction<'_>,
    reader: &mut Reader<R>,
) -> Result<Imported, ImportError> {
    let mut insert = tx.prepare(INSERT)?;
    let mut rows = 0u64;
    while let Some(row) = reader.next().map_err(ImportError::Row)? {
        let done = insert.execute(row.values().as_slice());
        if let Err(err) = done {
            if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                // SQLite names whichever key it checked first; the account id is
                // named first when both repeat, as the Python reader did.
                let account_twice: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM subscribers WHERE account_id = ?1)",
                    [&row.account_id],
                    |r| r.get(0),
                )?;
                return Err(duplicate(&row, account_twice));
            }
            return Err(err.into());
        }
        rows += 1;
    }
    Ok(Imported { rows, closed: 0 })
}

/// The file's rows upserted into a loaded table (see `import_sqlite`).
fn merge<R: Read>(
    tx: &rusqlite::Transaction<'_>,
    reader: &mut Reader<R>,
    replace: bool,
) -> Result<Imported, ImportError> {
    let mut find = tx.prepare(
        "SELECT rowid, msisdn, plan, status, currency, balance_minor, country, \
         sim_swapped_at_s, created_at_s FROM subscribers WHERE account_id = ?1",
    )?;
    let mut insert = tx.prepare(INSERT)?;
    let mut update_fields = tx.prepare(&update(false))?;
    let mut update_number = tx.prepare(&update(true))?;
    let mut seen = Seen::default();
    let mut rows = 0u64;
    while let Some(row) = reader.next().map_err(ImportError::Row)? {
        let held = find
            .query_row([&row.account_id], |r| {
                Ok(Held {
                    rowid: r.get(0)?,
                    msisdn: r.get(1)?,
                    plan: r.get(2)?,
                    status: r.get(3)?,
                    currency: r.get(4)?,
                    balance_minor: r.get(5)?,
                    country: r.get(6)?,
                    sim_swapped_at_s: r.get(7)?,
                    created_at_s: r.get(8)?,
                })
            })
            .optional()?;
        let values = row.values();
        let written = match &held {
            Some(held) if !seen.mark(held.rowid) => return Err(duplicate(&row, true)),
            Some(held) if held.same_as(&row) => Ok(()),
            Some(held) => {
                let mut with_rowid = values.to_vec();
                with_rowid.push(&held.rowid);
                let statement = if held.msisdn == row.msisdn {
                    &mut update_fields
                } else {
                    &mut update_number
                };
                statement.execute(with_rowid.as_slice()).map(drop)
            }
            None => insert.execute(values.as_slice()).map(|_| {
                seen.mark(tx.last_insert_rowid());
            }),
        };
        if let Err(err) = written {
            if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                // The number is another line's: one the file named already (a duplicate
                // in the file) or one of the store's (a conflict with the base).
                let holder: Option<i64> = tx
                    .query_row(
                        "SELECT rowid FROM subscribers WHERE msisdn = ?1",
                        [&row.msisdn],
                        |r| r.get(0),
                    )
                    .optional()?;
                if holder.is_some_and(|rowid| seen.has(rowid)) {
                    return Err(duplicate(&row, false));
                }
            }
            return Err(err.into());
        }
        rows += 1;
    }
    let mut closed = 0;
    if replace {
        // The lines still open, in rowid order a page at a time (no list of them all).
        let mut open = tx.prepare(
            "SELECT rowid FROM subscribers WHERE rowid > ?1 AND status != 4 \
             ORDER BY rowid LIMIT 65536",
        )?;
        let mut close = tx.prepare("UPDATE subscribers SET status = 4 WHERE rowid = ?1")?;
        let mut after = 0i64;
        loop {
            let page: Vec<i64> = open
                .query_map([after], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let Some(&last) = page.last() else { break };
            after = last;
            for rowid in page.into_iter().filter(|rowid| !seen.has(*rowid)) {
                closed += close.execute([rowid])? as u64;
            }
        }
    }
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
