//! Keys: `key generate`, `init`, passphrases (env, file, command), key slots
//! (`key add|list|remove`), wrong keys, bad key files.

use crate::common::*;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::Digest;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_code(o: &std::process::Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Writes the env's config with `repo_extra` in place of `key_file`
/// (passphrase_file / passphrase_command / nothing).
fn write_config_without_key(env: &Env, repo_extra: &str) {
    let mut t = format!("[repository]\nurl = {:?}\n{repo_extra}\n", env.url);
    if !env.options.is_empty() {
        t.push_str("[repository.options]\n");
        for (k, v) in &env.options {
            t.push_str(&format!("{k} = {v:?}\n"));
        }
    }
    t.push('\n');
    t.push_str(&env.extra);
    t.push('\n');
    t.push_str(&env.sources);
    fs::write(&env.config, t).expect("write config");
}

/// Every object under data/ and snapshots/ with its size and SHA-256.
fn data_objects(env: &Env) -> BTreeMap<String, (u64, String)> {
    let store = env.store();
    block_on(async {
        let mut out = BTreeMap::new();
        for prefix in ["data/", "snapshots/"] {
            for (path, size) in store.list(prefix).await.expect("list") {
                let bytes = store.get(&path).await.expect("get");
                assert_eq!(bytes.len() as u64, size, "{path}: listed size");
                out.insert(path, (size, hex::encode(sha2::Sha256::digest(&bytes))));
            }
        }
        out
    })
}

fn key_slots(env: &Env, key_file: Option<&Path>) -> Vec<serde_json::Value> {
    let mut c = env.cmd();
    if let Some(k) = key_file {
        c.arg("--key-file").arg(k);
    }
    let o = c.args(["key", "list", "--json"]).output().expect("run");
    assert_code(&o, 0, "key list --json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("key list JSON");
    v["keys"].as_array().expect("`keys` array").clone()
}

/// A repository with a directory source holding a couple of files.
fn env_with_data(b: Backend) -> Env {
    let mut env = Env::init(b);
    let data = env.path("data");
    write(&data.join("a.txt"), b"alpha\n");
    write(&data.join("sub/b.bin"), &pseudo_random(50_000, 3));
    env.add_dir_source("media", &data, &[]);
    env
}

fn snapshots_with_key(env: &Env, key: &Path) -> std::process::Output {
    env.cmd()
        .arg("--key-file")
        .arg(key)
        .args(["snapshots", "--json"])
        .output()
        .expect("run")
}

fn snapshots_with_passphrase(env: &Env, pass: &str) -> std::process::Output {
    write_config_without_key(env, "");
    let o = env
        .cmd()
        .env("COFFER_PASSPHRASE", pass)
        .args(["snapshots", "--json"])
        .output()
        .expect("run");
    env.write_config();
    o
}

/// `coffer key add` of a passphrase slot, given through COFFER_NEW_PASSPHRASE.
fn add_passphrase(env: &Env, pass: &str) {
    env.cmd()
        .env("COFFER_NEW_PASSPHRASE", pass)
        .args(["key", "add"])
        .assert()
        .success();
}

// ---------------------------------------------------------------- generate

#[test]
fn key_generate_writes_0600_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("new.key");
    let o = coffer_cmd()
        .current_dir(dir.path())
        .args(["key", "generate"])
        .arg(&k)
        .output()
        .unwrap();
    assert_code(&o, 0, "key generate");
    let m = fs::metadata(&k).expect("key file written");
    assert_eq!(m.permissions().mode() & 0o777, 0o600, "key file mode");
    let before = fs::read(&k).unwrap();
    assert!(!before.is_empty());

    // A second key is different.
    let k2 = dir.path().join("other.key");
    coffer_cmd()
        .args(["key", "generate"])
        .arg(&k2)
        .assert()
        .success();
    assert_ne!(
        fs::read(&k2).unwrap(),
        before,
        "two generated keys are equal"
    );

    // Overwrite refused: exit 2, file unchanged.
    let o = coffer_cmd()
        .current_dir(dir.path())
        .args(["key", "generate"])
        .arg(&k)
        .output()
        .unwrap();
    assert_code(&o, 2, "key generate over an existing file");
    assert!(
        stderr(&o).contains(&k.display().to_string()),
        "message names the file: {}",
        stderr(&o)
    );
    assert_eq!(fs::read(&k).unwrap(), before, "existing key file changed");
    assert_eq!(
        fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Also refused over any other existing file (never clobbered).
    let other = dir.path().join("notes.txt");
    fs::write(&other, b"precious").unwrap();
    let o = coffer_cmd()
        .args(["key", "generate"])
        .arg(&other)
        .output()
        .unwrap();
    assert_code(&o, 2, "key generate over an existing non-key file");
    assert_eq!(fs::read(&other).unwrap(), b"precious");
}

// ---------------------------------------------------------------- init

#[test]
fn init_twice_is_refused() {
    let env = Env::init(Backend::Fs);
    let before = data_objects(&env);
    let keys_before = key_slots(&env, None).len();
    let o = env.cmd().arg("init").output().unwrap();
    assert_code(&o, 2, "second init");
    let e = stderr(&o).to_lowercase();
    assert!(
        e.contains("exists") || e.contains("already"),
        "message says the repository exists: {e}"
    );
    assert_eq!(data_objects(&env), before);
    assert_eq!(
        key_slots(&env, None).len(),
        keys_before,
        "key slots changed"
    );

    // With another key too: refused, and that key does not open it.
    let k2 = env.path("k2");
    coffer::crypto::generate_key_file(&k2).unwrap();
    let o = env
        .cmd()
        .arg("--key-file")
        .arg(&k2)
        .arg("init")
        .output()
        .unwrap();
    assert_code(&o, 2, "init with another key over an existing repository");
    assert_code(
        &snapshots_with_key(&env, &k2),
        3,
        "the other key must not open it",
    );
}

#[test]
fn init_twice_is_refused_s3() {
    let env = Env::init(Backend::S3);
    let o = env.cmd().arg("init").output().unwrap();
    assert_code(&o, 2, "second init on S3");
    let e = stderr(&o).to_lowercase();
    assert!(e.contains("exists") || e.contains("already"), "{e}");
    env.cmd().args(["snapshots"]).assert().success();
}

// ---------------------------------------------------------------- passphrases

#[test]
fn passphrase_from_env_init_snapshot_restore() {
    let mut env = Env::new(Backend::Fs);
    let data = env.path("data");
    sample_tree(&data, None);
    env.add_dir_source("media", &data, &[]);
    write_config_without_key(&env, "");
    let pass = "correct horse battery staple";

    // No credential at all: a usage error that says what to set.
    let o = env.cmd().arg("init").output().unwrap();
    assert_code(&o, 2, "init without key or passphrase");
    assert!(stderr(&o).contains("COFFER_PASSPHRASE"), "{}", stderr(&o));

    env.cmd()
        .env("COFFER_PASSPHRASE", pass)
        .arg("init")
        .assert()
        .success();
    let o = env
        .cmd()
        .env("COFFER_PASSPHRASE", pass)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    assert_code(&o, 0, "snapshot with passphrase");
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = env.path("restored");
    env.cmd()
        .env("COFFER_PASSPHRASE", pass)
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&data, &target.join("media"));

    let slots = key_slots_env(&env, pass);
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0]["kind"], "passphrase", "{slots:?}");

    // Wrong passphrase: exit 3, "wrong key".
    let o = env
        .cmd()
        .env("COFFER_PASSPHRASE", "Correct horse battery staple")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_code(&o, 3, "wrong passphrase");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
    // The key file (which never was added) does not open it either.
    let o = snapshots_with_key(&env, &env.key);
    assert_code(&o, 3, "unrelated key file on a passphrase repository");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
}

