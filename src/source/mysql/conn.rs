//! The MySQL/MariaDB source: connection.

use super::*;

/// The one secret of coffer's environment the MySQL/MariaDB tools get: their
/// own password, when the user gives it as `MYSQL_PWD`.
pub(super) const PASS: &[&str] = &["MYSQL_PWD"];

/// Where a database is, parsed from `mysql://user[:pass]@host[:port]/db`
/// (or `mariadb://`; `?socket=/path` for a Unix socket; `?password=` as a
/// password in the user info, which wins).
#[derive(Clone, Debug)]
pub(super) struct Conn {
    pub(super) scheme: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) socket: Option<String>,
    pub(super) database: String,
}

impl Conn {
    /// Parses a URL. `need_db`: the path must name a database.
    pub(super) fn parse(url: &str, what: &str, need_db: bool) -> Result<Conn, SourceError> {
        let bad = |why: &str| SourceError::BadUrl {
            what: what.to_string(),
            url: crate::source::redact_url(url),
            kind: "MySQL/MariaDB",
            why: why.to_string(),
            example: "mysql://user@host:port/database",
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
        let user = (!u.username().is_empty()).then(|| crate::source::percent_decode(u.username()));
        let mut password = u.password().map(crate::source::percent_decode);
        let database = crate::source::percent_decode(u.path().trim_start_matches('/'));
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
    pub(super) fn with_db(&self, db: &str) -> Conn {
        Conn {
            database: db.to_string(),
            ..self.clone()
        }
    }

    /// The same server and account.
    pub(super) fn same_account(&self, o: &Conn) -> bool {
        self.host == o.host && self.port == o.port && self.user == o.user && self.socket == o.socket
    }

    /// The URL as the user would name it, never with the password.
    pub(super) fn display(&self) -> String {
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
    pub(super) fn describe(&self) -> String {
        format!("database `{}` at {}", self.database, self.server())
    }

    pub(super) fn server(&self) -> String {
        match &self.socket {
            Some(s) => s.clone(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// Connection options for every tool (no password: see [`Conn::env`]).
    pub(super) fn args(&self) -> Vec<String> {
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
    pub(super) fn env(&self) -> Vec<(String, String)> {
        self.password
            .iter()
            .map(|p| ("MYSQL_PWD".to_string(), p.clone()))
            .collect()
    }

    pub(super) fn spec(&self, what: String, argv: Vec<String>) -> ToolSpec {
        let mut s = ToolSpec::new(what, argv).pass(PASS);
        for (k, v) in self.env() {
            s = s.env(k, v);
        }
        s
    }
}

/// The configured source's connection, with its password.
pub(super) fn configured_conn(src: &SourceConfig) -> Result<Conn, SourceError> {
    let url = src.url.as_deref().ok_or_else(|| SourceError::MissingKey {
        source_name: src.name.clone(),
        key: "url",
        example: "mysql://user@host:port/database",
    })?;
    crate::source::conn::configured(
        src,
        Conn::parse(url, &format!("source {}: `url`", src.name), true)?,
    )
}

/// A connection named by the user (`--to-database`, `--scratch-url`): its
/// own password, or the configured source's when it is the same account.
pub(super) fn other_conn(
    url: &str,
    what: &str,
    need_db: bool,
    config: Option<&SourceConfig>,
) -> Result<Conn, SourceError> {
    let configured = config.and_then(|src| configured_conn(src).ok());
    Ok(crate::source::conn::named(
        Conn::parse(url, what, need_db)?,
        configured.as_ref(),
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
        Conn::same_account(self, other)
    }
}
