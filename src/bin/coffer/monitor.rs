//! `--metrics-file`, `--ping` and the `after_*`/`on_error` hooks of one run.

use std::path::PathBuf;

use coffer::hooks::{self, Hooks};
use coffer::metrics::RunRecord;
use coffer::repo;
use coffer::{Error, Outcome};

use crate::cli::Global;

/// `--metrics-file` and `--ping` of one run. Neither applies to dry runs
/// (they back nothing up) nor to `completions` and `man`. Their failures are
/// warnings: monitoring must never fail a backup.
pub struct Monitor {
    metrics_file: Option<PathBuf>,
    ping: Option<url::Url>,
    op: String,
    started: std::time::Instant,
}

impl Monitor {
    pub fn new(g: &Global, ping: Option<url::Url>, op: &str, dry_run: bool) -> Monitor {
        let on = !dry_run && !matches!(op, "completions" | "man");
        Monitor {
            metrics_file: g.metrics_file.clone().filter(|_| on),
            ping: ping.filter(|_| on),
            op: op.to_string(),
            started: std::time::Instant::now(),
        }
    }

    pub async fn start(&self) {
        if let Some(u) = &self.ping {
            let body = format!("coffer {} starting on {}", self.op, repo::host_name());
            if let Err(e) = coffer::ping::send(u, coffer::ping::Kind::Start, body).await {
                eprintln!("warning: {e}");
            }
        }
    }

    pub async fn finish(&self, rec: &RunRecord) {
        if let Some(p) = &self.metrics_file
            && let Err(e) =
                coffer::metrics::write(p, rec, std::time::SystemTime::now(), self.started.elapsed())
        {
            eprintln!("warning: {e}; monitoring will see this run as missing");
        }
        if let Some(u) = &self.ping {
            let kind = if rec.outcome.is_ok() {
                coffer::ping::Kind::Success
            } else {
                coffer::ping::Kind::Fail
            };
            let body = coffer::ping::body(rec, &repo::host_name());
            if let Err(e) = coffer::ping::send(u, kind, body).await {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// Runs the `after_*` and `on_error` hooks on an operation's result.
pub async fn finish_hooks(
    hooks: &Hooks,
    rec: &mut RunRecord,
    res: Result<Outcome, Error>,
) -> Result<Outcome, Error> {
    let (outcome, error) = match &res {
        Ok(o) => (*o, rec.error.clone()),
        Err(e) => (Outcome::Failed(e.kind()), Some(e.to_string())),
    };
    let ended = hooks::Ended {
        snapshot_id: rec.snapshot_id.clone(),
        outcome,
        error,
    };
    let (after, problems) = hooks.finish(&ended).await;
    for p in &problems {
        eprintln!("error: {p}");
    }
    match res {
        Ok(_) if after != outcome => {
            rec.error = problems.first().map(|p| p.to_string());
            Ok(after)
        }
        other => other,
    }
}
