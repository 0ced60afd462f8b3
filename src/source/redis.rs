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
//! RDB file when it shuts down, so coffer never writes that file under it.
//! Instead, a server on this machine is loaded by replication: a temporary
//! `redis-server` (random password, private directory, free loopback port)
//! loads the snapshot's RDB file, the configured server becomes its replica
//! (`REPLICAOF`; a full sync replaces everything it holds, in every
//! database), and once the sync is done and the key counts match it is made
//! a master again and its `masterauth` put back. A remote server cannot
//! reach the temporary one: coffer sends it nothing and gives the steps to
//! do it by hand (stop it, write `<dir>/<dbfilename>` with `--to-database`,
//! start it). So do a replica, a cluster node, a server that refuses
//! `CONFIG`, and a host without a usable `redis-server`.
//! `--to-database PATH` writes the RDB file to PATH (beside it, fsynced,
//! renamed into place; replacing an existing file needs `--force`), unless
//! PATH is the file of the server that is running. The restore's next steps
//! say how to make the server load it.
//!
//! The URL is `redis://[[user]:password@]host[:port][/db]` (`rediss://` for
//! TLS). The password (from `password_file`, `password_env`, or the URL)
//! reaches redis-cli through `REDISCLI_AUTH`, never its argv.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::file_target::{rename_into_place, set_mode_owner, stream_to_file, temp_beside};
use super::stream::ToolSpec;
use super::{
    DbRestore, DbRestored, Details, DumpStream, Dumper, SourceError, Streams, configured_password,
    redact_url,
};
use crate::config::SourceConfig;

/// The one stream a Redis source stores: the RDB file.
pub const STREAM: &str = "dump.rdb";

/// Every RDB file starts with "REDIS" and a four-digit version.
const MAGIC: &[u8] = b"REDIS";

