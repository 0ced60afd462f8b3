//! `coffer snapshot`: read every selected source into one snapshot.
//!
//! Each source is streamed through walk -> tar -> zstd -> AES-GCM -> upload,
//! the stages on their own threads joined by bounded channels. The manifest
//! is written last and create-only: a snapshot interrupted at any point is
//! simply absent (its left-over objects are removed by `prune` later).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use crate::archive::{EntrySink, IndexWriter, TarWriter, stage_channel};
use crate::chunks::storage::ChunkStoreError;
use crate::chunks::write::{ChunkWriter, ParentList};
use crate::config::{Config, SourceConfig, SourceKind, VanishedPolicy};
use crate::crypto::{self, ObjectKind, SealWriter};
use crate::gc::session::{self, Session, WriterView, ready_to_commit};
use crate::manifest::{
    ListRef, Manifest, ObjectRef, SnapshotStatus, SourceRecord, SourceStatus, seal_context,
};
use crate::outcome::ErrorKind;
use crate::repo::{DATA_PREFIX, RepoError, Repository, host_name};
use crate::source::fs::{self as fs_source, FsSourceError, Walked};
use crate::source::stream::StreamSink;
use crate::source::{self, SourceError};
use crate::store::{CountingSink, Sink, StoreError, Written};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no source named {0:?} in the config (--only); configured: {1}")]
    UnknownSource(String, String),
    #[error("the config has no [[sources]]: nothing to snapshot")]
    NoSources,
    #[error("bad label {0:?}: write KEY=VALUE")]
    BadLabel(String),
    #[error("every source failed; nothing was committed:\n{0}")]
    AllFailed(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("the snapshot was not committed: storing its chunks failed: {0}")]
    Chunks(#[from] ChunkStoreError),
    #[error("the snapshot was not committed: {0}")]
    Gc(#[from] crate::gc::GcError),
}

impl SnapshotError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::Repo(r) => r.kind(),
            SnapshotError::Chunks(c) => c.kind(),
            SnapshotError::Gc(g) => g.kind(),
            SnapshotError::AllFailed(_) => ErrorKind::Operational,
            SnapshotError::UnknownSource(..)
            | SnapshotError::NoSources
            | SnapshotError::BadLabel(_) => ErrorKind::Usage,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub only: Vec<String>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub dry_run: bool,
    /// zstd level.
    pub compression: i32,
    /// The time recorded in the manifest instead of now. Only callers of
    /// the library set it (tests of retention and `check --max-age`): the
    /// CLI offers no way to, so no snapshot can be dated into the future to
    /// stay `latest` and keep `check --max-age` green.
    pub time: Option<chrono::DateTime<Utc>>,
    /// Format 2: read every file, also those unchanged since the parent.
    pub reread: bool,
}

/// The result of a snapshot run: the manifest (committed unless dry run).
#[derive(Debug)]
pub struct SnapshotOutcome {
    pub manifest: Manifest,
    pub committed: bool,
}

/// Picks the configured sources named by `only` (all when empty), in config order.
pub fn select_sources<'a>(
    cfg: &'a Config,
    only: &[String],
) -> Result<Vec<&'a SourceConfig>, SnapshotError> {
    if cfg.sources.is_empty() {
        return Err(SnapshotError::NoSources);
    }
    let names = || {
        cfg.sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for o in only {
        if cfg.source(o).is_none() {
            return Err(SnapshotError::UnknownSource(o.clone(), names()));
        }
    }
    Ok(cfg
        .sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect())
}

pub fn parse_label(s: &str) -> Result<(String, String), SnapshotError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(SnapshotError::BadLabel(s.to_string())),
    }
}

pub async fn snapshot(
    repo: &Repository,
    cfg: &Config,
    opts: &SnapshotOptions,
) -> Result<SnapshotOutcome, SnapshotError> {
    let sources = select_sources(cfg, &opts.only)?;
    // Format 2: the session that tells prune a snapshot is being written,
    // stored before anything of the repository is read (FORMAT.md 23.2).
    let session = match (&repo.chunked, opts.dry_run) {
        (Some(c), false) => Some(Session::start(repo, c).await?),
        _ => None,
    };
    let res = snapshot_in(repo, cfg, opts, sources, session.as_ref()).await;
    if let Some(s) = session {
        s.end().await;
    }
    res
}

