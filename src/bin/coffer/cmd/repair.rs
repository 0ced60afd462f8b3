//! `coffer repair index`: rebuild a format 2 repository's index from its
//! packs.

use coffer::{Error, Outcome};

use crate::cli::{Global, RepairCommand};
use crate::output::print_doc;
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, c: RepairCommand) -> Result<Outcome, Error> {
    let RepairCommand::Index { dry_run } = c;
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let rep = coffer::repair::repair_index(&r, dry_run).await?;
    if g.json {
        print_doc(&rep);
    } else {
        let _ = coffer::report::repair_text(&mut std::io::stdout().lock(), &rep);
    }
    Ok(rep.outcome())
}
