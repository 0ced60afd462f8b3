//! Reading a source back out of a snapshot: the one place where a source's
//! archive and index are authenticated against each other. `restore`,
//! `dump`, `verify --deep`, `drill` and `show --files` all read through
//! here, so the integrity check exists once, where it can be audited.
//!
//! docs/FORMAT.md section 11, step 5 (and step 6's path rules), as
//! [`SourceStreams::walk`] performs it, each check in one place:
//!
//! 1. Each object (archive `A`, index `I`) is downloaded, authenticated
//!    segment by segment against the source's context, decrypted, and must
//!    have the manifest's `size` ([`ObjectStream`]). Its stored SHA-256 is
//!    left to plain `verify` (step 4): every segment here is authenticated.
//! 2. Both are decompressed; the tar stream passes [`TarGuard`], which
//!    bounds what a header may claim.
//! 3. Each tar entry's name must be a safe relative path ([`safe_path`]: not
//!    absolute, no `..` component, no NUL byte), normalised as section 11
//!    says (trailing `/` removed, `./` read as `.`, a leading `./` removed).
//! 4. PAX headers are skipped (they belong to the next entry); any type other
//!    than file, directory, symlink or hard link is refused.
//! 5. The next `stored: true` index line must have the same path and type;
//!    a hard link's line must name a file met before it and repeat that
//!    file's size and SHA-256 ([`StoredFiles`]).
//! 6. A file's data must have the index's `size` and `sha256`: [`Entry`]'s
//!    reader checks both at its end, and the walk reads what a consumer left
//!    unread, so no file goes unchecked.
//! 7. When the tar stream ends, no `stored: true` index line may be left.
//! 8. Both objects are read to their very end, so the last segment verifies.
//!
//! The walk counts `file` entries ([`Walked::files`]); [`expected_files`] is
//! what the manifest says there must be (`verify` reports a difference).
//! What stays with the consumer: where bytes may be written (step 6: never
//! through a symlink, a hard link only to a file already extracted).
//! [`read_index`] reads an index alone, to its authenticated end, for
//! listings and for `dump`, which checks the whole index before its first
//! byte goes out.

use std::io::{self, BufReader, Read};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::archive::{
    ChanReader, IndexReader, TarGuard, TarLimit, UnsafeName, safe_path, stage_channel,
};
use crate::chunks::storage::{ChunkStoreError, Fetcher};
use crate::crypto::{self, CryptoError, ObjectKind, OpenReader};
use crate::manifest::{EntryKind, IndexEntry, Manifest, ObjectRef, SourceRecord, seal_context};
use crate::repo::Repository;
use crate::store::StoreError;

pub mod chunked;

/// Why reading a source failed. [`ReadError::is_integrity`] tells damaged
/// or hostile stored data (exit 3) from operational failures.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "snapshot {snapshot}, source {source_name}, {object}: integrity check failed: {reason}"
    )]
    Integrity {
        snapshot: String,
        source_name: String,
        object: String,
        reason: Fault,
    },
    /// A file's bytes differ from its index line's size or SHA-256. Its own
    /// variant so that `verify` can report it per file and go on.
    #[error(
        "snapshot {snapshot}, source {source_name}, {object}: integrity check failed: {}",
        content_reason(.path)
    )]
    Content {
        snapshot: String,
        source_name: String,
        object: String,
        path: String,
    },
    /// An entry name that would leave the destination (step 6).
    #[error("snapshot {snapshot}, source {source_name}: {path}: {reason}")]
    Unsafe {
        snapshot: String,
        source_name: String,
        path: String,
        reason: UnsafeName,
    },
    #[error(
        "snapshot {snapshot}, source {source_name}: the source failed when the snapshot was taken ({reason}); it holds nothing to restore"
    )]
    SourceFailed {
        snapshot: String,
        source_name: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// A reading thread died.
    #[error("{0}")]
    Thread(String),
    /// Format 2: a chunk could not be read, or is damaged or missing.
    #[error(
        "snapshot {snapshot}, source {source_name}{}: {source}",
        file.as_ref().map(|f| format!(", file {f:?}")).unwrap_or_default()
    )]
    Chunk {
        snapshot: String,
        source_name: String,
        file: Option<String>,
        source: ChunkStoreError,
    },
}

