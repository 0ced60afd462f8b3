//! In-place restore of a directory that is a mount point (a volume mounted at
//! the media path): it cannot be renamed over, so coffer stages inside it.
//! Needs root to mount a tmpfs; fails (does not skip) without it.

use crate::common::*;
use std::process::Command as Std;

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Std::new("umount").arg(&self.0).status();
    }
}

/// Mounts a 1 MiB tmpfs at `at`; fails loudly without root.
fn small_tmpfs(at: &std::path::Path) -> Mount {
    std::fs::create_dir_all(at).unwrap();
    let o = Std::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(at)
        .output()
        .expect("run mount");
    assert!(
        o.status.success(),
        "mounting a tmpfs needs root (CI runs as root): {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Mount(at.to_path_buf())
}

#[test]
fn in_place_restore_of_a_mount_point() {
    let mut env = Env::init(Backend::Fs);
    let media = env.path("srv/media");
    std::fs::create_dir_all(&media).unwrap();
    let ok = Std::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&media)
        .status()
        .expect("run mount");
    assert!(
        ok.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    let _m = Mount(media.clone());
    sample_tree(&media, None);
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    let before = describe_tree(&media);

    write(&media.join("created-later.txt"), b"new");
    std::fs::remove_file(media.join("a/b/c/deep.txt")).unwrap();
    write(&media.join("exports/orders.csv"), b"changed");

    env.cmd()
        .args(["restore", &id, "--force"])
        .assert()
        .success();
    assert_eq!(describe_tree(&media), before);
    let leftovers: Vec<_> = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".coffer-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// Issue 11 item 11: an in-place restore stages a whole second copy beside
/// the destination. On a filesystem without room for it, the restore is
/// refused before anything is written, saying how much is needed and free
/// and suggesting `--target` elsewhere; it does not fail half-way on a
/// full disk. Mounts a 1 MiB tmpfs as the destination's parent.
#[test]
fn an_in_place_restore_without_room_for_a_second_copy_is_refused_first() {
    let mut env = Env::init(Backend::Fs);
    let small = env.path("small");
    let _m = small_tmpfs(&small);
    let media = small.join("media");
    write(&media.join("big.bin"), &pseudo_random(600_000, 3));
    write(&media.join("note.txt"), b"as in the snapshot\n");
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    write(&media.join("note.txt"), b"changed since\n");
    let before = describe_tree(&media);

    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        "needs about 0.6 MB",
        "is free",
        "--target",
        &small.display().to_string(),
    ] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    assert!(!err.contains("No space left"), "{err}");
    assert_eq!(describe_tree(&media), before, "the destination changed");
    let leftovers: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".coffer-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    // Elsewhere, as the message suggests, it works.
    let elsewhere = env.path("elsewhere");
    env.cmd()
        .args(["restore", &id, "--target"])
        .arg(&elsewhere)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(elsewhere.join("media/note.txt")).unwrap(),
        b"as in the snapshot\n"
    );
}

/// Issue 11 item 11, files sources: each file is staged whole beside its
/// destination before any is replaced, so a files source restore in place
/// is refused first when the filesystem has no room for the staged copies.
#[test]
fn a_files_restore_without_room_is_refused_first() {
    let mut env = Env::init(Backend::Fs);
    let small = env.path("small");
    let _m = small_tmpfs(&small);
    let big = small.join("conf/big.bin");
    let env_file = small.join(".env");
    write(&big, &pseudo_random(600_000, 5));
    write(&env_file, b"A=1\n");
    env.add_files_source("env", &[&big, &env_file]);
    let id = env.snapshot_ok();
    write(&env_file, b"A=2\n");
    let before = describe_tree(&small);

    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        "source env",
        "needs about 0.6 MB",
        "is free on the filesystem of",
        "nothing was changed",
        "--target",
    ] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    assert_eq!(describe_tree(&small), before, "the destination changed");
}

/// Issue 11 item 11: where the room cannot be known first (`--include`
/// restores part of a source), a full disk fails the staging: the message
/// says the filesystem is full and what to do, and nothing changes.
#[test]
fn a_full_disk_during_an_include_restore_says_so_and_changes_nothing() {
    let mut env = Env::init(Backend::Fs);
    let small = env.path("small");
    let _m = small_tmpfs(&small);
    let media = small.join("media");
    write(&media.join("big/one.bin"), &pseudo_random(600_000, 6));
    write(&media.join("big/two.bin"), &pseudo_random(300_000, 7));
    env.add_dir_source("media", &media, &[]);
    let id = env.snapshot_ok();
    let before = describe_tree(&small);

    let o = env
        .cmd()
        .args(["restore", &id, "--force", "--include", "big/**"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in ["The filesystem is full", "--target"] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    assert_eq!(describe_tree(&small), before, "the destination changed");
}
