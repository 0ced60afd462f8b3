//! `coffer init`: create a repository for the configured key.

use coffer::report::{self, InitDoc};
use coffer::{Error, Outcome, repo};

use crate::cli::{Global, InitArgs};
use crate::output::{print_doc, stdout_text};
use crate::settings::{credential, load_settings, open_store};

pub async fn run(g: &Global, a: &InitArgs) -> Result<Outcome, Error> {
    let s = load_settings(g)?;
    let cred = credential(g, &s)?;
    let store = open_store(&s, true)?;
    let r = repo::init(&store, &cred, a.format).await?;
    let doc = InitDoc {
        ok: true,
        url: store.url(),
        id: &r.id,
        key_slot: &r.slot_id,
    };
    if g.json {
        print_doc(&doc);
    } else {
        stdout_text(|out| report::init_text(out, &doc, &cred.describe()))?;
    }
    Ok(Outcome::Ok)
}