/// What an integrity check found wrong with stored data: each variant is a
/// rule of docs/FORMAT.md section 11 that the data breaks.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// A segment failed to authenticate or decrypt (step 1).
    #[error(transparent)]
    Crypto(CryptoError),
    /// A tar header claims more than coffer ever writes (step 2).
    #[error(transparent)]
    Tar(TarLimit),
    #[error("the object is missing")]
    Missing,
    #[error("it has {size} bytes, the manifest records {recorded}")]
    Size { size: u64, recorded: u64 },
    #[error("cannot start decompression: {0}")]
    Decompression(io::Error),
    /// Step 4.
    #[error("entry {path:?} has an unsupported type {ty:?}")]
    EntryType { path: String, ty: char },
    /// Step 5.
    #[error("the archive holds {0:?}, which the index does not list")]
    NotInIndex(String),
    /// Step 5.
    #[error(
        "archive entry {path:?} ({kind:?}) does not match index entry {index_path:?} ({index_kind:?})"
    )]
    Mismatch {
        path: String,
        kind: EntryKind,
        index_path: String,
        index_kind: EntryKind,
    },
    /// Step 5: a hard link's index line must repeat its target's size and
    /// SHA-256.
    #[error("hard link {path:?} records a size or SHA-256 other than its target {target:?} has")]
    HardLink { path: String, target: String },
    /// Step 5: a hard link's target must be a file stored before it.
    #[error("hard link {path:?} names {target:?}, which is not a file stored before it")]
    HardLinkTarget { path: String, target: String },
    /// Step 7.
    #[error("the index lists {0:?}, which the archive lacks")]
    NotInArchive(String),
    /// A dump source's archive holds only chunks (section 9).
    #[error("entry {0:?} is not a dump chunk")]
    NotAChunk(String),
    #[error("chunk {path:?} claims {size} bytes (index: {index}); chunks hold at most {max}")]
    ChunkSize {
        path: String,
        size: u64,
        index: u64,
        max: u64,
    },
    #[error("stream name {0:?} is not a plain file name")]
    StreamName(String),
    /// Format 2: the list's length or SHA-256 is not the manifest's.
    #[error(
        "it has {size} bytes or more and a SHA-256 other than the manifest records ({recorded} bytes)"
    )]
    ListDigest { size: u64, recorded: u64 },
    /// Format 2: a stored file's line lists no chunks.
    #[error("the line of {0:?} lists no chunks")]
    NoChunks(String),
    /// Format 2: a line's path is not in the normal form writers use.
    #[error("the line of {0:?} does not hold a normalised path")]
    NotNormal(String),
}

/// The reason a [`ReadError::Content`] gives.
pub fn content_reason(path: &str) -> String {
    format!("file {path:?}: content does not match the index's size/SHA-256")
}

impl ReadError {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            ReadError::Integrity { .. } | ReadError::Content { .. } | ReadError::Unsafe { .. } => {
                crate::ErrorKind::Integrity
            }
            ReadError::Store(s) => s.kind(),
            ReadError::Chunk { source, .. } => source.kind(),
            _ => crate::ErrorKind::Operational,
        }
    }
}

/// Context that every integrity error of one source carries.
#[derive(Clone)]
pub struct Where {
    pub snapshot: String,
    pub source: String,
}

impl Where {
    pub fn new(m: &Manifest, src: &SourceRecord) -> Where {
        Where {
            snapshot: m.id.clone(),
            source: src.name.clone(),
        }
    }

    pub fn integrity(&self, object: &str, reason: Fault) -> ReadError {
        ReadError::Integrity {
            snapshot: self.snapshot.clone(),
            source_name: self.source.clone(),
            object: object.to_string(),
            reason,
        }
    }

    pub(crate) fn unsafe_path(&self, path: &str, reason: UnsafeName) -> ReadError {
        ReadError::Unsafe {
            snapshot: self.snapshot.clone(),
            source_name: self.source.clone(),
            path: path.to_string(),
            reason,
        }
    }
}

