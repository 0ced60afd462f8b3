//! `redis` sources (Redis).
//!
//! **Snapshot**: `redis-cli --rdb FILE` asks the server for an RDB snapshot
//! (the replication `SYNC`, a point-in-time fork of the server) and writes it
//! to a file in the system temp directory, which is then opened, unlinked and
//! streamed into the archive. (redis-cli 7.0 can write `--rdb -` to stdout,
//! but then leaves the 40-byte end-of-transfer marker of a diskless sync at
//! the end of the data; to a file, it truncates it.) `coffer dump` gives the
//! RDB file back. The manifest records the server version (`INFO server`),
//! the key count of the URL's database (`DBSIZE`) and per database
//! (`INFO keyspace`), and where the server keeps its RDB file.
//!
//! **Restore**: a running server holds its data in memory and rewrites its
//! RDB file when it shuts down, so an RDB file can only be restored into a
//! stopped server. coffer asks the configured server (`CONFIG GET dir` /
//! `dbfilename`): when it answers, nothing is written and the error gives the
//! exact steps (stop it, re-run the restore with `--force --to-database
//! <dir>/<dbfilename>`, start it). `--to-database PATH` writes the RDB file
//! to PATH (beside it, fsynced, renamed into place; replacing an existing
//! file needs `--force`), unless PATH is the file of the server that is
//! running. The restore's next steps say how to make the server load it.
//!
//! The URL is `redis://[[user]:password@]host[:port][/db]` (`rediss://` for
//! TLS). The password (from `password_file`, `password_env`, or the URL)
//! reaches redis-cli through `REDISCLI_AUTH`, never its argv.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::sqlite::{rename_into_place, set_mode_owner, stream_to_file, temp_beside};
use super::stream::ToolSpec;
use super::{
    DbRestore, DbRestored, Details, DrillRequest, DrillResult, DumpStream, Dumper, SourceError,
    Streams, configured_password, redact_url,
};
use crate::config::SourceConfig;

/// The one stream a Redis source stores: the RDB file.
pub const STREAM: &str = "dump.rdb";

/// Every RDB file starts with "REDIS" and a four-digit version.
const MAGIC: &[u8] = b"REDIS";

/// How long a query to the server may take (the RDB transfer has no limit).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach one Redis server with redis-cli.
#[derive(Clone)]
struct Conn {
    source: String,
    host: String,
    port: u16,
    db: u32,
    user: Option<String>,
    password: Option<String>,
    tls: bool,
    /// The URL without its password, for messages.
    shown: String,
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Conn {
    fn new(src: &SourceConfig) -> Result<Conn, SourceError> {
        let raw = src.url.as_deref().ok_or_else(|| {
            SourceError::Usage(format!("source {}: a redis source needs `url`", src.name))
        })?;
        let bad = |why: &str| {
            SourceError::Usage(format!(
                "source {}: url {}: {why} (expected redis://[:password@]host[:port][/db])",
                src.name,
                redact_url(raw)
            ))
        };
        let u = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let tls = match u.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad("not a redis:// URL")),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        let db = match u.path().trim_matches('/') {
            "" => 0,
            p => p
                .parse()
                .map_err(|_| bad("the path must be a database number"))?,
        };
        let user = Some(percent_decode(u.username())).filter(|s| !s.is_empty());
        let password = match configured_password(src)? {
            Some(p) => Some(p),
            None => u.password().map(percent_decode),
        };
        Ok(Conn {
            source: src.name.clone(),
            host,
            port: u.port().unwrap_or(6379),
            db,
            user,
            password,
            tls,
            shown: redact_url(raw),
        })
    }

