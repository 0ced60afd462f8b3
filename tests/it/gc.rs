//! Garbage collection of format 2 without locks (docs/FORMAT.md section
//! 23): prune marks the packs no kept snapshot uses and deletes them in a
//! later run, once every snapshot that was running has ended; a snapshot
//! that deduplicated against a pack marked meanwhile copies its chunks
//! before it commits; one that outlived its lease and lost chunks to a
//! sweep refuses to commit. A soak with `kill -9` at random moments ends
//! with every listed snapshot whole.

use crate::common::*;

use std::fs;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use coffer::gc::LEASE_ENV;

/// `prune --json` with `args`, which must exit 0; its `chunks` document.
fn prune(env: &Env, args: &[&str]) -> serde_json::Value {
    let o = env
        .cmd()
        .args(["prune", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert_code(&o, 0, &format!("prune {args:?}"));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    doc["chunks"].clone()
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// A file no longer in any kept snapshot: the first prune marks its pack,
/// the second deletes it, and what is kept stays whole. The grace period
/// holds a mark back; a dry run deletes nothing.
#[test]
fn prune_marks_then_deletes_the_packs_no_snapshot_uses() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("a.bin"), &pseudo_random(3 << 20, 1));
    env.add_dir_source("media", &data, &[]);
    env.snapshot_ok();
    fs::remove_file(data.join("a.bin")).unwrap();
    write(&data.join("b.bin"), &pseudo_random(1 << 20, 2));
    let kept = env.snapshot_ok();
    let before = pack_bytes(&env);
    // A snapshot that ended left no session behind.
    let sessions = block_on(env.store().list("sessions/")).unwrap();
    assert!(sessions.is_empty(), "{sessions:?}");

    // The default grace period (24 h): marked now, swept no sooner.
    let c = prune(&env, &["--keep-last", "1"]);
    assert_eq!(n(&c, "deleted_packs"), 0, "{c}");
    assert_eq!(n(&c, "marked_packs"), 1, "{c}");
    assert!(n(&c, "marked_bytes") > 3 << 20, "{c}");
    let c = prune(&env, &["--keep-last", "1"]);
    assert_eq!(n(&c, "deleted_packs"), 0, "{c}");
    assert!(
        c["waiting"][0]
            .as_str()
            .unwrap()
            .contains("younger than the grace period"),
        "{c}"
    );
    assert_eq!(pack_bytes(&env), before);

    // A dry run says what it would delete, and deletes nothing.
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "1", "--grace", "0s", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "prune --dry-run");
    assert!(
        text(&o.stdout).contains("chunks: would delete 1 packs"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(pack_bytes(&env), before);

    let c = prune(&env, &["--keep-last", "1", "--grace", "0s"]);
    assert_eq!(n(&c, "deleted_packs"), 1, "{c}");
    assert_eq!(n(&c, "marked_packs"), 0, "{c}");
    assert!(n(&c, "index_objects_replaced") >= 1, "{c}");
    let after = pack_bytes(&env);
    assert!(
        before - after > 3 << 20,
        "the repository shrank by {} bytes",
        before - after
    );
    assert_eq!(env.snapshot_ids(), vec![kept.clone()]);
    env.verify_all_deep("after the sweep");
    let target = env.path("restored");
    env.cmd()
        .args(["restore", &kept, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&data, &target.join("media"));
    // Nothing left to do: no mark, nothing more to delete.
    let c = prune(&env, &["--keep-last", "1", "--grace", "0s"]);
    assert_eq!(
        (n(&c, "deleted_packs"), n(&c, "marked_packs")),
        (0, 0),
        "{c}"
    );
    let gc = block_on(env.store().list("gc/")).unwrap();
    assert!(gc.is_empty(), "{gc:?}");
}

/// A config whose second source waits, when `block` exists, until `go`
/// exists (at most 2 minutes), after creating `waiting`: a snapshot held
/// between reading its first source and committing.
fn held_source(
    env: &mut Env,
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (block, waiting, go) = (dir.join("block"), dir.join("waiting"), dir.join("go"));
    let script = format!(
        // At most 2 minutes: a test that fails before `go` leaves no
        // snapshot waiting forever.
        "if [ -e {b} ]; then touch {w}; i=0; while [ ! -e {g} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; fi; echo held",
        b = block.display(),
        w = waiting.display(),
        g = go.display()
    );
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"held\"\ntype = \"command\"\ndump = [\"sh\", \"-c\", {script:?}]\nrestore = [\"sh\", \"-c\", \"cat >/dev/null\"]\n\n"
    ));
    env.write_config();
    (block, waiting, go)
}

fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the snapshot ended ({s}) before it was held");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never held");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first snapshot stores a.bin; the second does not have it; a.bin is
/// back for the held third. Returns the id of the second.
fn two_snapshots_then_a_bin_back(env: &mut Env) -> (std::path::PathBuf, Vec<u8>, String) {
    let data = env.path("data");
    let a = pseudo_random(3 << 20, 11);
    write(&data.join("a.bin"), &a);
    env.add_dir_source("media", &data, &[]);
    env.snapshot_ok();
    fs::remove_file(data.join("a.bin")).unwrap();
    write(&data.join("b.bin"), &pseudo_random(1 << 20, 12));
    let second = env.snapshot_ok();
    write(&data.join("a.bin"), &a);
    (data, a, second)
}

