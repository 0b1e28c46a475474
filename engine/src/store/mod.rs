//! A settlement batch's rows, built in the core, and their SQLite writer.
//!
//! `rows` builds every table's rows for a batch (pure: no I/O); `canonical` and `audit`
//! give the byte-exact JSON and the keyed hash chain that `quickpay audit verify`
//! checks; `sqlite` writes a batch in one transaction through the system libsqlite3,
//! and `checkpoint` copies its WAL back into the file on a thread of its own.

pub mod audit;
pub mod canonical;
pub mod checkpoint;
mod prepared;
pub mod rows;
pub mod sqlite;

pub mod subscriber_file;
#[cfg(test)]
pub(crate) mod tests;
