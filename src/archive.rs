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
    /// Format 2: the chunks the data was stored as.
    pub chunks: Option<Vec<crate::chunks::ChunkId>>,
}

/// Where a source's entries go: a tar stream (format 1, [`TarWriter`]) or
/// chunks (format 2, [`crate::chunks::write::ChunkSink`]). Either way a
/// file's data is exactly its announced size: a file that shrinks while
/// read is zero-filled, one that grows is cut.
pub trait EntrySink {
    /// Stores one entry; `data` yields a regular file's bytes.
    fn append(
        &mut self,
        e: &IndexEntry,
        tar_path: &str,
        data: Option<&mut dyn Read>,
    ) -> io::Result<Option<DataOutcome>>;

    /// Format 2, directory sources: the previous snapshot's line for this
    /// file when its size, times and inode are unchanged (section 21.2),
    /// so the file need not be read. `e` carries what `stat` says now.
    fn unchanged(&mut self, _e: &IndexEntry) -> Option<IndexEntry> {
        None
    }

    /// Whether index lines record inode and change time (format 2).
    fn records_identity(&self) -> bool {
        false
    }
}

impl<W: Write> EntrySink for TarWriter<W> {
    fn append(
        &mut self,
        e: &IndexEntry,
        tar_path: &str,
        data: Option<&mut dyn Read>,
    ) -> io::Result<Option<DataOutcome>> {
        TarWriter::append(self, e, tar_path, data)
    }
}

/// A file's data as exactly its announced size, hashed on the way: the
/// format 2 counterpart of [`TarWriter::append`]'s copy.
pub struct Announced<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    read: u64,
    short: bool,
    hasher: Sha256,
}

impl<'a> Announced<'a> {
    pub fn new(inner: &'a mut dyn Read, size: u64) -> Self {
        Announced {
            inner,
            left: size,
            read: 0,
            short: false,
            hasher: Sha256::new(),
        }
    }

    /// SHA-256 (hex), bytes read from the source, and whether it was short.
    pub fn finish(self) -> (String, u64, bool) {
        (hex::encode(self.hasher.finalize()), self.read, self.short)
    }
}

