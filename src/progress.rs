//! Progress on a terminal: one bar per process (bytes, rate, elapsed time),
//! drawn on stderr only when `main` switched it on, which it does only when
//! stderr is a terminal and neither `--no-progress`, `-q` nor `--json` asked
//! for silence. Under cron or systemd nothing is drawn and the counters cost
//! one relaxed atomic add per buffer.
//!
//! A process-wide bar rather than a handle threaded through every pipeline
//! stage: a process has one stderr, the stages run on threads of their own,
//! and the library must not care whether anyone is watching.

use std::io::{self, Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Switches the bar on for this process, with `what` (e.g. "snapshot") as
/// its prefix. Without this call every function here does nothing visible.
pub fn enable(what: &str) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {spinner} {bytes} ({binary_bytes_per_sec}) {elapsed} {wide_msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(250));
    let _ = BAR.set(bar);
}

/// Counts `n` bytes done.
pub fn add(n: u64) {
    if let Some(b) = BAR.get() {
        b.inc(n);
    }
}

/// Says what is being worked on (a source, an object).
pub fn message(msg: impl Into<String>) {
    if let Some(b) = BAR.get() {
        b.set_message(msg.into());
    }
}

/// Removes the bar before the result is printed.
pub fn finish() {
    if let Some(b) = BAR.get() {
        b.finish_and_clear();
    }
}

/// A writer that counts what passes through it.
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
