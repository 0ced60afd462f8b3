//! Packs (docs/FORMAT.md section 18): chunks compressed and sealed one by
//! one, so that one chunk can be read with a ranged GET, gathered into one
//! object with its own sealed table of contents, so that the index can be
//! rebuilt from packs alone. A pack is named by the SHA-256 of its bytes.

use aes_gcm::aead::{Aead, AeadInOut, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{ChunkId, ChunkKeys};
use crate::outcome::ErrorKind;

pub const MAGIC: &[u8; 8] = b"COFFERPK";
pub const LAYOUT_VERSION: u8 = 1;
/// Key mode 0: sealed with the pack key. Mode 1 is reserved (put-only).
pub const KEY_MODE_SYMMETRIC: u8 = 0;
pub const HEADER_LEN: usize = 44;
pub const ENTRY_LEN: usize = 48;
const TAG_LEN: usize = 16;
const BLOB_KEY_INFO: &[u8] = b"coffer/v2/pack-blob-key";
/// The largest pack a reader accepts (tentative).
pub const MAX_PACK: u64 = 256 << 20;
/// A writer closes a pack once it holds this much (tentative).
pub const PACK_TARGET: usize = 16 << 20;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobType {
    /// File or stream content.
    Data = 0,
    /// A source's file list (section 20).
    List = 1,
}

/// How a blob's plaintext is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// One table entry: where a chunk is in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: ChunkId,
    pub kind: BlobType,
    pub compression: Compression,
    pub offset: u32,
    /// Ciphertext and tag.
    pub stored_len: u32,
    /// The chunk's plaintext.
    pub raw_len: u32,
}

impl BlobEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.push(self.kind as u8);
        out.push(self.compression as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.stored_len.to_be_bytes());
        out.extend_from_slice(&self.raw_len.to_be_bytes());
    }

    pub fn decode(b: &[u8; ENTRY_LEN]) -> Result<BlobEntry, PackError> {
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let kind = match b[32] {
            0 => BlobType::Data,
            1 => BlobType::List,
            t => return Err(PackError::Entry(format!("unknown blob type {t}"))),
        };
        let compression = match b[33] {
            0 => Compression::None,
            1 => Compression::Zstd,
            c => return Err(PackError::Entry(format!("unknown compression {c}"))),
        };
        if b[34..36] != [0, 0] {
            return Err(PackError::Entry("reserved bytes are not zero".into()));
        }
        Ok(BlobEntry {
            id: ChunkId(b[..32].try_into().expect("32 bytes")),
            kind,
            compression,
            offset: u32_at(36),
            stored_len: u32_at(40),
            raw_len: u32_at(44),
        })
    }
}

/// Why a pack or one of its blobs cannot be read: all damage (or a pack of
/// a newer coffer), never a usage error.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("not a coffer pack (its first bytes are not COFFERPK)")]
    BadMagic,
    #[error("pack layout version {0}, which this coffer does not know; use a newer coffer")]
    NewerLayout(u8),
    #[error("pack key mode {0}, which this coffer does not know; use a newer coffer")]
    NewerKeyMode(u8),
    #[error("its header has non-zero reserved bytes")]
    Reserved,
    #[error("it is {0} bytes long, too short for a pack")]
    TooShort(u64),
    #[error("it is {0} bytes long, more than a pack may be")]
    TooLong(u64),
    #[error("its table of contents says it is {0} bytes long, which does not fit the pack")]
    TableLength(u32),
    #[error("its table of contents failed authentication")]
    TableAuthentication,
    #[error("a table entry is damaged: {0}")]
    Entry(String),
    #[error("its blobs do not tile the pack (blob {index} at {offset}, expected at {expected})")]
    Layout {
        index: usize,
        offset: u32,
        expected: u64,
    },
    #[error("chunk {0} failed authentication")]
    BlobAuthentication(ChunkId),
    #[error("chunk {id} claims {raw_len} bytes, more than a chunk may hold ({max})")]
    ChunkTooLarge { id: ChunkId, raw_len: u32, max: u32 },
    #[error("chunk {id} does not decompress to its {raw_len} bytes")]
    Decompress { id: ChunkId, raw_len: u32 },
    #[error("chunk {0}'s bytes do not match its id")]
    IdMismatch(ChunkId),
}

