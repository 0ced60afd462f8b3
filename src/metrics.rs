//! `--metrics-file PATH`: what one run did, as Prometheus textfile-collector
//! metrics (node_exporter's `--collector.textfile.directory`).
//!
//! One file can serve every operation (`snapshot`, `prune`, `verify`, ...):
//! a run rewrites only the samples of its own operation and keeps the rest
//! of the file. `coffer_last_success_timestamp_seconds` keeps its previous
//! value when the run did not succeed (exit code other than 0, partial
//! included), so the alarm "no success for 26 hours" works. The file is
//! replaced atomically (temporary file in the same directory, fsync, rename)
//! under an exclusive lock on `.NAME.lock` beside it, so the collector never
//! reads half a file and two runs at once lose no update.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::manifest::{Manifest, SnapshotStatus, SourceStatus};
use crate::outcome::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot write metrics file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics file {path} has no directory or file name")]
    BadPath { path: PathBuf },
}

/// One source's result in a snapshot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceResult {
    pub name: String,
    pub kind: String,
    pub ok: bool,
}

/// What one run of coffer did: filled in by the command, read by the
/// metrics file, the ping body and the hooks.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The command name: `snapshot`, `restore`, `prune`, ...
    pub operation: String,
    pub outcome: Outcome,
    pub snapshot_id: Option<String>,
    pub bytes_read: Option<u64>,
    pub bytes_stored: Option<u64>,
    pub sources: Vec<SourceResult>,
    pub snapshots_total: Option<u64>,
    /// The error that ended the run, or what went wrong in a partial one.
    pub error: Option<String>,
    /// A one-line summary of a successful run.
    pub summary: Option<String>,
    /// Requests to the store that failed and were retried (None when the
    /// run opened no store).
    pub store_retries: Option<u64>,
    /// Requests made of the stores, by kind (None when no store was opened).
    pub store_requests: Option<crate::store::Requests>,
}

impl RunRecord {
    pub fn new(operation: &str) -> RunRecord {
        RunRecord {
            operation: operation.to_string(),
            outcome: Outcome::Ok,
            snapshot_id: None,
            bytes_read: None,
            bytes_stored: None,
            sources: Vec::new(),
            snapshots_total: None,
            error: None,
            summary: None,
            store_retries: None,
            store_requests: None,
        }
    }

    /// The sources a snapshot is about to take, each failed until a
    /// manifest says otherwise (a run that dies early backed none of them up).
    pub fn plan_sources<'a>(&mut self, sources: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.sources = sources
            .into_iter()
            .map(|(name, kind)| SourceResult {
                name: name.into(),
                kind: kind.into(),
                ok: false,
            })
            .collect();
    }

    /// Records what a snapshot stored.
    pub fn record_manifest(&mut self, m: &Manifest) {
        // Vanished files count against a source only where they made the
        // snapshot partial (`[snapshot] vanished = "partial"`).
        let vanished_partial = |s: &crate::manifest::SourceRecord| {
            m.status == SnapshotStatus::Partial && !s.vanished.is_empty()
        };
        self.snapshot_id = Some(m.id.clone());
        self.bytes_read = Some(m.sources.iter().map(|s| s.bytes_read).sum());
        self.bytes_stored = Some(m.bytes_stored());
        self.sources = m
            .sources
            .iter()
            .map(|s| SourceResult {
                name: s.name.clone(),
                kind: s.kind.clone(),
                ok: s.status == SourceStatus::Ok && s.problems.is_empty() && !vanished_partial(s),
            })
            .collect();
        let failed: Vec<String> = m
            .sources
            .iter()
            .filter_map(|s| match s.status {
                SourceStatus::Failed => Some(format!(
                    "source {}: {}",
                    s.name,
                    s.error.as_deref().unwrap_or("failed")
                )),
                SourceStatus::Ok if !s.problems.is_empty() => Some(format!(
                    "source {}: {} file(s) not stored whole, first {}: {}",
                    s.name,
                    s.problems.len(),
                    s.problems[0].path,
                    s.problems[0].error
                )),
                SourceStatus::Ok if vanished_partial(s) => Some(format!(
                    "source {}: {} file(s) vanished during the snapshot, first {}",
                    s.name,
                    s.vanished.len(),
                    s.vanished[0]
                )),
                SourceStatus::Ok => None,
            })
            .collect();
        if !failed.is_empty() {
            self.error = Some(format!(
                "snapshot {} is partial:\n{}",
                m.id,
                failed.join("\n")
            ));
        }
        self.summary = Some(format!(
            "snapshot {} ({} sources, {} bytes read, {} bytes stored)",
            m.id,
            m.sources.len(),
            self.bytes_read.unwrap_or(0),
            self.bytes_stored.unwrap_or(0)
        ));
    }
}

