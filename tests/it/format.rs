//! The on-disk format stays readable (guarantee 9 of the contract).
//!
//! - `fixtures/repo-v1/repo` is a repository written by an earlier build: the
//!   current build must still verify it deeply and restore exactly the files
//!   `fixtures/repo-v1/EXPECTED.json` lists.
//! - `fixtures/vectors/` holds sealed-object test vectors and damaged copies of
//!   the fixture's objects: every damaged one must be rejected (exit 3); and
//!   tampered key slots and `config`: the fixture must refuse to open (exit 3).
//! - `tests/support/independent_reader.py`, written from `docs/FORMAT.md`
//!   alone, must read the fixture to the same files and reject the same
//!   vectors: the document is enough to write a reader.
//!
//! The fixtures are made by `scripts/make-format-fixtures.sh` (which runs the
//! ignored `generate_vectors` below); tests only ever read them, working on
//! copies in temp directories.

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer::crypto::{self, Credential, CryptoError, ObjectKind};
use coffer::manifest::seal_context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn repo_v1() -> PathBuf {
    fixtures().join("repo-v1")
}

fn key_file() -> PathBuf {
    repo_v1().join("KEY")
}

fn load_json(p: &Path) -> Value {
    let raw = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

fn expected() -> Value {
    load_json(&repo_v1().join("EXPECTED.json"))
}

fn vectors() -> Value {
    load_json(&fixtures().join("vectors/vectors.json"))
}

fn snapshot_id() -> String {
    expected()["snapshot"]
        .as_str()
        .expect("snapshot")
        .to_string()
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("mkdir");
    for e in fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// A temp dir holding a copy of the fixture repository at `<tmp>/repo`.
fn repo_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix("coffer-format-")
        .tempdir()
        .expect("temp dir");
    let repo = tmp.path().join("repo");
    copy_dir(&repo_v1().join("repo"), &repo);
    (tmp, repo)
}

/// `coffer --repo REPO --key-file fixtures/repo-v1/KEY`, run in `cwd` (a temp
/// dir, so no stray coffer.toml is picked up).
fn coffer_at(repo: &Path, cwd: &Path) -> assert_cmd::Command {
    let mut c = coffer_cmd();
    c.current_dir(cwd);
    c.arg("--repo").arg(repo).arg("--key-file").arg(key_file());
    c
}

fn code_of(c: &mut assert_cmd::Command) -> (i32, String) {
    let out = c.output().expect("run coffer");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sha_hex(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

/// Checks that `out/<source name>/` holds exactly what EXPECTED.json lists
/// for every source: types, bytes, modes, mtimes, link targets, hard links.
/// Directories above a files source's entries (its absolute paths) may exist
/// without being listed.
fn assert_restored(out: &Path, exp: &Value) {
    for src in exp["sources"].as_array().expect("sources") {
        let name = src["name"].as_str().expect("name");
        let root = out.join(name);
        let mut allowed = BTreeSet::new();
        let mut parents = BTreeSet::new();
        for e in src["entries"].as_array().expect("entries") {
            let path = e["path"].as_str().expect("path");
            allowed.insert(path.to_string());
            let mut p = Path::new(path);
            while let Some(parent) = p.parent() {
                if parent.as_os_str().is_empty() {
                    break;
                }
                parents.insert(parent.display().to_string());
                p = parent;
            }
            let full = if path == "." {
                root.clone()
            } else {
                root.join(path)
            };
            let m = fs::symlink_metadata(&full)
                .unwrap_or_else(|e| panic!("{name}: {path} was not restored: {e}"));
            let mode = e["mode"].as_u64().expect("mode") as u32;
            match e["type"].as_str().expect("type") {
                "file" => {
                    assert!(m.file_type().is_file(), "{name}: {path} is not a file");
                    let data = fs::read(&full).expect("read restored file");
                    assert_eq!(data.len() as u64, e["size"].as_u64().unwrap(), "{path}");
                    assert_eq!(sha_hex(&data), e["sha256"].as_str().unwrap(), "{path}");
                    assert_eq!(m.mode() & 0o7777, mode, "{name}: mode of {path}");
                    assert_eq!(m.mtime(), e["mtime"].as_i64().unwrap(), "mtime of {path}");
                    assert_eq!(
                        m.mtime_nsec(),
                        e["mtime_nsec"].as_i64().unwrap(),
                        "mtime_nsec of {path}"
                    );
                }
                "dir" => {
                    assert!(m.file_type().is_dir(), "{name}: {path} is not a directory");
                    assert_eq!(m.mode() & 0o7777, mode, "{name}: mode of {path}");
                }
                "symlink" => {
                    assert!(
                        m.file_type().is_symlink(),
                        "{name}: {path} is not a symlink"
                    );
                    assert_eq!(
                        fs::read_link(&full)
                            .expect("readlink")
                            .display()
                            .to_string(),
                        e["target"].as_str().unwrap(),
                        "{name}: target of {path}"
                    );
                }
                "hardlink" => {
                    let target = root.join(e["target"].as_str().unwrap());
                    let t = fs::metadata(&target).expect("hard link target");
                    assert!(
                        m.ino() == t.ino() && m.dev() == t.dev(),
                        "{name}: {path} is not a hard link to {}",
                        target.display()
                    );
                }
                other => panic!("EXPECTED.json: unknown type {other}"),
            }
        }
        for e in walkdir::WalkDir::new(&root).min_depth(1) {
            let e = e.expect("walk restored");
            let rel = e.path().strip_prefix(&root).unwrap().display().to_string();
            assert!(
                allowed.contains(&rel) || (parents.contains(&rel) && e.file_type().is_dir()),
                "{name}: {rel} was restored but EXPECTED.json does not list it"
            );
        }
    }
}

// ------------------------------------------------------------------ coffer

#[test]
fn repo_v1_verifies_deeply_and_restores_exactly() {
    let (tmp, repo) = repo_copy();
    let exp = expected();
    let id = snapshot_id();

    let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(["verify", "--deep", "--all"]));
    assert_eq!(code, 0, "verify --deep --all of the v1 fixture\n{out}");

    let listed = coffer_at(&repo, tmp.path())
        .args(["snapshots", "--json"])
        .output()
        .expect("snapshots");
    assert!(listed.status.success());
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    assert_eq!(listed[0]["tags"], exp["tags"]);
    assert_eq!(listed[0]["labels"], exp["labels"]);

    let target = tmp.path().join("restored");
    let (code, out) = code_of(
        coffer_at(&repo, tmp.path())
            .args(["restore", &id, "--target"])
            .arg(&target),
    );
    assert_eq!(code, 0, "restore of the v1 fixture\n{out}");
    assert_restored(&target, &exp);

    // The objects were never written to.
    let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(["verify", "--all"]));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn repo_v1_opens_with_its_passphrase_slot() {
    let (tmp, repo) = repo_copy();
    let mut c = coffer_cmd();
    c.current_dir(tmp.path())
        .arg("--repo")
        .arg(&repo)
        .env(
            "COFFER_PASSPHRASE",
            expected()["passphrase"].as_str().unwrap(),
        )
        .args(["verify", "--deep"]);
    let (code, out) = code_of(&mut c);
    assert_eq!(code, 0, "the Argon2id key slot opens the fixture\n{out}");
    let mut c = coffer_cmd();
    c.current_dir(tmp.path())
        .arg("--repo")
        .arg(&repo)
        .env("COFFER_PASSPHRASE", "not the passphrase")
        .args(["verify"]);
    let (code, out) = code_of(&mut c);
    assert_eq!(code, 3, "a wrong passphrase is exit 3\n{out}");
}

#[test]
fn repo_v1_damaged_objects_are_rejected() {
    let vec = vectors();
    let id = snapshot_id();
    let dir = fixtures().join("vectors");
    let cases = vec["repository_damage"]
        .as_array()
        .expect("repository_damage");
    assert!(cases.len() >= 5, "too few damage vectors");
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let replaces = case["replaces"].as_str().unwrap();
        let (tmp, repo) = repo_copy();
        let victim = repo.join(replaces);
        assert!(victim.is_file(), "{file}: {replaces} is not in the fixture");
        fs::copy(dir.join(file), &victim).expect("plant damaged object");

        for args in [&["verify", "--deep", "--all"][..], &["verify", "--all"][..]] {
            let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(args));
            assert_eq!(code, 3, "{file}: coffer {args:?} must exit 3\n{out}");
            assert!(
                out.contains(&id),
                "{file}: the report names the snapshot\n{out}"
            );
        }

        let target = tmp.path().join("restored");
        let (code, out) = code_of(
            coffer_at(&repo, tmp.path())
                .args(["restore", &id, "--target"])
                .arg(&target),
        );
        assert_eq!(code, 3, "{file}: restore must exit 3\n{out}");
        // Nothing of the damaged source (or, for a damaged manifest,
        // nothing at all) reached the destination.
        match case["source"].as_str() {
            Some(src) => assert!(
                !target.join(src).exists(),
                "{file}: restore left {src}/ behind"
            ),
            None => assert!(!target.exists(), "{file}: restore wrote {target:?}"),
        }

        if case["object"] == "archive" {
            let src = case["source"].as_str().unwrap();
            let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(["dump", &id, src]));
            assert_eq!(code, 3, "{file}: dump must exit 3\n{out}");
        }
    }
}

