//! The ledger behind its write-ahead log: every command is applied in memory, logged,
//! and acknowledged only once the log's fdatasync covering it has returned.
//!
//! Commands are applied and framed under one lock, so the log order is the apply
//! order; the wait for the disk happens outside it, so concurrent callers share one
//! fsync (group commit). A caller may see the effect of another caller's command
//! before that command is durable, but is never acknowledged before it: the log is
//! flushed in order, so its own later record covers the earlier one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use borsh::BorshDeserialize;

use super::{Command, Entry, Ledger, LedgerError, LedgerImage, Limits, BATCH_MAX};
use crate::wal::{
    self, list_dir, read_snapshot, scan, write_snapshot, ChainStart, Corruption, ScanMode,
    ScanReport, SnapshotHeader, TornTail, Wal, WalConfig, WalError, WalStatsSnapshot,
    RECORD_BYTES_MAX,
};

/// How to open a durable ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurableConfig {
    pub wal: WalConfig,
    pub limits: Limits,
}

/// Why a durable call failed. `Ledger` errors refuse a batch and change nothing; `Wal`
/// errors stop the engine (it must restart and recover).
#[derive(Debug)]
pub enum DurableError {
    Ledger(LedgerError),
    Wal(WalError),
}

impl std::fmt::Display for DurableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurableError::Ledger(err) => write!(f, "{err}"),
            DurableError::Wal(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for DurableError {}

impl From<LedgerError> for DurableError {
    fn from(err: LedgerError) -> Self {
        DurableError::Ledger(err)
    }
}

impl From<WalError> for DurableError {
    fn from(err: WalError) -> Self {
        DurableError::Wal(err)
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The snapshot loaded (its last record; 0 when none).
    pub snapshot_seq: u64,
    /// Snapshots that failed their checksum and were passed over, newest first.
    pub snapshots_skipped: Vec<PathBuf>,
    /// Records applied on top of the snapshot.
    pub records_replayed: u64,
    pub scan: ScanReport,
}

impl RecoveryReport {
    /// The torn tail, if the log had one.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.scan.torn_tail.as_ref()
    }
}

/// One record as `quickpay wal inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    pub seq: u64,
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub checksum: u32,
    pub kind: &'static str,
    pub events: usize,
    /// Events whose result code was 0 (applied, or NEW for a claim).
    pub events_ok: usize,
    pub now_ns: u64,
}

fn undecodable(path: &Path, offset: u64, seq: u64, reason: String) -> WalError {
    WalError::Corruption(Corruption {
        path: path.to_path_buf(),
        offset,
        seq,
        reason,
    })
}

/// Loads the newest valid snapshot and replays the log after it.
pub fn recover(
    dir: &Path,
    limits: Limits,
    mode: ScanMode,
) -> Result<(Ledger, RecoveryReport), DurableError> {
    let listing = list_dir(dir)?;
    let mut report = RecoveryReport::default();
    let mut ledger = Ledger::new(limits);
    let mut start = ChainStart::default();
    for snapshot in listing.snapshots.iter().rev() {
        let loaded = read_snapshot(&snapshot.path).and_then(|(header, body)| {
            LedgerImage::decode(&body)
                .map(|image| (header, image))
                .map_err(|err| {
                    undecodable(
                        &snapshot.path,
                        0,
                        header.seq,
                        format!("snapshot body: {err}"),
                    )
                })
        });
        match loaded {
            Ok((header, image)) => {
                ledger = Ledger::from_image(limits, image);
                start = ChainStart {
                    seq: header.seq,
                    checksum: header.checksum,
                };
                report.snapshot_seq = header.seq;
                break;
            }
            Err(WalError::Corruption(_)) => report.snapshots_skipped.push(snapshot.path.clone()),
            Err(err) => return Err(err.into()),
        }
    }
    let mut replayed = 0u64;
    report.scan = scan(
        &listing.segments,
        start,
        mode,
        &mut |segment, offset, frame| {
            if frame.seq <= start.seq {
                return Ok(());
            }
            let entry = Entry::try_from_slice(frame.payload).map_err(|err| {
                undecodable(
                    &segment.path,
                    offset,
                    frame.seq,
                    format!("record does not decode: {err}"),
                )
            })?;
            let results = ledger.apply(entry.now_ns, &entry.command).map_err(|err| {
                undecodable(
                    &segment.path,
                    offset,
                    frame.seq,
                    format!("replay refused: {err}"),
                )
            })?;
            if results != entry.results {
                let reason = "replay produced other result codes than were logged".to_string();
                return Err(undecodable(&segment.path, offset, frame.seq, reason));
            }
            replayed += 1;
            Ok(())
        },
    )?;
    report.records_replayed = replayed;
    Ok((ledger, report))
}

