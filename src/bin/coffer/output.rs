//! Writing to stdout: JSON documents (with the store report), lines, and the
//! shared formatting helpers.

use std::io::Write;

use coffer::manifest::Manifest;
use coffer::{Error, Outcome};
use serde_json::json;

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
        store: serde_json::Value,
    }
    let mut out = std::io::stdout().lock();
    let _ = match v.as_object() {
        Some(doc) if coffer::store::run_opened() => {
            let store = json!({"retries": coffer::store::run_retries(), "warnings": coffer::store::run_warnings()});
            serde_json::to_writer_pretty(&mut out, &WithStore { doc, store })
        }
        _ => serde_json::to_writer_pretty(&mut out, v),
    };
    let _ = writeln!(out);
}

pub fn println_out(s: &str) {
    crate::bar::finish();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

pub use coffer::report::{human_bytes, rfc3339, status_word};

pub fn snapshot_json(m: &Manifest) -> serde_json::Value {
    json!({
        "id": m.id, "time": rfc3339(&m.time), "host": m.host, "tags": m.tags, "labels": m.labels,
        "status": m.status,
        "sources": m.sources.iter().map(|s| json!({
            "name": s.name, "type": s.kind, "status": s.status, "files": s.files,
            "bytes_read": s.bytes_read, "bytes_stored": s.bytes_stored, "duration_ms": s.duration_ms,
            "error": s.error, "problems": s.problems, "skipped": s.skipped,
            "vanished": s.vanished,
        })).collect::<Vec<_>>(),
    })
}
