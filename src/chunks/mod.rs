//! Content-defined chunks, repository format 2 (docs/FORMAT.md sections
//! 17 to 19): cutting content into chunks ([`cut`]), naming them with the
//! keyed id, sealing them into packs ([`pack`]) and the index that says
//! which pack holds which chunk ([`index`]). No store here: callers move
//! the bytes, so this is tested without one.

pub mod cut;
pub mod index;
pub mod known;
pub mod pack;
pub mod storage;
pub mod write;

use std::fmt;

use zeroize::Zeroizing;

use crate::crypto::MasterKey;

/// A chunk's id: keyed BLAKE3 of its plaintext under the id key (17.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// In JSON (file lists, manifests): 64 lowercase hex digits.
impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).expect("64 hex digits");
        s.serialize_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom("a chunk id is 64 hex digits"))
    }
}

impl std::str::FromStr for ChunkId {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)?;
        Ok(ChunkId(b))
    }
}

/// The keys format 2 derives from the master key (17.1). Holding this, and
/// not the master key, is what a put-only writer will do (section 24).
pub struct ChunkKeys {
    id: Zeroizing<[u8; 32]>,
    /// Gear table seed of the chunker (17.2).
    pub chunker_seed: u64,
    pack: Zeroizing<[u8; 32]>,
    index: Zeroizing<[u8; 32]>,
}

impl ChunkKeys {
    pub fn derive(master: &MasterKey, repo_id: &str) -> ChunkKeys {
        let seed = master.subkey(repo_id, "chunker-seed");
        ChunkKeys {
            id: master.subkey(repo_id, "chunk-id"),
            chunker_seed: u64::from_be_bytes(seed[..8].try_into().expect("8 bytes")),
            pack: master.subkey(repo_id, "pack"),
            index: master.subkey(repo_id, "index"),
        }
    }

    /// The id of a chunk with this plaintext: BLAKE3 in keyed mode under
    /// the id key (section 17.3).
    pub fn id_of(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    pub(crate) fn pack_key(&self) -> &[u8; 32] {
        &self.pack
    }

    /// Seals index objects and prune marks (sections 19, 23).
    pub(crate) fn index_key(&self) -> &[u8; 32] {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The master key and repository id of the format-2 test vectors.
    pub(crate) fn vector_keys() -> ChunkKeys {
        ChunkKeys::derive(
            &MasterKey::from_bytes([7u8; 32]),
            "00112233445566778899aabbccddeeff",
        )
    }

    /// Incompressible test bytes (xorshift64), the same for the same seed.
    pub(crate) fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunk_ids_are_keyed_and_stable() {
        let k = vector_keys();
        let a = k.id_of(b"hello");
        assert_eq!(a, k.id_of(b"hello"));
        assert_ne!(a, k.id_of(b"hellp"));
        // Another repository's keys name the same bytes differently.
        let other = ChunkKeys::derive(
            &MasterKey::from_bytes([7u8; 32]),
            "ffeeddccbbaa99887766554433221100",
        );
        assert_ne!(a, other.id_of(b"hello"));
        assert_eq!(a.to_string().parse::<ChunkId>().unwrap(), a);
    }
}
