//! Writing to stdout: JSON documents (with the store report), lines, and the
//! shared formatting helpers.

use std::io::Write;

use coffer::{Error, Outcome};

/// Writes generated text to stdout; a closed pipe (`coffer man | head`) is
/// the reader's choice, not an error.
pub fn write_generated(out: &[u8], what: &str) -> Result<Outcome, Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Outcome::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Outcome::Ok),
        Err(e) => Err(Error::Output {
            doing: format!("write {what} to stdout"),
            source: e,
        }),
    }
}

pub fn print_json(v: &serde_json::Value) {
    crate::bar::finish();
    // Every document of a run that reached a store says how the store
    // behaved: requests that failed and were retried, and what was
    // recovered (docs/JSON.md, "store"). Added as it is written: a
    // document may be large (`show --files`).
    #[derive(serde::Serialize)]
    struct WithStore<'a> {
        #[serde(flatten)]
        doc: &'a serde_json::Map<String, serde_json::Value>,
        store: coffer::report::StoreDoc,
    }
    let mut out = std::io::stdout().lock();
    let _ = match v.as_object() {
        Some(doc) if coffer::store::run_opened() => {
            let store = coffer::report::StoreDoc::of_run();
            serde_json::to_writer_pretty(&mut out, &WithStore { doc, store })
        }
        _ => serde_json::to_writer_pretty(&mut out, v),
    };
    let _ = writeln!(out);
}

/// Prints a `Serialize` document through [`print_json`], keys sorted.
pub fn print_doc(doc: &impl serde::Serialize) {
    print_json(&serde_json::to_value(doc).expect("report serialises"));
}

/// Writes a text report to stdout; a closed pipe is the reader's choice.
pub fn stdout_text(
    write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> Result<(), Error> {
    crate::bar::finish();
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output {
            doing: "write the report to stdout".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

pub fn println_out(s: &str) {
    crate::bar::finish();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

pub use coffer::report::human_bytes;
