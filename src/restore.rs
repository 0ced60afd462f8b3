//! `coffer restore` and `coffer dump`: read a source back out of a snapshot.
//!
//! The archive is downloaded, authenticated and decrypted on one thread and
//! decompressed and unpacked on another, in step with the source's index,
//! which must agree entry by entry (path, type, SHA-256).
//!
//! A restore never writes into its destination directly: it unpacks into a
//! staging directory beside it, and only when the whole archive has
//! authenticated does it swap the staging directory in (`renameat2` with
//! `RENAME_EXCHANGE`, atomic) or, for single files, rename each into place.
//! A failed or interrupted restore leaves the destination as it was. Every
//! path is checked: no absolute paths, no `..`, and nothing is ever written
//! through a symlink, so nothing lands outside the destination.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::archive::{ChanReader, IndexReader, safe_path, stage_channel};
use crate::crypto::{self, ObjectKind, OpenReader, read_full};
use crate::manifest::{
    EntryKind, IndexEntry, Manifest, ObjectRef, SourceRecord, SourceStatus, seal_context,
};
use crate::repo::Repository;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot {snapshot} has no source {name:?}; it holds: {have}")]
    UnknownSource {
        snapshot: String,
        name: String,
        have: String,
    },
    #[error(
        "{path} exists and is not empty; add --force to replace it with the snapshot's copy (anything created there since will be removed), or restore elsewhere with --target DIR"
    )]
    NeedsForce { path: String },
    #[error("bad --include pattern {0:?}: {1}")]
    BadInclude(String, String),
    #[error("{0}")]
    Usage(String),
    #[error(
        "snapshot {snapshot}, source {source_name}: the source failed when the snapshot was taken ({reason}); it holds nothing to restore"
    )]
    SourceFailed {
        snapshot: String,
        source_name: String,
        reason: String,
    },
    #[error(
        "snapshot {snapshot}, source {source_name}, {object}: integrity check failed: {reason}"
    )]
    Integrity {
        snapshot: String,
        source_name: String,
        object: String,
        reason: String,
    },
    #[error("snapshot {snapshot}, source {source_name}: {path}: {reason}")]
    Contained {
        snapshot: String,
        source_name: String,
        path: String,
        reason: String,
    },
    #[error(
        "snapshot {snapshot}, source {source_name}: no file {path:?} in it; list its files with `coffer show {snapshot} --files`"
    )]
    NoSuchFile {
        snapshot: String,
        source_name: String,
        path: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `coffer dump`'s reader closed the pipe (`pg_restore -l`, `head`):
    /// its choice, not a failure. [`dump`] turns this into success.
    #[error("the reader closed standard output")]
    OutputClosed,
    /// A later commit step failed after sources that cannot be undone were
    /// committed: says which, and what to run to finish or undo.
    #[error(
        "{error}\nsnapshot {snapshot}: the restore stopped at source {failed}. Already restored: {done}. Not restored (as they were before): {left}.\n  to finish, once the cause above is fixed: {finish}\n  to undo instead, restore those sources from an older snapshot (see `coffer snapshots`): {undo}"
    )]
    PartlyRestored {
        snapshot: String,
        failed: String,
        done: String,
        left: String,
        finish: String,
        undo: String,
        error: Box<RestoreError>,
    },
    #[error("snapshot {snapshot}, source {source_name}: {error}")]
    Source {
        snapshot: String,
        source_name: String,
        error: crate::source::SourceError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl RestoreError {
    pub fn is_integrity(&self) -> bool {
        match self {
            RestoreError::PartlyRestored { error, .. } => error.is_integrity(),
            e => matches!(
                e,
                RestoreError::Integrity { .. } | RestoreError::Contained { .. }
            ),
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// The source record named `name`, or a usage error listing what there is.
pub fn find_source<'a>(m: &'a Manifest, name: &str) -> Result<&'a SourceRecord, RestoreError> {
    m.source(name).ok_or_else(|| RestoreError::UnknownSource {
        snapshot: m.id.clone(),
        name: name.to_string(),
        have: m
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

// ------------------------------------------------------------------ streams

/// Reads one stored object on a thread of its own: download, authenticate,
/// decrypt, and check its size against the manifest at the end. The
/// plaintext arrives through a bounded channel. (The object's SHA-256 is left
/// to `verify`: every segment here is authenticated and bound to its
/// snapshot, source and kind, which a checksum cannot add to.)
pub struct ObjectStream {
    pub reader: ChanReader,
    thread: Option<JoinHandle<Result<(), RestoreError>>>,
}

/// Context that every integrity error of one source carries.
#[derive(Clone)]
pub struct Where {
    pub snapshot: String,
    pub source: String,
}

impl Where {
    pub fn integrity(&self, object: &str, reason: impl Into<String>) -> RestoreError {
        RestoreError::Integrity {
            snapshot: self.snapshot.clone(),
            source_name: self.source.clone(),
            object: object.to_string(),
            reason: reason.into(),
        }
    }
}

/// Sorts an I/O error from a reading pipeline into integrity (bad bytes) or
/// operational (storage, disk) failures.
pub fn classify(e: io::Error, at: &Where, object: &str) -> RestoreError {
    if let Some(c) = crypto::integrity_error(&e) {
        return at.integrity(object, c.to_string());
    }
    if let Some(inner) = e.get_ref()
        && inner.downcast_ref::<StoreError>().is_some()
    {
        let s = e
            .into_inner()
            .expect("checked above")
            .downcast::<StoreError>()
            .expect("checked above");
        return match *s {
            StoreError::NotFound { .. } => at.integrity(object, "the object is missing"),
            other => RestoreError::Store(other),
        };
    }
    RestoreError::Io {
        op: "read",
        path: object.to_string(),
        source: e,
    }
}

impl ObjectStream {
    pub fn open(repo: &Repository, at: &Where, obj: &ObjectRef, kind: ObjectKind) -> ObjectStream {
        let (mut w, reader) = stage_channel();
        let download = repo.store.download_opts(&obj.object, false);
        let master = repo.shared_master();
        let ctx = seal_context(&repo.id, &at.snapshot, Some(&at.source));
        let at = at.clone();
        let obj = obj.clone();
        let thread = std::thread::spawn(move || -> Result<(), RestoreError> {
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
                    format!("it has {size} bytes, the manifest records {}", obj.size),
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

    /// Waits for the reading thread; its error explains any failure the
    /// consumer saw.
    pub fn join(&mut self) -> Result<(), RestoreError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(RestoreError::Usage("object reader thread panicked".into()))
            }),
            None => Ok(()),
        }
    }
}

/// A source's archive and index, read side by side.
pub struct SourceStreams {
    pub at: Where,
    pub archive_ref: ObjectRef,
    pub index_ref: ObjectRef,
    archive: ObjectStream,
    index: ObjectStream,
}

pub type TarStream = tar::Archive<zstd::stream::read::Decoder<'static, BufReader<ChanReader>>>;
pub type IndexStream =
    IndexReader<BufReader<zstd::stream::read::Decoder<'static, BufReader<ChanReader>>>>;

impl SourceStreams {
    pub fn open(repo: &Repository, m: &Manifest, src: &SourceRecord) -> Result<Self, RestoreError> {
        let at = Where {
            snapshot: m.id.clone(),
            source: src.name.clone(),
        };
        let (Some(archive_ref), Some(index_ref)) = (src.archive.clone(), src.index.clone()) else {
            return Err(RestoreError::SourceFailed {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                reason: src.error.clone().unwrap_or_else(|| "no archive".into()),
            });
        };
        let archive = ObjectStream::open(repo, &at, &archive_ref, ObjectKind::Archive);
        let index = ObjectStream::open(repo, &at, &index_ref, ObjectKind::Index);
        Ok(SourceStreams {
            at,
            archive_ref,
            index_ref,
            archive,
            index,
        })
    }

    /// Splits into the tar reader and the index reader; call
    /// [`SourceStreams::finish`] with the error (if any) the caller hit.
    pub fn readers(&mut self) -> Result<(TarStream, IndexStream), RestoreError> {
        let a = std::mem::replace(&mut self.archive.reader, stage_channel().1);
        let i = std::mem::replace(&mut self.index.reader, stage_channel().1);
        let dec = |r: ChanReader, obj: &str| {
            zstd::stream::read::Decoder::new(r).map_err(|e| {
                self.at
                    .integrity(obj, format!("cannot start decompression: {e}"))
            })
        };
        let tar = tar::Archive::new(dec(a, &self.archive_ref.object)?);
        let index = IndexReader::new(BufReader::new(dec(i, &self.index_ref.object)?));
        Ok((tar, index))
    }

    /// Joins both reading threads. A failure there is the real cause of any
    /// error the consumer saw, so it wins; otherwise the consumer's error is
    /// returned.
    pub fn finish(mut self, consumer: Result<(), RestoreError>) -> Result<(), RestoreError> {
        let a = self.archive.join();
        let i = self.index.join();
        a?;
        i?;
        consumer
    }

    /// An error for an I/O failure while reading the archive.
    pub fn archive_error(&self, e: io::Error) -> RestoreError {
        classify(e, &self.at, &self.archive_ref.object)
    }
    pub fn index_error(&self, e: io::Error) -> RestoreError {
        classify(e, &self.at, &self.index_ref.object)
    }
}

/// Reads both streams to their end, so that every segment up to the final
/// one is authenticated and the size and SHA-256 are checked: tar stops at
/// its end-of-archive marker, and a cut after it must not go unnoticed.
pub fn drain(s: &SourceStreams, tar: TarStream, index: IndexStream) -> Result<(), RestoreError> {
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|e| s.archive_error(e))?;
    io::copy(&mut index.into_inner(), &mut io::sink()).map_err(|e| s.index_error(e))?;
    Ok(())
}

/// Reads the next stored index entry and checks that the tar entry agrees.
pub fn expect_entry(
    s: &SourceStreams,
    index: &mut IndexStream,
    path: &str,
    kind: EntryKind,
) -> Result<IndexEntry, RestoreError> {
    let e = index
        .next_stored()
        .map_err(|e| s.index_error(e))?
        .ok_or_else(|| {
            s.at.integrity(
                &s.index_ref.object,
                format!("the archive holds {path:?}, which the index does not list"),
            )
        })?;
    if e.path != path || e.kind != kind {
        return Err(s.at.integrity(
            &s.archive_ref.object,
            format!(
                "archive entry {path:?} ({kind:?}) does not match index entry {:?} ({:?})",
                e.path, e.kind
            ),
        ));
    }
    Ok(e)
}

pub fn entry_kind(t: tar::EntryType) -> Option<EntryKind> {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => Some(EntryKind::File),
        tar::EntryType::Directory => Some(EntryKind::Dir),
        tar::EntryType::Symlink => Some(EntryKind::Symlink),
        tar::EntryType::Link => Some(EntryKind::Hardlink),
        _ => None,
    }
}

// ------------------------------------------------------------------ restore

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub only: Vec<String>,
    pub target: Option<PathBuf>,
    pub include: Vec<String>,
    pub force: bool,
    pub dry_run: bool,
    /// `--to-database URL` (a path for SQLite), for one database source.
    pub to_database: Option<String>,
}

/// What one source's restore did (or, with --dry-run, would do).
#[derive(Debug, Serialize)]
pub struct RestoredSource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub destination: String,
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
    /// Files the snapshot could not read: absent from the restored copy.
    pub not_stored: Vec<String>,
    /// What the user must still do (database sources that need it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next_steps: Vec<String>,
}

