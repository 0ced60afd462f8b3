//! Sources: what a snapshot reads and a restore writes back.
//!
//! `fs` serves `directory` and `files` sources (a tree of entries). Every
//! other type is a *dump source*: it produces one or more byte streams (a
//! `pg_dump` archive, the output of a command, ...), which `stream` stores as
//! fixed-size chunk entries of the tar archive, and reads back the same way
//! for `restore`, `dump` and `drill`. Each type lives in its own module and
//! implements [`Dumper`] (snapshot), [`restore`] and [`drill`].

pub mod command;
pub mod conn;
pub mod file_target;
pub mod fs;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sqlite;
pub mod stream;

use std::io::{self, Read};
use std::time::Duration;

use serde::Serialize;

use crate::config::{SourceConfig, SourceKind};
use crate::outcome::ErrorKind;

pub type Details = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A tool coffer runs is not on PATH. `doing` says what for.
    #[error("{doing}: {tool} is not installed (not found on PATH){}", install(.package))]
    NotInstalled {
        doing: String,
        tool: String,
        /// The package to install, as the user would search for it.
        package: Option<&'static str>,
    },
    /// A tool is there but could not be started.
    #[error("{doing}: cannot start {tool}: {source}")]
    CannotStart {
        doing: String,
        tool: String,
        source: io::Error,
    },
    /// A command source's `dump` program is not there.
    #[error(
        "dump program {0:?} not found (not an executable path, nor on PATH); install it or fix `dump`"
    )]
    NoDumpProgram(String),
    /// The dump tool is older than the server (`coffer check`).
    #[error(
        "{server}: {why}; install the client tools of the server's version and put them first on PATH"
    )]
    ToolTooOld { server: String, why: String },
    /// The source's table lacks a key this kind needs.
    #[error("source {source_name} has no `{key}` ({example})")]
    MissingKey {
        source_name: String,
        key: &'static str,
        example: &'static str,
    },
    /// A URL (`url`, `--to-database`, `--scratch-url`) that is not one.
    #[error("{what} {url:?} is not a {kind} URL ({why}); write {example}")]
    BadUrl {
        what: String,
        /// Without its password.
        url: String,
        kind: &'static str,
        why: String,
        example: &'static str,
    },
    /// `--to-database` or `--scratch-url` names no usable path.
    #[error("{flag} {path:?} is not a usable path: {source}")]
    BadPath {
        flag: &'static str,
        path: String,
        source: io::Error,
    },
    /// The restore would replace data and `--force` was not given: the
    /// message says what would be replaced and how to go on.
    #[error("{0}")]
    NeedsForce(String),
    /// The source is gone from the config, and the restore or drill needs
    /// what only the config says: the message says which flag gives it.
    #[error("{0}")]
    NoLongerConfigured(String),
    /// The database, its tool, or the command failed; the message names the
    /// tool and carries the end of its stderr, what coffer was doing and
    /// what state it left.
    #[error("{0}")]
    Failed(String),
    /// What the user asked cannot be done as asked (exit 2): a refusal of
    /// one kind of source (a `--to-database` it cannot take, a file a
    /// running server uses), in that kind's words.
    #[error("{0}")]
    Usage(String),
    /// A check of restored data failed (drill): exit 3.
    #[error("{0}")]
    Check(String),
    /// Writing the archive or reading it back failed (the upload, the disk).
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn install(package: &Option<&'static str>) -> String {
    package
        .map(|p| format!("; install {p}"))
        .unwrap_or_default()
}

impl SourceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Usage(_)
            | SourceError::MissingKey { .. }
            | SourceError::BadUrl { .. }
            | SourceError::BadPath { .. }
            | SourceError::NeedsForce(_)
            | SourceError::NoLongerConfigured(_) => ErrorKind::Usage,
            SourceError::Check(_) => ErrorKind::Integrity,
            SourceError::NotInstalled { .. }
            | SourceError::CannotStart { .. }
            | SourceError::NoDumpProgram(_)
            | SourceError::ToolTooOld { .. }
            | SourceError::Failed(_)
            | SourceError::Io(_) => ErrorKind::Operational,
        }
    }

    /// A tool that could not be spawned: not installed, or another reason.
    pub fn spawn(doing: &str, tool: &str, package: Option<&'static str>, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            SourceError::NotInstalled {
                doing: doing.to_string(),
                tool: tool.to_string(),
                package,
            }
        } else {
            SourceError::CannotStart {
                doing: doing.to_string(),
                tool: tool.to_string(),
                source: e,
            }
        }
    }
}

/// One byte stream of a dump. `reader` is read to its end; then `done` says
/// whether the producer succeeded (a tool's exit status): a stream whose
/// `done` fails is never committed.
pub struct DumpStream {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
    pub done: Box<dyn FnOnce() -> Result<(), SourceError> + Send>,
}

/// Takes a dump source's data, stream by stream.
pub trait Dumper: Send {
    /// Checks that can stop the snapshot before anything is written
    /// (reachability, tool versions). Facts for the manifest go in `details`.
    fn prepare(&mut self, details: &mut Details) -> Result<(), SourceError>;
    /// The next stream, or `None` when all are done.
    fn next_stream(&mut self) -> Result<Option<DumpStream>, SourceError>;
    /// After every stream: more facts for the manifest (row counts, ...).
    fn finish(&mut self, details: &mut Details) -> Result<(), SourceError>;
}

