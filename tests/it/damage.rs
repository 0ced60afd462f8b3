//! Damage to stored objects (contract, "Guarantees of a repository" 3 and 5):
//! every flipped byte, truncation, deletion or swap of a manifest, archive,
//! index, key slot or config is caught by `verify --deep`, `restore` and
//! `dump` with exit 3 and a message naming the snapshot, source and object;
//! a failed restore writes nothing, neither under `--target` nor in place;
//! a wrong key or passphrase is refused before any data is read.
//!
//! Objects are damaged through the library store (`env.store()`), then put
//! back byte for byte before the next case, so one repository serves every
//! case of a test.

use crate::common::*;

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use coffer::crypto::{Credential, DEFAULT_SEGMENT, HEADER_LEN, TAG_LEN};
use coffer::manifest::Manifest;

const SOURCE: &str = "media";

// ------------------------------------------------------------------ helpers

/// Exit code and everything the command printed (stdout then stderr).
struct Outcome {
    code: Option<i32>,
    text: String,
}

fn run_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Outcome {
    let mut c = env.cmd();
    c.args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.output().expect("run coffer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `dump` writes the (binary) stream to stdout: keep only stderr then.
    let stdout = if args.first() == Some(&"dump") {
        String::new()
    } else {
        stdout.into_owned()
    };
    Outcome {
        code: out.status.code(),
        text: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn run(env: &Env, args: &[&str]) -> Outcome {
    run_with(env, args, &[])
}

/// Collects every broken expectation of a test, so one run reports them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn expect(&mut self, case: &str, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("[{case}] {what}\n{}", detail()));
        }
    }

    /// `o` exited with `code`, named every needle, and did not panic.
    fn outcome(&mut self, case: &str, cmd: &str, o: &Outcome, code: i32, needles: &[&str]) {
        if std::env::var_os("COFFER_TEST_TRACE").is_some() {
            eprintln!("[{case}] `{cmd}` -> {:?}\n{}", o.code, o.text);
        }
        self.expect(
            case,
            &format!("`{cmd}` exits {code}, got {:?}", o.code),
            o.code == Some(code),
            || format!("output:\n{}", o.text),
        );
        for n in needles {
            self.expect(
                case,
                &format!("`{cmd}` names {n:?}"),
                o.text.contains(n),
                || format!("output:\n{}", o.text),
            );
        }
        self.expect(
            case,
            &format!("`{cmd}` does not panic"),
            !o.text.contains("panicked"),
            || format!("output:\n{}", o.text),
        );
    }

    fn finish(self) {
        if !self.0.is_empty() {
            panic!(
                "{} expectation(s) failed:\n\n{}",
                self.0.len(),
                self.0.join("\n\n")
            );
        }
    }
}

fn get(env: &Env, path: &str) -> Vec<u8> {
    let s = env.store();
    block_on(async move { s.get(path).await })
        .unwrap_or_else(|e| panic!("get {path}: {e}"))
        .to_vec()
}

fn put(env: &Env, path: &str, data: &[u8]) {
    let s = env.store();
    let data = Bytes::copy_from_slice(data);
    block_on(async move { s.put(path, data, false).await })
        .unwrap_or_else(|e| panic!("put {path}: {e}"));
}

fn delete(env: &Env, path: &str) {
    let s = env.store();
    block_on(async move { s.delete(path).await }).unwrap_or_else(|e| panic!("delete {path}: {e}"));
}

