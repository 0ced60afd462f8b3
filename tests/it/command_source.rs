//! `command` sources: any program whose stdout is the backup, restored by a
//! program that reads it on stdin.

use crate::common::*;

use std::collections::BTreeSet;
use std::fs;
use std::process::Output;

use sha2::Digest;

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

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A TOML string (argv element).
fn q(s: &str) -> String {
    format!("{s:?}")
}

fn add_command_source(env: &mut Env, name: &str, dump: &[&str], restore: Option<&[&str]>) {
    let dump: Vec<String> = dump.iter().map(|s| q(s)).collect();
    env.sources.push_str(&format!(
        "[[sources]]\nname = {name:?}\ntype = \"command\"\ndump = [{}]\n",
        dump.join(", ")
    ));
    if let Some(r) = restore {
        let r: Vec<String> = r.iter().map(|s| q(s)).collect();
        env.sources
            .push_str(&format!("restore = [{}]\n", r.join(", ")));
    }
    env.sources.push('\n');
    env.write_config();
}

fn show(env: &Env, id: &str) -> serde_json::Value {
    let o = env.cmd().args(["show", id, "--json"]).output().unwrap();
    assert_code(&o, 0, "show --json");
    serde_json::from_slice(&o.stdout).expect("show --json prints JSON")
}

fn source<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {doc}"))
}

