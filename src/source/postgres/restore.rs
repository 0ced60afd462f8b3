//! The PostgreSQL source: restore.

use super::*;

/// Where a restore goes.
pub(super) struct Target {
    pub(super) conn: Conn,
}

pub(super) fn target(req: &DbRestore) -> Result<Target, SourceError> {
    let configured = req.config.map(source_conn).transpose()?;
    match req.to_database {
        Some(raw) => {
            let conn = other_conn(raw, "--to-database", None, configured.as_ref())?;
            if !req.force
                && database_exists(&conn.maintenance(), &conn.db)?
                && !database_is_empty(&conn)?
            {
                return Err(SourceError::NeedsForce(format!(
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
                SourceError::NoLongerConfigured(format!(
                    "source {} is not in the config any more, so its database is unknown: \
                     restore it with --to-database URL",
                    req.source
                ))
            })?;
            if !req.force {
                return Err(SourceError::NeedsForce(format!(
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

pub(super) fn database_exists(server: &Conn, db: &str) -> Result<bool, SourceError> {
    let rows = server.psql(&format!(
        "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {};\n",
        lit(db)
    ))?;
    Ok(!rows.is_empty())
}

/// No user schema, relation, function, type or extension (besides plpgsql).
pub(super) fn database_is_empty(conn: &Conn) -> Result<bool, SourceError> {
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
pub(super) fn derived_name(db: &str, mark: &str) -> String {
    let suffix = format!("{mark}{}", crate::crypto::random_id(4));
    let mut cut = MAX_IDENT.saturating_sub(suffix.len()).min(db.len());
    while !db.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &db[..cut])
}

/// Whether `name` is one that `derived_name(db, mark)` can give: the same
/// cut of `db`, `mark`, then 8 lowercase hex digits, nothing else.
pub(super) fn is_derived_name(name: &str, db: &str, mark: &str) -> bool {
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
pub(super) fn is_drill_name(name: &str) -> bool {
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
pub(super) const MARKER_PREFIX: &str = "coffer scratch database: ";

pub(super) fn marker() -> String {
    format!(
        "{MARKER_PREFIX}pid={} host={} started={}",
        std::process::id(),
        crate::repo::host_name(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The maker named by a marker comment.
pub(super) fn marker_owner(comment: &str) -> Option<crate::abandoned::Owner> {
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
pub(super) fn scratch_leftovers(
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
pub(super) fn drop_abandoned(server: &Conn, db: &str, drills: bool) {
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
pub(super) struct TempDb {
    pub(super) server: Conn,
    pub(super) name: String,
    pub(super) armed: bool,
}

impl TempDb {
    /// Creates `name` from template0 with the dump's encoding and locale
    /// (falling back to the server's defaults when it lacks that locale),
    /// owned by `owner` where given. Notes for the user go to `notes`.
    pub(super) fn create(
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

    pub(super) fn keep(&mut self) {
        self.armed = false;
    }

    pub(super) fn drop_now(&mut self) -> Result<(), SourceError> {
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

pub(super) fn drop_database(server: &Conn, name: &str) -> Result<(), SourceError> {
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
pub(super) fn load(
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

pub(super) fn pg_restore(
    db: &Conn,
    jobs: u32,
    extra: &[&str],
    r: &mut dyn Read,
) -> Result<u64, SourceError> {
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
pub(super) enum Prop {
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
pub(super) const LIST_GUCS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Splits a list GUC value (`"my schema", public`) into its items.
pub(super) fn split_guc_list(v: &str) -> Vec<String> {
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
    pub(super) fn sql(&self, db: &str) -> String {
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

pub(super) fn database_props(
    server: &Conn,
    db: &str,
) -> Result<(Option<String>, Vec<Prop>), SourceError> {
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
pub(super) fn terminate_sessions(server: &Conn, db: &str) -> Result<(), SourceError> {
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
pub(super) fn swap(
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
