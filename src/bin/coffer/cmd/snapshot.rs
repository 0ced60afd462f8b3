//! `coffer snapshot`: take the configured sources into one snapshot.

use std::collections::BTreeMap;

use coffer::hooks::{self, Hooks};
use coffer::manifest::Manifest;
use coffer::metrics::RunRecord;
use coffer::snapshot::{self, SnapshotError, SnapshotOptions};
use coffer::{Error, ErrorKind, Outcome, report};

use crate::cli::{Global, SnapshotArgs};
use crate::monitor::finish_hooks;
use crate::output::print_doc;
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: SnapshotArgs, rec: &mut RunRecord) -> Result<Outcome, Error> {
    let SnapshotArgs {
        only,
        tag,
        label,
        dry_run,
        reread,
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
            reread,
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
                rec.error = Some(format!(
                    "every source failed; nothing was committed:\n{why}"
                ));
                if g.json {
                    let error = format!("every source failed; nothing was committed:\n{why}");
                    print_doc(&report::SnapshotFailed::new(&error));
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
        print_doc(&report::SnapshotDoc::new(m, committed, dry_run));
    } else {
        if committed {
            crate::bar::finish();
        }
        let _ = report::snapshot_text(
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
            m,
            committed,
            dry_run,
            g.quiet,
        );
    }
}
