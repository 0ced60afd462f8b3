//! `redis` sources, against the real Redis on 127.0.0.1:6379. The server is
//! shared: these tests never stop or flush it, only add keys with a prefix of
//! their own and delete them again.

use crate::common::*;

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

/// The shared server is never restored into (that would replace every
/// other test's keys): only the refusals and dry runs, which change nothing.
#[test]
fn restore_into_the_shared_server_needs_force_and_never_writes_its_file() {
    let _keys = Keys::create("steps");
    let env = world(URL);
    let id = snapshot(&env);
    let rdb = server_rdb();
    let live = fs::read(&rdb).ok();

    // Without --force: exit 2, saying what --force would do.
    let o = cmd(&env).args(["restore", &id]).output().unwrap();
    assert_code(&o, 2, "restore without --force");
    let err = text(&o.stderr);
    for needle in ["add --force", "every database", "redis://127.0.0.1:6379"] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    // A dry run says where it would go and what it still needs.
    let o = cmd(&env)
        .args(["restore", &id, "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --dry-run");
    let out = text(&o.stdout);
    assert!(
        out.contains("replication from a temporary redis-server") && out.contains("needs --force"),
        "{out}"
    );
    // The running server's own file, even with --force: the steps.
    let o = cmd(&env)
        .args([
            "restore",
            &id,
            "--force",
            "--dry-run",
            "--to-database",
            &rdb,
        ])
        .output()
        .unwrap();
    assert_code(&o, 2, "--to-database <the running server's file>");
    let err = text(&o.stderr);
    for needle in [
        "is running",
        "redis-cli -h 127.0.0.1 -p 6379 shutdown nosave",
        &format!("coffer restore {id} --only cache --force --to-database {rdb}"),
        &format!("leave out --to-database: coffer restore {id} --only cache --force"),
        "start redis-server",
    ] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    assert_eq!(fs::read(&rdb).ok(), live, "the server's file is untouched");
    // Still running, still holding our keys.
    assert_eq!(redis(&["PING"]).trim(), "PONG");
    assert_eq!(redis(&["EXISTS", &_keys.0[0]]).trim(), "1");
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

/// The whole way back by hand, on a server of the test's own with a
/// password: the refusal's steps, followed one by one, bring the snapshot's
/// keys back.
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

    // Writing the running server's own file: refused with the steps.
    let rdb = env.path("redis-data/dump.rdb");
    let mut c = env.cmd();
    with_pw(&mut c);
    let o = c
        .args(["restore", &id, "--force", "--to-database"])
        .arg(&rdb)
        .output()
        .unwrap();
    assert_code(&o, 2, "restore into the running server's file");
    let err = text(&o.stderr);
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

fn info_value(info: &str, key: &str) -> String {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in:\n{info}"))
        .to_string()
}

/// An own server with a password and a source for it in the config.
fn own_world() -> (Env, OwnServer) {
    let mut env = Env::init(Backend::Fs);
    fs::create_dir_all(env.path("tmp")).unwrap();
    let server = OwnServer::start(&env.path("redis-data"));
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\npassword_env = \"TEST_REDIS_PASSWORD\"\n\n",
        server.port
    ));
    env.write_config();
    (env, server)
}

fn cmd_pw(env: &Env) -> assert_cmd::Command {
    let mut c = cmd(env);
    c.env("TEST_REDIS_PASSWORD", PASSWORD);
    c
}

