//! Writing a snapshot as chunks (format 2, docs/FORMAT.md sections 17 to
//! 21): the [`ChunkSink`] a source's walk or dump writes into, and the
//! [`ChunkWriter`] behind it that seals new chunks into packs and uploads
//! them.
//!
//! Work is split so that both cores stay busy: the source's own thread
//! reads, hashes (SHA-256 of the file, the keyed chunk id) and cuts; a
//! packer thread compresses and seals the chunks the repository does not
//! hold yet; pack uploads run on the async runtime, at most
//! [`UPLOADS`] at a time. The channels between them are bounded, so memory
//! holds a few chunks and at most `UPLOADS + 1` packs whatever the size of
//! the source.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::ChunkId;
use super::cut::{Chunker, Cutter};
use super::index::IndexedPack;
use super::known::KnownChunks;
use super::pack::{BlobType, PACK_TARGET, PackWriter, SealedPack};
use super::storage::{ChunkStoreError, store_index};
use crate::archive::{Announced, DataOutcome, EntrySink, IndexWriter};
use crate::manifest::{EntryKind, IndexEntry, ListRef};
use crate::repo::Chunked;
use crate::source::SourceError;
use crate::source::stream::{StoredStream, StreamSink};
use crate::store::Store;

/// Pack uploads in flight at once.
pub const UPLOADS: usize = 2;
/// Chunks waiting for the packer.
const QUEUED_CHUNKS: usize = 4;

/// One chunk on its way to a pack, with the source it is charged to.
struct Job {
    id: ChunkId,
    kind: BlobType,
    data: Bytes,
    source: usize,
}

/// What every source's sink shares: the chunker, the keys, what the
/// repository holds, and the way to the packer.
struct Shared {
    chunked: Arc<Chunked>,
    known: Mutex<KnownChunks>,
    tx: Mutex<Option<SyncSender<Job>>>,
    /// Stored bytes (sealed blobs) per source, filled in by the packer.
    stored: Mutex<Vec<u64>>,
    /// Every chunk the snapshot uses, when asked for ([`ChunkWriter::log_refs`]).
    refs: Mutex<Option<io::BufWriter<std::fs::File>>>,
    /// Why the log lost an id (the snapshot then cannot be checked).
    refs_error: Mutex<Option<String>>,
}

/// The packs of one snapshot: started before its first source, finished
/// (last pack uploaded, index object stored) before its manifest.
pub struct ChunkWriter {
    shared: Arc<Shared>,
    packer: Option<JoinHandle<Result<(), ChunkStoreError>>>,
    uploader: tokio::task::JoinHandle<Result<Vec<IndexedPack>, ChunkStoreError>>,
    store: Store,
    repo_id: String,
    dry_run: bool,
}

/// What a finished [`ChunkWriter`] stored.
#[derive(Debug, Default)]
pub struct Written {
    pub index: Option<String>,
    /// The packs uploaded.
    pub packs: Vec<[u8; 32]>,
    /// Every chunk the snapshot uses (with [`ChunkWriter::log_refs`]).
    pub refs: Option<std::fs::File>,
    /// Stored bytes (sealed blobs) per source, in the order of the sinks.
    pub charged: Vec<u64>,
}

impl ChunkWriter {
    /// Starts the packer and the uploader. `known` is what the repository
    /// holds; `dry_run` seals packs but uploads nothing. Call from within
    /// the runtime.
    pub fn start(
        store: &Store,
        repo_id: &str,
        chunked: Arc<Chunked>,
        known: KnownChunks,
        level: i32,
        dry_run: bool,
    ) -> ChunkWriter {
        let (tx, rx) = sync_channel::<Job>(QUEUED_CHUNKS);
        let (ptx, prx) = tokio::sync::mpsc::channel::<Sealed>(1);
        // Finished packs held at once (queued or uploading): with the one
        // being filled, memory holds at most UPLOADS + 1 packs.
        let in_flight = Arc::new(tokio::sync::Semaphore::new(UPLOADS));
        let handle = tokio::runtime::Handle::current();
        let shared = Arc::new(Shared {
            chunked: Arc::clone(&chunked),
            known: Mutex::new(known),
            tx: Mutex::new(Some(tx)),
            stored: Mutex::new(Vec::new()),
            refs: Mutex::new(None),
            refs_error: Mutex::new(None),
        });
        let packer_shared = Arc::clone(&shared);
        let packer = std::thread::spawn(move || {
            pack_loop(rx, ptx, &packer_shared, level, &in_flight, &handle)
        });
        let up_store = store.clone();
        let uploader = tokio::spawn(upload_loop(up_store, prx, dry_run));
        ChunkWriter {
            shared,
            packer: Some(packer),
            uploader,
            store: store.clone(),
            repo_id: repo_id.to_string(),
            dry_run,
        }
    }

