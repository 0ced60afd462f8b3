//! Staging directories beside a destination (or inside a mount point):
//! made, checked, removed when abandoned, and the destinations they serve.

use super::*;

/// A private staging directory we created in `parent`; removed (by handle)
/// when dropped, unless something else took charge of it.
pub(super) struct Staging {
    pub(super) parent: Dir,
    pub(super) name: String,
    pub(super) dir: Dir,
    /// The staging directory's identity, checked before any rename or
    /// removal by name.
    pub(super) id: (u64, u64),
    pub(super) keep: bool,
}

impl Staging {
    /// Creates one in `parent`, after checking that no other user could
    /// replace what we stage there.
    pub(super) fn new(parent: Dir) -> Result<Staging, RestoreError> {
        let st = parent
            .stat()
            .map_err(io_err("inspect directory", parent.path()))?;
        if let Some(reason) = dirfd::unsafe_staging_parent(&st) {
            return Err(RestoreError::UnsafeParent {
                path: parent.path().display().to_string(),
                reason,
            });
        }
        remove_abandoned_staging(&parent);
        let (name, dir) = parent
            .make_staging(&crate::abandoned::staging_prefix())
            .map_err(|e| match dirfd::Replaced::of(&e) {
                Some(p) => RestoreError::Changed {
                    path: parent.path().display().to_string(),
                    what: format!(
                        "the staging directory {} that coffer had just created",
                        p.display()
                    ),
                },
                None => io_err("create a staging directory in", parent.path())(e),
            })?;
        let id = dirfd::identity(&dir.stat().map_err(io_err("inspect", dir.path()))?);
        Ok(Staging {
            parent,
            name,
            dir,
            id,
            keep: false,
        })
    }
}

/// Removes the staging directories in `parent` that a killed restore left
/// and that are provably abandoned (see [`crate::abandoned`]): ours by
/// name, made on this host by a process that is gone, a real directory
/// owned by us. Everything is done through `parent`'s handle, never
/// following a symlink; what cannot be proved abandoned stays.
pub(super) fn remove_abandoned_staging(parent: &Dir) {
    use crate::abandoned::{Verdict, staging_verdict};
    let Ok(entries) = parent.entries() else {
        return;
    };
    for e in entries {
        let Some(name) = e.to_str() else { continue };
        let Some(Verdict::Abandoned(owner)) = staging_verdict(name) else {
            continue;
        };
        let Ok(st) = parent.stat_at(name) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR
            || st.st_uid != rustix::process::geteuid().as_raw()
        {
            continue;
        }
        let path = parent.join(name);
        match parent.remove_all(name) {
            Ok(()) => crate::abandoned::removed(format!(
                "removed {}: a staging directory left by a killed restore (process {} on this host, no longer running)",
                path.display(),
                owner.pid
            )),
            Err(e) => tracing::warn!(
                "{} was left by a killed restore (process {}, no longer running) but could not be removed: {e}; remove it by hand",
                path.display(),
                owner.pid
            ),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            remove_if(&self.parent, &self.name, Some(self.id));
        }
    }
}

/// A files source's staging directory for one destination directory: in
/// its deepest existing ancestor (the destination directory itself when it
/// exists), so that every rename into place stays on one filesystem.
pub(super) struct Beside {
    pub(super) staging: Staging,
    /// Directories below `staging.parent` still to create at commit.
    pub(super) missing: Vec<OsString>,
}

/// Where a source is staged.
pub(super) enum Layout {
    /// The whole tree in one staging directory.
    Tree(Staging),
    /// A files source in place: per destination directory (relative to
    /// `/`), a staging directory beside it.
    Beside(BTreeMap<String, Beside>),
}

/// A tree destination, opened: its parent's handle and its name.
pub(super) struct TreeDest {
    pub(super) parent: Dir,
    pub(super) name: OsString,
    /// A mount point cannot be renamed over: it is staged inside and its
    /// content replaced entry by entry.
    pub(super) mount: bool,
}

