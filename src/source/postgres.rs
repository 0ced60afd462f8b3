//! `postgres` sources (PostgreSQL): `pg_dump` at snapshot time, `pg_restore`
//! at restore and drill time.
//!
//! # Snapshot
//!
//! The dump is one `pg_dump --format=custom --compress=0` stream, read from
//! the tool's stdout straight into the archive (never to local disk), so
//! `coffer dump SNAPSHOT SOURCE | pg_restore -d DB` works as for any custom
//! archive. `--compress=0`: coffer compresses every archive with zstd, and
//! zlib inside the dump would only cost CPU and leave zstd nothing to do.
//!
//! Row counts consistent with the dump: a `psql` session opens a
//! `REPEATABLE READ, READ ONLY` transaction and exports its snapshot
//! (`pg_export_snapshot()`); `pg_dump --snapshot=ID` dumps exactly that
//! snapshot, and the same session counts every user table (`count(*) FROM
//! ONLY`, one query per table through `\gexec`) while `pg_dump` runs, so the
//! counting costs no extra wall time on a machine with a spare core. The
//! session stays open until `pg_dump` has finished (an exported snapshot is
//! importable only while its transaction lives). The manifest records
//! `tables: {"schema.table": rows}` (ordinary tables, partitions included,
//! partitioned parents and extension members left out), the server version,
//! the `pg_dump` version and format, and the database's encoding and locale.
//!
//! Before anything is read, `prepare` compares `pg_dump --version` with the
//! server's `server_version_num`: a `pg_dump` older than the server cannot
//! dump it, and the source fails saying which client tools to install.
//!
//! `globals = true` adds a first stream `globals.sql` from `pg_dumpall
//! --globals-only` (roles with their password hashes, tablespaces; needs a
//! superuser). Restore never applies it (it would reset every role's
//! password to its old value); it says where it is instead.
//!
//! `jobs = N` applies to restore only: a parallel `pg_dump -j` writes the
//! directory format, i.e. the whole dump to local disk, which coffer never
//! does at snapshot time, so the dump stays one stream. `pg_restore -j N`
//! needs a seekable file: the restore writes the authenticated dump to a
//! temporary file (under `$TMPDIR`, mode 0600) and deletes it afterwards.
//!
//! Passwords: `password_file` / `password_env`, else one in the URL (its
//! user info or a `?password=` parameter), reach the tools as `PGPASSWORD`;
//! the tools get the URL without it, and messages and manifests never show
//! it. `?sslpassword=` is refused: libpq reads it from nowhere but the
//! connection string, i.e. a command line. Without either, libpq's usual `~/.pgpass`
//! and trust rules apply. Tools run with `--no-password`: they fail rather
//! than prompt.
//!
//! # Restore
//!
//! `restore --force` (configured database) and `--to-database URL` both
//! restore into a new database on the target's server, `<db>_coffer_<id>`,
//! created from `template0` with the dump's encoding and locale, and only
//! when `pg_restore --exit-on-error` (in one transaction unless `jobs > 1`)
//! succeeded and the whole archive authenticated, swap it in: connections to
//! the target are refused and terminated, the target is renamed to
//! `<db>_coffer_old_<id>`, the new one to the target's name, and the old one
//! dropped. Afterwards the database holds exactly what the snapshot holds;
//! on any failure before the swap the new database is dropped and the target
//! is untouched. The database-level properties that `pg_dump` does not dump
//! (owner, privileges, `ALTER DATABASE/ROLE ... SET` settings, comment,
//! connection limit) are carried over from the database being replaced.
//! This needs a role that owns the target (or a superuser) with CREATEDB,
//! and the `postgres` maintenance database (`template1` when the target is
//! `postgres`). `--to-database` creates the database if missing, and
//! replaces an existing non-empty one only with `--force`.
//!
//! Every scratch database carries a marker comment (pid, host, start time)
//! while coffer works in it, cleared before a restored one takes the
//! target's name. A restore or drill killed meanwhile leaves it behind; the
//! next restore of that database (or drill) drops the ones provably
//! abandoned ([`crate::abandoned`]: this host, a pid that no longer runs,
//! the exact scratch name), never `<db>_coffer_old_<id>`, which may hold
//! the only copy of the replaced data after a kill mid-swap.
//!
//! # Drill
//!
//! Restores into `coffer_drill_<snapshot>_<random>` on the source's server
//! (or `--scratch-url`'s), with `--no-owner --no-privileges` (a scratch
//! server need not have the roles; the drill checks data, not grants),
//! compares every table's row count with the recorded one, and drops the
//! scratch database whatever happened.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stream::{ToolSpec, feed_tool, tool_stream};
use super::{
    DbRestore, DbRestored, Details, DrillRequest, DrillResult, DumpStream, Dumper, SourceError,
    Streams, TOOL_TIMEOUT, configured_password, redact_url,
};
use crate::config::SourceConfig;

/// The `pg_dump` custom-format archive.
pub const MAIN_STREAM: &str = "pg_dump.custom";
/// `pg_dumpall --globals-only` output (with `globals = true`).
pub const GLOBALS_STREAM: &str = "globals.sql";
const FORMAT: &str = "custom";
/// PostgreSQL identifiers are at most 63 bytes.
const MAX_IDENT: usize = 63;

/// One `count(*)` per user table, run by psql's `\gexec`: rows of
/// `schema.table` and its count.
const COUNT_SQL: &str = "SELECT pg_catalog.format('SELECT %L, pg_catalog.count(*) FROM ONLY %I.%I', \
n.nspname || '.' || c.relname, n.nspname, c.relname) \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e') \
ORDER BY 1\n\\gexec\n";

// ------------------------------------------------------------ connections

/// The one secret of coffer's environment the PostgreSQL tools get: their
/// own password, when the user gives it as libpq's `PGPASSWORD`.
const PASS: &[&str] = &["PGPASSWORD"];

/// A connection target: the URL without password, the password (for
/// `PGPASSWORD`), and the database name.
#[derive(Clone)]
struct Conn {
    url: url::Url,
    password: Option<String>,
    db: String,
}

