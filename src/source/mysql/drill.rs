//! The MySQL/MariaDB source: drill.

use super::*;

/// The server scratch databases go to.
pub(super) fn scratch_server(req: &DrillRequest) -> Result<Conn, SourceError> {
    if let Some(url) = req.scratch_url {
        return other_conn(url, "--scratch-url", false, req.config);
    }
    if let Some(cfg) = req.config {
        return configured_conn(cfg);
    }
    match req.details.get("url").and_then(|v| v.as_str()) {
        Some(u) => Conn::parse(u, "the recorded url", false),
        None => Err(SourceError::NoLongerConfigured(format!(
            "source {} is not in the config any more; say where to drill it with --scratch-url mysql://user@host:port",
            req.source
        ))),
    }
}

/// Row counts of the base tables of `conn`'s database.
pub(super) fn count_rows(conn: &Conn) -> Result<BTreeMap<String, u64>, SourceError> {
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