impl RestoredSource {
    fn new(src: &SourceRecord, destination: String) -> Self {
        RestoredSource {
            name: src.name.clone(),
            kind: src.kind.clone(),
            destination,
            files: 0,
            dirs: 0,
            links: 0,
            bytes: 0,
            duration_ms: 0,
            planned: Vec::new(),
            not_stored: Vec::new(),
            next_steps: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub dry_run: bool,
    pub sources: Vec<RestoredSource>,
    /// Sources skipped because they failed when the snapshot was taken.
    pub skipped: Vec<String>,
}

fn include_set(patterns: &[String]) -> Result<Option<GlobSet>, RestoreError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let pat = p.trim_start_matches('/').trim_start_matches("./");
        let g = GlobBuilder::new(pat)
            .literal_separator(true)
            .build()
            .map_err(|e| RestoreError::BadInclude(p.clone(), e.to_string()))?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| RestoreError::BadInclude(patterns.join(" "), e.to_string()))
}

/// True if `path` or one of its parent directories matches.
fn included(set: &Option<GlobSet>, path: &str) -> bool {
    let Some(set) = set else { return true };
    if path == "." {
        return false;
    }
    let mut p = path;
    loop {
        if set.is_match(p) {
            return true;
        }
        match p.rfind('/') {
            Some(i) => p = &p[..i],
            None => return false,
        }
    }
}

fn is_non_empty(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::read_dir(p)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true),
        Ok(_) => true,
        Err(_) => false,
    }
}

pub async fn restore(
    repo: &Repository,
    m: &Manifest,
    config: &crate::config::Config,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    for o in &opts.only {
        find_source(m, o)?;
    }
    let include = include_set(&opts.include)?;
    let mut report = RestoreReport {
        snapshot: m.id.clone(),
        dry_run: opts.dry_run,
        sources: Vec::new(),
        skipped: Vec::new(),
    };
    let selected: Vec<&SourceRecord> = m
        .sources
        .iter()
        .filter(|s| opts.only.is_empty() || opts.only.contains(&s.name))
        .collect();
    if opts.to_database.is_some() {
        let dbs: Vec<&str> = selected
            .iter()
            .filter(|s| is_dump_source(&s.kind))
            .map(|s| s.name.as_str())
            .collect();
        if dbs.len() != 1 || selected.len() != 1 {
            return Err(RestoreError::Usage(format!(
                "--to-database restores one database source: name it with --only (database sources in this snapshot: {})",
                dbs.join(", ")
            )));
        }
    }
    // Check every destination before touching any.
    let mut plans = Vec::new();
    let mut db_plans = Vec::new();
    let mut dump_file_plans = Vec::new();
    for src in selected {
        if src.status == SourceStatus::Failed {
            if !opts.only.is_empty() {
                return Err(RestoreError::SourceFailed {
                    snapshot: m.id.clone(),
                    source_name: src.name.clone(),
                    reason: src.error.clone().unwrap_or_default(),
                });
            }
            tracing::warn!(
                "source {} failed when snapshot {} was taken; skipped",
                src.name,
                m.id
            );
            report.skipped.push(src.name.clone());
            continue;
        }
        if is_dump_source(&src.kind)
            && let (Some(dir), None) = (&opts.target, &opts.to_database)
        {
            // Under --target a database source becomes files: its dump as
            // its own tool reads it (what `coffer dump` writes), never a
            // database replaced on a server.
            let dest = dir.join(&src.name);
            if !opts.force && !opts.dry_run && is_non_empty(&dest) {
                return Err(RestoreError::Usage(format!(
                    "{} exists and is not empty: add --force to replace it with source {} of snapshot {}",
                    dest.display(),
                    src.name,
                    m.id
                )));
            }
            dump_file_plans.push((src, dest));
            continue;
        }
        if is_dump_source(&src.kind) {
            let mut req = db_request(m, src, config, opts);
            let kind = kind_of(src)?;
            let dest = match crate::source::restore_destination(kind, &req) {
                // A dry run shows where the restore would go and what it
                // still needs, rather than refusing like the real one.
                Err(crate::source::SourceError::Usage(why)) if opts.dry_run && !opts.force => {
                    req.force = true;
                    let dest = crate::source::restore_destination(kind, &req)
                        .map_err(|e| source_error(m, src, e))?;
                    format!("{dest} (needs --force: {why})")
                }
                other => other.map_err(|e| source_error(m, src, e))?,
            };
            db_plans.push((src, dest));
            continue;
        }
        let plan = plan_destination(m, src, opts)?;
        plans.push((src, plan));
    }
    if opts.dry_run {
        dry_run_all(
            repo,
            m,
            &mut report,
            dump_file_plans,
            db_plans,
            plans,
            &include,
        )
        .await?;
        return Ok(report);
    }

    // 1. Stage: every file source, and every dump written out as files, is
    //    unpacked and authenticated beside its destination. Nothing at any
    //    destination has changed yet; a failure here drops the staging
    //    directories and leaves everything as it was.
    let mut staged = Vec::new();
    for (src, dest) in dump_file_plans {
        let (repo, m2, src2) = (repo.clone(), m.clone(), src.clone());
        staged.push(blocking(move || stage_dump_files(&repo, &m2, &src2, dest)).await?);
    }
    for (src, plan) in plans {
        let (repo, m2, src2, inc) = (repo.clone(), m.clone(), src.clone(), include.clone());
        staged.push(blocking(move || stage_source(&repo, &m2, &src2, plan, &inc)).await?);
    }
    // 2. Authenticate every database archive that would be restored after
    //    another database was already replaced, so that damage found there
    //    cannot leave one database rolled back and the next not. (The first
    //    one is authenticated as it streams: its own transaction is undone
    //    when damage shows, and nothing else has been committed by then.)
    for (src, _) in db_plans.iter().skip(1) {
        let (repo, m2, src2) = (repo.clone(), m.clone(), (*src).clone());
        blocking(move || authenticate_dump(&repo, &m2, &src2)).await?;
    }

    // 3. Commit, in this order: directory swaps (each kept undoable until
    //    the end), then each database in its own transaction, then what
    //    cannot be undone (files sources and `--include` in place, mount
    //    points). A failure undoes the swaps; what was committed that cannot
    //    be undone is named, with the commands to finish or undo.
    let mut progress = Commits::new(m, opts);
    let (swappable, others): (Vec<_>, Vec<_>) =
        staged.into_iter().partition(StagedSource::undoable);
    let mut swapped = Vec::new();
    for st in swappable {
        let name = st.out.name.clone();
        match blocking(move || st.commit_swap()).await {
            Ok((sw, out)) => {
                swapped.push(sw);
                report.sources.push(out);
            }
            Err(e) => return Err(progress.fail(&name, e, swapped).await),
        }
    }
    for (src, dest) in db_plans {
        let started = Instant::now();
        let mut done = RestoredSource::new(src, dest);
        let (repo, m2, src2, cfg2, opts2) = (
            repo.clone(),
            m.clone(),
            src.clone(),
            config.clone(),
            opts.clone(),
        );
        let r = blocking(move || {
            let req = db_request(&m2, &src2, &cfg2, &opts2);
            let kind = kind_of(&src2)?;
            let mut streams = ChunkStreams::open(&repo, &m2, &src2)?;
            let res = crate::source::restore(kind, &req, &mut streams);
            // A damaged archive is the cause of whatever the tool saw.
            streams.finish()?;
            res.map_err(|e| source_error(&m2, &src2, e))
        })
        .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => return Err(progress.fail(&src.name, e, swapped).await),
        };
        done.destination = r.destination;
        done.bytes = r.bytes;
        done.next_steps = r.next_steps;
        done.duration_ms = started.elapsed().as_millis() as u64;
        progress.committed(&done);
        report.sources.push(done);
    }
    for st in others {
        let name = st.out.name.clone();
        match blocking(move || st.commit_in_place()).await {
            Ok(out) => {
                progress.committed(&out);
                report.sources.push(out);
            }
            Err(e) => return Err(progress.fail(&name, e, swapped).await),
        }
    }
    // Every source is in place: what the swaps moved aside can go.
    blocking(move || {
        for sw in swapped {
            sw.forget_old();
        }
        Ok(())
    })
    .await?;
    // Report in the snapshot's order, whatever the commit order was.
    report.sources.sort_by_key(|d| {
        m.sources
            .iter()
            .position(|s| s.name == d.name)
            .unwrap_or(usize::MAX)
    });
    Ok(report)
}

