//! The Redis source: restore into a running server.

use super::*;

/// How long the poll of a starting, loading or syncing server may see no
/// progress at all before coffer gives up.
pub(super) const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a starting, loading or syncing server is asked how far it is.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// Polls `step` until it says done. It gives a progress text while it
/// waits; when that text stays the same for `STALL_TIMEOUT`, the wait fails
/// with `what` and the last text.
pub(super) fn wait_for(
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
pub(super) struct TempServer {
    pub(super) child: std::process::Child,
    pub(super) conn: Conn,
    pub(super) password: String,
    pub(super) log: PathBuf,
    /// Removed (as a field, after `drop`) once the server is stopped.
    pub(super) dir: Option<tempfile::TempDir>,
}

impl TempServer {
    /// Starts redis-server on `dir` (which holds `dump.rdb`) and waits
    /// until it has loaded it. A port taken meanwhile by someone else is
    /// retried on another one.
    pub(super) fn start(
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
    pub(super) fn try_start(
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
    pub(super) fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        tail.join(" | ").replace(&self.password, "***")
    }

    /// Keys per database of what it loaded.
    pub(super) fn keyspace(&self) -> Result<BTreeMap<String, u64>, SourceError> {
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
pub(super) struct Replication<'a> {
    pub(super) live: &'a Conn,
    pub(super) masterauth: String,
    pub(super) masteruser: Option<String>,
    /// `REPLICAOF`, or `SLAVEOF` on servers older than 5.0.
    pub(super) verb: &'static str,
    pub(super) ended: bool,
}

impl<'a> Replication<'a> {
    /// Sets the temporary server's password as the live server's
    /// `masterauth` and makes it a replica of the temporary server. On an
    /// error, the live server is as it was.
    pub(super) fn begin(
        live: &'a Conn,
        temp: &TempServer,
    ) -> Result<Replication<'a>, ReplicationError> {
        let masterauth = live
            .config_get("masterauth")
            .ok_or(ReplicationError::MasterauthUnreadable)?;
        let masteruser = live.config_get("masteruser").filter(|u| !u.is_empty());
        let set = |key: &str, v: &str| answered(live.query_with(&["CONFIG", "SET", key], Some(v)));
        set("masterauth", &temp.password).map_err(ReplicationError::Refused)?;
        let mut r = Replication {
            live,
            masterauth,
            masteruser,
            verb: "REPLICAOF",
            ended: false,
        };
        // The temporary server knows only its default user.
        if r.masteruser.is_some()
            && let Err(error) = set("masteruser", "")
        {
            r.ended = true;
            return Err(ReplicationError::Undone {
                error,
                undo: r.settings_back(),
            });
        }
        let port = temp.conn.port.to_string();
        let mut res = live.query(&["REPLICAOF", "127.0.0.1", &port]);
        if let Ok(Reply::Error(e)) = &res
            && e.contains("unknown command")
        {
            r.verb = "SLAVEOF";
            res = live.query(&["SLAVEOF", "127.0.0.1", &port]);
        }
        match answered(res) {
            Ok(()) => Ok(r),
            Err(e) => {
                // Not a replica: only the settings to put back.
                r.ended = true;
                Err(ReplicationError::Undone {
                    error: e,
                    undo: r.settings_back(),
                })
            }
        }
    }

    /// Puts the live server's `masterauth` and `masteruser` back; what
    /// could not be is left to do by hand.
    fn settings_back(&self) -> Vec<NotPutBack> {
        let set =
            |key: &str, v: &str| answered(self.live.query_with(&["CONFIG", "SET", key], Some(v)));
        let mut left = Vec::new();
        if let Err(e) = set("masterauth", &self.masterauth) {
            left.push(NotPutBack::Masterauth(e));
        }
        if let Some(u) = &self.masteruser
            && let Err(e) = set("masteruser", u)
        {
            left.push(NotPutBack::Masteruser {
                user: u.clone(),
                why: e,
            });
        }
        left
    }

    /// Makes the live server a master again (keeping what it holds) and
    /// puts its settings back. The error says what is left to do by hand.
    pub(super) fn end(&mut self) -> Result<(), EndError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let promoted = answered(self.live.query(&[self.verb, "NO", "ONE"]));
        let settings = self.settings_back();
        match promoted {
            Ok(()) if settings.is_empty() => Ok(()),
            Ok(()) => Err(EndError {
                still_replica: None,
                settings,
            }),
            Err(why) => Err(EndError {
                still_replica: Some(StillReplica {
                    command: format!("{} {} NO ONE", self.live.command_line(), self.verb),
                    why,
                }),
                settings,
            }),
        }
    }

    /// Waits until the live server has received and loaded what the
    /// temporary server sends, and holds as many keys per database.
    pub(super) fn wait_synced(
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

/// What a server said when it did not do what was asked: its error reply,
/// or why no server answered.
fn answered(r: Result<Reply, SourceError>) -> Result<(), String> {
    match r {
        Ok(Reply::Value(_)) => Ok(()),
        Ok(Reply::Error(e) | Reply::Down(e)) => Err(e),
        Err(e) => Err(e.to_string()),
    }
}

/// A setting of the live server a replication changed and could not put back.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotPutBack {
    #[error("could not put its masterauth back ({0}): set it again with CONFIG SET masterauth")]
    Masterauth(String),
    #[error("could not put its masteruser back ({why}): CONFIG SET masteruser {user}")]
    Masteruser { user: String, why: String },
}

fn and_undo(undo: &[NotPutBack]) -> String {
    undo.iter().map(|u| format!("; and {u}")).collect()
}

/// Why the live server could not be made a replica of the temporary one.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReplicationError {
    #[error("CONFIG GET masterauth was refused")]
    MasterauthUnreadable,
    /// The first change was refused: nothing changed.
    #[error("{0}")]
    Refused(String),
    /// A later step was refused; the settings changed before it were put
    /// back, except `undo`.
    #[error("{error}{}", and_undo(.undo))]
    Undone {
        error: String,
        undo: Vec<NotPutBack>,
    },
}

/// The live server is still a replica: the command that ends it, and why
/// coffer could not.
#[derive(Debug)]
pub(super) struct StillReplica {
    command: String,
    why: String,
}

/// What ending a replication left to do by hand.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub(super) struct EndError {
    still_replica: Option<StillReplica>,
    settings: Vec<NotPutBack>,
}

impl EndError {
    fn describe(&self) -> String {
        let settings = self
            .settings
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        match &self.still_replica {
            None => settings,
            Some(r) => format!(
                "it is STILL A REPLICA of the stopped temporary server: run {}{} ({})",
                r.command,
                if settings.is_empty() {
                    String::new()
                } else {
                    format!("; it also {settings}")
                },
                r.why
            ),
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

pub(super) fn show_keyspace(k: &BTreeMap<String, u64>) -> String {
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
pub(super) fn temp_dir(prefix: &str, source: &str) -> Result<tempfile::TempDir, SourceError> {
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
pub(super) fn load_live(
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
                Err(e) => e.to_string(),
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
