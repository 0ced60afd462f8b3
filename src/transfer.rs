//! `coffer copy`: copies objects between two stores (filesystem, S3, GCS,
//! Azure), copying only what is missing or different at the destination.
//!
//! How it stays bounded with millions of objects: both sides are listed as
//! streams in byte order of their keys and joined by a merge, so neither
//! listing is held in memory. Cloud stores list in that order; a local
//! directory is walked with each directory's entries sorted so that the walk
//! yields the same order (a directory `a` sorts as `a/`). A listing that goes
//! out of order is an error, never a silent wrong comparison. Objects only at
//! the destination (the `--delete` candidates) go to a temporary file, not
//! to memory, and are deleted only after every copy succeeded.
//!
//! What "different" means. A size difference always copies. Objects of
//! equal size are compared one of three ways, and the report counts each
//! (`compared`):
//! - **by stored hash**: coffer writes `sha256` (and `mtime`, the source's
//!   modification time, RFC 3339) as user metadata on every cloud object it
//!   copies. When DST's object carries `sha256`, it is compared with SRC's
//!   hash: SRC's own `sha256` metadata, else SRC read and hashed (a local
//!   file, or a cloud object that coffer did not write). When both sides
//!   carry one, no bytes are read at all.
//! - **by content**: DST has no hash coffer trusts (a local file, or a cloud
//!   object without coffer's metadata: written or overwritten by another
//!   tool). DST is read and hashed, and so is SRC unless it carries
//!   `sha256`. Reads are streamed in 1 MiB parts inside the memory budget,
//!   never a whole object in memory. Stores' own checksums (ETag, MD5,
//!   CRC32C) are not used: their meaning differs between stores and with
//!   multipart uploads and encryption, and a false "identical" is the one
//!   mistake a copy tool must not make.
//! - **by size+mtime**, a plain copy only (not `--check`, not
//!   `--checksum`), where DST carries coffer's `mtime` metadata or is a
//!   local file (whose mtime coffer sets to SRC's): equal size and equal
//!   mtime (to the millisecond) mean unchanged, as rsync and rclone assume
//!   by default; a different mtime copies without reading DST. This is the
//!   cheap path that keeps a rerun over terabytes from reading them all. What
//!   it misses: bytes changed with size and mtime kept (a tool that restores
//!   mtimes, `cp -p`, `touch -r`), at SRC, or at a local DST. `--check`
//!   finds those and says that `copy --checksum` is what repairs them.
//!
//! Whether stored metadata can be stale: on S3, GCS and Azure block blobs,
//! user metadata is written by the same request that writes the bytes
//! (PUT, multipart complete, block list commit, server-side copy), and any
//! other tool's overwrite replaces it (with its own metadata or none). So a
//! `sha256` present on an object was written with those bytes, by coffer or
//! by a tool that set it on purpose. What can make it lie are metadata-only
//! edits (GCS `PATCH`, S3 copy-in-place with `REPLACE`, Azure Set Blob
//! Metadata) and in-place writes to Azure page or append blobs; coffer
//! writes neither kind of blob, and nobody edits `sha256` by accident. A
//! local file has no such metadata (extended attributes survive in-place
//! rewrites, so they would not be trustworthy): a local DST is never
//! compared by stored hash. One kind of object coffer writes carries
//! `mtime` without `sha256`: an object of 8 MiB or more copied from a cloud
//! SRC that has no `sha256` (its hash is known only after the upload has
//! begun); `--check` compares those by content.
//!
//! A copy that finds a difference replaces DST's object (overwrites it; a
//! local file is replaced by a rename). Unlike a repository, whose objects
//! are create-only, a copy's DST is a plain mirror, and overwriting is how
//! it repairs.
//!
//! Every copied object that crosses a network is hashed while it streams
//! (a filesystem-to-filesystem copy checks the size only, and fsyncs each
//! file before renaming it into place). Where a source hash is
//! known (stored in the source's metadata, or computed beforehand for a local
//! file going to a cloud store so that it can be written as metadata) the
//! streamed hash must match it; the size is checked at the destination after
//! the write. Same-store copies (one bucket, two prefixes) are server-side.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, GetOptions, GetResultPayload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::outcome::ErrorKind;
use crate::store::{Store, StoreError};

/// Objects up to this size are read whole and written with one PUT; larger
/// ones go as multipart uploads of parts this big (S3 needs >= 5 MiB).
const PART: usize = 8 << 20;
/// The memory budget of streamed copies, in MiB (see [`Ctx::budget`]).
const BUDGET_MIB: u32 = 64;
/// What one multipart upload holds: the part being read, the part being
/// filled and the parts in flight.
const LARGE_COST_MIB: u32 = ((2 + PARTS_IN_FLIGHT) * PART / (1 << 20)) as u32;
const _: () = assert!(
    LARGE_COST_MIB <= BUDGET_MIB,
    "one large object must fit the budget"
);
/// Parts in flight per multipart upload.
const PARTS_IN_FLIGHT: usize = 2;
/// Reads of a local file, and writes to one, go in blocks this big.
const LOCAL_BLOCK: usize = 1 << 20;
/// Attempts per object (the store clients retry each request on their own).
const ATTEMPTS: u32 = 3;
/// At most this many failures and differences are kept for the report; all
/// of them are passed to [`Progress::event`] as they happen.
const KEEP: usize = 1000;
/// Metadata keys coffer writes on every cloud object it copies.
const META_SHA: &str = "sha256";
const META_MTIME: &str = "mtime";
/// Temporary files of local writes; never listed, never copied.
const TMP_MARK: &str = ".coffer-partial-";

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("source {0} does not exist; check the path, bucket or container name")]
    SourceMissing(String),
    #[error("listing {url} failed: {reason}")]
    List { url: String, reason: String },
    #[error(
        "listing {url} is not in key order ({prev:?} came before {key:?}); coffer copy needs sorted listings to compare without holding them in memory"
    )]
    Unsorted {
        url: String,
        prev: String,
        key: String,
    },
    #[error("bad {flag} glob {glob:?}: {reason}")]
    BadGlob {
        flag: &'static str,
        glob: String,
        reason: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl TransferError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransferError::Store(s) => s.kind(),
            TransferError::BadGlob { .. } | TransferError::Usage(_) => ErrorKind::Usage,
            _ => ErrorKind::Operational,
        }
    }
}

