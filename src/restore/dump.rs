//! `coffer dump` (a source as a tar stream, or one file's bytes) and
//! `show --files`.

use super::*;

/// Writes what a source holds to `out`: the whole tar stream, or with `path`
/// one file's bytes.
///
/// A reader that closes the pipe early (`pg_restore -l` stops after the table
/// of contents, `head` after its lines) ends the dump successfully, as other
/// Unix filters do; an integrity failure found before that point is still an
/// error, since every byte handed out was authenticated first.
pub async fn dump<W: Write + Send + 'static>(
    repo: &Repository,
    m: &Manifest,
    source: &str,
    path: Option<String>,
    out: W,
) -> Result<(), RestoreError> {
    let src = find_source(m, source)?.clone();
    let repo = repo.clone();
    let m = m.clone();
    let res = tokio::task::spawn_blocking(move || dump_blocking(&repo, &m, &src, path, out))
        .await
        .map_err(|e| RestoreError::Internal(format!("dump task failed: {e}")))?;
    match res {
        Ok(_) | Err(RestoreError::OutputClosed) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The error for a failed write to `coffer dump`'s output.
pub(super) fn output_error(e: io::Error) -> RestoreError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        RestoreError::OutputClosed
    } else {
        RestoreError::Io {
            op: "write",
            path: "standard output".into(),
            source: e,
        }
    }
}

pub(super) fn dump_blocking<W: Write>(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    path: Option<String>,
    mut out: W,
) -> Result<u64, RestoreError> {
    let at = Where::new(m, src);
    let stdout_err = output_error;
    if is_dump_source(&src.kind) {
        return dump_stream(repo, m, src, path, &mut out);
    }
    let stored = src.list.is_some() || (src.archive.is_some() && src.index.is_some());
    if !stored {
        return Err(RestoreError::Read(ReadError::SourceFailed {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            reason: src.error.clone().unwrap_or_default(),
        }));
    }
    // The index is small: read and authenticate it whole before a byte goes
    // out, and use it to find the file asked for.
    let mut wanted: Option<IndexEntry> = None;
    let want_rel = match &path {
        Some(p) => Some(
            safe_path(p.trim_start_matches('/').as_bytes()).map_err(|reason| {
                RestoreError::BadPath {
                    path: p.to_string(),
                    reason,
                }
            })?,
        ),
        None => None,
    };
    read_lines(repo, &at, src, |e| {
        if want_rel.as_deref() == Some(e.path.as_str()) {
            wanted = Some(e);
        }
    })?;
    let Some(want) = path else {
        if src.list.is_some() {
            return tar_of_chunks(repo, m, src, out);
        }
        let (Some(archive_ref), Some(_)) = (&src.archive, &src.index) else {
            unreachable!("checked above");
        };
        let mut stream = ObjectStream::open(repo, &at, archive_ref, ObjectKind::Archive);
        let reader = stream.take_reader();
        let res = (|| -> Result<u64, RestoreError> {
            let mut dec = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| classify(e, &at, &archive_ref.object))?;
            let mut n = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = dec
                    .read(&mut buf)
                    .map_err(|e| classify(e, &at, &archive_ref.object))?;
                if k == 0 {
                    break;
                }
                out.write_all(&buf[..k]).map_err(stdout_err)?;
                n += k as u64;
            }
            out.flush().map_err(stdout_err)?;
            Ok(n)
        })();
        let joined = stream.join();
        joined?;
        return res;
    };
    let entry = match wanted {
        Some(e) if e.stored => e,
        Some(e) => {
            return Err(RestoreError::Read(ReadError::SourceFailed {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                reason: format!(
                    "{want:?} could not be read when the snapshot was taken: {}",
                    e.error.unwrap_or_default()
                ),
            }));
        }
        None => {
            return Err(RestoreError::NoSuchFile {
                snapshot: m.id.clone(),
                source_name: src.name.clone(),
                path: want,
            });
        }
    };
    // A hard link's bytes are stored under the first name it was found by.
    let want_rel = match entry.kind {
        EntryKind::File => entry.path.clone(),
        EntryKind::Hardlink => entry.target.clone().unwrap_or_default(),
        k => {
            return Err(RestoreError::NotAFile {
                path: want,
                what: match k {
                    EntryKind::Dir => "directory",
                    _ => "symlink",
                },
                source_name: src.name.clone(),
            });
        }
    };
    let mut streams = SourceStreams::open(repo, m, src)?;
    let mut written = 0u64;
    let mut found = false;
    let res = streams.walk(|e| -> Result<Flow, RestoreError> {
        if e.rel != want_rel {
            return Ok(Flow::Next);
        }
        if e.kind != EntryKind::File {
            return Err(RestoreError::NotAFile {
                path: want.clone(),
                what: match e.kind {
                    EntryKind::Dir => "directory",
                    EntryKind::Symlink => "symlink",
                    _ => "hard link",
                },
                source_name: src.name.clone(),
            });
        }
        // The bytes are authenticated per segment; the walk's check of the
        // index's size and SHA-256 at their end is a second, independent one.
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = e.read_data(&mut buf)?;
            if k == 0 {
                break;
            }
            out.write_all(&buf[..k]).map_err(stdout_err)?;
            written += k as u64;
        }
        out.flush().map_err(stdout_err)?;
        found = true;
        Ok(Flow::Stop)
    });
    // Stop the reading threads early once the file was found.
    let res = match streams.finish(res) {
        Ok(_) => Ok(()),
        Err(e) if found && !e.is_integrity() => Ok(()),
        Err(e) => Err(e),
    };
    res?;
    if !found {
        return Err(RestoreError::NoSuchFile {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            path: want,
        });
    }
    Ok(written)
}

