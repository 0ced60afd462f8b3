//! `directory` and `files` sources: walk, read and archive local files.
//!
//! One unreadable file does not stop a snapshot: it is recorded as a
//! [`Problem`] (the snapshot becomes partial) and the walk goes on. Sockets,
//! FIFOs and devices are skipped with a warning. Symlinks are stored as links,
//! never followed; hard links are stored once and then as links to the first
//! path.
//!
//! Coffer usually runs as root over trees that others own, so the walk goes
//! by directory handles (`openat` with `O_NOFOLLOW` below the root) and
//! records what the `fstat` of the opened file says: an owner who swaps a
//! directory or file for a link between the lookup and the `open` gets a
//! per-file problem, never a copy of what the link points to.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::{
    AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat, fstat, openat, readlinkat, statat,
};

use crate::archive::{EntrySink, IndexWriter, tar_name};
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
    /// Format 2: files taken from the parent snapshot without a read.
    pub reused: u64,
    pub problems: Vec<Problem>,
    pub skipped: Vec<Problem>,
    /// Files and directories the walk listed that were gone when it came to
    /// read them (deleted meanwhile, e.g. an application's cache file): not
    /// stored, and not an error unless `[snapshot] vanished = "partial"`.
    pub vanished: Vec<String>,
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

/// Why an entry is refused when what was opened is not what the walk saw.
const CHANGED_IDENTITY: &str =
    "changed identity during the snapshot (device/inode differ): not stored";
/// The same, when the entry became a symbolic link between the walk and the
/// `open` (which `O_NOFOLLOW` refuses).
const BECAME_SYMLINK: &str =
    "changed identity during the snapshot (it became a symbolic link): not stored";

/// Flags for opening a directory below the root: never through a symlink.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Flags for opening a file to read it: never through a symlink, and never
/// blocking (a FIFO swapped in after the walk must not hang the snapshot).
fn file_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// What the kernel says about one file, in the types the index uses.
#[derive(Clone, Copy, Debug)]
struct Meta {
    dev: u64,
    ino: u64,
    nlink: u64,
    kind: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    ctime: i64,
    ctime_nsec: u32,
}

impl Meta {
    // `Stat`'s field types differ between targets: some casts are no-ops here.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &Stat) -> Meta {
        Meta {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            kind: FileType::from_raw_mode(st.st_mode as _),
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as u32,
            ctime: st.st_ctime as i64,
            ctime_nsec: st.st_ctime_nsec as u32,
        }
    }

    /// A file entry with what format 2 records of it (section 20).
    fn file_entry(&self, rel: &str, identity: bool) -> IndexEntry {
        let mut e = self.entry(rel, EntryKind::File);
        e.size = self.size;
        if identity {
            e.ino = Some(self.ino);
            e.ctime = Some(self.ctime);
            e.ctime_nsec = Some(self.ctime_nsec);
        }
        e
    }

    fn same_file(&self, other: &Meta) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// An index entry at `rel` with these attributes.
    fn entry(&self, rel: &str, kind: EntryKind) -> IndexEntry {
        IndexEntry {
            mode: self.mode,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            uid: self.uid,
            gid: self.gid,
            ..IndexEntry::new(rel.to_string(), kind)
        }
    }
}

fn fstat_meta(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    fstat(fd).map(|st| Meta::of(&st)).map_err(io::Error::from)
}

