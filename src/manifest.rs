//! Manifests and indexes: what a snapshot holds.
//!
//! A snapshot's manifest (one sealed JSON document, written last, the commit
//! point) lists its sources with their sizes and the archive and index objects
//! that hold them. A source's index (a sealed, zstd-compressed stream of JSON
//! lines, one per archive entry, in archive order) records each file's
//! metadata and SHA-256, so `show --files` and `verify --deep` need not read
//! the archive, and memory stays bounded whatever the number of files.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunks::ChunkId;

/// The newest manifest version this build reads: 1 in format 1
/// repositories, 2 in format 2 (docs/FORMAT.md section 21).
pub const MANIFEST_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStatus {
    Ok,
    Partial,
}

impl SnapshotStatus {
    /// A partial snapshot is committed but lacks what failed: exit 3.
    pub fn outcome(self) -> crate::Outcome {
        match self {
            SnapshotStatus::Ok => crate::Outcome::Ok,
            SnapshotStatus::Partial => crate::Outcome::Partial,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceStatus {
    Ok,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub id: String,
    pub time: DateTime<Utc>,
    pub host: String,
    pub tool_version: String,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub status: SnapshotStatus,
    /// Reserved for incremental snapshots: the snapshot whose archives hold
    /// the bytes of unchanged files. Always null in version 1.
    #[serde(default)]
    pub parent: Option<String>,
    pub sources: Vec<SourceRecord>,
}

impl Manifest {
    pub fn bytes_stored(&self) -> u64 {
        self.sources.iter().map(|s| s.bytes_stored).sum()
    }

    pub fn source(&self, name: &str) -> Option<&SourceRecord> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// A stored object and what it must hash to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectRef {
    pub object: String,
    pub size: u64,
    pub sha256: String,
}

/// Where a format 2 source's file list is: its chunks in order, its
/// length and SHA-256 (section 21).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListRef {
    pub chunks: Vec<ChunkId>,
    pub size: u64,
    pub sha256: String,
}

/// A file that could not be stored whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: SourceStatus,
    pub error: Option<String>,
    pub files: u64,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub duration_ms: u64,
    /// Where the source lived: a directory source's path; for a files source,
    /// "/" (each entry keeps its absolute path).
    #[serde(default)]
    pub origin: Option<String>,
    pub archive: Option<ObjectRef>,
    pub index: Option<ObjectRef>,
    /// Format 2: the chunks of the source's file list (section 21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ListRef>,
    /// Format 2: chunks this source uploaded and their stored bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_chunks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_bytes: Option<u64>,
    /// Format 2: files whose chunks came from the parent without a read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_files: Option<u64>,
    /// Files that could not be read, or changed while read.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Special files skipped (sockets, FIFOs, devices).
    #[serde(default)]
    pub skipped: Vec<Problem>,
    /// Files and directories deleted between the walk's listing and their
    /// read: not stored. Absent from manifests written before this field
    /// existed, and when nothing vanished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vanished: Vec<String>,
    /// Type-specific facts (database server version, dump format, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

/// One line of a source's index: one archive entry, or a file that could not
/// be stored (`stored: false`, with `error`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// Path inside the archive, '/'-separated, never absolute, no `..`.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    #[serde(default)]
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
    /// Symlink target, or for a hard link the archive path it links to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub stored: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Reserved for incremental snapshots: the archive object that holds this
    /// file's bytes when it is not this source's own archive. Absent in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Format 2: the ids of a stored file's content, in order (section 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<ChunkId>>,
    /// Format 2, on the wire only: more chunks follow on `more` lines.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// Format 2, directory sources: inode and change time when read, for
    /// the next snapshot's unchanged-file shortcut (section 21.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_nsec: Option<u32>,
}

impl IndexEntry {
    /// A stored entry at `path`: size, mode, times and owner 0, and every
    /// optional field empty, for the caller to fill in.
    pub fn new(path: String, kind: EntryKind) -> IndexEntry {
        IndexEntry {
            path,
            kind,
            size: 0,
            mode: 0,
            mtime: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            target: None,
            sha256: None,
            stored: true,
            error: None,
            object: None,
            chunks: None,
            more: false,
            ino: None,
            ctime: None,
            ctime_nsec: None,
        }
    }
}

/// The context string bound into a sealed object's authentication: which
/// repository, snapshot and source it belongs to. See docs/FORMAT.md.
pub fn seal_context(repo_id: &str, snapshot_id: &str, source: Option<&str>) -> Vec<u8> {
    let mut c = format!("coffer/v1\0{repo_id}\0{snapshot_id}").into_bytes();
    if let Some(s) = source {
        c.push(0);
        c.extend_from_slice(s.as_bytes());
    }
    c
}

/// The snapshots `coffer snapshots` lists, oldest first: those with `tag`
/// and holding `source`; with `latest`, only the newest of them.
pub fn filter<'a>(
    all: &'a [Manifest],
    tag: Option<&str>,
    source: Option<&str>,
    latest: bool,
) -> Vec<&'a Manifest> {
    let mut list: Vec<&Manifest> = all
        .iter()
        .filter(|m| tag.is_none_or(|t| m.tags.iter().any(|x| x == t)))
        .filter(|m| source.is_none_or(|n| m.sources.iter().any(|x| x.name == n)))
        .collect();
    if latest && list.len() > 1 {
        list.drain(..list.len() - 1);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, tags: &[&str], sources: &[&str]) -> Manifest {
        let m = serde_json::json!({
            "version": 1, "id": id, "time": "2026-01-01T00:00:00Z", "host": "h",
            "tool_version": "0", "tags": tags, "labels": {}, "status": "ok",
            "sources": sources.iter().map(|n| serde_json::json!({
                "name": n, "type": "directory", "status": "ok", "error": null,
                "files": 0, "bytes_read": 0, "bytes_stored": 0, "duration_ms": 0,
                "archive": null, "index": null,
            })).collect::<Vec<_>>(),
        });
        serde_json::from_value(m).unwrap()
    }

    fn ids(v: Vec<&Manifest>) -> Vec<&str> {
        v.into_iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn filter_by_tag_source_and_latest() {
        let all = [
            manifest("a", &["daily"], &["db"]),
            manifest("b", &[], &["db", "media"]),
            manifest("c", &["daily"], &["media"]),
        ];
        assert_eq!(ids(filter(&all, None, None, false)), ["a", "b", "c"]);
        assert_eq!(ids(filter(&all, Some("daily"), None, false)), ["a", "c"]);
        assert_eq!(ids(filter(&all, None, Some("db"), false)), ["a", "b"]);
        assert_eq!(ids(filter(&all, Some("daily"), Some("db"), false)), ["a"]);
        assert_eq!(ids(filter(&all, None, Some("db"), true)), ["b"]);
        assert_eq!(
            ids(filter(&all, Some("weekly"), None, true)),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn partial_snapshot_is_a_partial_outcome() {
        assert_eq!(SnapshotStatus::Ok.outcome(), crate::Outcome::Ok);
        assert_eq!(SnapshotStatus::Partial.outcome(), crate::Outcome::Partial);
    }
}
