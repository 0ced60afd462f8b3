//! Dump streams in archives, and the child processes that produce or
//! consume them.
//!
//! tar needs each entry's size before its data, and a dump's size is known
//! only at its end, so a stream is stored as chunk entries of at most
//! [`CHUNK`] bytes named `<stream>/000000`, `<stream>/000001`, ... Only one
//! chunk is held in memory, whatever the size of the dump. Each chunk has its
//! own index entry (size, SHA-256), so `verify --deep` checks dumps exactly
//! as it checks files. `coffer dump` concatenates a stream's chunks.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::archive::{IndexWriter, TarWriter};
use crate::crypto::read_full;
use crate::manifest::{EntryKind, IndexEntry};

use super::SourceError;

/// Bytes per chunk entry: small enough to hold one in memory, large enough
/// that headers cost nothing (512 bytes per 4 MiB).
pub const CHUNK: usize = 4 << 20;

/// The archive path of chunk `n` of stream `name`.
pub fn chunk_path(name: &str, n: u64) -> String {
    format!("{name}/{n:06}")
}

/// The stream name and chunk number of an archive path, if it is one.
pub fn parse_chunk_path(path: &str) -> Option<(&str, u64)> {
    let (name, n) = path.rsplit_once('/')?;
    if n.len() != 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, n.parse().ok()?))
}

/// What was stored of one stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredStream {
    pub name: String,
    pub bytes: u64,
    pub chunks: u64,
    pub sha256: String,
}

/// Where a dump stream goes: chunk entries of a tar stream (format 1) or
/// content-defined chunks (format 2, `chunks::write::ChunkSink`).
pub trait StreamSink {
    /// Reads `r` to its end and writes the stream's index lines.
    fn store_stream<I: Write>(
        &mut self,
        name: &str,
        r: &mut dyn Read,
        index: &mut IndexWriter<I>,
    ) -> Result<StoredStream, SourceError>;
}

impl<W: Write> StreamSink for TarWriter<W> {
    fn store_stream<I: Write>(
        &mut self,
        name: &str,
        r: &mut dyn Read,
        index: &mut IndexWriter<I>,
    ) -> Result<StoredStream, SourceError> {
        archive_stream(name, r, self, index)
    }
}

/// The index line of a stream's bytes (a format 1 chunk entry, or a format
/// 2 stream line): mode 0600, owned by 0:0, dated `when`.
pub fn stream_entry(path: String, size: u64, when: chrono::DateTime<chrono::Utc>) -> IndexEntry {
    IndexEntry {
        size,
        mode: 0o600,
        mtime: when.timestamp(),
        mtime_nsec: when.timestamp_subsec_nanos(),
        ..IndexEntry::new(path, EntryKind::File)
    }
}

/// Reads `r` to its end into chunk entries of `tar`, indexed in `index`.
/// An empty stream still gets one (empty) chunk, so restore knows it exists.
/// Read errors are the producer's failure; write errors are the pipeline's.
pub fn archive_stream<W: Write, I: Write>(
    name: &str,
    r: &mut dyn Read,
    tar: &mut TarWriter<W>,
    index: &mut IndexWriter<I>,
) -> Result<StoredStream, SourceError> {
    use sha2::{Digest, Sha256};
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    let mut total = 0u64;
    let now = chrono::Utc::now();
    loop {
        let k = read_full(r, &mut buf)
            .map_err(|e| SourceError::Failed(format!("reading the {name} stream failed: {e}")))?;
        if k == 0 && n > 0 {
            break;
        }
        whole.update(&buf[..k]);
        let mut e = stream_entry(chunk_path(name, n), k as u64, now);
        let mut data = &buf[..k];
        let outcome = tar
            .append(&e, &e.path.clone(), Some(&mut data))?
            .expect("regular entry");
        e.sha256 = Some(outcome.sha256);
        index.push(&e)?;
        n += 1;
        total += k as u64;
        if k < CHUNK {
            break;
        }
    }
    Ok(StoredStream {
        name: name.to_string(),
        bytes: total,
        chunks: n,
        sha256: hex::encode(whole.finalize()),
    })
}