fn list(env: &Env, prefix: &str) -> Vec<String> {
    let s = env.store();
    block_on(async move { s.list(prefix).await })
        .unwrap_or_else(|e| panic!("list {prefix}: {e}"))
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

fn flipped(mut data: Vec<u8>, at: usize) -> Vec<u8> {
    data[at] ^= 0x01;
    data
}

fn key_credential(env: &Env) -> Credential {
    Credential::KeyFile {
        path: env.key.display().to_string(),
        key: coffer::crypto::read_key_file(&env.key).expect("key file"),
    }
}

fn load_manifest(env: &Env, id: &str) -> Manifest {
    let store = env.store();
    let cred = key_credential(env);
    block_on(async move {
        let repo = coffer::repo::open(&store, &cred).await.expect("open repo");
        repo.load_manifest(id).await.expect("load manifest")
    })
}

/// Names of the entries directly in `dir` (empty if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn slug(case: &str) -> String {
    case.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// One snapshot of the source and the objects it names.
#[derive(Clone, Debug)]
struct Snap {
    id: String,
    archive: String,
    index: String,
}

impl Snap {
    fn manifest(&self) -> String {
        format!("snapshots/{}", self.id)
    }
}

/// A repository holding two snapshots of one directory source, whose
/// original tree has changed since (so an in-place restore would change it).
struct World {
    env: Env,
    data: PathBuf,
    a: Snap,
    b: Snap,
}

fn world(backend: Backend) -> World {
    let mut env = Env::init(backend);
    let data = env.path("data");
    sample_tree(&data, None);
    // Incompressible and over 1 MiB: the archive spans two sealed segments.
    write(&data.join("big/blob.bin"), &pseudo_random(1_500_000, 11));
    env.add_dir_source(SOURCE, &data, &[]);
    let a = env.snapshot_ok();
    write(&data.join("added-between-snapshots.txt"), b"only in b\n");
    let b = env.snapshot_ok();
    for id in [&a, &b] {
        let o = run(&env, &["verify", "--deep", id]);
        assert_eq!(o.code, Some(0), "baseline verify --deep {id}:\n{}", o.text);
    }
    // The tree moves on after the snapshots.
    write(
        &data.join("created-since.txt"),
        b"created after the snapshots\n",
    );
    write(
        &data.join("exports/orders.csv"),
        b"edited after the snapshots\n",
    );
    fs::remove_file(data.join("script.sh")).expect("rm");
    let snap = |id: &String| {
        let m = load_manifest(&env, id);
        let s = m.source(SOURCE).expect("source in manifest");
        Snap {
            id: id.clone(),
            archive: s.archive.as_ref().expect("archive").object.clone(),
            index: s.index.as_ref().expect("index").object.clone(),
        }
    };
    let (a, b) = (snap(&a), snap(&b));
    World { env, data, a, b }
}

/// After damage to snapshot `id`: `verify --deep`, `restore --target`, an
/// in-place `restore --force` and `dump` all exit 3 and name `id` and every
/// needle; neither restore writes anything.
fn expect_detected(w: &World, f: &mut Failures, case: &str, id: &str, needles: &[&str]) {
    let env = &w.env;
    let mut names = vec![id];
    names.extend_from_slice(needles);

    let o = run(env, &["verify", "--deep", id]);
    f.outcome(case, "verify --deep", &o, 3, &names);

    let target = env.path(&format!("restore-{}", slug(case)));
    let t = target.display().to_string();
    let o = run(env, &["restore", id, "--target", &t]);
    f.outcome(case, "restore --target", &o, 3, &names);
    f.expect(
        case,
        "restore --target writes nothing: TARGET/<source> does not exist",
        fs::symlink_metadata(target.join(SOURCE)).is_err(),
        || format!("{:?}", describe_tree(&target)),
    );
    f.expect(
        case,
        "restore --target leaves nothing behind in TARGET (no staging left-overs)",
        entries(&target).is_empty(),
        || format!("{:?}", entries(&target)),
    );

    let before = describe_tree(&w.data);
    let parent_before = entries(env.dir.path());
    let o = run(env, &["restore", id, "--force"]);
    f.outcome(case, "restore --force (in place)", &o, 3, &names);
    let after = describe_tree(&w.data);
    f.expect(
        case,
        "in-place restore leaves the original tree byte for byte as it was",
        before == after,
        || tree_diff(&before, &after),
    );
    f.expect(
        case,
        "in-place restore leaves nothing behind beside the tree",
        entries(env.dir.path()) == parent_before,
        || {
            format!(
                "before {parent_before:?}\nafter  {:?}",
                entries(env.dir.path())
            )
        },
    );

    let o = run(env, &["dump", id, SOURCE]);
    f.outcome(case, "dump", &o, 3, &names);
}

fn tree_diff(
    a: &std::collections::BTreeMap<String, String>,
    b: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut d = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push_str(&format!("removed: {k} ({v})\n")),
            Some(w) if w != v => d.push_str(&format!("changed: {k}\n  was {v}\n  now {w}\n")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        d.push_str(&format!("added: {k}\n"));
    }
    d
}

/// Replaces `path` with `bad`, runs `check`, then puts the original back.
fn with_damage(w: &World, path: &str, bad: Option<Vec<u8>>, check: impl FnOnce()) {
    let original = get(&w.env, path);
    match bad {
        Some(b) => {
            assert_ne!(b, original, "the damage to {path} changes nothing");
            put(&w.env, path, &b);
        }
        None => delete(&w.env, path),
    }
    check();
    put(&w.env, path, &original);
    assert_eq!(get(&w.env, path), original, "{path} was not put back");
}

/// Which object of snapshot `a` a test damages.
#[derive(Clone, Copy, Debug)]
enum Obj {
    Archive,
    Index,
    Manifest,
}

impl Obj {
    fn path(self, s: &Snap) -> String {
        match self {
            Obj::Archive => s.archive.clone(),
            Obj::Index => s.index.clone(),
            Obj::Manifest => s.manifest(),
        }
    }

    /// What a report about damage to this object must name besides the
    /// snapshot id. A damaged manifest cannot name its sources: it is the
    /// only place they are written.
    fn needles(self, s: &Snap) -> Vec<String> {
        match self {
            Obj::Archive | Obj::Index => vec![SOURCE.to_string(), self.path(s)],
            Obj::Manifest => vec![self.path(s)],
        }
    }
}

fn needles(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ----------------------------------------------------------- (a) byte flips

fn flip(b: Backend, obj: Obj) {
    let w = world(b);
    let mut f = Failures::default();
    let path = obj.path(&w.a);
    let orig = get(&w.env, &path);
    // Offset 24 lies in the header's salt (magic 6, version 1, kind 1, salt 32).
    for (label, at) in [("middle", orig.len() / 2), ("header", 24)] {
        let case = format!("{obj:?} flip {label} byte {at} of {}", orig.len());
        with_damage(&w, &path, Some(flipped(orig.clone(), at)), || {
            expect_detected(&w, &mut f, &case, &w.a.id, &needles(&obj.needles(&w.a)))
        });
    }
    f.finish();
}

macro_rules! on_every_backend {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn fs() {
                ($body)(Backend::Fs)
            }
            #[test]
            fn s3() {
                ($body)(Backend::S3)
            }
            #[test]
            fn gcs() {
                ($body)(Backend::Gcs)
            }
        }
    };
}

