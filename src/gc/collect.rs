//! Prune's side of the garbage collection (docs/FORMAT.md 23.3 and 23.4):
//! sweep the marks of earlier prunes whose watched writers have all
//! ended (deleting their packs that no snapshot needs), then mark the
//! packs that no kept snapshot uses, for a later prune to sweep.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    GC_PREFIX, GcError, MarkRecord, Marks, WatchRecord, existing_packs, put_record, seal_record,
    sessions,
};
use crate::chunks::index::IndexedPack;
use crate::chunks::known::KnownChunks;
use crate::chunks::pack;
use crate::chunks::storage::{
    ChunkLocations, ChunkStoreError, Fetcher, INDEX_PREFIX, for_each_index_of, index_names,
    store_index_superseding,
};
use crate::manifest::EntryKind;
use crate::repo::{Chunked, Repository};
use crate::store::Store;

/// What the garbage collection of one prune did (or would do, dry run).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Packs the kept snapshots use, and their bytes.
    pub packs_in_use: u64,
    pub bytes_in_use: u64,
    /// Packs this prune marked as unneeded: a later prune deletes them
    /// once every snapshot that was running has ended.
    pub marked_packs: u64,
    pub marked_bytes: u64,
    /// Packs deleted, marked by an earlier prune.
    pub deleted_packs: u64,
    pub deleted_bytes: u64,
    /// Marked packs kept after all: a snapshot stored since needs them.
    pub kept_packs: u64,
    /// Marks left for a later prune, and why.
    pub waiting: Vec<String>,
    /// Index objects replaced by one that no longer lists deleted packs.
    pub index_objects_replaced: u64,
}

#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// A mark is swept no sooner than this after it was stored, and a
    /// pack no index lists is marked no sooner than this after it was
    /// uploaded.
    pub grace: Duration,
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    /// Snapshots the prune removes (already gone unless a dry run): their
    /// chunks do not count as used.
    pub forget: HashSet<String>,
}

