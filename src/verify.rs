//! `coffer verify`: check that a snapshot's stored objects are intact.
//!
//! Without `--deep`: every manifest opens, and every archive and index object
//! is present with the size and SHA-256 the manifest records (downloaded and
//! hashed, not decrypted). With `--deep`: every object is also authenticated
//! segment by segment, decompressed, and every file re-hashed and compared
//! with its index entry, by the same walk every reader uses
//! ([`crate::read`]). Damage is collected, not fatal: one report names every
//! damaged snapshot, source and file.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use serde::Serialize;

use crate::chunks::ChunkId;
use crate::manifest::{EntryKind, Manifest, ObjectRef, SourceRecord, SourceStatus};
use crate::read::{Flow, ReadError, SourceStreams, Where, expected_files, read_lines};
use crate::repo::{RepoError, Repository};
use crate::store::StoreError;

#[derive(Debug, Serialize)]
pub struct SourceCheck {
    pub name: String,
    pub ok: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SnapshotCheck {
    pub id: String,
    pub ok: bool,
    pub sources: Vec<SourceCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The manifest is intact but of a newer format version: not damage.
    #[serde(skip)]
    pub newer: bool,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub deep: bool,
    pub snapshots: Vec<SnapshotCheck>,
}

impl VerifyReport {
    /// Damage anywhere is an integrity failure; manifests of a newer coffer
    /// that could not be checked (and nothing damaged) are operational.
    pub fn outcome(&self) -> crate::Outcome {
        use crate::{ErrorKind, Outcome};
        if self.ok {
            Outcome::Ok
        } else if self.snapshots.iter().all(|s| s.ok || s.newer) {
            Outcome::Failed(ErrorKind::Operational)
        } else {
            Outcome::Failed(ErrorKind::Integrity)
        }
    }
}

/// Which snapshots to check.
pub enum Selection {
    All,
    One(Manifest),
}

pub async fn verify(
    repo: &Repository,
    sel: Selection,
    deep: bool,
) -> Result<VerifyReport, RepoError> {
    let mut checks = Vec::new();
    let manifests = match sel {
        Selection::One(m) => vec![m],
        Selection::All => {
            let (good, bad) = repo.manifests().await?;
            for d in bad {
                let error = if d.newer.is_some() {
                    d.reason
                } else {
                    format!("manifest {} is damaged: {}", d.object, d.reason)
                };
                checks.push(SnapshotCheck {
                    id: d.id,
                    ok: false,
                    sources: Vec::new(),
                    error: Some(error),
                    newer: d.newer.is_some(),
                });
            }
            good
        }
    };
    // Format 2: packs are shared between snapshots; each is checked once.
    let mut packs = PackVerdicts::default();
    for m in manifests {
        let mut sources = Vec::new();
        for src in &m.sources {
            sources.push(check_source(repo, &m, src, deep, &mut packs).await?);
        }
        checks.push(SnapshotCheck {
            ok: sources.iter().all(|s| s.ok),
            id: m.id.clone(),
            sources,
            error: None,
            newer: false,
        });
    }
    Ok(VerifyReport {
        ok: checks.iter().all(|c| c.ok),
        deep,
        snapshots: checks,
    })
}

async fn check_source(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    deep: bool,
    packs: &mut PackVerdicts,
) -> Result<SourceCheck, RepoError> {
    let mut problems = Vec::new();
    // Format 2: plain verify hashes the packs; --deep reads and checks
    // every chunk instead (as format 1's --deep authenticates every
    // segment instead of hashing the objects).
    if src.list.is_some() && src.status != SourceStatus::Failed && !deep {
        problems = check_chunks(repo, m, src, packs).await?;
    }
    if src.status == SourceStatus::Failed {
        // Nothing was stored for it; the snapshot says so already.
        return Ok(SourceCheck {
            name: src.name.clone(),
            ok: true,
            problems,
        });
    }
    let objects: Vec<&ObjectRef> = src.archive.iter().chain(src.index.iter()).collect();
    for o in &objects {
        if let Some(p) = check_object(repo, o, !deep).await? {
            problems.push(p);
        }
    }
    if deep && problems.is_empty() {
        let repo2 = repo.clone();
        let m2 = m.clone();
        let src2 = src.clone();
        let res = tokio::task::spawn_blocking(move || deep_check(&repo2, &m2, &src2))
            .await
            .map_err(|e| RepoError::Internal(format!("a verify task failed: {e}")))?;
        match res {
            Ok(mut p) => problems.append(&mut p),
            Err(ReadError::Store(e)) => return Err(RepoError::Store(e)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Ok(SourceCheck {
        name: src.name.clone(),
        ok: problems.is_empty(),
        problems,
    })
}

/// What plain `verify` found of each pack it hashed: `None` when intact.
type PackVerdicts = std::collections::HashMap<[u8; 32], Option<String>>;

/// Format 2 (docs/FORMAT.md section 22, step 4): every chunk of the source
/// (its list's and its files') is in an index, and every pack holding one
/// is present and hashes to its name.
async fn check_chunks(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    verdicts: &mut PackVerdicts,
) -> Result<Vec<String>, RepoError> {
    let at = Where::new(m, src);
    let fetcher = match repo.fetcher().await {
        Ok(f) => f,
        Err(e) if e.kind() == crate::ErrorKind::Integrity => return Ok(vec![e.to_string()]),
        Err(e) => return Err(RepoError::Internal(e.to_string())),
    };
    let (repo2, src2, f2) = (repo.clone(), src.clone(), Arc::clone(&fetcher));
    let res = tokio::task::spawn_blocking(move || {
        let locations = f2.locations();
        // Per chunk, the packs that hold it (more than one after a chunk
        // was copied out of a marked pack, FORMAT.md 23.2): any one intact
        // is enough.
        let mut packs: BTreeSet<Vec<[u8; 32]>> = BTreeSet::new();
        let mut problems = Vec::new();
        let mut place = |file: Option<&str>, id: &ChunkId| {
            let mut all: Vec<[u8; 32]> = locations.locate_all(id).map(|(p, _)| *p).collect();
            if !all.is_empty() {
                all.sort();
                all.dedup();
                packs.insert(all);
                return;
            }
            problems.push(match file {
                Some(f) => format!("file {f}: chunk {id} is in no index (missing)"),
                None => format!("file list: chunk {id} is in no index (missing)"),
            });
        };
        for id in &src2.list.as_ref().expect("format 2").chunks {
            place(None, id);
        }
        let listed = read_lines(&repo2, &at, &src2, |e| {
            if e.stored && e.kind == EntryKind::File {
                for id in e.chunks.iter().flatten() {
                    place(Some(&e.path), id);
                }
            }
        });
        (packs, problems, listed)
    })
    .await
    .map_err(|e| RepoError::Internal(format!("a verify task failed: {e}")))?;
    let (packs, mut problems, listed) = res;
    match listed {
        Ok(()) => {}
        Err(ReadError::Store(e)) => return Err(RepoError::Store(e)),
        Err(e) => problems.push(e.to_string()),
    }
    for alternatives in packs {
        let mut first_problem = None;
        for p in &alternatives {
            if let std::collections::hash_map::Entry::Vacant(slot) = verdicts.entry(*p) {
                slot.insert(check_pack(repo, p).await?);
            }
            match verdicts.get(p) {
                Some(Some(problem)) => {
                    first_problem.get_or_insert_with(|| problem.clone());
                }
                _ => {
                    first_problem = None;
                    break;
                }
            }
        }
        if let Some(problem) = first_problem
            && !problems.contains(&problem)
        {
            problems.push(problem);
        }
    }
    Ok(problems)
}

/// A pack is present and its bytes hash to its name.
async fn check_pack(repo: &Repository, id: &[u8; 32]) -> Result<Option<String>, RepoError> {
    let name = crate::chunks::pack::object_name(id);
    let sha = match hash_object(repo, &name, "pack").await? {
        Ok((_, sha)) => sha,
        Err(problem) => return Ok(Some(problem)),
    };
    if sha != hex::encode(id) {
        return Ok(Some(format!(
            "pack {name}: its bytes hash to {sha}, not to its name (damaged)"
        )));
    }
    Ok(None)
}

/// Downloads an object whole and hashes it: its size and SHA-256, or the
/// problem to report (missing, unreadable); a store failure is an error.
async fn hash_object(
    repo: &Repository,
    name: &str,
    what: &str,
) -> Result<Result<(u64, String), String>, RepoError> {
    let mut r = repo.store.download(name);
    let (r, res) = tokio::task::spawn_blocking(move || {
        let res = io::copy(&mut r, &mut crate::progress::Counted(io::sink()));
        (r, res)
    })
    .await
    .map_err(|e| RepoError::Internal(format!("a verify task failed: {e}")))?;
    if let Err(e) = res {
        return match e.into_inner().map(|b| b.downcast::<StoreError>()) {
            Some(Ok(s)) => match *s {
                StoreError::NotFound { .. } => Ok(Err(format!("{what} {name} is missing"))),
                other => Err(other.into()),
            },
            _ => Ok(Err(format!("{what} {name} could not be read"))),
        };
    }
    Ok(Ok(r.digest()))
}

/// Presence and size; with `hash`, also the SHA-256 of the stored bytes.
async fn check_object(
    repo: &Repository,
    o: &ObjectRef,
    hash: bool,
) -> Result<Option<String>, RepoError> {
    let size = match repo.store.size(&o.object).await {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Some(format!("object {} is missing", o.object)));
        }
        // A broken repository layout is damage to report, like a missing
        // object, not an operational failure.
        Err(e) if e.kind() == crate::ErrorKind::Integrity => return Ok(Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    if size != o.size {
        return Ok(Some(format!(
            "object {} has {size} bytes, the manifest records {}",
            o.object, o.size
        )));
    }
    if !hash {
        return Ok(None);
    }
    let object = o.object.clone();
    let (n, sha) = match hash_object(repo, &object, "object").await? {
        Ok(d) => d,
        Err(problem) => return Ok(Some(problem)),
    };
    if n != o.size || sha != o.sha256 {
        return Ok(Some(format!(
            "object {object}: SHA-256 {sha} differs from the manifest's {}",
            o.sha256
        )));
    }
    Ok(None)
}

/// Reads a source's archive and index to the end, in step, re-hashing every
/// file ([`crate::read`] does every check). Returns per-file problems;
/// stream-level damage is an error.
fn deep_check(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
) -> Result<Vec<String>, ReadError> {
    let mut streams = SourceStreams::open(repo, m, src)?;
    let mut problems = Vec::new();
    let res = streams.walk(|e| -> Result<Flow, ReadError> {
        if e.kind != EntryKind::File {
            return Ok(Flow::Next);
        }
        // A file that differs from its index line is reported, and the
        // check goes on with the next.
        match e.skip() {
            Err(ReadError::Content { .. }) => problems.push(format!(
                "file {}: content does not match its size/SHA-256 in the index",
                e.rel
            )),
            // Format 2: a damaged or missing chunk fails its file only.
            Err(err @ ReadError::Chunk { file: Some(_), .. })
                if err.kind() != crate::ErrorKind::Operational =>
            {
                problems.push(err.to_string())
            }
            other => other?,
        }
        Ok(Flow::Next)
    });
    let walked = streams.finish(res)?;
    let expected = expected_files(src);
    if walked.files != expected {
        problems.push(format!(
            "the archive holds {} file entries, the manifest records {expected}",
            walked.files
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, Outcome};

    fn snap(ok: bool, newer: bool) -> SnapshotCheck {
        SnapshotCheck {
            id: "s".into(),
            ok,
            sources: Vec::new(),
            error: None,
            newer,
        }
    }

    fn report(snapshots: Vec<SnapshotCheck>) -> VerifyReport {
        VerifyReport {
            ok: snapshots.iter().all(|s| s.ok),
            deep: false,
            snapshots,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(report(vec![]).outcome(), Outcome::Ok);
        assert_eq!(report(vec![snap(true, false)]).outcome(), Outcome::Ok);
        assert_eq!(
            report(vec![snap(true, false), snap(false, true)]).outcome(),
            Outcome::Failed(ErrorKind::Operational)
        );
        assert_eq!(
            report(vec![snap(false, true), snap(false, false)]).outcome(),
            Outcome::Failed(ErrorKind::Integrity)
        );
    }
}