async fn snapshot_in(
    repo: &Repository,
    cfg: &Config,
    opts: &SnapshotOptions,
    sources: Vec<&SourceConfig>,
    session: Option<&Session>,
) -> Result<SnapshotOutcome, SnapshotError> {
    let id = crypto::random_id(8);
    let time = opts.time.unwrap_or_else(Utc::now);
    let mut labels = cfg.labels.clone();
    labels.extend(opts.labels.clone());
    let mut records = Vec::new();
    // Format 2: the newest earlier snapshot of this host, per source name,
    // whose unchanged files need not be read (section 21.2).
    let parents = match (&repo.chunked, opts.reread) {
        (Some(_), false) => newest_per_source(repo).await,
        _ => BTreeMap::new(),
    };
    // Format 2: one packer and uploader for the whole snapshot, so that
    // chunks shared between sources are stored once and packs fill up.
    let mut view_packs = HashSet::new();
    let mut chunk_writer = match &repo.chunked {
        Some(c) => {
            let view = writer_view(repo, c, !parents.is_empty()).await?;
            view_packs = view.packs;
            let mut w = ChunkWriter::start(
                &repo.store,
                &repo.id,
                Arc::clone(c),
                view.known,
                opts.compression,
                opts.dry_run,
            );
            if session.is_some() {
                w.log_refs().map_err(|e| {
                    ChunkStoreError::Internal(format!("a temporary file for chunk ids: {e}"))
                })?;
            }
            Some(w)
        }
        None => None,
    };
    let mut parent_ids = Vec::new();
    for src in sources {
        let rec = match chunk_writer.as_mut() {
            Some(w) => {
                let parent = parents.get(&src.name);
                if let Some((id, t, _)) = parent {
                    parent_ids.push((id.clone(), *t));
                }
                run_source_chunked(repo, w, src, parent).await
            }
            None => run_source(repo, &id, src, opts).await,
        };
        match (&rec.status, &rec.error) {
            (SourceStatus::Failed, Some(e)) => tracing::error!("source {}: {e}", rec.name),
            _ => tracing::info!("source {} stored", rec.name),
        }
        records.push(rec);
    }
    // A file deleted during the snapshot is normal on a live system (a
    // cache file, a rotated log): only a warning, unless the config says
    // it must make the snapshot partial.
    let vanished_counts = cfg.snapshot.vanished == VanishedPolicy::Partial;
    let any_problem = records.iter().any(|r| {
        r.status == SourceStatus::Failed
            || !r.problems.is_empty()
            || (vanished_counts && !r.vanished.is_empty())
    });
    let mut refs = None;
    if let Some(w) = chunk_writer {
        // Every pack uploaded and indexed before the manifest names them.
        // Also when every source failed: an upload that failed stopped the
        // packer, which is why the sources failed, and its error says why.
        let stored = w.finish().await?;
        let charged = stored.charged.clone();
        tracing::debug!("{} packs, index {:?}", stored.packs.len(), stored.index);
        view_packs.extend(stored.packs.iter().copied());
        refs = stored.refs;
        for (r, bytes) in records.iter_mut().zip(charged) {
            if r.list.is_some() {
                r.new_bytes = Some(bytes);
                r.bytes_stored = bytes;
            }
        }
    }
    let manifest = Manifest {
        version: if repo.format >= 2 { 2 } else { 1 },
        id: id.clone(),
        time,
        host: host_name(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        tags: opts.tags.clone(),
        labels,
        status: if any_problem {
            SnapshotStatus::Partial
        } else {
            SnapshotStatus::Ok
        },
        // Informational: the snapshot the directory sources compared
        // against (the newest of them when sources had different ones).
        parent: parent_ids
            .into_iter()
            .max_by_key(|(_, t)| *t)
            .map(|(id, _)| id),
        sources: records,
    };
    if manifest
        .sources
        .iter()
        .all(|r| r.status == SourceStatus::Failed)
    {
        if !opts.dry_run {
            discard_objects(repo, &id).await;
        }
        let why = manifest
            .sources
            .iter()
            .map(|r| format!("  {}: {}", r.name, r.error.as_deref().unwrap_or("failed")))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(SnapshotError::AllFailed(why));
    }
    if opts.dry_run {
        return Ok(SnapshotOutcome {
            manifest,
            committed: false,
        });
    }
    if let (Some(session), Some(c), Some(refs)) = (session, &repo.chunked, refs.as_mut()) {
        ready_to_commit(repo, c, session, view_packs, refs, opts.compression).await?;
    }
    repo.commit_manifest(&manifest).await?;
    Ok(SnapshotOutcome {
        manifest,
        committed: true,
    })
}

/// Best-effort removal of a failed snapshot's objects; `prune` removes
/// whatever this misses.
async fn discard_objects(repo: &Repository, id: &str) {
    if let Ok(objs) = repo.store.list(&format!("{DATA_PREFIX}{id}/")).await {
        for (p, _) in objs {
            let _ = repo.store.delete(&p).await;
        }
    }
}

fn failed(src: &SourceConfig, started: Instant, error: String) -> SourceRecord {
    SourceRecord {
        status: SourceStatus::Failed,
        error: Some(error),
        origin: None,
        ..stored(src, started, Walked::default())
    }
}

async fn run_source(
    repo: &Repository,
    snap_id: &str,
    src: &SourceConfig,
    opts: &SnapshotOptions,
) -> SourceRecord {
    let started = Instant::now();
    let archive_path = format!("{DATA_PREFIX}{snap_id}/{}", crypto::random_id(8));
    let index_path = format!("{DATA_PREFIX}{snap_id}/{}", crypto::random_id(8));
    let sink = |path: &str| {
        if opts.dry_run {
            Sink::Count(CountingSink::default(), path.to_string())
        } else {
            Sink::Upload(repo.store.upload(path))
        }
    };
    let archive_sink = sink(&archive_path);
    let index_sink = sink(&index_path);
    let ctx = seal_context(&repo.id, snap_id, Some(&src.name));
    let master = repo.shared_master();
    let src_owned = src.clone();
    let level = opts.compression;
    let res = tokio::task::spawn_blocking(move || {
        archive_source(&src_owned, &master, &ctx, level, archive_sink, index_sink)
    })
    .await
    .unwrap_or_else(|e| Err(PipelineError::Io(io::Error::other(e.to_string()))));
    match res {
        Ok((walked, archive, index)) => SourceRecord {
            bytes_stored: archive.size + index.size,
            archive: Some(ObjectRef {
                object: archive.path,
                size: archive.size,
                sha256: archive.sha256,
            }),
            index: Some(ObjectRef {
                object: index.path,
                size: index.size,
                sha256: index.sha256,
            }),
            ..stored(src, started, walked)
        },
        Err(e) => failed(src, started, e.to_string()),
    }
}

/// What the repository holds, from one read of its index objects: a
/// snapshot that reads parents' lists needs where every chunk is anyway
/// (the fetcher), and takes the ids from there; one without keeps only
/// 12 bytes per chunk.
async fn writer_view(
    repo: &Repository,
    c: &crate::repo::Chunked,
    with_parents: bool,
) -> Result<WriterView, SnapshotError> {
    if with_parents {
        let f = repo.fetcher().await?;
        return Ok(session::writer_view(repo, c, Some(f.locations())).await?);
    }
    Ok(session::writer_view(repo, c, None).await?)
}

/// Per source name, the newest snapshot of this host that stored it whole
/// enough to stand for unchanged files: its id, time and file list. A
/// repository whose manifests cannot be listed just gets no parent.
async fn newest_per_source(
    repo: &Repository,
) -> BTreeMap<String, (String, chrono::DateTime<Utc>, ListRef)> {
    let host = host_name();
    let mut out: BTreeMap<String, (String, chrono::DateTime<Utc>, ListRef)> = BTreeMap::new();
    let Ok((manifests, _)) = repo.manifests().await else {
        return out;
    };
    for m in manifests.iter().filter(|m| m.host == host) {
        for s in &m.sources {
            let (Some(list), SourceStatus::Ok, "directory") = (&s.list, s.status, s.kind.as_str())
            else {
                continue;
            };
            if out.get(&s.name).is_none_or(|(_, t, _)| *t <= m.time) {
                out.insert(s.name.clone(), (m.id.clone(), m.time, list.clone()));
            }
        }
    }
    out
}

/// Reads one source into chunks (format 2) on a blocking thread.
async fn run_source_chunked(
    repo: &Repository,
    writer: &mut ChunkWriter,
    src: &SourceConfig,
    parent: Option<&(String, chrono::DateTime<Utc>, ListRef)>,
) -> SourceRecord {
    let started = Instant::now();
    let mut sink = writer.sink();
    if src.kind == SourceKind::Directory {
        let lines = match parent {
            Some((id, _, list)) => match repo.fetcher().await {
                Ok(f) => {
                    let at = crate::read::Where {
                        snapshot: id.clone(),
                        source: src.name.clone(),
                    };
                    let lines = crate::read::chunked::list_lines(
                        f,
                        tokio::runtime::Handle::current(),
                        list.clone(),
                        at,
                    );
                    Some(ParentList::new(Box::new(lines)))
                }
                Err(e) => {
                    tracing::warn!(
                        "the previous snapshot cannot be used ({e}); every file is read"
                    );
                    None
                }
            },
            None => None,
        };
        sink.directory(lines);
    }
    let src_owned = src.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<_, PipelineError> {
        crate::progress::message(format!("source {}", src_owned.name));
        let mut list = IndexWriter::new(sink.list());
        let walked = read_source(&src_owned, &mut sink, &mut list)?;
        let (list, list_new) = list.finish().finish()?;
        Ok((walked, list, sink.new_chunks + list_new))
    })
    .await
    .unwrap_or_else(|e| Err(PipelineError::Io(io::Error::other(e.to_string()))));
    match res {
        Ok((walked, list, new_chunks)) => SourceRecord {
            list: Some(list),
            new_chunks: Some(new_chunks),
            // Set once the packs are written (ChunkWriter::finish).
            new_bytes: Some(0),
            reused_files: Some(walked.reused),
            ..stored(src, started, walked)
        },
        Err(e) => failed(src, started, e.to_string()),
    }
}