/// What `coffer copy` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    pub src_options: BTreeMap<String, String>,
    pub dst_options: BTreeMap<String, String>,
    pub delete: bool,
    pub max_delete: Option<u64>,
    pub dry_run: bool,
    pub check: bool,
    pub checksum: bool,
    pub concurrency: usize,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// Something that happened to one object, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// An object found at SRC that will be copied (or would be).
    Queued {
        key: &'a str,
        bytes: u64,
    },
    Copied {
        key: &'a str,
        bytes: u64,
    },
    Skipped {
        key: &'a str,
        bytes: u64,
    },
    WouldCopy {
        key: &'a str,
        bytes: u64,
        why: &'a str,
    },
    WouldDelete {
        key: &'a str,
        bytes: u64,
    },
    Deleted {
        key: &'a str,
    },
    Differs {
        key: &'a str,
        what: &'a str,
    },
    Failed {
        key: &'a str,
        error: &'a str,
    },
    Retrying {
        key: &'a str,
        attempt: u32,
        error: &'a str,
    },
}

/// Receives events; the binary draws progress and prints dry-run and check
/// lines from them.
pub trait Progress: Send + Sync {
    fn event(&self, e: &Event<'_>);
}

pub struct NoProgress;
impl Progress for NoProgress {
    fn event(&self, _: &Event<'_>) {}
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Count {
    pub objects: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Failed {
    pub key: String,
    pub error: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    pub key: String,
    pub what: String,
}

/// The result of a copy, check or dry run. In a dry run `copied` and
/// `deleted` count what would be copied and deleted.
#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub ok: bool,
    pub src: String,
    pub dst: String,
    pub dry_run: bool,
    pub check: bool,
    pub server_side: bool,
    pub copied: Count,
    pub skipped: Count,
    pub deleted: Count,
    /// Objects that could not be copied or deleted, with the reason (the
    /// first [`KEEP`]; `failed_count` has them all).
    pub failed: Vec<Failed>,
    pub failed_count: u64,
    /// `--check`: what differs (the first [`KEEP`]; `differences_count`
    /// has them all).
    pub differences: Vec<Difference>,
    pub differences_count: u64,
    /// How the objects present on both sides with equal sizes were compared
    /// (see the module doc).
    pub compared: Compared,
    /// Why `--delete` deleted nothing, when it did not run.
    pub delete_skipped: Option<String>,
    pub duration_ms: u64,
}

/// How many objects were compared each way.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Compared {
    /// DST (and SRC, unless it carries `sha256`) read and hashed.
    pub content: u64,
    /// DST's stored `sha256` against SRC's (stored, or SRC read and hashed).
    pub stored_hash: u64,
    /// Equal size and mtime (a plain copy only).
    pub size_mtime: u64,
}

/// One object as listed.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    size: u64,
    mtime: DateTime<Utc>,
}

enum Kind {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        /// Scheme, bucket and options: equal idents are one store, where
        /// copies are server-side.
        ident: String,
    },
}

struct Location {
    url: String,
    kind: Kind,
    /// "SRC" or "DST", for messages.
    side: &'static str,
}

fn local_path(url: &str) -> Option<PathBuf> {
    if url.starts_with('/') {
        Some(PathBuf::from(url))
    } else {
        url.strip_prefix("file://").map(PathBuf::from)
    }
}

impl Location {
    /// Opens one side. A missing source is an error; a missing local
    /// destination is created on the first write.
    fn open(
        url: &str,
        options: &BTreeMap<String, String>,
        is_src: bool,
    ) -> Result<Location, TransferError> {
        if let Some(path) = local_path(url) {
            match Store::open(url, options, false) {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) if is_src => {
                    return Err(TransferError::SourceMissing(url.to_string()));
                }
                Err(StoreError::NotFound { .. }) if !path.exists() => {}
                Err(StoreError::NotFound { .. }) => {
                    return Err(TransferError::Usage(format!(
                        "destination {url} exists and is not a directory"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(Location {
                url: url.to_string(),
                kind: Kind::Local(path),
                side: if is_src { "SRC" } else { "DST" },
            });
        }
        // Open the bucket without its prefix, so that two prefixes of one
        // bucket share a store and copy server-side.
        let parsed = url::Url::parse(url).map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            reason: format!(
                "{e}; use an absolute path, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            ),
        })?;
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        let base = format!("{}://{}", parsed.scheme(), bucket);
        let store = Store::open(if bucket.is_empty() { url } else { &base }, options, false)?;
        let prefix = parsed.path().trim_matches('/').to_string();
        Ok(Location {
            url: url.to_string(),
            kind: Kind::Remote {
                store: store.object_store().clone(),
                prefix,
                ident: format!("{base} {options:?}"),
            },
            side: if is_src { "SRC" } else { "DST" },
        })
    }

    fn obj_path(&self, key: &str) -> ObjPath {
        let Kind::Remote { prefix, .. } = &self.kind else {
            unreachable!("object path of a local location")
        };
        let full = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        };
        ObjPath::parse(&full).unwrap_or_else(|_| ObjPath::from(full.as_str()))
    }

    fn file_path(&self, key: &str) -> Result<PathBuf, String> {
        let Kind::Local(root) = &self.kind else {
            unreachable!("file path of a remote location")
        };
        // Keys come from another store: none may leave the destination.
        if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(format!(
                "key {key:?} cannot be a file name (empty, `.` or `..` segment)"
            ));
        }
        Ok(root.join(key))
    }

    fn is_local(&self) -> bool {
        matches!(self.kind, Kind::Local(_))
    }

    fn ident(&self) -> Option<&str> {
        match &self.kind {
            Kind::Remote { ident, .. } => Some(ident),
            Kind::Local(_) => None,
        }
    }

    /// The listing, in byte order of keys.
    fn list(&self) -> BoxStream<'static, Result<Entry, TransferError>> {
        match &self.kind {
            Kind::Remote { .. } => list_remote(self),
            Kind::Local(root) => list_local(root.clone(), self.url.clone()),
        }
    }
}

