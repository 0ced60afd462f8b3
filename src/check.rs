//! `coffer check`: the pre-flight. Each check gives one verdict with a
//! detail saying what was seen (or what failed and what to do); the run
//! fails when any check fails. Nothing is read from snapshots and nothing is
//! left behind: the writability probe object is deleted again.
//!
//! The source checks run each dump source's own `prepare` step (the one a
//! snapshot runs before it writes anything): a connection with the
//! configured credentials, the dump tool installed and, for PostgreSQL, not
//! older than the server. Directory and files sources are checked for
//! readability of their configured paths (the top of a directory, each file);
//! a command source for its program on PATH.
//!
//! A key, passphrase or password file that its group or others can access
//! fails the check that uses it ("key opens repository", or the source's),
//! with the `chmod` that fixes it ([`crate::secret_files`]).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, SourceConfig, SourceKind};
use crate::crypto::{self, Credential};
use crate::repo::{self, CONFIG_OBJECT, Repository};
use crate::secret_files;
use crate::source;
use crate::store::{Store, StoreError};

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// Passed, but on-call should look (left-overs of a killed restore):
    /// printed as `warn`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub checks: Vec<CheckItem>,
}

impl CheckReport {
    /// A failed check is operational (exit 1). A config that cannot be
    /// parsed never gets here: it keeps its own kind.
    pub fn outcome(&self) -> crate::Outcome {
        if self.ok {
            crate::Outcome::Ok
        } else {
            crate::Outcome::Failed(crate::ErrorKind::Operational)
        }
    }
}

/// What `check` is given: main resolves the settings, and a failure to
/// resolve one (an unopenable store, an unreadable key file) is a failed
/// check, not an early exit.
pub struct CheckInputs<'a> {
    pub config: &'a Config,
    pub store: Result<Store, String>,
    pub credential: Result<Credential, String>,
    /// `--key-file` / `COFFER_KEY_FILE`, which replaces the config's key
    /// file: its mode is checked with the other secret files.
    pub key_file: Option<&'a Path>,
    /// `--max-age`, and how it was written.
    pub max_age: Option<(Duration, String)>,
    pub now: DateTime<Utc>,
}

fn item(name: impl Into<String>, r: Result<String, String>) -> CheckItem {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    // One line per check: a tool's multi-line stderr is folded.
    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    CheckItem {
        name: name.into(),
        ok,
        detail,
        warning: false,
    }
}

/// A warning: the check passes, the detail says what to look at.
fn warning(name: impl Into<String>, detail: String) -> CheckItem {
    CheckItem {
        warning: true,
        ..item(name, Ok(detail))
    }
}

