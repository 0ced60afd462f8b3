//! The extractor: writes the authenticated entries `read` yields into a
//! staging directory, with a writer thread for file bodies.

use super::*;

/// Unpacks a tar stream into staging, refusing anything that would leave
/// it. Every file is created by handle in a directory opened without
/// following symlinks.
pub(super) struct Extractor {
    pub(super) layout: Layout,
    pub(super) snapshot: String,
    pub(super) source: String,
    pub(super) include: Option<GlobSet>,
    /// A files source in place restores only its configured paths.
    pub(super) allowed: Option<BTreeSet<String>>,
    pub(super) as_root: bool,
    pub(super) dirs: u64,
    pub(super) files: u64,
    pub(super) links: u64,
    pub(super) bytes: u64,
    /// Directories (relative paths, "." for the root) whose metadata is set
    /// at the end.
    pub(super) dir_meta: Vec<(String, IndexEntry)>,
    /// What was staged, in order, for per-entry commits.
    pub(super) committed: Vec<(String, EntryKind)>,
    /// Files of the snapshot left out because the current config no longer
    /// lists them.
    pub(super) not_configured: Vec<String>,
    /// Archive paths of the files stored with a problem (a torn read),
    /// restored or not.
    pub(super) stored_flagged: Vec<String>,
    /// Those of them restored, with the snapshot's reason.
    pub(super) flagged: Vec<(String, String)>,
    pub(super) writer: FileWriter,
}

/// Work for the writer thread: the extractor parses, checks paths, creates
/// and hashes; the writer copies bytes into the page cache and sets
/// metadata, so the two halves run on both cores. It gets open files, never
/// paths (the path is for messages only).
pub(super) enum WriteOp {
    Open(PathBuf, fs::File),
    Data(Vec<u8>),
    Close(IndexEntry, bool),
}

pub(super) struct FileWriter {
    pub(super) tx: Option<std::sync::mpsc::SyncSender<WriteOp>>,
    pub(super) thread: Option<JoinHandle<Result<(), RestoreError>>>,
}

impl FileWriter {
    pub(super) fn start() -> FileWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<WriteOp>(16);
        let thread = std::thread::spawn(move || -> Result<(), RestoreError> {
            let mut cur: Option<(PathBuf, fs::File)> = None;
            for op in rx {
                match op {
                    WriteOp::Open(p, f) => cur = Some((p, f)),
                    WriteOp::Data(d) => {
                        let (p, f) = cur.as_mut().expect("data after open");
                        f.write_all(&d).map_err(io_err("write", p))?;
                        crate::progress::add(d.len() as u64);
                    }
                    WriteOp::Close(ie, as_root) => {
                        let (p, f) = cur.take().expect("close after open");
                        dirfd::set_metadata(
                            &f,
                            as_root,
                            ie.uid,
                            ie.gid,
                            ie.mode,
                            (ie.mtime, ie.mtime_nsec),
                        )
                        .map_err(io_err("set mode of", &p))?;
                    }
                }
            }
            Ok(())
        });
        FileWriter {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    pub(super) fn send(&mut self, op: WriteOp) -> Result<(), RestoreError> {
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(op).is_ok())
            .unwrap_or(false);
        if sent {
            return Ok(());
        }
        // The writer stopped: its own error says why.
        self.finish()?;
        Err(RestoreError::Internal("the file writer stopped".into()))
    }