/// Every object file under the repository's data/<id>/ directory.
fn data_objects(env: &Env, id: &str) -> BTreeSet<String> {
    let dir = env.path("repo").join("data").join(id);
    match fs::read_dir(&dir) {
        Ok(d) => d
            .map(|e| format!("data/{id}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// The objects a snapshot's manifest names.
fn referenced_objects(doc: &serde_json::Value) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for src in doc["sources"].as_array().unwrap() {
        for k in ["archive", "index"] {
            if let Some(o) = src[k]["object"].as_str() {
                s.insert(o.to_string());
            }
        }
    }
    s
}

const BLOB_LEN: usize = (10 << 20) + 123_457;

/// More than 10 MiB of binary data (every byte value, runs of zeros, CR/LF):
/// three 4 MiB chunks.
fn blob() -> Vec<u8> {
    let mut b = pseudo_random(BLOB_LEN, 42);
    b[1000..5000].fill(0);
    b[6000..6256].copy_from_slice(&(0..=255u8).collect::<Vec<_>>());
    b[7000..7004].copy_from_slice(b"\r\n\r\n");
    b
}

#[test]
fn binary_output_round_trips_byte_exact_and_empty_output_too() {
    let mut env = Env::init(Backend::Fs);
    let data = blob();
    let file = env.path("blob.bin");
    write(&file, &data);
    let file = file.display().to_string();
    add_command_source(&mut env, "blob", &["cat", &file], None);
    add_command_source(&mut env, "empty", &["true"], None);
    let snap = env.snapshot_json(&[], 0);
    let id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(source(&snap, "blob")["status"], "ok");
    assert_eq!(source(&snap, "blob")["bytes_read"], BLOB_LEN as u64);
    assert_eq!(source(&snap, "empty")["status"], "ok");

    let doc = show(&env, &id);
    let d = &source(&doc, "blob")["details"];
    assert_eq!(d["main_stream"], "stdout");
    assert_eq!(d["dump_command"], serde_json::json!(["cat", file]));
    let st = &d["streams"][0];
    assert_eq!(st["name"], "stdout");
    assert_eq!(st["bytes"], BLOB_LEN as u64);
    assert_eq!(st["chunks"], 3, "10+ MiB spans three 4 MiB chunks");
    assert_eq!(st["sha256"], sha(&data));

    let o = env.cmd().args(["dump", &id, "blob"]).output().unwrap();
    assert_code(&o, 0, "dump blob");
    assert_eq!(o.stdout.len(), data.len(), "dump gives every byte back");
    assert!(o.stdout == data, "dump gives the bytes back unchanged");

    let o = env
        .cmd()
        .args(["dump", "latest", "empty"])
        .output()
        .unwrap();
    assert_code(&o, 0, "dump empty");
    assert!(o.stdout.is_empty(), "an empty output stays empty");
    assert_eq!(source(&doc, "empty")["details"]["streams"][0]["bytes"], 0);

    let o = env.cmd().args(["verify", &id, "--deep"]).output().unwrap();
    assert_code(&o, 0, "verify --deep");
}

#[test]
fn restore_feeds_the_backup_to_the_restore_command_only_with_force() {
    let mut env = Env::init(Backend::Fs);
    let data = blob();
    let file = env.path("blob.bin");
    write(&file, &data);
    let out = env.path("restored.bin");
    let restore_sh = format!("cat > '{0}.part' && mv '{0}.part' '{0}'", out.display());
    add_command_source(
        &mut env,
        "blob",
        &["cat", &file.display().to_string()],
        Some(&["sh", "-c", &restore_sh]),
    );
    let id = env.snapshot_ok();

    let o = env.cmd().args(["restore", &id]).output().unwrap();
    assert_code(&o, 2, "restore without --force");
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    assert!(!out.exists(), "nothing ran without --force");

    let o = env
        .cmd()
        .args(["restore", &id, "--force", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --dry-run");
    assert!(!out.exists(), "nothing ran for --dry-run");

    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 0, "restore --force");
    let got = fs::read(&out).expect("the restore command wrote its input");
    assert!(got == data, "the restore command got the backup byte-exact");

    // --to-database means nothing for a command source.
    let o = env
        .cmd()
        .args(["restore", &id, "--force", "--to-database", "/tmp/x"])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --to-database");
}

#[test]
fn failing_dump_command_fails_its_source_with_its_stderr_and_leaves_no_object() {
    let mut env = Env::init(Backend::Fs);
    add_command_source(&mut env, "good", &["echo", "fine"], None);
    add_command_source(
        &mut env,
        "bad",
        &[
            "sh",
            "-c",
            "echo partial output; echo dump-went-wrong-marker >&2; exit 3",
        ],
        None,
    );
    // Killed mid-way, after more than one chunk of output.
    add_command_source(
        &mut env,
        "killed",
        &["sh", "-c", "head -c 9000000 /dev/zero; kill -9 $$"],
        None,
    );
    let snap = env.snapshot_json(&[], 4);
    let id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(snap["status"], "partial");
    assert_eq!(source(&snap, "good")["status"], "ok");
    let bad = source(&snap, "bad");
    assert_eq!(bad["status"], "failed");
    let err = bad["error"].as_str().unwrap();
    assert!(
        err.contains("dump-went-wrong-marker") && err.contains("exit status 3"),
        "{err}"
    );
    let killed = source(&snap, "killed");
    assert_eq!(killed["status"], "failed");
    let err = killed["error"].as_str().unwrap();
    assert!(err.contains("signal 9"), "{err}");

    // Only the good source's archive and index are stored.
    let doc = show(&env, &id);
    assert!(source(&doc, "bad")["archive"].is_null());
    assert!(source(&doc, "killed")["archive"].is_null());
    let refs = referenced_objects(&doc);
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert_eq!(
        data_objects(&env, &id),
        refs,
        "no object of a failed source"
    );

    let o = env.cmd().args(["dump", &id, "good"]).output().unwrap();
    assert_code(&o, 0, "dump good");
    assert_eq!(o.stdout, b"fine\n");
    let o = env.cmd().args(["dump", &id, "bad"]).output().unwrap();
    assert!(o.status.code() != Some(0), "dump of a failed source fails");
}

#[test]
fn when_every_dump_command_fails_nothing_is_committed() {
    let mut env = Env::init(Backend::Fs);
    add_command_source(
        &mut env,
        "bad",
        &["sh", "-c", "echo lonely-failure-marker >&2; exit 1"],
        None,
    );
    let o = env.cmd().args(["snapshot"]).output().unwrap();
    assert_code(&o, 1, "snapshot of a failing source");
    let err = text(&o.stderr);
    assert!(
        err.contains("bad") && err.contains("lonely-failure-marker"),
        "{err}"
    );
    let o = env.cmd().args(["snapshots", "--json"]).output().unwrap();
    assert_code(&o, 0, "snapshots");
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let left: Vec<_> = walkdir::WalkDir::new(env.path("repo/data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(left.is_empty(), "objects left behind: {left:?}");
}

#[test]
fn failing_restore_command_exits_1_with_its_stderr() {
    let mut env = Env::init(Backend::Fs);
    add_command_source(
        &mut env,
        "fixtures",
        &["echo", "data"],
        Some(&[
            "sh",
            "-c",
            "cat > /dev/null; echo restore-went-wrong-marker >&2; exit 5",
        ]),
    );
    let id = env.snapshot_ok();
    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 1, "failing restore command");
    let err = text(&o.stderr);
    assert!(
        err.contains("restore-went-wrong-marker") && err.contains("exit status 5"),
        "{err}"
    );
    assert!(err.contains("fixtures") && err.contains(&id), "{err}");
}

/// The restore command of the damage test: copies stdin to OUT.part and
/// renames it to OUT only once stdin ended cleanly (a command that is killed,
/// or whose read fails, never renames).
pub const CAREFUL_RESTORE: &str = r#"
import os, sys
out = sys.argv[1]
with open(out + ".part", "wb") as f:
    while True:
        b = sys.stdin.buffer.read1(1 << 16)
        if not b:
            break
        f.write(b)
os.rename(out + ".part", out)
"#;

#[test]
fn damaged_archive_never_reaches_the_restore_command_as_a_clean_end() {
    let mut env = Env::init(Backend::Fs);
    let data = blob();
    let file = env.path("blob.bin");
    write(&file, &data);
    let script = env.path("careful_restore.py");
    write(&script, CAREFUL_RESTORE.as_bytes());
    let out = env.path("restored.bin");
    add_command_source(
        &mut env,
        "blob",
        &["cat", &file.display().to_string()],
        Some(&[
            "python3",
            &script.display().to_string(),
            &out.display().to_string(),
        ]),
    );
    let id = env.snapshot_ok();
    let doc = show(&env, &id);
    let archive = source(&doc, "blob")["archive"]["object"]
        .as_str()
        .unwrap()
        .to_string();
    let obj = env.path("repo").join(&archive);
    let mut bytes = fs::read(&obj).unwrap();
    // Past the first chunk: the command has already received data when the
    // damage is found.
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x55;
    fs::write(&obj, &bytes).unwrap();

    let o = env.cmd().args(["verify", &id, "--deep"]).output().unwrap();
    assert_code(&o, 3, "verify --deep of a damaged archive");

    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 3, "restore --force of a damaged archive");
    assert!(text(&o.stderr).contains(&id), "{}", text(&o.stderr));
    // Give a command that saw a clean end the time to rename.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !out.exists(),
        "the restore command saw a clean end of input from a damaged archive"
    );
    // It did get the authenticated chunks before the damage (a 4 MiB chunk
    // cannot sit in a pipe): it was stopped mid-way, not never started.
    let part = fs::metadata(env.path("restored.bin.part")).map_or(0, |m| m.len());
    assert!(part >= 1 << 20, "the restore command got {part} bytes");

    let o = env.cmd().args(["dump", &id, "blob"]).output().unwrap();
    assert_code(&o, 3, "dump of a damaged archive");
}

#[test]
fn restore_of_a_source_without_restore_command_says_to_use_dump() {
    let mut env = Env::init(Backend::Fs);
    add_command_source(&mut env, "fixtures", &["echo", "data"], None);
    let id = env.snapshot_ok();
    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 2, "restore without a restore command");
    assert!(
        text(&o.stderr).contains("coffer dump"),
        "{}",
        text(&o.stderr)
    );
}
