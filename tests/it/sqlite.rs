//! `sqlite` sources: a consistent online copy while the application writes
//! (WAL mode), atomic restore, lock refusal, `--to-database`, and drills.

use crate::common::*;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sha2::Digest;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A world with a WAL-mode database `app/sessions.sqlite3` (tables
/// `sessions` with `rows` rows, and `users` with 3), configured as source
/// "sessions". coffer's temp files go to `tmp/` (checked to stay empty).
fn world(rows: u32) -> (Env, PathBuf) {
    let mut env = Env::init(Backend::Fs);
    let db = env.path("app/sessions.sqlite3");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    fs::create_dir_all(env.path("tmp")).unwrap();
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE sessions(id INTEGER PRIMARY KEY, token TEXT NOT NULL, data BLOB);
         CREATE INDEX sessions_token ON sessions(token);
         CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO users(name) VALUES ('ann'), ('bob'), ('cy');",
    )
    .unwrap();
    insert_rows(&c, 0, rows);
    drop(c);
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"sessions\"\ntype = \"sqlite\"\npath = {:?}\n\n",
        db.display().to_string()
    ));
    env.write_config();
    (env, db)
}

fn insert_rows(c: &Connection, from: u32, n: u32) {
    let tx = c.unchecked_transaction().unwrap();
    for i in from..from + n {
        tx.execute(
            "INSERT INTO sessions(token, data) VALUES (?1, ?2)",
            rusqlite::params![format!("tok-{i}"), vec![(i % 251) as u8; 64]],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// `coffer` with its temp directory inside the test's world.
fn cmd(env: &Env) -> assert_cmd::Command {
    let mut c = env.cmd();
    c.env("TMPDIR", env.path("tmp"));
    c
}

fn tmp_is_empty(env: &Env) {
    let left: Vec<_> = fs::read_dir(env.path("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the temp dir: {left:?}");
}

fn snapshot(env: &Env) -> serde_json::Value {
    let o = cmd(env).args(["snapshot", "--json"]).output().unwrap();
    assert_code(&o, 0, "snapshot");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn details(env: &Env, id: &str) -> serde_json::Value {
    let o = cmd(env).args(["show", id, "--json"]).output().unwrap();
    assert_code(&o, 0, "show --json");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    doc["sources"][0]["details"].clone()
}

fn dump(env: &Env, id: &str) -> Vec<u8> {
    let o = cmd(env).args(["dump", id, "sessions"]).output().unwrap();
    assert_code(&o, 0, "dump");
    o.stdout
}

fn count(db: &Path, table: &str) -> i64 {
    let c = Connection::open(db).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn integrity(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn sidecars(db: &Path) -> Vec<String> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| format!("{}{s}", db.display()))
        .filter(|p| Path::new(p).exists())
        .collect()
}

/// Files other than the database itself in its directory (temp files of an
/// unfinished restore, sidecars).
fn others_beside(db: &Path) -> Vec<String> {
    fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n) != db.file_name().unwrap())
        .collect()
}

#[test]
fn wal_database_is_copied_consistently_while_the_application_writes() {
    let (env, db) = world(2000);
    // The application: inserts, one transaction each, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, db) = (stop.clone(), written.clone(), db.clone());
        std::thread::spawn(move || {
            let c = Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let started = Instant::now();
            let mut i = 1_000_000;
            // Bounded in rows and time, whatever happens to the test.
            while !stop.load(Ordering::Relaxed)
                && i < 1_000_000 + 200_000
                && started.elapsed() < Duration::from_secs(60)
            {
                insert_rows(&c, i, 5);
                i += 5;
                written.fetch_add(5, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = written.load(Ordering::Relaxed);
    let snap = snapshot(&env);
    let during = written.load(Ordering::Relaxed) - before;
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        during > 0,
        "the application kept writing during the snapshot"
    );
    let id = snap["id"].as_str().unwrap();
    assert_eq!(snap["sources"][0]["status"], "ok");
    assert_eq!(snap["sources"][0]["type"], "sqlite");

    let d = details(&env, id);
    assert_eq!(d["format"], "sqlite3");
    assert_eq!(d["main_stream"], "database.sqlite3");
    assert_eq!(d["journal_mode"], "wal");
    assert_eq!(d["page_size"], 4096);
    assert!(d["sqlite_version"].as_str().unwrap().starts_with("3."));
    assert_eq!(d["tables"]["users"], 3);
    let recorded = d["tables"]["sessions"].as_i64().unwrap();
    assert!(
        recorded > 2000,
        "rows written before the snapshot are in it"
    );
    assert_eq!(d["objects"]["index"], 1);

    // The stored copy is the database file, consistent and exactly counted.
    let bytes = dump(&env, id);
    assert_eq!(d["streams"][0]["sha256"], sha(&bytes));
    let f = env.path("copy.sqlite3");
    fs::write(&f, &bytes).unwrap();
    assert_eq!(integrity(&f), "ok");
    let o = Command::new("sqlite3")
        .arg(&f)
        .arg("SELECT count(*) FROM sessions; SELECT count(*) FROM users;")
        .output()
        .expect("run sqlite3");
    assert!(o.status.success(), "sqlite3: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), format!("{recorded}\n3\n"));
    // A consistent copy: rows are whole transactions of five.
    assert_eq!((recorded - 2000) % 5, 0, "{recorded} rows");
    assert!(count(&db, "sessions") > recorded, "the application went on");
    tmp_is_empty(&env);
}

#[test]
fn restore_with_force_replaces_the_file_atomically_and_removes_stale_wal() {
    let (env, db) = world(500);
    let id = snapshot(&env)["id"].as_str().unwrap().to_string();
    let stored = dump(&env, &id);

    // The application went on: more rows, a new table; then it crashed,
    // leaving a WAL with committed frames of the old database and its -shm.
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE later(x);")
            .unwrap();
        insert_rows(&c, 10_000, 300);
        let wal = fs::read(format!("{}-wal", db.display())).unwrap();
        let shm = fs::read(format!("{}-shm", db.display())).unwrap();
        assert!(!wal.is_empty());
        drop(c);
        fs::write(format!("{}-wal", db.display()), wal).unwrap();
        fs::write(format!("{}-shm", db.display()), shm).unwrap();
    }
    fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::read(&db).unwrap();
    let old_inode = fs::metadata(&db).unwrap().ino();

    let o = cmd(&env).args(["restore", &id]).output().unwrap();
    assert_code(&o, 2, "restore without --force");
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    assert_eq!(fs::read(&db).unwrap(), before, "untouched without --force");
    assert_eq!(sidecars(&db).len(), 2);

    let o = cmd(&env)
        .args(["restore", &id, "--force", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --dry-run");
    assert!(text(&o.stdout).contains(&db.display().to_string()));
    assert_eq!(fs::read(&db).unwrap(), before, "untouched by --dry-run");

    let o = cmd(&env)
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force");
    assert!(
        text(&o.stdout).contains(&db.display().to_string()),
        "{}",
        text(&o.stdout)
    );
    // Replaced by a rename: a new file, exactly the stored one, with the
    // old one's mode; no stale -wal/-shm, no temp file left beside it.
    let meta = fs::metadata(&db).unwrap();
    assert_ne!(meta.ino(), old_inode, "replaced by a rename");
    assert_eq!(meta.mode() & 0o777, 0o640, "the mode is kept");
    assert!(fs::read(&db).unwrap() == stored, "the snapshot's file");
    assert_eq!(others_beside(&db), Vec::<String>::new());
    assert_eq!(integrity(&db), "ok");
    assert_eq!(count(&db, "sessions"), 500);
    let c = Connection::open(&db).unwrap();
    let later: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'later'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(later, 0, "a table created after the snapshot is gone");
    drop(c);
    tmp_is_empty(&env);
}

/// Holds `BEGIN EXCLUSIVE` (and a write) on `db` in a `sqlite3` process
/// until killed.
struct Locker(
    std::process::Child,
    #[allow(dead_code)] std::process::ChildStdin,
);

impl Locker {
    fn hold(db: &Path) -> Locker {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run sqlite3");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            // A busy timeout: our polling below may hold the lock briefly.
            .write_all(
                b".timeout 10000\nBEGIN EXCLUSIVE;\nINSERT INTO users(name) VALUES ('held');\n",
            )
            .unwrap();
        stdin.flush().unwrap();
        // Its stdin stays open (so it waits) for as long as the Locker lives.
        let l = Locker(child, stdin);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let c = Connection::open(db).unwrap();
            c.busy_timeout(Duration::ZERO).unwrap();
            if c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_err() {
                break;
            }
            drop(c);
            assert!(Instant::now() < deadline, "sqlite3 never took its lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        l
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        // SIGKILL: a clean exit would checkpoint into, and delete, files by
        // the name the restored database now has.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With a lock held by another process: refused (exit 2) without --force,
/// naming the process. With --force the file is replaced anyway (the holder
/// keeps the old, unlinked file; what it writes there is lost), and the
/// restore's next steps say to restart that process.
#[test]
fn restore_refuses_while_another_process_holds_a_lock_unless_forced() {
    let (env, db) = world(100);
    let id = snapshot(&env)["id"].as_str().unwrap().to_string();
    let stored = dump(&env, &id);
    {
        let c = Connection::open(&db).unwrap();
        insert_rows(&c, 5000, 50);
    }
    let locker = Locker::hold(&db);
    let pid = locker.0.id().to_string();

    for args in [
        vec!["restore", &id],
        vec!["restore", &id, "--to-database", db.to_str().unwrap()],
    ] {
        let o = cmd(&env).args(&args).output().unwrap();
        assert_code(&o, 2, &format!("{args:?} while locked"));
        let err = text(&o.stderr);
        assert!(
            err.contains("in use") && err.contains(&pid) && err.contains("sqlite3"),
            "{err}"
        );
        assert!(err.contains("--force"), "{err}");
    }
    // A dry run writes nothing and so refuses nothing: it says what the real
    // restore needs.
    let o = cmd(&env)
        .args(["restore", &id, "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --dry-run while locked");
    let out = text(&o.stdout);
    assert!(
        out.contains("needs --force") && out.contains("in use") && out.contains(&pid),
        "{out}"
    );
    assert_eq!(count(&db, "sessions"), 150, "untouched");

    let o = cmd(&env)
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force while locked");
    let err = text(&o.stderr);
    assert!(
        err.contains("next step") && err.contains("restart") && err.contains(&pid),
        "{err}"
    );
    drop(locker);
    assert!(fs::read(&db).unwrap() == stored);
    assert_eq!(sidecars(&db), Vec::<String>::new());
    assert_eq!(integrity(&db), "ok");
    assert_eq!(count(&db, "sessions"), 100);
    assert_eq!(count(&db, "users"), 3);
}

#[test]
fn to_database_writes_a_new_file_and_replaces_one_only_with_force() {
    let (env, db) = world(50);
    let id = snapshot(&env)["id"].as_str().unwrap().to_string();
    let stored = dump(&env, &id);
    let live = fs::read(&db).unwrap();
    let new = env.path("elsewhere/sub/copy.db");

    let o = cmd(&env)
        .args(["restore", &id, "--to-database", new.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database (new file)");
    assert!(fs::read(&new).unwrap() == stored);
    assert_eq!(integrity(&new), "ok");
    assert_eq!(count(&new, "sessions"), 50);
    assert_eq!(fs::read(&db).unwrap(), live, "the source is untouched");

    let o = cmd(&env)
        .args(["restore", &id, "--to-database", new.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --to-database over an existing file");
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));

    {
        let c = Connection::open(&new).unwrap();
        insert_rows(&c, 100, 10);
    }
    let o = cmd(&env)
        .args([
            "restore",
            &id,
            "--force",
            "--to-database",
            new.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database --force");
    assert_eq!(count(&new, "sessions"), 50);

    // A directory is not a database file; a URL is not a path.
    let o = cmd(&env)
        .args([
            "restore",
            &id,
            "--to-database",
            env.path("tmp").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --to-database DIR");
    let o = cmd(&env)
        .args(["restore", &id, "--to-database", "postgres://h/db"])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --to-database URL");
    tmp_is_empty(&env);
}

#[test]
fn drill_checks_integrity_and_counts_and_removes_its_scratch_file() {
    let (env, _db) = world(300);
    let id = snapshot(&env)["id"].as_str().unwrap().to_string();
    let o = cmd(&env).args(["drill", &id, "--json"]).output().unwrap();
    assert_code(&o, 0, "drill");
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["ok"], true);
    let s = &rep["sources"][0];
    assert_eq!(s["name"], "sessions");
    assert_eq!(s["ok"], true);
    let checks: Vec<&str> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(checks.contains(&"integrity_check: ok"), "{checks:?}");
    assert!(
        checks.contains(&"sessions: 300 rows (expected 300)"),
        "{checks:?}"
    );
    assert!(checks.contains(&"users: 3 rows (expected 3)"), "{checks:?}");
    let scratch = s["scratch"].as_str().unwrap();
    assert!(
        scratch.starts_with(env.path("tmp").to_str().unwrap()),
        "{scratch}"
    );
    assert!(!Path::new(scratch).exists(), "scratch file removed");
    tmp_is_empty(&env);

    // --scratch-url: a directory for the scratch file.
    let scratch_dir = env.path("scratch");
    fs::create_dir_all(&scratch_dir).unwrap();
    let o = cmd(&env)
        .args(["drill", &id, "--scratch-url", scratch_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 0, "drill --scratch-url");
    assert!(text(&o.stdout).contains(scratch_dir.to_str().unwrap()));
    assert_eq!(fs::read_dir(&scratch_dir).unwrap().count(), 0);
}

/// Re-seals snapshot `id` under a new id with the repository's own key, its
/// sources' archives and indexes unchanged but bound to the new id, and
/// `alter` applied to the first source's details. This stands for a snapshot
/// whose recorded facts do not match its data (a bug of an older coffer, a
/// file changed behind the database's back), which no honest run of today's
/// coffer produces: every byte authenticates, so only the drill's checks
/// can tell.
fn reseal_with(
    env: &Env,
    id: &str,
    alter: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> String {
    use coffer::crypto::{Credential, ObjectKind, open_bytes, random_id, seal_bytes};
    use coffer::manifest::seal_context;
    let store = env.store();
    let cred = Credential::KeyFile {
        path: env.key.display().to_string(),
        key: coffer::crypto::read_key_file(&env.key).unwrap(),
    };
    block_on(async move {
        let repo = coffer::repo::open(&store, &cred).await.unwrap();
        let mut m = repo.load_manifest(id).await.unwrap();
        let new_id = random_id(8);
        for src in &mut m.sources {
            let old_ctx = seal_context(&repo.id, id, Some(&src.name));
            let new_ctx = seal_context(&repo.id, &new_id, Some(&src.name));
            for (r, kind) in [
                (&mut src.archive, ObjectKind::Archive),
                (&mut src.index, ObjectKind::Index),
            ] {
                let r = r.as_mut().unwrap();
                let sealed = repo.store.get(&r.object).await.unwrap();
                let plain = open_bytes(repo.master(), kind, &old_ctx, &sealed).unwrap();
                let resealed = seal_bytes(repo.master(), kind, &new_ctx, &plain);
                r.object = format!("data/{new_id}/{}", random_id(8));
                r.size = resealed.len() as u64;
                r.sha256 = sha(&resealed);
                repo.store
                    .put(&r.object, bytes::Bytes::from(resealed), true)
                    .await
                    .unwrap();
            }
        }
        alter(&mut m.sources[0].details);
        m.id = new_id.clone();
        m.time = chrono::Utc::now();
        repo.commit_manifest(&m).await.unwrap();
        new_id
    })
}

#[test]
fn drill_fails_with_exit_3_when_counts_do_not_match_and_still_cleans_up() {
    let (env, _db) = world(120);
    let id = snapshot(&env)["id"].as_str().unwrap().to_string();
    let bad = reseal_with(&env, &id, |d| {
        d["tables"]["sessions"] = 121.into();
    });
    // The re-sealed snapshot is intact as data.
    let o = cmd(&env).args(["verify", &bad, "--deep"]).output().unwrap();
    assert_code(&o, 0, "verify --deep of the re-sealed snapshot");

    let o = cmd(&env).args(["drill", &bad, "--json"]).output().unwrap();
    assert_code(&o, 3, "drill with a count mismatch");
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["ok"], false);
    let s = &rep["sources"][0];
    assert_eq!(s["ok"], false);
    let failures = s["failures"].to_string();
    assert!(
        failures.contains("sessions: 120 rows (expected 121)"),
        "{failures}"
    );
    assert!(s["checks"].to_string().contains("integrity_check: ok"));
    assert!(!Path::new(s["scratch"].as_str().unwrap()).exists());
    tmp_is_empty(&env);

    // Plain output names the failure too; the original snapshot still passes.
    let o = cmd(&env).args(["drill", &bad]).output().unwrap();
    assert_code(&o, 3, "drill (text)");
    assert!(text(&o.stdout).contains("FAILED"), "{}", text(&o.stdout));
    let o = cmd(&env).args(["drill", &id]).output().unwrap();
    assert_code(&o, 0, "drill of the original snapshot");

    // A table recorded but missing fails the drill as well.
    let bad2 = reseal_with(&env, &id, |d| {
        d["tables"]["gone"] = 7.into();
    });
    let o = cmd(&env).args(["drill", &bad2]).output().unwrap();
    assert_code(&o, 3, "drill with a missing table");
    assert!(
        text(&o.stdout).contains("gone: missing"),
        "{}",
        text(&o.stdout)
    );
    tmp_is_empty(&env);
}

#[test]
fn unreadable_source_fails_with_the_path_named() {
    let mut env = Env::init(Backend::Fs);
    let missing = env.path("nope/missing.sqlite3");
    let junk = env.path("junk.sqlite3");
    write(&junk, b"this is not a database at all, just text\n");
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"missing\"\ntype = \"sqlite\"\npath = {:?}\n\n\
         [[sources]]\nname = \"junk\"\ntype = \"sqlite\"\npath = {:?}\n\n",
        missing.display().to_string(),
        junk.display().to_string()
    ));
    env.write_config();
    let o = env.cmd().args(["snapshot"]).output().unwrap();
    assert_code(&o, 1, "snapshot of unreadable sqlite sources");
    let err = text(&o.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("not a SQLite 3 database"), "{err}");
    assert!(
        !missing.exists(),
        "the snapshot does not create the database"
    );
}

#[test]
fn damaged_archive_is_never_restored() {
    let (env, db) = world(2000);
    let id = snapshot(&env)["id"].as_str().unwrap().to_string();
    let o = cmd(&env).args(["show", &id, "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let obj = env
        .path("repo")
        .join(doc["sources"][0]["archive"]["object"].as_str().unwrap());
    let mut bytes = fs::read(&obj).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&obj, &bytes).unwrap();
    {
        let c = Connection::open(&db).unwrap();
        insert_rows(&c, 9000, 7);
    }
    let before = fs::read(&db).unwrap();

    let o = cmd(&env)
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 3, "restore --force of a damaged archive");
    assert!(text(&o.stderr).contains(&id), "{}", text(&o.stderr));
    assert_eq!(fs::read(&db).unwrap(), before, "the database is untouched");
    assert_eq!(
        others_beside(&db),
        Vec::<String>::new(),
        "no temp file left"
    );

    let new = env.path("elsewhere/new.db");
    let o = cmd(&env)
        .args(["restore", &id, "--to-database", new.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 3, "restore --to-database of a damaged archive");
    assert!(!new.exists());
    assert_eq!(
        fs::read_dir(env.path("elsewhere")).map_or(0, |d| d.count()),
        0
    );

    let o = cmd(&env).args(["drill", &id]).output().unwrap();
    assert_code(&o, 3, "drill of a damaged archive");
    let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(out.contains(&id), "the damaged snapshot is named: {out}");
    tmp_is_empty(&env);
}

#[test]
fn restore_with_target_writes_the_database_file_under_it_and_leaves_the_original() {
    let (env, db) = world(300);
    let id = snapshot(&env)["id"].as_str().unwrap().to_string();
    {
        let c = Connection::open(&db).unwrap();
        insert_rows(&c, 5000, 7);
    }
    let before = fs::read(&db).unwrap();
    let target = env.path("r");

    let o = cmd(&env)
        .args([
            "restore",
            &id,
            "--target",
            target.to_str().unwrap(),
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --target --dry-run");
    let file = target.join("sessions/database.sqlite3");
    assert!(
        text(&o.stdout).contains(&file.display().to_string()),
        "{}",
        text(&o.stdout)
    );
    assert!(!target.exists(), "a dry run writes nothing");

    let o = cmd(&env)
        .args(["restore", &id, "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --target");
    assert_eq!(
        fs::read_dir(target.join("sessions")).unwrap().count(),
        1,
        "no temporary file left"
    );
    assert_eq!(count(&file, "sessions"), 300, "the snapshot's rows");
    let c = Connection::open(&file).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    assert_eq!(
        fs::read(&db).unwrap(),
        before,
        "the configured database is untouched"
    );

    let o = cmd(&env)
        .args(["restore", &id, "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --target over a non-empty directory");
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
}
