//! `coffer restore`: bring sources of a snapshot back.

use coffer::hooks::{self, Hooks};
use coffer::metrics::RunRecord;
use coffer::restore::{self, RestoreOptions};
use coffer::{Error, Outcome, report};

use crate::cli::{Global, RestoreArgs};
use crate::monitor::finish_hooks;
use crate::output::print_doc;
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
            crate::bar::finish();
            let _ = report::restore_header(&mut std::io::stdout().lock(), &m);
        }
        let rep = restore::restore(&r, &m, &s.config, &opts).await?;
        if g.json {
            print_doc(&report::RestoreDoc::new(&rep));
        } else {
            crate::bar::finish();
            let _ = report::restore_text(
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
                &rep,
            );
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