impl PackError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PackError::NewerLayout(_) | PackError::NewerKeyMode(_) => ErrorKind::Operational,
            _ => ErrorKind::Integrity,
        }
    }
}

fn blob_cipher(keys: &ChunkKeys, header: &[u8; HEADER_LEN]) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(&header[12..44]), keys.pack_key());
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(BLOB_KEY_INFO, okm.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(okm.as_slice()).expect("32-byte key")
}

/// A blob's nonce: four zero bytes and its offset in the pack.
fn blob_nonce(offset: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&(offset as u64).to_be_bytes());
    n
}

const TABLE_NONCE: [u8; 12] = [0xff; 12];

fn blob_aad(header: &[u8; HEADER_LEN], kind: BlobType, c: Compression, id: &ChunkId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + 34);
    aad.extend_from_slice(header);
    aad.push(kind as u8);
    aad.push(c as u8);
    aad.extend_from_slice(&id.0);
    aad
}

fn table_aad(header: &[u8; HEADER_LEN]) -> Vec<u8> {
    [header.as_slice(), b"table"].concat()
}

/// A pack being filled.
pub struct PackWriter {
    header: [u8; HEADER_LEN],
    cipher: Aes256Gcm,
    bytes: Vec<u8>,
    entries: Vec<BlobEntry>,
    level: i32,
}

/// A finished pack: its bytes, its name and its table.
pub struct SealedPack {
    pub id: [u8; 32],
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl SealedPack {
    /// `packs/<xy>/<pack id>` (section 16).
    pub fn object_name(&self) -> String {
        object_name(&self.id)
    }
}

pub fn object_name(id: &[u8; 32]) -> String {
    let h = hex::encode(id);
    format!("packs/{}/{h}", &h[..2])
}

impl PackWriter {
    /// A new pack with a random salt; chunks compressed at zstd `level`.
    pub fn new(keys: &ChunkKeys, level: i32) -> PackWriter {
        Self::with_salt(keys, crate::crypto::random_array(), level)
    }

    /// With a given salt: for test vectors only; a salt must never repeat.
    pub fn with_salt(keys: &ChunkKeys, salt: [u8; 32], level: i32) -> PackWriter {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = LAYOUT_VERSION;
        header[9] = KEY_MODE_SYMMETRIC;
        header[12..].copy_from_slice(&salt);
        // Allocated once: a pack closes before a chunk would take it past
        // the target (growing by doubling would reserve twice that).
        let mut bytes = Vec::with_capacity(PACK_TARGET + 64 * 1024);
        bytes.extend_from_slice(&header);
        PackWriter {
            cipher: blob_cipher(keys, &header),
            header,
            bytes,
            entries: Vec::new(),
            level,
        }
    }

    /// Adds a chunk: compressed when that makes it smaller, then sealed.
    pub fn add(&mut self, id: ChunkId, kind: BlobType, plaintext: &[u8]) {
        let compressed = if looks_incompressible(plaintext) {
            None
        } else {
            zstd::bulk::compress(plaintext, self.level).ok()
        };
        let (c, stored): (Compression, &[u8]) = match &compressed {
            Some(z) if z.len() < plaintext.len() => (Compression::Zstd, z),
            _ => (Compression::None, plaintext),
        };
        let offset = u32::try_from(self.bytes.len()).expect("a pack stays far below 4 GiB");
        // Sealed in place at the end of the pack: no copy of the chunk.
        let start = self.bytes.len();
        self.bytes.extend_from_slice(stored);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &Nonce::from(blob_nonce(offset)),
                &blob_aad(&self.header, kind, c, &id),
                (&mut self.bytes[start..]).into(),
            )
            .expect("AES-GCM encrypts any length below 64 GiB");
        self.bytes.extend_from_slice(&tag);
        self.entries.push(BlobEntry {
            id,
            kind,
            compression: c,
            offset,
            stored_len: (self.bytes.len() - start) as u32,
            raw_len: plaintext.len() as u32,
        });
    }

    /// Bytes so far (the header and the sealed blobs).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals the table, appends it and its length, and names the pack.
    pub fn finish(mut self) -> SealedPack {
        let mut table = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            e.encode(&mut table);
        }
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(TABLE_NONCE),
                Payload {
                    msg: &table,
                    aad: &table_aad(&self.header),
                },
            )
            .expect("AES-GCM encrypts any length below 64 GiB");
        self.bytes.extend_from_slice(&sealed);
        self.bytes
            .extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        SealedPack {
            id: Sha256::digest(&self.bytes).into(),
            bytes: self.bytes,
            entries: self.entries,
        }
    }
}

