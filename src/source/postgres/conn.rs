//! The PostgreSQL source: connections.

use super::*;

/// The one secret of coffer's environment the PostgreSQL tools get: their
/// own password, when the user gives it as libpq's `PGPASSWORD`.
pub(super) const PASS: &[&str] = &["PGPASSWORD"];

/// A connection target: the URL without password, the password (for
/// `PGPASSWORD`), and the database name.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) url: url::Url,
    pub(super) password: Option<String>,
    pub(super) db: String,
}

impl Conn {
    /// Parses `postgres://user[:pass]@host[:port]/db[?params]`; the password
    /// (user info, else `?password=`) is kept apart from the URL. With
    /// `default_db`, a URL without a database means that one.
    pub(super) fn parse(
        raw: &str,
        what: &str,
        default_db: Option<&str>,
    ) -> Result<Conn, SourceError> {
        let bad = |why: String| SourceError::BadUrl {
            what: what.to_string(),
            url: redact_url(raw),
            kind: "PostgreSQL",
            why,
            example: "postgres://USER@HOST:PORT/DATABASE",
        };
        let mut url = url::Url::parse(raw).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!("the scheme is {:?}", url.scheme())));
        }
        if url.cannot_be_a_base() {
            return Err(bad("it has no host part".into()));
        }
        let mut password = url.password().map(crate::source::percent_decode);
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
            .map(crate::source::percent_decode)
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

    pub(super) fn set_db(&mut self, db: &str) {
        if let Ok(mut p) = self.url.path_segments_mut() {
            p.clear().push(db);
        }
        self.db = db.to_string();
    }

    pub(super) fn with_db(&self, db: &str) -> Conn {
        let mut c = self.clone();
        c.set_db(db);
        c
    }

    /// Where to run CREATE/ALTER/DROP DATABASE for this database.
    pub(super) fn maintenance(&self) -> Conn {
        self.with_db(if self.db == "postgres" {
            "template1"
        } else {
            "postgres"
        })
    }

    /// The URL as shown to the user (it never holds a password).
    pub(super) fn display(&self) -> String {
        self.url.to_string()
    }

    pub(super) fn same_server(&self, other: &Conn) -> bool {
        self.url.host_str() == other.url.host_str()
            && self.url.port_or_known_default() == other.url.port_or_known_default()
            && self.url.username() == other.url.username()
    }

    pub(super) fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PGAPPNAME".to_string(), "coffer".to_string())];
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            env.push(("PGCONNECT_TIMEOUT".into(), "10".into()));
        }
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD".into(), p.clone()));
        }
        env
    }

    pub(super) fn tool(&self, what: String, argv: Vec<String>) -> ToolSpec {
        let mut spec = ToolSpec::new(what, argv).pass(PASS);
        spec.env = self.env();
        spec
    }

    pub(super) fn dbname_arg(&self) -> String {
        format!("--dbname={}", self.url)
    }

    /// Runs a psql script (fed on stdin, so `\gexec` works); its rows.
    pub(super) fn psql(&self, script: &str) -> Result<Vec<Vec<String>>, SourceError> {
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
    pub(super) fn exec(&self, sql: &str) -> Result<(), SourceError> {
        self.psql(&format!("{sql};\n")).map(|_| ())
    }
}

pub(super) fn psql_args(conn: &Conn) -> Vec<String> {
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
pub(super) fn parse_records(buf: &[u8]) -> Vec<Vec<String>> {
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
pub(super) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An SQL string literal (safe whatever `standard_conforming_strings` is).
pub(super) fn lit(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

pub(super) fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// What to try when the server refused our credentials.
pub(super) fn auth_hint(stderr: &str) -> &'static str {
    if stderr.contains("password authentication failed") || stderr.contains("no password supplied")
    {
        " (give the password with password_file or password_env in the source's config, or in ~/.pgpass)"
    } else {
        ""
    }
}

pub(super) fn tool_failure(what: &str, status: ExitStatus, stderr: &str) -> SourceError {
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

pub(super) fn spawn_error(prog: &str, what: &str, e: io::Error) -> SourceError {
    SourceError::spawn(what, prog, Some("the PostgreSQL client tools"), e)
}

/// The connection of a configured source, with its configured password.
pub(super) fn source_conn(src: &SourceConfig) -> Result<Conn, SourceError> {
    let url = src
        .url
        .as_deref()
        .ok_or_else(|| SourceError::Usage(format!("source {} has no `url`", src.name)))?;
    crate::source::conn::configured(
        src,
        Conn::parse(url, &format!("source {}", src.name), None)?,
    )
}

/// Another server named by the user (`--to-database`, `--scratch-url`): its
/// own password, else the configured one when it is the same server and user.
pub(super) fn other_conn(
    raw: &str,
    what: &str,
    default_db: Option<&str>,
    configured: Option<&Conn>,
) -> Result<Conn, SourceError> {
    Ok(crate::source::conn::named(
        Conn::parse(raw, what, default_db)?,
        configured,
    ))
}

impl crate::source::conn::Account for Conn {
    fn password(&self) -> Option<&String> {
        self.password.as_ref()
    }
    fn set_password(&mut self, password: Option<String>) {
        self.password = password;
    }
    fn same_account(&self, other: &Conn) -> bool {
        self.same_server(other)
    }
}