/// Keeps the last bytes a child wrote to stderr, for error messages.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<Vec<u8>>>);

const TAIL: usize = 8 * 1024;

impl Tail {
    fn collect(&self, mut r: impl Read + Send + 'static) -> JoinHandle<()> {
        let t = self.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut v = t.0.lock().expect("tail lock");
                v.extend_from_slice(&buf[..n]);
                if v.len() > TAIL {
                    let cut = v.len() - TAIL;
                    v.drain(..cut);
                }
            }
        })
    }

    fn text(&self) -> String {
        let v = self.0.lock().expect("tail lock");
        String::from_utf8_lossy(&v).trim().to_string()
    }
}

/// A running tool: its exit status and stderr are checked by
/// [`Tool::wait`], so a tool that fails or is killed is never mistaken for
/// one that finished.
pub struct Tool {
    what: String,
    child: std::process::Child,
    tail: Tail,
    tail_thread: Option<JoinHandle<()>>,
}

/// How to start a tool: program, arguments, extra environment (passwords go
/// here, never in argv). The tool starts from coffer's environment without
/// coffer's secrets ([`crate::childenv`]), except the variables named in
/// `pass`.
pub struct ToolSpec {
    pub what: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub pass: Vec<String>,
}

impl ToolSpec {
    pub fn new(what: impl Into<String>, argv: Vec<String>) -> Self {
        ToolSpec {
            what: what.into(),
            argv,
            env: Vec::new(),
            pass: Vec::new(),
        }
    }

    /// Passes these variables of coffer's environment on even though they
    /// are secrets (a tool's own password, a config's `env` allow-list).
    pub fn pass<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.pass
            .extend(names.iter().map(|n| n.as_ref().to_string()));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    fn command(&self) -> Result<Command, SourceError> {
        let (prog, args) = self
            .argv
            .split_first()
            .ok_or_else(|| SourceError::Usage(format!("{}: empty command", self.what)))?;
        let mut c = crate::childenv::command(prog, &self.pass);
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        Ok(c)
    }

    fn spawn_err(&self, e: io::Error) -> SourceError {
        SourceError::spawn(&self.what, &self.argv[0], None, e)
    }

