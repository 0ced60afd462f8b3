//! `coffer drill`: restore rehearsal of a snapshot's database sources.

use coffer::{Error, Outcome, restore};

use crate::cli::{DrillArgs, Global};
use crate::output::{print_json, println_out};
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: DrillArgs) -> Result<Outcome, Error> {
    let DrillArgs {
        snapshot,
        only,
        scratch_url,
    } = a;
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let m = r
        .resolve(snapshot.as_deref().unwrap_or("latest"), None)
        .await?;
    let rep = restore::drill(&r, &m, &s.config, &only, scratch_url).await?;
    if g.json {
        print_json(&serde_json::to_value(&rep).expect("report serialises"));
    } else {
        for d in &rep.sources {
            println_out(&format!(
                "source {} ({}): {} — restore into {} took {:.1} s",
                d.name,
                d.kind,
                if d.ok { "ok" } else { "FAILED" },
                if d.scratch.is_empty() {
                    "scratch"
                } else {
                    &d.scratch
                },
                d.restore_ms as f64 / 1000.0
            ));
            for c in &d.checks {
                println_out(&format!("  {c}"));
            }
            for f in &d.failures {
                println_out(&format!("  FAILED: {f}"));
            }
            if let Some(e) = &d.error {
                println_out(&format!("  error: {e}"));
            }
        }
        for sk in &rep.skipped {
            println_out(&format!("source {sk}: no drill for this type (skipped)"));
        }
        if rep.sources.is_empty() {
            println_out(&format!(
                "snapshot {} has no database source to drill",
                rep.snapshot
            ));
        }
    }
    let outcome = rep.outcome();
    if !rep.ok {
        eprintln!(
            "error: restore drill of snapshot {} failed; see above",
            rep.snapshot
        );
    }
    Ok(outcome)
}
