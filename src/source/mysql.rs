//! `mysql` sources: MySQL and MariaDB.
//!
//! # Snapshot
//!
//! One stream, `dump.sql`: the SQL text of `mariadb-dump` (or `mysqldump`,
//! whichever is installed; `mariadb-dump` first) run with
//! `--single-transaction --routines --triggers --events --hex-blob
//! --default-character-set=utf8mb4` on the one configured database, *without*
//! `--databases`: the dump holds no `CREATE DATABASE` or `USE`, so it loads
//! into a database of any name (`--to-database`, `coffer dump ... | mysql
//! neworders`). The tool's stdout is streamed into the archive; nothing is
//! written to local disk and only a chunk is held in memory.
//!
//! A dump is stored only when the tool exited 0 *and* its output ends with
//! the `-- Dump completed` line that mysqldump writes last (`--comments` is
//! passed so that an option file cannot switch it off). Only the last few
//! hundred bytes are kept to check this. A tool that fails, is killed, or
//! stops early therefore never yields a good-looking archive.
//!
//! Passwords never appear on a command line or in a message: they reach the
//! tools as `MYSQL_PWD` in their environment, from `password_file`,
//! `password_env` or the URL (in that order; without any, the tools' own
//! defaults apply: `MYSQL_PWD`, `~/.my.cnf`). URLs in messages and manifests
//! are written without the password.
//!
//! The manifest details record the dump tool and its version, the client,
//! the server version, the database's character set and collation, the
//! format (`sql`), the main stream, and `tables`: `{"name": rows}` for every
//! base table. The row counts are counted *in the dump itself* while it is
//! stored (a small state machine follows `CREATE TABLE` and `INSERT INTO ...
//! VALUES (...),(...);` statements outside `DELIMITER` blocks, quotes and
//! escapes included). They are thus exactly what the dump holds, also while
//! the application writes during the snapshot, which `SELECT COUNT(*)` in a
//! second transaction could not promise (MySQL cannot share a snapshot
//! between connections).
//!
//! # Restore
//!
//! Into the configured database only with `--force`; `--to-database URL`
//! restores into another database, created if missing, and needs `--force`
//! when that database already holds tables, views, routines or events.
//!
//! * Target database missing: it is created (with the snapshot's character
//!   set and collation where the server knows them) and the dump is loaded
//!   into it; if the load fails, the database is dropped again.
//! * Target database exists: the dump is first loaded into a temporary
//!   database on the same server, `<db>_coffer_<random>`. The archive is
//!   authenticated to its last byte before the client sees its end, so a
//!   damaged archive, a dump the server rejects, or a lost connection all
//!   fail here, and the target is left exactly as it was. Only then is the
//!   target dropped and created again (keeping its character set and
//!   collation; grants on it survive `DROP DATABASE`), and the temporary
//!   database copied into it with the dump tool piped into the client
//!   (streamed, never on disk), and the temporary database dropped. So the
//!   target afterwards holds exactly the snapshot's objects: tables, views,
//!   triggers, routines and events created since are gone.
//!
//!   Why not `RENAME TABLE tmp.t TO db.t`, which is atomic and faster? It
//!   cannot move tables that have triggers to another database, nor views,
//!   routines or events; re-creating those by hand would duplicate what the
//!   dump tool does correctly. The price is loading the data twice. If the
//!   second step fails (server gone, disk full), the target may be
//!   incomplete: the error says so, and the temporary database, which holds
//!   the snapshot's complete copy, is kept for the user to copy from.
//!
//! `DROP DATABASE` waits at most 60 s for locks held by other sessions; stop
//! the application first (`before_restore` hook).
//!
//! A restore or drill killed on the way leaves its temporary database. Its
//! name carries its maker, `<db>_coffer_<pid>_<host tag>_<random>`; the next
//! restore of `<db>` (a drill: the next drill on that server) drops the ones
//! made on this host by a process that no longer runs, and says so;
//! `coffer check` reports the others (an older coffer's
//! `<db>_coffer_<random>` names no maker, so nothing drops it). Dropping
//! one loses nothing: it holds a snapshot that is in the repository.
//!
//! # Drill
//!
//! Creates `coffer_drill_<snapshot id>_<random>` on the `--scratch-url`
//! server (else the configured one; `CREATE DATABASE` without `IF NOT
//! EXISTS`, so it never reuses an existing database), loads the dump, times
//! the load, counts the rows of every base table and compares them with the
//! recorded `tables`, and drops the scratch database in every case.
//!
//! Events in a restored dump are live as soon as they are created, in the
//! temporary and scratch databases too, where the server's event scheduler
//! is on. `jobs` has no effect: the tools load and dump on one connection.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::stream::{ToolSpec, feed_tool, tool_stream};
use super::{
    DbRestore, DbRestored, Details, DrillRequest, DrillResult, DumpStream, Dumper, SourceError,
    Streams, configured_password,
};
use crate::config::SourceConfig;

/// The one stream a MySQL source stores.
pub const STREAM: &str = "dump.sql";

/// How long `DROP DATABASE` of a restore target waits for other sessions'
/// locks before it gives up (seconds).
const LOCK_WAIT_SECS: u32 = 60;

/// Dump options, besides the connection and the database name.
const DUMP_FLAGS: &[&str] = &[
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--no-tablespaces",
    "--comments",
    "--add-drop-table",
    "--quick",
    "--max-allowed-packet=1G",
];

// ------------------------------------------------------------- connection

/// The one secret of coffer's environment the MySQL/MariaDB tools get: their
/// own password, when the user gives it as `MYSQL_PWD`.
const PASS: &[&str] = &["MYSQL_PWD"];

/// Where a database is, parsed from `mysql://user[:pass]@host[:port]/db`
/// (or `mariadb://`; `?socket=/path` for a Unix socket; `?password=` as a
/// password in the user info, which wins).
#[derive(Clone, Debug)]
struct Conn {
    scheme: String,
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    socket: Option<String>,
    database: String,
}

