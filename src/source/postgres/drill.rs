//! The PostgreSQL source: drill.

use super::*;

pub fn drill(req: &DrillRequest, streams: &mut dyn Streams) -> Result<DrillResult, SourceError> {
    let configured = req.config.map(source_conn).transpose()?;
    let server = match req.scratch_url {
        Some(raw) => other_conn(raw, "--scratch-url", Some("postgres"), configured.as_ref())?,
        None => configured
            .as_ref()
            .ok_or_else(|| {
                SourceError::NoLongerConfigured(format!(
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