    /// Keeps the id of every chunk the snapshot uses (new, deduplicated or
    /// taken from the parent) in a temporary file, for the check before
    /// the manifest (FORMAT.md 23.2): 32 bytes a chunk on disk, none in
    /// memory.
    pub fn log_refs(&mut self) -> io::Result<()> {
        let f = tempfile::tempfile()?;
        *self.shared.refs.lock().expect("refs lock") = Some(io::BufWriter::new(f));
        Ok(())
    }

    /// A sink for the next source.
    pub fn sink(&mut self) -> ChunkSink {
        let source = {
            let mut stored = self.shared.stored.lock().expect("stored lock");
            stored.push(0);
            stored.len() - 1
        };
        ChunkSink {
            shared: Arc::clone(&self.shared),
            source,
            new_chunks: 0,
            identity: false,
            parent: None,
        }
    }

    /// Queues a chunk as it is, new whatever the repository holds (a chunk
    /// copied out of a marked pack, FORMAT.md 23.2), charged to the first
    /// sink.
    pub async fn copy_chunk(&self, id: ChunkId, kind: BlobType, data: Bytes) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.send(id, kind, data, 0))
            .await
            .map_err(io::Error::other)?
    }

    /// Uploads the last pack and stores the index object that lists every
    /// pack of this snapshot. An upload that failed fails the whole
    /// snapshot: its chunks were counted as stored by every file after them.
    pub async fn finish(mut self) -> Result<Written, ChunkStoreError> {
        self.shared.tx.lock().expect("tx lock").take();
        let packer = self.packer.take().expect("finished once");
        let packed = tokio::task::spawn_blocking(move || packer.join())
            .await
            .map_err(|e| ChunkStoreError::Internal(e.to_string()))?
            .map_err(|_| ChunkStoreError::Internal("the packer thread panicked".into()))?;
        let uploaded = (&mut self.uploader)
            .await
            .map_err(|e| ChunkStoreError::Internal(e.to_string()))?;
        // The uploader's failure is the cause when the packer saw its end.
        let packs = uploaded?;
        packed?;
        if let Some(e) = self.shared.refs_error.lock().expect("refs lock").take() {
            return Err(ChunkStoreError::Internal(format!("chunk log: {e}")));
        }
        let refs = match self.shared.refs.lock().expect("refs lock").take() {
            Some(log) => Some(
                log.into_inner()
                    .map_err(|e| ChunkStoreError::Internal(format!("chunk log: {e}")))?,
            ),
            None => None,
        };
        let mut w = Written {
            packs: packs.iter().map(|p| p.pack).collect(),
            refs,
            charged: self.shared.stored.lock().expect("stored lock").clone(),
            ..Written::default()
        };
        if !packs.is_empty() && !self.dry_run {
            let keys = &self.shared.chunked.keys;
            w.index = Some(store_index(&self.store, keys, &self.repo_id, packs).await?);
        }
        Ok(w)
    }
}

/// A finished pack on its way to the store, with its share of the packs
/// that may be held at once (released when its upload ends).
type Sealed = (SealedPack, tokio::sync::OwnedSemaphorePermit);

fn pack_loop(
    rx: Receiver<Job>,
    out: tokio::sync::mpsc::Sender<Sealed>,
    shared: &Shared,
    level: i32,
    in_flight: &Arc<tokio::sync::Semaphore>,
    handle: &tokio::runtime::Handle,
) -> Result<(), ChunkStoreError> {
    let keys = &shared.chunked.keys;
    let mut pack: Option<PackWriter> = None;
    let stopped = || ChunkStoreError::Internal("the pack uploader stopped".into());
    let send = |p: PackWriter| -> Result<(), ChunkStoreError> {
        let permit = handle
            .block_on(Arc::clone(in_flight).acquire_owned())
            .map_err(|_| stopped())?;
        out.blocking_send((p.finish(), permit))
            .map_err(|_| stopped())
    };
    for job in rx {
        // A pack closes before a chunk would take it past the target, so
        // packs stay near 16 MiB and their buffers are allocated once.
        if let Some(p) = pack.take_if(|p| !p.is_empty() && p.len() + job.data.len() > PACK_TARGET) {
            send(p)?;
        }
        let p = pack.get_or_insert_with(|| PackWriter::new(keys, level));
        let before = p.len();
        p.add(job.id, job.kind, &job.data);
        let grew = (p.len() - before) as u64;
        shared.stored.lock().expect("stored lock")[job.source] += grew;
    }
    if let Some(p) = pack.filter(|p| !p.is_empty()) {
        send(p)?;
    }
    Ok(())
}

