//! `coffer snapshot`: take the configured sources into one snapshot.

use std::collections::BTreeMap;

use coffer::hooks::{self, Hooks};
use coffer::manifest::{Manifest, SnapshotStatus, SourceStatus};
use coffer::metrics::RunRecord;
use coffer::snapshot::{self, SnapshotError, SnapshotOptions};
use coffer::{Error, ErrorKind, Outcome};
use serde_json::json;

use crate::cli::{Global, SnapshotArgs};
use crate::monitor::finish_hooks;
use crate::output::{human_bytes, print_json, println_out, snapshot_json, status_word};
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: SnapshotArgs, rec: &mut RunRecord) -> Result<Outcome, Error> {
    let SnapshotArgs {
        only,
        tag,
        label,
        dry_run,
    } = a;
    let s = load_settings(g)?;
    let mut hooks = Hooks::new(
        &s.config.hooks,
        hooks::Operation::Snapshot,
        s.repo_url.as_deref(),
        !dry_run,
    );
    let res: Result<Outcome, Error> = async {
        let mut labels = BTreeMap::new();
        for l in &label {
            let (k, v) = snapshot::parse_label(l)?;
            labels.insert(k, v);
        }
        let selected = snapshot::select_sources(&s.config, &only)?;
        rec.plan_sources(selected.iter().map(|c| (c.name.as_str(), c.kind.as_str())));
        let r = open_repo(g, &s).await?;
        hooks.before(None).await?;
        let opts = SnapshotOptions {
            only,
            tags: tag,
            labels,
            dry_run,
            compression: s.config.repository.compression.unwrap_or(3),
            time: None,
        };
        match snapshot::snapshot(&r, &s.config, &opts).await {
            Ok(out) => {
                rec.record_manifest(&out.manifest);
                if out.committed && g.metrics_file.is_some() {
                    rec.snapshots_total = r.snapshot_ids().await.ok().map(|v| v.len() as u64);
                }
                report_snapshot(g, &out.manifest, out.committed, dry_run);
                Ok(out.manifest.status.outcome())
            }
            Err(SnapshotError::AllFailed(why)) => {
                rec.error = Some(format!("every source failed; nothing was committed:\n{why}"));
                if g.json {
                    print_json(
                        &json!({"ok": false, "status": "failed", "error": format!("every source failed; nothing was committed:\n{why}"), "exit_code": Outcome::Failed(ErrorKind::Operational).exit_code()}),
                    );
                }
                eprintln!("error: every source failed; nothing was committed:\n{why}");
                Ok(Outcome::Failed(ErrorKind::Operational))
            }
            Err(e) => Err(e.into()),
        }
    }
    .await;
    finish_hooks(&hooks, rec, res).await
}

fn report_snapshot(g: &Global, m: &Manifest, committed: bool, dry_run: bool) {
    if g.json {
        let mut v = snapshot_json(m);
        v["ok"] = json!(m.status == SnapshotStatus::Ok);
        v["dry_run"] = json!(dry_run);
        v["committed"] = json!(committed);
        print_json(&v);
    } else {
        // The id alone on stdout, for scripts; the report on stderr (with
        // -q only when something went wrong, so cron mails only then).
        if committed {
            println_out(&m.id);
        }
        if g.quiet && m.status == SnapshotStatus::Ok {
            return;
        }
        let verb = if dry_run {
            "dry run, nothing written:"
        } else {
            "saved"
        };
        eprintln!(
            "snapshot {} {} {} ({} sources, {} read, {} stored)",
            m.id,
            verb,
            status_word(m.status),
            m.sources.len(),
            human_bytes(m.sources.iter().map(|s| s.bytes_read).sum()),
            human_bytes(m.bytes_stored())
        );
        for s in &m.sources {
            // Vanished files make a source partial only when the config
            // says so, and then the snapshot is partial too.
            let vanished_partial = !s.vanished.is_empty() && m.status == SnapshotStatus::Partial;
            let status = match s.status {
                SourceStatus::Ok if s.problems.is_empty() && !vanished_partial => "ok",
                SourceStatus::Ok => "partial",
                SourceStatus::Failed => "FAILED",
            };
            eprintln!(
                "  {:<16} {:<10} {:<8} {:>7} files  {:>10} read  {:>10} stored  {:.1} s",
                s.name,
                s.kind,
                status,
                s.files,
                human_bytes(s.bytes_read),
                human_bytes(s.bytes_stored),
                s.duration_ms as f64 / 1000.0
            );
            if s.status == SourceStatus::Failed {
                eprintln!("    error: {}", s.error.as_deref().unwrap_or("failed"));
            }
            for p in &s.problems {
                eprintln!("    not stored whole: {}: {}", p.path, p.error);
            }
            for p in &s.skipped {
                eprintln!("    skipped: {}: {}", p.path, p.error);
            }
            for p in &s.vanished {
                eprintln!(
                    "    warning: vanished during the snapshot (deleted after the walk listed it), not stored: {p}"
                );
            }
        }
    }
}
