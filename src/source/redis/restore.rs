//! The Redis source: restore.

use super::*;

/// What the configured server says about itself.
pub(super) enum Server {
    /// It does not answer (stopped, or unreachable), and why.
    Down(String),
    Up {
        /// `<dir>/<dbfilename>`, when CONFIG GET gives both.
        rdb: Option<PathBuf>,
        /// The AOF directory when `appendonly` is on: it loads that instead.
        aof: Option<PathBuf>,
    },
}

pub(super) fn probe(c: &Conn) -> Result<Server, SourceError> {
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
pub(super) fn recorded_rdb(req: &DbRestore) -> Option<PathBuf> {
    let d = req.details.get("dir")?.as_str()?;
    let f = req.details.get("dbfilename")?.as_str()?;
    Some(Path::new(d).join(f))
}

pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

/// The steps to restore the RDB file by hand: stop the server, write the
/// file in its place, start it.
pub(super) fn manual_steps(
    req: &DbRestore,
    c: &Conn,
    rdb: Option<&Path>,
    aof: Option<&Path>,
) -> String {
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
pub(super) fn steps_message(
    req: &DbRestore,
    c: &Conn,
    rdb: Option<&Path>,
    aof: Option<&Path>,
) -> String {
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
pub(super) fn is_local(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A remote server: nothing can be done from here, and nothing is sent to
/// it. The steps name the RDB file the snapshot recorded.
pub(super) fn remote_message(req: &DbRestore, c: &Conn) -> String {
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
pub(super) enum Target {
    /// The RDB file at this path (`--to-database`), and what the configured
    /// server said about itself, if it answered.
    File(PathBuf, Option<Server>),
    /// The running local server, by replication.
    Live(Box<Live>),
}

/// A running local server that coffer can load by replication.
pub(super) struct Live {
    pub(super) conn: Conn,
    /// The redis-server binary for the temporary server.
    pub(super) redis_server: PathBuf,
    /// The server's `databases` (the temporary server needs as many).
    pub(super) databases: Option<String>,
    pub(super) rdb: Option<PathBuf>,
    pub(super) aof: Option<PathBuf>,
}

impl Live {
    /// The manual steps, for errors after which the user must go on by hand.
    pub(super) fn fallback(&self, req: &DbRestore) -> String {
        manual_steps(req, &self.conn, self.rdb.as_deref(), self.aof.as_deref())
    }
}

/// The version `redis-server --version` prints (`v=7.0.15`).
pub(super) fn server_binary_version(bin: &Path) -> Option<String> {
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
pub(super) fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// Every refusal for a load into the running configured server, before any
/// data is read: a remote server, one that does not answer, a replica, a
/// cluster node, no redis-server here, CONFIG forbidden, no --force.
pub(super) fn plan_live(req: &DbRestore, c: Conn) -> Result<Live, SourceError> {
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
        return Err(SourceError::NeedsForce(format!(
            "the Redis server at {} holds {keys} keys: add --force to replace everything in it (every database) with what snapshot {} holds; coffer loads it into the running server by replication from a temporary redis-server",
            c.shown, req.snapshot
        )));
    }
    live.redis_server = bin;
    Ok(live)
}

/// Where the restore goes, after every refusal that needs no data.
pub(super) fn plan(req: &DbRestore) -> Result<Target, SourceError> {
    let conn = match req.config {
        Some(cfg) if cfg.url.is_some() => Some(Conn::new(cfg)?),
        _ => None,
    };
    let Some(p) = req.to_database else {
        let Some(c) = conn else {
            return Err(SourceError::NoLongerConfigured(format!(
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
    let path = std::path::absolute(p).map_err(|source| SourceError::BadPath {
        flag: "--to-database",
        path: p.to_string(),
        source,
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
        return Err(SourceError::NeedsForce(format!(
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
