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
use crate::repo::{self, CONFIG_OBJECT, RepoError, Repository};
use crate::secret_files::{self, Exposed};
use crate::source::{self, SourceError};
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

/// Why a check failed: the detail of its `FAIL` line, saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(
        "no config file (./coffer.toml, /etc/coffer/coffer.toml) and no --config or COFFER_CONFIG"
    )]
    NoConfig,
    #[error(
        "{store} does not exist (no such directory); check the URL, or create a repository with `coffer init`"
    )]
    NoSuchStore { store: String },
    #[error(
        "{url} answers, but holds no coffer repository (no `config` object); check the URL, or create one with `coffer init`"
    )]
    NoRepository { url: String },
    /// The store could not be opened or answered with an error.
    #[error(transparent)]
    Store(crate::Error),
    #[error("{0}; the backup user needs write access to it")]
    NotWritable(StoreError),
    #[error(
        "wrote probe object {name} but could not delete it: {source}; snapshots work, prune will not"
    )]
    ProbeStays { name: String, source: StoreError },
    /// No key or passphrase could be read.
    #[error(transparent)]
    Credential(crate::Error),
    #[error(transparent)]
    Open(RepoError),
    /// A secret file others can access, after what the check found.
    #[error("{found}, but {}", join(.exposed))]
    ExposedAfter {
        found: String,
        exposed: Vec<Exposed>,
    },
    /// A secret file others can access, besides the check's own failure.
    #[error("{error}; and {}", join(.exposed))]
    ExposedToo {
        error: Box<Problem>,
        exposed: Vec<Exposed>,
    },
    #[error("{}", join(.0))]
    Exposed(Vec<Exposed>),
    #[error("not checked: the repository is not reachable")]
    Unreachable,
    #[error("not checked: the repository could not be opened")]
    NotOpened,
    #[error("cannot read directory {}: {source}", path.display())]
    UnreadableDirectory {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(std::path::PathBuf),
    #[error("cannot list directory {}: {source}", path.display())]
    UnlistableDirectory {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}", .0.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect::<Vec<_>>().join("; "))]
    UnreadableFiles(Vec<(std::path::PathBuf, std::io::Error)>),
    /// A database or command source's own check.
    #[error(transparent)]
    Source(SourceError),
    #[error("the check panicked: {0}")]
    Panicked(String),
    #[error("the repository holds no snapshot{}", unreadable_note(.unreadable))]
    NoSnapshot { unreadable: Vec<String> },
    #[error("{found}: older than {limit}; take one with `coffer snapshot`")]
    TooOld { found: String, limit: String },
}

fn join(exposed: &[Exposed]) -> String {
    exposed
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The manifests `freshness` could not read, as a note after its finding.
fn unreadable_note(ids: &[String]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!(
            " ({} manifest(s) unreadable and not counted: {})",
            ids.len(),
            ids.join(", ")
        )
    }
}

/// What `check` is given: main resolves the settings, and a failure to
/// resolve one (an unopenable store, an unreadable key file) is a failed
/// check, not an early exit.
pub struct CheckInputs<'a> {
    pub config: &'a Config,
    pub store: Result<Store, crate::Error>,
    pub credential: Result<Credential, crate::Error>,
    /// `--key-file` / `COFFER_KEY_FILE`, which replaces the config's key
    /// file: its mode is checked with the other secret files.
    pub key_file: Option<&'a Path>,
    /// `--max-age`, and how it was written.
    pub max_age: Option<(Duration, String)>,
    pub now: DateTime<Utc>,
}

