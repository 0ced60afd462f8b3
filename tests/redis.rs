//! `redis` sources, against the real Redis on 127.0.0.1:6379. The server is
//! shared: these tests never stop or flush it, only add keys with a prefix of
//! their own and delete them again.

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use sha2::Digest;

const URL: &str = "redis://127.0.0.1:6379";

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

fn redis(args: &[&str]) -> String {
    let o = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "--raw"])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(
        o.status.success(),
        "redis-cli {args:?}: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Keys of this test, deleted when dropped (also when the test fails).
struct Keys(Vec<String>);

impl Keys {
    fn create(tag: &str) -> Keys {
        let p = format!("coffer-test:{}:", unique(tag));
        let k = |s: &str| format!("{p}{s}");
        redis(&["SET", &k("greeting"), "hello from coffer"]);
        redis(&["RPUSH", &k("queue"), "a", "b", "c"]);
        redis(&["HSET", &k("user"), "name", "ann", "plan", "pro"]);
        redis(&["SADD", &k("tags"), "x", "y"]);
        Keys(vec![k("greeting"), k("queue"), k("user"), k("tags")])
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let mut args = vec!["DEL"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379"])
            .args(&args)
            .output();
    }
}

fn world(url: &str) -> Env {
    let mut env = Env::init(Backend::Fs);
    fs::create_dir_all(env.path("tmp")).unwrap();
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"cache\"\ntype = \"redis\"\nurl = {url:?}\n\n"
    ));
    env.write_config();
    env
}

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

fn snapshot(env: &Env) -> String {
    let o = cmd(env).args(["snapshot", "--json"]).output().unwrap();
    assert_code(&o, 0, "snapshot");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["sources"][0]["status"], "ok");
    assert_eq!(doc["sources"][0]["type"], "redis");
    doc["id"].as_str().unwrap().to_string()
}

/// `redis-check-rdb` passes on `path` (when it is installed).
fn check_rdb(path: &Path) {
    let Ok(o) = Command::new("redis-check-rdb").arg(path).output() else {
        return;
    };
    assert!(
        o.status.success() && text(&o.stdout).contains("RDB looks OK"),
        "redis-check-rdb {}:\n{}{}",
        path.display(),
        text(&o.stdout),
        text(&o.stderr)
    );
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The server's RDB file, as it reports it.
fn server_rdb() -> String {
    let dir = redis(&["CONFIG", "GET", "dir"]);
    let file = redis(&["CONFIG", "GET", "dbfilename"]);
    format!(
        "{}/{}",
        dir.lines().nth(1).unwrap(),
        file.lines().nth(1).unwrap()
    )
}

#[test]
fn snapshot_records_the_server_and_dump_gives_a_valid_rdb() {
    let keys = Keys::create("snap");
    let env = world(URL);
    let id = snapshot(&env);
    tmp_is_empty(&env);

    let o = cmd(&env).args(["show", &id, "--json"]).output().unwrap();
    assert_code(&o, 0, "show --json");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &doc["sources"][0]["details"];
    assert_eq!(d["format"], "rdb");
    assert_eq!(d["main_stream"], "dump.rdb");
    let info = redis(&["INFO", "server"]);
    let version = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .unwrap();
    assert_eq!(d["redis_version"], version);
    assert!(d["keys"].as_u64().unwrap() >= 4, "{d}");
    assert!(d["keyspace"]["db0"].as_u64().unwrap() >= 4, "{d}");
    assert_eq!(d["url"], URL);
    assert_eq!(
        format!(
            "{}/{}",
            d["dir"].as_str().unwrap(),
            d["dbfilename"].as_str().unwrap()
        ),
        server_rdb()
    );

    let o = cmd(&env).args(["dump", &id, "cache"]).output().unwrap();
    assert_code(&o, 0, "dump");
    let rdb = o.stdout;
    assert!(rdb.starts_with(b"REDIS00"), "an RDB file");
    assert_eq!(
        d["streams"][0]["sha256"],
        hex::encode(sha2::Sha256::digest(&rdb))
    );
    for k in &keys.0 {
        assert!(contains(&rdb, k), "the RDB holds key {k}");
    }
    let f = env.path("dump.rdb");
    fs::write(&f, &rdb).unwrap();
    check_rdb(&f);

    let o = cmd(&env).args(["verify", &id, "--deep"]).output().unwrap();
    assert_code(&o, 0, "verify --deep");
    // No drill for Redis: skipped, not failed.
    let o = cmd(&env).args(["drill", &id, "--json"]).output().unwrap();
    assert_code(&o, 0, "drill");
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["skipped"], serde_json::json!(["cache"]));
}

