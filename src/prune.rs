//! `coffer prune`: applies a retention policy ([`crate::retention`]) to a
//! repository, and removes the left-overs of interrupted snapshots.
//!
//! Lock-free by construction, so there is no lock to go stale (guarantee 8
//! of the contract):
//! - a snapshot exists exactly while its manifest `snapshots/<id>` exists; a
//!   removed snapshot loses its manifest first, then its `data/<id>/`
//!   objects, so an interruption leaves only manifest-less data, never a
//!   listed snapshot with missing data;
//! - manifests are listed before data, so the data of a snapshot committed
//!   while prune runs is seen, at worst, as manifest-less: a left-over;
//! - a left-over prefix is deleted only when every one of its objects is
//!   older than the grace period (default 24h) and its manifest still does
//!   not exist just before the deletion. A snapshot being written has fresh
//!   objects (or none listed yet), so it is never touched. The one case this
//!   cannot see is a single snapshot run longer than the grace period whose
//!   newest object is older than it: keep the grace period above the
//!   longest snapshot run;
//! - the data of a kept snapshot is never deleted, and nothing at all is
//!   deleted while a manifest cannot be read (its data would look like a
//!   left-over), as restic refuses to prune a repository it cannot read
//!   whole.
//!
//! Format 2 keeps no `data/<id>/`: its chunks are shared between
//! snapshots, and [`crate::gc`] collects those no kept snapshot uses, in
//! two phases (mark, then sweep in a later prune), also without locks.
//!
//! A filesystem repository has one more kind of left-over: the staging
//! files object_store's `LocalFileSystem` writes an object to before it
//! renames it into place (`data/<id>/<object>#<n>`, `snapshots/<id>#<n>`).
//! A killed writer leaves them at up to full object size, and no listing
//! shows them (object_store hides such names), so prune walks the
//! directory for them and removes those older than the grace period: a
//! writer still running keeps its file fresh.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::outcome::ErrorKind;
use crate::repo::{DATA_PREFIX, RepoError, Repository};
use crate::retention::{self, Candidate, Policy, RetentionError};
use crate::store::StoreError;