/// `latest` must not pick the newest *readable* manifest while one is
/// damaged (it might be the newest): with the fixture's only manifest
/// damaged, `verify` and `restore latest` refuse with exit 3.
#[test]
fn damaged_newest_manifest_is_reported_by_latest() {
    let (tmp, repo) = repo_copy();
    let id = snapshot_id();
    fs::copy(
        fixtures().join("vectors/fail_manifest_flipped_tag"),
        repo.join("snapshots").join(&id),
    )
    .expect("plant damaged manifest");
    let (code, out) = code_of(coffer_at(&repo, tmp.path()).arg("verify"));
    assert_eq!(
        code, 3,
        "verify (latest) with a damaged newest manifest\n{out}"
    );
    let target = tmp.path().join("restored");
    let (code, out) = code_of(
        coffer_at(&repo, tmp.path())
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_eq!(
        code, 3,
        "restore latest with a damaged newest manifest\n{out}"
    );
}

/// Key slots and `config` are authenticated through every slot's wrap
/// (FORMAT.md section 5): a changed slot field refuses that slot, a changed
/// `config` byte refuses every slot; coffer exits 3 before reading any data.
#[test]
fn repo_v1_tampered_slots_and_config_refuse_to_open() {
    let vec = vectors();
    let id = snapshot_id();
    let passphrase = vec["passphrase"].as_str().expect("passphrase");
    let dir = fixtures().join("vectors");
    let cases = vec["repository_tamper"]
        .as_array()
        .expect("repository_tamper");
    let mut saw = BTreeSet::new();
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let replaces = case["replaces"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        saw.insert(if replaces == "config" {
            "config"
        } else {
            "slot"
        });
        let (tmp, repo) = repo_copy();
        let victim = repo.join(replaces);
        assert!(victim.is_file(), "{file}: {replaces} is not in the fixture");
        fs::copy(dir.join(file), &victim).expect("plant tampered object");
        let with = |cred: &str| {
            let mut c = coffer_cmd();
            c.current_dir(tmp.path()).arg("--repo").arg(&repo);
            match cred {
                "key_file" => {
                    c.arg("--key-file").arg(key_file());
                }
                "passphrase" => {
                    c.env("COFFER_PASSPHRASE", passphrase);
                }
                other => panic!("unknown credential {other}"),
            }
            c
        };
        let needle = match expect {
            "wrong-key" => "wrong key",
            "damaged-config" => "damaged",
            other => panic!("{file}: unknown expectation {other}"),
        };
        for cred in case["credentials"].as_array().expect("credentials") {
            let cred = cred.as_str().unwrap();
            for args in [&["verify", "--all"][..], &["snapshots"][..]] {
                let (code, out) = code_of(with(cred).args(args));
                assert_eq!(
                    code, 3,
                    "{file} with {cred}: coffer {args:?} must exit 3\n{out}"
                );
                assert!(
                    out.contains(needle),
                    "{file} with {cred}: says {needle:?}\n{out}"
                );
            }
            let target = tmp.path().join("restored");
            let (code, out) = code_of(with(cred).args(["restore", &id, "--target"]).arg(&target));
            assert_eq!(code, 3, "{file} with {cred}: restore must exit 3\n{out}");
            assert!(!target.exists(), "{file}: restore wrote {target:?}");
        }
        // Only the changed slot refuses: the other one still opens it.
        if let Some(cred) = case["still_opens_with"].as_str() {
            let (code, out) = code_of(with(cred).arg("verify"));
            assert_eq!(code, 0, "{file}: the {cred} slot still opens it\n{out}");
        }
    }
    assert_eq!(
        saw,
        BTreeSet::from(["config", "slot"]),
        "vectors for both a slot and config"
    );
}

/// The fixture's sealed objects have the header docs/FORMAT.md describes.
#[test]
fn repo_v1_objects_have_the_documented_headers() {
    let exp = expected();
    let repo = repo_v1().join("repo");
    let manifest = fs::read(repo.join("snapshots").join(snapshot_id())).expect("manifest");
    let mut objects = vec![(manifest, b'M')];
    let show = load_json(&fixtures().join("vectors/vectors.json"));
    for o in show["objects_of_snapshot"]
        .as_array()
        .expect("objects_of_snapshot")
    {
        let kind = o["kind"].as_str().unwrap().as_bytes()[0];
        let raw = fs::read(repo.join(o["object"].as_str().unwrap())).expect("object");
        assert_eq!(raw.len() as u64, o["size"].as_u64().unwrap());
        assert_eq!(sha_hex(&raw), o["sha256"].as_str().unwrap());
        objects.push((raw, kind));
    }
    assert_eq!(
        objects.len(),
        1 + 2 * exp["sources"].as_array().unwrap().len()
    );
    for (raw, kind) in objects {
        assert_eq!(&raw[..6], crypto::MAGIC);
        assert_eq!(raw[6], 1, "format version byte");
        assert_eq!(raw[7], kind);
        assert_eq!(
            u32::from_be_bytes(raw[40..44].try_into().unwrap()) as usize,
            crypto::DEFAULT_SEGMENT
        );
        let body = raw.len() - crypto::HEADER_LEN;
        assert!((crypto::TAG_LEN..=crypto::DEFAULT_SEGMENT + crypto::TAG_LEN).contains(&body));
    }
    let config = load_json(&repo.join("config"));
    assert_eq!(config["format"], "coffer-repository");
    assert_eq!(config["version"], 1);
    assert_eq!(config["id"], exp["repo_id"]);
}

/// The constants docs/FORMAT.md quotes are the ones the code uses.
#[test]
fn format_doc_quotes_the_constants() {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    for needle in [
        format!("{}", crypto::HEADER_LEN),
        format!("{}", crypto::DEFAULT_SEGMENT),
        format!("{}", crypto::MAX_SEGMENT),
        format!("{}", crypto::TAG_LEN),
        format!("`{}`", coffer::repo::REPO_FORMAT),
        "coffer/v1/object-key".to_string(),
        "coffer/v1/key-file-kek".to_string(),
        "coffer/v1/key-slot".to_string(),
        "coffer-key-v1:".to_string(),
        "65536".to_string(),
        // CHUNK, the size of a dump stream's chunk entries (section 9).
        format!("4 MiB ({} bytes", {
            let c = coffer::source::stream::CHUNK;
            format!("{},{:03},{:03}", c / 1_000_000, c / 1000 % 1000, c % 1000)
        }),
    ] {
        assert!(
            doc.contains(&needle),
            "docs/FORMAT.md does not mention {needle:?}"
        );
    }
    // Its examples are the committed fixture's (regenerating the fixture
    // means updating them): the ids, and the SHA-256 of `config` that the
    // key-slot AAD example shows.
    let exp = expected();
    let config_sha = sha_hex(&fs::read(repo_v1().join("repo/config")).expect("config"));
    for id in [
        exp["repo_id"].as_str().unwrap(),
        exp["snapshot"].as_str().unwrap(),
        config_sha.as_str(),
    ] {
        assert!(
            doc.contains(id),
            "docs/FORMAT.md examples do not show the fixture's {id}"
        );
    }
    // The key-slot AAD example (section 5) is the fixture key-file slot's,
    // byte for byte: one part a line, its hex before two spaces.
    let block = doc
        .split_once("has this AAD of")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the key-slot AAD example in docs/FORMAT.md")
        .0;
    let shown: String = block
        .lines()
        .map(|l| l.split("  ").next().unwrap_or("").replace(' ', ""))
        .collect();
    let keys = repo_v1().join("repo/keys");
    let slot = fs::read_dir(&keys)
        .expect("keys/")
        .map(|e| load_json(&e.expect("entry").path()))
        .find(|s| s["kind"] == "key_file")
        .expect("a key-file slot");
    let aad = slot_aad_from_doc(
        &slot,
        exp["repo_id"].as_str().unwrap(),
        &fs::read(repo_v1().join("repo/config")).expect("config"),
    );
    assert_eq!(
        shown,
        hex::encode(&aad),
        "the AAD example in docs/FORMAT.md is not the fixture key-file slot's"
    );
    assert_eq!(
        crypto::FORMAT_VERSION,
        1,
        "a new format version needs new fixtures and docs"
    );
    // Format 2 (Part II of FORMAT.md) has its own vectors in fixtures/v2.
    assert_eq!(coffer::manifest::MANIFEST_VERSION, 2);
    assert_eq!(coffer::repo::REPO_VERSION, 2);
    assert_eq!(
        seal_context("r", "s", Some("x")),
        b"coffer/v1\0r\0s\0x".to_vec(),
        "the context bytes FORMAT.md gives"
    );
    assert_eq!(seal_context("r", "s", None), b"coffer/v1\0r\0s".to_vec());
}

// ------------------------------------------- versions and reserved fields

/// Replaces the fixture copy's manifest with `m` (sealed with the fixture's
/// key, as coffer would have written it) under `snapshots/<m.id>`.
fn commit_manifest(repo: &Path, m: &coffer::manifest::Manifest) {
    let r = open_fixture_repo(repo);
    let object = repo.join("snapshots").join(&m.id);
    let _ = fs::remove_file(&object);
    block_on(r.commit_manifest(m)).expect("commit manifest");
}

fn fixture_manifest(repo: &Path) -> coffer::manifest::Manifest {
    let r = open_fixture_repo(repo);
    block_on(r.load_manifest(&snapshot_id())).expect("fixture manifest")
}

/// A `config` of a newer repository version is not damage: exit 1 with
/// "upgrade coffer" (FORMAT.md section 12), before any key slot is tried.
#[test]
fn newer_repository_version_is_exit_1() {
    let (tmp, repo) = repo_copy();
    let cfg = fs::read(repo.join("config")).expect("config");
    fs::write(
        repo.join("config"),
        replace_once(&cfg, b"\"version\": 1", b"\"version\": 3"),
    )
    .expect("write config");
    for args in [
        &["snapshots"][..],
        &["verify", "--deep", "--all"],
        &["restore", "latest", "--target", "out"],
    ] {
        let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(args));
        assert_eq!(code, 1, "{args:?} on a version-3 repository\n{out}");
        assert!(
            out.contains("written by a newer coffer")
                && out.contains("format version 3")
                && out.contains("upgrade coffer"),
            "{args:?}: the message says why and what to do\n{out}"
        );
        assert!(!out.contains("wrong key"), "{args:?}\n{out}");
    }
    assert!(!tmp.path().join("out").exists());
}