/// A snapshot deduplicates a.bin against the pack the first snapshot
/// stored; prune forgets that snapshot and marks the pack while the
/// snapshot runs; later prunes wait for it; at its commit it copies a.bin's
/// chunks out of the marked pack, so the pack is deleted once it ends and
/// the snapshot restores whole.
#[test]
fn a_snapshot_running_across_a_mark_copies_its_chunks_out() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let (data, a, _) = two_snapshots_then_a_bin_back(&mut env);
    let ctl = env.path("ctl");
    fs::create_dir_all(&ctl).unwrap();
    let (block, waiting, go) = held_source(&mut env, &ctl);
    let first_packs = packs(&env);
    fs::write(&block, b"").unwrap();
    let mut held = env
        .spawn_cmd()
        .args(["snapshot", "--json"])
        .env(LEASE_ENV, "60")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&waiting, &mut held);
    // a.bin was deduplicated: nothing new stored for it.
    assert_eq!(packs(&env), first_packs);

    let c = prune(&env, &["--keep-last", "1", "--grace", "0s"]);
    assert_eq!(n(&c, "marked_packs"), 1, "{c}");
    let c = prune(&env, &["--keep-last", "1", "--grace", "0s"]);
    assert_eq!(n(&c, "deleted_packs"), 0, "{c}");
    let why = c["waiting"][0].as_str().unwrap_or_default();
    assert!(why.contains("may still need its packs"), "{c}");
    assert_eq!(packs(&env), first_packs, "a pack went while a snapshot ran");

    fs::write(&go, b"").unwrap();
    let o = held.wait_with_output().unwrap();
    assert_code(&o, 0, "the held snapshot");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = doc["id"].as_str().unwrap().to_string();

    let c = prune(&env, &["--keep-last", "1", "--grace", "0s"]);
    assert_eq!(n(&c, "deleted_packs"), 1, "{c}");
    assert_eq!(
        n(&c, "kept_packs"),
        0,
        "the snapshot did not copy its chunks: {c}"
    );
    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    env.verify_all_deep("after the sweep");
    let target = env.path("restored");
    env.cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(fs::read(target.join("media/a.bin")).unwrap(), a);
    assert_same_tree(&data, &target.join("media"));
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// A snapshot stopped (SIGSTOP) past its lease is taken for dead: a prune
/// sweeps the pack it deduplicated against. When it wakes, its check
/// finds the chunks gone and it commits nothing (exit 1, saying why), and
/// the repository stays whole.
#[test]
fn a_snapshot_stopped_past_its_lease_commits_nothing_it_lost() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let (_, _, second) = two_snapshots_then_a_bin_back(&mut env);
    let ctl = env.path("ctl");
    fs::create_dir_all(&ctl).unwrap();
    let (block, waiting, go) = held_source(&mut env, &ctl);
    fs::write(&block, b"").unwrap();
    let mut held = env
        .spawn_cmd()
        .args(["snapshot"])
        .env(LEASE_ENV, "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&waiting, &mut held);
    signal(&held, "-STOP");
    let c = prune(&env, &["--keep-last", "1", "--grace", "0s"]);
    assert_eq!(n(&c, "marked_packs"), 1, "{c}");
    std::thread::sleep(Duration::from_millis(2500));
    let c = prune(&env, &["--keep-last", "1", "--grace", "0s"]);
    assert_eq!(n(&c, "deleted_packs"), 1, "{c}");
    signal(&held, "-CONT");
    fs::write(&go, b"").unwrap();
    let o = held.wait_with_output().unwrap();
    assert_code(&o, 1, "the snapshot that outlived its lease");
    let err = text(&o.stderr);
    assert!(
        err.contains("was deleted by a prune") && err.contains("run the snapshot again"),
        "{err}"
    );
    assert_eq!(env.snapshot_ids(), vec![second]);
    env.verify_all_deep("after the refused commit");
    // Run again, it stores a.bin anew.
    fs::remove_file(&block).unwrap();
    env.snapshot_ok();
    env.verify_all_deep("after the snapshot ran again");
}