    /// redis-cli's connection arguments (no password: that goes in the env).
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "redis-cli".to_string(),
            "-h".into(),
            self.host.clone(),
            "-p".into(),
            self.port.to_string(),
        ];
        if self.tls {
            a.push("--tls".into());
        }
        if let Some(u) = &self.user {
            a.push("--user".into());
            a.push(u.clone());
        }
        a
    }

    fn env(&self) -> Vec<(String, String)> {
        self.password
            .iter()
            .map(|p| ("REDISCLI_AUTH".to_string(), p.clone()))
            .collect()
    }

    /// The redis-cli command line a user would type, for the steps.
    fn command_line(&self) -> String {
        let mut s = format!("redis-cli -h {} -p {}", self.host, self.port);
        if self.tls {
            s.push_str(" --tls");
        }
        if let Some(u) = &self.user {
            s.push_str(&format!(" --user {u}"));
        }
        s
    }

    /// Runs one command (`--raw`, `-e`: error replies fail) with a time
    /// limit. An error only when redis-cli cannot be run.
    fn query(&self, cmd: &[&str]) -> Result<Reply, SourceError> {
        let mut argv = self.args();
        argv.push("-n".into());
        argv.push(self.db.to_string());
        argv.push("--raw".into());
        argv.push("-e".into());
        argv.extend(cmd.iter().map(|s| s.to_string()));
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SourceError::Failed(format!(
                    "source {}: redis-cli is not installed (not found on PATH)",
                    self.source
                ))
            } else {
                SourceError::Failed(format!(
                    "source {}: cannot start redis-cli: {e}",
                    self.source
                ))
            }
        })?;
        let reader = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut v);
                }
                String::from_utf8_lossy(&v).into_owned()
            })
        };
        let out = reader(
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let err = reader(
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if started.elapsed() < QUERY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = (out.join(), err.join());
                    return Ok(Reply::Down(format!(
                        "no answer within {} s",
                        QUERY_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => {
                    return Err(SourceError::Failed(format!(
                        "source {}: waiting for redis-cli failed: {e}",
                        self.source
                    )));
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let text = format!("{} {}", stderr.trim(), stdout.trim());
        if text.contains("Could not connect to Redis") || text.contains("Connection refused") {
            return Ok(Reply::Down(text.trim().to_string()));
        }
        if !status.success() {
            let hint = if text.contains("NOAUTH") || text.contains("WRONGPASS") {
                "; give the source its password with password_env or password_file"
            } else {
                ""
            };
            return Ok(Reply::Error(format!(
                "source {}: redis-cli {} on {} failed: {}{hint}",
                self.source,
                cmd.join(" "),
                self.shown,
                text.trim()
            )));
        }
        Ok(Reply::Value(stdout))
    }

    /// `query`, where an unreachable server is a failure.
    fn ask(&self, cmd: &[&str]) -> Result<String, SourceError> {
        match self.query(cmd)? {
            Reply::Value(v) => Ok(v),
            Reply::Error(e) => Err(SourceError::Failed(e)),
            Reply::Down(why) => Err(SourceError::Failed(format!(
                "source {}: cannot reach the Redis server at {}: {why}; check that redis-server runs there and the source's `url`",
                self.source, self.shown
            ))),
        }
    }

    /// One `CONFIG GET` value, if the server gives it (CONFIG may be renamed
    /// or forbidden on managed servers).
    fn config_get(&self, key: &str) -> Option<String> {
        let Ok(Reply::Value(out)) = self.query(&["CONFIG", "GET", key]) else {
            return None;
        };
        let mut lines = out.lines();
        while let Some(k) = lines.next() {
            let v = lines.next()?;
            if k == key {
                return Some(v.to_string());
            }
        }
        None
    }
}

/// What redis-cli got for one command.
enum Reply {
    Value(String),
    /// An error reply: the server runs, but refused (NOAUTH, ...).
    Error(String),
    /// No server answered, and why.
    Down(String),
}

/// `key:value` lines of an INFO section.
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
    })
}

pub struct RedisDumper {
    conn: Conn,
    started: bool,
}

impl RedisDumper {
    pub fn new(src: &SourceConfig) -> Result<Self, SourceError> {
        Ok(RedisDumper {
            conn: Conn::new(src)?,
            started: false,
        })
    }
}

impl Dumper for RedisDumper {
    fn prepare(&mut self, details: &mut Details) -> Result<(), SourceError> {
        let c = &self.conn;
        let info = c.ask(&["INFO", "server"])?;
        let version = info_field(&info, "redis_version").unwrap_or("unknown");
        details.insert("format".into(), "rdb".into());
        details.insert("redis_version".into(), version.into());
        details.insert("url".into(), c.shown.clone().into());
        details.insert("db".into(), c.db.into());
        let keys: u64 = c.ask(&["DBSIZE"])?.trim().parse().map_err(|_| {
            SourceError::Failed(format!(
                "source {}: DBSIZE on {} did not answer a number",
                c.source, c.shown
            ))
        })?;
        details.insert("keys".into(), keys.into());
        // Every database's keys: the RDB file holds them all.
        let keyspace = c.ask(&["INFO", "keyspace"])?;
        let mut per_db = Details::new();
        for l in keyspace.lines() {
            let l = l.trim_end_matches('\r');
            if let Some((db, rest)) = l.split_once(':')
                && db.starts_with("db")
                && let Some(n) = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("keys="))
                    .and_then(|n| n.parse::<u64>().ok())
            {
                per_db.insert(db.to_string(), n.into());
            }
        }
        details.insert("keyspace".into(), serde_json::Value::Object(per_db));
        for key in ["dir", "dbfilename"] {
            if let Some(v) = c.config_get(key) {
                details.insert(key.into(), v.into());
            }
        }
        if let Ok(v) = ToolSpec::new(
            "redis-cli --version",
            vec!["redis-cli".into(), "--version".into()],
        )
        .output()
        {
            details.insert("redis_cli_version".into(), v.trim().into());
        }
        details.insert("main_stream".into(), STREAM.into());
        Ok(())
    }

    fn next_stream(&mut self) -> Result<Option<DumpStream>, SourceError> {
        if self.started {
            return Ok(None);
        }
        self.started = true;
        let c = &self.conn;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("coffer-redis-{}-", c.source))
            .tempdir()
            .map_err(|e| {
                SourceError::Failed(format!(
                    "source {}: cannot create a temp directory in {}: {e}",
                    c.source,
                    std::env::temp_dir().display()
                ))
            })?;
        let path = tmp.path().join(STREAM);
        let mut argv = c.args();
        argv.push("--rdb".into());
        argv.push(path.display().to_string());
        let mut spec = ToolSpec::new(format!("redis-cli --rdb (source {})", c.source), argv);
        for (k, v) in c.env() {
            spec = spec.env(k, v);
        }
        spec.output()?;
        let mut file = fs::File::open(&path).map_err(|e| {
            SourceError::Failed(format!(
                "source {}: redis-cli --rdb wrote no file {}: {e}",
                c.source,
                path.display()
            ))
        })?;
        let mut head = [0u8; 9];
        let n = crate::crypto::read_full(&mut file, &mut head)?;
        if n < MAGIC.len() || !head.starts_with(MAGIC) {
            return Err(SourceError::Failed(format!(
                "source {}: what redis-cli --rdb received from {} is not an RDB file",
                c.source, c.shown
            )));
        }
        use std::io::Seek;
        file.rewind()?;
        // The open file stays readable; nothing is left in the temp directory.
        tmp.close().map_err(|e| {
            SourceError::Failed(format!(
                "source {}: cannot remove the temp RDB file: {e}",
                c.source
            ))
        })?;
        Ok(Some(DumpStream {
            name: STREAM.into(),
            reader: Box::new(io::BufReader::with_capacity(1 << 20, file)),
            done: Box::new(|| Ok(())),
        }))
    }

    fn finish(&mut self, _details: &mut Details) -> Result<(), SourceError> {
        Ok(())
    }
}