/// How long a query to the server may take (the RDB transfer has no limit).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach one Redis server with redis-cli.
/// The one secret of coffer's environment redis-cli gets: its own password,
/// when the user gives it as `REDISCLI_AUTH`.
const PASS: &[&str] = &["REDISCLI_AUTH"];

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
        let user = Some(super::percent_decode(u.username())).filter(|s| !s.is_empty());
        // `?password=` (some clients' form) counts as the user info's
        // password: it reaches redis-cli as REDISCLI_AUTH and is never shown.
        let query_password = u
            .query_pairs()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.into_owned());
        let password = match configured_password(src)? {
            Some(p) => Some(p),
            None => u.password().map(super::percent_decode).or(query_password),
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
        self.query_with(cmd, None)
    }

    /// `query` with `last` as the command's last argument, given to
    /// redis-cli on its stdin (`-x`): a secret never goes on a command line.
    fn query_with(&self, cmd: &[&str], last: Option<&str>) -> Result<Reply, SourceError> {
        let mut argv = self.args();
        argv.push("-n".into());
        argv.push(self.db.to_string());
        argv.push("--raw".into());
        argv.push("-e".into());
        if last.is_some() {
            argv.push("-x".into());
        }
        argv.extend(cmd.iter().map(|s| s.to_string()));
        let mut c = crate::childenv::command(&argv[0], PASS);
        c.args(&argv[1..])
            .envs(self.env())
            .stdin(if last.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
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
        if let (Some(v), Some(mut stdin)) = (last, child.stdin.take()) {
            use std::io::Write;
            // A failed write shows as redis-cli's own error below.
            let _ = stdin.write_all(v.as_bytes());
        }
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

/// Keys per database (`db0` -> 12) from the `# Keyspace` lines of INFO.
fn keyspace(info: &str) -> BTreeMap<String, u64> {
    let mut per_db = BTreeMap::new();
    for l in info.lines() {
        let l = l.trim_end_matches('\r');
        if let Some((db, rest)) = l.split_once(':')
            && db
                .strip_prefix("db")
                .is_some_and(|n| n.parse::<u32>().is_ok())
            && let Some(n) = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<u64>().ok())
        {
            per_db.insert(db.to_string(), n);
        }
    }
    per_db
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
        let per_db: Details = keyspace(&c.ask(&["INFO", "keyspace"])?)
            .into_iter()
            .map(|(db, n)| (db, n.into()))
            .collect();
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
        let tmp = temp_dir(&format!("coffer-redis-{}-", c.source), &c.source)?;
        let path = tmp.path().join(STREAM);
        let mut argv = c.args();
        argv.push("--rdb".into());
        argv.push(path.display().to_string());
        let mut spec =
            ToolSpec::new(format!("redis-cli --rdb (source {})", c.source), argv).pass(PASS);
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

/// The steps to restore the RDB file by hand: stop the server, write the
/// file in its place, start it.
fn manual_steps(req: &DbRestore, c: &Conn, rdb: Option<&Path>, aof: Option<&Path>) -> String {
    let file = rdb
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<dir>/<dbfilename>".into());
    let auth = if c.password.is_some() {
        " (with REDISCLI_AUTH set to its password)"
    } else {
        ""
    };
    let mut m = format!(
        "To restore snapshot {snap} by hand:\n  \
         1. stop the server without saving{auth}: {cli} shutdown nosave   (if systemd runs it: systemctl stop redis-server)\n  \
         2. write the snapshot's RDB file in its place (atomically): coffer restore {snap} --only {src} --force --to-database {file}\n  \
         3. start redis-server again; it loads {file}",
        snap = req.snapshot,
        src = req.source,
        cli = c.command_line(),
    );
    if rdb.is_none() {
        m.push_str(&format!(
            "\n  (coffer does not know where the server keeps its RDB file; `{} CONFIG GET dir` and `CONFIG GET dbfilename` tell)",
            c.command_line()
        ));
    }
    match aof {
        Some(aof) => m.push_str(&format!(
            "\n  appendonly is on: before step 3, move {} away, or the server loads that instead",
            aof.display()
        )),
        None if !is_local(&c.host) => m.push_str(
            "\n  if appendonly is on, move the server's appendonly files away before step 3, or it loads those instead",
        ),
        None => {}
    }
    m.push_str(&format!(
        "\nTo get the RDB file without stopping the server: coffer restore {snap} --only {src} --to-database PATH, or coffer dump {snap} {src} > dump.rdb",
        snap = req.snapshot,
        src = req.source
    ));
    m
}

/// The refusal to write the file of a server that runs: what to do instead.
fn steps_message(req: &DbRestore, c: &Conn, rdb: Option<&Path>, aof: Option<&Path>) -> String {
    let file = rdb
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<dir>/<dbfilename>".into());
    let mut m = format!(
        "the Redis server at {} is running: it holds its data in memory and writes it to {file} when it shuts down, so coffer does not write that file under it.",
        c.shown
    );
    if is_local(&c.host) {
        m.push_str(&format!(
            " To load the snapshot into the running server, leave out --to-database: coffer restore {} --only {} --force",
            req.snapshot, req.source
        ));
    }
    m.push('\n');
    m.push_str(&manual_steps(req, c, rdb, aof));
    m
}

/// Whether `host` is this machine: only then can the server reach the
/// temporary server coffer starts on the loopback interface.
fn is_local(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A remote server: nothing can be done from here, and nothing is sent to
/// it. The steps name the RDB file the snapshot recorded.
fn remote_message(req: &DbRestore, c: &Conn) -> String {
    let rdb = recorded_rdb(req);
    format!(
        "the Redis server at {} is not on this machine, so coffer cannot load snapshot {} into it (it loads a running server by making it a replica of a temporary redis-server on this machine's loopback interface, which a remote server cannot reach). Run the restore on the server's host, with the source's url pointing at 127.0.0.1, or do it by hand there{}.\n{}",
        c.shown,
        req.snapshot,
        rdb.as_ref()
            .map(|p| format!(
                " (at snapshot time the server kept its RDB file in {})",
                p.display()
            ))
            .unwrap_or_default(),
        manual_steps(req, c, rdb.as_deref(), None)
    )
}

/// Where a restore goes.
enum Target {
    /// The RDB file at this path (`--to-database`), and what the configured
    /// server said about itself, if it answered.
    File(PathBuf, Option<Server>),
    /// The running local server, by replication.
    Live(Box<Live>),
}

/// A running local server that coffer can load by replication.
struct Live {
    conn: Conn,
    /// The redis-server binary for the temporary server.
    redis_server: PathBuf,
    /// The server's `databases` (the temporary server needs as many).
    databases: Option<String>,
    rdb: Option<PathBuf>,
    aof: Option<PathBuf>,
}

impl Live {
    /// The manual steps, for errors after which the user must go on by hand.
    fn fallback(&self, req: &DbRestore) -> String {
        manual_steps(req, &self.conn, self.rdb.as_deref(), self.aof.as_deref())
    }
}

/// The version `redis-server --version` prints (`v=7.0.15`).
fn server_binary_version(bin: &Path) -> Option<String> {
    let out = crate::childenv::command(bin, &[] as &[&str])
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map(str::to_string)
}

/// `major.minor` of a version string, for comparing RDB compatibility.
fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// Every refusal for a load into the running configured server, before any
/// data is read: a remote server, one that does not answer, a replica, a
/// cluster node, no redis-server here, CONFIG forbidden, no --force.
fn plan_live(req: &DbRestore, c: Conn) -> Result<Live, SourceError> {
    if !is_local(&c.host) {
        return Err(SourceError::Failed(remote_message(req, &c)));
    }
    let (rdb, aof) = match probe(&c)? {
        Server::Up { rdb, aof } => (rdb, aof),
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
            return Err(SourceError::Usage(format!(
                "the Redis server at {} does not answer ({why}), so coffer cannot ask it where its RDB file is (CONFIG GET dir / dbfilename). Name the file with --to-database PATH (and --force if it exists), then start redis-server so it loads it.{hint}",
                c.shown
            )));
        }
    };
    let mut live = Live {
        redis_server: PathBuf::new(),
        databases: c.config_get("databases"),
        rdb,
        aof,
        conn: c,
    };
    let c = &live.conn;
    let cannot = |why: String| {
        SourceError::Failed(format!(
            "coffer cannot load snapshot {} into the running Redis server at {}: {why}. Nothing was changed.\n{}",
            req.snapshot,
            c.shown,
            live.fallback(req)
        ))
    };
    let info = match c.query(&["INFO"])? {
        Reply::Value(v) => v,
        Reply::Error(e) | Reply::Down(e) => return Err(cannot(format!("INFO failed: {e}"))),
    };
    if info_field(&info, "role") == Some("slave") {
        return Err(SourceError::Failed(format!(
            "the Redis server at {} is a replica of {}:{}: whatever coffer loads into it, its master overwrites. Restore into the master, or first make this server a master ({} REPLICAOF NO ONE) and run the restore again. Nothing was changed.",
            c.shown,
            info_field(&info, "master_host").unwrap_or("?"),
            info_field(&info, "master_port").unwrap_or("?"),
            c.command_line()
        )));
    }
    if info_field(&info, "cluster_enabled") == Some("1") {
        return Err(cannot(
            "it runs in cluster mode, where a node cannot be made a replica of another server"
                .into(),
        ));
    }
    if c.config_get("masterauth").is_none() {
        return Err(cannot(
            "CONFIG GET masterauth was refused (CONFIG renamed, disabled or not allowed to this user), and coffer must set masterauth for the sync".into(),
        ));
    }
    let Some(bin) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| crate::check::program_found(&p.display().to_string()))
    }) else {
        return Err(cannot(
            "redis-server is not installed on this machine (not found on PATH); coffer needs it for a temporary server to replicate from".into(),
        ));
    };
    let live_version = info_field(&info, "redis_version").unwrap_or("?");
    let bin_version = server_binary_version(&bin).unwrap_or_else(|| "?".into());
    if let (Some(b), Some(l)) = (major_minor(&bin_version), major_minor(live_version))
        && b > l
    {
        return Err(cannot(format!(
            "{} is Redis {bin_version}, newer than the server's {live_version}: the server could not load what it sends; put a redis-server of version {live_version} first on PATH",
            bin.display()
        )));
    }
    if !req.force {
        let keys: u64 = keyspace(&info).values().sum();
        return Err(SourceError::Usage(format!(
            "the Redis server at {} holds {keys} keys: add --force to replace everything in it (every database) with what snapshot {} holds; coffer loads it into the running server by replication from a temporary redis-server",
            c.shown, req.snapshot
        )));
    }
    live.redis_server = bin;
    Ok(live)
}