on_every_backend!(flipped_byte_in_archive_is_detected, |b| flip(
    b,
    Obj::Archive
));
on_every_backend!(flipped_byte_in_index_is_detected, |b| flip(b, Obj::Index));
on_every_backend!(flipped_byte_in_manifest_is_detected, |b| flip(
    b,
    Obj::Manifest
));

// ----------------------------------------------------------- (b) truncation

fn truncate(b: Backend, obj: Obj) {
    let w = world(b);
    let mut f = Failures::default();
    let path = obj.path(&w.a);
    let orig = get(&w.env, &path);
    let mut cuts = vec![("last byte cut", orig.len() - 1)];
    match obj {
        Obj::Archive => {
            // Exactly the header and one whole segment: what is left ends on a
            // segment boundary and authenticates as far as it goes.
            let boundary = HEADER_LEN + DEFAULT_SEGMENT + TAG_LEN;
            assert!(
                orig.len() > boundary + TAG_LEN,
                "archive of {} bytes does not span two segments",
                orig.len()
            );
            cuts.push(("cut at the first segment boundary", boundary));
        }
        Obj::Index | Obj::Manifest => cuts.push(("cut to the bare header", HEADER_LEN)),
    }
    for (label, len) in cuts {
        let case = format!("{obj:?} {label} ({} -> {len} bytes)", orig.len());
        with_damage(&w, &path, Some(orig[..len].to_vec()), || {
            expect_detected(&w, &mut f, &case, &w.a.id, &needles(&obj.needles(&w.a)))
        });
    }
    f.finish();
}

on_every_backend!(truncated_archive_is_detected, |b| truncate(b, Obj::Archive));
on_every_backend!(truncated_index_is_detected, |b| truncate(b, Obj::Index));
on_every_backend!(truncated_manifest_is_detected, |b| truncate(
    b,
    Obj::Manifest
));

// -------------------------------------------------------------- (c) delete

fn delete_object(b: Backend, obj: Obj) {
    let w = world(b);
    let mut f = Failures::default();
    let path = obj.path(&w.a);
    let case = format!("{obj:?} deleted");
    with_damage(&w, &path, None, || {
        expect_detected(&w, &mut f, &case, &w.a.id, &needles(&obj.needles(&w.a)))
    });
    f.finish();
}

on_every_backend!(deleted_archive_is_detected, |b| delete_object(
    b,
    Obj::Archive
));
on_every_backend!(deleted_index_is_detected, |b| delete_object(b, Obj::Index));
// The contract counts the removal of any object as damage (exit 3). A deleted
// manifest leaves the snapshot's data objects behind under data/<id>/.
on_every_backend!(deleted_manifest_is_detected, |b| delete_object(
    b,
    Obj::Manifest
));

// ---------------------------------------------------------------- (d) swaps

/// Swaps the contents of two objects by name, runs `check`, swaps back.
fn with_swap(w: &World, p: &str, q: &str, check: impl FnOnce()) {
    let (x, y) = (get(&w.env, p), get(&w.env, q));
    assert_ne!(x, y);
    put(&w.env, p, &y);
    put(&w.env, q, &x);
    check();
    put(&w.env, p, &x);
    put(&w.env, q, &y);
}

on_every_backend!(archives_of_two_snapshots_swapped_are_detected, |b| {
    let w = world(b);
    let mut f = Failures::default();
    with_swap(&w, &w.a.archive, &w.b.archive, || {
        for s in [&w.a, &w.b] {
            let case = format!(
                "archives of {} and {} swapped, checking {}",
                w.a.id, w.b.id, s.id
            );
            expect_detected(&w, &mut f, &case, &s.id, &[SOURCE, &s.archive]);
        }
    });
    f.finish();
});