/// Runs every check, in the order they are printed.
pub async fn check(inp: CheckInputs<'_>) -> CheckReport {
    let mut checks = vec![item("config valid", config_detail(inp.config, &inp.store))];
    let store = inp.store.as_ref().ok();
    let reachable = match &inp.store {
        Ok(s) => reachable(s).await,
        Err(e) => Err(e.clone()),
    };
    let is_reachable = reachable.is_ok();
    checks.push(item("repository reachable", reachable));
    let not_checked = || Err("not checked: the repository is not reachable".to_string());
    checks.push(item(
        "repository writable",
        match store {
            Some(s) if is_reachable => writable(s).await,
            _ => not_checked(),
        },
    ));
    let opened = match (store, &inp.credential) {
        (Some(s), Ok(cred)) if is_reachable => repo::open(s, cred)
            .await
            .map(|r| {
                let d = format!("opened by {} (key slot {})", cred.describe(), r.slot_id);
                (r, d)
            })
            .map_err(|e| e.to_string()),
        (_, Err(e)) => Err(e.clone()),
        _ => Err("not checked: the repository is not reachable".to_string()),
    };
    // A key or passphrase file that other users can read fails the key
    // check, as ssh refuses such a private key (issue 10 item 9).
    let secret_files = secret_files::configured(inp.config, inp.key_file);
    let exposed = |source: Option<&str>| -> Vec<String> {
        secret_files
            .iter()
            .filter(|f| f.source.as_deref() == source)
            .filter_map(|f| f.exposed())
            .map(|e| e.to_string())
            .collect()
    };
    let repo_exposed = exposed(None);
    let repo = match opened {
        Ok((r, d)) if repo_exposed.is_empty() => {
            checks.push(item("key opens repository", Ok(d)));
            Some(r)
        }
        Ok((r, d)) => {
            checks.push(item(
                "key opens repository",
                Err(format!("{d}, but {}", repo_exposed.join("; "))),
            ));
            Some(r)
        }
        Err(e) if repo_exposed.is_empty() => {
            checks.push(item("key opens repository", Err(e)));
            None
        }
        Err(e) => {
            checks.push(item(
                "key opens repository",
                Err(format!("{e}; and {}", repo_exposed.join("; "))),
            ));
            None
        }
    };
    let sources: Vec<_> = inp
        .config
        .sources
        .iter()
        .map(|s| {
            let s = s.clone();
            let exposed = exposed(Some(&s.name));
            tokio::task::spawn_blocking(move || {
                let name = format!("source {} ({}) reachable", s.name, s.kind.as_str());
                let r = match check_source(&s) {
                    _ if !exposed.is_empty() => Err(exposed.join("; ")),
                    r => r,
                };
                item(name, r)
            })
        })
        .collect();
    for (s, h) in inp.config.sources.iter().zip(sources) {
        checks.push(h.await.unwrap_or_else(|e| {
            item(
                format!("source {} reachable", s.name),
                Err(format!("the check panicked: {e}")),
            )
        }));
    }
    for s in &inp.config.sources {
        let src = s.clone();
        let found = tokio::task::spawn_blocking(move || restore_leftovers(&src))
            .await
            .unwrap_or_default();
        if !found.is_empty() {
            checks.push(warning(
                format!("source {}: left-overs of killed restores", s.name),
                format!(
                    "{}; the next restore of this source removes those whose process no longer runs; remove the others by hand once sure nothing restores there",
                    found.join("; ")
                ),
            ));
        }
    }
    if let Some((age, text)) = &inp.max_age {
        let name = format!("newest snapshot younger than {text}");
        checks.push(item(
            name,
            match &repo {
                Some(r) => freshness(r, *age, text, inp.now).await,
                None => Err("not checked: the repository could not be opened".into()),
            },
        ));
    }
    CheckReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

fn config_detail(cfg: &Config, store: &Result<Store, String>) -> Result<String, String> {
    let url = store.as_ref().map(|s| s.url().to_string()).ok();
    match (&cfg.path, url) {
        (Some(p), _) => Ok(format!(
            "{} ({} source{})",
            p.display(),
            cfg.sources.len(),
            if cfg.sources.len() == 1 { "" } else { "s" }
        )),
        (None, Some(u)) => Ok(format!(
            "no config file; repository {u} from --repo or COFFER_REPO, no sources"
        )),
        (None, None) => Err(
            "no config file (./coffer.toml, /etc/coffer/coffer.toml) and no --config or COFFER_CONFIG"
                .into(),
        ),
    }
}

async fn reachable(store: &Store) -> Result<String, String> {
    match store.size(CONFIG_OBJECT).await {
        Ok(_) => Ok(store.url().to_string()),
        Err(StoreError::NotFound { .. }) => Err(format!(
            "{} answers, but holds no coffer repository (no `config` object); check the URL, or create one with `coffer init`",
            store.url()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes and deletes a probe object whose name reveals nothing.
async fn writable(store: &Store) -> Result<String, String> {
    let name = format!("probe-{}", crypto::random_id(8));
    let body = Bytes::from(crypto::random_id(16));
    store
        .put(&name, body, true)
        .await
        .map_err(|e| format!("{e}; the backup user needs write access to it"))?;
    store.delete(&name).await.map_err(|e| {
        format!(
            "wrote probe object {name} but could not delete it: {e}; snapshots work, prune will not"
        )
    })?;
    Ok(format!("wrote and deleted probe object {name}"))
}

async fn freshness(
    repo: &Repository,
    max_age: Duration,
    text: &str,
    now: DateTime<Utc>,
) -> Result<String, String> {
    let (all, damaged) = repo.manifests().await.map_err(|e| e.to_string())?;
    let unreadable = if damaged.is_empty() {
        String::new()
    } else {
        format!(
            " ({} manifest(s) unreadable and not counted: {})",
            damaged.len(),
            damaged
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let Some(newest) = all.last() else {
        return Err(format!("the repository holds no snapshot{unreadable}"));
    };
    let age = now.signed_duration_since(newest.time);
    let age_text = match age.to_std() {
        Ok(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
        Err(_) => "0s (taken in the future by this clock)".into(),
    };
    let msg = format!(
        "snapshot {} taken {} UTC, {age_text} ago{unreadable}",
        newest.id,
        newest.time.format("%Y-%m-%d %H:%M:%S")
    );
    match age.to_std() {
        Ok(d) if d >= max_age => Err(format!(
            "{msg}: older than {text}; take one with `coffer snapshot`"
        )),
        _ => Ok(msg),
    }
}

/// True when `prog` runs: a path to an executable file, or a name found on PATH.
pub fn program_found(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        return exec(Path::new(prog));
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| exec(&d.join(prog))))
        .unwrap_or(false)
}

/// One source's check (blocking: it runs the source's tools).
fn check_source(src: &SourceConfig) -> Result<String, String> {
    match src.kind {
        SourceKind::Directory => {
            let p = src.path.as_deref().expect("validated");
            let meta = std::fs::metadata(p)
                .map_err(|e| format!("cannot read directory {}: {e}", p.display()))?;
            if !meta.is_dir() {
                return Err(format!("{} is not a directory", p.display()));
            }
            std::fs::read_dir(p)
                .map_err(|e| format!("cannot list directory {}: {e}", p.display()))?;
            Ok(format!("{}: a readable directory", p.display()))
        }
        SourceKind::Files => {
            let paths = src.paths.as_deref().expect("validated");
            let bad: Vec<String> = paths
                .iter()
                .filter_map(|p| {
                    std::fs::File::open(p)
                        .err()
                        .map(|e| format!("{}: {e}", p.display()))
                })
                .collect();
            if bad.is_empty() {
                Ok(format!("{} file(s) readable", paths.len()))
            } else {
                Err(format!("cannot read {}", bad.join("; ")))
            }
        }
        _ => match source::database(src.kind) {
            Some(db) => db.check(src),
            None => unreachable!("directory and files sources are matched above"),
        },
    }
}

/// The restore staging directories (`.coffer-restore-*`) a killed restore
/// left where a restore of `src` stages: beside each destination, and
/// inside a directory source (a mount point is staged inside); for a
/// PostgreSQL source, the scratch databases of killed restores and drills.
/// Each with what is known of its maker. Only read, never removed.
fn restore_leftovers(src: &SourceConfig) -> Vec<String> {
    let mut dirs: Vec<&Path> = Vec::new();
    match src.kind {
        SourceKind::Directory => {
            let p = src.path.as_deref().expect("validated");
            dirs.push(p);
            dirs.extend(p.parent());
        }
        SourceKind::Files => {
            for p in src.paths.as_deref().expect("validated") {
                dirs.extend(p.parent());
            }
        }
        // Unreachable is the reachability check's finding, not this one's.
        _ => {
            return source::database(src.kind)
                .map(|db| db.leftovers(src).unwrap_or_default())
                .unwrap_or_default();
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut found = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            match crate::abandoned::staging_verdict(&n) {
                // A restore in progress, not a left-over.
                None | Some(crate::abandoned::Verdict::Running(_)) => {}
                Some(v) => found.push(format!("{}: {}", d.join(&n).display(), v.describe())),
            }
            match crate::abandoned::old_verdict(&n) {
                None | Some(crate::abandoned::Verdict::Running(_)) => {}
                Some(v) => found.push(format!(
                    "{}: the old content a killed restore of this mount point moved aside ({}); the next restore of it removes it, or move back what you need",
                    d.join(&n).display(),
                    v.describe()
                )),
            }
        }
    }
    found
}
