//! Archives: the tar stream a source is stored as, its index, and the bounded
//! channels that carry bytes between the pipeline's threads.
//!
//! Entries are ustar; a PAX extended header is added only for what ustar
//! cannot hold (paths or link targets over 100 bytes, sizes of 8 GiB and
//! more, large ids), so GNU tar lists and extracts every archive. File data is
//! copied with exactly the size announced in the header: a file that shrinks
//! while read is padded and reported, one that grows is cut and reported, so
//! the stream never goes out of step.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};

use sha2::{Digest, Sha256};

use crate::manifest::{EntryKind, IndexEntry};

const BLOCK: usize = 512;
const USTAR_MAX_OCTAL_11: u64 = 0o77777777777;
const USTAR_MAX_OCTAL_7: u64 = 0o7777777;
const COPY_BUF: usize = 256 * 1024;

/// How a file's data went into the archive.
#[derive(Debug)]
pub struct DataOutcome {
    pub sha256: String,
    /// Bytes actually read from the file (at most the announced size).
    pub read: u64,
    /// The file had fewer bytes than announced (the gap is zero-filled).
    pub short: bool,
}

/// Writes a tar stream entry by entry.
pub struct TarWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "<len> <key>=<value>\n", where <len> counts its own digits.
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() + base != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            buf: vec![0u8; COPY_BUF],
        }
    }

    /// Appends one entry. `tar_path` is the entry name (directories end in
    /// '/'); `data` must yield the file's bytes for regular files.
    pub fn append(
        &mut self,
        e: &IndexEntry,
        tar_path: &str,
        data: Option<&mut dyn Read>,
    ) -> io::Result<Option<DataOutcome>> {
        let mut h = tar::Header::new_ustar();
        let mut pax = Vec::new();
        let (ty, size) = match e.kind {
            EntryKind::File => (tar::EntryType::Regular, e.size),
            EntryKind::Dir => (tar::EntryType::Directory, 0),
            EntryKind::Symlink => (tar::EntryType::Symlink, 0),
            EntryKind::Hardlink => (tar::EntryType::Link, 0),
        };
        h.set_entry_type(ty);
        h.set_mode(e.mode & 0o7777);
        h.set_mtime(e.mtime.max(0) as u64);
        if tar_path.len() > 100 {
            pax_record(&mut pax, "path", tar_path.as_bytes());
        }
        set_field(
            &mut h.as_old_mut().name,
            truncate_utf8(tar_path, 100).as_bytes(),
        );
        if let Some(t) = &e.target {
            if t.len() > 100 {
                pax_record(&mut pax, "linkpath", t.as_bytes());
            }
            set_field(
                &mut h.as_old_mut().linkname,
                truncate_utf8(t, 100).as_bytes(),
            );
        }
        if size > USTAR_MAX_OCTAL_11 {
            pax_record(&mut pax, "size", size.to_string().as_bytes());
        }
        h.set_size(size);
        for (key, id) in [("uid", e.uid), ("gid", e.gid)] {
            if u64::from(id) > USTAR_MAX_OCTAL_7 {
                pax_record(&mut pax, key, id.to_string().as_bytes());
            }
        }
        h.set_uid(u64::from(e.uid).min(USTAR_MAX_OCTAL_7));
        h.set_gid(u64::from(e.gid).min(USTAR_MAX_OCTAL_7));
        if !pax.is_empty() {
            let mut ph = tar::Header::new_ustar();
            ph.set_entry_type(tar::EntryType::XHeader);
            set_field(&mut ph.as_old_mut().name, b"././@PaxHeader");
            ph.set_mode(0o644);
            ph.set_mtime(e.mtime.max(0) as u64);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            self.out.write_all(ph.as_bytes())?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        if ty != tar::EntryType::Regular {
            return Ok(None);
        }
        let data = data.expect("regular files come with data");
        let outcome = self.copy_exact(data, size)?;
        self.pad(size)?;
        Ok(Some(outcome))
    }

    fn copy_exact(&mut self, data: &mut dyn Read, size: u64) -> io::Result<DataOutcome> {
        let mut hasher = Sha256::new();
        let mut left = size;
        let mut short = false;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    short = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&self.buf[..n]);
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        let read = size - left;
        if short {
            self.buf.fill(0);
            while left > 0 {
                let n = left.min(self.buf.len() as u64) as usize;
                hasher.update(&self.buf[..n]);
                self.out.write_all(&self.buf[..n])?;
                left -= n as u64;
            }
        }
        Ok(DataOutcome {
            sha256: hex::encode(hasher.finalize()),
            read,
            short,
        })
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

/// The longest index line (without its `\n`) written or read. Real lines
/// are a few hundred bytes; the cap keeps a damaged or hostile index from
/// making a reader buffer gigabytes in search of a newline.
pub const MAX_INDEX_LINE: usize = 1 << 20;

/// Writes index entries as JSON lines.
pub struct IndexWriter<W: Write> {
    out: W,
}

impl<W: Write> IndexWriter<W> {
    pub fn new(out: W) -> Self {
        IndexWriter { out }
    }
    pub fn push(&mut self, e: &IndexEntry) -> io::Result<()> {
        let line = serde_json::to_vec(e).map_err(io::Error::other)?;
        // Never write what no reader would accept.
        if line.len() > MAX_INDEX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the index line of {:?} would be {} bytes, more than the {MAX_INDEX_LINE} a reader accepts",
                    e.path,
                    line.len()
                ),
            ));
        }
        self.out.write_all(&line)?;
        self.out.write_all(b"\n")
    }
    pub fn finish(self) -> W {
        self.out
    }
}

