//! `coffer copy` (issue 4) against the real servers: filesystem -> S3 (moto)
//! -> GCS (fake-gcs-server behind the XML adapter) -> filesystem, Azure
//! (Azurite), reruns, `--check`, `--delete` / `--max-delete`, `--dry-run`, an
//! S3 server killed mid-copy (a private moto), a killed copy resumed, a
//! repository copied and restored from GCS, and bad inputs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use sha2::Digest;

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the suite with `bash scripts/test.sh` (needs the test servers)"
        )
    })
}

/// `--src-opt` / `--dst-opt` arguments for a backend's options.
fn opt_args(flag: &str, opts: &BTreeMap<String, String>) -> Vec<String> {
    opts.iter()
        .flat_map(|(k, v)| [flag.to_string(), format!("{k}={v}")])
        .collect()
}

/// A location on a backend: URL and options.
fn place(b: Backend, dir: &Path, tag: &str) -> (String, BTreeMap<String, String>) {
    let (url, opts) = repo_location(b, dir, tag);
    if b == Backend::Fs {
        return (dir.join(tag).display().to_string(), opts);
    }
    (url, opts)
}

type Loc = (String, BTreeMap<String, String>);

fn copy(src: &Loc, dst: &Loc, extra: &[&str]) -> Output {
    coffer_cmd()
        .arg("copy")
        .arg(&src.0)
        .arg(&dst.0)
        .args(opt_args("--src-opt", &src.1))
        .args(opt_args("--dst-opt", &dst.1))
        .args(extra)
        .output()
        .expect("run coffer")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_json(src: &Loc, dst: &Loc, extra: &[&str], code: i32) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let o = copy(src, dst, &args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "copy {} -> {} {extra:?}: stderr:\n{}\nstdout:\n{}",
        src.0,
        dst.0,
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).expect("copy --json prints JSON")
}

fn copied(v: &serde_json::Value) -> u64 {
    v["copied"]["objects"].as_u64().expect("copied.objects")
}

/// Relative path -> SHA-256 of every regular file (coffer's partial files
/// excluded: they are not objects).
fn contents(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.expect("walk");
        if !e.file_type().is_file() || e.file_name().to_string_lossy().contains(".coffer-partial-")
        {
            continue;
        }
        let mut f = fs::File::open(e.path()).expect("open");
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).expect("read");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        out.insert(rel, hex::encode(h.finalize()));
    }
    out
}

/// Writes `len` pseudo-random bytes to `path`, 1 MiB at a time.
fn big_file(path: &Path, len: usize, seed: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create"));
    let mut left = len;
    let mut i = 0;
    while left > 0 {
        let n = left.min(1 << 20);
        f.write_all(&pseudo_random(n, seed + i)).expect("write");
        left -= n;
        i += 1;
    }
    f.flush().unwrap();
}

/// About 500 objects: nested keys, empty objects, a few > 8 MiB (multipart)
/// and, with `huge`, one of 100 MiB.
fn corpus(root: &Path, huge: bool) -> usize {
    let mut n = 0;
    for i in 0..480 {
        let size = (i * 37) % 5000;
        write(
            &root.join(format!("d{}/sub{}/f{i:04}.bin", i % 7, i % 3)),
            &pseudo_random(size, i as u64),
        );
        n += 1;
    }
    for i in 0..10 {
        write(&root.join(format!("empty/e{i}")), b"");
        n += 1;
    }
    // Keys whose byte order differs from a per-directory walk's.
    write(&root.join("a-b"), b"dash");
    write(&root.join("a/b"), b"slash");
    write(&root.join("a.b"), b"dot");
    n += 3;
    big_file(&root.join("big/nine.bin"), 9 << 20, 99);
    big_file(&root.join("big/seventeen.bin"), (17 << 20) + 5, 17);
    n += 2;
    if huge {
        big_file(&root.join("big/hundred.bin"), 100 << 20, 100);
        n += 1;
    }
    n
}