    /// Starts the tool with its stdout piped to us.
    pub fn spawn_reader(&self) -> Result<(Tool, std::process::ChildStdout), SourceError> {
        let mut c = self.command()?;
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| self.spawn_err(e))?;
        let out = child.stdout.take().expect("piped stdout");
        Ok((self.tool(child), out))
    }

    /// Starts the tool with its stdin piped from us.
    pub fn spawn_writer(&self) -> Result<(Tool, std::process::ChildStdin), SourceError> {
        let mut c = self.command()?;
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| self.spawn_err(e))?;
        let stdin = child.stdin.take().expect("piped stdin");
        Ok((self.tool(child), stdin))
    }

    fn tool(&self, mut child: std::process::Child) -> Tool {
        let tail = Tail::default();
        let err = child.stderr.take().expect("piped stderr");
        let t = tail.collect(err);
        // A writer's stdout goes to the same tail (psql prints errors there too).
        if let Some(out) = child.stdout.take() {
            tail.collect(out);
        }
        Tool {
            what: self.what.clone(),
            child,
            tail,
            tail_thread: Some(t),
        }
    }

    /// Runs the tool to completion and returns its stdout (small outputs:
    /// versions, queries).
    pub fn output(&self) -> Result<String, SourceError> {
        let mut c = self.command()?;
        c.stdin(Stdio::null());
        let out = c.output().map_err(|e| self.spawn_err(e))?;
        if !out.status.success() {
            return Err(SourceError::Failed(format!(
                "{} failed ({}): {}",
                self.what,
                describe_status(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

impl Tool {
    /// Waits for the tool; an error unless it exited 0. The error names the
    /// tool and ends with what it last wrote to stderr.
    pub fn wait(mut self) -> Result<(), SourceError> {
        let status = self
            .child
            .wait()
            .map_err(|e| SourceError::Failed(format!("{}: wait failed: {e}", self.what)))?;
        if let Some(t) = self.tail_thread.take() {
            let _ = t.join();
        }
        if status.success() {
            return Ok(());
        }
        let tail = self.tail.text();
        Err(SourceError::Failed(format!(
            "{} failed ({}){}",
            self.what,
            describe_status(status),
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )))
    }

    /// Stops the tool (after a failure of ours) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A [`super::DumpStream`] over a tool's stdout; its `done` checks the exit
/// status.
pub fn tool_stream(name: &str, spec: &ToolSpec) -> Result<super::DumpStream, SourceError> {
    let (tool, out) = spec.spawn_reader()?;
    Ok(super::DumpStream {
        name: name.to_string(),
        reader: Box::new(out),
        done: Box::new(move || tool.wait()),
    })
}

/// Feeds `r` to a tool's stdin and waits for it. A tool that exits early
/// (closing its stdin) is reported by its status, not as a broken pipe.
pub fn feed_tool(spec: &ToolSpec, r: &mut dyn Read) -> Result<u64, SourceError> {
    let (tool, mut stdin) = spec.spawn_writer()?;
    let copied = io::copy(r, &mut crate::progress::Counted(&mut stdin));
    if let Err(e) = &copied
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        // Kill before closing stdin: a closed pipe is a clean end of input,
        // and a client in single-transaction mode would commit what it read
        // of a damaged archive.
        tool.kill();
        drop(stdin);
        return Err(SourceError::Io(copied.unwrap_err()));
    }
    drop(stdin);
    match copied {
        Ok(n) => tool.wait().map(|_| n),
        Err(_) => {
            tool.wait()?;
            Err(SourceError::Failed(format!(
                "{} stopped reading its input before the end",
                spec.what
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_paths_round_trip() {
        assert_eq!(chunk_path("dump.sql", 7), "dump.sql/000007");
        assert_eq!(parse_chunk_path("dump.sql/000007"), Some(("dump.sql", 7)));
        assert_eq!(parse_chunk_path("a/b/000123"), Some(("a/b", 123)));
        assert_eq!(parse_chunk_path("x/12"), None);
    }

    #[test]
    fn failing_tool_is_reported_with_its_stderr() {
        let spec = ToolSpec::new(
            "test tool",
            vec![
                "sh".into(),
                "-c".into(),
                "echo partial; echo boom >&2; exit 3".into(),
            ],
        );
        let s = tool_stream("out", &spec).unwrap();
        let mut r = s.reader;
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"partial\n");
        let e = (s.done)().unwrap_err().to_string();
        assert!(e.contains("exit status 3") && e.contains("boom"), "{e}");
    }

    #[test]
    fn killed_tool_is_a_failure() {
        let spec = ToolSpec::new("k", vec!["sh".into(), "-c".into(), "kill -9 $$".into()]);
        let s = tool_stream("out", &spec).unwrap();
        let mut r = s.reader;
        let _ = r.read_to_end(&mut Vec::new());
        let e = (s.done)().unwrap_err().to_string();
        assert!(e.contains("signal 9"), "{e}");
    }

    /// A reader that yields some bytes, then fails like a damaged archive.
    struct FailsMidway(usize);
    impl Read for FailsMidway {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "damaged"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_failing_input_kills_the_tool_before_it_sees_a_clean_end() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("committed");
        // The tool "commits" only when its input ends cleanly.
        let script = format!("cat >/dev/null && touch {}", marker.display());
        let spec = ToolSpec::new("restore tool", vec!["sh".into(), "-c".into(), script]);
        let e = feed_tool(&spec, &mut FailsMidway(100_000)).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        assert!(!marker.exists(), "the tool saw a clean end of input");
    }

    #[test]
    fn missing_tool_is_named() {
        let spec = ToolSpec::new("dumper", vec!["coffer-no-such-tool".into()]);
        let e = tool_stream("out", &spec).err().unwrap().to_string();
        assert!(e.contains("not installed"), "{e}");
    }
}