/// Reads index entries back, in archive order.
pub struct IndexReader<R: BufRead> {
    input: R,
    line: String,
    pub line_no: u64,
}

impl<R: BufRead> IndexReader<R> {
    pub fn new(input: R) -> Self {
        IndexReader {
            input,
            line: String::new(),
            line_no: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.input
    }

    /// The next entry, or `None` at the end.
    pub fn next_entry(&mut self) -> io::Result<Option<IndexEntry>> {
        self.line.clear();
        // One byte more than the cap, plus the newline: enough to tell a
        // line at the cap from one over it.
        let limit = MAX_INDEX_LINE as u64 + 2;
        if (&mut self.input).take(limit).read_line(&mut self.line)? == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if self.line.trim_end_matches('\n').len() > MAX_INDEX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "index line {} is longer than {MAX_INDEX_LINE} bytes, which no coffer writes",
                    self.line_no
                ),
            ));
        }
        serde_json::from_str(self.line.trim_end())
            .map(Some)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("index line {} is not valid: {e}", self.line_no),
                )
            })
    }

    /// The next entry that has bytes in the archive (skips files that could
    /// not be read at snapshot time).
    pub fn next_stored(&mut self) -> io::Result<Option<IndexEntry>> {
        while let Some(e) = self.next_entry()? {
            if e.stored {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }
}

/// Name of an entry in the tar stream for an index path.
pub fn tar_name(e: &IndexEntry) -> String {
    match e.kind {
        EntryKind::Dir if e.path == "." => "./".to_string(),
        EntryKind::Dir => format!("{}/", e.path),
        _ => e.path.clone(),
    }
}

/// Normalises a tar entry name to an index path, refusing anything that
/// could leave the destination: absolute paths, `..`, empty components.
pub fn safe_path(name: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(name).map_err(|_| "entry name is not UTF-8".to_string())?;
    let trimmed = s.trim_end_matches('/');
    if trimmed == "." || trimmed.is_empty() {
        return Ok(".".into());
    }
    let t = trimmed.strip_prefix("./").unwrap_or(trimmed);
    if t.starts_with('/') {
        return Err(format!("entry {s:?} has an absolute path"));
    }
    let mut parts = Vec::new();
    for c in t.split('/') {
        match c {
            "" | "." => continue,
            ".." => return Err(format!("entry {s:?} climbs out with '..'")),
            c if c.contains('\0') => return Err(format!("entry {s:?} holds a NUL byte")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(".".into());
    }
    Ok(parts.join("/"))
}

/// Collects writes into blocks and sends them to the next pipeline stage.
pub struct ChanWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    block: usize,
}

/// Bytes per block between pipeline stages, and blocks in flight.
pub const STAGE_BLOCK: usize = 1 << 20;
pub const STAGE_DEPTH: usize = 4;

pub fn stage_channel() -> (ChanWriter, ChanReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(STAGE_DEPTH);
    (
        ChanWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(STAGE_BLOCK),
            block: STAGE_BLOCK,
        },
        ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        },
    )
}

