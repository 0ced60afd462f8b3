//! `coffer verify`: check that snapshots' objects are intact.

use coffer::repo::RepoError;
use coffer::verify::{self, Selection};
use coffer::{Error, ErrorKind, Outcome};
use serde_json::json;

use crate::cli::{Global, VerifyArgs};
use crate::output::{print_json, println_out};
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: VerifyArgs) -> Result<Outcome, Error> {
    let VerifyArgs {
        snapshot,
        all,
        deep,
    } = a;
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let sel = if all {
        Selection::All
    } else {
        let spec = snapshot.unwrap_or_else(|| "latest".into());
        match r.resolve(&spec, None).await {
            Ok(m) => Selection::One(m),
            Err(RepoError::DamagedManifest { id, object, reason }) => {
                let msg = format!("snapshot {id}: manifest {object} is damaged: {reason}");
                if g.json {
                    print_json(
                        &json!({"ok": false, "deep": deep, "snapshots": [{"id": id, "ok": false, "sources": [], "error": msg}]}),
                    );
                }
                eprintln!("error: {msg}");
                return Ok(Outcome::Failed(ErrorKind::Integrity));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let rep = verify::verify(&r, sel, deep).await?;
    if g.json {
        print_json(&serde_json::to_value(&rep).expect("report serialises"));
    } else {
        for snap in &rep.snapshots {
            if snap.ok {
                println_out(&format!(
                    "snapshot {}: ok ({} sources{})",
                    snap.id,
                    snap.sources.len(),
                    if deep { ", deep" } else { "" }
                ));
                continue;
            }
            let verdict = if snap.newer {
                "NOT VERIFIED"
            } else {
                "DAMAGED"
            };
            println_out(&format!("snapshot {}: {verdict}", snap.id));
            if let Some(e) = &snap.error {
                println_out(&format!("  {e}"));
            }
            for src in snap.sources.iter().filter(|s| !s.ok) {
                for p in &src.problems {
                    println_out(&format!("  source {}: {p}", src.name));
                }
            }
        }
        if rep.snapshots.is_empty() {
            println_out("no snapshots to verify");
        }
    }
    let outcome = rep.outcome();
    match outcome {
        Outcome::Ok | Outcome::Partial => {}
        // Only manifests of a newer coffer: nothing is damaged.
        Outcome::Failed(ErrorKind::Operational) => eprintln!(
            "error: snapshot(s) written by a newer coffer were not verified; upgrade coffer to verify them"
        ),
        Outcome::Failed(_) => {
            let bad: Vec<&str> = rep
                .snapshots
                .iter()
                .filter(|s| !s.ok)
                .map(|s| s.id.as_str())
                .collect();
            eprintln!(
                "error: damaged snapshot(s): {}; restore from an older snapshot or another copy of the repository",
                bad.join(", ")
            );
        }
    }
    Ok(outcome)
}
