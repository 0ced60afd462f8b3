//! Shared support for the CLI and library tests: repositories on every
//! backend, a `coffer` command with a clean environment, tree builders and
//! comparisons.
//!
//! Cloud backends need the servers that `scripts/test.sh` starts; a test that
//! needs one fails (never skips) when they are missing.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub mod faultproxy;

/// Where a test repository lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fs,
    S3,
    Gcs,
    Azure,
}

pub const ALL_BACKENDS: [Backend; 4] = [Backend::Fs, Backend::S3, Backend::Gcs, Backend::Azure];

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs the S3/GCS test servers; run the suite with `bash scripts/test.sh`"
        )
    })
}

/// A unique name for this test run (repository prefixes, scratch names).
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        coffer::crypto::random_id(4)
    )
}

/// Repository URL and `[repository.options]` for a backend.
pub fn repo_location(b: Backend, dir: &Path, tag: &str) -> (String, BTreeMap<String, String>) {
    let mut opts = BTreeMap::new();
    match b {
        Backend::Fs => (dir.join("repo").display().to_string(), opts),
        Backend::S3 => {
            opts.insert("aws_endpoint".into(), need("COFFER_TEST_S3_ENDPOINT"));
            opts.insert("aws_allow_http".into(), "true".into());
            opts.insert("aws_region".into(), "us-east-1".into());
            opts.insert("aws_access_key_id".into(), need("AWS_ACCESS_KEY_ID"));
            opts.insert(
                "aws_secret_access_key".into(),
                need("AWS_SECRET_ACCESS_KEY"),
            );
            (
                format!("s3://{}/{}", need("COFFER_TEST_S3_BUCKET"), unique(tag)),
                opts,
            )
        }
        Backend::Gcs => {
            opts.insert(
                "google_service_account".into(),
                need("COFFER_TEST_GCS_SERVICE_ACCOUNT"),
            );
            opts.insert("allow_http".into(), "true".into());
            (
                format!("gs://{}/{}", need("COFFER_TEST_GCS_BUCKET"), unique(tag)),
                opts,
            )
        }
        Backend::Azure => {
            // The endpoint comes from AZURITE_BLOB_STORAGE_URL (exported by
            // the test script), as object_store reads it in emulator mode.
            need("AZURITE_BLOB_STORAGE_URL");
            opts.insert("azure_storage_use_emulator".into(), "true".into());
            (
                format!(
                    "az://{}/{}",
                    need("COFFER_TEST_AZURE_CONTAINER"),
                    unique(tag)
                ),
                opts,
            )
        }
    }
}

/// One test's world: a temp dir holding a key file, a config, the data to
/// back up, and (for the filesystem backend) the repository.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub url: String,
    pub options: BTreeMap<String, String>,
    pub key: PathBuf,
    pub config: PathBuf,
    /// `[[sources]]` tables appended to the config.
    pub sources: String,
    /// Extra config text (labels, retention, ...).
    pub extra: String,
}