    pub(super) fn finish(&mut self) -> Result<(), RestoreError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(RestoreError::Internal("file writer panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Extractor {
    pub(super) fn new(
        layout: Layout,
        m: &Manifest,
        src: &SourceRecord,
        include: Option<GlobSet>,
        allowed: Option<BTreeSet<String>>,
    ) -> Self {
        Extractor {
            layout,
            snapshot: m.id.clone(),
            source: src.name.clone(),
            include,
            allowed,
            as_root: rustix::process::geteuid().is_root(),
            dirs: 0,
            files: 0,
            links: 0,
            bytes: 0,
            dir_meta: Vec::new(),
            committed: Vec::new(),
            not_configured: Vec::new(),
            stored_flagged: Vec::new(),
            flagged: Vec::new(),
            writer: FileWriter::start(),
        }
    }

    pub(super) fn into_layout(mut self) -> Layout {
        let _ = self.writer.finish();
        std::mem::replace(&mut self.layout, Layout::Beside(BTreeMap::new()))
    }

    pub(super) fn contained(&self, path: &str, reason: Refusal) -> RestoreError {
        RestoreError::Contained {
            snapshot: self.snapshot.clone(),
            source_name: self.source.clone(),
            path: path.to_string(),
            reason,
        }
    }

    /// The staging directory that holds `rel`, and its name there. In a
    /// tree, every parent is a real directory inside the staging root
    /// (created if missing, never a symlink); for a files source in place,
    /// the staging directory beside its destination.
    pub(super) fn locate(&mut self, rel: &str) -> Result<(Dir, String), RestoreError> {
        let (pr, name) = split_rel(rel);
        match &mut self.layout {
            Layout::Tree(st) => {
                let mut d = st.dir.try_clone().map_err(io_err("open", st.dir.path()))?;
                for c in pr.split('/').filter(|c| !c.is_empty()) {
                    d = match d.open_dir(c) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            d.mkdir(c, 0o700)
                                .map_err(io_err("create directory", &d.join(c)))?;
                            d.open_dir(c)
                                .map_err(io_err("open directory", &d.join(c)))?
                        }
                        Err(_) => {
                            return Err(self.contained(rel, Refusal::ParentNotDir(c.to_string())));
                        }
                    };
                }
                Ok((d, name.to_string()))
            }
            Layout::Beside(dirs) => {
                if !dirs.contains_key(pr) {
                    let (parent, missing) = open_existing_ancestor(&Path::new("/").join(pr))?;
                    dirs.insert(
                        pr.to_string(),
                        Beside {
                            staging: Staging::new(parent)?,
                            missing,
                        },
                    );
                }
                let d = &dirs[pr].staging.dir;
                Ok((
                    d.try_clone().map_err(io_err("open", d.path()))?,
                    name.to_string(),
                ))
            }
        }
    }

    /// Where `rel` was staged, if it was.
    pub(super) fn find(&self, rel: &str) -> Option<(Dir, String)> {
        let (pr, name) = split_rel(rel);
        let d = match &self.layout {
            Layout::Tree(st) => st.dir.open_rel(pr).ok()?,
            Layout::Beside(dirs) => dirs.get(pr)?.staging.dir.try_clone().ok()?,
        };
        Some((d, name.to_string()))
    }

    /// Stages each authenticated entry of the source that is wanted.
    pub(super) fn run(&mut self, s: &mut SourceStreams) -> Result<(), RestoreError> {
        let filtering = self.include.is_some() || self.allowed.is_some();
        s.walk(|entry| self.stage(entry, filtering)).map(|_| ())
    }