/// Sorts an I/O error from a reading pipeline into integrity (bad bytes) or
/// operational (storage, disk) failures.
pub fn classify(e: io::Error, at: &Where, object: &str) -> ReadError {
    if let Some(c) = crypto::integrity_error(&e) {
        return at.integrity(object, Fault::Crypto(c.clone()));
    }
    if let Some(l) = e.get_ref().and_then(|i| i.downcast_ref::<TarLimit>()) {
        return at.integrity(object, Fault::Tar(l.clone()));
    }
    // Already sorted further down (an [`Entry`]'s content check).
    if e.get_ref().is_some_and(|i| i.is::<ReadError>()) {
        return *e
            .into_inner()
            .expect("checked above")
            .downcast::<ReadError>()
            .expect("checked above");
    }
    if e.get_ref().is_some_and(|i| i.is::<StoreError>()) {
        let s = e
            .into_inner()
            .expect("checked above")
            .downcast::<StoreError>()
            .expect("checked above");
        return match *s {
            StoreError::NotFound { .. } => at.integrity(object, Fault::Missing),
            other => ReadError::Store(other),
        };
    }
    ReadError::Io {
        op: "read",
        path: object.to_string(),
        source: e,
    }
}

// ------------------------------------------------------------------ objects

/// Reads one stored object on a thread of its own: download, authenticate,
/// decrypt, and check its size against the manifest at the end. The
/// plaintext arrives through a bounded channel. (The object's SHA-256 is left
/// to `verify`: every segment here is authenticated and bound to its
/// snapshot, source and kind, which a checksum cannot add to.)
pub struct ObjectStream {
    pub reader: ChanReader,
    thread: Option<JoinHandle<Result<(), ReadError>>>,
}

impl ObjectStream {
    pub fn open(repo: &Repository, at: &Where, obj: &ObjectRef, kind: ObjectKind) -> ObjectStream {
        let (mut w, reader) = stage_channel();
        let download = repo.store.download_opts(&obj.object, false);
        let master = repo.shared_master();
        let ctx = seal_context(&repo.id, &at.snapshot, Some(&at.source));
        let at = at.clone();
        let obj = obj.clone();
        let thread = std::thread::spawn(move || -> Result<(), ReadError> {
            let mut r = OpenReader::new(download, &master, kind, &ctx)
                .map_err(|e| classify(e, &at, &obj.object))?;
            let copied = io::copy(&mut r, &mut w);
            let (size, _) = r.into_inner().digest();
            if let Err(e) = copied {
                if e.kind() == io::ErrorKind::BrokenPipe && size > 0 {
                    // The consumer stopped reading (it found what it needed,
                    // or failed itself and will report why).
                    return Ok(());
                }
                return Err(classify(e, &at, &obj.object));
            }
            if size != obj.size {
                return Err(at.integrity(
                    &obj.object,
                    Fault::Size {
                        size,
                        recorded: obj.size,
                    },
                ));
            }
            w.finish().ok();
            Ok(())
        });
        ObjectStream {
            reader,
            thread: Some(thread),
        }
    }

    /// Takes the plaintext reader, leaving an empty one.
    pub fn take_reader(&mut self) -> ChanReader {
        std::mem::replace(&mut self.reader, stage_channel().1)
    }

    /// Waits for the reading thread; its error explains any failure the
    /// consumer saw.
    pub fn join(&mut self) -> Result<(), ReadError> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(ReadError::Thread("object reader thread panicked".into()))),
            None => Ok(()),
        }
    }
}

type Decoded = zstd::stream::read::Decoder<'static, BufReader<ChanReader>>;
type TarInner = TarGuard<Decoded>;
type TarStream = tar::Archive<TarInner>;
type IndexStream = IndexReader<BufReader<Decoded>>;

fn decoder(r: ChanReader, at: &Where, object: &str) -> Result<Decoded, ReadError> {
    zstd::stream::read::Decoder::new(r).map_err(|e| at.integrity(object, Fault::Decompression(e)))
}

/// Reads a source's index (format 1) or file list (format 2) alone, to its
/// authenticated end, on this (blocking) thread, handing every line to `f`.
/// A source that stored nothing has no lines.
pub fn read_lines(
    repo: &Repository,
    at: &Where,
    src: &SourceRecord,
    mut f: impl FnMut(IndexEntry),
) -> Result<(), ReadError> {
    if let Some(list) = &src.list {
        let handle = tokio::runtime::Handle::current();
        let reader = chunked::ListReader::new(fetcher(repo, at)?, handle, list.clone(), at.clone());
        let mut lines = IndexReader::new(BufReader::new(reader));
        let err = |e| classify(e, at, chunked::LIST_OBJECT);
        while let Some(e) = lines.next_entry().map_err(err)? {
            f(e);
        }
        return Ok(());
    }
    match &src.index {
        Some(index_ref) => read_index(repo, at, index_ref, f),
        None => Ok(()),
    }
}