/// A manifest of a newer version is not damage either: exit 1 wherever it
/// is needed; a listing shows the readable snapshots and names it.
#[test]
fn newer_manifest_version_is_exit_1() {
    let (tmp, repo) = repo_copy();
    let old = snapshot_id();
    let mut m = fixture_manifest(&repo);
    m.version = 3;
    // A later snapshot, so it would be `latest`.
    m.id = "ffffffffffffffff".into();
    m.time += chrono::Duration::hours(1);
    commit_manifest(&repo, &m);
    let newer_msg = |out: &str| {
        out.contains("ffffffffffffffff")
            && out.contains("written by a newer coffer")
            && out.contains("format version 3")
            && out.contains("upgrade coffer")
    };
    for args in [
        &["show", "ffffffffffffffff"][..],
        &["verify", "ffffffffffffffff"],
        &["verify", "--all"],
        &["restore", "latest", "--target", "out"],
        &["prune", "--keep-last", "5", "--dry-run"],
        &["snapshots"],
    ] {
        let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(args));
        assert_eq!(code, 1, "{args:?} with a version-3 manifest\n{out}");
        assert!(newer_msg(&out), "{args:?}: names it and says why\n{out}");
    }
    assert!(!tmp.path().join("out").exists());
    // The old snapshot is still listed and readable.
    let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(["snapshots"]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&old), "{out}");
    let o = coffer_at(&repo, tmp.path())
        .args(["snapshots", "--json"])
        .output()
        .expect("snapshots --json");
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["id"], json!(old), "{v}");
    assert_eq!(v[1]["id"], json!("ffffffffffffffff"), "{v}");
    assert_eq!(v[1]["newer_version"], json!(3), "{v}");
    assert_eq!(v[1]["object"], json!("snapshots/ffffffffffffffff"), "{v}");
    assert!(v[1].get("damaged").is_none(), "{v}");
    let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(["verify", "--deep", &old]));
    assert_eq!(code, 0, "{out}");
}

