//! Chunks in a store (docs/FORMAT.md sections 18, 19 and 22): uploading
//! packs and the index object that lists them, loading the union of the
//! index objects, and reading one chunk back with a ranged read of its pack.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::index::{IndexContent, IndexError, IndexedPack};
use super::pack::{
    self, BlobEntry, BlobType, HEADER_LEN, PACK_TARGET, PackError, PackReader, PackWriter,
};
use super::{ChunkId, ChunkKeys};
use crate::crypto::{MasterKey, ObjectKind, OpenReader, SealWriter};
use crate::outcome::ErrorKind;
use crate::repo::Chunked;
use crate::store::{Store, StoreError};

pub const INDEX_PREFIX: &str = "index/";
/// The largest index object a reader loads (a damaged or planted one must
/// not make it hold more).
pub const MAX_INDEX_OBJECT: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ChunkStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pack {pack}: {source}")]
    Pack { pack: String, source: PackError },
    #[error("index object {object}: {source}")]
    Index { object: String, source: IndexError },
    #[error("index object {object} cannot be opened: {source}")]
    Sealed {
        object: String,
        source: std::io::Error,
    },
    #[error("chunk {0} is in no index: it is missing from the repository")]
    Missing(ChunkId),
    #[error("pack {0} is missing from the repository")]
    MissingPack(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ChunkStoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ChunkStoreError::Store(s) => s.kind(),
            ChunkStoreError::Pack { source, .. } => source.kind(),
            ChunkStoreError::Index { .. }
            | ChunkStoreError::Sealed { .. }
            | ChunkStoreError::Missing(_)
            | ChunkStoreError::MissingPack(_) => ErrorKind::Integrity,
            ChunkStoreError::Internal(_) => ErrorKind::Operational,
        }
    }
}

/// The context of an index object (section 19).
pub fn index_context(repo_id: &str, index_id: &str) -> Vec<u8> {
    format!("coffer/v2\0{repo_id}\0index\0{index_id}").into_bytes()
}

/// The index key as the input key material of a sealed object.
fn index_sealing_key(keys: &ChunkKeys) -> MasterKey {
    MasterKey::from_bytes(*keys.index_key())
}

/// Gathers chunks into packs and uploads each once it is full; at the end
/// stores the index object that lists them.
pub struct PackUploader<'a> {
    store: &'a Store,
    keys: &'a ChunkKeys,
    level: i32,
    pack: Option<PackWriter>,
    written: Vec<IndexedPack>,
    new_chunks: u64,
    new_bytes: u64,
}

impl<'a> PackUploader<'a> {
    pub fn new(store: &'a Store, keys: &'a ChunkKeys, level: i32) -> Self {
        PackUploader {
            store,
            keys,
            level,
            pack: None,
            written: Vec::new(),
            new_chunks: 0,
            new_bytes: 0,
        }
    }

    /// Adds a chunk the repository does not hold yet. Compressing and
    /// sealing run inside this future, blocking its thread: the snapshot
    /// pipeline (issue 13, next) is to do them on blocking workers and hand
    /// finished packs to the upload.
    pub async fn add(
        &mut self,
        id: ChunkId,
        kind: BlobType,
        plaintext: &[u8],
    ) -> Result<(), ChunkStoreError> {
        let p = self
            .pack
            .get_or_insert_with(|| PackWriter::new(self.keys, self.level));
        p.add(id, kind, plaintext);
        self.new_chunks += 1;
        if p.len() >= PACK_TARGET {
            self.upload_current().await?;
        }
        Ok(())
    }

    async fn upload_current(&mut self) -> Result<(), ChunkStoreError> {
        let Some(p) = self.pack.take().filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let sealed = p.finish();
        self.new_bytes += sealed.bytes.len() as u64;
        self.store
            .put(&sealed.object_name(), Bytes::from(sealed.bytes), true)
            .await?;
        self.written.push(IndexedPack {
            pack: sealed.id,
            blobs: sealed.entries,
        });
        Ok(())
    }

    /// Uploads the last pack and stores the index object of every pack
    /// uploaded (none when nothing was).
    pub async fn finish(mut self, repo_id: &str) -> Result<Uploaded, ChunkStoreError> {
        self.upload_current().await?;
        let mut done = Uploaded {
            index: None,
            new_chunks: self.new_chunks,
            new_bytes: self.new_bytes,
        };
        if self.written.is_empty() {
            return Ok(done);
        }
        let packs = std::mem::take(&mut self.written);
        done.index = Some(store_index(self.store, self.keys, repo_id, packs).await?);
        Ok(done)
    }
}

