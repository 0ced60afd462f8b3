//! The stored streams of a dump source (PostgreSQL, MySQL, ...), read
//! back for restore, dump and drill.

use super::*;

pub(super) enum ChunkMsg {
    Chunk(String, Vec<u8>),
    Done,
    Failed(String),
}

/// The streams of a stored dump source, read from its archive in step with
/// its index. A thread parses the tar, checks every chunk's size and SHA-256
/// against the index, and reads the archive to its authenticated end before
/// it reports the end: a tool fed from here sees end-of-input only once every
/// byte is authenticated, so a damaged archive always reaches it as an error.
pub struct ChunkStreams {
    pub(super) rx: std::sync::mpsc::Receiver<ChunkMsg>,
    pub(super) pending: Option<(String, Vec<u8>)>,
    /// The stream last handed out: its unread chunks are skipped.
    pub(super) last: Option<String>,
    pub(super) done: bool,
    pub(super) thread: Option<JoinHandle<Result<(), RestoreError>>>,
}

impl ChunkStreams {
    pub fn open(repo: &Repository, m: &Manifest, src: &SourceRecord) -> Result<Self, RestoreError> {
        let mut streams = SourceStreams::open(repo, m, src)?;
        let at = streams.at.clone();
        let object = streams.content_object().to_string();
        let chunked = src.list.is_some();
        let (tx, rx) = std::sync::mpsc::sync_channel::<ChunkMsg>(2);
        let thread = std::thread::spawn(move || -> Result<(), RestoreError> {
            let res = streams.walk(|e| -> Result<Flow, RestoreError> {
                if chunked {
                    // Format 2: a stream is one line, handed on in pieces
                    // as read. Every byte comes from a chunk checked against
                    // its id, named by a list checked against the manifest;
                    // the stream's own length and SHA-256 are checked by the
                    // read that reaches its end, before `Done` is sent.
                    if e.kind != EntryKind::File {
                        return Err(e.integrity(Fault::NotAChunk(e.rel.clone())).into());
                    }
                    let name = e.rel.clone();
                    let mut sent = false;
                    loop {
                        let mut piece = vec![0u8; crate::source::stream::CHUNK];
                        let k = e.read_full(&mut piece)?;
                        piece.truncate(k);
                        // An empty stream is still one (empty) piece.
                        if (k > 0 || !sent)
                            && tx.send(ChunkMsg::Chunk(name.clone(), piece)).is_err()
                        {
                            return Ok(Flow::Stop);
                        }
                        sent = true;
                        if k < crate::source::stream::CHUNK {
                            break;
                        }
                    }
                    return Ok(Flow::Next);
                }
                let chunk = match crate::source::stream::parse_chunk_path(&e.rel) {
                    Some((stream, _)) if e.kind == EntryKind::File => stream.to_string(),
                    _ => {
                        return Err(e.integrity(Fault::NotAChunk(e.rel.clone())).into());
                    }
                };
                // Sizes come from stored data: never hold more than a chunk
                // can be, whatever the index or tar header says.
                let max = crate::source::stream::CHUNK as u64;
                if e.index.size > max || e.size != e.index.size {
                    return Err(e
                        .integrity(Fault::ChunkSize {
                            path: e.rel.clone(),
                            size: e.size,
                            index: e.index.size,
                            max,
                        })
                        .into());
                }
                // Read to its end, so that its size and SHA-256 are checked
                // before a tool sees a byte of it.
                let mut data = Vec::with_capacity(e.index.size as usize);
                e.read_to_end(&mut data)
                    .map_err(|err| crate::read::classify(err, &at, &object))?;
                if tx.send(ChunkMsg::Chunk(chunk, data)).is_err() {
                    // The consumer stopped (it failed, or needed no more).
                    return Ok(Flow::Stop);
                }
                Ok(Flow::Next)
            });
            let res = streams.finish(res.map(|_| ()));
            let _ = tx.send(match &res {
                Ok(()) => ChunkMsg::Done,
                Err(e) => ChunkMsg::Failed(e.to_string()),
            });
            res
        });
        Ok(ChunkStreams {
            rx,
            pending: None,
            last: None,
            done: false,
            thread: Some(thread),
        })
    }

    pub(super) fn recv(&mut self) -> io::Result<Option<(String, Vec<u8>)>> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        if self.done {
            return Ok(None);
        }
        match self.rx.recv() {
            Ok(ChunkMsg::Chunk(n, d)) => Ok(Some((n, d))),
            Ok(ChunkMsg::Done) => {
                self.done = true;
                Ok(None)
            }
            Ok(ChunkMsg::Failed(e)) => {
                self.done = true;
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Err(_) => {
                self.done = true;
                Err(io::Error::other("the archive reader stopped"))
            }
        }
    }

    /// Joins the reading thread: its error is the authoritative cause of
    /// anything a consumer saw go wrong.
    pub fn finish(mut self) -> Result<(), RestoreError> {
        drop(std::mem::replace(
            &mut self.rx,
            std::sync::mpsc::sync_channel(0).1,
        ));
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(RestoreError::Internal("archive reader panicked".into()))),
            None => Ok(()),
        }
    }
}

/// One stream's bytes: chunks until the next stream begins.
pub(super) struct ChunkReader<'a> {
    pub(super) parent: &'a mut ChunkStreams,
    pub(super) name: String,
    pub(super) cur: Vec<u8>,
    pub(super) pos: usize,
    pub(super) ended: bool,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.parent.recv()? {
                Some((n, d)) if n == self.name => {
                    self.cur = d;
                    self.pos = 0;
                }
                Some(other) => {
                    self.parent.pending = Some(other);
                    self.ended = true;
                }
                None => self.ended = true,
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl crate::source::Streams for ChunkStreams {
    fn next_stream(
        &mut self,
    ) -> Result<Option<crate::source::NamedStream<'_>>, crate::source::SourceError> {
        // Skip what the previous reader left unread.
        let first = loop {
            match self.recv()? {
                None => return Ok(None),
                Some(c) if self.last.as_deref() == Some(c.0.as_str()) => continue,
                Some(c) => break c,
            }
        };
        let name = first.0.clone();
        self.last = Some(name.clone());
        Ok(Some((
            name.clone(),
            Box::new(ChunkReader {
                parent: self,
                name,
                cur: first.1,
                pos: 0,
                ended: false,
            }),
        )))
    }
}

pub(super) fn kind_of(src: &SourceRecord) -> Result<crate::config::SourceKind, RestoreError> {
    crate::config::SourceKind::parse(&src.kind).ok_or_else(|| RestoreError::UnknownKind {
        source_name: src.name.clone(),
        kind: src.kind.clone(),
    })
}

pub(super) fn source_error(
    m: &Manifest,
    src: &SourceRecord,
    e: crate::source::SourceError,
) -> RestoreError {
    RestoreError::Source {
        snapshot: m.id.clone(),
        source_name: src.name.clone(),
        error: e,
    }
}

pub(super) fn db_request<'a>(
    m: &'a Manifest,
    src: &'a SourceRecord,
    config: &'a crate::config::Config,
    opts: &'a RestoreOptions,
) -> crate::source::DbRestore<'a> {
    crate::source::DbRestore {
        snapshot: &m.id,
        source: &src.name,
        config: config.source(&src.name),
        details: &src.details,
        to_database: opts.to_database.as_deref(),
        force: opts.force,
    }
}