/// One sample line: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The metrics coffer writes, in file order, with their help text.
const METRICS: &[(&str, &str)] = &[
    (
        "coffer_last_run_timestamp_seconds",
        "Unix time at which the last run of this operation ended, whatever its outcome.",
    ),
    (
        "coffer_last_success_timestamp_seconds",
        "Unix time at which the last run of this operation ended with exit code 0 (0 if none yet).",
    ),
    (
        "coffer_duration_seconds",
        "How long the last run of this operation took.",
    ),
    (
        "coffer_exit_code",
        "Exit code of the last run of this operation (0 ok, 1 failure, 2 usage, 3 integrity, 4 partial).",
    ),
    (
        "coffer_bytes_read",
        "Bytes read from the sources by the last snapshot.",
    ),
    (
        "coffer_bytes_stored",
        "Bytes stored in the repository by the last snapshot (after compression and encryption).",
    ),
    (
        "coffer_source_status",
        "1 if the source was stored whole by the last snapshot that included it, else 0.",
    ),
    (
        "coffer_snapshots_total",
        "Complete snapshots in the repository after the last run that counted them.",
    ),
    (
        "coffer_store_retries",
        "Requests to the repository's store that failed with a transient error (connection, timeout, 5xx) and were retried, in the last run of this operation.",
    ),
    (
        "coffer_store_requests",
        "Requests made of the store in the last run of this operation, by kind (put, get, head, list, delete, copy); a listing counts once, a multipart upload its creation, parts and completion.",
    ),
];

/// Parses the samples of a textfile written by coffer (comments and
/// unknown metrics are skipped; a damaged line is ignored rather than
/// failing the backup).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &r[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => val.push('\n'),
                                other => val.push(other),
                            },
                            other => val.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), val);
                }
                c => key.push(c),
            }
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders samples grouped by metric, with HELP and TYPE lines.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (name, help) in METRICS {
        let mut these: Vec<&Sample> = samples.iter().filter(|s| s.name == *name).collect();
        if these.is_empty() {
            continue;
        }
        these.sort_by(|a, b| a.labels.cmp(&b.labels));
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for s in these {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = if labels.is_empty() {
                writeln!(out, "{name} {}", s.value)
            } else {
                writeln!(out, "{name}{{{}}} {}", labels.join(","), s.value)
            };
        }
    }
    out
}

fn op_sample(name: &str, op: &str, value: f64) -> Sample {
    Sample {
        name: name.into(),
        labels: BTreeMap::from([("operation".to_string(), op.to_string())]),
        value,
    }
}

/// The samples after this run: the previous ones (`old`) with this
/// operation's replaced.
pub fn merge(
    old: &[Sample],
    rec: &RunRecord,
    ended: SystemTime,
    duration: Duration,
) -> Vec<Sample> {
    let op = rec.operation.as_str();
    let now = ended
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0);
    let known = |s: &Sample| METRICS.iter().any(|(n, _)| *n == s.name);
    let is_this_op = |s: &Sample| s.labels.get("operation").map(String::as_str) == Some(op);
    let previous_success = old
        .iter()
        .find(|s| s.name == "coffer_last_success_timestamp_seconds" && is_this_op(s))
        .map(|s| s.value);

    let mut new: Vec<Sample> = old
        .iter()
        .filter(|s| known(s) && !is_this_op(s))
        .filter(|s| {
            // A source this run reports on gets its new status.
            s.name != "coffer_source_status"
                || !rec
                    .sources
                    .iter()
                    .any(|r| s.labels.get("source") == Some(&r.name))
        })
        .filter(|s| s.name != "coffer_snapshots_total" || rec.snapshots_total.is_none())
        .cloned()
        .collect();
    new.push(op_sample("coffer_last_run_timestamp_seconds", op, now));
    let success = if rec.outcome.is_ok() {
        now
    } else {
        previous_success.unwrap_or(0.0)
    };
    new.push(op_sample(
        "coffer_last_success_timestamp_seconds",
        op,
        success,
    ));
    new.push(op_sample(
        "coffer_duration_seconds",
        op,
        (duration.as_secs_f64() * 1000.0).round() / 1000.0,
    ));
    new.push(op_sample(
        "coffer_exit_code",
        op,
        f64::from(rec.outcome.exit_code()),
    ));
    if let Some(b) = rec.bytes_read {
        new.push(op_sample("coffer_bytes_read", op, b as f64));
    }
    if let Some(b) = rec.bytes_stored {
        new.push(op_sample("coffer_bytes_stored", op, b as f64));
    }
    if let Some(n) = rec.store_retries {
        new.push(op_sample("coffer_store_retries", op, n as f64));
    }
    if let Some(r) = rec.store_requests {
        for (kind, n) in [
            ("put", r.put),
            ("get", r.get),
            ("head", r.head),
            ("list", r.list),
            ("delete", r.delete),
            ("copy", r.copy),
        ] {
            let mut s = op_sample("coffer_store_requests", op, n as f64);
            s.labels.insert("kind".to_string(), kind.to_string());
            new.push(s);
        }
    }
    for s in &rec.sources {
        new.push(Sample {
            name: "coffer_source_status".into(),
            labels: BTreeMap::from([
                ("source".to_string(), s.name.clone()),
                ("type".to_string(), s.kind.clone()),
            ]),
            value: if s.ok { 1.0 } else { 0.0 },
        });
    }
    if let Some(n) = rec.snapshots_total {
        new.push(Sample {
            name: "coffer_snapshots_total".into(),
            labels: BTreeMap::new(),
            value: n as f64,
        });
    }
    new
}

