//! The repository: its layout in a store, creating it, opening it with a key
//! file or passphrase, its key slots, and reading and committing manifests.
//!
//! Layout (object names reveal only ids, never file, source or database names):
//! - `config`: plaintext JSON: format name and version, repository id.
//! - `keys/<slot id>`: one JSON key slot per key file or passphrase.
//! - `snapshots/<snapshot id>`: a sealed manifest; its presence *is* the
//!   snapshot (written last, create-only).
//! - `data/<snapshot id>/<object id>`: sealed archives and indexes.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::chunks::storage::{ChunkLocations, ChunkStoreError, Fetcher};
use crate::chunks::{self, ChunkKeys, cut::ChunkerParams};
use crate::crypto::{self, Credential, CryptoError, KeySlot, MasterKey, ObjectKind};
use crate::manifest::{MANIFEST_VERSION, Manifest, seal_context};
use crate::outcome::ErrorKind;
use crate::store::{Store, StoreError};

pub const CONFIG_OBJECT: &str = "config";
pub const KEYS_PREFIX: &str = "keys/";
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
pub const DATA_PREFIX: &str = "data/";
pub const REPO_FORMAT: &str = "coffer-repository";
/// The newest repository format this coffer reads and writes.
pub const REPO_VERSION: u32 = 2;
/// The format `coffer init` creates unless asked for another.
pub const DEFAULT_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a coffer repository already exists at {0}; refusing to initialise it again")]
    AlreadyInitialised(String),
    #[error(
        "no coffer repository at {0} (no `config` object); check the URL, or create one with `coffer init`"
    )]
    NotARepository(String),
    #[error("the repository config at {url} is damaged: {reason}")]
    DamagedConfig { url: String, reason: String },
    #[error(
        "repository {url} was written by a newer coffer (repository format version {version}; this coffer reads version {REPO_VERSION}); upgrade coffer to read it"
    )]
    UnsupportedVersion { url: String, version: u32 },
    #[error(
        "repository {url} names its chunks with {algorithm:?}, which this coffer does not know (it knows \"blake3-keyed\"): it was written by a newer coffer; upgrade coffer to read it"
    )]
    UnknownChunkId { url: String, algorithm: String },
    #[error(
        "wrong key: the {credential} does not open repository {url} (none of its key slots accepts it: {slots}; if this is the right key, the repository's config or key slots were altered); nothing was read"
    )]
    WrongKey {
        credential: String,
        url: String,
        /// The slot objects tried.
        slots: String,
    },
    #[error("repository {0} has no readable key slot (keys/ is empty or damaged)")]
    NoKeySlots(String),
    #[error(
        "no key or passphrase given: set [repository].key_file, --key-file, COFFER_KEY_FILE, COFFER_PASSPHRASE, passphrase_file or passphrase_command"
    )]
    NoCredential,
    /// Wrapping the master key for a new slot, or deriving a key from a
    /// passphrase, failed.
    #[error(transparent)]
    Credential(CryptoError),
    /// A task of coffer's own panicked: a bug, not the user's doing.
    #[error("internal error: {0}; nothing more was changed. Please report this")]
    Internal(String),
    #[error("snapshot {id}: its manifest ({object}) is damaged: {reason}")]
    DamagedManifest {
        id: String,
        object: String,
        reason: String,
    },
    /// Not damage: the data is intact, this coffer is too old for it.
    #[error(
        "snapshot {id} was written by a newer coffer (manifest {object} has format version {version}; this coffer reads version {MANIFEST_VERSION}); upgrade coffer to read it"
    )]
    NewerManifest {
        id: String,
        object: String,
        version: u32,
    },
    #[error("no snapshot matches {0:?}; list them with `coffer snapshots`")]
    UnknownSnapshot(String),
    #[error(
        "snapshot {0}: its manifest snapshots/{0} is missing while its data objects are present: it was deleted, or the snapshot was interrupted before it was committed; it cannot be restored"
    )]
    MissingManifest(String),
    #[error("{spec:?} is ambiguous: it matches snapshots {matches}; give more of the id")]
    AmbiguousSnapshot { spec: String, matches: String },
    #[error(
        "no snapshot matches `latest`: the repository holds no snapshot{0}; list them with `coffer snapshots`, or take one with `coffer snapshot`"
    )]
    NoSnapshots(String),
    #[error("snapshot {0} already exists")]
    SnapshotExists(String),
    #[error(
        "snapshot {id} was not committed: its manifest would be {size} bytes, more than the {MANIFEST_MAX} a reader accepts (its `problems` lists are too long); exclude the unreadable paths from the source and take it again"
    )]
    ManifestTooLarge { id: String, size: u64 },
    #[error("no key slot {0}; list them with `coffer key list`")]
    UnknownSlot(String),
    #[error("refusing to remove key slot {0}: {1}")]
    SlotInUse(String, String),
    #[error("there is no repository format {0}; this coffer writes formats 1 and 2")]
    NoSuchFormat(u32),
}

