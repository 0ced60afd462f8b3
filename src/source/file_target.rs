//! Restoring a file-shaped dump (an SQLite database, a Redis RDB file) in
//! place: the stored stream is written to a temp file beside the
//! destination, authenticated to its end, checked and fsynced, and only
//! then renamed over the destination, so a failure leaves the old file.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{SourceError, Streams};

/// An I/O failure on `path`, for messages.
pub fn io_failed(what: &str, path: &Path, e: io::Error) -> SourceError {
    SourceError::Failed(format!("{what} {}: {e}", path.display()))
}

/// Copies a stream into `w`, keeping its first bytes in `head`. Read errors
/// (a damaged archive) come back as [`SourceError::Io`], write errors name
/// `path`.
fn copy_stream(
    r: &mut dyn Read,
    w: &mut dyn Write,
    head: &mut Vec<u8>,
    path: &Path,
) -> Result<u64, SourceError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SourceError::Io(e)),
        };
        if head.len() < 128 {
            let k = n.min(128 - head.len());
            head.extend_from_slice(&buf[..k]);
        }
        w.write_all(&buf[..n])
            .map_err(|e| io_failed("cannot write", path, e))?;
        total += n as u64;
    }
    w.flush().map_err(|e| io_failed("cannot write", path, e))?;
    Ok(total)
}

/// Writes stream `stream` of `streams` to `file` (at `path`), reads every
/// stream to its authenticated end, checks the data starts with `magic`, and
/// fsyncs the file. Returns the bytes written.
pub fn stream_to_file(
    streams: &mut dyn Streams,
    stream: &str,
    file: &mut File,
    path: &Path,
    magic: &[u8],
    what: &str,
) -> Result<u64, SourceError> {
    let mut found = None;
    let mut head = Vec::new();
    while let Some((name, mut r)) = streams.next_stream()? {
        if name == stream && found.is_none() {
            let mut w = io::BufWriter::with_capacity(1 << 20, &mut *file);
            found = Some(copy_stream(&mut r, &mut w, &mut head, path)?);
        } else {
            // Unknown streams are read (and so authenticated) and dropped.
            io::copy(&mut r, &mut io::sink()).map_err(SourceError::Io)?;
        }
    }
    let bytes = found.ok_or_else(|| {
        SourceError::Failed(format!(
            "the snapshot holds no {stream:?} stream for this source"
        ))
    })?;
    if !head.starts_with(magic) {
        return Err(SourceError::Failed(format!(
            "the stored {stream:?} is not {what} (it does not start with {:?})",
            String::from_utf8_lossy(magic).trim_end_matches('\0')
        )));
    }
    file.sync_all()
        .map_err(|e| io_failed("cannot fsync", path, e))?;
    Ok(bytes)
}

/// A new temp file beside `dest`, in the same directory (created if
/// missing), so that a rename puts it in place atomically.
pub fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile, SourceError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| io_failed("cannot create the directory", dir, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}.coffer-restore-"))
        .tempfile_in(dir)
        .map_err(|e| io_failed("cannot create a temp file in", dir, e))
}

/// Gives the file `mode` and, where it can, `owner` (uid, gid).
pub fn set_mode_owner(
    file: &File,
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), SourceError> {
    if let Some((uid, gid)) = owner {
        let m = file
            .metadata()
            .map_err(|e| io_failed("cannot stat", path, e))?;
        if (m.uid(), m.gid()) != (uid, gid)
            && let Err(e) = std::os::unix::fs::fchown(file, Some(uid), Some(gid))
        {
            tracing::warn!(
                "cannot give {} the owner {uid}:{gid}: {e}; it keeps {}:{}",
                path.display(),
                m.uid(),
                m.gid()
            );
        }
    }
    file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| io_failed("cannot set the mode of", path, e))
}

/// Renames `tmp` to `dest` and fsyncs the directory.
pub fn rename_into_place(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), SourceError> {
    tmp.persist(dest)
        .map_err(|e| io_failed("cannot rename the restored file to", dest, e.error))?;
    sync_dir(dest)
}

/// Fsyncs the directory holding `path` (a rename or removal there).
pub fn sync_dir(path: &Path) -> Result<(), SourceError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_failed("cannot fsync the directory", dir, e))
}
