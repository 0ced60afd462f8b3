//! The MySQL/MariaDB source: restore.

use super::*;

/// Where a restore goes.
pub(super) struct Target {
    pub(super) conn: Conn,
    /// `--to-database`, not the configured database.
    pub(super) other: bool,
}

pub(super) fn target(req: &DbRestore) -> Result<Target, SourceError> {
    if let Some(url) = req.to_database {
        return Ok(Target {
            conn: other_conn(url, "--to-database", true, req.config)?,
            other: true,
        });
    }
    let cfg = req.config.ok_or_else(|| {
        SourceError::NoLongerConfigured(format!(
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
            return Err(SourceError::NeedsForce(format!(
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
        return Err(SourceError::NeedsForce(format!(
            "{} already exists and holds {tables} tables/views, {routines} routines and {events} events; add --force to replace its contents with the snapshot's, or name a database that does not exist yet",
            t.conn.describe()
        )));
    }
    Ok(format!("{} (replaced)", t.conn.display()))
}

/// Loads a stored dump into `conn`'s database; it must end complete.
pub(super) fn load(conn: &Conn, r: &mut dyn Read) -> Result<u64, SourceError> {
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
pub(super) fn copy_database(from: &Conn, to: &Conn) -> Result<(), SourceError> {
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
pub(super) fn with_main_stream<T>(
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