/// Reads a format 1 index alone to its authenticated end on this (blocking)
/// thread, handing every line to `f`.
fn read_index(
    repo: &Repository,
    at: &Where,
    index_ref: &ObjectRef,
    mut f: impl FnMut(IndexEntry),
) -> Result<(), ReadError> {
    let mut stream = ObjectStream::open(repo, at, index_ref, ObjectKind::Index);
    let reader = stream.take_reader();
    let res = (|| -> Result<(), ReadError> {
        let mut idx = IndexReader::new(BufReader::new(decoder(reader, at, &index_ref.object)?));
        while let Some(e) = idx
            .next_entry()
            .map_err(|e| classify(e, at, &index_ref.object))?
        {
            f(e);
        }
        io::copy(&mut idx.into_inner(), &mut io::sink())
            .map_err(|e| classify(e, at, &index_ref.object))?;
        Ok(())
    })();
    // The reading thread's failure is the cause of any the consumer saw.
    stream.join()?;
    res
}

// ------------------------------------------------------------------ sources

/// A source's stored content, read by [`SourceStreams::walk`]: format 1's
/// archive and index side by side, or format 2's file list and chunks.
pub struct SourceStreams {
    pub at: Where,
    inner: Inner,
}

enum Inner {
    Tar(TarSource),
    Chunked(ChunkedSource),
}

struct TarSource {
    archive_ref: ObjectRef,
    index_ref: ObjectRef,
    archive: ObjectStream,
    index: ObjectStream,
}

struct ChunkedSource {
    lines: Option<IndexReader<BufReader<chunked::ListReader>>>,
    prefetch: chunked::Prefetch,
}

/// What a consumer of [`SourceStreams::walk`] wants next.
pub enum Flow {
    Next,
    /// It has what it needed: the walk ends here, unchecked beyond.
    Stop,
}

/// The outcome of a whole walk.
pub struct Walked {
    /// `file` entries in the archive.
    pub files: u64,
}

/// Format 2: the fetcher of the repository's chunks, from a blocking
/// thread inside the runtime.
fn fetcher(repo: &Repository, at: &Where) -> Result<std::sync::Arc<Fetcher>, ReadError> {
    tokio::runtime::Handle::current()
        .block_on(repo.fetcher())
        .map_err(|e| at.chunk_error(None, e))
}

impl SourceStreams {
    /// Starts reading a source that was stored. Call from a blocking
    /// thread inside the runtime.
    pub fn open(repo: &Repository, m: &Manifest, src: &SourceRecord) -> Result<Self, ReadError> {
        let at = Where::new(m, src);
        if let Some(list) = &src.list {
            let handle = tokio::runtime::Handle::current();
            let f = fetcher(repo, &at)?;
            let reader =
                chunked::ListReader::new(f.clone(), handle.clone(), list.clone(), at.clone());
            let prefetch = chunked::Prefetch::start(f, handle, list.clone(), at.clone());
            return Ok(SourceStreams {
                at,
                inner: Inner::Chunked(ChunkedSource {
                    lines: Some(IndexReader::new(BufReader::new(reader))),
                    prefetch,
                }),
            });
        }
        let (Some(archive_ref), Some(index_ref)) = (src.archive.clone(), src.index.clone()) else {
            return Err(ReadError::SourceFailed {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                reason: src.error.clone().unwrap_or_else(|| "no archive".into()),
            });
        };
        let archive = ObjectStream::open(repo, &at, &archive_ref, ObjectKind::Archive);
        let index = ObjectStream::open(repo, &at, &index_ref, ObjectKind::Index);
        Ok(SourceStreams {
            at,
            inner: Inner::Tar(TarSource {
                archive_ref,
                index_ref,
                archive,
                index,
            }),
        })
    }

    /// What integrity errors about file content name as their object.
    pub fn content_object(&self) -> &str {
        match &self.inner {
            Inner::Tar(t) => &t.archive_ref.object,
            Inner::Chunked(_) => chunked::CHUNKS_OBJECT,
        }
    }

