//! PostgreSQL sources against a real server: 127.0.0.1:5432, user
//! `postgres`, trust authentication (as `scripts/test-servers.sh` expects).
//! Every test makes uniquely named databases and drops them at the end; a
//! server that does not answer fails the tests loudly.
//!
//! Covered: snapshot of a schema with a sequence, index, view, function,
//! unicode text and bytea; `restore --force` (also with a session connected
//! to the database) and `--to-database` (new, non-empty, `jobs = 2`);
//! `coffer dump | pg_restore`; the manifest's facts; `globals = true`; dump
//! tool failures (killed, exit 1, too old), a missing database or role and an
//! unreachable server; `drill` passing, and failing on recorded counts that
//! do not match.

use crate::common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use coffer::crypto::{self, Credential, ObjectKind};
use coffer::manifest::seal_context;
use sha2::Digest;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn json_of(o: &Output, code: i32, what: &str) -> serde_json::Value {
    assert_code(o, code, what);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}):\n{}", stdout(o)))
}

fn url(db: &str) -> String {
    format!("{SERVER}/{db}")
}

/// Runs a psql script against `db`; its unaligned, tuples-only output.
fn sql(db: &str, script: &str) -> String {
    let mut c = Command::new("psql");
    c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-w", "-d"])
        .arg(url(db))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect(
        "psql is not installed: these tests need the PostgreSQL client tools and a server on 127.0.0.1:5432",
    );
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "psql on {db} failed: {}\nscript:\n{script}",
        stderr(&o)
    );
    stdout(&o)
}

/// Fails loudly when the test server is not there.
fn require_server() {
    let o = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-w",
            "-d",
            &url("postgres"),
            "-c",
            "SELECT 1",
        ])
        .output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "PostgreSQL is not reachable at {SERVER} (trust auth, user postgres): {}\n\
             start it (bash scripts/test-servers.sh start) before running these tests",
            stderr(&o)
        ),
        Err(e) => panic!("cannot run psql ({e}): install the PostgreSQL client tools"),
    }
}

