//! `coffer restore` and `coffer dump`: read a source back out of a snapshot.
//!
//! The archive is downloaded, authenticated and decrypted on one thread and
//! decompressed and unpacked on another, in step with the source's index,
//! which must agree entry by entry (path, type, SHA-256).
//!
//! A restore never writes into its destination directly: it unpacks into a
//! private staging directory beside it, and only when the whole archive has
//! authenticated does it swap the staging directory in (`renameat2` with
//! `RENAME_EXCHANGE`, atomic) or, for single files, rename each into place.
//! A failed or interrupted restore leaves the destination as it was. Every
//! path is checked: no absolute paths, no `..`, and nothing is ever written
//! through a symlink, so nothing lands outside the destination.
//!
//! Every filesystem step works by directory handle ([`crate::dirfd`]), never
//! by looking a path up again, and staging directories go only where no
//! other user can replace them: a local user who can write around the
//! destination cannot redirect a root restore (issue 10). In place, a source
//! goes back to the paths of the current config, never to the path the
//! snapshot records, which any host sharing the key could have written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::archive::{ChanReader, IndexReader, TarGuard, TarLimit, safe_path, stage_channel};
use crate::crypto::{self, ObjectKind, OpenReader, read_full};
use crate::dirfd::{self, Dir};
use crate::manifest::{
    EntryKind, IndexEntry, Manifest, ObjectRef, SourceRecord, SourceStatus, seal_context,
};
use crate::outcome::ErrorKind;
use crate::repo::Repository;
use crate::store::StoreError;
use rustix::fs::RenameFlags;

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
    /// A staging directory would go where another user could replace it.
    #[error(
        "{path}: {reason}. A restore stages its copy there, and users who can write to it could move what the restore puts there. Make it writable only by its owner (e.g. `chmod go-w {path}`), or restore with --target DIR into a directory only you can write to and move the result into place yourself"
    )]
    UnsafeParent { path: String, reason: String },
    /// A name the restore made in a directory no longer leads to what it
    /// made: another process renamed or replaced it meanwhile.
    #[error(
        "{path}: {what} was renamed or replaced by another process during the restore; nothing there was deleted. Check {path} and the .coffer-restore-* entries beside it by hand, stop whatever changes that directory, and restore again"
    )]
    Changed { path: String, what: String },
    /// The filesystem where the restore stages its copy has too little
    /// free space for it: refused before anything is written.
    #[error(
        "snapshot {snapshot}, source {source_name}: restoring {dest} needs about {needed} free on the filesystem of {staging_dir} (the restore stages a complete copy there, and what {dest} holds now stays until the copy is swapped in), but only {available} is free there; nothing was changed. Free space on that filesystem, or restore with --target DIR on a filesystem with room and move the result into place"
    )]
    NoSpace {
        snapshot: String,
        source_name: String,
        dest: String,
        staging_dir: String,
        needed: String,
        available: String,
    },
    /// The filesystems a files source's files are staged on (beside each
    /// file) have too little free space together for them.
    #[error(
        "snapshot {snapshot}, source {source_name}: restoring its files needs about {needed} free beside them (each file is staged whole beside its destination before any file is replaced), but only {available} is free on the filesystem of {dirs}; nothing was changed. Free space there, or restore with --target DIR on a filesystem with room and copy the files into place"
    )]
    NoSpaceForFiles {
        snapshot: String,
        source_name: String,
        dirs: String,
        needed: String,
        available: String,
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
    #[error("{op} {path}: {source}{}", io_hint(source))]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl RestoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RestoreError::Integrity { .. } | RestoreError::Contained { .. } => ErrorKind::Integrity,
            RestoreError::UnknownSource { .. }
            | RestoreError::NeedsForce { .. }
            | RestoreError::BadInclude(..)
            | RestoreError::NoSuchFile { .. }
            | RestoreError::Usage(_) => ErrorKind::Usage,
            RestoreError::Store(s) => s.kind(),
            RestoreError::SourceFailed { .. }
            | RestoreError::Io { .. }
            | RestoreError::UnsafeParent { .. }
            | RestoreError::Changed { .. }
            | RestoreError::NoSpace { .. }
            | RestoreError::NoSpaceForFiles { .. }
            | RestoreError::OutputClosed => ErrorKind::Operational,
            // The cause decides: a part-way stop over damaged data is still
            // an integrity failure.
            RestoreError::PartlyRestored { error, .. } => error.kind(),
            RestoreError::Source { error, .. } => error.kind(),
        }
    }

    pub fn is_integrity(&self) -> bool {
        self.kind() == ErrorKind::Integrity
    }
}

/// What to do next after a failed filesystem call of a restore.
fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            ". The filesystem is full (or over quota): free space there, or restore with --target DIR on a filesystem with room"
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            ". Restore as a user who may write there, or with --target DIR into a directory you may write to"
        }
        _ => "",
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
    if let Some(l) = e.get_ref().and_then(|i| i.downcast_ref::<TarLimit>()) {
        return at.integrity(object, l.to_string());
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

pub type TarStream =
    tar::Archive<TarGuard<zstd::stream::read::Decoder<'static, BufReader<ChanReader>>>>;
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
        let tar = tar::Archive::new(TarGuard::new(dec(a, &self.archive_ref.object)?));
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
    /// Files the snapshot stored although they changed, shrank or failed
    /// part-way while it read them: restored (where they go, as in
    /// `destination`), but their content is possibly inconsistent.
    pub possibly_inconsistent: Vec<String>,
    /// Why, one per `possibly_inconsistent` path (the snapshot's words),
    /// for the text report.
    #[serde(skip)]
    pub possibly_inconsistent_why: Vec<String>,
    /// Files of a files source that the current config no longer lists:
    /// not restored in place (`--target` restores them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_configured: Vec<String>,
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
            possibly_inconsistent: Vec::new(),
            possibly_inconsistent_why: Vec::new(),
            not_configured: Vec::new(),
            next_steps: Vec::new(),
        }
    }

    /// Notes a file stored with a problem (index `error` on a `stored`
    /// entry) that this restore writes, at `dest`.
    fn flag(&mut self, dest: &Path, why: &str) {
        self.possibly_inconsistent.push(dest.display().to_string());
        self.possibly_inconsistent_why.push(why.to_string());
    }

    /// The snapshot's problems that kept a file out of the archive. A
    /// problem of a file that was stored anyway (`stored_flagged`: its path
    /// in the archive) is not one of them: that file is restored, and
    /// reported as possibly inconsistent instead.
    fn set_not_stored(&mut self, src: &SourceRecord, stored_flagged: &[String]) {
        // A problem's path is the walk's: the source's origin joined with
        // the path in the archive.
        let origin = src.origin.as_deref().map(Path::new);
        let stored: HashSet<String> = stored_flagged
            .iter()
            .map(|rel| match origin {
                Some(o) => o.join(rel).display().to_string(),
                None => format!("/{rel}"),
            })
            .collect();
        self.not_stored = src
            .problems
            .iter()
            .filter(|p| {
                // Older manifests have no origin: match by the tail.
                let by_tail = origin.is_none()
                    && stored_flagged
                        .iter()
                        .any(|r| p.path.ends_with(&format!("/{r}")));
                !(stored.contains(&p.path) || by_tail)
            })
            .map(|p| p.path.clone())
            .collect();
    }
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    /// The host the snapshot was taken on, and when: on-call must see
    /// whose data is coming back.
    pub host: String,
    /// RFC 3339, UTC, to the second, as `snapshots` lists it.
    pub time: String,
    pub dry_run: bool,
    /// What on-call should know before trusting the result (a source that
    /// goes back to another path than the snapshot recorded, files left out).
    pub warnings: Vec<String>,
    pub sources: Vec<RestoredSource>,
    /// Sources skipped because they failed when the snapshot was taken.
    pub skipped: Vec<String>,
    /// Left-overs of killed restores that this restore removed, provably
    /// abandoned (staging directories, scratch databases).
    pub cleaned: Vec<String>,
}

