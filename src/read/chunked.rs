//! Reading a format 2 source (docs/FORMAT.md section 22): its file list,
//! read from the list's chunks and checked against the manifest's size and
//! SHA-256 at its end, and its files' chunks, fetched ahead in list order,
//! several at a time, each checked against its id before a byte of it is
//! handed on.
//!
//! Two readers go through the list side by side: the walk, line by line,
//! and a prefetcher that only collects chunk ids and keeps [`PREFETCH`]
//! fetches in flight, so that small files on a remote store do not each
//! wait for a round trip. The walk checks that each chunk it is handed is
//! the one its line names next.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{Fault, ReadError, Where, classify};
use crate::archive::IndexReader;
use crate::chunks::ChunkId;
use crate::chunks::storage::{ChunkStoreError, Fetcher};
use crate::manifest::{EntryKind, IndexEntry, ListRef};

/// Chunk fetches in flight per source being read.
pub const PREFETCH: usize = 8;
/// Plaintext bytes fetched ahead and not yet consumed, at most (in KiB):
/// eight media chunks of 8 MiB must not make a restore hold 128 MiB.
const PREFETCH_KIB: u32 = 24 * 1024;

/// What integrity errors about a file list name as their object.
pub const LIST_OBJECT: &str = "file list";
/// What integrity errors about file content name as their object.
pub const CHUNKS_OBJECT: &str = "chunks";

impl Where {
    pub fn chunk_error(&self, file: Option<&str>, e: ChunkStoreError) -> ReadError {
        ReadError::Chunk {
            snapshot: self.snapshot.clone(),
            source_name: self.source.clone(),
            file: file.map(str::to_string),
            source: e,
        }
    }
}

/// A file list as one byte stream, fetched chunk by chunk. At its end its
/// length and SHA-256 must be the manifest's.
pub struct ListReader {
    fetcher: Arc<Fetcher>,
    handle: Handle,
    list: ListRef,
    next: usize,
    cur: Bytes,
    hash: Sha256,
    size: u64,
    checked: bool,
    at: Where,
}

impl ListReader {
    pub fn new(fetcher: Arc<Fetcher>, handle: Handle, list: ListRef, at: Where) -> Self {
        ListReader {
            fetcher,
            handle,
            list,
            next: 0,
            cur: Bytes::new(),
            hash: Sha256::new(),
            size: 0,
            checked: false,
            at,
        }
    }

    fn fault(&self, f: Fault) -> io::Error {
        io::Error::other(self.at.integrity(LIST_OBJECT, f))
    }
}

impl Read for ListReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.next == self.list.chunks.len() {
                if !self.checked {
                    self.checked = true;
                    let sha = hex::encode(std::mem::take(&mut self.hash).finalize());
                    if self.size != self.list.size || sha != self.list.sha256 {
                        return Err(self.fault(Fault::ListDigest {
                            size: self.size,
                            recorded: self.list.size,
                        }));
                    }
                }
                return Ok(0);
            }
            let id = self.list.chunks[self.next];
            self.next += 1;
            let b = self
                .handle
                .block_on(self.fetcher.fetch(id))
                .map_err(|e| io::Error::other(self.at.chunk_error(None, e)))?;
            self.size += b.len() as u64;
            // A list longer than the manifest says is refused as it comes,
            // not once it has been buffered.
            if self.size > self.list.size {
                return Err(self.fault(Fault::ListDigest {
                    size: self.size,
                    recorded: self.list.size,
                }));
            }
            self.hash.update(&b);
            self.cur = b;
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// The lines of a file list, read as a stream (the previous snapshot's
/// list, beside a walk: `chunks::write::ParentList`).
pub fn list_lines(
    fetcher: Arc<Fetcher>,
    handle: Handle,
    list: ListRef,
    at: Where,
) -> impl Iterator<Item = io::Result<IndexEntry>> + Send {
    let mut lines = IndexReader::new(BufReader::new(ListReader::new(fetcher, handle, list, at)));
    std::iter::from_fn(move || lines.next_entry().transpose())
}

/// A chunk fetched ahead, with its share of [`PREFETCH_KIB`], released
/// once the walk has consumed it.
type Fetched = Result<(ChunkId, Bytes, OwnedSemaphorePermit), ReadError>;

/// The chunks of a source's files, in list order, fetched ahead.
pub struct Prefetch {
    rx: mpsc::Receiver<Fetched>,
    lister: Option<JoinHandle<()>>,
}