fn databases_like(pattern: &str) -> Vec<String> {
    sql(
        "postgres",
        &format!(
            "SELECT datname FROM pg_database WHERE datname LIKE '{}' ORDER BY 1;",
            pattern.replace('\'', "''")
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn db_exists(name: &str) -> bool {
    !databases_like(&name.replace('_', "\\_")).is_empty()
}

/// A database name for this test run, dropped (with any database coffer
/// derived from it) when this goes out of scope.
struct TestDb(String);

impl TestDb {
    fn name(tag: &str) -> TestDb {
        require_server();
        TestDb(format!(
            "coffer_t_{tag}_{}_{}",
            std::process::id(),
            crypto::random_id(3)
        ))
    }

    fn create(tag: &str) -> TestDb {
        let d = TestDb::name(tag);
        sql("postgres", &format!("CREATE DATABASE {};", d.0));
        d
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let mut names = databases_like(&format!("{}%", self.0.replace('_', "\\_")));
        names.push(self.0.clone());
        for n in names {
            let _ = Command::new("psql")
                .args(["-X", "-q", "-w", "-d", &url("postgres"), "-c"])
                .arg(format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"))
                .output();
        }
    }
}

const SCHEMA: &str = r#"
CREATE SEQUENCE order_no START 1000;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text, photo bytea);
CREATE TABLE orders (
    id bigint PRIMARY KEY DEFAULT nextval('order_no'),
    customer int REFERENCES customers(id),
    total numeric(10,2),
    created timestamptz DEFAULT '2026-01-01T00:00:00Z'
);
CREATE INDEX orders_customer ON orders (customer);
CREATE VIEW big_orders AS
    SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer WHERE o.total > 100;
CREATE FUNCTION order_total(int) RETURNS numeric LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum(total), 0) FROM orders WHERE customer = $1 $$;
INSERT INTO customers (name, note, photo) VALUES
    ('Zoë', 'café ☕ 日本語 — «quotes» ''single''', '\x00ff10'::bytea),
    ('Bob', NULL, decode(repeat('ab01', 2000), 'hex')),
    ('Ünal', E'tab\there\nnewline 🎉', ''::bytea);
INSERT INTO orders (customer, total) SELECT 1 + (g % 3), g * 1.5 FROM generate_series(1, 200) g;
"#;

/// Everything the tests compare, as text: rows, sequence state, view and
/// function results, indexes, tables, functions.
fn fingerprint(db: &str) -> String {
    sql(
        db,
        r#"
SELECT id, name, note, encode(photo, 'hex') FROM customers ORDER BY id;
SELECT count(*), sum(total), max(id), min(created) FROM orders;
SELECT last_value, is_called FROM order_no;
SELECT md5(string_agg(format('%s|%s|%s', id, name, total), ',' ORDER BY id)) FROM big_orders;
SELECT order_total(1), order_total(2);
SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1;
SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1;
SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1;
SELECT last_value FROM customers_id_seq;
"#,
    )
}

fn add_pg_source(env: &mut Env, name: &str, url: &str, extra: &str) {
    env.sources.push_str(&format!(
        "[[sources]]\nname = {name:?}\ntype = \"postgres\"\nurl = {url:?}\n{extra}\n"
    ));
    env.write_config();
}

fn show(env: &Env, snap: &str) -> serde_json::Value {
    let o = env.cmd().args(["show", snap, "--json"]).output().unwrap();
    json_of(&o, 0, "show --json")
}

fn source<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {doc:#}"))
}

/// A world: a repository and one postgres source `db` on a fresh database
/// holding SCHEMA (the URL carries a password, which trust auth ignores and
/// coffer must never show).
fn world(tag: &str) -> (Env, TestDb) {
    let db = TestDb::create(tag);
    sql(&db.0, SCHEMA);
    let mut env = Env::init(Backend::Fs);
    let u = format!("postgres://postgres:hunter2@127.0.0.1:5432/{}", db.0);
    add_pg_source(&mut env, "db", &u, "");
    (env, db)
}

#[test]
fn restore_force_and_to_database_give_back_exactly_the_snapshot() {
    let (env, db) = world("restore");
    sql(
        &db.0,
        &format!(
            "ALTER DATABASE {0} SET work_mem = '7MB'; ALTER DATABASE {0} SET search_path = \"my schema\", public; COMMENT ON DATABASE {0} IS 'shop db';",
            db.0
        ),
    );
    let original = fingerprint(&db.0);
    let snap = env.snapshot_json(&[], 0);
    let id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(source(&snap, "db")["status"], "ok", "{snap:#}");

    // The manifest's facts, and no password anywhere.
    let doc = show(&env, &id);
    let d = &source(&doc, "db")["details"];
    assert!(
        d["server_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric),
        "{d:#}"
    );
    assert!(
        d["pg_dump_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    assert_eq!(d["format"], "custom");
    assert_eq!(d["main_stream"], "pg_dump.custom");
    assert_eq!(d["tables"]["public.customers"], 3, "{d:#}");
    assert_eq!(d["tables"]["public.orders"], 200, "{d:#}");
    assert_eq!(d["tables"].as_object().unwrap().len(), 2, "{d:#}");
    assert!(
        !doc.to_string().contains("hunter2"),
        "password in the manifest"
    );

    // Change everything: rows, the sequence, drop the view, add a table.
    sql(
        &db.0,
        "UPDATE customers SET note = 'changed', photo = NULL WHERE id = 1;
         DELETE FROM orders WHERE id % 2 = 0;
         SELECT nextval('order_no') FROM generate_series(1, 5);
         DROP VIEW big_orders;
         CREATE TABLE created_since (x int); INSERT INTO created_since VALUES (1);
         CREATE FUNCTION also_new() RETURNS int LANGUAGE sql AS 'SELECT 1';",
    );
    assert_eq!(sql(&db.0, "SELECT count(*) FROM orders;").trim(), "100");

    // Without --force: refused, nothing touched.
    let o = env.cmd().args(["restore", "latest"]).output().unwrap();
    assert_code(
        &o,
        2,
        "restore into the configured database without --force",
    );
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2"));
    assert!(sql(&db.0, "SELECT to_regclass('created_since') IS NOT NULL;").trim() == "t");

    // --dry-run says where it would go and writes nothing.
    let o = env
        .cmd()
        .args(["restore", "latest", "--force", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force --dry-run");
    assert!(stdout(&o).contains(&db.0), "{}", stdout(&o));
    assert!(sql(&db.0, "SELECT to_regclass('created_since') IS NOT NULL;").trim() == "t");

    // With --force, while an application session is connected.
    let mut app = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-w",
            "-d",
            &url(&db.0),
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = env
        .cmd()
        .args(["restore", "latest", "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force");
    assert!(!stderr(&o).contains("hunter2") && !stdout(&o).contains("hunter2"));
    assert!(
        !app.wait().unwrap().success(),
        "the connected session survived the restore"
    );
    assert_eq!(fingerprint(&db.0), original);
    assert_eq!(
        sql(
            &db.0,
            "SELECT to_regclass('created_since') IS NULL, to_regproc('also_new') IS NULL;"
        )
        .trim(),
        "t|t"
    );
    // The database's own settings and comment are kept; nothing left over.
    let settings = sql(
        "postgres",
        &format!(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{0}';
             SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{0}';",
            db.0
        ),
    );
    assert!(
        settings.contains("work_mem=7MB")
            && settings.contains(r#""search_path=\"my schema\", public""#),
        "{settings}"
    );
    assert!(settings.contains("shop db"), "{settings}");
    assert_eq!(
        databases_like(&format!("{}\\_coffer%", db.0.replace('_', "\\_"))),
        Vec::<String>::new()
    );

    // --to-database: a database that does not exist yet is created.
    let other = TestDb::name("other");
    assert!(!db_exists(&other.0));
    let o = env
        .cmd()
        .args(["restore", "latest", "--to-database", &url(&other.0)])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database (new)");
    assert_eq!(fingerprint(&other.0), original);
    // It exists now and is not empty: refused without --force ...
    sql(&other.0, "INSERT INTO customers (name) VALUES ('extra');");
    let o = env
        .cmd()
        .args(["restore", "latest", "--to-database", &url(&other.0)])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --to-database into a non-empty database");
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    // ... and replaced with it.
    let o = env
        .cmd()
        .args([
            "restore",
            "latest",
            "--force",
            "--to-database",
            &url(&other.0),
        ])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database --force");
    assert_eq!(fingerprint(&other.0), original);
}

#[test]
fn dump_pipes_into_pg_restore_and_jobs_restore_in_parallel() {
    let (mut env, db) = world("dump");
    let original = fingerprint(&db.0);
    env.snapshot_ok();

    // `coffer dump latest db | pg_restore -d fresh`, through a real pipe.
    let fresh = TestDb::create("fresh");
    let mut dump = env
        .spawn_cmd()
        .args(["dump", "latest", "db"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let restore = Command::new("pg_restore")
        .args(["--exit-on-error", "-w", "-d", &url(&fresh.0)])
        .stdin(Stdio::from(dump.stdout.take().unwrap()))
        .output()
        .unwrap();
    let dumped = dump.wait_with_output().unwrap();
    assert_code(&dumped, 0, "coffer dump latest db");
    assert_code(&restore, 0, "pg_restore from coffer dump");
    assert_eq!(fingerprint(&fresh.0), original);

    // jobs = 2: pg_restore -j 2 (from a temporary file).
    env.sources = env.sources.replace("\"\n\n", "\"\njobs = 2\n\n");
    env.write_config();
    let parallel = TestDb::name("jobs");
    let o = env
        .cmd()
        .args(["restore", "latest", "--to-database", &url(&parallel.0)])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database with jobs = 2");
    assert_eq!(fingerprint(&parallel.0), original);
    // A snapshot with jobs says why the dump is one stream.
    let id = env.snapshot_ok();
    let doc = show(&env, &id);
    let d = &source(&doc, "db")["details"];
    assert!(
        d["jobs_note"].as_str().unwrap().contains("pg_restore"),
        "{d:#}"
    );
}

#[test]
fn globals_are_stored_and_dumped() {
    let db = TestDb::create("globals");
    let mut env = Env::init(Backend::Fs);
    add_pg_source(&mut env, "db", &url(&db.0), "globals = true");
    let id = env.snapshot_ok();
    let doc = show(&env, &id);
    let streams: Vec<&str> = source(&doc, "db")["details"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["globals.sql", "pg_dump.custom"]);
    let o = env
        .cmd()
        .args(["dump", "latest", "db", "globals.sql"])
        .output()
        .unwrap();
    assert_code(&o, 0, "dump globals.sql");
    assert!(
        stdout(&o).contains("CREATE ROLE postgres"),
        "{}",
        stdout(&o)
    );
    // The default dump is still the pg_dump archive.
    let o = env.cmd().args(["dump", "latest", "db"]).output().unwrap();
    assert_code(&o, 0, "dump");
    assert!(o.stdout.starts_with(b"PGDMP"), "not a custom archive");
}

/// A directory on PATH holding a fake `pg_dump` made of `body` (sh), which
/// answers `--version` as `version` says (a text, or the real tool's).
fn fake_pg_dump(env: &Env, version: Option<&str>, body: &str) -> PathBuf {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v pg_dump"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(!real.is_empty(), "pg_dump is not installed");
    let dir = env.path(&format!("fakebin-{}", crypto::random_id(3)));
    fs::create_dir_all(&dir).unwrap();
    let version = match version {
        Some(v) => format!("echo '{v}'; exit 0"),
        None => format!("exec '{real}' --version"),
    };
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then {version}; fi\nREAL='{real}'\n{body}\n"
    );
    let p = dir.join("pg_dump");
    fs::write(&p, script).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn with_path(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn data_objects(env: &Env, id: &str) -> Vec<String> {
    let store = env.store();
    let prefix = format!("data/{id}/");
    let mut v: Vec<String> = block_on(async move { store.list(&prefix).await.expect("list") })
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    v.sort();
    v
}

#[test]
fn a_failing_dump_tool_fails_the_source_and_stores_nothing_of_it() {
    let (mut env, _db) = world("fail");
    let files = env.path("files");
    write(&files.join("a.txt"), b"hello\n");
    env.add_dir_source("files", &files, &[]);

    // Killed mid-way (after part of a real dump): partial snapshot, exit 4.
    let killed = fake_pg_dump(&env, None, "\"$REAL\" \"$@\" | head -c 3000\nkill -9 $$");
    let o = env
        .cmd()
        .env("PATH", with_path(&killed))
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    let snap = json_of(&o, 4, "snapshot with a killed pg_dump");
    let s = source(&snap, "db");
    assert_eq!(s["status"], "failed", "{snap:#}");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("pg_dump") && err.contains("signal 9"), "{err}");
    assert!(stderr(&o).contains("db"), "{}", stderr(&o));
    assert_eq!(source(&snap, "files")["status"], "ok");
    let id = snap["id"].as_str().unwrap();
    let m = show(&env, id);
    let files_src = source(&m, "files");
    let mut kept = vec![
        files_src["archive"]["object"].as_str().unwrap().to_string(),
        files_src["index"]["object"].as_str().unwrap().to_string(),
    ];
    kept.sort();
    assert_eq!(
        data_objects(&env, id),
        kept,
        "objects of the failed source remain"
    );
    assert!(source(&m, "db")["archive"].is_null());

    // Exits 1 with a message, as the only source: nothing committed, exit 1.
    let mut only = Env::init(Backend::Fs);
    only.sources = env
        .sources
        .split("[[sources]]\nname = \"files\"")
        .next()
        .unwrap()
        .to_string();
    only.write_config();
    let failing = fake_pg_dump(
        &only,
        None,
        "\"$REAL\" \"$@\" | head -c 3000\necho 'pg_dump: error: simulated failure reading table orders' >&2\nexit 1",
    );
    let o = only
        .cmd()
        .env("PATH", with_path(&failing))
        .args(["snapshot"])
        .output()
        .unwrap();
    assert_code(&o, 1, "snapshot whose only source's pg_dump exits 1");
    let e = stderr(&o);
    assert!(
        e.contains("db") && e.contains("simulated failure reading table orders"),
        "{e}"
    );
    assert!(e.contains("exit status 1"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let o = only.cmd().args(["snapshots", "--json"]).output().unwrap();
    assert_eq!(json_of(&o, 0, "snapshots"), serde_json::json!([]));
    let store = only.store();
    let left = block_on(async move { store.list("data/").await.expect("list") });
    assert!(left.is_empty(), "objects left behind: {left:?}");

    // A pg_dump older than the server: stopped before it runs at all.
    let marker = only.path("pg_dump-ran");
    let old = fake_pg_dump(
        &only,
        Some("pg_dump (PostgreSQL) 9.6.0"),
        &format!("touch '{}'\nexec \"$REAL\" \"$@\"", marker.display()),
    );
    let o = only
        .cmd()
        .env("PATH", with_path(&old))
        .args(["snapshot"])
        .output()
        .unwrap();
    assert_code(&o, 1, "snapshot with a too old pg_dump");
    let e = stderr(&o);
    assert!(
        e.contains("pg_dump 9.6.0 is older than the PostgreSQL server"),
        "{e}"
    );
    assert!(e.contains("client tools"), "{e}");
    assert!(!marker.exists(), "the old pg_dump was run");
}

#[test]
fn missing_database_role_or_server_fail_clearly() {
    require_server();
    let mut env = Env::init(Backend::Fs);
    let nodb = format!("coffer_t_nodb_{}", crypto::random_id(3));
    add_pg_source(&mut env, "nodb", &url(&nodb), "");
    add_pg_source(
        &mut env,
        "norole",
        "postgres://coffer_no_such_role@127.0.0.1:5432/postgres",
        "",
    );
    add_pg_source(
        &mut env,
        "down",
        "postgres://postgres:hunter2@127.0.0.1:1/postgres",
        "",
    );
    let files = env.path("files");
    write(&files.join("a.txt"), b"hello\n");
    env.add_dir_source("files", &files, &[]);
    let o = env.cmd().args(["snapshot", "--json"]).output().unwrap();
    let snap = json_of(&o, 4, "snapshot with three broken database sources");
    let e = stderr(&o);
    for (name, why) in [
        ("nodb", format!("database \"{nodb}\" does not exist")),
        (
            "norole",
            "role \"coffer_no_such_role\" does not exist".to_string(),
        ),
        ("down", "port 1 failed".to_string()),
    ] {
        let s = source(&snap, name);
        assert_eq!(s["status"], "failed", "{name}: {snap:#}");
        let err = s["error"].as_str().unwrap();
        assert!(err.contains(&why), "{name}: {err}");
        assert!(
            e.lines().any(|l| l.contains(name) && l.contains(&why))
                || (e.contains(name) && e.contains(&why)),
            "stderr does not name {name} and why:\n{e}"
        );
    }
    assert!(!o.stdout.is_empty() && !stdout(&o).contains("hunter2"));
    assert!(!e.contains("hunter2"), "{e}");
}

fn key_credential(env: &Env) -> Credential {
    Credential::KeyFile {
        path: env.key.display().to_string(),
        key: crypto::read_key_file(&env.key).expect("key file"),
    }
}

/// Commits a copy of snapshot `id` under a new id whose manifest records
/// `rows` for `table` of source `src`; returns the new id.
///
/// Why this is an honest way to get a drill failure: the drill's promise is
/// that it notices when what a snapshot restores is not what was recorded
/// when it was taken. Row counts are taken in the very snapshot `pg_dump`
/// dumps, so a real snapshot can only disagree if its data or its manifest
/// went wrong. We make the manifest wrong the only way that authenticates:
/// with the repository's key, through the library, as a buggy or malicious
/// writer holding the key would. The archive and index must be re-sealed
/// too, because every object's seal binds the snapshot id: the stored bytes
/// (the real dump) are unchanged, only their sealing context is.
fn commit_altered_copy(env: &Env, id: &str, src: &str, table: &str, rows: u64) -> String {
    let store = env.store();
    let cred = key_credential(env);
    let (id, src, table) = (id.to_string(), src.to_string(), table.to_string());
    block_on(async move {
        let repo = coffer::repo::open(&store, &cred).await.expect("open repo");
        let mut m = repo.load_manifest(&id).await.expect("load manifest");
        let new_id = crypto::random_id(8);
        for s in m.sources.iter_mut() {
            let old_ctx = seal_context(&repo.id, &id, Some(&s.name));
            let new_ctx = seal_context(&repo.id, &new_id, Some(&s.name));
            for (obj, kind) in [
                (&mut s.archive, ObjectKind::Archive),
                (&mut s.index, ObjectKind::Index),
            ] {
                let Some(r) = obj.as_mut() else { continue };
                let sealed = repo.store.get(&r.object).await.expect("get object");
                let plain = crypto::open_bytes(repo.master(), kind, &old_ctx, &sealed)
                    .expect("open object");
                let resealed = crypto::seal_bytes(repo.master(), kind, &new_ctx, &plain);
                r.object = format!("data/{new_id}/{}", crypto::random_id(8));
                r.size = resealed.len() as u64;
                r.sha256 = hex::encode(sha2::Sha256::digest(&resealed));
                repo.store
                    .put(&r.object, Bytes::from(resealed), true)
                    .await
                    .expect("put object");
            }
            if s.name == src {
                s.details["tables"][&table] = rows.into();
            }
        }
        m.id = new_id.clone();
        m.time = chrono::Utc::now();
        repo.commit_manifest(&m).await.expect("commit manifest");
        new_id
    })
}

fn drill_scratch_dbs(id: &str) -> Vec<String> {
    databases_like(&format!("coffer\\_drill\\_{id}%"))
}

#[test]
fn drill_passes_on_a_good_snapshot_and_fails_on_wrong_counts() {
    let (env, _db) = world("drill");
    let id = env.snapshot_ok();

    let o = env.cmd().args(["drill", "--json"]).output().unwrap();
    let rep = json_of(&o, 0, "drill of a good snapshot");
    assert_eq!(rep["ok"], true, "{rep:#}");
    let s = &rep["sources"][0];
    assert_eq!(s["name"], "db");
    assert_eq!(s["ok"], true);
    assert!(s["restore_ms"].is_u64(), "{rep:#}");
    let checks: Vec<&str> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        checks.contains(&"public.customers: 3 rows (expected 3)"),
        "{checks:?}"
    );
    assert!(
        checks.contains(&"public.orders: 200 rows (expected 200)"),
        "{checks:?}"
    );
    assert!(
        s["scratch"]
            .as_str()
            .unwrap()
            .contains(&format!("coffer_drill_{id}"))
    );
    assert!(!rep.to_string().contains("hunter2"));
    assert_eq!(
        drill_scratch_dbs(&id),
        Vec::<String>::new(),
        "scratch database left behind"
    );

    // --scratch-url: scratch databases on the server it names.
    let o = env
        .cmd()
        .args(["drill", &id, "--scratch-url", SERVER])
        .output()
        .unwrap();
    assert_code(&o, 0, "drill --scratch-url");
    assert!(
        stdout(&o).contains("public.orders: 200 rows (expected 200)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(drill_scratch_dbs(&id), Vec::<String>::new());

    // Recorded counts that the data does not match: exit 3, named, dropped.
    let bad = commit_altered_copy(&env, &id, "db", "public.orders", 201);
    let o = env.cmd().args(["drill", &bad, "--json"]).output().unwrap();
    let rep = json_of(&o, 3, "drill of a snapshot with a wrong recorded count");
    assert_eq!(rep["ok"], false);
    let s = &rep["sources"][0];
    assert!(s["error"].is_null(), "{rep:#}");
    let failures: Vec<&str> = s["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        failures,
        ["public.orders: 200 rows (expected 201)"],
        "{rep:#}"
    );
    assert_eq!(
        drill_scratch_dbs(&bad),
        Vec::<String>::new(),
        "scratch database left behind after a failed check"
    );
}

#[test]
fn a_damaged_archive_leaves_the_database_as_it_was() {
    let (env, db) = world("damage");
    // Enough incompressible-ish data for several sealed segments, so that
    // pg_restore is already running when the damage is reached.
    sql(
        &db.0,
        "CREATE TABLE filler AS SELECT g, md5(g::text) || md5(random()::text) AS h FROM generate_series(1, 60000) g;",
    );
    let id = env.snapshot_ok();
    sql(&db.0, "CREATE TABLE created_since (x int);");
    let before = fingerprint(&db.0);
    let doc = show(&env, &id);
    let archive = source(&doc, "db")["archive"]["object"]
        .as_str()
        .unwrap()
        .to_string();
    let path = Path::new(&env.url).join(&archive);
    let mut bytes = fs::read(&path).unwrap();
    assert!(
        bytes.len() > 2 << 20,
        "archive too small to span segments: {}",
        bytes.len()
    );
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x40;
    let mut perms = fs::metadata(&path).unwrap().permissions();
    perms.set_mode(0o644);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, &bytes).unwrap();

    let o = env
        .cmd()
        .args(["restore", "latest", "--force"])
        .output()
        .unwrap();
    assert_code(&o, 3, "restore --force of a damaged archive");
    assert_eq!(fingerprint(&db.0), before);
    assert_eq!(
        sql(&db.0, "SELECT to_regclass('created_since') IS NOT NULL;").trim(),
        "t"
    );
    assert_eq!(
        databases_like(&format!("{}\\_coffer%", db.0.replace('_', "\\_"))),
        Vec::<String>::new(),
        "a temporary database was left behind"
    );
}

/// Issue 10 item 7: a password in the URL, in the user info or as
/// `?password=`, reaches pg_dump, psql and pg_restore only through their
/// environment (PGPASSWORD), never their command lines (`ps`), and shows in
/// no output.
#[test]
fn a_url_password_never_reaches_a_tools_command_line() {
    for (tag, url_of) in [
        (
            "argvui",
            (|db: &str| format!("postgres://postgres:hunter2@127.0.0.1:5432/{db}"))
                as fn(&str) -> String,
        ),
        ("argvq", |db: &str| {
            format!("postgres://postgres@127.0.0.1:5432/{db}?password=hunter2&sslmode=disable")
        }),
    ] {
        let db = TestDb::create(tag);
        sql(&db.0, SCHEMA);
        let mut env = Env::init(Backend::Fs);
        add_pg_source(&mut env, "db", &url_of(&db.0), "");
        let spy = ArgvSpy::new(env.dir.path(), &["pg_dump", "psql", "pg_restore"]);
        let mut outputs = Vec::new();
        for args in [
            &["snapshot", "--json"][..],
            &["drill", "--json"],
            &["check"],
        ] {
            let o = env
                .cmd()
                .env("PATH", spy.path_var())
                .args(args)
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(o.status.code(), Some(0), "{tag} {args:?}: {all}");
            outputs.push(all);
        }
        let argv = spy.command_lines();
        assert!(
            argv.contains("pg_dump ") && argv.contains("pg_restore "),
            "{tag}: the tools ran through the wrappers: {argv}"
        );
        outputs.push(argv);
        for t in outputs {
            assert!(!t.contains("hunter2"), "{tag}: password shown: {t}");
        }
    }
}

fn comment_of(db: &str) -> String {
    sql(
        "postgres",
        &format!(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '<none>') FROM pg_database WHERE datname = '{db}';"
        ),
    )
    .trim()
    .to_string()
}

/// Issue 11 item 3: a killed `restore --force` or drill leaves its scratch
/// database. Each carries a marker comment (pid, host, start) while coffer
/// works in it; `check` reports left-overs, and the next restore (or drill)
/// drops those provably abandoned: exact scratch name, this host, a pid
/// that no longer runs. Never a `_coffer_old_` one, never one without a
/// marker, from another host or of a running process; and the restored
/// database keeps its own comment, not the marker.
#[test]
fn a_killed_restores_scratch_database_is_dropped_by_the_next_restore() {
    let (env, db) = world("leftover");
    sql(
        "postgres",
        &format!("COMMENT ON DATABASE {} IS 'the shop';", db.0),
    );
    let id = env.snapshot_ok();
    let host = coffer::repo::host_name();
    let dead = dead_pid();
    let mark = |pid: u32, host: &str| {
        format!("coffer scratch database: pid={pid} host={host} started=2026-01-01T00:00:00Z")
    };
    let plant = |name: &str, comment: Option<String>| {
        sql("postgres", &format!("CREATE DATABASE {name};"));
        if let Some(c) = comment {
            sql("postgres", &format!("COMMENT ON DATABASE {name} IS '{c}';"));
        }
        name.to_string()
    };
    let abandoned = plant(
        &format!("{}_coffer_0a1b2c3d", db.0),
        Some(mark(dead, &host)),
    );
    let running = plant(
        &format!("{}_coffer_11111111", db.0),
        Some(mark(std::process::id(), &host)),
    );
    let unmarked = plant(&format!("{}_coffer_22222222", db.0), None);
    let elsewhere = plant(
        &format!("{}_coffer_33333333", db.0),
        Some(mark(dead, "some-other-host")),
    );
    let old = plant(
        &format!("{}_coffer_old_44444444", db.0),
        Some(mark(dead, &host)),
    );
    let not_scratch = plant(&format!("{}_coffer_5555", db.0), Some(mark(dead, &host)));
    let drill = plant(
        &format!("coffer_drill_{id}_66666666"),
        Some(mark(dead, &host)),
    );
    let _drop_drill = TestDb(drill.clone());

    let o = env.cmd().arg("check").output().unwrap();
    assert_code(&o, 0, "check");
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("warn") && l.contains("left-overs of killed restores"))
        .unwrap_or_else(|| panic!("check reports no scratch database:\n{out}"));
    for n in [&abandoned, &unmarked, &elsewhere, &old] {
        assert!(line.contains(n.as_str()), "{n} not reported: {line}");
    }
    // A restore in progress is no left-over; nor is a name outside the
    // pattern; drill databases name no source.
    for n in [&running, &not_scratch, &drill] {
        assert!(!line.contains(n.as_str()), "{n} reported: {line}");
    }

    let o = env
        .cmd()
        .args(["restore", "latest", "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force");
    let err = stderr(&o);
    assert!(
        !db_exists(&abandoned),
        "the abandoned scratch database stayed"
    );
    assert!(
        err.contains(&format!("dropped database {abandoned}")),
        "the restore did not say what it dropped: {err}"
    );
    for n in [&running, &unmarked, &elsewhere, &old, &not_scratch] {
        assert!(db_exists(n), "{n} was dropped");
    }
    assert_eq!(
        comment_of(&db.0),
        "the shop",
        "the restored database's comment"
    );
    assert!(
        databases_like(&format!("{}\\_coffer\\_%", db.0))
            .iter()
            .all(|n| [&running, &unmarked, &elsewhere, &old, &not_scratch].contains(&n)),
        "the restore left its own scratch database"
    );

    // Into a database that had no comment: none after the restore either.
    sql(
        "postgres",
        &format!("COMMENT ON DATABASE {} IS NULL;", db.0),
    );
    let o = env
        .cmd()
        .args(["restore", "latest", "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force");
    assert_eq!(
        comment_of(&db.0),
        "<none>",
        "the marker reached the restored database"
    );

    let o = env.cmd().args(["drill"]).output().unwrap();
    assert_code(&o, 0, "drill");
    // (Every drill on this server drops abandoned drill databases: one
    // running in parallel may have been first, so stderr is not checked.)
    assert!(!db_exists(&drill), "the abandoned drill database stayed");
    for n in [&running, &unmarked, &elsewhere, &old, &not_scratch] {
        assert!(db_exists(n), "{n} was dropped by the drill");
    }
}