/// Runs blocking restore work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, RestoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RestoreError::Usage(format!("restore task failed: {e}")))?
}

/// `restore --dry-run`: where each source would go and what it would write.
async fn dry_run_all(
    repo: &Repository,
    m: &Manifest,
    report: &mut RestoreReport,
    dump_file_plans: Vec<(&SourceRecord, PathBuf)>,
    db_plans: Vec<(&SourceRecord, String)>,
    plans: Vec<(&SourceRecord, Plan)>,
    include: &Option<GlobSet>,
) -> Result<(), RestoreError> {
    for (src, dest) in dump_file_plans {
        let mut done = RestoredSource::new(src, dest.display().to_string());
        for n in &checked_stream_names(m, src)? {
            done.planned
                .push(format!("write {}", dest.join(n).display()));
        }
        report.sources.push(done);
    }
    for (src, dest) in db_plans {
        let mut done = RestoredSource::new(src, dest.clone());
        done.planned.push(format!("restore into {dest}"));
        report.sources.push(done);
    }
    for (src, plan) in plans {
        let started = Instant::now();
        let mut done = dry_run(repo, m, src, &plan, include).await?;
        done.duration_ms = started.elapsed().as_millis() as u64;
        done.not_stored = src.problems.iter().map(|p| p.path.clone()).collect();
        report.sources.push(done);
    }
    Ok(())
}

/// The stream names of a dump source, each checked to be a plain file name
/// (they become file names under `--target`).
fn checked_stream_names(m: &Manifest, src: &SourceRecord) -> Result<Vec<String>, RestoreError> {
    let names = stream_names(src);
    for n in &names {
        if n.is_empty() || n.starts_with('.') || n.contains('/') {
            return Err(RestoreError::Integrity {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                object: Repository::manifest_object(&m.id),
                reason: format!("stream name {n:?} is not a plain file name"),
            });
        }
    }
    Ok(names)
}

/// Reads a dump source's archive to its authenticated end, writing nothing.
fn authenticate_dump(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
) -> Result<(), RestoreError> {
    use crate::source::Streams;
    let mut streams = ChunkStreams::open(repo, m, src)?;
    let res = (|| -> Result<(), RestoreError> {
        while let Some((_, mut r)) = streams.next_stream().map_err(|e| source_error(m, src, e))? {
            io::copy(&mut r, &mut io::sink()).map_err(|e| RestoreError::Io {
                op: "read",
                path: format!("source {} of snapshot {}", src.name, m.id),
                source: e,
            })?;
        }
        Ok(())
    })();
    // The reading thread's verdict explains any failure above.
    streams.finish()?;
    res
}

/// The commit phase's record: what is already in place and cannot be
/// undone, for the message on-call reads when a later step fails.
struct Commits {
    snapshot: String,
    /// Every selected source still to commit, in commit order unknown here:
    /// the ones not in `done` when a step fails.
    selected: Vec<String>,
    done: Vec<(String, String)>,
    target: Option<PathBuf>,
    to_database: Option<String>,
}

impl Commits {
    fn new(m: &Manifest, opts: &RestoreOptions) -> Commits {
        Commits {
            snapshot: m.id.clone(),
            selected: m
                .sources
                .iter()
                .filter(|s| s.status != SourceStatus::Failed)
                .filter(|s| opts.only.is_empty() || opts.only.contains(&s.name))
                .map(|s| s.name.clone())
                .collect(),
            done: Vec::new(),
            target: opts.target.clone(),
            to_database: opts.to_database.clone(),
        }
    }

    /// A source committed that cannot be undone.
    fn committed(&mut self, d: &RestoredSource) {
        self.done.push((d.name.clone(), d.destination.clone()));
    }

    /// Undoes the swaps, then says what stayed committed, if anything.
    async fn fail(&self, failed: &str, error: RestoreError, swapped: Vec<Swapped>) -> RestoreError {
        let undo = blocking(move || {
            let mut left = Vec::new();
            for sw in swapped.into_iter().rev() {
                if let Err(e) = sw.undo() {
                    left.push(e);
                }
            }
            Ok(left)
        })
        .await
        .unwrap_or_default();
        if self.done.is_empty() && undo.is_empty() {
            return error;
        }
        let mut done: Vec<String> = self
            .done
            .iter()
            .map(|(n, d)| format!("{n} (into {d})"))
            .collect();
        done.extend(undo.iter().map(|u| u.to_string()));
        let left: Vec<&str> = self
            .selected
            .iter()
            .map(String::as_str)
            .filter(|n| !self.done.iter().any(|(d, _)| d == n))
            .collect();
        let flags = |names: &[&str]| {
            let mut f: String = names.iter().map(|n| format!(" --only {n}")).collect();
            if let Some(t) = &self.target {
                f.push_str(&format!(" --target {}", t.display()));
            }
            if let Some(d) = &self.to_database {
                f.push_str(&format!(" --to-database {d}"));
            }
            f
        };
        let done_names: Vec<&str> = self.done.iter().map(|(n, _)| n.as_str()).collect();
        RestoreError::PartlyRestored {
            snapshot: self.snapshot.clone(),
            failed: failed.to_string(),
            done: done.join(", "),
            left: left.join(", "),
            finish: format!("coffer restore {}{} --force", self.snapshot, flags(&left)),
            undo: format!("coffer restore OLDER{} --force", flags(&done_names)),
            error: Box::new(error),
        }
    }
}

/// A directory swapped into place whose previous content is kept in `old`
/// until the whole restore has committed, so that a later failure can put
/// it back.
struct Swapped {
    dest: PathBuf,
    old: PathBuf,
    /// Whether `dest` existed before (an exchange) or not (a rename).
    existed: bool,
}

/// Why a swap could not be undone, for the on-call message.
#[derive(Debug)]
struct UndoFailed {
    dest: PathBuf,
    old: PathBuf,
    error: io::Error,
}

impl std::fmt::Display for UndoFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (restored; putting back its previous content failed: {}; that content is in {})",
            self.dest.display(),
            self.error,
            self.old.display()
        )
    }
}

