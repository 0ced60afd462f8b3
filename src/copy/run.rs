//! One `coffer copy` run: the merge of both listings, what each object
//! needs, the report, and `--delete` after every copy succeeded.

use super::*;

pub(super) enum Item {
    /// Missing at DST or of another size: copy.
    Copy { src: Entry, why: String },
    /// Same size on both sides: compare further.
    Compare { src: Entry, dst: Entry },
}

pub(super) enum Outcome {
    Copied(u64),
    Skipped(u64),
    Differs(String, String),
    Failed(String, String),
}

pub(super) struct Ctx {
    pub(super) src: Location,
    pub(super) dst: Location,
    pub(super) opts: CopyOptions,
    pub(super) server_side: bool,
    pub(super) progress: Arc<dyn Monitor>,
    /// MiB of object bytes that may be held in memory at once, over all
    /// objects in flight: `--concurrency` sets how many objects move at
    /// once, this how much of them is buffered, whatever their sizes.
    pub(super) budget: Arc<tokio::sync::Semaphore>,
}

/// Runs `coffer copy SRC DST` (or its `--check` / `--dry-run`).
pub async fn copy(
    src_url: &str,
    dst_url: &str,
    opts: &CopyOptions,
    progress: Arc<dyn Monitor>,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    if opts.concurrency == 0 {
        return Err(CopyError::NoConcurrency);
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
    let mut extras = tempfile::tempfile().map_err(|e| CopyError::Io {
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
            return Err(CopyError::List {
                url: ctx.src.url.clone(),
                source: Box::new(e),
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

pub(super) fn check_overlap(src: &Location, dst: &Location) -> Result<(), CopyError> {
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
        return Err(CopyError::Overlap {
            src: src.url.clone(),
            dst: dst.url.clone(),
        });
    }
    Ok(())
}

/// Joins the two sorted listings. Work goes to `tx`; keys only at DST go to
/// `extras` (one `size key` line each). Returns their count and bytes.
pub(super) async fn merge_listings(
    ctx: &Ctx,
    filter: &Filter,
    tx: mpsc::Sender<Item>,
    extras: &mut std::fs::File,
) -> Result<(u64, u64), CopyError> {
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
    let io = |e: std::io::Error| CopyError::Io {
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

pub(super) fn read_extras(
    mut f: std::fs::File,
    mut each: impl FnMut(&str, u64),
) -> Result<(), CopyError> {
    use std::io::Seek;
    let io = |e: std::io::Error| CopyError::Io {
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

pub(super) async fn delete_extras(
    ctx: &Arc<Ctx>,
    rep: &mut CopyReport,
    extras: std::fs::File,
    count: u64,
    bytes: u64,
) -> Result<(), CopyError> {
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
    reader.await.map_err(|e| CopyError::Io {
        what: "reading the list of objects to delete".into(),
        source: std::io::Error::other(e),
    })??;
    Ok(())
}

pub(super) async fn delete_one(ctx: &Ctx, key: &str) -> Result<(), ObjectError> {
    match &ctx.dst.kind {
        Kind::Local(_) => {
            let p = ctx.dst.file_path(key)?;
            match tokio::fs::remove_file(&p).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_fail("remove DST", e)),
            }
        }
        Kind::Remote { store, .. } => match store.delete(&ctx.dst.obj_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_fail("DELETE at DST", e)),
        },
    }
}

pub(super) fn record(
    rep: &mut CopyReport,
    ctx: &Ctx,
    key: &str,
    how: Option<How>,
    outcome: Outcome,
) {
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
pub(super) async fn process(ctx: &Ctx, item: Item) -> (String, Option<How>, Outcome) {
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
pub(super) async fn copy_or_report(ctx: &Ctx, src: Entry, why: String) -> (String, Outcome) {
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
            Err(f) if f.retry() && attempt < ATTEMPTS => {
                ctx.progress.event(&Event::Retrying {
                    key: &key,
                    attempt,
                    error: &f.to_string(),
                });
                tracing::info!("{key}: attempt {attempt} failed, retrying: {f}");
                tokio::time::sleep(Duration::from_millis(500 * 4u64.pow(attempt - 1))).await;
            }
            Err(f) => {
                let msg = if attempt > 1 {
                    format!("{f} (after {attempt} attempts)")
                } else {
                    f.to_string()
                };
                return (key.clone(), Outcome::Failed(key, msg));
            }
        }
    }
}
