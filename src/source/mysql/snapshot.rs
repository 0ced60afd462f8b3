//! The MySQL/MariaDB source: snapshot.

use super::*;

pub struct MysqlDumper {
    pub(super) conn: Conn,
    pub(super) tool: Option<DumpTool>,
    pub(super) scan: Arc<Mutex<DumpScan>>,
    pub(super) started: bool,
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
