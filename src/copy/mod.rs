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
/// of them are passed to [`Monitor::event`] as they happen.
const KEEP: usize = 1000;
/// Metadata keys coffer writes on every cloud object it copies.
const META_SHA: &str = "sha256";
const META_MTIME: &str = "mtime";
/// Temporary files of local writes; never listed, never copied.
const TMP_MARK: &str = ".coffer-partial-";

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `--src-opt`/`--dst-opt` that is not `KEY=...`; only the key is
    /// kept: the value may be a secret given by mistake.
    #[error(
        "{flag} {shown:?}...: expected KEY=VALUE, KEY=@FILE or KEY=env:VAR, e.g. {flag} aws_region=eu-west-1"
    )]
    StoreOptionSyntax { flag: String, shown: String },
    #[error(
        "{flag} {key}=@{file}: cannot read {file}: {source}; give a readable file holding the value"
    )]
    StoreOptionFile {
        flag: String,
        key: String,
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {key}=env:{var}: {}; export {var} or give the value another way", match .source {
        std::env::VarError::NotPresent => format!("{var} is not set"),
        std::env::VarError::NotUnicode(_) => format!("{var} is not valid UTF-8"),
    })]
    StoreOptionEnv {
        flag: String,
        key: String,
        var: String,
        #[source]
        source: std::env::VarError,
    },
    #[error("source {0} does not exist; check the path, bucket or container name")]
    SourceMissing(String),
    #[error("listing {url} failed: {source}")]
    List {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
        reason: globset::ErrorKind,
    },
    #[error("--concurrency must be at least 1")]
    NoConcurrency,
    #[error(
        "SRC {src} and DST {dst} overlap (one is inside the other); copy to a separate prefix or directory"
    )]
    Overlap { src: String, dst: String },
    #[error("destination {0} exists and is not a directory")]
    NotADirectory(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl CopyError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CopyError::Store(s) => s.kind(),
            CopyError::BadGlob { .. }
            | CopyError::NoConcurrency
            | CopyError::Overlap { .. }
            | CopyError::NotADirectory(_)
            | CopyError::StoreOptionSyntax { .. }
            | CopyError::StoreOptionFile { .. }
            | CopyError::StoreOptionEnv { .. } => ErrorKind::Usage,
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

pub use crate::progress::{Event, Monitor};

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

mod compare;
mod listing;
mod object;
mod run;

use compare::*;
use listing::*;
use object::*;
pub use run::copy;
use run::*;

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