/// Stores an index object listing `packs` (section 19), create-only under
/// a new random id; returns its name.
pub async fn store_index(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
    packs: Vec<IndexedPack>,
) -> Result<String, ChunkStoreError> {
    let id = crate::crypto::random_id(8);
    let name = format!("{INDEX_PREFIX}{id}");
    let content = IndexContent {
        superseded: Vec::new(),
        packs,
    };
    let mut plain = Vec::new();
    let mut z = zstd::stream::Encoder::new(&mut plain, 3).map_err(sealed_err(&name))?;
    content.write_to(&mut z).map_err(sealed_err(&name))?;
    z.finish().map_err(sealed_err(&name))?;
    let mut w = SealWriter::new(
        Vec::new(),
        &index_sealing_key(keys),
        ObjectKind::ChunkIndex,
        &index_context(repo_id, &id),
    )
    .map_err(sealed_err(&name))?;
    w.write_all(&plain).map_err(sealed_err(&name))?;
    let bytes = w.finish().map_err(sealed_err(&name))?;
    store.put(&name, Bytes::from(bytes), true).await?;
    Ok(name)
}

/// What a [`PackUploader`] stored.
#[derive(Debug)]
pub struct Uploaded {
    /// The index object's name.
    pub index: Option<String>,
    pub new_chunks: u64,
    /// Bytes of the packs uploaded.
    pub new_bytes: u64,
}

fn sealed_err(object: &str) -> impl Fn(std::io::Error) -> ChunkStoreError + '_ {
    move |source| ChunkStoreError::Sealed {
        object: object.to_string(),
        source,
    }
}

/// Where every chunk of the repository is: the union of its index objects.
#[derive(Default)]
pub struct ChunkLocations {
    packs: Vec<[u8; 32]>,
    chunks: HashMap<ChunkId, (u32, BlobEntry)>,
}

impl ChunkLocations {
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.chunks.keys()
    }

    /// The pack and table entry of a chunk.
    pub fn locate(&self, id: &ChunkId) -> Option<(&[u8; 32], &BlobEntry)> {
        self.chunks
            .get(id)
            .map(|(p, e)| (&self.packs[*p as usize], e))
    }

    fn add(&mut self, content: IndexContent) {
        for p in content.packs {
            let n = self.packs.len() as u32;
            self.packs.push(p.pack);
            for b in p.blobs {
                self.chunks.entry(b.id).or_insert((n, b));
            }
        }
    }

    /// Loads every index object of the repository.
    pub async fn load(
        store: &Store,
        keys: &ChunkKeys,
        repo_id: &str,
    ) -> Result<ChunkLocations, ChunkStoreError> {
        let mut all = ChunkLocations::default();
        for_each_index(store, keys, repo_id, |c| all.add(c)).await?;
        Ok(all)
    }
}

/// What a writer deduplicates against: the id of every chunk in every
/// index object, 12 bytes each ([`KnownChunks`]), never the whole index.
pub async fn known_chunks(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
) -> Result<super::known::KnownChunks, ChunkStoreError> {
    let mut ids = Vec::new();
    for_each_index(store, keys, repo_id, |c| {
        for p in c.packs {
            ids.extend(p.blobs.into_iter().map(|b| b.id));
        }
    })
    .await?;
    Ok(super::known::KnownChunks::from_ids(ids))
}

/// Reads and authenticates every index object, one at a time, handing each
/// one's content to `f`.
async fn for_each_index(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
    mut f: impl FnMut(IndexContent),
) -> Result<(), ChunkStoreError> {
    let key = index_sealing_key(keys);
    for (name, _) in store.list(INDEX_PREFIX).await? {
        let Some(id) = name.strip_prefix(INDEX_PREFIX) else {
            continue;
        };
        let bytes = store.get_capped(&name, MAX_INDEX_OBJECT).await?;
        let ctx = index_context(repo_id, id);
        let content = (|| -> Result<IndexContent, ChunkStoreError> {
            let open = OpenReader::new(&bytes[..], &key, ObjectKind::ChunkIndex, &ctx)
                .map_err(sealed_err(&name))?;
            let mut z = zstd::stream::Decoder::new(open).map_err(sealed_err(&name))?;
            let c = IndexContent::read_from(&mut z).map_err(|source| ChunkStoreError::Index {
                object: name.clone(),
                source,
            })?;
            // Read to the authenticated end: a cut after the records
            // must not go unnoticed.
            std::io::copy(&mut z, &mut std::io::sink()).map_err(sealed_err(&name))?;
            Ok(c)
        })()?;
        f(content);
    }
    Ok(())
}