impl Swapped {
    /// Puts the previous content back (or removes what the restore created).
    fn undo(self) -> Result<(), UndoFailed> {
        let fail = |error: io::Error| UndoFailed {
            dest: self.dest.clone(),
            old: self.old.clone(),
            error,
        };
        if self.existed {
            exchange(&self.old, &self.dest).map_err(fail)?;
        } else {
            fs::rename(&self.dest, &self.old).map_err(fail)?;
        }
        // `old` now holds the restored copy.
        let _ = fs::remove_dir_all(&self.old);
        Ok(())
    }

    /// The restore committed: the previous content goes.
    fn forget_old(self) {
        if self.existed {
            let _ = fs::remove_dir_all(&self.old);
        }
    }
}

/// A file source (or a dump written as files) unpacked and authenticated in
/// its staging directory, not yet in place.
struct StagedSource {
    src: SourceRecord,
    snapshot: String,
    plan: Plan,
    staging: tempfile::TempDir,
    entries: Vec<(String, EntryKind)>,
    out: RestoredSource,
    started: Instant,
}

impl StagedSource {
    /// A swap of a whole directory that is not a mount point can be undone.
    fn undoable(&self) -> bool {
        matches!(&self.plan, Plan::Swap { dest } if !is_mount_point(dest))
    }

    fn finish(mut self) -> RestoredSource {
        self.out.duration_ms = self.started.elapsed().as_millis() as u64;
        self.out
    }

    /// Swaps the staged tree into place, keeping the previous content.
    fn commit_swap(self) -> Result<(Swapped, RestoredSource), RestoreError> {
        let Plan::Swap { dest } = &self.plan else {
            unreachable!("only swaps are undoable")
        };
        let dest = dest.clone();
        let staged = self.staging.path().to_path_buf();
        let existed = fs::symlink_metadata(&dest).is_ok();
        swap_in(&staged, &dest)?;
        // From here the staging path is ours to manage (it holds the old
        // content, or nothing).
        let sw = Swapped {
            dest,
            old: self.staging.keep(),
            existed,
        };
        let out = RestoredSource {
            duration_ms: self.started.elapsed().as_millis() as u64,
            ..self.out
        };
        Ok((sw, out))
    }

    /// Commits what cannot be swapped whole: into a mount point, or entry by
    /// entry (files sources and `--include` in place).
    fn commit_in_place(self) -> Result<RestoredSource, RestoreError> {
        match &self.plan {
            Plan::Swap { dest } => replace_contents(self.staging.path(), dest)?,
            Plan::PerEntry { root, .. } => {
                let at = Where {
                    snapshot: self.snapshot.clone(),
                    source: self.src.name.clone(),
                };
                commit_entries(
                    self.staging.path(),
                    root,
                    &self.entries,
                    self.src.kind == "files",
                    &at,
                )?;
            }
        }
        Ok(self.finish())
    }
}

/// Where a source goes and how it is committed.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Unpack into a staging directory beside `dest`, then swap it in whole.
    Swap { dest: PathBuf },
    /// Unpack into staging, then rename each entry to `root/<path>`
    /// (`--include` in place, and files sources in place). Without `force`,
    /// an existing file at any of those paths stops the restore.
    PerEntry {
        root: PathBuf,
        staging_parent: PathBuf,
        force: bool,
    },
}

fn plan_destination(
    m: &Manifest,
    src: &SourceRecord,
    opts: &RestoreOptions,
) -> Result<Plan, RestoreError> {
    let kind = src.kind.as_str();
    if kind != "directory" && kind != "files" {
        return Err(RestoreError::Usage(format!(
            "source {} is of type {kind}, which this build cannot restore yet",
            src.name
        )));
    }
    if let Some(t) = &opts.target {
        let dest = absolute(t).join(&src.name);
        if !opts.force && !opts.dry_run && is_non_empty(&dest) {
            return Err(RestoreError::NeedsForce {
                path: dest.display().to_string(),
            });
        }
        return Ok(Plan::Swap { dest });
    }
    let origin = src.origin.clone().ok_or_else(|| {
        RestoreError::Usage(format!(
            "snapshot {} does not record where source {} came from; use --target DIR",
            m.id, src.name
        ))
    })?;
    let origin = PathBuf::from(origin);
    if kind == "directory" {
        if !opts.force && !opts.dry_run && is_non_empty(&origin) {
            return Err(RestoreError::NeedsForce {
                path: origin.display().to_string(),
            });
        }
        if opts.include.is_empty() {
            return Ok(Plan::Swap { dest: origin });
        }
        let parent = origin.parent().unwrap_or(Path::new("/")).to_path_buf();
        return Ok(Plan::PerEntry {
            root: origin,
            staging_parent: parent,
            force: opts.force,
        });
    }
    // A files source in place: each file back to its absolute path.
    Ok(Plan::PerEntry {
        root: PathBuf::from("/"),
        staging_parent: std::env::temp_dir(),
        force: opts.force,
    })
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn plan_root(plan: &Plan) -> &Path {
    match plan {
        Plan::Swap { dest } => dest,
        Plan::PerEntry { root, .. } => root,
    }
}

async fn dry_run(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    plan: &Plan,
    include: &Option<GlobSet>,
) -> Result<RestoredSource, RestoreError> {
    let repo = repo.clone();
    let m = m.clone();
    let src = src.clone();
    let plan = plan.clone();
    let include = include.clone();
    tokio::task::spawn_blocking(move || {
        let at = Where {
            snapshot: m.id.clone(),
            source: src.name.clone(),
        };
        let index_ref = src
            .index
            .clone()
            .ok_or_else(|| RestoreError::SourceFailed {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                reason: "no index".into(),
            })?;
        let mut stream = ObjectStream::open(&repo, &at, &index_ref, ObjectKind::Index);
        let reader = std::mem::replace(&mut stream.reader, stage_channel().1);
        let mut out = RestoredSource::new(&src, plan_root(&plan).display().to_string());
        let consumed = (|| -> Result<(), RestoreError> {
            let dec = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| classify(e, &at, &index_ref.object))?;
            let mut idx = IndexReader::new(BufReader::new(dec));
            while let Some(e) = idx
                .next_stored()
                .map_err(|e| classify(e, &at, &index_ref.object))?
            {
                if !included(&include, &e.path) {
                    continue;
                }
                let dest = plan_root(&plan).join(&e.path);
                let what = match e.kind {
                    EntryKind::File => {
                        out.files += 1;
                        out.bytes += e.size;
                        format!("file {} ({} bytes)", dest.display(), e.size)
                    }
                    EntryKind::Dir => {
                        out.dirs += 1;
                        format!("dir  {}", dest.display())
                    }
                    EntryKind::Symlink => {
                        out.links += 1;
                        format!(
                            "link {} -> {}",
                            dest.display(),
                            e.target.as_deref().unwrap_or("")
                        )
                    }
                    EntryKind::Hardlink => {
                        out.links += 1;
                        format!(
                            "hard link {} = {}",
                            dest.display(),
                            plan_root(&plan)
                                .join(e.target.as_deref().unwrap_or(""))
                                .display()
                        )
                    }
                };
                out.planned.push(what);
            }
            Ok(())
        })();
        let joined = stream.join();
        joined?;
        consumed?;
        Ok(out)
    })
    .await
    .map_err(|e| RestoreError::Usage(format!("dry run task failed: {e}")))?
}

/// Unpacks one file source into a fresh staging directory beside its
/// destination and authenticates all of it. Changes no destination.
fn stage_source(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    plan: Plan,
    include: &Option<GlobSet>,
) -> Result<StagedSource, RestoreError> {
    let started = Instant::now();
    let (staging_parent, root) = match &plan {
        // A mount point cannot be renamed over: stage inside it instead.
        Plan::Swap { dest } if is_mount_point(dest) => (dest.clone(), dest.clone()),
        Plan::Swap { dest } => (
            dest.parent().unwrap_or(Path::new("/")).to_path_buf(),
            dest.clone(),
        ),
        Plan::PerEntry {
            root,
            staging_parent,
            ..
        } => (staging_parent.clone(), root.clone()),
    };
    let staging = make_staging(&staging_parent)?;
    let mut ex = Extractor::new(staging.path().to_path_buf(), m, src, include.clone());
    let mut streams = SourceStreams::open(repo, m, src)?;
    let res = (|| {
        let (tar, index) = streams.readers()?;
        ex.run(&streams, tar, index)
    })();
    // The writer's own failure (a full disk) explains a stopped extractor.
    let res = match (res, ex.writer.finish()) {
        (_, Err(e)) => Err(e),
        (r, Ok(())) => r,
    };
    streams.finish(res)?;
    ex.apply_dir_metadata()?;
    if let Plan::PerEntry { root, force, .. } = &plan
        && !force
        && let Some((rel, _)) = ex
            .committed
            .iter()
            .find(|(rel, k)| *k != EntryKind::Dir && fs::symlink_metadata(root.join(rel)).is_ok())
    {
        return Err(RestoreError::NeedsForce {
            path: root.join(rel).display().to_string(),
        });
    }
    let mut out = RestoredSource::new(src, root.display().to_string());
    (out.files, out.dirs, out.links, out.bytes) = (ex.files, ex.dirs, ex.links, ex.bytes);
    out.not_stored = src.problems.iter().map(|p| p.path.clone()).collect();
    Ok(StagedSource {
        src: src.clone(),
        snapshot: m.id.clone(),
        plan,
        staging,
        entries: std::mem::take(&mut ex.committed),
        out,
        started,
    })
}