    /// Stages one entry (or passes over it when it is not wanted).
    pub(super) fn stage(
        &mut self,
        entry: &mut Entry<'_>,
        filtering: bool,
    ) -> Result<Flow, RestoreError> {
        let rel = entry.rel.clone();
        let kind = entry.kind;
        let ie = entry.index.clone();
        if kind == EntryKind::File && ie.error.is_some() {
            self.stored_flagged.push(rel.clone());
        }
        let mut wanted = included(&self.include, &rel);
        if wanted
            && let Some(a) = &self.allowed
            && !a.contains(&rel)
        {
            self.not_configured.push(format!("/{rel}"));
            wanted = false;
        }
        if !wanted {
            // The walk still reads and checks its data.
            return Ok(Flow::Next);
        }
        if matches!(self.layout, Layout::Beside(_)) && kind == EntryKind::Dir {
            return Err(self.contained(&rel, Refusal::DirInPlace));
        }
        match kind {
            EntryKind::Dir => {
                if rel != "." {
                    let (d, n) = self.locate(&rel)?;
                    match d.stat_at(&n) {
                        Ok(md) if md.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                        Ok(_) => {
                            return Err(self.contained(&rel, Refusal::NotADirectory));
                        }
                        Err(_) => d
                            .mkdir(&n, 0o700)
                            .map_err(io_err("create directory", &d.join(&n)))?,
                    }
                    self.committed.push((rel.clone(), kind));
                }
                self.dirs += 1;
                self.dir_meta.push((rel.clone(), ie));
            }
            EntryKind::File => {
                let (d, n) = self.locate(&rel)?;
                let p = d.join(&n);
                let f = match d.create_file(&n, 0o600) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        d.unlink(&n).map_err(io_err("replace", &p))?;
                        d.create_file(&n, 0o600)
                    }
                    other => other,
                }
                .map_err(io_err("create", &p))?;
                self.writer.send(WriteOp::Open(p, f))?;
                let mut n = 0u64;
                loop {
                    let mut buf = vec![0u8; 256 * 1024];
                    // At the end, the walk checks size and SHA-256.
                    let k = entry.read_full(&mut buf)?;
                    if k == 0 {
                        break;
                    }
                    buf.truncate(k);
                    n += k as u64;
                    self.writer.send(WriteOp::Data(buf))?;
                }
                if let Some(why) = &ie.error {
                    self.flagged.push((rel.clone(), why.clone()));
                }
                self.writer.send(WriteOp::Close(ie, self.as_root))?;
                self.files += 1;
                self.bytes += n;
                self.committed.push((rel.clone(), kind));
            }
            EntryKind::Symlink => {
                let (d, n) = self.locate(&rel)?;
                let target = ie.target.clone().unwrap_or_default();
                let _ = d.unlink(&n);
                d.symlink(&target, &n)
                    .map_err(io_err("create link", &d.join(&n)))?;
                if self.as_root {
                    let _ = d.lchown_at(&n, ie.uid, ie.gid);
                }
                let _ = d.set_mtime_at(&n, ie.mtime, ie.mtime_nsec);
                self.links += 1;
                self.committed.push((rel.clone(), kind));
            }
            EntryKind::Hardlink => {
                let target = ie.target.clone().unwrap_or_default();
                let trel = safe_path(target.as_bytes())
                    .map_err(|r| self.contained(&rel, Refusal::Name(r)))?;
                let found = self.find(&trel).filter(|(td, tn)| {
                    td.stat_at(tn)
                        .map(|m| m.st_mode & libc::S_IFMT == libc::S_IFREG)
                        .unwrap_or(false)
                });
                let Some((td, tn)) = found else {
                    // The first copy was not restored (filtered out by
                    // --include or the config): nothing to link to.
                    if filtering {
                        return Ok(Flow::Next);
                    }
                    return Err(self.contained(&rel, Refusal::HardLinkTarget(trel)));
                };
                let (d, n) = self.locate(&rel)?;
                let _ = d.unlink(&n);
                match d.hard_link(&td, &tn, &n) {
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                        // Two destinations of a files source on two
                        // filesystems: a copy, owner set before mode.
                        self.copy_file(&td, &tn, &d, &n, &ie)?
                    }
                    other => other.map_err(io_err("create hard link", &d.join(&n)))?,
                }
                // The same bytes as the file it links to: as (in)consistent.
                if let Some((_, why)) = self.flagged.iter().find(|(r, _)| *r == trel) {
                    let why = why.clone();
                    self.flagged.push((rel.clone(), why));
                }
                self.links += 1;
                self.committed.push((rel.clone(), kind));
            }
        }
        Ok(Flow::Next)
    }

    /// Copies staged file `from/fname` to `to/name`, with `ie`'s owner (as
    /// root), then mode and mtime.
    pub(super) fn copy_file(
        &mut self,
        from: &Dir,
        fname: &str,
        to: &Dir,
        name: &str,
        ie: &IndexEntry,
    ) -> Result<(), RestoreError> {
        let p = to.join(name);
        let mut r = from
            .open_file(fname)
            .map_err(io_err("open", &from.join(fname)))?;
        let mut w = to.create_file(name, 0o600).map_err(io_err("create", &p))?;
        io::copy(&mut r, &mut w).map_err(io_err("write", &p))?;
        dirfd::set_metadata(
            &w,
            self.as_root,
            ie.uid,
            ie.gid,
            ie.mode,
            (ie.mtime, ie.mtime_nsec),
        )
        .map_err(io_err("set mode of", &p))
    }

    /// Directory owners, modes and mtimes last, deepest first: writing into
    /// a directory changes its mtime, and a read-only mode would stop us.
    /// Each is opened from the private staging root without following
    /// symlinks.
    pub(super) fn apply_dir_metadata(&mut self) -> Result<(), RestoreError> {
        let Layout::Tree(st) = &self.layout else {
            return Ok(());
        };
        for (rel, e) in self.dir_meta.iter().rev() {
            let d = st
                .dir
                .open_rel(rel)
                .map_err(io_err("open staged directory", &st.dir.join(rel)))?;
            dirfd::set_metadata(
                d.as_fd(),
                self.as_root,
                e.uid,
                e.gid,
                e.mode,
                (e.mtime, e.mtime_nsec),
            )
            .map_err(io_err("set mode of", d.path()))?;
        }
        Ok(())
    }
}

/// The deepest existing directory on the way to `p`, opened by
/// [`Dir::open_path`], and the names still missing below it.
pub(super) fn open_existing_ancestor(p: &Path) -> Result<(Dir, Vec<OsString>), RestoreError> {
    let mut missing = Vec::new();
    let mut cur = p;
    loop {
        match Dir::open_path(cur, None) {
            Ok(d) => {
                missing.reverse();
                return Ok((d, missing));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match (cur.parent(), cur.file_name()) {
                    (Some(parent), Some(name)) => {
                        missing.push(name.to_os_string());
                        cur = parent;
                    }
                    _ => return Err(io_err("open directory", p)(e)),
                }
            }
            Err(e) => return Err(io_err("open directory", cur)(e)),
        }
    }
}
