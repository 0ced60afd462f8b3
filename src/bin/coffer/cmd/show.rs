//! `coffer show`: one snapshot's manifest, optionally with every file.

use coffer::manifest::Manifest;
use coffer::repo::Repository;
use coffer::{Error, Outcome, report, restore};

use crate::cli::{Global, ShowArgs};
use crate::output::print_doc;
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: ShowArgs) -> Result<Outcome, Error> {
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let m = r.resolve(&a.snapshot, a.tag.as_deref()).await?;
    show(g, &r, &m, a.files).await
}

async fn show(g: &Global, r: &Repository, m: &Manifest, files: bool) -> Result<Outcome, Error> {
    let mut listings = Vec::new();
    if files {
        for s in &m.sources {
            listings.push(restore::list_files(r, m, s).await?);
        }
    }
    let listings = files.then_some(listings.as_slice());
    if g.json {
        print_doc(&report::ShowDoc::new(m, listings));
    } else {
        let _ = report::show_text(&mut std::io::stdout().lock(), m, listings);
    }
    Ok(Outcome::Ok)
}
