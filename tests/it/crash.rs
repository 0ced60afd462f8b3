//! Crashes and concurrency: a snapshot killed with SIGKILL leaves no visible
//! snapshot and a healthy repository; two snapshots at once both succeed; a
//! snapshot whose every source fails commits nothing.

use crate::common::*;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// `coffer --config <env config>` as a plain std Command (for spawning).
/// Writes `len` pseudo-random bytes to `path` in 1 MiB chunks.
fn big_file(path: &Path, len: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(path).unwrap();
    let chunk = 1 << 20;
    let mut done = 0;
    let mut seed = 11;
    while done < len {
        let n = chunk.min(len - done);
        f.write_all(&pseudo_random(n, seed)).unwrap();
        seed += 1;
        done += n;
    }
    f.sync_all().unwrap();
}

/// Anything (file or staging file) under the filesystem repository's data/.
fn fs_data_present(repo: &Path) -> bool {
    walkdir::WalkDir::new(repo.join("data"))
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| e.file_type().is_file())
}

fn store_objects(env: &Env, prefix: &str) -> Vec<(String, u64)> {
    let store = env.store();
    block_on(async { store.list(prefix).await.expect("list") })
}

fn snapshots_json(env: &Env) -> Vec<serde_json::Value> {
    let o = env.cmd().args(["snapshots", "--json"]).output().unwrap();
    assert_code(&o, 0, "snapshots --json");
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .expect("JSON")
        .as_array()
        .expect("array")
        .clone()
}

