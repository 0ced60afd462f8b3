//! `coffer restore` and `coffer dump`: read a source back out of a snapshot.
//!
//! The archive is downloaded, authenticated and decrypted on one thread and
//! decompressed and unpacked on another, in step with the source's index,
//! which must agree entry by entry: [`crate::read`] makes every check, and
//! this module decides only what is written where.
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
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::archive::{UnsafeName, safe_path};
use crate::crypto::ObjectKind;
use crate::dirfd::{self, Dir};
use crate::manifest::{EntryKind, IndexEntry, Manifest, SourceRecord, SourceStatus};
use crate::outcome::ErrorKind;
use crate::read::{
    Entry, Fault, Flow, ObjectStream, ReadError, SourceStreams, Where, classify, is_dump_source,
    read_lines,
};
use crate::repo::Repository;
use crate::store::StoreError;
use rustix::fs::RenameFlags;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// `coffer dump` of a whole source with stdout on a terminal.
    #[error(
        "coffer dump writes a binary stream; pipe it, e.g. `coffer dump SNAPSHOT SOURCE | tar -tvf -`"
    )]
    DumpToTerminal,
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
    /// `coffer dump SNAPSHOT SOURCE PATH` with a PATH no entry can have.
    #[error("bad PATH {path:?}: {reason}")]
    BadPath { path: String, reason: UnsafeName },
    #[error("bad --include pattern {0:?}: {1}")]
    BadInclude(String, String),
    /// `coffer dump` of a path that holds no bytes.
    #[error("{path:?} is a {what} in source {source_name}, not a file with bytes to dump")]
    NotAFile {
        path: String,
        what: &'static str,
        source_name: String,
    },
    #[error(
        "source {source_name} of snapshot {snapshot} holds the stream(s) {}; {want:?} is not one of them",
        .streams.join(", ")
    )]
    NoSuchStream {
        snapshot: String,
        source_name: String,
        streams: Vec<String>,
        want: String,
    },
    #[error("{0} cannot be restored into: it has no parent directory; use --target DIR")]
    NoParent(String),
    /// A manifest's source type that this build does not know.
    #[error("source {source_name} is of type {kind}, which this build cannot restore yet")]
    UnknownKind { source_name: String, kind: String },
    #[error(
        "--to-database restores one database source: name it with --only (database sources in this snapshot: {})",
        .databases.join(", ")
    )]
    ToDatabaseNeedsOne { databases: Vec<String> },
    /// A restore in place of a source the config no longer has.
    #[error(
        "source {source_name} of snapshot {snapshot} (taken on {host}) is not a {kind} source in the current config, so it has no configured path to go back to; restore it with --target DIR"
    )]
    NotConfigured {
        snapshot: String,
        source_name: String,
        host: String,
        kind: String,
    },
    #[error("source {0} has no path in the current config; restore it with --target DIR")]
    NoConfiguredPath(String),
    /// A bug: a thread of coffer's own panicked or went away. Operational,
    /// never a usage error: the user did nothing wrong.
    #[error("internal error: {0}; nothing more was changed. Please report this")]
    Internal(String),
    /// The stored data failed a check of docs/FORMAT.md section 11, or
    /// could not be read.
    #[error(transparent)]
    Read(ReadError),
    #[error("snapshot {snapshot}, source {source_name}: {path}: {reason}")]
    Contained {
        snapshot: String,
        source_name: String,
        path: String,
        reason: Refusal,
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
            RestoreError::Contained { .. } => ErrorKind::Integrity,
            RestoreError::Read(e) => e.kind(),
            RestoreError::UnknownSource { .. }
            | RestoreError::NeedsForce { .. }
            | RestoreError::BadInclude(..)
            | RestoreError::BadPath { .. }
            | RestoreError::NoSuchFile { .. }
            | RestoreError::DumpToTerminal
            | RestoreError::NotAFile { .. }
            | RestoreError::NoSuchStream { .. }
            | RestoreError::NoParent(_)
            | RestoreError::UnknownKind { .. }
            | RestoreError::ToDatabaseNeedsOne { .. }
            | RestoreError::NotConfigured { .. }
            | RestoreError::NoConfiguredPath(_) => ErrorKind::Usage,
            RestoreError::Internal(_) => ErrorKind::Operational,
            RestoreError::Store(s) => s.kind(),
            RestoreError::Io { .. }
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

mod chunks;
mod commit;
mod drill;
mod dump;
mod extract;
mod plan;
mod staging;
mod tree;

pub use chunks::*;
use commit::*;
pub use drill::*;
pub use dump::*;
use extract::*;
pub use plan::*;
use staging::*;
use tree::*;

// --------------------------------------------------------------- reading

/// Why a restore refuses to write an entry where it would go (docs/FORMAT.md
/// section 11 step 6, and what stands in the way of a restore in place).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Name(UnsafeName),
    #[error("its parent {0:?} is a symlink or file; refusing to write through it")]
    ParentNotDir(String),
    #[error(
        "a files source holds files, not directories; refusing it in place (restore with --target instead)"
    )]
    DirInPlace,
    #[error("a non-directory stands there")]
    NotADirectory,
    #[error("hard link to {0:?}, which is not a restored file")]
    HardLinkTarget(String),
    #[error("{0}; refusing to write through it (restore with --target instead)")]
    InPlace(&'static str),
}

/// A read failure keeps its message and its exit code as a restore error;
/// a reading thread that died is a bug of coffer's own.
impl From<ReadError> for RestoreError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Thread(m) => RestoreError::Internal(m),
            e => RestoreError::Read(e),
        }
    }
}

// --------------------------------------------------------------- restore

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
            return Err(RestoreError::ToDatabaseNeedsOne {
                databases: dbs.iter().map(|d| d.to_string()).collect(),
            });
        }
    }
    // Check every destination before touching any.
    let mut plans = Vec::new();
    let mut db_plans = Vec::new();
    let mut dump_file_plans = Vec::new();
    for src in selected {
        if src.status == SourceStatus::Failed {
            if !opts.only.is_empty() {
                return Err(RestoreError::Read(ReadError::SourceFailed {
                    snapshot: m.id.clone(),
                    source_name: src.name.clone(),
                    reason: src.error.clone().unwrap_or_default(),
                }));
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
                return Err(RestoreError::NeedsForce {
                    path: dest.display().to_string(),
                });
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
                Err(crate::source::SourceError::NeedsForce(why)) if opts.dry_run && !opts.force => {
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
        .map_err(|e| RestoreError::Internal(format!("restore task failed: {e}")))?
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
            return Err(Where::new(m, src)
                .integrity(
                    &Repository::manifest_object(&m.id),
                    Fault::StreamName(n.clone()),
                )
                .into());
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
