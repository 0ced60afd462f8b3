//! `sqlite` sources (SQLite).
//!
//! **Snapshot**: SQLite's online backup API (through `rusqlite`, with its
//! bundled SQLite) copies the database into a file in the system temp
//! directory in one step, under one read transaction: a consistent copy while
//! the application keeps writing (in WAL mode writers are not even blocked;
//! in rollback-journal mode they wait for the copy, retried while the
//! database is busy, up to [`TOOL_TIMEOUT`]). Row counts come from that copy,
//! so they are exact. The copy is opened, unlinked (with its directory) and
//! then streamed into the archive, so nothing of it is left behind, whatever
//! happens to the stream. `coffer dump SNAPSHOT SOURCE` gives the database
//! file back. The source is opened read-only: coffer never changes or
//! checkpoints it (for a WAL database nobody else has open, SQLite may leave
//! the empty `-wal`/`-shm` files a read-only connection needs).
//!
//! **Restore** writes the stored file beside the destination, fsyncs it,
//! and renames it over the destination (so the destination is either the old
//! database or the new one, never half written), then removes the stale
//! `-wal`, `-shm` and `-journal` files of the old database and fsyncs the
//! directory. Before the rename, the old database is checkpointed (its WAL
//! emptied, a hot journal rolled back): were the restore interrupted between
//! the rename and the removal, no stale WAL could be replayed into the new
//! file.
//!
//! A database another process has open or locked (a POSIX lock on its lock
//! bytes, or on the lock bytes of its `-shm` file in WAL mode, seen with
//! `F_GETLK`, which changes nothing) is refused without `--force`. With
//! `--force` it is replaced all the same: the other process keeps the old,
//! now unlinked, file, and whatever it writes there is lost; the restore says
//! so in its next steps (restart that process).
//!
//! **Drill** writes the stored file into a scratch directory, runs `PRAGMA
//! integrity_check`, compares every table's row count with the one recorded
//! at snapshot time, and removes the scratch directory in every case.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::file_target::{
    io_failed, rename_into_place, set_mode_owner, stream_to_file, sync_dir, temp_beside,
};
use super::{
    DbRestore, DbRestored, Details, DrillRequest, DrillResult, DumpStream, Dumper, SourceError,
    Streams, TOOL_TIMEOUT,
};
use crate::config::SourceConfig;

/// The one stream a SQLite source stores: the database file.
pub const STREAM: &str = "database.sqlite3";

/// The first 16 bytes of every SQLite 3 database file.
const MAGIC: &[u8] = b"SQLite format 3\0";

/// SQLite's unix VFS lock bytes in the database file: PENDING_BYTE, then
/// RESERVED_BYTE, then the 510 bytes of the SHARED range.
const DB_LOCK_START: u64 = 0x4000_0000;
const DB_LOCK_LEN: u64 = 512;
/// In the `-shm` file of a WAL database: the 8 WAL locks and the DMS byte,
/// which every connection holds (shared) while it has the database open.
const SHM_LOCK_START: u64 = 120;
const SHM_LOCK_LEN: u64 = 9;

