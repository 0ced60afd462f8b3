//! What operations print: the JSON documents as `Serialize` types (the
//! shapes docs/JSON.md describes) and their text forms, written into any
//! `impl Write` so both are unit-tested without the binary.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::manifest::{
    EntryKind, IndexEntry, Manifest, ObjectRef, Problem, SnapshotStatus, SourceRecord, SourceStatus,
};
use crate::repo::{Damaged, SlotInfo};

/// RFC 3339, UTC, to the second: every `time` of a JSON document.
pub fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn status_word(s: SnapshotStatus) -> &'static str {
    match s {
        SnapshotStatus::Ok => "ok",
        SnapshotStatus::Partial => "partial",
    }
}

/// Decimal units, one decimal place: `999 B`, `1.2 kB`, `3.4 GB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Writes a document as pretty JSON and a newline. Keys come out sorted
/// (through `serde_json::Value`), as every document always had them.
pub fn write_json(w: &mut impl Write, doc: &impl Serialize) -> io::Result<()> {
    let v = serde_json::to_value(doc).map_err(io::Error::other)?;
    serde_json::to_writer_pretty(&mut *w, &v).map_err(io::Error::other)?;
    writeln!(w)
}

// ----------------------------------------------------- errors, store, keys

/// The document of a command that failed before it had a result.
#[derive(Debug, Serialize)]
pub struct ErrorDoc {
    pub ok: bool,
    pub error: String,
    pub exit_code: u8,
}

impl ErrorDoc {
    pub fn new(error: &impl std::fmt::Display, outcome: crate::Outcome) -> Self {
        ErrorDoc {
            ok: false,
            error: error.to_string(),
            exit_code: outcome.exit_code(),
        }
    }
}

/// `"store"` of every document of a run that reached a store: the requests
/// that failed and were retried, and what was recovered.
#[derive(Debug, Serialize)]
pub struct StoreDoc {
    pub retries: u64,
    pub warnings: Vec<String>,
    /// Requests made of the stores, by kind (what the run cost).
    pub requests: crate::store::Requests,
}

impl StoreDoc {
    /// What this run's stores did so far.
    pub fn of_run() -> Self {
        StoreDoc {
            retries: crate::store::run_retries(),
            warnings: crate::store::run_warnings(),
            requests: crate::store::run_requests(),
        }
    }
}

/// `coffer init`.
#[derive(Debug, Serialize)]
pub struct InitDoc<'a> {
    pub ok: bool,
    pub url: &'a str,
    pub id: &'a str,
    pub key_slot: &'a str,
}

pub fn init_text(out: &mut impl Write, doc: &InitDoc, opened_by: &str) -> io::Result<()> {
    writeln!(
        out,
        "initialised repository {} at {} (opened by {opened_by})",
        doc.id, doc.url
    )
}

/// `coffer key generate PATH`.
#[derive(Debug, Serialize)]
pub struct KeyGeneratedDoc<'a> {
    pub ok: bool,
    pub path: &'a std::path::Path,
}

/// Said on stderr: the key is the user's to keep.
pub fn key_generated_text(out: &mut impl Write, doc: &KeyGeneratedDoc) -> io::Result<()> {
    writeln!(
        out,
        "wrote a new key to {} (mode 0600). Keep a copy somewhere safe: without it, repositories it opens cannot be read.",
        doc.path.display()
    )
}

/// `coffer key add`: the new slot.
#[derive(Debug, Serialize)]
pub struct KeyAddedDoc<'a> {
    pub ok: bool,
    pub added: &'a SlotInfo,
}

pub fn key_added_text(out: &mut impl Write, doc: &KeyAddedDoc, opened_by: &str) -> io::Result<()> {
    writeln!(out, "added key slot {} ({opened_by})", doc.added.id)
}

/// `coffer key list`.
#[derive(Debug, Serialize)]
pub struct KeyListDoc<'a> {
    pub ok: bool,
    pub keys: &'a [SlotInfo],
}

/// A table, the slot that opened the repository marked `*`.
pub fn key_list_text(out: &mut impl Write, doc: &KeyListDoc) -> io::Result<()> {
    writeln!(
        out,
        "{:<18}  {:<10}  {:<20}  HOST",
        "ID", "TYPE", "CREATED (UTC)"
    )?;
    for s in doc.keys {
        writeln!(
            out,
            "{}{:<17}  {:<10}  {:<20}  {}",
            if s.current { "*" } else { " " },
            s.id,
            s.kind,
            s.created.replace('T', " ").trim_end_matches('Z'),
            s.host
        )?;
    }
    Ok(())
}

/// `coffer key remove ID`.
#[derive(Debug, Serialize)]
pub struct KeyRemovedDoc<'a> {
    pub ok: bool,
    pub removed: &'a str,
}

pub fn key_removed_text(out: &mut impl Write, doc: &KeyRemovedDoc) -> io::Result<()> {
    writeln!(out, "removed key slot {}", doc.removed)
}

// ----------------------------------------------------------------- snapshot

/// A snapshot's fields as `coffer snapshot` and `coffer show` print them.
#[derive(Debug, Serialize)]
pub struct SnapshotFields<'a> {
    pub id: &'a str,
    pub time: String,
    pub host: &'a str,
    pub tags: &'a [String],
    pub labels: &'a BTreeMap<String, String>,
    pub status: SnapshotStatus,
    pub sources: Vec<SnapshotSource<'a>>,
}

/// One source of [`SnapshotFields`].
#[derive(Debug, Serialize)]
pub struct SnapshotSource<'a> {
    pub name: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: SourceStatus,
    pub files: u64,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub duration_ms: u64,
    pub error: Option<&'a str>,
    pub problems: &'a [Problem],
    pub skipped: &'a [Problem],
    pub vanished: &'a [String],
}

impl<'a> SnapshotFields<'a> {
    pub fn of(m: &'a Manifest) -> Self {
        SnapshotFields {
            id: &m.id,
            time: rfc3339(&m.time),
            host: &m.host,
            tags: &m.tags,
            labels: &m.labels,
            status: m.status,
            sources: m.sources.iter().map(SnapshotSource::of).collect(),
        }
    }
}

impl<'a> SnapshotSource<'a> {
    pub fn of(s: &'a SourceRecord) -> Self {
        SnapshotSource {
            name: &s.name,
            kind: &s.kind,
            status: s.status,
            files: s.files,
            bytes_read: s.bytes_read,
            bytes_stored: s.bytes_stored,
            duration_ms: s.duration_ms,
            error: s.error.as_deref(),
            problems: &s.problems,
            skipped: &s.skipped,
            vanished: &s.vanished,
        }
    }
}

/// The `coffer snapshot` document.
#[derive(Debug, Serialize)]
pub struct SnapshotDoc<'a> {
    pub ok: bool,
    pub committed: bool,
    pub dry_run: bool,
    #[serde(flatten)]
    pub snapshot: SnapshotFields<'a>,
}

impl<'a> SnapshotDoc<'a> {
    pub fn new(m: &'a Manifest, committed: bool, dry_run: bool) -> Self {
        SnapshotDoc {
            ok: m.status == SnapshotStatus::Ok,
            committed,
            dry_run,
            snapshot: SnapshotFields::of(m),
        }
    }
}