/// The names in the directory open at `fd`, sorted bytewise (the order of
/// the archive), without `.` and `..`.
fn list_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for ent in Dir::read_from(fd)? {
        let name = ent?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// One directory being walked: its handle, its path in the archive (empty
/// for the root) and on disk, and the names still to visit.
struct Level {
    fd: OwnedFd,
    rel: String,
    abs: PathBuf,
    names: std::vec::IntoIter<Vec<u8>>,
}

/// Archives the tree under `root`.
///
/// The walk goes by directory handles: each entry is looked up (`statat`)
/// and opened (`openat` with `O_NOFOLLOW`) relative to its parent's open
/// handle, and every recorded attribute comes from the `fstat` of what was
/// opened. A directory or file whose device/inode differ between the two
/// (swapped by its owner in between) is a per-file problem, never followed:
/// the owner of a backed-up tree cannot make this walk read, or record as
/// theirs, anything outside it. The root itself is opened through the
/// configured path, symlinks included: that path is the administrator's.
pub fn archive_directory<T: EntrySink, I: Write>(
    root: &Path,
    exclude: &[String],
    tar: &mut T,
    index: &mut IndexWriter<I>,
) -> Result<Walked, FsSourceError> {
    walk_directory(root, exclude, tar, index, Walker::default())
}

fn walk_directory<T: EntrySink, I: Write>(
    root: &Path,
    exclude: &[String],
    tar: &mut T,
    index: &mut IndexWriter<I>,
    mut w: Walker,
) -> Result<Walked, FsSourceError> {
    let root_err = |e: io::Error| FsSourceError::Root {
        path: root.display().to_string(),
        source: e,
    };
    let root_fd = match openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOTDIR) => {
            return Err(FsSourceError::NotADirectory(root.display().to_string()));
        }
        Err(e) => return Err(root_err(e.into())),
    };
    let ex = Excluder::new(exclude)?;
    let m = fstat_meta(root_fd.as_fd()).map_err(root_err)?;
    let e = m.entry(".", EntryKind::Dir);
    tar.append(&e, &tar_name(&e), None)
        .map_err(FsSourceError::Write)?;
    index.push(&e).map_err(FsSourceError::Write)?;
    let names = list_dir(root_fd.as_fd()).map_err(root_err)?;
    let mut stack = vec![Level {
        fd: root_fd,
        rel: String::new(),
        abs: root.to_path_buf(),
        names: names.into_iter(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            stack.pop();
            continue;
        };
        let abs = top.abs.join(OsStr::from_bytes(&name));
        let shown = abs.display().to_string();
        let Ok(name) = std::str::from_utf8(&name) else {
            w.problem(
                &shown,
                "its name is not valid UTF-8, which this version cannot store",
            );
            continue;
        };
        let rel = if top.rel.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", top.rel)
        };
        if ex.excluded(&rel) {
            continue;
        }
        if let Some(fd) = w.add(top.fd.as_fd(), name, &shown, &rel, tar, index)? {
            match list_dir(fd.as_fd()) {
                Ok(names) => stack.push(Level {
                    fd,
                    rel,
                    abs,
                    names: names.into_iter(),
                }),
                Err(e) => w.problem(&shown, &format!("cannot list its entries: {e}")),
            }
        }
    }
    Ok(w.done)
}

/// Archives each listed file under its absolute path (without the leading '/').
/// Each file is looked up and opened relative to a handle on its parent
/// directory, with the same identity check as a directory walk.
pub fn archive_files<T: EntrySink, I: Write>(
    paths: &[PathBuf],
    tar: &mut T,
    index: &mut IndexWriter<I>,
) -> Result<Walked, FsSourceError> {
    let mut w = Walker::default();
    for p in paths {
        let shown = p.display().to_string();
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            w.problem(&shown, "is not a file path");
            continue;
        };
        let (Some(rel), Some(name)) = (p.to_str(), name.to_str()) else {
            w.problem(
                &shown,
                "its name is not valid UTF-8, which this version cannot store",
            );
            continue;
        };
        let rel = rel.trim_start_matches('/');
        let dir = match openat(
            CWD,
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(e) => {
                w.problem(&shown, &io::Error::from(e).to_string());
                continue;
            }
        };
        match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory => w.problem(
                &shown,
                "is a directory; back it up with a `directory` source",
            ),
            // A directory swapped in after this check is stored as an empty
            // directory entry (the handle returned is not walked).
            Ok(_) => drop(w.add(dir.as_fd(), name, &shown, rel, tar, index)?),
            Err(e) => w.problem(&shown, &io::Error::from(e).to_string()),
        }
    }
    Ok(w.done)
}

/// See [`Walker::race`].
#[cfg(test)]
type RaceHook = Box<dyn FnMut(&str)>;