fn sql_err(what: &str, path: &Path, e: rusqlite::Error) -> SourceError {
    SourceError::Failed(format!("SQLite: {what} {}: {e}", path.display()))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub struct SqliteDumper {
    name: String,
    path: PathBuf,
    started: bool,
    /// Facts about the copy, for `finish`.
    facts: Details,
}

impl SqliteDumper {
    pub fn new(src: &SourceConfig) -> Result<Self, SourceError> {
        let path = src.path.clone().ok_or_else(|| SourceError::MissingKey {
            source_name: src.name.clone(),
            key: "path",
            example: "the database file",
        })?;
        Ok(SqliteDumper {
            name: src.name.clone(),
            path,
            started: false,
            facts: Details::new(),
        })
    }
}

/// Reads the first bytes of `path` and checks that it is a SQLite 3 database.
fn check_header(path: &Path) -> Result<fs::Metadata, SourceError> {
    let meta = fs::metadata(path).map_err(|e| io_failed("cannot read", path, e))?;
    if !meta.is_file() {
        return Err(SourceError::Failed(format!(
            "{} is not a regular file (a sqlite source's `path` names the database file)",
            path.display()
        )));
    }
    let mut head = [0u8; 16];
    let n = File::open(path)
        .and_then(|mut f| crate::crypto::read_full(&mut f, &mut head))
        .map_err(|e| io_failed("cannot read", path, e))?;
    if n < MAGIC.len() || head[..] != MAGIC[..] {
        return Err(SourceError::Failed(format!(
            "{} is not a SQLite 3 database (it does not start with \"SQLite format 3\")",
            path.display()
        )));
    }
    Ok(meta)
}

impl Dumper for SqliteDumper {
    fn prepare(&mut self, details: &mut Details) -> Result<(), SourceError> {
        let meta = check_header(&self.path)?;
        details.insert("format".into(), "sqlite3".into());
        details.insert("sqlite_version".into(), rusqlite::version().into());
        details.insert("path".into(), self.path.display().to_string().into());
        details.insert("mode".into(), (meta.mode() & 0o7777).into());
        details.insert("main_stream".into(), STREAM.into());
        Ok(())
    }

    fn next_stream(&mut self) -> Result<Option<DumpStream>, SourceError> {
        if self.started {
            return Ok(None);
        }
        self.started = true;
        let (file, facts) = online_copy(&self.name, &self.path)?;
        self.facts = facts;
        Ok(Some(DumpStream {
            name: STREAM.into(),
            reader: Box::new(io::BufReader::with_capacity(1 << 20, file)),
            done: Box::new(|| Ok(())),
        }))
    }

    fn finish(&mut self, details: &mut Details) -> Result<(), SourceError> {
        details.append(&mut self.facts);
        Ok(())
    }
}

/// Copies the database at `path` with the online backup API into a temp
/// file, gathers its facts (exact row counts), and returns the copy opened
/// for reading, already unlinked.
fn online_copy(source: &str, path: &Path) -> Result<(File, Details), SourceError> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("coffer-sqlite-{source}-"))
        .tempdir()
        .map_err(|e| {
            SourceError::Failed(format!(
                "cannot create a temp directory in {} for the copy of {}: {e}",
                std::env::temp_dir().display(),
                path.display()
            ))
        })?;
    let copy = tmp.path().join("copy.sqlite3");
    // Read-only: the source is never created, changed or checkpointed by us.
    let src = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err("cannot open", path, e))?;
    src.busy_timeout(TOOL_TIMEOUT)
        .map_err(|e| sql_err("cannot set a busy timeout on", path, e))?;
    let journal_mode: String = src
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(|e| sql_err("cannot read", path, e))?;
    {
        let mut dst = Connection::open(&copy).map_err(|e| sql_err("cannot create", &copy, e))?;
        // A scratch file: no journal, no fsync needed.
        dst.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
            .map_err(|e| sql_err("cannot set up", &copy, e))?;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)
            .map_err(|e| sql_err("cannot start the online backup of", path, e))?;
        let deadline = Instant::now() + TOOL_TIMEOUT;
        loop {
            // -1: every page in one step, under one read transaction of the
            // source: the copy is one consistent state of the database.
            use rusqlite::backup::StepResult;
            match backup
                .step(-1)
                .map_err(|e| sql_err("online backup failed for", path, e))?
            {
                StepResult::Done => break,
                StepResult::More => continue,
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    return Err(SourceError::Failed(format!(
                        "SQLite: {} stayed locked by another connection for {} s; the online backup could not read it",
                        path.display(),
                        TOOL_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }
    drop(src);
    let mut facts = Details::new();
    facts.insert("journal_mode".into(), journal_mode.to_lowercase().into());
    {
        let c = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql_err("cannot open the copy", &copy, e))?;
        let page_size: i64 = c
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(|e| sql_err("cannot read", &copy, e))?;
        let page_count: i64 = c
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .map_err(|e| sql_err("cannot read", &copy, e))?;
        facts.insert("page_size".into(), page_size.into());
        facts.insert("page_count".into(), page_count.into());
        let tables = row_counts(&c).map_err(|e| sql_err("cannot count the rows of", path, e))?;
        facts.insert("tables".into(), serde_json::Value::Object(tables));
        facts.insert(
            "objects".into(),
            serde_json::Value::Object(
                schema_objects(&c).map_err(|e| sql_err("cannot read the schema of", path, e))?,
            ),
        );
    }
    let file = File::open(&copy).map_err(|e| io_failed("cannot open", &copy, e))?;
    // The open file stays readable; nothing is left in the temp directory.
    tmp.close()
        .map_err(|e| SourceError::Failed(format!("cannot remove the temp copy: {e}")))?;
    Ok((file, facts))
}

/// Ordinary tables (not SQLite's own, not virtual) of a database.
fn table_names(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )?;
    st.query_map([], |r| r.get::<_, String>(0))?.collect()
}

/// Every ordinary table with its exact row count.
fn row_counts(c: &Connection) -> rusqlite::Result<Details> {
    let mut out = Details::new();
    for t in table_names(c)? {
        let n: i64 = c.query_row(
            &format!("SELECT count(*) FROM {}", quote_ident(&t)),
            [],
            |r| r.get(0),
        )?;
        out.insert(t, n.into());
    }
    Ok(out)
}

/// How many schema objects of each type (table, index, view, trigger).
fn schema_objects(c: &Connection) -> rusqlite::Result<Details> {
    let mut st =
        c.prepare("SELECT type, count(*) FROM sqlite_schema GROUP BY type ORDER BY type")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Details::new();
    for row in rows {
        let (t, n) = row?;
        out.insert(t, n.into());
    }
    Ok(out)
}

// ------------------------------------------------------------------ locks

/// The process, other than this one, holding a POSIX lock on bytes
/// `start..start+len` of `path`, if any.
fn lock_on(path: &Path, start: u64, len: u64) -> Result<Option<i32>, SourceError> {
    use rustix::process::{Flock, FlockOffsetType, FlockType, fcntl_getlk};
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_failed("cannot open", path, e)),
    };
    let probe = Flock {
        start,
        length: len,
        pid: None,
        typ: FlockType::WriteLock,
        offset_type: FlockOffsetType::Set,
    };
    let held = fcntl_getlk(&f, &probe)
        .map_err(|e| io_failed("cannot test the locks of", path, e.into()))?;
    Ok(held.map(|l| l.pid.map_or(0, |p| p.as_raw_nonzero().get())))
}