/// Bytes of a chunk tried before compressing all of it.
const SAMPLE: usize = 64 * 1024;

/// Whether a sample from the middle of a chunk (64 KiB, or half of a
/// smaller chunk; chunks under 4 KiB are always compressed) gains less than
/// 3 % at zstd's fastest level: media (JPEG, MP4, archives) then skips the
/// compressor, which would cost more than sealing. A chunk that the sample
/// misjudges is only stored larger than it could be; it reads the same.
fn looks_incompressible(plaintext: &[u8]) -> bool {
    if plaintext.len() < 4 * 1024 {
        return false;
    }
    let n = SAMPLE.min(plaintext.len() / 2);
    let mid = plaintext.len() / 2 - n / 2;
    let sample = &plaintext[mid..mid + n];
    zstd::bulk::compress(sample, 1).is_ok_and(|z| z.len() * 100 > sample.len() * 97)
}

/// Opens the blobs of one pack, given its header.
pub struct PackReader {
    header: [u8; HEADER_LEN],
    cipher: Aes256Gcm,
    max_chunk: u32,
}

impl PackReader {
    /// `max_chunk`: the repository's largest chunk (its `chunker` maximum).
    pub fn new(keys: &ChunkKeys, header: &[u8], max_chunk: u32) -> Result<PackReader, PackError> {
        let header: [u8; HEADER_LEN] = header
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(PackError::TooShort(header.len() as u64))?;
        if &header[..8] != MAGIC {
            return Err(PackError::BadMagic);
        }
        if header[8] != LAYOUT_VERSION {
            return Err(PackError::NewerLayout(header[8]));
        }
        if header[9] != KEY_MODE_SYMMETRIC {
            return Err(PackError::NewerKeyMode(header[9]));
        }
        if header[10..12] != [0, 0] {
            return Err(PackError::Reserved);
        }
        Ok(PackReader {
            cipher: blob_cipher(keys, &header),
            header,
            max_chunk,
        })
    }

