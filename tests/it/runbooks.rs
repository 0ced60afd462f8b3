//! The on-call runbooks run as written: every ```sh block of
//! docs/runbooks/pre-migration.md and emergency-restore.md is extracted from
//! the markdown and run with bash (`set -euo pipefail`), in order, against a
//! real PostgreSQL server, with the incident that the runbook is for staged
//! between the blocks. A runbook whose commands stop working, or whose
//! blocks change in number, fails here. (```text blocks are examples for the
//! reader and are not run. The nightly-backups runbook's cron lines run in
//! tests/it/ops.rs and its units in tests/it/systemd.rs; the bucket-copy
//! runbook's commands in tests/it/copy.rs.)

use crate::common::*;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const PG: &str = "postgres://postgres@127.0.0.1:5432";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The ```sh blocks of a runbook, in order.
fn sh_blocks(runbook: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/runbooks")
        .join(runbook);
    let md =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```sh") => cur = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(cur.is_none(), "{runbook}: unclosed ```sh block");
    blocks
}

/// Runs one block with bash (`set -euo pipefail`) in `dir`, `coffer` first
/// on PATH, the caller's COFFER_* settings removed and `vars` set.
fn sh(dir: &Path, block: &str, vars: &[(&str, String)]) -> Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_coffer")).parent().unwrap();
    let mut c = Command::new("bash");
    for (k, _) in std::env::vars() {
        if k.starts_with("COFFER_") && !k.starts_with("COFFER_TEST_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("-c")
        .arg(format!("set -euo pipefail\n{block}"))
        .stdin(Stdio::null());
    c.output().expect("run bash")
}

/// [`sh`], failing the test, with the block and its output, unless it succeeds.
fn must_pass(dir: &Path, runbook: &str, n: usize, block: &str, vars: &[(&str, String)]) -> Output {
    let o = sh(dir, block, vars);
    assert!(
        o.status.success(),
        "{runbook}, sh block {n} failed ({}):\n{block}\n--- stdout:\n{}\n--- stderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    o
}

/// Runs one block of an on-call runbook in the test's directory with the
/// test's config in COFFER_CONFIG; it must succeed.
fn run_block(env: &Env, runbook: &str, n: usize, block: &str, vars: &[(&str, &str)]) -> Output {
    let mut all = vec![("COFFER_CONFIG", env.config.display().to_string())];
    all.extend(vars.iter().map(|(k, v)| (*k, v.to_string())));
    must_pass(env.dir.path(), runbook, n, block, &all)
}

fn psql(db: &str, script: &str) -> String {
    let o = Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-w", "-d"])
        .arg(format!("{PG}/{db}"))
        .args(["-c", script])
        .output()
        .expect(
            "psql runs: these tests need PostgreSQL's client tools and a server on 127.0.0.1:5432",
        );
    assert!(
        o.status.success(),
        "psql on {db}: {}\n{script}",
        text(&o.stderr)
    );
    text(&o.stdout).trim().to_string()
}

/// A database with a table of 100 rows, dropped when the guard goes.
struct Db(String);

impl Db {
    fn new() -> Db {
        let name = unique("rb").replace('-', "_");
        psql("postgres", &format!("CREATE DATABASE {name}"));
        psql(
            &name,
            "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
             INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 100) g;",
        );
        Db(name)
    }
    fn url(&self) -> String {
        format!("{PG}/{}", self.0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-w", "-d"])
            .arg(format!("{PG}/postgres"))
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
            ])
            .output();
    }
}

/// A filesystem repository with a `postgres` source `db` and a `directory`
/// source `media`.
fn app() -> (Env, Db, std::path::PathBuf) {
    let db = Db::new();
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    sample_tree(&media, None);
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = {:?}\n\n",
        db.url()
    ));
    env.add_dir_source("media", &media, &[]);
    (env, db, media)
}

#[test]
fn pre_migration_snapshot_and_rollback() {
    let rb = "pre-migration.md";
    let blocks = sh_blocks(rb);
    assert_eq!(
        blocks.len(),
        2,
        "{rb}: the test stages two steps around the migration"
    );
    let (env, db, media) = app();
    let media_before = describe_tree(&media);

    let o = run_block(&env, rb, 1, &blocks[0], &[("APP_VERSION", "v41")]);
    let id = fs::read_to_string(env.path("pre-migration-snapshot.id"))
        .expect("block 1 keeps the snapshot id")
        .trim()
        .to_string();
    assert_eq!(id.len(), 16, "a snapshot id: {id:?}");
    assert!(text(&o.stdout).contains(&id), "{}", text(&o.stdout));
    let shown = env.cmd().args(["show", &id, "--json"]).output().unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["tags"], serde_json::json!(["pre-migration"]));
    assert_eq!(shown["labels"]["version"], "v41");

    // The migration goes wrong half-way.
    psql(
        &db.0,
        "ALTER TABLE items ADD COLUMN price numeric;
         CREATE TABLE audit (id int);
         DELETE FROM items WHERE id > 60;",
    );
    fs::write(media.join("created-by-the-migration.txt"), "new").unwrap();
    fs::remove_dir_all(media.join("sub")).ok();

    let o = run_block(&env, rb, 2, &blocks[1], &[]);
    let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        out.contains(&db.0) && out.contains("needs --force"),
        "the dry run names the database it would replace and that it needs --force:\n{out}"
    );
    assert_eq!(psql(&db.0, "SELECT count(*) FROM items"), "100");
    assert_eq!(
        psql(
            &db.0,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'price'"
        ),
        "0",
        "the migration's column is gone"
    );
    assert_eq!(
        psql(
            &db.0,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'audit'"
        ),
        "0",
        "the migration's table is gone"
    );
    assert_eq!(
        describe_tree(&media),
        media_before,
        "media as before the migration"
    );
}

#[test]
fn emergency_restore_brings_back_the_last_good_snapshot() {
    let rb = "emergency-restore.md";
    let blocks = sh_blocks(rb);
    assert_eq!(
        blocks.len(),
        4,
        "{rb}: find, check, restore, check the result"
    );
    let (env, db, _media) = app();
    // Last night's backup, then the incident.
    let o = env
        .cmd()
        .args(["snapshot", "--tag", "nightly"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    psql(&db.0, "DELETE FROM items WHERE id % 2 = 0");
    assert_eq!(psql(&db.0, "SELECT count(*) FROM items"), "50");

    let o = run_block(&env, rb, 1, &blocks[0], &[]);
    assert!(text(&o.stdout).contains("nightly"), "{}", text(&o.stdout));
    run_block(&env, rb, 2, &blocks[1], &[]);
    run_block(&env, rb, 3, &blocks[2], &[]);
    assert_eq!(
        psql(&db.0, "SELECT count(*) FROM items"),
        "100",
        "every row is back"
    );
    let o = run_block(&env, rb, 4, &blocks[3], &[]);
    assert!(
        text(&o.stdout).contains("db public.items 100"),
        "block 4 prints the recorded row counts:\n{}",
        text(&o.stdout)
    );
}

#[test]
fn emergency_restore_stops_at_a_damaged_snapshot() {
    let rb = "emergency-restore.md";
    let blocks = sh_blocks(rb);
    let (env, db, _media) = app();
    let o = env.cmd().args(["snapshot", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Damage every archive object of the snapshot.
    for e in walkdir::WalkDir::new(env.path("repo/data")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let mut b = fs::read(e.path()).unwrap();
            let at = b.len() / 2;
            b[at] ^= 0xff;
            fs::write(e.path(), b).unwrap();
        }
    }
    psql(&db.0, "DELETE FROM items");
    // Step 2 (verify --deep) must stop the engineer: bash exits on its failure.
    let o = sh(
        env.dir.path(),
        &blocks[1],
        &[("COFFER_CONFIG", env.config.display().to_string())],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "verify --deep fails with exit 3: {}",
        text(&o.stderr)
    );
    assert_eq!(
        psql(&db.0, "SELECT count(*) FROM items"),
        "0",
        "nothing was restored"
    );
}

/// Every regular file under `root` with its bytes (copy skips symlinks).
fn file_bytes(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            (rel, fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Runs a block with the cloud credentials in the environment only, as an
/// operator would have them, from a directory without a coffer.toml.
fn run_cloud_block(dir: &Path, rb: &str, n: usize, block: &str, vars: &[(&str, String)]) -> Output {
    let need = |v: &str| {
        std::env::var(v).unwrap_or_else(|_| {
            panic!("{v} is not set: run the suite with `bash scripts/test.sh` (it starts the S3 and GCS servers)")
        })
    };
    let mut all = vec![
        ("AWS_ENDPOINT", need("COFFER_TEST_S3_ENDPOINT")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", need("AWS_ACCESS_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY", need("AWS_SECRET_ACCESS_KEY")),
        (
            "GOOGLE_SERVICE_ACCOUNT",
            need("COFFER_TEST_GCS_SERVICE_ACCOUNT"),
        ),
        ("GOOGLE_ALLOW_HTTP", "true".into()),
    ];
    all.extend(vars.iter().cloned());
    must_pass(dir, rb, n, block, &all)
}

#[test]
fn bucket_copy_moves_media_and_a_repository_fs_s3_gcs() {
    let rb = "bucket-copy.md";
    let blocks = sh_blocks(rb);
    assert_eq!(
        blocks.len(),
        5,
        "{rb}: fs->S3, S3->GCS, same store, --delete, repository"
    );
    // A repository on S3 with one snapshot: section 5 replicates it to GCS.
    let mut env = Env::init(Backend::S3);
    let media = env.path("media");
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    env.snapshot_ok();
    let work = env.path("work");
    fs::create_dir_all(&work).unwrap();

    let s3 = env.url.clone() + "-media";
    let s3_2 = env.url.clone() + "-media-2";
    let gcs = format!(
        "gs://{}/{}",
        std::env::var("COFFER_TEST_GCS_BUCKET").expect("COFFER_TEST_GCS_BUCKET"),
        unique("runbook-media")
    );
    let dr = format!(
        "gs://{}/{}",
        std::env::var("COFFER_TEST_GCS_BUCKET").unwrap(),
        unique("runbook-dr")
    );
    let media_s = media.display().to_string();
    let vars = [
        ("SRC", media_s.clone()),
        ("DST", s3.clone()),
        ("FROM", s3.clone()),
        ("TO", gcs.clone()),
        ("SAME_STORE_TO", s3_2.clone()),
        ("REPO", env.url.clone()),
        ("DR", dr.clone()),
        ("COFFER_KEY_FILE", env.key.display().to_string()),
    ];
    for (i, b) in blocks.iter().take(3).enumerate() {
        if i == 2 {
            // Section 3 copies within one store: server-side.
            let o = run_cloud_block(&work, rb, i + 1, b, &vars);
            assert!(
                format!("{}{}", text(&o.stdout), text(&o.stderr)).contains("server-side"),
                "{}",
                text(&o.stderr)
            );
        } else {
            run_cloud_block(&work, rb, i + 1, b, &vars);
        }
    }
    // What reached GCS (through S3) is the media tree, byte for byte.
    let back = env.path("back");
    let o = run_cloud_block(
        &work,
        rb,
        0,
        "coffer copy \"$TO\" \"$BACK\"",
        &[("TO", gcs.clone()), ("BACK", back.display().to_string())],
    );
    assert!(o.status.success());
    assert_eq!(
        file_bytes(&back),
        file_bytes(&media),
        "the files that went fs -> S3 -> GCS -> fs (object stores keep bytes, not modes)"
    );

    // Section 4: a file gone from SRC is deleted at DST.
    let gone = walkdir::WalkDir::new(&media)
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path();
    fs::remove_file(&gone).unwrap();
    let o = run_cloud_block(&work, rb, 4, &blocks[3], &vars);
    let key = gone.strip_prefix(&media).unwrap().display().to_string();
    assert!(
        format!("{}{}", text(&o.stdout), text(&o.stderr)).contains(&key),
        "the deleted key is named:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let check = run_cloud_block(&work, rb, 0, "coffer copy \"$SRC\" \"$DST\" --check", &vars);
    assert!(check.status.success(), "DST mirrors SRC after --delete");

    // Section 5: the repository's copy on GCS lists and verifies.
    let o = run_cloud_block(&work, rb, 5, &blocks[4], &vars);
    assert!(text(&o.stdout).contains("media"), "{}", text(&o.stdout));

    // With the S3 repository's config in force, `--repo` naming the GCS copy
    // does not get the config's S3 options.
    let o = env
        .cmd()
        .args(["--repo", &dr, "snapshots"])
        .env(
            "GOOGLE_SERVICE_ACCOUNT",
            std::env::var("COFFER_TEST_GCS_SERVICE_ACCOUNT").unwrap(),
        )
        .env("GOOGLE_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("media"), "{}", text(&o.stdout));
}
