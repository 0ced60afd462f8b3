//! MySQL/MariaDB sources against a real MariaDB on 127.0.0.1:3306 (user
//! root, empty password; `scripts/test.sh` starts it). Every test works in
//! databases of its own, uniquely named, and drops them at the end. A test
//! fails (never skips) when the server is not there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

// ----------------------------------------------------------------- helpers

/// The installed client: `mariadb`, else `mysql`.
fn client() -> &'static str {
    static C: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        if which("mariadb").is_some() {
            "mariadb"
        } else {
            "mysql"
        }
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs SQL as root (on the client's stdin) in `db`, returns the output
/// (tab-separated, no column names). Panics loudly with the client's error.
fn sql(db: Option<&str>, text: &str) -> String {
    let mut c = Command::new(client());
    c.args([
        "--protocol=tcp",
        "-h127.0.0.1",
        "-P3306",
        "-uroot",
        "--batch",
        "--skip-column-names",
        "--default-character-set=utf8mb4",
        "--connect-timeout=5",
    ]);
    if let Some(d) = db {
        c.arg(format!("--database={d}"));
    }
    c.env_remove("MYSQL_PWD");
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", client()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("write sql");
    let out = child.wait_with_output().expect("client");
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Can't connect") || err.contains("2002") || err.contains("2003") {
        panic!(
            "MariaDB is not reachable on 127.0.0.1:3306 as root with an empty password ({err}); run the suite with `bash scripts/test.sh`, which starts it"
        );
    }
    assert!(out.status.success(), "SQL failed: {err}\n{text}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Like [`sql`], but a failing query (a view or function that is gone)
/// gives its error as the result.
fn sql_or_error(db: &str, text: &str) -> String {
    let out = Command::new(client())
        .args([
            "--protocol=tcp",
            "-h127.0.0.1",
            "-P3306",
            "-uroot",
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ])
        .arg(format!("--database={db}"))
        .args(["-e", text])
        .output()
        .expect("client");
    if out.status.success() {
        String::from_utf8(out.stdout).expect("utf-8 output")
    } else {
        format!("failed: {}\n", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// A database of this test's own, dropped when the test ends (also when
/// it fails).
struct Db(String);

impl Db {
    /// A unique name; the database is not created.
    fn named(tag: &str) -> Db {
        Db(format!(
            "coffer_t_{tag}_{}_{}",
            std::process::id(),
            coffer::crypto::random_id(3)
        ))
    }
    fn create(tag: &str) -> Db {
        let d = Db::named(tag);
        sql(
            None,
            &format!("CREATE DATABASE `{}` CHARACTER SET utf8mb4", d.0),
        );
        d
    }
    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.0)
    }
    fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new(client())
            .args(["--protocol=tcp", "-h127.0.0.1", "-P3306", "-uroot", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.0))
            .output();
    }
}

/// Databases whose name starts with `prefix`.
fn databases_like(prefix: &str) -> Vec<String> {
    sql(None, "SHOW DATABASES")
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The rich schema: AUTO_INCREMENT tables with indexes and a foreign key, a
/// view, a trigger, a procedure, a function, an event, utf8mb4 text with
/// emoji, text with quotes/parentheses/semicolons/backslashes, and BLOBs of
/// binary bytes.
fn make_schema(db: &str) {
    sql(
        Some(db),
        r#"
CREATE TABLE customers (
  id INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(200),
  UNIQUE KEY uk_email (email),
  KEY idx_name (name)
) ENGINE=InnoDB;
CREATE TABLE orders (
  id INT AUTO_INCREMENT PRIMARY KEY,
  customer_id INT NOT NULL,
  total DECIMAL(10,2),
  note TEXT,
  photo BLOB,
  KEY idx_customer (customer_id),
  CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE=InnoDB;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(200)) ENGINE=InnoDB;
CREATE TABLE empty_table (x INT) ENGINE=InnoDB;
CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW
  INSERT INTO audit (msg) VALUES (CONCAT('order ', NEW.id));
INSERT INTO customers (name, email) VALUES
  ('Zoë Müller 😀', 'zoe@example.com'),
  ('O''Brien \\ back', 'ob@example.com'),
  ('日本語テキスト', NULL);
INSERT INTO orders (customer_id, total, note, photo) VALUES
  (1, 19.99, 'Grüße 🎉 and a ''quote''', UNHEX('00FF0A0D1A5C2722008081FEFF')),
  (2, 5.00, 'a''),(b; -- not a comment \\n', UNHEX('27293B2C28')),
  (3, 120.50, NULL, NULL);
INSERT INTO orders (customer_id, total, note, photo)
  WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 60)
  SELECT 1 + n % 3, n * 1.25, CONCAT('row ', n, ' 🚀'), UNHEX(SHA2(n, 256)) FROM s;
DELETE FROM orders WHERE id = 10;
CREATE VIEW big_orders AS
  SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.total > 50;
DELIMITER //
CREATE PROCEDURE add_order(IN c INT, IN t DECIMAL(10,2))
BEGIN
INSERT INTO `orders` (customer_id, total) VALUES (c, t);
INSERT INTO `audit` VALUES (NULL, 'by procedure');
END//
CREATE FUNCTION order_count(c INT) RETURNS INT READS SQL DATA
BEGIN
  RETURN (SELECT COUNT(*) FROM orders WHERE customer_id = c);
END//
DELIMITER ;
CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
  DO DELETE FROM audit WHERE id < 0;
"#,
    );
}

/// Everything a restore must bring back, as text: table definitions
/// (AUTO_INCREMENT counters included), every row (binary as hex), views,
/// triggers, routines and events, and what the view and function return.
/// The database's own name is replaced by `DB` (view definitions name it).
fn fingerprint(db: &str) -> String {
    let mut out = String::new();
    let tables = sql(
        Some(db),
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
    );
    out.push_str(&tables);
    for line in tables.lines() {
        let (t, ty) = line.split_once('\t').unwrap();
        if ty == "BASE TABLE" {
            out.push_str(&sql(Some(db), &format!("SHOW CREATE TABLE `{t}`")));
        }
    }
    for q in [
        "SELECT id, name, email FROM customers ORDER BY id",
        "SELECT id, customer_id, total, note, HEX(photo) FROM orders ORDER BY id",
        "SELECT id, msg FROM audit ORDER BY id",
        "SELECT * FROM big_orders ORDER BY id",
        "SELECT order_count(1), order_count(2)",
        "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1",
        "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1",
        "SELECT EVENT_NAME, EVENT_DEFINITION, INTERVAL_VALUE, INTERVAL_FIELD, STARTS, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY 1",
    ] {
        out.push_str(&format!("== {q}\n"));
        out.push_str(&sql_or_error(db, q));
    }
    out.replace(db, "DB")
}

fn add_mysql_source(env: &mut Env, name: &str, url: &str, extra: &str) {
    env.sources.push_str(&format!(
        "[[sources]]\nname = {name:?}\ntype = \"mysql\"\nurl = {url:?}\n{extra}\n"
    ));
    env.write_config();
}

/// Runs coffer; returns (exit code, stdout, stderr).
fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    run_with(env, args, &[])
}

fn run_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = env.cmd();
    c.args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.output().expect("run coffer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn show_json(env: &Env, id: &str) -> serde_json::Value {
    let (code, out, err) = run(env, &["show", id, "--json"]);
    assert_eq!(code, 0, "show: {err}");
    serde_json::from_str(&out).expect("show --json")
}

fn source<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {doc}"))
}

