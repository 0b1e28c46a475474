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
//!
//! Retention: the ledger's clock never runs backwards, so creation order is timestamp
//! order, and the transfers older than the retention horizon are a prefix of the
//! table. `retire_before` drops that prefix (a chunk's memory goes once the prefix has
//! passed it), except what the ledger says must stay (`Keep`): for a while (a hold
//! still pending, a transfer of a payment not finished) in a small side table looked
//! at again at each sweep, or for good in another that no sweep reads. Which transfers
//! are held depends only on their timestamps and the ledger's state, never on the
//! order they are stored in, so a ledger restored from a snapshot holds exactly what
//! the live one does.

use super::idmap::IdMap;
use super::types::Transfer;

/// Transfers per chunk: 65,536 x 144 bytes, about 9.4 MB, allocated when the previous
/// chunk is full (its pages are touched as it fills, not zeroed up front).
const CHUNK: usize = 1 << 16;

/// The index's marks for a transfer kept past the horizon: for a while, or for good.
const HELD_OVER: u64 = u64::MAX;
const KEPT: u64 = u64::MAX - 1;

/// What becomes of a transfer older than the retention horizon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Forgotten now.
    No,
    /// Kept aside and asked again at the next sweep.
    ForNow,
    /// Kept for good (its id is its only guard against being applied twice).
    Always,
}

/// The transfers, by id, in creation order.
#[derive(Clone, Debug, Default)]
pub struct TransferTable {
    index: IdMap<u64>,
    chunks: Vec<Vec<Transfer>>,
    /// Positions below `front` are retired; the next transfer goes to `end`.
    front: usize,
    end: usize,
    /// Transfers older than the horizon kept for now, asked again at every sweep.
    held_over: IdMap<Transfer>,
    /// Transfers older than the horizon kept for good; no sweep reads them.
    kept: IdMap<Transfer>,
}

impl TransferTable {
    /// Transfers held.
    pub fn len(&self) -> usize {
        self.end - self.front + self.held_over.len() + self.kept.len()
    }

    /// The transfer with this id.
    pub fn get(&self, id: &u128) -> Option<&Transfer> {
        match *self.index.get(id)? {
            HELD_OVER => self.held_over.get(id),
            KEPT => self.kept.get(id),
            at => Some(&self.chunks[at as usize / CHUNK][at as usize % CHUNK]),
        }
    }

    /// Adds a transfer whose id is not held yet (the caller checked).
    pub fn insert(&mut self, transfer: Transfer) {
        let at = self.end;
        let old = self.index.insert(transfer.input.id, at as u64);
        assert!(old.is_none(), "a transfer id is inserted once");
        if at % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk").push(transfer);
        self.end += 1;
    }

    /// Removes the transfer created last, which must be `id`: the undo of a linked
    /// chain runs backwards, so it only ever takes back the newest transfer.
    pub fn remove_last(&mut self, id: &u128) {
        let at = self.index.remove(id).expect("undo of a known transfer") as usize;
        assert_eq!(at + 1, self.end, "undo takes back the newest transfer only");
        assert!(at >= self.front, "undo of a retired transfer");
        let chunk = self.chunks.last_mut().expect("a chunk");
        chunk.pop();
        if chunk.is_empty() {
            self.chunks.pop();
        }
        self.end -= 1;
    }