on_every_backend!(archive_swapped_with_its_index_is_detected, |b| {
    let w = world(b);
    let mut f = Failures::default();
    with_swap(&w, &w.a.archive, &w.a.index, || {
        expect_detected(
            &w,
            &mut f,
            "archive and index swapped",
            &w.a.id,
            // Both objects are wrong now: whichever is read first is named.
            &[SOURCE, &format!("data/{}/", w.a.id)],
        );
    });
    f.finish();
});

on_every_backend!(manifests_of_two_snapshots_swapped_are_detected, |b| {
    let w = world(b);
    let mut f = Failures::default();
    with_swap(&w, &w.a.manifest(), &w.b.manifest(), || {
        for s in [&w.a, &w.b] {
            let case = format!("manifests swapped, checking {}", s.id);
            expect_detected(&w, &mut f, &case, &s.id, &[&s.manifest()]);
        }
    });
    f.finish();
});

// ------------------------------------------- plain verify: size and SHA-256

on_every_backend!(plain_verify_detects_damaged_archives_and_indexes, |b| {
    let w = world(b);
    let mut f = Failures::default();
    for obj in [Obj::Archive, Obj::Index] {
        let path = obj.path(&w.a);
        let orig = get(&w.env, &path);
        let damages: Vec<(&str, Option<Vec<u8>>)> = vec![
            (
                "middle byte flipped",
                Some(flipped(orig.clone(), orig.len() / 2)),
            ),
            ("last byte cut", Some(orig[..orig.len() - 1].to_vec())),
            ("deleted", None),
        ];
        for (label, bad) in damages {
            let case = format!("{obj:?} {label}");
            with_damage(&w, &path, bad, || {
                let o = run(&w.env, &["verify", &w.a.id]);
                f.outcome(&case, "verify", &o, 3, &[&w.a.id, SOURCE, &path]);
            });
        }
    }
    // Same size, other bytes: only the SHA-256 can tell.
    with_swap(&w, &w.a.archive, &w.b.archive, || {
        let o = run(&w.env, &["verify", &w.a.id]);
        f.outcome(
            "archives swapped",
            "verify",
            &o,
            3,
            &[&w.a.id, SOURCE, &w.a.archive],
        );
    });
    f.finish();
});

// ------------------------------------------------ listings with one damaged

// `snapshots` with one damaged manifest lists every readable snapshot, names
// the damaged one (stderr, and `--json` as an entry after the readable ones)
// with what to do, and exits 3.
#[test]
fn snapshots_lists_the_readable_ones_and_names_the_damaged_fs() {
    let w = world(Backend::Fs);
    let mut f = Failures::default();
    let path = w.a.manifest();
    let orig = get(&w.env, &path);
    let bad = flipped(orig.clone(), orig.len() / 2);
    with_damage(&w, &path, Some(bad), || {
        let o = run(&w.env, &["snapshots"]);
        f.outcome(
            "one damaged manifest",
            "snapshots",
            &o,
            3,
            &[&w.b.id, &w.a.id, &path, "damaged", "coffer verify --all"],
        );
        let out = w.env.cmd().args(["snapshots", "--json"]).output().unwrap();
        f.expect(
            "one damaged manifest",
            "snapshots --json exits 3",
            out.status.code() == Some(3),
            || format!("{:?}", out.status),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let want = serde_json::json!([w.b.id, w.a.id]);
        let ids: Vec<&serde_json::Value> = v
            .as_array()
            .map(|a| a.iter().map(|e| &e["id"]).collect())
            .unwrap_or_default();
        f.expect(
            "one damaged manifest",
            "--json lists the readable snapshot, then the damaged one",
            serde_json::json!(ids) == want
                && v[0].get("damaged").is_none()
                && v[0]["time"].is_string()
                && v[1]["damaged"] == true
                && v[1]["object"] == serde_json::json!(path)
                && v[1]["error"].as_str().is_some_and(|e| !e.is_empty()),
            || v.to_string(),
        );
    });
    f.finish();
}

// ------------------------------------------------------ key slots and config

/// Runs the commands that open the repository and expects each to fail with
/// `code` and a message holding `needle`, writing nothing.
fn expect_open_fails(w: &World, f: &mut Failures, case: &str, code: i32, needle: &str) {
    let env = &w.env;
    let id = w.a.id.as_str();
    let o = run(env, &["verify", "--deep", id]);
    f.outcome(case, "verify --deep", &o, code, &[needle]);
    let target = env.path(&format!("restore-{}", slug(case)));
    let t = target.display().to_string();
    let o = run(env, &["restore", id, "--target", &t]);
    f.outcome(case, "restore --target", &o, code, &[needle]);
    f.expect(
        case,
        "restore --target writes nothing",
        fs::symlink_metadata(target.join(SOURCE)).is_err() && entries(&target).is_empty(),
        || format!("{:?}", entries(&target)),
    );
    let before = describe_tree(&w.data);
    let o = run(env, &["restore", id, "--force"]);
    f.outcome(case, "restore --force (in place)", &o, code, &[needle]);
    let after = describe_tree(&w.data);
    f.expect(
        case,
        "in-place restore changes nothing",
        before == after,
        || tree_diff(&before, &after),
    );
    let o = run(env, &["dump", id, SOURCE]);
    f.outcome(case, "dump", &o, code, &[needle]);
    let o = run(env, &["snapshots"]);
    f.outcome(case, "snapshots", &o, code, &[needle]);
}

/// Byte range of the string value of `"key": "..."` in a JSON document.
fn json_value_range(doc: &[u8], key: &str) -> std::ops::Range<usize> {
    let text = std::str::from_utf8(doc).expect("utf-8 JSON");
    let pat = format!("\"{key}\": \"");
    let start = text.find(&pat).unwrap_or_else(|| panic!("{key} in {text}")) + pat.len();
    let end = start + text[start..].find('"').expect("closing quote");
    start..end
}

fn only_key_slot(env: &Env) -> String {
    let slots = list(env, "keys/");
    assert_eq!(slots.len(), 1, "{slots:?}");
    slots[0].clone()
}

on_every_backend!(damaged_key_slot_fails_to_open_with_exit_3, |b| {
    let w = world(b);
    let mut f = Failures::default();
    let slot = only_key_slot(&w.env);
    let orig = get(&w.env, &slot);
    let wrapped = json_value_range(&orig, "wrapped_key");
    let salt = json_value_range(&orig, "salt");
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        (
            "wrapped key: middle byte flipped",
            Some(flipped(orig.clone(), (wrapped.start + wrapped.end) / 2)),
            "wrong key",
        ),
        (
            "kdf salt: a byte flipped",
            Some(flipped(orig.clone(), salt.start + 3)),
            "wrong key",
        ),
        (
            "first byte flipped",
            Some(flipped(orig.clone(), 0)),
            "key slot",
        ),
        (
            "last byte cut",
            Some(orig[..orig.len() - 1].to_vec()),
            "key slot",
        ),
        ("deleted", None, "key slot"),
    ];
    for (label, bad, needle) in cases {
        let case = format!("key slot {slot}: {label}");
        with_damage(&w, &slot, bad, || {
            expect_open_fails(&w, &mut f, &case, 3, needle)
        });
    }
    f.finish();
});

