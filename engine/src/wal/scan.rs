//! Reading a log directory: which files are there, and every record in order, with
//! the line between a torn tail (truncate and report) and corruption (refuse).
//!
//! A crash mid-write can only damage the end of the newest segment: the writer syncs
//! a segment before it starts the next one and never writes into the middle of a file.
//! So a broken record is a torn tail when it is in the last segment and no valid
//! record follows it; anywhere else it is corruption and recovery stops, naming the
//! file and offset. A bit flip inside the very last record looks exactly like a torn
//! write and is treated as one (truncated and reported with its reason), as in any
//! log without redundant headers.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::frame::{self, Frame, HEADER_BYTES};
use super::{io_error, FileAt, WalError};

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The file name of the snapshot that includes records up to `seq`.
pub fn snapshot_name(seq: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{seq:020}{SNAPSHOT_SUFFIX}")
}

fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files in a directory, each list sorted by sequence number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirListing {
    pub segments: Vec<FileAt>,
    pub snapshots: Vec<FileAt>,
    /// Snapshots that were being written when the process stopped.
    pub temporaries: Vec<PathBuf>,
}

/// Lists the log files of `dir`; other files are ignored.
pub fn list_dir(dir: &Path) -> Result<DirListing, WalError> {
    let mut listing = DirListing::default();
    let entries =
        std::fs::read_dir(dir).map_err(io_error(|| format!("list directory {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(|| format!("list directory {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some(seq) = parse_name(name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
            listing.segments.push(FileAt { path, seq });
        } else if let Some(seq) = parse_name(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push(FileAt { path, seq });
        } else if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            listing.temporaries.push(path);
        }
    }
    listing.segments.sort_by_key(|f| f.seq);
    listing.snapshots.sort_by_key(|f| f.seq);
    Ok(listing)
}

/// Where the chain of records must pick up: after the snapshot's last record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainStart {
    /// The last record the snapshot includes (0: no snapshot).
    pub seq: u64,
    /// That record's checksum.
    pub checksum: u32,
}

/// Whether a scan may truncate a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanMode {
    /// `quickpay wal verify` and `inspect`: report, change nothing.
    ReadOnly,
    /// Recovery at start: truncate the torn tail (and fsync) so appends follow valid data.
    Repair,
}

/// A broken record at the end of the log, left by a crash mid-write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    pub offset: u64,
    /// Bytes from `offset` to the end of the segment (dropped in repair mode).
    pub bytes: u64,
    pub reason: String,
}

/// A broken record where a crash cannot have left one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub path: PathBuf,
    pub offset: u64,
    /// The record that was expected there (0 when unknown).
    pub seq: u64,
    pub reason: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corruption in {} at offset {} (record {}): {}",
            self.path.display(),
            self.offset,
            self.seq,
            self.reason
        )
    }
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub segments: usize,
    /// Valid records read (including ones a snapshot already covers).
    pub records: u64,
    pub first_seq: u64,
    /// The last valid record (the snapshot's when the log holds nothing newer).
    pub last_seq: u64,
    pub last_checksum: u32,
    pub torn_tail: Option<TornTail>,
    /// The newest segment, which appends continue.
    pub last_segment: Option<PathBuf>,
}

fn corruption(path: &Path, offset: usize, seq: u64, reason: String) -> WalError {
    WalError::Corruption(Corruption {
        path: path.to_path_buf(),
        offset: offset as u64,
        seq,
        reason,
    })
}

/// Whether a valid frame with a sequence number of at least `min_seq` starts anywhere
/// after `pos`: the proof that the broken record at `pos` is not the tail.
fn valid_frame_after(data: &[u8], pos: usize, min_seq: u64) -> bool {
    let max_seq = min_seq.saturating_add((data.len() / HEADER_BYTES) as u64);
    (pos + 1..data.len().saturating_sub(HEADER_BYTES - 1)).any(|p| {
        // The sequence-number window rejects almost every offset before the checksum
        // is computed, which keeps this scan linear in practice.
        frame::peek_seq(&data[p..]).is_some_and(|seq| (min_seq..=max_seq).contains(&seq))
            && frame::decode(&data[p..]).is_ok()
    })
}

