//! The configuration file (`coffer.toml`): parsing and validation.
//!
//! Every error names the key and its line. Unknown keys are errors (a typo in
//! a retention rule must not silently keep nothing). Settings are resolved in
//! one place, the binary's `settings.rs`, with the precedence CLI flag >
//! environment > file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::outcome::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error(
        "config file {path} is larger than {MAX_CONFIG_BYTES} bytes (1 MiB), far more than any coffer config: check that --config (or COFFER_CONFIG) names the config file"
    )]
    TooLarge { path: String },
    #[error(
        "config file {path}, line {line}, column {column}: byte 0x{byte:02x} is not valid UTF-8; a config file must be UTF-8 text: fix or retype that character"
    )]
    NotUtf8 {
        path: String,
        line: usize,
        column: usize,
        byte: u8,
    },
    #[error("config file {path}, line {line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    /// Neither the config, `--repo` nor `COFFER_REPO` names a repository.
    #[error("no repository given: set [repository].url in the config, --repo or COFFER_REPO")]
    NoRepository,
}

impl ConfigError {
    /// A config that cannot be read or used is the user's to fix, like a
    /// bad flag.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Usage
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repository: Option<Spanned<RepositoryConfig>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    sources: Vec<Spanned<SourceConfig>>,
    hooks: Option<Spanned<HooksConfig>>,
    retention: Option<Spanned<RetentionConfig>>,
    snapshot: Option<Spanned<SnapshotTable>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub url: Option<String>,
    pub key_file: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_command: Option<Vec<String>>,
    /// zstd level for new archives (1-19); default 3.
    pub compression: Option<i32>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// `[repository.retry]` as written, with where it starts (for errors).
    #[serde(default, rename = "retry")]
    retry_table: Option<Spanned<RetryTable>>,
    /// How requests to a cloud store are retried: the defaults with what
    /// `[repository.retry]` sets, parsed once by [`Config::parse`].
    #[serde(skip)]
    pub retry: crate::store::RetryPolicy,
}

impl RepositoryConfig {
    /// The `[repository.options]` that apply to the store at `url`. They
    /// belong to the configured store: `--repo` naming a store of another
    /// kind (the S3 repository's copy on GCS, say) must not get S3 keys it
    /// would refuse; its settings come from the environment.
    pub fn options_for(&self, url: &str) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        let scheme = |u: &str| u.split_once("://").map_or("file", |(s, _)| s).to_string();
        match self.url.as_deref() {
            Some(c) if scheme(c) != scheme(url) => &NONE,
            _ => &self.options,
        }
    }
}

/// `[repository.retry]`: durations as text ("90s", "2m").
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryTable {
    window: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
    Mysql,
    Sqlite,
    Redis,
    Directory,
    Files,
    Command,
}

impl SourceKind {
    /// The kind named `name` (as in the config and the manifest).
    pub fn parse(name: &str) -> Option<SourceKind> {
        use SourceKind::*;
        [Postgres, Mysql, Sqlite, Redis, Directory, Files, Command]
            .into_iter()
            .find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Mysql => "mysql",
            SourceKind::Sqlite => "sqlite",
            SourceKind::Redis => "redis",
            SourceKind::Directory => "directory",
            SourceKind::Files => "files",
            SourceKind::Command => "command",
        }
    }
}

/// One `[[sources]]` table. Keys that do not belong to its type are refused
/// by [`Config::load`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SourceKind,
    pub url: Option<String>,
    pub path: Option<PathBuf>,
    pub paths: Option<Vec<PathBuf>>,
    pub exclude: Option<Vec<String>>,
    pub dump: Option<Vec<String>>,
    pub restore: Option<Vec<String>>,
    pub jobs: Option<u32>,
    pub globals: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// Command sources: variables of coffer's environment passed on to the
    /// dump and restore commands even though they are secrets
    /// ([`crate::childenv`]).
    pub env: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    pub before_snapshot: Option<Vec<String>>,
    pub after_snapshot: Option<Vec<String>>,
    pub before_restore: Option<Vec<String>>,
    pub after_restore: Option<Vec<String>>,
    pub on_error: Option<Vec<String>>,
    /// Variables of coffer's environment passed on to every hook even though
    /// they are secrets ([`crate::childenv`]).
    #[serde(default)]
    pub env: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
    pub keep_tags: Option<Vec<String>>,
}