/// Checks a log directory offline (nothing is changed): every snapshot and record
/// checksum, the chain, and a full replay.
pub fn verify(dir: &Path, limits: Limits) -> Result<RecoveryReport, DurableError> {
    recover(dir, limits, ScanMode::ReadOnly).map(|(_, report)| report)
}

/// Lists the records of a log directory offline, from `from_seq`, at most `limit`.
pub fn inspect(dir: &Path, from_seq: u64, limit: usize) -> Result<Vec<RecordInfo>, DurableError> {
    let listing = list_dir(dir)?;
    let start = match listing.snapshots.last() {
        Some(snapshot) => {
            let (header, _) = read_snapshot(&snapshot.path)?;
            ChainStart {
                seq: header.seq,
                checksum: header.checksum,
            }
        }
        None => ChainStart::default(),
    };
    let mut out = Vec::new();
    scan(
        &listing.segments,
        start,
        ScanMode::ReadOnly,
        &mut |segment, offset, frame| {
            if frame.seq < from_seq || out.len() >= limit {
                return Ok(());
            }
            let entry = Entry::try_from_slice(frame.payload).map_err(|err| {
                undecodable(
                    &segment.path,
                    offset,
                    frame.seq,
                    format!("record does not decode: {err}"),
                )
            })?;
            out.push(RecordInfo {
                seq: frame.seq,
                segment: segment.path.clone(),
                offset,
                bytes: frame.total_bytes() as u64,
                checksum: frame.checksum,
                kind: entry.command.kind(),
                events: entry.command.len(),
                events_ok: entry.results.iter().filter(|&&code| code == 0).count(),
                now_ns: entry.now_ns,
            });
            Ok(())
        },
    )?;
    Ok(out)
}

/// The ledger and its log, open on a directory.
pub struct DurableLedger {
    dir: PathBuf,
    ledger: Mutex<Ledger>,
    wal: Wal,
    /// Serializes snapshots; appends go on while one is written.
    snapshotting: Mutex<()>,
}

impl DurableLedger {
    /// Opens (creating when absent) a log directory: loads the newest snapshot, replays
    /// the log, truncates a torn tail, and refuses to start on corruption.
    pub fn open(
        dir: &Path,
        config: DurableConfig,
    ) -> Result<(DurableLedger, RecoveryReport), DurableError> {
        config.wal.check()?;
        std::fs::create_dir_all(dir).map_err(wal::io_error(|| {
            format!("create directory {}", dir.display())
        }))?;
        let (ledger, report) = recover(dir, config.limits, ScanMode::Repair)?;
        for tmp in list_dir(dir)?.temporaries {
            std::fs::remove_file(&tmp)
                .map_err(wal::io_error(|| format!("remove {}", tmp.display())))?;
        }
        let wal = Wal::open(
            dir,
            config.wal,
            report.scan.last_seq + 1,
            report.scan.last_checksum,
            report.scan.last_segment.as_deref(),
        )?;
        let durable = DurableLedger {
            dir: dir.to_path_buf(),
            ledger: Mutex::new(ledger),
            wal,
            snapshotting: Mutex::new(()),
        };
        Ok((durable, report))
    }

    /// Applies a command at `now_ns`, logs it, and returns its result codes and log
    /// sequence number once it is durable.
    pub fn execute(&self, now_ns: u64, command: Command) -> Result<(Vec<u16>, u64), DurableError> {
        let (results, seq) = self.submit(now_ns, command)?;
        self.wait_durable(seq)?;
        Ok((results, seq))
    }