/// Reads chunks back by id: a ranged read of the pack's header once per
/// pack, and one of each blob.
pub struct ChunkFetcher<'a> {
    store: &'a Store,
    keys: &'a ChunkKeys,
    locations: &'a ChunkLocations,
    max_chunk: u32,
    readers: HashMap<[u8; 32], PackReader>,
}

impl<'a> ChunkFetcher<'a> {
    pub fn new(
        store: &'a Store,
        keys: &'a ChunkKeys,
        locations: &'a ChunkLocations,
        max_chunk: u32,
    ) -> Self {
        ChunkFetcher {
            store,
            keys,
            locations,
            max_chunk,
            readers: HashMap::new(),
        }
    }

    /// The plaintext of a chunk, checked against its id.
    pub async fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, ChunkStoreError> {
        let (pack_id, entry) = self
            .locations
            .locate(id)
            .ok_or(ChunkStoreError::Missing(*id))?;
        let name = pack::object_name(pack_id);
        let pack_err = |source| ChunkStoreError::Pack {
            pack: name.clone(),
            source,
        };
        if !self.readers.contains_key(pack_id) {
            let header = self.store.get_range(&name, 0, HEADER_LEN as u64).await?;
            let r = PackReader::new(self.keys, &header, self.max_chunk).map_err(pack_err)?;
            self.readers.insert(*pack_id, r);
        }
        let blob = self
            .store
            .get_range(&name, entry.offset as u64, entry.stored_len as u64)
            .await?;
        self.readers[pack_id]
            .open(self.keys, entry, &blob)
            .map_err(pack_err)
    }
}

/// Reads chunks back by id for many readers at once (one per source
/// being restored, and their prefetchers): pack headers are read once and
/// shared, and each blob is opened on a blocking thread.
pub struct Fetcher {
    store: Store,
    chunked: Arc<Chunked>,
    locations: Arc<ChunkLocations>,
    readers: Mutex<HashMap<[u8; 32], Arc<PackReader>>>,
}

impl Fetcher {
    pub fn new(store: &Store, chunked: Arc<Chunked>, locations: Arc<ChunkLocations>) -> Self {
        Fetcher {
            store: store.clone(),
            chunked,
            locations,
            readers: Mutex::new(HashMap::new()),
        }
    }

    pub fn locations(&self) -> &ChunkLocations {
        &self.locations
    }