fn list_remote(loc: &Location) -> BoxStream<'static, Result<Entry, TransferError>> {
    let Kind::Remote { store, prefix, .. } = &loc.kind else {
        unreachable!()
    };
    let store = store.clone();
    let url = loc.url.clone();
    let prefix = prefix.clone();
    let strip = if prefix.is_empty() {
        0
    } else {
        prefix.len() + 1
    };
    let (tx, rx) = mpsc::channel::<Result<Entry, TransferError>>(1024);
    tokio::spawn(async move {
        let p = (!prefix.is_empty()).then(|| ObjPath::from(prefix.as_str()));
        let mut s = store.list(p.as_ref());
        while let Some(r) = s.next().await {
            let item = match r {
                Ok(m) => Ok(Entry {
                    key: m.location.as_ref()[strip..].to_string(),
                    size: m.size,
                    mtime: m.last_modified,
                }),
                Err(e) => Err(TransferError::List {
                    url: url.clone(),
                    reason: e.to_string(),
                }),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    receiver_stream(rx)
}

fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}

/// Walks a directory in the byte order of the keys it yields: a directory
/// `a` sorts as `a/`, so `a-b` (0x2D) comes before everything under `a/`
/// (0x2F), as in a cloud listing. Only one directory's entries per level are
/// in memory at a time.
fn list_local(root: PathBuf, url: String) -> BoxStream<'static, Result<Entry, TransferError>> {
    let (tx, rx) = mpsc::channel::<Result<Entry, TransferError>>(1024);
    // Its own thread, not one of tokio's blocking pool: the walk lives as
    // long as the listing and waits on its consumer, and the pool is kept
    // small for copy (see the binary's main.rs), so it must stay free for short tasks.
    std::thread::spawn(move || {
        if !root.exists() {
            return; // a destination not created yet: empty
        }
        let sort_key = |e: &walkdir::DirEntry| {
            let mut k = e.file_name().as_encoded_bytes().to_vec();
            if e.file_type().is_dir() {
                k.push(b'/');
            }
            k
        };
        let walk = walkdir::WalkDir::new(&root)
            .min_depth(1)
            .sort_by(move |a, b| sort_key(a).cmp(&sort_key(b)));
        for item in walk {
            let res = match item {
                Err(e) => Err(TransferError::List {
                    url: url.clone(),
                    reason: e.to_string(),
                }),
                Ok(e) if !e.file_type().is_file() => {
                    if e.file_type().is_symlink() {
                        tracing::warn!("{}: not copied: symbolic link", e.path().display());
                    }
                    continue;
                }
                Ok(e) => {
                    if e.file_name().to_string_lossy().contains(TMP_MARK) {
                        continue;
                    }
                    let rel = e.path().strip_prefix(&root).expect("under root");
                    match (rel.to_str(), e.metadata()) {
                        (None, _) => {
                            tracing::warn!(
                                "{}: not copied: the name is not UTF-8",
                                e.path().display()
                            );
                            continue;
                        }
                        (_, Err(err)) => Err(TransferError::List {
                            url: url.clone(),
                            reason: err.to_string(),
                        }),
                        (Some(k), Ok(m)) => Ok(Entry {
                            key: k.to_string(),
                            size: m.len(),
                            mtime: m.modified().map(DateTime::<Utc>::from).unwrap_or_default(),
                        }),
                    }
                }
            };
            let stop = res.is_err();
            if tx.blocking_send(res).is_err() || stop {
                return;
            }
        }
    });
    receiver_stream(rx)
}

/// `--include` / `--exclude`: a glob with a `/` matches the whole key
/// (relative to the prefix; `*` stays within one segment, `**` crosses
/// them); one without matches the key's last segment, at any depth.
struct Filter {
    include_full: GlobSet,
    include_base: GlobSet,
    exclude_full: GlobSet,
    exclude_base: GlobSet,
    any_include: bool,
}

impl Filter {
    fn new(include: &[String], exclude: &[String]) -> Result<Filter, TransferError> {
        let build = |flag: &'static str, globs: &[String]| {
            let (mut full, mut base) = (GlobSetBuilder::new(), GlobSetBuilder::new());
            for g in globs {
                let glob = GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| TransferError::BadGlob {
                        flag,
                        glob: g.clone(),
                        reason: e.kind().to_string(),
                    })?;
                if g.contains('/') {
                    full.add(glob);
                } else {
                    base.add(glob);
                }
            }
            let done = |b: GlobSetBuilder| {
                b.build().map_err(|e| TransferError::BadGlob {
                    flag,
                    glob: globs.join(" "),
                    reason: e.to_string(),
                })
            };
            Ok::<_, TransferError>((done(full)?, done(base)?))
        };
        let (include_full, include_base) = build("--include", include)?;
        let (exclude_full, exclude_base) = build("--exclude", exclude)?;
        Ok(Filter {
            include_full,
            include_base,
            exclude_full,
            exclude_base,
            any_include: !include.is_empty(),
        })
    }

    fn wants(&self, key: &str) -> bool {
        let base = key.rsplit('/').next().unwrap_or(key);
        if self.any_include && !self.include_full.is_match(key) && !self.include_base.is_match(base)
        {
            return false;
        }
        !(self.exclude_full.is_match(key) || self.exclude_base.is_match(base))
    }
}

/// A listing with the filter applied and its order checked.
struct Side {
    stream: BoxStream<'static, Result<Entry, TransferError>>,
    prev: Option<String>,
    url: String,
}

