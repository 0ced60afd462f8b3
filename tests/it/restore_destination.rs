//! Where an in-place restore goes (issue 10 item 3): to the paths of the
//! current config, never to the path a snapshot records, which any host that
//! shares the key could have written. A path that moved is said so; a source
//! the config no longer has is refused in place; restore says first whose
//! snapshot it is restoring.

use crate::common::*;

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

/// `coffer check` passes and reports left-overs of killed restores: that
/// warning line.
fn check_leftover_line(env: &Env) -> String {
    let o = run(env, &["check"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    out.lines()
        .find(|l| l.starts_with("warn") && l.contains("left-overs of killed restores"))
        .unwrap_or_else(|| panic!("check reports no left-over of a killed restore:\n{out}"))
        .to_string()
}

/// Issue 11 item 2: a killed restore leaves its staging directory beside
/// the destination (or inside `--target DIR`). `check` reports it; the next
/// restore there removes those it can prove abandoned (its name carries a
/// pid and host: this host, a pid that no longer runs) and says so; it
/// leaves the rest (a running pid, another host, no owner, a symlink).
#[test]
fn a_killed_restores_staging_directory_is_removed_by_the_next_restore() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("site/media");
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    let site = env.path("site");
    let tag = coffer::abandoned::host_tag();
    let dead = dead_pid();
    let other_tag = if tag == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let abandoned = site.join(format!(".coffer-restore-{dead}-{tag}-a1b2c3"));
    let running = site.join(format!(
        ".coffer-restore-{}-{tag}-d4e5f6",
        std::process::id()
    ));
    let elsewhere = site.join(format!(".coffer-restore-{dead}-{other_tag}-0a0b0c"));
    let legacy = site.join(".coffer-restore-9f8e7d6c5b4a");
    for d in [&abandoned, &running, &elsewhere, &legacy] {
        write(&d.join("half/restored.bin"), &pseudo_random(10_000, 3));
    }
    let outside = env.path("outside");
    write(&outside.join("keep.txt"), b"not the restore's\n");
    let link = site.join(format!(".coffer-restore-{dead}-{tag}-111111"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let line = check_leftover_line(&env);
    for d in [&abandoned, &elsewhere, &legacy] {
        assert!(line.contains(&d.display().to_string()), "{line}");
    }
    // A restore in progress is no left-over.
    assert!(!line.contains(&running.display().to_string()), "{line}");
    assert!(line.contains("no longer runs"), "{line}");
    let o = run(&env, &["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["warning"] == true && c["ok"] == true),
        "{v}"
    );

    let o = run(&env, &["restore", &id, "--force"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !abandoned.exists(),
        "the abandoned staging directory stayed"
    );
    assert!(
        err.contains(&abandoned.display().to_string()) && err.contains("killed restore"),
        "the restore did not say what it removed: {err}"
    );
    for d in [&running, &elsewhere, &legacy] {
        assert!(d.join("half/restored.bin").exists(), "{} went", d.display());
    }
    assert!(std::fs::symlink_metadata(&link).is_ok(), "the symlink went");
    assert!(outside.join("keep.txt").exists(), "a symlink was followed");

    // Inside --target DIR, where such a restore stages.
    let target = env.path("target");
    let dead = dead_pid();
    let in_target = target.join(format!(".coffer-restore-{dead}-{tag}-abcdef"));
    write(&in_target.join("x"), b"x");
    let o = run(
        &env,
        &["restore", &id, "--target", target.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        !in_target.exists(),
        "the staging directory in --target stayed"
    );
    assert_eq!(describe_tree(&target.join("media")), describe_tree(&media));
}

/// The same with a real `kill -9`: the restore is killed as soon as its
/// staging directory exists; the next restore removes it and says so.
#[test]
fn a_restore_killed_with_sigkill_leaves_nothing_after_the_next_restore() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("site/media");
    write(&media.join("big.bin"), &pseudo_random(32 << 20, 5));
    write(&media.join("small.txt"), b"small\n");
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    let site = env.path("site");
    let staging = || -> Vec<String> {
        fs::read_dir(&site)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".coffer-restore-"))
            .collect()
    };
    let mut child = env
        .spawn_cmd()
        .args(["restore", &id, "--force"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if !staging().is_empty() {
            child.kill().unwrap();
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it could be killed"
        );
        assert!(std::time::Instant::now() < deadline, "no staging directory");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.wait().unwrap();
    let left = staging();
    assert_eq!(left.len(), 1, "{left:?}");

    let o = run(&env, &["restore", &id, "--force"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&left[0]) && err.contains("killed restore"),
        "{err}"
    );
    assert_eq!(
        staging(),
        Vec::<String>::new(),
        "a staging directory stayed"
    );
    assert_eq!(
        fs::read(media.join("small.txt")).unwrap(),
        b"small\n".to_vec()
    );
}

/// A restore into a mount point moves the old content aside into
/// `.coffer-old-<pid>-<host>-*` inside it; a killed one leaves that
/// directory holding the old content. `check` reports it (and says the
/// next restore of the mount point removes it); a running restore's is no
/// left-over.
#[test]
fn check_reports_the_old_content_a_killed_mount_point_restore_moved_aside() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("site/media");
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    let tag = coffer::abandoned::host_tag();
    let dead = dead_pid();
    let abandoned = media.join(format!(".coffer-old-{dead}-{tag}-a1b2c3"));
    let running = media.join(format!(".coffer-old-{}-{tag}-d4e5f6", std::process::id()));
    for d in [&abandoned, &running] {
        write(&d.join("old.bin"), &pseudo_random(1000, 5));
    }
    let line = check_leftover_line(&env);
    assert!(line.contains(&abandoned.display().to_string()), "{line}");
    assert!(line.contains("moved aside"), "{line}");
    assert!(!line.contains(&running.display().to_string()), "{line}");
    // Only reported: check never removes anything.
    assert!(abandoned.join("old.bin").exists());
}

/// `restore --json` lists the left-overs it removed (`cleaned`), as the
/// text run says them on stderr.
#[test]
fn restore_json_lists_the_left_overs_it_removed() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("site/media");
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    let tag = coffer::abandoned::host_tag();
    let abandoned = env
        .path("site")
        .join(format!(".coffer-restore-{}-{tag}-c0ffee", dead_pid()));
    write(&abandoned.join("half.bin"), &pseudo_random(1000, 9));
    let o = run(&env, &["restore", &id, "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let cleaned = v["cleaned"].as_array().expect("cleaned");
    assert_eq!(cleaned.len(), 1, "{v}");
    assert!(
        cleaned[0]
            .as_str()
            .unwrap()
            .contains(&abandoned.display().to_string()),
        "{v}"
    );
    assert!(!abandoned.exists());
    // Nothing left: the next restore cleans nothing.
    let o = run(&env, &["restore", &id, "--force", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["cleaned"], serde_json::json!([]), "{v}");
}
