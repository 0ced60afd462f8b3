//! `coffer drill`: each database source restored into a scratch copy,
//! checked and dropped.

use super::*;

/// The report of `coffer drill`.
#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub ok: bool,
    pub snapshot: String,
    pub sources: Vec<crate::source::DrillResult>,
    /// Sources with no drill (files, directories, Redis, commands).
    pub skipped: Vec<String>,
}

impl DrillReport {
    /// A check that failed on a restored copy is an integrity failure; a
    /// drill that could not run (every failed source has an error, no
    /// failed check) is operational.
    pub fn outcome(&self) -> crate::Outcome {
        use crate::Outcome;
        if self.ok {
            Outcome::Ok
        } else if self
            .sources
            .iter()
            .any(|d| !d.failures.is_empty() && d.error.is_none())
        {
            Outcome::Failed(ErrorKind::Integrity)
        } else if self.sources.iter().all(|d| d.ok || d.error.is_some()) {
            Outcome::Failed(ErrorKind::Operational)
        } else {
            Outcome::Failed(ErrorKind::Integrity)
        }
    }
}

/// Restores each database source of `m` into a scratch database, checks it
/// and drops it (see [`crate::source::drill`]).
pub async fn drill(
    repo: &Repository,
    m: &Manifest,
    config: &crate::config::Config,
    only: &[String],
    scratch_url: Option<String>,
) -> Result<DrillReport, RestoreError> {
    for o in only {
        find_source(m, o)?;
    }
    let mut report = DrillReport {
        ok: true,
        snapshot: m.id.clone(),
        sources: Vec::new(),
        skipped: Vec::new(),
    };
    for src in m
        .sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
    {
        let kind = kind_of(src)?;
        if !is_dump_source(&src.kind) || !crate::source::has_drill(kind) {
            report.skipped.push(src.name.clone());
            continue;
        }
        if src.status == SourceStatus::Failed {
            report.ok = false;
            report.sources.push(crate::source::DrillResult {
                name: src.name.clone(),
                kind: src.kind.clone(),
                ok: false,
                scratch: String::new(),
                restore_ms: 0,
                checks: Vec::new(),
                failures: vec!["the source failed when the snapshot was taken".into()],
                error: src.error.clone(),
            });
            continue;
        }
        let (repo2, m2, src2, cfg2, scratch2) = (
            repo.clone(),
            m.clone(),
            src.clone(),
            config.clone(),
            scratch_url.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            let req = crate::source::DrillRequest {
                snapshot: &m2.id,
                source: &src2.name,
                config: cfg2.source(&src2.name),
                details: &src2.details,
                scratch_url: scratch2.as_deref(),
            };
            let mut streams = ChunkStreams::open(&repo2, &m2, &src2).map_err(|e| (e, None))?;
            let res = crate::source::drill(kind, &req, &mut streams);
            // The archive's own verdict comes first: a damaged archive makes the
            // tool fail too, and "damaged data" is what the engineer must hear.
            if let Err(e) = streams.finish() {
                let tool = match &res {
                    Some(Err(t)) => Some(t.to_string()),
                    _ => None,
                };
                return Err((e, tool));
            }
            Ok(res)
        })
        .await
        .map_err(|e| RestoreError::Internal(format!("drill task failed: {e}")))?;
        let r = match result {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(e))) => crate::source::DrillResult {
                name: src.name.clone(),
                kind: src.kind.clone(),
                ok: false,
                scratch: String::new(),
                restore_ms: 0,
                checks: Vec::new(),
                failures: Vec::new(),
                error: Some(e.to_string()),
            },
            Ok(None) => {
                report.skipped.push(src.name.clone());
                continue;
            }
            Err((e, tool)) => {
                let integrity = e.is_integrity();
                let mut failures = vec![e.to_string()];
                failures.extend(tool.map(|t| format!("the restore tool said: {t}")));
                crate::source::DrillResult {
                    name: src.name.clone(),
                    kind: src.kind.clone(),
                    ok: false,
                    scratch: String::new(),
                    restore_ms: 0,
                    checks: Vec::new(),
                    failures,
                    // An integrity failure is a failed check (exit 3), not an
                    // operational error (exit 1).
                    error: (!integrity).then(|| e.to_string()),
                }
            }
        };
        report.ok &= r.ok;
        report.sources.push(r);
    }
    Ok(report)
}