#[derive(Default)]
struct Walker {
    done: Walked,
    /// (device, inode) of multiply-linked files already stored -> their
    /// path, size and SHA-256 (a hard link's index entry repeats them).
    links: HashMap<(u64, u64), (String, u64, Option<String>)>,
    /// Called with an entry's name between its lookup and its `open`, so
    /// unit tests can swap it deterministically.
    #[cfg(test)]
    race: Option<RaceHook>,
}

impl Walker {
    fn problem(&mut self, path: &str, error: &str) {
        tracing::warn!("{path}: {error}");
        self.done.problems.push(Problem {
            path: path.to_string(),
            error: error.to_string(),
        });
    }

    /// A listed entry that is gone when the walk comes to read it: not
    /// stored, recorded apart from the problems (see [`Walked::vanished`]).
    fn vanished(&mut self, path: &str) {
        tracing::warn!(
            "{path}: vanished during the snapshot (deleted after the walk listed it); not stored"
        );
        self.done.vanished.push(path.to_string());
    }

    /// Runs between an entry's lookup and its `open`: the unit tests' race
    /// hook, and in debug builds [`test_vanish`].
    #[allow(unused_variables)]
    fn between_lookup_and_open(&mut self, dir: BorrowedFd<'_>, name: &str, rel: &str) {
        #[cfg(test)]
        if let Some(f) = self.race.as_mut() {
            f(name);
        }
        #[cfg(debug_assertions)]
        test_vanish(dir, name, rel);
    }