on_every_backend!(damaged_config_fails_to_open, |b| {
    let w = world(b);
    let mut f = Failures::default();
    let orig = get(&w.env, "config");
    let id = json_value_range(&orig, "id");
    let cases: Vec<(&str, Option<Vec<u8>>, i32, &str)> = vec![
        // Unparseable: the config says it is damaged.
        (
            "first byte flipped",
            Some(flipped(orig.clone(), 0)),
            3,
            "config",
        ),
        (
            "last byte cut",
            Some(orig[..orig.len() - 1].to_vec()),
            3,
            "config",
        ),
        // The repository id is bound into every key slot: no slot opens.
        (
            "middle byte (in the repository id) flipped",
            Some(flipped(orig.clone(), (id.start + id.end) / 2)),
            3,
            "wrong key",
        ),
        // No config: no repository (a usage error, exit 2).
        ("deleted", None, 2, "no coffer repository"),
    ];
    for (label, bad, code, needle) in cases {
        let case = format!("config: {label}");
        with_damage(&w, "config", bad, || {
            expect_open_fails(&w, &mut f, &case, code, needle)
        });
    }
    f.finish();
});

// A config whose version field was damaged from 1 to 0 names a format version
// no coffer ever wrote: that is damage (exit 3), not "use a newer coffer".
on_every_backend!(config_version_damaged_to_0_is_an_integrity_failure, |b| {
    let w = world(b);
    let mut f = Failures::default();
    let orig = get(&w.env, "config");
    let text = String::from_utf8(orig.clone()).expect("utf-8");
    let at = text.find("\"version\": 1").expect("version field") + "\"version\": ".len();
    // '1' ^ 0x01 == '0'
    with_damage(&w, "config", Some(flipped(orig, at)), || {
        expect_open_fails(&w, &mut f, "config: version 1 -> 0", 3, "config")
    });
    f.finish();
});

// Contract guarantee 3 covers "any stored byte". Key slots and the config are
// plaintext JSON; these fields are not bound into anything that is checked.
#[test]
fn tampered_key_slot_host_is_detected_fs() {
    let w = world(Backend::Fs);
    let mut f = Failures::default();
    let slot = only_key_slot(&w.env);
    let orig = get(&w.env, &slot);
    let host = json_value_range(&orig, "host");
    assert!(!host.is_empty(), "slot has a host name");
    with_damage(&w, &slot, Some(flipped(orig, host.start)), || {
        let o = run(&w.env, &["verify", "--deep", &w.a.id]);
        f.outcome("key slot host flipped", "verify --deep", &o, 3, &[&slot]);
    });
    f.finish();
}