/// Kills `child` with SIGKILL once `ready` says so (or at `max`), and
/// returns whether it was still running when killed.
fn kill_when(child: &mut Child, max: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < max {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ready() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

fn killed_snapshot(b: Backend) {
    // Object stores are reached through a (fault-free) proxy, which shows
    // when the big file's upload is under way.
    let proxy = (b == Backend::S3).then(crate::common::faultproxy::FaultProxy::s3);
    let mut env = Env::new(b);
    if let Some(p) = &proxy {
        env.options.insert("aws_endpoint".into(), p.endpoint());
    }
    env.write_config();
    env.cmd().arg("init").assert().success();
    let data = env.path("data");
    big_file(&data.join("huge.bin"), 200 << 20);
    write(&data.join("small.txt"), b"small\n");
    env.add_dir_source("media", &data, &[]);

    let mut child = env
        .spawn_cmd()
        .arg("snapshot")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = match b {
        Backend::Fs => {
            let repo = env.path("repo");
            // Kill as soon as the first bytes land under data/ (the upload
            // of the big file is under way).
            kill_when(&mut child, Duration::from_secs(20), || {
                fs_data_present(&repo)
            })
        }
        _ => {
            // Object stores show a multipart upload only once complete: kill
            // once its first part has gone out (a wait of a fixed time lost
            // the race on an idle machine: the whole snapshot took less).
            let proxy = proxy.as_ref().expect("a proxy for object stores");
            kill_when(&mut child, Duration::from_secs(20), || {
                proxy.count("PUT", "partNumber=") > 0
            })
        }
    };
    assert!(
        running,
        "the snapshot finished before it could be killed: make the test file bigger"
    );

    // No snapshot is visible.
    assert!(
        store_objects(&env, "snapshots/").is_empty(),
        "a killed snapshot left a manifest: {:?}",
        store_objects(&env, "snapshots/")
    );
    assert!(
        snapshots_json(&env).is_empty(),
        "a killed snapshot is listed"
    );
    // The repository is healthy.
    let o = env
        .cmd()
        .args(["verify", "--all", "--deep"])
        .output()
        .unwrap();
    assert_code(&o, 0, "verify --all --deep after a kill");
    // `latest` names nothing: not a crash, a clean error.
    let o = env.cmd().args(["show", "latest"]).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert_ne!(o.status.code(), Some(101), "{}", stderr(&o));

    // The next snapshot succeeds and restores correctly.
    let id = env.snapshot_ok();
    let listed = snapshots_json(&env);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    env.cmd()
        .args(["verify", "--all", "--deep"])
        .assert()
        .success();
    let target = env.path("restored");
    env.cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&data, &target.join("media"));
}

#[test]
fn sigkill_during_snapshot_fs() {
    killed_snapshot(Backend::Fs);
}

#[test]
fn sigkill_during_snapshot_s3() {
    killed_snapshot(Backend::S3);
}

/// Kills a snapshot at many moments of its life (start-up, walking,
/// uploading, committing): afterwards every visible snapshot is whole.
#[test]
fn sigkill_at_many_moments_leaves_whole_or_nothing() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    sample_tree(&data, Some(12 << 20));
    env.add_dir_source("media", &data, &[]);
    let mut killed_running = 0;
    for delay_ms in [5u64, 30, 60, 100, 150, 220, 300, 450, 700] {
        let mut child = env
            .spawn_cmd()
            .arg("snapshot")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        if kill_when(&mut child, Duration::from_secs(30), || {
            start.elapsed() >= Duration::from_millis(delay_ms)
        }) {
            killed_running += 1;
        }
        for s in snapshots_json(&env) {
            let id = s["id"].as_str().unwrap();
            let o = env.cmd().args(["verify", "--deep", id]).output().unwrap();
            assert_code(
                &o,
                0,
                &format!("verify --deep {id} after a kill at {delay_ms} ms"),
            );
        }
    }
    assert!(killed_running > 0, "no run was still going when killed");
    // Every visible snapshot restores whole.
    for s in snapshots_json(&env) {
        let id = s["id"].as_str().unwrap();
        let target = env.path(&format!("r-{id}"));
        env.cmd()
            .args(["restore", id, "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&data, &target.join("media"));
    }
    env.cmd()
        .args(["verify", "--all", "--deep"])
        .assert()
        .success();
    env.snapshot_ok();
}

fn concurrent_snapshots(b: Backend) {
    let mut env = Env::init(b);
    let data = env.path("data");
    sample_tree(&data, Some(4 << 20));
    env.add_dir_source("media", &data, &[]);
    let spawn = |tag: &str| {
        env.spawn_cmd()
            .args(["snapshot", "--json", "--tag", tag])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("first");
    let b2 = spawn("second");
    let oa = a.wait_with_output().unwrap();
    let ob = b2.wait_with_output().unwrap();
    assert_code(&oa, 0, "first concurrent snapshot");
    assert_code(&ob, 0, "second concurrent snapshot");
    let ja: serde_json::Value = serde_json::from_slice(&oa.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_slice(&ob.stdout).unwrap();
    let (ia, ib) = (
        ja["id"].as_str().unwrap().to_string(),
        jb["id"].as_str().unwrap().to_string(),
    );
    assert_ne!(ia, ib, "two snapshots got the same id");
    let listed: Vec<String> = snapshots_json(&env)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&ia) && listed.contains(&ib), "{listed:?}");
    for id in [&ia, &ib] {
        let target = env.path(&format!("r-{id}"));
        env.cmd()
            .args(["restore", id, "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&data, &target.join("media"));
    }
    env.cmd()
        .args(["verify", "--all", "--deep"])
        .assert()
        .success();
}

#[test]
fn two_snapshots_at_once_fs() {
    concurrent_snapshots(Backend::Fs);
}

#[test]
fn two_snapshots_at_once_s3() {
    concurrent_snapshots(Backend::S3);
}

#[test]
fn only_source_missing_commits_nothing() {
    let mut env = Env::init(Backend::Fs);
    let missing = env.path("does-not-exist");
    env.add_dir_source("media", &missing, &[]);
    let o = env.cmd().args(["snapshot"]).output().unwrap();
    assert_code(&o, 1, "snapshot of a missing directory");
    let e = stderr(&o);
    assert!(e.contains("every source failed"), "{e}");
    assert!(e.contains("media"), "names the source: {e}");
    assert!(e.contains("does-not-exist"), "names the path: {e}");
    assert!(store_objects(&env, "snapshots/").is_empty());
    assert!(snapshots_json(&env).is_empty());
    assert!(
        store_objects(&env, "data/").is_empty(),
        "a failed snapshot left data: {:?}",
        store_objects(&env, "data/")
    );

    // With --json: exit 1, one JSON document saying it failed.
    let o = env.cmd().args(["snapshot", "--json"]).output().unwrap();
    assert_code(&o, 1, "snapshot --json of a missing directory");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(v["ok"], false, "{v}");
    assert!(snapshots_json(&env).is_empty());

    // A path that is a file, not a directory: same.
    let f = env.path("a-file");
    fs::write(&f, b"x").unwrap();
    env.sources.clear();
    env.add_dir_source("media", &f, &[]);
    let o = env.cmd().args(["snapshot"]).output().unwrap();
    assert_code(&o, 1, "snapshot of a file as directory source");
    assert!(snapshots_json(&env).is_empty());
}

#[test]
fn one_of_two_sources_missing_is_partial() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    write(&data.join("x"), b"x");
    env.add_dir_source("good", &data, &[]);
    env.add_dir_source("gone", &env.path("missing-dir"), &[]);
    let v = env.snapshot_json(&[], 4);
    assert_eq!(v["status"], "partial");
    let gone = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "gone")
        .unwrap();
    assert_eq!(gone["status"], "failed", "{v}");
    assert!(
        gone["error"].as_str().unwrap().contains("missing-dir"),
        "{v}"
    );
    assert_eq!(snapshots_json(&env).len(), 1);
}