/// `restore --force` of a running local server (with a password of its
/// own and a masterauth of its own) replaces everything it holds, in every
/// database, with the snapshot's keys, without restarting it.
#[test]
fn restore_force_loads_the_snapshot_into_the_running_local_server() {
    let (env, server) = own_world();
    server.cli(&["SET", "greeting", "hello"]);
    server.cli(&["RPUSH", "queue", "a", "b"]);
    server.cli(&["SET", "kept", "x"]);
    server.cli(&["-n", "5", "HSET", "user", "name", "ann"]);
    server.cli(&["CONFIG", "SET", "masterauth", "prior-masterauth"]);
    let o = cmd_pw(&env).args(["snapshot", "--json"]).output().unwrap();
    assert_code(&o, 0, "snapshot");
    let pid = info_value(&server.cli(&["INFO", "server"]), "process_id");

    // What happens after the snapshot: in the same and in other databases.
    server.cli(&["DEL", "greeting"]);
    server.cli(&["SET", "later", "x"]);
    server.cli(&["RPUSH", "queue", "c"]);
    server.cli(&["-n", "5", "HSET", "user", "plan", "pro"]);
    server.cli(&["-n", "7", "SET", "other", "y"]);
    let changed = server.cli(&["INFO", "keyspace"]);

    let o = cmd_pw(&env).args(["restore", "latest"]).output().unwrap();
    assert_code(&o, 2, "restore without --force");
    assert!(
        text(&o.stderr).contains("add --force"),
        "{}",
        text(&o.stderr)
    );
    let o = cmd_pw(&env)
        .args(["restore", "latest", "--force", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force --dry-run");
    assert_eq!(
        server.cli(&["INFO", "keyspace"]),
        changed,
        "a dry run changes nothing"
    );

    let o = cmd_pw(&env)
        .args(["restore", "latest", "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore latest --force");
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(
        out.contains(&format!(
            "into redis://127.0.0.1:{} (4 keys (db0: 3, db5: 1), loaded by replication from a temporary redis-server)",
            server.port
        )),
        "{out}\n{err}"
    );
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));

    // The same process, a master again, holding exactly the snapshot's keys.
    let info = server.cli(&["INFO"]);
    assert_eq!(info_value(&info, "process_id"), pid, "not restarted");
    assert_eq!(info_value(&info, "role"), "master");
    assert_eq!(info_value(&info, "db0"), "keys=3,expires=0,avg_ttl=0");
    assert_eq!(info_value(&info, "db5"), "keys=1,expires=0,avg_ttl=0");
    assert!(!info.contains("db7:"), "{info}");
    assert_eq!(server.cli(&["GET", "greeting"]).trim(), "hello");
    assert_eq!(server.cli(&["LRANGE", "queue", "0", "-1"]).trim(), "a\nb");
    assert_eq!(server.cli(&["EXISTS", "later"]).trim(), "0");
    assert_eq!(
        server.cli(&["-n", "5", "HGETALL", "user"]).trim(),
        "name\nann"
    );
    // Its settings are its own again, and it takes writes.
    assert_eq!(
        server.cli(&["CONFIG", "GET", "masterauth"]).trim(),
        "masterauth\nprior-masterauth"
    );
    assert_eq!(server.cli(&["SET", "after", "1"]).trim(), "OK");
    // The temporary server and its directory are gone.
    tmp_is_empty(&env);
}

/// A server on another machine: nothing is sent to it (a redis-cli that
/// records its calls stands in for the real one), exit 1 with the steps.
#[test]
fn restore_of_a_remote_server_gives_the_steps_without_contacting_it() {
    let _keys = Keys::create("remote");
    let mut env = world(URL);
    let id = snapshot(&env);
    let rdb = server_rdb();
    // 192.0.2.0/24 is reserved for documentation: never a real server.
    env.sources = env.sources.replace(URL, "redis://192.0.2.1:6379");
    env.write_config();
    let fake = env.path("fake-bin");
    fs::create_dir_all(&fake).unwrap();
    let calls = env.path("redis-cli-calls");
    fs::write(
        fake.join("redis-cli"),
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", calls.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(fake.join("redis-cli"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());

    for args in [
        vec!["restore", id.as_str(), "--force"],
        vec!["restore", &id],
        vec!["restore", &id, "--force", "--dry-run"],
    ] {
        let o = cmd(&env).env("PATH", &path).args(&args).output().unwrap();
        assert_code(&o, 1, &format!("{args:?}"));
        let err = text(&o.stderr);
        for needle in [
            "redis://192.0.2.1:6379 is not on this machine",
            "redis-cli -h 192.0.2.1 -p 6379 shutdown nosave",
            &format!("coffer restore {id} --only cache --force --to-database {rdb}"),
            "start redis-server",
        ] {
            assert!(err.contains(needle), "{args:?}: no {needle:?} in:\n{err}");
        }
    }
    assert!(
        !calls.exists(),
        "redis-cli was run: {}",
        fs::read_to_string(&calls).unwrap_or_default()
    );
}

/// A replica of another server: refused (its master would overwrite what
/// coffer loads), and left a replica.
#[test]
fn restore_into_a_replica_is_refused() {
    let (env, replica) = own_world();
    let master = OwnServer::start(&env.path("redis-master"));
    master.cli(&["SET", "m", "1"]);
    let o = cmd_pw(&env).args(["snapshot"]).output().unwrap();
    assert_code(&o, 0, "snapshot");
    replica.cli(&["CONFIG", "SET", "masterauth", PASSWORD]);
    replica.cli(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);

    let o = cmd_pw(&env)
        .args(["restore", "latest", "--force"])
        .output()
        .unwrap();
    assert_code(&o, 1, "restore into a replica");
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("is a replica of 127.0.0.1:{}", master.port))
            && err.contains("REPLICAOF NO ONE"),
        "{err}"
    );
    let info = replica.cli(&["INFO", "replication"]);
    assert_eq!(info_value(&info, "role"), "slave");
    assert_eq!(info_value(&info, "master_port"), master.port.to_string());
}