async fn upload_loop(
    store: Store,
    rx: tokio::sync::mpsc::Receiver<Sealed>,
    dry_run: bool,
) -> Result<Vec<IndexedPack>, ChunkStoreError> {
    let packs = tokio_stream_of(rx)
        .map(|(sealed, permit)| {
            let store = store.clone();
            async move {
                // Held until this pack's upload ends.
                let _permit = permit;
                let name = sealed.object_name();
                if !dry_run {
                    // Create-only: a pack's name is the hash of its bytes,
                    // so one already there (a retry after a lost answer)
                    // holds exactly these bytes.
                    match store.put(&name, Bytes::from(sealed.bytes), true).await {
                        Ok(()) | Err(crate::store::StoreError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(ChunkStoreError::Store(e)),
                    }
                }
                Ok(IndexedPack {
                    pack: sealed.id,
                    blobs: sealed.entries,
                })
            }
        })
        .buffer_unordered(UPLOADS);
    futures::pin_mut!(packs);
    let mut done = Vec::new();
    while let Some(p) = packs.next().await {
        done.push(p?);
    }
    Ok(done)
}

fn tokio_stream_of<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// One source's way into the packs: cuts, names and deduplicates its
/// content on the source's own thread.
pub struct ChunkSink {
    shared: Arc<Shared>,
    pub source: usize,
    /// Chunks this source added to the repository.
    pub new_chunks: u64,
    /// Directory sources: lines record inode and change time.
    identity: bool,
    /// The previous snapshot's list of this source (section 21.2).
    parent: Option<ParentList>,
}

/// The previous snapshot's file list of a directory source, read as a
/// stream beside the walk: both are in walk order (section 9), so each
/// lookup only moves forward, and memory holds one line.
pub struct ParentList {
    lines: Box<dyn Iterator<Item = io::Result<IndexEntry>> + Send>,
    pending: Option<IndexEntry>,
    failed: bool,
}

/// Walk order: component by component, bytewise, a directory before what
/// it holds; the root `.` first.
fn walk_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(p: &str) -> impl Iterator<Item = &[u8]> {
        (p != ".")
            .then_some(p)
            .into_iter()
            .flat_map(|p| p.split('/'))
            .map(str::as_bytes)
    }
    parts(a).cmp(parts(b))
}

impl ParentList {
    pub fn new(lines: Box<dyn Iterator<Item = io::Result<IndexEntry>> + Send>) -> Self {
        ParentList {
            lines,
            pending: None,
            failed: false,
        }
    }

    /// The parent's line for `path`, if it has one. A list that cannot be
    /// read is given up (every file is then read), never trusted further.
    fn find(&mut self, path: &str) -> Option<IndexEntry> {
        use std::cmp::Ordering;
        while !self.failed {
            if self.pending.is_none() {
                match self.lines.next() {
                    Some(Ok(l)) => self.pending = Some(l),
                    Some(Err(e)) => {
                        tracing::warn!(
                            "the previous snapshot's file list could not be read ({e}); every file is read again"
                        );
                        self.failed = true;
                        return None;
                    }
                    None => return None,
                }
            }
            let line = self.pending.as_ref().expect("filled above");
            match walk_order(&line.path, path) {
                Ordering::Less => self.pending = None,
                Ordering::Equal => return self.pending.take(),
                Ordering::Greater => return None,
            }
        }
        None
    }
}

/// Why a chunk could not be queued: the packer or the upload behind it
/// stopped, and [`ChunkWriter::finish`] says why.
#[derive(Debug, thiserror::Error)]
#[error("the pack writer stopped (an upload failed)")]
pub struct PackerStopped;

/// Whether an I/O error is [`PackerStopped`].
pub fn is_packer_stopped(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<PackerStopped>())
}

