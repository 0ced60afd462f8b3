//! The PostgreSQL source: snapshot.

use super::*;

pub struct PgDumper {
    pub(super) source: String,
    pub(super) conn: Conn,
    pub(super) jobs: u32,
    pub(super) globals: bool,
    pub(super) session: Option<Session>,
    pub(super) snapshot: String,
    /// 0: globals next (if any), 1: the dump next, 2: done.
    pub(super) step: u8,
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