#[test]
fn fs_to_s3_to_gcs_to_fs_then_rerun_check_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let n = corpus(&src_root, true) as u64;
    let fs_src: Loc = (src_root.display().to_string(), BTreeMap::new());
    let s3 = place(Backend::S3, dir.path(), "copy-chain");
    let gcs = place(Backend::Gcs, dir.path(), "copy-chain");
    let fs_dst = place(Backend::Fs, dir.path(), "back");

    for (a, b) in [(&fs_src, &s3), (&s3, &gcs), (&gcs, &fs_dst)] {
        let v = copy_json(a, b, &[], 0);
        assert_eq!(copied(&v), n, "{} -> {}: {v}", a.0, b.0);
        assert_eq!(v["ok"], true);
        assert_eq!(v["failed"].as_array().unwrap().len(), 0);
    }
    assert_eq!(contents(&src_root), contents(Path::new(&fs_dst.0)));
    assert_eq!(contents(&src_root).len() as u64, n);

    // Reruns copy nothing; --check passes on every hop.
    for (a, b) in [(&fs_src, &s3), (&s3, &gcs), (&gcs, &fs_dst)] {
        let v = copy_json(a, b, &[], 0);
        assert_eq!(copied(&v), 0, "rerun {} -> {} copied: {v}", a.0, b.0);
        assert_eq!(v["skipped"]["objects"].as_u64(), Some(n));
        let v = copy_json(a, b, &["--check"], 0);
        assert_eq!(v["differences_count"], 0, "{v}");
        let v = copy_json(a, b, &["--check", "--checksum"], 0);
        assert_eq!(v["differences_count"], 0, "{v}");
    }

    // One byte changed at DST, size and mtime kept: --checksum finds it.
    let victim = Path::new(&fs_dst.0).join("d3/sub0/f0003.bin");
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&victim).unwrap());
    let mut data = fs::read(&victim).unwrap();
    data[10] ^= 1;
    fs::write(&victim, &data).unwrap();
    filetime::set_file_mtime(&victim, mtime).unwrap();
    let v = copy_json(&gcs, &fs_dst, &["--check", "--checksum"], 1);
    assert_eq!(v["differences_count"], 1, "{v}");
    assert_eq!(v["differences"][0]["key"], "d3/sub0/f0003.bin");
    // Touched (the usual case): the plain --check finds it too.
    fs::write(&victim, &data).unwrap();
    let o = copy(&gcs, &fs_dst, &["--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("d3/sub0/f0003.bin"),
        "check lists the key: {out}"
    );
    // A copy repairs it, and only it.
    let v = copy_json(&gcs, &fs_dst, &[], 0);
    assert_eq!(copied(&v), 1, "{v}");
    assert_eq!(contents(&src_root), contents(Path::new(&fs_dst.0)));

    // A changed object in the cloud hop (same size) is found by its stored
    // SHA-256 and recopied.
    let key = "d1/sub1/f0001.bin";
    let mut body = fs::read(src_root.join(key)).unwrap();
    body[0] ^= 0xff;
    fs::write(src_root.join(key), &body).unwrap();
    let v = copy_json(&fs_src, &s3, &[], 0);
    assert_eq!(copied(&v), 1, "{v}");
    let v = copy_json(&s3, &gcs, &[], 0);
    assert_eq!(copied(&v), 1, "{v}");
}