/// The `coffer snapshot` document when every source failed.
#[derive(Debug, Serialize)]
pub struct SnapshotFailed<'a> {
    pub ok: bool,
    pub status: &'static str,
    pub error: &'a str,
    pub exit_code: u8,
}

impl<'a> SnapshotFailed<'a> {
    pub fn new(error: &'a str) -> Self {
        SnapshotFailed {
            ok: false,
            status: "failed",
            error,
            exit_code: crate::Outcome::Failed(crate::ErrorKind::Operational).exit_code(),
        }
    }
}

/// `coffer snapshot` as text: the id alone on `out` when committed, for
/// scripts; the report on `err` (with `quiet` only when something went
/// wrong, so cron mails only then).
pub fn snapshot_text(
    out: &mut impl Write,
    err: &mut impl Write,
    m: &Manifest,
    committed: bool,
    dry_run: bool,
    quiet: bool,
) -> io::Result<()> {
    if committed {
        writeln!(out, "{}", m.id)?;
    }
    if quiet && m.status == SnapshotStatus::Ok {
        return Ok(());
    }
    let verb = if dry_run {
        "dry run, nothing written:"
    } else {
        "saved"
    };
    writeln!(
        err,
        "snapshot {} {} {} ({} sources, {} read, {} stored)",
        m.id,
        verb,
        status_word(m.status),
        m.sources.len(),
        human_bytes(m.sources.iter().map(|s| s.bytes_read).sum()),
        human_bytes(m.bytes_stored())
    )?;
    for s in &m.sources {
        // Vanished files make a source partial only when the config
        // says so, and then the snapshot is partial too.
        let vanished_partial = !s.vanished.is_empty() && m.status == SnapshotStatus::Partial;
        let status = match s.status {
            SourceStatus::Ok if s.problems.is_empty() && !vanished_partial => "ok",
            SourceStatus::Ok => "partial",
            SourceStatus::Failed => "FAILED",
        };
        writeln!(
            err,
            "  {:<16} {:<10} {:<8} {:>7} files  {:>10} read  {:>10} stored  {:.1} s",
            s.name,
            s.kind,
            status,
            s.files,
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_stored),
            s.duration_ms as f64 / 1000.0
        )?;
        if s.status == SourceStatus::Failed {
            writeln!(err, "    error: {}", s.error.as_deref().unwrap_or("failed"))?;
        }
        for p in &s.problems {
            writeln!(err, "    not stored whole: {}: {}", p.path, p.error)?;
        }
        for p in &s.skipped {
            writeln!(err, "    skipped: {}: {}", p.path, p.error)?;
        }
        for p in &s.vanished {
            writeln!(
                err,
                "    warning: vanished during the snapshot (deleted after the walk listed it), not stored: {p}"
            )?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ restore

/// The `coffer restore` document: the library's report, with `"ok": true`.
#[derive(Debug, Serialize)]
pub struct RestoreDoc<'a> {
    pub ok: bool,
    #[serde(flatten)]
    pub report: &'a crate::restore::RestoreReport,
}

impl<'a> RestoreDoc<'a> {
    pub fn new(report: &'a crate::restore::RestoreReport) -> Self {
        RestoreDoc { ok: true, report }
    }
}

/// The first line of `coffer restore` as text, before anything changes:
/// whose data is coming back.
pub fn restore_header(out: &mut impl Write, m: &Manifest) -> io::Result<()> {
    writeln!(
        out,
        "restoring snapshot {} taken on {} at {} UTC",
        m.id,
        m.host,
        m.time.format("%Y-%m-%d %H:%M:%S")
    )
}

/// `coffer restore` as text, after the restore: its warnings on `err`, one
/// line per source on `out`, then on `err` the next steps and the files
/// that are missing or possibly inconsistent, and the skipped sources.
pub fn restore_text(
    out: &mut impl Write,
    err: &mut impl Write,
    rep: &crate::restore::RestoreReport,
) -> io::Result<()> {
    for w in &rep.warnings {
        writeln!(err, "warning: {w}")?;
    }
    for src in &rep.sources {
        if rep.dry_run {
            writeln!(
                out,
                "would restore source {} ({}) to {}: {} files, {} dirs, {} links, {}",
                src.name,
                src.kind,
                src.destination,
                src.files,
                src.dirs,
                src.links,
                human_bytes(src.bytes)
            )?;
            for p in &src.planned {
                writeln!(out, "  {p}")?;
            }
        } else if crate::read::is_dump_source(&src.kind) {
            writeln!(
                out,
                "restored source {} ({}) from snapshot {} into {}: {} in {:.1} s",
                src.name,
                src.kind,
                rep.snapshot,
                src.destination,
                human_bytes(src.bytes),
                src.duration_ms as f64 / 1000.0
            )?;
        } else {
            writeln!(
                out,
                "restored source {} ({}) from snapshot {} to {}: {} files, {} dirs, {} links, {} in {:.1} s",
                src.name,
                src.kind,
                rep.snapshot,
                src.destination,
                src.files,
                src.dirs,
                src.links,
                human_bytes(src.bytes),
                src.duration_ms as f64 / 1000.0
            )?;
        }
    }
    for src in &rep.sources {
        for step in &src.next_steps {
            writeln!(err, "next step for source {}: {step}", src.name)?;
        }
        for p in &src.not_stored {
            writeln!(
                err,
                "warning: source {}: {p} could not be read when snapshot {} was taken; it is not in the restored copy",
                src.name, rep.snapshot
            )?;
        }
        // Stored anyway, so restored: say so, and why it may not be what
        // the application last wrote.
        for (p, why) in src
            .possibly_inconsistent
            .iter()
            .zip(&src.possibly_inconsistent_why)
        {
            writeln!(
                err,
                "warning: source {}: {p} {} but possibly inconsistent (snapshot {}: {why})",
                src.name,
                if rep.dry_run {
                    "would be restored"
                } else {
                    "is restored"
                },
                rep.snapshot
            )?;
        }
    }
    for sk in &rep.skipped {
        writeln!(
            err,
            "warning: source {sk} failed when snapshot {} was taken; nothing restored for it",
            rep.snapshot
        )?;
    }
    Ok(())
}

// -------------------------------------------------------------------- prune

/// `coffer prune` as text (its document is [`crate::prune::PruneReport`]):
/// one line per snapshot with the rules that keep it, the left-overs, and
/// what was removed (or, in a dry run, would be).
pub fn prune_text(out: &mut impl Write, rep: &crate::prune::PruneReport) -> io::Result<()> {
    writeln!(
        out,
        "{:<16}  {:<20}  {:<6}  KEPT BY",
        "ID", "TIME (UTC)", "ACTION"
    )?;
    for v in &rep.snapshots {
        writeln!(
            out,
            "{:<16}  {:<20}  {:<6}  {}",
            v.id,
            v.time.replace('T', " ").trim_end_matches('Z'),
            v.action,
            v.reasons.join(", ")
        )?;
    }
    for l in &rep.leftovers {
        writeln!(
            out,
            "left-over data/{}/ ({} objects, {}, newest {}): {}: {}",
            l.id,
            l.objects,
            human_bytes(l.bytes),
            l.newest,
            l.action,
            l.why
        )?;
    }
    let verb = if rep.dry_run {
        "dry run, nothing deleted: would remove"
    } else {
        "removed"
    };
    let t = &rep.temp_files;
    if t.removed + t.kept > 0 {
        writeln!(
            out,
            "{verb} {} upload temp files of interrupted writes ({}); kept {} ({}) younger than the grace period",
            t.removed,
            human_bytes(t.removed_bytes),
            t.kept,
            human_bytes(t.kept_bytes)
        )?;
    }
    if let Some(c) = &rep.chunks {
        let (deleted, marked) = if rep.dry_run {
            ("would delete", "would mark")
        } else {
            ("deleted", "marked")
        };
        writeln!(
            out,
            "chunks: {deleted} {} packs ({}) marked by an earlier prune; {marked} {} packs ({}) that no kept snapshot uses, for a later prune to delete; {} packs ({}) in use",
            c.deleted_packs,
            human_bytes(c.deleted_bytes),
            c.marked_packs,
            human_bytes(c.marked_bytes),
            c.packs_in_use,
            human_bytes(c.bytes_in_use)
        )?;
        if c.kept_packs > 0 {
            writeln!(
                out,
                "chunks: kept {} marked packs that a snapshot stored since needs",
                c.kept_packs
            )?;
        }
        for w in &c.waiting {
            writeln!(out, "chunks: waiting: {w}")?;
        }
    }
    if let Some(m) = &rep.multipart_uploads
        && m.aborted + m.kept > 0
    {
        let verb = if rep.dry_run {
            "dry run, nothing deleted: would abort"
        } else {
            "aborted"
        };
        writeln!(
            out,
            "{verb} {} multipart uploads of interrupted writes; kept {} younger than the grace period",
            m.aborted, m.kept
        )?;
    }
    writeln!(
        out,
        "{verb} {} of {} snapshots ({} objects) and {} left-over objects; kept {} ({})",
        rep.removed,
        rep.snapshots.len(),
        rep.removed_objects,
        rep.leftovers_removed,
        rep.kept,
        rep.policy
    )
}

// ------------------------------------------------------------------- repair

/// `coffer repair index` as text (its document is
/// [`crate::repair::RepairReport`]).
pub fn repair_text(out: &mut impl Write, rep: &crate::repair::RepairReport) -> io::Result<()> {
    for p in &rep.unreadable_packs {
        writeln!(out, "DAMAGED {p}")?;
    }
    let (index, delete) = if rep.dry_run {
        ("dry run, nothing written: would index", "would delete")
    } else {
        ("indexed", "deleted")
    };
    writeln!(
        out,
        "{index} {} of {} packs that no readable index object listed ({} chunks){}",
        rep.reindexed_packs,
        rep.packs,
        rep.reindexed_chunks,
        rep.index_object
            .as_ref()
            .map(|o| format!(" into {o}"))
            .unwrap_or_default()
    )?;
    if !rep.damaged_index_objects.is_empty() {
        writeln!(
            out,
            "{delete} {} damaged index objects: {}",
            rep.damaged_index_objects.len(),
            rep.damaged_index_objects.join(", ")
        )?;
    }
    if !rep.unreadable_packs.is_empty() {
        writeln!(
            out,
            "{} packs could not be read: their chunks stay missing; `coffer verify --all` names the snapshots that need them",
            rep.unreadable_packs.len()
        )?;
    }
    Ok(())
}

// -------------------------------------------------------------------- check

/// `coffer check` as text (its document is [`crate::check::CheckReport`]):
/// one `ok`, `warn` or `FAIL` line per check.
pub fn check_text(out: &mut impl Write, rep: &crate::check::CheckReport) -> io::Result<()> {
    for c in &rep.checks {
        writeln!(
            out,
            "{:<4} {}: {}",
            match (c.ok, c.warning) {
                (false, _) => "FAIL",
                (true, true) => "warn",
                (true, false) => "ok",
            },
            c.name,
            c.detail
        )?;
    }
    Ok(())
}

/// The verdict of a `coffer check` that failed: which checks.
pub fn check_failed(err: &mut impl Write, rep: &crate::check::CheckReport) -> io::Result<()> {
    let failed: Vec<&str> = rep
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    writeln!(
        err,
        "error: {} check(s) failed: {}",
        failed.len(),
        failed.join("; ")
    )
}

// -------------------------------------------------------------------- drill

/// `coffer drill` as text (its document is [`crate::restore::DrillReport`]):
/// per source its verdict and restore time, then its checks, failures and
/// error; the sources without a drill.
pub fn drill_text(out: &mut impl Write, rep: &crate::restore::DrillReport) -> io::Result<()> {
    for d in &rep.sources {
        writeln!(
            out,
            "source {} ({}): {} — restore into {} took {:.1} s",
            d.name,
            d.kind,
            if d.ok { "ok" } else { "FAILED" },
            if d.scratch.is_empty() {
                "scratch"
            } else {
                &d.scratch
            },
            d.restore_ms as f64 / 1000.0
        )?;
        for c in &d.checks {
            writeln!(out, "  {c}")?;
        }
        for f in &d.failures {
            writeln!(out, "  FAILED: {f}")?;
        }
        if let Some(e) = &d.error {
            writeln!(out, "  error: {e}")?;
        }
    }
    for sk in &rep.skipped {
        writeln!(out, "source {sk}: no drill for this type (skipped)")?;
    }
    if rep.sources.is_empty() {
        writeln!(
            out,
            "snapshot {} has no database source to drill",
            rep.snapshot
        )?;
    }
    Ok(())
}

/// The verdict of a drill that failed (with or without `--json`).
pub fn drill_failed(err: &mut impl Write, rep: &crate::restore::DrillReport) -> io::Result<()> {
    writeln!(
        err,
        "error: restore drill of snapshot {} failed; see above",
        rep.snapshot
    )
}

// --------------------------------------------------------------------- show

/// The `coffer show` document: the snapshot's fields as `coffer snapshot`
/// prints them, and what only the manifest says.
#[derive(Debug, Serialize)]
pub struct ShowDoc<'a> {
    pub id: &'a str,
    pub time: String,
    pub host: &'a str,
    pub tags: &'a [String],
    pub labels: &'a BTreeMap<String, String>,
    pub status: SnapshotStatus,
    pub tool_version: &'a str,
    pub parent: Option<&'a str>,
    pub sources: Vec<ShowSource<'a>>,
}