/// Merges this run into the metrics file at `path` and replaces it
/// atomically (mode 0644: node_exporter usually runs as another user).
pub fn write(
    path: &Path,
    rec: &RunRecord,
    ended: SystemTime,
    duration: Duration,
) -> Result<(), MetricsError> {
    let err = |source| MetricsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else {
        return Err(MetricsError::BadPath {
            path: path.to_path_buf(),
        });
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let lock_path = dir.join(format!(".{}.lock", name.to_string_lossy()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(err)?;
    lock.lock().map_err(err)?;
    let old = match std::fs::read_to_string(path) {
        Ok(t) => parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(err(e)),
    };
    let text = render(&merge(&old, rec, ended, duration));
    // The collector reads only *.prom, so the dot-named temporary file is
    // never picked up half written.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: &str, outcome: Outcome) -> RunRecord {
        let mut r = RunRecord::new(op);
        r.outcome = outcome;
        r
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn render_then_parse_round_trips_escaped_labels() {
        let samples = vec![Sample {
            name: "coffer_source_status".into(),
            labels: BTreeMap::from([
                ("source".to_string(), "we\"ird\\na,me\n".to_string()),
                ("type".to_string(), "directory".to_string()),
            ]),
            value: 1.0,
        }];
        let text = render(&samples);
        assert!(text.starts_with("# HELP coffer_source_status "));
        assert!(text.contains("# TYPE coffer_source_status gauge\n"));
        assert_eq!(parse(&text), samples);
    }

    #[test]
    fn failure_keeps_last_success_and_other_operations() {
        let t1 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t2 = UNIX_EPOCH + Duration::from_secs(2_000_000);
        let mut ok = rec("snapshot", Outcome::Ok);
        ok.snapshots_total = Some(5);
        let first = merge(&[], &ok, t1, Duration::from_millis(1500));
        let first = merge(
            &first,
            &rec("prune", Outcome::Ok),
            t1,
            Duration::from_secs(1),
        );
        let second = merge(
            &first,
            &rec("snapshot", Outcome::Failed(crate::ErrorKind::Operational)),
            t2,
            Duration::from_secs(2),
        );
        let snap = [("operation", "snapshot")];
        assert_eq!(
            value(&second, "coffer_last_success_timestamp_seconds", &snap),
            Some(1_000_000.0)
        );
        assert_eq!(
            value(&second, "coffer_last_run_timestamp_seconds", &snap),
            Some(2_000_000.0)
        );
        assert_eq!(value(&second, "coffer_exit_code", &snap), Some(1.0));
        assert_eq!(
            value(
                &second,
                "coffer_last_success_timestamp_seconds",
                &[("operation", "prune")]
            ),
            Some(1_000_000.0)
        );
        assert_eq!(value(&second, "coffer_snapshots_total", &[]), Some(5.0));
    }

    #[test]
    fn never_succeeded_is_zero() {
        let s = merge(
            &[],
            &rec("verify", Outcome::Failed(crate::ErrorKind::Integrity)),
            SystemTime::now(),
            Duration::ZERO,
        );
        assert_eq!(
            value(
                &s,
                "coffer_last_success_timestamp_seconds",
                &[("operation", "verify")]
            ),
            Some(0.0)
        );
    }

    #[test]
    fn garbage_lines_are_ignored() {
        let s = parse(
            "# x\nnot a metric\ncoffer_exit_code{operation=\"snapshot\"} nan?\ncoffer_exit_code{operation=\"prune\"} 0\nbroken{a=\"b\n",
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels["operation"], "prune");
    }
}