fn key_slots_env(env: &Env, pass: &str) -> Vec<serde_json::Value> {
    let o = env
        .cmd()
        .env("COFFER_PASSPHRASE", pass)
        .args(["key", "list", "--json"])
        .output()
        .unwrap();
    assert_code(&o, 0, "key list");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["keys"].as_array().expect("keys").clone()
}

#[test]
fn passphrase_file_in_config() {
    let mut env = Env::new(Backend::Fs);
    let data = env.path("data");
    write(&data.join("x.txt"), b"x\n");
    env.add_dir_source("media", &data, &[]);
    let pf = env.path("passphrase.txt");
    fs::write(&pf, "s3cret passphrase\n").unwrap();
    write_config_without_key(
        &env,
        &format!("passphrase_file = {:?}", pf.display().to_string()),
    );
    env.cmd().arg("init").assert().success();
    let id = env.snapshot_ok();
    // The same passphrase through the environment opens it (trailing newline
    // of the file is not part of the passphrase).
    let o = env
        .cmd()
        .env("COFFER_PASSPHRASE", "s3cret passphrase")
        .args(["show", &id])
        .output()
        .unwrap();
    assert_code(&o, 0, "same passphrase via COFFER_PASSPHRASE");
    // A different passphrase file: wrong key.
    fs::write(&pf, "other passphrase\n").unwrap();
    let o = env.cmd().args(["snapshots"]).output().unwrap();
    assert_code(&o, 3, "wrong passphrase_file");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
    // A missing passphrase file: a usage error naming it.
    fs::remove_file(&pf).unwrap();
    let o = env.cmd().args(["snapshots"]).output().unwrap();
    assert_code(&o, 2, "missing passphrase_file");
    assert!(stderr(&o).contains("passphrase.txt"), "{}", stderr(&o));
}

