//! The writer's side of the garbage collection (docs/FORMAT.md 23.2): a
//! session record that says "a snapshot is being written" and is renewed
//! while it runs, what the snapshot may deduplicate against (chunks in
//! packs that exist and are not marked), and the check before its
//! manifest is stored that every chunk it uses is still in such a pack.

use std::collections::HashSet;
use std::io::{BufReader, Read, Seek};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::{
    GcError, Marks, Packs, SESSIONS_PREFIX, SessionRecord, Timing, existing_packs, put_record,
    seal_record,
};
use crate::chunks::ChunkId;
use crate::chunks::known::KnownChunks;
use crate::chunks::pack::BlobEntry;
use crate::chunks::storage::{ChunkLocations, Fetcher, for_each_index};
use crate::chunks::write::ChunkWriter;
use crate::repo::{Chunked, Repository, host_name};
use crate::store::Store;

/// A running writer's session: record `<n>` exists while it runs.
pub struct Session {
    inner: Arc<Inner>,
    beat: tokio::task::JoinHandle<()>,
    pub timing: Timing,
}

struct Inner {
    store: Store,
    chunked: Arc<Chunked>,
    repo_id: String,
    record: SessionRecord,
    /// The number of the newest record stored, and when its PUT began.
    state: tokio::sync::Mutex<(u64, Instant)>,
}

impl Inner {
    fn object(&self, n: u64) -> String {
        format!("{SESSIONS_PREFIX}{}/{n}", self.record.session)
    }

    /// Stores the next record, then deletes the one before; returns when
    /// the new one's PUT began.
    async fn beat(&self) -> Result<Instant, GcError> {
        let mut st = self.state.lock().await;
        let began = Instant::now();
        let n = st.0 + 1;
        let object = self.object(n);
        let bytes = seal_record(&self.chunked.keys, &self.repo_id, &object, &self.record);
        put_record(&self.store, &object, bytes).await?;
        let old = self.object(st.0);
        *st = (n, began);
        drop(st);
        if let Err(e) = self.store.delete(&old).await {
            tracing::debug!("session record {old} stays until it expires: {e}");
        }
        Ok(began)
    }
}

impl Session {
    /// Stores record 0 and starts the heartbeat. Call before reading what
    /// the repository holds (23.2 step 1).
    pub async fn start(repo: &Repository, chunked: &Arc<Chunked>) -> Result<Session, GcError> {
        let timing = Timing {
            lease: super::lease(),
        };
        let record = SessionRecord {
            session: crate::crypto::random_id(8),
            host: host_name(),
            started: Utc::now(),
            lease: timing.lease.as_secs_f64(),
        };
        let began = Instant::now();
        let inner = Arc::new(Inner {
            store: repo.store.clone(),
            chunked: Arc::clone(chunked),
            repo_id: repo.id.clone(),
            record,
            state: tokio::sync::Mutex::new((0, began)),
        });
        let first = inner.object(0);
        let bytes = seal_record(&chunked.keys, &repo.id, &first, &inner.record);
        put_record(&repo.store, &first, bytes).await?;
        let every = timing.heartbeat_every();
        let beater = Arc::clone(&inner);
        let beat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = beater.beat().await {
                    // The commit's own heartbeat must succeed; until then
                    // the snapshot goes on.
                    tracing::warn!("session heartbeat failed: {e}");
                }
            }
        });
        Ok(Session {
            inner,
            beat,
            timing,
        })
    }

    /// Renews the session now; returns when the successful PUT began.
    pub async fn heartbeat(&self) -> Result<Instant, GcError> {
        self.inner.beat().await
    }

    /// When the PUT of the newest stored record began.
    pub async fn last_beat(&self) -> Instant {
        self.inner.state.lock().await.1
    }

    /// Ends the session: its newest record is deleted (best effort: one
    /// left behind expires after its lease).
    pub async fn end(self) {
        self.beat.abort();
        let _ = self.beat.await;
        // Every record of the session: a heartbeat stopped between its
        // PUT and its bookkeeping may have left one more than it counted.
        let prefix = format!("{SESSIONS_PREFIX}{}/", self.inner.record.session);
        let mut names: Vec<String> = match self.inner.store.list(&prefix).await {
            Ok(l) => l.into_iter().map(|(n, _)| n).collect(),
            Err(_) => Vec::new(),
        };
        let n = self.inner.state.lock().await.0;
        let newest = self.inner.object(n);
        if !names.contains(&newest) {
            names.push(newest);
        }
        for name in names {
            let _ = self.inner.store.delete(&name).await;
        }
    }
}