impl RestoreReport {
    /// Sources that failed when the snapshot was taken were not restored:
    /// the restore is partial.
    pub fn outcome(&self) -> crate::Outcome {
        if self.skipped.is_empty() {
            crate::Outcome::Ok
        } else {
            crate::Outcome::Partial
        }
    }
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
        host: m.host.clone(),
        time: m.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        dry_run: opts.dry_run,
        warnings: Vec::new(),
        sources: Vec::new(),
        skipped: Vec::new(),
        cleaned: Vec::new(),
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
        let (plan, warning) = plan_destination(m, src, opts, config)?;
        report.warnings.extend(warning);
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
        note_not_configured(m, &mut report);
        report.cleaned = crate::abandoned::take_removed();
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
    note_not_configured(m, &mut report);
    report.cleaned = crate::abandoned::take_removed();
    Ok(report)
}

/// A warning per file of a files source left out because the current
/// config no longer lists it.
fn note_not_configured(m: &Manifest, report: &mut RestoreReport) {
    for s in &report.sources {
        for p in &s.not_configured {
            report.warnings.push(format!(
                "source {}: {p} is in snapshot {} (taken on {}) but not in the source's paths in the current config; not restored (restore it with --target DIR)",
                s.name, m.id, m.host
            ));
        }
    }
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

/// A directory swapped into place whose previous content is kept, under the
/// staging directory's name in the same parent, until the whole restore has
/// committed, so that a later failure can put it back. Works by the parent's
/// handle: nothing is looked up by path again.
struct Swapped {
    parent: Dir,
    dest_name: OsString,
    old_name: String,
    /// Whether the destination existed before (an exchange) or not (a rename).
    existed: bool,
    /// Identities of the previous content (now at `old_name`) and of the
    /// restored copy (now at `dest_name`): nothing is removed by name
    /// unless the name still leads to it.
    old_id: Option<(u64, u64)>,
    new_id: (u64, u64),
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
            dest: self.parent.join(&self.dest_name),
            old: self.parent.join(&self.old_name),
            error,
        };
        if self.existed {
            self.parent
                .rename(
                    &self.old_name,
                    &self.parent,
                    &self.dest_name,
                    RenameFlags::EXCHANGE,
                )
                .map_err(fail)?;
        } else {
            self.parent
                .rename(
                    &self.dest_name,
                    &self.parent,
                    &self.old_name,
                    RenameFlags::NOREPLACE,
                )
                .map_err(fail)?;
        }
        // `old_name` now holds the restored copy.
        remove_if(&self.parent, &self.old_name, Some(self.new_id));
        Ok(())
    }

    /// The restore committed: the previous content goes.
    fn forget_old(self) {
        if self.existed {
            remove_if(&self.parent, &self.old_name, self.old_id);
        }
    }
}

/// Removes `name` from `parent` only if it is still the file `id` names
/// (another process may have put something else under that name).
fn remove_if(parent: &Dir, name: &str, id: Option<(u64, u64)>) {
    let Some(id) = id else { return };
    match parent.stat_at(name) {
        Ok(st) if dirfd::identity(&st) == id => {
            let _ = parent.remove_all(name);
        }
        Ok(_) => tracing::warn!(
            "{} is no longer what this restore made there; left as it is",
            parent.join(name).display()
        ),
        Err(_) => {}
    }
}

/// A private staging directory we created in `parent`; removed (by handle)
/// when dropped, unless something else took charge of it.
struct Staging {
    parent: Dir,
    name: String,
    dir: Dir,
    /// The staging directory's identity, checked before any rename or
    /// removal by name.
    id: (u64, u64),
    keep: bool,
}

impl Staging {
    /// Creates one in `parent`, after checking that no other user could
    /// replace what we stage there.
    fn new(parent: Dir) -> Result<Staging, RestoreError> {
        let st = parent
            .stat()
            .map_err(io_err("inspect directory", parent.path()))?;
        if let Some(reason) = dirfd::unsafe_staging_parent(&st) {
            return Err(RestoreError::UnsafeParent {
                path: parent.path().display().to_string(),
                reason,
            });
        }
        remove_abandoned_staging(&parent);
        let (name, dir) = parent
            .make_staging(&crate::abandoned::staging_prefix())
            .map_err(io_err("create a staging directory in", parent.path()))?;
        let id = dirfd::identity(&dir.stat().map_err(io_err("inspect", dir.path()))?);
        Ok(Staging {
            parent,
            name,
            dir,
            id,
            keep: false,
        })
    }
}

