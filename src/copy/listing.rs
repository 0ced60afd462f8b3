//! Both sides of a copy listed as streams in key order: cloud listings,
//! a sorted walk of a local directory, the include/exclude filter.

use super::*;

/// One object as listed.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) mtime: DateTime<Utc>,
}

pub(super) enum Kind {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        /// Scheme, bucket and options: equal idents are one store, where
        /// copies are server-side.
        ident: String,
    },
}

pub(super) struct Location {
    pub(super) url: String,
    pub(super) kind: Kind,
    /// "SRC" or "DST", for messages.
    pub(super) side: &'static str,
}

pub(super) fn local_path(url: &str) -> Option<PathBuf> {
    if url.starts_with('/') {
        Some(PathBuf::from(url))
    } else {
        url.strip_prefix("file://").map(PathBuf::from)
    }
}

impl Location {
    /// Opens one side. A missing source is an error; a missing local
    /// destination is created on the first write.
    pub(super) fn open(
        url: &str,
        options: &BTreeMap<String, String>,
        is_src: bool,
    ) -> Result<Location, CopyError> {
        if let Some(path) = local_path(url) {
            match Store::open(url, options, false) {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) if is_src => {
                    return Err(CopyError::SourceMissing(url.to_string()));
                }
                Err(StoreError::NotFound { .. }) if !path.exists() => {}
                Err(StoreError::NotFound { .. }) => {
                    return Err(CopyError::NotADirectory(url.to_string()));
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

    pub(super) fn obj_path(&self, key: &str) -> ObjPath {
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

    pub(super) fn file_path(&self, key: &str) -> Result<PathBuf, ObjectError> {
        let Kind::Local(root) = &self.kind else {
            unreachable!("file path of a remote location")
        };
        // Keys come from another store: none may leave the destination.
        if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(ObjectError::BadKey(key.to_string()));
        }
        Ok(root.join(key))
    }

    pub(super) fn is_local(&self) -> bool {
        matches!(self.kind, Kind::Local(_))
    }

    pub(super) fn ident(&self) -> Option<&str> {
        match &self.kind {
            Kind::Remote { ident, .. } => Some(ident),
            Kind::Local(_) => None,
        }
    }

    /// The listing, in byte order of keys.
    pub(super) fn list(&self) -> BoxStream<'static, Result<Entry, CopyError>> {
        match &self.kind {
            Kind::Remote { .. } => list_remote(self),
            Kind::Local(root) => list_local(root.clone(), self.url.clone()),
        }
    }
}

pub(super) fn list_remote(loc: &Location) -> BoxStream<'static, Result<Entry, CopyError>> {
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
    let (tx, rx) = mpsc::channel::<Result<Entry, CopyError>>(1024);
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
                Err(e) => Err(CopyError::List {
                    url: url.clone(),
                    source: Box::new(e),
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

pub(super) fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}

/// Walks a directory in the byte order of the keys it yields: a directory
/// `a` sorts as `a/`, so `a-b` (0x2D) comes before everything under `a/`
/// (0x2F), as in a cloud listing. Only one directory's entries per level are
/// in memory at a time.
pub(super) fn list_local(
    root: PathBuf,
    url: String,
) -> BoxStream<'static, Result<Entry, CopyError>> {
    let (tx, rx) = mpsc::channel::<Result<Entry, CopyError>>(1024);
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
                Err(e) => Err(CopyError::List {
                    url: url.clone(),
                    source: Box::new(e),
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
                        (_, Err(err)) => Err(CopyError::List {
                            url: url.clone(),
                            source: Box::new(err),
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
pub(super) struct Filter {
    pub(super) include_full: GlobSet,
    pub(super) include_base: GlobSet,
    pub(super) exclude_full: GlobSet,
    pub(super) exclude_base: GlobSet,
    pub(super) any_include: bool,
}

impl Filter {
    pub(super) fn new(include: &[String], exclude: &[String]) -> Result<Filter, CopyError> {
        let build = |flag: &'static str, globs: &[String]| {
            let (mut full, mut base) = (GlobSetBuilder::new(), GlobSetBuilder::new());
            for g in globs {
                let glob = GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| CopyError::BadGlob {
                        flag,
                        glob: g.clone(),
                        reason: e.kind().clone(),
                    })?;
                if g.contains('/') {
                    full.add(glob);
                } else {
                    base.add(glob);
                }
            }
            let done = |b: GlobSetBuilder| {
                b.build().map_err(|e| CopyError::BadGlob {
                    flag,
                    glob: globs.join(" "),
                    reason: e.kind().clone(),
                })
            };
            Ok::<_, CopyError>((done(full)?, done(base)?))
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

    pub(super) fn wants(&self, key: &str) -> bool {
        let base = key.rsplit('/').next().unwrap_or(key);
        if self.any_include && !self.include_full.is_match(key) && !self.include_base.is_match(base)
        {
            return false;
        }
        !(self.exclude_full.is_match(key) || self.exclude_base.is_match(base))
    }
}

/// A listing with the filter applied and its order checked.
pub(super) struct Side {
    pub(super) stream: BoxStream<'static, Result<Entry, CopyError>>,
    pub(super) prev: Option<String>,
    pub(super) url: String,
}

impl Side {
    pub(super) async fn next(&mut self, filter: &Filter) -> Result<Option<Entry>, CopyError> {
        while let Some(item) = self.stream.next().await {
            let e = item?;
            if let Some(p) = &self.prev
                && e.key.as_bytes() <= p.as_bytes()
            {
                return Err(CopyError::Unsorted {
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
