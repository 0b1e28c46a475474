//! Reconciliation's hot path: reading a gateway settlement report (CSV through a
//! column mapping) and matching it against what billing settled.
//!
//! The Python side (`quickpay_engine.reconcile`) owns the mapping file, the store and
//! the persistence of discrepancies; this module turns report text and billed
//! captures into categories, the same ones with the same discrepancy ids as the
//! Python matcher it replaced, at about a microsecond a row where Python took seven
//! (benches/RESULTS.md, "Reconciliation").

mod matcher;
mod reply;
pub(crate) mod report;

#[cfg(test)]
mod tests;

pub use matcher::{reconcile, Capture, Category, Discrepancy, Outcome, Window};
pub use reply::{counts, encode as encode_reply, State};
pub use report::{read_rows, AmountUnit, Mapping, ReportError, Row, RowKind, RowStatus, FIELDS};
