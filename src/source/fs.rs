//! `directory` and `files` sources: walk, read and archive local files.
//!
//! One unreadable file does not stop a snapshot: it is recorded as a
//! [`Problem`] (the snapshot becomes partial) and the walk goes on. Sockets,
//! FIFOs and devices are skipped with a warning. Symlinks are stored as links,
//! never followed; hard links are stored once and then as links to the first
//! path.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::archive::{IndexWriter, TarWriter, tar_name};
use crate::manifest::{EntryKind, IndexEntry, Problem};

#[derive(Debug, thiserror::Error)]
pub enum FsSourceError {
    #[error("cannot read {path}: {source}")]
    Root {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("bad exclude pattern {pattern:?}: {reason}")]
    Exclude { pattern: String, reason: String },
    /// Writing the archive failed (the upload or a pipeline stage): fatal.
    #[error("{0}")]
    Write(#[source] io::Error),
}

/// What a walk read and what went wrong on the way.
#[derive(Debug, Default)]
pub struct Walked {
    pub files: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    pub skipped: Vec<Problem>,
    /// Type-specific facts for the manifest (dump sources).
    pub details: super::Details,
}

struct Excluder {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl Excluder {
    /// Patterns without '/' match a name at any depth (`*.tmp`); patterns
    /// with one match the path from the source root (`cache/**`), and
    /// `dir/**` also excludes `dir` itself.
    fn new(patterns: &[String]) -> Result<Self, FsSourceError> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        let bad = |p: &str, e: globset::Error| FsSourceError::Exclude {
            pattern: p.to_string(),
            reason: e.to_string(),
        };
        for p in patterns {
            let pat = p.trim_start_matches("./").trim_start_matches('/');
            if pat.contains('/') {
                let glob = |g: &str| GlobBuilder::new(g).literal_separator(true).build();
                by_path.add(glob(pat).map_err(|e| bad(p, e))?);
                if let Some(dir) = pat.strip_suffix("/**") {
                    by_path.add(glob(dir).map_err(|e| bad(p, e))?);
                }
            } else {
                by_name.add(Glob::new(pat).map_err(|e| bad(p, e))?);
            }
        }
        Ok(Excluder {
            by_name: by_name.build().map_err(|e| bad("", e))?,
            by_path: by_path.build().map_err(|e| bad("", e))?,
        })
    }

    fn excluded(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.by_name.is_match(name) || self.by_path.is_match(rel)
    }
}

/// Archives the tree under `root`.
pub fn archive_directory<W: Write, I: Write>(
    root: &Path,
    exclude: &[String],
    tar: &mut TarWriter<W>,
    index: &mut IndexWriter<I>,
) -> Result<Walked, FsSourceError> {
    let meta = std::fs::metadata(root).map_err(|e| FsSourceError::Root {
        path: root.display().to_string(),
        source: e,
    })?;
    if !meta.is_dir() {
        return Err(FsSourceError::NotADirectory(root.display().to_string()));
    }
    let ex = Excluder::new(exclude)?;
    let mut w = Walker::default();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = rel_path(root, e.path());
            rel == "." || !ex.excluded(&rel)
        });
    for item in walk {
        match item {
            Ok(e) => {
                let rel = rel_path(root, e.path());
                w.add(e.path(), &rel, tar, index)?;
            }
            Err(e) => {
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if e.depth() == 0 {
                    return Err(FsSourceError::Root {
                        path,
                        source: e
                            .into_io_error()
                            .unwrap_or_else(|| io::Error::other("loop")),
                    });
                }
                w.problem(&path, &e.to_string());
            }
        }
    }
    Ok(w.done)
}

/// Archives each listed file under its absolute path (without the leading '/').
pub fn archive_files<W: Write, I: Write>(
    paths: &[std::path::PathBuf],
    tar: &mut TarWriter<W>,
    index: &mut IndexWriter<I>,
) -> Result<Walked, FsSourceError> {
    let mut w = Walker::default();
    for p in paths {
        let rel = p.to_string_lossy().trim_start_matches('/').to_string();
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => w.problem(
                &p.display().to_string(),
                "is a directory; back it up with a `directory` source",
            ),
            Ok(_) => w.add(p, &rel, tar, index)?,
            Err(e) => w.problem(&p.display().to_string(), &e.to_string()),
        }
    }
    Ok(w.done)
}

fn rel_path(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(r) if r.as_os_str().is_empty() => ".".to_string(),
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => p.to_string_lossy().into_owned(),
    }
}

#[derive(Default)]
struct Walker {
    done: Walked,
    /// (device, inode) of multiply-linked files already stored -> their
    /// path, size and SHA-256 (a hard link's index entry repeats them).
    links: HashMap<(u64, u64), (String, u64, Option<String>)>,
}

impl Walker {
    fn problem(&mut self, path: &str, error: &str) {
        tracing::warn!("{path}: {error}");
        self.done.problems.push(Problem {
            path: path.to_string(),
            error: error.to_string(),
        });
    }

