//! A root restore among hostile local users (contract, guarantee 7, issue 10
//! items 1 and 2): another user who can write to a directory around a
//! destination must not be able to redirect the restore, whatever the timing,
//! and a restored file never becomes setuid root by accident.
//!
//! The attacker runs as `nobody` (through util-linux `setpriv`) in a tight
//! loop while root restores again and again; after every restore a root-owned
//! canary directory outside the destination, where the attacker's symlinks
//! point, must be exactly as it was. These tests need root (CI runs as root)
//! and fail, never skip, without it.

use crate::common::*;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Std};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
const ITERATIONS: usize = 40;
const TIME_LIMIT: Duration = Duration::from_secs(90);

fn need_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run coffer as root against an unprivileged attacker; run them as root (CI does)"
    );
}

/// A Python loop run as `nobody` until it is killed (or an hour passes).
struct Attacker(Child);

impl Attacker {
    fn start(script: &str, args: &[&Path]) -> Attacker {
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.exists(),
            "the attacker loop needs /usr/bin/python3 (a python3 that `nobody` can run)"
        );
        let child = Std::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(python)
            .arg("-c")
            .arg(script)
            .args(args)
            .spawn()
            .expect("run setpriv (util-linux) to start the attacker as nobody");
        // Give it a moment to fail on a bad setup, and say so.
        std::thread::sleep(Duration::from_millis(200));
        let mut a = Attacker(child);
        if let Some(st) = a.0.try_wait().expect("wait attacker") {
            panic!("the attacker loop exited at once ({st}): setpriv or python3 failed");
        }
        a
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test's temp dir must be traversable by `nobody`.
fn open_up(env: &Env) {
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn owned_by_nobody(p: &Path) {
    fs::create_dir_all(p).expect("mkdir");
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A root-owned directory the attacker's symlinks point at.
fn canary(env: &Env) -> PathBuf {
    let c = env.path("canary");
    write(&c.join("settings.toml"), b"canary: settings\n");
    write(&c.join("app.env"), b"canary: env\n");
    write(&c.join("keep/inner.txt"), b"canary: inner\n");
    fs::set_permissions(&c, fs::Permissions::from_mode(0o750)).expect("chmod");
    c
}

struct Run {
    code: Option<i32>,
    stderr: String,
}

fn restore(env: &Env) -> Run {
    let out = env
        .cmd()
        .args(["restore", "latest", "--force"])
        .output()
        .expect("run coffer");
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Swaps every staging directory it sees in the destination's parent for a
/// symlink to the canary.
const SWAP_STAGING: &str = r#"
import os, sys
parent, canary = sys.argv[1], sys.argv[2]
while True:
    try:
        names = os.listdir(parent)
    except OSError:
        continue
    for n in names:
        if not n.startswith('.coffer-') or n.endswith('.moved'):
            continue
        p = os.path.join(parent, n)
        try:
            if not os.path.islink(p):
                os.rename(p, p + '.moved')
                os.symlink(canary, p)
        except OSError:
            pass
"#;

#[test]
fn a_root_restore_is_not_redirected_by_the_owner_of_the_destination_parent() {
    swapped_staging(false);
}

/// A sticky, world-writable parent owned by root (like /tmp) may hold
/// staging: the attacker cannot rename what root created there, and every
/// restore must succeed.
#[test]
fn a_root_restore_in_a_sticky_shared_parent_succeeds_under_attack() {
    swapped_staging(true);
}

fn swapped_staging(sticky: bool) {
    need_root();
    let mut env = Env::init(Backend::Fs);
    open_up(&env);
    let shop = env.path("shop");
    if sticky {
        fs::create_dir_all(&shop).expect("mkdir");
        fs::set_permissions(&shop, fs::Permissions::from_mode(0o1777)).expect("chmod");
    } else {
        owned_by_nobody(&shop);
    }
    let media = shop.join("media");
    sample_tree(&media, None);
    for i in 0..200 {
        write(
            &media.join(format!("many/f{i:03}.txt")),
            b"many small files\n",
        );
    }
    env.add_dir_source("media", &media, &[]);
    env.snapshot_ok();
    let snapshot_tree = describe_tree(&media);
    let canary = canary(&env);
    let canary_before = describe_tree(&canary);

    let _attacker = Attacker::start(SWAP_STAGING, &[&shop, &canary]);
    let started = Instant::now();
    let mut runs = 0;
    let mut succeeded = 0;
    while runs < ITERATIONS && started.elapsed() < TIME_LIMIT {
        runs += 1;
        let r = restore(&env);
        let after = describe_tree(&canary);
        assert!(
            after == canary_before,
            "restore {runs} (exit {:?}) changed the canary outside the destination:\nbefore {canary_before:#?}\nafter {after:#?}\nstderr: {}",
            r.code,
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        if sticky {
            assert_eq!(r.code, Some(0), "restore {runs}: {}", r.stderr);
            assert_eq!(describe_tree(&media), snapshot_tree, "restore {runs}");
        } else if r.code == Some(0) {
            // The owner of the parent may make a restore fail, never make
            // a successful one put anything but the snapshot in place.
            assert_eq!(describe_tree(&media), snapshot_tree, "restore {runs}");
            succeeded += 1;
        } else {
            // A failure must say where and what happened, also when the
            // attacker swaps a staging directory between its `mkdir` and
            // its `open` (dirfd::Dir::make_staging reports that as
            // replaced; before, it said "Not a directory" now and then
            // under load).
            assert!(
                r.stderr.contains(&shop.display().to_string())
                    && r.stderr.contains("renamed or replaced by another process"),
                "restore {runs} failed without saying what happened: {}",
                r.stderr
            );
        }
        // Tidy what the attacker moved aside, as root, for the next round.
        for e in fs::read_dir(&shop).expect("list shop") {
            let p = e.expect("entry").path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".coffer-")
            {
                let _ = fs::remove_file(&p).or_else(|_| fs::remove_dir_all(&p));
            }
        }
    }
    assert!(runs >= 10, "only {runs} restores ran in {TIME_LIMIT:?}");
    if !sticky {
        eprintln!("{succeeded} of {runs} restores under attack succeeded");
        // Without the attacker, the same restore works: the app user's
        // ownership of the parent alone is no reason to refuse.
        drop(_attacker);
        let r = restore(&env);
        assert_eq!(
            r.code,
            Some(0),
            "restore without the attacker: {}",
            r.stderr
        );
        assert_eq!(describe_tree(&media), snapshot_tree);
        assert_eq!(describe_tree(&canary), canary_before);
    }
}

/// A parent that a group or every user can write to (not sticky) is
/// refused before anything is written, with what to do instead.
#[test]
fn a_restore_refuses_a_parent_others_can_write_to() {
    need_root();
    let mut env = Env::init(Backend::Fs);
    let shop = env.path("shop");
    let media = shop.join("media");
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    env.snapshot_ok();
    let before = describe_tree(&media);
    for mode in [0o777, 0o775] {
        fs::set_permissions(&shop, fs::Permissions::from_mode(mode)).expect("chmod");
        if mode == 0o775 {
            // A group other than root's.
            std::os::unix::fs::chown(&shop, None, Some(65534)).expect("chgrp");
        }
        fs::write(media.join("new.txt"), b"made after the snapshot").unwrap();
        let after_write = describe_tree(&media);
        let r = restore(&env);
        assert_eq!(r.code, Some(1), "mode {mode:o}: {}", r.stderr);
        assert!(
            r.stderr.contains(&shop.display().to_string())
                && r.stderr.contains("chmod go-w")
                && r.stderr.contains("--target"),
            "mode {mode:o}: the refusal does not say what to do: {}",
            r.stderr
        );
        assert_eq!(describe_tree(&media), after_write, "nothing changed");
        fs::remove_file(media.join("new.txt")).unwrap();
    }
    assert_eq!(describe_tree(&media), before);
}

/// Swaps the directory holding a files source's files for a symlink to the
/// canary and back, over and over.
const SWAP_PARENT: &str = r#"
import os, sys, time
conf, canary = sys.argv[1], sys.argv[2]
real = conf + '.real'
while True:
    try:
        os.rename(conf, real)
    except OSError:
        continue
    try:
        os.symlink(canary, conf)
        time.sleep(0.0002)
        os.unlink(conf)
    except OSError:
        pass
    try:
        os.rename(real, conf)
    except OSError:
        pass
"#;

#[test]
fn a_root_files_restore_is_not_redirected_through_a_swapped_parent_directory() {
    need_root();
    let mut env = Env::init(Backend::Fs);
    open_up(&env);
    let app = env.path("app");
    owned_by_nobody(&app);
    let conf = app.join("conf");
    write(&conf.join("settings.toml"), b"restored: settings\n");
    write(&conf.join("app.env"), b"restored: env\n");
    let mut paths = vec![conf.join("settings.toml"), conf.join("app.env")];
    for i in 0..40 {
        let p = conf.join(format!("extra{i:02}.conf"));
        write(&p, b"extra\n");
        paths.push(p);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    env.add_files_source("env", &refs);
    env.snapshot_ok();
    let canary = canary(&env);
    let canary_before = describe_tree(&canary);

    let attacker = Attacker::start(SWAP_PARENT, &[&conf, &canary]);
    let started = Instant::now();
    let mut runs = 0;
    let mut ok = 0;
    while runs < ITERATIONS && started.elapsed() < TIME_LIMIT {
        runs += 1;
        let r = restore(&env);
        let after = describe_tree(&canary);
        assert!(
            after == canary_before,
            "restore {runs} (exit {:?}) changed the canary outside the destination:\nbefore {canary_before:#?}\nafter {after:#?}\nstderr: {}",
            r.code,
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        ok += usize::from(r.code == Some(0));
    }
    drop(attacker);
    assert!(runs >= 10, "only {runs} restores ran in {TIME_LIMIT:?}");
    // Undisturbed, the same restore works (the files are where they were).
    let real = app.join("conf.real");
    if fs::symlink_metadata(&real).is_ok() {
        // The attacker stopped mid-swap: `conf` is its symlink, or missing
        // (and then a restore may have made a new `conf` directory for the
        // files it puts back, which is what a restore does for a missing
        // parent). Either way the original goes back in its place.
        match fs::symlink_metadata(&conf) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&conf).expect("remove the new conf"),
            Ok(_) => fs::remove_file(&conf).expect("remove the attacker's symlink"),
            Err(_) => {}
        }
        fs::rename(&real, &conf).expect("put conf back");
    }
    let r = restore(&env);
    assert_eq!(r.code, Some(0), "undisturbed restore: {}", r.stderr);
    assert_eq!(
        fs::read(conf.join("settings.toml")).unwrap(),
        b"restored: settings\n"
    );
    eprintln!("{ok} of {runs} restores under attack succeeded");
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Std::new("umount").arg(&self.0).status();
    }
}

/// Issue 10 item 2: the destination is on another filesystem than $TMPDIR
/// (a tmpfs here); the restored setuid file keeps its owner, and is never a
/// setuid file owned by root.
#[test]
fn a_files_restore_on_another_filesystem_never_makes_a_setuid_root_file() {
    need_root();
    let mut env = Env::init(Backend::Fs);
    let vol = env.path("vol");
    fs::create_dir_all(&vol).expect("mkdir");
    let ok = Std::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&vol)
        .status()
        .expect("run mount");
    assert!(ok.success(), "mounting a tmpfs needs root");
    let _m = Mount(vol.clone());
    let tool = vol.join("bin/tool");
    write(&tool, b"#!/bin/sh\necho tool\n");
    std::os::unix::fs::chown(&tool, Some(NOBODY), Some(NOBODY)).expect("chown");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).expect("chmod");
    env.add_files_source("tools", &[&tool]);
    env.snapshot_ok();
    fs::remove_file(&tool).expect("rm");

    let r = restore(&env);
    assert_eq!(r.code, Some(0), "restore: {}", r.stderr);
    let md = fs::symlink_metadata(&tool).expect("restored");
    assert!(
        !(md.uid() == 0 && md.mode() & 0o6000 != 0),
        "the restore made a setuid/setgid file owned by root (mode {:o})",
        md.mode() & 0o7777
    );
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (NOBODY, NOBODY, 0o4755),
        "owner and mode as recorded"
    );
    let leftovers: Vec<_> = fs::read_dir(vol.join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".coffer-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}
