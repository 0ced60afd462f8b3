//! `coffer key`: generate a key file; add, list or remove a repository's keys.

use std::path::Path;

use coffer::credential;
use coffer::crypto::Credential;
use coffer::report::{self, KeyAddedDoc, KeyGeneratedDoc, KeyListDoc, KeyRemovedDoc};
use coffer::{Error, Outcome};

use crate::cli::{Global, KeyCommand};
use crate::output::{print_doc, stdout_text};
use crate::settings::{load_settings, open_repo, warn_if_exposed};

pub fn generate(g: &Global, path: &Path) -> Result<Outcome, Error> {
    credential::generate_key_file(path)?;
    let doc = KeyGeneratedDoc { ok: true, path };
    if g.json {
        print_doc(&doc);
    } else {
        let _ = report::key_generated_text(&mut std::io::stderr().lock(), &doc);
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
            let doc = KeyAddedDoc {
                ok: true,
                added: &info,
            };
            if g.json {
                print_doc(&doc);
            } else {
                stdout_text(|out| report::key_added_text(out, &doc, &cred.describe()))?;
            }
        }
        KeyCommand::List => {
            let slots = r.key_list().await?;
            let doc = KeyListDoc {
                ok: true,
                keys: &slots,
            };
            if g.json {
                print_doc(&doc);
            } else {
                stdout_text(|out| report::key_list_text(out, &doc))?;
            }
        }
        KeyCommand::Remove { id } => {
            r.key_remove(&id).await?;
            let doc = KeyRemovedDoc {
                ok: true,
                removed: &id,
            };
            if g.json {
                print_doc(&doc);
            } else {
                stdout_text(|out| report::key_removed_text(out, &doc))?;
            }
        }
    }
    Ok(Outcome::Ok)
}