/// Reads every record of `segments` in order, checking the chain from `start`, and
/// calls `visit` with each valid one (those the snapshot covers too; the caller
/// filters by `seq`).
pub fn scan(
    segments: &[FileAt],
    start: ChainStart,
    mode: ScanMode,
    visit: &mut dyn FnMut(&FileAt, u64, &Frame<'_>) -> Result<(), WalError>,
) -> Result<ScanReport, WalError> {
    let mut report = ScanReport {
        segments: segments.len(),
        last_seq: start.seq,
        last_checksum: start.checksum,
        last_segment: segments.last().map(|s| s.path.clone()),
        ..ScanReport::default()
    };
    // The previous record; with no snapshot, the first record must be 1 linked to 0.
    let mut prev: Option<(u64, u32)> = (start.seq == 0).then_some((0, 0));
    for (index, segment) in segments.iter().enumerate() {
        let path = &segment.path;
        let data =
            std::fs::read(path).map_err(io_error(|| format!("read segment {}", path.display())))?;
        let mut pos = 0;
        let mut first_in_segment = true;
        while pos < data.len() {
            let expected = prev.map_or(segment.seq, |(seq, _)| seq + 1);
            let frame = match frame::decode(&data[pos..]) {
                Ok(frame) => frame,
                Err(err) => {
                    let last = index + 1 == segments.len();
                    if !last || valid_frame_after(&data, pos, expected) {
                        return Err(corruption(path, pos, expected, err.to_string()));
                    }
                    let tail = TornTail {
                        segment: path.clone(),
                        offset: pos as u64,
                        bytes: (data.len() - pos) as u64,
                        reason: err.to_string(),
                    };
                    if mode == ScanMode::Repair {
                        truncate(path, pos as u64)?;
                    }
                    report.torn_tail = Some(tail);
                    break;
                }
            };
            if first_in_segment && frame.seq != segment.seq {
                let reason = format!(
                    "segment named for record {} starts with {}",
                    segment.seq, frame.seq
                );
                return Err(corruption(path, pos, segment.seq, reason));
            }
            first_in_segment = false;
            if let Some((seq, checksum)) = prev {
                if frame.seq != seq + 1 || frame.prev_checksum != checksum {
                    let reason = format!(
                        "record {} (linked to {:#010x}) does not follow record {seq} ({checksum:#010x})",
                        frame.seq, frame.prev_checksum
                    );
                    return Err(corruption(path, pos, seq + 1, reason));
                }
            } else if frame.seq > start.seq + 1 {
                let reason = format!(
                    "records {}..{} are missing between the snapshot and the log",
                    start.seq + 1,
                    frame.seq
                );
                return Err(corruption(path, pos, start.seq + 1, reason));
            } else if frame.seq == start.seq + 1 && frame.prev_checksum != start.checksum {
                // The log kept only what follows the snapshot: its first record must link
                // to the snapshot's last one.
                let reason = format!(
                    "record {} (linked to {:#010x}) does not follow the snapshot's record {} ({:#010x})",
                    frame.seq, frame.prev_checksum, start.seq, start.checksum
                );
                return Err(corruption(path, pos, frame.seq, reason));
            }
            if start.seq != 0 && frame.seq == start.seq && frame.checksum != start.checksum {
                let reason = "the snapshot and the log disagree about this record".to_string();
                return Err(corruption(path, pos, frame.seq, reason));
            }
            visit(segment, pos as u64, &frame)?;
            if report.records == 0 {
                report.first_seq = frame.seq;
            }
            report.records += 1;
            prev = Some((frame.seq, frame.checksum));
            pos += frame.total_bytes();
        }
    }
    if let Some((seq, checksum)) = prev {
        if seq < start.seq {
            let path = segments
                .last()
                .map_or_else(PathBuf::new, |s| s.path.clone());
            let reason = format!(
                "the log ends at record {seq}, before the snapshot's {}",
                start.seq
            );
            return Err(corruption(&path, 0, seq + 1, reason));
        }
        if seq > start.seq || start.seq == 0 {
            report.last_seq = seq;
            report.last_checksum = checksum;
        }
    }
    Ok(report)
}

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(|| {
            format!("open {} to truncate its torn tail", path.display())
        }))?;
    file.set_len(len)
        .map_err(io_error(|| format!("truncate {}", path.display())))?;
    file.sync_all().map_err(io_error(|| {
        format!("fsync {} after truncation", path.display())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_at(dir: &Path, first_seq: u64, prev: u32, count: u64) -> FileAt {
        let mut bytes = Vec::new();
        let mut prev = prev;
        for seq in first_seq..first_seq + count {
            prev = frame::encode(&mut bytes, seq, prev, b"payload");
        }
        let path = dir.join(segment_name(first_seq));
        std::fs::write(&path, bytes).unwrap();
        FileAt {
            path,
            seq: first_seq,
        }
    }

    fn scan_all(segments: &[FileAt], start: ChainStart) -> Result<ScanReport, WalError> {
        scan(segments, start, ScanMode::ReadOnly, &mut |_, _, _| Ok(()))
    }

    #[test]
    fn the_first_record_after_a_snapshot_must_link_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let segments = [segment_at(dir.path(), 5, 0xabcd, 3)];
        let report = scan_all(
            &segments,
            ChainStart {
                seq: 4,
                checksum: 0xabcd,
            },
        )
        .unwrap();
        assert_eq!((report.records, report.last_seq), (3, 7));
        let err = scan_all(
            &segments,
            ChainStart {
                seq: 4,
                checksum: 0xabce,
            },
        )
        .unwrap_err();
        assert!(matches!(err, WalError::Corruption(c) if c.seq == 5 && c.offset == 0));
        let err = scan_all(
            &segments,
            ChainStart {
                seq: 3,
                checksum: 0xabcd,
            },
        )
        .unwrap_err();
        assert!(matches!(err, WalError::Corruption(c) if c.reason.contains("missing")));
    }

    #[test]
    fn a_segment_must_start_with_the_record_it_is_named_for() {
        let dir = tempfile::tempdir().unwrap();
        let first = segment_at(dir.path(), 1, 0, 2);
        let mut second = segment_at(dir.path(), 3, 0, 1);
        second.seq = 4;
        let err = scan_all(&[first, second], ChainStart::default()).unwrap_err();
        assert!(matches!(err, WalError::Corruption(c) if c.reason.contains("named for")));
    }
}