/// A small deterministic generator (xorshift), seeded per run and printed,
/// so that a failing soak can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The contents of a tree cycle with a period of [`PERIOD`] rounds, and
/// `prune --keep-last` keeps about the snapshots of the last `PERIOD - 1`
/// rounds: so in most rounds, the snapshot whose pack last held this
/// round's content is forgotten, and its pack marked, by the very prune
/// that runs beside the snapshot deduplicating against it. That is the
/// race the protocol is for (FORMAT.md 23.2, 23.4).
const PERIOD: u64 = 3;
const KEEP_LAST: &str = "4";

fn churn(dir: &Path, pool: u64, round: u64) {
    let variant = round % PERIOD;
    write(
        &dir.join("cur.bin"),
        &pseudo_random(
            1_200_000 + 100_000 * variant as usize,
            1000 * pool + variant,
        ),
    );
}

fn soak(backend: Backend, rounds: u64, lease: &str, min_copied: u64) {
    let seed = std::env::var("COFFER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("gc soak on {backend:?}: seed {seed} (COFFER_TEST_SEED replays it)");
    let mut rng = Rng(seed);
    let mut one = Env::init_format(backend, 2);
    let a = one.path("a");
    churn(&a, 1, 0);
    one.add_dir_source("media", &a, &[]);
    // A second writer: its own config and tree, the same repository.
    let mut two = Env::new(backend);
    two.url = one.url.clone();
    two.options = one.options.clone();
    fs::copy(&one.key, &two.key).unwrap();
    let b = two.path("b");
    churn(&b, 2, 0);
    two.add_dir_source("media", &b, &[]);
    // A dump that takes a moment, as a database's does: the snapshot's
    // view of the repository is then older than its commit by that much,
    // and prunes land in between.
    for env in [&mut one, &mut two] {
        env.sources.push_str(
            "[[sources]]\nname = \"dump\"\ntype = \"command\"\ndump = [\"sh\", \"-c\", \"sleep 0.1; echo dump\"]\nrestore = [\"sh\", \"-c\", \"cat >/dev/null\"]\n\n",
        );
        env.write_config();
    }

    let (mut committed, mut killed, mut deleted, mut refused) = (0u64, 0u64, 0u64, 0u64);
    // Snapshots that found chunks they use in a pack marked while they ran.
    let mut copied = 0u64;
    for round in 0..rounds {
        churn(&a, 1, round);
        churn(&b, 2, round);
        let spawn = |env: &Env, args: &[&str]| {
            env.spawn_cmd()
                .args(args)
                .env(LEASE_ENV, lease)
                .env("RUST_LOG", "coffer::gc=info")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let one_snap = spawn(&one, &["snapshot", "--json"]);
        let two_snap = spawn(&two, &["snapshot", "--json"]);
        // The prune a moment later, so that its mark often lands while the
        // snapshots run (after they read what the repository holds).
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        let pruner = spawn(
            &one,
            &["prune", "--json", "--keep-last", KEEP_LAST, "--grace", "1s"],
        );
        let mut procs = vec![
            ("snapshot one", one_snap),
            ("snapshot two", two_snap),
            ("prune", pruner),
        ];
        // Each process is killed with probability 1/3, at a random moment
        // of its run (most runs take 50 to 250 ms here).
        let kill_at: Vec<Option<Duration>> = (0..procs.len())
            .map(|_| (rng.below(3) == 0).then(|| Duration::from_millis(rng.below(300))))
            .collect();
        let start = Instant::now();
        let mut done = vec![false; procs.len()];
        while done.iter().any(|d| !d) {
            for (i, (_, child)) in procs.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                if child.try_wait().unwrap().is_some() {
                    done[i] = true;
                } else if kill_at[i].is_some_and(|t| start.elapsed() >= t) {
                    let _ = child.kill();
                    done[i] = true;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (what, child) in procs {
            let o = child.wait_with_output().unwrap();
            let Some(code) = o.status.code() else {
                killed += 1;
                continue;
            };
            let stderr = text(&o.stderr);
            match (what, code) {
                ("prune", 0) => {
                    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                    deleted += doc["chunks"]["deleted_packs"].as_u64().unwrap();
                }
                (_, 0) => {
                    committed += 1;
                    if stderr.contains("only in packs a prune marked; copying them") {
                        copied += 1;
                    }
                }
                // Only a snapshot that outlived its lease may refuse.
                (_, 1) if what != "prune" && stderr.contains("was deleted by a prune") => {
                    refused += 1
                }
                _ => panic!("round {round} (seed {seed}): {what} exited {code}:\n{stderr}"),
            }
        }
        // Every listed snapshot has every chunk, after every round.
        let o = one.cmd().args(["verify", "--all"]).output().unwrap();
        assert_code(
            &o,
            0,
            &format!("verify --all after round {round} (seed {seed})"),
        );
    }
    eprintln!(
        "gc soak: {rounds} rounds, {committed} snapshots committed ({copied} copied chunks out of a pack marked while they ran), {refused} refused, {killed} processes killed, {deleted} packs deleted"
    );
    assert!(committed > rounds / 2, "too few snapshots committed");
    assert!(
        copied >= min_copied,
        "no snapshot met a pack marked while it ran: the race the soak is for did not happen"
    );
    let o = one
        .cmd()
        .args(["verify", "--all", "--deep"])
        .output()
        .unwrap();
    assert_code(
        &o,
        0,
        &format!("verify --all --deep after the soak (seed {seed})"),
    );
    // Once every killed writer's session has expired, prunes collect
    // what they left, and everything still verifies.
    std::thread::sleep(Duration::from_secs_f64(lease.parse::<f64>().unwrap() + 0.5));
    for _ in 0..2 {
        let o = one
            .cmd()
            .args(["prune", "--json", "--keep-last", KEEP_LAST, "--grace", "0s"])
            .output()
            .unwrap();
        assert_code(&o, 0, "the last prunes");
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        deleted += doc["chunks"]["deleted_packs"].as_u64().unwrap();
    }
    assert!(
        deleted > 0,
        "no prune deleted a pack: the soak proved nothing"
    );
    one.verify_all_deep("after the last prunes");
    // The records of killed snapshots went with their expired sessions.
    let left = block_on(one.store().list("sessions/")).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// Two snapshot loops and a prune loop on one repository, each process
/// killed with `kill -9` at random moments, for 200 rounds: every listed
/// snapshot verifies whole.
#[test]
fn gc_soak_with_kill_9_keeps_every_committed_snapshot_whole() {
    soak(Backend::Fs, 200, "2", 1);
}

/// The same on S3, shorter. The lease is longer: S3 time stamps have
/// whole seconds, and ε (a twelfth of the lease) must cover that.
#[test]
fn gc_soak_with_kill_9_on_s3() {
    soak(Backend::S3, 40, "12", 0);
}