#[test]
fn tampered_config_created_time_is_detected_fs() {
    let w = world(Backend::Fs);
    let mut f = Failures::default();
    let orig = get(&w.env, "config");
    let created = json_value_range(&orig, "created");
    // Year 2026 -> 2027 (or 2025 -> 2024...): still a valid time.
    let at = created.start + 3;
    with_damage(&w, "config", Some(flipped(orig, at)), || {
        let o = run(&w.env, &["verify", "--deep", &w.a.id]);
        f.outcome(
            "config created flipped",
            "verify --deep",
            &o,
            3,
            &["config"],
        );
    });
    f.finish();
}

// ------------------------------------------ wrong key: refused before reading

/// Deletes every object under data/: a command that reads any data would
/// then fail with "missing", not "wrong key".
fn delete_all_data(env: &Env) {
    let objs = list(env, "data/");
    assert!(!objs.is_empty());
    for o in objs {
        delete(env, &o);
    }
    assert!(list(env, "data/").is_empty());
}

fn expect_wrong_key(
    env: &Env,
    f: &mut Failures,
    case: &str,
    id: &str,
    args: &[&str],
    vars: &[(&str, &str)],
) {
    let target = env.path(&format!("restore-{}", slug(case)));
    let t = target.display().to_string();
    let cmds: Vec<Vec<&str>> = vec![
        vec!["restore", id, "--target", &t],
        vec!["verify", "--deep", id],
        vec!["dump", id, SOURCE],
        vec!["snapshots"],
    ];
    for c in cmds {
        let mut full: Vec<&str> = args.to_vec();
        full.extend_from_slice(&c);
        let o = run_with(env, &full, vars);
        let name = c.join(" ");
        f.outcome(case, &name, &o, 3, &["wrong key"]);
        f.expect(
            case,
            &format!("`{name}` fails on the key, not on the missing data"),
            !o.text.contains("missing") && !o.text.contains("no snapshot"),
            || o.text.clone(),
        );
    }
    f.expect(case, "restore writes nothing", !target.exists(), || {
        format!("{:?}", describe_tree(&target))
    });
}

on_every_backend!(wrong_key_file_is_refused_before_any_data_is_read, |b| {
    let mut env = Env::init(b);
    let data = env.path("data");
    write(&data.join("f.txt"), b"hello\n");
    env.add_dir_source(SOURCE, &data, &[]);
    let id = env.snapshot_ok();
    let other = env.path("other-key");
    coffer::crypto::generate_key_file(&other).expect("key");
    let other = other.display().to_string();
    delete_all_data(&env);
    let mut f = Failures::default();
    // Control: with the right key the data is found missing.
    let t = env.path("control").display().to_string();
    let o = run(&env, &["restore", &id, "--target", &t]);
    f.outcome("right key, data deleted", "restore", &o, 3, &["missing"]);

    expect_wrong_key(
        &env,
        &mut f,
        "other key file, data deleted",
        &id,
        &["--key-file", &other],
        &[],
    );
    // Not even the manifests are read first.
    for m in list(&env, "snapshots/") {
        delete(&env, &m);
    }
    expect_wrong_key(
        &env,
        &mut f,
        "other key file, manifests deleted too",
        &id,
        &["--key-file", &other],
        &[],
    );
    f.finish();
});

