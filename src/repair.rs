//! `coffer repair index` (format 2, docs/FORMAT.md sections 18 and 19):
//! rebuilds the index from the packs. Every pack carries its own sealed
//! table of contents, so an index object that was lost or damaged can be
//! written again from the packs it listed: each pack that no readable
//! index object lists is downloaded, checked against its name, and its
//! table read into one new index object; damaged index objects are then
//! deleted (their packs are listed by the new one).

use serde::Serialize;

use crate::chunks::index::IndexedPack;
use crate::chunks::pack::{self, HEADER_LEN, PackReader};
use crate::chunks::storage::{ChunkStoreError, for_each_index_of, index_names, store_index};
use crate::gc::{GcError, existing_packs};
use crate::outcome::{ErrorKind, Outcome};
use crate::repo::Repository;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("this repository is format {0}: only format 2 has packs and index objects to repair")]
    NotChunked(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunks(#[from] ChunkStoreError),
    #[error(transparent)]
    Gc(#[from] GcError),
}

impl RepairError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RepairError::NotChunked(_) => ErrorKind::Usage,
            RepairError::Store(s) => s.kind(),
            RepairError::Chunks(c) => c.kind(),
            RepairError::Gc(g) => g.kind(),
        }
    }
}

/// What `repair index` found and did (would do, with `dry_run`).
#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    /// True when every pack is indexed now (or would be).
    pub ok: bool,
    pub dry_run: bool,
    /// Packs in the store.
    pub packs: u64,
    /// Packs no readable index object listed, whose tables were read into
    /// the new index object.
    pub reindexed_packs: u64,
    pub reindexed_chunks: u64,
    /// The index object written (none when nothing needed it, or dry run).
    pub index_object: Option<String>,
    /// Index objects that could not be read, deleted once the new one was
    /// stored (would be, in a dry run).
    pub damaged_index_objects: Vec<String>,
    /// Packs that could not be read: what is wrong with each. Their chunks
    /// stay missing; `verify` names the snapshots that need them.
    pub unreadable_packs: Vec<String>,
}

impl RepairReport {
    /// Exit 3 when a pack could not be read (damage remains), else 0.
    pub fn outcome(&self) -> Outcome {
        if self.unreadable_packs.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failed(ErrorKind::Integrity)
        }
    }
}

/// Rebuilds the index objects of `repo` from its packs.
pub async fn repair_index(repo: &Repository, dry_run: bool) -> Result<RepairReport, RepairError> {
    let Some(chunked) = &repo.chunked else {
        return Err(RepairError::NotChunked(repo.format));
    };
    let (store, keys, repo_id) = (&repo.store, &chunked.keys, repo.id.as_str());
    let mut rep = RepairReport {
        dry_run,
        ..RepairReport::default()
    };
    // Index objects first, then packs: a pack a writer uploads after the
    // listing is indexed by that writer.
    let names = index_names(store).await?;
    let mut indexed = std::collections::HashSet::new();
    for name in names {
        let res = for_each_index_of(store, keys, repo_id, [name.clone()], |_, c| {
            indexed.extend(c.packs.into_iter().map(|p| p.pack));
        })
        .await;
        match res {
            Ok(()) => {}
            Err(ChunkStoreError::Store(StoreError::NotFound { .. })) => {}
            Err(ChunkStoreError::Store(e)) if e.kind() != ErrorKind::Integrity => {
                return Err(e.into());
            }
            Err(e) => {
                tracing::warn!("{e}");
                rep.damaged_index_objects.push(name);
            }
        }
    }
    let existing = existing_packs(store).await?;
    rep.packs = existing.len() as u64;
    let mut rebuilt = Vec::new();
    for id in existing.keys().filter(|p| !indexed.contains(*p)) {
        let name = pack::object_name(id);
        let bytes = match store.get_capped(&name, pack::MAX_PACK).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) if e.kind() == ErrorKind::Integrity => {
                rep.unreadable_packs.push(format!("pack {name}: {e}"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        use sha2::{Digest, Sha256};
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        if &sha != id {
            rep.unreadable_packs.push(format!(
                "pack {name}: its bytes hash to {}, not to its name (damaged)",
                hex::encode(sha)
            ));
            continue;
        }
        let table = PackReader::new(
            keys,
            &bytes[..HEADER_LEN.min(bytes.len())],
            chunked.params.max,
        )
        .and_then(|r| r.table(&bytes));
        match table {
            Ok(blobs) => {
                rep.reindexed_packs += 1;
                rep.reindexed_chunks += blobs.len() as u64;
                rebuilt.push(IndexedPack { pack: *id, blobs });
            }
            Err(e) => rep.unreadable_packs.push(format!("pack {name}: {e}")),
        }
    }
    if !dry_run {
        if !rebuilt.is_empty() {
            rep.index_object = Some(store_index(store, keys, repo_id, rebuilt).await?);
        }
        // Their packs are listed by the new index object now (or were
        // listed by none that could be read).
        for n in &rep.damaged_index_objects {
            store.delete(n).await?;
        }
    }
    rep.ok = rep.unreadable_packs.is_empty();
    Ok(rep)
}