impl Conn {
    /// Parses `postgres://user[:pass]@host[:port]/db[?params]`; the password
    /// (user info, else `?password=`) is kept apart from the URL. With
    /// `default_db`, a URL without a database means that one.
    fn parse(raw: &str, what: &str, default_db: Option<&str>) -> Result<Conn, SourceError> {
        let bad = |why: String| {
            SourceError::Usage(format!(
                "{what}: {:?} is not a usable PostgreSQL URL: {why}; write postgres://USER@HOST:PORT/DATABASE",
                redact_url(raw)
            ))
        };
        let mut url = url::Url::parse(raw).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!("the scheme is {:?}", url.scheme())));
        }
        if url.cannot_be_a_base() {
            return Err(bad("it has no host part".into()));
        }
        let mut password = url.password().map(super::percent_decode);
        if password.is_some() {
            url.set_password(None)
                .map_err(|_| bad("its password cannot be removed".into()))?;
        }
        // `?password=` would reach every tool's argv (`--dbname=URL`, seen
        // by `ps`) and every place the URL is shown: it moves to PGPASSWORD
        // like a password in the user info (issue 10 item 7).
        let mut kept = Vec::new();
        for (k, v) in url.query_pairs() {
            match &*k {
                "password" => {
                    password.get_or_insert_with(|| v.into_owned());
                }
                // libpq has no environment variable for it, so it could only
                // go on a command line.
                "sslpassword" => {
                    return Err(bad(
                        "its `sslpassword` parameter would show on the tools' command lines; \
                         use a client key without a passphrase (mode 0600) instead"
                            .into(),
                    ));
                }
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        let db = url
            .path_segments()
            .and_then(|mut s| s.next())
            .map(super::percent_decode)
            .unwrap_or_default();
        let db = match (db.is_empty(), default_db) {
            (false, _) => db,
            (true, Some(d)) => d.to_string(),
            (true, None) => return Err(bad("it names no database".into())),
        };
        let mut c = Conn { url, password, db };
        c.set_db(&c.db.clone());
        Ok(c)
    }

    fn set_db(&mut self, db: &str) {
        if let Ok(mut p) = self.url.path_segments_mut() {
            p.clear().push(db);
        }
        self.db = db.to_string();
    }

    fn with_db(&self, db: &str) -> Conn {
        let mut c = self.clone();
        c.set_db(db);
        c
    }

    /// Where to run CREATE/ALTER/DROP DATABASE for this database.
    fn maintenance(&self) -> Conn {
        self.with_db(if self.db == "postgres" {
            "template1"
        } else {
            "postgres"
        })
    }

    /// The URL as shown to the user (it never holds a password).
    fn display(&self) -> String {
        self.url.to_string()
    }

    fn same_server(&self, other: &Conn) -> bool {
        self.url.host_str() == other.url.host_str()
            && self.url.port_or_known_default() == other.url.port_or_known_default()
            && self.url.username() == other.url.username()
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PGAPPNAME".to_string(), "coffer".to_string())];
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            env.push(("PGCONNECT_TIMEOUT".into(), "10".into()));
        }
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD".into(), p.clone()));
        }
        env
    }

    fn tool(&self, what: String, argv: Vec<String>) -> ToolSpec {
        let mut spec = ToolSpec::new(what, argv).pass(PASS);
        spec.env = self.env();
        spec
    }

    fn dbname_arg(&self) -> String {
        format!("--dbname={}", self.url)
    }

    /// Runs a psql script (fed on stdin, so `\gexec` works); its rows.
    fn psql(&self, script: &str) -> Result<Vec<Vec<String>>, SourceError> {
        let what = format!("psql on {}", self.display());
        let mut c = crate::childenv::command("psql", PASS);
        c.args(psql_args(self))
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| spawn_error("psql", &what, e))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let script = script.to_string();
        // A thread, so that a long script and a long answer cannot block each other.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(script.as_bytes());
        });
        let out = child
            .wait_with_output()
            .map_err(|e| SourceError::Failed(format!("{what}: wait failed: {e}")))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(tool_failure(
                &what,
                out.status,
                &String::from_utf8_lossy(&out.stderr),
            ));
        }
        Ok(parse_records(&out.stdout))
    }

    /// Runs SQL statements one by one (each in its own transaction, as
    /// CREATE/ALTER/DROP DATABASE need); stops at the first error.
    fn exec(&self, sql: &str) -> Result<(), SourceError> {
        self.psql(&format!("{sql};\n")).map(|_| ())
    }
}