#[test]
fn delete_max_delete_and_dry_run() {
    for b in [Backend::Fs, Backend::S3] {
        let dir = tempfile::tempdir().unwrap();
        let src_root = dir.path().join("src");
        for i in 0..20 {
            write(
                &src_root.join(format!("k/{i:02}")),
                &pseudo_random(100 + i, i as u64),
            );
        }
        let src: Loc = (src_root.display().to_string(), BTreeMap::new());
        let dst = place(b, dir.path(), "del");

        // A dry run writes nothing and says what it would do.
        let o = copy(&src, &dst, &["--dry-run"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("would copy k/07"), "{out}");
        let v = copy_json(&src, &dst, &["--check"], 1);
        assert_eq!(v["differences_count"], 20, "dry run wrote something: {v}");

        assert_eq!(copied(&copy_json(&src, &dst, &[], 0)), 20);
        // Three objects go away at SRC.
        for i in [3, 4, 5] {
            fs::remove_file(src_root.join(format!("k/{i:02}"))).unwrap();
        }
        let v = copy_json(&src, &dst, &["--check"], 1);
        assert_eq!(v["differences_count"], 3, "{v}");
        // Without --delete they stay.
        let v = copy_json(&src, &dst, &[], 0);
        assert_eq!(v["deleted"]["objects"], 0);
        // --max-delete below the count: refused, nothing deleted, exit 1.
        let o = copy(&src, &dst, &["--delete", "--max-delete", "2"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("--max-delete 2"), "{}", stderr(&o));
        assert_eq!(
            copy_json(&src, &dst, &["--check"], 1)["differences_count"],
            3
        );
        // --dry-run --delete lists them, deletes nothing.
        let o = copy(&src, &dst, &["--delete", "--dry-run"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("would delete k/04"));
        assert_eq!(
            copy_json(&src, &dst, &["--check"], 1)["differences_count"],
            3
        );
        // --delete within the limit.
        let v = copy_json(&src, &dst, &["--delete", "--max-delete", "3"], 0);
        assert_eq!(v["deleted"]["objects"], 3, "{v}");
        assert_eq!(
            copy_json(&src, &dst, &["--check"], 0)["differences_count"],
            0
        );

        // Filters: only what they select is compared and copied.
        write(&src_root.join("k/new.jpg"), b"jpg");
        write(&src_root.join("k/new.tmp"), b"tmp");
        let v = copy_json(&src, &dst, &["--include", "*.jpg"], 0);
        assert_eq!(copied(&v), 1, "{v}");
        let v = copy_json(&src, &dst, &["--exclude", "*.tmp"], 0);
        assert_eq!(copied(&v), 0, "{v}");
        assert_eq!(copied(&copy_json(&src, &dst, &[], 0)), 1);
    }
}

/// --delete never runs when a copy failed.
#[test]
fn delete_skipped_when_a_copy_fails() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    write(&src_root.join("ok"), b"fine");
    write(&src_root.join("locked/secret"), b"no access");
    let src: Loc = (src_root.display().to_string(), BTreeMap::new());
    let dst = place(Backend::Fs, dir.path(), "dst");
    write(&Path::new(&dst.0).join("stale"), b"old");
    // The destination directory of one key is a file: that copy fails.
    write(&Path::new(&dst.0).join("locked"), b"in the way");
    let v = copy_json(&src, &dst, &["--delete"], 1);
    assert_eq!(v["failed_count"], 1, "{v}");
    assert_eq!(v["failed"][0]["key"], "locked/secret");
    assert!(!v["failed"][0]["error"].as_str().unwrap().is_empty());
    assert_eq!(v["deleted"]["objects"], 0);
    assert!(
        Path::new(&dst.0).join("stale").exists(),
        "deleted despite a failure"
    );
    assert!(v["delete_skipped"].as_str().unwrap().contains("failed"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server of this test's own, so it can be killed.
struct PrivateMoto {
    child: Child,
    port: u16,
}

impl PrivateMoto {
    fn start(port: u16) -> PrivateMoto {
        let bin = std::env::var("COFFER_TEST_VENV")
            .map(|v| format!("{v}/bin/moto_server"))
            .unwrap_or_else(|_| {
                format!("{}/.cache/coffer-test-venv/bin/moto_server", need("HOME"))
            });
        assert!(Path::new(&bin).exists(), "moto_server not found at {bin}");
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let ok = std::process::Command::new("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                &format!("http://127.0.0.1:{port}/private"),
            ])
            .status()
            .expect("curl");
        assert!(ok.success(), "create bucket on private moto");
        PrivateMoto { child, port }
    }

    fn loc(&self, prefix: &str) -> Loc {
        let mut o = BTreeMap::new();
        o.insert(
            "aws_endpoint".into(),
            format!("http://127.0.0.1:{}", self.port),
        );
        o.insert("aws_allow_http".into(), "true".into());
        o.insert("aws_region".into(), "us-east-1".into());
        o.insert("aws_access_key_id".into(), "k".into());
        o.insert("aws_secret_access_key".into(), "s".into());
        (format!("s3://private/{prefix}"), o)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_copy(src: &Loc, dst: &Loc) -> Child {
    let mut c = spawn_coffer();
    c.arg("copy")
        .arg(&src.0)
        .arg(&dst.0)
        .args(opt_args("--src-opt", &src.1))
        .args(opt_args("--dst-opt", &dst.1))
        .args(["--json", "--concurrency", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coffer copy")
}

#[test]
fn s3_server_killed_mid_copy_then_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    for i in 0..16 {
        big_file(&src_root.join(format!("part{i:02}.bin")), 12 << 20, i);
    }
    for i in 0..50 {
        write(
            &src_root.join(format!("small/{i}")),
            &pseudo_random(3000, i),
        );
    }
    let src: Loc = (src_root.display().to_string(), BTreeMap::new());
    let port = free_port();
    let mut moto = PrivateMoto::start(port);
    // Through a (fault-free) proxy, which shows when the first part of the
    // first big object has gone out: the server dies mid-copy then (a wait
    // of a fixed time lost the race on an idle machine).
    let proxy = crate::common::faultproxy::FaultProxy::start(&format!("127.0.0.1:{port}"));
    let mut dst = moto.loc("killed");
    dst.1.insert("aws_endpoint".into(), proxy.endpoint());
    let mut child = spawn_copy(&src, &dst);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy.count("PUT", "partNumber=") == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before its first part upload"
        );
        assert!(std::time::Instant::now() < deadline, "no part upload seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    moto.kill();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a copy whose server died must fail: {}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["failed_count"].as_u64().unwrap() > 0, "{v}");
    assert!(
        stderr(&out).contains("error: "),
        "failures are named: {}",
        stderr(&out)
    );

    // moto keeps nothing across a restart: the rerun copies everything again
    // and must end complete and verified.
    let moto = PrivateMoto::start(port);
    let v = copy_json(&src, &dst, &[], 0);
    assert_eq!(copied(&v), 66, "{v}");
    assert_eq!(
        copy_json(&src, &dst, &["--check", "--checksum"], 0)["differences_count"],
        0
    );
    let back = place(Backend::Fs, dir.path(), "back");
    copy_json(&dst, &back, &[], 0);
    assert_eq!(contents(&src_root), contents(Path::new(&back.0)));
    drop(moto);
}

#[test]
fn killed_copy_is_resumed_by_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    for i in 0..40 {
        big_file(&src_root.join(format!("o{i:02}.bin")), 3 << 20, i);
    }
    let fs_src: Loc = (src_root.display().to_string(), BTreeMap::new());
    let s3 = place(Backend::S3, dir.path(), "resume");
    copy_json(&fs_src, &s3, &[], 0);
    let dst = place(Backend::Fs, dir.path(), "dst");
    let mut child = spawn_copy(&s3, &dst);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = fs::read_dir(&dst.0).map(|d| d.count()).unwrap_or(0);
        if done >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "copy made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let present = contents(Path::new(&dst.0)).len() as u64;
    let v = copy_json(&s3, &dst, &[], 0);
    assert!(
        present > 0 && present < 40,
        "killed too late to test: {present}"
    );
    assert_eq!(
        copied(&v),
        40 - present,
        "the rerun copies only what is left: {v}"
    );
    assert_eq!(contents(&src_root), contents(Path::new(&dst.0)));
}

#[test]
fn azure_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    corpus(&src_root, false);
    let src: Loc = (src_root.display().to_string(), BTreeMap::new());
    let az = place(Backend::Azure, dir.path(), "copy-az");
    let back = place(Backend::Fs, dir.path(), "back");
    let n = copied(&copy_json(&src, &az, &[], 0));
    assert!(n > 490);
    assert_eq!(copied(&copy_json(&src, &az, &[], 0)), 0);
    assert_eq!(copied(&copy_json(&az, &back, &[], 0)), n);
    assert_eq!(contents(&src_root), contents(Path::new(&back.0)));
    assert_eq!(
        copy_json(&src, &az, &["--check", "--checksum"], 0)["differences_count"],
        0
    );
}

#[test]
fn repository_copied_to_gcs_is_a_working_repository() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    sample_tree(&data, Some(3 << 20));
    env.add_dir_source("media", &data, &[]);
    let id = env.snapshot_ok();
    let repo: Loc = (env.url.clone(), BTreeMap::new());
    let s3 = place(Backend::S3, env.dir.path(), "repo-copy");
    let gcs = place(Backend::Gcs, env.dir.path(), "repo-copy");
    copy_json(&repo, &s3, &[], 0);
    copy_json(&s3, &gcs, &[], 0);
    assert_eq!(
        copy_json(&repo, &gcs, &["--check", "--checksum"], 0)["differences_count"],
        0
    );

    // The same key, the repository now read from GCS.
    env.url = gcs.0.clone();
    env.options = gcs.1.clone();
    env.write_config();
    let o = env.cmd().args(["snapshots", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    let o = env.cmd().args(["verify", "--deep"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let target = env.path("restored");
    let o = env
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_same_tree(&data, &target.join("media"));
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    write(&src_root.join("x"), b"x");
    let src = src_root.display().to_string();
    let dst = dir.path().join("dst").display().to_string();
    let inner = src_root.join("inner").display().to_string();
    let run = |args: &[&str]| coffer_cmd().arg("copy").args(args).output().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["ftp://host/x", &dst], 2, "unknown scheme ftp://"),
        (vec!["relative/path", &dst], 2, "bad storage URL"),
        (vec![&src, "s3://"], 2, "names no bucket"),
        (
            vec![&src, "s3://b/p", "--dst-opt", "aws_no_such_key=1"],
            2,
            "aws_no_such_key",
        ),
        (
            vec![&src, "s3://b/p", "--dst-opt", "novalue"],
            2,
            "KEY=VALUE",
        ),
        (
            vec![&src, &dst, "--src-opt", "aws_region=x"],
            2,
            "unknown storage option",
        ),
        (
            vec!["/nonexistent/coffer-src", &dst],
            1,
            "/nonexistent/coffer-src does not exist",
        ),
        (
            vec![&src, &dst, "--include", "a[b"],
            2,
            "bad --include glob",
        ),
        (vec![&src, &dst, "--concurrency", "0"], 2, "--concurrency"),
        (vec![&src, &inner], 2, "overlap"),
        (vec![&src, &dst, "--max-delete", "3"], 2, "--delete"),
    ];
    for (args, code, text) in cases {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(text),
            "{args:?}: want {text:?} in:\n{}",
            stderr(&o)
        );
    }
    // A missing bucket is an operational failure naming the bucket.
    let (_, opts) = repo_location(Backend::S3, dir.path(), "x");
    let mut args = vec![src.clone(), "s3://no-such-bucket-coffer/p".to_string()];
    args.extend(opt_args("--dst-opt", &opts));
    let o = coffer_cmd().arg("copy").args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no-such-bucket-coffer"),
        "{}",
        stderr(&o)
    );
    let mut args = vec!["s3://no-such-bucket-coffer/p".to_string(), dst.clone()];
    args.extend(opt_args("--src-opt", &opts));
    let o = coffer_cmd().arg("copy").args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no-such-bucket-coffer"),
        "{}",
        stderr(&o)
    );
}

/// Issue 10 item 8: store options that are secrets need not sit in argv:
/// `KEY=@FILE` reads a file (its final newline dropped), `KEY=env:VAR` a
/// variable; a file or variable that is not there is exit 2 naming it.
#[test]
fn store_options_from_files_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    write(&src_root.join("a/x.bin"), &pseudo_random(3000, 4));
    let (dst, opts) = repo_location(Backend::S3, dir.path(), "opt-from");
    let secret = dir.path().join("aws-secret");
    std::fs::write(&secret, format!("{}\n", opts["aws_secret_access_key"])).unwrap();
    let allow = dir.path().join("allow-http");
    std::fs::write(&allow, "true\r\n").unwrap();
    let run = |extra: &[String]| {
        coffer_cmd()
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("T_OPT_ENDPOINT", &opts["aws_endpoint"])
            .env("T_OPT_KEY_ID", &opts["aws_access_key_id"])
            .arg("copy")
            .arg(&src_root)
            .arg(&dst)
            .args(extra)
            .output()
            .unwrap()
    };
    let opts_args: Vec<String> = [
        "aws_endpoint=env:T_OPT_ENDPOINT".to_string(),
        format!("aws_allow_http=@{}", allow.display()),
        "aws_region=us-east-1".into(),
        "aws_access_key_id=env:T_OPT_KEY_ID".into(),
        format!("aws_secret_access_key=@{}", secret.display()),
    ]
    .into_iter()
    .flat_map(|kv| ["--dst-opt".to_string(), kv])
    .collect();
    let o = run(&opts_args);
    assert_eq!(o.status.code(), Some(0), "copy: {}", stderr(&o));
    assert!(stderr(&o).contains("copied 1 object(s)"), "{}", stderr(&o));
    let mut check = opts_args.clone();
    check.push("--check".into());
    let o = run(&check);
    assert_eq!(
        o.status.code(),
        Some(0),
        "check after the copy: {}",
        stderr(&o)
    );

    let missing = dir.path().join("no-such-secret");
    let o = run(&[
        "--dst-opt".into(),
        format!("aws_secret_access_key=@{}", missing.display()),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "--dst-opt aws_secret_access_key=@{0}: cannot read {0}",
            missing.display()
        )),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "--src-opt".into(),
        "aws_access_key_id=env:T_OPT_UNSET_VAR".into(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "--src-opt aws_access_key_id=env:T_OPT_UNSET_VAR: T_OPT_UNSET_VAR is not set"
        ),
        "{}",
        stderr(&o)
    );
}

/// Both local listings longer than their channels, with copies to do while
/// both walks wait on the merge: the walks must not take the threads that
/// the copies need (the blocking pool is small for copy). A hang here is a
/// deadlock, so the run is bounded.
#[test]
fn long_local_listings_on_both_sides_with_work_to_do_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    for i in 0..3000 {
        let d = src.join(format!("d{:02}", i % 30));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i:05}")), format!("object {i}")).unwrap();
    }
    let run = |args: &[&str]| {
        let mut c = coffer_cmd();
        c.arg("copy")
            .arg(&src)
            .arg(&dst)
            .args(args)
            .timeout(Duration::from_secs(600));
        c.output().unwrap()
    };
    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Remove every other file at DST: the rerun lists 3000 + 1500 entries
    // and copies 1500.
    let mut n = 0;
    for e in walkdir::WalkDir::new(&dst).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            n += 1;
            if n % 2 == 0 {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }
    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["copied"]["objects"], 1500, "{doc}");
    assert_eq!(doc["skipped"]["objects"], 1500, "{doc}");
    let o = run(&["--check", "--checksum"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Writes `body` at `key` under a cloud location the way another tool would:
/// a plain PUT, no coffer metadata (which replaces coffer's metadata).
fn overwrite_without_metadata(loc: &Loc, key: &str, body: &[u8]) {
    let url = url::Url::parse(&loc.0).expect("cloud URL");
    let base = format!("{}://{}", url.scheme(), url.host_str().expect("bucket"));
    let full = format!("{}/{key}", url.path().trim_matches('/'));
    let store = coffer::store::Store::open(&base, &loc.1, false).expect("open store");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(full.as_str());
        store
            .object_store()
            .put(&path, body.to_vec().into())
            .await
            .expect("overwrite at DST");
        let head = store
            .object_store()
            .get_opts(
                &path,
                object_store::GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .expect("head");
        assert!(
            !head
                .attributes
                .iter()
                .any(|(k, _)| matches!(k, object_store::Attribute::Metadata(_))),
            "the overwrite left user metadata: {:?}",
            head.attributes
        );
    });
}

/// Issue 9: an object overwritten at a cloud DST by another tool (same size,
/// other bytes, no coffer metadata) is compared by content: `--check` finds
/// it, a plain copy replaces it, and the summary says how objects were
/// compared.
#[test]
fn overwritten_at_cloud_dst_without_metadata_is_compared_by_content() {
    for b in [Backend::S3, Backend::Gcs] {
        let dir = tempfile::tempdir().unwrap();
        let src_root = dir.path().join("src");
        for i in 0..6 {
            write(
                &src_root.join(format!("k/{i:02}")),
                &pseudo_random(1000 + i, i as u64),
            );
        }
        // Multipart at DST: its metadata is set when the upload starts.
        big_file(&src_root.join("k/big"), (9 << 20) + 3, 7);
        let src: Loc = (src_root.display().to_string(), BTreeMap::new());
        let dst = place(b, dir.path(), "overwritten");
        assert_eq!(copied(&copy_json(&src, &dst, &[], 0)), 7, "{b:?}");
        copy_json(&src, &dst, &["--check"], 0);

        let mut other = fs::read(src_root.join("k/03")).unwrap();
        other[500] ^= 0x55;
        overwrite_without_metadata(&dst, "k/03", &other);
        let mut other_big = fs::read(src_root.join("k/big")).unwrap();
        other_big[(9 << 20) + 1] ^= 1;
        overwrite_without_metadata(&dst, "k/big", &other_big);

        let o = copy(&src, &dst, &["--check"]);
        assert_eq!(o.status.code(), Some(1), "{b:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("differs: k/03: content differs (by content"),
            "{b:?}: {out}"
        );
        assert!(
            out.contains("differs: k/big: content differs (by content"),
            "{b:?}: {out}"
        );
        assert!(
            stderr(&o).contains("2 object(s) differ, 5 identical")
                && stderr(&o).contains("compared 2 by content, 5 by stored hash"),
            "{b:?}: {}",
            stderr(&o)
        );
        let v = copy_json(&src, &dst, &["--check"], 1);
        assert_eq!(v["differences_count"], 2, "{b:?}: {v}");
        assert_eq!(v["compared"]["content"], 2, "{b:?}: {v}");
        assert_eq!(v["compared"]["stored_hash"], 5, "{b:?}: {v}");

        // A plain copy compares them by content too, and replaces them.
        let v = copy_json(&src, &dst, &[], 0);
        assert_eq!(copied(&v), 2, "{b:?}: {v}");
        assert_eq!(v["compared"]["content"], 2, "{b:?}: {v}");
        assert_eq!(v["compared"]["size_mtime"], 5, "{b:?}: {v}");
        let v = copy_json(&src, &dst, &["--check"], 0);
        assert_eq!(v["compared"]["stored_hash"], 7, "{b:?}: {v}");
        assert_eq!(v["compared"]["content"], 0, "{b:?}: {v}");
        let back = place(Backend::Fs, dir.path(), "back");
        copy_json(&dst, &back, &[], 0);
        assert_eq!(contents(&src_root), contents(Path::new(&back.0)), "{b:?}");

        // Same size, same bytes, no metadata: identical by content, not copied.
        let same = fs::read(src_root.join("k/01")).unwrap();
        overwrite_without_metadata(&dst, "k/01", &same);
        let v = copy_json(&src, &dst, &[], 0);
        assert_eq!(copied(&v), 0, "{b:?}: {v}");
        assert_eq!(v["compared"]["content"], 1, "{b:?}: {v}");
    }
}

/// Issue 9, a local DST: it has no stored hash, so `--check` reads and
/// hashes both sides; bytes changed with size and mtime kept are found (a
/// plain copy, going by size and mtime, skips them: `--checksum` repairs).
#[test]
fn local_dst_is_checked_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    for i in 0..5 {
        write(
            &src_root.join(format!("f{i}")),
            &pseudo_random(2000 + i, i as u64),
        );
    }
    let src: Loc = (src_root.display().to_string(), BTreeMap::new());
    let dst = place(Backend::Fs, dir.path(), "dst");
    assert_eq!(copied(&copy_json(&src, &dst, &[], 0)), 5);

    let victim = Path::new(&dst.0).join("f2");
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&victim).unwrap());
    let mut data = fs::read(&victim).unwrap();
    data[7] ^= 0x80;
    fs::write(&victim, &data).unwrap();
    filetime::set_file_mtime(&victim, mtime).unwrap();

    let o = copy(&src, &dst, &["--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("differs: f2: content differs (by content"),
        "{out}"
    );
    assert!(
        out.contains("coffer copy --checksum"),
        "the check says what repairs it: {out}"
    );
    assert!(
        stderr(&o).contains("compared 5 by content, 0 by stored hash"),
        "{}",
        stderr(&o)
    );
    // The plain copy's cheap path: equal size and mtime, so skipped, and
    // counted as compared by size+mtime.
    let v = copy_json(&src, &dst, &[], 0);
    assert_eq!(copied(&v), 0, "{v}");
    assert_eq!(v["compared"]["size_mtime"], 5, "{v}");
    let v = copy_json(&src, &dst, &["--checksum"], 0);
    assert_eq!(copied(&v), 1, "{v}");
    assert_eq!(v["compared"]["content"], 5, "{v}");
    let v = copy_json(&src, &dst, &["--check"], 0);
    assert_eq!(v["compared"]["content"], 5, "{v}");
    assert_eq!(contents(&src_root), contents(Path::new(&dst.0)));
}
