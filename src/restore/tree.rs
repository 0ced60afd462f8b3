//! Moving staged entries into a destination through directory handles,
//! refusing anything another process swapped meanwhile.

use super::*;

/// For a mount point: moves what it holds aside, moves the staged tree's
/// entries in, then deletes the old entries. Not atomic like a rename, but
/// every step is a rename within one filesystem, by handle, and until the
/// last step the old data is still there (in `dest/.coffer-old-*`).
pub(super) fn replace_contents(staging: &Staging, dest: &TreeDest) -> Result<(), RestoreError> {
    let path = dest.path();
    let d = &staging.parent;
    let (old_name, old) = d
        .make_staging(&crate::abandoned::old_prefix())
        .map_err(io_err("create a directory in", &path))?;
    for e in d.entries().map_err(io_err("list", &path))? {
        if e == staging.name.as_str() || e == old_name.as_str() {
            continue;
        }
        d.rename(&e, &old, &e, RenameFlags::empty())
            .map_err(io_err("move aside", &d.join(&e)))?;
    }
    for e in staging
        .dir
        .entries()
        .map_err(io_err("list", &d.join(&staging.name)))?
    {
        staging
            .dir
            .rename(&e, d, &e, RenameFlags::empty())
            .map_err(io_err("move into place", &d.join(&e)))?;
    }
    if let Ok(st) = staging.dir.stat() {
        let _ = d.chmod(st.st_mode & 0o7777);
        let _ = d.set_mtime(st.st_mtime, st.st_mtime_nsec as u32);
    }
    let _ = d.remove_all(&old_name);
    Ok(())
}

/// The error for a path a per-entry commit refuses to write through.
pub(super) fn refuse(at: &Where, p: &Path, why: &'static str) -> RestoreError {
    RestoreError::Contained {
        snapshot: at.snapshot.clone(),
        source_name: at.source.clone(),
        path: p.display().to_string(),
        reason: Refusal::InPlace(why),
    }
}

/// Opens directory `name` in `d`, creating it 0755 if missing; a symlink or
/// non-directory there is refused, never followed.
pub(super) fn ensure_dir(d: &Dir, name: &OsStr, at: &Where) -> Result<Dir, RestoreError> {
    match d.open_dir(name) {
        Ok(x) => return Ok(x),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            return Err(refuse(
                at,
                &d.join(name),
                "it is a symlink or not a directory",
            ));
        }
        Err(e) => return Err(io_err("open directory", &d.join(name))(e)),
    }
    match d.mkdir(name, 0o755) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err("create directory", &d.join(name))(e));
        }
        _ => {}
    }
    let x = d
        .open_dir(name)
        .map_err(|_| refuse(at, &d.join(name), "it is a symlink or not a directory"))?;
    // 0755 whatever the umask: coffer runs under umask 077 (its
    // repositories are private), and an application must still reach its
    // restored files.
    if x.stat().map(|s| s.st_uid).ok() == Some(rustix::process::geteuid().as_raw()) {
        x.chmod(0o755)
            .map_err(io_err("set mode of", &d.join(name)))?;
    }
    Ok(x)
}

/// `--include` in place: renames each staged entry to the same path below
/// the destination (directories are created as needed). Every path is
/// checked first, before anything is created or moved: an existing symlink
/// (or non-directory) on the way, or as the root itself, is refused rather
/// than followed; then every step is done by handle, never through a
/// symlink, so a change made meanwhile is refused too.
pub(super) fn commit_tree_entries(
    staging: &Dir,
    dest: &TreeDest,
    entries: &[(String, EntryKind)],
    at: &Where,
) -> Result<(), RestoreError> {
    let root_path = dest.path();
    match dest.parent.stat_at(&dest.name) {
        Ok(s) if s.st_mode & libc::S_IFMT != libc::S_IFDIR => {
            return Err(refuse(
                at,
                &root_path,
                "the destination is a symlink or not a directory",
            ));
        }
        _ => {}
    }
    let root = ensure_dir(&dest.parent, &dest.name, at)?;
    for (rel, kind) in entries {
        let comps: Vec<&str> = rel.split('/').collect();
        let mut cur = Some(root.try_clone().map_err(io_err("open", &root_path))?);
        let mut p = root_path.clone();
        for (i, c) in comps.iter().enumerate() {
            let Some(d) = cur.take() else { break };
            p.push(c);
            let last = i + 1 == comps.len();
            let Ok(md) = d.stat_at(c) else { break };
            let ft = md.st_mode & libc::S_IFMT;
            if ft == libc::S_IFLNK && (!last || *kind == EntryKind::Dir) {
                return Err(refuse(at, &p, "it is a symlink"));
            }
            if ft != libc::S_IFDIR && (!last || *kind == EntryKind::Dir) {
                return Err(refuse(at, &p, "it is not a directory"));
            }
            if last && ft == libc::S_IFDIR && *kind != EntryKind::Dir {
                return Err(refuse(
                    at,
                    &p,
                    "a directory stands where the snapshot has a file",
                ));
            }
            if !last {
                cur = d.open_dir(c).ok();
            }
        }
    }
    let ensure_all = |rel: &str| -> Result<Dir, RestoreError> {
        let mut d = root.try_clone().map_err(io_err("open", &root_path))?;
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            d = ensure_dir(&d, OsStr::new(c), at)?;
        }
        Ok(d)
    };
    for (rel, kind) in entries {
        if *kind == EntryKind::Dir {
            ensure_all(rel)?;
            continue;
        }
        let (pr, name) = split_rel(rel);
        let to = ensure_all(pr)?;
        if to.is_dir_at(name) {
            return Err(refuse(
                at,
                &to.join(name),
                "a directory stands where the snapshot has a file",
            ));
        }
        let from = staging
            .open_rel(pr)
            .map_err(io_err("open staged directory", &staging.join(pr)))?;
        from.rename(name, &to, name, RenameFlags::empty())
            .map_err(io_err("move into place", &to.join(name)))?;
    }
    Ok(())
}

/// A files source in place: renames each staged file from the staging
/// directory beside its destination into place (creating the destination's
/// missing directories, 0755, by handle).
pub(super) fn commit_beside(
    dirs: &BTreeMap<String, Beside>,
    entries: &[(String, EntryKind)],
    at: &Where,
) -> Result<(), RestoreError> {
    let mut opened: BTreeMap<&str, Dir> = BTreeMap::new();
    for (rel, _) in entries {
        let (pr, name) = split_rel(rel);
        let Some(b) = dirs.get(pr) else {
            unreachable!("every staged file has its staging directory")
        };
        if !opened.contains_key(pr) {
            let mut d = b
                .staging
                .parent
                .try_clone()
                .map_err(io_err("open", b.staging.parent.path()))?;
            for c in &b.missing {
                d = ensure_dir(&d, c, at)?;
            }
            opened.insert(pr, d);
        }
        let to = &opened[pr];
        if to.is_dir_at(name) {
            return Err(refuse(
                at,
                &to.join(name),
                "a directory stands where the snapshot has a file",
            ));
        }
        b.staging
            .dir
            .rename(name, to, name, RenameFlags::empty())
            .map_err(io_err("move into place", &to.join(name)))?;
    }
    Ok(())
}