impl Shared {
    /// Queues a chunk for packing unless the repository holds it; true
    /// when it was new.
    fn queue(&self, id: ChunkId, kind: BlobType, data: Bytes, source: usize) -> io::Result<bool> {
        self.record(&id)?;
        if !self.known.lock().expect("known lock").insert(&id) {
            return Ok(false);
        }
        self.send(id, kind, data, source)?;
        Ok(true)
    }

    /// Notes that the snapshot uses this chunk (for the check at commit).
    fn record(&self, id: &ChunkId) -> io::Result<()> {
        if let Some(log) = self.refs.lock().expect("refs lock").as_mut() {
            log.write_all(&id.0)?;
        }
        Ok(())
    }

    fn refs_failed(&self, e: io::Error) {
        self.refs_error
            .lock()
            .expect("refs lock")
            .get_or_insert_with(|| e.to_string());
    }

    fn send(&self, id: ChunkId, kind: BlobType, data: Bytes, source: usize) -> io::Result<()> {
        let tx = self.tx.lock().expect("tx lock").clone();
        let stopped = || io::Error::other(PackerStopped);
        tx.ok_or_else(stopped)?
            .send(Job {
                id,
                kind,
                data,
                source,
            })
            .map_err(|_| stopped())
    }
}

impl ChunkSink {
    /// A directory source: its lines record inode and change time, and
    /// `parent` (when given) stands for files that did not change.
    pub fn directory(&mut self, parent: Option<ParentList>) {
        self.identity = true;
        self.parent = parent;
    }

