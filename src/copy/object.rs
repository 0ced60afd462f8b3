//! Copying one object: streamed in parts, server-side where both sides are
//! one store, or file to file; its SHA-256 checked.

use super::*;

/// Why one attempt at one object failed (its line in the report's
/// `failed` list), and whether another attempt may succeed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ObjectError {
    #[error("{what}: {}", store_reason(.source))]
    Store {
        what: String,
        source: object_store::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A key from another store that would leave a local destination.
    #[error("key {0:?} cannot be a file name (empty, `.` or `..` segment)")]
    BadKey(String),
    #[error("size at DST is {at_dst} bytes after writing {size}")]
    SizeAfterWrite { at_dst: u64, size: u64 },
    #[error("size at DST is {at_dst} bytes after a server-side copy of {size} bytes")]
    SizeAfterServerCopy { at_dst: u64, size: u64 },
    #[error(
        "SHA-256 mismatch for {key}: SRC says {expected}, the bytes read hash to {got} (changed while copying, or corrupted)"
    )]
    ShaMismatch {
        key: String,
        expected: String,
        got: String,
    },
    #[error("hashing {key} at {side} ({url}): {source}")]
    Hashing {
        key: String,
        side: &'static str,
        url: String,
        source: Box<ObjectError>,
    },
}

fn store_reason(e: &object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => "not found".into(),
        e => e.to_string(),
    }
}

impl ObjectError {
    /// Whether another attempt may succeed: not for what is missing,
    /// refused or impossible.
    pub(super) fn retry(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            ObjectError::Store { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotSupported { .. }
            ),
            ObjectError::Io { source, .. } => !matches!(
                source.kind(),
                NotFound
                    | PermissionDenied
                    | IsADirectory
                    | NotADirectory
                    | AlreadyExists
                    | InvalidInput
            ),
            ObjectError::BadKey(_) => false,
            ObjectError::SizeAfterWrite { .. }
            | ObjectError::SizeAfterServerCopy { .. }
            | ObjectError::ShaMismatch { .. } => true,
            ObjectError::Hashing { source, .. } => source.retry(),
        }
    }
}

pub(super) fn os_fail(what: &str, source: object_store::Error) -> ObjectError {
    ObjectError::Store {
        what: what.to_string(),
        source,
    }
}

pub(super) fn io_fail(what: &str, source: std::io::Error) -> ObjectError {
    ObjectError::Io {
        what: what.to_string(),
        source,
    }
}

pub(super) async fn hash_part(mut h: Sha256, part: Bytes) -> Sha256 {
    tokio::task::spawn_blocking(move || {
        h.update(&part);
        h
    })
    .await
    .expect("hashing does not panic")
}

/// An object being read, in parts.
pub(super) enum Reader {
    Local {
        file: Option<std::fs::File>,
        side: &'static str,
    },
    Remote {
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        buf: BytesMut,
        done: bool,
        side: &'static str,
    },
}

impl Reader {
    /// The next `want` bytes, fewer only at the end; None after the end.
    pub(super) async fn read_part(&mut self, want: usize) -> Result<Option<Bytes>, ObjectError> {
        match self {
            Reader::Local { file, side } => {
                let Some(mut f) = file.take() else {
                    return Ok(None);
                };
                let (f, r) = tokio::task::spawn_blocking(move || {
                    let mut buf = BytesMut::zeroed(want);
                    let mut n = 0;
                    while n < want {
                        match f.read(&mut buf[n..]) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return (f, Err(e)),
                        }
                    }
                    buf.truncate(n);
                    (f, Ok(buf.freeze()))
                })
                .await
                .expect("read does not panic");
                let b = r.map_err(|e| io_fail(&format!("read {side}"), e))?;
                if b.len() == want {
                    *file = Some(f);
                } else if b.is_empty() {
                    return Ok(None);
                }
                Ok(Some(b))
            }
            Reader::Remote {
                stream,
                buf,
                done,
                side,
            } => {
                while !*done && buf.len() < want {
                    match stream.next().await {
                        Some(Ok(b)) => buf.extend_from_slice(&b),
                        Some(Err(e)) => return Err(os_fail(&format!("read {side}"), e)),
                        None => *done = true,
                    }
                }
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = buf.len().min(want);
                Ok(Some(buf.split_to(n).freeze()))
            }
        }
    }
}

/// Opens an object for reading.
pub(super) async fn open_reader(loc: &Location, key: &str) -> Result<Reader, ObjectError> {
    Ok(open_source(loc, key).await?.0)
}