impl Conn {
    /// Parses a URL. `need_db`: the path must name a database.
    fn parse(url: &str, what: &str, need_db: bool) -> Result<Conn, SourceError> {
        let bad = |why: &str| {
            SourceError::Usage(format!(
                "{what} {:?} is not a MySQL/MariaDB URL ({why}); write mysql://user@host:port/database",
                super::redact_url(url)
            ))
        };
        let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let scheme = u.scheme().to_string();
        if scheme != "mysql" && scheme != "mariadb" {
            return Err(bad("the scheme must be mysql:// or mariadb://"));
        }
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => "localhost".to_string(),
        };
        let user = (!u.username().is_empty()).then(|| super::percent_decode(u.username()));
        let mut password = u.password().map(super::percent_decode);
        let database = super::percent_decode(u.path().trim_start_matches('/'));
        if database.contains('/') {
            return Err(bad("the path must be one database name"));
        }
        if need_db && database.is_empty() {
            return Err(bad("it names no database"));
        }
        let mut socket = None;
        for (k, v) in u.query_pairs() {
            match &*k {
                "socket" => socket = Some(v.into_owned()),
                // Kept apart like a password in the user info: it reaches the
                // tools as MYSQL_PWD and is never shown (issue 10 item 7).
                "password" => {
                    password.get_or_insert_with(|| v.into_owned());
                }
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?}; only socket= and password="
                    )));
                }
            }
        }
        Ok(Conn {
            scheme,
            host,
            port: u.port().unwrap_or(3306),
            user,
            password,
            socket,
            database,
        })
    }

    /// The same server, another database.
    fn with_db(&self, db: &str) -> Conn {
        Conn {
            database: db.to_string(),
            ..self.clone()
        }
    }

    /// The same server and account.
    fn same_account(&self, o: &Conn) -> bool {
        self.host == o.host && self.port == o.port && self.user == o.user && self.socket == o.socket
    }

    /// The URL as the user would name it, never with the password.
    fn display(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let socket = self
            .socket
            .as_ref()
            .map(|s| format!("?socket={s}"))
            .unwrap_or_default();
        format!(
            "{}://{user}{host}:{}/{}{socket}",
            self.scheme, self.port, self.database
        )
    }

    /// "database `orders` at 127.0.0.1:3306", for messages.
    fn describe(&self) -> String {
        format!("database `{}` at {}", self.database, self.server())
    }

    fn server(&self) -> String {
        match &self.socket {
            Some(s) => s.clone(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// Connection options for every tool (no password: see [`Conn::env`]).
    fn args(&self) -> Vec<String> {
        let mut v = vec![
            format!("--host={}", self.host),
            format!("--port={}", self.port),
        ];
        if let Some(u) = &self.user {
            v.push(format!("--user={u}"));
        }
        if let Some(s) = &self.socket {
            v.push(format!("--socket={s}"));
        }
        v
    }

    /// The password goes to the tools in their environment only.
    fn env(&self) -> Vec<(String, String)> {
        self.password
            .iter()
            .map(|p| ("MYSQL_PWD".to_string(), p.clone()))
            .collect()
    }

    fn spec(&self, what: String, argv: Vec<String>) -> ToolSpec {
        let mut s = ToolSpec::new(what, argv).pass(PASS);
        for (k, v) in self.env() {
            s = s.env(k, v);
        }
        s
    }
}

/// The configured source's connection, with its password.
fn configured_conn(src: &SourceConfig) -> Result<Conn, SourceError> {
    let url = src.url.as_deref().ok_or_else(|| {
        SourceError::Usage(format!(
            "source {} has no `url` (mysql://user@host:port/database)",
            src.name
        ))
    })?;
    let mut c = Conn::parse(url, &format!("source {}: `url`", src.name), true)?;
    if let Some(p) = configured_password(src)? {
        c.password = Some(p);
    }
    Ok(c)
}

/// A connection named by the user (`--to-database`, `--scratch-url`): its
/// own password, or the configured source's when it is the same account.
fn other_conn(
    url: &str,
    what: &str,
    need_db: bool,
    config: Option<&SourceConfig>,
) -> Result<Conn, SourceError> {
    let mut c = Conn::parse(url, what, need_db)?;
    if c.password.is_none()
        && let Some(src) = config
        && let Ok(cfg) = configured_conn(src)
        && cfg.same_account(&c)
    {
        c.password = cfg.password;
    }
    Ok(c)
}

// ------------------------------------------------------------------ tools

fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

fn find_tool(names: &[&'static str], what: &str) -> Result<&'static str, SourceError> {
    names.iter().copied().find(|n| on_path(n)).ok_or_else(|| {
        SourceError::Failed(format!(
            "neither {} ({what}) is installed (not found on PATH); install the MariaDB or MySQL client package",
            names.join(" nor ")
        ))
    })
}

/// `mariadb` or `mysql`.
fn client_tool() -> Result<&'static str, SourceError> {
    find_tool(&["mariadb", "mysql"], "the MySQL/MariaDB client")
}

/// `mariadb-dump` or `mysqldump`.
fn dump_tool() -> Result<&'static str, SourceError> {
    find_tool(
        &["mariadb-dump", "mysqldump"],
        "the MySQL/MariaDB dump tool",
    )
}

/// A dump tool and the flags its flavour needs.
struct DumpTool {
    name: &'static str,
    version: String,
}

impl DumpTool {
    fn find() -> Result<DumpTool, SourceError> {
        let name = dump_tool()?;
        let version = ToolSpec::new(
            format!("{name} --version"),
            vec![name.into(), "--version".into()],
        )
        .output()?
        .trim()
        .to_string();
        Ok(DumpTool { name, version })
    }

    fn flags(&self) -> Vec<String> {
        let mut v: Vec<String> = DUMP_FLAGS.iter().map(|s| s.to_string()).collect();
        // MySQL's own mysqldump writes `SET @@GLOBAL.GTID_PURGED` on GTID
        // servers, which fails to load anywhere else; MariaDB's has no such
        // option.
        if !self.version.contains("MariaDB") {
            v.push("--set-gtid-purged=OFF".into());
        }
        v
    }

    fn spec(&self, conn: &Conn) -> ToolSpec {
        let mut argv = vec![self.name.to_string()];
        argv.extend(conn.args());
        argv.extend(self.flags());
        argv.push("--".into());
        argv.push(conn.database.clone());
        conn.spec(format!("{} of {}", self.name, conn.describe()), argv)
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// Undoes the client's `--batch` escaping of a field.
fn unescape_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Drops the failing statement that the MariaDB client echoes between
/// dashed lines before its `ERROR` line (an `INSERT` of a dump can be
/// long, and holds data).
fn tidy(msg: &str) -> String {
    match (msg.find("--------------"), msg.rfind("ERROR ")) {
        (Some(a), Some(e)) if a < e => format!("{}{}", &msg[..a], &msg[e..]),
        _ => msg.to_string(),
    }
}

fn tidy_err(e: SourceError) -> SourceError {
    match e {
        SourceError::Failed(m) => SourceError::Failed(tidy(&m)),
        other => other,
    }
}

/// Runs SQL (on the client's stdin) and returns the result rows. `db`:
/// connect to that database (`DATABASE()` in the SQL).
fn query(
    conn: &Conn,
    db: Option<&str>,
    sql: &str,
    what: &str,
) -> Result<Vec<Vec<String>>, SourceError> {
    let client = client_tool()?;
    let mut c = crate::childenv::command(client, PASS);
    c.args(conn.args()).args([
        "--batch",
        "--skip-column-names",
        "--default-character-set=utf8mb4",
        "--connect-timeout=10",
    ]);
    if let Some(d) = db {
        c.arg(format!("--database={d}"));
    }
    for (k, v) in conn.env() {
        c.env(k, v);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| SourceError::Failed(format!("{what}: cannot start {client}: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let sql = sql.to_string();
    // A client that fails early closes its stdin: its status says why.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(sql.as_bytes());
    });
    let out = child
        .wait_with_output()
        .map_err(|e| SourceError::Failed(format!("{what}: {client}: {e}")))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(SourceError::Failed(format!(
            "{what}: {client} failed ({}): {}",
            describe_status(out.status),
            tidy(String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(unescape_field).collect())
        .collect())
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A character set or collation name as the server reports it (safe to
/// put in SQL unquoted).
fn plain_name(s: &str) -> Option<&str> {
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some(s)
}

/// A database's default character set and collation.
#[derive(Clone, Debug, Default)]
struct Charset {
    charset: Option<String>,
    collation: Option<String>,
}

impl Charset {
    fn recorded(details: &Details) -> Charset {
        let get = |k: &str| {
            details
                .get(k)
                .and_then(|v| v.as_str())
                .and_then(plain_name)
                .map(str::to_string)
        };
        Charset {
            charset: get("charset"),
            collation: get("collation"),
        }
    }

    /// `CREATE DATABASE` clauses, most specific first (a server may not know
    /// another flavour's collation).
    fn clauses(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let (Some(cs), Some(co)) = (&self.charset, &self.collation) {
            v.push(format!(" CHARACTER SET {cs} COLLATE {co}"));
        }
        if let Some(cs) = &self.charset {
            v.push(format!(" CHARACTER SET {cs}"));
        }
        v.push(String::new());
        v
    }
}

/// The databases of a server the account can see, with their charsets.
fn databases(conn: &Conn) -> Result<BTreeMap<String, Charset>, SourceError> {
    let rows = query(
        conn,
        None,
        "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA",
        &format!("listing the databases at {}", conn.server()),
    )?;
    Ok(rows
        .into_iter()
        .filter(|r| r.len() == 3)
        .map(|r| {
            (
                r[0].clone(),
                Charset {
                    charset: plain_name(&r[1]).map(str::to_string),
                    collation: plain_name(&r[2]).map(str::to_string),
                },
            )
        })
        .collect())
}

/// What a database holds: tables (and views), routines, events.
fn object_counts(conn: &Conn) -> Result<(u64, u64, u64), SourceError> {
    let rows = query(
        conn,
        Some(&conn.database),
        "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()), \
         (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()), \
         (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE())",
        &format!("looking into {}", conn.describe()),
    )?;
    let n = |i: usize| {
        rows.first()
            .and_then(|r| r.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((n(0), n(1), n(2)))
}

/// Creates a database (never one that exists). `why`: said when the
/// account may not.
fn create_database(server: &Conn, name: &str, cs: &Charset, why: &str) -> Result<(), SourceError> {
    let what = format!("creating database `{name}` at {}", server.server());
    let mut last = None;
    for clause in cs.clauses() {
        let sql = format!("CREATE DATABASE {}{clause}", quote_ident(name));
        match query(server, None, &sql, &what) {
            Ok(_) => return Ok(()),
            // Unknown character set (1115) or collation (1273): try plainer.
            Err(SourceError::Failed(m)) if m.contains("1115") || m.contains("1273") => {
                last = Some(SourceError::Failed(m));
            }
            Err(SourceError::Failed(m)) if m.contains("1044") && !why.is_empty() => {
                return Err(SourceError::Failed(format!("{m}; {why}")));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(SourceError::Failed(what)))
}

fn drop_database(server: &Conn, name: &str) -> Result<(), SourceError> {
    query(
        server,
        None,
        &format!("DROP DATABASE IF EXISTS {}", quote_ident(name)),
        &format!("dropping database `{name}` at {}", server.server()),
    )
    .map(|_| ())
}

/// A new database name, `<base>_<tag>_<pid>_<host tag>_<random>`, at most
/// 64 characters (`CREATE DATABASE` without `IF NOT EXISTS` makes sure it
/// is free). The maker is in the name, so a later run can prove the
/// database abandoned when this process is killed (issue 11): MySQL has no
/// database comment to carry it, a marker table would be restored with the
/// data, and a name leaves no moment between creating the database and
/// marking it.
fn fresh_name(base: &str, tag: &str) -> String {
    let suffix = format!(
        "_{tag}_{}_{}_{}",
        std::process::id(),
        crate::abandoned::host_tag(),
        crate::crypto::random_id(4)
    );
    format!("{}{suffix}", truncated(base, 64 - suffix.len().min(64)))
}

/// `base` cut (at a character boundary) to at most `max` bytes.
fn truncated(base: &str, max: usize) -> &str {
    let mut b = base;
    while b.len() > max {
        let mut chars = b.chars();
        chars.next_back();
        b = chars.as_str();
    }
    b
}

fn is_hex8(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a database name says of its maker when `fresh_name(base, tag)`
/// gave it: `Some(Some(owner))`; `Some(None)` for an older coffer's
/// `<base>_<tag>_<random>`, which names none; `None` when coffer did not
/// make it.
fn fresh_name_owner(name: &str, base: &str, tag: &str) -> Option<Option<crate::abandoned::Owner>> {
    let head_is = |head: &str| {
        head.strip_suffix(tag)
            .and_then(|h| h.strip_suffix('_'))
            .is_some_and(|b| name.len() <= 64 && b == truncated(base, 64 - (name.len() - b.len())))
    };
    let (head, random) = name.rsplit_once('_')?;
    if !is_hex8(random) {
        return None;
    }
    if let Some((rest, host)) = head.rsplit_once('_')
        && is_hex8(host)
        && let Some((rest, pid)) = rest.rsplit_once('_')
        && !pid.is_empty()
        && pid.bytes().all(|c| c.is_ascii_digit())
        && let Ok(pid) = pid.parse()
        && head_is(rest)
    {
        return Some(Some(crate::abandoned::Owner {
            pid,
            host: host.to_string(),
        }));
    }
    head_is(head).then_some(None)
}

/// The owner named by a drill's scratch database,
/// `coffer_drill_<snapshot>_<pid>_<host tag>_<random>`.
fn drill_name_owner(name: &str) -> Option<crate::abandoned::Owner> {
    let rest = name.strip_prefix("coffer_drill_")?;
    let (snap, _) = rest.split_once('_')?;
    if snap.is_empty() || snap.len() > 16 || !snap.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    fresh_name_owner(name, "coffer_drill", snap).flatten()
}

/// The scratch databases killed restores of `db` (with `drills`, killed
/// drills too) left on `server`, each with the verdict on its maker.
fn scratch_leftovers(
    server: &Conn,
    db: Option<&str>,
    drills: bool,
) -> Result<Vec<(String, crate::abandoned::Verdict)>, SourceError> {
    let host = crate::abandoned::host_tag();
    Ok(databases(server)?
        .into_keys()
        .filter(|n| Some(n.as_str()) != db)
        .filter_map(|n| {
            let restore = db.and_then(|db| fresh_name_owner(&n, db, "coffer"));
            let owner = match restore {
                Some(owner) => owner,
                None if drills => Some(drill_name_owner(&n)?),
                None => return None,
            };
            let verdict = crate::abandoned::judge(owner, &host);
            Some((n, verdict))
        })
        .collect())
}

/// Drops the scratch databases of restores of `db` (with `drills`,
/// drills' too) on `server` that are provably abandoned: the exact scratch name pattern
/// naming this host and a process that no longer runs. The snapshot it
/// held is still in the repository (a restore killed mid-copy leaves the
/// target incomplete, and the restore that drops it then fills the target
/// again). Says so on stderr; a failure to look only warns.
fn drop_abandoned(server: &Conn, db: Option<&str>, drills: bool) {
    let found = match scratch_leftovers(server, db, drills) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                "could not look for scratch databases left by a killed restore at {}: {e}",
                server.server()
            );
            return;
        }
    };
    for (name, verdict) in found {
        let crate::abandoned::Verdict::Abandoned(owner) = &verdict else {
            tracing::warn!(
                "database `{name}` looks like a left-over of a killed coffer restore or drill, left as it is: {}",
                verdict.describe()
            );
            continue;
        };
        match drop_database(server, &name) {
            Ok(()) => crate::abandoned::removed(format!(
                "dropped database `{name}`: a scratch database left by a killed coffer restore or drill (process {} on this host, no longer running)",
                owner.pid
            )),
            Err(e) => tracing::warn!(
                "database `{name}` was left by a killed coffer restore or drill (process {}, no longer running) but could not be dropped: {e}; drop it by hand",
                owner.pid
            ),
        }
    }
}

/// For `coffer check`: the temporary databases a killed restore of `src`
/// left, each with what is known of its maker; not those of a process
/// still running (a restore in progress).
pub fn leftovers(src: &SourceConfig) -> Result<Vec<String>, SourceError> {
    let conn = configured_conn(src)?;
    Ok(scratch_leftovers(&conn, Some(&conn.database), false)?
        .into_iter()
        .filter(|(_, v)| !matches!(v, crate::abandoned::Verdict::Running(_)))
        .map(|(name, v)| format!("database `{name}`: {}", v.describe()))
        .collect())
}

// ------------------------------------------------------------- dump scan

/// How much of a dump's end is kept to find `-- Dump completed`.
const TAIL_KEEP: usize = 512;
/// The longest table name the scanner follows (bytes, escaped).
const NAME_MAX: usize = 1024;

#[derive(Debug)]
enum ScanState {
    /// At a line's start, collecting its first bytes in `line`.
    Line,
    /// Ignoring the rest of a line.
    Skip,
    /// Inside the backquoted table name of `CREATE TABLE` or `INSERT`.
    Name { insert: bool, tick: bool },
    /// Between an `INSERT`'s table name and `VALUES`.
    Head { in_ident: bool, matched: usize },
    /// The row tuples of an `INSERT`, up to its `;`.
    Values {
        depth: u32,
        quote: Option<u8>,
        esc: bool,
    },
}

/// Follows a mysqldump stream as it passes: counts each table's rows and
/// keeps the stream's last bytes. Memory: the tail, one line start, and one
/// counter per table.
#[derive(Debug)]
struct DumpScan {
    state: ScanState,
    line: Vec<u8>,
    name: Vec<u8>,
    /// The `DELIMITER` is `;` (outside trigger, routine and event bodies).
    plain_delimiter: bool,
    table: String,
    tables: BTreeMap<String, u64>,
    tail: Vec<u8>,
    eof: bool,
}

const STATEMENTS: &[&[u8]] = &[
    b"INSERT INTO `",
    b"INSERT IGNORE INTO `",
    b"REPLACE INTO `",
    b"CREATE TABLE `",
];
const DELIMITER: &[u8] = b"DELIMITER ";

impl DumpScan {
    fn new() -> DumpScan {
        DumpScan {
            state: ScanState::Line,
            line: Vec::new(),
            name: Vec::new(),
            plain_delimiter: true,
            table: String::new(),
            tables: BTreeMap::new(),
            tail: Vec::new(),
            eof: false,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if data.len() >= TAIL_KEEP {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TAIL_KEEP..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > TAIL_KEEP {
                let cut = self.tail.len() - TAIL_KEEP;
                self.tail.drain(..cut);
            }
        }
        let mut i = 0;
        while i < data.len() {
            if let ScanState::Skip = self.state {
                match data[i..].iter().position(|&b| b == b'\n') {
                    Some(k) => {
                        i += k + 1;
                        self.state = ScanState::Line;
                        self.line.clear();
                    }
                    None => i = data.len(),
                }
                continue;
            }
            self.step(data[i]);
            i += 1;
        }
    }

    fn step(&mut self, b: u8) {
        match &mut self.state {
            ScanState::Skip => {
                if b == b'\n' {
                    self.state = ScanState::Line;
                    self.line.clear();
                }
            }
            ScanState::Line => {
                if b == b'\n' {
                    if let Some(d) = self.line.strip_prefix(DELIMITER) {
                        self.plain_delimiter = d.trim_ascii() == b";";
                    }
                    self.line.clear();
                    return;
                }
                self.line.push(b);
                if self.line.len() <= DELIMITER.len() {
                    if DELIMITER.starts_with(&self.line) {
                        return;
                    }
                } else if self.line.starts_with(DELIMITER) {
                    if self.line.len() > 64 {
                        self.state = ScanState::Skip;
                    }
                    return;
                }
                if !self.plain_delimiter {
                    self.state = ScanState::Skip;
                    return;
                }
                let mut prefix = false;
                for (k, s) in STATEMENTS.iter().enumerate() {
                    if self.line[..] == s[..] {
                        self.name.clear();
                        self.state = ScanState::Name {
                            insert: k < 3,
                            tick: false,
                        };
                        return;
                    }
                    prefix |= s.starts_with(&self.line);
                }
                if !prefix {
                    self.state = ScanState::Skip;
                }
            }
            ScanState::Name { insert, tick } => {
                if b == b'`' {
                    if *tick {
                        self.name.push(b'`');
                        *tick = false;
                    } else {
                        *tick = true;
                    }
                    return;
                }
                if !*tick {
                    self.name.push(b);
                    if self.name.len() > NAME_MAX {
                        self.state = ScanState::Skip;
                    }
                    return;
                }
                // The name ended at the previous backquote.
                let name = String::from_utf8_lossy(&self.name).into_owned();
                let insert = *insert;
                self.tables.entry(name.clone()).or_insert(0);
                if insert {
                    self.table = name;
                    self.state = ScanState::Head {
                        in_ident: false,
                        matched: 0,
                    };
                    self.step(b);
                } else {
                    self.state = ScanState::Skip;
                    if b == b'\n' {
                        self.step(b);
                    }
                }
            }
            ScanState::Head { in_ident, matched } => {
                const VALUES: &[u8] = b"VALUES";
                if b == b'`' {
                    *in_ident = !*in_ident;
                    *matched = 0;
                } else if !*in_ident {
                    if b == b';' {
                        // Not a VALUES insert (INSERT ... SELECT): no rows to count.
                        self.state = ScanState::Skip;
                    } else if b == VALUES[*matched] {
                        *matched += 1;
                        if *matched == VALUES.len() {
                            self.state = ScanState::Values {
                                depth: 0,
                                quote: None,
                                esc: false,
                            };
                        }
                    } else {
                        *matched = usize::from(b == VALUES[0]);
                    }
                }
            }
            ScanState::Values { depth, quote, esc } => {
                if let Some(q) = *quote {
                    if *esc {
                        *esc = false;
                    } else if b == b'\\' {
                        *esc = true;
                    } else if b == q {
                        *quote = None;
                    }
                    return;
                }
                match b {
                    b'\'' | b'"' => *quote = Some(b),
                    b'(' => {
                        if *depth == 0 {
                            *self.tables.entry(self.table.clone()).or_insert(0) += 1;
                        }
                        *depth += 1;
                    }
                    b')' => *depth = depth.saturating_sub(1),
                    b';' if *depth == 0 => self.state = ScanState::Skip,
                    _ => {}
                }
            }
        }
    }

    /// The stream ended with mysqldump's last line.
    fn complete(&self) -> bool {
        let t = self.tail.trim_ascii_end();
        let last = match t.iter().rposition(|&b| b == b'\n') {
            Some(k) => &t[k + 1..],
            None => t,
        };
        last.starts_with(b"-- Dump completed")
    }
}

/// Passes a dump through, showing every byte to a [`DumpScan`].
struct ScanReader<R> {
    inner: R,
    scan: Arc<Mutex<DumpScan>>,
}

impl<R: Read> Read for ScanReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.scan.lock().unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            s.eof = true;
        } else {
            s.feed(&buf[..n]);
        }
        Ok(n)
    }
}

const INCOMPLETE: &str = "its output does not end with the `-- Dump completed` line that the dump tool writes last, so the dump is incomplete";

// ---------------------------------------------------------------- snapshot

pub struct MysqlDumper {
    conn: Conn,
    tool: Option<DumpTool>,
    scan: Arc<Mutex<DumpScan>>,
    started: bool,
}

impl MysqlDumper {
    pub fn new(src: &SourceConfig) -> Result<Self, SourceError> {
        Ok(MysqlDumper {
            conn: configured_conn(src)?,
            tool: None,
            scan: Arc::new(Mutex::new(DumpScan::new())),
            started: false,
        })
    }
}

impl Dumper for MysqlDumper {
    fn prepare(&mut self, details: &mut Details) -> Result<(), SourceError> {
        let client = client_tool()?;
        let tool = DumpTool::find()?;
        let rows = query(
            &self.conn,
            Some(&self.conn.database),
            "SELECT VERSION(), @@character_set_database, @@collation_database",
            &format!("connecting to {}", self.conn.display()),
        )
        .map_err(|e| {
            let m = e.to_string();
            let hint = if m.contains("Access denied") {
                "check the user and the password (password_file, password_env, MYSQL_PWD or the url) and the user's grants"
            } else if m.contains("Unknown database") {
                "check the database name in `url`"
            } else if m.contains("Can't connect") || m.contains("Unknown server host") {
                "check that the server runs and listens at the host and port in `url`"
            } else {
                "check the server and the `url`"
            };
            SourceError::Failed(format!("{m}; {hint}"))
        })?;
        let row = rows.first().cloned().unwrap_or_default();
        let field = |i: usize| row.get(i).cloned().unwrap_or_default();
        details.insert("url".into(), self.conn.display().into());
        details.insert("database".into(), self.conn.database.clone().into());
        details.insert("server_version".into(), field(0).into());
        details.insert("charset".into(), field(1).into());
        details.insert("collation".into(), field(2).into());
        details.insert("tool".into(), tool.name.into());
        details.insert("tool_version".into(), tool.version.clone().into());
        details.insert("client".into(), client.into());
        details.insert("dump_options".into(), tool.flags().into());
        details.insert("format".into(), "sql".into());
        details.insert("main_stream".into(), STREAM.into());
        details.insert(
            "row_counts".into(),
            "counted in the dump as it was stored".into(),
        );
        self.tool = Some(tool);
        Ok(())
    }

    fn next_stream(&mut self) -> Result<Option<DumpStream>, SourceError> {
        if self.started {
            return Ok(None);
        }
        self.started = true;
        let tool = match &self.tool {
            Some(t) => t,
            None => self.tool.insert(DumpTool::find()?),
        };
        let spec = tool.spec(&self.conn);
        let what = spec.what.clone();
        let s = tool_stream(STREAM, &spec)?;
        let scan = self.scan.clone();
        let done = s.done;
        Ok(Some(DumpStream {
            name: STREAM.to_string(),
            reader: Box::new(ScanReader {
                inner: s.reader,
                scan: self.scan.clone(),
            }),
            done: Box::new(move || {
                done()?;
                let s = scan.lock().unwrap_or_else(|e| e.into_inner());
                // Unread to its end, the pipeline failed first and says why.
                if s.eof && !s.complete() {
                    return Err(SourceError::Failed(format!(
                        "{what} exited 0, but {INCOMPLETE}; nothing was stored"
                    )));
                }
                Ok(())
            }),
        }))
    }

    fn finish(&mut self, details: &mut Details) -> Result<(), SourceError> {
        let s = self.scan.lock().unwrap_or_else(|e| e.into_inner());
        details.insert(
            "tables".into(),
            serde_json::to_value(&s.tables).expect("counts serialise"),
        );
        Ok(())
    }
}

// ----------------------------------------------------------------- restore

/// Where a restore goes.
struct Target {
    conn: Conn,
    /// `--to-database`, not the configured database.
    other: bool,
}

fn target(req: &DbRestore) -> Result<Target, SourceError> {
    if let Some(url) = req.to_database {
        return Ok(Target {
            conn: other_conn(url, "--to-database", true, req.config)?,
            other: true,
        });
    }
    let cfg = req.config.ok_or_else(|| {
        SourceError::Usage(format!(
            "source {} is not in the config any more, so its database is unknown; name one with --to-database mysql://user@host:port/database",
            req.source
        ))
    })?;
    Ok(Target {
        conn: configured_conn(cfg)?,
        other: false,
    })
}

pub fn destination(req: &DbRestore) -> Result<String, SourceError> {
    let t = target(req)?;
    if !t.other {
        if !req.force {
            return Err(SourceError::Usage(format!(
                "restoring source {} replaces {} with the snapshot's copy (tables and other objects created since are removed); add --force, or restore into another database with --to-database mysql://user@host:port/newdb",
                req.source,
                t.conn.describe()
            )));
        }
        return Ok(format!("{} (replaced)", t.conn.display()));
    }
    let dbs = databases(&t.conn)?;
    if !dbs.contains_key(&t.conn.database) {
        return Ok(format!("{} (created)", t.conn.display()));
    }
    let (tables, routines, events) = object_counts(&t.conn)?;
    if tables + routines + events > 0 && !req.force {
        return Err(SourceError::Usage(format!(
            "{} already exists and holds {tables} tables/views, {routines} routines and {events} events; add --force to replace its contents with the snapshot's, or name a database that does not exist yet",
            t.conn.describe()
        )));
    }
    Ok(format!("{} (replaced)", t.conn.display()))
}

/// Loads a stored dump into `conn`'s database; it must end complete.
fn load(conn: &Conn, r: &mut dyn Read) -> Result<u64, SourceError> {
    let client = client_tool()?;
    let mut argv = vec![client.to_string()];
    argv.extend(conn.args());
    argv.extend([
        "--binary-mode".to_string(),
        "--default-character-set=utf8mb4".into(),
        "--max-allowed-packet=1G".into(),
        "--connect-timeout=10".into(),
        format!("--database={}", conn.database),
    ]);
    let spec = conn.spec(
        format!("{client} loading the dump into {}", conn.describe()),
        argv,
    );
    let scan = Arc::new(Mutex::new(DumpScan::new()));
    let mut reader = ScanReader {
        inner: r,
        scan: scan.clone(),
    };
    let n = feed_tool(&spec, &mut reader).map_err(tidy_err)?;
    if !scan.lock().unwrap_or_else(|e| e.into_inner()).complete() {
        return Err(SourceError::Failed(format!(
            "the stored dump is incomplete: {INCOMPLETE}"
        )));
    }
    Ok(n)
}

/// Copies one database into another (empty) one on the same server: the
/// dump tool piped into the client.
fn copy_database(from: &Conn, to: &Conn) -> Result<(), SourceError> {
    let tool = DumpTool::find()?;
    let s = tool_stream(STREAM, &tool.spec(from))?;
    let mut reader = s.reader;
    let loaded = load(to, &mut reader);
    // Closing the pipe stops a dump the client no longer reads.
    drop(reader);
    let dumped = (s.done)();
    dumped?;
    loaded.map(|_| ())
}

/// The main stream of a stored source, handed to `f`.
fn with_main_stream<T>(
    req_details: &Details,
    source: &str,
    streams: &mut dyn Streams,
    mut f: impl FnMut(&mut dyn Read) -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    let want = req_details
        .get("main_stream")
        .and_then(|v| v.as_str())
        .unwrap_or(STREAM)
        .to_string();
    let mut out = None;
    while let Some((name, mut r)) = streams.next_stream()? {
        if name == want && out.is_none() {
            out = Some(f(&mut r)?);
        }
    }
    out.ok_or_else(|| {
        SourceError::Failed(format!(
            "source {source}: the snapshot holds no {want} stream to restore"
        ))
    })
}

pub fn restore(req: &DbRestore, streams: &mut dyn Streams) -> Result<DbRestored, SourceError> {
    destination(req)?;
    let t = target(req)?;
    let conn = &t.conn;
    let db = &conn.database;
    drop_abandoned(conn, Some(db), false);
    let dbs = databases(conn)?;
    let mut next_steps = Vec::new();
    let bytes = match dbs.get(db) {
        None => {
            create_database(conn, db, &Charset::recorded(req.details), "")?;
            with_main_stream(req.details, req.source, streams, |r| {
                load(conn, r).map_err(|e| {
                    let dropped = match drop_database(conn, db) {
                        Ok(()) => "it was dropped again".to_string(),
                        Err(d) => format!("dropping it again failed too: {d}"),
                    };
                    SourceError::Failed(format!(
                        "{e}; coffer had created {} for this restore, and {dropped}",
                        conn.describe()
                    ))
                })
            })?
        }
        Some(cs) => {
            let tmp = conn.with_db(&fresh_name(db, "coffer"));
            create_database(
                conn,
                &tmp.database,
                cs,
                &format!(
                    "the snapshot is first loaded into a temporary database beside `{db}`, so that a failure leaves `{db}` as it is: the account needs ALL on `{}\\_coffer\\_%`.* (or restore as a more privileged user)",
                    db.replace('_', "\\_")
                ),
            )?;
            let loaded = with_main_stream(req.details, req.source, streams, |r| load(&tmp, r));
            let bytes = match loaded {
                Ok(n) => n,
                Err(e) => {
                    let _ = drop_database(conn, &tmp.database);
                    return Err(SourceError::Failed(format!(
                        "{e}; {} was not changed",
                        conn.describe()
                    )));
                }
            };
            let replaced = query(
                conn,
                None,
                &format!(
                    "SET SESSION lock_wait_timeout = {LOCK_WAIT_SECS}; DROP DATABASE {q}; CREATE DATABASE {q}{c}",
                    q = quote_ident(db),
                    c = cs.clauses()[0]
                ),
                &format!("replacing {}", conn.describe()),
            )
            .and_then(|_| copy_database(&tmp, conn));
            if let Err(e) = replaced {
                return Err(SourceError::Failed(format!(
                    "{e}; {} may be incomplete now. The snapshot's complete copy is in database `{}` on the same server: run the restore again (which drops it), or copy it with `mariadb-dump {} | mariadb {}`, then drop `{}`",
                    conn.describe(),
                    tmp.database,
                    tmp.database,
                    db,
                    tmp.database
                )));
            }
            if let Err(e) = drop_database(conn, &tmp.database) {
                next_steps.push(format!(
                    "drop the temporary database `{}` ({e})",
                    tmp.database
                ));
            }
            bytes
        }
    };
    Ok(DbRestored {
        destination: conn.display(),
        bytes,
        next_steps,
    })
}

// ------------------------------------------------------------------- drill

/// The server scratch databases go to.
fn scratch_server(req: &DrillRequest) -> Result<Conn, SourceError> {
    if let Some(url) = req.scratch_url {
        return other_conn(url, "--scratch-url", false, req.config);
    }
    if let Some(cfg) = req.config {
        return configured_conn(cfg);
    }
    match req.details.get("url").and_then(|v| v.as_str()) {
        Some(u) => Conn::parse(u, "the recorded url", false),
        None => Err(SourceError::Usage(format!(
            "source {} is not in the config any more; say where to drill it with --scratch-url mysql://user@host:port",
            req.source
        ))),
    }
}

/// Row counts of the base tables of `conn`'s database.
fn count_rows(conn: &Conn) -> Result<BTreeMap<String, u64>, SourceError> {
    let what = format!("counting rows in {}", conn.describe());
    let names: Vec<String> = query(
        conn,
        Some(&conn.database),
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME",
        &what,
    )?
    .into_iter()
    .filter_map(|r| r.into_iter().next())
    .collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql: String = names
        .iter()
        .map(|n| format!("SELECT COUNT(*) FROM {};\n", quote_ident(n)))
        .collect();
    let rows = query(conn, Some(&conn.database), &sql, &what)?;
    if rows.len() != names.len() {
        return Err(SourceError::Failed(format!(
            "{what}: {} answers for {} tables",
            rows.len(),
            names.len()
        )));
    }
    Ok(names
        .into_iter()
        .zip(rows)
        .map(|(n, r)| {
            let c = r.first().and_then(|v| v.parse().ok()).unwrap_or(0);
            (n, c)
        })
        .collect())
}

pub fn drill(req: &DrillRequest, streams: &mut dyn Streams) -> Result<DrillResult, SourceError> {
    let server = scratch_server(req)?;
    let id: String = req
        .snapshot
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    drop_abandoned(&server, None, true);
    let scratch = server.with_db(&fresh_name("coffer_drill", &id));
    create_database(
        &server,
        &scratch.database,
        &Charset::recorded(req.details),
        "a drill needs an account that may create and drop its scratch databases: GRANT ALL ON `coffer\\_drill\\_%`.* TO it, or point --scratch-url at a server or account that may",
    )?;
    let started = Instant::now();
    let checked = (|| {
        with_main_stream(req.details, req.source, streams, |r| load(&scratch, r))?;
        let restore_ms = started.elapsed().as_millis() as u64;
        let actual = count_rows(&scratch)?;
        Ok::<_, SourceError>((restore_ms, actual))
    })();
    let dropped = drop_database(&server, &scratch.database);
    let (restore_ms, actual) = match checked {
        Ok(v) => v,
        Err(e) => {
            let note = match dropped {
                Ok(()) => "the scratch database was dropped".to_string(),
                Err(d) => format!(
                    "dropping the scratch database `{}` failed too ({d}); drop it by hand",
                    scratch.database
                ),
            };
            return Err(SourceError::Failed(format!(
                "restoring into scratch {} failed: {e}; {note}",
                scratch.describe()
            )));
        }
    };
    let mut checks = Vec::new();
    let mut failures = Vec::new();
    let expected: Option<BTreeMap<String, u64>> = req
        .details
        .get("tables")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    match &expected {
        Some(exp) => {
            for (t, want) in exp {
                match actual.get(t) {
                    Some(got) if got == want => {
                        checks.push(format!("{t}: {got} rows (expected {want})"))
                    }
                    Some(got) => failures.push(format!(
                        "{t}: {got} rows after the restore, {want} recorded at snapshot time"
                    )),
                    None => failures.push(format!(
                        "{t}: missing after the restore ({want} rows recorded at snapshot time)"
                    )),
                }
            }
            for (t, got) in &actual {
                if !exp.contains_key(t) {
                    failures.push(format!(
                        "{t}: {got} rows after the restore, but the snapshot recorded no such table"
                    ));
                }
            }
        }
        None => {
            for (t, got) in &actual {
                checks.push(format!("{t}: {got} rows (no count recorded)"));
            }
        }
    }
    let error = dropped.err().map(|e| {
        format!(
            "the check ran, but dropping the scratch database `{}` failed: {e}; drop it by hand",
            scratch.database
        )
    });
    Ok(DrillResult {
        name: req.source.to_string(),
        kind: "mysql".into(),
        ok: failures.is_empty() && error.is_none(),
        scratch: scratch.display(),
        restore_ms,
        checks,
        failures,
        error,
    })
}

// ------------------------------------------------------------ the kind

/// MySQL and MariaDB as a [`super::DatabaseSource`].
pub struct Mysql;

impl super::DatabaseSource for Mysql {
    fn kind(&self) -> crate::config::SourceKind {
        crate::config::SourceKind::Mysql
    }
    fn keys(&self) -> super::Keys {
        super::Keys {
            required: &["url"],
            allowed: &["url", "jobs", "password_file", "password_env"],
        }
    }
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
        Ok(Box::new(MysqlDumper::new(src)?))
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
        let server = detail_str(d, "server_version");
        let tool = detail_str(d, "tool_version");
        if let Some(why) = tool_too_old(&tool, &server) {
            return Err(format!(
                "{}: {why}; install the client tools of the server's version and put them first on PATH",
                detail_str(d, "url")
            ));
        }
        Ok(format!(
            "{}: server {server}, {} ({tool})",
            detail_str(d, "url"),
            detail_str(d, "tool"),
        ))
    }
    fn leftovers(&self, src: &SourceConfig) -> Result<Vec<String>, SourceError> {
        leftovers(src)
    }
}

/// The leading `major.minor` of a version text.
fn major_minor(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Why a MySQL/MariaDB dump tool is older than its server, if it is. The
/// tool's `--version` names the release it ships with after "Distrib" (or,
/// for MySQL 8, after "Ver"); tools of the other flavour are not compared
/// (their version numbers are unrelated).
pub fn tool_too_old(tool_version: &str, server_version: &str) -> Option<String> {
    if tool_version.contains("MariaDB") != server_version.contains("MariaDB") {
        return None;
    }
    let release = tool_version
        .split_once("Distrib ")
        .or_else(|| tool_version.split_once("Ver "))
        .map(|(_, r)| r)?;
    let tool = major_minor(release)?;
    let server = major_minor(server_version)?;
    (tool < server).then(|| {
        format!(
            "the dump tool ({}) is older than the server ({})",
            tool_version.trim(),
            server_version.trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(data: &[u8], piece: usize) -> DumpScan {
        let mut s = DumpScan::new();
        for c in data.chunks(piece) {
            s.feed(c);
        }
        s
    }

    const DUMP: &[u8] = b"/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump\n\
DROP TABLE IF EXISTS `empty`;\n\
CREATE TABLE `empty` (\n  `x` int\n);\n\
CREATE TABLE `we``ird` (\n  `x` int\n);\n\
INSERT INTO `we``ird` VALUES\n(1,'a\\'),(b;\\\\',0x00),\n(2,'(\"x\"',NULL);\n\
INSERT INTO `we``ird` (`a(`, `b`) VALUES (3,'it''s');\n\
/*!50001 CREATE TABLE `v` (\n  `x` int\n) */;\n\
DELIMITER ;;\n\
CREATE PROCEDURE `p`()\nBEGIN\nINSERT INTO `empty` VALUES (99),(100);\nEND ;;\n\
DELIMITER ;\n\
INSERT INTO `t2` VALUES (1);\n\
\n-- Dump completed on 2026-01-01  1:02:03\n";

    #[test]
    fn counts_rows_whatever_the_chunking() {
        for piece in [1, 2, 3, 7, 64, 4096] {
            let s = scan(DUMP, piece);
            let want: BTreeMap<String, u64> = [("empty", 0), ("we`ird", 3), ("t2", 1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(s.tables, want, "piece {piece}");
            assert!(s.complete(), "piece {piece}");
        }
    }

    #[test]
    fn incomplete_dump_is_noticed() {
        let cut = &DUMP[..DUMP.len() - 45];
        assert!(!scan(cut, 100).complete());
        let mut more = DUMP.to_vec();
        more.extend_from_slice(b"INSERT INTO `x` VALUES (1);\n");
        assert!(!scan(&more, 100).complete());
        assert!(!scan(b"", 1).complete());
    }

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let c = Conn::parse("mysql://app:s%40cret@db.example:3307/shop%2Dx", "url", true).unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.port, 3307);
        assert_eq!(c.database, "shop-x");
        assert_eq!(c.display(), "mysql://app@db.example:3307/shop-x");
        assert!(!c.args().join(" ").contains("s@cret"));
        assert_eq!(c.env(), vec![("MYSQL_PWD".into(), "s@cret".into())]);
        let e = Conn::parse("mysql://a:pw@h/", "url", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no database") && !e.contains("pw@"), "{e}");
        assert!(Conn::parse("postgres://h/db", "url", true).is_err());
        let s = Conn::parse("mariadb://root@localhost/db?socket=/run/m.sock", "u", true).unwrap();
        assert_eq!(s.socket.as_deref(), Some("/run/m.sock"));
        // Issue 10 item 7: `?password=` goes to MYSQL_PWD, never to a display.
        let q = Conn::parse("mysql://app@db/shop?password=q%26pw", "u", true).unwrap();
        assert_eq!(q.password.as_deref(), Some("q&pw"));
        assert_eq!(q.display(), "mysql://app@db:3306/shop");
        assert!(!q.args().join(" ").contains("pw"));
        let e = Conn::parse("mysql://app@db/shop?password=qpw&ssl=1", "u", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ssl\"") && !e.contains("qpw"), "{e}");
    }

    #[test]
    fn fresh_names_name_their_maker() {
        let me = crate::abandoned::Owner {
            pid: std::process::id(),
            host: crate::abandoned::host_tag(),
        };
        for base in ["shop", &"x".repeat(80), &"é".repeat(40), "a_b_1"] {
            let n = fresh_name(base, "coffer");
            assert!(n.len() <= 64, "{n}");
            assert_eq!(
                fresh_name_owner(&n, base, "coffer"),
                Some(Some(me.clone())),
                "{n}"
            );
            assert_eq!(fresh_name_owner(&n, "sho", "coffer"), None, "{n}");
        }
        // An older coffer's name: coffer's, no owner.
        assert_eq!(
            fresh_name_owner("shop_coffer_0a1b2c3d", "shop", "coffer"),
            Some(None)
        );
        for not in [
            "shop_coffer_old",
            "shop_coffer_0a1b2c3",
            "shop_coffer_12_0a1b2c3d_0A1B2C3D",
            "shop_coffer__0a1b2c3d_0a1b2c3d",
            "shopx_coffer_12_0a1b2c3d_0a1b2c3d",
            "shop",
        ] {
            assert_eq!(fresh_name_owner(not, "shop", "coffer"), None, "{not}");
        }
        let d = fresh_name("coffer_drill", "ab12");
        assert_eq!(drill_name_owner(&d), Some(me));
        assert_eq!(drill_name_owner("coffer_drill_ab12_0a1b2c3d"), None);
        assert_eq!(drill_name_owner("coffer_drill__1_0a1b2c3d_0a1b2c3d"), None);
    }

    #[test]
    fn mysql_dump_tool_versions_compare_by_release() {
        let maria =
            "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)";
        assert_eq!(tool_too_old(maria, "10.11.19-MariaDB-0+deb12u1"), None);
        assert_eq!(tool_too_old(maria, "10.6.2-MariaDB"), None);
        assert!(
            tool_too_old(maria, "11.4.2-MariaDB")
                .unwrap()
                .contains("older than the server (11.4.2-MariaDB)")
        );
        let mysql8 = "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)";
        assert_eq!(tool_too_old(mysql8, "8.0.36"), None);
        assert!(tool_too_old(mysql8, "8.4.0").is_some());
        let mysql57 = "mysqldump  Ver 10.13 Distrib 5.7.44, for Linux (x86_64)";
        assert!(tool_too_old(mysql57, "8.0.36").is_some());
        // Other flavour: not compared.
        assert_eq!(tool_too_old(maria, "8.0.36"), None);
    }
}