    /// The plaintext of a chunk, checked against its id.
    pub async fn fetch(&self, id: ChunkId) -> Result<Bytes, ChunkStoreError> {
        let (pack_id, entry) = self
            .locations
            .locate(&id)
            .ok_or(ChunkStoreError::Missing(id))?;
        let (pack_id, entry) = (*pack_id, *entry);
        let name = pack::object_name(&pack_id);
        let missing = |e: StoreError| match e {
            StoreError::NotFound { .. } => ChunkStoreError::MissingPack(name.clone()),
            e => ChunkStoreError::Store(e),
        };
        let known = self
            .readers
            .lock()
            .expect("readers lock")
            .get(&pack_id)
            .cloned();
        let reader = match known {
            Some(r) => r,
            None => {
                let header = self
                    .store
                    .get_range(&name, 0, HEADER_LEN as u64)
                    .await
                    .map_err(missing)?;
                let r = PackReader::new(&self.chunked.keys, &header, self.chunked.params.max)
                    .map_err(|source| ChunkStoreError::Pack {
                        pack: name.clone(),
                        source,
                    })?;
                let r = Arc::new(r);
                self.readers
                    .lock()
                    .expect("readers lock")
                    .insert(pack_id, Arc::clone(&r));
                r
            }
        };
        let blob = self
            .store
            .get_range(&name, entry.offset as u64, entry.stored_len as u64)
            .await
            .map_err(missing)?;
        let chunked = Arc::clone(&self.chunked);
        tokio::task::spawn_blocking(move || {
            reader
                .open(&chunked.keys, &entry, &blob)
                .map(Bytes::from)
                .map_err(|source| ChunkStoreError::Pack { pack: name, source })
        })
        .await
        .map_err(|e| ChunkStoreError::Internal(format!("chunk reader task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::known::KnownChunks;
    use super::super::tests::vector_keys;
    use super::*;

    const REPO: &str = "00112233445566778899aabbccddeeff";

    /// All of `r`, cut into chunks and named.
    fn chunks_of(r: impl std::io::Read, keys: &ChunkKeys) -> Vec<(ChunkId, Bytes)> {
        super::super::cut::Chunker::new(r, &super::super::cut::DEFAULT_PARAMS, keys.chunker_seed)
            .unwrap()
            .map(|c| {
                let c = c.unwrap();
                (keys.id_of(&c), c)
            })
            .collect()
    }

    use super::super::tests::noise;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Two "snapshots" of a 40 MiB file with 1 MiB changed in its middle:
    /// the second uploads only the chunks around the change, and both read
    /// back whole through the index objects.
    #[test]
    fn a_second_upload_stores_only_what_changed_and_both_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), &Default::default(), true).unwrap();
        let keys = vector_keys();
        let first = noise(40 << 20, 5);
        let mut second = first.clone();
        second[20 << 20..21 << 20].copy_from_slice(&noise(1 << 20, 6));
        rt().block_on(async {
            let mut lists = Vec::new();
            let mut uploaded = Vec::new();
            for data in [&first, &second] {
                let locs = ChunkLocations::load(&store, &keys, REPO).await.unwrap();
                let mut known = KnownChunks::from_ids(locs.ids().copied());
                let mut up = PackUploader::new(&store, &keys, 3);
                let mut list = Vec::new();
                for (id, c) in chunks_of(data.as_slice(), &keys) {
                    if known.insert(&id) {
                        up.add(id, BlobType::Data, &c).await.unwrap();
                    }
                    list.push(id);
                }
                let done = up.finish(REPO).await.unwrap();
                assert!(done.index.is_some());
                uploaded.push(done.new_bytes);
                lists.push(list);
            }
            assert!(uploaded[0] > 40 << 20);
            assert!(
                uploaded[1] < uploaded[0] / 4,
                "the second upload stored {} bytes for a 1 MiB change",
                uploaded[1]
            );
            let locs = ChunkLocations::load(&store, &keys, REPO).await.unwrap();
            let mut f = ChunkFetcher::new(&store, &keys, &locs, 8 << 20);
            for (list, want) in lists.iter().zip([&first, &second]) {
                let mut got = Vec::new();
                for id in list {
                    got.extend(f.fetch(id).await.unwrap());
                }
                assert!(got == **want, "a snapshot did not read back");
            }
        });
    }

    #[test]
    fn a_damaged_pack_or_index_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), &Default::default(), true).unwrap();
        let keys = vector_keys();
        let data = noise(3 << 20, 7);
        rt().block_on(async {
            let mut up = PackUploader::new(&store, &keys, 3);
            let chunks = chunks_of(data.as_slice(), &keys);
            for (id, c) in &chunks {
                up.add(*id, BlobType::Data, c).await.unwrap();
            }
            let index = up.finish(REPO).await.unwrap().index.unwrap();
            // Flip a byte in the middle of the pack: the chunk there fails.
            let (name, _) = store.list("packs/").await.unwrap().remove(0);
            let path = dir.path().join(&name);
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            let locs = ChunkLocations::load(&store, &keys, REPO).await.unwrap();
            let mut f = ChunkFetcher::new(&store, &keys, &locs, 8 << 20);
            let mut failed = Vec::new();
            for (id, _) in &chunks {
                if let Err(e) = f.fetch(id).await {
                    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
                    assert!(e.to_string().contains(&name), "{e}");
                    failed.push(id);
                }
            }
            assert_eq!(failed.len(), 1, "one chunk holds the flipped byte");
            // A pack cut short: its last chunk cannot be read whole.
            let (last_id, _) = chunks.last().unwrap();
            let cut_len = locs.locate(last_id).unwrap().1.offset as usize + 10;
            std::fs::write(&path, &bytes[..cut_len]).unwrap();
            let e = ChunkFetcher::new(&store, &keys, &locs, 8 << 20)
                .fetch(last_id)
                .await
                .unwrap_err();
            assert!(
                matches!(e, ChunkStoreError::Store(StoreError::ShortRange { .. })),
                "{e}"
            );
            assert_eq!(e.kind(), ErrorKind::Integrity);
            assert!(e.to_string().contains("shorter than the index says"), "{e}");
            std::fs::write(&path, &bytes).unwrap();
            // A chunk no index lists is missing.
            let e = f.fetch(&keys.id_of(b"never stored")).await.unwrap_err();
            assert!(matches!(e, ChunkStoreError::Missing(_)));
            // A damaged index object fails the load, naming it.
            let ipath = dir.path().join(&index);
            let mut ib = std::fs::read(&ipath).unwrap();
            let n = ib.len();
            ib[n - 5] ^= 1;
            std::fs::write(&ipath, &ib).unwrap();
            let e = ChunkLocations::load(&store, &keys, REPO)
                .await
                .err()
                .expect("a damaged index loads");
            assert!(e.to_string().contains(&index), "{e}");
            assert_eq!(e.kind(), ErrorKind::Integrity);
        });
    }
}