/// A fresh, private staging directory in `parent`.
fn make_staging(parent: &Path) -> Result<tempfile::TempDir, RestoreError> {
    fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
    tempfile::Builder::new()
        .prefix(".coffer-restore-")
        .tempdir_in(parent)
        .map_err(io_err("create staging directory in", parent))
}

/// Stages each stream of a dump source as a file, for `--target`: the
/// directory `dest` will hold exactly `<stream>` files, what `coffer dump`
/// writes, each authenticated before the directory is swapped in.
fn stage_dump_files(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    dest: PathBuf,
) -> Result<StagedSource, RestoreError> {
    let started = Instant::now();
    let names = checked_stream_names(m, src)?;
    let parent = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
    let staging = make_staging(&parent)?;
    let mut bytes = 0;
    for n in &names {
        let path = staging.path().join(n);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("create", &path))?;
        bytes += dump_stream(repo, m, src, Some(n.clone()), &mut f)?;
        f.sync_all().map_err(io_err("fsync", &path))?;
    }
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
        .map_err(io_err("set mode of", staging.path()))?;
    let mut out = RestoredSource::new(src, dest.display().to_string());
    out.files = names.len() as u64;
    out.bytes = bytes;
    Ok(StagedSource {
        src: src.clone(),
        snapshot: m.id.clone(),
        plan: Plan::Swap { dest },
        staging,
        entries: Vec::new(),
        out,
        started,
    })
}

/// True if `p` is a directory on another filesystem than its parent.
fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = p.parent().unwrap_or(Path::new("/"));
    match (fs::symlink_metadata(p), fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.is_dir() && !a.file_type().is_symlink() && a.dev() != b.dev(),
        _ => false,
    }
}

/// For a mount point: moves what `dest` holds aside, moves the staged tree's
/// entries in, then deletes the old entries. Not atomic like a rename, but
/// every step is a rename within one filesystem, and until the last step the
/// old data is still there (in `dest/.coffer-old-*`).
fn replace_contents(staged: &Path, dest: &Path) -> Result<(), RestoreError> {
    let old = dest.join(format!(".coffer-old-{}", crypto::random_id(6)));
    fs::create_dir(&old).map_err(io_err("create directory", &old))?;
    let entries = |d: &Path| -> Result<Vec<PathBuf>, RestoreError> {
        fs::read_dir(d)
            .map_err(io_err("list", d))?
            .map(|e| e.map(|e| e.path()).map_err(io_err("list", d)))
            .collect()
    };
    for e in entries(dest)? {
        if e == staged || e == old {
            continue;
        }
        let to = old.join(e.file_name().expect("entry name"));
        fs::rename(&e, &to).map_err(io_err("move aside", &e))?;
    }
    for e in entries(staged)? {
        let to = dest.join(e.file_name().expect("entry name"));
        fs::rename(&e, &to).map_err(io_err("move into place", &to))?;
    }
    if let Ok(m) = fs::metadata(staged) {
        let _ = fs::set_permissions(dest, m.permissions());
        let _ = filetime::set_file_mtime(dest, filetime::FileTime::from_last_modification_time(&m));
    }
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// Puts `staged` at `dest`: an atomic exchange when `dest` exists, a rename
/// when it does not.
fn swap_in(staged: &Path, dest: &Path) -> Result<(), RestoreError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => exchange(staged, dest).map_err(|e| RestoreError::Io {
            op: "swap the restored copy into place at",
            path: dest.display().to_string(),
            source: e,
        }),
        Err(_) => fs::rename(staged, dest).map_err(io_err("move the restored copy to", dest)),
    }
}

/// Exchanges two paths atomically (`renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(io::Error::from)
}

