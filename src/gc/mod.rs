//! Garbage collection without locks, repository format 2 (docs/FORMAT.md
//! section 23): the records writers and `prune` leave for each other
//! (sessions, marks, watches), the writer's side ([`session`]: a session
//! that stays alive while a snapshot runs, and the check before its
//! manifest is stored) and prune's side ([`collect`]: mark the packs no
//! snapshot needs, sweep them once every writer that could still need
//! them has ended).
//!
//! Nothing here is a lock: a killed writer's session expires by itself
//! after its lease, and a killed prune's mark is either swept by the next
//! prune or given up.

pub mod collect;
pub mod session;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::chunks::ChunkKeys;
use crate::chunks::storage::{ChunkStoreError, index_sealing_key};
use crate::crypto::{self, ObjectKind};
use crate::outcome::ErrorKind;
use crate::store::{Store, StoreError};

pub const SESSIONS_PREFIX: &str = "sessions/";
pub const GC_PREFIX: &str = "gc/";

/// The lease of a writer's session when nothing else is asked for: its
/// records count as alive for this long after they were stored.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

/// The environment variable that shortens the lease, for tests that kill
/// writers and want their sessions to expire within seconds. Each session
/// record carries its own lease, so writers and prunes that disagree on it
/// stay safe.
pub const LEASE_ENV: &str = "COFFER_SESSION_LEASE";

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunks(#[from] ChunkStoreError),
    #[error(
        "garbage collection record {object} cannot be read: {reason}; if it is a mark or a watch, deleting it by hand is safe (nothing of it is deleted, and the next prune marks its packs again), then rerun `coffer prune`"
    )]
    Record { object: String, reason: String },
    #[error(
        "chunk {chunk} that this snapshot uses was deleted by a prune while the snapshot ran longer than its session lease ({lease}); nothing was committed, run the snapshot again"
    )]
    Vanished { chunk: String, lease: String },
    #[error(
        "the session of this snapshot could not be kept alive within its lease ({lease}): {why}; nothing was committed, run the snapshot again"
    )]
    Lease { lease: String, why: String },
    #[error("refusing to collect garbage: {0}")]
    Refused(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GcError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            GcError::Store(s) => s.kind(),
            GcError::Chunks(c) => c.kind(),
            GcError::Record { .. } | GcError::Refused(_) => ErrorKind::Integrity,
            GcError::Vanished { .. } | GcError::Lease { .. } | GcError::Internal(_) => {
                ErrorKind::Operational
            }
        }
    }
}

/// The lease this process's sessions take: [`LEASE_ENV`] seconds, else
/// [`DEFAULT_LEASE`].
pub fn lease() -> Duration {
    std::env::var(LEASE_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.1)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_LEASE)
}

/// The timing that follows from a lease L (FORMAT.md 23.1): ε (clock
/// difference between any host and the store) and δ (the longest a PUT
/// may take before it fails) are L/12 each; a writer heartbeats every L/6
/// and stores its manifest only within L − 3ε − δ = 2L/3 of starting a
/// heartbeat that succeeded.
pub struct Timing {
    pub lease: Duration,
}

impl Timing {
    pub fn heartbeat_every(&self) -> Duration {
        self.lease / 6
    }
    pub fn commit_within(&self) -> Duration {
        self.lease * 2 / 3
    }
}

/// `sessions/<sid>/<n>`: a writer is alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session: String,
    pub host: String,
    pub started: DateTime<Utc>,
    /// Seconds after this record's store time that the session counts as
    /// alive.
    pub lease: f64,
}

/// `gc/<gid>/mark`: packs that a prune found unneeded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkRecord {
    pub gc: String,
    pub created: DateTime<Utc>,
    /// Pack ids, hex.
    pub packs: Vec<String>,
}

/// `gc/<gid>/watch`: the sessions alive just after the mark was stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRecord {
    pub gc: String,
    pub sessions: Vec<String>,
}

