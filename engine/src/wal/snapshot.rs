//! Snapshot files: the ledger's state after a given record, written atomically.
//!
//! Layout, little endian: magic `QPSNAP01`, seq u64, chain checksum u32, reserved u32,
//! body length u64, body, then CRC32C of everything before it. Written to a `.tmp`
//! file, fsynced, renamed into place, and the directory fsynced: a crash at any point
//! leaves either the old snapshot or the new one, never half of one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::scan::snapshot_name;
use super::{io_error, sync_dir, Corruption, WalError};

const MAGIC: &[u8; 8] = b"QPSNAP01";
const HEADER_BYTES: usize = 32;

/// The largest snapshot read back. At the bound: the snapshot is reported as
/// corruption rather than read (a larger one means a broken length, or tables far
/// above their bounds).
pub const SNAPSHOT_BYTES_MAX: u64 = 16 << 30;

/// What a snapshot says about the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The last record the snapshot includes.
    pub seq: u64,
    /// That record's checksum, where the log's chain continues.
    pub checksum: u32,
}

/// Writes a snapshot atomically; returns its path.
pub fn write_snapshot(
    dir: &Path,
    header: SnapshotHeader,
    body: &[u8],
) -> Result<PathBuf, WalError> {
    let path = dir.join(snapshot_name(header.seq));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(header.seq)));
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&header.seq.to_le_bytes());
    bytes.extend_from_slice(&header.checksum.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(body);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_error(|| format!("create {}", tmp.display())))?;
    file.write_all(&bytes)
        .map_err(io_error(|| format!("write {}", tmp.display())))?;
    file.sync_all()
        .map_err(io_error(|| format!("fsync {}", tmp.display())))?;
    drop(file);
    std::fs::rename(&tmp, &path)
        .map_err(io_error(|| format!("rename {} into place", tmp.display())))?;
    sync_dir(dir)?;
    Ok(path)
}

fn bad(path: &Path, reason: &str) -> WalError {
    WalError::Corruption(Corruption {
        path: path.to_path_buf(),
        offset: 0,
        seq: 0,
        reason: format!("snapshot: {reason}"),
    })
}

/// Reads and checks a snapshot; returns its header and body.
pub fn read_snapshot(path: &Path) -> Result<(SnapshotHeader, Vec<u8>), WalError> {
    let mut file = File::open(path).map_err(io_error(|| format!("open {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io_error(|| format!("stat {}", path.display())))?
        .len();
    if len > SNAPSHOT_BYTES_MAX {
        return Err(bad(path, "larger than SNAPSHOT_BYTES_MAX"));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(io_error(|| format!("read {}", path.display())))?;
    if bytes.len() < HEADER_BYTES + 4 || &bytes[..8] != MAGIC {
        return Err(bad(path, "not a snapshot file (magic or length)"));
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(bad(path, "checksum mismatch"));
    }
    let seq = u64::from_le_bytes(content[8..16].try_into().expect("8 bytes"));
    let checksum = u32::from_le_bytes(content[16..20].try_into().expect("4 bytes"));
    let body_len = u64::from_le_bytes(content[24..32].try_into().expect("8 bytes"));
    if body_len != (content.len() - HEADER_BYTES) as u64 {
        return Err(bad(path, "body length does not match the file"));
    }
    Ok((
        SnapshotHeader { seq, checksum },
        content[HEADER_BYTES..].to_vec(),
    ))
}
