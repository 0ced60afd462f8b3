//! `coffer check` against the real test servers: every check passing for a
//! config with directory, files, PostgreSQL, MariaDB, Redis, SQLite and
//! command sources; then each failure on its own (unreadable paths, a dead
//! database port, a dump tool missing or older than the server, a wrong key,
//! a read-only repository, a bucket that does not exist, an unparseable
//! config) and `--max-age` on both sides of the newest snapshot's age.

use crate::common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output, want: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn add_source(env: &mut Env, toml: &str) {
    env.sources.push_str(toml);
    env.sources.push_str("\n\n");
    env.write_config();
}

/// A repository and one source of every type, all reachable.
fn full_world() -> Env {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    write(&media.join("a.txt"), b"a\n");
    env.add_dir_source("media", &media, &[]);
    let dotenv = env.path("app/.env");
    write(&dotenv, b"SECRET=1\n");
    env.add_files_source("env", &[&dotenv]);
    add_source(
        &mut env,
        "[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/postgres\"",
    );
    add_source(
        &mut env,
        "[[sources]]\nname = \"orders\"\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/mysql\"",
    );
    add_source(
        &mut env,
        "[[sources]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"",
    );
    let db = env.path("sessions.sqlite3");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE s(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO s(v) VALUES('x');",
    )
    .unwrap();
    drop(c);
    add_source(
        &mut env,
        &format!(
            "[[sources]]\nname = \"sessions\"\ntype = \"sqlite\"\npath = {:?}",
            db.display().to_string()
        ),
    );
    add_source(
        &mut env,
        "[[sources]]\nname = \"fixtures\"\ntype = \"command\"\ndump = [\"sh\", \"-c\", \"echo hi\"]",
    );
    env
}

/// (name, ok, detail) of each check in `check --json`.
fn checks(o: &Output) -> Vec<(String, bool, String)> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("check --json is not JSON ({e}):\n{}", stdout(o)));
    assert_eq!(
        v["ok"].as_bool().unwrap(),
        o.status.code() == Some(0),
        "ok vs exit code: {v}"
    );
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts that exactly the checks named in `failing` failed; returns the
/// detail of each failing one, in order.
fn only_failing(all: &[(String, bool, String)], failing: &[&str]) -> Vec<String> {
    for (name, ok, detail) in all {
        let should_fail = failing.contains(&name.as_str());
        assert_eq!(
            !ok, should_fail,
            "check {name:?} (detail {detail:?}); all: {all:#?}"
        );
    }
    for f in failing {
        assert!(
            all.iter().any(|(n, _, _)| n == f),
            "no check named {f:?}: {all:#?}"
        );
    }
    all.iter().filter(|c| !c.1).map(|c| c.2.clone()).collect()
}

#[test]
fn every_check_passes_on_a_healthy_setup() {
    let env = full_world();
    let o = env.cmd().arg("check").output().unwrap();
    code(&o, 0, "check");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    // config, reachable, writable, key, and one per source (7).
    assert_eq!(lines.len(), 4 + 7, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("ok   ")), "{text}");
    for want in [
        "ok   config valid: ",
        "ok   repository reachable: ",
        "ok   repository writable: wrote and deleted probe object probe-",
        "ok   key opens repository: opened by ",
        "ok   source media (directory) reachable: ",
        "ok   source db (postgres) reachable: postgres://postgres@127.0.0.1:5432/postgres: server ",
        "ok   source orders (mysql) reachable: ",
        "ok   source cache (redis) reachable: ",
        "ok   source sessions (sqlite) reachable: ",
        "ok   source fixtures (command) reachable: dump program \"sh\" found",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "no line starting {want:?}:\n{text}"
        );
    }
    assert!(text.contains("pg_dump"), "{text}");

    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 0, "check --json");
    let all = checks(&o);
    assert_eq!(all.len(), 11);
    only_failing(&all, &[]);
    // The probe object is gone again: only the repository's own objects remain.
    let left: Vec<String> = block_on(env.store().list(""))
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p != "config" && !p.starts_with("keys/"))
        .collect();
    assert!(left.is_empty(), "check left {left:?} behind");
}