/// Renames staged entries into place one by one (files, links; directories
/// are created as needed). In a directory restore every path is checked
/// first, before anything is created or moved: an existing symlink (or
/// non-directory) on the way, or as the root itself, is refused rather than
/// followed. A files source follows its own absolute paths as configured.
fn commit_entries(
    staging: &Path,
    root: &Path,
    entries: &[(String, EntryKind)],
    follow_parents: bool,
    at: &Where,
) -> Result<(), RestoreError> {
    let refuse = |p: &Path, why: &str| RestoreError::Contained {
        snapshot: at.snapshot.clone(),
        source_name: at.source.clone(),
        path: p.display().to_string(),
        reason: format!("{why}; refusing to write through it (restore with --target instead)"),
    };
    if !follow_parents {
        if let Ok(md) = fs::symlink_metadata(root)
            && !md.is_dir()
        {
            return Err(refuse(
                root,
                "the destination is a symlink or not a directory",
            ));
        }
        for (rel, kind) in entries {
            let mut p = root.to_path_buf();
            let comps: Vec<_> = Path::new(rel).components().collect();
            for (i, c) in comps.iter().enumerate() {
                p.push(c);
                let last = i + 1 == comps.len();
                match fs::symlink_metadata(&p) {
                    Ok(md) if md.file_type().is_symlink() && (!last || *kind == EntryKind::Dir) => {
                        return Err(refuse(&p, "it is a symlink"));
                    }
                    Ok(md) if !md.is_dir() && (!last || *kind == EntryKind::Dir) => {
                        return Err(refuse(&p, "it is not a directory"));
                    }
                    Ok(md) if last && md.is_dir() && *kind != EntryKind::Dir => {
                        return Err(refuse(
                            &p,
                            "a directory stands where the snapshot has a file",
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    let mkdirs = |dir: &Path| -> Result<(), RestoreError> {
        if follow_parents {
            return create_dirs_0755(dir);
        }
        let mut p = root.to_path_buf();
        for c in dir.strip_prefix(root).unwrap_or(dir).components() {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => return Err(refuse(&p, "it is a symlink or not a directory")),
                Err(_) => create_dir_0755(&p)?,
            }
        }
        Ok(())
    };
    if !follow_parents {
        mkdirs(root)?;
    }
    for (rel, kind) in entries {
        let from = staging.join(rel);
        let to = root.join(rel);
        if *kind == EntryKind::Dir {
            mkdirs(&to)?;
            continue;
        }
        let parent = to.parent().unwrap_or(root);
        mkdirs(parent)?;
        if let Ok(md) = fs::symlink_metadata(&to)
            && md.is_dir()
        {
            return Err(refuse(
                &to,
                "a directory stands where the snapshot has a file",
            ));
        }
        if fs::rename(&from, &to).is_err() {
            // Another filesystem: copy beside the target, then rename.
            let tmp = parent.join(format!(".coffer-tmp-{}", crypto::random_id(6)));
            if fs::symlink_metadata(&from)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
            {
                let t = fs::read_link(&from).map_err(io_err("read link", &from))?;
                std::os::unix::fs::symlink(&t, &tmp).map_err(io_err("create link", &tmp))?;
            } else {
                fs::copy(&from, &tmp).map_err(io_err("copy to", &tmp))?;
                copy_times(&from, &tmp);
            }
            fs::rename(&tmp, &to).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                RestoreError::Io {
                    op: "move into place",
                    path: to.display().to_string(),
                    source: e,
                }
            })?;
        }
    }
    Ok(())
}

/// Creates a directory the restore needs but the snapshot does not
/// describe, as 0755: coffer runs under umask 077 (its repositories are
/// private), and an application must still reach its restored files.
fn create_dir_0755(p: &Path) -> Result<(), RestoreError> {
    fs::create_dir(p).map_err(io_err("create directory", p))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).map_err(io_err("set mode of", p))
}

/// `create_dir_all`, each directory it creates 0755 (see [`create_dir_0755`]).
fn create_dirs_0755(dir: &Path) -> Result<(), RestoreError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| fs::symlink_metadata(a).is_err())
        .collect();
    for d in missing.into_iter().rev() {
        match create_dir_0755(d) {
            Err(RestoreError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists => {}
            other => other?,
        }
    }
    Ok(())
}

fn copy_times(from: &Path, to: &Path) {
    if let Ok(m) = fs::metadata(from) {
        let t = filetime::FileTime::from_last_modification_time(&m);
        let _ = filetime::set_file_mtime(to, t);
    }
}

/// Unpacks a tar stream into a staging directory, refusing anything that
/// would leave it.
struct Extractor {
    root: PathBuf,
    snapshot: String,
    source: String,
    include: Option<GlobSet>,
    as_root: bool,
    dirs: u64,
    files: u64,
    links: u64,
    bytes: u64,
    dir_meta: Vec<(PathBuf, IndexEntry)>,
    /// What was staged, in order, for per-entry commits.
    committed: Vec<(String, EntryKind)>,
    writer: FileWriter,
}

/// Work for the writer thread: the extractor parses, checks paths, creates
/// and hashes; the writer copies bytes into the page cache and sets
/// metadata, so the two halves run on both cores.
enum WriteOp {
    Open(PathBuf, fs::File),
    Data(Vec<u8>),
    Close(IndexEntry, bool),
}

struct FileWriter {
    tx: Option<std::sync::mpsc::SyncSender<WriteOp>>,
    thread: Option<JoinHandle<Result<(), RestoreError>>>,
}

impl FileWriter {
    fn start() -> FileWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<WriteOp>(16);
        let thread = std::thread::spawn(move || -> Result<(), RestoreError> {
            let mut cur: Option<(PathBuf, fs::File)> = None;
            for op in rx {
                match op {
                    WriteOp::Open(p, f) => cur = Some((p, f)),
                    WriteOp::Data(d) => {
                        let (p, f) = cur.as_mut().expect("data after open");
                        f.write_all(&d).map_err(io_err("write", p))?;
                        crate::progress::add(d.len() as u64);
                    }
                    WriteOp::Close(ie, as_root) => {
                        let (p, f) = cur.take().expect("close after open");
                        if as_root {
                            let _ = std::os::unix::fs::fchown(&f, Some(ie.uid), Some(ie.gid));
                        }
                        f.set_permissions(fs::Permissions::from_mode(ie.mode & 0o7777))
                            .map_err(io_err("set mode of", &p))?;
                        let t = filetime::FileTime::from_unix_time(ie.mtime, ie.mtime_nsec);
                        let _ = filetime::set_file_handle_times(&f, None, Some(t));
                    }
                }
            }
            Ok(())
        });
        FileWriter {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&mut self, op: WriteOp) -> Result<(), RestoreError> {
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(op).is_ok())
            .unwrap_or(false);
        if sent {
            return Ok(());
        }
        // The writer stopped: its own error says why.
        self.finish()?;
        Err(RestoreError::Usage("the file writer stopped".into()))
    }

    fn finish(&mut self) -> Result<(), RestoreError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(RestoreError::Usage("file writer panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Extractor {
    fn new(root: PathBuf, m: &Manifest, src: &SourceRecord, include: Option<GlobSet>) -> Self {
        Extractor {
            root,
            snapshot: m.id.clone(),
            source: src.name.clone(),
            include,
            as_root: rustix::process::geteuid().is_root(),
            dirs: 0,
            files: 0,
            links: 0,
            bytes: 0,
            dir_meta: Vec::new(),
            committed: Vec::new(),
            writer: FileWriter::start(),
        }
    }

    fn contained(&self, path: &str, reason: impl Into<String>) -> RestoreError {
        RestoreError::Contained {
            snapshot: self.snapshot.clone(),
            source_name: self.source.clone(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// Makes sure every parent of `rel` inside the staging root is a real
    /// directory (created if missing, never a symlink).
    fn parents(&self, rel: &str) -> Result<PathBuf, RestoreError> {
        let mut p = self.root.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        for c in &parts[..parts.len() - 1] {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    return Err(self.contained(
                        rel,
                        format!(
                            "its parent {c:?} is a symlink or file; refusing to write through it"
                        ),
                    ));
                }
                Err(_) => fs::create_dir(&p).map_err(io_err("create directory", &p))?,
            }
        }
        Ok(self.root.join(rel))
    }

    fn run(
        &mut self,
        s: &SourceStreams,
        mut tar: TarStream,
        mut index: IndexStream,
    ) -> Result<(), RestoreError> {
        let entries = tar.entries().map_err(|e| s.archive_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| s.archive_error(e))?;
            let name = entry.path_bytes().into_owned();
            let rel =
                safe_path(&name).map_err(|r| self.contained(&String::from_utf8_lossy(&name), r))?;
            let ty = entry.header().entry_type();
            let Some(kind) = entry_kind(ty) else {
                if ty.is_pax_global_extensions() || ty.is_pax_local_extensions() {
                    continue;
                }
                return Err(s.at.integrity(
                    &s.archive_ref.object,
                    format!(
                        "entry {rel:?} has an unsupported type {:?}",
                        ty.as_byte() as char
                    ),
                ));
            };
            let ie = expect_entry(s, &mut index, &rel, kind)?;
            let wanted = included(&self.include, &rel);
            if !wanted {
                // Still read the data so the stream authenticates to its end.
                io::copy(&mut entry, &mut io::sink()).map_err(|e| s.archive_error(e))?;
                continue;
            }
            match kind {
                EntryKind::Dir => {
                    let p = if rel == "." {
                        self.root.clone()
                    } else {
                        let p = self.parents(&rel)?;
                        match fs::symlink_metadata(&p) {
                            Ok(md) if md.is_dir() => {}
                            Ok(_) => {
                                return Err(self.contained(&rel, "a non-directory stands there"));
                            }
                            Err(_) => fs::create_dir(&p).map_err(io_err("create directory", &p))?,
                        }
                        p
                    };
                    self.dirs += 1;
                    if rel != "." {
                        self.committed.push((rel.clone(), kind));
                    }
                    self.dir_meta.push((p, ie));
                }
                EntryKind::File => {
                    let p = self.parents(&rel)?;
                    let f = match create_new(&p) {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            fs::remove_file(&p).map_err(io_err("replace", &p))?;
                            create_new(&p)
                        }
                        other => other,
                    }
                    .map_err(io_err("create", &p))?;
                    self.writer.send(WriteOp::Open(p, f))?;
                    let mut h = Sha256::new();
                    let mut n = 0u64;
                    loop {
                        let mut buf = vec![0u8; 256 * 1024];
                        let k = read_full(&mut entry, &mut buf).map_err(|e| s.archive_error(e))?;
                        if k == 0 {
                            break;
                        }
                        buf.truncate(k);
                        h.update(&buf);
                        n += k as u64;
                        self.writer.send(WriteOp::Data(buf))?;
                    }
                    let sha = hex::encode(h.finalize());
                    if n != ie.size || ie.sha256.as_deref() != Some(sha.as_str()) {
                        return Err(s.at.integrity(
                            &s.archive_ref.object,
                            format!(
                                "file {rel:?}: content does not match the index's size/SHA-256"
                            ),
                        ));
                    }
                    self.writer.send(WriteOp::Close(ie, self.as_root))?;
                    self.files += 1;
                    self.bytes += n;
                    self.committed.push((rel.clone(), kind));
                }
                EntryKind::Symlink => {
                    let p = self.parents(&rel)?;
                    let target = ie.target.clone().unwrap_or_default();
                    let _ = fs::remove_file(&p);
                    std::os::unix::fs::symlink(&target, &p).map_err(io_err("create link", &p))?;
                    if self.as_root {
                        let _ = std::os::unix::fs::lchown(&p, Some(ie.uid), Some(ie.gid));
                    }
                    let t = filetime::FileTime::from_unix_time(ie.mtime, ie.mtime_nsec);
                    let _ = filetime::set_symlink_file_times(&p, t, t);
                    self.links += 1;
                    self.committed.push((rel.clone(), kind));
                }
                EntryKind::Hardlink => {
                    let target = ie.target.clone().unwrap_or_default();
                    let trel = safe_path(target.as_bytes()).map_err(|r| self.contained(&rel, r))?;
                    let tp = self.root.join(&trel);
                    let ok = fs::symlink_metadata(&tp)
                        .map(|m| m.is_file())
                        .unwrap_or(false);
                    if !ok {
                        // The first copy was not restored (filtered out by
                        // --include): there is nothing to link to.
                        if self.include.is_some() {
                            continue;
                        }
                        return Err(self.contained(
                            &rel,
                            format!("hard link to {trel:?}, which is not a restored file"),
                        ));
                    }
                    self.parents(&trel)?;
                    let p = self.parents(&rel)?;
                    let _ = fs::remove_file(&p);
                    fs::hard_link(&tp, &p).map_err(io_err("create hard link", &p))?;
                    self.links += 1;
                    self.committed.push((rel.clone(), kind));
                }
            }
        }
        if let Some(extra) = index.next_stored().map_err(|e| s.index_error(e))? {
            return Err(s.at.integrity(
                &s.index_ref.object,
                format!("the index lists {:?}, which the archive lacks", extra.path),
            ));
        }
        drain(s, tar, index)
    }

    /// Directory modes and mtimes last, deepest first: writing into a
    /// directory changes its mtime, and a read-only mode would stop us.
    fn apply_dir_metadata(&mut self) -> Result<(), RestoreError> {
        for (p, e) in self.dir_meta.iter().rev() {
            if self.as_root {
                let _ = std::os::unix::fs::lchown(p, Some(e.uid), Some(e.gid));
            }
            fs::set_permissions(p, fs::Permissions::from_mode(e.mode & 0o7777))
                .map_err(io_err("set mode of", p))?;
            let t = filetime::FileTime::from_unix_time(e.mtime, e.mtime_nsec);
            let _ = filetime::set_file_mtime(p, t);
        }
        Ok(())
    }
}

fn create_new(p: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

// --------------------------------------------------------------------- dump

/// Writes what a source holds to `out`: the whole tar stream, or with `path`
/// one file's bytes.
///
/// A reader that closes the pipe early (`pg_restore -l` stops after the table
/// of contents, `head` after its lines) ends the dump successfully, as other
/// Unix filters do; an integrity failure found before that point is still an
/// error, since every byte handed out was authenticated first.
pub async fn dump<W: Write + Send + 'static>(
    repo: &Repository,
    m: &Manifest,
    source: &str,
    path: Option<String>,
    out: W,
) -> Result<(), RestoreError> {
    let src = find_source(m, source)?.clone();
    let repo = repo.clone();
    let m = m.clone();
    let res = tokio::task::spawn_blocking(move || dump_blocking(&repo, &m, &src, path, out))
        .await
        .map_err(|e| RestoreError::Usage(format!("dump task failed: {e}")))?;
    match res {
        Ok(_) | Err(RestoreError::OutputClosed) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The error for a failed write to `coffer dump`'s output.
fn output_error(e: io::Error) -> RestoreError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        RestoreError::OutputClosed
    } else {
        RestoreError::Io {
            op: "write",
            path: "standard output".into(),
            source: e,
        }
    }
}

fn dump_blocking<W: Write>(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    path: Option<String>,
    mut out: W,
) -> Result<u64, RestoreError> {
    let at = Where {
        snapshot: m.id.clone(),
        source: src.name.clone(),
    };
    let stdout_err = output_error;
    if is_dump_source(&src.kind) {
        return dump_stream(repo, m, src, path, &mut out);
    }
    let (Some(archive_ref), Some(index_ref)) = (src.archive.clone(), src.index.clone()) else {
        return Err(RestoreError::SourceFailed {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            reason: src.error.clone().unwrap_or_default(),
        });
    };
    // The index is small: read and authenticate it whole before a byte goes
    // out, and use it to find the file asked for.
    let mut wanted: Option<IndexEntry> = None;
    let want_rel = match &path {
        Some(p) => Some(
            safe_path(p.trim_start_matches('/').as_bytes())
                .map_err(|r| RestoreError::Usage(format!("bad PATH {p:?}: {r}")))?,
        ),
        None => None,
    };
    scan_index(repo, &at, &index_ref, |e| {
        if want_rel.as_deref() == Some(e.path.as_str()) {
            wanted = Some(e);
        }
    })?;
    let Some(want) = path else {
        let mut stream = ObjectStream::open(repo, &at, &archive_ref, ObjectKind::Archive);
        let reader = std::mem::replace(&mut stream.reader, stage_channel().1);
        let res = (|| -> Result<u64, RestoreError> {
            let mut dec = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| classify(e, &at, &archive_ref.object))?;
            let mut n = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = dec
                    .read(&mut buf)
                    .map_err(|e| classify(e, &at, &archive_ref.object))?;
                if k == 0 {
                    break;
                }
                out.write_all(&buf[..k]).map_err(stdout_err)?;
                n += k as u64;
            }
            out.flush().map_err(stdout_err)?;
            Ok(n)
        })();
        let joined = stream.join();
        joined?;
        return res;
    };
    let entry = match wanted {
        Some(e) if e.stored => e,
        Some(e) => {
            return Err(RestoreError::SourceFailed {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                reason: format!(
                    "{want:?} could not be read when the snapshot was taken: {}",
                    e.error.unwrap_or_default()
                ),
            });
        }
        None => {
            return Err(RestoreError::NoSuchFile {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                path: want,
            });
        }
    };
    // A hard link's bytes are stored under the first name it was found by.
    let want_rel = match entry.kind {
        EntryKind::File => entry.path.clone(),
        EntryKind::Hardlink => entry.target.clone().unwrap_or_default(),
        k => {
            return Err(RestoreError::Usage(format!(
                "{want:?} is a {} in source {}, not a file with bytes to dump",
                match k {
                    EntryKind::Dir => "directory",
                    _ => "symlink",
                },
                src.name
            )));
        }
    };
    let mut streams = SourceStreams::open(repo, m, src)?;
    let mut written = 0u64;
    let mut found = false;
    let res = (|| -> Result<(), RestoreError> {
        let (mut tar, mut index) = streams.readers()?;
        let entries = tar.entries().map_err(|e| streams.archive_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| streams.archive_error(e))?;
            let name = entry.path_bytes().into_owned();
            let rel = safe_path(&name)
                .map_err(|r| streams.at.integrity(&streams.archive_ref.object, r))?;
            let ty = entry.header().entry_type();
            let Some(kind) = entry_kind(ty) else { continue };
            let ie = expect_entry(&streams, &mut index, &rel, kind)?;
            if rel != want_rel {
                continue;
            }
            if kind != EntryKind::File {
                return Err(RestoreError::Usage(format!(
                    "{want:?} is a {kind:?} in source {}, not a file with bytes to dump",
                    src.name
                )));
            }
            // Hash while writing: the bytes are already authenticated per
            // segment; the index hash is a second, independent check.
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = entry.read(&mut buf).map_err(|e| streams.archive_error(e))?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                out.write_all(&buf[..k]).map_err(stdout_err)?;
                written += k as u64;
            }
            out.flush().map_err(stdout_err)?;
            if ie.sha256.as_deref() != Some(hex::encode(h.finalize()).as_str()) {
                return Err(streams.at.integrity(
                    &streams.archive_ref.object,
                    format!("file {rel:?} does not match its SHA-256 in the index"),
                ));
            }
            found = true;
            return Ok(());
        }
        Ok(())
    })();
    // Stop the reading threads early once the file was found.
    let res = match streams.finish(res) {
        Ok(()) => Ok(()),
        Err(e) if found && !e.is_integrity() => Ok(()),
        Err(e) => Err(e),
    };
    res?;
    if !found {
        return Err(RestoreError::NoSuchFile {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            path: want,
        });
    }
    Ok(written)
}