fn psql_args(conn: &Conn) -> Vec<String> {
    [
        "-X",
        "--no-align",
        "--tuples-only",
        "--quiet",
        "--record-separator-zero",
        "--field-separator=\u{1f}",
        "--set=ON_ERROR_STOP=1",
        "--no-password",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([conn.dbname_arg()])
    .collect()
}

/// psql's unaligned output: records end with NUL, fields are split by 0x1f.
/// An unterminated last record (still being written) is left out.
fn parse_records(buf: &[u8]) -> Vec<Vec<String>> {
    let mut recs: Vec<&[u8]> = buf.split(|b| *b == 0).collect();
    recs.pop();
    recs.into_iter()
        .map(|r| {
            r.split(|b| *b == 0x1f)
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
        .collect()
}

/// An SQL identifier, quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An SQL string literal (safe whatever `standard_conforming_strings` is).
fn lit(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// What to try when the server refused our credentials.
fn auth_hint(stderr: &str) -> &'static str {
    if stderr.contains("password authentication failed") || stderr.contains("no password supplied")
    {
        " (give the password with password_file or password_env in the source's config, or in ~/.pgpass)"
    } else {
        ""
    }
}

fn tool_failure(what: &str, status: ExitStatus, stderr: &str) -> SourceError {
    let tail = stderr.trim();
    SourceError::Failed(format!(
        "{what} failed ({}){}{}",
        describe_status(status),
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        },
        auth_hint(tail)
    ))
}

fn spawn_error(prog: &str, what: &str, e: io::Error) -> SourceError {
    if e.kind() == io::ErrorKind::NotFound {
        SourceError::Failed(format!(
            "{what}: {prog} is not installed (not found on PATH); install the PostgreSQL client tools"
        ))
    } else {
        SourceError::Failed(format!("{what}: cannot start {prog}: {e}"))
    }
}

/// The connection of a configured source, with its configured password.
fn source_conn(src: &SourceConfig) -> Result<Conn, SourceError> {
    let url = src
        .url
        .as_deref()
        .ok_or_else(|| SourceError::Usage(format!("source {} has no `url`", src.name)))?;
    let mut conn = Conn::parse(url, &format!("source {}", src.name), None)?;
    if let Some(p) = configured_password(src)? {
        conn.password = Some(p);
    }
    Ok(conn)
}

/// Another server named by the user (`--to-database`, `--scratch-url`): its
/// own password, else the configured one when it is the same server and user.
fn other_conn(
    raw: &str,
    what: &str,
    default_db: Option<&str>,
    configured: Option<&Conn>,
) -> Result<Conn, SourceError> {
    let mut conn = Conn::parse(raw, what, default_db)?;
    if conn.password.is_none()
        && let Some(c) = configured
        && c.same_server(&conn)
    {
        conn.password = c.password.clone();
    }
    Ok(conn)
}

// --------------------------------------------------------------- versions

/// A comparable major version: 906 for 9.6, 1500 for 15.
fn version_key(text: &str) -> Option<u32> {
    let mut parts = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = parts.next()??;
    if major >= 10 {
        Some(major * 100)
    } else {
        Some(major * 100 + parts.next().flatten().unwrap_or(0))
    }
}

fn server_version_key(num: u32) -> u32 {
    if num >= 100_000 {
        num / 10_000 * 100
    } else {
        num / 100
    }
}

fn major_text(key: u32) -> String {
    if key >= 1000 {
        (key / 100).to_string()
    } else {
        format!("{}.{}", key / 100, key % 100)
    }
}

/// `prog --version`: the version text ("15.20 (Debian ...)") and its key.
fn tool_version(prog: &str) -> Result<(String, u32), SourceError> {
    let out = ToolSpec::new(
        format!("{prog} --version"),
        vec![prog.into(), "--version".into()],
    )
    .output()?;
    let line = out.lines().next().unwrap_or("").trim();
    let text = match line.find(|c: char| c.is_ascii_digit()) {
        Some(i) => line[i..].to_string(),
        None => String::new(),
    };
    let key = version_key(&text).ok_or_else(|| {
        SourceError::Failed(format!(
            "cannot tell the version of {prog} from {line:?} (`{prog} --version`)"
        ))
    })?;
    Ok((text, key))
}

/// `pg_restore` must be at least as new as the `pg_dump` that made the dump.
fn check_pg_restore(details: &Details) -> Result<(), SourceError> {
    let (text, key) = tool_version("pg_restore")?;
    if let Some(dump) = details.get("pg_dump_version").and_then(|v| v.as_str())
        && let Some(dump_key) = version_key(dump)
        && key < dump_key
    {
        return Err(SourceError::Failed(format!(
            "pg_restore {text} is older than the pg_dump ({dump}) that made this dump and cannot read it: \
             install the PostgreSQL {} client tools (or newer) and put them first on PATH",
            major_text(dump_key)
        )));
    }
    Ok(())
}

// ------------------------------------------------------------ psql session

#[derive(Default)]
struct Shared {
    state: Mutex<(Vec<u8>, bool)>,
    cv: Condvar,
}

/// A psql process kept open across calls (the snapshot-exporting
/// transaction), its output collected by a thread.
struct Session {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Shared>,
    err: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Session {
    fn start(conn: &Conn) -> Result<Session, SourceError> {
        let what = format!("psql on {}", conn.display());
        let mut c = crate::childenv::command("psql", PASS);
        c.args(psql_args(conn))
            .envs(conn.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| spawn_error("psql", &what, e))?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();
        let out = Arc::new(Shared::default());
        let o = out.clone();
        let t_out = std::thread::spawn(move || {
            let mut b = [0u8; 8192];
            loop {
                let n = match stdout.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                o.state
                    .lock()
                    .expect("session lock")
                    .0
                    .extend_from_slice(&b[..n]);
                o.cv.notify_all();
            }
            o.state.lock().expect("session lock").1 = true;
            o.cv.notify_all();
        });
        let err = Arc::new(Mutex::new(Vec::new()));
        let e = err.clone();
        let t_err = std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut b) {
                if n == 0 {
                    break;
                }
                let mut v = e.lock().expect("session lock");
                v.extend_from_slice(&b[..n]);
                if v.len() > 8192 {
                    let cut = v.len() - 8192;
                    v.drain(..cut);
                }
            }
        });
        Ok(Session {
            what,
            child,
            stdin,
            out,
            err,
            threads: vec![t_out, t_err],
        })
    }

    fn send(&mut self, sql: &str) -> Result<(), SourceError> {
        let res = match self.stdin.as_mut() {
            Some(w) => w.write_all(sql.as_bytes()).and_then(|_| w.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        match res {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure(None)),
        }
    }

    /// Waits until at least `n` rows have arrived; all rows so far.
    fn rows(&mut self, n: usize) -> Result<Vec<Vec<String>>, SourceError> {
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let timed_out = {
            let mut g = self.out.state.lock().expect("session lock");
            loop {
                if g.0.iter().filter(|b| **b == 0).count() >= n {
                    return Ok(parse_records(&g.0));
                }
                if g.1 {
                    break false;
                }
                let now = Instant::now();
                if now >= deadline {
                    break true;
                }
                g = self
                    .out
                    .cv
                    .wait_timeout(g, deadline - now)
                    .expect("session lock")
                    .0;
            }
        };
        if timed_out {
            let _ = self.child.kill();
            return Err(self.failure(Some(format!(
                "no answer from the server within {} s",
                TOOL_TIMEOUT.as_secs()
            ))));
        }
        Err(self.failure(None))
    }

    fn failure(&mut self, why: Option<String>) -> SourceError {
        self.stdin.take();
        let status = self.child.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let tail = String::from_utf8_lossy(&self.err.lock().expect("session lock"))
            .trim()
            .to_string();
        match (why, status) {
            (Some(why), _) => SourceError::Failed(format!(
                "{}: {why}{}",
                self.what,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )),
            (None, Ok(s)) if !s.success() => tool_failure(&self.what, s, &tail),
            (None, Ok(_)) => SourceError::Failed(format!(
                "{} ended before answering{}",
                self.what,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )),
            (None, Err(e)) => SourceError::Failed(format!("{}: wait failed: {e}", self.what)),
        }
    }

    /// Ends the session (stdin closed: psql quits) and returns all it wrote.
    fn finish(mut self) -> Result<Vec<u8>, SourceError> {
        self.stdin.take();
        let status = self
            .child
            .wait()
            .map_err(|e| SourceError::Failed(format!("{}: wait failed: {e}", self.what)))?;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if !status.success() {
            let tail = String::from_utf8_lossy(&self.err.lock().expect("session lock")).to_string();
            return Err(tool_failure(&self.what, status, &tail));
        }
        Ok(std::mem::take(
            &mut self.out.state.lock().expect("session lock").0,
        ))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Row counts from `COUNT_SQL` rows.
fn parse_counts(rows: &[Vec<String>]) -> Result<BTreeMap<String, u64>, SourceError> {
    let mut out = BTreeMap::new();
    for r in rows {
        match r.as_slice() {
            [name, n] => {
                let n = n.parse::<u64>().map_err(|_| {
                    SourceError::Failed(format!("unexpected row count {n:?} for table {name}"))
                })?;
                out.insert(name.clone(), n);
            }
            other => {
                return Err(SourceError::Failed(format!(
                    "unexpected answer from psql while counting rows: {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

// --------------------------------------------------------------- snapshot

pub struct PgDumper {
    source: String,
    conn: Conn,
    jobs: u32,
    globals: bool,
    session: Option<Session>,
    snapshot: String,
    /// 0: globals next (if any), 1: the dump next, 2: done.
    step: u8,
}

impl PgDumper {
    pub fn new(src: &SourceConfig) -> Result<Self, SourceError> {
        Ok(PgDumper {
            source: src.name.clone(),
            conn: source_conn(src)?,
            jobs: src.jobs.unwrap_or(1),
            globals: src.globals.unwrap_or(false),
            session: None,
            snapshot: String::new(),
            step: 0,
        })
    }
}

impl Dumper for PgDumper {
    fn prepare(&mut self, details: &mut Details) -> Result<(), SourceError> {
        // `pg_dump --version` runs while psql connects (on Debian each goes
        // through the pg_wrapper script, some 30 ms apiece).
        let version = std::thread::spawn(|| tool_version("pg_dump"));
        let session = Session::start(&self.conn);
        let (dump_text, dump_key) = version.join().unwrap_or_else(|_| {
            Err(SourceError::Failed(
                "pg_dump --version: thread panicked".into(),
            ))
        })?;
        let mut s = session?;
        // pg_dump sets these for itself; the counting session must not be
        // cut off by a server-wide timeout either.
        s.send(
            "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n\
             SELECT current_setting('server_version_num'), current_setting('server_version'), \
             pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype \
             FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database();\n",
        )?;
        let rows = s.rows(1)?;
        let [num, server_text, encoding, collate, ctype] = rows[0].as_slice() else {
            return Err(SourceError::Failed(format!(
                "{}: unexpected answer {:?} to the version query",
                s.what, rows[0]
            )));
        };
        let num: u32 = num
            .parse()
            .map_err(|_| SourceError::Failed(format!("unexpected server_version_num {num:?}")))?;
        let server_key = server_version_key(num);
        if dump_key < server_key {
            return Err(SourceError::Failed(format!(
                "pg_dump {dump_text} is older than the PostgreSQL server ({server_text}) at {}: \
                 it cannot dump it. Install the PostgreSQL {} client tools (e.g. the postgresql-client-{} package) \
                 and put their pg_dump first on PATH; nothing was written",
                self.conn.display(),
                major_text(server_key),
                major_text(server_key)
            )));
        }
        s.send(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_catalog.pg_export_snapshot();\n",
        )?;
        let rows = s.rows(2)?;
        self.snapshot = rows[1].first().cloned().unwrap_or_default();
        if self.snapshot.is_empty() {
            return Err(SourceError::Failed(format!(
                "{}: pg_export_snapshot() gave no snapshot id",
                s.what
            )));
        }
        self.session = Some(s);
        details.insert("database".into(), self.conn.db.clone().into());
        details.insert("url".into(), self.conn.display().into());
        details.insert("server_version".into(), server_text.clone().into());
        details.insert("server_version_num".into(), num.into());
        details.insert("pg_dump_version".into(), dump_text.into());
        details.insert("format".into(), FORMAT.into());
        details.insert("encoding".into(), encoding.clone().into());
        details.insert("lc_collate".into(), collate.clone().into());
        details.insert("lc_ctype".into(), ctype.clone().into());
        details.insert("main_stream".into(), MAIN_STREAM.into());
        details.insert(
            "consistency".into(),
            "pg_dump --snapshot of an exported REPEATABLE READ snapshot; table row counts from the same snapshot"
                .into(),
        );
        if self.globals {
            details.insert("globals_stream".into(), GLOBALS_STREAM.into());
        }
        if self.jobs > 1 {
            details.insert("jobs".into(), self.jobs.into());
            details.insert(
                "jobs_note".into(),
                "jobs applies to restore (pg_restore -j); the dump is one pg_dump stream, because a parallel \
                 pg_dump writes a directory on local disk, which coffer never does at snapshot time"
                    .into(),
            );
        }
        Ok(())
    }

    fn next_stream(&mut self) -> Result<Option<DumpStream>, SourceError> {
        if self.step == 0 {
            self.step = 1;
            if self.globals {
                let spec = self.conn.tool(
                    "pg_dumpall --globals-only (globals = true; needs a superuser)".into(),
                    vec![
                        "pg_dumpall".into(),
                        "--globals-only".into(),
                        "--no-password".into(),
                        self.conn.dbname_arg(),
                    ],
                );
                return tool_stream(GLOBALS_STREAM, &spec).map(Some);
            }
        }
        if self.step == 1 {
            self.step = 2;
            let spec = self.conn.tool(
                format!("pg_dump of database {:?}", self.conn.db),
                vec![
                    "pg_dump".into(),
                    "--format=custom".into(),
                    "--compress=0".into(),
                    format!("--snapshot={}", self.snapshot),
                    "--no-password".into(),
                    self.conn.dbname_arg(),
                ],
            );
            let stream = tool_stream(MAIN_STREAM, &spec)?;
            // Count rows in the exported snapshot while pg_dump dumps it.
            let s = self.session.as_mut().ok_or_else(|| {
                SourceError::Failed(format!("source {}: no psql session", self.source))
            })?;
            s.send(COUNT_SQL)?;
            return Ok(Some(stream));
        }
        Ok(None)
    }

    fn finish(&mut self, details: &mut Details) -> Result<(), SourceError> {
        let mut s = self.session.take().ok_or_else(|| {
            SourceError::Failed(format!("source {}: no psql session", self.source))
        })?;
        s.send("COMMIT;\n")?;
        let out = s.finish()?;
        let rows = parse_records(&out);
        let counts = parse_counts(rows.get(2..).unwrap_or(&[]))?;
        details.insert("table_count".into(), counts.len().into());
        details.insert(
            "tables".into(),
            serde_json::Value::Object(counts.into_iter().map(|(k, v)| (k, v.into())).collect()),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------- restore

/// Where a restore goes.
struct Target {
    conn: Conn,
}

fn target(req: &DbRestore) -> Result<Target, SourceError> {
    let configured = req.config.map(source_conn).transpose()?;
    match req.to_database {
        Some(raw) => {
            let conn = other_conn(raw, "--to-database", None, configured.as_ref())?;
            if !req.force
                && database_exists(&conn.maintenance(), &conn.db)?
                && !database_is_empty(&conn)?
            {
                return Err(SourceError::Usage(format!(
                    "database {} exists and is not empty: add --force to replace everything in it with source {} \
                     of snapshot {}, or name a database that does not exist yet (it is created)",
                    conn.display(),
                    req.source,
                    req.snapshot
                )));
            }
            Ok(Target { conn })
        }
        None => {
            let conn = configured.ok_or_else(|| {
                SourceError::Usage(format!(
                    "source {} is not in the config any more, so its database is unknown: \
                     restore it with --to-database URL",
                    req.source
                ))
            })?;
            if !req.force {
                return Err(SourceError::Usage(format!(
                    "restoring source {} replaces database {}: every object in it is dropped and recreated \
                     as snapshot {} holds it. Add --force to do that, or restore into another database with \
                     --to-database URL",
                    req.source,
                    conn.display(),
                    req.snapshot
                )));
            }
            Ok(Target { conn })
        }
    }
}

fn database_exists(server: &Conn, db: &str) -> Result<bool, SourceError> {
    let rows = server.psql(&format!(
        "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {};\n",
        lit(db)
    ))?;
    Ok(!rows.is_empty())
}

/// No user schema, relation, function, type or extension (besides plpgsql).
fn database_is_empty(conn: &Conn) -> Result<bool, SourceError> {
    let user_ns = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'";
    let rows = conn.psql(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {user_ns}) \
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {user_ns}) \
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE {user_ns}) \
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE {user_ns} AND n.nspname <> 'public') \
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql');\n"
    ))?;
    Ok(rows.first().and_then(|r| r.first()).map(String::as_str) == Some("f"))
}

/// `<db><mark><8 hex>`, the db part cut so the whole fits an identifier.
fn derived_name(db: &str, mark: &str) -> String {
    let suffix = format!("{mark}{}", crate::crypto::random_id(4));
    let mut cut = MAX_IDENT.saturating_sub(suffix.len()).min(db.len());
    while !db.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &db[..cut])
}

/// Whether `name` is one that `derived_name(db, mark)` can give: the same
/// cut of `db`, `mark`, then 8 lowercase hex digits, nothing else.
fn is_derived_name(name: &str, db: &str, mark: &str) -> bool {
    let mut cut = MAX_IDENT.saturating_sub(mark.len() + 8).min(db.len());
    while !db.is_char_boundary(cut) {
        cut -= 1;
    }
    name.strip_prefix(&db[..cut])
        .and_then(|rest| rest.strip_prefix(mark))
        .is_some_and(|hex| {
            hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// Whether `name` is a drill's scratch database: `coffer_drill_<snapshot
/// id>_<8 hex>`.
fn is_drill_name(name: &str) -> bool {
    name.strip_prefix("coffer_drill_")
        .and_then(|rest| rest.rsplit_once('_'))
        .is_some_and(|(snap, hex)| {
            !snap.is_empty()
                && snap.bytes().all(|b| b.is_ascii_alphanumeric())
                && hex.len() == 8
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// The comment a scratch database carries while coffer works in it: who
/// made it, so that a later run can prove it abandoned when that process
/// was killed (issue 11). Restore clears it before the database is swapped
/// in, so a restored database never carries it.
const MARKER_PREFIX: &str = "coffer scratch database: ";

fn marker() -> String {
    format!(
        "{MARKER_PREFIX}pid={} host={} started={}",
        std::process::id(),
        crate::repo::host_name(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The maker named by a marker comment.
fn marker_owner(comment: &str) -> Option<crate::abandoned::Owner> {
    let rest = comment.strip_prefix(MARKER_PREFIX)?;
    let mut pid = None;
    let mut host = None;
    for field in rest.split(' ') {
        match field.split_once('=') {
            Some(("pid", v)) => pid = v.parse().ok(),
            Some(("host", v)) => host = Some(v.to_string()),
            _ => {}
        }
    }
    Some(crate::abandoned::Owner {
        pid: pid?,
        host: host?,
    })
}

/// Scratch databases a killed restore or drill of `db` left on `server`:
/// `<db>_coffer_<hex>` (restore), `<db>_coffer_old_<hex>` (the replaced
/// database, when a restore was killed mid-swap) and, with `drills`,
/// `coffer_drill_<snapshot>_<hex>`. Each with the verdict on its maker.
fn scratch_leftovers(
    server: &Conn,
    db: &str,
    drills: bool,
) -> Result<Vec<(String, crate::abandoned::Verdict)>, SourceError> {
    let rows = server.psql(
        "SELECT d.datname, COALESCE(pg_catalog.shobj_description(d.oid, 'pg_database'), '') \
         FROM pg_catalog.pg_database d ORDER BY 1;\n",
    )?;
    let host = crate::repo::host_name();
    Ok(rows
        .into_iter()
        .filter_map(|r| match r.as_slice() {
            [name, comment] => Some((name.clone(), comment.clone())),
            _ => None,
        })
        .filter(|(name, _)| {
            name != db
                && (is_derived_name(name, db, "_coffer_")
                    || is_derived_name(name, db, "_coffer_old_")
                    || (drills && is_drill_name(name)))
        })
        .map(|(name, comment)| {
            // The replaced database carries its own comment (or ours, never
            // set on it): whatever it says, it is the user's data.
            let owner = if is_derived_name(&name, db, "_coffer_old_") {
                None
            } else {
                marker_owner(&comment)
            };
            (name, crate::abandoned::judge(owner, &host))
        })
        .collect())
}

/// Drops the scratch databases of `db` (and drills', with `drills`) on
/// `server` that are provably abandoned: the exact scratch name pattern, a
/// marker naming this host and a process that no longer runs. Never the
/// target itself, never a `_coffer_old_` one (it may hold the only copy of
/// the target's data). Says so on stderr; a failure to look only warns.
fn drop_abandoned(server: &Conn, db: &str, drills: bool) {
    let found = match scratch_leftovers(server, db, drills) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                "could not look for scratch databases left by a killed restore on {}: {e}",
                server.display()
            );
            return;
        }
    };
    for (name, verdict) in found {
        let crate::abandoned::Verdict::Abandoned(owner) = &verdict else {
            tracing::warn!(
                "database {name} looks like a left-over of a killed coffer restore or drill, left as it is: {}",
                verdict.describe()
            );
            continue;
        };
        match drop_database(server, &name) {
            Ok(()) => crate::abandoned::removed(format!(
                "dropped database {name}: a scratch database left by a killed coffer restore or drill (process {} on this host, no longer running)",
                owner.pid
            )),
            Err(e) => tracing::warn!(
                "database {name} was left by a killed coffer restore or drill (process {}, no longer running) but could not be dropped: {e}; drop it by hand",
                owner.pid
            ),
        }
    }
}

/// For `coffer check`: the scratch databases killed restores of `src`'s
/// database left, each with what is known of its maker. Not those of a
/// process still running (a restore in progress), nor drill databases:
/// their names do not say which source they belong to.
pub fn leftovers(src: &SourceConfig) -> Result<Vec<String>, SourceError> {
    let conn = source_conn(src)?;
    Ok(scratch_leftovers(&conn.maintenance(), &conn.db, false)?
        .into_iter()
        .filter(|(_, v)| !matches!(v, crate::abandoned::Verdict::Running(_)))
        .map(|(name, v)| format!("database {name}: {}", v.describe()))
        .collect())
}

/// A database we created; dropped when this goes out of scope unless kept.
struct TempDb {
    server: Conn,
    name: String,
    armed: bool,
}

impl TempDb {
    /// Creates `name` from template0 with the dump's encoding and locale
    /// (falling back to the server's defaults when it lacks that locale),
    /// owned by `owner` where given. Notes for the user go to `notes`.
    fn create(
        server: &Conn,
        name: &str,
        details: &Details,
        owner: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Result<TempDb, SourceError> {
        let get = |k: &str| details.get(k).and_then(|v| v.as_str());
        let mut locale = String::new();
        if let Some(e) = get("encoding") {
            locale.push_str(&format!(" ENCODING {}", lit(e)));
        }
        if let Some(c) = get("lc_collate") {
            locale.push_str(&format!(" LC_COLLATE {}", lit(c)));
        }
        if let Some(c) = get("lc_ctype") {
            locale.push_str(&format!(" LC_CTYPE {}", lit(c)));
        }
        let own = owner.map(|o| format!(" OWNER {}", ident(o)));
        let attempts = [
            (locale.as_str(), own.as_deref()),
            ("", own.as_deref()),
            ("", None),
        ];
        let mut first_err = None;
        for (i, (loc, own)) in attempts.iter().enumerate() {
            if i > 0 && attempts[i] == attempts[i - 1] {
                continue;
            }
            let sql = format!(
                "CREATE DATABASE {} TEMPLATE template0{loc}{}",
                ident(name),
                own.unwrap_or("")
            );
            match server.exec(&sql) {
                Ok(()) => {
                    let db = TempDb {
                        server: server.clone(),
                        name: name.to_string(),
                        armed: true,
                    };
                    // Who made it, for the run after a kill (see `marker`).
                    // Without it a left-over is only reported, never dropped.
                    if let Err(e) = server.exec(&format!(
                        "COMMENT ON DATABASE {} IS {}",
                        ident(name),
                        lit(&marker())
                    )) {
                        tracing::warn!(
                            "could not mark the new database {name} as coffer's ({e}); if this run is killed, drop it by hand"
                        );
                    }
                    if let Some(e) = &first_err {
                        tracing::warn!(
                            "created database {name} without some of the dump's settings: {e}"
                        );
                        if loc.is_empty() && !locale.is_empty() {
                            notes.push(format!(
                                "the database was created with the server's default encoding and locale, not the dump's ({})",
                                locale.trim()
                            ));
                        }
                        if own.is_none()
                            && let Some(o) = owner
                        {
                            notes.push(format!(
                                "could not make {o} the owner of the new database; run ALTER DATABASE ... OWNER TO {}",
                                ident(o)
                            ));
                        }
                    }
                    return Ok(db);
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        Err(first_err.expect("at least one attempt"))
    }

    fn keep(&mut self) {
        self.armed = false;
    }

    fn drop_now(&mut self) -> Result<(), SourceError> {
        self.armed = false;
        drop_database(&self.server, &self.name)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = drop_database(&self.server, &self.name)
        {
            tracing::warn!("could not drop the temporary database {}: {e}", self.name);
        }
    }
}

fn drop_database(server: &Conn, name: &str) -> Result<(), SourceError> {
    // WITH (FORCE) needs PostgreSQL 13; older servers get the plain form.
    server
        .exec(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            ident(name)
        ))
        .or_else(|_| server.exec(&format!("DROP DATABASE IF EXISTS {}", ident(name))))
}

/// Feeds the main stream to `pg_restore` into `db`; reads every other stream
/// to its end, so the whole archive is authenticated when this returns Ok.
/// Returns the dump's size and the names of the other streams.
fn load(
    streams: &mut dyn Streams,
    details: &Details,
    db: &Conn,
    jobs: u32,
    extra: &[&str],
) -> Result<(u64, Vec<String>), SourceError> {
    let main = details
        .get("main_stream")
        .and_then(|v| v.as_str())
        .unwrap_or(MAIN_STREAM)
        .to_string();
    let mut bytes = None;
    let mut others = Vec::new();
    while let Some((name, mut r)) = streams.next_stream()? {
        if name == main && bytes.is_none() {
            bytes = Some(pg_restore(db, jobs, extra, &mut r)?);
        } else {
            io::copy(&mut r, &mut io::sink())?;
            others.push(name);
        }
    }
    let bytes = bytes.ok_or_else(|| {
        SourceError::Failed(format!(
            "the snapshot holds no {main} stream for this source (streams: {})",
            others.join(", ")
        ))
    })?;
    Ok((bytes, others))
}

fn pg_restore(db: &Conn, jobs: u32, extra: &[&str], r: &mut dyn Read) -> Result<u64, SourceError> {
    let mut argv: Vec<String> = vec![
        "pg_restore".into(),
        "--exit-on-error".into(),
        "--no-password".into(),
        db.dbname_arg(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let what = format!("pg_restore into {}", db.display());
    if jobs > 1 {
        // pg_restore -j reads a seekable file; it is deleted when `f` drops.
        let mut f = tempfile::Builder::new()
            .prefix("coffer-pg_restore-")
            .suffix(".dump")
            .tempfile()
            .map_err(|e| {
                SourceError::Failed(format!(
                    "cannot create a temporary file for pg_restore -j (TMPDIR): {e}"
                ))
            })?;
        let n = io::copy(r, f.as_file_mut())?;
        f.as_file_mut().flush()?;
        argv.push(format!("--jobs={jobs}"));
        argv.push(f.path().display().to_string());
        db.tool(what, argv).output()?;
        Ok(n)
    } else {
        argv.push("--single-transaction".into());
        feed_tool(&db.tool(what, argv), r)
    }
}

/// A database-level property `pg_dump` leaves out, to carry from the
/// database being replaced to its replacement.
enum Prop {
    RevokePublic,
    Grant {
        privilege: String,
        grantee: String,
        grantable: bool,
    },
    Setting {
        role: String,
        name: String,
        value: String,
    },
    Comment(String),
    ConnLimit(String),
}

/// GUCs whose values are lists of separately quoted items (as in pg_dumpall).
const LIST_GUCS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Splits a list GUC value (`"my schema", public`) into its items.
fn split_guc_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = v.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let Some(&c) = it.peek() else { break };
        let mut item = String::new();
        if c == '"' {
            it.next();
            while let Some(c) = it.next() {
                if c == '"' {
                    if it.peek() == Some(&'"') {
                        it.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            while it.peek().is_some_and(|c| *c != ',') {
                it.next();
            }
        } else {
            while let Some(&c) = it.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                it.next();
            }
            item = item.trim_end().to_string();
        }
        out.push(item);
        if it.next().is_none() {
            break;
        }
    }
    out
}

impl Prop {
    fn sql(&self, db: &str) -> String {
        let db = ident(db);
        match self {
            Prop::RevokePublic => format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
            Prop::Grant {
                privilege,
                grantee,
                grantable,
            } => format!(
                "GRANT {privilege} ON DATABASE {db} TO {grantee}{}",
                if *grantable { " WITH GRANT OPTION" } else { "" }
            ),
            Prop::Setting { role, name, value } => {
                let value = if LIST_GUCS.contains(&name.to_ascii_lowercase().as_str()) {
                    split_guc_list(value)
                        .iter()
                        .map(|s| lit(s))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    lit(value)
                };
                if role.is_empty() {
                    format!("ALTER DATABASE {db} SET {} TO {value}", ident(name))
                } else {
                    format!(
                        "ALTER ROLE {} IN DATABASE {db} SET {} TO {value}",
                        ident(role),
                        ident(name)
                    )
                }
            }
            Prop::Comment(c) => format!("COMMENT ON DATABASE {db} IS {}", lit(c)),
            Prop::ConnLimit(n) => format!("ALTER DATABASE {db} CONNECTION LIMIT {n}"),
        }
    }
}

fn database_props(server: &Conn, db: &str) -> Result<(Option<String>, Vec<Prop>), SourceError> {
    let l = lit(db);
    let rows = server.psql(&format!(
        "SELECT 'owner', pg_catalog.pg_get_userbyid(d.datdba), (d.datacl IS NOT NULL)::text, d.datconnlimit::text \
           FROM pg_catalog.pg_database d WHERE d.datname = {l};\n\
         SELECT 'grant', a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
           ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, a.is_grantable::text \
           FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a WHERE d.datname = {l};\n\
         SELECT 'setting', COALESCE(r.rolname, ''), s.cfg FROM pg_catalog.pg_db_role_setting x \
           JOIN pg_catalog.pg_database d ON d.oid = x.setdatabase \
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.setrole, pg_catalog.unnest(x.setconfig) s(cfg) \
           WHERE d.datname = {l};\n\
         SELECT 'comment', c FROM pg_catalog.pg_database d, pg_catalog.shobj_description(d.oid, 'pg_database') c \
           WHERE d.datname = {l} AND c IS NOT NULL;\n"
    ))?;
    let mut owner = None;
    let mut props = Vec::new();
    for r in rows {
        match r.as_slice() {
            [t, o, acl, limit] if t == "owner" => {
                owner = Some(o.clone());
                if acl == "t" {
                    props.push(Prop::RevokePublic);
                }
                if limit != "-1" {
                    props.push(Prop::ConnLimit(limit.clone()));
                }
            }
            [t, p, g, grantable] if t == "grant" => props.push(Prop::Grant {
                privilege: p.clone(),
                grantee: g.clone(),
                grantable: grantable == "t",
            }),
            [t, role, cfg] if t == "setting" => {
                if let Some((name, value)) = cfg.split_once('=') {
                    props.push(Prop::Setting {
                        role: role.clone(),
                        name: name.to_string(),
                        value: value.to_string(),
                    });
                }
            }
            [t, c] if t == "comment" => props.push(Prop::Comment(c.clone())),
            _ => {}
        }
    }
    Ok((owner, props))
}

/// Terminates every other session on `db` (waits up to 10 s for them to go).
fn terminate_sessions(server: &Conn, db: &str) -> Result<(), SourceError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = server.psql(&format!(
            "SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
             WHERE datname = {} AND pid <> pg_catalog.pg_backend_pid();\n",
            lit(db)
        ))?;
        let left = rows
            .first()
            .and_then(|r| r.first())
            .map(String::as_str)
            .unwrap_or("0");
        if left == "0" || Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replaces `target` by `new` (both on `server`): the old one is renamed
/// away, the new one takes its name, the old one is dropped. On a failure
/// the target is left as it was.
fn swap(
    server: &Conn,
    target: &str,
    new: &str,
    notes: &mut Vec<String>,
) -> Result<(), SourceError> {
    let old = derived_name(target, "_coffer_old_");
    let (t, n, o) = (ident(target), ident(new), ident(&old));
    server.exec(&format!("ALTER DATABASE {t} ALLOW_CONNECTIONS false"))?;
    let res = (|| {
        terminate_sessions(server, target)?;
        server.exec(&format!("ALTER DATABASE {t} RENAME TO {o}"))?;
        if let Err(e) = server.exec(&format!("ALTER DATABASE {n} RENAME TO {t}")) {
            if let Err(back) = server.exec(&format!("ALTER DATABASE {o} RENAME TO {t}")) {
                return Err(SourceError::Failed(format!(
                    "{e}; then renaming {old} back to {target} failed too: {back}. \
                     Rename it by hand: ALTER DATABASE {o} RENAME TO {t}; ALTER DATABASE {t} ALLOW_CONNECTIONS true"
                )));
            }
            return Err(e);
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = server.exec(&format!("ALTER DATABASE {t} ALLOW_CONNECTIONS true"));
        return Err(e);
    }
    if let Err(e) = drop_database(server, &old) {
        tracing::warn!("could not drop the replaced database {old}: {e}");
        notes.push(format!(
            "the replaced database was kept as {old} because dropping it failed ({e}); drop it when convenient"
        ));
    }
    Ok(())
}

/// Where a restore would go, and the refusals that need no data.
pub fn destination(req: &DbRestore) -> Result<String, SourceError> {
    target(req).map(|t| t.conn.display())
}

pub fn restore(req: &DbRestore, streams: &mut dyn Streams) -> Result<DbRestored, SourceError> {
    let t = target(req)?;
    check_pg_restore(req.details)?;
    let server = t.conn.maintenance();
    let db = t.conn.db.clone();
    let exists = database_exists(&server, &db)?;
    let (owner, props) = if exists {
        database_props(&server, &db)?
    } else {
        (None, Vec::new())
    };
    drop_abandoned(&server, &db, false);
    let jobs = req.config.and_then(|c| c.jobs).unwrap_or(1);
    let mut next_steps = Vec::new();
    let tmp_name = derived_name(&db, "_coffer_");
    tracing::info!(
        "restoring source {} into the new database {tmp_name}, to replace {}",
        req.source,
        t.conn.display()
    );
    let mut tmp = TempDb::create(
        &server,
        &tmp_name,
        req.details,
        owner.as_deref(),
        &mut next_steps,
    )?;
    let (bytes, others) = load(streams, req.details, &t.conn.with_db(&tmp_name), jobs, &[])?;
    // The marker goes before the database takes the target's place: a
    // restored database must never look like an abandoned scratch one. The
    // replaced database's own comment, if any, is carried over below.
    // (Should that fail, the restored database keeps the marker, harmless:
    // only a scratch name is ever dropped, never the target's.)
    if let Err(e) = server.exec(&format!("COMMENT ON DATABASE {} IS NULL", ident(&tmp_name))) {
        tracing::warn!("could not clear coffer's marker comment on {tmp_name}: {e}");
    }
    for p in &props {
        if let Err(e) = server.exec(&p.sql(&tmp_name)) {
            next_steps.push(format!(
                "could not carry this setting of the replaced database over ({e}); run: {}",
                p.sql(&db)
            ));
        }
    }
    if exists {
        swap(&server, &db, &tmp_name, &mut next_steps)?;
    } else {
        server.exec(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            ident(&tmp_name),
            ident(&db)
        ))?;
    }
    tmp.keep();
    if others.iter().any(|s| s == GLOBALS_STREAM) {
        next_steps.push(format!(
            "roles and tablespaces (globals.sql) were not applied; if some are missing, review `coffer dump {} {} {GLOBALS_STREAM}` and apply it with psql",
            req.snapshot, req.source
        ));
    }
    Ok(DbRestored {
        destination: t.conn.display(),
        bytes,
        next_steps,
    })
}

// ------------------------------------------------------------------ drill

pub fn drill(req: &DrillRequest, streams: &mut dyn Streams) -> Result<DrillResult, SourceError> {
    let configured = req.config.map(source_conn).transpose()?;
    let server = match req.scratch_url {
        Some(raw) => other_conn(raw, "--scratch-url", Some("postgres"), configured.as_ref())?,
        None => configured
            .as_ref()
            .ok_or_else(|| {
                SourceError::Usage(format!(
                    "source {} is not in the config any more: say where to restore it with --scratch-url URL",
                    req.source
                ))
            })?
            .maintenance(),
    };
    check_pg_restore(req.details)?;
    let snap: String = req
        .snapshot
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match &configured {
        // The restores of the configured database left theirs there.
        Some(c) if c.same_server(&server) => drop_abandoned(&server, &c.db, true),
        _ => drop_abandoned(&server, "", true),
    }
    let name = derived_name(&format!("coffer_drill_{snap}"), "_");
    let scratch_conn = server.with_db(&name);
    let jobs = req.config.and_then(|c| c.jobs).unwrap_or(1);
    let mut notes = Vec::new();
    let mut scratch = TempDb::create(&server, &name, req.details, None, &mut notes)?;
    let started = Instant::now();
    let loaded = load(
        streams,
        req.details,
        &scratch_conn,
        jobs,
        &["--no-owner", "--no-privileges"],
    );
    let restore_ms = started.elapsed().as_millis() as u64;
    let counted = loaded.and_then(|_| parse_counts(&scratch_conn.psql(COUNT_SQL)?));
    let dropped = scratch.drop_now();
    let actual = counted?;

    let mut checks = Vec::new();
    let mut failures = Vec::new();
    match req.details.get("tables").and_then(|v| v.as_object()) {
        None => failures.push("the snapshot recorded no table row counts to check against".into()),
        Some(expected) => {
            for (table, want) in expected {
                let want = want.as_u64().unwrap_or(u64::MAX);
                match actual.get(table) {
                    None => failures.push(format!(
                        "{table}: missing after the restore (expected {want} rows)"
                    )),
                    Some(&got) if got != want => {
                        failures.push(format!("{table}: {got} rows (expected {want})"))
                    }
                    Some(&got) => checks.push(format!("{table}: {got} rows (expected {want})")),
                }
            }
            for (table, got) in &actual {
                if !expected.contains_key(table) {
                    failures.push(format!(
                        "{table}: {got} rows, but the snapshot recorded no such table"
                    ));
                }
            }
        }
    }
    checks.extend(notes);
    let error = dropped
        .err()
        .map(|e| format!("could not drop the scratch database {name}: {e}; drop it by hand"));
    Ok(DrillResult {
        name: req.source.to_string(),
        kind: "postgres".into(),
        ok: failures.is_empty() && error.is_none(),
        scratch: scratch_conn.display(),
        restore_ms,
        checks,
        failures,
        error,
    })
}

// ------------------------------------------------------------ the kind

/// PostgreSQL as a [`super::DatabaseSource`].
pub struct Postgres;

impl super::DatabaseSource for Postgres {
    fn kind(&self) -> crate::config::SourceKind {
        crate::config::SourceKind::Postgres
    }
    fn keys(&self) -> super::Keys {
        super::Keys {
            required: &["url"],
            allowed: &["url", "jobs", "globals", "password_file", "password_env"],
        }
    }
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
        Ok(Box::new(PgDumper::new(src)?))
    }
    fn destination(&self, req: &DbRestore) -> Result<String, SourceError> {
        destination(req)
    }
    fn restore(
        &self,
        req: &DbRestore,
        streams: &mut dyn Streams,
    ) -> Result<DbRestored, SourceError> {
        restore(req, streams)
    }
    fn has_drill(&self) -> bool {
        true
    }
    fn drill(
        &self,
        req: &DrillRequest,
        streams: &mut dyn Streams,
    ) -> Result<DrillResult, SourceError> {
        drill(req, streams)
    }
    fn describe(&self, d: &Details) -> Result<String, String> {
        use super::detail_str;
        Ok(format!(
            "{}: server {}, pg_dump {} (not older than the server)",
            detail_str(d, "url"),
            detail_str(d, "server_version"),
            detail_str(d, "pg_dump_version")
        ))
    }
    fn leftovers(&self, src: &SourceConfig) -> Result<Vec<String>, SourceError> {
        leftovers(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        let c = Conn::parse(
            "postgres://app:s%40cret@db.example:6543/shop?sslmode=require",
            "t",
            None,
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.db, "shop");
        assert_eq!(
            c.display(),
            "postgres://app@db.example:6543/shop?sslmode=require"
        );
        let m = c.maintenance();
        assert_eq!(
            m.display(),
            "postgres://app@db.example:6543/postgres?sslmode=require"
        );
        assert_eq!(
            c.with_db("a b/c").display(),
            "postgres://app@db.example:6543/a%20b%2Fc?sslmode=require"
        );
        assert!(Conn::parse("postgres://app@h/", "t", None).is_err());
        assert_eq!(
            Conn::parse("postgres://app@h", "t", Some("postgres"))
                .unwrap()
                .db,
            "postgres"
        );
        assert!(Conn::parse("mysql://app@h/x", "t", None).is_err());
        let e = Conn::parse("postgres://u:pw@h", "t", None)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("pw"), "{e}");
    }

    /// Issue 10 item 7: `?password=` leaked into argv, messages and manifests.
    #[test]
    fn password_parameter_moves_to_the_environment() {
        let c = Conn::parse(
            "postgres://app@db:5432/shop?sslmode=require&password=q%26pw&application_name=x",
            "t",
            None,
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("q&pw"));
        assert_eq!(
            c.display(),
            "postgres://app@db:5432/shop?sslmode=require&application_name=x"
        );
        assert!(!c.dbname_arg().contains("pw"), "{}", c.dbname_arg());
        assert!(c.env().contains(&("PGPASSWORD".into(), "q&pw".into())));
        // The user info's password wins; the parameter is dropped all the same.
        let c = Conn::parse("postgres://app:ui@db/shop?password=q", "t", None).unwrap();
        assert_eq!(c.password.as_deref(), Some("ui"));
        assert_eq!(c.display(), "postgres://app@db/shop");
        let e = Conn::parse("postgres://app@db/shop?sslpassword=kpw", "t", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslpassword") && !e.contains("kpw"), "{e}");
    }

    #[test]
    fn versions_compare_by_major() {
        assert_eq!(version_key("15.20 (Debian 15.20-0+deb12u1)"), Some(1500));
        assert_eq!(version_key("9.6.24"), Some(906));
        assert_eq!(version_key("17beta1"), Some(1700));
        assert_eq!(server_version_key(150020), 1500);
        assert_eq!(server_version_key(90624), 906);
        assert_eq!(server_version_key(160001), 1600);
        assert!(version_key("15.2").unwrap() < server_version_key(160001));
        assert_eq!(major_text(906), "9.6");
        assert_eq!(major_text(1600), "16");
    }

    #[test]
    fn records_and_quoting() {
        let r = parse_records(b"a\x1fb\0c\0part");
        assert_eq!(
            r,
            vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["c".to_string()]
            ]
        );
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit("a\\b'"), "E'a\\\\b'''");
        assert_eq!(crate::source::percent_decode("a%20b%zz%4"), "a b%zz%4");
    }

    #[test]
    fn guc_lists_split_like_postgres() {
        assert_eq!(
            split_guc_list("\"my schema\", public"),
            vec!["my schema", "public"]
        );
        assert_eq!(split_guc_list("\"$user\", public"), vec!["$user", "public"]);
        assert_eq!(split_guc_list("a"), vec!["a"]);
        let p = Prop::Setting {
            role: String::new(),
            name: "search_path".into(),
            value: "\"my schema\", public".into(),
        };
        assert_eq!(
            p.sql("d"),
            "ALTER DATABASE \"d\" SET \"search_path\" TO 'my schema', 'public'"
        );
    }

    #[test]
    fn scratch_names_and_markers_are_recognised() {
        let n = derived_name("shop", "_coffer_");
        assert!(is_derived_name(&n, "shop", "_coffer_"));
        assert!(!is_derived_name(&n, "shop", "_coffer_old_"));
        assert!(!is_derived_name("shop", "shop", "_coffer_"));
        assert!(!is_derived_name(
            "shop_coffer_old_0123abcd",
            "shop",
            "_coffer_"
        ));
        assert!(!is_derived_name(
            "shop_coffer_0123abcdx",
            "shop",
            "_coffer_"
        ));
        let long = "x".repeat(80);
        assert!(is_derived_name(
            &derived_name(&long, "_coffer_"),
            &long,
            "_coffer_"
        ));
        assert!(is_drill_name(&derived_name("coffer_drill_0a1b", "_")));
        assert!(!is_drill_name("coffer_drill_0a1b"));
        let o = marker_owner(&marker()).unwrap();
        assert_eq!(o.pid, std::process::id());
        assert_eq!(o.host, crate::repo::host_name());
        assert_eq!(marker_owner("a comment"), None);
    }

    #[test]
    fn derived_names_fit_identifiers() {
        let long = "x".repeat(80);
        let n = derived_name(&long, "_coffer_old_");
        assert_eq!(n.len(), MAX_IDENT);
        assert!(n.contains("_coffer_old_"));
        let n = derived_name("shop", "_coffer_");
        assert!(n.starts_with("shop_coffer_") && n.len() == "shop_coffer_".len() + 8);
    }
}