impl Side {
    async fn next(&mut self, filter: &Filter) -> Result<Option<Entry>, TransferError> {
        while let Some(item) = self.stream.next().await {
            let e = item?;
            if let Some(p) = &self.prev
                && e.key.as_bytes() <= p.as_bytes()
            {
                return Err(TransferError::Unsorted {
                    url: self.url.clone(),
                    prev: p.clone(),
                    key: e.key,
                });
            }
            self.prev = Some(e.key.clone());
            if filter.wants(&e.key) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }
}

enum Item {
    /// Missing at DST or of another size: copy.
    Copy { src: Entry, why: String },
    /// Same size on both sides: compare further.
    Compare { src: Entry, dst: Entry },
}

enum Outcome {
    Copied(u64),
    Skipped(u64),
    Differs(String, String),
    Failed(String, String),
}

struct Ctx {
    src: Location,
    dst: Location,
    opts: CopyOptions,
    server_side: bool,
    progress: Arc<dyn Progress>,
    /// MiB of object bytes that may be held in memory at once, over all
    /// objects in flight: `--concurrency` sets how many objects move at
    /// once, this how much of them is buffered, whatever their sizes.
    budget: Arc<tokio::sync::Semaphore>,
}

/// Runs `coffer copy SRC DST` (or its `--check` / `--dry-run`).
pub async fn copy(
    src_url: &str,
    dst_url: &str,
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopyReport, TransferError> {
    let started = Instant::now();
    if opts.concurrency == 0 {
        return Err(TransferError::Usage(
            "--concurrency must be at least 1".into(),
        ));
    }
    let filter = Filter::new(&opts.include, &opts.exclude)?;
    let src = Location::open(src_url, &opts.src_options, true)?;
    let dst = Location::open(dst_url, &opts.dst_options, false)?;
    check_overlap(&src, &dst)?;
    let server_side = src.ident().is_some() && src.ident() == dst.ident();
    let ctx = Arc::new(Ctx {
        src,
        dst,
        opts: opts.clone(),
        server_side,
        progress,
        budget: Arc::new(tokio::sync::Semaphore::new(BUDGET_MIB as usize)),
    });

    // The merge runs as its own task, feeding a bounded queue of work.
    let (tx, rx) = mpsc::channel::<Item>(opts.concurrency * 4);
    let mut extras = tempfile::tempfile().map_err(|e| TransferError::Io {
        what: "cannot create a temporary file for the list of objects to delete".into(),
        source: e,
    })?;
    let merge_ctx = ctx.clone();
    let merge = tokio::spawn(async move {
        let r = merge_listings(&merge_ctx, &filter, tx, &mut extras).await;
        r.map(|(n, d)| (n, d, extras))
    });

    let mut rep = CopyReport {
        ok: true,
        src: src_url.to_string(),
        dst: dst_url.to_string(),
        dry_run: opts.dry_run,
        check: opts.check,
        server_side,
        copied: Count::default(),
        skipped: Count::default(),
        deleted: Count::default(),
        failed: Vec::new(),
        failed_count: 0,
        differences: Vec::new(),
        differences_count: 0,
        compared: Compared::default(),
        delete_skipped: None,
        duration_ms: 0,
    };
    let work = receiver_stream(rx)
        .map(|item| {
            let ctx = ctx.clone();
            async move { process(&ctx, item).await }
        })
        .buffer_unordered(opts.concurrency);
    futures::pin_mut!(work);
    while let Some((key, how, outcome)) = work.next().await {
        record(&mut rep, &ctx, &key, how, outcome);
    }
    let (extra_count, extra_bytes, extras) = match merge.await {
        Ok(r) => r?,
        Err(e) => {
            return Err(TransferError::List {
                url: ctx.src.url.clone(),
                reason: format!("listing task failed: {e}"),
            });
        }
    };
    if opts.check {
        // Extras were recorded as differences by the merge.
        rep.differences_count += extra_count;
        read_extras(extras, |key, _| {
            if rep.differences.len() < KEEP {
                rep.differences.push(Difference {
                    key: key.to_string(),
                    what: "only at DST".into(),
                });
            }
        })?;
    } else if opts.delete && extra_count > 0 {
        delete_extras(&ctx, &mut rep, extras, extra_count, extra_bytes).await?;
    }
    rep.ok = rep.failed_count == 0
        && rep.differences_count == 0
        && (rep.delete_skipped.is_none() || !opts.delete);
    rep.duration_ms = started.elapsed().as_millis() as u64;
    Ok(rep)
}

fn check_overlap(src: &Location, dst: &Location) -> Result<(), TransferError> {
    let inside = |a: &str, b: &str| a == b || b.is_empty() || a.starts_with(&format!("{b}/"));
    let overlap = match (&src.kind, &dst.kind) {
        (Kind::Local(a), Kind::Local(b)) => {
            let a = a.canonicalize().unwrap_or(a.clone());
            let b = b.canonicalize().unwrap_or(b.clone());
            a.starts_with(&b) || b.starts_with(&a)
        }
        (
            Kind::Remote {
                prefix: pa,
                ident: ia,
                ..
            },
            Kind::Remote {
                prefix: pb,
                ident: ib,
                ..
            },
        ) => ia == ib && (inside(pa, pb) || inside(pb, pa)),
        _ => false,
    };
    if overlap {
        return Err(TransferError::Usage(format!(
            "SRC {} and DST {} overlap (one is inside the other); copy to a separate prefix or directory",
            src.url, dst.url
        )));
    }
    Ok(())
}

/// Joins the two sorted listings. Work goes to `tx`; keys only at DST go to
/// `extras` (one `size key` line each). Returns their count and bytes.
async fn merge_listings(
    ctx: &Ctx,
    filter: &Filter,
    tx: mpsc::Sender<Item>,
    extras: &mut std::fs::File,
) -> Result<(u64, u64), TransferError> {
    let mut s = Side {
        stream: ctx.src.list(),
        prev: None,
        url: ctx.src.url.clone(),
    };
    let mut d = Side {
        stream: ctx.dst.list(),
        prev: None,
        url: ctx.dst.url.clone(),
    };
    let mut out = std::io::BufWriter::new(extras);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut extra = |e: &Entry, out: &mut std::io::BufWriter<&mut std::fs::File>| {
        n += 1;
        bytes += e.size;
        if ctx.opts.check {
            ctx.progress.event(&Event::Differs {
                key: &e.key,
                what: "only at DST",
            });
        }
        writeln!(out, "{} {}", e.size, e.key)
    };
    let io = |e: std::io::Error| TransferError::Io {
        what: "cannot write the list of objects to delete".into(),
        source: e,
    };
    let (mut a, mut b) = (s.next(filter).await?, d.next(filter).await?);
    loop {
        let item = match (a.take(), b.take()) {
            (None, None) => break,
            (None, Some(y)) => {
                extra(&y, &mut out).map_err(io)?;
                b = d.next(filter).await?;
                continue;
            }
            (Some(x), None) => {
                a = s.next(filter).await?;
                Item::Copy {
                    src: x,
                    why: "missing at DST".into(),
                }
            }
            (Some(x), Some(y)) => match x.key.as_bytes().cmp(y.key.as_bytes()) {
                std::cmp::Ordering::Greater => {
                    extra(&y, &mut out).map_err(io)?;
                    a = Some(x);
                    b = d.next(filter).await?;
                    continue;
                }
                std::cmp::Ordering::Less => {
                    b = Some(y);
                    a = s.next(filter).await?;
                    Item::Copy {
                        src: x,
                        why: "missing at DST".into(),
                    }
                }
                std::cmp::Ordering::Equal => {
                    a = s.next(filter).await?;
                    b = d.next(filter).await?;
                    if x.size != y.size {
                        Item::Copy {
                            why: format!(
                                "size differs (SRC {} bytes, DST {} bytes)",
                                x.size, y.size
                            ),
                            src: x,
                        }
                    } else {
                        Item::Compare { src: x, dst: y }
                    }
                }
            },
        };
        if tx.send(item).await.is_err() {
            break;
        }
    }
    out.flush().map_err(io)?;
    drop(out);
    Ok((n, bytes))
}

fn read_extras(mut f: std::fs::File, mut each: impl FnMut(&str, u64)) -> Result<(), TransferError> {
    use std::io::Seek;
    let io = |e: std::io::Error| TransferError::Io {
        what: "cannot read back the list of objects to delete".into(),
        source: e,
    };
    f.rewind().map_err(io)?;
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io)?;
        let (size, key) = line.split_once(' ').unwrap_or(("0", &line));
        each(key, size.parse().unwrap_or(0));
    }
    Ok(())
}