/// Reads a source's index to its authenticated end on this (blocking)
/// thread, handing every entry to `f`.
fn scan_index(
    repo: &Repository,
    at: &Where,
    index_ref: &ObjectRef,
    mut f: impl FnMut(IndexEntry),
) -> Result<(), RestoreError> {
    let mut stream = ObjectStream::open(repo, at, index_ref, ObjectKind::Index);
    let reader = std::mem::replace(&mut stream.reader, stage_channel().1);
    let res = (|| -> Result<(), RestoreError> {
        let dec = zstd::stream::read::Decoder::new(reader)
            .map_err(|e| classify(e, at, &index_ref.object))?;
        let mut idx = IndexReader::new(BufReader::new(dec));
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
    let joined = stream.join();
    joined?;
    res
}

/// `coffer dump` of a dump source: the main stream (or the stream named by
/// `path`), exactly as its tool wrote it.
fn dump_stream<W: Write>(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    path: Option<String>,
    out: &mut W,
) -> Result<u64, RestoreError> {
    let names = stream_names(src);
    let want = match path {
        Some(p) => p,
        None => src
            .details
            .get("main_stream")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| names.last().cloned())
            .unwrap_or_default(),
    };
    if !names.contains(&want) {
        return Err(RestoreError::Usage(format!(
            "source {} of snapshot {} holds the stream(s) {}; {want:?} is not one of them",
            src.name,
            m.id,
            names.join(", ")
        )));
    }
    let mut streams = ChunkStreams::open(repo, m, src)?;
    let res = (|| -> Result<u64, RestoreError> {
        use crate::source::Streams;
        while let Some((name, mut r)) =
            streams.next_stream().map_err(|e| source_error(m, src, e))?
        {
            if name != want {
                continue;
            }
            let n = io::copy(&mut r, out).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    RestoreError::Usage(e.to_string())
                } else {
                    output_error(e)
                }
            })?;
            out.flush().map_err(output_error)?;
            return Ok(n);
        }
        Ok(0)
    })();
    // The reader thread's verdict (integrity) explains any failure above.
    streams.finish()?;
    res
}

