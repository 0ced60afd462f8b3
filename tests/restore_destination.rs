//! Where an in-place restore goes (issue 10 item 3): to the paths of the
//! current config, never to the path a snapshot records, which any host that
//! shares the key could have written. A path that moved is said so; a source
//! the config no longer has is refused in place; restore says first whose
//! snapshot it is restoring.

mod common;
use common::*;

use std::fs;
use std::process::Output;

fn run(env: &Env, args: &[&str]) -> Output {
    env.cmd().args(args).output().expect("run coffer")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn in_place_restore_goes_to_the_configured_path_not_the_recorded_one() {
    let mut env = Env::init(Backend::Fs);
    let recorded = env.path("old/media");
    sample_tree(&recorded, None);
    env.add_dir_source("media", &recorded, &[]);
    let id = env.snapshot_ok();
    let snapshot_tree = describe_tree(&recorded);
    // The recorded path changes after the snapshot, and must stay so.
    write(&recorded.join("written-since.txt"), b"keep me\n");
    let recorded_now = describe_tree(&recorded);

    let configured = env.path("new/media");
    write(&configured.join("stale.txt"), b"stale\n");
    env.sources.clear();
    env.add_dir_source("media", &configured, &[]);

    let o = run(&env, &["restore", &id, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(describe_tree(&configured), snapshot_tree);
    assert_eq!(
        describe_tree(&recorded),
        recorded_now,
        "the recorded path was written"
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("warning:")
            && err.contains(&recorded.display().to_string())
            && err.contains(&configured.display().to_string()),
        "no warning that the path moved: {err}"
    );

    let o = run(&env, &["restore", &id, "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let w = v["warnings"].as_array().expect("warnings");
    assert!(
        w.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains(&recorded.display().to_string())),
        "{v}"
    );
    assert_eq!(
        v["sources"][0]["destination"],
        configured.display().to_string()
    );
}

#[test]
fn in_place_restore_of_a_source_no_longer_configured_is_refused() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    write(&media.join("written-since.txt"), b"keep me\n");
    let before = describe_tree(&media);
    env.sources.clear();
    env.add_dir_source("other", &env.path("other"), &[]);

    let o = run(&env, &["restore", &id, "--force"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("media") && err.contains("--target"),
        "the refusal does not say what to do: {err}"
    );
    assert_eq!(describe_tree(&media), before, "the recorded path changed");

    let t = env.path("t");
    let o = run(
        &env,
        &["restore", &id, "--target", &t.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!t.join("media/written-since.txt").exists());
    assert!(t.join("media/a/b/c/deep.txt").is_file());
}

#[test]
fn a_files_restore_in_place_writes_only_the_configured_paths() {
    let mut env = Env::init(Backend::Fs);
    let keep = env.path("etc/app.env");
    let dropped = env.path("etc/old.env");
    write(&keep, b"kept\n");
    write(&dropped, b"dropped\n");
    env.add_files_source("env", &[&keep, &dropped]);
    let id = env.snapshot_ok();
    fs::remove_file(&keep).unwrap();
    fs::remove_file(&dropped).unwrap();
    env.sources.clear();
    env.add_files_source("env", &[&keep]);

    let o = run(&env, &["restore", &id, "--force"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(fs::read(&keep).unwrap(), b"kept\n");
    assert!(
        !dropped.exists(),
        "a file no longer in the config was restored"
    );
    assert!(
        err.contains("warning:") && err.contains(&dropped.display().to_string()),
        "no warning names the file left out: {err}"
    );
}

#[test]
fn restore_says_first_which_host_and_time_the_snapshot_is_from() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("media");
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    let listed = run(&env, &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let host = snaps[0]["host"].as_str().expect("host").to_string();

    let o = run(&env, &["restore", &id, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let first = out.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!("restoring snapshot {id} taken on {host} at ")),
        "first line: {first:?}"
    );

    let o = run(&env, &["restore", &id, "--force", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["host"], host.as_str());
    assert_eq!(v["time"], snaps[0]["time"]);
}