    /// Archives the entry `name` of the directory open at `dir`; `shown` is
    /// its path for messages, `rel` its path in the archive. Returns the
    /// handle of a directory, for the caller to walk.
    fn add<T: EntrySink, I: Write>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        shown: &str,
        rel: &str,
        tar: &mut T,
        index: &mut IndexWriter<I>,
    ) -> Result<Option<OwnedFd>, FsSourceError> {
        let werr = FsSourceError::Write;
        let seen = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::of(&st),
            Err(rustix::io::Errno::NOENT) => {
                self.vanished(shown);
                return Ok(None);
            }
            Err(e) => {
                self.problem(shown, &io::Error::from(e).to_string());
                return Ok(None);
            }
        };
        if seen.kind == FileType::Directory {
            self.between_lookup_and_open(dir, name, rel);
            let opened = openat(dir, name, dir_flags(), Mode::empty())
                .map_err(io::Error::from)
                .and_then(|fd| Ok((fstat_meta(fd.as_fd())?, fd)));
            let (m, fd) = match opened {
                Ok((m, fd)) if m.kind == FileType::Directory && m.same_file(&seen) => (m, fd),
                Ok(_) => {
                    self.problem(shown, CHANGED_IDENTITY);
                    return Ok(None);
                }
                Err(e) if is_symlink_refusal(&e) => {
                    self.problem(shown, BECAME_SYMLINK);
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.vanished(shown);
                    return Ok(None);
                }
                Err(e) => {
                    self.problem(shown, &e.to_string());
                    return Ok(None);
                }
            };
            let e = m.entry(rel, EntryKind::Dir);
            tar.append(&e, &tar_name(&e), None).map_err(werr)?;
            index.push(&e).map_err(werr)?;
            return Ok(Some(fd));
        }
        if seen.kind == FileType::Symlink {
            // A link has no content to protect: its own attributes are stored.
            let target = match readlinkat(dir, name, Vec::new()) {
                Ok(t) => t,
                Err(err) => {
                    self.problem(shown, &io::Error::from(err).to_string());
                    return Ok(None);
                }
            };
            let Ok(t) = target.into_string() else {
                self.problem(shown, "its link target is not valid UTF-8");
                return Ok(None);
            };
            let mut e = seen.entry(rel, EntryKind::Symlink);
            e.target = Some(t);
            tar.append(&e, &tar_name(&e), None).map_err(werr)?;
            index.push(&e).map_err(werr)?;
            return Ok(None);
        }
        if seen.kind != FileType::RegularFile {
            tracing::warn!("{shown}: skipped (socket, FIFO or device file)");
            self.done.skipped.push(Problem {
                path: shown.to_string(),
                error: "special file (socket, FIFO or device) skipped".into(),
            });
            return Ok(None);
        }
        if seen.nlink > 1
            && let Some((first, size, sha)) = self.links.get(&(seen.dev, seen.ino))
        {
            // The first path's bytes were stored after its own identity
            // check; this entry only points at them.
            let mut e = seen.entry(rel, EntryKind::Hardlink);
            e.target = Some(first.clone());
            // tar gives a link no data; the index still says what it holds.
            e.size = *size;
            e.sha256 = sha.clone();
            tar.append(&e, &tar_name(&e), None).map_err(werr)?;
            index.push(&e).map_err(werr)?;
            return Ok(None);
        }
        if tar.records_identity()
            && let Some(line) = tar.unchanged(&seen.file_entry(rel, true))
        {
            // Unchanged since the parent snapshot (section 21.2): its line,
            // chunks and all, stands for the file without a read.
            self.done.files += 1;
            self.done.reused += 1;
            if seen.nlink > 1 {
                self.links.insert(
                    (seen.dev, seen.ino),
                    (line.path.clone(), line.size, line.sha256.clone()),
                );
            }
            index.push(&line).map_err(werr)?;
            return Ok(None);
        }
        self.between_lookup_and_open(dir, name, rel);
        // Until the file is open, only what the lookup saw is known: an entry
        // that cannot be stored is recorded with that.
        let unstored = seen.entry(rel, EntryKind::File);
        let fd = match openat(dir, name, file_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                // Deleted since the lookup: as if the walk had come later.
                self.vanished(shown);
                return Ok(None);
            }
            Err(err) => {
                let err = io::Error::from(err);
                let why = if is_symlink_refusal(&err) {
                    BECAME_SYMLINK.to_string()
                } else {
                    err.to_string()
                };
                self.record_unstored(unstored, shown, &why, index)?;
                return Ok(None);
            }
        };
        let before = match fstat_meta(fd.as_fd()) {
            Ok(m) if m.kind == FileType::RegularFile && m.same_file(&seen) => m,
            Ok(_) => {
                self.record_unstored(unstored, shown, CHANGED_IDENTITY, index)?;
                return Ok(None);
            }
            Err(err) => {
                self.record_unstored(unstored, shown, &err.to_string(), index)?;
                return Ok(None);
            }
        };
        let file = File::from(fd);
        let mut e = before.file_entry(rel, tar.records_identity());
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
        e.chunks = outcome.chunks;
        let after = fstat_meta(file.as_fd()).ok();
        let changed = after.is_none_or(|a| {
            a.size != before.size || a.mtime != before.mtime || a.mtime_nsec != before.mtime_nsec
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
            self.problem(shown, &why);
            e.error = Some(why);
        }
        if before.nlink > 1 {
            self.links.insert(
                (before.dev, before.ino),
                (e.path.clone(), e.size, e.sha256.clone()),
            );
        }
        index.push(&e).map_err(werr)?;
        Ok(None)
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

/// Test hook, compiled into debug builds only (release builds have no such
/// code, so no environment can make a production snapshot delete a file):
/// with `COFFER_TEST_VANISH=<path in the archive>`, that entry is deleted
/// between the walk's lookup and its `open`, so the tests can make the
/// "deleted during the snapshot" race happen every time.
#[cfg(debug_assertions)]
fn test_vanish(dir: BorrowedFd<'_>, name: &str, rel: &str) {
    static VANISH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let target = VANISH.get_or_init(|| std::env::var("COFFER_TEST_VANISH").ok());
    if target.as_deref() == Some(rel) {
        let flags = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory => {
                AtFlags::REMOVEDIR
            }
            _ => AtFlags::empty(),
        };
        let _ = rustix::fs::unlinkat(dir, name, flags);
    }
}

