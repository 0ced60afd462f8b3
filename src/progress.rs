//! The one progress and problem vocabulary of every operation: an
//! [`Event`] as it happens, handed to a [`Monitor`]. The binary decides
//! what to draw (a bar on a terminal, dry-run and `--check` lines for
//! `coffer copy`); the library never draws, and with no monitor installed
//! an event costs one atomic load.
//!
//! Operations that report per item (`coffer copy`) take their monitor as
//! an argument. The byte counts of snapshot, restore and verify come from
//! pipeline stages on threads of their own, deep in readers and writers
//! ([`Counted`]): they go to the process's monitor, set once with
//! [`install`], rather than through a handle threaded through every stage.

use std::io::{self, Read, Write};
use std::sync::OnceLock;

/// Something that happened, as it happens. The first two are what every
/// operation reports; the others are `coffer copy`'s, one object each.
#[derive(Debug)]
pub enum Event<'a> {
    /// Bytes of data done: read from a source, restored, verified.
    Bytes(u64),
    /// What is being worked on now (a source, an object).
    Working(&'a str),
    /// An object found at SRC that will be copied (or would be).
    Queued {
        key: &'a str,
        bytes: u64,
    },
    Copied {
        key: &'a str,
        bytes: u64,
    },
    Skipped {
        key: &'a str,
        bytes: u64,
    },
    WouldCopy {
        key: &'a str,
        bytes: u64,
        why: &'a str,
    },
    WouldDelete {
        key: &'a str,
        bytes: u64,
    },
    Deleted {
        key: &'a str,
    },
    Differs {
        key: &'a str,
        what: &'a str,
    },
    Failed {
        key: &'a str,
        error: &'a str,
    },
    Retrying {
        key: &'a str,
        attempt: u32,
        error: &'a str,
    },
}

/// Receives events. Called from any thread, often: keep it cheap.
pub trait Monitor: Send + Sync {
    fn event(&self, e: &Event<'_>);
}

/// A monitor that ignores everything.
pub struct Silent;

impl Monitor for Silent {
    fn event(&self, _: &Event<'_>) {}
}

static MONITOR: OnceLock<Box<dyn Monitor>> = OnceLock::new();

/// Sets the process's monitor (once; later calls are ignored).
pub fn install(m: Box<dyn Monitor>) {
    let _ = MONITOR.set(m);
}

/// Hands `e` to the process's monitor, if one is installed.
pub fn emit(e: &Event<'_>) {
    if let Some(m) = MONITOR.get() {
        m.event(e);
    }
}

/// Counts `n` bytes done.
pub fn add(n: u64) {
    emit(&Event::Bytes(n));
}

/// Says what is being worked on (a source, an object).
pub fn message(msg: impl AsRef<str>) {
    emit(&Event::Working(msg.as_ref()));
}

/// A writer (or reader) that counts what passes through it.
pub struct Counted<W>(pub W);

impl<W> Counted<W> {
    pub fn into_inner(self) -> W {
        self.0
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        add(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_passes_bytes_through_unchanged() {
        let mut w = Counted(Vec::new());
        w.write_all(b"hello").unwrap();
        assert_eq!(w.into_inner(), b"hello");
        let mut r = Counted(&b"abc"[..]);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