    /// Cuts `r` into chunks, queues the new ones for packing, and returns
    /// the ids of all of them in order.
    fn store(&mut self, r: impl Read, kind: BlobType) -> io::Result<Vec<ChunkId>> {
        let chunked = Arc::clone(&self.shared.chunked);
        let mut ids = Vec::new();
        for c in Chunker::new(r, &chunked.params, chunked.keys.chunker_seed)
            .expect("parameters checked when the repository was opened")
        {
            let c = c?;
            let id = chunked.keys.id_of(&c);
            if self.shared.queue(id, kind, c, self.source)? {
                self.new_chunks += 1;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// A writer for this source's file list, whose bytes are cut and
    /// stored as list chunks (section 20) as they come.
    pub fn list(&self) -> ListWriter {
        ListWriter {
            shared: Arc::clone(&self.shared),
            cutter: Cutter::new(
                &self.shared.chunked.params,
                self.shared.chunked.keys.chunker_seed,
            )
            .expect("parameters checked when the repository was opened"),
            source: self.source,
            buf: BytesMut::new(),
            chunks: Vec::new(),
            new_chunks: 0,
            size: 0,
            hash: Sha256::new(),
        }
    }
}

/// A file list on its way into chunks: its bytes are cut as they come, so
/// it is never held whole, whatever the number of files.
pub struct ListWriter {
    shared: Arc<Shared>,
    cutter: Cutter,
    source: usize,
    buf: BytesMut,
    chunks: Vec<ChunkId>,
    new_chunks: u64,
    size: u64,
    hash: Sha256,
}

impl ListWriter {
    /// Stores the list chunks that are final: all of them at the end, else
    /// those before the last maximum chunk's worth of bytes.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        while !self.buf.is_empty() && (all || self.buf.len() >= 2 * self.cutter.max()) {
            let end = self.cutter.cut(&self.buf);
            let c = self.buf.split_to(end).freeze();
            let id = self.shared.chunked.keys.id_of(&c);
            if self.shared.queue(id, BlobType::List, c, self.source)? {
                self.new_chunks += 1;
            }
            self.chunks.push(id);
        }
        Ok(())
    }

    /// Stores what is left and says where the list is, and how many
    /// chunks it added to the repository.
    pub fn finish(mut self) -> io::Result<(ListRef, u64)> {
        self.drain(true)?;
        Ok((
            ListRef {
                chunks: self.chunks,
                size: self.size,
                sha256: hex::encode(self.hash.finalize()),
            },
            self.new_chunks,
        ))
    }
}

impl Write for ListWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        self.hash.update(b);
        self.size += b.len() as u64;
        self.drain(false)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntrySink for ChunkSink {
    fn append(
        &mut self,
        e: &IndexEntry,
        _tar_path: &str,
        data: Option<&mut dyn Read>,
    ) -> io::Result<Option<DataOutcome>> {
        let (Some(data), EntryKind::File) = (data, e.kind) else {
            return Ok(None);
        };
        let mut r = Announced::new(data, e.size);
        let chunks = self.store(&mut r, BlobType::Data)?;
        let (sha256, read, short) = r.finish();
        Ok(Some(DataOutcome {
            sha256,
            read,
            short,
            chunks: Some(chunks),
        }))
    }

    fn records_identity(&self) -> bool {
        self.identity
    }

    fn unchanged(&mut self, e: &IndexEntry) -> Option<IndexEntry> {
        let line = self.parent.as_mut()?.find(&e.path)?;
        let same = line.kind == EntryKind::File
            && line.stored
            && line.error.is_none()
            && line.chunks.is_some()
            && line.size == e.size
            && line.mtime == e.mtime
            && line.mtime_nsec == e.mtime_nsec
            && line.ino == e.ino
            && line.ctime == e.ctime
            && line.ctime_nsec == e.ctime_nsec;
        if !same {
            return None;
        }
        // Its chunks must be where a writer may deduplicate (in packs that
        // exist and are not marked, FORMAT.md 23.2); else it is read again.
        let known = {
            let k = self.shared.known.lock().expect("known lock");
            line.chunks.iter().flatten().all(|id| k.contains(id))
        };
        if !known {
            return None;
        }
        for id in line.chunks.iter().flatten() {
            // A log that cannot be written fails the snapshot at commit.
            if let Err(err) = self.shared.record(id) {
                // Reported by ChunkWriter::finish.
                self.shared.refs_failed(err);
            }
        }
        Some(IndexEntry {
            sha256: line.sha256,
            chunks: line.chunks,
            ..e.clone()
        })
    }
}

impl StreamSink for ChunkSink {
    fn store_stream<I: Write>(
        &mut self,
        name: &str,
        r: &mut dyn Read,
        index: &mut IndexWriter<I>,
    ) -> Result<StoredStream, SourceError> {
        let started = chrono::Utc::now();
        let mut hashed = Hashed {
            inner: r,
            hash: Sha256::new(),
            size: 0,
        };
        let chunks = self.store(&mut hashed, BlobType::Data).map_err(|e| {
            if is_packer_stopped(&e) {
                SourceError::Io(e)
            } else {
                SourceError::Failed(format!("reading the {name} stream failed: {e}"))
            }
        })?;
        let sha256 = hex::encode(hashed.hash.finalize());
        let mut line = crate::source::stream::stream_entry(name.to_string(), hashed.size, started);
        line.sha256 = Some(sha256.clone());
        line.chunks = Some(chunks.clone());
        index.push(&line)?;
        Ok(StoredStream {
            name: name.to_string(),
            bytes: hashed.size,
            chunks: chunks.len() as u64,
            sha256,
        })
    }
}

/// A stream's bytes, hashed and counted on the way to the chunker.
struct Hashed<'a> {
    inner: &'a mut dyn Read,
    hash: Sha256,
    size: u64,
}

impl Read for Hashed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_is_the_order_of_the_walk() {
        // A directory's entries come right after it, before its next
        // sibling, whatever bytes the sibling's name holds.
        let walked = [
            ".", " x", "-y", "a", "a/b", "a/b/c", "a/z", "a-b", "a.txt", "b",
        ];
        for w in walked.windows(2) {
            assert_eq!(walk_order(w[0], w[1]), std::cmp::Ordering::Less, "{w:?}");
        }
        assert_eq!(walk_order("a/b", "a/b"), std::cmp::Ordering::Equal);
    }

    fn line(path: &str) -> IndexEntry {
        serde_json::from_str(&format!(
            r#"{{"path":{path:?},"type":"file","size":1,"mode":420,"mtime":1,"uid":0,"gid":0,"stored":true,"chunks":[]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_parent_list_is_read_forward_once() {
        let lines: Vec<io::Result<IndexEntry>> = [".", "a", "a/b", "c", "d/e"]
            .iter()
            .map(|p| Ok(line(p)))
            .collect();
        let mut p = ParentList::new(Box::new(lines.into_iter()));
        assert!(p.find("a/a").is_none());
        assert_eq!(p.find("a/b").unwrap().path, "a/b");
        assert!(p.find("b").is_none());
        assert_eq!(p.find("c").unwrap().path, "c");
        assert_eq!(p.find("d/e").unwrap().path, "d/e");
        assert!(p.find("z").is_none());
    }
}