async fn delete_extras(
    ctx: &Arc<Ctx>,
    rep: &mut CopyReport,
    extras: std::fs::File,
    count: u64,
    bytes: u64,
) -> Result<(), TransferError> {
    if rep.failed_count > 0 {
        rep.delete_skipped = Some(format!(
            "not deleting {count} object(s) absent from SRC: {} object(s) failed to copy; fix them and run again",
            rep.failed_count
        ));
        return Ok(());
    }
    if let Some(max) = ctx.opts.max_delete
        && count > max
    {
        rep.delete_skipped = Some(format!(
            "refusing to delete {count} object(s) absent from SRC: more than --max-delete {max}; nothing was deleted. Check SRC and DST (a wrong prefix?), or raise --max-delete"
        ));
        return Ok(());
    }
    if ctx.opts.dry_run {
        read_extras(extras, |key, size| {
            ctx.progress.event(&Event::WouldDelete { key, bytes: size });
        })?;
        rep.deleted = Count {
            objects: count,
            bytes,
        };
        return Ok(());
    }
    // Keys are read back in bounded batches and deleted concurrently.
    let (tx, rx) = mpsc::channel::<(String, u64)>(ctx.opts.concurrency * 4);
    let reader = tokio::task::spawn_blocking(move || {
        read_extras(extras, |key, size| {
            let _ = tx.blocking_send((key.to_string(), size));
        })
    });
    let work = receiver_stream(rx)
        .map(|(key, size)| {
            let ctx = ctx.clone();
            async move {
                let r = delete_one(&ctx, &key).await;
                (key, size, r)
            }
        })
        .buffer_unordered(ctx.opts.concurrency);
    futures::pin_mut!(work);
    while let Some((key, size, r)) = work.next().await {
        match r {
            Ok(()) => {
                rep.deleted.add(size);
                ctx.progress.event(&Event::Deleted { key: &key });
            }
            Err(e) => {
                let error = format!("delete failed: {e}");
                ctx.progress.event(&Event::Failed {
                    key: &key,
                    error: &error,
                });
                rep.failed_count += 1;
                if rep.failed.len() < KEEP {
                    rep.failed.push(Failed { key, error });
                }
            }
        }
    }
    reader.await.map_err(|e| TransferError::Io {
        what: "reading the list of objects to delete".into(),
        source: std::io::Error::other(e),
    })??;
    Ok(())
}

async fn delete_one(ctx: &Ctx, key: &str) -> Result<(), String> {
    match &ctx.dst.kind {
        Kind::Local(_) => {
            let p = ctx.dst.file_path(key)?;
            match tokio::fs::remove_file(&p).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        Kind::Remote { store, .. } => match store.delete(&ctx.dst.obj_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
    }
}

fn record(rep: &mut CopyReport, ctx: &Ctx, key: &str, how: Option<How>, outcome: Outcome) {
    match how {
        Some(How::Content) => rep.compared.content += 1,
        Some(How::StoredHash) => rep.compared.stored_hash += 1,
        Some(How::SizeMtime) => rep.compared.size_mtime += 1,
        None => {}
    }
    match outcome {
        Outcome::Copied(b) => rep.copied.add(b),
        Outcome::Skipped(b) => {
            rep.skipped.add(b);
            ctx.progress.event(&Event::Skipped { key, bytes: b });
        }
        Outcome::Differs(key, what) => {
            ctx.progress.event(&Event::Differs {
                key: &key,
                what: &what,
            });
            rep.differences_count += 1;
            if rep.differences.len() < KEEP {
                rep.differences.push(Difference { key, what });
            }
        }
        Outcome::Failed(key, error) => {
            ctx.progress.event(&Event::Failed {
                key: &key,
                error: &error,
            });
            rep.failed_count += 1;
            if rep.failed.len() < KEEP {
                rep.failed.push(Failed { key, error });
            }
        }
    }
}

/// Compares (where both sides have the object) and copies one object.
/// Returns its key, how it was compared, and what came of it.
async fn process(ctx: &Ctx, item: Item) -> (String, Option<How>, Outcome) {
    let (src, why, how) = match item {
        Item::Copy { src, why } => (src, why, None),
        Item::Compare { src, dst } => match compare(ctx, &src, &dst).await {
            Ok(v) if v.same => {
                return (src.key.clone(), Some(v.how), Outcome::Skipped(src.size));
            }
            Ok(v) => (src, v.why, Some(v.how)),
            Err(e) => {
                let k = src.key.clone();
                return (
                    k.clone(),
                    None,
                    Outcome::Failed(k, format!("compare failed: {e}")),
                );
            }
        },
    };
    let (key, outcome) = copy_or_report(ctx, src, why).await;
    (key, how, outcome)
}

/// Reports a difference (`--check`), a would-be copy (`--dry-run`), or
/// copies, with retries.
async fn copy_or_report(ctx: &Ctx, src: Entry, why: String) -> (String, Outcome) {
    let key = src.key.clone();
    if ctx.opts.check {
        return (key.clone(), Outcome::Differs(key, why));
    }
    if ctx.opts.dry_run {
        ctx.progress.event(&Event::WouldCopy {
            key: &key,
            bytes: src.size,
            why: &why,
        });
        return (key, Outcome::Copied(src.size));
    }
    ctx.progress.event(&Event::Queued {
        key: &key,
        bytes: src.size,
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        match copy_once(ctx, &src).await {
            Ok(n) => {
                ctx.progress.event(&Event::Copied {
                    key: &key,
                    bytes: n,
                });
                return (key, Outcome::Copied(n));
            }
            Err(f) if f.retry && attempt < ATTEMPTS => {
                ctx.progress.event(&Event::Retrying {
                    key: &key,
                    attempt,
                    error: &f.msg,
                });
                tracing::info!("{key}: attempt {attempt} failed, retrying: {}", f.msg);
                tokio::time::sleep(Duration::from_millis(500 * 4u64.pow(attempt - 1))).await;
            }
            Err(f) => {
                let msg = if attempt > 1 {
                    format!("{} (after {attempt} attempts)", f.msg)
                } else {
                    f.msg
                };
                return (key.clone(), Outcome::Failed(key, msg));
            }
        }
    }
}

/// Stored metadata of a cloud object: (sha256, mtime).
async fn head_meta(
    loc: &Location,
    key: &str,
) -> Result<(Option<String>, Option<DateTime<Utc>>), String> {
    let Kind::Remote { store, .. } = &loc.kind else {
        return Ok((None, None));
    };
    let r = store
        .get_opts(
            &loc.obj_path(key),
            GetOptions {
                head: true,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("stat {key} in {}: {e}", loc.url))?;
    Ok(stored_meta(&r.attributes))
}

fn stored_meta(a: &Attributes) -> (Option<String>, Option<DateTime<Utc>>) {
    let sha = a
        .get(&Attribute::Metadata(META_SHA.into()))
        .map(|v| v.as_ref().to_string())
        .filter(|s| s.len() == 64);
    let mtime = a
        .get(&Attribute::Metadata(META_MTIME.into()))
        .and_then(|v| DateTime::parse_from_rfc3339(v.as_ref()).ok())
        .map(|t| t.with_timezone(&Utc));
    (sha, mtime)
}

fn close_times(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).num_microseconds().is_some_and(|d| d.abs() < 1000)
}

/// How two equal-size objects were compared (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Content,
    StoredHash,
    SizeMtime,
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            How::Content => "by content",
            How::StoredHash => "by stored hash",
            How::SizeMtime => "by size+mtime",
        })
    }
}