/// Removes the staging directories in `parent` that a killed restore left
/// and that are provably abandoned (see [`crate::abandoned`]): ours by
/// name, made on this host by a process that is gone, a real directory
/// owned by us. Everything is done through `parent`'s handle, never
/// following a symlink; what cannot be proved abandoned stays.
fn remove_abandoned_staging(parent: &Dir) {
    use crate::abandoned::{Verdict, staging_verdict};
    let Ok(entries) = parent.entries() else {
        return;
    };
    for e in entries {
        let Some(name) = e.to_str() else { continue };
        let Some(Verdict::Abandoned(owner)) = staging_verdict(name) else {
            continue;
        };
        let Ok(st) = parent.stat_at(name) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR
            || st.st_uid != rustix::process::geteuid().as_raw()
        {
            continue;
        }
        let path = parent.join(name);
        match parent.remove_all(name) {
            Ok(()) => crate::abandoned::removed(format!(
                "removed {}: a staging directory left by a killed restore (process {} on this host, no longer running)",
                path.display(),
                owner.pid
            )),
            Err(e) => tracing::warn!(
                "{} was left by a killed restore (process {}, no longer running) but could not be removed: {e}; remove it by hand",
                path.display(),
                owner.pid
            ),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            remove_if(&self.parent, &self.name, Some(self.id));
        }
    }
}

/// A files source's staging directory for one destination directory: in
/// its deepest existing ancestor (the destination directory itself when it
/// exists), so that every rename into place stays on one filesystem.
struct Beside {
    staging: Staging,
    /// Directories below `staging.parent` still to create at commit.
    missing: Vec<OsString>,
}

/// Where a source is staged.
enum Layout {
    /// The whole tree in one staging directory.
    Tree(Staging),
    /// A files source in place: per destination directory (relative to
    /// `/`), a staging directory beside it.
    Beside(BTreeMap<String, Beside>),
}

/// A tree destination, opened: its parent's handle and its name.
struct TreeDest {
    parent: Dir,
    name: OsString,
    /// A mount point cannot be renamed over: it is staged inside and its
    /// content replaced entry by entry.
    mount: bool,
}

impl TreeDest {
    /// Opens the parent of `dest` (created if missing, 0700 like the rest of
    /// what coffer creates) and finds whether `dest` is a mount point.
    fn open(dest: &Path) -> Result<TreeDest, RestoreError> {
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(RestoreError::Usage(format!(
                "{} cannot be restored into: it has no parent directory; use --target DIR",
                dest.display()
            )));
        };
        let parent =
            Dir::open_path(parent, Some(0o700)).map_err(io_err("open directory", parent))?;
        let here = parent.stat().map_err(io_err("inspect", parent.path()))?;
        let mount = parent
            .stat_at(name)
            .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR && s.st_dev != here.st_dev)
            .unwrap_or(false);
        Ok(TreeDest {
            parent,
            name: name.to_os_string(),
            mount,
        })
    }

    fn path(&self) -> PathBuf {
        self.parent.join(&self.name)
    }

    /// Refuses, before anything is written, a restore of `src` whose staged
    /// copy cannot fit where [`TreeDest::staging`] puts it: the copy is
    /// staged whole while the destination keeps its current content, so an
    /// in-place restore needs room for a second copy. The snapshot's
    /// `bytes_read` (what its files held) is the size of that copy.
    fn check_room(&self, m: &Manifest, src: &SourceRecord) -> Result<(), RestoreError> {
        let (fd, dir) = if self.mount {
            let d = self
                .parent
                .open_dir(&self.name)
                .map_err(io_err("open directory", &self.path()))?;
            let p = self.path();
            (d, p)
        } else {
            let d = self
                .parent
                .try_clone()
                .map_err(io_err("open directory", self.parent.path()))?;
            let p = self.parent.path().to_path_buf();
            (d, p)
        };
        let st = rustix::fs::fstatvfs(&fd)
            .map_err(|e| io_err("find the free space of", &dir)(e.into()))?;
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        let needed = src.bytes_read;
        if available >= needed {
            return Ok(());
        }
        let shown = megabytes;
        Err(RestoreError::NoSpace {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            dest: self.path().display().to_string(),
            staging_dir: dir.display().to_string(),
            needed: shown(needed),
            available: shown(available),
        })
    }

    /// A staging directory beside the destination, or inside it if it is a
    /// mount point.
    fn staging(&self) -> Result<Staging, RestoreError> {
        let holder = if self.mount {
            self.parent
                .open_dir(&self.name)
                .map_err(io_err("open directory", &self.path()))?
        } else {
            self.parent
                .try_clone()
                .map_err(io_err("open directory", self.parent.path()))?
        };
        Staging::new(holder)
    }
}

/// A file source (or a dump written as files) unpacked and authenticated in
/// its staging directory, not yet in place.
struct StagedSource {
    src: SourceRecord,
    snapshot: String,
    plan: Plan,
    layout: Layout,
    dest: Option<TreeDest>,
    entries: Vec<(String, EntryKind)>,
    out: RestoredSource,
    started: Instant,
}

impl StagedSource {
    /// A swap of a whole directory that is not a mount point can be undone.
    fn undoable(&self) -> bool {
        matches!(self.plan, Plan::Swap { .. }) && self.dest.as_ref().is_some_and(|d| !d.mount)
    }

    fn finish(mut self) -> RestoredSource {
        self.out.duration_ms = self.started.elapsed().as_millis() as u64;
        self.out
    }

