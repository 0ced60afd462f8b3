//! The commands' behaviour as the contract describes it: restore (in place,
//! --force, --include, --dry-run, files sources), dump (one file, tar stream
//! read by GNU tar), snapshot options (--dry-run, --only, --tag, --label,
//! [labels]), listing and selection of snapshots, and the JSON documents.

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use sha2::Digest;

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

fn json_of(o: &Output, what: &str) -> serde_json::Value {
    assert_code(o, 0, what);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not one JSON document ({e}):\n{}",
            stdout(o)
        )
    })
}

fn sha(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn snap(env: &Env, args: &[&str]) -> String {
    env.snapshot_json(args, 0)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn list(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let o = env
        .cmd()
        .args(["snapshots", "--json"])
        .args(args)
        .output()
        .unwrap();
    json_of(&o, &format!("snapshots {args:?}"))
        .as_array()
        .expect("snapshots --json is an array")
        .clone()
}

fn ids(v: &[serde_json::Value]) -> Vec<String> {
    v.iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn objects(env: &Env) -> Vec<(String, u64)> {
    let store = env.store();
    block_on(async {
        let mut v = Vec::new();
        for p in ["data/", "snapshots/", "keys/"] {
            v.extend(store.list(p).await.expect("list"));
        }
        v.sort();
        v
    })
}

fn bash(script: &str, args: &[&str]) -> Output {
    let mut c = Command::new("bash");
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFER_") && !k.starts_with("COFFER_TEST_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.arg("-c").arg(script).arg("bash").args(args);
    c.output().expect("run bash")
}

/// Like `describe_tree`, but with mtimes to the second (what GNU tar
/// restores) and no directory mtimes.
fn describe_loose(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.expect("walk");
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        if rel.is_empty() {
            continue;
        }
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let d = if ft.is_symlink() {
            format!("link -> {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_dir() {
            format!("dir {:o}", m.mode() & 0o7777)
        } else {
            format!(
                "file {:o} {} {} {}",
                m.mode() & 0o7777,
                m.len(),
                m.mtime(),
                sha(&fs::read(e.path()).unwrap())
            )
        };
        out.insert(rel, d);
    }
    out
}

fn assert_rfc3339_utc(v: &serde_json::Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: time is not a string: {v}"));
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what}: {s:?} is not RFC 3339: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "{what}: {s:?} is not UTC");
    assert!(s.ends_with('Z') || s.ends_with("+00:00"), "{what}: {s:?}");
}

fn env_with_tree() -> (Env, std::path::PathBuf) {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    sample_tree(&data, None);
    env.add_dir_source("media", &data, &[]);
    (env, data)
}

// ------------------------------------------------------------------ restore

#[test]
fn restore_in_place_needs_force_and_then_holds_exactly_the_snapshot() {
    let (env, data) = env_with_tree();
    let id = snap(&env, &[]);
    let at_snapshot = describe_tree(&data);

    // Changes since: a new file, a new dir, a deleted file, a modified one
    // (same size), a changed mode.
    write(&data.join("new-since.txt"), b"created after the snapshot\n");
    write(&data.join("newdir/inner.txt"), b"x");
    fs::remove_file(data.join("a/b/c/deep.txt")).unwrap();
    let orders = data.join("exports/orders.csv");
    let mut body = fs::read(&orders).unwrap();
    body[0] = b'X';
    fs::write(&orders, &body).unwrap();
    fs::set_permissions(data.join("script.sh"), fs::Permissions::from_mode(0o644)).unwrap();
    let changed = describe_tree(&data);
    assert_ne!(changed, at_snapshot);

    let o = env.cmd().args(["restore", &id]).output().unwrap();
    assert_code(
        &o,
        2,
        "restore in place over a non-empty dir without --force",
    );
    assert!(
        stderr(&o).contains("--force"),
        "says what to do: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(&data.display().to_string()),
        "names the path: {}",
        stderr(&o)
    );
    assert_eq!(
        describe_tree(&data),
        changed,
        "a refused restore changed files"
    );

    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force in place");
    assert_eq!(
        describe_tree(&data),
        at_snapshot,
        "after restore --force the directory holds exactly the snapshot"
    );
    assert!(!data.join("new-since.txt").exists());
    assert!(!data.join("newdir").exists());
    assert!(same_inode(
        &data.join("a/b/c/deep.txt"),
        &data.join("hardlink.txt")
    ));
    // No staging directory left behind next to it.
    let leftovers: Vec<String> = fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("coffer-restore") || n.contains(".coffer"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn restore_in_place_to_a_missing_directory_needs_no_force() {
    let (env, data) = env_with_tree();
    let id = snap(&env, &[]);
    let want = describe_tree(&data);
    fs::remove_dir_all(&data).unwrap();
    env.cmd().args(["restore", &id]).assert().success();
    assert_eq!(describe_tree(&data), want);
}

#[test]
fn restore_to_a_non_empty_target_needs_force() {
    let (env, data) = env_with_tree();
    let id = snap(&env, &[]);
    let target = env.path("t");
    write(&target.join("media/old.txt"), b"old");
    let o = env
        .cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --target over a non-empty DIR/<source>");
    assert_eq!(fs::read(target.join("media/old.txt")).unwrap(), b"old");
    env.cmd()
        .args(["restore", &id, "--force", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&data, &target.join("media"));
    // An empty DIR/<source> is fine without --force.
    let t2 = env.path("t2");
    fs::create_dir_all(t2.join("media")).unwrap();
    env.cmd()
        .args(["restore", &id, "--target"])
        .arg(&t2)
        .assert()
        .success();
    assert_same_tree(&data, &t2.join("media"));
}

#[test]
fn restore_include_restores_only_matching_paths() {
    let (env, data) = env_with_tree();
    let id = snap(&env, &[]);
    let target = env.path("t");
    env.cmd()
        .args([
            "restore",
            &id,
            "--include",
            "uploads/**",
            "--include",
            "exports/*.csv",
            "--target",
        ])
        .arg(&target)
        .assert()
        .success();
    let root = target.join("media");
    let got: BTreeSet<String> = describe_tree(&root)
        .keys()
        .filter(|k| !k.is_empty())
        .cloned()
        .collect();
    let want: BTreeSet<String> = [
        "exports",
        "exports/orders.csv",
        "uploads",
        "uploads/2026",
        "uploads/2026/11",
        "uploads/2026/11/cat.jpg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want, "restored paths with --include");
    let full = describe_tree(&data);
    let part = describe_tree(&root);
    for k in ["exports/orders.csv", "uploads/2026/11/cat.jpg"] {
        assert_eq!(full[k], part[k], "{k}");
    }

    // A single file by its exact path.
    let t2 = env.path("t2");
    env.cmd()
        .args(["restore", &id, "--include", "a/b/c/deep.txt", "--target"])
        .arg(&t2)
        .assert()
        .success();
    assert_eq!(
        fs::read(t2.join("media/a/b/c/deep.txt")).unwrap(),
        b"deep\n"
    );
    assert!(!t2.join("media/script.sh").exists());

    // In place with --force: only the matching file is put back; other
    // changes stay.
    fs::remove_file(data.join("exports/orders.csv")).unwrap();
    write(&data.join("script.sh"), b"changed\n");
    write(&data.join("new.txt"), b"new\n");
    env.cmd()
        .args(["restore", &id, "--force", "--include", "exports/orders.csv"])
        .assert()
        .success();
    assert_eq!(
        describe_tree(&data)["exports/orders.csv"],
        full["exports/orders.csv"]
    );
    assert_eq!(fs::read(data.join("script.sh")).unwrap(), b"changed\n");
    assert_eq!(fs::read(data.join("new.txt")).unwrap(), b"new\n");

    // A bad pattern is a usage error.
    let o = env
        .cmd()
        .args(["restore", &id, "--include", "a/[", "--target"])
        .arg(env.path("bad"))
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --include with a bad glob");
    assert!(stderr(&o).contains("a/["), "{}", stderr(&o));
    assert!(!env.path("bad").exists());

    // A pattern matching nothing restores nothing (and does not fail hard).
    let t3 = env.path("t3");
    let o = env
        .cmd()
        .args(["restore", &id, "--include", "no/such/**", "--target"])
        .arg(&t3)
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(101), "{}", stderr(&o));
    if t3.join("media").exists() {
        let left: Vec<String> = describe_tree(&t3.join("media"))
            .keys()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn restore_dry_run_lists_and_writes_nothing() {
    let (env, data) = env_with_tree();
    let id = snap(&env, &[]);
    let target = env.path("t");
    let o = env
        .cmd()
        .args(["restore", &id, "--dry-run", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --dry-run --target");
    let out = stdout(&o);
    for p in [
        "a/b/c/deep.txt",
        "uploads/2026/11/cat.jpg",
        "latest.jpg",
        "empty/dir",
    ] {
        assert!(out.contains(p), "dry run lists {p}:\n{out}");
    }
    assert!(
        out.contains(&target.join("media").display().to_string()),
        "dry run says where:\n{out}"
    );
    assert!(!target.exists(), "--dry-run created the target");

    // In place over a changed tree: lists, changes nothing, needs no --force.
    write(&data.join("new.txt"), b"n");
    let before = describe_tree(&data);
    let o = env
        .cmd()
        .args(["restore", &id, "--dry-run", "--json"])
        .output()
        .unwrap();
    let v = json_of(&o, "restore --dry-run --json in place");
    assert_eq!(describe_tree(&data), before, "--dry-run changed the tree");
    assert_eq!(v["dry_run"], true, "{v}");
    let text = v.to_string();
    assert!(text.contains("deep.txt"), "{v}");
    // With --include, only matching paths are listed.
    let o = env
        .cmd()
        .args([
            "restore",
            &id,
            "--dry-run",
            "--include",
            "exports/**",
            "--target",
        ])
        .arg(&target)
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --dry-run --include");
    assert!(stdout(&o).contains("orders.csv"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("deep.txt"), "{}", stdout(&o));
    assert!(!target.exists());
}

#[test]
fn files_source_restores_to_absolute_paths_and_under_target() {
    let mut env = Env::init(Backend::Fs);
    let a = env.path("srv/shop/.env");
    let b = env.path("srv/shop/config/settings.toml");
    write(&a, b"SECRET=1\n");
    write(&b, b"[app]\nname = \"shop\"\n");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
    env.add_files_source("env", &[&a, &b]);
    let id = snap(&env, &[]);
    let (da, db) = (describe_loose_file(&a), describe_loose_file(&b));

    // --target: DIR/<source>/<absolute path>.
    let target = env.path("t");
    env.cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    let ta = target.join("env").join(a.strip_prefix("/").unwrap());
    let tb = target.join("env").join(b.strip_prefix("/").unwrap());
    assert_eq!(describe_loose_file(&ta), da);
    assert_eq!(describe_loose_file(&tb), db);

    // In place: existing files need --force.
    fs::write(&a, b"SECRET=changed\n").unwrap();
    fs::remove_file(&b).unwrap();
    let o = env.cmd().args(["restore", &id]).output().unwrap();
    assert_code(
        &o,
        2,
        "files source in place over an existing file without --force",
    );
    assert_eq!(fs::read(&a).unwrap(), b"SECRET=changed\n");
    assert!(!b.exists(), "a refused restore wrote a file");
    env.cmd()
        .args(["restore", &id, "--force"])
        .assert()
        .success();
    assert_eq!(describe_loose_file(&a), da);
    assert_eq!(describe_loose_file(&b), db);
    assert_eq!(
        fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Into a place where nothing exists: no --force needed.
    fs::remove_file(&a).unwrap();
    fs::remove_file(&b).unwrap();
    env.cmd().args(["restore", &id]).assert().success();
    assert_eq!(describe_loose_file(&a), da);
    assert_eq!(describe_loose_file(&b), db);
}

fn describe_loose_file(p: &Path) -> String {
    let m = fs::metadata(p).unwrap();
    format!(
        "{:o} {} {}.{} {}",
        m.mode() & 0o7777,
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        sha(&fs::read(p).unwrap())
    )
}

// ------------------------------------------------------------------ dump

#[test]
fn dump_one_file_prints_exactly_its_bytes() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    sample_tree(&data, None);
    let conf = env.path("etc/app.conf");
    write(&conf, b"key = value\n");
    env.add_dir_source("media", &data, &[]);
    env.add_files_source("env", &[&conf]);
    let id = snap(&env, &[]);
    for rel in [
        "a/b/c/deep.txt",
        "uploads/2026/11/cat.jpg",
        "exports/orders.csv",
        "empty-file",
        "unicode/café-menü-übersicht-日本語.txt",
    ] {
        let o = env
            .cmd()
            .args(["dump", &id, "media", rel])
            .output()
            .unwrap();
        assert_code(&o, 0, &format!("dump {rel}"));
        assert_eq!(
            sha(&o.stdout),
            sha(&fs::read(data.join(rel)).unwrap()),
            "dump {rel}: bytes differ ({} vs {} bytes)",
            o.stdout.len(),
            fs::metadata(data.join(rel)).unwrap().len()
        );
    }
    // A files source: by absolute path.
    let o = env
        .cmd()
        .args(["dump", &id, "env"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_code(&o, 0, "dump of a files source file by absolute path");
    assert_eq!(o.stdout, b"key = value\n");
    // `latest` and a prefix work as SNAPSHOT.
    let o = env
        .cmd()
        .args(["dump", "latest", "media", "a/b/c/deep.txt"])
        .output()
        .unwrap();
    assert_code(&o, 0, "dump latest");
    assert_eq!(o.stdout, b"deep\n");
    let o = env
        .cmd()
        .args(["dump", &id[..6], "media", "a/b/c/deep.txt"])
        .output()
        .unwrap();
    assert_code(&o, 0, "dump by prefix");
    assert_eq!(o.stdout, b"deep\n");
}

#[test]
fn dump_unknown_path_exits_2() {
    let (env, _) = env_with_tree();
    let id = snap(&env, &[]);
    for p in ["no/such/file", "a/b/c/deep.txt.bak", "../etc/passwd"] {
        let o = env.cmd().args(["dump", &id, "media", p]).output().unwrap();
        assert_code(&o, 2, &format!("dump of {p}"));
        assert!(o.stdout.is_empty(), "dump of {p} wrote to stdout");
        assert!(!stderr(&o).contains("panicked"));
    }
    let o = env
        .cmd()
        .args(["dump", &id, "media", "no/such/file"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("no/such/file"), "{}", stderr(&o));
    // A directory has no bytes to dump: usage error too.
    let o = env
        .cmd()
        .args(["dump", &id, "media", "a/b"])
        .output()
        .unwrap();
    assert_code(&o, 2, "dump of a directory");
}

#[test]
fn dump_is_a_tar_stream_gnu_tar_lists_and_extracts() {
    let (env, data) = env_with_tree();
    let id = snap(&env, &[]);
    let o = env.cmd().args(["dump", &id, "media"]).output().unwrap();
    assert_code(&o, 0, "dump media");
    let tarfile = env.path("media.tar");
    fs::write(&tarfile, &o.stdout).unwrap();

    // Through a real pipe, with pipefail: both sides succeed.
    let bin = assert_cmd::cargo::cargo_bin("coffer");
    let piped = bash(
        "set -euo pipefail; \"$1\" --config \"$2\" dump \"$3\" media | tar -tvf -",
        &[bin.to_str().unwrap(), env.config.to_str().unwrap(), &id],
    );
    assert_code(&piped, 0, "coffer dump | tar -tvf -");
    let listing = stdout(&piped);

    let tf = Command::new("tar")
        .arg("-tf")
        .arg(&tarfile)
        .output()
        .unwrap();
    assert_code(&tf, 0, "tar -tf");
    let names: BTreeSet<String> = stdout(&tf)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect();
    let want: BTreeSet<String> = describe_tree(&data)
        .keys()
        .filter(|k| !k.is_empty())
        .cloned()
        .collect();
    assert_eq!(names, want, "tar -tf lists every entry");
    for n in &want {
        let base = n.rsplit('/').next().unwrap();
        assert!(listing.contains(base), "tar -tvf via pipe lacks {n}");
    }
    assert!(
        listing.contains("latest.jpg -> uploads/2026/11/cat.jpg"),
        "{listing}"
    );
    assert!(
        listing.contains("link to"),
        "hard link shown by tar -tv: {listing}"
    );

    // tar -xf gives back the tree: content, modes, symlinks, hard links,
    // mtimes to the second.
    let out = env.path("extracted");
    fs::create_dir_all(&out).unwrap();
    let x = Command::new("tar")
        .arg("-xf")
        .arg(&tarfile)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&x, 0, "tar -xf");
    assert_eq!(describe_loose(&out), describe_loose(&data));
    assert!(same_inode(
        &out.join("a/b/c/deep.txt"),
        &out.join("hardlink.txt")
    ));
    assert!(
        !stderr(&x).contains("Ignoring unknown extended header"),
        "{}",
        stderr(&x)
    );
}

#[test]
fn dump_of_a_files_source_is_a_tar_of_absolute_paths() {
    let mut env = Env::init(Backend::Fs);
    let a = env.path("srv/.env");
    write(&a, b"A=1\n");
    env.add_files_source("env", &[&a]);
    let id = snap(&env, &[]);
    let o = env.cmd().args(["dump", &id, "env"]).output().unwrap();
    assert_code(&o, 0, "dump env");
    let tarfile = env.path("env.tar");
    fs::write(&tarfile, &o.stdout).unwrap();
    let out = env.path("x");
    fs::create_dir_all(&out).unwrap();
    let x = Command::new("tar")
        .arg("-xf")
        .arg(&tarfile)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&x, 0, "tar -xf of a files source dump");
    assert_eq!(
        fs::read(out.join(a.strip_prefix("/").unwrap())).unwrap(),
        b"A=1\n"
    );
}

// ------------------------------------------------------------------ snapshot

#[test]
fn snapshot_dry_run_writes_nothing_and_reports_sizes() {
    let (env, _) = env_with_tree();
    snap(&env, &[]);
    let before = objects(&env);
    let listed = list(&env, &[]);
    let o = env
        .cmd()
        .args(["snapshot", "--dry-run", "--json"])
        .output()
        .unwrap();
    let v = json_of(&o, "snapshot --dry-run --json");
    assert_eq!(objects(&env), before, "--dry-run wrote objects");
    assert_eq!(list(&env, &[]), listed, "--dry-run added a snapshot");
    let src = &v["sources"][0];
    assert!(src["bytes_read"].as_u64().unwrap() > 300_000, "{v}");
    assert!(src["bytes_stored"].as_u64().unwrap() > 0, "{v}");
    assert!(src["files"].as_u64().unwrap() >= 8, "{v}");
    // Human form: no id on stdout (nothing was saved), report on stderr.
    let o = env.cmd().args(["snapshot", "--dry-run"]).output().unwrap();
    assert_code(&o, 0, "snapshot --dry-run");
    assert!(stdout(&o).trim().is_empty(), "stdout: {}", stdout(&o));
    assert!(stderr(&o).contains("dry run"), "{}", stderr(&o));
    assert_eq!(objects(&env), before);
}

#[test]
fn snapshot_prints_its_id() {
    let (env, _) = env_with_tree();
    let o = env.cmd().arg("snapshot").output().unwrap();
    assert_code(&o, 0, "snapshot");
    let id = stdout(&o).trim().to_string();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "{id:?}"
    );
    assert_eq!(ids(&list(&env, &[])), vec![id]);
}

#[test]
fn only_selects_sources_and_unknown_only_exits_2() {
    let mut env = Env::init(Backend::Fs);
    let d1 = env.path("d1");
    let d2 = env.path("d2");
    write(&d1.join("one"), b"1");
    write(&d2.join("two"), b"2");
    env.add_dir_source("alpha", &d1, &[]);
    env.add_dir_source("beta", &d2, &[]);
    let v = env.snapshot_json(&["--only", "beta"], 0);
    let names: Vec<&str> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta"]);
    let v = env.snapshot_json(&["--only", "beta", "--only", "alpha"], 0);
    assert_eq!(v["sources"].as_array().unwrap().len(), 2);

    let before = objects(&env);
    let o = env
        .cmd()
        .args(["snapshot", "--only", "gamma"])
        .output()
        .unwrap();
    assert_code(&o, 2, "--only an unknown source");
    assert!(stderr(&o).contains("gamma"), "{}", stderr(&o));
    assert_eq!(objects(&env), before, "unknown --only wrote something");
    let o = env
        .cmd()
        .args(["snapshot", "--only", "alpha", "--only", "gamma"])
        .output()
        .unwrap();
    assert_code(&o, 2, "--only with one unknown source");
    assert_eq!(objects(&env), before);
    // restore --only picks one source.
    let t = env.path("t");
    env.cmd()
        .args(["restore", "latest", "--only", "alpha", "--target"])
        .arg(&t)
        .assert()
        .success();
    assert!(t.join("alpha/one").exists());
    assert!(!t.join("beta").exists());
}

#[test]
fn tags_and_labels_are_recorded_and_shown() {
    let mut env = Env::init(Backend::Fs);
    env.extra = "[labels]\nenvironment = \"production\"\nteam = \"config\"\n".into();
    let d = env.path("d");
    write(&d.join("f"), b"f");
    env.add_dir_source("media", &d, &[]);
    let v = env.snapshot_json(
        &[
            "--tag",
            "pre-migration",
            "--tag",
            "manual",
            "--label",
            "version=1.2.3",
            "--label",
            "team=cli",
            "--label",
            "note=a=b",
        ],
        0,
    );
    let id = v["id"].as_str().unwrap().to_string();
    let want_tags = serde_json::json!(["pre-migration", "manual"]);
    let want_labels = serde_json::json!({
        "environment": "production",
        "team": "cli",
        "version": "1.2.3",
        "note": "a=b",
    });
    assert_eq!(v["tags"], want_tags, "snapshot --json tags");
    assert_eq!(v["labels"], want_labels, "snapshot --json labels");
    let l = list(&env, &[]);
    assert_eq!(l[0]["id"], id.as_str());
    assert_eq!(l[0]["tags"], want_tags, "snapshots --json tags");
    assert_eq!(l[0]["labels"], want_labels, "snapshots --json labels");
    let s = json_of(
        &env.cmd().args(["show", &id, "--json"]).output().unwrap(),
        "show --json",
    );
    assert_eq!(s["tags"], want_tags, "show --json tags");
    assert_eq!(s["labels"], want_labels, "show --json labels");
    // Human forms show them too.
    let o = env.cmd().args(["show", &id]).output().unwrap();
    assert_code(&o, 0, "show");
    for t in ["pre-migration", "version=1.2.3", "environment=production"] {
        assert!(stdout(&o).contains(t), "show lacks {t}: {}", stdout(&o));
    }
    let o = env.cmd().args(["snapshots"]).output().unwrap();
    assert!(stdout(&o).contains("pre-migration"), "{}", stdout(&o));
    // Without flags: the config's labels alone, no tags.
    let v = env.snapshot_json(&[], 0);
    assert_eq!(v["tags"], serde_json::json!([]));
    assert_eq!(
        v["labels"],
        serde_json::json!({"environment": "production", "team": "config"})
    );
}

#[test]
fn snapshots_filters_tag_source_latest() {
    let mut env = Env::init(Backend::Fs);
    let d1 = env.path("d1");
    let d2 = env.path("d2");
    write(&d1.join("one"), b"1");
    write(&d2.join("two"), b"2");
    env.add_dir_source("alpha", &d1, &[]);
    env.add_dir_source("beta", &d2, &[]);
    let s1 = snap(&env, &["--only", "alpha", "--tag", "t1"]);
    let s2 = snap(&env, &["--tag", "t2"]);
    let s3 = snap(&env, &["--only", "beta", "--tag", "t1"]);
    assert_eq!(
        ids(&list(&env, &[])),
        [s1.as_str(), s2.as_str(), s3.as_str()],
        "oldest first"
    );
    assert_eq!(
        ids(&list(&env, &["--tag", "t1"])),
        [s1.as_str(), s3.as_str()]
    );
    assert_eq!(ids(&list(&env, &["--tag", "t2"])), [s2.as_str()]);
    assert!(list(&env, &["--tag", "nope"]).is_empty());
    assert_eq!(
        ids(&list(&env, &["--source", "alpha"])),
        [s1.as_str(), s2.as_str()]
    );
    assert_eq!(
        ids(&list(&env, &["--source", "beta"])),
        [s2.as_str(), s3.as_str()]
    );
    assert!(list(&env, &["--source", "gamma"]).is_empty());
    assert_eq!(ids(&list(&env, &["--latest"])), [s3.as_str()]);
    assert_eq!(
        ids(&list(&env, &["--source", "alpha", "--latest"])),
        [s2.as_str()]
    );
    assert_eq!(
        ids(&list(&env, &["--tag", "t1", "--latest"])),
        [s3.as_str()]
    );
    assert_eq!(
        ids(&list(&env, &["--tag", "t1", "--source", "alpha"])),
        [s1.as_str()]
    );
    // `latest` with --tag for show / restore.
    let v = json_of(
        &env.cmd()
            .args(["show", "latest", "--tag", "t2", "--json"])
            .output()
            .unwrap(),
        "show latest --tag t2",
    );
    assert_eq!(v["id"], s2.as_str());
    // `sources` of the list are names.
    let l = list(&env, &[]);
    assert_eq!(l[1]["sources"], serde_json::json!(["alpha", "beta"]));
    assert_eq!(l[0]["sources"], serde_json::json!(["alpha"]));
}

#[test]
fn latest_picks_the_newest() {
    let (env, data) = env_with_tree();
    let mut made = Vec::new();
    for i in 0..3 {
        write(&data.join("version.txt"), format!("v{i}\n").as_bytes());
        made.push(snap(&env, &[]));
    }
    let v = json_of(
        &env.cmd()
            .args(["show", "latest", "--json"])
            .output()
            .unwrap(),
        "show latest",
    );
    assert_eq!(v["id"], made[2].as_str());
    let o = env
        .cmd()
        .args(["dump", "latest", "media", "version.txt"])
        .output()
        .unwrap();
    assert_code(&o, 0, "dump latest");
    assert_eq!(o.stdout, b"v2\n");
    let t = env.path("t");
    env.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&t)
        .assert()
        .success();
    assert_eq!(fs::read(t.join("media/version.txt")).unwrap(), b"v2\n");
    env.cmd().args(["verify", "latest"]).assert().success();
    // With no snapshot at all, `latest` is a clean error, not a crash.
    let empty = Env::init(Backend::Fs);
    let o = empty.cmd().args(["show", "latest"]).output().unwrap();
    assert_ne!(o.status.code(), Some(101), "{}", stderr(&o));
    assert!(stderr(&o).contains("no snapshot"), "{}", stderr(&o));
}

/// Issue 9: `latest` on an empty repository names a snapshot that does not
/// exist, exactly like an unknown id: exit 2 for every command, with a
/// message that says what to do.
#[test]
fn latest_on_an_empty_repository_is_an_unknown_snapshot() {
    let empty = Env::init(Backend::Fs);
    let t = empty.path("t");
    let t = t.to_str().unwrap();
    for args in [
        vec!["show", "latest"],
        vec!["verify", "latest"],
        vec!["verify"],
        vec!["restore", "latest", "--target", t],
        vec!["dump", "latest", "media", "x"],
        vec!["drill"],
        vec!["show", "0123456789abcdef"],
        vec!["restore", "0123456789abcdef", "--target", t],
    ] {
        let o = empty.cmd().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("no snapshot") && e.contains("coffer snapshots"),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn snapshot_prefix_unique_and_ambiguous() {
    let mut env = Env::init(Backend::Fs);
    let d = env.path("d");
    write(&d.join("f"), b"f");
    env.add_dir_source("media", &d, &[]);
    // Snapshot until two ids share a first character (at most 17 for hex).
    let mut made: Vec<String> = Vec::new();
    let shared = loop {
        let id = snap(&env, &[]);
        let c = id[..1].to_string();
        let clash = made.iter().any(|m| m.starts_with(&c));
        made.push(id);
        if clash {
            break c;
        }
        assert!(
            made.len() <= 40,
            "ids never share a first character: {made:?}"
        );
    };
    let o = env.cmd().args(["show", &shared]).output().unwrap();
    assert_code(&o, 2, "ambiguous prefix");
    let e = stderr(&o);
    assert!(e.contains("ambiguous"), "{e}");
    for m in made.iter().filter(|m| m.starts_with(&shared)) {
        assert!(e.contains(m.as_str()), "lists the candidates: {e}");
    }
    let o = env
        .cmd()
        .args(["restore", &shared, "--target"])
        .arg(env.path("t"))
        .output()
        .unwrap();
    assert_code(&o, 2, "restore with an ambiguous prefix");
    assert!(!env.path("t").exists());

    // Every id is reachable by its shortest unique prefix.
    for id in &made {
        let n = (1..=id.len())
            .find(|&n| made.iter().filter(|m| m.starts_with(&id[..n])).count() == 1)
            .unwrap();
        let v = json_of(
            &env.cmd()
                .args(["show", &id[..n], "--json"])
                .output()
                .unwrap(),
            &format!("show {}", &id[..n]),
        );
        assert_eq!(v["id"], id.as_str());
    }
}

#[test]
fn show_latest_files_lists_every_file_with_metadata() {
    let (env, data) = env_with_tree();
    snap(&env, &[]);
    let v = json_of(
        &env.cmd()
            .args(["show", "latest", "--files", "--json"])
            .output()
            .unwrap(),
        "show latest --files --json",
    );
    let files = v["sources"][0]["files"]
        .as_array()
        .unwrap_or_else(|| panic!("sources[0].files is a list with --files: {v}"))
        .clone();
    let mut seen = BTreeSet::new();
    for f in &files {
        let p = f["path"].as_str().expect("path").trim_start_matches("./");
        seen.insert(p.to_string());
        let abs = data.join(p);
        let m = fs::symlink_metadata(&abs).unwrap();
        // Second names of hard links: see show_files_lists_hard_links_as_files.
        if !m.file_type().is_file() || f["type"] == "hardlink" {
            continue;
        }
        let mode = &f["mode"];
        let mode_ok = mode.as_u64() == Some((m.mode() & 0o7777) as u64)
            || mode
                .as_str()
                .and_then(|s| u32::from_str_radix(s.trim_start_matches("0o"), 8).ok())
                == Some(m.mode() & 0o7777);
        assert!(mode_ok, "{p}: mode {mode} vs {:o}", m.mode() & 0o7777);
        assert_eq!(f["size"].as_u64(), Some(m.len()), "{p}: size");
        assert_eq!(
            f["sha256"].as_str(),
            Some(sha(&fs::read(&abs).unwrap()).as_str()),
            "{p}: sha256"
        );
        assert!(!f["mtime"].is_null(), "{p}: mtime");
    }
    let want: BTreeSet<String> = describe_tree(&data)
        .into_iter()
        .filter(|(_, d)| d.starts_with("file"))
        .map(|(k, _)| k)
        .collect();
    assert!(
        want.is_subset(&seen),
        "missing: {:?}",
        want.difference(&seen).collect::<Vec<_>>()
    );
    // Human form lists them too.
    let o = env
        .cmd()
        .args(["show", "latest", "--files"])
        .output()
        .unwrap();
    assert_code(&o, 0, "show latest --files");
    assert!(stdout(&o).contains("a/b/c/deep.txt"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&sha(b"deep\n")),
        "sha256 shown: {}",
        stdout(&o)
    );
}

/// Contract: `show --files` lists "every file with size, mode, mtime and
/// SHA-256"; a file with two names is a file under both.
#[test]
fn show_files_lists_hard_links_as_files() {
    let (env, data) = env_with_tree();
    snap(&env, &[]);
    let v = json_of(
        &env.cmd()
            .args(["show", "latest", "--files", "--json"])
            .output()
            .unwrap(),
        "show latest --files --json",
    );
    let files = v["sources"][0]["files"].as_array().unwrap();
    for name in ["a/b/c/deep.txt", "hardlink.txt"] {
        let f = files
            .iter()
            .find(|f| f["path"].as_str().unwrap().trim_start_matches("./") == name)
            .unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(f["size"].as_u64(), Some(5), "{name}: size: {f}");
        assert_eq!(
            f["sha256"].as_str(),
            Some(sha(&fs::read(data.join(name)).unwrap()).as_str()),
            "{name}: sha256: {f}"
        );
    }
}

/// `dump SNAPSHOT SOURCE PATH` of a file's second hard-linked name prints its
/// bytes like the first name does.
#[test]
fn dump_second_name_of_a_hard_link() {
    let (env, _) = env_with_tree();
    let id = snap(&env, &[]);
    for name in ["a/b/c/deep.txt", "hardlink.txt"] {
        let o = env
            .cmd()
            .args(["dump", &id, "media", name])
            .output()
            .unwrap();
        assert_code(&o, 0, &format!("dump {name}"));
        assert_eq!(o.stdout, b"deep\n", "dump {name}");
    }
}

/// Contract: "Times are RFC 3339 in UTC" — file mtimes in `show --files
/// --json` too.
#[test]
fn show_files_json_mtime_is_rfc3339() {
    let (env, data) = env_with_tree();
    snap(&env, &[]);
    let v = json_of(
        &env.cmd()
            .args(["show", "latest", "--files", "--json"])
            .output()
            .unwrap(),
        "show latest --files --json",
    );
    let files = v["sources"][0]["files"].as_array().unwrap();
    let orders = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("exports/orders.csv"))
        .expect("orders.csv listed");
    assert_rfc3339_utc(&orders["mtime"], "exports/orders.csv mtime");
    let t = chrono::DateTime::parse_from_rfc3339(orders["mtime"].as_str().unwrap()).unwrap();
    assert_eq!(
        t.timestamp(),
        fs::metadata(data.join("exports/orders.csv"))
            .unwrap()
            .mtime()
    );
}

#[test]
fn json_documents_have_every_contract_key() {
    let mut env = Env::init(Backend::Fs);
    let d = env.path("d");
    write(&d.join("f"), b"hello");
    let f = env.path("etc/x.conf");
    write(&f, b"x");
    env.add_dir_source("media", &d, &[]);
    env.add_files_source("env", &[&f]);
    let v = env.snapshot_json(&["--tag", "t"], 0);
    for k in ["id", "time", "host", "tags", "labels", "status", "sources"] {
        assert!(v.get(k).is_some(), "snapshot --json lacks {k}: {v}");
    }
    assert!(v["id"].is_string() && v["host"].is_string());
    assert!(v["tags"].is_array() && v["labels"].is_object());
    assert_eq!(v["status"], "ok");
    assert_rfc3339_utc(&v["time"], "snapshot time");
    let srcs = v["sources"].as_array().unwrap();
    assert_eq!(srcs.len(), 2);
    for s in srcs {
        for k in [
            "name",
            "type",
            "status",
            "files",
            "bytes_read",
            "bytes_stored",
            "duration_ms",
            "error",
        ] {
            assert!(s.get(k).is_some(), "snapshot --json source lacks {k}: {s}");
        }
        assert_eq!(s["status"], "ok");
        assert!(s["error"].is_null(), "{s}");
        for k in ["files", "bytes_read", "bytes_stored", "duration_ms"] {
            assert!(s[k].is_u64(), "{k} is a number: {s}");
        }
    }
    assert_eq!(srcs[0]["name"], "media");
    assert_eq!(srcs[0]["type"], "directory");
    assert_eq!(srcs[0]["files"], 1);
    assert_eq!(srcs[0]["bytes_read"], 5);
    assert_eq!(srcs[1]["type"], "files");

    let l = list(&env, &[]);
    assert_eq!(l.len(), 1);
    for k in [
        "id",
        "time",
        "host",
        "tags",
        "labels",
        "sources",
        "bytes_stored",
    ] {
        assert!(
            l[0].get(k).is_some(),
            "snapshots --json lacks {k}: {}",
            l[0]
        );
    }
    assert_eq!(l[0]["id"], v["id"]);
    assert_eq!(l[0]["time"], v["time"]);
    assert_eq!(l[0]["host"], v["host"]);
    assert_rfc3339_utc(&l[0]["time"], "snapshots time");
    assert_eq!(l[0]["sources"], serde_json::json!(["media", "env"]));
    let stored: u64 = srcs
        .iter()
        .map(|s| s["bytes_stored"].as_u64().unwrap())
        .sum();
    assert_eq!(l[0]["bytes_stored"].as_u64(), Some(stored));

    let s = json_of(
        &env.cmd()
            .args(["show", v["id"].as_str().unwrap(), "--json"])
            .output()
            .unwrap(),
        "show --json",
    );
    for k in [
        "id",
        "time",
        "host",
        "tags",
        "labels",
        "status",
        "sources",
        "tool_version",
    ] {
        assert!(s.get(k).is_some(), "show --json lacks {k}: {s}");
    }
    assert_eq!(s["tool_version"], env!("CARGO_PKG_VERSION"));
    assert_rfc3339_utc(&s["time"], "show time");
    for src in s["sources"].as_array().unwrap() {
        for k in [
            "name",
            "type",
            "status",
            "files",
            "bytes_read",
            "bytes_stored",
        ] {
            assert!(src.get(k).is_some(), "show --json source lacks {k}: {src}");
        }
    }
    // The human `snapshots` shows UTC times.
    let o = env.cmd().arg("snapshots").output().unwrap();
    assert_code(&o, 0, "snapshots");
    assert!(stdout(&o).contains("UTC"), "{}", stdout(&o));
    // verify --json: {"ok": bool, ...}
    let vj = json_of(
        &env.cmd()
            .args(["verify", "--all", "--json"])
            .output()
            .unwrap(),
        "verify --json",
    );
    assert_eq!(vj["ok"], true, "{vj}");
}

#[test]
fn json_errors_keep_stdout_a_single_document() {
    let (env, _) = env_with_tree();
    let o = env
        .cmd()
        .args(["show", "nonexistent", "--json"])
        .output()
        .unwrap();
    assert_code(&o, 2, "show unknown --json");
    let out = stdout(&o);
    if !out.trim().is_empty() {
        let v: serde_json::Value =
            serde_json::from_str(&out).expect("stdout under --json is one JSON document");
        assert_eq!(v["ok"], false);
    }
    assert!(!stderr(&o).is_empty(), "the error is on stderr");
}

// ------------------------------------------------------------------ progress

/// Runs `coffer ARGS` with a pseudo-terminal as stdin/stdout/stderr (util-linux
/// `script`), returning everything the terminal received.
fn on_a_terminal(env: &Env, args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_coffer");
    let line = format!("{bin} --config {} {args}", env.config.display());
    let typescript = env.path("typescript");
    let o = Command::new("script")
        .args(["-qec", &line])
        .arg(&typescript)
        .current_dir(env.dir.path())
        .output()
        .expect("util-linux `script` runs (it is part of every Debian system)");
    assert_code(&o, 0, &format!("coffer {args} on a terminal"));
    String::from_utf8_lossy(&fs::read(&typescript).unwrap()).into_owned()
}

#[test]
fn progress_is_drawn_on_a_terminal_and_never_otherwise() {
    let (env, _data) = env_with_tree();
    let tty = on_a_terminal(&env, "snapshot");
    assert!(
        tty.contains("snapshot") && tty.contains("/s)"),
        "a terminal shows a progress bar with a rate:\n{tty}"
    );
    let quiet = on_a_terminal(&env, "--no-progress snapshot");
    assert!(
        !quiet.contains("/s)"),
        "--no-progress draws nothing:\n{quiet}"
    );

    let o = env.cmd().arg("snapshot").output().unwrap();
    assert_code(&o, 0, "snapshot to pipes");
    assert!(
        !stderr(&o).contains("/s)") && !stderr(&o).contains('\r'),
        "no bar when stderr is not a terminal:\n{}",
        stderr(&o)
    );
    let o = env.cmd().args(["verify", "--deep"]).output().unwrap();
    assert_code(&o, 0, "verify to pipes");
    assert!(!stderr(&o).contains("/s)"), "{}", stderr(&o));
}

/// Issue 9: a reader that closes the pipe early (`pg_restore -l`, `head`)
/// is the reader's choice: `coffer dump` exits 0 with nothing on stderr,
/// for the whole tar stream, for one file, and for a dump source.
#[test]
fn dump_into_a_reader_that_stops_early_exits_quietly() {
    let mut env = Env::init(Backend::Fs);
    let d = env.path("media");
    fs::create_dir_all(&d).unwrap();
    // Far larger than a pipe's buffer, so the reader's close is seen.
    write(&d.join("big.bin"), &pseudo_random(6 << 20, 9));
    env.add_dir_source("media", &d, &[]);
    env.sources.push_str(
        "[[sources]]\nname = \"out\"\ntype = \"command\"\ndump = [\"head\", \"-c\", \"9000000\", \"/dev/zero\"]\n\n",
    );
    env.write_config();
    env.snapshot_ok();
    for args in [
        "dump latest media",
        "dump latest media big.bin",
        "dump latest out",
    ] {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{:?} --config {:?} {args} | head -c 100 >/dev/null; exit \"${{PIPESTATUS[0]}}\"",
                assert_cmd::cargo::cargo_bin("coffer"),
                env.config
            ))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args}");
    }
}

/// Runs `coffer ARGS` under umask 022, as a login shell would.
fn under_umask_022(env: &Env, args: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "umask 022; exec {:?} --config {:?} {args}",
            assert_cmd::cargo::cargo_bin("coffer"),
            env.config
        ))
        .env_remove("COFFER_PASSPHRASE")
        .output()
        .unwrap()
}

/// Every directory below `root` (itself included) has mode `dirs`, every
/// file `files`.
fn assert_modes(root: &Path, dirs: u32, files: u32) {
    let mut n = 0;
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        let mode = e.metadata().unwrap().mode() & 0o7777;
        let want = if e.file_type().is_dir() { dirs } else { files };
        assert_eq!(mode, want, "{}: {mode:04o}", e.path().display());
        n += 1;
    }
    assert!(n > 3, "nothing under {}", root.display());
}

/// Issue 10: a filesystem repository is private whatever the umask: 0700
/// directories and 0600 objects (key slots and config included), also when
/// the directory existed before `init`; a local `copy` destination the same;
/// a repository others can read is warned about on every command.
#[test]
fn filesystem_repositories_and_copies_are_private_under_any_umask() {
    let mut env = Env::new(Backend::Fs);
    let repo = Path::new(&env.url).to_path_buf();
    fs::create_dir_all(&repo).unwrap();
    fs::set_permissions(&repo, fs::Permissions::from_mode(0o755)).unwrap();
    let o = under_umask_022(&env, "init");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let d = env.path("media");
    sample_tree(&d, None);
    env.add_dir_source("media", &d, &[]);
    let o = under_umask_022(&env, "snapshot");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("other local users"), "{}", stderr(&o));
    assert_modes(&repo, 0o700, 0o600);

    let dst = env.path("copy-dst");
    let o = under_umask_022(&env, &format!("copy {repo:?} {dst:?}"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_modes(&dst, 0o700, 0o600);

    fs::set_permissions(&repo, fs::Permissions::from_mode(0o755)).unwrap();
    let o = under_umask_022(&env, "snapshots");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("can be read by other local users (mode 0755)")
            && stderr(&o).contains("chmod -R go-rwx"),
        "{}",
        stderr(&o)
    );
}