    /// Forgets every transfer created before `horizon_ns` that `keep` lets go (asking
    /// again about those it kept for now). Returns the ids forgotten, so the ledger can
    /// drop what it keeps about them.
    pub fn retire_before(
        &mut self,
        horizon_ns: u64,
        mut keep: impl FnMut(&Transfer) -> Keep,
    ) -> Vec<u128> {
        let mut retired = Vec::new();
        while self.front < self.end {
            let at = self.front;
            let transfer = self.chunks[at / CHUNK][at % CHUNK];
            if transfer.timestamp_ns >= horizon_ns {
                break;
            }
            let id = transfer.input.id;
            match keep(&transfer) {
                Keep::No => {
                    self.index.remove(&id);
                    retired.push(id);
                }
                Keep::ForNow => {
                    self.index.insert(id, HELD_OVER);
                    self.held_over.insert(id, transfer);
                }
                Keep::Always => {
                    self.index.insert(id, KEPT);
                    self.kept.insert(id, transfer);
                }
            }
            self.front += 1;
            if self.front % CHUNK == 0 {
                // Every position of that chunk is retired: its memory goes now.
                self.chunks[self.front / CHUNK - 1] = Vec::new();
            }
        }
        if self.held_over.len() > 0 {
            // Only those older than this horizon: should the window have grown since
            // they were set aside, the rest stays, as in a ledger restored meanwhile.
            let ended: Vec<u128> = self
                .held_over
                .values()
                .filter(|t| t.timestamp_ns < horizon_ns && keep(t) == Keep::No)
                .map(|t| t.input.id)
                .collect();
            for id in &ended {
                self.held_over.remove(id);
                self.index.remove(id);
            }
            retired.extend(ended);
        }
        retired
    }

    /// Every transfer held: the retained ones in creation order, then those kept aside.
    pub fn values(&self) -> impl Iterator<Item = &Transfer> {
        let (front, end) = (self.front, self.end);
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(c, chunk)| {
                let from = front.saturating_sub(c * CHUNK).min(chunk.len());
                let to = end.saturating_sub(c * CHUNK).min(chunk.len());
                chunk[from..to.max(from)].iter()
            })
            .chain(self.held_over.values())
            .chain(self.kept.values())
    }
}

impl FromIterator<Transfer> for TransferTable {
    /// A table of these transfers, stored in timestamp order (then by id), which is
    /// the order the live ledger created them in as far as retention can tell.
    fn from_iter<I: IntoIterator<Item = Transfer>>(iter: I) -> Self {
        let mut transfers: Vec<Transfer> = iter.into_iter().collect();
        transfers.sort_unstable_by_key(|t| (t.timestamp_ns, t.input.id));
        let mut table = TransferTable::default();
        for transfer in transfers {
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
    fn retiring_past_a_chunk_frees_it_and_keeps_what_is_asked_for() {
        let n = CHUNK as u128 + 10;
        // Transfer k is created at time k; 5 is kept for now, 6 for good.
        let mut table: TransferTable = (1..=n)
            .map(|id| Transfer {
                timestamp_ns: id as u64,
                ..transfer(id)
            })
            .collect();
        let policy = |t: &Transfer| match t.input.id {
            5 => Keep::ForNow,
            6 => Keep::Always,
            _ => Keep::No,
        };
        let horizon = CHUNK as u64 + 3; // transfers 1..=CHUNK+2 are older
        assert_eq!(table.retire_before(horizon, policy).len(), CHUNK);
        assert_eq!(
            table.len(),
            8 + 2,
            "the eight younger ones and the two kept"
        );
        assert!(
            table.chunks[0].capacity() == 0,
            "the first chunk's memory is gone"
        );
        assert!(table.get(&4).is_none() && table.get(&7).is_none());
        assert_eq!(table.get(&5).unwrap().amount_minor, 5);
        assert_eq!(table.get(&6).unwrap().amount_minor, 6);
        let mut held: Vec<u128> = table.values().map(|t| t.input.id).collect();
        held.sort_unstable();
        let expected: Vec<u128> = [5, 6].into_iter().chain(CHUNK as u128 + 3..=n).collect();
        assert_eq!(held, expected);
        // The newest can still be taken back, and new ones added.
        table.remove_last(&n);
        table.insert(transfer(n + 1));
        assert_eq!(table.len(), 10);
        // Asked again: 5 goes once let go, but only past the horizon of that sweep; 6
        // is never asked again.
        assert!(
            table.retire_before(5, |_| Keep::No).is_empty(),
            "5 is not older than 5"
        );
        assert_eq!(table.retire_before(6, |_| Keep::No), vec![5]);
        assert!(table.get(&5).is_none() && table.get(&6).is_some());
    }

    #[test]
    #[should_panic(expected = "newest transfer only")]
    fn taking_back_an_older_transfer_is_a_bug() {
        let mut table: TransferTable = (1..=3).map(transfer).collect();
        table.remove_last(&2);
    }
}