impl Env {
    /// A new world with a generated key and an (un-initialised) repository.
    pub fn new(backend: Backend) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("coffer-test-")
            .tempdir()
            .expect("temp dir");
        let (url, options) = repo_location(backend, dir.path(), "t");
        let key = dir.path().join("key");
        coffer::crypto::generate_key_file(&key).expect("key file");
        let config = dir.path().join("coffer.toml");
        let e = Env {
            dir,
            backend,
            url,
            options,
            key,
            config,
            sources: String::new(),
            extra: String::new(),
        };
        e.write_config();
        e
    }

    /// Same, and `coffer init` already run (of the format in
    /// `COFFER_TEST_FORMAT` when set, to run the whole suite on another
    /// format; else the default).
    pub fn init(backend: Backend) -> Env {
        let e = Env::new(backend);
        let mut c = e.cmd();
        c.arg("init");
        if let Ok(f) = std::env::var("COFFER_TEST_FORMAT") {
            c.args(["--format", &f]);
        }
        c.assert().success();
        e
    }

    /// A new world with a repository of format `format`.
    pub fn init_format(backend: Backend, format: u32) -> Env {
        let e = Env::new(backend);
        e.cmd()
            .args(["init", "--format", &format.to_string()])
            .assert()
            .success();
        e
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Rewrites coffer.toml from url, options, key, sources and extra.
    pub fn write_config(&self) {
        let mut t = format!(
            "[repository]\nurl = {:?}\nkey_file = {:?}\n",
            self.url,
            self.key.display().to_string()
        );
        if !self.options.is_empty() {
            t.push_str("[repository.options]\n");
            for (k, v) in &self.options {
                t.push_str(&format!("{k} = {v:?}\n"));
            }
        }
        t.push('\n');
        t.push_str(&self.extra);
        t.push('\n');
        t.push_str(&self.sources);
        fs::write(&self.config, t).expect("write config");
    }

    /// Adds a `directory` source and rewrites the config.
    pub fn add_dir_source(&mut self, name: &str, path: &Path, exclude: &[&str]) {
        self.sources.push_str(&format!(
            "[[sources]]\nname = {name:?}\ntype = \"directory\"\npath = {:?}\n",
            path.display().to_string()
        ));
        if !exclude.is_empty() {
            self.sources.push_str(&format!("exclude = {exclude:?}\n"));
        }
        self.sources.push('\n');
        self.write_config();
    }

    /// Adds a `files` source and rewrites the config.
    pub fn add_files_source(&mut self, name: &str, paths: &[&Path]) {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        self.sources.push_str(&format!(
            "[[sources]]\nname = {name:?}\ntype = \"files\"\npaths = {list:?}\n\n"
        ));
        self.write_config();
    }

    /// `coffer --config <this config>` with no COFFER_* or RUST_LOG from the
    /// caller's environment, run in the test's directory.
    pub fn cmd(&self) -> Command {
        let mut c = coffer_cmd();
        c.current_dir(self.dir.path());
        c.arg("--config").arg(&self.config);
        c
    }

    /// As [`Env::cmd`], as a `std::process::Command` to spawn.
    pub fn spawn_cmd(&self) -> std::process::Command {
        let mut c = spawn_coffer();
        c.current_dir(self.dir.path());
        c.arg("--config").arg(&self.config);
        c
    }

    /// Opens the repository's store through the library (for tests that
    /// damage or inspect stored objects).
    pub fn store(&self) -> coffer::store::Store {
        coffer::store::Store::open(&self.url, &self.options, false).expect("open store")
    }

    /// Runs `coffer snapshot --json` and returns the parsed document,
    /// asserting the exit code.
    pub fn snapshot_json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let out = self
            .cmd()
            .args(["snapshot", "--json"])
            .args(args)
            .output()
            .expect("run coffer");
        assert_eq!(
            out.status.code(),
            Some(code),
            "snapshot exit code; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("snapshot --json prints JSON")
    }

    /// The ids `coffer snapshots` lists, oldest first (it must succeed).
    pub fn snapshot_ids(&self) -> Vec<String> {
        let o = self.cmd().args(["snapshots", "--json"]).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "snapshots: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Runs `coffer verify --all --deep`, which must pass; `when` says at
    /// which point of the test.
    pub fn verify_all_deep(&self, when: &str) {
        let o = self
            .cmd()
            .args(["verify", "--all", "--deep"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "verify --all --deep {when}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Takes a snapshot that must succeed; returns its id.
    pub fn snapshot_ok(&self) -> String {
        self.snapshot_json(&[], 0)["id"]
            .as_str()
            .expect("id")
            .to_string()
    }
}

/// The coffer binary with a scrubbed environment, as a plain
/// `std::process::Command` for tests that spawn coffer (to kill it, to pipe
/// it into another tool).
pub fn spawn_coffer() -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("coffer"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFER_") && !k.starts_with("COFFER_TEST_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// The coffer binary with a scrubbed environment.
pub fn coffer_cmd() -> Command {
    let mut c = Command::cargo_bin("coffer").expect("coffer binary");
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFER_") && !k.starts_with("COFFER_TEST_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// Takes a snapshot of `env`'s sources through the library, recorded at
/// `time` (RFC 3339) with `tags`: how tests of retention and `check
/// --max-age` get snapshots of chosen times, which the CLI cannot take.
/// Returns its id.
pub fn snapshot_at(env: &Env, time: &str, tags: &[&str]) -> String {
    let time = chrono::DateTime::parse_from_rfc3339(time)
        .expect("an RFC 3339 time")
        .with_timezone(&chrono::Utc);
    let cfg = coffer::config::Config::load(&env.config).expect("load the test config");
    let cred = coffer::crypto::Credential::KeyFile {
        path: env.key.display().to_string(),
        key: coffer::crypto::read_key_file(&env.key).expect("key file"),
    };
    let store = env.store();
    let opts = coffer::snapshot::SnapshotOptions {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        compression: 3,
        time: Some(time),
        ..Default::default()
    };
    block_on(async move {
        let repo = coffer::repo::open(&store, &cred).await.expect("open repo");
        let out = coffer::snapshot::snapshot(&repo, &cfg, &opts)
            .await
            .expect("snapshot");
        assert!(out.committed, "the snapshot was committed");
        assert_eq!(out.manifest.time, time, "it records the chosen time");
        out.manifest.id
    })
}

/// Runs a future on a fresh runtime (library-tier tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rand seed API.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes a file, creating parents.
pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    fs::write(path, data).expect("write");
}

/// A tree with the shapes the core issue asks for: nested and empty
/// directories, symlinks (inside and pointing outside), a hard link, unicode
/// and >100-byte names, odd modes and old mtimes. `big` adds a file of that
/// many bytes.
pub fn sample_tree(root: &Path, big: Option<usize>) {
    write(&root.join("a/b/c/deep.txt"), b"deep\n");
    write(
        &root.join("uploads/2026/11/cat.jpg"),
        &pseudo_random(300_000, 1),
    );
    write(
        &root.join("exports/orders.csv"),
        "id,total\n1,9.99\n".repeat(5000).as_bytes(),
    );
    fs::create_dir_all(root.join("empty/dir")).expect("mkdir");
    write(
        &root.join("unicode/café-menü-übersicht-日本語.txt"),
        "ü\n".as_bytes(),
    );
    let long = format!(
        "{}/{}.bin",
        "long-directory-name-".repeat(4),
        "f".repeat(120)
    );
    write(&root.join(&long), b"long name\n");
    write(&root.join("script.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o750)).expect("chmod");
    write(&root.join("private.key"), b"secret\n");
    fs::set_permissions(root.join("private.key"), fs::Permissions::from_mode(0o600))
        .expect("chmod");
    std::os::unix::fs::symlink("uploads/2026/11/cat.jpg", root.join("latest.jpg"))
        .expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", root.join("outside-link")).expect("symlink");
    std::os::unix::fs::symlink("missing-target", root.join("dangling")).expect("symlink");
    fs::hard_link(root.join("a/b/c/deep.txt"), root.join("hardlink.txt")).expect("hard link");
    write(&root.join("empty-file"), b"");
    let old = filetime::FileTime::from_unix_time(1_500_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("exports/orders.csv"), old).expect("mtime");
    // Owners other than ours (restored when coffer runs as root, as CI does).
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(root.join("exports/orders.csv"), Some(1234), Some(5678))
            .expect("chown");
        std::os::unix::fs::lchown(root.join("latest.jpg"), Some(4321), Some(8765)).expect("lchown");
        std::os::unix::fs::chown(root.join("empty/dir"), Some(1111), Some(2222)).expect("chown");
    }
    if let Some(n) = big {
        write(&root.join("big/video.mp4"), &pseudo_random(n, 7));
    }
}

/// What a tree holds, for comparison: per relative path, type, mode, size,
/// mtime (ns), link target and content hash. Directory mtimes are left out
/// (restoring the tree's parent changes nothing in it, but callers that
/// create files inside may).
pub fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.expect("walk");
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        let m = fs::symlink_metadata(e.path()).expect("stat");
        let ft = m.file_type();
        let owner = format!("{}:{}", m.uid(), m.gid());
        let d = if ft.is_symlink() {
            format!(
                "link {owner} -> {}",
                fs::read_link(e.path()).expect("readlink").display()
            )
        } else if ft.is_dir() {
            format!("dir {owner} {:o}", m.mode() & 0o7777)
        } else {
            let data = fs::read(e.path()).expect("read");
            format!(
                "file {owner} {:o} {} {}.{:09} {}",
                m.mode() & 0o7777,
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                hex::encode(sha2::Sha256::digest(&data))
            )
        };
        out.insert(rel, d);
    }
    out
}

/// Asserts two trees hold the same entries, modes, sizes, mtimes and bytes.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = describe_tree(expected);
    let b = describe_tree(actual);
    if a != b {
        let mut diff = String::new();
        for (k, v) in &a {
            match b.get(k) {
                None => diff.push_str(&format!("missing: {k} ({v})\n")),
                Some(w) if w != v => {
                    diff.push_str(&format!("differs: {k}\n  want {v}\n  got  {w}\n"))
                }
                _ => {}
            }
        }
        for k in b.keys().filter(|k| !a.contains_key(*k)) {
            diff.push_str(&format!("extra: {k}\n"));
        }
        panic!(
            "trees differ ({} vs {}):\n{diff}",
            expected.display(),
            actual.display()
        );
    }
}

/// A pid that no longer runs: a child that has exited and been reaped.
pub fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// Hard-link check: the two paths are one inode.
pub fn same_inode(a: &Path, b: &Path) -> bool {
    let (x, y) = (
        fs::metadata(a).expect("stat"),
        fs::metadata(b).expect("stat"),
    );
    x.ino() == y.ino() && x.dev() == y.dev()
}

/// Wrappers for database tools, first in `PATH`: each appends its command
/// line (one line per run) to a log, then runs the real tool. For tests
/// that a secret never reaches a child's command line, which every local
/// user can read in `ps` (contract, guarantee 10).
#[allow(dead_code)]
pub struct ArgvSpy {
    dir: PathBuf,
    log: PathBuf,
}

#[allow(dead_code)]
impl ArgvSpy {
    /// Wraps each of `tools` that is installed (others are left out).
    pub fn new(root: &Path, tools: &[&str]) -> ArgvSpy {
        let dir = root.join("argv-spy");
        std::fs::create_dir_all(&dir).expect("mkdir argv-spy");
        let log = root.join("argv-spy.log");
        let path = std::env::var("PATH").unwrap_or_default();
        let mut wrapped = 0;
        for tool in tools {
            let Some(real) = std::env::split_paths(&path)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
            else {
                continue;
            };
            let script = format!(
                "#!/bin/sh\nprintf '%s\\n' \"$0 $*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            );
            let p = dir.join(tool);
            std::fs::write(&p, script).expect("write wrapper");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            wrapped += 1;
        }
        assert!(wrapped > 0, "none of {tools:?} is installed");
        ArgvSpy { dir, log }
    }

    /// `PATH` with the wrappers first.
    pub fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Every command line logged so far.
    pub fn command_lines(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A command's output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a command's exit code, showing its output when it differs.
pub fn assert_code(o: &std::process::Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Bytes of every pack of a format 2 repository: what its content costs.
pub fn pack_bytes(env: &Env) -> u64 {
    block_on(env.store().list("packs/"))
        .expect("list packs")
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// The packs of a format 2 repository, by object name, sorted.
pub fn packs(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = block_on(env.store().list("packs/"))
        .expect("list packs")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    v.sort();
    v
}

/// Path on disk of a stored object (filesystem backend).
pub fn object_path(env: &Env, name: &str) -> PathBuf {
    PathBuf::from(&env.url).join(name)
}
