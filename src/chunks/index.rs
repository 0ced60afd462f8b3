//! Index objects (docs/FORMAT.md section 19): which pack holds which chunk.
//! This is the plaintext inside the sealed object; sealing and storing are
//! the repository's.

use std::io::{self, Read, Write};

use super::pack::{BlobEntry, ENTRY_LEN, PackError};

pub const MAGIC: &[u8; 4] = b"CIX1";

/// One pack and its table, as an index lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    pub pack: [u8; 32],
    pub blobs: Vec<BlobEntry>,
}

/// An index object's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexContent {
    /// Index objects this one replaces (prune).
    pub superseded: Vec<[u8; 8]>,
    pub packs: Vec<IndexedPack>,
}

/// Why an index's plaintext cannot be read (damage: it authenticated, so
/// only a writer with the key could have made it).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("not a coffer index (it does not start with CIX1)")]
    BadMagic,
    #[error("it ends in the middle of a record")]
    Truncated,
    #[error("{0}")]
    Entry(#[from] PackError),
    #[error("reading it failed: {0}")]
    Io(io::Error),
}

/// The most packs or blobs one record may claim before its bytes are
/// there: a damaged count must not reserve gigabytes.
const MAX_PREALLOC: usize = 1 << 16;

impl IndexContent {
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&(self.superseded.len() as u32).to_be_bytes())?;
        for s in &self.superseded {
            out.write_all(s)?;
        }
        let mut buf = Vec::new();
        for p in &self.packs {
            buf.clear();
            buf.extend_from_slice(&p.pack);
            buf.extend_from_slice(&(p.blobs.len() as u32).to_be_bytes());
            for b in &p.blobs {
                b.encode(&mut buf);
            }
            out.write_all(&buf)?;
        }
        Ok(())
    }

    pub fn read_from(r: &mut impl Read) -> Result<IndexContent, IndexError> {
        let mut magic = [0u8; 4];
        read_exact(r, &mut magic)?
            .then_some(())
            .ok_or(IndexError::Truncated)?;
        if &magic != MAGIC {
            return Err(IndexError::BadMagic);
        }
        let n = read_u32(r)?.ok_or(IndexError::Truncated)? as usize;
        let mut superseded = Vec::with_capacity(n.min(MAX_PREALLOC));
        for _ in 0..n {
            let mut id = [0u8; 8];
            read_exact(r, &mut id)?
                .then_some(())
                .ok_or(IndexError::Truncated)?;
            superseded.push(id);
        }
        let mut packs = Vec::new();
        loop {
            let mut pack = [0u8; 32];
            if !read_exact(r, &mut pack)? {
                break;
            }
            let count = read_u32(r)?.ok_or(IndexError::Truncated)? as usize;
            let mut blobs = Vec::with_capacity(count.min(MAX_PREALLOC));
            for _ in 0..count {
                let mut e = [0u8; ENTRY_LEN];
                read_exact(r, &mut e)?
                    .then_some(())
                    .ok_or(IndexError::Truncated)?;
                blobs.push(BlobEntry::decode(&e)?);
            }
            packs.push(IndexedPack { pack, blobs });
        }
        Ok(IndexContent { superseded, packs })
    }
}

/// Fills `buf`: `Ok(false)` at a clean end before its first byte, an error
/// at an end inside it.
fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, IndexError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(IndexError::Truncated),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IndexError::Io(e)),
        }
    }
    Ok(true)
}

fn read_u32(r: &mut impl Read) -> Result<Option<u32>, IndexError> {
    let mut b = [0u8; 4];
    Ok(read_exact(r, &mut b)?.then(|| u32::from_be_bytes(b)))
}

#[cfg(test)]
mod tests {
    use super::super::ChunkId;
    use super::super::pack::{BlobType, Compression};
    use super::*;

    fn sample() -> IndexContent {
        let e = |i: u8, off: u32| BlobEntry {
            id: ChunkId([i; 32]),
            kind: BlobType::Data,
            compression: Compression::Zstd,
            offset: off,
            stored_len: 100,
            raw_len: 300,
        };
        IndexContent {
            superseded: vec![[1; 8], [2; 8]],
            packs: vec![
                IndexedPack {
                    pack: [3; 32],
                    blobs: vec![e(4, 44), e(5, 144)],
                },
                IndexedPack {
                    pack: [6; 32],
                    blobs: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn an_index_reads_back() {
        let mut b = Vec::new();
        sample().write_to(&mut b).unwrap();
        assert_eq!(b.len(), 4 + 4 + 16 + (32 + 4 + 2 * 48) + (32 + 4));
        assert_eq!(
            IndexContent::read_from(&mut b.as_slice()).unwrap(),
            sample()
        );
    }

    #[test]
    fn a_cut_or_foreign_index_is_refused() {
        let mut b = Vec::new();
        sample().write_to(&mut b).unwrap();
        for cut in [3, 10, 30, b.len() - 1] {
            assert!(
                IndexContent::read_from(&mut &b[..cut]).is_err(),
                "cut at {cut} was accepted"
            );
        }
        assert!(matches!(
            IndexContent::read_from(&mut &b"CIX2"[..]),
            Err(IndexError::BadMagic)
        ));
        // A count of 4 billion blobs with none there: refused, not allocated.
        let mut huge = b[..8 + 16].to_vec();
        huge.extend_from_slice(&[7; 32]);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            IndexContent::read_from(&mut huge.as_slice()),
            Err(IndexError::Truncated)
        ));
    }
}