/// The context of a garbage collection record: its object name.
fn record_context(repo_id: &str, object: &str) -> Vec<u8> {
    format!("coffer/v2\0{repo_id}\0{object}").into_bytes()
}

fn seal_record<T: Serialize>(keys: &ChunkKeys, repo_id: &str, object: &str, r: &T) -> Bytes {
    let plain = serde_json::to_vec(r).expect("a record serialises");
    Bytes::from(crypto::seal_bytes(
        &index_sealing_key(keys),
        ObjectKind::GcRecord,
        &record_context(repo_id, object),
        &plain,
    ))
}

/// The largest record a reader loads (a mark lists up to a few hundred
/// thousand packs).
const MAX_RECORD: u64 = 256 << 20;

async fn read_record<T: DeserializeOwned>(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
    object: &str,
) -> Result<T, GcError> {
    let bytes = store.get_capped(object, MAX_RECORD).await?;
    let plain = crypto::open_bytes(
        &index_sealing_key(keys),
        ObjectKind::GcRecord,
        &record_context(repo_id, object),
        &bytes,
    )
    .map_err(|e| GcError::Record {
        object: object.to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&plain).map_err(|e| GcError::Record {
        object: object.to_string(),
        reason: e.to_string(),
    })
}

/// Stores a record create-only. A record already there under this name
/// (a retry after a lost answer) is the one this writer stored: names
/// are random or numbered by their one writer.
async fn put_record(store: &Store, object: &str, bytes: Bytes) -> Result<(), GcError> {
    match store.put(object, bytes, true).await {
        Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A mark as listed: its packs, its store time, and its watch if stored.
#[derive(Debug, Clone)]
pub struct Mark {
    pub gc: String,
    pub stored: DateTime<Utc>,
    pub packs: Vec<[u8; 32]>,
    pub watch: Option<Vec<String>>,
}

/// Every mark of the repository, and the watches without a mark (a prune
/// that died between deleting its mark and its watch).
#[derive(Debug, Default)]
pub struct Marks {
    pub marks: Vec<Mark>,
    pub stray_watches: Vec<String>,
}

fn parse_pack(hex_id: &str) -> Option<[u8; 32]> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_id, &mut b).ok()?;
    Some(b)
}

impl Marks {
    /// Lists `gc/` and reads every mark and watch.
    pub async fn load(store: &Store, keys: &ChunkKeys, repo_id: &str) -> Result<Marks, GcError> {
        let mut found: BTreeMap<String, (Option<DateTime<Utc>>, bool)> = BTreeMap::new();
        for (name, _, modified) in store.list_with_times(GC_PREFIX).await? {
            let Some((gid, what)) = name.strip_prefix(GC_PREFIX).and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            let e = found.entry(gid.to_string()).or_default();
            match what {
                "mark" => e.0 = Some(modified),
                "watch" => e.1 = true,
                _ => {}
            }
        }
        let mut out = Marks::default();
        for (gid, (mark, watch)) in found {
            let Some(stored) = mark else {
                if watch {
                    out.stray_watches.push(format!("{GC_PREFIX}{gid}/watch"));
                }
                continue;
            };
            let object = format!("{GC_PREFIX}{gid}/mark");
            let m: MarkRecord = match read_record(store, keys, repo_id, &object).await {
                Ok(m) => m,
                // Deleted by a sweep since the listing: no longer a mark.
                Err(GcError::Store(StoreError::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            };
            let mut packs = Vec::with_capacity(m.packs.len());
            for p in &m.packs {
                packs.push(parse_pack(p).ok_or_else(|| GcError::Record {
                    object: object.clone(),
                    reason: format!("{p:?} is not a pack id"),
                })?);
            }
            let watch = if watch {
                let wobj = format!("{GC_PREFIX}{gid}/watch");
                match read_record::<WatchRecord>(store, keys, repo_id, &wobj).await {
                    Ok(w) => Some(w.sessions),
                    Err(GcError::Store(StoreError::NotFound { .. })) => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            out.marks.push(Mark {
                gc: gid,
                stored,
                packs,
                watch,
            });
        }
        Ok(out)
    }

    /// The packs some mark lists.
    pub fn marked(&self) -> HashSet<[u8; 32]> {
        self.marks
            .iter()
            .flat_map(|m| m.packs.iter().copied())
            .collect()
    }
}

/// Packs by id, with their size and store time.
pub type Packs = BTreeMap<[u8; 32], (u64, DateTime<Utc>)>;

/// Every pack the store holds, with its size and store time.
pub async fn existing_packs(store: &Store) -> Result<Packs, GcError> {
    let mut out = BTreeMap::new();
    for (name, size, modified) in store.list_with_times("packs/").await? {
        let Some(id) = name.rsplit('/').next().and_then(parse_pack) else {
            continue;
        };
        if crate::chunks::pack::object_name(&id) == name {
            out.insert(id, (size, modified));
        }
    }
    Ok(out)
}

/// A session as listed: its newest record's store time and lease.
#[derive(Debug, Clone)]
pub struct SessionSeen {
    pub newest: DateTime<Utc>,
    pub lease: Duration,
    pub host: String,
    /// Every record of the session, by object name.
    pub records: Vec<String>,
}

impl SessionSeen {
    /// Alive while its newest record is younger than its lease by `now`.
    pub fn alive(&self, now: DateTime<Utc>) -> bool {
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        now.signed_duration_since(self.newest) < lease
    }
}

/// Every session that has records, by id.
pub async fn sessions(
    store: &Store,
    keys: &ChunkKeys,
    repo_id: &str,
) -> Result<BTreeMap<String, SessionSeen>, GcError> {
    let mut newest: BTreeMap<String, (u64, String, DateTime<Utc>)> = BTreeMap::new();
    let mut records: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, _, modified) in store.list_with_times(SESSIONS_PREFIX).await? {
        let Some((sid, n)) = name
            .strip_prefix(SESSIONS_PREFIX)
            .and_then(|r| r.split_once('/'))
        else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        records
            .entry(sid.to_string())
            .or_default()
            .push(name.clone());
        let e = newest
            .entry(sid.to_string())
            .or_insert((n, name.clone(), modified));
        if n >= e.0 {
            *e = (n, name.clone(), modified);
        }
    }
    let mut out = BTreeMap::new();
    for (sid, (_, object, modified)) in newest {
        let r: SessionRecord = match read_record(store, keys, repo_id, &object).await {
            Ok(r) => r,
            // Replaced by the next heartbeat, or ended, since the listing:
            // the session was alive a moment ago.
            Err(GcError::Store(StoreError::NotFound { .. })) => SessionRecord {
                session: sid.clone(),
                host: String::new(),
                started: modified,
                lease: f64::INFINITY,
            },
            // A damaged record cannot say its lease: it counts as alive
            // for the default one, then as expired (and is deleted), so it
            // holds prunes back for an hour at most, never for good.
            Err(GcError::Record { object, reason }) => {
                tracing::warn!(
                    "session record {object} cannot be read ({reason}); it counts as alive for {} after it was stored",
                    humantime::format_duration(DEFAULT_LEASE)
                );
                SessionRecord {
                    session: sid.clone(),
                    host: "(unreadable record)".into(),
                    started: modified,
                    lease: DEFAULT_LEASE.as_secs_f64(),
                }
            }
            Err(e) => return Err(e),
        };
        let lease = if r.lease.is_finite() && r.lease >= 0.0 {
            Duration::from_secs_f64(r.lease)
        } else {
            Duration::MAX
        };
        let records = records.remove(&sid).unwrap_or_default();
        out.insert(
            sid,
            SessionSeen {
                newest: modified,
                lease,
                host: r.host,
                records,
            },
        );
    }
    Ok(out)
}
