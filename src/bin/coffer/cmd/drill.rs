//! `coffer drill`: restore rehearsal of a snapshot's database sources.

use coffer::{Error, Outcome, report, restore};

use crate::cli::{DrillArgs, Global};
use crate::output::print_doc;
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
        print_doc(&rep);
    } else {
        crate::bar::finish();
        let _ = report::drill_text(&mut std::io::stdout().lock(), &rep);
    }
    let outcome = rep.outcome();
    if !rep.ok {
        let _ = report::drill_failed(&mut std::io::stderr().lock(), &rep);
    }
    Ok(outcome)
}