/// Opens an object; for a cloud object also its stored SHA-256.
pub(super) async fn open_source(
    loc: &Location,
    key: &str,
) -> Result<(Reader, Option<String>), ObjectError> {
    match &loc.kind {
        Kind::Local(_) => {
            let p = loc.file_path(key)?;
            let f = tokio::task::spawn_blocking(move || std::fs::File::open(p))
                .await
                .expect("open does not panic")
                .map_err(|e| io_fail(&format!("open {}", loc.side), e))?;
            Ok((
                Reader::Local {
                    file: Some(f),
                    side: loc.side,
                },
                None,
            ))
        }
        Kind::Remote { store, .. } => {
            let r = store
                .get(&loc.obj_path(key))
                .await
                .map_err(|e| os_fail(&format!("read {}", loc.side), e))?;
            let (sha, _) = stored_meta(&r.attributes);
            let stream = match r.payload {
                GetResultPayload::Stream(s) => s,
                GetResultPayload::File(..) => r.into_stream(),
            };
            Ok((
                Reader::Remote {
                    stream,
                    buf: BytesMut::new(),
                    done: false,
                    side: loc.side,
                },
                sha,
            ))
        }
    }
}

pub(super) fn meta_attrs(sha: Option<&str>, mtime: DateTime<Utc>) -> Attributes {
    let mut a = Attributes::new();
    if let Some(s) = sha {
        a.insert(Attribute::Metadata(META_SHA.into()), s.to_string().into());
    }
    a.insert(
        Attribute::Metadata(META_MTIME.into()),
        mtime
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            .into(),
    );
    a
}

/// One attempt at copying one object; returns the bytes copied.
pub(super) async fn copy_once(ctx: &Ctx, src: &Entry) -> Result<u64, ObjectError> {
    if ctx.server_side {
        return copy_server_side(ctx, src).await;
    }
    if ctx.src.is_local() && ctx.dst.is_local() {
        return copy_local_local(ctx, src).await;
    }
    // Objects below a part are read whole; larger ones hold a fixed amount.
    let cost = if src.size < PART as u64 {
        (src.size.div_ceil(1 << 20) as u32).max(1)
    } else {
        LARGE_COST_MIB
    };
    let _budget = ctx
        .budget
        .acquire_many(cost)
        .await
        .expect("the budget is never closed");
    let (mut reader, stored_sha) = open_source(&ctx.src, &src.key).await?;
    // A local file going to a cloud store is hashed first, so that its hash
    // is written as metadata when the upload starts (the hash of a large
    // object is only known at its end); the second hash, while streaming,
    // must then match it.
    let mut expected = stored_sha;
    let first = reader.read_part(PART).await?.unwrap_or_default();
    let single = first.len() < PART;
    if expected.is_none() && !single && ctx.src.is_local() && !ctx.dst.is_local() {
        let mut r = open_reader(&ctx.src, &src.key).await?;
        let mut h = Sha256::new();
        while let Some(part) = r.read_part(PART).await? {
            h = hash_part(h, part).await;
        }
        expected = Some(hex::encode(h.finalize()));
    }
    let mut hasher = hash_part(Sha256::new(), first.clone()).await;
    let mut size = first.len() as u64;
    match &ctx.dst.kind {
        Kind::Remote { store, .. } => {
            let path = ctx.dst.obj_path(&src.key);
            if single {
                let sha = hex::encode(hasher.finalize());
                check_sha(&expected, &sha, &src.key)?;
                let opts = PutOptions {
                    attributes: meta_attrs(Some(&sha), src.mtime),
                    ..Default::default()
                };
                store
                    .put_opts(&path, PutPayload::from(first), opts)
                    .await
                    .map_err(|e| os_fail("write DST", e))?;
            } else {
                let opts = PutMultipartOptions {
                    attributes: meta_attrs(expected.as_deref(), src.mtime),
                    ..Default::default()
                };
                let upload = store
                    .put_multipart_opts(&path, opts)
                    .await
                    .map_err(|e| os_fail("start upload to DST", e))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
                w.put(first);
                let mut streamed: Result<(), ObjectError> = Ok(());
                loop {
                    let part = match reader.read_part(PART).await {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(f) => {
                            streamed = Err(f);
                            break;
                        }
                    };
                    size += part.len() as u64;
                    hasher = hash_part(hasher, part.clone()).await;
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        streamed = Err(os_fail("upload to DST", e));
                        break;
                    }
                    w.put(part);
                }
                if let Err(f) = streamed {
                    let _ = w.abort().await;
                    return Err(f);
                }
                let sha = hex::encode(hasher.finalize());
                if let Err(f) = check_sha(&expected, &sha, &src.key) {
                    let _ = w.abort().await;
                    return Err(f);
                }
                w.finish()
                    .await
                    .map_err(|e| os_fail("finish upload to DST", e))?;
            }
            let at_dst = store
                .head(&path)
                .await
                .map_err(|e| os_fail("stat DST after writing", e))?
                .size;
            if at_dst != size {
                return Err(ObjectError::SizeAfterWrite { at_dst, size });
            }
            Ok(size)
        }
        Kind::Local(_) => {
            let final_path = ctx.dst.file_path(&src.key)?;
            let mut w = LocalWriter::create(final_path).await?;
            w = w.write(first).await?;
            while let Some(part) = reader.read_part(PART).await? {
                size += part.len() as u64;
                hasher = hash_part(hasher, part.clone()).await;
                w = w.write(part).await?;
            }
            let sha = hex::encode(hasher.finalize());
            check_sha(&expected, &sha, &src.key)?;
            w.finish(size, src.mtime).await?;
            Ok(size)
        }
    }
}