#[test]
fn unreadable_paths_fail_their_source_checks() {
    let mut env = Env::init(Backend::Fs);
    env.add_dir_source("media", &env.path("no-such-dir"), &[]);
    let present = env.path("present.txt");
    write(&present, b"x");
    let missing = env.path("missing.txt");
    env.add_files_source("env", &[&present, &missing]);
    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 1, "check");
    let d = only_failing(
        &checks(&o),
        &[
            "source media (directory) reachable",
            "source env (files) reachable",
        ],
    );
    assert!(d[0].contains("no-such-dir"), "{d:?}");
    assert!(
        d[1].contains("missing.txt") && !d[1].contains("present.txt"),
        "{d:?}"
    );
    let o = env.cmd().arg("check").output().unwrap();
    code(&o, 1, "check");
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("FAIL source media (directory) reachable: ")),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("2 check(s) failed"), "{}", stderr(&o));
}

#[test]
fn a_dead_database_and_a_missing_dump_program_fail() {
    let mut env = Env::init(Backend::Fs);
    add_source(
        &mut env,
        "[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:1/postgres\"",
    );
    add_source(
        &mut env,
        "[[sources]]\nname = \"orders\"\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:1/mysql\"",
    );
    add_source(
        &mut env,
        "[[sources]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1\"",
    );
    add_source(
        &mut env,
        "[[sources]]\nname = \"fixtures\"\ntype = \"command\"\ndump = [\"coffer-no-such-program\", \"--dump\"]",
    );
    let not_db = format!(
        "[[sources]]\nname = \"sessions\"\ntype = \"sqlite\"\npath = {:?}",
        env.path("not-a-db.sqlite3").display().to_string()
    );
    add_source(&mut env, &not_db);
    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 1, "check");
    let d = only_failing(
        &checks(&o),
        &[
            "source db (postgres) reachable",
            "source orders (mysql) reachable",
            "source cache (redis) reachable",
            "source fixtures (command) reachable",
            "source sessions (sqlite) reachable",
        ],
    );
    assert!(d[0].contains("127.0.0.1") && d[0].contains('1'), "{d:?}");
    assert!(d[2].contains("redis://127.0.0.1:1"), "{d:?}");
    assert!(
        d[3].contains("coffer-no-such-program") && d[3].contains("not found"),
        "{d:?}"
    );
    assert!(d[4].contains("not-a-db.sqlite3"), "{d:?}");
    // One line per check, even when a tool's error spans several lines.
    let o = env.cmd().arg("check").output().unwrap();
    code(&o, 1, "check");
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 4 + 5, "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with("ok   ") || l.starts_with("FAIL ")),
        "{text}"
    );
}