on_every_backend!(wrong_passphrase_is_refused_before_any_data_is_read, |b| {
    let mut env = Env::new(b);
    let right = [("COFFER_PASSPHRASE", "correct horse battery staple")];
    let o = run_with(&env, &["init"], &right);
    assert_eq!(o.code, Some(0), "init with a passphrase:\n{}", o.text);
    let data = env.path("data");
    write(&data.join("f.txt"), b"hello\n");
    env.add_dir_source(SOURCE, &data, &[]);
    let out = env
        .cmd()
        .env(right[0].0, right[0].1)
        .args(["snapshot", "--json"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = snap["id"].as_str().expect("id").to_string();
    delete_all_data(&env);
    let mut f = Failures::default();
    let t = env.path("control").display().to_string();
    let o = run_with(&env, &["restore", &id, "--target", &t], &right);
    f.outcome(
        "right passphrase, data deleted",
        "restore",
        &o,
        3,
        &["missing"],
    );

    expect_wrong_key(
        &env,
        &mut f,
        "wrong passphrase",
        &id,
        &[],
        &[("COFFER_PASSPHRASE", "correct horse battery stapler")],
    );
    // A key file is no passphrase: the repository has only a passphrase slot.
    let key = env.key.display().to_string();
    expect_wrong_key(
        &env,
        &mut f,
        "key file for a passphrase repository",
        &id,
        &["--key-file", &key],
        &[],
    );
    f.finish();
});

// ------------------------------------------- (f) several sources, all or none

/// A SQLite database at `path` holding one table with `rows` rows.
fn sqlite_db(path: &Path, rows: u32) {
    let _ = fs::remove_file(path);
    let c = rusqlite::Connection::open(path).expect("open sqlite");
    c.execute_batch("CREATE TABLE t(n INTEGER)")
        .expect("create");
    for n in 0..rows {
        c.execute("INSERT INTO t VALUES (?1)", [n]).expect("insert");
    }
}

fn sqlite_rows(path: &Path) -> u32 {
    let c = rusqlite::Connection::open(path).expect("open sqlite");
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count")
}

fn add_source(env: &mut Env, toml: &str) {
    env.sources.push_str(toml);
    env.sources.push_str("\n\n");
    env.write_config();
}

/// The stored index or archive object of one source of a snapshot.
fn source_object(env: &Env, id: &str, source: &str, index: bool) -> String {
    let m = load_manifest(env, id);
    let s = m.source(source).expect("source in manifest");
    let r = if index { &s.index } else { &s.archive };
    r.as_ref().expect("object").object.clone()
}

/// Issue 9: a snapshot of two directory sources whose second index is
/// damaged. Neither `restore --target` nor an in-place `restore --force`
/// may leave the first source restored: every source is authenticated and
/// staged before any destination changes.
#[test]
fn a_failed_restore_of_two_sources_changes_neither() {
    let mut env = Env::init(Backend::Fs);
    let (media, stat) = (env.path("media"), env.path("static"));
    sample_tree(&media, None);
    sample_tree(&stat, None);
    env.add_dir_source("media", &media, &[]);
    env.add_dir_source("static", &stat, &[]);
    let id = env.snapshot_ok();
    // Both trees move on: an in-place restore would change both.
    write(&media.join("new-since.txt"), b"media moved on\n");
    write(&stat.join("new-since.txt"), b"static moved on\n");
    let before = (describe_tree(&media), describe_tree(&stat));
    let index = source_object(&env, &id, "static", true);
    let good = get(&env, &index);
    let at = good.len() - 1;
    with_damage_env(&env, &index, flipped(good, at), || {
        let t = env.path("target");
        let o = run(&env, &["restore", &id, "--target", t.to_str().unwrap()]);
        assert_eq!(o.code, Some(3), "{}", o.text);
        assert!(o.text.contains("static"), "{}", o.text);
        assert_eq!(entries(&t), Vec::<String>::new(), "{}", o.text);

        let o = run(&env, &["restore", &id, "--force"]);
        assert_eq!(o.code, Some(3), "{}", o.text);
        assert_eq!((describe_tree(&media), describe_tree(&stat)), before);
        assert_no_staging(&env.path(""));
    });
    // Undamaged, both come back.
    let o = run(&env, &["restore", &id, "--force"]);
    assert_eq!(o.code, Some(0), "{}", o.text);
    assert!(!media.join("new-since.txt").exists() && !stat.join("new-since.txt").exists());
}

/// Issue 9: a database source is restored only after every file source
/// has staged, and a second database only once its archive authenticated:
/// damage anywhere leaves every database as it was.
#[test]
fn damage_in_any_source_leaves_every_database_untouched() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    sample_tree(&media, None);
    let (a, b) = (env.path("a.sqlite3"), env.path("b.sqlite3"));
    sqlite_db(&a, 3);
    sqlite_db(&b, 3);
    add_source(
        &mut env,
        &format!("[[sources]]\nname = \"a\"\ntype = \"sqlite\"\npath = {a:?}"),
    );
    add_source(
        &mut env,
        &format!("[[sources]]\nname = \"b\"\ntype = \"sqlite\"\npath = {b:?}"),
    );
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    sqlite_db(&a, 7);
    sqlite_db(&b, 7);
    let tree = describe_tree(&media);
    // The directory's archive, then the second database's archive.
    for (source, what) in [("media", "archive"), ("b", "archive")] {
        let obj = source_object(&env, &id, source, false);
        let good = get(&env, &obj);
        let at = good.len() / 2;
        with_damage_env(&env, &obj, flipped(good, at), || {
            let o = run(&env, &["restore", &id, "--force"]);
            assert_eq!(o.code, Some(3), "{source} {what}: {}", o.text);
            assert!(o.text.contains(source), "{}", o.text);
            assert_eq!((sqlite_rows(&a), sqlite_rows(&b)), (7, 7), "{}", o.text);
            assert_eq!(describe_tree(&media), tree);
        });
    }
    let o = run(&env, &["restore", &id, "--force"]);
    assert_eq!(o.code, Some(0), "{}", o.text);
    assert_eq!((sqlite_rows(&a), sqlite_rows(&b)), (3, 3));
}

/// Issue 9: when a database's restore fails after another database was
/// committed, the directory swaps are undone, and the message names what
/// was restored and the exact commands to finish or undo.
#[test]
fn a_restore_that_stops_after_a_database_says_what_was_committed() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    sample_tree(&media, None);
    let a = env.path("a.sqlite3");
    sqlite_db(&a, 3);
    add_source(
        &mut env,
        &format!("[[sources]]\nname = \"a\"\ntype = \"sqlite\"\npath = {a:?}"),
    );
    // A command source whose restore tool fails once it has read its input.
    let flag = env.path("fail-restore");
    add_source(
        &mut env,
        &format!(
            "[[sources]]\nname = \"cmd\"\ntype = \"command\"\ndump = [\"echo\", \"hello\"]\nrestore = [\"sh\", \"-c\", \"cat >/dev/null; test ! -e {}\"]",
            flag.display()
        ),
    );
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    sqlite_db(&a, 7);
    write(&media.join("new-since.txt"), b"moved on\n");
    let tree = describe_tree(&media);
    write(&flag, b"");
    let o = run(&env, &["restore", &id, "--force"]);
    assert_eq!(o.code, Some(1), "{}", o.text);
    assert_eq!(describe_tree(&media), tree, "the swap was not undone");
    assert_eq!(sqlite_rows(&a), 3, "a was committed before cmd failed");
    for needle in [
        "stopped at source cmd",
        "Already restored: a (into",
        "Not restored (as they were before): cmd, media",
        &format!("coffer restore {id} --only cmd --only media --force"),
        "coffer restore OLDER --only a --force",
    ] {
        assert!(o.text.contains(needle), "{needle:?} not in:\n{}", o.text);
    }
    assert_no_staging(&env.path(""));
    fs::remove_file(&flag).unwrap();
    let o = run(
        &env,
        &[
            "restore", &id, "--only", "cmd", "--only", "media", "--force",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.text);
    assert!(!media.join("new-since.txt").exists());
}

/// Like `with_damage`, for a test's own `Env`.
fn with_damage_env(env: &Env, path: &str, bad: Vec<u8>, check: impl FnOnce()) {
    let original = get(env, path);
    assert_ne!(bad, original, "the damage to {path} changes nothing");
    put(env, path, &bad);
    check();
    put(env, path, &original);
}

/// No `.coffer-restore-*` staging directory is left anywhere below `dir`.
fn assert_no_staging(dir: &Path) {
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        let name = e.file_name().to_string_lossy();
        assert!(
            !name.starts_with(".coffer-restore-"),
            "left behind: {}",
            e.path().display()
        );
    }
}