impl Prefetch {
    pub fn start(fetcher: Arc<Fetcher>, handle: Handle, list: ListRef, at: Where) -> Prefetch {
        let (id_tx, id_rx) = mpsc::channel::<Result<ChunkId, ReadError>>(1024);
        let reader = ListReader::new(Arc::clone(&fetcher), handle.clone(), list, at.clone());
        let lister_at = at.clone();
        let lister = std::thread::spawn(move || {
            let mut lines = IndexReader::new(BufReader::new(reader));
            loop {
                match lines.next_stored() {
                    Ok(Some(e)) if e.kind == EntryKind::File => {
                        for id in e.chunks.unwrap_or_default() {
                            if id_tx.blocking_send(Ok(id)).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    // The walk reads the same list and reports this itself;
                    // it is passed on in case the walk is waiting for data.
                    Err(e) => {
                        let _ = id_tx.blocking_send(Err(classify(e, &lister_at, LIST_OBJECT)));
                        return;
                    }
                }
            }
        });
        let (tx, rx) = mpsc::channel::<Fetched>(PREFETCH);
        let budget = Arc::new(Semaphore::new(PREFETCH_KIB as usize));
        handle.spawn(async move {
            let mut id_rx = id_rx;
            let ids = futures::stream::poll_fn(move |cx| id_rx.poll_recv(cx));
            let fetches = ids
                .map(|r| {
                    let f = Arc::clone(&fetcher);
                    let at = at.clone();
                    let budget = Arc::clone(&budget);
                    async move {
                        let id = r?;
                        // Futures are polled in order and the semaphore is
                        // fair, so a later chunk never takes the share an
                        // earlier one waits for.
                        let kib = f
                            .locations()
                            .locate(&id)
                            .map_or(1, |(_, e)| e.raw_len.div_ceil(1024).clamp(1, PREFETCH_KIB));
                        let permit = budget
                            .acquire_many_owned(kib)
                            .await
                            .map_err(|_| ReadError::Thread("chunk prefetch stopped".into()))?;
                        f.fetch(id)
                            .await
                            .map(|b| (id, b, permit))
                            .map_err(|e| at.chunk_error(None, e))
                    }
                })
                .buffered(PREFETCH);
            futures::pin_mut!(fetches);
            while let Some(x) = fetches.next().await {
                // A damaged or missing chunk fails its file only (verify
                // goes on to the next); a damaged list ends the source.
                let stop = matches!(&x, Err(e) if !matches!(e, ReadError::Chunk { .. }));
                if tx.send(x).await.is_err() || stop {
                    break;
                }
            }
        });
        Prefetch {
            rx,
            lister: Some(lister),
        }
    }

    /// Stops fetching and waits for the list reader.
    pub fn finish(&mut self) {
        self.rx.close();
        if let Some(t) = self.lister.take() {
            let _ = t.join();
        }
    }
}

/// A file's bytes, from its chunks as the prefetcher hands them over. Never
/// yields more than the line's size (the walk's check at the end then
/// compares length and SHA-256).
pub struct ChunkData<'a> {
    ids: Vec<ChunkId>,
    next: usize,
    cur: Bytes,
    /// The prefetch share of `cur`.
    _permit: Option<OwnedSemaphorePermit>,
    left: u64,
    rx: &'a mut mpsc::Receiver<Fetched>,
    at: &'a Where,
    path: String,
}

impl<'a> ChunkData<'a> {
    pub fn new(
        ids: Vec<ChunkId>,
        size: u64,
        prefetch: &'a mut Prefetch,
        at: &'a Where,
        path: String,
    ) -> Self {
        ChunkData {
            ids,
            next: 0,
            cur: Bytes::new(),
            _permit: None,
            left: size,
            rx: &mut prefetch.rx,
            at,
            path,
        }
    }

    fn content_error(&self) -> io::Error {
        io::Error::other(ReadError::Content {
            snapshot: self.at.snapshot.clone(),
            source_name: self.at.source.clone(),
            object: CHUNKS_OBJECT.to_string(),
            path: self.path.clone(),
        })
    }
}

impl Read for ChunkData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.next == self.ids.len() {
                return Ok(0);
            }
            let want = self.ids[self.next];
            self.next += 1;
            match self.rx.blocking_recv() {
                Some(Ok((id, b, permit))) if id == want => {
                    self.cur = b;
                    self._permit = Some(permit);
                }
                Some(Ok((id, _, _))) => {
                    return Err(io::Error::other(ReadError::Thread(format!(
                        "chunk prefetch out of step: {id} came where {want} was due"
                    ))));
                }
                // Name the file whose chunk failed, after taking the rest of
                // its chunks off the channel, so the next file starts in step.
                Some(Err(ReadError::Chunk {
                    snapshot,
                    source_name,
                    file: None,
                    source,
                })) => {
                    while self.next < self.ids.len() {
                        self.next += 1;
                        if self.rx.blocking_recv().is_none() {
                            break;
                        }
                    }
                    return Err(io::Error::other(ReadError::Chunk {
                        snapshot,
                        source_name,
                        file: Some(self.path.clone()),
                        source,
                    }));
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => {
                    return Err(io::Error::other(ReadError::Thread(
                        "chunk prefetch ended early".into(),
                    )));
                }
            }
            if self.cur.len() as u64 > self.left {
                return Err(self.content_error());
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Whether a source record is format 2 (has a file list).
pub fn is_chunked(src: &crate::manifest::SourceRecord) -> bool {
    src.list.is_some()
}
