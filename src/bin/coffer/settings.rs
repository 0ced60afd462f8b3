//! Settings resolved from flags, environment and config file; the
//! credential, store and repository they name.

use std::path::Path;

use coffer::Error;
use coffer::config::Config;
use coffer::crypto::Credential;
use coffer::repo::{self, RepoError, Repository};
use coffer::store::Store;

use crate::cli::Global;

/// Settings resolved from flags, environment and config file.
pub struct Settings {
    pub config: Config,
    pub repo_url: Option<String>,
}

pub fn load_settings(g: &Global) -> Result<Settings, Error> {
    let config = match &g.config {
        Some(p) => Config::load(p)?,
        None => {
            let local = Path::new("coffer.toml");
            let system = Path::new("/etc/coffer/coffer.toml");
            if local.exists() {
                Config::load(local)?
            } else if system.exists() {
                Config::load(system)?
            } else {
                Config::default()
            }
        }
    };
    let repo_url = g.repo.clone().or_else(|| config.repository.url.clone());
    // Every command that reads the config says when a secret file is open
    // to other users, as ssh does; `check` fails on it as well.
    for f in coffer::secret_files::configured(&config, g.key_file.as_deref()) {
        warn_if_exposed(&f.what, &f.path);
    }
    Ok(Settings { config, repo_url })
}

pub fn warn_if_exposed(what: &str, path: &Path) {
    if let Some(e) = coffer::secret_files::exposed(what, path) {
        eprintln!("warning: {e}");
    }
}

/// The credential (precedence in [`coffer::credential::resolve`]).
pub fn credential(g: &Global, s: &Settings) -> Result<Credential, Error> {
    let env = std::env::var("COFFER_PASSPHRASE").ok();
    coffer::credential::resolve(g.key_file.as_deref(), env, &s.config.repository)
}

pub fn open_store(s: &Settings, create: bool) -> Result<Store, Error> {
    let url = s
        .repo_url
        .as_deref()
        .ok_or(coffer::config::ConfigError::NoRepository)?;
    Ok(Store::open_with(
        url,
        s.config.repository.options_for(url),
        create,
        s.config.repository.retry,
    )?)
}

pub async fn open_repo(g: &Global, s: &Settings) -> Result<Repository, Error> {
    let store = open_store(s, false).map_err(|e| match e {
        Error::Store(coffer::store::StoreError::NotFound { store, .. }) => {
            Error::Repo(RepoError::NotARepository(store))
        }
        other => other,
    })?;
    let cred = credential(g, s)?;
    Ok(repo::open(&store, &cred).await?)
}
