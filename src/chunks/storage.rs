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
    #[error("index object {object}: {source} (`coffer repair index` replaces it from the packs)")]
    Index { object: String, source: IndexError },
    #[error(
        "index object {object} cannot be opened: {source} (`coffer repair index` replaces it from the packs)"
    )]
    Sealed {
        object: String,
        source: std::io::Error,
    },
    #[error(
        "chunk {0} is in no index: it is missing from the repository (if index objects were lost or damaged, `coffer repair index` rebuilds them from the packs)"
    )]
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
pub(crate) fn index_sealing_key(keys: &ChunkKeys) -> MasterKey {
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
    store_index_superseding(store, keys, repo_id, Vec::new(), packs).await
}

/// As [`store_index`], naming the index objects this one replaces (prune,
/// section 23.4).
pub async fn store_index_superseding(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
    superseded: Vec<[u8; 8]>,
    packs: Vec<IndexedPack>,
) -> Result<String, ChunkStoreError> {
    let id = crate::crypto::random_id(8);
    let name = format!("{INDEX_PREFIX}{id}");
    let content = IndexContent { superseded, packs };
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
    /// Further copies of chunks that more than one pack holds (a chunk
    /// copied out of a marked pack, section 23): a reader that finds the
    /// first pack deleted by a prune takes the next.
    extra: HashMap<ChunkId, Vec<(u32, BlobEntry)>>,
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

    /// Every pack and table entry of a chunk, the first as [`Self::locate`].
    pub fn locate_all(&self, id: &ChunkId) -> impl Iterator<Item = (&[u8; 32], &BlobEntry)> {
        self.chunks
            .get(id)
            .into_iter()
            .chain(self.extra.get(id).into_iter().flatten())
            .map(|(p, e)| (&self.packs[*p as usize], e))
    }

    /// The ids of the chunks that some pack accepted by `ok` holds.
    pub fn ids_in(&self, ok: impl Fn(&[u8; 32]) -> bool) -> Vec<ChunkId> {
        self.chunks
            .iter()
            .filter(|(id, _)| self.locate_all(id).any(|(p, _)| ok(p)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every pack an index lists.
    pub fn packs(&self) -> &[[u8; 32]] {
        &self.packs
    }

    fn add(&mut self, content: IndexContent) {
        for p in content.packs {
            let n = self.packs.len() as u32;
            self.packs.push(p.pack);
            for b in p.blobs {
                match self.chunks.entry(b.id) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert((n, b));
                    }
                    std::collections::hash_map::Entry::Occupied(o) if o.get().0 != n => {
                        self.extra.entry(b.id).or_default().push((n, b));
                    }
                    std::collections::hash_map::Entry::Occupied(_) => {}
                }
            }
        }
    }

    /// From index contents already read (tests, and the prune that read
    /// them for its own reasons).
    pub fn from_contents(contents: impl IntoIterator<Item = IndexContent>) -> ChunkLocations {
        let mut all = ChunkLocations::default();
        for c in contents {
            all.add(c);
        }
        all
    }

    /// Loads every index object of the repository.
    pub async fn load(
        store: &Store,
        keys: &ChunkKeys,
        repo_id: &str,
    ) -> Result<ChunkLocations, ChunkStoreError> {
        let mut all = ChunkLocations::default();
        for_each_index(store, keys, repo_id, |_, c| all.add(c)).await?;
        Ok(all)
    }
}

/// The names of the index objects the store holds now.
pub async fn index_names(store: &Store) -> Result<Vec<String>, StoreError> {
    Ok(store
        .list(INDEX_PREFIX)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

/// Reads and authenticates every index object, one at a time, handing each
/// one's name and content to `f`. An index object listed but gone when read
/// was replaced by a prune (section 23.4) with one stored before it was
/// deleted: the index is listed again for the names not read yet, so no
/// chunk is missed.
pub async fn for_each_index(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
    mut f: impl FnMut(&str, IndexContent),
) -> Result<(), ChunkStoreError> {
    let mut read = std::collections::HashSet::new();
    for _ in 0..16 {
        let mut names = index_names(store).await?;
        names.retain(|n| !read.contains(n));
        let mut gone = false;
        for name in names {
            let res = for_each_index_of(store, keys, repo_id, [name.clone()], &mut f).await;
            match res {
                Ok(()) => {
                    read.insert(name);
                }
                Err(ChunkStoreError::Store(StoreError::NotFound { .. })) => gone = true,
                Err(e) => return Err(e),
            }
        }
        if !gone {
            return Ok(());
        }
    }
    Err(ChunkStoreError::Internal(
        "the index objects kept changing while they were read (prunes replacing them); try again"
            .into(),
    ))
}

/// As [`for_each_index`], for index objects already listed.
pub async fn for_each_index_of(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
    names: impl IntoIterator<Item = String>,
    mut f: impl FnMut(&str, IndexContent),
) -> Result<(), ChunkStoreError> {
    let key = index_sealing_key(keys);
    for name in names {
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
        f(&name, content);
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

    /// The plaintext of a chunk, checked against its id. When its pack is
    /// gone (a prune deleted one of two copies after this reader loaded
    /// the index), the next copy is read.
    pub async fn fetch(&self, id: ChunkId) -> Result<Bytes, ChunkStoreError> {
        let places: Vec<([u8; 32], BlobEntry)> = self
            .locations
            .locate_all(&id)
            .map(|(p, e)| (*p, *e))
            .collect();
        let mut last = ChunkStoreError::Missing(id);
        for (pack_id, entry) in places {
            match self.fetch_from(pack_id, entry).await {
                Err(e @ ChunkStoreError::MissingPack(_)) => last = e,
                r => return r,
            }
        }
        Err(last)
    }

    async fn fetch_from(
        &self,
        pack_id: [u8; 32],
        entry: BlobEntry,
    ) -> Result<Bytes, ChunkStoreError> {
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