/// One source of [`ShowDoc`]; with `--files`, its files.
#[derive(Debug, Serialize)]
pub struct ShowSource<'a> {
    #[serde(flatten)]
    pub source: SnapshotSource<'a>,
    pub origin: Option<&'a str>,
    pub archive: Option<&'a ObjectRef>,
    pub index: Option<&'a ObjectRef>,
    /// Format 2: what this source added to the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_chunks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_files: Option<u64>,
    pub details: &'a serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<ShowFile<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_count: Option<u64>,
}

/// One file of a [`ShowSource`]: its index entry, `mtime` as RFC 3339 UTC
/// with the stored nanoseconds.
#[derive(Debug, Serialize)]
pub struct ShowFile<'a> {
    pub path: &'a str,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: Option<String>,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<&'a str>,
    pub stored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<&'a str>,
}

impl<'a> ShowFile<'a> {
    pub fn of(e: &'a IndexEntry) -> Self {
        ShowFile {
            path: &e.path,
            kind: e.kind,
            size: e.size,
            mode: e.mode,
            mtime: chrono::DateTime::from_timestamp(e.mtime, e.mtime_nsec)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            uid: e.uid,
            gid: e.gid,
            target: e.target.as_deref(),
            sha256: e.sha256.as_deref(),
            stored: e.stored,
            error: e.error.as_deref(),
            object: e.object.as_deref(),
        }
    }
}