/// The record of a source that was read: what the walk or dump found; the
/// caller says where it went (format 1 objects, format 2 list).
fn stored(src: &SourceConfig, started: Instant, walked: Walked) -> SourceRecord {
    SourceRecord {
        name: src.name.clone(),
        kind: src.kind.as_str().to_string(),
        status: SourceStatus::Ok,
        error: summarize_problems(&walked),
        files: walked.files,
        bytes_read: walked.bytes_read,
        bytes_stored: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        origin: origin(src),
        archive: None,
        index: None,
        list: None,
        new_chunks: None,
        new_bytes: None,
        reused_files: None,
        problems: walked.problems,
        skipped: walked.skipped,
        vanished: walked.vanished,
        details: walked.details,
    }
}

/// Where a source lived, for restore without `--target`.
fn origin(src: &SourceConfig) -> Option<String> {
    match src.kind {
        SourceKind::Directory => src.path.as_ref().map(|p| p.display().to_string()),
        SourceKind::Files => Some("/".to_string()),
        _ => None,
    }
}

fn summarize_problems(w: &Walked) -> Option<String> {
    match w.problems.as_slice() {
        [] => None,
        [one] => Some(format!(
            "1 file not stored whole: {}: {}",
            one.path, one.error
        )),
        many => Some(format!(
            "{} files not stored whole, first: {}: {}",
            many.len(),
            many[0].path,
            many[0].error
        )),
    }
}