/// Issue 10 item 11: a huge object planted under `snapshots/` is refused by
/// its size before it is read (a sparse file: 256 MiB that costs no disk,
/// and would cost 256 MiB of memory if read), and is listed as a damaged
/// manifest like any other: `snapshots` exit 3 listing the good one, `show`
/// of it exit 3.
#[test]
fn a_huge_planted_manifest_is_damaged_and_never_read() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    write(&data.join("a.txt"), b"a\n");
    env.add_dir_source(SOURCE, &data, &[]);
    let good = env.snapshot_ok();
    let planted = "ffffffffffffffff";
    let f = fs::File::create(Path::new(&env.url).join("snapshots").join(planted)).unwrap();
    f.set_len(256 << 20).unwrap();
    let o = run(&env, &["snapshots"]);
    assert_eq!(
        o.code,
        Some(3),
        "snapshots beside a huge manifest:\n{}",
        o.text
    );
    assert!(
        o.text.contains(&good),
        "the good snapshot is listed:\n{}",
        o.text
    );
    let needle = "more than any coffer object of its kind (at most 16777216)";
    assert!(
        o.text.contains(&format!("snapshots/{planted}")) && o.text.contains(needle),
        "{}",
        o.text
    );
    let o = run(&env, &["show", planted]);
    assert_eq!(o.code, Some(3), "show of the huge manifest:\n{}", o.text);
    assert!(o.text.contains(needle), "{}", o.text);
}

/// Issue 11 item 11: in a filesystem repository, `data/<id>` replaced by a
/// file is damage: `verify`, `restore` and `dump` exit 3 naming it, not 1.
#[test]
fn a_data_directory_replaced_by_a_file_is_damage_fs() {
    let w = world(Backend::Fs);
    let mut f = Failures::default();
    let dir = Path::new(&w.env.url).join("data").join(&w.a.id);
    let aside = Path::new(&w.env.url).join(format!("aside-{}", w.a.id));
    fs::rename(&dir, &aside).unwrap();
    fs::write(&dir, b"not a directory\n").unwrap();
    let shown = format!("data/{}", w.a.id);
    expect_detected(
        &w,
        &mut f,
        "data/<id> is a file",
        &w.a.id,
        &[&shown, "is a file where a directory must be"],
    );
    let o = run(&w.env, &["verify", &w.a.id]);
    f.outcome("data/<id> is a file", "verify", &o, 3, &[&shown]);
    fs::remove_file(&dir).unwrap();
    fs::rename(&aside, &dir).unwrap();
    let o = run(&w.env, &["verify", "--deep", &w.a.id]);
    f.outcome("repaired", "verify --deep", &o, 0, &[]);
    f.finish();
}