    /// Walks the source's entries, handing each authenticated entry to
    /// `visit` (checks 3-8 of the module doc; section 22 in format 2).
    /// Call [`SourceStreams::finish`] with the result.
    pub fn walk<E: From<ReadError>>(
        &mut self,
        visit: impl FnMut(&mut Entry<'_>) -> Result<Flow, E>,
    ) -> Result<Walked, E> {
        match &mut self.inner {
            Inner::Tar(t) => t.walk(&self.at, visit),
            Inner::Chunked(c) => c.walk(&self.at, visit),
        }
    }

    /// Joins the reading threads. A failure there is the real cause of any
    /// error the consumer saw, so it wins; otherwise the consumer's result
    /// is returned.
    pub fn finish<T, E: From<ReadError>>(self, consumer: Result<T, E>) -> Result<T, E> {
        match self.inner {
            Inner::Tar(mut t) => {
                let a = t.archive.join();
                let i = t.index.join();
                a?;
                i?;
            }
            Inner::Chunked(mut c) => {
                c.lines.take();
                c.prefetch.finish();
            }
        }
        consumer
    }
}

impl ChunkedSource {
    fn walk<E: From<ReadError>>(
        &mut self,
        at: &Where,
        mut visit: impl FnMut(&mut Entry<'_>) -> Result<Flow, E>,
    ) -> Result<Walked, E> {
        let list_err = |e: io::Error| classify(e, at, chunked::LIST_OBJECT);
        let mut lines = self.lines.take().expect("walked once");
        let mut files = 0u64;
        let mut stored = StoredFiles::default();
        while let Some(line) = lines.next_stored().map_err(list_err)? {
            let rel = safe_path(line.path.as_bytes()).map_err(|r| at.unsafe_path(&line.path, r))?;
            if rel != line.path {
                return Err(at
                    .integrity(chunked::LIST_OBJECT, Fault::NotNormal(line.path))
                    .into());
            }
            let kind = line.kind;
            let (data, size) = match kind {
                EntryKind::File => {
                    let Some(ids) = line.chunks.clone() else {
                        return Err(at
                            .integrity(chunked::LIST_OBJECT, Fault::NoChunks(rel))
                            .into());
                    };
                    files += 1;
                    stored.add(&line);
                    (
                        EntryData::Chunks(chunked::ChunkData::new(
                            ids,
                            line.size,
                            &mut self.prefetch,
                            at,
                            rel.clone(),
                        )),
                        line.size,
                    )
                }
                _ => (EntryData::None, 0),
            };
            let link = (kind == EntryKind::Hardlink).then(|| line.clone());
            let mut e = Entry {
                kind,
                size,
                data,
                hash: Sha256::new(),
                read: 0,
                checked: kind != EntryKind::File,
                at,
                object: chunked::CHUNKS_OBJECT,
                rel,
                index: line,
            };
            if let Flow::Stop = visit(&mut e)? {
                return Ok(Walked { files });
            }
            e.skip()?;
            drop(e);
            if let Some(l) = link {
                stored
                    .check_link(&l)
                    .map_err(|f| at.integrity(chunked::LIST_OBJECT, f))?;
            }
        }
        // next_stored read the list to its end, where its digest is checked.
        Ok(Walked { files })
    }
}

impl TarSource {
    fn archive_error(&self, at: &Where, e: io::Error) -> ReadError {
        classify(e, at, &self.archive_ref.object)
    }

    fn index_error(&self, at: &Where, e: io::Error) -> ReadError {
        classify(e, at, &self.index_ref.object)
    }

