//! `coffer snapshots`: list the complete snapshots.

use coffer::{Error, Outcome, manifest, report};

use crate::cli::{Global, SnapshotsArgs};
use crate::output::print_json;
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: SnapshotsArgs) -> Result<Outcome, Error> {
    let SnapshotsArgs {
        tag,
        source,
        latest,
    } = a;
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let (all, damaged) = r.manifests().await.map_err(Error::Repo)?;
    let list = manifest::filter(&all, tag.as_deref(), source.as_deref(), latest);
    if g.json {
        let doc = report::snapshots_doc(&list, &damaged);
        print_json(&serde_json::to_value(doc).expect("report serialises"));
    } else {
        crate::bar::finish();
        let _ = report::snapshots_text(
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
            &list,
            &damaged,
        );
    }
    let _ = report::unreadable_manifests(&mut std::io::stderr(), &damaged);
    Ok(coffer::repo::listing_outcome(&damaged))
}
