//! `coffer prune` against real repositories (filesystem, and S3 on the moto
//! test server): retention rules on snapshots of chosen times (taken through
//! the library: the CLI cannot choose a snapshot's time),
//! `--dry-run`, flags over `[retention]`, the refusal without rules, damaged
//! manifests, left-overs of interrupted snapshots inside and past the grace
//! period, and two snapshots plus a prune running at once losing nothing.

use crate::common::*;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, SystemTime};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_of(o: &Output, code: i32, what: &str) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}):\n{}", stdout(o)))
}

/// A repository with one small directory source.
fn world(b: Backend) -> Env {
    let mut env = Env::init(b);
    let data = env.path("data");
    write(&data.join("a.txt"), b"alpha\n");
    write(&data.join("sub/b.bin"), &pseudo_random(50_000, 7));
    env.add_dir_source("files", &data, &[]);
    env
}

/// Takes a snapshot recorded at `time` (RFC 3339) with `tags`; its id.
fn snap_at(env: &Env, time: &str, tags: &[&str]) -> String {
    snapshot_at(env, time, tags)
}

/// Issue 10 item 15: the binary offers no way to date a snapshot: the
/// variable that once did (in every build, release included) is ignored,
/// so a future-dated snapshot cannot stay `latest` and keep `check
/// --max-age` green.
#[test]
fn the_cli_cannot_choose_a_snapshots_time() {
    let env = world(Backend::Fs);
    let before = chrono::Utc::now();
    let o = env
        .cmd()
        .env("COFFER_TEST_SNAPSHOT_TIME", "2099-01-01T00:00:00Z")
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    let v = json_of(&o, 0, "snapshot with COFFER_TEST_SNAPSHOT_TIME set");
    let t = chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap();
    let after = chrono::Utc::now();
    // `--json` shows whole seconds.
    let slack = chrono::Duration::seconds(1);
    assert!(
        before - slack <= t && t <= after + slack,
        "the snapshot is recorded at {t}, not now ({before} .. {after})"
    );
}

