//! `coffer init`: create a repository for the configured key.

use coffer::{Error, Outcome, repo};
use serde_json::json;

use crate::cli::Global;
use crate::output::{print_json, println_out};
use crate::settings::{credential, load_settings, open_store};

pub async fn run(g: &Global) -> Result<Outcome, Error> {
    let s = load_settings(g)?;
    let cred = credential(g, &s)?;
    let store = open_store(&s, true)?;
    let r = repo::init(&store, &cred).await?;
    if g.json {
        print_json(&json!({"ok": true, "url": store.url(), "id": r.id, "key_slot": r.slot_id}));
    } else {
        println_out(&format!(
            "initialised repository {} at {} (opened by {})",
            r.id,
            store.url(),
            cred.describe()
        ));
    }
    Ok(Outcome::Ok)
}