    /// Reads a whole pack's table of contents (what `repair index` and
    /// deep checks use), checking that its blobs tile the pack.
    pub fn table(&self, pack: &[u8]) -> Result<Vec<BlobEntry>, PackError> {
        let len = pack.len() as u64;
        if len > MAX_PACK {
            return Err(PackError::TooLong(len));
        }
        if pack.len() < HEADER_LEN + TAG_LEN + 4 {
            return Err(PackError::TooShort(len));
        }
        let tl = u32::from_be_bytes(pack[pack.len() - 4..].try_into().expect("4 bytes"));
        let table_start = (pack.len() - 4)
            .checked_sub(tl as usize)
            .filter(|s| *s >= HEADER_LEN && (tl as usize) >= TAG_LEN)
            .ok_or(PackError::TableLength(tl))?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(TABLE_NONCE),
                Payload {
                    msg: &pack[table_start..pack.len() - 4],
                    aad: &table_aad(&self.header),
                },
            )
            .map_err(|_| PackError::TableAuthentication)?;
        if plain.len() % ENTRY_LEN != 0 {
            return Err(PackError::Entry(format!(
                "the table holds {} bytes, not a multiple of {ENTRY_LEN}",
                plain.len()
            )));
        }
        let mut expected = HEADER_LEN as u64;
        let mut entries = Vec::with_capacity(plain.len() / ENTRY_LEN);
        for (i, raw) in plain.chunks_exact(ENTRY_LEN).enumerate() {
            let e = BlobEntry::decode(raw.try_into().expect("entry length"))?;
            if e.offset as u64 != expected {
                return Err(PackError::Layout {
                    index: i,
                    offset: e.offset,
                    expected,
                });
            }
            expected += e.stored_len as u64;
            entries.push(e);
        }
        if expected != table_start as u64 {
            return Err(PackError::Layout {
                index: entries.len(),
                offset: table_start as u32,
                expected,
            });
        }
        Ok(entries)
    }

    /// Opens one blob (its `stored_len` bytes from `offset`), decompresses
    /// it and checks it against its id: only then are its bytes returned.
    pub fn open(
        &self,
        keys: &ChunkKeys,
        entry: &BlobEntry,
        sealed: &[u8],
    ) -> Result<Vec<u8>, PackError> {
        if entry.raw_len > self.max_chunk {
            return Err(PackError::ChunkTooLarge {
                id: entry.id,
                raw_len: entry.raw_len,
                max: self.max_chunk,
            });
        }
        let stored = self
            .cipher
            .decrypt(
                &Nonce::from(blob_nonce(entry.offset)),
                Payload {
                    msg: sealed,
                    aad: &blob_aad(&self.header, entry.kind, entry.compression, &entry.id),
                },
            )
            .map_err(|_| PackError::BlobAuthentication(entry.id))?;
        let plain =
            match entry.compression {
                Compression::None => stored,
                Compression::Zstd => zstd::bulk::decompress(&stored, entry.raw_len as usize)
                    .map_err(|_| PackError::Decompress {
                        id: entry.id,
                        raw_len: entry.raw_len,
                    })?,
            };
        if plain.len() != entry.raw_len as usize {
            return Err(PackError::Decompress {
                id: entry.id,
                raw_len: entry.raw_len,
            });
        }
        if keys.id_of(&plain) != entry.id {
            return Err(PackError::IdMismatch(entry.id));
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::vector_keys;
    use super::*;

    const MAX: u32 = 8 << 20;

    fn sample() -> (ChunkKeys, SealedPack, Vec<Vec<u8>>) {
        let k = vector_keys();
        let chunks = vec![
            b"compressible ".repeat(1000),
            (0..=255u8)
                .cycle()
                .take(3000)
                .map(|b| b.wrapping_mul(167))
                .collect(),
            Vec::new(),
        ];
        let mut w = PackWriter::with_salt(&k, [9u8; 32], 3);
        w.add(k.id_of(&chunks[0]), BlobType::Data, &chunks[0]);
        w.add(k.id_of(&chunks[1]), BlobType::List, &chunks[1]);
        w.add(k.id_of(&chunks[2]), BlobType::Data, &chunks[2]);
        (k, w.finish(), chunks)
    }

    #[test]
    fn a_pack_reads_back_by_its_table_and_by_ranged_reads() {
        let (k, p, chunks) = sample();
        assert_eq!(hex::encode(Sha256::digest(&p.bytes)), hex::encode(p.id));
        assert!(
            p.object_name()
                .starts_with(&format!("packs/{}/", &hex::encode(p.id)[..2]))
        );
        let r = PackReader::new(&k, &p.bytes[..HEADER_LEN], MAX).unwrap();
        let table = r.table(&p.bytes).unwrap();
        assert_eq!(table, p.entries);
        assert_eq!(table[0].compression, Compression::Zstd);
        for (e, want) in table.iter().zip(&chunks) {
            let blob = &p.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(&r.open(&k, e, blob).unwrap(), want);
        }
    }

    #[test]
    fn media_is_stored_as_is_and_text_compressed() {
        let k = vector_keys();
        let noise = super::super::tests::noise(200_000, 0x9e3779b97f4a7c15);
        let text = b"INSERT INTO orders VALUES (1, 'paid');\n".repeat(5000);
        let mut w = PackWriter::new(&k, 3);
        w.add(k.id_of(&noise), BlobType::Data, &noise);
        w.add(k.id_of(&text), BlobType::Data, &text);
        let p = w.finish();
        assert_eq!(p.entries[0].compression, Compression::None);
        assert_eq!(p.entries[1].compression, Compression::Zstd);
        assert!(p.entries[1].stored_len < text.len() as u32 / 10);
        let r = PackReader::new(&k, &p.bytes, MAX).unwrap();
        for (e, want) in p.entries.iter().zip([&noise, &text]) {
            let blob = &p.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(&r.open(&k, e, blob).unwrap(), want);
        }
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let (k, p, _) = sample();
        let r = PackReader::new(&k, &p.bytes[..HEADER_LEN], MAX).unwrap();
        for i in (HEADER_LEN..p.bytes.len() - 4).step_by(97) {
            let mut bad = p.bytes.clone();
            bad[i] ^= 1;
            let table_ok = r.table(&bad).is_ok();
            let blobs_ok = p.entries.iter().all(|e| {
                let blob = &bad[e.offset as usize..(e.offset + e.stored_len) as usize];
                r.open(&k, e, blob).is_ok()
            });
            assert!(
                !(table_ok && blobs_ok),
                "byte {i} changed and nothing noticed"
            );
        }
    }

    #[test]
    fn a_blob_listed_under_another_id_or_place_is_refused() {
        let (k, p, _) = sample();
        let r = PackReader::new(&k, &p.bytes[..HEADER_LEN], MAX).unwrap();
        let (a, b) = (p.entries[0], p.entries[1]);
        let blob_b = &p.bytes[b.offset as usize..(b.offset + b.stored_len) as usize];
        // b's bytes presented as a (swapped index entries).
        let swapped = BlobEntry {
            offset: a.offset,
            ..b
        };
        assert!(matches!(
            r.open(&k, &swapped, blob_b),
            Err(PackError::BlobAuthentication(_))
        ));
        let renamed = BlobEntry { id: a.id, ..b };
        assert!(r.open(&k, &renamed, blob_b).is_err());
        // Another repository's keys cannot open it.
        let other = ChunkKeys::derive(
            &crate::crypto::MasterKey::from_bytes([8u8; 32]),
            "00112233445566778899aabbccddeeff",
        );
        let r2 = PackReader::new(&other, &p.bytes[..HEADER_LEN], MAX).unwrap();
        assert!(r2.table(&p.bytes).is_err());
    }

    /// fixtures/v2: keys, ids and a pack written by
    /// tests/support/format2_vectors.py from docs/FORMAT.md alone.
    #[test]
    fn the_independent_vectors_read() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../fixtures/v2/vectors.json")).unwrap();
        let k = vector_keys();
        assert_eq!(v["repository_id"], "00112233445566778899aabbccddeeff");
        assert_eq!(v["master_key"], hex::encode([7u8; 32]));
        assert_eq!(v["subkeys"]["chunker-seed"].as_u64(), Some(k.chunker_seed));
        assert_eq!(v["subkeys"]["pack"], hex::encode(k.pack_key()));
        assert_eq!(v["subkeys"]["index"], hex::encode(k.index_key()));
        assert_eq!(v["chunk_ids"]["hello"], k.id_of(b"hello").to_string());
        assert_eq!(v["chunk_ids"]["empty"], k.id_of(b"").to_string());
        let pack: &[u8] = include_bytes!("../../fixtures/v2/pack.bin");
        assert_eq!(v["pack"]["sha256"], hex::encode(Sha256::digest(pack)));
        let r = PackReader::new(&k, pack, MAX).unwrap();
        let table = r.table(pack).unwrap();
        let want = v["pack"]["chunks"].as_array().unwrap();
        assert_eq!(table.len(), want.len());
        for (e, w) in table.iter().zip(want) {
            assert_eq!(w["id"], e.id.to_string());
            assert_eq!(w["type"].as_u64(), Some(e.kind as u64));
            assert_eq!(w["compression"].as_u64(), Some(e.compression as u64));
            let blob = &pack[e.offset as usize..(e.offset + e.stored_len) as usize];
            let plain = r.open(&k, e, blob).unwrap();
            assert_eq!(w["size"].as_u64(), Some(plain.len() as u64));
            assert_eq!(w["sha256"], hex::encode(Sha256::digest(&plain)));
        }
    }

    #[test]
    fn headers_and_lengths_from_the_store_are_checked() {
        let (k, p, _) = sample();
        let mut h = p.bytes[..HEADER_LEN].to_vec();
        h[9] = 1;
        assert!(matches!(
            PackReader::new(&k, &h, MAX),
            Err(PackError::NewerKeyMode(1))
        ));
        h[9] = 0;
        h[8] = 2;
        assert!(matches!(
            PackReader::new(&k, &h, MAX),
            Err(PackError::NewerLayout(2))
        ));
        assert!(matches!(
            PackReader::new(&k, b"COFFERPK", MAX),
            Err(PackError::TooShort(8))
        ));
        let r = PackReader::new(&k, &p.bytes[..HEADER_LEN], MAX).unwrap();
        let mut cut = p.bytes.clone();
        let n = cut.len();
        cut[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(r.table(&cut), Err(PackError::TableLength(_))));
        let big = BlobEntry {
            raw_len: MAX + 1,
            ..p.entries[0]
        };
        assert!(matches!(
            r.open(&k, &big, &[]),
            Err(PackError::ChunkTooLarge { .. })
        ));
    }
}