impl Read for Announced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = if self.short {
            buf[..want].fill(0);
            want
        } else {
            loop {
                match self.inner.read(&mut buf[..want]) {
                    Ok(0) => {
                        self.short = true;
                        buf[..want].fill(0);
                        break want;
                    }
                    Ok(n) => {
                        self.read += n as u64;
                        break n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
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
            chunks: None,
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

/// The most data a tar extension entry (a GNU long name or long link, a PAX
/// header) may hold. coffer writes a few hundred bytes there at most; the
/// `tar` crate reads such an entry whole into memory, so a stored header
/// asking for gigabytes is refused before the crate sees it.
pub const MAX_TAR_EXTENSION: u64 = 1 << 20;

/// A tar stream that breaks the rules [`TarGuard`] enforces: stored data
/// that no coffer writes (an integrity failure, not an I/O one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarLimit {
    #[error("the tar header at byte {at} has an unreadable size field")]
    UnreadableSize { at: u64 },
    #[error(
        "the {what} at byte {at} of the tar stream claims {size} bytes; coffer writes at most {MAX_TAR_EXTENSION}"
    )]
    Oversized {
        what: &'static str,
        at: u64,
        size: u64,
    },
    #[error("the tar entry at byte {at} is a GNU sparse file, which coffer never writes")]
    Sparse { at: u64 },
    /// The `tar` crate's reason, kept as text: its error is not `Clone`,
    /// and the guard repeats it on every later read.
    #[error("a PAX header cannot be read: {0}")]
    PaxUnreadable(String),
    #[error("a PAX size record is not a number")]
    PaxSize,
}

fn tar_limit(e: TarLimit) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Passes a tar stream through unchanged while following its headers, and
/// fails the read that would hand the `tar` crate an extension entry over
/// [`MAX_TAR_EXTENSION`] (or a GNU sparse entry, whose extra header blocks
/// coffer never writes). A PAX `size` record is honoured for the entry it
/// precedes, as the crate does, so the guard never loses step.
pub struct TarGuard<R> {
    inner: R,
    header: [u8; BLOCK],
    filled: usize,
    /// Data and padding bytes of the current entry still to pass.
    skip: u64,
    /// The data of a PAX header being collected (at most the cap).
    pax: Option<Vec<u8>>,
    pax_left: u64,
    /// A PAX `size` for the next entry.
    next_size: Option<u64>,
    /// Offset of the next byte in the stream, for messages.
    offset: u64,
    failed: Option<TarLimit>,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            header: [0; BLOCK],
            filled: 0,
            skip: 0,
            pax: None,
            pax_left: 0,
            next_size: None,
            offset: 0,
            failed: None,
        }
    }

    fn observe(&mut self, mut b: &[u8]) -> Result<(), TarLimit> {
        while !b.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(b.len() as u64)) as usize;
                if let Some(p) = &mut self.pax {
                    let take = (self.pax_left.min(n as u64)) as usize;
                    p.extend_from_slice(&b[..take]);
                    self.pax_left -= take as u64;
                }
                self.skip -= n as u64;
                self.offset += n as u64;
                b = &b[n..];
                if self.skip == 0
                    && let Some(p) = self.pax.take()
                {
                    self.next_size = pax_size(&p)?;
                }
                continue;
            }
            let n = (BLOCK - self.filled).min(b.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&b[..n]);
            self.filled += n;
            b = &b[n..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.on_header()?;
                self.offset += BLOCK as u64;
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> Result<(), TarLimit> {
        let h = &self.header;
        if h.iter().all(|&c| c == 0) {
            return Ok(());
        }
        let ty = h[156];
        let at = self.offset;
        let size = header_size(&h[124..136]).ok_or(TarLimit::UnreadableSize { at })?;
        match ty {
            b'L' | b'K' | b'x' | b'g' => {
                if size > MAX_TAR_EXTENSION {
                    let what = match ty {
                        b'L' => "GNU long name",
                        b'K' => "GNU long link",
                        _ => "PAX header",
                    };
                    return Err(TarLimit::Oversized { what, at, size });
                }
                if ty == b'x' {
                    self.pax = Some(Vec::with_capacity(size as usize));
                    self.pax_left = size;
                }
                self.skip = padded(size);
            }
            b'S' => {
                return Err(TarLimit::Sparse { at });
            }
            _ => {
                let size = self.next_size.take().unwrap_or(size);
                self.skip = padded(size);
            }
        }
        Ok(())
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

/// A header's size field: octal digits, or base-256 when the high bit of its
/// first byte is set (as the `tar` crate reads it).
fn header_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[..f.len() - 8].iter().skip(1).any(|&c| c != 0) || f[0] & 0x7f != 0 {
            return None;
        }
        return Some(u64::from_be_bytes(f[f.len() - 8..].try_into().ok()?));
    }
    let s = std::str::from_utf8(f).ok()?;
    let s = s.trim_matches(|c| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// The `size` record of PAX header data, if any.
fn pax_size(data: &[u8]) -> Result<Option<u64>, TarLimit> {
    let mut size = None;
    for rec in tar::PaxExtensions::new(data) {
        let rec = rec.map_err(|e| TarLimit::PaxUnreadable(e.to_string()))?;
        if rec.key_bytes() == b"size" {
            let v = std::str::from_utf8(rec.value_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(TarLimit::PaxSize)?;
            size = Some(v);
        }
    }
    Ok(size)
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(m) = &self.failed {
            return Err(tar_limit(m.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(m) = self.observe(&buf[..n]) {
            self.failed = Some(m.clone());
            return Err(tar_limit(m));
        }
        Ok(n)
    }
}

/// The longest index line (without its `\n`) written or read. Real lines
/// are a few hundred bytes; the cap keeps a damaged or hostile index from
/// making a reader buffer gigabytes in search of a newline.
pub const MAX_INDEX_LINE: usize = 1 << 20;

/// The most chunk ids on one file list line (section 20).
pub const CHUNKS_PER_LINE: usize = 1024;

/// A continuation line of a file's chunk ids (section 20).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MoreLine {
    #[serde(rename = "type")]
    kind: MoreTag,
    chunks: Vec<crate::chunks::ChunkId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    more: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum MoreTag {
    More,
}

/// Writes index entries as JSON lines.
pub struct IndexWriter<W: Write> {
    out: W,
}

impl<W: Write> IndexWriter<W> {
    pub fn new(out: W) -> Self {
        IndexWriter { out }
    }
    /// Writes one entry; a format 2 file of more than [`CHUNKS_PER_LINE`]
    /// chunks continues on `more` lines (docs/FORMAT.md section 20).
    pub fn push(&mut self, e: &IndexEntry) -> io::Result<()> {
        match &e.chunks {
            Some(c) if c.len() > CHUNKS_PER_LINE => {
                let mut first = e.clone();
                first.chunks = Some(c[..CHUNKS_PER_LINE].to_vec());
                first.more = true;
                self.line(&first, &e.path)?;
                let rest: Vec<_> = c[CHUNKS_PER_LINE..].chunks(CHUNKS_PER_LINE).collect();
                for (i, part) in rest.iter().enumerate() {
                    let more = MoreLine {
                        kind: MoreTag::More,
                        chunks: part.to_vec(),
                        more: i + 1 < rest.len(),
                    };
                    self.line(&more, &e.path)?;
                }
                Ok(())
            }
            _ => self.line(e, &e.path),
        }
    }

    fn line(&mut self, v: &impl serde::Serialize, path: &str) -> io::Result<()> {
        let line = serde_json::to_vec(v).map_err(io::Error::other)?;
        // Never write what no reader would accept.
        if line.len() > MAX_INDEX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the index line of {path:?} would be {} bytes, more than the {MAX_INDEX_LINE} a reader accepts",
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

    /// Reads the next line into `self.line`; false at the end.
    fn read_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        // One byte more than the cap, plus the newline: enough to tell a
        // line at the cap from one over it.
        let limit = MAX_INDEX_LINE as u64 + 2;
        if (&mut self.input).take(limit).read_line(&mut self.line)? == 0 {
            return Ok(false);
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
        Ok(true)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> io::Result<T> {
        serde_json::from_str(self.line.trim_end()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("index line {} is not valid: {e}", self.line_no),
            )
        })
    }

    /// The next entry, or `None` at the end. A file's `more` lines are
    /// joined to it.
    pub fn next_entry(&mut self) -> io::Result<Option<IndexEntry>> {
        if !self.read_line()? {
            return Ok(None);
        }
        let mut e: IndexEntry = self.parse()?;
        if e.more {
            let mut chunks = e.chunks.take().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "index line {} says more chunks follow but lists none",
                        self.line_no
                    ),
                )
            })?;
            let mut more = true;
            while more {
                if !self.read_line()? {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the list ends after line {} where more chunks of {:?} were to follow",
                            self.line_no, e.path
                        ),
                    ));
                }
                let m: MoreLine = self.parse()?;
                chunks.extend(m.chunks);
                more = m.more;
            }
            e.chunks = Some(chunks);
            e.more = false;
        }
        Ok(Some(e))
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