impl TreeDest {
    /// Opens the parent of `dest` (created if missing, 0700 like the rest of
    /// what coffer creates) and finds whether `dest` is a mount point.
    pub(super) fn open(dest: &Path) -> Result<TreeDest, RestoreError> {
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(RestoreError::NoParent(dest.display().to_string()));
        };
        let parent =
            Dir::open_path(parent, Some(0o700)).map_err(io_err("open directory", parent))?;
        let here = parent.stat().map_err(io_err("inspect", parent.path()))?;
        let mount = parent
            .stat_at(name)
            .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR && s.st_dev != here.st_dev)
            .unwrap_or(false);
        Ok(TreeDest {
            parent,
            name: name.to_os_string(),
            mount,
        })
    }

    pub(super) fn path(&self) -> PathBuf {
        self.parent.join(&self.name)
    }

    /// Refuses, before anything is written, a restore of `src` whose staged
    /// copy cannot fit where [`TreeDest::staging`] puts it: the copy is
    /// staged whole while the destination keeps its current content, so an
    /// in-place restore needs room for a second copy. The snapshot's
    /// `bytes_read` (what its files held) is the size of that copy.
    pub(super) fn check_room(&self, m: &Manifest, src: &SourceRecord) -> Result<(), RestoreError> {
        let (fd, dir) = if self.mount {
            let d = self
                .parent
                .open_dir(&self.name)
                .map_err(io_err("open directory", &self.path()))?;
            let p = self.path();
            (d, p)
        } else {
            let d = self
                .parent
                .try_clone()
                .map_err(io_err("open directory", self.parent.path()))?;
            let p = self.parent.path().to_path_buf();
            (d, p)
        };
        let st = rustix::fs::fstatvfs(&fd)
            .map_err(|e| io_err("find the free space of", &dir)(e.into()))?;
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        let needed = src.bytes_read;
        if available >= needed {
            return Ok(());
        }
        Err(RestoreError::NoSpace {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            dest: self.path().display().to_string(),
            staging_dir: dir.display().to_string(),
            needed: megabytes(needed),
            available: megabytes(available),
        })
    }

    /// A staging directory beside the destination, or inside it if it is a
    /// mount point.
    pub(super) fn staging(&self) -> Result<Staging, RestoreError> {
        let holder = if self.mount {
            self.parent
                .open_dir(&self.name)
                .map_err(io_err("open directory", &self.path()))?
        } else {
            self.parent
                .try_clone()
                .map_err(io_err("open directory", self.parent.path()))?
        };
        Staging::new(holder)
    }
}

/// A file source (or a dump written as files) unpacked and authenticated in
/// its staging directory, not yet in place.
pub(super) struct StagedSource {
    pub(super) src: SourceRecord,
    pub(super) snapshot: String,
    pub(super) plan: Plan,
    pub(super) layout: Layout,
    pub(super) dest: Option<TreeDest>,
    pub(super) entries: Vec<(String, EntryKind)>,
    pub(super) out: RestoredSource,
    pub(super) started: Instant,
}

impl StagedSource {
    /// A swap of a whole directory that is not a mount point can be undone.
    pub(super) fn undoable(&self) -> bool {
        matches!(self.plan, Plan::Swap { .. }) && self.dest.as_ref().is_some_and(|d| !d.mount)
    }

    pub(super) fn finish(mut self) -> RestoredSource {
        self.out.duration_ms = self.started.elapsed().as_millis() as u64;
        self.out
    }

    /// Swaps the staged tree into place, keeping the previous content.
    pub(super) fn commit_swap(mut self) -> Result<(Swapped, RestoredSource), RestoreError> {
        let (Some(dest), Layout::Tree(staging)) = (&self.dest, &mut self.layout) else {
            unreachable!("only tree swaps are undoable")
        };
        let old_id = dest
            .parent
            .stat_at(&dest.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        let existed = old_id.is_some();
        let flags = if existed {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        let here = dest
            .parent
            .stat_at(&staging.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        if here != Some(staging.id) {
            staging.keep = true;
            return Err(RestoreError::Changed {
                path: dest.parent.path().display().to_string(),
                what: format!("the staging directory {}", staging.name),
            });
        }
        dest.parent
            .rename(&staging.name, &dest.parent, &dest.name, flags)
            .map_err(io_err("swap the restored copy into place at", &dest.path()))?;
        // From here the staging name holds the old content (or nothing),
        // and the swap record is in charge of it.
        staging.keep = true;
        // The names were looked up again for the rename: check that they
        // led to what they did a moment before.
        let now_dest = dest
            .parent
            .stat_at(&dest.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        let now_old = dest
            .parent
            .stat_at(&staging.name)
            .ok()
            .map(|s| dirfd::identity(&s));
        if now_dest != Some(staging.id) || (existed && now_old != old_id) {
            return Err(RestoreError::Changed {
                path: dest.parent.path().display().to_string(),
                what: format!(
                    "{} or the staging directory {}",
                    dest.name.to_string_lossy(),
                    staging.name
                ),
            });
        }
        let sw = Swapped {
            parent: dest
                .parent
                .try_clone()
                .map_err(io_err("open directory", dest.parent.path()))?,
            dest_name: dest.name.clone(),
            old_name: staging.name.clone(),
            existed,
            old_id,
            new_id: staging.id,
        };
        let out = RestoredSource {
            duration_ms: self.started.elapsed().as_millis() as u64,
            ..std::mem::replace(&mut self.out, RestoredSource::new(&self.src, String::new()))
        };
        Ok((sw, out))
    }

    /// Commits what cannot be swapped whole: into a mount point, or entry by
    /// entry (files sources and `--include` in place).
    pub(super) fn commit_in_place(self) -> Result<RestoredSource, RestoreError> {
        let at = Where {
            snapshot: self.snapshot.clone(),
            source: self.src.name.clone(),
        };
        match (&self.plan, &self.layout, &self.dest) {
            (Plan::Swap { .. }, Layout::Tree(staging), Some(dest)) => {
                replace_contents(staging, dest)?
            }
            (Plan::PerEntry { .. }, Layout::Tree(staging), Some(dest)) => {
                commit_tree_entries(&staging.dir, dest, &self.entries, &at)?
            }
            (Plan::Files { .. }, Layout::Beside(dirs), None) => {
                commit_beside(dirs, &self.entries, &at)?
            }
            _ => unreachable!("plan and layout agree"),
        }
        Ok(self.finish())
    }
}