/// A kind of source whose data is a dump: a database, or any command. One
/// file per kind implements this, and [`DATABASES`] lists them: adding a
/// kind is that file, a [`SourceKind`] variant and one line there.
/// Directory and files sources are not dumps (see [`fs`]).
pub trait DatabaseSource: Sync {
    fn kind(&self) -> SourceKind;
    /// The keys of its `[[sources]]` table besides `name` and `type`.
    fn keys(&self) -> Keys;
    /// Takes the source's data, stream by stream.
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError>;
    /// Where a restore would go, without doing it (`--dry-run`), and the
    /// refusals that need no data (a missing `--force`).
    fn destination(&self, req: &DbRestore) -> Result<String, SourceError>;
    /// Puts a stored dump back: into the configured database, or with
    /// `--to-database` into another.
    fn restore(
        &self,
        req: &DbRestore,
        streams: &mut dyn Streams,
    ) -> Result<DbRestored, SourceError>;
    /// Whether `coffer drill` can rehearse a restore of this kind.
    fn has_drill(&self) -> bool {
        false
    }
    /// Restores into a scratch copy, checks it and drops it. Called only
    /// when [`DatabaseSource::has_drill`].
    fn drill(
        &self,
        req: &DrillRequest,
        _streams: &mut dyn Streams,
    ) -> Result<DrillResult, SourceError> {
        Err(SourceError::Usage(format!(
            "source {}: {} sources have no restore drill",
            req.source,
            self.kind().as_str()
        )))
    }
    /// `coffer check`: the source is reachable and its tools fit. `Ok`:
    /// what was found; `Err`: what is wrong and what to do. Blocking (it
    /// runs the source's tools). By default: the dumper's `prepare`, then
    /// [`DatabaseSource::describe`] of what it found.
    fn check(&self, src: &SourceConfig) -> Result<String, SourceError> {
        let details = prepared(self, src)?;
        Ok(self.describe(&details))
    }
    /// The check line from the facts `prepare` found.
    fn describe(&self, details: &Details) -> String;
    /// For `coffer check`: scratch databases killed restores of `src` left.
    fn leftovers(&self, _src: &SourceConfig) -> Result<Vec<String>, SourceError> {
        Ok(Vec::new())
    }
}

/// The keys a kind's `[[sources]]` table must have and may have.
#[derive(Clone, Copy, Debug)]
pub struct Keys {
    pub required: &'static [&'static str],
    pub allowed: &'static [&'static str],
}

/// Every kind of dump source.
pub static DATABASES: &[&dyn DatabaseSource] = &[
    &postgres::Postgres,
    &mysql::Mysql,
    &sqlite::Sqlite,
    &redis::Redis,
    &command::Command,
];

/// The dump source kind `kind`, or `None` for directory and files sources.
pub fn database(kind: SourceKind) -> Option<&'static dyn DatabaseSource> {
    DATABASES.iter().copied().find(|d| d.kind() == kind)
}

/// What the dumper's `prepare` finds about `src` (server and tool
/// versions): the common part of a kind's pre-flight check.
pub fn prepared<D: DatabaseSource + ?Sized>(
    db: &D,
    src: &SourceConfig,
) -> Result<Details, SourceError> {
    let mut details = Details::new();
    db.dumper(src)?.prepare(&mut details)?;
    Ok(details)
}

/// A recorded fact as text for messages (`?` when absent).
pub fn detail_str(d: &Details, key: &str) -> String {
    match d.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".into(),
    }
}

fn not_a_dump_source(kind: SourceKind) -> SourceError {
    SourceError::Usage(format!("a {} source is not a dump source", kind.as_str()))
}

/// The dumper for a configured dump source.
pub fn dumper(src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
    database(src.kind)
        .ok_or_else(|| {
            SourceError::Usage(format!(
                "source {} is a {} source, not a dump source",
                src.name,
                src.kind.as_str()
            ))
        })?
        .dumper(src)
}

/// The streams of a stored dump source, in the order they were dumped. Each
/// reader yields only authenticated bytes; a damaged archive surfaces as an
/// I/O error whose cause [`crate::restore`] reports.
pub trait Streams {
    fn next_stream(&mut self) -> Result<Option<NamedStream<'_>>, SourceError>;
}

/// A stream's name and a reader of its bytes.
pub type NamedStream<'a> = (String, Box<dyn Read + 'a>);

/// What a database restore was asked to do.
pub struct DbRestore<'a> {
    pub snapshot: &'a str,
    pub source: &'a str,
    /// The source as configured now (its `url`/`path`), if it still is.
    pub config: Option<&'a SourceConfig>,
    /// Facts recorded at snapshot time.
    pub details: &'a Details,
    /// `--to-database URL` (a path for SQLite): restore there instead.
    pub to_database: Option<&'a str>,
    pub force: bool,
}