pub(super) fn check_sha(
    expected: &Option<String>,
    got: &str,
    key: &str,
) -> Result<(), ObjectError> {
    match expected {
        Some(e) if e != got => Err(ObjectError::ShaMismatch {
            key: key.to_string(),
            expected: e.clone(),
            got: got.to_string(),
        }),
        _ => Ok(()),
    }
}

pub(super) async fn copy_server_side(ctx: &Ctx, src: &Entry) -> Result<u64, ObjectError> {
    let Kind::Remote { store, .. } = &ctx.dst.kind else {
        unreachable!("server-side copies are between cloud prefixes")
    };
    let (from, to) = (ctx.src.obj_path(&src.key), ctx.dst.obj_path(&src.key));
    store
        .copy(&from, &to)
        .await
        .map_err(|e| os_fail("server-side copy", e))?;
    let at_dst = store
        .head(&to)
        .await
        .map_err(|e| os_fail("stat DST after copying", e))?
        .size;
    if at_dst != src.size {
        return Err(ObjectError::SizeAfterServerCopy {
            at_dst,
            size: src.size,
        });
    }
    Ok(at_dst)
}

/// A file written next to its final name and renamed into place once
/// complete, so a killed copy never leaves a short file under the real name
/// (its `.coffer-partial-` leftover is ignored by listings and replaced by
/// the next run).
pub(super) struct LocalWriter {
    pub(super) file: std::fs::File,
    pub(super) tmp: PathBuf,
    pub(super) path: PathBuf,
}

impl LocalWriter {
    async fn create(path: PathBuf) -> Result<LocalWriter, ObjectError> {
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().expect("a key has a parent").to_path_buf();
            std::fs::create_dir_all(&dir).map_err(|e| io_fail("create DST directory", e))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = dir.join(format!(".{name}{TMP_MARK}{}", crate::crypto::random_id(4)));
            let file = std::fs::File::create(&tmp).map_err(|e| io_fail("create DST file", e))?;
            Ok(LocalWriter { file, tmp, path })
        })
        .await
        .expect("create does not panic")
    }

    async fn write(mut self, part: Bytes) -> Result<LocalWriter, ObjectError> {
        tokio::task::spawn_blocking(move || match self.file.write_all(&part) {
            Ok(()) => Ok(self),
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                Err(io_fail("write DST", e))
            }
        })
        .await
        .expect("write does not panic")
    }

    /// Checks the size, sets the mtime and renames into place.
    async fn finish(self, size: u64, mtime: DateTime<Utc>) -> Result<(), ObjectError> {
        tokio::task::spawn_blocking(move || {
            let r = (|| {
                let at = self
                    .file
                    .metadata()
                    .map_err(|e| io_fail("stat DST", e))?
                    .len();
                if at != size {
                    return Err(ObjectError::SizeAfterWrite { at_dst: at, size });
                }
                let t = filetime::FileTime::from_unix_time(
                    mtime.timestamp(),
                    mtime.timestamp_subsec_nanos(),
                );
                filetime::set_file_handle_times(&self.file, None, Some(t))
                    .map_err(|e| io_fail("set the mtime of DST", e))?;
                // The copy may be the only other copy of a backup: its bytes
                // must be on disk before its name says it is complete.
                self.file.sync_all().map_err(|e| io_fail("fsync DST", e))?;
                std::fs::rename(&self.tmp, &self.path)
                    .map_err(|e| io_fail("rename DST into place", e))
            })();
            if r.is_err() {
                let _ = std::fs::remove_file(&self.tmp);
            }
            r
        })
        .await
        .expect("finish does not panic")
    }
}

/// Local to local: one blocking loop that reads, hashes and writes.
pub(super) async fn copy_local_local(ctx: &Ctx, src: &Entry) -> Result<u64, ObjectError> {
    let from = ctx.src.file_path(&src.key)?;
    let to = ctx.dst.file_path(&src.key)?;
    let w = LocalWriter::create(to).await?;
    let mtime = src.mtime;
    let (w, size) = tokio::task::spawn_blocking(move || {
        let mut w = w;
        let run = |w: &mut LocalWriter| -> Result<u64, ObjectError> {
            let mut f = std::fs::File::open(&from).map_err(|e| io_fail("open SRC", e))?;
            let mut buf = vec![0u8; LOCAL_BLOCK];
            // No hash here: a filesystem SRC has no stored SHA-256 to compare
            // one with; the size is checked at DST (`--checksum` compares
            // both sides' bytes).
            let mut size = 0u64;
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_fail("read SRC", e)),
                };
                w.file
                    .write_all(&buf[..n])
                    .map_err(|e| io_fail("write DST", e))?;
                size += n as u64;
            }
            Ok(size)
        };
        match run(&mut w) {
            Ok(n) => Ok((w, n)),
            Err(f) => {
                let _ = std::fs::remove_file(&w.tmp);
                Err(f)
            }
        }
    })
    .await
    .expect("copy does not panic")?;
    w.finish(size, mtime).await?;
    Ok(size)
}