#[derive(Debug, thiserror::Error)]
enum PipelineError {
    #[error(transparent)]
    Source(#[from] FsSourceError),
    #[error(transparent)]
    Dump(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one source into `sink` (a tar stream, or chunks) with its lines
/// in `index`: a directory walk, a list of files, or a dump's streams.
fn read_source<T: EntrySink + StreamSink, I: io::Write>(
    src: &SourceConfig,
    sink: &mut T,
    index: &mut IndexWriter<I>,
) -> Result<Walked, PipelineError> {
    Ok(match src.kind {
        SourceKind::Directory => fs_source::archive_directory(
            src.path.as_deref().expect("validated"),
            src.exclude.as_deref().unwrap_or(&[]),
            sink,
            index,
        )?,
        SourceKind::Files => {
            fs_source::archive_files(src.paths.as_deref().expect("validated"), sink, index)?
        }
        _ => dump_into(src, sink, index)?,
    })
}

/// Reads a dump source's streams into `tar`, one after the other, checking
/// each producer's exit status; the manifest details say what was stored.
fn dump_into<T: StreamSink, I: io::Write>(
    src: &SourceConfig,
    tar: &mut T,
    index: &mut IndexWriter<I>,
) -> Result<Walked, SourceError> {
    let mut dumper = source::dumper(src)?;
    let mut details = source::Details::new();
    dumper.prepare(&mut details)?;
    let mut walked = Walked::default();
    let mut stored = Vec::new();
    while let Some(s) = dumper.next_stream()? {
        let mut reader = s.reader;
        let res = tar.store_stream(&s.name, &mut reader, index);
        drop(reader);
        // The producer's verdict first: a dump tool that failed mid-way makes
        // any bytes read so far worthless, whatever the pipeline did.
        (s.done)()?;
        let st = res?;
        // A dump's "files" are its streams (chunks are a storage detail).
        walked.files += 1;
        walked.bytes_read += st.bytes;
        stored.push(st);
    }
    dumper.finish(&mut details)?;
    details.insert(
        "streams".into(),
        serde_json::to_value(&stored).expect("streams serialise"),
    );
    walked.details = details;
    Ok(walked)
}

/// Runs on a blocking thread: reads one source (a walk, or a dump) into a
/// tar stream, with sealing and upload of the archive on a second thread.
fn archive_source(
    src: &SourceConfig,
    master: &Arc<crypto::MasterKey>,
    ctx: &[u8],
    level: i32,
    archive_sink: Sink,
    index_sink: Sink,
) -> Result<(Walked, Written, Written), PipelineError> {
    let (chan_w, mut chan_r) = stage_channel();
    let seal_master = Arc::clone(master);
    let seal_ctx = ctx.to_vec();
    // Stage 2: seal (AES-GCM) and hash the compressed stream, and upload it.
    let sealer = std::thread::spawn(move || -> Result<Written, PipelineError> {
        let mut w = SealWriter::new(archive_sink, &seal_master, ObjectKind::Archive, &seal_ctx)?;
        io::copy(&mut chan_r, &mut w)?;
        Ok(w.finish()?.finish()?)
    });
    // Stage 1 (this thread, plus zstd's worker): walk, read, hash, tar, compress.
    let stage1 = || -> Result<(Walked, Written), PipelineError> {
        let mut enc = zstd::stream::write::Encoder::new(chan_w, level)?;
        // One worker compresses while this thread reads and hashes; small
        // jobs keep its buffers (and so our peak memory) to a few MiB.
        enc.multithread(1)?;
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(2 << 20))?;
        crate::progress::message(format!("source {}", src.name));
        let mut tar = TarWriter::new(crate::progress::Counted(enc));
        let index_seal = SealWriter::new(index_sink, master, ObjectKind::Index, ctx)?;
        let mut index = IndexWriter::new(zstd::stream::write::Encoder::new(index_seal, 3)?);
        let walked = read_source(src, &mut tar, &mut index)?;
        tar.finish()?.into_inner().finish()?.finish()?;
        let index_written = index.finish().finish()?.finish()?.finish()?;
        Ok((walked, index_written))
    };
    let result = stage1();
    let sealed = sealer.join().unwrap_or_else(|_| {
        Err(PipelineError::Io(io::Error::other(
            "sealing thread panicked",
        )))
    });
    // When stage 1 fails on its own (a missing directory), the sealer then
    // sees its input cut off: stage 1's error is the cause. When stage 1
    // fails on writing, the sealer (the upload) failed first: its error is.
    match (result, sealed) {
        (Ok((walked, index)), Ok(archive)) => Ok((walked, archive, index)),
        (Err(PipelineError::Source(e)), _) if !matches!(e, FsSourceError::Write(_)) => {
            Err(PipelineError::Source(e))
        }
        (Err(PipelineError::Dump(e)), _) if !matches!(e, SourceError::Io(_)) => {
            Err(PipelineError::Dump(e))
        }
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
    }
}