    /// Returns once record `seq` and every record before it are durable: a caller that
    /// `submit`s several commands in a row waits once, for the last (one fdatasync
    /// covers them all, where `execute` each would wait for one each).
    pub fn wait_durable(&self, seq: u64) -> Result<(), DurableError> {
        Ok(self.wal.wait_durable(seq)?)
    }

    /// Applies a command at `now_ns` and queues its record for the log, without waiting
    /// for it to be durable: returns its result codes and log sequence number. Nothing
    /// it did may be acknowledged before `wait_durable` of that number has returned (a
    /// crash meanwhile loses it, and replay rebuilds the ledger without it).
    pub fn submit(&self, now_ns: u64, command: Command) -> Result<(Vec<u16>, u64), DurableError> {
        if command.len() > BATCH_MAX {
            return Err(LedgerError::BatchTooLarge {
                len: command.len(),
                max: BATCH_MAX,
            }
            .into());
        }
        // The record is borsh's encoding of `Entry { now_ns, command, results }`, which
        // is the three encodings one after the other: the command is encoded once,
        // before it is applied, so a record over the bound is refused with memory as it was.
        let mut bytes = Vec::with_capacity(64 + 128 * command.len());
        bytes.extend_from_slice(&now_ns.to_le_bytes());
        borsh::to_writer(&mut bytes, &command).expect("in-memory encoding");
        let bytes_max = bytes.len() + 4 + 2 * command.len();
        if bytes_max > RECORD_BYTES_MAX {
            return Err(WalError::RecordTooLarge {
                bytes: bytes_max,
                max: RECORD_BYTES_MAX,
            }
            .into());
        }
        let (results, seq) = {
            let mut ledger = self.lock()?;
            let results = ledger.apply(now_ns, &command)?;
            borsh::to_writer(&mut bytes, &results).expect("in-memory encoding");
            let seq = self.wal.enqueue(&bytes)?;
            (results, seq)
        };
        Ok((results, seq))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Ledger>, DurableError> {
        // After a log failure the memory may hold effects that never reached the disk;
        // nobody may read or extend them.
        if let Some(cause) = self.wal.poisoned() {
            return Err(WalError::Poisoned { cause }.into());
        }
        Ok(self.ledger.lock().expect("ledger lock poisoned by a panic"))
    }

    /// Runs a read against the ledger (refused once the log is poisoned).
    pub fn read<T>(&self, f: impl FnOnce(&Ledger) -> T) -> Result<T, DurableError> {
        let ledger = self.lock()?;
        Ok(f(&ledger))
    }

    /// What the log has written since the ledger was opened.
    pub fn wal_stats(&self) -> WalStatsSnapshot {
        self.wal.stats()
    }

    /// The last log sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.wal.last().0
    }

    /// Writes a snapshot of everything logged so far, then removes the older snapshots
    /// and the segments it covers. Returns the last record it includes (0: nothing yet).
    pub fn snapshot(&self) -> Result<u64, DurableError> {
        let _one_at_a_time = self.snapshotting.lock().expect("snapshot lock");
        let (mut image, seq, checksum) = {
            let ledger = self.lock()?;
            let (seq, checksum) = self.wal.last();
            // The next record opens a new segment, so the next snapshot can remove this one.
            self.wal.rotate_next();
            (ledger.image_unsorted(), seq, checksum)
        };
        if seq == 0 {
            return Ok(0);
        }
        image.sort();
        // A snapshot must never hold a record the log could lose.
        self.wal.wait_durable(seq)?;
        let body = image.encode();
        let path = write_snapshot(&self.dir, SnapshotHeader { seq, checksum }, &body)?;
        let listing = list_dir(&self.dir)?;
        let mut removed = false;
        for old in listing
            .snapshots
            .iter()
            .filter(|s| s.path != path && s.seq < seq)
        {
            remove(&old.path)?;
            removed = true;
        }
        for pair in listing.segments.windows(2) {
            if pair[1].seq <= seq + 1 {
                remove(&pair[0].path)?;
                removed = true;
            }
        }
        if removed {
            wal::sync_dir(&self.dir)?;
        }
        Ok(seq)
    }
}

fn remove(path: &Path) -> Result<(), WalError> {
    std::fs::remove_file(path).map_err(wal::io_error(|| format!("remove {}", path.display())))
}