// ---------------------------------------------------------------- restore

/// What the configured server says about itself.
enum Server {
    /// It does not answer (stopped, or unreachable), and why.
    Down(String),
    Up {
        /// `<dir>/<dbfilename>`, when CONFIG GET gives both.
        rdb: Option<PathBuf>,
        /// The AOF directory when `appendonly` is on: it loads that instead.
        aof: Option<PathBuf>,
    },
}

fn probe(c: &Conn) -> Result<Server, SourceError> {
    // An error reply (NOAUTH, ...) still means a server runs there.
    if let Reply::Down(why) = c.query(&["PING"])? {
        return Ok(Server::Down(why));
    }
    let dir = c.config_get("dir");
    let rdb = match (&dir, c.config_get("dbfilename")) {
        (Some(d), Some(f)) => Some(Path::new(d).join(f)),
        _ => None,
    };
    let aof = match (c.config_get("appendonly").as_deref(), &dir) {
        (Some("yes"), Some(d)) => Some(
            Path::new(d).join(
                c.config_get("appenddirname")
                    .unwrap_or_else(|| "appendonly.aof".into()),
            ),
        ),
        _ => None,
    };
    Ok(Server::Up { rdb, aof })
}

/// The RDB file the snapshot saw the server use, if recorded.
fn recorded_rdb(req: &DbRestore) -> Option<PathBuf> {
    let d = req.details.get("dir")?.as_str()?;
    let f = req.details.get("dbfilename")?.as_str()?;
    Some(Path::new(d).join(f))
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

/// The refusal when the server runs: what to do, step by step.
fn steps_message(req: &DbRestore, c: &Conn, rdb: Option<&Path>, aof: Option<&Path>) -> String {
    let file = rdb
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<dir>/<dbfilename>".into());
    let auth = if c.password.is_some() {
        " (with REDISCLI_AUTH set to its password)"
    } else {
        ""
    };
    let mut m = format!(
        "the Redis server at {} is running: it holds its data in memory and writes it to {file} when it shuts down, so coffer does not write that file under it. To restore snapshot {snap}:\n  \
         1. stop the server without saving{auth}: {cli} shutdown nosave   (if systemd runs it: systemctl stop redis-server)\n  \
         2. write the snapshot's RDB file in its place (atomically): coffer restore {snap} --only {src} --force --to-database {file}\n  \
         3. start redis-server again; it loads {file}",
        c.shown,
        snap = req.snapshot,
        src = req.source,
        cli = c.command_line(),
    );
    if rdb.is_none() {
        m.push_str(&format!(
            "\n  (the server did not say where its RDB file is; `{} CONFIG GET dir` and `CONFIG GET dbfilename` tell)",
            c.command_line()
        ));
    }
    if let Some(aof) = aof {
        m.push_str(&format!(
            "\n  appendonly is on: before step 3, move {} away, or the server loads that instead",
            aof.display()
        ));
    }
    m.push_str(&format!(
        "\nTo get the RDB file without stopping the server: coffer restore {snap} --only {src} --to-database PATH, or coffer dump {snap} {src} > dump.rdb",
        snap = req.snapshot,
        src = req.source
    ));
    m
}

/// Where the RDB file goes, after every refusal that needs no data.
fn plan(req: &DbRestore) -> Result<(PathBuf, Option<Server>), SourceError> {
    let conn = match req.config {
        Some(cfg) if cfg.url.is_some() => Some(Conn::new(cfg)?),
        _ => None,
    };
    let Some(p) = req.to_database else {
        let Some(c) = conn else {
            return Err(SourceError::Usage(format!(
                "source {} is not in the config any more, so coffer cannot ask its server where its RDB file is; write the file with --to-database PATH{}",
                req.source,
                recorded_rdb(req)
                    .map(|p| format!(" (at snapshot time the server's was {})", p.display()))
                    .unwrap_or_default()
            )));
        };
        return Err(match probe(&c)? {
            Server::Up { rdb, aof } => {
                SourceError::Usage(steps_message(req, &c, rdb.as_deref(), aof.as_deref()))
            }
            Server::Down(why) => {
                let hint = match recorded_rdb(req) {
                    Some(f) => format!(
                        " At snapshot time the server kept it in {f}: coffer restore {snap} --only {src} --force --to-database {f}",
                        f = f.display(),
                        snap = req.snapshot,
                        src = req.source
                    ),
                    None => String::new(),
                };
                SourceError::Usage(format!(
                    "the Redis server at {} does not answer ({why}), so coffer cannot ask it where its RDB file is (CONFIG GET dir / dbfilename). Name the file with --to-database PATH (and --force if it exists), then start redis-server so it loads it.{hint}",
                    c.shown
                ))
            }
        });
    };
    if p.is_empty() || p.contains("://") {
        return Err(SourceError::Usage(format!(
            "source {} is a Redis source: --to-database takes the path of the RDB file to write, not {p:?}",
            req.source
        )));
    }
    let path = std::path::absolute(p).map_err(|e| {
        SourceError::Usage(format!("--to-database {p:?} is not a usable path: {e}"))
    })?;
    let meta = fs::metadata(&path).ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(SourceError::Usage(format!(
            "{} is a directory; --to-database takes the path of the RDB file to write (e.g. {}/dump.rdb)",
            path.display(),
            path.display()
        )));
    }
    // Never under a running server's feet.
    let mut server = None;
    if let Some(c) = &conn
        && let Ok(s) = probe(c)
    {
        if let Server::Up {
            rdb: Some(rdb),
            aof,
        } = &s
            && same_file(rdb, &path)
        {
            return Err(SourceError::Usage(steps_message(
                req,
                c,
                Some(rdb),
                aof.as_deref(),
            )));
        }
        server = Some(s);
    }
    if meta.is_some() && !req.force {
        return Err(SourceError::Usage(format!(
            "{} exists and would be replaced; add --force",
            path.display()
        )));
    }
    Ok((path, server))
}

