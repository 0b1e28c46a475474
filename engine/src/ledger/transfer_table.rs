//! The transfers: held in fixed-size chunks in the order they were created, found
//! through an id index that holds only each transfer's position.
//!
//! A transfer is 144 bytes. Kept as the values of a hash table, every doubling of that
//! table copied all of them into freshly zeroed pages, and the kernel's page zeroing
//! alone was about a third of the ledger's CPU at a million transfers a second (perf,
//! benches/RESULTS.md). Here the table holds 24-byte buckets (id, position), and a
//! transfer is written once, to the end of the last chunk: a chunk never moves, so
//! growing costs one allocation per chunk and the index's doublings are six times
//! smaller.

use super::idmap::IdMap;
use super::types::Transfer;

/// Transfers per chunk: 65,536 x 144 bytes, about 9.4 MB, allocated when the previous
/// chunk is full (its pages are touched as it fills, not zeroed up front).
const CHUNK: usize = 1 << 16;

/// The transfers, by id, in creation order.
#[derive(Clone, Debug, Default)]
pub struct TransferTable {
    index: IdMap<u64>,
    chunks: Vec<Vec<Transfer>>,
    len: usize,
}

impl TransferTable {
    /// Transfers held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The transfer with this id.
    pub fn get(&self, id: &u128) -> Option<&Transfer> {
        let at = *self.index.get(id)? as usize;
        Some(&self.chunks[at / CHUNK][at % CHUNK])
    }

    /// Adds a transfer whose id is not held yet (the caller checked).
    pub fn insert(&mut self, transfer: Transfer) {
        let at = self.len;
        let old = self.index.insert(transfer.input.id, at as u64);
        assert!(old.is_none(), "a transfer id is inserted once");
        if at % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk").push(transfer);
        self.len += 1;
    }

    /// Removes the transfer created last, which must be `id`: the undo of a linked
    /// chain runs backwards, so it only ever takes back the newest transfer.
    pub fn remove_last(&mut self, id: &u128) {
        let at = self.index.remove(id).expect("undo of a known transfer") as usize;
        assert_eq!(at + 1, self.len, "undo takes back the newest transfer only");
        let chunk = self.chunks.last_mut().expect("a chunk");
        chunk.pop();
        if chunk.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
    }

    /// Every transfer, in creation order.
    pub fn values(&self) -> impl Iterator<Item = &Transfer> {
        self.chunks.iter().flatten()
    }
}

impl FromIterator<Transfer> for TransferTable {
    fn from_iter<I: IntoIterator<Item = Transfer>>(iter: I) -> Self {
        let mut table = TransferTable::default();
        for transfer in iter {
            table.insert(transfer);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::types::TransferInput;

    fn transfer(id: u128) -> Transfer {
        Transfer {
            input: TransferInput {
                id,
                ..TransferInput::default()
            },
            debit_account_id: 1,
            credit_account_id: 2,
            currency: 978,
            amount_minor: id as i64,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn finds_every_transfer_across_chunks_and_takes_back_the_newest() {
        let n = CHUNK as u128 + 10;
        let mut table: TransferTable = (1..=n).map(|id| transfer(id << 64 | id)).collect();
        assert_eq!(table.len(), n as usize);
        for id in [1, CHUNK as u128, CHUNK as u128 + 1, n] {
            assert_eq!(table.get(&(id << 64 | id)).unwrap().amount_minor, id as i64);
        }
        assert!(table.get(&(n + 1)).is_none());
        // Back over the chunk boundary: the emptied chunk goes, the ids are gone.
        for id in (CHUNK as u128..=n).rev() {
            table.remove_last(&(id << 64 | id));
        }
        assert_eq!((table.len(), table.chunks.len()), (CHUNK - 1, 1));
        assert!(table.get(&(n << 64 | n)).is_none());
        table.insert(transfer(7));
        assert_eq!(table.get(&7).unwrap().amount_minor, 7);
        assert_eq!(table.values().count(), CHUNK);
    }

    #[test]
    #[should_panic(expected = "newest transfer only")]
    fn taking_back_an_older_transfer_is_a_bug() {
        let mut table: TransferTable = (1..=3).map(transfer).collect();
        table.remove_last(&2);
    }
}