/// A user whom ACLs deny CONFIG: refused before anything changes, with
/// the steps to do it by hand.
#[test]
fn restore_without_config_rights_falls_back_to_the_steps() {
    let (mut env, server) = own_world();
    server.cli(&["SET", "k", "1"]);
    server.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-pass",
        "~*",
        "&*",
        "+@all",
        "-config",
    ]);
    env.sources = env
        .sources
        .replace("redis://127.0.0.1", "redis://app@127.0.0.1");
    env.write_config();
    let mut c = cmd(&env);
    c.env("TEST_REDIS_PASSWORD", "app-pass");
    let o = c.args(["snapshot"]).output().unwrap();
    assert_code(&o, 0, "snapshot as app");
    server.cli(&["SET", "later", "1"]);

    let mut c = cmd(&env);
    c.env("TEST_REDIS_PASSWORD", "app-pass");
    let o = c.args(["restore", "latest", "--force"]).output().unwrap();
    assert_code(&o, 1, "restore without CONFIG rights");
    let err = text(&o.stderr);
    for needle in [
        "CONFIG GET masterauth was refused",
        "Nothing was changed",
        &format!(
            "redis-cli -h 127.0.0.1 -p {} --user app shutdown nosave",
            server.port
        ),
        "--force --to-database <dir>/<dbfilename>",
    ] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    assert_eq!(server.cli(&["EXISTS", "later"]).trim(), "1");
}

/// No redis-server on this machine (only redis-cli): refused before
/// anything changes, saying what is missing, with the steps.
#[test]
fn restore_without_redis_server_installed_says_so() {
    let (env, server) = own_world();
    server.cli(&["SET", "k", "1"]);
    let o = cmd_pw(&env).args(["snapshot"]).output().unwrap();
    assert_code(&o, 0, "snapshot");
    server.cli(&["SET", "later", "1"]);
    let bin = env.path("only-cli");
    fs::create_dir_all(&bin).unwrap();
    let cli = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v redis-cli"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(cli.trim(), bin.join("redis-cli")).unwrap();

    let o = cmd_pw(&env)
        .env("PATH", &bin)
        .args(["restore", "latest", "--force"])
        .output()
        .unwrap();
    assert_code(&o, 1, "restore without redis-server");
    let err = text(&o.stderr);
    for needle in [
        "redis-server is not installed on this machine",
        "Nothing was changed",
        "shutdown nosave",
    ] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    assert_eq!(server.cli(&["EXISTS", "later"]).trim(), "1");
}

/// Issue 10 item 7: a password in the Redis URL (`redis://:PW@host:port`)
/// works, reaches redis-cli through its environment (REDISCLI_AUTH), and
/// shows nowhere: not in redis-cli's command line (`ps`), not in `--json`,
/// `show`, `snapshots` or stderr; the URL is shown with `***` for it.
#[test]
fn a_password_in_the_url_never_reaches_a_command_line_or_the_output() {
    let mut env = Env::init(Backend::Fs);
    fs::create_dir_all(env.path("tmp")).unwrap();
    let server = OwnServer::start(&env.path("redis-data"));
    server.cli(&["SET", "greeting", "hello"]);
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://:{PASSWORD}@127.0.0.1:{}\"\n\n",
        server.port
    ));
    env.write_config();
    let spy = ArgvSpy::new(env.dir.path(), &["redis-cli"]);
    let o = cmd(&env)
        .env("PATH", spy.path_var())
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    assert_code(&o, 0, "snapshot with a password in the URL");
    let shown = cmd(&env)
        .args(["show", "latest", "--json"])
        .output()
        .unwrap();
    let listed = cmd(&env).args(["snapshots"]).output().unwrap();
    let checked = cmd(&env)
        .env("PATH", spy.path_var())
        .args(["check"])
        .output()
        .unwrap();
    assert_code(&checked, 0, "check");
    let argv = spy.command_lines();
    assert!(
        argv.contains("redis-cli"),
        "redis-cli ran through the wrapper: {argv:?}"
    );
    for (what, t) in [
        ("snapshot stdout", text(&o.stdout)),
        ("snapshot stderr", text(&o.stderr)),
        ("show", text(&shown.stdout)),
        ("snapshots", text(&listed.stdout)),
        ("check", text(&checked.stdout) + &text(&checked.stderr)),
        ("redis-cli's command lines", argv),
    ] {
        assert!(!t.contains(PASSWORD), "password in {what}: {t}");
    }
    assert!(
        text(&shown.stdout).contains(&format!("redis://:***@127.0.0.1:{}", server.port)),
        "{}",
        text(&shown.stdout)
    );
}