    /// Swaps the staged tree into place, keeping the previous content.
    fn commit_swap(mut self) -> Result<(Swapped, RestoredSource), RestoreError> {
        let (Some(dest), Layout::Tree(staging)) = (&self.dest, &mut self.layout) else {
            unreachable!("only tree swaps are undoable")
        };
        let old_id = dest
            .parent
            .stat_at(&dest.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        let existed = old_id.is_some();
        let flags = if existed {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        let here = dest
            .parent
            .stat_at(&staging.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        if here != Some(staging.id) {
            staging.keep = true;
            return Err(RestoreError::Changed {
                path: dest.parent.path().display().to_string(),
                what: format!("the staging directory {}", staging.name),
            });
        }
        dest.parent
            .rename(&staging.name, &dest.parent, &dest.name, flags)
            .map_err(io_err("swap the restored copy into place at", &dest.path()))?;
        // From here the staging name holds the old content (or nothing),
        // and the swap record is in charge of it.
        staging.keep = true;
        // The names were looked up again for the rename: check that they
        // led to what they did a moment before.
        let now_dest = dest
            .parent
            .stat_at(&dest.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        let now_old = dest
            .parent
            .stat_at(&staging.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        if now_dest != Some(staging.id) || (existed && now_old != old_id) {
            return Err(RestoreError::Changed {
                path: dest.parent.path().display().to_string(),
                what: format!(
                    "{} or the staging directory {}",
                    dest.name.to_string_lossy(),
                    staging.name
                ),
            });
        }
        let sw = Swapped {
            parent: dest
                .parent
                .try_clone()
                .map_err(io_err("open directory", dest.parent.path()))?,
            dest_name: dest.name.clone(),
            old_name: staging.name.clone(),
            existed,
            old_id,
            new_id: staging.id,
        };
        let out = RestoredSource {
            duration_ms: self.started.elapsed().as_millis() as u64,
            ..std::mem::replace(&mut self.out, RestoredSource::new(&self.src, String::new()))
        };
        Ok((sw, out))
    }

    /// Commits what cannot be swapped whole: into a mount point, or entry by
    /// entry (files sources and `--include` in place).
    fn commit_in_place(self) -> Result<RestoredSource, RestoreError> {
        let at = Where {
            snapshot: self.snapshot.clone(),
            source: self.src.name.clone(),
        };
        match (&self.plan, &self.layout, &self.dest) {
            (Plan::Swap { .. }, Layout::Tree(staging), Some(dest)) => {
                replace_contents(staging, dest)?
            }
            (Plan::PerEntry { .. }, Layout::Tree(staging), Some(dest)) => {
                commit_tree_entries(&staging.dir, dest, &self.entries, &at)?
            }
            (Plan::Files { .. }, Layout::Beside(dirs), None) => {
                commit_beside(dirs, &self.entries, &at)?
            }
            _ => unreachable!("plan and layout agree"),
        }
        Ok(self.finish())
    }
}

/// Where a source goes and how it is committed.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Unpack into a staging directory beside `dest`, then swap it in whole.
    Swap { dest: PathBuf },
    /// Unpack into staging beside `root`, then rename each entry to
    /// `root/<path>` (`--include` in place). Without `force`, an existing
    /// file at any of those paths stops the restore.
    PerEntry { root: PathBuf, force: bool },
    /// A files source in place: each file staged beside its destination and
    /// renamed into place; only the files of `allowed` (the source's paths in
    /// the current config, without the leading `/`).
    Files {
        force: bool,
        allowed: BTreeSet<String>,
    },
}

/// Where a directory or files source goes: under `--target`, or in place at
/// the paths the current config gives it. The path recorded in the snapshot
/// is never trusted for that: any host that shares the key could have
/// written it (issue 10). Returns the plan and, if the configured path is
/// not the recorded one, a warning saying so.
fn plan_destination(
    m: &Manifest,
    src: &SourceRecord,
    opts: &RestoreOptions,
    config: &crate::config::Config,
) -> Result<(Plan, Option<String>), RestoreError> {
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
        return Ok((Plan::Swap { dest }, None));
    }
    let cfg = config
        .source(&src.name)
        .filter(|c| c.kind.as_str() == kind)
        .ok_or_else(|| {
            RestoreError::Usage(format!(
                "source {} of snapshot {} (taken on {}) is not a {kind} source in the current config, so it has no configured path to go back to; restore it with --target DIR",
                src.name, m.id, m.host
            ))
        })?;
    if kind == "files" {
        let allowed = cfg
            .paths
            .iter()
            .flatten()
            .map(|p| {
                absolute(p)
                    .display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect();
        return Ok((
            Plan::Files {
                force: opts.force,
                allowed,
            },
            None,
        ));
    }
    let path = absolute(cfg.path.as_deref().ok_or_else(|| {
        RestoreError::Usage(format!(
            "source {} has no path in the current config; restore it with --target DIR",
            src.name
        ))
    })?);
    let warning = match &src.origin {
        Some(o) if Path::new(o) == path => None,
        recorded => Some(format!(
            "source {}: snapshot {} (taken on {}) recorded its path as {}; restoring to {}, its path in the current config",
            src.name,
            m.id,
            m.host,
            recorded.as_deref().unwrap_or("(nothing)"),
            path.display()
        )),
    };
    if !opts.force && !opts.dry_run && is_non_empty(&path) {
        return Err(RestoreError::NeedsForce {
            path: path.display().to_string(),
        });
    }
    let plan = if opts.include.is_empty() {
        Plan::Swap { dest: path }
    } else {
        Plan::PerEntry {
            root: path,
            force: opts.force,
        }
    };
    Ok((plan, warning))
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
        Plan::Files { .. } => Path::new("/"),
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
        let mut stored_flagged = Vec::new();
        // Flagged files this dry run would write, by archive path, for the
        // hard links to them.
        let mut flagged_here = BTreeMap::new();
        let consumed = (|| -> Result<(), RestoreError> {
            let dec = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| classify(e, &at, &index_ref.object))?;
            let mut idx = IndexReader::new(BufReader::new(dec));
            while let Some(e) = idx
                .next_stored()
                .map_err(|e| classify(e, &at, &index_ref.object))?
            {
                let flagged = e.kind == EntryKind::File && e.error.is_some();
                if flagged {
                    stored_flagged.push(e.path.clone());
                }
                if !included(&include, &e.path) {
                    continue;
                }
                if let Plan::Files { allowed, .. } = &plan
                    && !allowed.contains(&e.path)
                {
                    out.not_configured.push(format!("/{}", e.path));
                    continue;
                }
                let dest = plan_root(&plan).join(&e.path);
                if let (true, Some(why)) = (flagged, &e.error) {
                    out.flag(&dest, why);
                    flagged_here.insert(e.path.clone(), why.clone());
                } else if e.kind == EntryKind::Hardlink
                    && let Some(why) = e.target.as_ref().and_then(|t| flagged_here.get(t))
                {
                    // The same bytes as the file it links to.
                    out.flag(&dest, why);
                }
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
        out.set_not_stored(&src, &stored_flagged);
        Ok(out)
    })
    .await
    .map_err(|e| RestoreError::Usage(format!("dry run task failed: {e}")))?
}

/// Refuses, before anything is written, a files source restore whose
/// staged copies cannot fit: each file is staged whole beside its
/// destination before any file is replaced. The files may live on several
/// filesystems and only the source's total (`bytes_read`) is known before
/// reading, so this refuses only when all those filesystems together have
/// less room than the total: never a restore that fits. (Looking up free
/// space by path is harmless: nothing is written through these paths.)
fn check_files_room(
    m: &Manifest,
    src: &SourceRecord,
    allowed: &BTreeSet<String>,
) -> Result<(), RestoreError> {
    let mut filesystems: BTreeMap<u64, (u64, PathBuf)> = BTreeMap::new();
    for rel in allowed {
        let mut dir = Path::new("/").join(rel);
        while dir.pop() {
            if let Ok(st) = rustix::fs::statvfs(&dir) {
                filesystems
                    .entry(st.f_fsid)
                    .or_insert((st.f_bavail.saturating_mul(st.f_frsize), dir));
                break;
            }
        }
    }
    let available: u64 = filesystems.values().map(|(n, _)| *n).sum();
    if filesystems.is_empty() || available >= src.bytes_read {
        return Ok(());
    }
    Err(RestoreError::NoSpaceForFiles {
        snapshot: m.id.clone(),
        source_name: src.name.clone(),
        dirs: filesystems
            .values()
            .map(|(_, d)| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        needed: megabytes(src.bytes_read),
        available: megabytes(available),
    })
}

/// A size for messages: `812.4 MB (812400000 bytes)`.
fn megabytes(n: u64) -> String {
    format!("{:.1} MB ({n} bytes)", n as f64 / 1e6)
}

/// Unpacks one file source into fresh staging directories beside its
/// destinations and authenticates all of it. Changes no destination.
fn stage_source(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    plan: Plan,
    include: &Option<GlobSet>,
) -> Result<StagedSource, RestoreError> {
    let started = Instant::now();
    let (layout, dest, allowed) = match &plan {
        Plan::Swap { dest: d } | Plan::PerEntry { root: d, .. } => {
            let dest = TreeDest::open(d)?;
            // With --include only part is restored: the whole source's size
            // would refuse restores that fit.
            if include.is_none() {
                dest.check_room(m, src)?;
            }
            (Layout::Tree(dest.staging()?), Some(dest), None)
        }
        Plan::Files { allowed, .. } => {
            check_files_room(m, src, allowed)?;
            (Layout::Beside(BTreeMap::new()), None, Some(allowed.clone()))
        }
    };
    let mut ex = Extractor::new(layout, m, src, include.clone(), allowed);
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
    let force = match &plan {
        Plan::Swap { .. } => true,
        Plan::PerEntry { force, .. } | Plan::Files { force, .. } => *force,
    };
    if !force {
        for (rel, kind) in ex.committed.iter().filter(|(_, k)| *k != EntryKind::Dir) {
            let (pr, name) = split_rel(rel);
            let exists = match (&ex.layout, &dest) {
                (Layout::Tree(_), Some(d)) => d
                    .parent
                    .open_dir(&d.name)
                    .and_then(|r| r.open_rel(pr))
                    .map(|p| p.exists(name))
                    .unwrap_or(false),
                (Layout::Beside(dirs), _) => dirs
                    .get(pr)
                    .is_some_and(|b| b.missing.is_empty() && b.staging.parent.exists(name)),
                _ => false,
            };
            if exists {
                let _ = kind;
                return Err(RestoreError::NeedsForce {
                    path: plan_root(&plan).join(rel).display().to_string(),
                });
            }
        }
    }
    let mut out = RestoredSource::new(src, plan_root(&plan).display().to_string());
    (out.files, out.dirs, out.links, out.bytes) = (ex.files, ex.dirs, ex.links, ex.bytes);
    out.set_not_stored(src, &ex.stored_flagged);
    for (rel, why) in &ex.flagged {
        out.flag(&plan_root(&plan).join(rel), why);
    }
    out.not_configured = std::mem::take(&mut ex.not_configured);
    let entries = std::mem::take(&mut ex.committed);
    Ok(StagedSource {
        src: src.clone(),
        snapshot: m.id.clone(),
        plan,
        layout: ex.into_layout(),
        dest,
        entries,
        out,
        started,
    })
}

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
fn split_rel(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
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
    let td = TreeDest::open(&dest)?;
    let staging = td.staging()?;
    let mut bytes = 0;
    for n in &names {
        let path = dest.join(n);
        let mut f = staging
            .dir
            .create_file(n, 0o600)
            .map_err(io_err("create", &path))?;
        bytes += dump_stream(repo, m, src, Some(n.clone()), &mut f)?;
        f.sync_all().map_err(io_err("fsync", &path))?;
    }
    staging
        .dir
        .chmod(0o755)
        .map_err(io_err("set mode of", &dest))?;
    let mut out = RestoredSource::new(src, dest.display().to_string());
    out.files = names.len() as u64;
    out.bytes = bytes;
    Ok(StagedSource {
        src: src.clone(),
        snapshot: m.id.clone(),
        plan: Plan::Swap { dest },
        layout: Layout::Tree(staging),
        dest: Some(td),
        entries: Vec::new(),
        out,
        started,
    })
}

/// For a mount point: moves what it holds aside, moves the staged tree's
/// entries in, then deletes the old entries. Not atomic like a rename, but
/// every step is a rename within one filesystem, by handle, and until the
/// last step the old data is still there (in `dest/.coffer-old-*`).
fn replace_contents(staging: &Staging, dest: &TreeDest) -> Result<(), RestoreError> {
    let path = dest.path();
    let d = &staging.parent;
    let (old_name, old) = d
        .make_staging(&crate::abandoned::old_prefix())
        .map_err(io_err("create a directory in", &path))?;
    for e in d.entries().map_err(io_err("list", &path))? {
        if e == staging.name.as_str() || e == old_name.as_str() {
            continue;
        }
        d.rename(&e, &old, &e, RenameFlags::empty())
            .map_err(io_err("move aside", &d.join(&e)))?;
    }
    for e in staging
        .dir
        .entries()
        .map_err(io_err("list", &d.join(&staging.name)))?
    {
        staging
            .dir
            .rename(&e, d, &e, RenameFlags::empty())
            .map_err(io_err("move into place", &d.join(&e)))?;
    }
    if let Ok(st) = staging.dir.stat() {
        let _ = d.chmod(st.st_mode & 0o7777);
        let _ = d.set_mtime(st.st_mtime, st.st_mtime_nsec as u32);
    }
    let _ = d.remove_all(&old_name);
    Ok(())
}

/// The error for a path a per-entry commit refuses to write through.
fn refuse(at: &Where, p: &Path, why: &str) -> RestoreError {
    RestoreError::Contained {
        snapshot: at.snapshot.clone(),
        source_name: at.source.clone(),
        path: p.display().to_string(),
        reason: format!("{why}; refusing to write through it (restore with --target instead)"),
    }
}

/// Opens directory `name` in `d`, creating it 0755 if missing; a symlink or
/// non-directory there is refused, never followed.
fn ensure_dir(d: &Dir, name: &OsStr, at: &Where) -> Result<Dir, RestoreError> {
    match d.open_dir(name) {
        Ok(x) => return Ok(x),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            return Err(refuse(
                at,
                &d.join(name),
                "it is a symlink or not a directory",
            ));
        }
        Err(e) => return Err(io_err("open directory", &d.join(name))(e)),
    }
    match d.mkdir(name, 0o755) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err("create directory", &d.join(name))(e));
        }
        _ => {}
    }
    let x = d
        .open_dir(name)
        .map_err(|_| refuse(at, &d.join(name), "it is a symlink or not a directory"))?;
    // 0755 whatever the umask: coffer runs under umask 077 (its
    // repositories are private), and an application must still reach its
    // restored files.
    if x.stat().map(|s| s.st_uid).ok() == Some(rustix::process::geteuid().as_raw()) {
        x.chmod(0o755)
            .map_err(io_err("set mode of", &d.join(name)))?;
    }
    Ok(x)
}

/// `--include` in place: renames each staged entry to the same path below
/// the destination (directories are created as needed). Every path is
/// checked first, before anything is created or moved: an existing symlink
/// (or non-directory) on the way, or as the root itself, is refused rather
/// than followed; then every step is done by handle, never through a
/// symlink, so a change made meanwhile is refused too.
fn commit_tree_entries(
    staging: &Dir,
    dest: &TreeDest,
    entries: &[(String, EntryKind)],
    at: &Where,
) -> Result<(), RestoreError> {
    let root_path = dest.path();
    match dest.parent.stat_at(&dest.name) {
        Ok(s) if s.st_mode & libc::S_IFMT != libc::S_IFDIR => {
            return Err(refuse(
                at,
                &root_path,
                "the destination is a symlink or not a directory",
            ));
        }
        _ => {}
    }
    let root = ensure_dir(&dest.parent, &dest.name, at)?;
    for (rel, kind) in entries {
        let comps: Vec<&str> = rel.split('/').collect();
        let mut cur = Some(root.try_clone().map_err(io_err("open", &root_path))?);
        let mut p = root_path.clone();
        for (i, c) in comps.iter().enumerate() {
            let Some(d) = cur.take() else { break };
            p.push(c);
            let last = i + 1 == comps.len();
            let Ok(md) = d.stat_at(c) else { break };
            let ft = md.st_mode & libc::S_IFMT;
            if ft == libc::S_IFLNK && (!last || *kind == EntryKind::Dir) {
                return Err(refuse(at, &p, "it is a symlink"));
            }
            if ft != libc::S_IFDIR && (!last || *kind == EntryKind::Dir) {
                return Err(refuse(at, &p, "it is not a directory"));
            }
            if last && ft == libc::S_IFDIR && *kind != EntryKind::Dir {
                return Err(refuse(
                    at,
                    &p,
                    "a directory stands where the snapshot has a file",
                ));
            }
            if !last {
                cur = d.open_dir(c).ok();
            }
        }
    }
    let ensure_all = |rel: &str| -> Result<Dir, RestoreError> {
        let mut d = root.try_clone().map_err(io_err("open", &root_path))?;
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            d = ensure_dir(&d, OsStr::new(c), at)?;
        }
        Ok(d)
    };
    for (rel, kind) in entries {
        if *kind == EntryKind::Dir {
            ensure_all(rel)?;
            continue;
        }
        let (pr, name) = split_rel(rel);
        let to = ensure_all(pr)?;
        if to.is_dir_at(name) {
            return Err(refuse(
                at,
                &to.join(name),
                "a directory stands where the snapshot has a file",
            ));
        }
        let from = staging
            .open_rel(pr)
            .map_err(io_err("open staged directory", &staging.join(pr)))?;
        from.rename(name, &to, name, RenameFlags::empty())
            .map_err(io_err("move into place", &to.join(name)))?;
    }
    Ok(())
}

/// A files source in place: renames each staged file from the staging
/// directory beside its destination into place (creating the destination's
/// missing directories, 0755, by handle).
fn commit_beside(
    dirs: &BTreeMap<String, Beside>,
    entries: &[(String, EntryKind)],
    at: &Where,
) -> Result<(), RestoreError> {
    let mut opened: BTreeMap<&str, Dir> = BTreeMap::new();
    for (rel, _) in entries {
        let (pr, name) = split_rel(rel);
        let Some(b) = dirs.get(pr) else {
            unreachable!("every staged file has its staging directory")
        };
        if !opened.contains_key(pr) {
            let mut d = b
                .staging
                .parent
                .try_clone()
                .map_err(io_err("open", b.staging.parent.path()))?;
            for c in &b.missing {
                d = ensure_dir(&d, c, at)?;
            }
            opened.insert(pr, d);
        }
        let to = &opened[pr];
        if to.is_dir_at(name) {
            return Err(refuse(
                at,
                &to.join(name),
                "a directory stands where the snapshot has a file",
            ));
        }
        b.staging
            .dir
            .rename(name, to, name, RenameFlags::empty())
            .map_err(io_err("move into place", &to.join(name)))?;
    }
    Ok(())
}

/// Unpacks a tar stream into staging, refusing anything that would leave
/// it. Every file is created by handle in a directory opened without
/// following symlinks.
struct Extractor {
    layout: Layout,
    snapshot: String,
    source: String,
    include: Option<GlobSet>,
    /// A files source in place restores only its configured paths.
    allowed: Option<BTreeSet<String>>,
    as_root: bool,
    dirs: u64,
    files: u64,
    links: u64,
    bytes: u64,
    /// Directories (relative paths, "." for the root) whose metadata is set
    /// at the end.
    dir_meta: Vec<(String, IndexEntry)>,
    /// What was staged, in order, for per-entry commits.
    committed: Vec<(String, EntryKind)>,
    /// Files of the snapshot left out because the current config no longer
    /// lists them.
    not_configured: Vec<String>,
    /// Archive paths of the files stored with a problem (a torn read),
    /// restored or not.
    stored_flagged: Vec<String>,
    /// Those of them restored, with the snapshot's reason.
    flagged: Vec<(String, String)>,
    writer: FileWriter,
}

/// Work for the writer thread: the extractor parses, checks paths, creates
/// and hashes; the writer copies bytes into the page cache and sets
/// metadata, so the two halves run on both cores. It gets open files, never
/// paths (the path is for messages only).
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
                        dirfd::set_metadata(
                            &f,
                            as_root,
                            ie.uid,
                            ie.gid,
                            ie.mode,
                            (ie.mtime, ie.mtime_nsec),
                        )
                        .map_err(io_err("set mode of", &p))?;
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
    fn new(
        layout: Layout,
        m: &Manifest,
        src: &SourceRecord,
        include: Option<GlobSet>,
        allowed: Option<BTreeSet<String>>,
    ) -> Self {
        Extractor {
            layout,
            snapshot: m.id.clone(),
            source: src.name.clone(),
            include,
            allowed,
            as_root: rustix::process::geteuid().is_root(),
            dirs: 0,
            files: 0,
            links: 0,
            bytes: 0,
            dir_meta: Vec::new(),
            committed: Vec::new(),
            not_configured: Vec::new(),
            stored_flagged: Vec::new(),
            flagged: Vec::new(),
            writer: FileWriter::start(),
        }
    }

