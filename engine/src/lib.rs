//! The settlement core of quickpay-engine.
//!
//! Plain Rust: nothing here knows Python, gRPC or SQL. The PyO3 bindings live in
//! `python.rs` behind the `python` feature, so `cargo test` runs the core alone.
//! Every entry point has a batch form; single forms call it.

pub mod fraud;
pub mod gateway;
mod hex;
pub mod ledger;
pub mod money;
pub mod proto;
pub mod reconcile;
pub mod store;
pub mod validate;
pub mod wal;

#[cfg(feature = "python")]
mod python;