/// `coffer dump` of a whole format 2 directory or files source: the tar
/// stream format 1 would have stored (docs/FORMAT.md section 22), built
/// entry by entry from the file list and the chunks. Every byte that goes
/// out was checked against its chunk id first, and each file's length and
/// SHA-256 at its end.
fn tar_of_chunks<W: Write>(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    out: W,
) -> Result<u64, RestoreError> {
    let mut tar = crate::archive::TarWriter::new(Counting { inner: out, n: 0 });
    let mut streams = SourceStreams::open(repo, m, src)?;
    let res = streams.walk(|e| -> Result<Flow, RestoreError> {
        let line = e.index.clone();
        let name = crate::archive::tar_name(&line);
        let data: Option<&mut dyn Read> = match e.kind {
            EntryKind::File => Some(e),
            _ => None,
        };
        tar.append(&line, &name, data).map_err(|err| {
            if err.get_ref().is_some_and(|i| i.is::<ReadError>()) {
                RestoreError::Read(classify(err, &Where::new(m, src), "chunks"))
            } else {
                output_error(err)
            }
        })?;
        Ok(Flow::Next)
    });
    streams.finish(res)?;
    let mut out = tar.finish().map_err(output_error)?;
    out.flush().map_err(output_error)?;
    Ok(out.n)
}

/// A writer that counts what went through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(b)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `coffer dump` of a dump source: the main stream (or the stream named by
/// `path`), exactly as its tool wrote it.
pub(super) fn dump_stream<W: Write>(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
    path: Option<String>,
    out: &mut W,
) -> Result<u64, RestoreError> {
    let names = stream_names(src);
    let want = match path {
        Some(p) => p,
        None => src
            .details
            .get("main_stream")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| names.last().cloned())
            .unwrap_or_default(),
    };
    if !names.contains(&want) {
        return Err(RestoreError::NoSuchStream {
            snapshot: m.id.clone(),
            source_name: src.name.clone(),
            streams: names,
            want,
        });
    }
    let mut streams = ChunkStreams::open(repo, m, src)?;
    let res = (|| -> Result<u64, RestoreError> {
        use crate::source::Streams;
        while let Some((name, mut r)) =
            streams.next_stream().map_err(|e| source_error(m, src, e))?
        {
            if name != want {
                continue;
            }
            // A read failure here is the reader thread's, whose verdict
            // (below) says what it was; anything else is the output's.
            let n = io::copy(&mut r, out).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    RestoreError::Io {
                        op: "read stream",
                        path: name.clone(),
                        source: e,
                    }
                } else {
                    output_error(e)
                }
            })?;
            out.flush().map_err(output_error)?;
            return Ok(n);
        }
        Ok(0)
    })();
    // The reader thread's verdict (integrity) explains any failure above.
    streams.finish()?;
    res
}

pub(super) fn stream_names(src: &SourceRecord) -> Vec<String> {
    src.details
        .get("streams")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Per-source file listing for `show --files`: reads the index only.
pub async fn list_files(
    repo: &Repository,
    m: &Manifest,
    src: &SourceRecord,
) -> Result<Vec<IndexEntry>, RestoreError> {
    let at = Where::new(m, src);
    let repo = repo.clone();
    let src = src.clone();
    tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        read_lines(&repo, &at, &src, |e| v.push(e))?;
        Ok(v)
    })
    .await
    .map_err(|e| RestoreError::Internal(format!("listing task failed: {e}")))?
}