/// Objects stored under data/<id>/ of a filesystem repository.
fn data_objects(env: &Env, id: &str) -> Vec<String> {
    let dir = Path::new(&env.url).join("data").join(id);
    match std::fs::read_dir(&dir) {
        Ok(d) => d
            .map(|e| format!("data/{id}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn all_data_objects(env: &Env) -> usize {
    let dir = Path::new(&env.url).join("data");
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

// ------------------------------------------------------------------- tests

#[test]
fn restore_force_and_to_database_bring_back_exactly_the_snapshot() {
    let db = Db::create("rs");
    make_schema(db.name());
    let original = fingerprint(db.name());
    assert!(original.contains("😀") && original.contains("00FF0A0D1A5C27"));
    let next_id: u64 = sql(
        Some(db.name()),
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'orders'",
    )
    .trim()
    .parse()
    .unwrap();

    let mut env = Env::init(Backend::Fs);
    add_mysql_source(&mut env, "orders", &db.url(), "");
    let snap = env.snapshot_json(&[], 0);
    let id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(source(&snap, "orders")["status"], "ok");

    // Change, delete, add.
    sql(
        Some(db.name()),
        "UPDATE orders SET total = 0, note = 'changed' WHERE id < 5;
         DELETE FROM orders WHERE id > 40;
         INSERT INTO customers (name) VALUES ('new customer');
         CREATE TABLE added_later (x INT);
         INSERT INTO added_later VALUES (1);
         DROP VIEW big_orders;
         CREATE VIEW new_view AS SELECT 1 AS one;
         DROP TRIGGER orders_ai;
         DROP PROCEDURE add_order;
         CREATE PROCEDURE new_proc() SELECT 1;
         DROP EVENT purge_audit;",
    );
    let changed = fingerprint(db.name());
    assert_ne!(changed, original);

    // Without --force: refused, nothing touched.
    let (code, _, err) = run(&env, &["restore", "latest"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force") && err.contains(db.name()), "{err}");
    assert_eq!(fingerprint(db.name()), changed);

    // --dry-run says where it would go, and changes nothing.
    let (code, out, err) = run(&env, &["restore", "latest", "--force", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&db.url()), "{out}");
    assert_eq!(fingerprint(db.name()), changed);

    let (code, out, err) = run(&env, &["restore", "latest", "--force"]);
    assert_eq!(code, 0, "restore --force: {out}\n{err}");
    assert_eq!(fingerprint(db.name()), original);
    let tables = sql(Some(db.name()), "SHOW FULL TABLES");
    assert!(!tables.contains("added_later") && !tables.contains("new_view"));
    assert!(
        sql(
            Some(db.name()),
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
        )
        .lines()
        .all(|r| r != "new_proc")
    );
    // No temporary database left behind.
    assert_eq!(
        databases_like(&format!("{}_coffer_", db.name())),
        Vec::<String>::new()
    );
    // AUTO_INCREMENT goes on where it was, and the trigger is live again.
    sql(
        Some(db.name()),
        "CALL add_order(1, 1.00); INSERT INTO orders (customer_id) VALUES (2);",
    );
    let last = sql(Some(db.name()), "SELECT MAX(id) FROM orders");
    assert_eq!(last.trim(), (next_id + 1).to_string());
    let audit = sql(
        Some(db.name()),
        &format!(
            "SELECT COUNT(*) FROM audit WHERE msg = 'order {}'",
            next_id + 1
        ),
    );
    assert_eq!(audit.trim(), "1");

    // --to-database into a database that does not exist yet: created.
    let other = Db::named("rs2");
    let (code, out, err) = run(
        &env,
        &[
            "restore",
            &id,
            "--only",
            "orders",
            "--to-database",
            &other.url(),
        ],
    );
    assert_eq!(code, 0, "restore --to-database: {out}\n{err}");
    assert!(out.contains(other.name()), "{out}");
    assert_eq!(fingerprint(other.name()), original);
    let cs = sql(
        None,
        &format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
            other.name()
        ),
    );
    assert_eq!(cs.trim(), "utf8mb4");

    // Again: it exists and holds tables now, so --force is needed.
    sql(Some(other.name()), "CREATE TABLE extra (x INT)");
    let (code, _, err) = run(
        &env,
        &[
            "restore",
            &id,
            "--only",
            "orders",
            "--to-database",
            &other.url(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--force") && err.contains(other.name()),
        "{err}"
    );
    let (code, _, err) = run(
        &env,
        &[
            "restore",
            &id,
            "--only",
            "orders",
            "--to-database",
            &other.url(),
            "--force",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(fingerprint(other.name()), original);
}

/// A client that fails half-way through loading the dump (the connection
/// lost, say): the target must be left exactly as it was, and no temporary
/// database remain.
#[test]
fn failed_restore_leaves_the_target_as_it_was() {
    let db = Db::create("rf");
    make_schema(db.name());
    let mut env = Env::init(Backend::Fs);
    add_mysql_source(&mut env, "orders", &db.url(), "");
    env.snapshot_ok();
    sql(
        Some(db.name()),
        "DELETE FROM orders WHERE id > 30; CREATE TABLE added_later (x INT);",
    );
    let changed = fingerprint(db.name());

    let real = which(client()).expect("client installed");
    let fake = env.path("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         for a in \"$@\"; do\n\
           if [ \"$a\" = --binary-mode ]; then\n\
             head -n 40 | {real} \"$@\"\n\
             echo 'ERROR 2013 (HY000) at line 40: Lost connection to server during query' >&2\n\
             exit 1\n\
           fi\n\
         done\n\
         exec {real} \"$@\"\n",
        real = real.display()
    );
    for name in ["mariadb", "mysql"] {
        let p = fake.join(name);
        std::fs::write(&p, &script).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let (code, out, err) = run_with(&env, &["restore", "latest", "--force"], &[("PATH", &path)]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("Lost connection") && err.contains("was not changed"),
        "{err}"
    );
    assert_eq!(fingerprint(db.name()), changed);
    assert_eq!(
        databases_like(&format!("{}_coffer_", db.name())),
        Vec::<String>::new()
    );

    // Into a new database: created, and dropped again when the load fails.
    let other = Db::named("rf2");
    let (code, _, err) = run_with(
        &env,
        &["restore", "latest", "--to-database", &other.url()],
        &[("PATH", &path)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("dropped again"), "{err}");
    assert!(databases_like(other.name()).is_empty());
}

#[test]
fn dump_pipes_into_the_client_and_show_has_the_facts() {
    let db = Db::create("dp");
    make_schema(db.name());
    let original = fingerprint(db.name());
    let mut env = Env::init(Backend::Fs);
    add_mysql_source(&mut env, "orders", &db.url(), "");
    let id = env.snapshot_ok();

    // coffer dump latest orders | mariadb <fresh db>
    let target = Db::create("dp2");
    let mut dump = env
        .spawn_cmd()
        .args(["dump", "latest", "orders"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coffer dump");
    let load = Command::new(client())
        .args(["--protocol=tcp", "-h127.0.0.1", "-P3306", "-uroot"])
        .arg(target.name())
        .stdin(dump.stdout.take().unwrap())
        .output()
        .expect("client");
    let dumped = dump.wait_with_output().expect("coffer dump");
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(fingerprint(target.name()), original);

    let doc = show_json(&env, &id);
    let d = &source(&doc, "orders")["details"];
    assert_eq!(d["format"], "sql");
    assert_eq!(d["main_stream"], "dump.sql");
    let tool = d["tool"].as_str().unwrap();
    assert!(tool == "mariadb-dump" || tool == "mysqldump", "{d}");
    assert!(d["tool_version"].as_str().unwrap().contains("Ver"), "{d}");
    let server = d["server_version"].as_str().unwrap();
    assert!(server.chars().next().unwrap().is_ascii_digit(), "{d}");
    assert_eq!(d["charset"], "utf8mb4");
    assert_eq!(d["url"], db.url());
    let tables: BTreeMap<String, u64> = serde_json::from_value(d["tables"].clone()).unwrap();
    let want: BTreeMap<String, u64> = [
        ("audit", 63),
        ("customers", 3),
        ("empty_table", 0),
        ("orders", 62),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(tables, want);
    // The counts are the database's.
    for (t, n) in &want {
        let c = sql(Some(db.name()), &format!("SELECT COUNT(*) FROM `{t}`"));
        assert_eq!(c.trim(), n.to_string(), "{t}");
    }
}

/// A fake dump tool, first on PATH under both names.
fn fake_dump_tool(env: &Env, body: &str) -> String {
    let real = which("mariadb-dump")
        .or_else(|| which("mysqldump"))
        .expect("a dump tool is installed");
    let dir = env.path("fakebin");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "#!/bin/sh\nREAL={}\nif [ \"$1\" = --version ]; then exec $REAL --version; fi\n{body}\n",
        real.display()
    );
    for name in ["mariadb-dump", "mysqldump"] {
        let p = dir.join(name);
        std::fs::write(&p, &script).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

#[test]
fn a_failing_dump_tool_never_yields_an_archive() {
    let db = Db::create("ft");
    make_schema(db.name());
    let cases = [
        (
            "killed",
            "$REAL \"$@\" | head -n 60\nkill -9 $$",
            "signal 9",
        ),
        (
            "no end line",
            "$REAL \"$@\" | grep -v '^-- Dump completed'\nexit 0",
            "Dump completed",
        ),
        (
            "error",
            "$REAL \"$@\" | head -n 60\necho 'mysqldump: Got error: 1412: Table definition has changed, please retry transaction when dumping table `orders` at row: 0' >&2\nexit 2",
            "1412",
        ),
    ];
    for (what, body, reason) in cases {
        // With another source that works: committed as partial, exit 4.
        let mut env = Env::init(Backend::Fs);
        let files = env.path("files");
        write(&files.join("a.txt"), b"a\n");
        env.add_dir_source("files", &files, &[]);
        add_mysql_source(&mut env, "orders", &db.url(), "");
        let path = fake_dump_tool(&env, body);
        let (code, out, err) = run_with(&env, &["snapshot", "--json"], &[("PATH", &path)]);
        assert_eq!(code, 4, "{what}: {out}\n{err}");
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let id = doc["id"].as_str().unwrap().to_string();
        let shown = show_json(&env, &id);
        let s = source(&shown, "orders");
        assert_eq!(s["status"], "failed", "{what}");
        assert!(s["archive"].is_null(), "{what}: {s}");
        let msg = s["error"].as_str().unwrap();
        assert!(
            (msg.contains("mariadb-dump") || msg.contains("mysqldump")) && msg.contains(reason),
            "{what}: {msg}"
        );
        assert!(err.contains("orders"), "{what}: {err}");
        // Only the directory source's objects are stored.
        let fs_src = source(&shown, "files");
        let mut want = vec![
            fs_src["archive"]["object"].as_str().unwrap().to_string(),
            fs_src["index"]["object"].as_str().unwrap().to_string(),
        ];
        want.sort();
        let mut have = data_objects(&env, &id);
        have.sort();
        assert_eq!(have, want, "{what}: left-over objects");
        // `coffer dump` of it says it failed.
        let (code, _, err) = run(&env, &["dump", &id, "orders"]);
        assert_ne!(code, 0, "{what}: {err}");

        // Alone: nothing committed, exit 1, no object left.
        let mut env = Env::init(Backend::Fs);
        add_mysql_source(&mut env, "orders", &db.url(), "");
        let path = fake_dump_tool(&env, body);
        let (code, _, err) = run_with(&env, &["snapshot"], &[("PATH", &path)]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains(reason), "{what}: {err}");
        let (_, list, _) = run(&env, &["snapshots", "--json"]);
        assert_eq!(list.trim(), "[]", "{what}");
        assert_eq!(all_data_objects(&env), 0, "{what}");
    }
}

#[test]
fn passwords_stay_secret_and_bad_connections_fail_clearly() {
    let db = Db::create("pw");
    // Plain tables only: objects with a DEFINER (root) need SET USER to load.
    sql(
        Some(db.name()),
        "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20)); INSERT INTO t VALUES (1, 'one'), (2, 'two');",
    );
    let user = format!("coffer_u_{}", coffer::crypto::random_id(3));
    let good = format!("Good-{}", coffer::crypto::random_id(6));
    let wrong = format!("Wrong-{}", coffer::crypto::random_id(6));
    sql(
        None,
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{good}';
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{good}';
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{good}';
             GRANT ALL ON `{d}`.* TO '{user}'@'%';
             GRANT ALL ON `{d}`.* TO '{user}'@'localhost';
             GRANT ALL ON `{d}`.* TO '{user}'@'127.0.0.1';
             GRANT ALL ON `coffer\\_drill\\_%`.* TO '{user}'@'%';
             GRANT ALL ON `coffer\\_drill\\_%`.* TO '{user}'@'localhost';
             GRANT ALL ON `coffer\\_drill\\_%`.* TO '{user}'@'127.0.0.1';",
            d = db.name()
        ),
    );
    struct DropUser(String);
    impl Drop for DropUser {
        fn drop(&mut self) {
            for h in ["%", "localhost", "127.0.0.1"] {
                let _ = Command::new(client())
                    .args(["--protocol=tcp", "-h127.0.0.1", "-P3306", "-uroot", "-e"])
                    .arg(format!("DROP USER IF EXISTS '{}'@'{h}'", self.0))
                    .output();
            }
        }
    }
    let _u = DropUser(user.clone());
    let url = format!("mysql://{user}@127.0.0.1:3306/{}", db.name());

    let new_env = || {
        let mut env = Env::init(Backend::Fs);
        let files = env.path("files");
        write(&files.join("a.txt"), b"a\n");
        env.add_dir_source("files", &files, &[]);
        env
    };

    // password_env with the wrong password: failed, clearly, and the
    // password is nowhere.
    let mut env = new_env();
    add_mysql_source(
        &mut env,
        "orders",
        &url,
        "password_env = \"MYDB_PASSWORD\"\n",
    );
    let (code, out, err) = run_with(&env, &["snapshot", "--json"], &[("MYDB_PASSWORD", &wrong)]);
    assert_eq!(code, 4, "{out}\n{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, shown, _) = run(&env, &["show", &id, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let msg = source(&doc, "orders")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("Access denied") && msg.contains(&user),
        "{msg}"
    );
    for text in [&out, &err, &shown, &msg] {
        assert!(!text.contains(&wrong), "password leaked: {text}");
    }

    // The right one through password_env works (MYSQL_PWD reaches the tools).
    let (code, out, err) = run_with(&env, &["snapshot", "--json"], &[("MYDB_PASSWORD", &good)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains(&good) && !err.contains(&good));

    // A password in the URL works too, and is never shown.
    let mut env = new_env();
    let with_pw = format!("mysql://{user}:{good}@127.0.0.1:3306/{}", db.name());
    add_mysql_source(&mut env, "orders", &with_pw, "");
    // Issue 10 item 7: nor does it reach a tool's command line (`ps`).
    let spy = ArgvSpy::new(
        env.dir.path(),
        &["mariadb-dump", "mysqldump", "mariadb", "mysql"],
    );
    let path = spy.path_var();
    let (code, out, err) = run_with(&env, &["snapshot", "--json"], &[("PATH", &path)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, shown, _) = run(&env, &["show", "latest", "--json"]);
    let (_, listed, _) = run(&env, &["snapshots"]);
    let (code, drilled, derr) = run_with(&env, &["drill", "--json"], &[("PATH", &path)]);
    assert_eq!(code, 0, "{drilled}\n{derr}");
    let argv = spy.command_lines();
    assert!(
        argv.contains("dump ") && argv.lines().count() >= 2,
        "the dump and client tools ran through the wrappers: {argv}"
    );
    for text in [&out, &err, &shown, &listed, &drilled, &derr, &argv] {
        assert!(!text.contains(&good), "password leaked: {text}");
    }
    assert!(shown.contains(&url), "{shown}");

    // A wrong password in the URL: failed, and not shown either.
    let mut env = new_env();
    let bad_url = format!("mysql://{user}:{wrong}@127.0.0.1:3306/{}", db.name());
    add_mysql_source(&mut env, "orders", &bad_url, "");
    let (code, out, err) = run(&env, &["snapshot", "--json"]);
    assert_eq!(code, 4, "{out}\n{err}");
    let (_, shown, _) = run(&env, &["show", "latest", "--json"]);
    assert!(shown.contains("Access denied"), "{shown}");
    for text in [&out, &err, &shown] {
        assert!(!text.contains(&wrong), "password leaked: {text}");
    }

    // Nothing listens on port 1: failed, alone -> exit 1.
    let mut env = Env::init(Backend::Fs);
    add_mysql_source(
        &mut env,
        "orders",
        &format!("mysql://root@127.0.0.1:1/{}", db.name()),
        "",
    );
    let (code, _, err) = run(&env, &["snapshot"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("orders") && err.contains("127.0.0.1:1") && err.contains("connect"),
        "{err}"
    );
}

/// Re-stores a snapshot's dump under a new snapshot id with its recorded
/// row count of `table` raised by one: the data is exactly the dump coffer
/// stored (read back with `coffer dump`, chunked and sealed for the new id
/// as the pipeline does), only the record disagrees with it, as it would if
/// rows went missing between dump and restore. Returns the new id.
fn reseal_with_wrong_count(env: &Env, id: &str, table: &str) -> String {
    use coffer::archive::{IndexWriter, TarWriter};
    use coffer::crypto::{ObjectKind, SealWriter};
    use coffer::manifest::{ObjectRef, seal_context};
    use sha2::Digest;

    let out = env
        .cmd()
        .args(["dump", id, "orders"])
        .output()
        .expect("coffer dump");
    assert!(out.status.success());
    let dump = out.stdout;

    let store = env.store();
    let cred = coffer::crypto::Credential::KeyFile {
        path: env.key.display().to_string(),
        key: coffer::crypto::read_key_file(&env.key).expect("key"),
    };
    let table = table.to_string();
    let id = id.to_string();
    block_on(async move {
        let repo = coffer::repo::open(&store, &cred).await.expect("open repo");
        let mut m = repo.load_manifest(&id).await.expect("manifest");
        let new_id = coffer::crypto::random_id(8);
        let ctx = seal_context(&repo.id, &new_id, Some("orders"));

        let mut tar = TarWriter::new(Vec::new());
        let mut index = IndexWriter::new(Vec::new());
        coffer::source::stream::archive_stream("dump.sql", &mut &dump[..], &mut tar, &mut index)
            .expect("chunks");
        let seal = |plain: &[u8], kind: ObjectKind| {
            let z = zstd::encode_all(plain, 3).expect("zstd");
            let mut w = SealWriter::new(Vec::new(), repo.master(), kind, &ctx).expect("seal");
            w.write_all(&z).expect("seal");
            w.finish().expect("seal")
        };
        let archive = seal(&tar.finish().expect("tar"), ObjectKind::Archive);
        let index = seal(&index.finish(), ObjectKind::Index);
        let put = async |sealed: Vec<u8>| {
            let r = ObjectRef {
                object: format!("data/{new_id}/{}", coffer::crypto::random_id(8)),
                size: sealed.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&sealed)),
            };
            repo.store
                .put(&r.object, bytes::Bytes::from(sealed), true)
                .await
                .expect("put");
            r
        };
        let aref = put(archive).await;
        let iref = put(index).await;

        m.id = new_id.clone();
        m.time = chrono::Utc::now();
        let src = m
            .sources
            .iter_mut()
            .find(|s| s.name == "orders")
            .expect("source");
        src.bytes_stored = aref.size + iref.size;
        src.archive = Some(aref);
        src.index = Some(iref);
        let n = src.details["tables"][&table].as_u64().expect("count");
        src.details
            .get_mut("tables")
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(table, (n + 1).into());
        repo.commit_manifest(&m).await.expect("commit");
        new_id
    })
}

#[test]
fn drill_passes_on_a_good_snapshot_and_fails_on_wrong_counts() {
    let db = Db::create("dr");
    make_schema(db.name());
    let mut env = Env::init(Backend::Fs);
    add_mysql_source(&mut env, "orders", &db.url(), "");
    let id = env.snapshot_ok();

    let (code, out, err) = run(&env, &["drill", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["ok"], true);
    let s = source(&doc, "orders");
    assert_eq!(s["ok"], true);
    let scratch = s["scratch"].as_str().unwrap();
    assert!(
        scratch.contains(&format!("coffer_drill_{id}_")),
        "{scratch}"
    );
    let checks: Vec<&str> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        checks.contains(&"orders: 62 rows (expected 62)"),
        "{checks:?}"
    );
    assert!(
        checks.contains(&"empty_table: 0 rows (expected 0)"),
        "{checks:?}"
    );
    assert!(s["restore_ms"].is_u64());
    assert!(
        databases_like("coffer_drill_")
            .iter()
            .all(|d| !d.contains(&id))
    );

    // Human output, and --scratch-url.
    let (code, out, err) = run(
        &env,
        &["drill", &id, "--scratch-url", "mysql://root@127.0.0.1:3306"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("orders (mysql): ok"), "{out}");
    assert!(
        databases_like("coffer_drill_")
            .iter()
            .all(|d| !d.contains(&id))
    );

    // Recorded counts that the restore does not yield: exit 3, scratch dropped.
    let bad = reseal_with_wrong_count(&env, &id, "orders");
    let (code, out, err) = run(&env, &["drill", &bad, "--json"]);
    assert_eq!(code, 3, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["ok"], false);
    let s = source(&doc, "orders");
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{s}");
    assert!(
        failures[0]
            .as_str()
            .unwrap()
            .contains("orders: 62 rows after the restore, 63 recorded"),
        "{s}"
    );
    assert!(s["error"].is_null(), "{s}");
    assert!(
        databases_like("coffer_drill_")
            .iter()
            .all(|d| !d.contains(&bad))
    );
    // The source database was never touched.
    let n = sql(Some(db.name()), "SELECT COUNT(*) FROM orders");
    assert_eq!(n.trim(), "62");
}

/// A dump of several chunks: counted and restored across chunk
/// boundaries; and a restore whose archive turns out damaged after the
/// client has already loaded its first chunk leaves the target as it was.
#[test]
fn large_dump_spans_chunks_and_damage_leaves_the_target_alone() {
    let db = Db::create("big");
    sql(
        Some(db.name()),
        "SET SESSION max_recursive_iterations = 100000;
         CREATE TABLE big (id INT PRIMARY KEY, note TEXT, payload BLOB) ENGINE=InnoDB;
         INSERT INTO big
           WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 6000)
           SELECT n, CONCAT('''q'' (p), ;s \\\\ ', n), RANDOM_BYTES(1000) FROM s;",
    );
    let checksum = |d: &str| sql(Some(d), "CHECKSUM TABLE big").replace(d, "DB");
    let original = checksum(db.name());
    let mut env = Env::init(Backend::Fs);
    add_mysql_source(&mut env, "orders", &db.url(), "");
    let id = env.snapshot_ok();
    let doc = show_json(&env, &id);
    let s = source(&doc, "orders");
    assert_eq!(s["details"]["tables"]["big"], 6000);
    // Incompressible: several chunks, and several sealed segments, so the
    // damage below is found after the client has loaded data.
    let chunks = s["details"]["streams"][0]["chunks"].as_u64().unwrap();
    assert!(chunks >= 3, "{s}");
    assert!(s["archive"]["size"].as_u64().unwrap() > 5 << 20, "{s}");

    let (code, out, err) = run(&env, &["drill", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");

    sql(
        Some(db.name()),
        "DELETE FROM big WHERE id > 3000; CREATE TABLE added_later (x INT);",
    );
    let changed = checksum(db.name());

    // Damage the archive near its end.
    let object = s["archive"]["object"].as_str().unwrap();
    let file = Path::new(&env.url).join(object);
    let mut data = std::fs::read(&file).unwrap();
    let at = data.len() * 9 / 10;
    data[at] ^= 0x01;
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&file, &data).unwrap();
    let (code, out, err) = run(&env, &["restore", &id, "--force"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("integrity") && !err.contains("segment 0:"),
        "{err}"
    );
    assert_eq!(checksum(db.name()), changed);
    assert!(sql(Some(db.name()), "SHOW TABLES").contains("added_later"));
    assert_eq!(
        databases_like(&format!("{}_coffer_", db.name())),
        Vec::<String>::new()
    );

    // Undamaged again: the restore goes through, across chunks.
    data[at] ^= 0x01;
    std::fs::write(&file, &data).unwrap();
    let (code, out, err) = run(&env, &["restore", &id, "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(checksum(db.name()), original);
    assert!(!sql(Some(db.name()), "SHOW TABLES").contains("added_later"));
}

/// Issue 11 item 3, MySQL/MariaDB: a restore killed with `kill -9` leaves
/// its temporary database, whose name carries its maker
/// (`<db>_coffer_<pid>_<host tag>_<random>`). `check` reports it and the
/// next restore drops it and says so; it never drops one that names a
/// running process, another host or no maker (an older coffer's), nor a
/// name outside the pattern. A killed drill's scratch database is dropped
/// by the next drill.
#[test]
fn a_killed_restores_temporary_database_is_dropped_by_the_next_restore() {
    let db = Db::create("leftover");
    make_schema(db.name());
    sql(
        Some(db.name()),
        "SET SESSION max_recursive_iterations = 100000;
         CREATE TABLE bulk (id INT PRIMARY KEY, payload BLOB) ENGINE=InnoDB;
         INSERT INTO bulk
           WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20000)
           SELECT n, RANDOM_BYTES(1000) FROM s;",
    );
    let mut env = Env::init(Backend::Fs);
    add_mysql_source(&mut env, "orders", &db.url(), "");
    let id = env.snapshot_ok();

    // A real kill: as soon as the temporary database exists.
    let prefix = format!("{}_coffer_", db.name());
    let mut child = env
        .spawn_cmd()
        .args(["restore", "latest", "--force"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killed_pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let killed = loop {
        let found = databases_like(&prefix);
        if let Some(n) = found.first() {
            child.kill().unwrap();
            child.wait().unwrap();
            break Db(n.clone());
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before its temporary database was seen"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary database appeared"
        );
    };
    let host = coffer::abandoned::host_tag();
    assert!(
        killed
            .0
            .starts_with(&format!("{prefix}{killed_pid}_{host}_")),
        "the temporary database does not name its maker: {}",
        killed.0
    );
    // Its client may still be loading: wait until it has gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sql(None, "SHOW PROCESSLIST").contains(&killed.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed restore's client still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let dead = dead_pid();
    let plant = |name: String| {
        sql(None, &format!("CREATE DATABASE `{name}`"));
        Db(name)
    };
    let running = plant(format!("{prefix}{}_{host}_11111111", std::process::id()));
    let older = plant(format!("{prefix}22222222"));
    let other_host = if host == "ffffffff" {
        "eeeeeeee"
    } else {
        "ffffffff"
    };
    let elsewhere = plant(format!("{prefix}{dead}_{other_host}_33333333"));
    let not_scratch = plant(format!("{prefix}old"));
    let snap: String = id.chars().take(16).collect();
    let drill = plant(format!("coffer_drill_{snap}_{dead}_{host}_66666666"));

    let (code, out, err) = run(&env, &["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("warn") && l.contains("left-overs of killed restores"))
        .unwrap_or_else(|| panic!("check reports no temporary database:\n{out}"));
    for n in [&killed, &older, &elsewhere] {
        assert!(line.contains(&n.0), "{} not reported: {line}", n.0);
    }
    for n in [&running, &not_scratch, &drill] {
        assert!(!line.contains(&n.0), "{} reported: {line}", n.0);
    }

    let (code, _, err) = run(&env, &["restore", "latest", "--force"]);
    assert_eq!(code, 0, "restore: {err}");
    assert!(
        err.contains(&format!("dropped database `{}`", killed.0)),
        "the restore did not say what it dropped: {err}"
    );
    let mut kept = vec![
        running.0.clone(),
        older.0.clone(),
        elsewhere.0.clone(),
        not_scratch.0.clone(),
    ];
    kept.sort();
    assert_eq!(
        databases_like(&prefix),
        kept,
        "the restore dropped a database it cannot prove its own, or left its own"
    );
    assert_eq!(
        sql(Some(db.name()), "SELECT COUNT(*) FROM bulk").trim(),
        "20000"
    );

    let (code, out, err) = run(&env, &["drill"]);
    assert_eq!(code, 0, "drill: {out}{err}");
    assert!(
        databases_like(&drill.0).is_empty(),
        "the abandoned drill database stayed"
    );
    assert_eq!(
        databases_like(&prefix),
        kept,
        "the drill dropped a restore's database"
    );
}
