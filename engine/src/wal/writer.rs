//! The appending side of the log: group commit into segment files.
//!
//! Appenders frame their record into a shared buffer under a short lock and get a
//! sequence number. Whoever then waits for durability and finds no flush running
//! becomes the leader: it takes the whole buffer, writes it with one `write` per
//! segment and one `fdatasync`, and wakes everyone whose record it covered. Appenders
//! that arrive during a flush are batched into the next one. No thread of its own.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::frame::{self, HEADER_BYTES, RECORD_BYTES_MAX};
use super::scan::segment_name;
use super::{io_error, sync_dir, WalError};

/// The smallest segment size accepted (tests use small segments to exercise rotation).
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Bytes framed but not yet written. At the bound: the appender waits for a flush
/// (back-pressure), so memory stays bounded however fast appenders are.
pub const PENDING_BYTES_MAX: usize = 64 << 20;

/// Upper bounds, in nanoseconds, of the flush-latency buckets `WalStats` counts (the
/// last bucket takes everything slower). Fixed, so a reader (the Prometheus exporter)
/// names the same buckets every time.
pub const FLUSH_BUCKETS_NS: [u64; 12] = [
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// What the log has written since it was opened: counted by the flush leader, once per
/// group commit (never per record), with relaxed atomics a reader may sample at any time.
#[derive(Debug, Default)]
pub struct WalStats {
    flushes: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    flush_ns: AtomicU64,
    /// Flushes per latency bucket (`FLUSH_BUCKETS_NS`, then one for slower).
    buckets: [AtomicU64; FLUSH_BUCKETS_NS.len() + 1],
}

/// A copy of `WalStats` at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStatsSnapshot {
    /// Group commits: one write and one fdatasync each.
    pub flushes: u64,
    pub records: u64,
    pub bytes: u64,
    /// The flushes' write-plus-fdatasync time, summed.
    pub flush_ns: u64,
    /// Flushes per latency bucket, not cumulative (`FLUSH_BUCKETS_NS`, then slower).
    pub buckets: Vec<u64>,
}