/// A version-1 manifest whose reserved `parent` is set is read like any
/// other version-1 manifest: `parent` is not followed (FORMAT.md section
/// 13), here it names a snapshot that does not exist.
#[test]
fn v1_manifest_with_parent_set_is_read_from_its_own_archives() {
    let (tmp, repo) = repo_copy();
    let exp = expected();
    let id = snapshot_id();
    let mut m = fixture_manifest(&repo);
    assert_eq!(m.parent, None);
    m.parent = Some("0123456789abcdef".into());
    commit_manifest(&repo, &m);
    let (code, out) = code_of(coffer_at(&repo, tmp.path()).args(["verify", "--deep", &id]));
    assert_eq!(code, 0, "verify --deep\n{out}");
    let target = tmp.path().join("restored");
    let (code, out) = code_of(
        coffer_at(&repo, tmp.path())
            .args(["restore", "latest", "--target"])
            .arg(&target),
    );
    assert_eq!(code, 0, "restore\n{out}");
    assert_restored(&target, &exp);
    let o = coffer_at(&repo, tmp.path())
        .args(["show", &id, "--json"])
        .output()
        .expect("show");
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["parent"], json!("0123456789abcdef"));
    // The independent reader, written from the document, agrees.
    let out = tmp.path().join("extracted");
    run_reader(
        reader()
            .arg("extract")
            .arg("--repo")
            .arg(&repo)
            .arg("--key-file")
            .arg(key_file())
            .arg("--out")
            .arg(&out),
    );
    assert_restored(&out.join(&id), &exp);
}

// ------------------------------------------------------------ sealed vectors

fn open_fixture_repo(repo: &Path) -> coffer::repo::Repository {
    let store = coffer::store::Store::open(&repo.display().to_string(), &BTreeMap::new(), false)
        .expect("open store");
    let cred = Credential::KeyFile {
        path: key_file().display().to_string(),
        key: crypto::read_key_file(&key_file()).expect("KEY"),
    };
    block_on(coffer::repo::open(&store, &cred)).expect("open fixture repository")
}

fn kind_of(s: &str) -> ObjectKind {
    match s {
        "A" => ObjectKind::Archive,
        "I" => ObjectKind::Index,
        "M" => ObjectKind::Manifest,
        other => panic!("unknown kind {other}"),
    }
}

fn error_name(e: &CryptoError) -> &'static str {
    match e {
        CryptoError::BadMagic => "bad-magic",
        CryptoError::UnsupportedVersion(_) => "unsupported-version",
        CryptoError::WrongKind { .. } => "wrong-kind",
        CryptoError::ShortHeader(_) => "short-header",
        CryptoError::BadSegmentSize(_) => "bad-segment-size",
        CryptoError::Authentication(_) => "authentication",
        CryptoError::Truncated => "truncated",
        CryptoError::TrailingData => "trailing-data",
        _ => "other",
    }
}

#[test]
fn sealed_object_vectors_open_or_fail_as_recorded() {
    let (_tmp, repo_dir) = repo_copy();
    let repo = open_fixture_repo(&repo_dir);
    let vec = vectors();
    assert_eq!(vec["repo_id"].as_str().unwrap(), repo.id);
    let dir = fixtures().join("vectors");
    let objects = vec["objects"].as_array().expect("objects");
    assert!(objects.len() >= 10);
    for v in objects {
        let file = v["file"].as_str().unwrap();
        let sealed = fs::read(dir.join(file)).expect("vector file");
        let ctx = hex::decode(v["context_hex"].as_str().unwrap()).expect("context hex");
        let kind = kind_of(v["open_as"].as_str().unwrap());
        let got = crypto::open_bytes(repo.master(), kind, &ctx, &sealed);
        match (v["expect"].as_str().unwrap(), got) {
            ("ok", Ok(plain)) => assert_eq!(
                hex::encode(plain),
                v["plaintext_hex"].as_str().unwrap(),
                "{file}"
            ),
            ("ok", Err(e)) => panic!("{file}: must open, failed: {e}"),
            (want, Ok(_)) => panic!("{file}: must fail with {want}, opened"),
            (want, Err(e)) => assert_eq!(error_name(&e), want, "{file}: {e}"),
        }
    }
    // The damaged repository objects, opened alone: the sealing layer's own
    // verdict (the manifest's SHA-256 catches them all before that).
    for v in vec["repository_damage"]
        .as_array()
        .expect("repository_damage")
    {
        let file = v["file"].as_str().unwrap();
        let sealed = fs::read(dir.join(file)).expect("vector file");
        let ctx = hex::decode(v["context_hex"].as_str().unwrap()).expect("context hex");
        let kind = kind_of(v["open_as"].as_str().unwrap());
        let got = match crypto::open_bytes(repo.master(), kind, &ctx, &sealed) {
            Ok(_) => "ok",
            Err(e) => error_name(&e),
        };
        assert_eq!(got, v["open_expect"].as_str().unwrap(), "{file}");
    }
}

// ------------------------------------------------------- independent reader

pub fn venv_python() -> PathBuf {
    let venv = std::env::var("COFFER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/coffer-test-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: the independent reader needs the test venv (with the `cryptography` and `zstandard` packages); run `bash scripts/test-servers.sh start`",
        py.display()
    );
    py
}

fn reader() -> std::process::Command {
    let mut c = std::process::Command::new(venv_python());
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/independent_reader.py"));
    c
}