#[test]
fn passphrase_command_in_config() {
    let mut env = Env::new(Backend::Fs);
    let data = env.path("data");
    write(&data.join("x.txt"), b"x\n");
    env.add_dir_source("media", &data, &[]);
    write_config_without_key(
        &env,
        r#"passphrase_command = ["sh", "-c", "printf 'from a command\n'"]"#,
    );
    env.cmd().arg("init").assert().success();
    let id = env.snapshot_ok();
    let o = env
        .cmd()
        .env("COFFER_PASSPHRASE", "from a command")
        .args(["show", &id])
        .output()
        .unwrap();
    assert_code(&o, 0, "same passphrase via COFFER_PASSPHRASE");

    write_config_without_key(
        &env,
        r#"passphrase_command = ["sh", "-c", "echo something else"]"#,
    );
    let o = env.cmd().args(["snapshots"]).output().unwrap();
    assert_code(&o, 3, "passphrase_command printing a wrong passphrase");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));

    // A failing command is an operational failure naming it, not a panic.
    write_config_without_key(&env, r#"passphrase_command = ["sh", "-c", "exit 7"]"#);
    let o = env.cmd().args(["snapshots"]).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert_ne!(o.status.code(), Some(101));
    assert!(stderr(&o).contains("passphrase_command"), "{}", stderr(&o));
}

/// Issue 10 item 5: passphrase_command runs without coffer's secrets in its
/// environment (here the new passphrase of `key add` and a store credential).
#[test]
fn passphrase_command_gets_none_of_coffers_secrets() {
    let env = Env::new(Backend::Fs);
    let seen = env.path("seen.env");
    write_config_without_key(
        &env,
        &format!(
            "passphrase_command = [\"sh\", \"-c\", \"env > {}; printf 'old passphrase\\\\n'\"]",
            seen.display()
        ),
    );
    env.cmd().arg("init").assert().success();
    let o = env
        .cmd()
        .env("COFFER_NEW_PASSPHRASE", "new-SECRET-2")
        .env("AWS_SECRET_ACCESS_KEY", "aws-SECRET-3")
        .env("PLAIN_SETTING", "visible")
        .args(["key", "add"])
        .output()
        .unwrap();
    assert_code(&o, 0, "key add with COFFER_NEW_PASSPHRASE");
    let text = fs::read_to_string(&seen).unwrap();
    assert!(
        !text.contains("SECRET"),
        "passphrase_command inherited a secret:\n{text}"
    );
    assert!(text.lines().any(|l| l == "PLAIN_SETTING=visible"), "{text}");
    let o = env
        .cmd()
        .env("COFFER_PASSPHRASE", "new-SECRET-2")
        .args(["key", "list"])
        .output()
        .unwrap();
    assert_code(&o, 0, "the added passphrase opens the repository");
}

// ---------------------------------------------------------------- key slots