/// The result of comparing two equal-size objects: `why` says what differs.
struct Verdict {
    same: bool,
    how: How,
    why: String,
}

/// Memory one hashed side holds, in MiB: the part being hashed and what the
/// stream has buffered beyond it.
const HASH_COST_MIB: u32 = 2;

/// Equal-size objects: unchanged? (See the module doc for the rules.)
async fn compare(ctx: &Ctx, src: &Entry, dst: &Entry) -> Result<Verdict, String> {
    let (s, d) = futures::join!(head_meta(&ctx.src, &src.key), head_meta(&ctx.dst, &dst.key));
    let ((s_sha, _), (d_sha, d_mtime)) = (s?, d?);
    // The mtime that coffer set at DST (a local file's own, or the `mtime`
    // metadata), against SRC's: what a plain copy goes by.
    let dst_mtime = if ctx.dst.is_local() {
        Some(dst.mtime)
    } else {
        d_mtime
    };
    let mtime_same = dst_mtime.map(|m| close_times(src.mtime, m));
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let (Some(a), Some(b)) = (&s_sha, &d_sha) {
        // A plain copy compares these too.
        return Ok(hash_verdict(ctx, a, b, How::StoredHash, false));
    }
    if !ctx.opts.check
        && !ctx.opts.checksum
        && let (Some(same), Some(m)) = (mtime_same, dst_mtime)
    {
        return Ok(Verdict {
            same,
            how: How::SizeMtime,
            why: format!("mtime differs (SRC {}, DST {})", stamp(src.mtime), stamp(m)),
        });
    }
    // Whatever is not stored is read and hashed; both sides' memory is taken
    // at once, so that no compare holds part of it while waiting for more.
    let cost = HASH_COST_MIB * (u32::from(s_sha.is_none()) + u32::from(d_sha.is_none()));
    let _budget = ctx
        .budget
        .acquire_many(cost)
        .await
        .expect("the budget is never closed");
    let how = if d_sha.is_some() {
        How::StoredHash
    } else {
        How::Content
    };
    let (a, b) = futures::join!(
        async {
            match s_sha {
                Some(h) => Ok(h),
                None => hash_object(&ctx.src, &src.key).await,
            }
        },
        async {
            match d_sha {
                Some(h) => Ok(h),
                None => hash_object(&ctx.dst, &dst.key).await,
            }
        }
    );
    Ok(hash_verdict(ctx, &a?, &b?, how, mtime_same == Some(true)))
}

/// `copy_skips`: a plain copy would find size and mtime equal and skip it.
fn hash_verdict(ctx: &Ctx, a: &str, b: &str, how: How, copy_skips: bool) -> Verdict {
    let mut why = format!(
        "content differs ({how}: SHA-256 at SRC {}..., at DST {}...)",
        &a[..12.min(a.len())],
        &b[..12.min(b.len())]
    );
    // A check that finds what a plain copy would skip says how to repair it.
    if ctx.opts.check && !ctx.opts.checksum && copy_skips {
        why.push_str(
            "; size and mtime are equal, so a plain copy skips it: repair with `coffer copy --checksum`",
        );
    }
    Verdict {
        same: a == b,
        how,
        why,
    }
}

/// SHA-256 of an object's bytes, read in parts of [`LOCAL_BLOCK`] (the
/// caller holds [`HASH_COST_MIB`] of the budget for it).
async fn hash_object(loc: &Location, key: &str) -> Result<String, String> {
    let what = |f: Fail| format!("hashing {key} at {} ({}): {}", loc.side, loc.url, f.msg);
    let mut r = open_reader(loc, key).await.map_err(what)?;
    let mut h = Sha256::new();
    while let Some(part) = r.read_part(LOCAL_BLOCK).await.map_err(what)? {
        h = hash_part(h, part).await;
    }
    Ok(hex::encode(h.finalize()))
}

/// Why one attempt failed, and whether another may succeed.
struct Fail {
    msg: String,
    retry: bool,
}

fn os_fail(what: &str, e: object_store::Error) -> Fail {
    let retry = !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
    );
    let msg = match e {
        object_store::Error::NotFound { .. } => format!("{what}: not found"),
        e => format!("{what}: {e}"),
    };
    Fail { msg, retry }
}

fn io_fail(what: &str, e: std::io::Error) -> Fail {
    use std::io::ErrorKind::*;
    let retry = !matches!(
        e.kind(),
        NotFound | PermissionDenied | IsADirectory | NotADirectory | AlreadyExists | InvalidInput
    );
    Fail {
        msg: format!("{what}: {e}"),
        retry,
    }
}

fn fail(msg: String) -> Fail {
    Fail { msg, retry: true }
}

async fn hash_part(mut h: Sha256, part: Bytes) -> Sha256 {
    tokio::task::spawn_blocking(move || {
        h.update(&part);
        h
    })
    .await
    .expect("hashing does not panic")
}

/// An object being read, in parts.
enum Reader {
    Local {
        file: Option<std::fs::File>,
        side: &'static str,
    },
    Remote {
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        buf: BytesMut,
        done: bool,
        side: &'static str,
    },
}

