//! The write-ahead log: append-only segment files of checksummed, chained records,
//! group commit, snapshots and recovery.
//!
//! Nothing is acknowledged before the `fdatasync` covering it has returned. Any write
//! or sync error poisons the log: every later append fails, because after a failed
//! fsync the kernel may have dropped the dirty pages and a retry that succeeds proves
//! nothing (PostgreSQL's 2018 lesson). The process must restart and recover from
//! what is really on disk.

mod frame;
mod scan;
mod snapshot;
mod writer;

pub use frame::{decode, encode, peek_seq, Frame, FrameError, HEADER_BYTES, RECORD_BYTES_MAX};
pub use scan::{
    list_dir, scan, segment_name, snapshot_name, ChainStart, Corruption, DirListing, ScanMode,
    ScanReport, TornTail,
};
pub use snapshot::{read_snapshot, write_snapshot, SnapshotHeader, SNAPSHOT_BYTES_MAX};
pub use writer::{
    Wal, WalConfig, WalStatsSnapshot, FLUSH_BUCKETS_NS, PENDING_BYTES_MAX, SEGMENT_BYTES_MIN,
};

#[cfg(test)]
pub(crate) use writer::failpoint;

use std::path::PathBuf;

/// Everything that can go wrong with the log.
#[derive(Debug)]
pub enum WalError {
    /// An I/O call failed; `context` says which and on what file.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// An earlier write or fsync failed; the log accepts nothing until restart.
    Poisoned { cause: String },
    /// A record or snapshot is bad where a crash cannot have left it: refuse to start.
    Corruption(Corruption),
    /// A record is over `RECORD_BYTES_MAX`.
    RecordTooLarge { bytes: usize, max: usize },
    /// A configuration value is out of its bounds.
    Config { message: String },
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io { context, source } => write!(f, "{context}: {source}"),
            WalError::Poisoned { cause } => {
                write!(f, "the write-ahead log stopped after an earlier failure ({cause}); restart to recover")
            }
            WalError::Corruption(c) => write!(f, "{c}"),
            WalError::RecordTooLarge { bytes, max } => {
                write!(f, "record of {bytes} bytes is over the bound of {max}")
            }
            WalError::Config { message } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for WalError {}

pub fn io_error(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> WalError {
    move |source| WalError::Io {
        context: context(),
        source,
    }
}

/// Opens a directory and fsyncs it, so that a created, renamed or removed entry in it
/// is durable.
pub fn sync_dir(dir: &std::path::Path) -> Result<(), WalError> {
    let handle = std::fs::File::open(dir)
        .map_err(io_error(|| format!("open directory {}", dir.display())))?;
    handle
        .sync_all()
        .map_err(io_error(|| format!("fsync directory {}", dir.display())))
}

/// A segment or snapshot file in a log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAt {
    pub path: PathBuf,
    /// For a segment, the sequence number of its first record; for a snapshot, the
    /// last record it includes.
    pub seq: u64,
}