    fn add<W: Write, I: Write>(
        &mut self,
        abs: &Path,
        rel: &str,
        tar: &mut TarWriter<W>,
        index: &mut IndexWriter<I>,
    ) -> Result<(), FsSourceError> {
        let shown = abs.display().to_string();
        if abs.to_str().is_none() {
            self.problem(
                &shown,
                "its name is not valid UTF-8, which this version cannot store",
            );
            return Ok(());
        }
        let m = match std::fs::symlink_metadata(abs) {
            Ok(m) => m,
            Err(e) => {
                self.problem(&shown, &e.to_string());
                return Ok(());
            }
        };
        let mut e = IndexEntry {
            path: rel.to_string(),
            kind: EntryKind::File,
            size: 0,
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec() as u32,
            uid: m.uid(),
            gid: m.gid(),
            target: None,
            sha256: None,
            stored: true,
            error: None,
            object: None,
        };
        let ft = m.file_type();
        let werr = FsSourceError::Write;
        if ft.is_dir() {
            e.kind = EntryKind::Dir;
            tar.append(&e, &tar_name(&e), None).map_err(werr)?;
            return index.push(&e).map_err(FsSourceError::Write);
        }
        if ft.is_symlink() {
            let target = match std::fs::read_link(abs) {
                Ok(t) => t,
                Err(err) => {
                    self.problem(&shown, &err.to_string());
                    return Ok(());
                }
            };
            let Some(t) = target.to_str() else {
                self.problem(&shown, "its link target is not valid UTF-8");
                return Ok(());
            };
            e.kind = EntryKind::Symlink;
            e.target = Some(t.to_string());
            tar.append(&e, &tar_name(&e), None).map_err(werr)?;
            return index.push(&e).map_err(FsSourceError::Write);
        }
        if !ft.is_file() {
            tracing::warn!("{shown}: skipped (socket, FIFO or device file)");
            self.done.skipped.push(Problem {
                path: shown,
                error: "special file (socket, FIFO or device) skipped".into(),
            });
            return Ok(());
        }
        if m.nlink() > 1
            && let Some((first, size, sha)) = self.links.get(&(m.dev(), m.ino()))
        {
            {
                e.kind = EntryKind::Hardlink;
                e.target = Some(first.clone());
                // tar gives a link no data; the index still says what it holds.
                e.size = *size;
                e.sha256 = sha.clone();
                tar.append(&e, &tar_name(&e), None).map_err(werr)?;
                return index.push(&e).map_err(FsSourceError::Write);
            }
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(abs)
        {
            Ok(f) => f,
            Err(err) => {
                self.record_unstored(e, &shown, &err.to_string(), index)?;
                return Ok(());
            }
        };
        let before = match file.metadata() {
            Ok(b) if b.is_file() => b,
            Ok(_) => {
                self.record_unstored(e, &shown, "was replaced while being read", index)?;
                return Ok(());
            }
            Err(err) => {
                self.record_unstored(e, &shown, &err.to_string(), index)?;
                return Ok(());
            }
        };
        e.size = before.len();
        e.mode = before.mode() & 0o7777;
        e.mtime = before.mtime();
        e.mtime_nsec = before.mtime_nsec() as u32;
        let mut reader = ReadErrorCatcher {
            inner: &file,
            error: None,
        };
        let outcome = tar
            .append(&e, &tar_name(&e), Some(&mut reader))
            .map_err(werr)?
            .expect("regular file outcome");
        self.done.files += 1;
        self.done.bytes_read += outcome.read;
        e.sha256 = Some(outcome.sha256);
        let after = file.metadata().ok();
        let changed = after.is_none_or(|a| {
            a.len() != before.len()
                || a.mtime() != before.mtime()
                || a.mtime_nsec() != before.mtime_nsec()
        });
        let why = if let Some(err) = reader.error {
            Some(format!(
                "read failed part-way ({err}); the stored copy is zero-filled after that point"
            ))
        } else if outcome.short {
            Some("shrank while being read; the stored copy is zero-filled at the end".to_string())
        } else if changed {
            Some("changed while being read; the stored copy may mix old and new bytes".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            self.problem(&shown, &why);
            e.error = Some(why);
        }
        if m.nlink() > 1 {
            self.links.insert(
                (m.dev(), m.ino()),
                (e.path.clone(), e.size, e.sha256.clone()),
            );
        }
        index.push(&e).map_err(FsSourceError::Write)
    }

    fn record_unstored<I: Write>(
        &mut self,
        mut e: IndexEntry,
        shown: &str,
        error: &str,
        index: &mut IndexWriter<I>,
    ) -> Result<(), FsSourceError> {
        self.problem(shown, error);
        e.stored = false;
        e.error = Some(error.to_string());
        index.push(&e).map_err(FsSourceError::Write)
    }
}

/// Turns a read error part-way through a file into a short read, remembering
/// it: the archive stays in step and the file is reported.
struct ReadErrorCatcher<'a> {
    inner: &'a File,
    error: Option<io::Error>,
}

impl io::Read for ReadErrorCatcher<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        match (&mut self.inner).read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.error = Some(e);
                Ok(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns() {
        let ex = Excluder::new(&["cache/**".into(), "*.tmp".into()]).unwrap();
        assert!(ex.excluded("cache"));
        assert!(ex.excluded("cache/a/b.jpg"));
        assert!(ex.excluded("x/y.tmp"));
        assert!(!ex.excluded("uploads/cache.jpg"));
        assert!(!ex.excluded("media/cache2/x"));
    }
}