/// A directory on PATH whose `pg_dump` claims `version` and runs nothing.
fn fake_pg_dump(env: &Env, version: &str) -> String {
    let dir = env.path("fakebin");
    let p = dir.join("pg_dump");
    write(
        &p,
        format!("#!/bin/sh\necho 'pg_dump (PostgreSQL) {version}'\n").as_bytes(),
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_dump_tool_older_than_the_server_fails() {
    let mut env = Env::init(Backend::Fs);
    add_source(
        &mut env,
        "[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/postgres\"",
    );
    let path = fake_pg_dump(&env, "9.6.0");
    let o = env
        .cmd()
        .env("PATH", &path)
        .args(["check", "--json"])
        .output()
        .unwrap();
    code(&o, 1, "check with an old pg_dump");
    let d = only_failing(&checks(&o), &["source db (postgres) reachable"]);
    assert!(d[0].contains("pg_dump 9.6.0 is older than"), "{d:?}");
    // A MariaDB dump tool of an older release than the server.
    let mut env = Env::init(Backend::Fs);
    add_source(
        &mut env,
        "[[sources]]\nname = \"orders\"\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/mysql\"",
    );
    let dir = env.path("fakebin");
    let p = dir.join("mariadb-dump");
    write(
        &p,
        b"#!/bin/sh\necho 'mariadb-dump  Ver 10.19 Distrib 10.3.0-MariaDB, for debian-linux-gnu (x86_64)'\n",
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = env
        .cmd()
        .env("PATH", &path)
        .args(["check", "--json"])
        .output()
        .unwrap();
    code(&o, 1, "check with an old mariadb-dump");
    let d = only_failing(&checks(&o), &["source orders (mysql) reachable"]);
    assert!(
        d[0].contains("10.3.0-MariaDB") && d[0].contains("older than the server"),
        "{d:?}"
    );
    // A redis source without redis-cli on PATH.
    let mut env = Env::init(Backend::Fs);
    add_source(
        &mut env,
        "[[sources]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"",
    );
    let empty = env.path("emptybin");
    std::fs::create_dir_all(&empty).unwrap();
    let o = env
        .cmd()
        .env("PATH", &empty)
        .args(["check", "--json"])
        .output()
        .unwrap();
    code(&o, 1, "check without redis-cli");
    let d = only_failing(&checks(&o), &["source cache (redis) reachable"]);
    assert!(d[0].contains("redis-cli"), "{d:?}");
}

#[test]
fn a_wrong_key_fails_the_key_check_with_exit_1() {
    let env = full_world();
    let other = env.path("other.key");
    coffer::crypto::generate_key_file(&other).unwrap();
    let o = env
        .cmd()
        .arg("--key-file")
        .arg(&other)
        .args(["check", "--json"])
        .output()
        .unwrap();
    code(&o, 1, "check with a wrong key");
    let d = only_failing(&checks(&o), &["key opens repository"]);
    assert!(d[0].contains("wrong key"), "{d:?}");
    // --max-age needs the repository opened: it fails too, and says why.
    let o = env
        .cmd()
        .arg("--key-file")
        .arg(&other)
        .args(["check", "--json", "--max-age", "1h"])
        .output()
        .unwrap();
    code(&o, 1, "check with a wrong key");
    let d = only_failing(
        &checks(&o),
        &["key opens repository", "newest snapshot younger than 1h"],
    );
    assert!(d[1].contains("not checked"), "{d:?}");
}

fn chmod_tree(root: &Path, dir_mode: u32) {
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
        }
    }
}

#[test]
fn a_read_only_repository_fails_the_write_check() {
    let env = full_world();
    let repo = env.path("repo");
    chmod_tree(&repo, 0o555);
    // root writes anywhere; without CAP_DAC_OVERRIDE it is held to the
    // modes like everyone else.
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = assert_cmd::Command::new("setpriv");
        c.args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_coffer"));
        for (k, _) in std::env::vars() {
            if k.starts_with("COFFER_") && !k.starts_with("COFFER_TEST_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.current_dir(env.dir.path());
        c
    } else {
        let mut c = coffer_cmd();
        c.current_dir(env.dir.path());
        c
    };
    let o = cmd
        .arg("--config")
        .arg(&env.config)
        .args(["check", "--json"])
        .output()
        .unwrap();
    chmod_tree(&repo, 0o755);
    code(&o, 1, "check on a read-only repository");
    let d = only_failing(&checks(&o), &["repository writable"]);
    assert!(d[0].contains("ermission denied"), "{d:?}");
    // The error says what to do next (issue 11 item 11).
    assert!(
        d[0].contains("check the owner and mode of") && d[0].contains("run the command again"),
        "{d:?}"
    );
}

#[test]
fn an_unreachable_repository_fails_and_the_checks_that_need_it_say_so() {
    // A bucket that does not exist on the moto server.
    let mut env = Env::new(Backend::S3);
    env.url = format!(
        "s3://coffer-no-such-bucket-{}/x",
        coffer::crypto::random_id(3)
    );
    env.write_config();
    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 1, "check on a missing bucket");
    let d = only_failing(
        &checks(&o),
        &[
            "repository reachable",
            "repository writable",
            "key opens repository",
        ],
    );
    assert!(d[0].contains("coffer-no-such-bucket"), "{d:?}");
    assert!(
        d[1].contains("not checked") && d[2].contains("not checked"),
        "{d:?}"
    );
    // Every command's error says what to do next (issue 11 item 11).
    // (This server answers a missing bucket's objects as missing objects.)
    assert!(d[0].contains("check the URL"), "{d:?}");

    // A path below a regular file: no directory can be there.
    let mut env = Env::new(Backend::Fs);
    write(&env.path("plain"), b"x");
    env.url = env.path("plain/repo").display().to_string();
    env.write_config();
    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 1, "check on a path below a file");
    let d = only_failing(
        &checks(&o),
        &[
            "repository reachable",
            "repository writable",
            "key opens repository",
        ],
    );
    assert!(d[0].contains("plain/repo"), "{d:?}");

    // An empty directory: reachable storage, but no repository in it.
    let mut env = Env::new(Backend::Fs);
    std::fs::create_dir_all(env.path("empty")).unwrap();
    env.url = env.path("empty").display().to_string();
    env.write_config();
    let o = env.cmd().arg("check").output().unwrap();
    code(&o, 1, "check on an empty directory");
    assert!(
        stdout(&o).contains("FAIL repository reachable: ") && stdout(&o).contains("coffer init"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn max_age_passes_and_fails_around_the_newest_snapshot() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    write(&media.join("a.txt"), b"a\n");
    env.add_dir_source("media", &media, &[]);
    let name2 = "newest snapshot younger than 2h";
    // No snapshot at all.
    let o = env
        .cmd()
        .args(["check", "--json", "--max-age", "2h"])
        .output()
        .unwrap();
    code(&o, 1, "check --max-age on an empty repository");
    let d = only_failing(&checks(&o), &[name2]);
    assert!(d[0].contains("no snapshot"), "{d:?}");

    // A snapshot recorded 3 hours ago, then one recorded 90 minutes ago.
    let at = |ago: chrono::Duration| {
        (chrono::Utc::now() - ago).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    // Dated through the library: the CLI cannot choose a snapshot's time.
    let snap = |t: String| snapshot_at(&env, &t, &[]);
    let old = snap(at(chrono::Duration::hours(3)));
    let o = env
        .cmd()
        .args(["check", "--json", "--max-age", "2h"])
        .output()
        .unwrap();
    code(&o, 1, "check --max-age 2h, newest 3h old");
    let d = only_failing(&checks(&o), &[name2]);
    assert!(
        d[0].contains(&old) && d[0].contains("older than 2h"),
        "{d:?}"
    );

    let newer = snap(at(chrono::Duration::minutes(90)));
    let o = env
        .cmd()
        .args(["check", "--max-age", "2h"])
        .output()
        .unwrap();
    code(&o, 0, "check --max-age 2h, newest 90 min old");
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with(&format!("ok   {name2}: snapshot {newer}"))),
        "{}",
        stdout(&o)
    );
    let o = env
        .cmd()
        .args(["check", "--json", "--max-age", "1h"])
        .output()
        .unwrap();
    code(&o, 1, "check --max-age 1h, newest 90 min old");
    only_failing(&checks(&o), &["newest snapshot younger than 1h"]);

    let o = env
        .cmd()
        .args(["check", "--max-age", "an hour"])
        .output()
        .unwrap();
    code(&o, 2, "check with a bad --max-age");
    assert!(stderr(&o).contains("--max-age"), "{}", stderr(&o));
}

#[test]
fn an_unparseable_config_is_a_fail_line_and_exit_2() {
    let mut env = Env::init(Backend::Fs);
    env.extra = "[retention]\nkeep_dialy = 3\n".into();
    env.write_config();
    let o = env.cmd().arg("check").output().unwrap();
    code(&o, 2, "check with a bad config");
    let text = stdout(&o);
    assert!(
        text.starts_with("FAIL config valid: ") && text.contains("keep_dialy"),
        "{text}"
    );
    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 2, "check --json with a bad config");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][0]["name"], "config valid");
    assert_eq!(v["checks"][0]["ok"], false);
}