impl Reader {
    /// The next `want` bytes, fewer only at the end; None after the end.
    async fn read_part(&mut self, want: usize) -> Result<Option<Bytes>, Fail> {
        match self {
            Reader::Local { file, side } => {
                let Some(mut f) = file.take() else {
                    return Ok(None);
                };
                let (f, r) = tokio::task::spawn_blocking(move || {
                    let mut buf = BytesMut::zeroed(want);
                    let mut n = 0;
                    while n < want {
                        match f.read(&mut buf[n..]) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return (f, Err(e)),
                        }
                    }
                    buf.truncate(n);
                    (f, Ok(buf.freeze()))
                })
                .await
                .expect("read does not panic");
                let b = r.map_err(|e| io_fail(&format!("read {side}"), e))?;
                if b.len() == want {
                    *file = Some(f);
                } else if b.is_empty() {
                    return Ok(None);
                }
                Ok(Some(b))
            }
            Reader::Remote {
                stream,
                buf,
                done,
                side,
            } => {
                while !*done && buf.len() < want {
                    match stream.next().await {
                        Some(Ok(b)) => buf.extend_from_slice(&b),
                        Some(Err(e)) => return Err(os_fail(&format!("read {side}"), e)),
                        None => *done = true,
                    }
                }
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = buf.len().min(want);
                Ok(Some(buf.split_to(n).freeze()))
            }
        }
    }
}

/// Opens an object for reading.
async fn open_reader(loc: &Location, key: &str) -> Result<Reader, Fail> {
    Ok(open_source(loc, key).await?.0)
}

/// Opens an object; for a cloud object also its stored SHA-256.
async fn open_source(loc: &Location, key: &str) -> Result<(Reader, Option<String>), Fail> {
    match &loc.kind {
        Kind::Local(_) => {
            let p = loc.file_path(key).map_err(|m| Fail {
                msg: m,
                retry: false,
            })?;
            let f = tokio::task::spawn_blocking(move || std::fs::File::open(p))
                .await
                .expect("open does not panic")
                .map_err(|e| io_fail(&format!("open {}", loc.side), e))?;
            Ok((
                Reader::Local {
                    file: Some(f),
                    side: loc.side,
                },
                None,
            ))
        }
        Kind::Remote { store, .. } => {
            let r = store
                .get(&loc.obj_path(key))
                .await
                .map_err(|e| os_fail(&format!("read {}", loc.side), e))?;
            let (sha, _) = stored_meta(&r.attributes);
            let stream = match r.payload {
                GetResultPayload::Stream(s) => s,
                GetResultPayload::File(..) => r.into_stream(),
            };
            Ok((
                Reader::Remote {
                    stream,
                    buf: BytesMut::new(),
                    done: false,
                    side: loc.side,
                },
                sha,
            ))
        }
    }
}

fn meta_attrs(sha: Option<&str>, mtime: DateTime<Utc>) -> Attributes {
    let mut a = Attributes::new();
    if let Some(s) = sha {
        a.insert(Attribute::Metadata(META_SHA.into()), s.to_string().into());
    }
    a.insert(
        Attribute::Metadata(META_MTIME.into()),
        mtime
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            .into(),
    );
    a
}

/// One attempt at copying one object; returns the bytes copied.
async fn copy_once(ctx: &Ctx, src: &Entry) -> Result<u64, Fail> {
    if ctx.server_side {
        return copy_server_side(ctx, src).await;
    }
    if ctx.src.is_local() && ctx.dst.is_local() {
        return copy_local_local(ctx, src).await;
    }
    // Objects below a part are read whole; larger ones hold a fixed amount.
    let cost = if src.size < PART as u64 {
        (src.size.div_ceil(1 << 20) as u32).max(1)
    } else {
        LARGE_COST_MIB
    };
    let _budget = ctx
        .budget
        .acquire_many(cost)
        .await
        .expect("the budget is never closed");
    let (mut reader, stored_sha) = open_source(&ctx.src, &src.key).await?;
    // A local file going to a cloud store is hashed first, so that its hash
    // is written as metadata when the upload starts (the hash of a large
    // object is only known at its end); the second hash, while streaming,
    // must then match it.
    let mut expected = stored_sha;
    let first = reader.read_part(PART).await?.unwrap_or_default();
    let single = first.len() < PART;
    if expected.is_none() && !single && ctx.src.is_local() && !ctx.dst.is_local() {
        let mut r = open_reader(&ctx.src, &src.key).await?;
        let mut h = Sha256::new();
        while let Some(part) = r.read_part(PART).await? {
            h = hash_part(h, part).await;
        }
        expected = Some(hex::encode(h.finalize()));
    }
    let mut hasher = hash_part(Sha256::new(), first.clone()).await;
    let mut size = first.len() as u64;
    match &ctx.dst.kind {
        Kind::Remote { store, .. } => {
            let path = ctx.dst.obj_path(&src.key);
            if single {
                let sha = hex::encode(hasher.finalize());
                check_sha(&expected, &sha, &src.key)?;
                let opts = PutOptions {
                    attributes: meta_attrs(Some(&sha), src.mtime),
                    ..Default::default()
                };
                store
                    .put_opts(&path, PutPayload::from(first), opts)
                    .await
                    .map_err(|e| os_fail("write DST", e))?;
            } else {
                let opts = PutMultipartOptions {
                    attributes: meta_attrs(expected.as_deref(), src.mtime),
                    ..Default::default()
                };
                let upload = store
                    .put_multipart_opts(&path, opts)
                    .await
                    .map_err(|e| os_fail("start upload to DST", e))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
                w.put(first);
                let mut streamed: Result<(), Fail> = Ok(());
                loop {
                    let part = match reader.read_part(PART).await {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(f) => {
                            streamed = Err(f);
                            break;
                        }
                    };
                    size += part.len() as u64;
                    hasher = hash_part(hasher, part.clone()).await;
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        streamed = Err(os_fail("upload to DST", e));
                        break;
                    }
                    w.put(part);
                }
                if let Err(f) = streamed {
                    let _ = w.abort().await;
                    return Err(f);
                }
                let sha = hex::encode(hasher.finalize());
                if let Err(f) = check_sha(&expected, &sha, &src.key) {
                    let _ = w.abort().await;
                    return Err(f);
                }
                w.finish()
                    .await
                    .map_err(|e| os_fail("finish upload to DST", e))?;
            }
            let at_dst = store
                .head(&path)
                .await
                .map_err(|e| os_fail("stat DST after writing", e))?
                .size;
            if at_dst != size {
                return Err(fail(format!(
                    "size at DST is {at_dst} bytes after writing {size}"
                )));
            }
            Ok(size)
        }
        Kind::Local(_) => {
            let final_path = ctx.dst.file_path(&src.key).map_err(|m| Fail {
                msg: m,
                retry: false,
            })?;
            let mut w = LocalWriter::create(final_path).await?;
            w = w.write(first).await?;
            while let Some(part) = reader.read_part(PART).await? {
                size += part.len() as u64;
                hasher = hash_part(hasher, part.clone()).await;
                w = w.write(part).await?;
            }
            let sha = hex::encode(hasher.finalize());
            check_sha(&expected, &sha, &src.key)?;
            w.finish(size, src.mtime).await?;
            Ok(size)
        }
    }
}

