//! Where each directory or files source goes, the dry run that lists it,
//! the free-space checks, and unpacking a source into its staging.

use super::*;

/// Where a source goes and how it is committed.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Unpack into a staging directory beside `dest`, then swap it in whole.
    Swap { dest: PathBuf },
    /// Unpack into staging beside `root`, then rename each entry to
    /// `root/<path>` (`--include` in place). Without `force`, an existing
    /// file at any of those paths stops the restore.
    PerEntry { root: PathBuf, force: bool },
    /// A files source in place: each file staged beside its destination and
    /// renamed into place; only the files of `allowed` (the source's paths in
    /// the current config, without the leading `/`).
    Files {
        force: bool,
        allowed: BTreeSet<String>,
    },
}

/// Where a directory or files source goes: under `--target`, or in place at
/// the paths the current config gives it. The path recorded in the snapshot
/// is never trusted for that: any host that shares the key could have
/// written it (issue 10). Returns the plan and, if the configured path is
/// not the recorded one, a warning saying so.
pub(super) fn plan_destination(
    m: &Manifest,
    src: &SourceRecord,
    opts: &RestoreOptions,
    config: &crate::config::Config,
) -> Result<(Plan, Option<String>), RestoreError> {
    let kind = src.kind.as_str();
    if kind != "directory" && kind != "files" {
        return Err(RestoreError::UnknownKind {
            source_name: src.name.clone(),
            kind: kind.to_string(),
        });
    }
    if let Some(t) = &opts.target {
        let dest = absolute(t).join(&src.name);
        if !opts.force && !opts.dry_run && is_non_empty(&dest) {
            return Err(RestoreError::NeedsForce {
                path: dest.display().to_string(),
            });
        }
        return Ok((Plan::Swap { dest }, None));
    }
    let cfg = config
        .source(&src.name)
        .filter(|c| c.kind.as_str() == kind)
        .ok_or_else(|| RestoreError::NotConfigured {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            host: m.host.clone(),
            kind: kind.to_string(),
        })?;
    if kind == "files" {
        let allowed = cfg
            .paths
            .iter()
            .flatten()
            .map(|p| {
                absolute(p)
                    .display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect();
        return Ok((
            Plan::Files {
                force: opts.force,
                allowed,
            },
            None,
        ));
    }
    let path = absolute(
        cfg.path
            .as_deref()
            .ok_or_else(|| RestoreError::NoConfiguredPath(src.name.clone()))?,
    );
    let warning = match &src.origin {
        Some(o) if Path::new(o) == path => None,
        recorded => Some(format!(
            "source {}: snapshot {} (taken on {}) recorded its path as {}; restoring to {}, its path in the current config",
            src.name,
            m.id,
            m.host,
            recorded.as_deref().unwrap_or("(nothing)"),
            path.display()
        )),
    };
    if !opts.force && !opts.dry_run && is_non_empty(&path) {
        return Err(RestoreError::NeedsForce {
            path: path.display().to_string(),
        });
    }
    let plan = if opts.include.is_empty() {
        Plan::Swap { dest: path }
    } else {
        Plan::PerEntry {
            root: path,
            force: opts.force,
        }
    };
    Ok((plan, warning))
}

pub(super) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

pub(super) fn plan_root(plan: &Plan) -> &Path {
    match plan {
        Plan::Swap { dest } => dest,
        Plan::PerEntry { root, .. } => root,
        Plan::Files { .. } => Path::new("/"),
    }
}

pub(super) async fn dry_run(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    plan: &Plan,
    include: &Option<GlobSet>,
) -> Result<RestoredSource, RestoreError> {
    let repo = repo.clone();
    let m = m.clone();
    let src = src.clone();
    let plan = plan.clone();
    let include = include.clone();
    tokio::task::spawn_blocking(move || {
        let at = Where::new(&m, &src);
        if src.index.is_none() && src.list.is_none() {
            return Err(RestoreError::Read(ReadError::SourceFailed {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                reason: "no index".into(),
            }));
        }
        let mut out = RestoredSource::new(&src, plan_root(&plan).display().to_string());
        let mut stored_flagged = Vec::new();
        // Flagged files this dry run would write, by archive path, for the
        // hard links to them.
        let mut flagged_here = BTreeMap::new();
        read_lines(&repo, &at, &src, |e| {
            if !e.stored {
                return;
            }
            let flagged = e.kind == EntryKind::File && e.error.is_some();
            if flagged {
                stored_flagged.push(e.path.clone());
            }
            if !included(&include, &e.path) {
                return;
            }
            if let Plan::Files { allowed, .. } = &plan
                && !allowed.contains(&e.path)
            {
                out.not_configured.push(format!("/{}", e.path));
                return;
            }
            let dest = plan_root(&plan).join(&e.path);
            if let (true, Some(why)) = (flagged, &e.error) {
                out.flag(&dest, why);
                flagged_here.insert(e.path.clone(), why.clone());
            } else if e.kind == EntryKind::Hardlink
                && let Some(why) = e.target.as_ref().and_then(|t| flagged_here.get(t))
            {
                // The same bytes as the file it links to.
                out.flag(&dest, why);
            }
            let what = match e.kind {
                EntryKind::File => {
                    out.files += 1;
                    out.bytes += e.size;
                    format!("file {} ({} bytes)", dest.display(), e.size)
                }
                EntryKind::Dir => {
                    out.dirs += 1;
                    format!("dir  {}", dest.display())
                }
                EntryKind::Symlink => {
                    out.links += 1;
                    format!(
                        "link {} -> {}",
                        dest.display(),
                        e.target.as_deref().unwrap_or("")
                    )
                }
                EntryKind::Hardlink => {
                    out.links += 1;
                    format!(
                        "hard link {} = {}",
                        dest.display(),
                        plan_root(&plan)
                            .join(e.target.as_deref().unwrap_or(""))
                            .display()
                    )
                }
            };
            out.planned.push(what);
        })?;
        out.set_not_stored(&src, &stored_flagged);
        Ok(out)
    })
    .await
    .map_err(|e| RestoreError::Internal(format!("dry run task failed: {e}")))?
}

/// Refuses, before anything is written, a files source restore whose
/// staged copies cannot fit: each file is staged whole beside its
/// destination before any file is replaced. The files may live on several
/// filesystems and only the source's total (`bytes_read`) is known before
/// reading, so this refuses only when all those filesystems together have
/// less room than the total: never a restore that fits. (Looking up free
/// space by path is harmless: nothing is written through these paths.)
pub(super) fn check_files_room(
    m: &Manifest,
    src: &SourceRecord,
    allowed: &BTreeSet<String>,
) -> Result<(), RestoreError> {
    let mut filesystems: BTreeMap<u64, (u64, PathBuf)> = BTreeMap::new();
    for rel in allowed {
        let mut dir = Path::new("/").join(rel);
        while dir.pop() {
            if let Ok(st) = rustix::fs::statvfs(&dir) {
                filesystems
                    .entry(st.f_fsid)
                    .or_insert((st.f_bavail.saturating_mul(st.f_frsize), dir));
                break;
            }
        }
    }
    let available: u64 = filesystems.values().map(|(n, _)| *n).sum();
    if filesystems.is_empty() || available >= src.bytes_read {
        return Ok(());
    }
    Err(RestoreError::NoSpaceForFiles {
        snapshot: m.id.clone(),
        source_name: src.name.clone(),
        dirs: filesystems
            .values()
            .map(|(_, d)| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        needed: megabytes(src.bytes_read),
        available: megabytes(available),
    })
}

/// A size for messages: `812.4 MB (812400000 bytes)`.
pub(super) fn megabytes(n: u64) -> String {
    format!("{:.1} MB ({n} bytes)", n as f64 / 1e6)
}

/// Unpacks one file source into fresh staging directories beside its
/// destinations and authenticates all of it. Changes no destination.
pub(super) fn stage_source(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    plan: Plan,
    include: &Option<GlobSet>,
) -> Result<StagedSource, RestoreError> {
    let started = Instant::now();
    let (layout, dest, allowed) = match &plan {
        Plan::Swap { dest: d } | Plan::PerEntry { root: d, .. } => {
            let dest = TreeDest::open(d)?;
            // With --include only part is restored: the whole source's size
            // would refuse restores that fit.
            if include.is_none() {
                dest.check_room(m, src)?;
            }
            (Layout::Tree(dest.staging()?), Some(dest), None)
        }
        Plan::Files { allowed, .. } => {
            check_files_room(m, src, allowed)?;
            (Layout::Beside(BTreeMap::new()), None, Some(allowed.clone()))
        }
    };
    let mut ex = Extractor::new(layout, m, src, include.clone(), allowed);
    let mut streams = SourceStreams::open(repo, m, src)?;
    let res = ex.run(&mut streams);
    // The writer's own failure (a full disk) explains a stopped extractor.
    let res = match (res, ex.writer.finish()) {
        (_, Err(e)) => Err(e),
        (r, Ok(())) => r,
    };
    streams.finish(res)?;
    ex.apply_dir_metadata()?;
    let force = match &plan {
        Plan::Swap { .. } => true,
        Plan::PerEntry { force, .. } | Plan::Files { force, .. } => *force,
    };
    if !force {
        for (rel, kind) in ex.committed.iter().filter(|(_, k)| *k != EntryKind::Dir) {
            let (pr, name) = split_rel(rel);
            let exists = match (&ex.layout, &dest) {
                (Layout::Tree(_), Some(d)) => d
                    .parent
                    .open_dir(&d.name)
                    .and_then(|r| r.open_rel(pr))
                    .map(|p| p.exists(name))
                    .unwrap_or(false),
                (Layout::Beside(dirs), _) => dirs
                    .get(pr)
                    .is_some_and(|b| b.missing.is_empty() && b.staging.parent.exists(name)),
                _ => false,
            };
            if exists {
                let _ = kind;
                return Err(RestoreError::NeedsForce {
                    path: plan_root(&plan).join(rel).display().to_string(),
                });
            }
        }
    }
    let mut out = RestoredSource::new(src, plan_root(&plan).display().to_string());
    (out.files, out.dirs, out.links, out.bytes) = (ex.files, ex.dirs, ex.links, ex.bytes);
    out.set_not_stored(src, &ex.stored_flagged);
    for (rel, why) in &ex.flagged {
        out.flag(&plan_root(&plan).join(rel), why);
    }
    out.not_configured = std::mem::take(&mut ex.not_configured);
    let entries = std::mem::take(&mut ex.committed);
    Ok(StagedSource {
        src: src.clone(),
        snapshot: m.id.clone(),
        plan,
        layout: ex.into_layout(),
        dest,
        entries,
        out,
        started,
    })
}

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
pub(super) fn split_rel(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// Stages each stream of a dump source as a file, for `--target`: the
/// directory `dest` will hold exactly `<stream>` files, what `coffer dump`
/// writes, each authenticated before the directory is swapped in.
pub(super) fn stage_dump_files(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    dest: PathBuf,
) -> Result<StagedSource, RestoreError> {
    let started = Instant::now();
    let names = checked_stream_names(m, src)?;
    let td = TreeDest::open(&dest)?;
    let staging = td.staging()?;
    let mut bytes = 0;
    for n in &names {
        let path = dest.join(n);
        let mut f = staging
            .dir
            .create_file(n, 0o600)
            .map_err(io_err("create", &path))?;
        bytes += dump_stream(repo, m, src, Some(n.clone()), &mut f)?;
        f.sync_all().map_err(io_err("fsync", &path))?;
    }
    staging
        .dir
        .chmod(0o755)
        .map_err(io_err("set mode of", &dest))?;
    let mut out = RestoredSource::new(src, dest.display().to_string());
    out.files = names.len() as u64;
    out.bytes = bytes;
    Ok(StagedSource {
        src: src.clone(),
        snapshot: m.id.clone(),
        plan: Plan::Swap { dest },
        layout: Layout::Tree(staging),
        dest: Some(td),
        entries: Vec::new(),
        out,
        started,
    })
}