    fn walk<E: From<ReadError>>(
        &mut self,
        at: &Where,
        mut visit: impl FnMut(&mut Entry<'_>) -> Result<Flow, E>,
    ) -> Result<Walked, E> {
        let a = self.archive.take_reader();
        let i = self.index.take_reader();
        let mut tar: TarStream =
            tar::Archive::new(TarGuard::new(decoder(a, at, &self.archive_ref.object)?));
        let mut index: IndexStream =
            IndexReader::new(BufReader::new(decoder(i, at, &self.index_ref.object)?));
        let mut files = 0u64;
        let mut stored = StoredFiles::default();
        for entry in tar.entries().map_err(|e| self.archive_error(at, e))? {
            let entry = entry.map_err(|e| self.archive_error(at, e))?;
            let name = entry.path_bytes().into_owned();
            let rel =
                safe_path(&name).map_err(|r| at.unsafe_path(&String::from_utf8_lossy(&name), r))?;
            let ty = entry.header().entry_type();
            let Some(kind) = entry_kind(ty) else {
                if ty.is_pax_global_extensions() || ty.is_pax_local_extensions() {
                    continue;
                }
                return Err(at
                    .integrity(
                        &self.archive_ref.object,
                        Fault::EntryType {
                            path: rel,
                            ty: ty.as_byte() as char,
                        },
                    )
                    .into());
            };
            let line = self.expect_entry(at, &mut index, &rel, kind)?;
            // A hard link is checked after the consumer saw it: where it
            // points is the consumer's to refuse first (step 6), and a link
            // only ever points at bytes that were checked themselves.
            let link = match kind {
                EntryKind::File => {
                    files += 1;
                    stored.add(&line);
                    None
                }
                EntryKind::Hardlink => Some(line.clone()),
                _ => None,
            };
            let mut e = Entry {
                kind,
                size: entry.size(),
                data: EntryData::Tar(entry),
                hash: Sha256::new(),
                read: 0,
                checked: kind != EntryKind::File,
                at,
                object: &self.archive_ref.object,
                rel,
                index: line,
            };
            if let Flow::Stop = visit(&mut e)? {
                return Ok(Walked { files });
            }
            // What the consumer left unread is still checked.
            e.skip()?;
            if let Some(l) = link {
                stored
                    .check_link(&l)
                    .map_err(|f| at.integrity(&self.index_ref.object, f))?;
            }
        }
        if let Some(extra) = index.next_stored().map_err(|e| self.index_error(at, e))? {
            return Err(at
                .integrity(&self.index_ref.object, Fault::NotInArchive(extra.path))
                .into());
        }
        // Tar stops at its end-of-archive marker: a cut after it must not go
        // unnoticed, so both streams are read to their authenticated end.
        io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|e| self.archive_error(at, e))?;
        io::copy(&mut index.into_inner(), &mut io::sink()).map_err(|e| self.index_error(at, e))?;
        Ok(Walked { files })
    }

    /// Reads the next stored index line and checks that the tar entry agrees.
    fn expect_entry(
        &self,
        at: &Where,
        index: &mut IndexStream,
        path: &str,
        kind: EntryKind,
    ) -> Result<IndexEntry, ReadError> {
        let e = index
            .next_stored()
            .map_err(|e| self.index_error(at, e))?
            .ok_or_else(|| {
                at.integrity(&self.index_ref.object, Fault::NotInIndex(path.to_string()))
            })?;
        if e.path != path || e.kind != kind {
            return Err(at.integrity(
                &self.archive_ref.object,
                Fault::Mismatch {
                    path: path.to_string(),
                    kind,
                    index_path: e.path,
                    index_kind: e.kind,
                },
            ));
        }
        Ok(e)
    }
}

/// What the walk keeps of each file it met, to check the hard links that
/// follow (section 11 step 5: a link's index line repeats its target's size
/// and SHA-256). Per file 24 bytes and the table's overhead, not its path: a
/// keyed hash of the path (random per process, so stored data cannot aim at
/// a collision) and the first 64 bits of its SHA-256, beyond any forgery.
#[derive(Default)]
struct StoredFiles {
    keys: std::collections::hash_map::RandomState,
    files: std::collections::HashMap<u64, (u64, u64)>,
}

impl StoredFiles {
    fn key(&self, path: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.keys, path)
    }

    /// The first 64 bits of a hex SHA-256; `u64::MAX` for none.
    fn sha_prefix(sha: Option<&str>) -> u64 {
        sha.and_then(|s| s.get(..16))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(u64::MAX)
    }

    fn add(&mut self, file: &IndexEntry) {
        let key = self.key(&file.path);
        let sha = Self::sha_prefix(file.sha256.as_deref());
        self.files.insert(key, (file.size, sha));
    }

