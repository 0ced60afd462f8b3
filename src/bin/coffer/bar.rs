//! The progress bar on a terminal: the binary's [`coffer::progress::Monitor`]
//! for snapshot, restore, verify and the like (bytes, rate, elapsed time,
//! what is being worked on), drawn on stderr with indicatif. `main`
//! installs it only when stderr is a terminal and neither `--no-progress`,
//! `-q` nor `--json` asked for silence.

use std::sync::OnceLock;
use std::time::Duration;

use coffer::progress::{Event, Monitor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar, kept to clear it before the result is printed.
static BAR: OnceLock<ProgressBar> = OnceLock::new();

struct Bar(ProgressBar);

impl Monitor for Bar {
    fn event(&self, e: &Event<'_>) {
        match e {
            Event::Bytes(n) => self.0.inc(*n),
            Event::Working(what) => self.0.set_message(what.to_string()),
            // Per-object events are `coffer copy`'s, which has its own
            // monitor.
            _ => {}
        }
    }
}

/// Draws the bar for this process, with `what` (e.g. "snapshot") as its
/// prefix.
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
    if BAR.set(bar.clone()).is_ok() {
        coffer::progress::install(Box::new(Bar(bar)));
    }
}

/// Removes the bar before the result is printed.
pub fn finish() {
    if let Some(b) = BAR.get() {
        b.finish_and_clear();
    }
}