#[test]
fn key_add_key_file_then_both_open() {
    let env = env_with_data(Backend::Fs);
    let id = env.snapshot_ok();
    let k2 = env.path("k2");
    coffer_cmd()
        .args(["key", "generate"])
        .arg(&k2)
        .assert()
        .success();
    // Before adding: k2 is a wrong key.
    let o = snapshots_with_key(&env, &k2);
    assert_code(&o, 3, "k2 before key add");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));

    let o = env
        .cmd()
        .args(["key", "add", "--new-key-file"])
        .arg(&k2)
        .output()
        .unwrap();
    assert_code(&o, 0, "key add --new-key-file");

    for k in [&env.key, &k2] {
        let o = snapshots_with_key(&env, k);
        assert_code(&o, 0, &format!("snapshots with {}", k.display()));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["id"], id.as_str());
    }
    // The new key can restore.
    let target = env.path("r2");
    env.cmd()
        .arg("--key-file")
        .arg(&k2)
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&env.path("data"), &target.join("media"));
    // And COFFER_KEY_FILE works as well as --key-file.
    env.cmd()
        .env("COFFER_KEY_FILE", &k2)
        .args(["snapshots"])
        .assert()
        .success();
}

#[test]
fn key_add_passphrase_from_env_and_from_file() {
    let env = env_with_data(Backend::Fs);
    env.snapshot_ok();

    let o = env
        .cmd()
        .env("COFFER_NEW_PASSPHRASE", "first added passphrase")
        .args(["key", "add"])
        .output()
        .unwrap();
    assert_code(&o, 0, "key add with COFFER_NEW_PASSPHRASE");

    let pf = env.path("newpass");
    fs::write(&pf, "second added passphrase\n").unwrap();
    let o = env
        .cmd()
        .args(["key", "add", "--new-passphrase-file"])
        .arg(&pf)
        .output()
        .unwrap();
    assert_code(&o, 0, "key add --new-passphrase-file");

    assert_code(
        &snapshots_with_passphrase(&env, "first added passphrase"),
        0,
        "passphrase from COFFER_NEW_PASSPHRASE opens",
    );
    assert_code(
        &snapshots_with_passphrase(&env, "second added passphrase"),
        0,
        "passphrase from --new-passphrase-file opens",
    );
    let o = snapshots_with_passphrase(&env, "third passphrase");
    assert_code(&o, 3, "a passphrase never added");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
    assert_code(
        &snapshots_with_key(&env, &env.key),
        0,
        "original key still opens",
    );

    // key add with nothing to add: usage error.
    let o = env.cmd().args(["key", "add"]).output().unwrap();
    assert_code(&o, 2, "key add with nothing to add");

    let slots = key_slots(&env, None);
    assert_eq!(slots.len(), 3, "{slots:?}");
    let kinds: Vec<&str> = slots.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| k.contains("passphrase")).count(),
        2,
        "{kinds:?}"
    );
}