impl ChanWriter {
    fn send(&mut self) -> io::Result<()> {
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(self.block));
        self.tx
            .as_ref()
            .expect("open until finish")
            .send(b)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "next pipeline stage stopped"))
    }

    /// Sends what is buffered and the end marker (an empty block; data blocks
    /// are never empty). A writer dropped without `finish` makes the reader
    /// fail instead of seeing a clean end, so a failed producer can never
    /// pass for a complete stream.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.send()?;
        self.tx = None;
        Ok(())
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.block - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.block {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The receiving end of [`stage_channel`].
pub struct ChanReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(b) if b.is_empty() => self.ended = true,
                Ok(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the previous pipeline stage stopped before the end of the stream",
                    ));
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            kind,
            size,
            mode: 0o644,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            uid: 1000,
            gid: 1000,
            target: None,
            sha256: None,
            stored: true,
            error: None,
            object: None,
        }
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for vlen in [
            0usize, 1, 5, 90, 91, 92, 93, 94, 95, 96, 990, 995, 996, 997, 998,
        ] {
            let mut out = Vec::new();
            let v = vec![b'a'; vlen];
            pax_record(&mut out, "path", &v);
            let s = String::from_utf8(out.clone()).unwrap();
            let (len, _) = s.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "value len {vlen}");
        }
    }

    #[test]
    fn long_names_and_short_reads_round_trip_through_tar_crate() {
        let long = format!("{}/{}", "d".repeat(120), "ü".repeat(70));
        let mut w = TarWriter::new(Vec::new());
        let mut data: &[u8] = b"hello";
        w.append(&entry(&long, EntryKind::File, 5), &long, Some(&mut data))
            .unwrap();
        let mut shrunk: &[u8] = b"ab";
        let o = w
            .append(&entry("s", EntryKind::File, 4), "s", Some(&mut shrunk))
            .unwrap()
            .unwrap();
        assert!(o.short && o.read == 2);
        let out = w.finish().unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let names: Vec<(String, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                    e.size(),
                )
            })
            .collect();
        assert_eq!(names, vec![(long, 5), ("s".to_string(), 4)]);
    }

    /// Issue 10 item 11: an index line over the cap is refused after
    /// reading at most the cap (plus two bytes), never searched to its end.
    #[test]
    fn overlong_index_lines_are_refused_without_reading_them_whole() {
        let ok = entry("a", EntryKind::File, 1);
        let mut w = IndexWriter::new(Vec::new());
        w.push(&ok).unwrap();
        let mut data = w.finish();
        let huge = MAX_INDEX_LINE * 3;
        data.extend(std::iter::repeat_n(b'x', huge));
        data.push(b'\n');
        let mut r = IndexReader::new(io::BufReader::new(data.as_slice()));
        assert_eq!(r.next_entry().unwrap(), Some(ok));
        let e = r.next_entry().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("index line 2 is longer than"), "{e}");
        assert!(
            r.line.len() <= MAX_INDEX_LINE + 2,
            "{} bytes held",
            r.line.len()
        );
        // A writer refuses to produce such a line.
        let long = entry(&"p".repeat(MAX_INDEX_LINE), EntryKind::File, 1);
        let e = IndexWriter::new(Vec::new()).push(&long).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn unsafe_names_are_refused() {
        assert_eq!(safe_path(b"./a/b/").unwrap(), "a/b");
        assert_eq!(safe_path(b"./").unwrap(), ".");
        assert!(safe_path(b"../x").is_err());
        assert!(safe_path(b"a/../../x").is_err());
        assert!(safe_path(b"/etc/passwd").is_err());
    }
}