/// Collects the garbage of a format 2 repository (after prune forgot the
/// snapshots its policy removes).
pub async fn collect(
    repo: &Repository,
    chunked: &Arc<Chunked>,
    opts: &CollectOptions,
) -> Result<GcReport, GcError> {
    let (store, keys, repo_id) = (&repo.store, &chunked.keys, repo.id.as_str());
    let grace = chrono::Duration::from_std(opts.grace).unwrap_or(chrono::Duration::MAX);
    let mut report = GcReport::default();

    // 23.4 step 1: which marks may be swept.
    let marks = Marks::load(store, keys, repo_id).await?;
    if !opts.dry_run {
        for w in &marks.stray_watches {
            store.delete(w).await?;
        }
    }
    let alive = sessions(store, keys, repo_id).await?;
    if !opts.dry_run {
        // A killed snapshot's records: its session expired and will never
        // commit without a new heartbeat (which stores a new record), so
        // they only take room.
        let expired: Vec<String> = alive
            .values()
            .filter(|s| !s.alive(opts.now))
            .flat_map(|s| s.records.iter().cloned())
            .collect();
        delete_all(store, expired).await?;
    }
    let mut sweepable = Vec::new();
    for m in &marks.marks {
        let age = opts.now.signed_duration_since(m.stored);
        let Some(watch) = &m.watch else {
            // Its prune died before storing the watch: give the mark up
            // (nothing of it was deleted; its packs are marked again if
            // they are still unneeded).
            if age >= grace && !opts.dry_run {
                store.delete(&format!("{GC_PREFIX}{}/mark", m.gc)).await?;
            }
            continue;
        };
        if age < grace {
            report.waiting.push(format!(
                "mark {} ({} packs): younger than the grace period ({})",
                m.gc,
                m.packs.len(),
                humantime::format_duration(opts.grace)
            ));
            continue;
        }
        let running: Vec<String> = watch
            .iter()
            .filter_map(|sid| {
                alive
                    .get(sid)
                    .filter(|s| s.alive(opts.now))
                    .map(|s| format!("session {sid} on {}", s.host))
            })
            .collect();
        if !running.is_empty() {
            report.waiting.push(format!(
                "mark {} ({} packs): a snapshot that started before it may still need its packs ({})",
                m.gc,
                m.packs.len(),
                running.join(", ")
            ));
            continue;
        }
        sweepable.push(m.gc.clone());
    }

    // 23.4 step 2, after the sessions were checked: the snapshots, the
    // index, the marks and the packs as they are now.
    let (manifests, damaged) = repo
        .manifests()
        .await
        .map_err(|e| GcError::Refused(format!("the snapshots cannot be listed: {e}")))?;
    if let Some(d) = damaged.first() {
        return Err(GcError::Refused(format!(
            "snapshot {} cannot be read ({}), so which chunks are in use is unknown",
            d.id, d.reason
        )));
    }
    let locations = Arc::new(ChunkLocations::load(store, keys, repo_id).await?);
    let fetcher = Arc::new(Fetcher::new(
        store,
        Arc::clone(chunked),
        Arc::clone(&locations),
    ));
    let kept: Vec<_> = manifests
        .into_iter()
        .filter(|m| !opts.forget.contains(&m.id))
        .collect();
    let used = used_chunks(&kept, fetcher).await?;
    let marks = Marks::load(store, keys, repo_id).await?;
    let marked = marks.marked();
    let existing = existing_packs(store).await?;

    // Per pack (by id): whether a kept snapshot uses a chunk of it, and
    // whether it holds a used chunk that no existing unmarked pack holds.
    let mut index_of: HashMap<[u8; 32], usize> = HashMap::new();
    for p in locations.packs() {
        let n = index_of.len();
        index_of.entry(*p).or_insert(n);
    }
    let mut uses = vec![false; index_of.len()];
    let mut needs = vec![false; index_of.len()];
    for id in locations.ids() {
        if !used.contains(id) {
            continue;
        }
        let places: Vec<&[u8; 32]> = locations.locate_all(id).map(|(p, _)| p).collect();
        let safe = places
            .iter()
            .any(|p| existing.contains_key(*p) && !marked.contains(*p));
        for p in places {
            uses[index_of[p]] = true;
            if !safe {
                needs[index_of[p]] = true;
            }
        }
    }
    for (p, n) in &index_of {
        if uses[*n]
            && let Some((size, _)) = existing.get(p)
        {
            report.packs_in_use += 1;
            report.bytes_in_use += size;
        }
    }

    // 23.4 steps 3 and 4: sweep.
    let mut deleted = HashSet::new();
    for m in marks.marks.iter().filter(|m| sweepable.contains(&m.gc)) {
        let mut doomed = Vec::new();
        for p in &m.packs {
            let Some((size, _)) = existing.get(p) else {
                continue;
            };
            if index_of.get(p).is_some_and(|n| needs[*n]) {
                report.kept_packs += 1;
                continue;
            }
            doomed.push(pack::object_name(p));
            deleted.insert(*p);
            report.deleted_packs += 1;
            report.deleted_bytes += size;
        }
        if !opts.dry_run {
            delete_all(store, doomed).await?;
            // The packs before the mark: while the mark exists, another
            // sweep does not count these packs as copies.
            store.delete(&format!("{GC_PREFIX}{}/mark", m.gc)).await?;
            store.delete(&format!("{GC_PREFIX}{}/watch", m.gc)).await?;
        }
    }
    // Also when this prune deleted nothing: one killed mid-sweep may have
    // deleted packs without replacing the index objects that name them.
    let stale = locations
        .packs()
        .iter()
        .any(|p| !existing.contains_key(p) || deleted.contains(p));
    if !opts.dry_run && stale {
        report.index_objects_replaced = replace_indexes(repo, chunked).await?;
    }

    // 23.3: mark what no kept snapshot uses.
    let still_marked: HashSet<[u8; 32]> = marks
        .marks
        .iter()
        .filter(|m| !sweepable.contains(&m.gc))
        .flat_map(|m| m.packs.iter().copied())
        .collect();
    let mut candidates = Vec::new();
    for (p, (size, modified)) in &existing {
        if deleted.contains(p) || still_marked.contains(p) {
            continue;
        }
        let unneeded = match index_of.get(p) {
            Some(n) => !uses[*n],
            // Not indexed: a snapshot still being written may be filling
            // it; only an old one is a left-over.
            None => opts.now.signed_duration_since(*modified) >= grace,
        };
        if unneeded {
            candidates.push(*p);
            report.marked_packs += 1;
            report.marked_bytes += size;
        }
    }
    if !candidates.is_empty() && !opts.dry_run {
        let gid = crate::crypto::random_id(8);
        let object = format!("{GC_PREFIX}{gid}/mark");
        let mark = MarkRecord {
            gc: gid.clone(),
            created: Utc::now(),
            packs: candidates.iter().map(hex::encode).collect(),
        };
        put_record(store, &object, seal_record(keys, repo_id, &object, &mark)).await?;
        // Then the sessions: every writer that started before the mark
        // and could still be deduplicating against its packs.
        let now = Utc::now();
        let watch = WatchRecord {
            gc: gid.clone(),
            sessions: sessions(store, keys, repo_id)
                .await?
                .into_iter()
                .filter(|(_, s)| s.alive(now))
                .map(|(sid, _)| sid)
                .collect(),
        };
        let wobj = format!("{GC_PREFIX}{gid}/watch");
        put_record(store, &wobj, seal_record(keys, repo_id, &wobj, &watch)).await?;
    }
    Ok(report)
}