/// Why an entry name could leave the destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeName {
    #[error("entry name is not UTF-8")]
    NotUtf8,
    #[error("entry {0:?} has an absolute path")]
    Absolute(String),
    #[error("entry {0:?} climbs out with '..'")]
    Climbs(String),
    #[error("entry {0:?} holds a NUL byte")]
    Nul(String),
}

/// Normalises a tar entry name to an index path, refusing anything that
/// could leave the destination: absolute paths, `..`, empty components.
pub fn safe_path(name: &[u8]) -> Result<String, UnsafeName> {
    let s = std::str::from_utf8(name).map_err(|_| UnsafeName::NotUtf8)?;
    let trimmed = s.trim_end_matches('/');
    if trimmed == "." || trimmed.is_empty() {
        return Ok(".".into());
    }
    let t = trimmed.strip_prefix("./").unwrap_or(trimmed);
    if t.starts_with('/') {
        return Err(UnsafeName::Absolute(s.to_string()));
    }
    let mut parts = Vec::new();
    for c in t.split('/') {
        match c {
            "" | "." => continue,
            ".." => return Err(UnsafeName::Climbs(s.to_string())),
            c if c.contains('\0') => return Err(UnsafeName::Nul(s.to_string())),
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
            size,
            mode: 0o644,
            mtime: 1_700_000_000,
            uid: 1000,
            gid: 1000,
            ..IndexEntry::new(path.into(), kind)
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

    /// A raw tar header of type `ty` announcing `size` bytes.
    fn raw_header(name: &str, ty: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::new(ty));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn block_pad(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(BLOCK) {
            v.push(0);
        }
    }

    /// Reads `data` through the guard and the `tar` crate, as restore does:
    /// the entries' paths, or the error.
    fn through_guard(data: &[u8]) -> io::Result<Vec<String>> {
        let mut a = tar::Archive::new(TarGuard::new(data));
        let mut names = Vec::new();
        for e in a.entries()? {
            let mut e = e?;
            names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
            io::copy(&mut e, &mut io::sink())?;
        }
        Ok(names)
    }

    /// Issue 10 item 11: what coffer writes passes the guard unchanged,
    /// PAX headers and long names included.
    #[test]
    fn the_tar_guard_passes_coffers_own_archives() {
        let long = format!("{}/{}", "d".repeat(120), "ü".repeat(70));
        let mut w = TarWriter::new(Vec::new());
        for (name, body) in [(long.as_str(), &b"hello"[..]), ("s", b"")] {
            let mut data = body;
            w.append(
                &entry(name, EntryKind::File, body.len() as u64),
                name,
                Some(&mut data),
            )
            .unwrap();
        }
        let out = w.finish().unwrap();
        let mut copy = Vec::new();
        io::copy(&mut TarGuard::new(out.as_slice()), &mut copy).unwrap();
        assert_eq!(copy, out);
        assert_eq!(through_guard(&out).unwrap(), vec![long, "s".to_string()]);
    }

    /// Issue 10 item 11: a GNU long name, long link or PAX header that asks
    /// for more than the cap is refused before the `tar` crate buffers it.
    #[test]
    fn the_tar_guard_refuses_oversized_extension_headers() {
        for (ty, what) in [
            (b'L', "GNU long name"),
            (b'K', "GNU long link"),
            (b'x', "PAX header"),
        ] {
            let size = MAX_TAR_EXTENSION + 1;
            let mut t = raw_header("././@LongLink", ty, size);
            t.extend(std::iter::repeat_n(b'a', size as usize));
            block_pad(&mut t);
            t.extend(raw_header("f", b'0', 0));
            t.extend([0u8; 1024]);
            let e = through_guard(&t).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<TarLimit>());
            assert!(inner.is_some(), "{what}: not a TarLimit: {e}");
            assert!(
                e.to_string().contains(what) && e.to_string().contains("claims 1048577 bytes"),
                "{e}"
            );
        }
        // At the cap, it is read as usual.
        let mut t = raw_header("././@LongLink", b'L', 300);
        t.extend(std::iter::repeat_n(b'n', 300));
        block_pad(&mut t);
        t.extend(raw_header("ignored", b'0', 3));
        t.extend(b"abc");
        block_pad(&mut t);
        t.extend([0u8; 1024]);
        assert_eq!(through_guard(&t).unwrap(), vec!["n".repeat(300)]);
    }

    /// A PAX `size` overrides the header's, for the guard as for the crate:
    /// an oversized long name hidden behind a PAX-sized entry is still
    /// found, and a GNU sparse entry is refused.
    #[test]
    fn the_tar_guard_follows_pax_sizes() {
        let mut pax = Vec::new();
        pax_record(&mut pax, "size", b"1024");
        let mut t = raw_header("pax", b'x', pax.len() as u64);
        t.extend(&pax);
        block_pad(&mut t);
        // The header says 0 bytes; PAX says 1024, which the data really is.
        t.extend(raw_header("f", b'0', 0));
        t.extend([b'z'; 1024]);
        t.extend(raw_header("././@LongLink", b'L', 5 << 20));
        t.extend([0u8; 1024]);
        let e = through_guard(&t).unwrap_err();
        assert!(e.to_string().contains("GNU long name at byte 2560"), "{e}");

        let mut t = raw_header("sparse", b'S', 0);
        t.extend([0u8; 1024]);
        let e = through_guard(&t).unwrap_err();
        assert!(e.to_string().contains("GNU sparse"), "{e}");
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