/// Who has the SQLite database at `path` open or locked, described for a
/// message ("process 1234 (myapp)"), if another process does. Only reads:
/// `F_GETLK` takes no lock.
///
/// This process must hold no SQLite connection to `path`: closing the probe's
/// file descriptor would drop that connection's POSIX locks.
pub(crate) fn lock_holder(path: &Path) -> Result<Option<String>, SourceError> {
    let shm = sidecar(path, "-shm");
    let pid = match lock_on(path, DB_LOCK_START, DB_LOCK_LEN)? {
        Some(p) => Some(p),
        None => lock_on(&shm, SHM_LOCK_START, SHM_LOCK_LEN)?,
    };
    Ok(pid.map(|p| {
        let comm = fs::read_to_string(format!("/proc/{p}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if p == 0 {
            "another process".to_string()
        } else if comm.is_empty() {
            format!("process {p}")
        } else {
            format!("process {p} ({comm})")
        }
    }))
}

/// `path` with `suffix` appended to its file name (`-wal`, `-shm`, ...).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

// ---------------------------------------------------------------- restore

/// Where a restore goes: `--to-database PATH`, or the configured (else the
/// recorded) path. `true` when it is the source's own database.
fn target(req: &DbRestore) -> Result<(PathBuf, bool), SourceError> {
    if let Some(p) = req.to_database {
        let p = p.strip_prefix("file://").unwrap_or(p);
        if p.is_empty() || p.contains("://") {
            return Err(SourceError::Usage(format!(
                "source {} is a SQLite database: --to-database takes the path of the database file to write, not {p:?}",
                req.source
            )));
        }
        let p = std::path::absolute(p).map_err(|source| SourceError::BadPath {
            flag: "--to-database",
            path: p.to_string(),
            source,
        })?;
        return Ok((p, false));
    }
    let configured = req.config.and_then(|c| c.path.clone());
    let recorded = req
        .details
        .get("path")
        .and_then(|v| v.as_str())
        .map(PathBuf::from);
    match configured.or(recorded) {
        Some(p) => Ok((p, true)),
        None => Err(SourceError::Usage(format!(
            "snapshot {} does not say where the database of source {} lives; name a file with --to-database PATH",
            req.snapshot, req.source
        ))),
    }
}

/// Follows a symlink to the database file it names, as SQLite does (its
/// `-wal` and `-shm` live beside the real file).
fn resolve(path: PathBuf) -> Result<PathBuf, SourceError> {
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => match fs::canonicalize(&path) {
            Ok(p) => Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
            Err(e) => Err(io_failed("cannot resolve", &path, e)),
        },
        _ => Ok(path),
    }
}