    fn check_link(&self, link: &IndexEntry) -> Result<(), Fault> {
        let target = link.target.clone().unwrap_or_default();
        let Some(&(size, sha)) = self.files.get(&self.key(&target)) else {
            return Err(Fault::HardLinkTarget {
                path: link.path.clone(),
                target,
            });
        };
        if size != link.size || sha != Self::sha_prefix(link.sha256.as_deref()) {
            return Err(Fault::HardLink {
                path: link.path.clone(),
                target,
            });
        }
        Ok(())
    }
}

/// One authenticated entry: its index line, its tar header's facts, and its
/// bytes, which are checked against the index line's size and SHA-256 when
/// the reader reaches their end.
pub struct Entry<'a> {
    /// The normalised, safe relative path.
    pub rel: String,
    pub kind: EntryKind,
    /// The matching index line.
    pub index: IndexEntry,
    /// The size the tar header gives (what reading will yield at most).
    pub size: u64,
    data: EntryData<'a>,
    hash: Sha256,
    read: u64,
    /// Set once the content check ran (or for entries without content).
    checked: bool,
    at: &'a Where,
    object: &'a str,
}

impl Entry<'_> {
    /// An integrity error about the archive this entry came from.
    pub fn integrity(&self, reason: Fault) -> ReadError {
        self.at.integrity(self.object, reason)
    }

    /// Reads up to `buf.len()` bytes; 0 only at the end, once the content
    /// matched the index.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.read(buf)
            .map_err(|e| classify(e, self.at, self.object))
    }

    /// Fills `buf` as far as the data goes (see [`Entry::read_data`]).
    pub fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        crypto::read_full(self, buf).map_err(|e| classify(e, self.at, self.object))
    }

    /// Reads the rest of the data, checking it.
    pub fn skip(&mut self) -> Result<(), ReadError> {
        io::copy(self, &mut io::sink())
            .map(|_| ())
            .map_err(|e| classify(e, self.at, self.object))
    }
}

/// Where an entry's bytes come from. One lives at a time, on the walk's
/// stack: boxing the tar entry would cost an allocation per entry.
#[allow(clippy::large_enum_variant)]
enum EntryData<'a> {
    Tar(tar::Entry<'a, TarInner>),
    Chunks(chunked::ChunkData<'a>),
    None,
}

impl Read for EntryData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            EntryData::Tar(t) => t.read(buf),
            EntryData::Chunks(c) => c.read(buf),
            EntryData::None => Ok(0),
        }
    }
}

impl Read for Entry<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = match self.data.read(buf) {
            Ok(k) => k,
            Err(e) => {
                // Reported once: a consumer that goes on (verify) is not
                // told again that this entry's content is unchecked.
                self.checked = true;
                return Err(e);
            }
        };
        if self.checked {
            return Ok(k);
        }
        if k > 0 {
            self.hash.update(&buf[..k]);
            self.read += k as u64;
            return Ok(k);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.checked = true;
        let sha = hex::encode(std::mem::take(&mut self.hash).finalize());
        if self.read != self.index.size || self.index.sha256.as_deref() != Some(sha.as_str()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ReadError::Content {
                    snapshot: self.at.snapshot.clone(),
                    source_name: self.at.source.clone(),
                    object: self.object.to_string(),
                    path: self.rel.clone(),
                },
            ));
        }
        Ok(0)
    }
}

/// The index's entry type for a tar entry type; `None` for any other.
pub fn entry_kind(t: tar::EntryType) -> Option<EntryKind> {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => Some(EntryKind::File),
        tar::EntryType::Directory => Some(EntryKind::Dir),
        tar::EntryType::Symlink => Some(EntryKind::Symlink),
        tar::EntryType::Link => Some(EntryKind::Hardlink),
        _ => None,
    }
}

/// Whether a source of this kind stores dump streams (section 9) rather
/// than files.
pub fn is_dump_source(kind: &str) -> bool {
    !matches!(kind, "directory" | "files")
}

/// How many `file` entries the archive must hold: a `directory` or `files`
/// source's `files`; for a dump source, the sum of `chunks` over
/// `details.streams` (its `files` counts streams).
pub fn expected_files(src: &SourceRecord) -> u64 {
    // Format 2 stores a stream as one line, not as 4 MiB chunk entries.
    if is_dump_source(&src.kind) && src.list.is_none() {
        src.details
            .get("streams")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("chunks").and_then(|c| c.as_u64()))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        src.files
    }
}
