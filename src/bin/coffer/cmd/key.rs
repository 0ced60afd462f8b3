//! `coffer key`: generate a key file; add, list or remove a repository's keys.

use std::path::Path;

use coffer::credential;
use coffer::crypto::Credential;
use coffer::{Error, Outcome};
use serde_json::json;

use crate::cli::{Global, KeyCommand};
use crate::output::{print_json, println_out};
use crate::settings::{load_settings, open_repo, warn_if_exposed};

pub fn generate(g: &Global, path: &Path) -> Result<Outcome, Error> {
    credential::generate_key_file(path)?;
    if g.json {
        print_json(&json!({"ok": true, "path": path}));
    } else {
        eprintln!(
            "wrote a new key to {} (mode 0600). Keep a copy somewhere safe: without it, repositories it opens cannot be read.",
            path.display()
        );
    }
    Ok(Outcome::Ok)
}

pub async fn run(g: &Global, cmd: KeyCommand) -> Result<Outcome, Error> {
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    match cmd {
        KeyCommand::Generate { .. } => unreachable!("handled without a repository"),
        KeyCommand::Add {
            new_key_file,
            new_passphrase_file,
        } => {
            let cred = if let Some(p) = new_key_file {
                warn_if_exposed("key file", &p);
                credential::from_key_file(&p)?
            } else if let Some(p) = new_passphrase_file {
                warn_if_exposed("passphrase file", &p);
                Credential::Passphrase(credential::read_secret_file(&p, "passphrase file")?)
            } else if let Ok(p) = std::env::var("COFFER_NEW_PASSPHRASE")
                && !p.is_empty()
            {
                Credential::Passphrase(p.into())
            } else {
                return Err(credential::CredentialError::NothingToAdd.into());
            };
            let info = r.key_add(&cred).await?;
            if g.json {
                print_json(&json!({"ok": true, "added": info}));
            } else {
                println_out(&format!("added key slot {} ({})", info.id, cred.describe()));
            }
        }
        KeyCommand::List => {
            let slots = r.key_list().await?;
            if g.json {
                print_json(&json!({"ok": true, "keys": slots}));
            } else {
                println_out(&format!(
                    "{:<18}  {:<10}  {:<20}  {}",
                    "ID", "TYPE", "CREATED (UTC)", "HOST"
                ));
                for s in slots {
                    println_out(&format!(
                        "{}{:<17}  {:<10}  {:<20}  {}",
                        if s.current { "*" } else { " " },
                        s.id,
                        s.kind,
                        s.created.replace('T', " ").trim_end_matches('Z'),
                        s.host
                    ));
                }
            }
        }
        KeyCommand::Remove { id } => {
            r.key_remove(&id).await?;
            if g.json {
                print_json(&json!({"ok": true, "removed": id}));
            } else {
                println_out(&format!("removed key slot {id}"));
            }
        }
    }
    Ok(Outcome::Ok)
}