/// The restore's target after the refusals (a missing `--force`, a database
/// in use), and who holds it, if anyone (only with `--force`).
fn checked_target(req: &DbRestore) -> Result<(PathBuf, Option<String>), SourceError> {
    let (path, own) = target(req)?;
    let path = resolve(path)?;
    let meta = fs::symlink_metadata(&path).ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(SourceError::Usage(format!(
            "{} is a directory; the restore of source {} writes a database file: name the file{}",
            path.display(),
            req.source,
            if own {
                " in the source's `path`"
            } else {
                " with --to-database PATH"
            }
        )));
    }
    let holder = lock_holder(&path)?;
    let exists = meta.is_some();
    if !req.force && (own || exists || holder.is_some()) {
        let what = if own {
            format!(
                "restoring source {} replaces its database file {}",
                req.source,
                path.display()
            )
        } else {
            format!("{} exists and would be replaced", path.display())
        };
        let in_use = match &holder {
            Some(h) => format!(
                "; it is in use: {h} has it open or locked. Stop that process first (e.g. with a before_restore hook), then add --force. With --force while it is still in use, coffer replaces the file anyway: that process keeps the old, deleted file and what it writes there is lost"
            ),
            None => "; add --force".into(),
        };
        return Err(SourceError::NeedsForce(format!("{what}{in_use}")));
    }
    Ok((path, holder))
}

pub fn destination(req: &DbRestore) -> Result<String, SourceError> {
    let (path, _) = checked_target(req)?;
    Ok(path.display().to_string())
}

/// Brings the old database to a state without pending WAL frames or hot
/// journal, so that if the restore stops between the rename and the removal
/// of the stale `-wal`, nothing of the old database can be replayed into the
/// new one. Best effort: a database that cannot be opened has nothing to
/// replay that SQLite would trust either.
fn quiesce(path: &Path) {
    let res = (|| -> rusqlite::Result<()> {
        let c = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(Duration::from_secs(2))?;
        // A first read rolls back a hot journal.
        c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        c.close().map_err(|(_, e)| e)
    })();
    if let Err(e) = res {
        tracing::debug!("checkpoint of the old {} skipped: {e}", path.display());
    }
}

pub fn restore(req: &DbRestore, streams: &mut dyn Streams) -> Result<DbRestored, SourceError> {
    let (dest, holder) = checked_target(req)?;
    let old = fs::metadata(&dest).ok();
    let mut tmp = temp_beside(&dest)?;
    let tmp_path = tmp.path().to_path_buf();
    let bytes = stream_to_file(
        streams,
        STREAM,
        tmp.as_file_mut(),
        &tmp_path,
        MAGIC,
        "a SQLite 3 database",
    )?;
    // The replaced file's mode and owner, else the source's recorded mode.
    let (mode, owner) = match &old {
        Some(m) => (m.mode(), Some((m.uid(), m.gid()))),
        None => (
            req.details
                .get("mode")
                .and_then(|v| v.as_u64())
                .map_or(0o644, |m| m as u32),
            None,
        ),
    };
    set_mode_owner(tmp.as_file(), &tmp_path, mode, owner)?;
    let mut next_steps = Vec::new();
    if old.is_some() {
        match &holder {
            None => quiesce(&dest),
            Some(h) => {
                tracing::warn!(
                    "{} is in use by {h}; replacing it anyway (--force)",
                    dest.display()
                );
                next_steps.push(format!(
                    "restart {h}: it had {} open when it was replaced, so it still uses the old, deleted file, and what it writes there is lost",
                    dest.display()
                ));
            }
        }
    }
    rename_into_place(tmp, &dest)?;
    // The old database's sidecar files would be replayed into the new one.
    let mut removed = false;
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = sidecar(&dest, suffix);
        match fs::remove_file(&p) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_failed("cannot remove the stale", &p, e)),
        }
    }
    if removed {
        sync_dir(&dest)?;
    }
    Ok(DbRestored {
        destination: dest.display().to_string(),
        bytes,
        next_steps,
    })
}

// ------------------------------------------------------------------ drill

/// Where scratch files go: `--scratch-url` (a directory path or `file://`
/// URL), else the system temp directory.
fn scratch_dir(req: &DrillRequest) -> Result<PathBuf, SourceError> {
    let Some(u) = req.scratch_url else {
        return Ok(std::env::temp_dir());
    };
    let p = u.strip_prefix("file://").unwrap_or(u);
    if p.contains("://") {
        return Err(SourceError::Usage(format!(
            "source {} is a SQLite database: --scratch-url names a directory for its scratch file, not {:?}",
            req.source,
            super::redact_url(u)
        )));
    }
    let p = PathBuf::from(p);
    if !p.is_dir() {
        return Err(SourceError::Usage(format!(
            "--scratch-url {u}: {} is not a directory",
            p.display()
        )));
    }
    Ok(p)
}