pub fn destination(req: &DbRestore) -> Result<String, SourceError> {
    plan(req).map(|(p, _)| p.display().to_string())
}

pub fn restore(req: &DbRestore, streams: &mut dyn Streams) -> Result<DbRestored, SourceError> {
    let (dest, server) = plan(req)?;
    let old = fs::metadata(&dest).ok();
    let mut tmp = temp_beside(&dest)?;
    let tmp_path = tmp.path().to_path_buf();
    let bytes = stream_to_file(
        streams,
        STREAM,
        tmp.as_file_mut(),
        &tmp_path,
        MAGIC,
        "an RDB file",
    )?;
    // The replaced file's mode and owner; a new file gets its directory's
    // owner (redis-server runs as the owner of its `dir`).
    let (mode, owner) = match &old {
        Some(m) => (m.mode(), Some((m.uid(), m.gid()))),
        None => (
            0o660,
            dest.parent()
                .and_then(|d| fs::metadata(d).ok())
                .map(|m| (m.uid(), m.gid())),
        ),
    };
    set_mode_owner(tmp.as_file(), &tmp_path, mode, owner)?;
    rename_into_place(tmp, &dest)?;
    let dir = dest
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut next_steps = Vec::new();
    match server {
        Some(Server::Up { rdb: Some(rdb), .. }) => {
            let c = req.config.map(Conn::new).transpose()?;
            next_steps.push(format!(
                "to load it into the Redis server at {url}, which is running: stop it without saving ({cli} shutdown nosave), copy {} to {} (or run coffer restore {snap} --only {src} --force --to-database {}), then start it again",
                dest.display(),
                rdb.display(),
                rdb.display(),
                url = c.as_ref().map(|c| c.shown.clone()).unwrap_or_default(),
                cli = c.as_ref().map(Conn::command_line).unwrap_or_else(|| "redis-cli".into()),
                snap = req.snapshot,
                src = req.source,
            ));
        }
        Some(Server::Up { rdb: None, .. }) => next_steps.push(format!(
            "to load it, stop the Redis server, put {} where its `dir` and `dbfilename` say, and start it again",
            dest.display()
        )),
        _ => next_steps.push(format!(
            "start redis-server so it loads {}: its `dir` must be {dir} and its `dbfilename` {name}, and with appendonly on, move its appendonly files away first (else it loads those instead)",
            dest.display()
        )),
    }
    Ok(DbRestored {
        destination: dest.display().to_string(),
        bytes,
        next_steps,
    })
}