fn listed(env: &Env) -> Vec<String> {
    let o = env.cmd().args(["snapshots", "--json"]).output().unwrap();
    json_of(&o, 0, "snapshots")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn objects(env: &Env, prefix: &str) -> BTreeSet<String> {
    let store = env.store();
    block_on(store.list(prefix))
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

fn data_of(env: &Env, id: &str) -> BTreeSet<String> {
    objects(env, &format!("data/{id}/"))
}

fn prune_json(env: &Env, args: &[&str], code: i32) -> serde_json::Value {
    let o = env
        .cmd()
        .args(["prune", "--json"])
        .args(args)
        .output()
        .unwrap();
    json_of(&o, code, &format!("prune {args:?}"))
}

/// id -> (action, reasons) from a prune report.
fn verdicts(v: &serde_json::Value) -> Vec<(String, String, Vec<String>)> {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
                s["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn verify_all_deep(env: &Env) {
    let o = env
        .cmd()
        .args(["verify", "--all", "--deep"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify --all --deep after prune:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn refuses_to_run_without_any_rule() {
    let env = world(Backend::Fs);
    let id = env.snapshot_ok();
    let o = env.cmd().arg("prune").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no retention rule") && stderr(&o).contains("--keep-last"),
        "{}",
        stderr(&o)
    );
    // Rules of 0 are no rules either.
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "0", "--keep-daily", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = env
        .cmd()
        .args(["prune", "--keep-within", "soon"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--keep-within") && stderr(&o).contains("soon"),
        "{}",
        stderr(&o)
    );
    assert_eq!(listed(&env), vec![id.clone()]);
    assert!(!data_of(&env, &id).is_empty());
}

#[test]
fn daily_weekly_and_tag_rules_on_chosen_times_then_dry_run_and_real_run() {
    let env = world(Backend::Fs);
    // Two per day on 1-3 March 2026 (Sun 1 March is in ISO week 9, Mon 2
    // and Tue 3 in week 10), and an old tagged one.
    let old = snap_at(&env, "2025-06-01T12:00:00Z", &["pre-migration"]);
    let d1a = snap_at(&env, "2026-03-01T01:00:00Z", &[]);
    let d1b = snap_at(&env, "2026-03-01T13:00:00Z", &[]);
    let d2a = snap_at(&env, "2026-03-02T01:00:00Z", &[]);
    let d2b = snap_at(&env, "2026-03-02T13:00:00Z", &[]);
    let d3a = snap_at(&env, "2026-03-03T01:00:00Z", &[]);
    let d3b = snap_at(&env, "2026-03-03T13:00:00Z", &[]);
    let before_objects = objects(&env, "");

    let args = [
        "--keep-daily",
        "2",
        "--keep-weekly",
        "2",
        "--keep-tag",
        "pre-migration",
    ];
    let mut dry: Vec<&str> = args.to_vec();
    dry.push("--dry-run");
    let v = prune_json(&env, &dry, 0);
    assert_eq!(v["ok"], true);
    assert_eq!(v["dry_run"], true);
    let want = vec![
        (old.clone(), "keep", vec!["keep-tag pre-migration"]),
        (d1a.clone(), "remove", vec![]),
        // the newest of ISO week 9
        (d1b.clone(), "keep", vec!["keep-weekly"]),
        (d2a.clone(), "remove", vec![]),
        (d2b.clone(), "keep", vec!["keep-daily"]),
        (d3a.clone(), "remove", vec![]),
        (d3b.clone(), "keep", vec!["keep-daily", "keep-weekly"]),
    ];
    let want: Vec<(String, String, Vec<String>)> = want
        .into_iter()
        .map(|(i, a, r)| (i, a.to_string(), r.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(verdicts(&v), want);
    // 3 removed snapshots: a manifest and two data objects each.
    assert_eq!(v["removed_objects"], 9);
    assert_eq!(v["leftovers_removed"], 0);
    assert_eq!(
        objects(&env, ""),
        before_objects,
        "--dry-run deleted something"
    );
    assert_eq!(listed(&env).len(), 7);

    // The human table names every snapshot, its action and its rules.
    let o = env.cmd().arg("prune").args(dry.clone()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for line in [
        format!("{old}  2025-06-01 12:00:00   keep    keep-tag pre-migration"),
        format!("{d1a}  2026-03-01 01:00:00   remove  "),
        format!("{d3b}  2026-03-03 13:00:00   keep    keep-daily, keep-weekly"),
    ] {
        assert!(
            text.lines().any(|l| l.trim_end() == line.trim_end()),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("dry run, nothing deleted"), "{text}");
    assert_eq!(objects(&env, ""), before_objects);

    let v = prune_json(&env, &args, 0);
    assert_eq!(v["dry_run"], false);
    assert_eq!(verdicts(&v), want);
    assert_eq!(v["removed_objects"], 9);
    let now: BTreeSet<String> = listed(&env).into_iter().collect();
    let kept: BTreeSet<String> = [&old, &d1b, &d2b, &d3b]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(now, kept);
    for gone in [&d1a, &d2a, &d3a] {
        assert!(data_of(&env, gone).is_empty(), "data of {gone} left behind");
        assert!(!env.path(&format!("repo/snapshots/{gone}")).exists());
    }
    for k in &kept {
        assert_eq!(data_of(&env, k).len(), 2, "data of kept {k}");
    }
    verify_all_deep(&env);

    // A second run finds nothing more to remove.
    let v = prune_json(&env, &args, 0);
    assert_eq!(v["removed_objects"], 0);
    assert!(verdicts(&v).iter().all(|(_, a, _)| a == "keep"));
}

#[test]
fn config_rules_apply_and_flags_override_them() {
    let mut env = world(Backend::Fs);
    env.extra = "[retention]\nkeep_last = 1\n".into();
    env.write_config();
    let a = snap_at(&env, "2026-01-01T00:00:00Z", &[]);
    let b = snap_at(&env, "2026-01-02T00:00:00Z", &[]);
    let c = snap_at(&env, "2026-01-03T00:00:00Z", &[]);

    // The flag replaces keep_last of the config.
    let v = prune_json(&env, &["--keep-last", "2", "--dry-run"], 0);
    let acts: Vec<String> = verdicts(&v).into_iter().map(|x| x.1).collect();
    assert_eq!(acts, ["remove", "keep", "keep"]);

    // Without flags, the config's keep_last = 1 applies.
    let v = prune_json(&env, &[], 0);
    let vs = verdicts(&v);
    assert_eq!(vs[2], (c.clone(), "keep".into(), vec!["keep-last".into()]));
    assert_eq!(vs[0].1, "remove");
    assert_eq!(vs[1].1, "remove");
    assert_eq!(listed(&env), vec![c]);
    assert!(data_of(&env, &a).is_empty() && data_of(&env, &b).is_empty());
}

#[test]
fn keep_within_counts_back_from_the_newest_snapshot_not_from_now() {
    let env = world(Backend::Fs);
    // Years ago: relative to now, nothing would be within 30 days.
    let a = snap_at(&env, "2021-01-01T00:00:00Z", &[]);
    let b = snap_at(&env, "2021-02-20T00:00:00Z", &[]);
    let c = snap_at(&env, "2021-03-01T00:00:00Z", &[]);
    let v = prune_json(&env, &["--keep-within", "30d"], 0);
    assert_eq!(
        verdicts(&v),
        vec![
            (a, "remove".into(), vec![]),
            (b.clone(), "keep".into(), vec!["keep-within 30d".into()]),
            (c.clone(), "keep".into(), vec!["keep-within 30d".into()]),
        ]
    );
    assert_eq!(listed(&env), vec![b, c]);
}

/// A snapshot whose manifest never got written: its data objects, no manifest.
fn interrupted(env: &Env) -> (String, BTreeSet<String>) {
    let id = env.snapshot_ok();
    let data = data_of(env, &id);
    assert!(!data.is_empty());
    let store = env.store();
    block_on(store.delete(&format!("snapshots/{id}"))).unwrap();
    (id, data)
}

fn age_files(env: &Env, objs: &BTreeSet<String>, ago: Duration) {
    let t = filetime::FileTime::from_system_time(SystemTime::now() - ago);
    for o in objs {
        filetime::set_file_mtime(env.path(&format!("repo/{o}")), t).unwrap();
    }
}

#[test]
fn leftovers_older_than_the_grace_period_go_younger_ones_stay() {
    let env = world(Backend::Fs);
    let kept = env.snapshot_ok();
    let (old_id, old_objs) = interrupted(&env);
    let (young_id, young_objs) = interrupted(&env);
    // One object of a third left-over is fresh: a snapshot still writing.
    let (mixed_id, mixed_objs) = interrupted(&env);
    age_files(&env, &old_objs, Duration::from_secs(25 * 3600));
    age_files(&env, &young_objs, Duration::from_secs(23 * 3600));
    let first = mixed_objs.iter().next().unwrap().clone();
    age_files(&env, &[first].into(), Duration::from_secs(48 * 3600));

    let v = prune_json(&env, &["--keep-last", "10", "--dry-run"], 0);
    assert_eq!(v["leftovers_removed"], old_objs.len() as u64);
    assert_eq!(
        data_of(&env, &old_id),
        old_objs,
        "dry run deleted a left-over"
    );

    let v = prune_json(&env, &["--keep-last", "10"], 0);
    assert_eq!(v["removed_objects"], 0);
    assert_eq!(v["leftovers_removed"], old_objs.len() as u64);
    let lo = v["leftovers"].as_array().unwrap();
    let action = |id: &str| {
        lo.iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("left-over {id} not reported: {v}"))["action"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(action(&old_id), "remove");
    assert_eq!(action(&young_id), "keep");
    assert_eq!(action(&mixed_id), "keep");
    assert!(data_of(&env, &old_id).is_empty());
    assert_eq!(data_of(&env, &young_id), young_objs);
    assert_eq!(data_of(&env, &mixed_id), mixed_objs);
    assert_eq!(listed(&env), vec![kept]);
    verify_all_deep(&env);

    // A shorter --grace takes the younger ones too; the human report says so.
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "10", "--grace", "1h"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("left-over data/{young_id}/")),
        "{}",
        stdout(&o)
    );
    assert!(data_of(&env, &young_id).is_empty());
    assert_eq!(
        data_of(&env, &mixed_id),
        mixed_objs,
        "a fresh object must keep its prefix"
    );
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "1", "--grace", "a while"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--grace"), "{}", stderr(&o));
}

/// Issue 11 item 1: a killed snapshot into a filesystem repository leaves
/// object_store's upload staging files (`<object>#<n>`), which no listing
/// shows. Prune removes those older than the grace period, says how many
/// bytes that freed, keeps fresh ones, and follows no symlink.
#[test]
fn upload_temp_files_older_than_the_grace_period_are_removed() {
    let env = world(Backend::Fs);
    let kept = env.snapshot_ok();
    let obj = data_of(&env, &kept).into_iter().next().unwrap();
    let repo = env.path("repo");
    let old_a = repo.join(format!("{obj}#1"));
    let old_b = repo.join(format!("data/{}/0123abcd#27", "ffffffffffffffff"));
    let old_c = repo.join(format!("snapshots/{kept}#2"));
    let fresh = repo.join(format!("{obj}#3"));
    write(&old_a, &vec![1u8; 100_000]);
    write(&old_b, &vec![2u8; 20_000]);
    write(&old_c, &vec![3u8; 300]);
    write(&fresh, &vec![4u8; 5_000]);
    // A symlinked directory in the repository leads outside: what is there
    // is not the repository's to remove, whatever its name.
    let outside = env.path("outside");
    write(&outside.join("victim#1"), b"not yours");
    std::os::unix::fs::symlink(&outside, repo.join("data/link")).unwrap();
    let two_hours =
        filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(7200));
    for p in [&old_a, &old_b, &old_c, &outside.join("victim#1")] {
        filetime::set_file_mtime(p, two_hours).unwrap();
    }

    let v = prune_json(
        &env,
        &["--keep-last", "10", "--grace", "1h", "--dry-run"],
        0,
    );
    assert_eq!(v["temp_files"]["removed"], 3, "{v}");
    assert!(
        old_a.exists() && old_b.exists() && old_c.exists(),
        "a dry run deleted"
    );

    let v = prune_json(&env, &["--keep-last", "10", "--grace", "1h"], 0);
    let t = &v["temp_files"];
    assert_eq!(t["removed"], 3, "{v}");
    assert_eq!(t["removed_bytes"], 120_300, "{v}");
    assert_eq!(t["kept"], 1, "{v}");
    assert_eq!(t["kept_bytes"], 5_000, "{v}");
    assert!(!old_a.exists() && !old_b.exists() && !old_c.exists());
    assert!(
        fresh.exists(),
        "a temp file younger than the grace period went"
    );
    assert!(
        outside.join("victim#1").exists(),
        "prune followed a symlink"
    );

    let o = env
        .cmd()
        .args(["prune", "--keep-last", "10", "--grace", "0s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("removed 1 upload temp files of interrupted writes (5.0 kB)"),
        "{}",
        stdout(&o)
    );
    assert!(!fresh.exists());
    assert!(
        outside.join("victim#1").exists(),
        "prune followed a symlink"
    );
    assert_eq!(listed(&env), vec![kept]);
    std::fs::remove_file(repo.join("data/link")).unwrap();
    verify_all_deep(&env);
}

#[test]
fn a_damaged_manifest_stops_prune_before_it_deletes_anything() {
    let env = world(Backend::Fs);
    let a = snap_at(&env, "2026-01-01T00:00:00Z", &[]);
    let b = snap_at(&env, "2026-01-02T00:00:00Z", &[]);
    let (_, left) = interrupted(&env);
    age_files(&env, &left, Duration::from_secs(48 * 3600));
    let m = env.path(&format!("repo/snapshots/{a}"));
    let mut bytes = std::fs::read(&m).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&m, bytes).unwrap();
    let before = objects(&env, "");
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("snapshot {a}")) && err.contains("nothing was deleted"),
        "{err}"
    );
    assert_eq!(objects(&env, ""), before);
    let v = prune_json(&env, &["--keep-last", "1"], 3);
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains(&a));
    assert!(!data_of(&env, &b).is_empty());
}

#[test]
fn two_snapshots_and_a_prune_at_once_lose_nothing() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    // Big enough that the snapshots are still writing while prune runs.
    for i in 0..6 {
        write(
            &data.join(format!("f{i}.bin")),
            &pseudo_random(3_000_000, i),
        );
    }
    env.add_dir_source("files", &data, &[]);
    let old: Vec<String> = (1..=3)
        .map(|d| snap_at(&env, &format!("2020-01-0{d}T00:00:00Z"), &[]))
        .collect();
    for round in 0..3 {
        let spawn = |args: &[&str]| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"));
            for (k, _) in std::env::vars() {
                if k.starts_with("COFFER_") && !k.starts_with("COFFER_TEST_") || k == "RUST_LOG" {
                    c.env_remove(k);
                }
            }
            c.current_dir(env.dir.path())
                .arg("--config")
                .arg(&env.config)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let s1 = spawn(&["snapshot", "--json"]);
        let s2 = spawn(&["snapshot", "--json"]);
        // keep-within 1d counts back from the newest snapshot: everything
        // taken today stays, the 2020 ones go; the running snapshots' data
        // is younger than the (default) grace period.
        let p = spawn(&["prune", "--json", "--keep-within", "1d"]);
        let o1 = s1.wait_with_output().unwrap();
        let o2 = s2.wait_with_output().unwrap();
        let op = p.wait_with_output().unwrap();
        let v1 = json_of(&o1, 0, "snapshot 1");
        let v2 = json_of(&o2, 0, "snapshot 2");
        let vp = json_of(&op, 0, "prune");
        let ids = [
            v1["id"].as_str().unwrap().to_string(),
            v2["id"].as_str().unwrap().to_string(),
        ];
        for (id, a, _) in verdicts(&vp) {
            assert!(
                a == "keep" || old.contains(&id),
                "round {round}: prune removed {id}, a snapshot of today: {vp}"
            );
        }
        let now = listed(&env);
        for id in &ids {
            assert!(
                now.contains(id),
                "round {round}: snapshot {id} lost; listed {now:?}"
            );
            assert_eq!(data_of(&env, id).len(), 2, "round {round}: data of {id}");
        }
        verify_all_deep(&env);
    }
    let now = listed(&env);
    assert_eq!(now.len(), 6, "{now:?}");
    assert!(old.iter().all(|o| !now.contains(o)));
}

#[test]
fn s3_prune_removes_snapshots_and_leftovers() {
    let env = world(Backend::S3);
    let a = snap_at(&env, "2026-02-01T00:00:00Z", &[]);
    let b = snap_at(&env, "2026-02-02T00:00:00Z", &["keep"]);
    let c = snap_at(&env, "2026-02-03T00:00:00Z", &[]);
    let (left, left_objs) = interrupted(&env);
    // Default grace: the fresh left-over stays.
    let v = prune_json(&env, &["--keep-last", "1", "--keep-tag", "keep"], 0);
    assert_eq!(
        verdicts(&v),
        vec![
            (a.clone(), "remove".into(), vec![]),
            (b.clone(), "keep".into(), vec!["keep-tag keep".into()]),
            (c.clone(), "keep".into(), vec!["keep-last".into()]),
        ]
    );
    assert_eq!(v["removed_objects"], 3);
    assert_eq!(v["leftovers_removed"], 0);
    assert!(data_of(&env, &a).is_empty());
    assert_eq!(data_of(&env, &left), left_objs);
    assert_eq!(listed(&env), vec![b.clone(), c.clone()]);
    // With a grace of 1s, the left-over (last modified in the past) goes.
    std::thread::sleep(Duration::from_millis(1100));
    let v = prune_json(
        &env,
        &["--keep-last", "1", "--keep-tag", "keep", "--grace", "1s"],
        0,
    );
    assert_eq!(v["leftovers_removed"], left_objs.len() as u64);
    assert!(data_of(&env, &left).is_empty());
    assert_eq!(listed(&env), vec![b, c]);
    verify_all_deep(&env);
}

#[test]
fn prune_leaves_a_snapshot_that_is_being_written_alone() {
    let mut env = world(Backend::Fs);
    let go = env.path("GO");
    // The directory source is stored first; then this command source holds
    // the snapshot open, uncommitted, until GO exists.
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"slow\"\ntype = \"command\"\ndump = [\"sh\", \"-c\", \"printf partial; while [ ! -e '{}' ]; do sleep 0.05; done; printf done\"]\n\n",
        go.display()
    ));
    env.write_config();
    let old = snap_at_with_go(&env, &go, "2020-01-01T00:00:00Z");
    std::fs::remove_file(&go).unwrap();
    let before: BTreeSet<String> = objects(&env, "data/");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .current_dir(env.dir.path())
        .arg("--config")
        .arg(&env.config)
        .args(["snapshot", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the running snapshot's first source is stored.
    let mut running = BTreeSet::new();
    for _ in 0..600 {
        running = objects(&env, "data/")
            .difference(&before)
            .cloned()
            .collect();
        if running.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        running.len() >= 2,
        "the snapshot stored nothing: {running:?}"
    );
    // keep-last 1 keeps the committed 2020 snapshot; the running one has no
    // manifest yet and fresh objects: a left-over inside the grace period.
    let v = prune_json(&env, &["--keep-last", "1"], 0);
    assert_eq!(v["leftovers_removed"], 0, "{v}");
    assert_eq!(v["leftovers"][0]["action"], "keep", "{v}");
    for o in &running {
        assert!(objects(&env, "data/").contains(o), "prune deleted {o}");
    }
    write(&go, b"");
    let out = child.wait_with_output().unwrap();
    let id = json_of(&out, 0, "the snapshot that ran beside prune")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(listed(&env), vec![old, id]);
    verify_all_deep(&env);
}

/// `snap_at` for a world whose command source waits for `go`.
fn snap_at_with_go(env: &Env, go: &std::path::Path, time: &str) -> String {
    write(go, b"");
    snap_at(env, time, &[])
}

/// Starts a multipart upload under the repository, uploads one part and
/// never completes it: what a snapshot killed mid-upload leaves on S3.
fn abandoned_upload(env: &Env, path: &str) {
    use object_store::ObjectStoreExt;
    let store = env.store();
    block_on(async {
        let mut up = store
            .object_store()
            .put_multipart(&object_store::path::Path::from(path))
            .await
            .expect("start a multipart upload");
        up.put_part(vec![7u8; 5 << 20].into())
            .await
            .expect("upload a part");
        // Neither completed nor aborted: dropped, as by a kill.
        drop(up);
    });
}

/// Issue 11 item 4: prune aborts the multipart uploads that killed
/// snapshots left under the repository once older than the grace period.
#[test]
fn s3_prune_aborts_multipart_uploads_older_than_the_grace_period() {
    let env = world(Backend::S3);
    let id = env.snapshot_ok();
    abandoned_upload(&env, "data/0123456789abcdef/0011223344556677");
    abandoned_upload(&env, "data/0123456789abcdef/8899aabbccddeeff");
    // The test server (moto) reports every upload as initiated in 2010,
    // so the grace period cannot keep them here; the age test itself is
    // `opts.now - initiated < grace`, as for left-over objects.
    std::thread::sleep(Duration::from_millis(1100));
    // A dry run says what it would do and does nothing.
    let v = prune_json(&env, &["--keep-last", "1", "--grace", "1s", "--dry-run"], 0);
    assert_eq!(v["multipart_uploads"]["aborted"], 2, "{v}");
    let v = prune_json(&env, &["--keep-last", "1", "--grace", "1s", "--dry-run"], 0);
    assert_eq!(
        v["multipart_uploads"]["aborted"], 2,
        "still there after a dry run: {v}"
    );
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "1", "--grace", "1s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(report.contains("aborted 2 multipart uploads"), "{report}");
    // Gone: nothing left to abort, and the repository is intact.
    let v = prune_json(&env, &["--keep-last", "1", "--grace", "0s"], 0);
    assert_eq!(v["multipart_uploads"]["aborted"], 0, "{v}");
    assert_eq!(v["multipart_uploads"]["kept"], 0, "{v}");
    assert_eq!(listed(&env), vec![id]);
    verify_all_deep(&env);
}

/// A filesystem repository has no multipart uploads to list.
#[test]
fn fs_prune_reports_no_multipart_listing() {
    let env = world(Backend::Fs);
    env.snapshot_ok();
    let v = prune_json(&env, &["--keep-last", "1"], 0);
    assert!(v["multipart_uploads"].is_null(), "{v}");
}
