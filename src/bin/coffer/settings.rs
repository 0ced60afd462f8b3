//! Settings resolved from flags, environment and config file; the
//! credential, store and repository they name.

use std::collections::BTreeMap;
use std::path::Path;

use coffer::Error;
use coffer::config::Config;
use coffer::crypto::{self, Credential};
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

/// Reads a passphrase file; the passphrase is wiped from memory when dropped.
pub fn read_secret_file(p: &Path, what: &str) -> Result<zeroize::Zeroizing<String>, Error> {
    let mut s = zeroize::Zeroizing::new(
        std::fs::read_to_string(p)
            .map_err(|e| Error::Usage(format!("cannot read {what} {}: {e}", p.display())))?,
    );
    // In place: a trimmed copy would leave the original behind unwiped.
    let len = s.trim_end_matches(['\n', '\r']).len();
    s.truncate(len);
    if s.is_empty() {
        return Err(Error::Usage(format!("{what} {} is empty", p.display())));
    }
    Ok(s)
}

pub fn key_file_credential(p: &Path) -> Result<Credential, Error> {
    let key = crypto::read_key_file(p).map_err(|e| match crypto::integrity_error(&e) {
        Some(c) => Error::Usage(c.to_string()),
        None => Error::Usage(format!("cannot read key file {}: {e}", p.display())),
    })?;
    Ok(Credential::KeyFile {
        path: p.display().to_string(),
        key,
    })
}

/// The credential, by precedence: --key-file / COFFER_KEY_FILE, then
/// COFFER_PASSPHRASE, then the config's key_file, passphrase_file,
/// passphrase_command.
pub fn credential(g: &Global, s: &Settings) -> Result<Credential, Error> {
    if let Some(p) = &g.key_file {
        return key_file_credential(p);
    }
    if let Ok(p) = std::env::var("COFFER_PASSPHRASE")
        && !p.is_empty()
    {
        return Ok(Credential::Passphrase(p.into()));
    }
    let r = &s.config.repository;
    if let Some(p) = &r.key_file {
        return key_file_credential(p);
    }
    if let Some(p) = &r.passphrase_file {
        return Ok(Credential::Passphrase(read_secret_file(
            p,
            "passphrase file",
        )?));
    }
    if let Some(cmd) = &r.passphrase_command {
        // Without coffer's secrets in its environment, like every child.
        let out = coffer::childenv::command(&cmd[0], &[] as &[&str])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| {
                Error::Failure(format!(
                    "passphrase_command {:?} could not run: {e}",
                    cmd[0]
                ))
            })?;
        if !out.status.success() {
            return Err(Error::Failure(format!(
                "passphrase_command {:?} failed ({})",
                cmd[0], out.status
            )));
        }
        let stdout = zeroize::Zeroizing::new(out.stdout);
        let p = String::from_utf8_lossy(&stdout)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if p.is_empty() {
            return Err(Error::Failure(format!(
                "passphrase_command {:?} printed nothing",
                cmd[0]
            )));
        }
        return Ok(Credential::Passphrase(p.into()));
    }
    Err(RepoError::NoCredential.into())
}

pub fn open_store(s: &Settings, create: bool) -> Result<Store, Error> {
    let url = s.repo_url.as_deref().ok_or_else(|| {
        Error::Usage(
            "no repository given: set [repository].url in the config, --repo or COFFER_REPO".into(),
        )
    })?;
    // `[repository.options]` belong to the configured store: `--repo` naming
    // a store of another kind (the S3 repository's copy on GCS, say) must not
    // get S3 keys it would refuse; its settings come from the environment.
    let scheme = |u: &str| u.split_once("://").map_or("file", |(s, _)| s).to_string();
    let configured = s.config.repository.url.as_deref();
    let empty = BTreeMap::new();
    let options = match configured {
        Some(c) if scheme(c) != scheme(url) => &empty,
        _ => &s.config.repository.options,
    };
    Ok(Store::open_with(
        url,
        options,
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
