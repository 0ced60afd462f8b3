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
        let raw = src.url.as_deref().ok_or_else(|| SourceError::MissingKey {
            source_name: src.name.clone(),
            key: "url",
            example: "redis://[:password@]host[:port][/db]",
        })?;
        let bad = |why: &str| SourceError::BadUrl {
            what: format!("source {}: `url`", src.name),
            url: redact_url(raw),
            kind: "Redis",
            why: why.to_string(),
            example: "redis://[:password@]host[:port][/db]",
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
            SourceError::spawn(
                &format!("source {}", self.source),
                "redis-cli",
                Some("the Redis client tools"),
                e,
            )
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

mod live;
mod restore;

use live::*;
use restore::*;

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
    fn check(&self, src: &SourceConfig) -> Result<String, SourceError> {
        if !crate::check::program_found("redis-cli") {
            return Err(SourceError::NotInstalled {
                doing: format!("source {}", src.name),
                tool: "redis-cli".into(),
                package: Some("the Redis client tools"),
            });
        }
        Ok(self.describe(&super::prepared(self, src)?))
    }
    fn describe(&self, d: &Details) -> String {
        use super::detail_str;
        format!(
            "{}: Redis {}, {}",
            detail_str(d, "url"),
            detail_str(d, "redis_version"),
            detail_str(d, "redis_cli_version")
        )
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
