//! `coffer verify`: check that snapshots' objects are intact.

use coffer::repo::RepoError;
use coffer::verify::{self, Selection, SnapshotCheck, VerifyReport};
use coffer::{Error, ErrorKind, Outcome, report};

use crate::cli::{Global, VerifyArgs};
use crate::output::print_json;
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
                    let rep = VerifyReport {
                        ok: false,
                        deep,
                        snapshots: vec![SnapshotCheck {
                            id,
                            ok: false,
                            sources: Vec::new(),
                            error: Some(msg.clone()),
                            newer: false,
                        }],
                    };
                    print_json(&serde_json::to_value(&rep).expect("report serialises"));
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
        crate::bar::finish();
        let _ = report::verify_text(&mut std::io::stdout().lock(), &mut std::io::stderr(), &rep);
    }
    Ok(rep.outcome())
}