/// What a writer found in the repository when it started: the chunks it
/// may deduplicate against, and the packs that hold them.
pub struct WriterView {
    pub known: KnownChunks,
    /// Packs that existed, were indexed and were not marked.
    pub packs: HashSet<[u8; 32]>,
}

/// Reads marks, the packs and the index objects (after the session's first
/// record: 23.2 step 1). With `locations` (already loaded by a writer that
/// reads its parents' lists), the index is not read again.
pub async fn writer_view(
    repo: &Repository,
    chunked: &Chunked,
    locations: Option<&ChunkLocations>,
) -> Result<WriterView, GcError> {
    let marked = Marks::load(&repo.store, &chunked.keys, &repo.id)
        .await?
        .marked();
    let existing = existing_packs(&repo.store).await?;
    let usable = |p: &[u8; 32]| existing.contains_key(p) && !marked.contains(p);
    match locations {
        Some(l) => {
            let packs = l.packs().iter().filter(|p| usable(p)).copied().collect();
            Ok(WriterView {
                known: KnownChunks::from_ids(l.ids_in(usable)),
                packs,
            })
        }
        None => {
            let mut ids = Vec::new();
            let mut packs = HashSet::new();
            for_each_index(&repo.store, &chunked.keys, &repo.id, |_, c| {
                for p in c.packs.into_iter().filter(|p| usable(&p.pack)) {
                    packs.insert(p.pack);
                    ids.extend(p.blobs.into_iter().map(|b| b.id));
                }
            })
            .await?;
            Ok(WriterView {
                known: KnownChunks::from_ids(ids),
                packs,
            })
        }
    }
}

/// The chunks a snapshot uses, 32 bytes each in a temporary file (a
/// snapshot of millions of chunks must not hold them in memory).
pub type RefLog = std::fs::File;