#[test]
fn restore_into_the_running_server_is_refused_with_the_steps() {
    let _keys = Keys::create("steps");
    let env = world(URL);
    let id = snapshot(&env);
    let rdb = server_rdb();
    let live = fs::read(&rdb).ok();

    for args in [
        vec!["restore", id.as_str()],
        vec!["restore", &id, "--force"],
        vec!["restore", &id, "--dry-run"],
        // The running server's own file, even with --force.
        vec![
            "restore",
            &id,
            "--force",
            "--dry-run",
            "--to-database",
            &rdb,
        ],
    ] {
        let o = cmd(&env).args(&args).output().unwrap();
        assert_code(&o, 2, &format!("{args:?}"));
        let err = text(&o.stderr);
        for needle in [
            "is running",
            "redis-cli -h 127.0.0.1 -p 6379 shutdown nosave",
            &format!("coffer restore {id} --only cache --force --to-database {rdb}"),
            "start redis-server",
            "cache",
        ] {
            assert!(err.contains(needle), "{args:?}: no {needle:?} in:\n{err}");
        }
    }
    assert_eq!(fs::read(&rdb).ok(), live, "the server's file is untouched");
    // Still running, still holding our keys.
    assert_eq!(redis(&["PING"]).trim(), "PONG");
}

#[test]
fn to_database_writes_the_rdb_file_with_the_steps_to_load_it() {
    let keys = Keys::create("todb");
    let env = world(URL);
    let id = snapshot(&env);
    let o = cmd(&env).args(["dump", &id, "cache"]).output().unwrap();
    assert_code(&o, 0, "dump");
    let stored = o.stdout;
    let target = env.path("restored/redis/dump.rdb");
    let t = target.to_str().unwrap();

    let o = cmd(&env)
        .args(["restore", &id, "--to-database", t, "--json"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database");
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &rep["sources"][0];
    assert_eq!(s["destination"], t);
    assert!(
        s["next_steps"][0].as_str().unwrap().contains(&server_rdb()),
        "{s}"
    );
    let got = fs::read(&target).unwrap();
    assert!(got.starts_with(b"REDIS00"));
    assert!(got == stored, "the snapshot's RDB file");
    assert!(contains(&got, &keys.0[0]));
    check_rdb(&target);
    let beside: Vec<_> = fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside.len(), 1, "no temp file left: {beside:?}");

    let o = cmd(&env)
        .args(["restore", &id, "--to-database", t])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --to-database over an existing file");
    assert!(text(&o.stderr).contains("--force"));
    fs::write(&target, b"old").unwrap();
    let o = cmd(&env)
        .args(["restore", &id, "--to-database", t, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database --force");
    assert!(text(&o.stderr).contains("next step for source cache"));
    assert!(fs::read(&target).unwrap() == stored);
    tmp_is_empty(&env);
}

#[test]
fn unreachable_server_fails_the_source() {
    // Alone: nothing committed, exit 1.
    let env = world("redis://127.0.0.1:1");
    let o = cmd(&env).args(["snapshot"]).output().unwrap();
    assert_code(&o, 1, "snapshot of an unreachable server");
    let err = text(&o.stderr);
    assert!(
        err.contains("cache") && err.contains("redis://127.0.0.1:1"),
        "{err}"
    );
    tmp_is_empty(&env);

    // With a source that works: committed, partial, exit 4.
    let mut env = world("redis://127.0.0.1:1");
    env.sources.push_str(
        "[[sources]]\nname = \"notes\"\ntype = \"command\"\ndump = [\"echo\", \"hi\"]\n\n",
    );
    env.write_config();
    let snap = env.snapshot_json(&[], 4);
    assert_eq!(snap["status"], "partial");
    let cache = snap["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cache")
        .unwrap();
    assert_eq!(cache["status"], "failed");
    assert!(
        cache["error"]
            .as_str()
            .unwrap()
            .contains("Could not connect"),
        "{cache}"
    );
}

#[test]
fn restore_when_the_server_is_down_needs_a_path() {
    let _keys = Keys::create("down");
    let mut env = world(URL);
    let id = snapshot(&env);
    let rdb = server_rdb();
    // The server "is stopped": the source now points where none answers.
    env.sources = env.sources.replace(URL, "redis://127.0.0.1:1");
    env.write_config();

    let o = cmd(&env)
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore with the server down");
    let err = text(&o.stderr);
    assert!(err.contains("does not answer"), "{err}");
    assert!(err.contains("--to-database PATH"), "{err}");
    assert!(
        err.contains(&format!("--force --to-database {rdb}")),
        "the recorded place is suggested: {err}"
    );

    let target = env.path("var/dump.rdb");
    let o = cmd(&env)
        .args(["restore", &id, "--to-database", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --to-database with the server down");
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "start redis-server so it loads {}",
            target.display()
        )),
        "{err}"
    );
    assert!(fs::read(&target).unwrap().starts_with(b"REDIS00"));
    check_rdb(&target);
}

/// A Redis server of this test's own (a password, its RDB file in a temp
/// directory), stopped when dropped.
struct OwnServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

const PASSWORD: &str = "s3cret-for-coffer";

impl OwnServer {
    fn start(dir: &Path) -> OwnServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = OwnServer {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--dbfilename",
                "dump.rdb",
                "--dir",
                self.dir.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let o = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .env("REDISCLI_AUTH", PASSWORD)
            .output()
            .expect("run redis-cli");
        text(&o.stdout)
    }

    /// The first of the steps coffer gives.
    fn shutdown_nosave(&mut self) {
        self.cli(&["SHUTDOWN", "NOSAVE"]);
        if let Some(mut c) = self.child.take() {
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The whole way back, on a server of the test's own with a password: the
/// refusal's steps, followed one by one, bring the snapshot's keys back.
#[test]
fn following_the_steps_restores_a_password_protected_server() {
    let mut env = Env::init(Backend::Fs);
    fs::create_dir_all(env.path("tmp")).unwrap();
    let mut server = OwnServer::start(&env.path("redis-data"));
    server.cli(&["SET", "greeting", "hello"]);
    server.cli(&["RPUSH", "queue", "a", "b"]);
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\npassword_env = \"TEST_REDIS_PASSWORD\"\n\n",
        server.port
    ));
    env.write_config();
    let with_pw = |c: &mut assert_cmd::Command| {
        c.env("TMPDIR", env.path("tmp"))
            .env("TEST_REDIS_PASSWORD", PASSWORD);
    };

    // Without the password: the source fails and says how to give it.
    let o = cmd(&env).args(["snapshot"]).output().unwrap();
    assert_code(&o, 1, "snapshot without the password");
    assert!(
        text(&o.stderr).contains("password_env"),
        "{}",
        text(&o.stderr)
    );

    let mut c = env.cmd();
    with_pw(&mut c);
    let o = c.args(["snapshot", "--json"]).output().unwrap();
    assert_code(&o, 0, "snapshot");
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c = env.cmd();
    with_pw(&mut c);
    let o = c.args(["show", &id, "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["sources"][0]["details"]["keys"], 2);
    assert!(!text(&o.stdout).contains(PASSWORD));

    // Changes after the snapshot.
    server.cli(&["DEL", "greeting"]);
    server.cli(&["SET", "later", "x"]);

    let mut c = env.cmd();
    with_pw(&mut c);
    let o = c.args(["restore", &id]).output().unwrap();
    assert_code(&o, 2, "restore into the running server");
    let err = text(&o.stderr);
    let rdb = env.path("redis-data/dump.rdb");
    let step2 = format!(
        "coffer restore {id} --only cache --force --to-database {}",
        rdb.display()
    );
    assert!(err.contains("REDISCLI_AUTH"), "{err}");
    assert!(err.contains(&step2), "{err}");
    assert!(!err.contains(PASSWORD));

    // 1. stop it without saving; 2. write the file; 3. start it.
    server.shutdown_nosave();
    let mut c = env.cmd();
    with_pw(&mut c);
    let o = c
        .args([
            "restore",
            &id,
            "--only",
            "cache",
            "--force",
            "--to-database",
        ])
        .arg(&rdb)
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force --to-database <dir>/<dbfilename>");
    assert!(
        text(&o.stderr).contains(&format!("start redis-server so it loads {}", rdb.display())),
        "{}",
        text(&o.stderr)
    );
    server.launch();
    assert_eq!(server.cli(&["GET", "greeting"]).trim(), "hello");
    assert_eq!(server.cli(&["LRANGE", "queue", "0", "-1"]).trim(), "a\nb");
    assert_eq!(server.cli(&["EXISTS", "later"]).trim(), "0");
    tmp_is_empty(&env);
}