fn item(name: impl Into<String>, r: Result<String, Problem>) -> CheckItem {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(p) => (false, p.to_string()),
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
    let store = inp.store.map_err(|e| match e {
        crate::Error::Store(StoreError::NotFound { store, .. }) => Problem::NoSuchStore { store },
        e => Problem::Store(e),
    });
    let mut checks = vec![item("config valid", config_detail(inp.config, &store))];
    let (store, reachable) = match store {
        Ok(s) => {
            let r = reachable(&s).await;
            (Some(s), r)
        }
        Err(e) => (None, Err(e)),
    };
    let store = store.filter(|_| reachable.is_ok());
    checks.push(item("repository reachable", reachable));
    checks.push(item(
        "repository writable",
        match &store {
            Some(s) => writable(s).await,
            None => Err(Problem::Unreachable),
        },
    ));
    let opened = match (&store, inp.credential) {
        (Some(s), Ok(cred)) => repo::open(s, &cred)
            .await
            .map(|r| {
                let d = format!("opened by {} (key slot {})", cred.describe(), r.slot_id);
                (r, d)
            })
            .map_err(Problem::Open),
        (_, Err(e)) => Err(Problem::Credential(e)),
        (None, Ok(_)) => Err(Problem::Unreachable),
    };
    // A key or passphrase file that other users can read fails the key
    // check, as ssh refuses such a private key (issue 10 item 9).
    let secret_files = secret_files::configured(inp.config, inp.key_file);
    let exposed = |source: Option<&str>| -> Vec<Exposed> {
        secret_files
            .iter()
            .filter(|f| f.source.as_deref() == source)
            .filter_map(|f| f.exposed())
            .collect()
    };
    let repo_exposed = exposed(None);
    let (repo, opened) = match opened {
        Ok((r, found)) if repo_exposed.is_empty() => (Some(r), Ok(found)),
        Ok((r, found)) => (
            Some(r),
            Err(Problem::ExposedAfter {
                found,
                exposed: repo_exposed,
            }),
        ),
        Err(e) if repo_exposed.is_empty() => (None, Err(e)),
        Err(e) => (
            None,
            Err(Problem::ExposedToo {
                error: Box::new(e),
                exposed: repo_exposed,
            }),
        ),
    };
    checks.push(item("key opens repository", opened));
    let sources: Vec<_> = inp
        .config
        .sources
        .iter()
        .map(|s| {
            let s = s.clone();
            let exposed = exposed(Some(&s.name));
            tokio::task::spawn_blocking(move || {
                let name = format!("source {} ({}) reachable", s.name, s.kind.as_str());
                let r = if exposed.is_empty() {
                    check_source(&s)
                } else {
                    Err(Problem::Exposed(exposed))
                };
                item(name, r)
            })
        })
        .collect();
    for (s, h) in inp.config.sources.iter().zip(sources) {
        checks.push(h.await.unwrap_or_else(|e| {
            item(
                format!("source {} reachable", s.name),
                Err(Problem::Panicked(e.to_string())),
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
                None => Err(Problem::NotOpened),
            },
        ));
    }
    CheckReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

fn config_detail(cfg: &Config, store: &Result<Store, Problem>) -> Result<String, Problem> {
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
        (None, None) => Err(Problem::NoConfig),
    }
}

async fn reachable(store: &Store) -> Result<String, Problem> {
    match store.size(CONFIG_OBJECT).await {
        Ok(_) => Ok(store.url().to_string()),
        Err(StoreError::NotFound { .. }) => Err(Problem::NoRepository {
            url: store.url().to_string(),
        }),
        Err(e) => Err(Problem::Store(e.into())),
    }
}

/// Writes and deletes a probe object whose name reveals nothing.
async fn writable(store: &Store) -> Result<String, Problem> {
    let name = format!("probe-{}", crypto::random_id(8));
    let body = Bytes::from(crypto::random_id(16));
    store
        .put(&name, body, true)
        .await
        .map_err(Problem::NotWritable)?;
    if let Err(source) = store.delete(&name).await {
        return Err(Problem::ProbeStays { name, source });
    }
    Ok(format!("wrote and deleted probe object {name}"))
}

async fn freshness(
    repo: &Repository,
    max_age: Duration,
    text: &str,
    now: DateTime<Utc>,
) -> Result<String, Problem> {
    let (all, damaged) = repo.manifests().await.map_err(Problem::Open)?;
    let damaged: Vec<String> = damaged.into_iter().map(|d| d.id).collect();
    let Some(newest) = all.last() else {
        return Err(Problem::NoSnapshot {
            unreadable: damaged,
        });
    };
    let unreadable = unreadable_note(&damaged);
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
        Ok(d) if d >= max_age => Err(Problem::TooOld {
            found: msg,
            limit: text.to_string(),
        }),
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
fn check_source(src: &SourceConfig) -> Result<String, Problem> {
    match src.kind {
        SourceKind::Directory => {
            let p = src.path.as_deref().expect("validated");
            let meta = std::fs::metadata(p).map_err(|source| Problem::UnreadableDirectory {
                path: p.to_path_buf(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(Problem::NotADirectory(p.to_path_buf()));
            }
            std::fs::read_dir(p).map_err(|source| Problem::UnlistableDirectory {
                path: p.to_path_buf(),
                source,
            })?;
            Ok(format!("{}: a readable directory", p.display()))
        }
        SourceKind::Files => {
            let paths = src.paths.as_deref().expect("validated");
            let bad: Vec<_> = paths
                .iter()
                .filter_map(|p| std::fs::File::open(p).err().map(|e| (p.clone(), e)))
                .collect();
            if bad.is_empty() {
                Ok(format!("{} file(s) readable", paths.len()))
            } else {
                Err(Problem::UnreadableFiles(bad))
            }
        }
        _ => match source::database(src.kind) {
            Some(db) => db.check(src).map_err(Problem::Source),
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