fn check_sha(expected: &Option<String>, got: &str, key: &str) -> Result<(), Fail> {
    match expected {
        Some(e) if e != got => Err(fail(format!(
            "SHA-256 mismatch for {key}: SRC says {e}, the bytes read hash to {got} (changed while copying, or corrupted)"
        ))),
        _ => Ok(()),
    }
}

async fn copy_server_side(ctx: &Ctx, src: &Entry) -> Result<u64, Fail> {
    let Kind::Remote { store, .. } = &ctx.dst.kind else {
        unreachable!("server-side copies are between cloud prefixes")
    };
    let (from, to) = (ctx.src.obj_path(&src.key), ctx.dst.obj_path(&src.key));
    store
        .copy(&from, &to)
        .await
        .map_err(|e| os_fail("server-side copy", e))?;
    let at_dst = store
        .head(&to)
        .await
        .map_err(|e| os_fail("stat DST after copying", e))?
        .size;
    if at_dst != src.size {
        return Err(fail(format!(
            "size at DST is {at_dst} bytes after a server-side copy of {} bytes",
            src.size
        )));
    }
    Ok(at_dst)
}

/// A file written next to its final name and renamed into place once
/// complete, so a killed copy never leaves a short file under the real name
/// (its `.coffer-partial-` leftover is ignored by listings and replaced by
/// the next run).
struct LocalWriter {
    file: std::fs::File,
    tmp: PathBuf,
    path: PathBuf,
}

impl LocalWriter {
    async fn create(path: PathBuf) -> Result<LocalWriter, Fail> {
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().expect("a key has a parent").to_path_buf();
            std::fs::create_dir_all(&dir).map_err(|e| io_fail("create DST directory", e))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = dir.join(format!(".{name}{TMP_MARK}{}", crate::crypto::random_id(4)));
            let file = std::fs::File::create(&tmp).map_err(|e| io_fail("create DST file", e))?;
            Ok(LocalWriter { file, tmp, path })
        })
        .await
        .expect("create does not panic")
    }

    async fn write(mut self, part: Bytes) -> Result<LocalWriter, Fail> {
        tokio::task::spawn_blocking(move || match self.file.write_all(&part) {
            Ok(()) => Ok(self),
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                Err(io_fail("write DST", e))
            }
        })
        .await
        .expect("write does not panic")
    }

    /// Checks the size, sets the mtime and renames into place.
    async fn finish(self, size: u64, mtime: DateTime<Utc>) -> Result<(), Fail> {
        tokio::task::spawn_blocking(move || {
            let r = (|| {
                let at = self
                    .file
                    .metadata()
                    .map_err(|e| io_fail("stat DST", e))?
                    .len();
                if at != size {
                    return Err(fail(format!(
                        "size at DST is {at} bytes after writing {size}"
                    )));
                }
                let t = filetime::FileTime::from_unix_time(
                    mtime.timestamp(),
                    mtime.timestamp_subsec_nanos(),
                );
                filetime::set_file_handle_times(&self.file, None, Some(t))
                    .map_err(|e| io_fail("set the mtime of DST", e))?;
                // The copy may be the only other copy of a backup: its bytes
                // must be on disk before its name says it is complete.
                self.file.sync_all().map_err(|e| io_fail("fsync DST", e))?;
                std::fs::rename(&self.tmp, &self.path)
                    .map_err(|e| io_fail("rename DST into place", e))
            })();
            if r.is_err() {
                let _ = std::fs::remove_file(&self.tmp);
            }
            r
        })
        .await
        .expect("finish does not panic")
    }
}

/// Local to local: one blocking loop that reads, hashes and writes.
async fn copy_local_local(ctx: &Ctx, src: &Entry) -> Result<u64, Fail> {
    let from = ctx.src.file_path(&src.key).map_err(|m| Fail {
        msg: m,
        retry: false,
    })?;
    let to = ctx.dst.file_path(&src.key).map_err(|m| Fail {
        msg: m,
        retry: false,
    })?;
    let w = LocalWriter::create(to).await?;
    let mtime = src.mtime;
    let (w, size) = tokio::task::spawn_blocking(move || {
        let mut w = w;
        let run = |w: &mut LocalWriter| -> Result<u64, Fail> {
            let mut f = std::fs::File::open(&from).map_err(|e| io_fail("open SRC", e))?;
            let mut buf = vec![0u8; LOCAL_BLOCK];
            // No hash here: a filesystem SRC has no stored SHA-256 to compare
            // one with; the size is checked at DST (`--checksum` compares
            // both sides' bytes).
            let mut size = 0u64;
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_fail("read SRC", e)),
                };
                w.file
                    .write_all(&buf[..n])
                    .map_err(|e| io_fail("write DST", e))?;
                size += n as u64;
            }
            Ok(size)
        };
        match run(&mut w) {
            Ok(n) => Ok((w, n)),
            Err(f) => {
                let _ = std::fs::remove_file(&w.tmp);
                Err(f)
            }
        }
    })
    .await
    .expect("copy does not panic")?;
    w.finish(size, mtime).await?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matches_basename_or_whole_key() {
        let f = Filter::new(&["*.jpg".into()], &["cache/**".into()]).unwrap();
        assert!(f.wants("a/b/cat.jpg"));
        assert!(!f.wants("a/b/cat.png"));
        assert!(!f.wants("cache/x/cat.jpg"));
        let f = Filter::new(&[], &["a/*".into()]).unwrap();
        assert!(!f.wants("a/x"));
        assert!(f.wants("a/b/x"));
        assert!(Filter::new(&["[".into()], &[]).is_err());
    }

    #[test]
    fn local_walk_is_in_key_order() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/b", "a-c", "a.d", "a/a/z", "b", "A", "a0"] {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let keys: Vec<String> = rt.block_on(async {
            list_local(d.path().to_path_buf(), "t".into())
                .map(|e| e.unwrap().key)
                .collect()
                .await
        });
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 7);
    }
}
