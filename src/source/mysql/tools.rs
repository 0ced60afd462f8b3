//! The MySQL/MariaDB source: tools.

use super::*;

pub(super) fn on_path(name: &str) -> bool {
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

pub(super) fn find_tool(names: &[&'static str], what: &str) -> Result<&'static str, SourceError> {
    names
        .iter()
        .copied()
        .find(|n| on_path(n))
        .ok_or_else(|| SourceError::NotInstalled {
            doing: what.to_string(),
            tool: names.join(" or "),
            package: Some("the MariaDB or MySQL client package"),
        })
}

/// `mariadb` or `mysql`.
pub(super) fn client_tool() -> Result<&'static str, SourceError> {
    find_tool(&["mariadb", "mysql"], "the MySQL/MariaDB client")
}

/// `mariadb-dump` or `mysqldump`.
pub(super) fn dump_tool() -> Result<&'static str, SourceError> {
    find_tool(
        &["mariadb-dump", "mysqldump"],
        "the MySQL/MariaDB dump tool",
    )
}

/// A dump tool and the flags its flavour needs.
pub(super) struct DumpTool {
    pub(super) name: &'static str,
    pub(super) version: String,
}

impl DumpTool {
    pub(super) fn find() -> Result<DumpTool, SourceError> {
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

    pub(super) fn flags(&self) -> Vec<String> {
        let mut v: Vec<String> = DUMP_FLAGS.iter().map(|s| s.to_string()).collect();
        // MySQL's own mysqldump writes `SET @@GLOBAL.GTID_PURGED` on GTID
        // servers, which fails to load anywhere else; MariaDB's has no such
        // option.
        if !self.version.contains("MariaDB") {
            v.push("--set-gtid-purged=OFF".into());
        }
        v
    }

    pub(super) fn spec(&self, conn: &Conn) -> ToolSpec {
        let mut argv = vec![self.name.to_string()];
        argv.extend(conn.args());
        argv.extend(self.flags());
        argv.push("--".into());
        argv.push(conn.database.clone());
        conn.spec(format!("{} of {}", self.name, conn.describe()), argv)
    }
}

pub(super) fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// Undoes the client's `--batch` escaping of a field.
pub(super) fn unescape_field(s: &str) -> String {
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
pub(super) fn tidy(msg: &str) -> String {
    match (msg.find("--------------"), msg.rfind("ERROR ")) {
        (Some(a), Some(e)) if a < e => format!("{}{}", &msg[..a], &msg[e..]),
        _ => msg.to_string(),
    }
}

pub(super) fn tidy_err(e: SourceError) -> SourceError {
    match e {
        SourceError::Failed(m) => SourceError::Failed(tidy(&m)),
        other => other,
    }
}

/// Runs SQL (on the client's stdin) and returns the result rows. `db`:
/// connect to that database (`DATABASE()` in the SQL).
pub(super) fn query(
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
    let mut child = c.spawn().map_err(|e| {
        SourceError::spawn(what, client, Some("the MariaDB or MySQL client package"), e)
    })?;
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

pub(super) fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A character set or collation name as the server reports it (safe to
/// put in SQL unquoted).
pub(super) fn plain_name(s: &str) -> Option<&str> {
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some(s)
}

/// A database's default character set and collation.
#[derive(Clone, Debug, Default)]
pub(super) struct Charset {
    pub(super) charset: Option<String>,
    pub(super) collation: Option<String>,
}

impl Charset {
    pub(super) fn recorded(details: &Details) -> Charset {
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
    pub(super) fn clauses(&self) -> Vec<String> {
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
pub(super) fn databases(conn: &Conn) -> Result<BTreeMap<String, Charset>, SourceError> {
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
pub(super) fn object_counts(conn: &Conn) -> Result<(u64, u64, u64), SourceError> {
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
pub(super) fn create_database(
    server: &Conn,
    name: &str,
    cs: &Charset,
    why: &str,
) -> Result<(), SourceError> {
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

pub(super) fn drop_database(server: &Conn, name: &str) -> Result<(), SourceError> {
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
pub(super) fn fresh_name(base: &str, tag: &str) -> String {
    let suffix = format!(
        "_{tag}_{}_{}_{}",
        std::process::id(),
        crate::abandoned::host_tag(),
        crate::crypto::random_id(4)
    );
    format!("{}{suffix}", truncated(base, 64 - suffix.len().min(64)))
}

/// `base` cut (at a character boundary) to at most `max` bytes.
pub(super) fn truncated(base: &str, max: usize) -> &str {
    let mut b = base;
    while b.len() > max {
        let mut chars = b.chars();
        chars.next_back();
        b = chars.as_str();
    }
    b
}

pub(super) fn is_hex8(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a database name says of its maker when `fresh_name(base, tag)`
/// gave it: `Some(Some(owner))`; `Some(None)` for an older coffer's
/// `<base>_<tag>_<random>`, which names none; `None` when coffer did not
/// make it.
pub(super) fn fresh_name_owner(
    name: &str,
    base: &str,
    tag: &str,
) -> Option<Option<crate::abandoned::Owner>> {
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
pub(super) fn drill_name_owner(name: &str) -> Option<crate::abandoned::Owner> {
    let rest = name.strip_prefix("coffer_drill_")?;
    let (snap, _) = rest.split_once('_')?;
    if snap.is_empty() || snap.len() > 16 || !snap.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    fresh_name_owner(name, "coffer_drill", snap).flatten()
}

/// The scratch databases killed restores of `db` (with `drills`, killed
/// drills too) left on `server`, each with the verdict on its maker.
pub(super) fn scratch_leftovers(
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
pub(super) fn drop_abandoned(server: &Conn, db: Option<&str>, drills: bool) {
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