/// `[snapshot]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotTable {
    vanished: Option<String>,
}

/// What a file deleted between the walk and its read does to a snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum VanishedPolicy {
    /// A warning; the snapshot stays "ok" (exit 0).
    #[default]
    Warn,
    /// The snapshot is partial (exit 4), as for an unreadable file.
    Partial,
}

/// `[snapshot]`: how a snapshot treats what happens under it.
#[derive(Debug, Default, Clone)]
pub struct SnapshotConfig {
    pub vanished: VanishedPolicy,
}

/// A validated configuration.
#[derive(Debug, Default, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    pub repository: RepositoryConfig,
    pub labels: BTreeMap<String, String>,
    pub sources: Vec<SourceConfig>,
    pub hooks: HooksConfig,
    pub retention: RetentionConfig,
    pub snapshot: SnapshotConfig,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key assigned on the line holding `offset` (`key = value`), if any.
fn key_on_line(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('[') && !k.contains(' ')).then_some(k)
}

/// Byte offset of `key = ...` inside the table that starts at `table_at`
/// (up to the next table header), so a message can point at the key's own
/// line rather than at its table.
fn key_offset(text: &str, table_at: usize, key: &str) -> usize {
    let mut pos = table_at.min(text.len());
    let mut first = true;
    for line in text[pos..].split_inclusive('\n') {
        let t = line.trim_start();
        if !first && t.starts_with('[') {
            break;
        }
        // The first line may be the table header itself, or (for inline
        // spans) already the first key.
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return pos;
        }
        first = false;
        pos += line.len();
    }
    table_at
}

/// A name an `env` allow-list may hold: non-empty, no `=` and no NUL.
fn valid_env_name(n: &str) -> bool {
    !n.is_empty() && !n.contains(['=', '\0'])
}