/// Where the restore goes, after every refusal that needs no data.
fn plan(req: &DbRestore) -> Result<Target, SourceError> {
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
        return Ok(Target::Live(Box::new(plan_live(req, c)?)));
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
    Ok(Target::File(path, server))
}

pub fn destination(req: &DbRestore) -> Result<String, SourceError> {
    Ok(match plan(req)? {
        Target::File(p, _) => p.display().to_string(),
        Target::Live(l) => format!(
            "{} (every database replaced, by replication from a temporary redis-server)",
            l.conn.shown
        ),
    })
}

pub fn restore(req: &DbRestore, streams: &mut dyn Streams) -> Result<DbRestored, SourceError> {
    let (dest, server) = match plan(req)? {
        Target::File(p, s) => (p, s),
        Target::Live(live) => return load_live(req, streams, &live),
    };
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

// ------------------------------------------ restore into a running server

/// How long the poll of a starting, loading or syncing server may see no
/// progress at all before coffer gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a starting, loading or syncing server is asked how far it is.
const POLL: Duration = Duration::from_millis(100);

/// Polls `step` until it says done. It gives a progress text while it
/// waits; when that text stays the same for `STALL_TIMEOUT`, the wait fails
/// with `what` and the last text.
fn wait_for(
    what: &str,
    mut step: impl FnMut() -> Result<Option<String>, SourceError>,
) -> Result<(), SourceError> {
    let mut last = String::new();
    let mut since = Instant::now();
    loop {
        match step()? {
            None => return Ok(()),
            Some(p) if p != last => {
                last = p;
                since = Instant::now();
            }
            Some(_) if since.elapsed() > STALL_TIMEOUT => {
                return Err(SourceError::Failed(format!(
                    "{what}: no progress for {} s ({last})",
                    STALL_TIMEOUT.as_secs()
                )));
            }
            Some(_) => {}
        }
        std::thread::sleep(POLL);
    }
}

/// A temporary redis-server on a free loopback port, loaded with the
/// snapshot's RDB file from a private directory, with a random password.
/// Dropping it stops it; its directory goes with it.
struct TempServer {
    child: std::process::Child,
    conn: Conn,
    password: String,
    log: PathBuf,
    /// Removed (as a field, after `drop`) once the server is stopped.
    dir: Option<tempfile::TempDir>,
}

impl TempServer {
    /// Starts redis-server on `dir` (which holds `dump.rdb`) and waits
    /// until it has loaded it. A port taken meanwhile by someone else is
    /// retried on another one.
    fn start(
        live: &Live,
        mut dir: tempfile::TempDir,
        source: &str,
    ) -> Result<TempServer, SourceError> {
        for _ in 0..3 {
            match Self::try_start(live, dir, source)? {
                Ok(s) => return Ok(s),
                Err(d) => dir = d,
            }
        }
        Err(SourceError::Failed(format!(
            "source {source}: the temporary redis-server found no free port on 127.0.0.1 (three tries)"
        )))
    }

    /// `Ok(Err(dir))` when the port was taken.
    fn try_start(
        live: &Live,
        dir: tempfile::TempDir,
        source: &str,
    ) -> Result<Result<TempServer, tempfile::TempDir>, SourceError> {
        let failed = |why: String| SourceError::Failed(format!("source {source}: {why}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed(format!("cannot find a free port on 127.0.0.1: {e}")))?
            .port();
        let password = crate::crypto::random_id(24);
        let quoted = |p: &Path| {
            format!(
                "\"{}\"",
                p.display()
                    .to_string()
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
            )
        };
        // The config, password included, goes through stdin: never on a
        // command line, never on disk.
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n\
             dir {}\ndbfilename dump.rdb\nsave \"\"\nappendonly no\ndaemonize no\n\
             logfile \"\"\nrepl-diskless-sync-delay 0\n",
            quoted(dir.path())
        );
        if let Some(n) = &live.databases {
            conf.push_str(&format!("databases {n}\n"));
        }
        let log = dir.path().join("redis-server.log");
        let log_file = fs::File::create(&log)
            .map_err(|e| failed(format!("cannot create {}: {e}", log.display())))?;
        let mut child = crate::childenv::command(&live.redis_server, &[] as &[&str])
            .arg("-")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", live.redis_server.display())))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let _ = stdin.write_all(conf.as_bytes());
        }
        let conn = Conn {
            source: source.to_string(),
            host: "127.0.0.1".into(),
            port,
            db: 0,
            user: None,
            password: Some(password.clone()),
            tls: false,
            shown: format!("redis://127.0.0.1:{port} (the temporary server)"),
        };
        let mut s = TempServer {
            child,
            conn,
            password,
            log,
            dir: Some(dir),
        };
        let what = format!(
            "source {source}: the temporary redis-server on 127.0.0.1:{port} loading the snapshot's RDB file"
        );
        let res = wait_for(&what, || {
            if let Some(st) = s.child.try_wait()? {
                return Err(SourceError::Failed(format!(
                    "{what}: it exited ({st}): {}",
                    s.log_tail()
                )));
            }
            Ok(match s.conn.query(&["INFO", "persistence"])? {
                Reply::Value(v) if info_field(&v, "loading") == Some("0") => None,
                Reply::Value(v) => Some(format!(
                    "loaded {} bytes",
                    info_field(&v, "loading_loaded_bytes").unwrap_or("?")
                )),
                Reply::Error(e) | Reply::Down(e) => Some(e),
            })
        });
        match res {
            Ok(()) => Ok(Ok(s)),
            Err(_) if s.log_tail().contains("Address already in use") => {
                let _ = s.child.kill();
                let _ = s.child.wait();
                // The directory (and the RDB file in it) serves the next try.
                Ok(Err(s.dir.take().expect("the directory is kept until drop")))
            }
            Err(e) => Err(e),
        }
    }

    /// The end of the server's log, for errors.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        tail.join(" | ").replace(&self.password, "***")
    }

    /// Keys per database of what it loaded.
    fn keyspace(&self) -> Result<BTreeMap<String, u64>, SourceError> {
        Ok(keyspace(&self.conn.ask(&["INFO", "keyspace"])?))
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        // SHUTDOWN NOSAVE first: the server exits at once and writes nothing.
        let _ = self.conn.query(&["SHUTDOWN", "NOSAVE"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The live server while it is a replica of the temporary one. Ending it
/// (or dropping it) makes it a master again and puts its `masterauth` and
/// `masteruser` back.
struct Replication<'a> {
    live: &'a Conn,
    masterauth: String,
    masteruser: Option<String>,
    /// `REPLICAOF`, or `SLAVEOF` on servers older than 5.0.
    verb: &'static str,
    ended: bool,
}

impl<'a> Replication<'a> {
    /// Sets the temporary server's password as the live server's
    /// `masterauth` and makes it a replica of the temporary server. On an
    /// error, the live server is as it was.
    fn begin(live: &'a Conn, temp: &TempServer) -> Result<Replication<'a>, String> {
        let masterauth = live
            .config_get("masterauth")
            .ok_or("CONFIG GET masterauth was refused")?;
        let masteruser = live.config_get("masteruser").filter(|u| !u.is_empty());
        let value = |r: Reply| match r {
            Reply::Value(_) => Ok(()),
            Reply::Error(e) | Reply::Down(e) => Err(e),
        };
        let set = |key: &str, v: &str| {
            live.query_with(&["CONFIG", "SET", key], Some(v))
                .map_err(|e| e.to_string())
                .and_then(value)
        };
        set("masterauth", &temp.password)?;
        let mut r = Replication {
            live,
            masterauth,
            masteruser,
            verb: "REPLICAOF",
            ended: false,
        };
        if r.masteruser.is_some() {
            // The temporary server knows only its default user.
            set("masteruser", "")?;
        }
        let port = temp.conn.port.to_string();
        let mut res = live.query(&["REPLICAOF", "127.0.0.1", &port]);
        if let Ok(Reply::Error(e)) = &res
            && e.contains("unknown command")
        {
            r.verb = "SLAVEOF";
            res = live.query(&["SLAVEOF", "127.0.0.1", &port]);
        }
        match res.map_err(|e| e.to_string()).and_then(value) {
            Ok(()) => Ok(r),
            Err(e) => {
                // Not a replica: only the settings to put back.
                r.ended = true;
                let undo = r.restore_settings();
                Err(match undo {
                    Ok(()) => e,
                    Err(u) => format!("{e}; and {u}"),
                })
            }
        }
    }

    fn restore_settings(&self) -> Result<(), String> {
        let set = |key: &str, v: &str| match self.live.query_with(&["CONFIG", "SET", key], Some(v))
        {
            Ok(Reply::Value(_)) => Ok(()),
            Ok(Reply::Error(e) | Reply::Down(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        };
        let mut errs = Vec::new();
        if let Err(e) = set("masterauth", &self.masterauth) {
            errs.push(format!(
                "could not put its masterauth back ({e}): set it again with CONFIG SET masterauth"
            ));
        }
        if let Some(u) = &self.masteruser
            && let Err(e) = set("masteruser", u)
        {
            errs.push(format!(
                "could not put its masteruser back ({e}): CONFIG SET masteruser {u}"
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// Makes the live server a master again (keeping what it holds) and
    /// puts its settings back. The error says what is left to do by hand.
    fn end(&mut self) -> Result<(), String> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let promoted = match self.live.query(&[self.verb, "NO", "ONE"]) {
            Ok(Reply::Value(_)) => Ok(()),
            Ok(Reply::Error(e) | Reply::Down(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        };
        let settings = self.restore_settings();
        match (promoted, settings) {
            (Ok(()), Ok(())) => Ok(()),
            (Ok(()), Err(s)) => Err(s),
            (Err(p), s) => Err(format!(
                "it is STILL A REPLICA of the stopped temporary server: run {} {} NO ONE{}",
                self.live.command_line(),
                self.verb,
                s.err()
                    .map(|s| format!("; it also {s}"))
                    .unwrap_or_default()
            ) + &format!(" ({p})")),
        }
    }

    /// Waits until the live server has received and loaded what the
    /// temporary server sends, and holds as many keys per database.
    fn wait_synced(
        &self,
        temp: &mut TempServer,
        want: &BTreeMap<String, u64>,
    ) -> Result<(), SourceError> {
        let what = format!(
            "the Redis server at {} replicating from the temporary server on 127.0.0.1:{}",
            self.live.shown, temp.conn.port
        );
        wait_for(&what, || {
            if let Some(st) = temp.child.try_wait()? {
                return Err(SourceError::Failed(format!(
                    "{what}: the temporary server exited ({st}): {}",
                    temp.log_tail()
                )));
            }
            let info = self.live.ask(&["INFO"])?;
            let f = |k| info_field(&info, k).unwrap_or("?");
            if f("master_link_status") == "up"
                && f("master_sync_in_progress") == "0"
                && f("loading") == "0"
            {
                return Ok(None);
            }
            Ok(Some(format!(
                "master_link_status:{} master_sync_in_progress:{} master_sync_read_bytes:{} loading:{} loading_loaded_bytes:{}",
                f("master_link_status"),
                f("master_sync_in_progress"),
                f("master_sync_read_bytes"),
                f("loading"),
                f("loading_loaded_bytes"),
            )))
        })?;
        // Expiring keys are deleted on the temporary server and the DELs
        // replicated: give the counts a moment to meet.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = keyspace(&self.live.ask(&["INFO", "keyspace"])?);
            let want_now = temp.keyspace()?;
            if got == want_now {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SourceError::Failed(format!(
                    "after the sync, the Redis server at {} holds {} where the snapshot's RDB file holds {} (loaded: {})",
                    self.live.shown,
                    show_keyspace(&got),
                    show_keyspace(&want_now),
                    show_keyspace(want)
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Replication<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::error!(
                "source {}: the Redis server at {}: {e}",
                self.live.source,
                self.live.shown
            );
        }
    }
}

fn show_keyspace(k: &BTreeMap<String, u64>) -> String {
    if k.is_empty() {
        return "no keys".into();
    }
    let mut dbs: Vec<(&String, &u64)> = k.iter().collect();
    dbs.sort_by_key(|(db, _)| db[2..].parse::<u32>().unwrap_or(u32::MAX));
    let total: u64 = k.values().sum();
    format!(
        "{total} keys ({})",
        dbs.iter()
            .map(|(db, n)| format!("{db}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A fresh private (0700) directory in the temp dir, named `prefix…`.
fn temp_dir(prefix: &str, source: &str) -> Result<tempfile::TempDir, SourceError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| {
            SourceError::Failed(format!(
                "source {source}: cannot create a temp directory in {}: {e}; set TMPDIR to a writable directory with room for the RDB file",
                std::env::temp_dir().display()
            ))
        })
}

/// Loads the snapshot into the running local server: a temporary server
/// loads the RDB file, the live server replicates it (a full sync replaces
/// everything it holds), then is made a master again.
fn load_live(
    req: &DbRestore,
    streams: &mut dyn Streams,
    live: &Live,
) -> Result<DbRestored, SourceError> {
    let c = &live.conn;
    // Private (0700), so no other local user reads the data or the server's files.
    let dir = temp_dir(&format!("coffer-redis-restore-{}-", req.source), req.source)?;
    let path = dir.path().join(STREAM);
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                SourceError::Failed(format!(
                    "source {}: cannot create {}: {e}",
                    req.source,
                    path.display()
                ))
            })?
    };
    // Every byte is read and authenticated before the live server is touched.
    let bytes = stream_to_file(streams, STREAM, &mut file, &path, MAGIC, "an RDB file")?;
    drop(file);
    let failed_unchanged = |e: SourceError| {
        SourceError::Failed(format!(
            "{e}\nThe Redis server at {} was not changed.\n{}",
            c.shown,
            live.fallback(req)
        ))
    };
    let mut temp = TempServer::start(live, dir, req.source).map_err(failed_unchanged)?;
    let want = temp.keyspace().map_err(failed_unchanged)?;
    tracing::info!(
        "source {}: the temporary server holds {}; making {} its replica",
        req.source,
        show_keyspace(&want),
        c.shown
    );
    let mut repl = Replication::begin(c, &temp).map_err(|e| {
        failed_unchanged(SourceError::Failed(format!(
            "source {}: cannot make the Redis server at {} a replica of the temporary server: {e}",
            req.source, c.shown
        )))
    })?;
    let synced = repl.wait_synced(&mut temp, &want);
    let ended = repl.end();
    drop(repl);
    drop(temp);
    let holds = |c: &Conn| match c.query(&["INFO", "keyspace"]) {
        Ok(Reply::Value(v)) => show_keyspace(&keyspace(&v)),
        _ => "an unknown number of keys (INFO keyspace failed)".into(),
    };
    match (synced, ended) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(e)) => {
            return Err(SourceError::Failed(format!(
                "source {}: the Redis server at {} holds the snapshot's data ({}), but {e}",
                req.source,
                c.shown,
                show_keyspace(&want)
            )));
        }
        (Err(e), ended) => {
            let state = match ended {
                Ok(()) => format!(
                    "is a master again and now holds {}; the snapshot holds {}. If that is not what it held before, the sync got part of the way",
                    holds(c),
                    show_keyspace(&want)
                ),
                Err(e) => e,
            };
            return Err(SourceError::Failed(format!(
                "{e}\nThe Redis server at {} {state}.\n{}",
                c.shown,
                live.fallback(req)
            )));
        }
    }
    Ok(DbRestored {
        destination: format!(
            "{} ({}, loaded by replication from a temporary redis-server)",
            c.shown,
            show_keyspace(&want)
        ),
        bytes,
        next_steps: Vec::new(),
    })
}

// ------------------------------------------------------------ the kind

/// Redis as a [`super::DatabaseSource`]. It has no drill: there is nothing
/// to restore it into without a server of its own (check an RDB file with
/// `coffer dump SNAPSHOT SOURCE > dump.rdb && redis-check-rdb dump.rdb`).
pub struct Redis;

impl super::DatabaseSource for Redis {
    fn kind(&self) -> crate::config::SourceKind {
        crate::config::SourceKind::Redis
    }
    fn keys(&self) -> super::Keys {
        super::Keys {
            required: &["url"],
            allowed: &["url", "password_file", "password_env"],
        }
    }
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
        Ok(Box::new(RedisDumper::new(src)?))
    }
    fn destination(&self, req: &DbRestore) -> Result<String, SourceError> {
        destination(req)
    }
    fn restore(
        &self,
        req: &DbRestore,
        streams: &mut dyn Streams,
    ) -> Result<DbRestored, SourceError> {
        restore(req, streams)
    }
    fn check(&self, src: &SourceConfig) -> Result<String, String> {
        if !crate::check::program_found("redis-cli") {
            return Err(
                "the dump tool redis-cli is not installed (not on PATH); install the Redis client tools"
                    .into(),
            );
        }
        self.describe(&super::prepared(self, src)?)
    }
    fn describe(&self, d: &Details) -> Result<String, String> {
        use super::detail_str;
        Ok(format!(
            "{}: Redis {}, {}",
            detail_str(d, "url"),
            detail_str(d, "redis_version"),
            detail_str(d, "redis_cli_version")
        ))
    }
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
        // Issue 10 item 7: `?password=` goes to REDISCLI_AUTH, never shown.
        let c = conn("redis://127.0.0.1:6379/0?password=q%26pw").unwrap();
        assert_eq!(c.password.as_deref(), Some("q&pw"));
        assert!(!c.shown.contains("pw"), "{}", c.shown);
        assert!(!c.args().join(" ").contains("pw"));
    }

    #[test]
    fn only_loopback_hosts_are_local() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "localhost",
            "LOCALHOST",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local(h), "{h}");
        }
        for h in [
            "192.0.2.1",
            "10.0.0.5",
            "redis.internal",
            "::",
            "0.0.0.0",
            "localhost.evil.example",
        ] {
            assert!(!is_local(h), "{h}");
        }
    }

    #[test]
    fn keyspace_lines_and_versions() {
        let info = "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=9\r\ndb12:keys=1,expires=0,avg_ttl=0\r\ndbx:keys=5\r\n";
        let k = keyspace(info);
        assert_eq!(k.len(), 2);
        assert_eq!((k["db0"], k["db12"]), (3, 1));
        assert_eq!(show_keyspace(&k), "4 keys (db0: 3, db12: 1)");
        assert_eq!(show_keyspace(&BTreeMap::new()), "no keys");
        assert_eq!(major_minor("7.0.15"), Some((7, 0)));
        assert!(major_minor("7.2.4") > major_minor("7.0.15"));
        assert_eq!(major_minor("?"), None);
    }

    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "redis"), None);
    }
}
