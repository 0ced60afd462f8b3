//! "Is this chunk stored?": what a writer asks of every chunk it cuts,
//! answered in at most 16 bytes of memory per chunk of the repository
//! (issue 13), so that a repository of 10 million chunks (about 10 TB)
//! needs about 120 MB, not gigabytes.
//!
//! It keeps the first 12 bytes (96 bits) of each id, in a sorted array, and
//! the ids this run added in a small set beside it. A new chunk whose prefix
//! matches a stored chunk's would not be uploaded: with N chunks stored, the
//! chance is N / 2^96 per new chunk, about 2^-73 for N = 10 million, and
//! ids are keyed (FORMAT.md 17.3), so nobody without the key can aim at a
//! match. `verify` would find such a chunk missing.

use std::collections::HashSet;

use super::ChunkId;

pub const PREFIX: usize = 12;

type Prefix = [u8; PREFIX];

fn prefix(id: &ChunkId) -> Prefix {
    id.0[..PREFIX].try_into().expect("12 bytes")
}

/// The chunks a writer may deduplicate against.
#[derive(Default)]
pub struct KnownChunks {
    sorted: Vec<Prefix>,
    added: HashSet<Prefix>,
}

impl KnownChunks {
    /// From the ids of every chunk in the repository's indexes (except
    /// those in marked packs: FORMAT.md 23.2), in any order.
    pub fn from_ids(ids: impl IntoIterator<Item = ChunkId>) -> KnownChunks {
        let mut sorted: Vec<Prefix> = ids.into_iter().map(|i| prefix(&i)).collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.shrink_to_fit();
        KnownChunks {
            sorted,
            added: HashSet::new(),
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        let p = prefix(id);
        self.sorted.binary_search(&p).is_ok() || self.added.contains(&p)
    }

    /// Records a chunk this run stored. `false` if it was known already.
    pub fn insert(&mut self, id: &ChunkId) -> bool {
        !self.contains(id) && self.added.insert(prefix(id))
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, for the memory budget.
    pub fn memory(&self) -> usize {
        self.sorted.capacity() * PREFIX + self.added.capacity() * (PREFIX + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> ChunkId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        b[31] = 0xaa;
        ChunkId(b)
    }

    #[test]
    fn stored_and_added_chunks_are_known() {
        let mut k = KnownChunks::from_ids((0..1000).rev().map(id).chain([id(5)]));
        assert_eq!(k.len(), 1000);
        assert!(k.contains(&id(0)) && k.contains(&id(999)));
        assert!(!k.contains(&id(1000)));
        assert!(k.insert(&id(1000)));
        assert!(!k.insert(&id(1000)), "a chunk is stored once per run");
        assert!(!k.insert(&id(3)), "a stored chunk is not stored again");
        assert!(k.contains(&id(1000)));
    }

    #[test]
    fn a_million_chunks_fit_in_16_bytes_each() {
        let k = KnownChunks::from_ids((0..1_000_000).map(id));
        assert!(k.memory() <= 16 * 1_000_000, "{} bytes", k.memory());
    }
}
