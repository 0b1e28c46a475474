//! The batch writer's insert statements, prepared once per connection and bound without
//! copying the batch's text.
//!
//! rusqlite binds every text value with SQLITE_TRANSIENT: SQLite frees the parameter's
//! previous buffer, allocates a new one and copies the text into it, for every value of
//! every row, under the allocator's mutex. perf put that (sqlite3VdbeMemSetStr,
//! sqlite3Malloc, malloc and free, memmove) at about a tenth of the store thread's CPU
//! under PayBatch (benches/store_cpu.py). Here text is bound with SQLITE_STATIC: SQLite
//! reads it in place while the statement steps. That is sound because every binding is
//! cleared (`sqlite3_clear_bindings`) before `run` returns, so no statement keeps a
//! pointer into a batch's rows past the call that borrowed them.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr};
use std::ptr;

use rusqlite::ffi;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

/// One prepared statement of the writer's connection.
struct Statement {
    raw: *mut ffi::sqlite3_stmt,
}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: `raw` came from sqlite3_prepare_v2 and is finalized once, here.
        unsafe {
            ffi::sqlite3_finalize(self.raw);
        }
    }
}

/// The writer's own statements, by a key the caller gives with the SQL, all of one connection (the writer's), which
/// `run` must always be given. Must be dropped before that connection (the writer
/// declares it first, so it is).
#[derive(Default)]
pub struct Statements {
    by_key: HashMap<(&'static str, usize), Statement>,
}

// SAFETY: the statements are used only through `&mut Statements` together with the
// connection they belong to, which the writer holds behind the same lock (the Writer is
// moved between threads, never shared).
unsafe impl Send for Statements {}

/// SQLite's error for `code`, as rusqlite reports it (its message when the connection's
/// last error is this one, the code's text otherwise).
fn error(db: *mut ffi::sqlite3, code: c_int) -> rusqlite::Error {
    // SAFETY: `db` is an open connection; the strings SQLite returns are copied at once.
    let message = unsafe {
        let text = if ffi::sqlite3_errcode(db) == code {
            ffi::sqlite3_errmsg(db)
        } else {
            ffi::sqlite3_errstr(code)
        };
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}

impl Statements {
    /// Executes the statement `key` names once, with `values` bound to its parameters in
    /// order; returns the rows it changed. On the key's first use the statement is
    /// prepared from the SQL `sql` gives, and kept.
    pub fn run(
        &mut self,
        db: &Connection,
        key: (&'static str, usize),
        sql: impl FnOnce() -> String,
        values: &[ValueRef<'_>],
    ) -> rusqlite::Result<usize> {
        // SAFETY: the handle is the open connection's; it outlives this call.
        let handle = unsafe { db.handle() };
        let raw = match self.by_key.get(&key) {
            Some(statement) => statement.raw,
            None => {
                let sql = sql();
                let mut raw = ptr::null_mut();
                let len =
                    c_int::try_from(sql.len()).map_err(|_| error(handle, ffi::SQLITE_TOOBIG))?;
                // SAFETY: `sql` is valid for `len` bytes; `raw` receives the statement.
                let rc = unsafe {
                    ffi::sqlite3_prepare_v2(
                        handle,
                        sql.as_ptr().cast::<c_char>(),
                        len,
                        &mut raw,
                        ptr::null_mut(),
                    )
                };
                if rc != ffi::SQLITE_OK {
                    return Err(error(handle, rc));
                }
                self.by_key.insert(key, Statement { raw });
                raw
            }
        };
        // SAFETY: `raw` is a live statement of `handle`; every text and blob bound here
        // borrows from `values`, which outlives this block, and the bindings are cleared
        // before it ends.
        unsafe {
            let expected = ffi::sqlite3_bind_parameter_count(raw);
            if usize::try_from(expected).ok() != Some(values.len()) {
                return Err(rusqlite::Error::InvalidParameterCount(
                    values.len(),
                    expected as usize,
                ));
            }
            let mut rc = ffi::SQLITE_OK;
            for (k, value) in values.iter().enumerate() {
                let at = k as c_int + 1;
                rc = match *value {
                    ValueRef::Null => ffi::sqlite3_bind_null(raw, at),
                    ValueRef::Integer(n) => ffi::sqlite3_bind_int64(raw, at, n),
                    ValueRef::Real(x) => ffi::sqlite3_bind_double(raw, at, x),
                    ValueRef::Text(s) => match c_int::try_from(s.len()) {
                        Ok(len) => ffi::sqlite3_bind_text(
                            raw,
                            at,
                            if s.is_empty() {
                                c"".as_ptr()
                            } else {
                                s.as_ptr().cast::<c_char>()
                            },
                            len,
                            ffi::SQLITE_STATIC(),
                        ),
                        Err(_) => ffi::SQLITE_TOOBIG,
                    },
                    ValueRef::Blob(b) => match c_int::try_from(b.len()) {
                        Ok(0) => ffi::sqlite3_bind_zeroblob(raw, at, 0),
                        Ok(len) => ffi::sqlite3_bind_blob(
                            raw,
                            at,
                            b.as_ptr().cast(),
                            len,
                            ffi::SQLITE_STATIC(),
                        ),
                        Err(_) => ffi::SQLITE_TOOBIG,
                    },
                };
                if rc != ffi::SQLITE_OK {
                    break;
                }
            }
            let done = if rc == ffi::SQLITE_OK {
                match ffi::sqlite3_step(raw) {
                    ffi::SQLITE_DONE => {
                        Ok(usize::try_from(ffi::sqlite3_changes(handle)).unwrap_or(0))
                    }
                    ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
                    code => Err(error(handle, code)),
                }
            } else {
                Err(error(handle, rc))
            };
            ffi::sqlite3_reset(raw);
            ffi::sqlite3_clear_bindings(raw);
            done
        }
    }
}