impl RepoError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RepoError::Store(s) => s.kind(),
            RepoError::WrongKey { .. }
            | RepoError::MissingManifest(_)
            | RepoError::NoKeySlots(_)
            | RepoError::DamagedManifest { .. }
            | RepoError::DamagedConfig { .. } => ErrorKind::Integrity,
            // `latest` on an empty repository names a snapshot that does
            // not exist, like an unknown id: both are usage errors (issue 9).
            RepoError::UnknownSnapshot(_)
            | RepoError::NoSnapshots(_)
            | RepoError::AmbiguousSnapshot { .. }
            | RepoError::NoCredential
            | RepoError::UnknownSlot(_)
            | RepoError::SlotInUse(..)
            | RepoError::NoSuchFormat(_)
            | RepoError::AlreadyInitialised(_)
            | RepoError::NotARepository(_) => ErrorKind::Usage,
            // Written by a newer coffer: nothing is damaged, upgrade to read it.
            RepoError::UnsupportedVersion { .. }
            | RepoError::UnknownChunkId { .. }
            | RepoError::NewerManifest { .. }
            | RepoError::Credential(_)
            | RepoError::Internal(_)
            | RepoError::SnapshotExists(_)
            | RepoError::ManifestTooLarge { .. } => ErrorKind::Operational,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RepoConfig {
    format: String,
    version: u32,
    id: String,
    created: DateTime<Utc>,
    /// Format 2 only (docs/FORMAT.md section 16.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunker: Option<ChunkerParams>,
    /// Format 2: how chunks are named (section 17.3); absent in
    /// repositories made before it was recorded, which all use the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_id: Option<String>,
}

/// The chunk id algorithm of format 2 (docs/FORMAT.md 17.3).
pub const CHUNK_ID_ALGORITHM: &str = "blake3-keyed";

/// An opened (unlocked) repository.
#[derive(Clone)]
pub struct Repository {
    pub store: Store,
    pub id: String,
    /// SHA-256 of the `config` object, bound into every key slot.
    config_sha256: [u8; 32],
    /// Shared, never copied: clones of the repository and pipeline threads
    /// hold the same key.
    master: Arc<MasterKey>,
    /// The key slot that opened it.
    pub slot_id: String,
    /// The repository format version (`config`'s `version`).
    pub format: u32,
    /// Format 2: how writers cut chunks, and the keys derived for chunks.
    pub chunked: Option<Arc<Chunked>>,
}

/// What a format 2 repository adds to an opened one (section 17).
pub struct Chunked {
    pub params: ChunkerParams,
    pub keys: ChunkKeys,
    /// Where every chunk is, loaded on first use by a reader.
    fetcher: tokio::sync::OnceCell<Arc<Fetcher>>,
}

pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Creates a new repository of format `format` (1 or 2) in `store`,
/// openable by `cred`.
pub async fn init(store: &Store, cred: &Credential, format: u32) -> Result<Repository, RepoError> {
    if !(1..=REPO_VERSION).contains(&format) {
        return Err(RepoError::NoSuchFormat(format));
    }
    // A HEAD, not a read: whatever sits there, however large, is in the way.
    match store.size(CONFIG_OBJECT).await {
        Ok(_) => return Err(RepoError::AlreadyInitialised(store.url().to_string())),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Also when the directory was made beforehand, by someone's mkdir.
    store.make_private()?;
    let id = crypto::random_id(16);
    let master = MasterKey::generate();
    let cfg = RepoConfig {
        format: REPO_FORMAT.into(),
        version: format,
        id: id.clone(),
        created: Utc::now(),
        chunker: (format >= 2).then_some(chunks::cut::DEFAULT_PARAMS),
        chunk_id: (format >= 2).then(|| CHUNK_ID_ALGORITHM.to_string()),
    };
    let cfg_bytes = serde_json::to_vec_pretty(&cfg).expect("config serialises");
    let config_sha256 = sha256(&cfg_bytes);
    let slot = KeySlot::wrap(&master, cred, &id, &config_sha256, &host_name())
        .map_err(RepoError::Credential)?;
    // The slot first: a config without a slot would be a repository nobody
    // can open; a slot without a config is invisible and harmless.
    store
        .put(
            &format!("{KEYS_PREFIX}{}", slot.id),
            Bytes::from(serde_json::to_vec_pretty(&slot).expect("slot serialises")),
            true,
        )
        .await?;
    match store.put(CONFIG_OBJECT, Bytes::from(cfg_bytes), true).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists { .. }) => {
            let _ = store.delete(&format!("{KEYS_PREFIX}{}", slot.id)).await;
            return Err(RepoError::AlreadyInitialised(store.url().to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Repository::new(store, &cfg, config_sha256, master, slot.id))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

async fn read_config(store: &Store) -> Result<(RepoConfig, [u8; 32]), RepoError> {
    let raw = match store.get_capped(CONFIG_OBJECT, SMALL_OBJECT_MAX).await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Err(RepoError::NotARepository(store.url().to_string()));
        }
        Err(e @ StoreError::TooLarge { .. }) => {
            return Err(RepoError::DamagedConfig {
                url: store.url().to_string(),
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let digest = sha256(&raw);
    let cfg: RepoConfig = serde_json::from_slice(&raw).map_err(|e| RepoError::DamagedConfig {
        url: store.url().to_string(),
        reason: e.to_string(),
    })?;
    if cfg.format != REPO_FORMAT {
        return Err(RepoError::DamagedConfig {
            url: store.url().to_string(),
            reason: format!("format is {:?}, not {REPO_FORMAT:?}", cfg.format),
        });
    }
    if cfg.version == 0 {
        return Err(RepoError::DamagedConfig {
            url: store.url().to_string(),
            reason: "its format version is 0, which no coffer writes".into(),
        });
    }
    if cfg.version > REPO_VERSION {
        return Err(RepoError::UnsupportedVersion {
            url: store.url().to_string(),
            version: cfg.version,
        });
    }
    match (&cfg.chunker, cfg.version) {
        (None, 1) => {}
        (Some(_), 1) => {
            return Err(RepoError::DamagedConfig {
                url: store.url().to_string(),
                reason: "a format 1 config has a `chunker`".into(),
            });
        }
        (None, _) => {
            return Err(RepoError::DamagedConfig {
                url: store.url().to_string(),
                reason: format!("format {} needs a `chunker`", cfg.version),
            });
        }
        (Some(p), _) => p.check().map_err(|e| RepoError::DamagedConfig {
            url: store.url().to_string(),
            reason: e.to_string(),
        })?,
    }
    match (&cfg.chunk_id, cfg.version) {
        (Some(_), 1) => {
            return Err(RepoError::DamagedConfig {
                url: store.url().to_string(),
                reason: "a format 1 config has a `chunk_id`".into(),
            });
        }
        (Some(a), _) if a != CHUNK_ID_ALGORITHM => {
            return Err(RepoError::UnknownChunkId {
                url: store.url().to_string(),
                algorithm: a.clone(),
            });
        }
        _ => {}
    }
    Ok((cfg, digest))
}

/// The largest sealed manifest coffer writes or reads. Manifests are a few
/// KiB (a long `problems` list makes them grow, by about 200 bytes per
/// file); anything far larger under `snapshots/` is planted or damaged, and
/// `coffer snapshots` reads up to 16 manifests at a time.
pub const MANIFEST_MAX: u64 = 16 << 20;

/// The largest `config` or key slot object coffer reads (they are a few
/// hundred bytes).
const SMALL_OBJECT_MAX: u64 = 64 << 10;

/// How many key slots are tried at most: each passphrase slot costs an
/// Argon2 run, and a planted pile of them must not hold a command for hours.
pub const MAX_SLOTS_TRIED: usize = 32;

async fn read_slots(store: &Store) -> Result<Vec<KeySlot>, RepoError> {
    let mut slots = Vec::new();
    // In name order, whatever order the store lists them in: which slot is
    // tried first (and so which warnings show) must not depend on it.
    let mut paths = store.list(KEYS_PREFIX).await?;
    paths.sort();
    for (path, _) in paths {
        let raw = match store.get_capped(&path, SMALL_OBJECT_MAX).await {
            Ok(raw) => raw,
            Err(e @ StoreError::TooLarge { .. }) => {
                tracing::warn!("key slot {path} was skipped: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<KeySlot>(&raw) {
            Ok(s) if path.ends_with(&s.id) => slots.push(s),
            // A damaged slot is skipped: another may still open the repository.
            Ok(_) => tracing::warn!("key slot {path} was skipped: its id does not match its name"),
            Err(e) => tracing::warn!("key slot {path} is damaged and was skipped: {e}"),
        }
    }
    Ok(slots)
}

/// Opens the repository in `store` with `cred`. Reads only `config` and
/// `keys/`: a wrong key is reported before any data is read.
pub async fn open(store: &Store, cred: &Credential) -> Result<Repository, RepoError> {
    if let Some(w) = store.exposure() {
        tracing::warn!("{w}");
    }
    let (cfg, config_sha256) = read_config(store).await?;
    let slots = read_slots(store).await?;
    if slots.is_empty() {
        return Err(RepoError::NoKeySlots(store.url().to_string()));
    }
    let slot_names = slots
        .iter()
        .map(|s| format!("{KEYS_PREFIX}{}", s.id))
        .collect::<Vec<_>>()
        .join(", ");
    // Argon2 is slow and memory-hungry: try the slots one at a time, off the
    // async threads.
    let repo_id = cfg.id.clone();
    let found = {
        let cred = match cred {
            Credential::KeyFile { path, key } => Credential::KeyFile {
                path: path.clone(),
                key: key.clone(),
            },
            Credential::Passphrase(p) => Credential::Passphrase(p.clone()),
        };
        tokio::task::spawn_blocking(
            move || -> Result<Option<(MasterKey, String)>, CryptoError> {
                for (i, s) in slots.iter().enumerate() {
                    if i == MAX_SLOTS_TRIED {
                        tracing::warn!(
                            "tried {MAX_SLOTS_TRIED} key slots, the most coffer tries; {} more were not tried",
                            slots.len() - i
                        );
                        break;
                    }
                    // A slot that cannot be tried (costs beyond the caps) is
                    // skipped: another may still open the repository.
                    match s.unwrap(&cred, &repo_id, &config_sha256) {
                        Ok(Some(m)) => return Ok(Some((m, s.id.clone()))),
                        Ok(None) => {}
                        Err(e) => tracing::warn!("key slot {KEYS_PREFIX}{} was skipped: {e}", s.id),
                    }
                }
                Ok(None)
            },
        )
        .await
        .expect("key slot task")
        .map_err(RepoError::Credential)?
    };
    match found {
        Some((master, slot_id)) => Ok(Repository::new(store, &cfg, config_sha256, master, slot_id)),
        None => Err(RepoError::WrongKey {
            credential: cred.describe(),
            url: store.url().to_string(),
            slots: slot_names,
        }),
    }
}

/// A key slot as `coffer key list` shows it.
#[derive(Debug, Serialize)]
pub struct SlotInfo {
    pub id: String,
    pub kind: String,
    pub created: String,
    pub host: String,
    pub current: bool,
}

/// A manifest that could not be read while listing: damaged, or (with
/// `newer`) of a format version this coffer does not know.
#[derive(Debug)]
pub struct Damaged {
    pub id: String,
    pub object: String,
    pub reason: String,
    /// The manifest's version when it is intact but newer than this coffer.
    pub newer: Option<u32>,
}

/// The verdict of a listing that met unreadable manifests: a damaged one is
/// an integrity failure; only newer ones are operational (upgrade coffer).
pub fn listing_outcome(damaged: &[Damaged]) -> crate::Outcome {
    use crate::Outcome;
    if damaged.iter().any(|d| d.newer.is_none()) {
        Outcome::Failed(ErrorKind::Integrity)
    } else if !damaged.is_empty() {
        Outcome::Failed(ErrorKind::Operational)
    } else {
        Outcome::Ok
    }
}

impl Repository {
    fn new(
        store: &Store,
        cfg: &RepoConfig,
        config_sha256: [u8; 32],
        master: MasterKey,
        slot_id: String,
    ) -> Repository {
        let chunked = cfg.chunker.map(|params| {
            Arc::new(Chunked {
                params,
                keys: ChunkKeys::derive(&master, &cfg.id),
                fetcher: tokio::sync::OnceCell::new(),
            })
        });
        Repository {
            store: store.clone(),
            id: cfg.id.clone(),
            config_sha256,
            master: Arc::new(master),
            slot_id,
            format: cfg.version,
            chunked,
        }
    }

    /// The context a manifest is sealed with: section 7 in format 1,
    /// section 21 in format 2.
    pub fn manifest_context(&self, snapshot_id: &str) -> Vec<u8> {
        if self.format >= 2 {
            format!("coffer/v2\0{}\0{snapshot_id}", self.id).into_bytes()
        } else {
            seal_context(&self.id, snapshot_id, None)
        }
    }

    /// Format 2: reads chunks back by id, once the index objects are loaded
    /// (the first call loads them).
    pub async fn fetcher(&self) -> Result<Arc<Fetcher>, ChunkStoreError> {
        let Some(c) = &self.chunked else {
            return Err(ChunkStoreError::Internal(
                "a format 1 repository has no chunks".into(),
            ));
        };
        c.fetcher
            .get_or_try_init(|| async {
                let locations = ChunkLocations::load(&self.store, &c.keys, &self.id).await?;
                Ok(Arc::new(Fetcher::new(
                    &self.store,
                    Arc::clone(c),
                    Arc::new(locations),
                )))
            })
            .await
            .cloned()
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The master key, for a thread that outlives a borrow of `self`.
    pub fn shared_master(&self) -> Arc<MasterKey> {
        Arc::clone(&self.master)
    }

    pub fn manifest_object(id: &str) -> String {
        format!("{SNAPSHOTS_PREFIX}{id}")
    }

    pub async fn key_add(&self, cred: &Credential) -> Result<SlotInfo, RepoError> {
        let slot = KeySlot::wrap(
            &self.master,
            cred,
            &self.id,
            &self.config_sha256,
            &host_name(),
        )
        .map_err(RepoError::Credential)?;
        self.store
            .put(
                &format!("{KEYS_PREFIX}{}", slot.id),
                Bytes::from(serde_json::to_vec_pretty(&slot).expect("slot serialises")),
                true,
            )
            .await?;
        Ok(SlotInfo {
            id: slot.id,
            kind: slot.kind.to_string(),
            created: slot.created,
            host: slot.host,
            current: false,
        })
    }

    pub async fn key_list(&self) -> Result<Vec<SlotInfo>, RepoError> {
        let mut v: Vec<SlotInfo> = read_slots(&self.store)
            .await?
            .into_iter()
            .map(|s| SlotInfo {
                current: s.id == self.slot_id,
                id: s.id,
                kind: s.kind.to_string(),
                created: s.created,
                host: s.host,
            })
            .collect();
        v.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(v)
    }

    pub async fn key_remove(&self, id: &str) -> Result<(), RepoError> {
        let slots = read_slots(&self.store).await?;
        if !slots.iter().any(|s| s.id == id) {
            return Err(RepoError::UnknownSlot(id.to_string()));
        }
        if id == self.slot_id {
            return Err(RepoError::SlotInUse(
                id.to_string(),
                "it is the key you opened the repository with; open it with another key to remove this one".into(),
            ));
        }
        if slots.len() == 1 {
            return Err(RepoError::SlotInUse(
                id.to_string(),
                "it is the last key slot".into(),
            ));
        }
        self.store
            .delete(&format!("{KEYS_PREFIX}{id}"))
            .await
            .map_err(Into::into)
    }

    /// Seals and stores a manifest, create-only: this is the commit point.
    pub async fn commit_manifest(&self, m: &Manifest) -> Result<(), RepoError> {
        let plain = serde_json::to_vec(m).expect("manifest serialises");
        let sealed = crypto::seal_bytes(
            &self.master,
            ObjectKind::Manifest,
            &self.manifest_context(&m.id),
            &plain,
        );
        // Never commit what no reader would open.
        if sealed.len() as u64 > MANIFEST_MAX {
            return Err(RepoError::ManifestTooLarge {
                id: m.id.clone(),
                size: sealed.len() as u64,
            });
        }
        match self
            .store
            .put(&Self::manifest_object(&m.id), Bytes::from(sealed), true)
            .await
        {
            Err(StoreError::AlreadyExists { .. }) => Err(RepoError::SnapshotExists(m.id.clone())),
            r => r.map_err(Into::into),
        }
    }

    pub async fn load_manifest(&self, id: &str) -> Result<Manifest, RepoError> {
        let object = Self::manifest_object(id);
        let damaged = |reason: String| RepoError::DamagedManifest {
            id: id.to_string(),
            object: object.clone(),
            reason,
        };
        let raw = match self.store.get_capped(&object, MANIFEST_MAX).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => return Err(RepoError::UnknownSnapshot(id.into())),
            // Too large to be a manifest: damaged, listed with the others.
            Err(e @ StoreError::TooLarge { .. }) => return Err(damaged(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let plain = crypto::open_bytes(
            &self.master,
            ObjectKind::Manifest,
            &self.manifest_context(id),
            &raw,
        )
        .map_err(|e| damaged(e.to_string()))?;
        let m: Manifest =
            serde_json::from_slice(&plain).map_err(|e| damaged(format!("unreadable: {e}")))?;
        if m.id != id {
            return Err(damaged(format!("it names snapshot {}", m.id)));
        }
        if m.version == 0 {
            return Err(damaged("manifest version 0, which no coffer writes".into()));
        }
        if m.version > MANIFEST_VERSION {
            return Err(RepoError::NewerManifest {
                id: id.to_string(),
                object,
                version: m.version,
            });
        }
        // Format 1 repositories hold version 1 manifests, format 2 ones
        // version 2 (their contexts differ, so only a bug could mix them).
        if (m.version >= 2) != (self.format >= 2) {
            return Err(damaged(format!(
                "manifest version {} in a format {} repository",
                m.version, self.format
            )));
        }
        Ok(m)
    }

    /// Ids of every committed snapshot (manifest present).
    pub async fn snapshot_ids(&self) -> Result<Vec<String>, RepoError> {
        Ok(self
            .store
            .list(SNAPSHOTS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|(p, _)| p.strip_prefix(SNAPSHOTS_PREFIX).map(str::to_string))
            .collect())
    }

    /// Every readable manifest, oldest first, and the ones that are damaged.
    pub async fn manifests(&self) -> Result<(Vec<Manifest>, Vec<Damaged>), RepoError> {
        let ids = self.snapshot_ids().await?;
        let results: Vec<Result<Manifest, RepoError>> = futures::stream::iter(ids)
            .map(|id| async move { self.load_manifest(&id).await })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for r in results {
            match r {
                Ok(m) => good.push(m),
                Err(RepoError::DamagedManifest { id, object, reason }) => bad.push(Damaged {
                    id,
                    object,
                    reason,
                    newer: None,
                }),
                Err(RepoError::NewerManifest {
                    id,
                    object,
                    version,
                }) => {
                    let reason = RepoError::NewerManifest {
                        id: id.clone(),
                        object: object.clone(),
                        version,
                    }
                    .to_string();
                    bad.push(Damaged {
                        id,
                        object,
                        reason,
                        newer: Some(version),
                    })
                }
                // Deleted between list and get: a concurrent prune.
                Err(RepoError::UnknownSnapshot(_)) => {}
                Err(e) => return Err(e),
            }
        }
        good.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        bad.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((good, bad))
    }

    /// Resolves a full id, a unique prefix, or `latest` (newest, among those
    /// with `tag` when given).
    pub async fn resolve(&self, spec: &str, tag: Option<&str>) -> Result<Manifest, RepoError> {
        if spec == "latest" {
            let (all, mut damaged) = self.manifests().await?;
            // A damaged manifest might be the newest: picking the newest
            // readable one would silently restore an older snapshot. Damage
            // is reported before a manifest that is merely newer.
            damaged.sort_by_key(|d| d.newer.is_some());
            if let Some(d) = damaged.into_iter().next() {
                if let Some(version) = d.newer {
                    return Err(RepoError::NewerManifest {
                        id: d.id,
                        object: d.object,
                        version,
                    });
                }
                return Err(RepoError::DamagedManifest {
                    id: d.id,
                    object: d.object,
                    reason: format!(
                        "{}; `latest` cannot be decided while a manifest is unreadable: name a snapshot id (see `coffer snapshots`)",
                        d.reason
                    ),
                });
            }
            return all
                .into_iter()
                .rev()
                .find(|m| tag.is_none_or(|t| m.tags.iter().any(|x| x == t)))
                .ok_or_else(|| {
                    RepoError::NoSnapshots(match tag {
                        Some(t) => format!(" tagged {t:?}"),
                        None => String::new(),
                    })
                });
        }
        let ids = self.snapshot_ids().await?;
        if ids.iter().any(|i| i == spec) {
            return self.load_manifest(spec).await;
        }
        let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(spec)).collect();
        match matches.as_slice() {
            [] if self.has_data(spec).await? => Err(RepoError::MissingManifest(spec.into())),
            [] => Err(RepoError::UnknownSnapshot(spec.into())),
            [one] if !spec.is_empty() => self.load_manifest(one).await,
            _ => Err(RepoError::AmbiguousSnapshot {
                spec: spec.into(),
                matches: matches
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// True if `data/<id>/` holds objects (a snapshot whose manifest is gone).
    async fn has_data(&self, id: &str) -> Result<bool, RepoError> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        Ok(!self
            .store
            .list(&format!("{DATA_PREFIX}{id}/"))
            .await?
            .is_empty())
    }

    /// Objects under `data/`, grouped by snapshot id.
    pub async fn data_objects(&self) -> Result<BTreeMap<String, Vec<(String, u64)>>, RepoError> {
        let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for (p, size) in self.store.list(DATA_PREFIX).await? {
            if let Some((snap, _)) = p
                .strip_prefix(DATA_PREFIX)
                .and_then(|rest| rest.split_once('/'))
            {
                out.entry(snap.to_string()).or_default().push((p, size));
            }
        }
        Ok(out)
    }
}