fn run_reader(c: &mut std::process::Command) -> Value {
    let out = c.output().expect("run the independent reader");
    assert!(
        out.status.success(),
        "independent reader failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

#[test]
fn independent_reader_reads_repo_v1_as_expected() {
    let (tmp, repo) = repo_copy();
    let exp = expected();
    let out = tmp.path().join("extracted");
    let got = run_reader(
        reader()
            .arg("extract")
            .arg("--repo")
            .arg(&repo)
            .arg("--key-file")
            .arg(key_file())
            .arg("--out")
            .arg(&out),
    );
    // Snapshots listed, and the manifest's facts.
    let snaps = got["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 1, "{got}");
    let s = &snaps[0];
    assert_eq!(s["id"], exp["snapshot"]);
    assert_eq!(s["tags"], exp["tags"]);
    assert_eq!(s["labels"], exp["labels"]);
    assert_eq!(got["repo_id"], exp["repo_id"]);
    // Every entry, in archive order, with the index's facts.
    for (src, want) in s["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .zip(exp["sources"].as_array().unwrap())
    {
        assert_eq!(src["name"], want["name"]);
        assert_eq!(src["type"], want["type"]);
        assert_eq!(src["origin"], want["origin"]);
        let strip = |v: &Value| -> Vec<Value> {
            v.as_array()
                .expect("entries")
                .iter()
                .map(|e| {
                    json!({"path": e["path"], "type": e["type"], "size": e.get("size"),
                           "sha256": e.get("sha256"), "target": e.get("target")})
                })
                .collect()
        };
        let mut got_entries = strip(&src["entries"]);
        // EXPECTED.json gives sizes and hashes for files and hard links
        // (those of the file linked to) only.
        for e in got_entries.iter_mut() {
            if e["type"] != "file" && e["type"] != "hardlink" {
                e["size"] = Value::Null;
                e["sha256"] = Value::Null;
            }
        }
        assert_eq!(
            got_entries,
            strip(&want["entries"]),
            "source {}",
            want["name"]
        );
    }
    // The files it wrote are the expected ones (bytes, modes, mtimes, links).
    assert_restored(&out.join(exp["snapshot"].as_str().unwrap()), &exp);

    // The passphrase slot (Argon2id) opens it too.
    let got = run_reader(
        reader()
            .arg("list")
            .arg("--repo")
            .arg(&repo)
            .arg("--passphrase")
            .arg(exp["passphrase"].as_str().unwrap()),
    );
    assert_eq!(got["snapshots"][0]["id"], exp["snapshot"]);
}

#[test]
fn independent_reader_rejects_every_damaged_vector() {
    let (tmp, _repo) = repo_copy();
    let got = run_reader(
        reader()
            .arg("vectors")
            .arg("--vectors")
            .arg(fixtures().join("vectors"))
            .arg("--repo")
            .arg(repo_v1().join("repo"))
            .arg("--key-file")
            .arg(key_file())
            .arg("--scratch")
            .arg(tmp.path()),
    );
    let vec = vectors();
    assert_eq!(got["master_key_hex"], vec["master_key_hex"]);
    let n = vec["objects"].as_array().unwrap().len()
        + vec["repository_damage"].as_array().unwrap().len()
        + vec["repository_tamper"].as_array().unwrap().len();
    assert_eq!(got["checked"].as_u64().unwrap() as usize, n, "{got}");
    assert_eq!(got["failures"], json!([]), "{got}");
}

/// Dump sources (FORMAT.md section 9): streams cut into 4 MiB chunk entries.
/// The independent reader must read a stream over 4 MiB, one of exactly
/// 8 MiB (no empty chunk after it) and an empty one, find the chunk entries'
/// documented mode, owner and shared mtime, and accept `files` counting
/// streams (section 11 step 5).
#[test]
fn independent_reader_reads_dump_streams() {
    const MIB4: usize = 4 << 20;
    let mut env = Env::init(Backend::Fs);
    let cases: [(&str, usize, Vec<usize>); 3] = [
        ("over", MIB4 + 1000, vec![MIB4, 1000]),
        ("exact", 2 * MIB4, vec![MIB4, MIB4]),
        ("empty", 0, vec![0]),
    ];
    let mut want = BTreeMap::new();
    for (i, (name, len, _)) in cases.iter().enumerate() {
        let data = pseudo_random(*len, i as u64 + 1);
        let file = env.path(&format!("{name}.bin"));
        fs::write(&file, &data).expect("write stream");
        want.insert(name.to_string(), data);
        env.sources.push_str(&format!(
            "[[sources]]\nname = {name:?}\ntype = \"command\"\ndump = [\"cat\", {:?}]\n\n",
            file.display().to_string()
        ));
    }
    env.write_config();
    let id = env.snapshot_ok();
    let out = env.path("extracted");
    let got = run_reader(
        reader()
            .arg("extract")
            .arg("--repo")
            .arg(env.path("repo"))
            .arg("--key-file")
            .arg(&env.key)
            .arg("--out")
            .arg(&out),
    );
    let snap = &got["snapshots"][0];
    assert_eq!(snap["id"], json!(id));
    for (name, len, chunks) in &cases {
        let src = snap["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == *name)
            .unwrap_or_else(|| panic!("source {name} in {got}"));
        assert_eq!(src["type"], "command");
        assert_eq!(src["origin"], Value::Null, "{name}: origin");
        assert_eq!(src["files"], json!(1), "{name}: files counts streams");
        let entries = src["entries"].as_array().expect("entries");
        let sizes: Vec<u64> = entries
            .iter()
            .map(|e| e["size"].as_u64().unwrap())
            .collect();
        let want_sizes: Vec<u64> = chunks.iter().map(|&c| c as u64).collect();
        assert_eq!(sizes, want_sizes, "{name}: chunk sizes");
        for (n, e) in entries.iter().enumerate() {
            assert_eq!(e["path"], json!(format!("stdout/{n:06}")), "{name}");
            assert_eq!(e["type"], "file", "{name}");
            assert_eq!(e["mode"], json!(0o600), "{name}: chunk mode");
            assert_eq!((&e["uid"], &e["gid"]), (&json!(0), &json!(0)), "{name}");
            assert_eq!(
                e["mtime"], entries[0]["mtime"],
                "{name}: one mtime per stream"
            );
            assert_eq!(e["mtime_nsec"], entries[0]["mtime_nsec"], "{name}");
            // The tar header says the same, in whole seconds.
            assert_eq!(
                e["tar"],
                json!({"mode": 0o600, "uid": 0, "gid": 0, "mtime": e["mtime"]}),
                "{name}: chunk tar header"
            );
        }
        let data = &want[*name];
        assert_eq!(
            src["streams"],
            json!([{"name": "stdout", "bytes": len, "chunks": chunks.len(),
                    "sha256": sha_hex(data)}]),
            "{name}: the streams the reader rebuilt from the chunks"
        );
        let mut joined = Vec::new();
        for n in 0..chunks.len() {
            let p = out.join(&id).join(name).join(format!("stdout/{n:06}"));
            joined.extend(fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        }
        assert!(
            joined == *data,
            "{name}: extracted chunks differ from the stream"
        );
    }
}

// ---------------------------------------------------------------- generator

/// A key slot's AAD as FORMAT.md section 5 spells it: the label, then each
/// part preceded by a zero byte, the last part being SHA-256 of the exact
/// bytes of `config`.
fn slot_aad_from_doc(slot: &Value, repo_id: &str, config_raw: &[u8]) -> Vec<u8> {
    let mut aad = b"coffer/v1/key-slot".to_vec();
    let version = slot["version"].as_u64().expect("slot version").to_string();
    let config_sha = Sha256::digest(config_raw);
    for part in [
        repo_id.as_bytes(),
        version.as_bytes(),
        slot["id"].as_str().expect("slot id").as_bytes(),
        slot["kind"].as_str().expect("slot kind").as_bytes(),
        slot["created"].as_str().expect("slot created").as_bytes(),
        slot["host"].as_str().unwrap_or("").as_bytes(),
        config_sha.as_slice(),
    ] {
        aad.push(0);
        aad.extend_from_slice(part);
    }
    aad
}

/// The master key of the fixture, unwrapped from its key-file slot with the
/// primitives directly (not through coffer::crypto), as FORMAT.md says.
fn master_key_independently(repo: &Path, key: &[u8; 32], repo_id: &str) -> [u8; 32] {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let config_raw = fs::read(repo.join("config")).expect("config");
    for e in fs::read_dir(repo.join("keys")).expect("keys/") {
        let slot = load_json(&e.expect("entry").path());
        if slot["kind"] != "key_file" {
            continue;
        }
        let salt = b64.decode(slot["kdf"]["salt"].as_str().unwrap()).unwrap();
        let mut kek = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(&salt), key)
            .expand(b"coffer/v1/key-file-kek", &mut kek)
            .unwrap();
        let nonce: [u8; 12] = b64
            .decode(slot["nonce"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let wrapped = b64.decode(slot["wrapped_key"].as_str().unwrap()).unwrap();
        let aad = slot_aad_from_doc(&slot, repo_id, &config_raw);
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&kek).unwrap();
        if let Ok(m) = cipher.decrypt(
            &aes_gcm::Nonce::from(nonce),
            Payload {
                msg: &wrapped,
                aad: &aad,
            },
        ) {
            return m.try_into().expect("32-byte master key");
        }
    }
    panic!("no key-file slot of the fixture opens with KEY");
}

fn seal(
    master: &crypto::MasterKey,
    kind: ObjectKind,
    ctx: &[u8],
    seg: usize,
    plain: &[u8],
) -> Vec<u8> {
    let mut w = crypto::SealWriter::new_with_segment(Vec::new(), master, kind, ctx, seg)
        .expect("seal writer");
    w.write_all(plain).expect("seal");
    w.finish().expect("seal finish")
}

/// `hay` with the one occurrence of `from` replaced by `to`.
fn replace_once(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at: Vec<usize> = hay
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "{:?} occurs {} times",
        String::from_utf8_lossy(from),
        at.len()
    );
    let mut out = hay[..at[0]].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&hay[at[0] + from.len()..]);
    out
}

/// A time stamp with its last digit changed (`...:12Z` -> `...:13Z`).
fn bump_last_digit(t: &str) -> String {
    let i = t.rfind(|c: char| c.is_ascii_digit()).expect("a digit");
    let d = t.as_bytes()[i] - b'0';
    format!("{}{}{}", &t[..i], (d + 1) % 10, &t[i + 1..])
}

/// Opens the repository at `repo` with the fixture's key file or passphrase.
fn open_with(
    repo: &Path,
    credential: &str,
    passphrase: &str,
) -> Result<coffer::repo::Repository, coffer::repo::RepoError> {
    let store = coffer::store::Store::open(&repo.display().to_string(), &BTreeMap::new(), false)
        .expect("open store");
    let cred = match credential {
        "key_file" => Credential::KeyFile {
            path: key_file().display().to_string(),
            key: crypto::read_key_file(&key_file()).expect("KEY"),
        },
        "passphrase" => Credential::Passphrase(passphrase.to_string().into()),
        other => panic!("unknown credential {other}"),
    };
    block_on(coffer::repo::open(&store, &cred))
}

fn kind_letter(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Archive => "A",
        ObjectKind::Index => "I",
        ObjectKind::Manifest => "M",
        ObjectKind::ChunkIndex => "X",
        ObjectKind::GcRecord => "G",
    }
}

/// Writes fixtures/vectors/ from fixtures/repo-v1 (run by
/// scripts/make-format-fixtures.sh; never by the normal test run).
#[test]
#[ignore = "writes fixtures/vectors; run by scripts/make-format-fixtures.sh"]
fn generate_vectors() {
    assert_eq!(
        std::env::var("COFFER_WRITE_FIXTURES").as_deref(),
        Ok("1"),
        "set COFFER_WRITE_FIXTURES=1 (scripts/make-format-fixtures.sh does)"
    );
    let dir = fixtures().join("vectors");
    fs::create_dir_all(&dir).expect("mkdir vectors");
    let repo_dir = repo_v1().join("repo");
    let repo = open_fixture_repo(&repo_dir);
    let master = repo.master();
    let snap = snapshot_id();
    let m = block_on(repo.load_manifest(&snap)).expect("manifest");
    let key = crypto::read_key_file(&key_file()).expect("KEY");
    let master_hex = hex::encode(master_key_independently(&repo_dir, &key, &repo.id));

    // ---- sealed objects with 16-byte segments.
    let vsnap = "00112233aabbccdd";
    let ctx = seal_context(&repo.id, vsnap, Some("vectors"));
    let other_ctx = seal_context(&repo.id, "00112233aabbccde", Some("vectors"));
    let mctx = seal_context(&repo.id, vsnap, None);
    let p40 = b"coffer sealed-object test vector: 40 B.\n";
    assert_eq!(p40.len(), 40);
    let p32 = &p40[..32];
    let three = seal(master, ObjectKind::Archive, &ctx, 16, p40);
    let exact = seal(master, ObjectKind::Archive, &ctx, 16, p32);
    let empty = seal(master, ObjectKind::Archive, &ctx, 16, b"");
    let index = seal(master, ObjectKind::Index, &ctx, 16, b"{\"index\":1}\n");
    let manifest = seal(
        master,
        ObjectKind::Manifest,
        &mctx,
        crypto::DEFAULT_SEGMENT,
        b"{\"manifest\":true}",
    );
    let h = crypto::HEADER_LEN;
    let seg = 16 + crypto::TAG_LEN;
    let flip = |v: &[u8], at: usize, bit: u8| {
        let mut v = v.to_vec();
        v[at] ^= bit;
        v
    };
    let set = |v: &[u8], at: usize, b: u8| {
        let mut v = v.to_vec();
        v[at] = b;
        v
    };
    let mut swapped = three.clone();
    swapped[h..h + seg].copy_from_slice(&three[h + seg..h + 2 * seg]);
    swapped[h + seg..h + 2 * seg].copy_from_slice(&three[h..h + seg]);
    let mut trailing = three.clone();
    trailing.push(0);
    let mut seg_zero = three.clone();
    seg_zero[40..44].copy_from_slice(&0u32.to_be_bytes());
    let mut seg_huge = three.clone();
    seg_huge[40..44].copy_from_slice(&((crypto::MAX_SEGMENT as u32) + 1).to_be_bytes());

    type Obj<'a> = (
        &'a str,
        Vec<u8>,
        ObjectKind,
        &'a [u8],
        &'a [u8],
        &'a str,
        &'a str,
    );
    // (file, bytes, open as, context, plaintext, expect, what)
    let objs: Vec<Obj> = vec![
        (
            "ok_three_segments.sealed",
            three.clone(),
            ObjectKind::Archive,
            &ctx,
            p40,
            "ok",
            "40 bytes in 16-byte segments: two full middle segments and a final one of 8",
        ),
        (
            "ok_exact_multiple.sealed",
            exact.clone(),
            ObjectKind::Archive,
            &ctx,
            p32,
            "ok",
            "32 bytes in 16-byte segments: the final segment is full",
        ),
        (
            "ok_empty.sealed",
            empty.clone(),
            ObjectKind::Archive,
            &ctx,
            b"",
            "ok",
            "empty plaintext: one final segment holding only its tag",
        ),
        (
            "ok_index.sealed",
            index,
            ObjectKind::Index,
            &ctx,
            b"{\"index\":1}\n",
            "ok",
            "kind byte 'I'",
        ),
        (
            "ok_manifest.sealed",
            manifest,
            ObjectKind::Manifest,
            &mctx,
            b"{\"manifest\":true}",
            "ok",
            "kind 'M', the default segment size, a context without a source name",
        ),
        (
            "ok_three_segments.sealed",
            three.clone(),
            ObjectKind::Archive,
            &other_ctx,
            b"",
            "authentication",
            "opened with another snapshot id in the context",
        ),
        (
            "ok_three_segments.sealed",
            three.clone(),
            ObjectKind::Index,
            &ctx,
            b"",
            "wrong-kind",
            "opened as an index: the header says archive",
        ),
        (
            "fail_flipped_tag.sealed",
            flip(&three, three.len() - 1, 0x01),
            ObjectKind::Archive,
            &ctx,
            b"",
            "authentication",
            "last byte (the final segment's tag) flipped",
        ),
        (
            "fail_flipped_ciphertext.sealed",
            flip(&three, h + 3, 0x80),
            ObjectKind::Archive,
            &ctx,
            b"",
            "authentication",
            "a ciphertext byte of segment 0 flipped",
        ),
        (
            "fail_flipped_salt.sealed",
            flip(&three, 8, 0x01),
            ObjectKind::Archive,
            &ctx,
            b"",
            "authentication",
            "a salt byte flipped: another object key",
        ),
        (
            "fail_swapped_segments.sealed",
            swapped,
            ObjectKind::Archive,
            &ctx,
            b"",
            "authentication",
            "segments 0 and 1 swapped",
        ),
        (
            "fail_final_segment_dropped.sealed",
            three[..h + 2 * seg].to_vec(),
            ObjectKind::Archive,
            &ctx,
            b"",
            "truncated",
            "the final segment removed: the object ends on a segment boundary",
        ),
        (
            "fail_final_segment_cut.sealed",
            three[..three.len() - 5].to_vec(),
            ObjectKind::Archive,
            &ctx,
            b"",
            "authentication",
            "the last 5 bytes cut off",
        ),
        (
            "fail_trailing_byte.sealed",
            trailing,
            ObjectKind::Archive,
            &ctx,
            b"",
            "authentication",
            "one byte appended",
        ),
        (
            "fail_exact_final_dropped.sealed",
            exact[..h + seg].to_vec(),
            ObjectKind::Archive,
            &ctx,
            b"",
            "truncated",
            "32-byte object without its (full) final segment",
        ),
        (
            "fail_header_only.sealed",
            empty[..h].to_vec(),
            ObjectKind::Archive,
            &ctx,
            b"",
            "truncated",
            "the empty object without its tag",
        ),
        (
            "fail_kind_changed.sealed",
            set(&three, 7, b'I'),
            ObjectKind::Index,
            &ctx,
            b"",
            "authentication",
            "kind byte rewritten to 'I' and opened as an index: the header is authenticated",
        ),
        (
            "fail_version_2.sealed",
            set(&three, 6, 2),
            ObjectKind::Archive,
            &ctx,
            b"",
            "unsupported-version",
            "version byte 2",
        ),
        (
            "fail_bad_magic.sealed",
            set(&three, 0, b'X'),
            ObjectKind::Archive,
            &ctx,
            b"",
            "bad-magic",
            "first byte changed",
        ),
        (
            "fail_segment_size_zero.sealed",
            seg_zero,
            ObjectKind::Archive,
            &ctx,
            b"",
            "bad-segment-size",
            "segment size 0",
        ),
        (
            "fail_segment_size_huge.sealed",
            seg_huge,
            ObjectKind::Archive,
            &ctx,
            b"",
            "bad-segment-size",
            "segment size MAX_SEGMENT + 1",
        ),
    ];
    let mut written = BTreeSet::new();
    let mut objects = Vec::new();
    for (file, bytes, kind, c, plain, expect, what) in &objs {
        if written.insert(*file) {
            fs::write(dir.join(file), bytes).expect("write vector");
        } else {
            assert_eq!(&fs::read(dir.join(file)).unwrap(), bytes);
        }
        // Make sure coffer agrees with what the vector claims.
        let got = crypto::open_bytes(master, *kind, c, bytes);
        match (*expect, &got) {
            ("ok", Ok(p)) => assert_eq!(p.as_slice(), *plain, "{file}"),
            (want, Err(e)) => assert_eq!(error_name(e), want, "{file}: {e}"),
            (want, Ok(_)) => panic!("{file}: expected {want}, opened"),
        }
        let mut o = json!({
            "file": file,
            "open_as": kind_letter(*kind),
            "context_hex": hex::encode(c),
            "expect": expect,
            "what": what,
        });
        if *expect == "ok" {
            o["plaintext_hex"] = json!(hex::encode(plain));
        }
        objects.push(o);
    }

    // ---- damaged copies of the fixture's own objects.
    let src_ctx = |name: &str| seal_context(&repo.id, &snap, Some(name));
    let tree = m.source("tree").expect("tree source");
    let env = m.source("env").expect("env source");
    let tree_archive = tree.archive.clone().unwrap().object;
    let tree_index = tree.index.clone().unwrap().object;
    let env_archive = env.archive.clone().unwrap().object;
    let manifest_obj = format!("snapshots/{snap}");
    let read = |p: &str| fs::read(repo_dir.join(p)).expect("fixture object");
    let archive = read(&tree_archive);
    let mut plain = Vec::new();
    crypto::OpenReader::new(
        archive.as_slice(),
        master,
        ObjectKind::Archive,
        &src_ctx("tree"),
    )
    .expect("open archive")
    .read_to_end(&mut plain)
    .expect("read archive");
    let resealed = seal(master, ObjectKind::Archive, &src_ctx("tree"), 256, &plain);
    assert!(
        resealed.len() > h + 2 * (256 + 16),
        "archive too small to swap segments"
    );
    let seg = 256 + crypto::TAG_LEN;
    let mut reswapped = resealed.clone();
    reswapped[h..h + seg].copy_from_slice(&resealed[h + seg..h + 2 * seg]);
    reswapped[h + seg..h + 2 * seg].copy_from_slice(&resealed[h..h + seg]);
    let index = read(&tree_index);
    let man = read(&manifest_obj);
    // The manifest's own plaintext with `"version":0`, sealed again with the
    // master key: every segment authenticates, but no coffer writes version 0.
    let mctx_fixture = seal_context(&repo.id, &snap, None);
    let man_plain = crypto::open_bytes(master, ObjectKind::Manifest, &mctx_fixture, &man)
        .expect("open the fixture manifest");
    let man_v0 = seal(
        master,
        ObjectKind::Manifest,
        &mctx_fixture,
        crypto::DEFAULT_SEGMENT,
        &replace_once(&man_plain, b"{\"version\":1,", b"{\"version\":0,"),
    );
    // (file, bytes, replaces, object, source, what)
    type Damage<'a> = (&'a str, Vec<u8>, &'a str, &'a str, Option<&'a str>, &'a str);
    let damage: Vec<Damage> = vec![
        (
            "fail_archive_flipped_tag",
            flip(&archive, archive.len() - 1, 0x01),
            &tree_archive,
            "archive",
            Some("tree"),
            "the tree archive with its last byte (final tag) flipped",
        ),
        (
            "fail_archive_final_segment_cut",
            archive[..archive.len() - 7].to_vec(),
            &tree_archive,
            "archive",
            Some("tree"),
            "the tree archive with its last 7 bytes cut off",
        ),
        (
            "fail_archive_header_only",
            archive[..h].to_vec(),
            &tree_archive,
            "archive",
            Some("tree"),
            "the tree archive cut to its 44-byte header",
        ),
        (
            "fail_archive_swapped_segments",
            reswapped,
            &tree_archive,
            "archive",
            Some("tree"),
            "the tree archive's plaintext sealed again with 256-byte segments, segments 0 and 1 swapped",
        ),
        (
            "fail_archive_resealed",
            resealed,
            &tree_archive,
            "archive",
            Some("tree"),
            "the tree archive's plaintext sealed again with 256-byte segments: every segment authenticates, but size and SHA-256 differ from the manifest",
        ),
        (
            "fail_archive_from_other_source",
            read(&env_archive),
            &tree_archive,
            "archive",
            Some("tree"),
            "the env source's archive put in place of the tree source's",
        ),
        (
            "fail_index_flipped_byte",
            flip(&index, h + 5, 0x04),
            &tree_index,
            "index",
            Some("tree"),
            "the tree index with a ciphertext byte flipped",
        ),
        (
            "fail_manifest_flipped_tag",
            flip(&man, man.len() - 1, 0x01),
            &manifest_obj,
            "manifest",
            None,
            "the manifest with its last byte flipped",
        ),
        (
            "fail_manifest_truncated",
            man[..man.len() - 1].to_vec(),
            &manifest_obj,
            "manifest",
            None,
            "the manifest without its last byte",
        ),
        (
            "fail_manifest_version_0",
            man_v0,
            &manifest_obj,
            "manifest",
            None,
            "the manifest's plaintext with \"version\":0, sealed again with the master key: it authenticates, but version 0 is damage",
        ),
    ];
    let mut repo_damage = Vec::new();
    for (file, bytes, replaces, object, source, what) in damage {
        fs::write(dir.join(file), &bytes).expect("write damaged object");
        // What opening the object alone (without the manifest's size and
        // SHA-256 check) gives: the sealing layer's own verdict.
        let (kind, ctx) = match source {
            Some(s) => (
                if object == "index" {
                    ObjectKind::Index
                } else {
                    ObjectKind::Archive
                },
                src_ctx(s),
            ),
            None => (ObjectKind::Manifest, seal_context(&repo.id, &snap, None)),
        };
        let open_expect = match crypto::open_bytes(master, kind, &ctx, &bytes) {
            Ok(_) => "ok",
            Err(e) => error_name(&e),
        };
        repo_damage.push(json!({
            "file": file, "replaces": replaces, "object": object,
            "source": source, "what": what,
            "open_as": kind_letter(kind), "context_hex": hex::encode(&ctx),
            "open_expect": open_expect,
        }));
    }

    // ---- tampered key slots and config (section 5: every slot's AAD binds
    // its own fields and SHA-256 of the exact `config` bytes).
    let config_raw = read("config");
    let mut slots: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    for e in fs::read_dir(repo_dir.join("keys")).expect("keys/") {
        let e = e.expect("entry");
        let raw = fs::read(e.path()).expect("slot");
        let v: Value = serde_json::from_slice(&raw).expect("slot json");
        let name = format!("keys/{}", e.file_name().to_str().expect("utf-8 name"));
        slots.insert(v["kind"].as_str().expect("kind").to_string(), (name, raw));
    }
    let (kf_obj, kf_raw) = &slots["key_file"];
    let (pp_obj, pp_raw) = &slots["passphrase"];
    let field = |raw: &[u8], k: &str| -> String {
        let v: Value = serde_json::from_slice(raw).expect("json");
        v[k].as_str().expect("string field").to_string()
    };
    let host_changed = |raw: &[u8]| {
        let h = field(raw, "host");
        replace_once(
            raw,
            format!("\"host\": {}", json!(h)).as_bytes(),
            format!("\"host\": {}", json!(format!("{h}-other"))).as_bytes(),
        )
    };
    let created_changed = |raw: &[u8]| {
        let c = field(raw, "created");
        replace_once(
            raw,
            format!("\"created\": \"{c}\"").as_bytes(),
            format!("\"created\": \"{}\"", bump_last_digit(&c)).as_bytes(),
        )
    };
    let mut config_space = config_raw.clone();
    assert_eq!(config_space[0], b'{');
    config_space.insert(1, b' ');
    // (file, bytes, replaces, credentials that must fail, expect, the
    // credential that must still open it, what)
    type Tamper<'a> = (
        &'a str,
        Vec<u8>,
        &'a str,
        &'a [&'a str],
        &'a str,
        Option<&'a str>,
        &'a str,
    );
    let tamper: Vec<Tamper> = vec![
        (
            "fail_slot_key_file_host_changed",
            host_changed(kf_raw),
            kf_obj,
            &["key_file"],
            "wrong-key",
            Some("passphrase"),
            "the key-file slot with \"-other\" appended to its host",
        ),
        (
            "fail_slot_key_file_created_changed",
            created_changed(kf_raw),
            kf_obj,
            &["key_file"],
            "wrong-key",
            Some("passphrase"),
            "the key-file slot with the last digit of its created time changed (still a valid time)",
        ),
        (
            "fail_slot_passphrase_created_changed",
            created_changed(pp_raw),
            pp_obj,
            &["passphrase"],
            "wrong-key",
            Some("key_file"),
            "the passphrase slot with the last digit of its created time changed",
        ),
        (
            "fail_config_created_changed",
            created_changed(&config_raw),
            "config",
            &["key_file", "passphrase"],
            "wrong-key",
            None,
            "config with the last digit of its created time changed (still valid JSON and a valid time)",
        ),
        (
            "fail_config_space_added",
            config_space,
            "config",
            &["key_file"],
            "wrong-key",
            None,
            "config with one space added after its opening brace: the same JSON, other bytes",
        ),
        (
            "fail_config_version_0",
            replace_once(&config_raw, b"\"version\": 1,", b"\"version\": 0,"),
            "config",
            &["key_file"],
            "damaged-config",
            None,
            "config with version 0, which no coffer writes",
        ),
    ];
    let passphrase = expected()["passphrase"]
        .as_str()
        .expect("passphrase")
        .to_string();
    let mut repo_tamper = Vec::new();
    for (file, bytes, replaces, creds, expect, still, what) in tamper {
        fs::write(dir.join(file), &bytes).expect("write tampered object");
        // Make sure coffer agrees with what the vector claims.
        let (_tmp, copy) = repo_copy();
        fs::write(copy.join(replaces), &bytes).expect("plant");
        for c in creds {
            match (expect, open_with(&copy, c, &passphrase)) {
                ("wrong-key", Err(coffer::repo::RepoError::WrongKey { .. })) => {}
                ("damaged-config", Err(coffer::repo::RepoError::DamagedConfig { .. })) => {}
                (_, Err(e)) => panic!("{file} with {c}: expected {expect}, got {e}"),
                (_, Ok(_)) => panic!("{file} with {c}: expected {expect}, it opened"),
            }
        }
        if let Some(c) = still {
            open_with(&copy, c, &passphrase)
                .unwrap_or_else(|e| panic!("{file}: the {c} slot must still open it: {e}"));
        }
        repo_tamper.push(json!({
            "file": file, "replaces": replaces, "credentials": creds, "expect": expect,
            "still_opens_with": still, "what": what,
        }));
    }

    let mut objects_of_snapshot = Vec::new();
    for s in &m.sources {
        for (r, k) in [(&s.archive, "A"), (&s.index, "I")] {
            let r = r.clone().unwrap();
            objects_of_snapshot.push(json!({
                "source": s.name, "kind": k, "object": r.object, "size": r.size,
                "sha256": r.sha256,
            }));
        }
    }
    let doc = json!({
        "comment": "Test vectors for docs/FORMAT.md; see README.md. The key is a published test key.",
        "repository": "../repo-v1/repo",
        "key_file": "../repo-v1/KEY",
        "repo_id": repo.id,
        "snapshot": snap,
        "master_key_hex": master_hex,
        "objects_of_snapshot": objects_of_snapshot,
        "objects": objects,
        "repository_damage": repo_damage,
        "passphrase": passphrase,
        "repository_tamper": repo_tamper,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("json");
    text.push('\n');
    fs::write(dir.join("vectors.json"), text).expect("write vectors.json");
    // Keep file modes tidy for git.
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
}