/// Redis has no drill: there is nothing to restore it into without a
/// server of its own (the caller skips Redis sources).
#[allow(dead_code)]
pub fn drill(req: &DrillRequest, _streams: &mut dyn Streams) -> Result<DrillResult, SourceError> {
    Err(SourceError::Usage(format!(
        "source {}: Redis sources have no restore drill; check the RDB file with `coffer dump {} {} > dump.rdb && redis-check-rdb dump.rdb`",
        req.source, req.snapshot, req.source
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(url: &str) -> Result<Conn, SourceError> {
        let src: SourceConfig = toml::from_str(&format!(
            "name = \"cache\"\ntype = \"redis\"\nurl = {url:?}\n"
        ))
        .unwrap();
        Conn::new(&src)
    }

    #[test]
    fn urls_are_parsed_and_passwords_kept_out_of_argv() {
        let c = conn("redis://:p%40ss@10.0.0.5:6380/3").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("10.0.0.5", 6380, 3));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert!(!c.args().iter().any(|a| a.contains("p@ss")));
        assert_eq!(c.env(), vec![("REDISCLI_AUTH".into(), "p@ss".into())]);
        assert!(!c.shown.contains("p%40ss"));
        let c = conn("rediss://app@[::1]").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("::1", 6379, 0));
        assert!(c.args().contains(&"--tls".to_string()));
        assert_eq!(c.user.as_deref(), Some("app"));
        assert!(conn("redis://h/x").is_err());
        assert!(conn("http://h").is_err());
    }

    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "redis"), None);
    }
}
