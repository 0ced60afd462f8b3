//! `coffer restore`: bring sources of a snapshot back.

use coffer::hooks::{self, Hooks};
use coffer::metrics::RunRecord;
use coffer::restore::{self, RestoreOptions};
use coffer::{Error, Outcome};
use serde_json::json;

use crate::cli::{Global, RestoreArgs};
use crate::monitor::finish_hooks;
use crate::output::{human_bytes, print_json, println_out};
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: RestoreArgs, rec: &mut RunRecord) -> Result<Outcome, Error> {
    let RestoreArgs {
        snapshot,
        only,
        target,
        include,
        to_database,
        force,
        dry_run,
        tag,
    } = a;
    let s = load_settings(g)?;
    let mut hooks = Hooks::new(
        &s.config.hooks,
        hooks::Operation::Restore,
        s.repo_url.as_deref(),
        !dry_run,
    );
    let res: Result<Outcome, Error> = async {
        let r = open_repo(g, &s).await?;
        let m = r.resolve(&snapshot, tag.as_deref()).await?;
        rec.snapshot_id = Some(m.id.clone());
        hooks.before(Some(&m.id)).await?;
        let opts = RestoreOptions {
            only,
            target,
            include,
            force,
            dry_run,
            to_database,
        };
        if !g.json {
            // First, before anything changes: whose data is coming back.
            println_out(&format!(
                "restoring snapshot {} taken on {} at {} UTC",
                m.id,
                m.host,
                m.time.format("%Y-%m-%d %H:%M:%S")
            ));
        }
        let rep = restore::restore(&r, &m, &s.config, &opts).await?;
        if !g.json {
            for w in &rep.warnings {
                eprintln!("warning: {w}");
            }
        }
        if g.json {
            let mut v = serde_json::to_value(&rep).expect("report serialises");
            v["ok"] = json!(true);
            print_json(&v);
        } else {
            for src in &rep.sources {
                if dry_run {
                    println_out(&format!(
                        "would restore source {} ({}) to {}: {} files, {} dirs, {} links, {}",
                        src.name,
                        src.kind,
                        src.destination,
                        src.files,
                        src.dirs,
                        src.links,
                        human_bytes(src.bytes)
                    ));
                    for p in &src.planned {
                        println_out(&format!("  {p}"));
                    }
                } else if coffer::read::is_dump_source(&src.kind) {
                    println_out(&format!(
                        "restored source {} ({}) from snapshot {} into {}: {} in {:.1} s",
                        src.name,
                        src.kind,
                        rep.snapshot,
                        src.destination,
                        human_bytes(src.bytes),
                        src.duration_ms as f64 / 1000.0
                    ));
                } else {
                    println_out(&format!(
                        "restored source {} ({}) from snapshot {} to {}: {} files, {} dirs, {} links, {} in {:.1} s",
                        src.name,
                        src.kind,
                        rep.snapshot,
                        src.destination,
                        src.files,
                        src.dirs,
                        src.links,
                        human_bytes(src.bytes),
                        src.duration_ms as f64 / 1000.0
                    ));
                }
            }
            for src in &rep.sources {
                for step in &src.next_steps {
                    eprintln!("next step for source {}: {step}", src.name);
                }
                for p in &src.not_stored {
                    eprintln!(
                        "warning: source {}: {p} could not be read when snapshot {} was taken; it is not in the restored copy",
                        src.name, rep.snapshot
                    );
                }
                // Stored anyway, so restored: say so, and why it may
                // not be what the application last wrote.
                for (p, why) in src
                    .possibly_inconsistent
                    .iter()
                    .zip(&src.possibly_inconsistent_why)
                {
                    eprintln!(
                        "warning: source {}: {p} {} but possibly inconsistent (snapshot {}: {why})",
                        src.name,
                        if dry_run { "would be restored" } else { "is restored" },
                        rep.snapshot
                    );
                }
            }
            for sk in &rep.skipped {
                eprintln!(
                    "warning: source {sk} failed when snapshot {} was taken; nothing restored for it",
                    rep.snapshot
                );
            }
        }
        if !rep.skipped.is_empty() {
            rec.error = Some(format!(
                "source(s) {} failed when snapshot {} was taken; nothing restored for them",
                rep.skipped.join(", "),
                rep.snapshot
            ));
        }
        Ok(rep.outcome())
    }
    .await;
    finish_hooks(&hooks, rec, res).await
}