/// The default grace period for left-overs of interrupted snapshots.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Deletions in flight at once.
const CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(
        "refusing to prune: {count} snapshot manifest(s) cannot be read, so which data belongs to a snapshot is unknown; nothing was deleted:\n{list}\nrun `coffer verify --all`, then restore or remove the damaged manifest(s) by hand"
    )]
    Damaged { count: usize, list: String },
    #[error(
        "refusing to prune: {count} snapshot manifest(s) were written by a newer coffer, so which data belongs to a snapshot is unknown to this one; nothing was deleted:\n{list}\nupgrade coffer to prune this repository"
    )]
    Newer { count: usize, list: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "the snapshots were pruned, but unused chunks were not collected: {0}; rerun `coffer prune` (what is already deleted stays consistent)"
    )]
    Gc(#[from] crate::gc::GcError),
    #[error(
        "{what}: {source}; rerun `coffer prune` to finish (what is already deleted stays consistent)"
    )]
    Delete {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "{op} {path} (looking for upload temp files of interrupted writes): {source}; check the repository directory's permissions and rerun `coffer prune`"
    )]
    TempFiles {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PruneError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PruneError::Retention(_) => ErrorKind::Usage,
            PruneError::Damaged { .. } => ErrorKind::Integrity,
            PruneError::Newer { .. } | PruneError::TempFiles { .. } => ErrorKind::Operational,
            PruneError::Repo(r) => r.kind(),
            PruneError::Gc(g) => g.kind(),
            PruneError::Delete { source, .. } => source.kind(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub policy: Policy,
    pub dry_run: bool,
    /// Left-overs younger than this stay.
    pub grace: Duration,
    /// The time left-over ages are measured from.
    pub now: DateTime<Utc>,
}

/// One snapshot's verdict.
#[derive(Debug, Serialize)]
pub struct SnapshotVerdict {
    pub id: String,
    pub time: String,
    pub host: String,
    pub tags: Vec<String>,
    /// "keep" or "remove".
    pub action: &'static str,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
    /// Objects (manifest and data) removed, or to be removed in a dry run.
    pub objects: u64,
}

/// A `data/<id>/` prefix without a manifest.
#[derive(Debug, Serialize)]
pub struct Leftover {
    pub id: String,
    pub objects: u64,
    pub bytes: u64,
    /// Last-modified time of its newest object.
    pub newest: String,
    /// "remove" or "keep".
    pub action: &'static str,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub ok: bool,
    pub dry_run: bool,
    pub policy: String,
    pub grace_secs: u64,
    pub snapshots: Vec<SnapshotVerdict>,
    pub kept: usize,
    pub removed: usize,
    /// Objects of removed snapshots deleted (would be, in a dry run).
    pub removed_objects: u64,
    pub leftovers: Vec<Leftover>,
    /// Left-over objects deleted (would be, in a dry run).
    pub leftovers_removed: u64,
    /// Upload temp files of a filesystem repository (always zero for a
    /// cloud store).
    pub temp_files: TempFiles,
    /// Multipart uploads that interrupted snapshots left (their parts are
    /// billed but no listing of objects shows them); `None` where the
    /// store cannot list them (anything but S3) or the listing failed.
    pub multipart_uploads: Option<MultipartUploads>,
    /// Format 2: the packs no kept snapshot needs, marked and deleted
    /// (docs/FORMAT.md section 23); absent for format 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<crate::gc::collect::GcReport>,
}

/// Multipart uploads under the repository's prefix, never completed.
#[derive(Debug, Default, Serialize)]
pub struct MultipartUploads {
    /// Aborted (would be, in a dry run): started before the grace period.
    pub aborted: u64,
    /// Kept: started within the grace period, perhaps still going on.
    pub kept: u64,
}

/// Upload temp files (`<object>#<n>`) found in a filesystem repository.
#[derive(Debug, Default, Serialize)]
pub struct TempFiles {
    /// Removed (would be, in a dry run): older than the grace period.
    pub removed: u64,
    pub removed_bytes: u64,
    /// Kept: younger than the grace period, perhaps still being written.
    pub kept: u64,
    pub kept_bytes: u64,
}

/// Whether `name` is an object_store `LocalFileSystem` staging file name:
/// `<object>#<digits>`. Object names never contain `#` (object_store's
/// listing skips such files as staging files for the same reason).
fn is_temp_name(name: &[u8]) -> bool {
    match name.iter().rposition(|&b| b == b'#') {
        Some(i) => i > 0 && i + 1 < name.len() && name[i + 1..].iter().all(u8::is_ascii_digit),
        None => false,
    }
}

/// Walks the repository directory `root` (never following a symlink) and
/// removes the upload temp files older than `grace`.
fn sweep_temp_files(
    root: &Path,
    now: DateTime<Utc>,
    grace: chrono::Duration,
    dry_run: bool,
) -> Result<TempFiles, PruneError> {
    use std::os::unix::ffi::OsStrExt;
    fn err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PruneError {
        let path = path.to_path_buf();
        move |source| PruneError::TempFiles { op, path, source }
    }
    let mut out = TempFiles::default();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed meanwhile (prune of a left-over prefix): nothing there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(err("list", &dir))?;
            let path = entry.path();
            // `file_type` does not follow a symlink: a link is neither
            // walked into nor removed.
            let ft = entry.file_type().map_err(err("stat", &path))?;
            if ft.is_dir() {
                todo.push(path);
                continue;
            }
            if !ft.is_file() || !is_temp_name(entry.file_name().as_bytes()) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Renamed into place or cleaned up by its writer meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err("stat", &path)(e)),
            };
            let modified: DateTime<Utc> = meta.modified().map_err(err("stat", &path))?.into();
            if now.signed_duration_since(modified) < grace {
                out.kept += 1;
                out.kept_bytes += meta.len();
                continue;
            }
            if !dry_run {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(
                        "removed upload temp file {} ({} bytes)",
                        path.display(),
                        meta.len()
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(err("remove", &path)(e)),
                }
            }
            out.removed += 1;
            out.removed_bytes += meta.len();
        }
    }
    Ok(out)
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn delete_all(repo: &Repository, paths: &[String], what: &str) -> Result<(), PruneError> {
    let results: Vec<Result<(), StoreError>> = futures::stream::iter(paths)
        .map(|p| repo.store.delete(p))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for r in results {
        r.map_err(|source| PruneError::Delete {
            what: what.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Applies `opts.policy` to `repo`; see the module doc for the order of
/// deletions that makes it safe beside running snapshots.
pub async fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport, PruneError> {
    if opts.policy.is_empty() {
        return Err(RetentionError::NoRule.into());
    }
    // Manifests first: see the module doc.
    let (manifests, damaged) = repo.manifests().await?;
    if !damaged.is_empty() {
        let list = damaged
            .iter()
            .map(|d| format!("  snapshot {}: {} ({})", d.id, d.object, d.reason))
            .collect::<Vec<_>>()
            .join("\n");
        let count = damaged.len();
        // Damage is the graver finding: it decides the error (and exit 3).
        return Err(if damaged.iter().all(|d| d.newer.is_some()) {
            PruneError::Newer { count, list }
        } else {
            PruneError::Damaged { count, list }
        });
    }
    let candidates: Vec<Candidate> = manifests
        .iter()
        .map(|m| Candidate {
            id: m.id.clone(),
            time: m.time,
            tags: m.tags.clone(),
        })
        .collect();
    let decisions = retention::apply(&opts.policy, &candidates);

    let mut data: BTreeMap<String, Vec<(String, u64, DateTime<Utc>)>> = BTreeMap::new();
    for (path, size, modified) in repo
        .store
        .list_with_times(DATA_PREFIX)
        .await
        .map_err(RepoError::from)?
    {
        if let Some((snap, _)) = path
            .strip_prefix(DATA_PREFIX)
            .and_then(|rest| rest.split_once('/'))
        {
            data.entry(snap.to_string())
                .or_default()
                .push((path, size, modified));
        }
    }
    let committed: BTreeSet<&str> = manifests.iter().map(|m| m.id.as_str()).collect();
    let by_id: BTreeMap<&str, &crate::manifest::Manifest> =
        manifests.iter().map(|m| (m.id.as_str(), m)).collect();

    let mut verdicts = Vec::new();
    let mut removed_objects = 0u64;
    for d in &decisions {
        let m = by_id[d.id.as_str()];
        let mut objects = 0;
        if !d.keep() {
            let paths: Vec<String> = data
                .get(&d.id)
                .map(|v| v.iter().map(|(p, _, _)| p.clone()).collect())
                .unwrap_or_default();
            objects = 1 + paths.len() as u64;
            if !opts.dry_run {
                // The manifest first: the snapshot stops existing before any
                // of its data goes.
                let manifest = Repository::manifest_object(&d.id);
                repo.store
                    .delete(&manifest)
                    .await
                    .map_err(|source| PruneError::Delete {
                        what: format!("deleting manifest {manifest} of snapshot {}", d.id),
                        source,
                    })?;
                delete_all(
                    repo,
                    &paths,
                    &format!("deleting the data of removed snapshot {}", d.id),
                )
                .await?;
                tracing::info!("removed snapshot {} ({objects} objects)", d.id);
            }
            removed_objects += objects;
        }
        verdicts.push(SnapshotVerdict {
            id: d.id.clone(),
            time: rfc3339(&d.time),
            host: m.host.clone(),
            tags: m.tags.clone(),
            action: if d.keep() { "keep" } else { "remove" },
            reasons: d.reasons.iter().map(|r| r.to_string()).collect(),
            objects,
        });
    }

    // Format 2: the chunks of the snapshots removed, once no kept snapshot
    // and no snapshot being written needs them.
    let chunks = match &repo.chunked {
        Some(c) => Some(
            crate::gc::collect::collect(
                repo,
                c,
                &crate::gc::collect::CollectOptions {
                    grace: opts.grace,
                    now: opts.now,
                    dry_run: opts.dry_run,
                    forget: decisions
                        .iter()
                        .filter(|d| !d.keep())
                        .map(|d| d.id.clone())
                        .collect(),
                },
            )
            .await?,
        ),
        None => None,
    };

    let grace = chrono::Duration::from_std(opts.grace).unwrap_or(chrono::Duration::MAX);
    let mut leftovers = Vec::new();
    let mut leftovers_removed = 0u64;
    for (id, objs) in &data {
        if committed.contains(id.as_str()) {
            continue;
        }
        let newest = objs
            .iter()
            .map(|(_, _, t)| *t)
            .max()
            .expect("a listed prefix has objects");
        let objects = objs.len() as u64;
        let bytes = objs.iter().map(|(_, s, _)| *s).sum();
        let age = opts.now.signed_duration_since(newest);
        let mut lo = Leftover {
            id: id.clone(),
            objects,
            bytes,
            newest: rfc3339(&newest),
            action: "keep",
            why: String::new(),
        };
        if age < grace {
            lo.why = format!(
                "its newest object is younger than the grace period ({}): perhaps a snapshot still being written",
                humantime::format_duration(opts.grace)
            );
            leftovers.push(lo);
            continue;
        }
        // Committed since the manifests were listed (a snapshot that ran
        // longer than the grace period): it is a snapshot, not a left-over.
        match repo.store.size(&Repository::manifest_object(id)).await {
            Ok(_) => {
                lo.why = "its manifest appeared while prune ran".into();
                leftovers.push(lo);
                continue;
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(RepoError::from(e).into()),
        }
        lo.action = "remove";
        lo.why = format!(
            "no manifest, and every object is older than the grace period ({})",
            humantime::format_duration(opts.grace)
        );
        if !opts.dry_run {
            let paths: Vec<String> = objs.iter().map(|(p, _, _)| p.clone()).collect();
            delete_all(
                repo,
                &paths,
                &format!("deleting left-over data/{id}/ of an interrupted snapshot"),
            )
            .await?;
            tracing::info!("removed left-over data/{id}/ ({objects} objects)");
        }
        leftovers_removed += objects;
        leftovers.push(lo);
    }

    let temp_files = match repo.store.local_root() {
        Some(root) => {
            let (root, now, dry_run) = (root.to_path_buf(), opts.now, opts.dry_run);
            tokio::task::spawn_blocking(move || sweep_temp_files(&root, now, grace, dry_run))
                .await
                .expect("the temp file sweep does not panic")?
        }
        None => TempFiles::default(),
    };

    let multipart_uploads = match repo.store.pending_uploads().await {
        Ok(None) => None,
        Ok(Some(pending)) => {
            let mut m = MultipartUploads::default();
            for u in &pending {
                if opts.now - u.initiated < grace {
                    m.kept += 1;
                    continue;
                }
                if !opts.dry_run {
                    repo.store
                        .abort_upload(u)
                        .await
                        .map_err(|source| PruneError::Delete {
                            what: format!(
                                "aborting the multipart upload {} of {} left by an interrupted snapshot",
                                u.id, u.path
                            ),
                            source,
                        })?;
                    tracing::info!("aborted the multipart upload of {} ({})", u.path, u.id);
                }
                m.aborted += 1;
            }
            Some(m)
        }
        Err(e) => {
            // Not a reason to fail the prune: the lifecycle rule the docs
            // recommend does this job too.
            tracing::warn!(
                "{e}; multipart uploads of interrupted snapshots were not cleaned up (see \"Abandoned multipart uploads\" in docs/CONFIG.md)"
            );
            None
        }
    };

    let kept = decisions.iter().filter(|d| d.keep()).count();
    Ok(PruneReport {
        ok: true,
        dry_run: opts.dry_run,
        policy: opts.policy.describe(),
        grace_secs: opts.grace.as_secs(),
        kept,
        removed: decisions.len() - kept,
        snapshots: verdicts,
        removed_objects,
        leftovers,
        leftovers_removed,
        temp_files,
        multipart_uploads,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::is_temp_name;

    #[test]
    fn temp_names_are_object_hash_digits() {
        assert!(is_temp_name(b"0a1b2c#1"));
        assert!(is_temp_name(b"0a1b2c#12"));
        assert!(!is_temp_name(b"0a1b2c"));
        assert!(!is_temp_name(b"#1"));
        assert!(!is_temp_name(b"0a1b2c#"));
        assert!(!is_temp_name(b"0a1b2c#1x"));
    }
}