    fn into_layout(mut self) -> Layout {
        let _ = self.writer.finish();
        std::mem::replace(&mut self.layout, Layout::Beside(BTreeMap::new()))
    }

    fn contained(&self, path: &str, reason: impl Into<String>) -> RestoreError {
        RestoreError::Contained {
            snapshot: self.snapshot.clone(),
            source_name: self.source.clone(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// The staging directory that holds `rel`, and its name there. In a
    /// tree, every parent is a real directory inside the staging root
    /// (created if missing, never a symlink); for a files source in place,
    /// the staging directory beside its destination.
    fn locate(&mut self, rel: &str) -> Result<(Dir, String), RestoreError> {
        let (pr, name) = split_rel(rel);
        match &mut self.layout {
            Layout::Tree(st) => {
                let mut d = st.dir.try_clone().map_err(io_err("open", st.dir.path()))?;
                for c in pr.split('/').filter(|c| !c.is_empty()) {
                    d = match d.open_dir(c) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            d.mkdir(c, 0o700)
                                .map_err(io_err("create directory", &d.join(c)))?;
                            d.open_dir(c)
                                .map_err(io_err("open directory", &d.join(c)))?
                        }
                        Err(_) => {
                            return Err(self.contained(
                                rel,
                                format!(
                                    "its parent {c:?} is a symlink or file; refusing to write through it"
                                ),
                            ));
                        }
                    };
                }
                Ok((d, name.to_string()))
            }
            Layout::Beside(dirs) => {
                if !dirs.contains_key(pr) {
                    let (parent, missing) = open_existing_ancestor(&Path::new("/").join(pr))?;
                    dirs.insert(
                        pr.to_string(),
                        Beside {
                            staging: Staging::new(parent)?,
                            missing,
                        },
                    );
                }
                let d = &dirs[pr].staging.dir;
                Ok((
                    d.try_clone().map_err(io_err("open", d.path()))?,
                    name.to_string(),
                ))
            }
        }
    }

    /// Where `rel` was staged, if it was.
    fn find(&self, rel: &str) -> Option<(Dir, String)> {
        let (pr, name) = split_rel(rel);
        let d = match &self.layout {
            Layout::Tree(st) => st.dir.open_rel(pr).ok()?,
            Layout::Beside(dirs) => dirs.get(pr)?.staging.dir.try_clone().ok()?,
        };
        Some((d, name.to_string()))
    }

    fn run(
        &mut self,
        s: &SourceStreams,
        mut tar: TarStream,
        mut index: IndexStream,
    ) -> Result<(), RestoreError> {
        let filtering = self.include.is_some() || self.allowed.is_some();
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
            if kind == EntryKind::File && ie.error.is_some() {
                self.stored_flagged.push(rel.clone());
            }
            let mut wanted = included(&self.include, &rel);
            if wanted
                && let Some(a) = &self.allowed
                && !a.contains(&rel)
            {
                self.not_configured.push(format!("/{rel}"));
                wanted = false;
            }
            if !wanted {
                // Still read the data so the stream authenticates to its end.
                io::copy(&mut entry, &mut io::sink()).map_err(|e| s.archive_error(e))?;
                continue;
            }
            if matches!(self.layout, Layout::Beside(_)) && kind == EntryKind::Dir {
                return Err(self.contained(
                    &rel,
                    "a files source holds files, not directories; refusing it in place (restore with --target instead)",
                ));
            }
            match kind {
                EntryKind::Dir => {
                    if rel != "." {
                        let (d, n) = self.locate(&rel)?;
                        match d.stat_at(&n) {
                            Ok(md) if md.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                            Ok(_) => {
                                return Err(self.contained(&rel, "a non-directory stands there"));
                            }
                            Err(_) => d
                                .mkdir(&n, 0o700)
                                .map_err(io_err("create directory", &d.join(&n)))?,
                        }
                        self.committed.push((rel.clone(), kind));
                    }
                    self.dirs += 1;
                    self.dir_meta.push((rel.clone(), ie));
                }
                EntryKind::File => {
                    let (d, n) = self.locate(&rel)?;
                    let p = d.join(&n);
                    let f = match d.create_file(&n, 0o600) {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            d.unlink(&n).map_err(io_err("replace", &p))?;
                            d.create_file(&n, 0o600)
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
                    if let Some(why) = &ie.error {
                        self.flagged.push((rel.clone(), why.clone()));
                    }
                    self.writer.send(WriteOp::Close(ie, self.as_root))?;
                    self.files += 1;
                    self.bytes += n;
                    self.committed.push((rel.clone(), kind));
                }
                EntryKind::Symlink => {
                    let (d, n) = self.locate(&rel)?;
                    let target = ie.target.clone().unwrap_or_default();
                    let _ = d.unlink(&n);
                    d.symlink(&target, &n)
                        .map_err(io_err("create link", &d.join(&n)))?;
                    if self.as_root {
                        let _ = d.lchown_at(&n, ie.uid, ie.gid);
                    }
                    let _ = d.set_mtime_at(&n, ie.mtime, ie.mtime_nsec);
                    self.links += 1;
                    self.committed.push((rel.clone(), kind));
                }
                EntryKind::Hardlink => {
                    let target = ie.target.clone().unwrap_or_default();
                    let trel = safe_path(target.as_bytes()).map_err(|r| self.contained(&rel, r))?;
                    let found = self.find(&trel).filter(|(td, tn)| {
                        td.stat_at(tn)
                            .map(|m| m.st_mode & libc::S_IFMT == libc::S_IFREG)
                            .unwrap_or(false)
                    });
                    let Some((td, tn)) = found else {
                        // The first copy was not restored (filtered out by
                        // --include or the config): nothing to link to.
                        if filtering {
                            continue;
                        }
                        return Err(self.contained(
                            &rel,
                            format!("hard link to {trel:?}, which is not a restored file"),
                        ));
                    };
                    let (d, n) = self.locate(&rel)?;
                    let _ = d.unlink(&n);
                    match d.hard_link(&td, &tn, &n) {
                        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                            // Two destinations of a files source on two
                            // filesystems: a copy, owner set before mode.
                            self.copy_file(&td, &tn, &d, &n, &ie)?
                        }
                        other => other.map_err(io_err("create hard link", &d.join(&n)))?,
                    }
                    // The same bytes as the file it links to: as (in)consistent.
                    if let Some((_, why)) = self.flagged.iter().find(|(r, _)| *r == trel) {
                        let why = why.clone();
                        self.flagged.push((rel.clone(), why));
                    }
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

    /// Copies staged file `from/fname` to `to/name`, with `ie`'s owner (as
    /// root), then mode and mtime.
    fn copy_file(
        &mut self,
        from: &Dir,
        fname: &str,
        to: &Dir,
        name: &str,
        ie: &IndexEntry,
    ) -> Result<(), RestoreError> {
        let p = to.join(name);
        let mut r = from
            .open_file(fname)
            .map_err(io_err("open", &from.join(fname)))?;
        let mut w = to.create_file(name, 0o600).map_err(io_err("create", &p))?;
        io::copy(&mut r, &mut w).map_err(io_err("write", &p))?;
        dirfd::set_metadata(
            &w,
            self.as_root,
            ie.uid,
            ie.gid,
            ie.mode,
            (ie.mtime, ie.mtime_nsec),
        )
        .map_err(io_err("set mode of", &p))
    }

    /// Directory owners, modes and mtimes last, deepest first: writing into
    /// a directory changes its mtime, and a read-only mode would stop us.
    /// Each is opened from the private staging root without following
    /// symlinks.
    fn apply_dir_metadata(&mut self) -> Result<(), RestoreError> {
        let Layout::Tree(st) = &self.layout else {
            return Ok(());
        };
        for (rel, e) in self.dir_meta.iter().rev() {
            let d = st
                .dir
                .open_rel(rel)
                .map_err(io_err("open staged directory", &st.dir.join(rel)))?;
            dirfd::set_metadata(
                d.as_fd(),
                self.as_root,
                e.uid,
                e.gid,
                e.mode,
                (e.mtime, e.mtime_nsec),
            )
            .map_err(io_err("set mode of", d.path()))?;
        }
        Ok(())
    }
}

/// The deepest existing directory on the way to `p`, opened by
/// [`Dir::open_path`], and the names still missing below it.
fn open_existing_ancestor(p: &Path) -> Result<(Dir, Vec<OsString>), RestoreError> {
    let mut missing = Vec::new();
    let mut cur = p;
    loop {
        match Dir::open_path(cur, None) {
            Ok(d) => {
                missing.reverse();
                return Ok((d, missing));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match (cur.parent(), cur.file_name()) {
                    (Some(parent), Some(name)) => {
                        missing.push(name.to_os_string());
                        cur = parent;
                    }
                    _ => return Err(io_err("open directory", p)(e)),
                }
            }
            Err(e) => return Err(io_err("open directory", cur)(e)),
        }
    }
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

impl DrillReport {
    /// A check that failed on a restored copy is an integrity failure; a
    /// drill that could not run (every failed source has an error, no
    /// failed check) is operational.
    pub fn outcome(&self) -> crate::Outcome {
        use crate::Outcome;
        if self.ok {
            Outcome::Ok
        } else if self
            .sources
            .iter()
            .any(|d| !d.failures.is_empty() && d.error.is_none())
        {
            Outcome::Failed(ErrorKind::Integrity)
        } else if self.sources.iter().all(|d| d.ok || d.error.is_some()) {
            Outcome::Failed(ErrorKind::Operational)
        } else {
            Outcome::Failed(ErrorKind::Integrity)
        }
    }
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
        if !is_dump_source(&src.kind) || !crate::source::has_drill(kind) {
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

#[cfg(test)]
mod verdict_tests {
    use super::*;
    use crate::Outcome;
    use crate::source::DrillResult;

    fn drilled(ok: bool, failures: &[&str], error: Option<&str>) -> DrillResult {
        DrillResult {
            name: "db".into(),
            kind: "postgres".into(),
            ok,
            scratch: String::new(),
            restore_ms: 0,
            checks: Vec::new(),
            failures: failures.iter().map(|f| f.to_string()).collect(),
            error: error.map(str::to_string),
        }
    }

    fn drill(sources: Vec<DrillResult>) -> DrillReport {
        DrillReport {
            ok: sources.iter().all(|d| d.ok),
            snapshot: "s".into(),
            sources,
            skipped: Vec::new(),
        }
    }

    #[test]
    fn drill_verdicts() {
        assert_eq!(drill(vec![]).outcome(), Outcome::Ok);
        assert_eq!(drill(vec![drilled(true, &[], None)]).outcome(), Outcome::Ok);
        // A restored copy that fails its checks: the backup is bad.
        assert_eq!(
            drill(vec![
                drilled(true, &[], None),
                drilled(false, &["rows"], None)
            ])
            .outcome(),
            Outcome::Failed(ErrorKind::Integrity)
        );
        // The drill could not run (no scratch server, say): operational.
        assert_eq!(
            drill(vec![
                drilled(true, &[], None),
                drilled(false, &[], Some("refused"))
            ])
            .outcome(),
            Outcome::Failed(ErrorKind::Operational)
        );
        // Failed without saying why: not provably operational.
        assert_eq!(
            drill(vec![drilled(false, &[], None)]).outcome(),
            Outcome::Failed(ErrorKind::Integrity)
        );
    }

    #[test]
    fn restore_with_skipped_sources_is_partial() {
        let mut r = RestoreReport {
            snapshot: "s".into(),
            host: "h".into(),
            time: "t".into(),
            dry_run: false,
            warnings: Vec::new(),
            sources: Vec::new(),
            skipped: Vec::new(),
            cleaned: Vec::new(),
        };
        assert_eq!(r.outcome(), Outcome::Ok);
        r.skipped.push("db".into());
        assert_eq!(r.outcome(), Outcome::Partial);
    }
}