/// Issue 10 item 9: key and passphrase files readable by group or others
/// were used without a word. Every command warns, as ssh does, and `check`
/// fails the check that uses the file.
#[test]
fn secret_files_open_to_other_users_warn_and_fail_check() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    write(&media.join("a.txt"), b"a\n");
    env.add_dir_source("media", &media, &[]);
    let pw = env.path("db.password");
    std::fs::write(&pw, "unused-with-trust-auth\n").unwrap();
    add_source(
        &mut env,
        &format!(
            "[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/postgres\"\npassword_file = {:?}",
            pw.display().to_string()
        ),
    );
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(&env.key, 0o644);
    chmod(&pw, 0o600);
    let key = env.key.display().to_string();
    let warning =
        format!("warning: key file {key} is readable by others (mode 0644): chmod 600 {key}");

    // Any command: a warning, and the command does its work.
    let o = env.cmd().arg("snapshots").output().unwrap();
    code(&o, 0, "snapshots with a 0644 key file");
    assert!(stderr(&o).contains(&warning), "{}", stderr(&o));

    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 1, "check with a 0644 key file");
    let d = only_failing(&checks(&o), &["key opens repository"]);
    assert!(d[0].contains("opened by key file"), "{d:?}");
    assert!(
        d[0].contains(&format!("readable by others (mode 0644): chmod 600 {key}")),
        "{d:?}"
    );
    assert!(stderr(&o).contains(&warning), "{}", stderr(&o));

    // A source's password file, readable by its group.
    chmod(&env.key, 0o600);
    chmod(&pw, 0o640);
    let o = env.cmd().args(["check", "--json"]).output().unwrap();
    code(&o, 1, "check with a 0640 password file");
    let d = only_failing(&checks(&o), &["source db (postgres) reachable"]);
    assert!(
        d[0].contains(&format!(
            "password file of source db {0} is readable by its group (mode 0640): chmod 600 {0}",
            pw.display()
        )),
        "{d:?}"
    );

    // Private again: no warning, every check passes.
    chmod(&pw, 0o600);
    let o = env.cmd().arg("check").output().unwrap();
    code(&o, 0, "check with private secret files");
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}