impl WalStats {
    fn flushed(&self, records: usize, bytes: usize, elapsed_ns: u64) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.flush_ns.fetch_add(elapsed_ns, Ordering::Relaxed);
        let bucket = FLUSH_BUCKETS_NS
            .iter()
            .position(|&bound| elapsed_ns <= bound)
            .unwrap_or(FLUSH_BUCKETS_NS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> WalStatsSnapshot {
        WalStatsSnapshot {
            flushes: self.flushes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            flush_ns: self.flush_ns.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// How the log is laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// A segment is closed once it holds this many bytes; the next record starts a new
    /// one. A segment may exceed it by at most one record (a record never spans two).
    pub segment_bytes_max: u64,
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig {
            segment_bytes_max: 64 << 20,
        }
    }
}

impl WalConfig {
    /// Checks the bounds.
    pub fn check(&self) -> Result<(), WalError> {
        if self.segment_bytes_max < SEGMENT_BYTES_MIN || self.segment_bytes_max > 1 << 40 {
            return Err(WalError::Config {
                message: format!(
                    "segment_bytes_max {} is outside {SEGMENT_BYTES_MIN}..=2^40",
                    self.segment_bytes_max
                ),
            });
        }
        Ok(())
    }
}

struct Shared {
    /// Framed records not yet handed to a leader.
    buf: Vec<u8>,
    /// (seq, end offset in `buf`) of each framed record.
    ends: Vec<(u64, usize)>,
    next_seq: u64,
    last_checksum: u32,
    durable_seq: u64,
    flushing: bool,
    poisoned: Option<String>,
}

struct Segment {
    dir: PathBuf,
    file: File,
    bytes: u64,
    segment_bytes_max: u64,
    rotate_next: bool,
}

/// The log, open for appending.
pub struct Wal {
    shared: Mutex<Shared>,
    flushed: Condvar,
    segment: Mutex<Segment>,
    stats: WalStats,
}

impl Wal {
    /// Opens the log to append after record `next_seq - 1` (whose checksum is
    /// `last_checksum`), continuing `last_segment` when given and not full.
    pub fn open(
        dir: &Path,
        config: WalConfig,
        next_seq: u64,
        last_checksum: u32,
        last_segment: Option<&Path>,
    ) -> Result<Wal, WalError> {
        config.check()?;
        let mut segment = None;
        if let Some(path) = last_segment {
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io_error(|| format!("open segment {}", path.display())))?;
            let bytes = file
                .metadata()
                .map_err(io_error(|| format!("stat segment {}", path.display())))?
                .len();
            if bytes < config.segment_bytes_max {
                segment = Some(Segment {
                    dir: dir.to_path_buf(),
                    file,
                    bytes,
                    segment_bytes_max: config.segment_bytes_max,
                    rotate_next: false,
                });
            }
        }
        let segment = match segment {
            Some(segment) => segment,
            None => Segment::create(dir, config.segment_bytes_max, next_seq)?,
        };
        Ok(Wal {
            shared: Mutex::new(Shared {
                buf: Vec::new(),
                ends: Vec::new(),
                next_seq,
                last_checksum,
                durable_seq: next_seq - 1,
                flushing: false,
                poisoned: None,
            }),
            flushed: Condvar::new(),
            segment: Mutex::new(segment),
            stats: WalStats::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock is a bug; the state may be half-updated, so
        // nothing may be acknowledged after it.
        self.shared.lock().expect("wal lock poisoned by a panic")
    }

    /// Frames `payload` as the next record; returns its sequence number. The record is
    /// not durable until `wait_durable(seq)` returns Ok.
    pub fn enqueue(&self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() > RECORD_BYTES_MAX {
            return Err(WalError::RecordTooLarge {
                bytes: payload.len(),
                max: RECORD_BYTES_MAX,
            });
        }
        loop {
            let mut shared = self.lock();
            if let Some(cause) = &shared.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if shared.buf.is_empty()
                || shared.buf.len() + HEADER_BYTES + payload.len() <= PENDING_BYTES_MAX
            {
                let seq = shared.next_seq;
                let prev = shared.last_checksum;
                let checksum = frame::encode(&mut shared.buf, seq, prev, payload);
                let end = shared.buf.len();
                shared.ends.push((seq, end));
                shared.next_seq += 1;
                shared.last_checksum = checksum;
                return Ok(seq);
            }
            let last = shared.next_seq - 1;
            drop(shared);
            self.wait_durable(last)?;
        }
    }

    /// Returns once record `seq` is on disk (written and fdatasync'ed), leading a
    /// flush when none is running.
    pub fn wait_durable(&self, seq: u64) -> Result<(), WalError> {
        let mut shared = self.lock();
        loop {
            if let Some(cause) = &shared.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if shared.durable_seq >= seq {
                return Ok(());
            }
            if shared.flushing {
                shared = self
                    .flushed
                    .wait(shared)
                    .expect("wal lock poisoned by a panic");
                continue;
            }
            assert!(!shared.ends.is_empty(), "a record not durable is buffered");
            let buf = std::mem::take(&mut shared.buf);
            let ends = std::mem::take(&mut shared.ends);
            shared.flushing = true;
            drop(shared);
            let started = Instant::now();
            let result = self
                .segment
                .lock()
                .expect("segment lock")
                .write(&buf, &ends);
            if result.is_ok() {
                let elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.stats.flushed(ends.len(), buf.len(), elapsed_ns);
            }
            shared = self.lock();
            shared.flushing = false;
            match result {
                Ok(()) => shared.durable_seq = ends.last().expect("non-empty").0,
                Err(err) => shared.poisoned = Some(err.to_string()),
            }
            if shared.buf.is_empty() && shared.buf.capacity() < buf.capacity() {
                // Keep the larger allocation for the next batch.
                let mut buf = buf;
                buf.clear();
                shared.buf = buf;
            }
            self.flushed.notify_all();
        }
    }

    /// The last sequence number handed out and its checksum.
    pub fn last(&self) -> (u64, u32) {
        let shared = self.lock();
        (shared.next_seq - 1, shared.last_checksum)
    }

    /// What the log has written since it was opened (see `WalStats`).
    pub fn stats(&self) -> WalStatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether an earlier failure stopped the log.
    pub fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    /// Makes the next record start a new segment (after a snapshot, so that the
    /// segments the snapshot covers can be removed by the following one).
    pub fn rotate_next(&self) {
        self.segment.lock().expect("segment lock").rotate_next = true;
    }
}

impl Segment {
    fn create(dir: &Path, segment_bytes_max: u64, first_seq: u64) -> Result<Segment, WalError> {
        let path = dir.join(segment_name(first_seq));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(|| format!("create segment {}", path.display())))?;
        sync_dir(dir)?;
        Ok(Segment {
            dir: dir.to_path_buf(),
            file,
            bytes: 0,
            segment_bytes_max,
            rotate_next: false,
        })
    }

    /// Closes this segment (its data already synced by the caller) and opens the next.
    fn rotate(&mut self, first_seq: u64) -> Result<(), WalError> {
        self.file
            .sync_data()
            .map_err(io_error(|| "fdatasync segment before rotation".into()))?;
        *self = Segment::create(&self.dir, self.segment_bytes_max, first_seq)?;
        Ok(())
    }

    /// Writes framed records, starting new segments at the size bound, then syncs.
    fn write(&mut self, buf: &[u8], ends: &[(u64, usize)]) -> Result<(), WalError> {
        let mut start = 0;
        let mut i = 0;
        while i < ends.len() {
            if self.bytes >= self.segment_bytes_max || (self.rotate_next && self.bytes > 0) {
                self.rotate(ends[i].0)?;
            }
            // Take records while they fit; always at least one, so a record larger than
            // the rest of the segment still goes somewhere.
            let mut end = ends[i].1;
            i += 1;
            while i < ends.len()
                && self.bytes + (ends[i].1 - start) as u64 <= self.segment_bytes_max
            {
                end = ends[i].1;
                i += 1;
            }
            self.file
                .write_all(&buf[start..end])
                .map_err(io_error(|| "write segment".to_string()))?;
            self.bytes += (end - start) as u64;
            start = end;
        }
        #[cfg(test)]
        if failpoint::take() {
            return Err(WalError::Io {
                context: "fdatasync segment".into(),
                source: std::io::Error::from_raw_os_error(5), // EIO, as a failing disk reports
            });
        }
        self.file
            .sync_data()
            .map_err(io_error(|| "fdatasync segment".to_string()))
    }
}

/// Makes the next fdatasync on this thread fail, for the tests of what follows an
/// fsync error (the leader of a flush is the thread that waits, so the test's own).
#[cfg(test)]
pub(crate) mod failpoint {
    use std::cell::Cell;

    thread_local!(static FAIL_NEXT_SYNC: Cell<bool> = const { Cell::new(false) });

    pub(crate) fn arm() {
        FAIL_NEXT_SYNC.with(|f| f.set(true));
    }

    pub(super) fn take() -> bool {
        FAIL_NEXT_SYNC.with(|f| f.replace(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_each_group_commit_once_with_its_records_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalConfig::default(), 1, 0, None).unwrap();
        assert_eq!(wal.stats().flushes, 0);
        wal.enqueue(b"first").unwrap();
        let last = wal.enqueue(b"second").unwrap();
        wal.wait_durable(last).unwrap();
        let stats = wal.stats();
        assert_eq!(stats.flushes, 1, "two records, one group commit");
        assert_eq!(stats.records, 2);
        assert_eq!(stats.bytes, 2 * HEADER_BYTES as u64 + 11);
        assert_eq!(stats.buckets.len(), FLUSH_BUCKETS_NS.len() + 1);
        assert_eq!(stats.buckets.iter().sum::<u64>(), 1);
    }

    #[test]
    fn an_fsync_error_poisons_the_log_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalConfig::default(), 1, 0, None).unwrap();
        let seq = wal.enqueue(b"first").unwrap();
        wal.wait_durable(seq).unwrap();
        failpoint::arm();
        let seq = wal.enqueue(b"second").unwrap();
        let err = wal.wait_durable(seq).unwrap_err();
        assert!(
            matches!(&err, WalError::Poisoned { cause } if cause.contains("os error 5")),
            "{err}"
        );
        // No retry pretends the data is safe: every later call fails, even though the
        // next fdatasync would succeed.
        assert!(matches!(
            wal.wait_durable(seq),
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.enqueue(b"third"),
            Err(WalError::Poisoned { .. })
        ));
        assert!(wal.poisoned().unwrap().contains("fdatasync"));
    }
}