fn stream_names(src: &SourceRecord) -> Vec<String> {
    src.details
        .get("streams")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Per-source file listing for `show --files`: reads the index only.
pub async fn list_files(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
) -> Result<Vec<IndexEntry>, RestoreError> {
    let Some(index_ref) = src.index.clone() else {
        return Ok(Vec::new());
    };
    let at = Where {
        snapshot: m.id.clone(),
        source: src.name.clone(),
    };
    let repo = repo.clone();
    tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        scan_index(&repo, &at, &index_ref, |e| v.push(e))?;
        Ok(v)
    })
    .await
    .map_err(|e| RestoreError::Usage(format!("listing task failed: {e}")))?
}

// ------------------------------------------------------------ dump sources

enum ChunkMsg {
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
    rx: std::sync::mpsc::Receiver<ChunkMsg>,
    pending: Option<(String, Vec<u8>)>,
    /// The stream last handed out: its unread chunks are skipped.
    last: Option<String>,
    done: bool,
    thread: Option<JoinHandle<Result<(), RestoreError>>>,
}

impl ChunkStreams {
    pub fn open(repo: &Repository, m: &Manifest, src: &SourceRecord) -> Result<Self, RestoreError> {
        let mut streams = SourceStreams::open(repo, m, src)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<ChunkMsg>(2);
        let thread = std::thread::spawn(move || -> Result<(), RestoreError> {
            let res = (|| -> Result<(), RestoreError> {
                let (mut tar, mut index) = streams.readers()?;
                let entries = tar.entries().map_err(|e| streams.archive_error(e))?;
                for entry in entries {
                    let mut entry = entry.map_err(|e| streams.archive_error(e))?;
                    let name = entry.path_bytes().into_owned();
                    let rel = safe_path(&name)
                        .map_err(|r| streams.at.integrity(&streams.archive_ref.object, r))?;
                    let ie = expect_entry(&streams, &mut index, &rel, EntryKind::File)?;
                    let Some((stream, _)) = crate::source::stream::parse_chunk_path(&rel) else {
                        return Err(streams.at.integrity(
                            &streams.archive_ref.object,
                            format!("entry {rel:?} is not a dump chunk"),
                        ));
                    };
                    // Sizes come from stored data: never hold more than a
                    // chunk can be, whatever the index or tar header says.
                    let chunk = crate::source::stream::CHUNK as u64;
                    if ie.size > chunk || entry.size() != ie.size {
                        return Err(streams.at.integrity(
                            &streams.archive_ref.object,
                            format!("chunk {rel:?} claims {} bytes (index: {}); chunks hold at most {chunk}", entry.size(), ie.size),
                        ));
                    }
                    let mut data = Vec::with_capacity(ie.size as usize);
                    (&mut entry)
                        .take(ie.size)
                        .read_to_end(&mut data)
                        .map_err(|e| streams.archive_error(e))?;
                    let sha = hex::encode(Sha256::digest(&data));
                    if data.len() as u64 != ie.size || ie.sha256.as_deref() != Some(sha.as_str()) {
                        return Err(streams.at.integrity(
                            &streams.archive_ref.object,
                            format!("chunk {rel:?} does not match its size/SHA-256 in the index"),
                        ));
                    }
                    if tx.send(ChunkMsg::Chunk(stream.to_string(), data)).is_err() {
                        // The consumer stopped (it failed, or needed no more).
                        return Ok(());
                    }
                }
                if let Some(extra) = index.next_stored().map_err(|e| streams.index_error(e))? {
                    return Err(streams.at.integrity(
                        &streams.index_ref.object,
                        format!("the index lists {:?}, which the archive lacks", extra.path),
                    ));
                }
                drain(&streams, tar, index)
            })();
            let res = streams.finish(res);
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

    fn recv(&mut self) -> io::Result<Option<(String, Vec<u8>)>> {
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
                .unwrap_or_else(|_| Err(RestoreError::Usage("archive reader panicked".into()))),
            None => Ok(()),
        }
    }
}

/// One stream's bytes: chunks until the next stream begins.
struct ChunkReader<'a> {
    parent: &'a mut ChunkStreams,
    name: String,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
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

fn kind_of(src: &SourceRecord) -> Result<crate::config::SourceKind, RestoreError> {
    serde_json::from_value(serde_json::Value::String(src.kind.clone()))
        .map_err(|_| RestoreError::Usage(format!("unknown source type {:?}", src.kind)))
}

fn source_error(m: &Manifest, src: &SourceRecord, e: crate::source::SourceError) -> RestoreError {
    RestoreError::Source {
        snapshot: m.id.clone(),
        source_name: src.name.clone(),
        error: e,
    }
}

fn db_request<'a>(
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

/// True for source types stored as dump streams.
pub fn is_dump_source(kind: &str) -> bool {
    !matches!(kind, "directory" | "files")
}

// -------------------------------------------------------------------- drill

/// The report of `coffer drill`.
#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub ok: bool,
    pub snapshot: String,
    pub sources: Vec<crate::source::DrillResult>,
    /// Sources with no drill (files, directories, Redis, commands).
    pub skipped: Vec<String>,
}

/// Restores each database source of `m` into a scratch database, checks it
/// and drops it (see [`crate::source::drill`]).
pub async fn drill(
    repo: &Repository,
    m: &Manifest,
    config: &crate::config::Config,
    only: &[String],
    scratch_url: Option<String>,
) -> Result<DrillReport, RestoreError> {
    for o in only {
        find_source(m, o)?;
    }
    let mut report = DrillReport {
        ok: true,
        snapshot: m.id.clone(),
        sources: Vec::new(),
        skipped: Vec::new(),
    };
    for src in m
        .sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
    {
        let kind = kind_of(src)?;
        if !is_dump_source(&src.kind)
            || matches!(
                kind,
                crate::config::SourceKind::Redis | crate::config::SourceKind::Command
            )
        {
            report.skipped.push(src.name.clone());
            continue;
        }
        if src.status == SourceStatus::Failed {
            report.ok = false;
            report.sources.push(crate::source::DrillResult {
                name: src.name.clone(),
                kind: src.kind.clone(),
                ok: false,
                scratch: String::new(),
                restore_ms: 0,
                checks: Vec::new(),
                failures: vec!["the source failed when the snapshot was taken".into()],
                error: src.error.clone(),
            });
            continue;
        }
        let (repo2, m2, src2, cfg2, scratch2) = (
            repo.clone(),
            m.clone(),
            src.clone(),
            config.clone(),
            scratch_url.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            let req = crate::source::DrillRequest {
                snapshot: &m2.id,
                source: &src2.name,
                config: cfg2.source(&src2.name),
                details: &src2.details,
                scratch_url: scratch2.as_deref(),
            };
            let mut streams = ChunkStreams::open(&repo2, &m2, &src2).map_err(|e| (e, None))?;
            let res = crate::source::drill(kind, &req, &mut streams);
            // The archive's own verdict comes first: a damaged archive makes the
            // tool fail too, and "damaged data" is what the engineer must hear.
            if let Err(e) = streams.finish() {
                let tool = match &res {
                    Some(Err(t)) => Some(t.to_string()),
                    _ => None,
                };
                return Err((e, tool));
            }
            Ok(res)
        })
        .await
        .map_err(|e| RestoreError::Usage(format!("drill task failed: {e}")))?;
        let r = match result {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(e))) => crate::source::DrillResult {
                name: src.name.clone(),
                kind: src.kind.clone(),
                ok: false,
                scratch: String::new(),
                restore_ms: 0,
                checks: Vec::new(),
                failures: Vec::new(),
                error: Some(e.to_string()),
            },
            Ok(None) => {
                report.skipped.push(src.name.clone());
                continue;
            }
            Err((e, tool)) => {
                let integrity = e.is_integrity();
                let mut failures = vec![e.to_string()];
                failures.extend(tool.map(|t| format!("the restore tool said: {t}")));
                crate::source::DrillResult {
                    name: src.name.clone(),
                    kind: src.kind.clone(),
                    ok: false,
                    scratch: String::new(),
                    restore_ms: 0,
                    checks: Vec::new(),
                    failures,
                    // An integrity failure is a failed check (exit 3), not an
                    // operational error (exit 1).
                    error: (!integrity).then(|| e.to_string()),
                }
            }
        };
        report.ok &= r.ok;
        report.sources.push(r);
    }
    Ok(report)
}