#[test]
fn key_list_shows_every_slot_and_the_current_one() {
    let env = env_with_data(Backend::Fs);
    let k2 = env.path("k2");
    let k3 = env.path("k3");
    for k in [&k2, &k3] {
        coffer_cmd()
            .args(["key", "generate"])
            .arg(k)
            .assert()
            .success();
        env.cmd()
            .args(["key", "add", "--new-key-file"])
            .arg(k)
            .assert()
            .success();
    }
    let check = |key: Option<&Path>| -> String {
        let slots = key_slots(&env, key);
        assert_eq!(slots.len(), 3, "{slots:?}");
        let current: Vec<&serde_json::Value> =
            slots.iter().filter(|s| s["current"] == true).collect();
        assert_eq!(current.len(), 1, "exactly one current slot: {slots:?}");
        let ids: std::collections::BTreeSet<&str> = slots
            .iter()
            .map(|s| s["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids.len(), 3, "distinct ids: {slots:?}");
        for s in &slots {
            assert!(s["kind"].is_string() && s["created"].is_string(), "{s}");
        }
        current[0]["id"].as_str().unwrap().to_string()
    };
    let c1 = check(None);
    let c2 = check(Some(&k2));
    let c3 = check(Some(&k3));
    assert!(
        c1 != c2 && c2 != c3 && c1 != c3,
        "current follows the key used"
    );

    // Human output lists every slot id.
    let o = env.cmd().args(["key", "list"]).output().unwrap();
    assert_code(&o, 0, "key list");
    for s in key_slots(&env, None) {
        assert!(
            stdout(&o).contains(s["id"].as_str().unwrap()),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn key_remove_current_refused_other_works() {
    let env = env_with_data(Backend::Fs);
    env.snapshot_ok();
    let k2 = env.path("k2");
    coffer_cmd()
        .args(["key", "generate"])
        .arg(&k2)
        .assert()
        .success();
    env.cmd()
        .args(["key", "add", "--new-key-file"])
        .arg(&k2)
        .assert()
        .success();
    let slots = key_slots(&env, None);
    let current = slots.iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = slots.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let o = env
        .cmd()
        .args(["key", "remove", &current])
        .output()
        .unwrap();
    assert_code(&o, 2, "removing the key in use");
    assert_eq!(key_slots(&env, None).len(), 2, "a slot went away");

    let o = env
        .cmd()
        .args(["key", "remove", "no-such-slot"])
        .output()
        .unwrap();
    assert_code(&o, 2, "removing an unknown slot");

    let o = env.cmd().args(["key", "remove", &other]).output().unwrap();
    assert_code(&o, 0, "removing the other key");
    let slots = key_slots(&env, None);
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0]["id"], current.as_str());

    let o = snapshots_with_key(&env, &k2);
    assert_code(&o, 3, "removed key");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
    assert_code(&snapshots_with_key(&env, &env.key), 0, "remaining key");
}

#[test]
fn key_add_and_remove_rewrite_no_data() {
    let env = env_with_data(Backend::Fs);
    env.snapshot_ok();
    env.snapshot_ok();
    let before = data_objects(&env);
    assert!(
        before.keys().any(|k| k.starts_with("data/"))
            && before.keys().any(|k| k.starts_with("snapshots/")),
        "{before:?}"
    );
    let k2 = env.path("k2");
    coffer_cmd()
        .args(["key", "generate"])
        .arg(&k2)
        .assert()
        .success();
    env.cmd()
        .args(["key", "add", "--new-key-file"])
        .arg(&k2)
        .assert()
        .success();
    assert_eq!(data_objects(&env), before, "key add rewrote data");
    env.cmd()
        .env("COFFER_NEW_PASSPHRASE", "pp")
        .args(["key", "add"])
        .assert()
        .success();
    assert_eq!(
        data_objects(&env),
        before,
        "key add (passphrase) rewrote data"
    );
    // Remove the original key while opened with k2.
    let slots = key_slots(&env, Some(&k2));
    let orig = key_slots(&env, None)
        .into_iter()
        .find(|s| s["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(slots.len(), 3);
    env.cmd()
        .arg("--key-file")
        .arg(&k2)
        .args(["key", "remove", &orig])
        .assert()
        .success();
    assert_eq!(data_objects(&env), before, "key remove rewrote data");
    // k2 still reads every snapshot end to end.
    env.cmd()
        .arg("--key-file")
        .arg(&k2)
        .args(["verify", "--all", "--deep"])
        .assert()
        .success();
    assert_code(
        &snapshots_with_key(&env, &env.key),
        3,
        "removed original key",
    );
}

#[test]
fn key_add_and_remove_rewrite_no_data_s3() {
    let env = env_with_data(Backend::S3);
    env.snapshot_ok();
    let before = data_objects(&env);
    let k2 = env.path("k2");
    coffer_cmd()
        .args(["key", "generate"])
        .arg(&k2)
        .assert()
        .success();
    env.cmd()
        .args(["key", "add", "--new-key-file"])
        .arg(&k2)
        .assert()
        .success();
    assert_eq!(data_objects(&env), before, "key add rewrote data");
    assert_code(&snapshots_with_key(&env, &k2), 0, "k2 opens");
    let other = key_slots(&env, None)
        .into_iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.cmd().args(["key", "remove", &other]).assert().success();
    assert_eq!(data_objects(&env), before, "key remove rewrote data");
    assert_code(&snapshots_with_key(&env, &k2), 3, "removed key");
}

// ---------------------------------------------------------------- wrong keys

#[test]
fn wrong_key_file_exits_3() {
    let env = env_with_data(Backend::Fs);
    let id = env.snapshot_ok();
    let wrong = env.path("wrong.key");
    coffer::crypto::generate_key_file(&wrong).unwrap();
    for args in [
        vec!["snapshots"],
        vec!["show", id.as_str()],
        vec!["verify", "--all"],
        vec!["key", "list"],
    ] {
        let o = env
            .cmd()
            .arg("--key-file")
            .arg(&wrong)
            .args(&args)
            .output()
            .unwrap();
        assert_code(&o, 3, &format!("{args:?} with a wrong key"));
        assert!(stderr(&o).contains("wrong key"), "{args:?}: {}", stderr(&o));
    }
    // Restore with a wrong key writes nothing.
    let target = env.path("nothing");
    let o = env
        .cmd()
        .arg("--key-file")
        .arg(&wrong)
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_code(&o, 3, "restore with a wrong key");
    assert!(
        !target.exists(),
        "restore with a wrong key created the target"
    );
}

#[test]
fn wrong_passphrase_exits_3() {
    let env = env_with_data(Backend::Fs);
    env.snapshot_ok();
    add_passphrase(&env, "the right one");
    assert_code(
        &snapshots_with_passphrase(&env, "the right one"),
        0,
        "right",
    );
    let o = snapshots_with_passphrase(&env, "the wrong one");
    assert_code(&o, 3, "wrong passphrase");
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
}

#[test]
fn bad_key_file_content_is_a_usage_error_naming_the_file() {
    let env = env_with_data(Backend::Fs);
    let cases: [(&str, &[u8]); 4] = [
        ("garbage.key", b"this is not a key\n"),
        ("empty.key", b""),
        ("short.key", b"coffer-key-v1:AAAA\n"),
        ("binary.key", &[0xff, 0xfe, 0x00, 0x01, 0x80]),
    ];
    for (name, content) in cases {
        let p = env.path(name);
        fs::write(&p, content).unwrap();
        let o = env
            .cmd()
            .arg("--key-file")
            .arg(&p)
            .args(["snapshots"])
            .output()
            .unwrap();
        assert_code(&o, 2, &format!("bad key file {name}"));
        assert!(
            stderr(&o).contains(name),
            "message names {name}: {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    // A missing key file: also exit 2 naming it.
    let o = env
        .cmd()
        .arg("--key-file")
        .arg(env.path("missing.key"))
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_code(&o, 2, "missing key file");
    assert!(stderr(&o).contains("missing.key"), "{}", stderr(&o));
    // A bad key file named in the config (not on the command line).
    let p = env.path("garbage.key");
    let mut t = fs::read_to_string(&env.config).unwrap();
    t = t.replace(
        &format!("key_file = {:?}", env.key.display().to_string()),
        &format!("key_file = {:?}", p.display().to_string()),
    );
    fs::write(&env.config, t).unwrap();
    let o = env.cmd().args(["snapshots"]).output().unwrap();
    assert_code(&o, 2, "bad key file from the config");
    assert!(stderr(&o).contains("garbage.key"), "{}", stderr(&o));
}

// ----------------------------------------------------------- hostile slots

fn slot_paths(env: &Env) -> Vec<String> {
    let s = env.store();
    block_on(async move { s.list("keys/").await })
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

fn put_object(env: &Env, path: &str, data: Vec<u8>) {
    let s = env.store();
    let path = path.to_string();
    block_on(async move { s.put(&path, bytes::Bytes::from(data), false).await }).unwrap();
}

/// Issue 10: a planted slot with Argon2 costs beyond the caps is skipped
/// (with a warning), not a reason for every passphrase to fail.
#[test]
fn a_slot_with_absurd_argon2_costs_is_skipped() {
    let env = env_with_data(Backend::Fs);
    env.snapshot_ok();
    add_passphrase(&env, "the right one");
    let hostile = serde_json::json!({
        "version": 1, "id": "00000000", "kind": "passphrase",
        "created": "2026-01-01T00:00:00Z", "host": "evil",
        "kdf": {"algorithm": "argon2id", "salt": "AAAA", "m_cost_kib": 99_999_999u64, "t_cost": 3, "p_cost": 1},
        "nonce": "AAAAAAAAAAAAAAAA", "wrapped_key": "AAAA"
    });
    put_object(&env, "keys/00000000", serde_json::to_vec(&hostile).unwrap());
    let o = snapshots_with_passphrase(&env, "the right one");
    assert_code(&o, 0, "right passphrase beside a hostile slot");
    assert!(
        stderr(&o).contains("keys/00000000 was skipped") && stderr(&o).contains("Argon2"),
        "{}",
        stderr(&o)
    );
}

/// Issue 10: a huge object planted under keys/ or as `config` is refused
/// by its size, before it is read, as "not a coffer object".
#[test]
fn huge_planted_slot_and_config_are_refused_by_size() {
    let env = env_with_data(Backend::Fs);
    env.snapshot_ok();
    let repo = Path::new(&env.url).to_path_buf();
    // Sparse: 1 GiB that costs no disk, and would cost 1 GiB of memory.
    let f = fs::File::create(repo.join("keys/zzzzzzzz")).unwrap();
    f.set_len(1 << 30).unwrap();
    let o = env.cmd().args(["snapshots"]).output().expect("run");
    assert_code(&o, 0, "snapshots beside a huge key slot");
    assert!(
        stderr(&o).contains("keys/zzzzzzzz was skipped")
            && stderr(&o).contains("it is not a coffer object"),
        "{}",
        stderr(&o)
    );
    fs::remove_file(repo.join("keys/zzzzzzzz")).unwrap();
    let config = fs::read(repo.join("config")).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(repo.join("config"))
        .unwrap();
    f.set_len(1 << 30).unwrap();
    let o = env.cmd().args(["snapshots"]).output().expect("run");
    assert_code(&o, 3, "snapshots with a huge config");
    assert!(
        stderr(&o).contains("it is not a coffer object"),
        "{}",
        stderr(&o)
    );
    fs::write(repo.join("config"), config).unwrap();
}

/// Issue 10: docs/FORMAT.md says a slot with any unknown field is refused;
/// that holds inside `kdf` too.
#[test]
fn a_slot_with_an_unknown_kdf_field_is_refused() {
    let env = env_with_data(Backend::Fs);
    env.snapshot_ok();
    let slots = slot_paths(&env);
    assert_eq!(slots.len(), 1, "{slots:?}");
    let s = env.store();
    let p = slots[0].clone();
    let raw = block_on(async move { s.get(&p).await }).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["kdf"]["iterations_hint"] = serde_json::json!(1);
    put_object(&env, &slots[0], serde_json::to_vec(&v).unwrap());
    let o = snapshots_with_key(&env, &env.key);
    assert_code(&o, 3, "the only slot has an unknown kdf field");
    assert!(stderr(&o).contains("unknown field"), "{}", stderr(&o));
}

/// Issue 10 item 9, for passphrase files: a group-readable one is used, with
/// a warning naming the fix; `check` fails the key check.
#[test]
fn passphrase_file_open_to_its_group_warns_and_fails_check() {
    let env = Env::new(Backend::Fs);
    let pf = env.path("passphrase.txt");
    fs::write(&pf, "a passphrase\n").unwrap();
    fs::set_permissions(&pf, fs::Permissions::from_mode(0o640)).unwrap();
    write_config_without_key(
        &env,
        &format!("passphrase_file = {:?}", pf.display().to_string()),
    );
    let warning = format!(
        "warning: passphrase file {0} is readable by its group (mode 0640): chmod 600 {0}",
        pf.display()
    );
    let o = env.cmd().arg("init").output().unwrap();
    assert_code(&o, 0, "init with a 0640 passphrase file");
    assert!(stderr(&o).contains(&warning), "{}", stderr(&o));
    let o = env.cmd().arg("check").output().unwrap();
    assert_code(&o, 1, "check with a 0640 passphrase file");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL key opens repository: ") && l.contains("chmod 600")),
        "{out}"
    );
    // A new key file given to `key add` is checked too.
    let newkey = env.path("new.key");
    coffer::crypto::generate_key_file(&newkey).unwrap();
    fs::set_permissions(&newkey, fs::Permissions::from_mode(0o604)).unwrap();
    let o = env
        .cmd()
        .args(["key", "add", "--new-key-file"])
        .arg(&newkey)
        .output()
        .unwrap();
    assert_code(&o, 0, "key add of a 0604 key file");
    assert!(
        stderr(&o).contains(&format!(
            "warning: key file {0} is readable by others (mode 0604): chmod 600 {0}",
            newkey.display()
        )),
        "{}",
        stderr(&o)
    );
    fs::set_permissions(&pf, fs::Permissions::from_mode(0o600)).unwrap();
    let o = env.cmd().arg("check").output().unwrap();
    assert_code(&o, 0, "check with a private passphrase file");
}