impl<'a> ShowDoc<'a> {
    /// `files`: with `--files`, each source's index, in the manifest's order.
    pub fn new(m: &'a Manifest, files: Option<&'a [Vec<IndexEntry>]>) -> Self {
        ShowDoc {
            id: &m.id,
            time: rfc3339(&m.time),
            host: &m.host,
            tags: &m.tags,
            labels: &m.labels,
            status: m.status,
            tool_version: &m.tool_version,
            parent: m.parent.as_deref(),
            sources: m
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| ShowSource {
                    source: SnapshotSource::of(s),
                    origin: s.origin.as_deref(),
                    archive: s.archive.as_ref(),
                    index: s.index.as_ref(),
                    new_chunks: s.new_chunks,
                    reused_files: s.reused_files,
                    details: &s.details,
                    files: files.map(|f| f[i].iter().map(ShowFile::of).collect()),
                    file_count: files.map(|_| s.files),
                })
                .collect(),
        }
    }
}

/// `coffer show` as text: the snapshot, then each source (with `files`,
/// one line per file).
pub fn show_text(
    out: &mut impl Write,
    m: &Manifest,
    files: Option<&[Vec<IndexEntry>]>,
) -> io::Result<()> {
    writeln!(out, "snapshot   {}", m.id)?;
    writeln!(out, "time       {} UTC", m.time.format("%Y-%m-%d %H:%M:%S"))?;
    writeln!(out, "host       {}", m.host)?;
    writeln!(out, "status     {}", status_word(m.status))?;
    writeln!(out, "tags       {}", m.tags.join(", "))?;
    for (k, v) in &m.labels {
        writeln!(out, "label      {k}={v}")?;
    }
    writeln!(out, "coffer     {}", m.tool_version)?;
    writeln!(out, "stored     {}", human_bytes(m.bytes_stored()))?;
    for (i, s) in m.sources.iter().enumerate() {
        writeln!(
            out,
            "\nsource {} ({}), {}",
            s.name,
            s.kind,
            match s.status {
                SourceStatus::Ok => "ok",
                SourceStatus::Failed => "FAILED",
            }
        )?;
        if let Some(o) = &s.origin {
            writeln!(out, "  from      {o}")?;
        }
        writeln!(
            out,
            "  files     {}\n  read      {}\n  stored    {}\n  took      {:.1} s",
            s.files,
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_stored),
            s.duration_ms as f64 / 1000.0
        )?;
        if let Some(a) = &s.archive {
            writeln!(out, "  archive   {} sha256:{}", a.object, a.sha256)?;
        }
        if let (Some(n), Some(l)) = (s.new_chunks, &s.list) {
            writeln!(
                out,
                "  chunks    {n} new; file list of {} in {} chunks",
                human_bytes(l.size),
                l.chunks.len()
            )?;
        }
        if let Some(r) = s.reused_files.filter(|r| *r > 0) {
            writeln!(
                out,
                "  unchanged {r} files (taken from the previous snapshot unread)"
            )?;
        }
        if let Some(e) = &s.error {
            writeln!(out, "  error     {e}")?;
        }
        for v in &s.vanished {
            writeln!(
                out,
                "  vanished  {v} (deleted during the snapshot, not stored)"
            )?;
        }
        for (k, v) in &s.details {
            writeln!(out, "  {k:<9} {v}")?;
        }
        for e in files.map(|f| f[i].as_slice()).unwrap_or_default() {
            let t = chrono::DateTime::from_timestamp(e.mtime, e.mtime_nsec)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let kind = match e.kind {
                EntryKind::File => "-",
                EntryKind::Dir => "d",
                EntryKind::Symlink => "l",
                EntryKind::Hardlink => "h",
            };
            write!(
                out,
                "  {kind} {:04o} {:>12} {} {} {}",
                e.mode,
                e.size,
                t,
                e.sha256.as_deref().unwrap_or("-"),
                e.path
            )?;
            if let Some(tg) = &e.target {
                write!(out, " -> {tg}")?;
            }
            if let Some(err) = &e.error {
                write!(out, "  [{err}]")?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

// --------------------------------------------------------------------- copy

/// `coffer copy` as text (its document is [`crate::copy::CopyReport`]): the
/// summary line on `err`.
pub fn copy_text(err: &mut impl Write, rep: &crate::copy::CopyReport) -> io::Result<()> {
    let secs = rep.duration_ms as f64 / 1000.0;
    let c = &rep.compared;
    let compared = format!(
        "; compared {} by content, {} by stored hash{}",
        c.content,
        c.stored_hash,
        if c.size_mtime > 0 {
            format!(", {} by size+mtime", c.size_mtime)
        } else {
            String::new()
        }
    );
    if rep.check {
        writeln!(
            err,
            "check {} -> {}: {} object(s) differ, {} identical ({}){compared}, in {secs:.1} s",
            rep.src,
            rep.dst,
            rep.differences_count,
            rep.skipped.objects,
            human_bytes(rep.skipped.bytes)
        )
    } else {
        writeln!(
            err,
            "{}copy {} -> {}: {} {} object(s) ({}), skipped {} ({}), {} {} ({}), failed {}{compared}, in {secs:.1} s{}",
            if rep.dry_run {
                "dry run, nothing written: "
            } else {
                ""
            },
            rep.src,
            rep.dst,
            if rep.dry_run { "would copy" } else { "copied" },
            rep.copied.objects,
            human_bytes(rep.copied.bytes),
            rep.skipped.objects,
            human_bytes(rep.skipped.bytes),
            if rep.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            rep.deleted.objects,
            human_bytes(rep.deleted.bytes),
            rep.failed_count,
            if rep.server_side {
                " (server-side)"
            } else {
                ""
            },
        )
    }
}

/// What went wrong in a `coffer copy` (with or without `--json`): a refused
/// delete, failed objects.
pub fn copy_errors(err: &mut impl Write, rep: &crate::copy::CopyReport) -> io::Result<()> {
    if let Some(why) = &rep.delete_skipped {
        writeln!(err, "error: {why}")?;
    }
    if rep.failed_count > 0 {
        writeln!(
            err,
            "error: {} object(s) failed (named above); run the same command again to copy what is left",
            rep.failed_count
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------- snapshots

/// One entry of the `coffer snapshots` document.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ListedSnapshot<'a> {
    Readable {
        id: &'a str,
        time: String,
        host: &'a str,
        tags: &'a [String],
        labels: &'a BTreeMap<String, String>,
        status: SnapshotStatus,
        sources: Vec<&'a str>,
        bytes_stored: u64,
    },
    /// Intact, but written by a newer coffer.
    Newer {
        id: &'a str,
        object: &'a str,
        error: &'a str,
        newer_version: u32,
    },
    Damaged {
        id: &'a str,
        object: &'a str,
        error: &'a str,
        damaged: bool,
    },
}

/// The `coffer snapshots` document: the listed snapshots, oldest first,
/// then the unreadable ones (any of them may be the newest).
pub fn snapshots_doc<'a>(list: &[&'a Manifest], damaged: &'a [Damaged]) -> Vec<ListedSnapshot<'a>> {
    let mut v: Vec<ListedSnapshot> = list
        .iter()
        .map(|m| ListedSnapshot::Readable {
            id: &m.id,
            time: rfc3339(&m.time),
            host: &m.host,
            tags: &m.tags,
            labels: &m.labels,
            status: m.status,
            sources: m.sources.iter().map(|s| s.name.as_str()).collect(),
            bytes_stored: m.bytes_stored(),
        })
        .collect();
    v.extend(damaged.iter().map(|d| match d.newer {
        Some(version) => ListedSnapshot::Newer {
            id: &d.id,
            object: &d.object,
            error: &d.reason,
            newer_version: version,
        },
        None => ListedSnapshot::Damaged {
            id: &d.id,
            object: &d.object,
            error: &d.reason,
            damaged: true,
        },
    }));
    v
}

/// The `coffer snapshots` table on `out`; on `err`, that there is none.
pub fn snapshots_text(
    out: &mut impl Write,
    err: &mut impl Write,
    list: &[&Manifest],
    damaged: &[Damaged],
) -> io::Result<()> {
    if list.is_empty() {
        let readable = if damaged.is_empty() { "" } else { "readable " };
        return writeln!(err, "no {readable}snapshots");
    }
    // The columns of the rows below.
    writeln!(
        out,
        "ID                TIME (UTC)            HOST              STATUS   TAGS                        SIZE  SOURCES"
    )?;
    for m in list {
        writeln!(
            out,
            "{:<16}  {:<20}  {:<16}  {:<7}  {:<20}  {:>10}  {}",
            m.id,
            m.time.format("%Y-%m-%d %H:%M:%S"),
            m.host,
            status_word(m.status),
            m.tags.join(","),
            human_bytes(m.bytes_stored()),
            m.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )?;
    }
    Ok(())
}

/// One error line per manifest a listing could not read, saying what to do.
pub fn unreadable_manifests(err: &mut impl Write, damaged: &[Damaged]) -> io::Result<()> {
    for d in damaged {
        match d.newer {
            Some(_) => writeln!(err, "error: {}; it is not listed above", d.reason)?,
            None => writeln!(
                err,
                "error: snapshot {}: manifest {} is damaged ({}); it is not listed above and cannot be restored; \
                 `restore latest` and `prune` refuse to run until it is repaired: \
                 run `coffer verify --all`, then put back a good copy of {} (from a copy of the repository) or delete it",
                d.id, d.object, d.reason, d.object
            )?,
        }
    }
    Ok(())
}

// ------------------------------------------------------------------- verify

/// `coffer verify` as text: one line per snapshot on `out`, what is wrong
/// under each bad one; on `err`, the verdict when it is not ok.
pub fn verify_text(
    out: &mut impl Write,
    err: &mut impl Write,
    rep: &crate::verify::VerifyReport,
) -> io::Result<()> {
    use crate::{ErrorKind, Outcome};
    for snap in &rep.snapshots {
        if snap.ok {
            let deep = if rep.deep { ", deep" } else { "" };
            writeln!(
                out,
                "snapshot {}: ok ({} sources{deep})",
                snap.id,
                snap.sources.len()
            )?;
            continue;
        }
        let verdict = if snap.newer {
            "NOT VERIFIED"
        } else {
            "DAMAGED"
        };
        writeln!(out, "snapshot {}: {verdict}", snap.id)?;
        if let Some(e) = &snap.error {
            writeln!(out, "  {e}")?;
        }
        for src in snap.sources.iter().filter(|s| !s.ok) {
            for p in &src.problems {
                writeln!(out, "  source {}: {p}", src.name)?;
            }
        }
    }
    if rep.snapshots.is_empty() {
        writeln!(out, "no snapshots to verify")?;
    }
    match rep.outcome() {
        Outcome::Ok | Outcome::Partial => Ok(()),
        // Only manifests of a newer coffer: nothing is damaged.
        Outcome::Failed(ErrorKind::Operational) => writeln!(
            err,
            "error: snapshot(s) written by a newer coffer were not verified; upgrade coffer to verify them"
        ),
        Outcome::Failed(_) => {
            let bad: Vec<&str> = rep
                .snapshots
                .iter()
                .filter(|s| !s.ok)
                .map(|s| s.id.as_str())
                .collect();
            writeln!(
                err,
                "error: damaged snapshot(s): {}; restore from an older snapshot or another copy of the repository",
                bad.join(", ")
            )?;
            // Chunks in no index may all be there: only the index lost.
            let unindexed = rep
                .snapshots
                .iter()
                .flat_map(|s| &s.sources)
                .flat_map(|s| &s.problems)
                .any(|p| p.contains("is in no index"));
            if unindexed {
                writeln!(
                    err,
                    "hint: chunks in no index may still be in their packs: `coffer repair index` rebuilds lost or damaged index objects from the packs, then verify again"
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "version": 1, "id": id, "time": "2026-03-01T12:30:05Z", "host": "web1",
            "tool_version": "0.1.0", "tags": ["daily"], "labels": {"env": "prod"},
            "status": "partial",
            "sources": [{
                "name": "db", "type": "postgres", "status": "ok", "error": null,
                "files": 1, "bytes_read": 5000, "bytes_stored": 1500, "duration_ms": 10,
                "archive": null, "index": null,
            }],
        }))
        .unwrap()
    }

    fn damaged(newer: Option<u32>) -> Damaged {
        Damaged {
            id: "bad".into(),
            object: "snapshots/bad".into(),
            reason: "authentication failed".into(),
            newer,
        }
    }

    fn json_of(doc: &impl Serialize) -> String {
        let mut b = Vec::new();
        write_json(&mut b, doc).unwrap();
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(3_400_000_000), "3.4 GB");
    }

    #[test]
    fn snapshots_json_keys_as_documented() {
        let m = manifest("a1");
        let bad = [damaged(None), damaged(Some(9))];
        let doc = snapshots_doc(&[&m], &bad);
        let v: serde_json::Value = serde_json::from_str(&json_of(&doc)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"id": "a1", "time": "2026-03-01T12:30:05Z", "host": "web1", "tags": ["daily"],
                 "labels": {"env": "prod"}, "status": "partial", "sources": ["db"], "bytes_stored": 1500},
                {"id": "bad", "object": "snapshots/bad", "error": "authentication failed", "damaged": true},
                {"id": "bad", "object": "snapshots/bad", "error": "authentication failed", "newer_version": 9},
            ])
        );
        // Keys sorted, pretty-printed, one final newline.
        let text = json_of(&snapshots_doc(&[], &bad[..1]));
        assert!(
            text.starts_with("[\n  {\n    \"damaged\": true,\n    \"error\""),
            "{text}"
        );
        assert!(text.ends_with("]\n"), "{text}");
    }

    #[test]
    fn snapshots_table() {
        let m = manifest("a1");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        snapshots_text(&mut out, &mut err, &[&m], &[]).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("ID                TIME (UTC)"),
            "{out}"
        );
        assert!(
            lines[1].starts_with(
                "a1                2026-03-01 12:30:05   web1              partial  daily"
            ),
            "{out}"
        );
        assert!(lines[1].ends_with("1.5 kB  db"), "{out}");
        assert!(err.is_empty());
    }

    #[test]
    fn empty_listing_and_unreadable_manifests_go_to_err() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        snapshots_text(&mut out, &mut err, &[], &[damaged(None)]).unwrap();
        unreadable_manifests(&mut err, &[damaged(None), damaged(Some(2))]).unwrap();
        let err = String::from_utf8(err).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert!(out.is_empty());
        assert_eq!(lines[0], "no readable snapshots");
        assert!(
            lines[1].starts_with("error: snapshot bad: manifest snapshots/bad is damaged"),
            "{err}"
        );
        assert_eq!(
            lines[2],
            "error: authentication failed; it is not listed above"
        );
    }

    fn verify_report(snapshots: Vec<crate::verify::SnapshotCheck>) -> crate::verify::VerifyReport {
        crate::verify::VerifyReport {
            ok: snapshots.iter().all(|s| s.ok),
            deep: true,
            snapshots,
        }
    }

    fn check(id: &str, ok: bool, newer: bool) -> crate::verify::SnapshotCheck {
        crate::verify::SnapshotCheck {
            id: id.into(),
            ok,
            sources: vec![crate::verify::SourceCheck {
                name: "media".into(),
                ok,
                problems: if ok {
                    vec![]
                } else {
                    vec!["a.jpg: hash mismatch".into()]
                },
            }],
            error: None,
            newer,
        }
    }

    fn verify_lines(rep: &crate::verify::VerifyReport) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        verify_text(&mut out, &mut err, rep).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn verify_text_ok_damaged_and_newer() {
        let (out, err) = verify_lines(&verify_report(vec![check("a", true, false)]));
        assert_eq!(out, "snapshot a: ok (1 sources, deep)\n");
        assert_eq!(err, "");
        let (out, err) = verify_lines(&verify_report(vec![
            check("a", true, false),
            check("b", false, false),
        ]));
        assert_eq!(
            out,
            "snapshot a: ok (1 sources, deep)\nsnapshot b: DAMAGED\n  source media: a.jpg: hash mismatch\n"
        );
        assert!(err.starts_with("error: damaged snapshot(s): b; "), "{err}");
        let (out, err) = verify_lines(&verify_report(vec![check("c", false, true)]));
        assert!(out.starts_with("snapshot c: NOT VERIFIED\n"), "{out}");
        assert!(err.contains("written by a newer coffer"), "{err}");
        let (out, _) = verify_lines(&verify_report(vec![]));
        assert_eq!(out, "no snapshots to verify\n");
    }

    #[test]
    fn verify_json_keys_as_documented() {
        let mut c = check("b", false, false);
        c.error = Some("manifest damaged".into());
        let v: serde_json::Value = serde_json::from_str(&json_of(&verify_report(vec![c]))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok": false, "deep": true, "snapshots": [{"id": "b", "ok": false,
                "error": "manifest damaged",
                "sources": [{"name": "media", "ok": false, "problems": ["a.jpg: hash mismatch"]}]}]})
        );
    }

    #[test]
    fn snapshot_json_keys_as_documented() {
        let m = manifest("a1");
        let v: serde_json::Value =
            serde_json::from_str(&json_of(&SnapshotDoc::new(&m, true, false))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok": false, "committed": true, "dry_run": false,
                "id": "a1", "time": "2026-03-01T12:30:05Z", "host": "web1", "tags": ["daily"],
                "labels": {"env": "prod"}, "status": "partial",
                "sources": [{"name": "db", "type": "postgres", "status": "ok", "files": 1,
                    "bytes_read": 5000, "bytes_stored": 1500, "duration_ms": 10, "error": null,
                    "problems": [], "skipped": [], "vanished": []}]})
        );
        let text = json_of(&SnapshotDoc::new(&m, true, false));
        assert!(
            text.starts_with("{\n  \"committed\": true,\n  \"dry_run\""),
            "{text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&json_of(&SnapshotFailed::new("boom"))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok": false, "status": "failed", "error": "boom", "exit_code": 1})
        );
    }

    #[test]
    fn snapshot_text_id_on_out_report_on_err() {
        let mut m = manifest("a1");
        m.sources[0].problems.push(Problem {
            path: "x".into(),
            error: "shrank".into(),
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        snapshot_text(&mut out, &mut err, &m, true, false, true).unwrap();
        let (out, err) = (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        );
        assert_eq!(out, "a1\n");
        assert_eq!(
            err,
            "snapshot a1 saved partial (1 sources, 5.0 kB read, 1.5 kB stored)\n\
             \x20 db               postgres   partial        1 files      5.0 kB read      1.5 kB stored  0.0 s\n\
             \x20   not stored whole: x: shrank\n"
        );
        // Dry run: nothing committed, no id; quiet and ok: nothing at all.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        m.status = SnapshotStatus::Ok;
        snapshot_text(&mut out, &mut err, &m, false, true, true).unwrap();
        assert!(out.is_empty() && err.is_empty());
        snapshot_text(&mut out, &mut err, &m, false, true, false).unwrap();
        assert!(out.is_empty());
        assert!(
            String::from_utf8(err)
                .unwrap()
                .starts_with("snapshot a1 dry run, nothing written: ok (1 sources"),
        );
    }

    fn restore_report(dry_run: bool) -> crate::restore::RestoreReport {
        let src = |name: &str, kind: &str| crate::restore::RestoredSource {
            name: name.into(),
            kind: kind.into(),
            destination: "/srv/x".into(),
            files: 2,
            dirs: 1,
            links: 0,
            bytes: 1500,
            duration_ms: 2500,
            planned: vec![],
            not_stored: vec![],
            possibly_inconsistent: vec![],
            possibly_inconsistent_why: vec![],
            not_configured: vec![],
            next_steps: vec![],
        };
        let mut media = src("media", "directory");
        media.possibly_inconsistent = vec!["a.log".into()];
        media.possibly_inconsistent_why = vec!["changed while read".into()];
        media.not_stored = vec!["b.log".into()];
        let mut cache = src("cache", "redis");
        cache.next_steps = vec!["restart redis".into()];
        crate::restore::RestoreReport {
            snapshot: "a1".into(),
            host: "web1".into(),
            time: "2026-03-01T12:30:05Z".into(),
            dry_run,
            warnings: vec!["moved".into()],
            sources: vec![media, cache],
            skipped: vec!["db".into()],
            cleaned: vec![],
        }
    }

    #[test]
    fn restore_text_lines() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        restore_header(&mut out, &manifest("a1")).unwrap();
        restore_text(&mut out, &mut err, &restore_report(false)).unwrap();
        let (out, err) = (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        );
        assert_eq!(
            out,
            "restoring snapshot a1 taken on web1 at 2026-03-01 12:30:05 UTC\n\
             restored source media (directory) from snapshot a1 to /srv/x: 2 files, 1 dirs, 0 links, 1.5 kB in 2.5 s\n\
             restored source cache (redis) from snapshot a1 into /srv/x: 1.5 kB in 2.5 s\n"
        );
        assert_eq!(
            err,
            "warning: moved\n\
             warning: source media: b.log could not be read when snapshot a1 was taken; it is not in the restored copy\n\
             warning: source media: a.log is restored but possibly inconsistent (snapshot a1: changed while read)\n\
             next step for source cache: restart redis\n\
             warning: source db failed when snapshot a1 was taken; nothing restored for it\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        restore_text(&mut out, &mut err, &restore_report(true)).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("would restore source media (directory) to /srv/x: 2 files, 1 dirs, 0 links, 1.5 kB\n"),
            "{out}"
        );
        assert!(
            String::from_utf8(err)
                .unwrap()
                .contains("a.log would be restored but")
        );
    }

    #[test]
    fn restore_json_keys_as_documented() {
        let rep = restore_report(false);
        let v: serde_json::Value = serde_json::from_str(&json_of(&RestoreDoc::new(&rep))).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "cleaned", "dry_run", "host", "ok", "skipped", "snapshot", "sources", "time",
                "warnings"
            ]
        );
        assert_eq!(v["ok"], true);
        assert_eq!(
            v["sources"][0],
            serde_json::json!({"name": "media", "type": "directory", "destination": "/srv/x",
                "files": 2, "dirs": 1, "links": 0, "bytes": 1500, "duration_ms": 2500,
                "not_stored": ["b.log"], "possibly_inconsistent": ["a.log"]})
        );
        assert_eq!(
            v["sources"][1]["next_steps"],
            serde_json::json!(["restart redis"])
        );
    }

    fn prune_report(dry_run: bool) -> crate::prune::PruneReport {
        let verdict =
            |id: &str, action: &'static str, reasons: &[&str]| crate::prune::SnapshotVerdict {
                id: id.into(),
                time: "2026-03-01T12:30:05Z".into(),
                host: "web1".into(),
                tags: vec![],
                action,
                reasons: reasons.iter().map(|r| r.to_string()).collect(),
                objects: 3,
            };
        crate::prune::PruneReport {
            ok: true,
            dry_run,
            policy: "keep-last 1".into(),
            grace_secs: 3600,
            snapshots: vec![
                verdict("a1", "remove", &[]),
                verdict("b2", "keep", &["keep-last"]),
            ],
            kept: 1,
            removed: 1,
            removed_objects: 3,
            leftovers: vec![crate::prune::Leftover {
                id: "c3".into(),
                objects: 2,
                bytes: 2000,
                newest: "2026-03-01T00:00:00Z".into(),
                action: "remove",
                why: "no manifest".into(),
            }],
            leftovers_removed: 2,
            temp_files: crate::prune::TempFiles {
                removed: 1,
                removed_bytes: 10,
                kept: 0,
                kept_bytes: 0,
            },
            multipart_uploads: Some(crate::prune::MultipartUploads {
                aborted: 0,
                kept: 0,
            }),
            chunks: None,
        }
    }

    #[test]
    fn prune_text_lines() {
        let mut out = Vec::new();
        prune_text(&mut out, &prune_report(true)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID                TIME (UTC)            ACTION  KEPT BY\n\
             a1                2026-03-01 12:30:05   remove  \n\
             b2                2026-03-01 12:30:05   keep    keep-last\n\
             left-over data/c3/ (2 objects, 2.0 kB, newest 2026-03-01T00:00:00Z): remove: no manifest\n\
             dry run, nothing deleted: would remove 1 upload temp files of interrupted writes (10 B); kept 0 (0 B) younger than the grace period\n\
             dry run, nothing deleted: would remove 1 of 2 snapshots (3 objects) and 2 left-over objects; kept 1 (keep-last 1)\n"
        );
        let mut out = Vec::new();
        prune_text(&mut out, &prune_report(false)).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.ends_with("\nremoved 1 of 2 snapshots (3 objects) and 2 left-over objects; kept 1 (keep-last 1)\n"),
            "{out}"
        );
    }

    #[test]
    fn prune_json_keys_as_documented() {
        let v: serde_json::Value = serde_json::from_str(&json_of(&prune_report(false))).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "dry_run",
                "grace_secs",
                "kept",
                "leftovers",
                "leftovers_removed",
                "multipart_uploads",
                "ok",
                "policy",
                "removed",
                "removed_objects",
                "snapshots",
                "temp_files"
            ]
        );
        assert_eq!(
            v["snapshots"][1],
            serde_json::json!({"id": "b2", "time": "2026-03-01T12:30:05Z", "host": "web1", "tags": [],
                "action": "keep", "reasons": ["keep-last"], "objects": 3})
        );
        assert_eq!(
            v["temp_files"],
            serde_json::json!({"removed": 1, "removed_bytes": 10, "kept": 0, "kept_bytes": 0})
        );
        assert_eq!(
            v["multipart_uploads"],
            serde_json::json!({"aborted": 0, "kept": 0})
        );
    }

    fn check_report() -> crate::check::CheckReport {
        let item = |name: &str, ok: bool, warning: bool| crate::check::CheckItem {
            name: name.into(),
            ok,
            detail: format!("{name} detail"),
            warning,
        };
        crate::check::CheckReport {
            ok: false,
            checks: vec![
                item("config valid", true, false),
                item("restore left-overs", true, true),
                item("repository reachable", false, false),
                item("key", false, false),
            ],
        }
    }

    #[test]
    fn check_text_lines_and_verdict() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        check_text(&mut out, &check_report()).unwrap();
        check_failed(&mut err, &check_report()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok   config valid: config valid detail\n\
             warn restore left-overs: restore left-overs detail\n\
             FAIL repository reachable: repository reachable detail\n\
             FAIL key: key detail\n"
        );
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "error: 2 check(s) failed: repository reachable; key\n"
        );
    }

    #[test]
    fn check_json_keys_as_documented() {
        let v: serde_json::Value = serde_json::from_str(&json_of(&check_report())).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(
            v["checks"][0],
            serde_json::json!({"name": "config valid", "ok": true, "detail": "config valid detail"})
        );
        assert_eq!(v["checks"][1]["warning"], true);
    }

    fn drill_report() -> crate::restore::DrillReport {
        crate::restore::DrillReport {
            ok: false,
            snapshot: "a1".into(),
            sources: vec![crate::source::DrillResult {
                name: "db".into(),
                kind: "postgres".into(),
                ok: false,
                scratch: String::new(),
                restore_ms: 1500,
                checks: vec!["public.t: 3 rows (expected 3)".into()],
                failures: vec!["public.u: 1 rows (expected 2)".into()],
                error: Some("boom".into()),
            }],
            skipped: vec!["media".into()],
        }
    }

    #[test]
    fn drill_text_lines_and_verdict() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let rep = drill_report();
        drill_text(&mut out, &rep).unwrap();
        drill_failed(&mut err, &rep).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "source db (postgres): FAILED — restore into scratch took 1.5 s\n\
             \x20 public.t: 3 rows (expected 3)\n\
             \x20 FAILED: public.u: 1 rows (expected 2)\n\
             \x20 error: boom\n\
             source media: no drill for this type (skipped)\n"
        );
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "error: restore drill of snapshot a1 failed; see above\n"
        );
        let mut out = Vec::new();
        let empty = crate::restore::DrillReport {
            ok: true,
            snapshot: "a1".into(),
            sources: vec![],
            skipped: vec![],
        };
        drill_text(&mut out, &empty).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "snapshot a1 has no database source to drill\n"
        );
    }

    #[test]
    fn drill_json_keys_as_documented() {
        let v: serde_json::Value = serde_json::from_str(&json_of(&drill_report())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok": false, "snapshot": "a1", "skipped": ["media"],
                "sources": [{"name": "db", "type": "postgres", "ok": false, "scratch": "",
                    "restore_ms": 1500, "checks": ["public.t: 3 rows (expected 3)"],
                    "failures": ["public.u: 1 rows (expected 2)"], "error": "boom"}]})
        );
    }

    fn entry(path: &str, kind: EntryKind, target: Option<&str>) -> IndexEntry {
        IndexEntry {
            size: 8,
            mode: 0o644,
            mtime: 1_772_368_205,
            mtime_nsec: 5,
            target: target.map(str::to_string),
            sha256: (kind == EntryKind::File).then(|| "ab".into()),
            ..IndexEntry::new(path.into(), kind)
        }
    }

    #[test]
    fn show_json_keys_as_documented() {
        let m = manifest("a1");
        let v: serde_json::Value = serde_json::from_str(&json_of(&ShowDoc::new(&m, None))).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "host",
                "id",
                "labels",
                "parent",
                "sources",
                "status",
                "tags",
                "time",
                "tool_version"
            ]
        );
        let src = v["sources"][0].as_object().unwrap();
        let keys: Vec<&String> = src.keys().collect();
        assert_eq!(
            keys,
            [
                "archive",
                "bytes_read",
                "bytes_stored",
                "details",
                "duration_ms",
                "error",
                "files",
                "index",
                "name",
                "origin",
                "problems",
                "skipped",
                "status",
                "type",
                "vanished"
            ]
        );
        let files = [vec![
            entry("a", EntryKind::File, None),
            entry("l", EntryKind::Symlink, Some("a")),
        ]];
        let v: serde_json::Value =
            serde_json::from_str(&json_of(&ShowDoc::new(&m, Some(&files)))).unwrap();
        assert_eq!(v["sources"][0]["file_count"], 1);
        assert_eq!(
            v["sources"][0]["files"],
            serde_json::json!([
                {"path": "a", "type": "file", "size": 8, "mode": 420, "mtime": "2026-03-01T12:30:05.000000005Z",
                 "uid": 0, "gid": 0, "sha256": "ab", "stored": true},
                {"path": "l", "type": "symlink", "size": 8, "mode": 420, "mtime": "2026-03-01T12:30:05.000000005Z",
                 "uid": 0, "gid": 0, "target": "a", "stored": true},
            ])
        );
    }

    #[test]
    fn show_text_lines() {
        let m = manifest("a1");
        let files = [vec![entry("l", EntryKind::Symlink, Some("a"))]];
        let mut out = Vec::new();
        show_text(&mut out, &m, Some(&files)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "snapshot   a1\n\
             time       2026-03-01 12:30:05 UTC\n\
             host       web1\n\
             status     partial\n\
             tags       daily\n\
             label      env=prod\n\
             coffer     0.1.0\n\
             stored     1.5 kB\n\
             \n\
             source db (postgres), ok\n\
             \x20 files     1\n\
             \x20 read      5.0 kB\n\
             \x20 stored    1.5 kB\n\
             \x20 took      0.0 s\n\
             \x20 l 0644            8 2026-03-01 12:30:05 - l -> a\n"
        );
    }

    fn copy_report(check: bool) -> crate::copy::CopyReport {
        crate::copy::CopyReport {
            ok: false,
            src: "/a".into(),
            dst: "s3://b/x".into(),
            dry_run: false,
            check,
            server_side: true,
            copied: crate::copy::Count {
                objects: 2,
                bytes: 2000,
            },
            skipped: crate::copy::Count {
                objects: 1,
                bytes: 10,
            },
            deleted: crate::copy::Count::default(),
            failed: vec![crate::copy::Failed {
                key: "k".into(),
                error: "boom".into(),
            }],
            failed_count: 1,
            differences: vec![],
            differences_count: 0,
            compared: crate::copy::Compared {
                content: 1,
                stored_hash: 0,
                size_mtime: 3,
            },
            delete_skipped: Some("too many deletes".into()),
            duration_ms: 1500,
        }
    }

    #[test]
    fn copy_text_lines() {
        let mut err = Vec::new();
        copy_text(&mut err, &copy_report(false)).unwrap();
        copy_text(&mut err, &copy_report(true)).unwrap();
        copy_errors(&mut err, &copy_report(false)).unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "copy /a -> s3://b/x: copied 2 object(s) (2.0 kB), skipped 1 (10 B), deleted 0 (0 B), failed 1; \
             compared 1 by content, 0 by stored hash, 3 by size+mtime, in 1.5 s (server-side)\n\
             check /a -> s3://b/x: 0 object(s) differ, 1 identical (10 B); compared 1 by content, 0 by stored hash, \
             3 by size+mtime, in 1.5 s\n\
             error: too many deletes\n\
             error: 1 object(s) failed (named above); run the same command again to copy what is left\n"
        );
    }

    #[test]
    fn copy_json_keys_as_documented() {
        let v: serde_json::Value = serde_json::from_str(&json_of(&copy_report(false))).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "check",
                "compared",
                "copied",
                "delete_skipped",
                "deleted",
                "differences",
                "differences_count",
                "dry_run",
                "duration_ms",
                "failed",
                "failed_count",
                "ok",
                "server_side",
                "skipped",
                "src",
                "dst"
            ]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        assert_eq!(
            v["copied"],
            serde_json::json!({"objects": 2, "bytes": 2000})
        );
        assert_eq!(
            v["compared"],
            serde_json::json!({"content": 1, "stored_hash": 0, "size_mtime": 3})
        );
        assert_eq!(
            v["failed"],
            serde_json::json!([{"key": "k", "error": "boom"}])
        );
    }
}