/// Every id in `log`.
fn read_refs(log: &mut RefLog) -> std::io::Result<impl Iterator<Item = std::io::Result<ChunkId>>> {
    log.rewind()?;
    let mut r = BufReader::new(log.try_clone()?);
    Ok(std::iter::from_fn(move || {
        let mut b = [0u8; 32];
        match r.read_exact(&mut b) {
            Ok(()) => Some(Ok(ChunkId(b))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => Some(Err(e)),
        }
    }))
}

/// Returns when the manifest may be stored (23.2 step 3): every chunk the
/// snapshot uses is in a pack that exists and is not marked (chunks found
/// only in marked packs are copied into new packs first), and a heartbeat
/// that succeeded began less than the lease's commit window ago. Store the
/// manifest right away. `packs` are the snapshot's own packs and those of
/// its view.
pub async fn ready_to_commit(
    repo: &Repository,
    chunked: &Arc<Chunked>,
    session: &Session,
    packs: HashSet<[u8; 32]>,
    refs: &mut RefLog,
    level: i32,
) -> Result<(), GcError> {
    let within = session.timing.commit_within();
    let mut rounds = 0u32;
    // After copying, the next round checks chunk by chunk (the copies'
    // packs are not in `packs`).
    let mut copied = false;
    loop {
        rounds += 1;
        if rounds > 10 {
            return Err(GcError::Lease {
                lease: humantime::format_duration(session.timing.lease).to_string(),
                why: "ten rounds of copying chunks out of packs that prunes marked did not settle"
                    .into(),
            });
        }
        // A heartbeat that began a moment ago serves (a short snapshot
        // then costs no second record); otherwise renew now.
        let last = session.last_beat().await;
        let began = if !copied && last.elapsed() < within / 2 {
            last
        } else {
            session.heartbeat().await?
        };
        let marks = Marks::load(&repo.store, &chunked.keys, &repo.id).await?;
        let marked = marks.marked();
        let existing = existing_packs(&repo.store).await?;
        let all_safe = packs
            .iter()
            .all(|p| existing.contains_key(p) && !marked.contains(p));
        if copied || !all_safe {
            // Some pack this snapshot may use was marked or deleted since
            // it started: find, chunk by chunk, what is only there.
            let lease = session.timing.lease;
            let copies = at_risk(repo, chunked, &marked, &existing, refs, lease).await?;
            if !copies.is_empty() {
                tracing::info!(
                    "{} chunks of this snapshot are only in packs a prune marked; copying them",
                    copies.len()
                );
                copy_chunks(repo, chunked, copies, level).await?;
                copied = true;
                continue;
            }
        }
        if began.elapsed() >= within {
            // Too slow since the heartbeat: a prune may already count
            // this session as ended. Renew and check again.
            continue;
        }
        return Ok(());
    }
}

/// Chunks the snapshot uses that no existing unmarked pack holds, with
/// the marked pack each can be copied from.
async fn at_risk(
    repo: &Repository,
    chunked: &Chunked,
    marked: &HashSet<[u8; 32]>,
    existing: &Packs,
    refs: &mut RefLog,
    lease: std::time::Duration,
) -> Result<Vec<(ChunkId, [u8; 32], BlobEntry)>, GcError> {
    let mut safe = Vec::new();
    let mut only_marked: std::collections::HashMap<ChunkId, ([u8; 32], BlobEntry)> =
        Default::default();
    for_each_index(&repo.store, &chunked.keys, &repo.id, |_, c| {
        for p in c.packs {
            if !existing.contains_key(&p.pack) {
                continue;
            }
            if marked.contains(&p.pack) {
                for b in p.blobs {
                    only_marked.entry(b.id).or_insert((p.pack, b));
                }
            } else {
                safe.extend(p.blobs.into_iter().map(|b| b.id));
            }
        }
    })
    .await?;
    let safe = KnownChunks::from_ids(safe);
    let lease = humantime::format_duration(lease).to_string();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let ids = read_refs(refs).map_err(|e| GcError::Internal(format!("chunk log: {e}")))?;
    for id in ids {
        let id = id.map_err(|e| GcError::Internal(format!("chunk log: {e}")))?;
        if safe.contains(&id) || !seen.insert(id) {
            continue;
        }
        match only_marked.get(&id) {
            Some((pack, entry)) => out.push((id, *pack, *entry)),
            None => {
                return Err(GcError::Vanished {
                    chunk: id.to_string(),
                    lease,
                });
            }
        }
    }
    Ok(out)
}

/// Reads each chunk from its marked pack (which exists until every
/// session that started before the mark has ended) and stores it in new
/// packs with their own index object.
async fn copy_chunks(
    repo: &Repository,
    chunked: &Arc<Chunked>,
    copies: Vec<(ChunkId, [u8; 32], BlobEntry)>,
    level: i32,
) -> Result<(), GcError> {
    use crate::chunks::index::{IndexContent, IndexedPack};
    let locations = ChunkLocations::from_contents([IndexContent {
        superseded: Vec::new(),
        packs: copies
            .iter()
            .map(|(_, pack, entry)| IndexedPack {
                pack: *pack,
                blobs: vec![*entry],
            })
            .collect(),
    }]);
    let fetcher = Fetcher::new(&repo.store, Arc::clone(chunked), Arc::new(locations));
    let mut writer = ChunkWriter::start(
        &repo.store,
        &repo.id,
        Arc::clone(chunked),
        KnownChunks::default(),
        level,
        false,
    );
    let _source = writer.sink();
    for (id, _, entry) in &copies {
        let data = fetcher.fetch(*id).await?;
        writer
            .copy_chunk(*id, entry.kind, data)
            .await
            .map_err(|e| GcError::Internal(format!("queueing a copied chunk: {e}")))?;
    }
    writer.finish().await?;
    Ok(())
}