/// What a database restore did.
#[derive(Debug, Serialize)]
pub struct DbRestored {
    /// Where it went, as the user would name it (a URL without password, a path).
    pub destination: String,
    pub bytes: u64,
    /// Anything the user must still do (Redis: restart the server).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next_steps: Vec<String>,
}

/// Where a database restore would go, without doing it (`--dry-run`), and
/// the refusals that need no data (a missing `--force`).
pub fn restore_destination(kind: SourceKind, req: &DbRestore) -> Result<String, SourceError> {
    database(kind)
        .ok_or_else(|| not_a_dump_source(kind))?
        .destination(req)
}

/// Puts a stored dump back.
pub fn restore(
    kind: SourceKind,
    req: &DbRestore,
    streams: &mut dyn Streams,
) -> Result<DbRestored, SourceError> {
    database(kind)
        .ok_or_else(|| not_a_dump_source(kind))?
        .restore(req, streams)
}

/// The result of one source's restore drill.
#[derive(Debug, Serialize)]
pub struct DrillResult {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ok: bool,
    /// Where the scratch copy was made (dropped afterwards).
    pub scratch: String,
    /// How long the restore into the scratch copy took: the recovery time.
    pub restore_ms: u64,
    /// One line per check, e.g. "public.orders: 1204 rows (expected 1204)".
    pub checks: Vec<String>,
    /// Checks that failed.
    pub failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a drill was asked to do.
pub struct DrillRequest<'a> {
    pub snapshot: &'a str,
    pub source: &'a str,
    pub config: Option<&'a SourceConfig>,
    pub details: &'a Details,
    /// `--scratch-url`: where scratch databases go instead of the source's server.
    pub scratch_url: Option<&'a str>,
}

/// Restores into a scratch database, checks it and drops it. `None` for
/// kinds that have no drill (the caller reports them as skipped).
pub fn drill(
    kind: SourceKind,
    req: &DrillRequest,
    streams: &mut dyn Streams,
) -> Option<Result<DrillResult, SourceError>> {
    database(kind)
        .filter(|d| d.has_drill())
        .map(|d| d.drill(req, streams))
}

/// Whether sources of `kind` have a restore drill.
pub fn has_drill(kind: SourceKind) -> bool {
    database(kind).is_some_and(|d| d.has_drill())
}

/// Reads a password from `password_file` or `password_env`, if configured.
/// Passwords go to tools through their environment, never their argv.
pub fn configured_password(src: &SourceConfig) -> Result<Option<String>, SourceError> {
    if let Some(f) = &src.password_file {
        let p = std::fs::read_to_string(f).map_err(|e| {
            SourceError::Failed(format!(
                "source {}: cannot read password_file {}: {e}",
                src.name,
                f.display()
            ))
        })?;
        return Ok(Some(p.trim_end_matches(['\n', '\r']).to_string()));
    }
    if let Some(var) = &src.password_env {
        return match std::env::var(var) {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(SourceError::Failed(format!(
                "source {}: password_env names {var}, which is not set",
                src.name
            ))),
        };
    }
    Ok(None)
}

/// Query parameters of a database URL that hold a secret (libpq's
/// `password` and `sslpassword`, and the names other clients use).
pub const SECRET_PARAMS: &[&str] = &[
    "password",
    "sslpassword",
    "pass",
    "passwd",
    "pwd",
    "auth",
    "token",
    "secret",
];

/// True when a URL query parameter named `key` holds a secret.
pub fn is_secret_param(key: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p))
}

/// A URL with every secret replaced by `***`: the password of its user
/// info and the value of each [`SECRET_PARAMS`] query parameter, for
/// messages and manifests. Works on the text, so that a URL too broken to
/// parse (the error message quoting it) is redacted as well.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let head_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (head, tail) = rest.split_at(head_end);
    let mut out = scheme.to_string();
    match head.rfind('@') {
        Some(at) => {
            let (userinfo, hostpath) = head.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(userinfo),
            }
            out.push_str(hostpath);
        }
        None => out.push_str(head),
    }
    let Some(query) = tail.strip_prefix('?') else {
        out.push_str(tail);
        return out;
    };
    let (query, fragment) = match query.find('#') {
        Some(i) => query.split_at(i),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect();
    out.push('?');
    out.push_str(&pairs.join("&"));
    out.push_str(fragment);
    out
}

/// A URL part (user name, database name) with its `%XX` escapes decoded;
/// bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// How long a drill or restore waits for a tool that does not answer.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_user_info_passwords_and_secret_parameters() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/shop"),
            "postgres://app:***@db:5432/shop"
        );
        assert_eq!(
            redact_url("postgres://app@db/shop?sslmode=require&password=s3cret&PassWord=x"),
            "postgres://app@db/shop?sslmode=require&password=***&PassWord=***"
        );
        assert_eq!(
            redact_url("redis://:tok@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        // Too broken to parse (a bad port), still redacted.
        assert_eq!(
            redact_url("mysql://root:pw@h:99999/db?password=pw#x"),
            "mysql://root:***@h:99999/db?password=***#x"
        );
        assert_eq!(
            redact_url("postgres://app@db/shop"),
            "postgres://app@db/shop"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