/// Deletes `names`, a few at a time (a sweep may delete thousands of
/// packs), and returns once every deletion has ended.
async fn delete_all(store: &Store, names: Vec<String>) -> Result<(), GcError> {
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(names)
        .map(|n| async move { store.delete(&n).await })
        .buffer_unordered(DELETIONS)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Deletions in flight at once.
const DELETIONS: usize = 16;

/// Every chunk the snapshots use: their lists' chunks and their files'.
/// A list that cannot be read stops the collection (nothing is deleted on
/// a guess).
async fn used_chunks(
    manifests: &[crate::manifest::Manifest],
    fetcher: Arc<Fetcher>,
) -> Result<KnownChunks, GcError> {
    let mut lists = Vec::new();
    for m in manifests {
        for s in &m.sources {
            if let Some(list) = &s.list {
                lists.push((crate::read::Where::new(m, s), list.clone()));
            }
        }
    }
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut used = KnownChunks::default();
        for (at, list) in lists {
            for id in &list.chunks {
                used.insert(id);
            }
            let what = format!("snapshot {} source {}", at.snapshot, at.source);
            for line in
                crate::read::chunked::list_lines(Arc::clone(&fetcher), handle.clone(), list, at)
            {
                let line = line.map_err(|e| {
                    GcError::Refused(format!(
                        "the file list of {what} cannot be read ({e}), so which chunks are in use is unknown; run `coffer verify --all`"
                    ))
                })?;
                if line.kind == EntryKind::File {
                    for id in line.chunks.iter().flatten() {
                        used.insert(id);
                    }
                }
            }
        }
        Ok(used)
    })
    .await
    .map_err(|e| GcError::Internal(format!("reading the file lists: {e}")))?
}

/// Replaces the index objects that list packs no longer in the store with
/// one that lists only their packs that are (23.4 step 4); returns how many
/// were replaced. Index objects are listed before packs: the packs of an
/// index object are stored before it, so a pack it lists and the listing
/// lacks was deleted.
async fn replace_indexes(repo: &Repository, chunked: &Chunked) -> Result<u64, GcError> {
    let (store, keys, repo_id) = (&repo.store, &chunked.keys, repo.id.as_str());
    let names = index_names(store).await?;
    let existing = existing_packs(store).await?;
    let mut replaced = Vec::new();
    let mut keep: BTreeMap<[u8; 32], IndexedPack> = BTreeMap::new();
    for name in names {
        let res = for_each_index_of(store, keys, repo_id, [name], |name, c| {
            if c.packs.iter().all(|p| existing.contains_key(&p.pack)) {
                return;
            }
            replaced.push(name.to_string());
            for p in c.packs {
                if existing.contains_key(&p.pack) {
                    keep.entry(p.pack).or_insert(p);
                }
            }
        })
        .await;
        match res {
            // Replaced by another prune meanwhile.
            Ok(()) | Err(ChunkStoreError::Store(crate::store::StoreError::NotFound { .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if replaced.is_empty() {
        return Ok(0);
    }
    let superseded: Vec<[u8; 8]> = replaced
        .iter()
        .filter_map(|n| {
            let mut b = [0u8; 8];
            hex::decode_to_slice(n.strip_prefix(INDEX_PREFIX)?, &mut b).ok()?;
            Some(b)
        })
        .collect();
    if !keep.is_empty() {
        store_index_superseding(
            store,
            keys,
            repo_id,
            superseded,
            keep.into_values().collect(),
        )
        .await?;
    }
    for n in &replaced {
        store.delete(n).await?;
    }
    Ok(replaced.len() as u64)
}
