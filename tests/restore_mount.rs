//! In-place restore of a directory that is a mount point (a volume mounted at
//! the media path): it cannot be renamed over, so coffer stages inside it.
//! Needs root to mount a tmpfs; fails (does not skip) without it.

mod common;
use common::*;
use std::process::Command as Std;

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Std::new("umount").arg(&self.0).status();
    }
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