/// Source names: `[a-z0-9][a-z0-9_-]*`, so they are safe in paths and URLs.
pub fn valid_source_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The largest config file read. A real one is a few kB; without a cap,
/// `--config /dev/zero` (or a log file named by mistake) would be read
/// whole into memory before failing.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Config bytes as text, or where the first byte that is not UTF-8 is
/// (line and column, both from 1; the column counts characters).
fn config_text(bytes: Vec<u8>, path: &Path) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        // Everything before `at` is valid UTF-8.
        let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ConfigError::NotUtf8 {
            path: path.display().to_string(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            byte: bytes[at],
        }
    })
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let read_err = |e| ConfigError::Read {
            path: path.display().to_string(),
            source: e,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.display().to_string(),
            });
        }
        let text = config_text(bytes, path)?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            match e.span() {
                Some(span) => ConfigError::Invalid {
                    path: p.clone(),
                    line: line_of(text, span.start),
                    message: match key_on_line(text, span.start) {
                        Some(k) if !message.contains(&format!("`{k}`")) => {
                            format!("key `{k}`: {message}")
                        }
                        _ => message,
                    },
                },
                None => ConfigError::Parse {
                    path: p.clone(),
                    message,
                },
            }
        })?;
        let invalid = |offset: usize, message: String| ConfigError::Invalid {
            path: p.clone(),
            line: line_of(text, offset),
            message,
        };
        // An error about `key` of the table starting at `table_at`.
        let invalid_key = |table_at: usize, key: &str, message: String| ConfigError::Invalid {
            path: p.clone(),
            line: line_of(text, key_offset(text, table_at, key)),
            message,
        };

        let (mut repository, repo_at) = match raw.repository {
            Some(r) => {
                let at = r.span().start;
                (r.into_inner(), at)
            }
            None => (RepositoryConfig::default(), 0),
        };
        let secrets = [
            repository.key_file.is_some(),
            repository.passphrase_file.is_some(),
            repository.passphrase_command.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            return Err(invalid(
                repo_at,
                "[repository]: set only one of key_file, passphrase_file, passphrase_command"
                    .into(),
            ));
        }
        if let Some(cmd) = &repository.passphrase_command
            && cmd.is_empty()
        {
            return Err(invalid_key(
                repo_at,
                "passphrase_command",
                "[repository].passphrase_command: must name a program".into(),
            ));
        }
        if let Some(level) = repository.compression
            && !(1..=19).contains(&level)
        {
            return Err(invalid_key(
                repo_at,
                "compression",
                format!("[repository].compression: {level} is not a zstd level from 1 to 19"),
            ));
        }
        if let Some(table) = repository.retry_table.take() {
            let retry_at = table.span().start;
            let table = table.into_inner();
            for (key, value, least, slot) in [
                (
                    "window",
                    &table.window,
                    std::time::Duration::ZERO,
                    &mut repository.retry.window,
                ),
                (
                    "timeout",
                    &table.timeout,
                    std::time::Duration::from_secs(1),
                    &mut repository.retry.timeout,
                ),
            ] {
                let Some(v) = value else { continue };
                match humantime::parse_duration(v) {
                    Ok(d) if d >= least => *slot = d,
                    Ok(_) => {
                        return Err(invalid_key(
                            retry_at,
                            key,
                            format!(
                                "[repository.retry].{key}: {v:?} is too short; at least {least:?}"
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(invalid_key(
                            retry_at,
                            key,
                            format!(
                                "[repository.retry].{key}: {v:?} is not a duration ({e}); write e.g. \"90s\" or \"5m\""
                            ),
                        ));
                    }
                }
            }
        }

        let mut names = HashSet::new();
        let mut sources = Vec::new();
        for (i, s) in raw.sources.into_iter().enumerate() {
            let at = s.span().start;
            let src = s.into_inner();
            let here = format!("sources[{i}] ({:?})", src.name);
            if !valid_source_name(&src.name) {
                return Err(invalid_key(
                    at,
                    "name",
                    format!(
                        "{here}: `name` must match [a-z0-9][a-z0-9_-]* (lowercase letters, digits, '_' and '-')"
                    ),
                ));
            }
            if !names.insert(src.name.clone()) {
                return Err(invalid_key(
                    at,
                    "name",
                    format!("{here}: duplicate source `name` {:?}", src.name),
                ));
            }
            validate_source(&src).map_err(|(key, m)| match key {
                Some(k) => invalid_key(at, k, format!("{here}: {m}")),
                None => invalid(at, format!("{here}: {m}")),
            })?;
            sources.push(src);
        }

        let retention = match raw.retention {
            Some(r) => {
                let at = r.span().start;
                let r = r.into_inner();
                if let Some(w) = &r.keep_within {
                    humantime::parse_duration(w).map_err(|e| {
                        invalid_key(
                            at,
                            "keep_within",
                            format!("[retention].keep_within: {w:?} is not a duration ({e}); write e.g. \"30d\" or \"12h\""),
                        )
                    })?;
                }
                r
            }
            None => RetentionConfig::default(),
        };
        let (hooks, hooks_at) = match raw.hooks {
            Some(h) => {
                let at = h.span().start;
                (h.into_inner(), at)
            }
            None => (HooksConfig::default(), 0),
        };
        for (key, argv) in [
            ("before_snapshot", &hooks.before_snapshot),
            ("after_snapshot", &hooks.after_snapshot),
            ("before_restore", &hooks.before_restore),
            ("after_restore", &hooks.after_restore),
            ("on_error", &hooks.on_error),
        ] {
            if let Some(a) = argv
                && a.is_empty()
            {
                return Err(invalid_key(
                    hooks_at,
                    key,
                    format!("[hooks].{key}: must name a program"),
                ));
            }
        }

        if let Some(bad) = hooks.env.iter().find(|n| !valid_env_name(n)) {
            return Err(invalid_key(
                hooks_at,
                "env",
                format!("[hooks].env: {bad:?} is not an environment variable name"),
            ));
        }

        let mut snapshot = SnapshotConfig::default();
        if let Some(t) = raw.snapshot {
            let at = t.span().start;
            snapshot.vanished = match t.into_inner().vanished.as_deref() {
                None | Some("warn") => VanishedPolicy::Warn,
                Some("partial") => VanishedPolicy::Partial,
                Some(other) => {
                    return Err(invalid_key(
                        at,
                        "vanished",
                        format!(
                            "[snapshot].vanished: {other:?} is not one of \"warn\" (a file deleted during the snapshot is a warning, exit 0) or \"partial\" (it makes the snapshot partial, exit 4)"
                        ),
                    ));
                }
            };
        }

        // The variables holding database passwords are coffer's secrets from
        // the moment a config names them: no child may inherit them (a hook,
        // a command source, another source's tool).
        crate::childenv::protect(sources.iter().filter_map(|s| s.password_env.clone()));

        Ok(Config {
            path: Some(path.to_path_buf()),
            repository,
            labels: raw.labels,
            sources,
            hooks,
            retention,
            snapshot,
        })
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Checks one source's keys against its type; an error names the key it is
/// about (`None`: the table as a whole).
fn validate_source(s: &SourceConfig) -> Result<(), (Option<&'static str>, String)> {
    use SourceKind::*;
    let present: [(&str, bool); 11] = [
        ("url", s.url.is_some()),
        ("path", s.path.is_some()),
        ("paths", s.paths.is_some()),
        ("exclude", s.exclude.is_some()),
        ("dump", s.dump.is_some()),
        ("restore", s.restore.is_some()),
        ("jobs", s.jobs.is_some()),
        ("globals", s.globals.is_some()),
        ("password_file", s.password_file.is_some()),
        ("password_env", s.password_env.is_some()),
        ("env", s.env.is_some()),
    ];
    let (required, allowed): (&[&str], &[&str]) = match s.kind {
        Directory => (&["path"], &["path", "exclude"]),
        Files => (&["paths"], &["paths"]),
        kind => {
            let keys = crate::source::database(kind)
                .expect("every other kind is a dump source")
                .keys();
            (keys.required, keys.allowed)
        }
    };
    for key in required {
        if !present.iter().any(|(k, p)| k == key && *p) {
            return Err((
                None,
                format!("missing key `{key}`, required for type {}", s.kind.as_str()),
            ));
        }
    }
    for (key, p) in present {
        if p && !allowed.contains(&key) {
            return Err((
                Some(key),
                format!("key `{key}` does not apply to type {}", s.kind.as_str()),
            ));
        }
    }
    if let Some(path) = &s.path
        && !path.is_absolute()
    {
        return Err((
            Some("path"),
            format!(
                "`path` must be absolute, got {:?}",
                path.display().to_string()
            ),
        ));
    }
    if let Some(paths) = &s.paths {
        if paths.is_empty() {
            return Err((Some("paths"), "`paths` is empty".into()));
        }
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err((
                Some("paths"),
                format!(
                    "`paths` entries must be absolute, got {:?}",
                    p.display().to_string()
                ),
            ));
        }
    }
    for (key, argv) in [("dump", &s.dump), ("restore", &s.restore)] {
        if let Some(a) = argv
            && a.is_empty()
        {
            return Err((Some(key), format!("`{key}` must name a program")));
        }
    }
    if let Some(names) = &s.env
        && let Some(bad) = names.iter().find(|n| !valid_env_name(n))
    {
        return Err((
            Some("env"),
            format!("`env` entry {bad:?} is not an environment variable name"),
        ));
    }
    if let Some(globs) = &s.exclude {
        for g in globs {
            globset::Glob::new(g)
                .map_err(|e| (Some("exclude"), format!("`exclude` pattern {g:?}: {e}")))?;
        }
    }
    if s.jobs == Some(0) {
        return Err((Some("jobs"), "`jobs` must be at least 1".into()));
    }
    if let Some(raw) = &s.url {
        let u = raw.as_str();
        // Messages quote the URL without its secrets.
        let shown = crate::source::redact_url(u);
        let scheme_ok = match s.kind {
            Postgres => u.starts_with("postgres://") || u.starts_with("postgresql://"),
            Mysql => u.starts_with("mysql://") || u.starts_with("mariadb://"),
            Redis => u.starts_with("redis://") || u.starts_with("rediss://"),
            _ => true,
        };
        if !scheme_ok {
            return Err((
                Some("url"),
                format!(
                    "`url` {shown:?} does not look like a {} URL",
                    s.kind.as_str()
                ),
            ));
        }
        if matches!(s.kind, Postgres | Mysql) && url_database(u).is_none() {
            return Err((
                Some("url"),
                format!(
                    "`url` {shown:?} names no database; a {} source backs up one database, e.g. \"{}://user@127.0.0.1/shop\"",
                    s.kind.as_str(),
                    s.kind.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// The database a `scheme://authority/database?params` URL names, if any.
fn url_database(u: &str) -> Option<&str> {
    let rest = &u[u.find("://")? + 3..];
    let path = &rest[rest.find('/')? + 1..];
    let db = path.split(['?', '#']).next().unwrap_or("");
    (!db.is_empty()).then_some(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_options_apply_only_to_a_store_of_the_configured_kind() {
        let r = RepositoryConfig {
            url: Some("s3://bucket/prefix".into()),
            options: [("aws_region".to_string(), "eu-west-1".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(r.options_for("s3://other/copy"), &r.options);
        assert!(r.options_for("gs://bucket/copy").is_empty());
        assert!(r.options_for("/srv/copy").is_empty());
        // Paths and file:// URLs are the same kind of store.
        let local = RepositoryConfig {
            url: Some("/srv/backup".into()),
            options: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(local.options_for("file:///srv/other"), &local.options);
        // No configured URL: `--repo` is the configured store.
        let none = RepositoryConfig {
            options: local.options.clone(),
            ..Default::default()
        };
        assert_eq!(none.options_for("s3://b/p"), &none.options);
    }

    #[test]
    fn database_urls_must_name_a_database() {
        assert_eq!(
            url_database("postgres://app@127.0.0.1:5432/shop"),
            Some("shop")
        );
        assert_eq!(url_database("mysql://root@h/orders?ssl=1"), Some("orders"));
        assert_eq!(url_database("postgres://app@127.0.0.1:5432/"), None);
        assert_eq!(url_database("postgres://app@127.0.0.1:5432"), None);
        let m = parse(
            "[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://app@127.0.0.1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("names no database") && m.contains("line"), "{m}");
    }

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("coffer.toml"))
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("[repository]\nurl = \"/r\"\n\n[retention]\nkeep_dialy = 3\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("line 5") && m.contains("keep_dialy"), "{m}");
    }

    #[test]
    fn duplicate_and_missing_keys() {
        let t = "[[sources]]\nname = \"a\"\ntype = \"directory\"\npath = \"/x\"\n\n[[sources]]\nname = \"a\"\ntype = \"files\"\npaths = [\"/y\"]\n";
        let m = parse(t).unwrap_err().to_string();
        assert!(
            m.contains("duplicate source `name`") && m.contains("line 7"),
            "{m}"
        );
        let m = parse("[[sources]]\nname = \"db\"\ntype = \"postgres\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("`url`") && m.contains("line 1"), "{m}");
        let m = parse("[[sources]]\nname = \"Db\"\ntype = \"directory\"\npath = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("[a-z0-9]"), "{m}");
        let m = parse("[[sources]]\nname = \"d\"\ntype = \"directory\"\npath = \"/x\"\nurl = \"postgres://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("`url` does not apply"), "{m}");
    }

    #[test]
    fn bad_values() {
        let m = parse("[retention]\nkeep_within = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("keep_within") && m.contains("line 2"), "{m}");
        let m = parse("[retention]\nkeep_last = -1\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("line 2"), "{m}");
        let m = parse("[[sources]]\nname = \"x\"\ntype = \"nosql\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("nosql") && m.contains("line 3"), "{m}");
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_located() {
        let e = config_text(
            b"[repository]\nurl = \"/r\xc3\xa9\xff\"\n".to_vec(),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2, column 11") && e.contains("0xff") && e.contains("c.toml"),
            "{e}"
        );
    }

    #[test]
    fn contract_example_parses() {
        let t = include_str!("../fixtures/config/contract-example.toml");
        let c = parse(t).unwrap();
        assert_eq!(c.sources.len(), 7);
        assert_eq!(c.retention.keep_daily, Some(7));
    }
}