pub fn drill(req: &DrillRequest, streams: &mut dyn Streams) -> Result<DrillResult, SourceError> {
    let base = scratch_dir(req)?;
    // A directory of its own: the scratch file and its -wal/-shm go with it,
    // whatever happens below (the TempDir is removed when dropped).
    let dir = tempfile::Builder::new()
        .prefix(&format!("coffer-drill-{}-", req.source))
        .tempdir_in(&base)
        .map_err(|e| io_failed("cannot create a scratch directory in", &base, e))?;
    let file_path = dir.path().join(format!("{}.sqlite3", req.source));
    let started = Instant::now();
    let mut file =
        File::create(&file_path).map_err(|e| io_failed("cannot create", &file_path, e))?;
    stream_to_file(
        streams,
        STREAM,
        &mut file,
        &file_path,
        MAGIC,
        "a SQLite 3 database",
    )?;
    drop(file);
    let restore_ms = started.elapsed().as_millis() as u64;
    let mut checks = Vec::new();
    let mut failures = Vec::new();
    check_copy(req, &file_path, &mut checks, &mut failures);
    let scratch = file_path.display().to_string();
    dir.close().map_err(|e| {
        SourceError::Failed(format!(
            "the drill of source {} could not remove its scratch copy {scratch}: {e}",
            req.source
        ))
    })?;
    Ok(DrillResult {
        name: req.source.to_string(),
        kind: "sqlite".into(),
        ok: failures.is_empty(),
        scratch,
        restore_ms,
        checks,
        failures,
        error: None,
    })
}

/// The drill's checks of a restored copy: integrity, then every recorded
/// table's row count.
fn check_copy(
    req: &DrillRequest,
    path: &Path,
    checks: &mut Vec<String>,
    failures: &mut Vec<String>,
) {
    let c = match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("the restored file does not open: {e}"));
            return;
        }
    };
    let integrity = (|| -> rusqlite::Result<Vec<String>> {
        let mut st = c.prepare("PRAGMA integrity_check")?;
        st.query_map([], |r| r.get::<_, String>(0))?.collect()
    })();
    match integrity {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => checks.push("integrity_check: ok".into()),
        Ok(rows) => {
            let shown: Vec<&str> = rows.iter().take(10).map(String::as_str).collect();
            failures.push(format!(
                "integrity_check: {}{}",
                shown.join("; "),
                if rows.len() > 10 {
                    format!(" (and {} more)", rows.len() - 10)
                } else {
                    String::new()
                }
            ));
        }
        Err(e) => failures.push(format!("integrity_check failed: {e}")),
    }
    let Some(expected) = req.details.get("tables").and_then(|v| v.as_object()) else {
        failures.push("the snapshot records no tables to compare with".into());
        return;
    };
    let found = match row_counts(&c) {
        Ok(f) => f,
        Err(e) => {
            failures.push(format!("counting rows failed: {e}"));
            return;
        }
    };
    for (table, want) in expected {
        let want = want.as_i64().unwrap_or(-1);
        match found.get(table).and_then(|v| v.as_i64()) {
            Some(got) if got == want => {
                checks.push(format!("{table}: {got} rows (expected {want})"))
            }
            Some(got) => failures.push(format!("{table}: {got} rows (expected {want})")),
            None => failures.push(format!("{table}: missing (expected {want} rows)")),
        }
    }
    for table in found.keys().filter(|t| !expected.contains_key(*t)) {
        failures.push(format!(
            "{table}: in the restored copy but not recorded at snapshot time"
        ));
    }
}

// ------------------------------------------------------------ the kind

/// SQLite as a [`super::DatabaseSource`].
pub struct Sqlite;

impl super::DatabaseSource for Sqlite {
    fn kind(&self) -> crate::config::SourceKind {
        crate::config::SourceKind::Sqlite
    }
    fn keys(&self) -> super::Keys {
        super::Keys {
            required: &["path"],
            allowed: &["path"],
        }
    }
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
        Ok(Box::new(SqliteDumper::new(src)?))
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
    fn has_drill(&self) -> bool {
        true
    }
    fn drill(
        &self,
        req: &DrillRequest,
        streams: &mut dyn Streams,
    ) -> Result<DrillResult, SourceError> {
        drill(req, streams)
    }
    fn describe(&self, d: &Details) -> String {
        use super::detail_str;
        format!(
            "{}: a readable SQLite database (SQLite {})",
            detail_str(d, "path"),
            detail_str(d, "sqlite_version")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names() {
        assert_eq!(
            sidecar(Path::new("/a/b.db"), "-wal"),
            PathBuf::from("/a/b.db-wal")
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    }

    #[test]
    fn missing_files_hold_no_lock() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(lock_holder(&d.path().join("x.db")).unwrap(), None);
    }
}