/// `O_NOFOLLOW` refuses a final symlink with `ELOOP`; `O_DIRECTORY` refuses
/// one with `ENOTDIR`.
fn is_symlink_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
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
    use crate::archive::TarWriter;

    use std::os::unix::fs::{MetadataExt, symlink};

    /// Walks `root` with `race` run between each lookup and its `open`;
    /// returns what was walked, the index entries, and the tar stream.
    fn walk_with(root: &Path, race: RaceHook) -> (Walked, Vec<IndexEntry>, Vec<u8>) {
        let mut tar = TarWriter::new(Vec::new());
        let mut index = IndexWriter::new(Vec::new());
        let w = Walker {
            race: Some(race),
            ..Walker::default()
        };
        let walked = walk_directory(root, &[], &mut tar, &mut index, w).unwrap();
        let lines = String::from_utf8(index.finish()).unwrap();
        let entries = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (walked, entries, tar.finish().unwrap())
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Issue 10 item 4: a file replaced by another one between the walk's
    /// lookup and the `open` is refused, not stored under the first one's
    /// identity.
    #[test]
    fn a_file_swapped_before_open_is_a_problem_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.txt"), b"public bytes").unwrap();
        std::fs::write(root.join("b.txt"), b"kept").unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"SECRET-BYTES-4711").unwrap();
        let (r, s) = (root.clone(), secret.clone());
        let (walked, entries, tar) = walk_with(
            &root,
            Box::new(move |name| {
                if name == "a.txt" {
                    std::fs::rename(&s, r.join("a.txt")).unwrap();
                }
            }),
        );
        assert!(
            !contains(&tar, b"SECRET-BYTES-4711"),
            "the swapped-in file was stored"
        );
        assert_eq!(walked.problems.len(), 1, "{:?}", walked.problems);
        assert!(walked.problems[0].path.ends_with("a.txt"));
        assert_eq!(walked.problems[0].error, CHANGED_IDENTITY);
        let a = entries.iter().find(|e| e.path == "a.txt").unwrap();
        assert!(
            !a.stored && a.error.as_deref() == Some(CHANGED_IDENTITY),
            "{a:?}"
        );
        let b = entries.iter().find(|e| e.path == "b.txt").unwrap();
        assert!(b.stored, "the other files are stored: {b:?}");
    }

    /// A directory replaced by a symlink, or by another directory, between
    /// lookup and `open` is refused and not walked into.
    #[test]
    fn a_directory_swapped_before_open_is_a_problem_and_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["link-me", "swap-me"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("f"), b"public").unwrap();
        }
        let secret = dir.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("f"), b"SECRET-BYTES-4711").unwrap();
        let (r, s) = (root.clone(), secret.clone());
        let (walked, entries, tar) = walk_with(
            &root,
            Box::new(move |name| match name {
                "link-me" => {
                    std::fs::rename(r.join("link-me"), r.join("link-me.old")).unwrap();
                    symlink(&s, r.join("link-me")).unwrap();
                }
                "swap-me" => {
                    std::fs::rename(r.join("swap-me"), r.join("swap-me.old")).unwrap();
                    std::fs::rename(&s, r.join("swap-me")).unwrap();
                }
                _ => {}
            }),
        );
        assert!(
            !contains(&tar, b"SECRET-BYTES-4711"),
            "the swapped-in tree was stored"
        );
        let errors: Vec<(&str, &str)> = walked
            .problems
            .iter()
            .map(|p| (p.path.rsplit('/').next().unwrap(), p.error.as_str()))
            .collect();
        assert_eq!(
            errors,
            vec![("link-me", BECAME_SYMLINK), ("swap-me", CHANGED_IDENTITY)]
        );
        assert!(
            !entries
                .iter()
                .any(|e| e.path.starts_with("link-me") || e.path.starts_with("swap-me")),
            "{entries:?}"
        );
    }

    /// Every attribute of a stored file is the opened file's.
    #[test]
    fn attributes_come_from_the_opened_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"12345").unwrap();
        let (walked, entries, _) = walk_with(&root, Box::new(|_| {}));
        assert!(walked.problems.is_empty());
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec![".", "sub", "sub/f"]);
        let m = std::fs::metadata(root.join("sub/f")).unwrap();
        let f = &entries[2];
        assert_eq!(
            (f.size, f.mode, f.uid, f.gid),
            (5, m.mode() & 0o7777, m.uid(), m.gid())
        );
        assert_eq!((f.mtime, f.mtime_nsec), (m.mtime(), m.mtime_nsec() as u32));
    }

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
