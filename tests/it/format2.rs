//! Repository format 2 (docs/FORMAT.md Part II): content-defined chunks,
//! deduplicated across snapshots, sources and hosts, read back by every
//! read command; damage to packs and indexes found and named.

use crate::common::*;

use std::fs;

fn round_trip(b: Backend) {
    let mut env = Env::init_format(b, 2);
    let data = env.path("data");
    sample_tree(&data, Some(20 << 20));
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
    // One file's bytes, and the whole source as a tar stream GNU tar reads.
    let o = env
        .cmd()
        .args(["dump", &id, "media", "big/video.mp4"])
        .output()
        .unwrap();
    assert_code(&o, 0, "dump one file");
    assert!(o.stdout == fs::read(data.join("big/video.mp4")).unwrap());
    let tar_out = env.path("untarred");
    fs::create_dir_all(&tar_out).unwrap();
    let o = env.cmd().args(["dump", &id, "media"]).output().unwrap();
    assert_code(&o, 0, "dump");
    let mut tar = std::process::Command::new("tar")
        .args(["-xpf", "-", "-C"])
        .arg(&tar_out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    tar.stdin.take().unwrap().write_all(&o.stdout).unwrap();
    assert!(tar.wait().unwrap().success());
    assert_eq!(
        fs::read(tar_out.join("big/video.mp4")).unwrap(),
        fs::read(data.join("big/video.mp4")).unwrap()
    );
}

#[test]
fn round_trip_fs() {
    round_trip(Backend::Fs);
}

#[test]
fn round_trip_s3() {
    round_trip(Backend::S3);
}

#[test]
fn round_trip_gcs() {
    round_trip(Backend::Gcs);
}

/// `coffer dump` of a format 2 source writes the very tar stream format 1
/// stores (section 22), so every pipe in the runbooks keeps working.
#[test]
fn dump_writes_the_same_tar_stream_as_format_1() {
    let data = tempfile::tempdir().unwrap();
    sample_tree(data.path(), Some(3 << 20));
    let mut dumps = Vec::new();
    for format in [1, 2] {
        let mut env = Env::init_format(Backend::Fs, format);
        env.add_dir_source("media", data.path(), &[]);
        let id = env.snapshot_ok();
        let o = env.cmd().args(["dump", &id, "media"]).output().unwrap();
        assert_code(&o, 0, "dump");
        dumps.push(o.stdout);
    }
    assert!(dumps[0].len() > 3 << 20);
    assert!(
        dumps[0] == dumps[1],
        "format 1 and format 2 dumps differ ({} and {} bytes)",
        dumps[0].len(),
        dumps[1].len()
    );
}

/// The same file in two sources, a file renamed, a file moved to another
/// directory, a big file with a few bytes changed in its middle: each
/// stores the shared chunks once.
#[test]
fn chunks_are_stored_once_across_sources_renames_and_edits() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let a = env.path("a");
    let b = env.path("b");
    let big = pseudo_random(24 << 20, 11);
    write(&a.join("video.mp4"), &big);
    write(&a.join("dir1/photo.jpg"), &pseudo_random(3 << 20, 12));
    write(&b.join("copy-of-video.mp4"), &big);
    env.add_dir_source("a", &a, &[]);
    env.add_dir_source("b", &b, &[]);
    let doc = env.snapshot_json(&[], 0);
    let first = pack_bytes(&env);
    // A PUT per 16 MiB of new data, plus the index object, the manifest
    // and the session record (FORMAT.md 23.1).
    let puts = doc["store"]["requests"]["put"].as_u64().unwrap();
    assert!(
        puts <= first.div_ceil(16 << 20) + 3,
        "{puts} PUT requests for {first} bytes of packs: {doc}"
    );
    // The video once, not twice (incompressible, so stored ~ its size).
    assert!(
        first < (24 << 20) + (3 << 20) + (1 << 20),
        "two sources holding the same 24 MiB stored {first} bytes"
    );
    // Rename, move, and change 100 bytes in the middle of the video.
    fs::rename(a.join("dir1/photo.jpg"), a.join("photo-renamed.jpg")).unwrap();
    fs::create_dir_all(a.join("dir2")).unwrap();
    fs::rename(a.join("video.mp4"), a.join("dir2/video.mp4")).unwrap();
    let mut edited = big.clone();
    edited[12 << 20..(12 << 20) + 100].copy_from_slice(&pseudo_random(100, 13));
    write(&b.join("copy-of-video.mp4"), &edited);
    let doc = env.snapshot_json(&[], 0);
    let grown = pack_bytes(&env) - first;
    assert!(
        grown < 9 << 20,
        "a rename, a move and a 100-byte edit grew the repository by {grown} bytes"
    );
    // What the snapshot reports matches what it stored.
    let reported: u64 = doc["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes_stored"].as_u64().unwrap())
        .sum();
    assert!(reported <= grown && reported + (64 << 10) >= grown);
    // Both snapshots still read back whole.
    env.verify_all_deep("after the edit");
    let target = env.path("restored");
    env.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        fs::read(target.join("b/copy-of-video.mp4")).unwrap(),
        edited
    );
    assert_eq!(fs::read(target.join("a/dir2/video.mp4")).unwrap(), big);
}

/// Two hosts (two configs) writing the same tree into one repository store
/// it once.
#[test]
fn two_hosts_writing_the_same_tree_store_it_once() {
    let mut one = Env::init_format(Backend::Fs, 2);
    let tree = one.path("tree");
    write(&tree.join("shared.bin"), &pseudo_random(12 << 20, 21));
    one.add_dir_source("media", &tree, &[]);
    one.snapshot_ok();
    let first = pack_bytes(&one);
    // A second config, its own copy of the tree, the same repository and key.
    let mut two = Env::new(Backend::Fs);
    two.url = one.url.clone();
    fs::copy(&one.key, &two.key).unwrap();
    let copy = two.path("tree");
    write(
        &copy.join("shared.bin"),
        &fs::read(tree.join("shared.bin")).unwrap(),
    );
    two.add_dir_source("media", &copy, &[]);
    let doc = two.snapshot_json(&[], 0);
    // Only its file list is new (other inodes and times).
    let stored = doc["sources"][0]["bytes_stored"].as_u64().unwrap();
    assert!(stored < 4096, "the second host stored {stored} bytes");
    let grown = pack_bytes(&one) - first;
    assert!(
        grown < 64 << 10,
        "the second host's copy of the tree grew the repository by {grown} bytes"
    );
    two.verify_all_deep("after the second host");
}

fn add_command_source(env: &mut Env, name: &str, script: &str, restore_to: &std::path::Path) {
    env.sources.push_str(&format!(
        "[[sources]]\nname = {name:?}\ntype = \"command\"\ndump = [\"sh\", \"-c\", {script:?}]\nrestore = [\"sh\", \"-c\", {:?}]\n\n",
        format!("cat > {}", restore_to.display())
    ));
    env.write_config();
}

/// A dump stream deduplicates from night to night: a few changed bytes in
/// a 30 MiB dump add a few chunks, and both nights restore exactly.
#[test]
fn a_dump_stream_deduplicates_from_night_to_night() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let src = env.path("dump.bin");
    let night1 = pseudo_random(30 << 20, 31);
    write(&src, &night1);
    let restored = env.path("restored.bin");
    add_command_source(
        &mut env,
        "app",
        &format!("cat {}", src.display()),
        &restored,
    );
    let first = env.snapshot_ok();
    let after_first = pack_bytes(&env);
    let mut night2 = night1.clone();
    night2[7 << 20..(7 << 20) + 4096].copy_from_slice(&pseudo_random(4096, 32));
    night2.extend_from_slice(b"one more row\n");
    write(&src, &night2);
    let second = env.snapshot_ok();
    let grown = pack_bytes(&env) - after_first;
    assert!(
        grown < after_first / 5,
        "a 4 KiB change in a 30 MiB dump grew the repository by {grown} of {after_first} bytes"
    );
    for (id, want) in [(&first, &night1), (&second, &night2)] {
        let o = env.cmd().args(["dump", id, "app"]).output().unwrap();
        assert_code(&o, 0, "dump the stream");
        assert!(o.stdout == *want, "snapshot {id}'s dump differs");
        env.cmd()
            .args(["restore", id, "--force"])
            .assert()
            .success();
        assert!(fs::read(&restored).unwrap() == *want);
    }
    env.cmd()
        .args(["verify", "--all", "--deep"])
        .assert()
        .success();
}

/// Damage to a pack: plain verify finds the pack whose bytes no longer hash
/// to its name; verify --deep, restore and dump exit 3 naming the file; the
/// restore destination is untouched.
#[test]
fn a_flipped_byte_in_a_pack_is_found_and_named() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("one.bin"), &pseudo_random(2 << 20, 41));
    env.add_dir_source("media", &data, &[]);
    let id = env.snapshot_ok();
    let all = packs(&env);
    assert_eq!(all.len(), 1, "{all:?}");
    let path = object_path(&env, &all[0]);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let o = env.cmd().args(["verify", &id]).output().unwrap();
    assert_code(&o, 3, "verify");
    assert!(text(&o.stdout).contains(&all[0]), "{}", text(&o.stdout));

    let o = env.cmd().args(["verify", "--deep", &id]).output().unwrap();
    assert_code(&o, 3, "verify --deep");
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(out.contains("one.bin"), "{out}");

    let target = env.path("restored");
    let o = env
        .cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_code(&o, 3, "restore");
    assert!(text(&o.stderr).contains("one.bin"), "{}", text(&o.stderr));
    assert!(
        !target.join("media").exists(),
        "a failed restore wrote its destination"
    );

    let o = env.cmd().args(["dump", &id, "media"]).output().unwrap();
    assert_code(&o, 3, "dump");
}

/// A missing pack, and a damaged index object: exit 3, named.
#[test]
fn a_missing_pack_or_damaged_index_is_integrity_failure() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("one.bin"), &pseudo_random(1 << 20, 51));
    env.add_dir_source("media", &data, &[]);
    let id = env.snapshot_ok();
    let pack = packs(&env).remove(0);
    let saved = fs::read(object_path(&env, &pack)).unwrap();
    fs::remove_file(object_path(&env, &pack)).unwrap();
    for args in [
        vec!["verify", id.as_str()],
        vec!["verify", "--deep", id.as_str()],
    ] {
        let o = env.cmd().args(&args).output().unwrap();
        assert_code(&o, 3, &args.join(" "));
        let out = text(&o.stdout) + &text(&o.stderr);
        assert!(out.contains("missing"), "{out}");
    }
    let o = env
        .cmd()
        .args(["dump", &id, "media", "one.bin"])
        .output()
        .unwrap();
    assert_code(&o, 3, "dump of a file in a missing pack");
    fs::write(object_path(&env, &pack), &saved).unwrap();
    env.cmd().args(["verify", "--deep", &id]).assert().success();

    let (index, _) = block_on(env.store().list("index/")).unwrap().remove(0);
    let ipath = object_path(&env, &index);
    let mut ib = fs::read(&ipath).unwrap();
    let n = ib.len();
    ib[n - 3] ^= 1;
    fs::write(&ipath, &ib).unwrap();
    let o = env.cmd().args(["verify", "--deep", &id]).output().unwrap();
    assert_code(&o, 3, "verify with a damaged index");
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(out.contains(&index), "{out}");
}

#[test]
fn init_refuses_a_format_it_does_not_write() {
    let env = Env::new(Backend::Fs);
    let o = env.cmd().args(["init", "--format", "3"]).output().unwrap();
    assert_code(&o, 2, "init --format 3");
    assert!(text(&o.stderr).contains("format 3"), "{}", text(&o.stderr));
}

fn show_source(env: &Env, id: &str, name: &str) -> serde_json::Value {
    let o = env.cmd().args(["show", id, "--json"]).output().unwrap();
    assert_code(&o, 0, "show --json");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    doc["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .expect("source in show --json")
}

/// An unchanged file is not read again: its line comes from the previous
/// snapshot. A file whose bytes changed while its size and mtime were put
/// back (`touch -d`) is read, because its change time moved; `--reread`
/// reads everything.
#[test]
fn unchanged_files_are_taken_from_the_parent_and_ctime_catches_a_put_back_mtime() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    sample_tree(&data, Some(4 << 20));
    write(&data.join("notes.txt"), b"version one\n");
    env.add_dir_source("media", &data, &[]);
    let first = env.snapshot_ok();
    let files = show_source(&env, &first, "media")["files"]
        .as_u64()
        .unwrap();
    assert_eq!(show_source(&env, &first, "media")["reused_files"], 0);

    // Nothing changed: every file is taken from the parent, none is read.
    let doc = env.snapshot_json(&[], 0);
    let second = doc["id"].as_str().unwrap().to_string();
    assert_eq!(doc["sources"][0]["bytes_read"], 0, "{doc}");
    let s = show_source(&env, &second, "media");
    assert_eq!(s["reused_files"].as_u64(), Some(files), "{s}");

    // Same size, mtime put back: ctime still tells.
    let stamp = fs::metadata(data.join("notes.txt"))
        .unwrap()
        .modified()
        .unwrap();
    write(&data.join("notes.txt"), b"version two\n");
    filetime::set_file_mtime(
        data.join("notes.txt"),
        filetime::FileTime::from_system_time(stamp),
    )
    .unwrap();
    let third = env.snapshot_ok();
    let s = show_source(&env, &third, "media");
    assert_eq!(s["reused_files"].as_u64(), Some(files - 1), "{s}");
    let o = env
        .cmd()
        .args(["dump", &third, "media", "notes.txt"])
        .output()
        .unwrap();
    assert_code(&o, 0, "dump notes.txt");
    assert_eq!(o.stdout, b"version two\n");

    // --reread reads every file.
    let doc = env.snapshot_json(&["--reread"], 0);
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(show_source(&env, &id, "media")["reused_files"], 0);
    assert!(doc["sources"][0]["bytes_read"].as_u64().unwrap() > 4 << 20);
    env.verify_all_deep("after the reused snapshots");
    let target = env.path("restored");
    env.cmd()
        .args(["restore", &second, "--target"])
        .arg(&target)
        .assert()
        .success();
    let mut want = describe_tree(&data);
    let got = describe_tree(&target.join("media"));
    // The second snapshot holds version one of notes.txt.
    want.remove("notes.txt");
    let mut got_without = got.clone();
    got_without.remove("notes.txt");
    assert_eq!(want, got_without);
    assert_eq!(
        fs::read(target.join("media/notes.txt")).unwrap(),
        b"version one\n"
    );
}

/// A damaged chunk in the middle of a dump stream never reaches the restore
/// command as a clean end of its input: it gets the chunks before the
/// damage, then an error, and coffer exits 3.
#[test]
fn a_damaged_chunk_never_reaches_a_restore_command_as_a_clean_end() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let file = env.path("blob.bin");
    write(&file, &pseudo_random(12 << 20, 61));
    let script = env.path("careful_restore.py");
    write(&script, crate::command_source::CAREFUL_RESTORE.as_bytes());
    let out = env.path("restored.bin");
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"blob\"\ntype = \"command\"\ndump = [\"cat\", {:?}]\nrestore = [\"python3\", {:?}, {:?}]\n\n",
        file.display().to_string(),
        script.display().to_string(),
        out.display().to_string()
    ));
    env.write_config();
    let id = env.snapshot_ok();
    let pack = packs(&env).remove(0);
    let path = object_path(&env, &pack);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x55;
    fs::write(&path, &bytes).unwrap();

    let o = env
        .cmd()
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_code(&o, 3, "restore --force of a damaged stream");
    assert!(text(&o.stderr).contains(&id), "{}", text(&o.stderr));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !out.exists(),
        "the restore command saw a clean end of input from a damaged stream"
    );
    let part = fs::metadata(env.path("restored.bin.part")).map_or(0, |m| m.len());
    assert!(part >= 1 << 20, "the restore command got {part} bytes");
    let o = env.cmd().args(["dump", &id, "blob"]).output().unwrap();
    assert_code(&o, 3, "dump of a damaged stream");
}

/// The independent reader (tests/support/independent_reader.py, written from
/// docs/FORMAT.md) reads a format 2 repository written by this coffer:
/// directory, files and command sources, a reused parent, and a stream of
/// several chunks, byte for byte.
#[test]
fn the_independent_reader_reads_format_2() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let tree = env.path("tree");
    write(&tree.join("docs/notes.md"), b"# notes\n");
    write(&tree.join("data/big.bin"), &pseudo_random(3 << 20, 71));
    write(&tree.join("empty.txt"), b"");
    std::os::unix::fs::symlink("docs/notes.md", tree.join("latest")).unwrap();
    fs::hard_link(tree.join("docs/notes.md"), tree.join("hardlink.md")).unwrap();
    env.add_dir_source("tree", &tree, &[]);
    let env_file = env.path("etc/app.env");
    write(&env_file, b"SECRET=x\n");
    env.add_files_source("env", &[&env_file]);
    let stream = env.path("stream.bin");
    write(&stream, &pseudo_random(5 << 20, 72));
    env.sources.push_str(&format!(
        "[[sources]]\nname = \"dump\"\ntype = \"command\"\ndump = [\"cat\", {:?}]\n\n",
        stream.display().to_string()
    ));
    env.write_config();
    env.snapshot_ok();
    // A second snapshot: most lines come from the first.
    write(&tree.join("docs/new.md"), b"new\n");
    let second = env.snapshot_ok();
    let out = env.path("extracted");
    let py = crate::format::venv_python();
    let o = std::process::Command::new(py)
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/support/independent_reader.py"),
        )
        .args(["extract", "--repo"])
        .arg(&env.url)
        .arg("--key-file")
        .arg(&env.key)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 0, "independent_reader.py extract");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["version"], 2, "{doc}");
    assert_eq!(doc["snapshots"].as_array().unwrap().len(), 2);
    let root = out.join(&second);
    for rel in ["docs/notes.md", "docs/new.md", "data/big.bin", "empty.txt"] {
        assert_eq!(
            fs::read(root.join("tree").join(rel)).unwrap(),
            fs::read(tree.join(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(
        fs::read_link(root.join("tree/latest")).unwrap(),
        std::path::PathBuf::from("docs/notes.md")
    );
    assert!(same_inode(
        &root.join("tree/docs/notes.md"),
        &root.join("tree/hardlink.md")
    ));
    let env_rel = env_file.display().to_string();
    assert_eq!(
        fs::read(root.join("env").join(env_rel.trim_start_matches('/'))).unwrap(),
        b"SECRET=x\n"
    );
    assert_eq!(
        fs::read(root.join("dump/stdout")).unwrap(),
        fs::read(&stream).unwrap()
    );
}

/// Prune forgets snapshots of format 2 and says what it did with their
/// chunks (tests/it/gc.rs tests the collection itself); the snapshots it
/// keeps stay whole.
#[test]
fn prune_of_format_2_keeps_what_it_keeps_whole_and_reports_chunks() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("a.bin"), &pseudo_random(2 << 20, 81));
    env.add_dir_source("media", &data, &[]);
    env.snapshot_ok();
    write(&data.join("b.bin"), &pseudo_random(1 << 20, 82));
    let kept = env.snapshot_ok();
    let before = pack_bytes(&env);
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_code(&o, 0, "prune --keep-last 1");
    // The kept snapshot uses every chunk of the removed one (a.bin).
    assert!(
        text(&o.stdout).contains(
            "chunks: deleted 0 packs (0 B) marked by an earlier prune; marked 0 packs (0 B)"
        ),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(env.snapshot_ids(), vec![kept.clone()]);
    assert_eq!(pack_bytes(&env), before);
    env.verify_all_deep("after prune");
    let o = env
        .cmd()
        .args(["prune", "--keep-last", "1", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["chunks"]["packs_in_use"], 2, "{doc}");
    assert!(doc.get("warnings").is_none(), "{doc}");
}

/// Two packs swapped (each under the other's name): plain verify finds
/// both by their hashes, and a restore of either snapshot fails
/// authentication (exit 3) before writing its destination.
#[test]
fn two_packs_swapped_are_found() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("a.bin"), &pseudo_random(2 << 20, 91));
    env.add_dir_source("media", &data, &[]);
    let first = env.snapshot_ok();
    write(&data.join("b.bin"), &pseudo_random(2 << 20, 92));
    let second = env.snapshot_ok();
    let all = packs(&env);
    assert_eq!(all.len(), 2, "{all:?}");
    let (p0, p1) = (object_path(&env, &all[0]), object_path(&env, &all[1]));
    let (b0, b1) = (fs::read(&p0).unwrap(), fs::read(&p1).unwrap());
    fs::write(&p0, &b1).unwrap();
    fs::write(&p1, &b0).unwrap();
    let o = env.cmd().args(["verify", "--all"]).output().unwrap();
    assert_code(&o, 3, "verify --all");
    let out = text(&o.stdout);
    assert!(out.contains(&all[0]) && out.contains(&all[1]), "{out}");
    for id in [&first, &second] {
        let target = env.path(&format!("restored-{id}"));
        let o = env
            .cmd()
            .args(["restore", id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert_code(&o, 3, "restore from swapped packs");
        assert!(!target.join("media").exists());
    }
}

/// A pack that cannot be stored fails the snapshot: nothing is committed,
/// and the message names the store's own error, not only that sources
/// failed.
#[test]
fn a_pack_that_cannot_be_stored_commits_nothing_and_says_why() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("big.bin"), &pseudo_random(40 << 20, 101));
    env.add_dir_source("media", &data, &[]);
    // Where packs go is a file: every pack upload fails.
    write(&object_path(&env, "packs"), b"not a directory");
    let o = env.cmd().arg("snapshot").output().unwrap();
    assert_code(&o, 1, "snapshot with packs/ unwritable");
    let err = text(&o.stderr);
    assert!(
        err.contains("not committed") && err.contains("packs/"),
        "{err}"
    );
    assert!(env.snapshot_ids().is_empty());
}

/// `coffer repair index` rebuilds a lost index object and replaces a
/// damaged one from the packs' own tables; a dry run changes nothing; a
/// damaged pack is named (exit 3) and its chunks stay missing; a format 1
/// repository has nothing to repair (exit 2).
#[test]
fn repair_index_rebuilds_lost_and_damaged_index_objects_from_the_packs() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("a.bin"), &pseudo_random(2 << 20, 101));
    env.add_dir_source("media", &data, &[]);
    let first = env.snapshot_ok();
    write(&data.join("b.bin"), &pseudo_random(2 << 20, 102));
    let second = env.snapshot_ok();
    let mut indexes: Vec<String> = block_on(env.store().list("index/"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    indexes.sort();
    assert_eq!(indexes.len(), 2, "{indexes:?}");
    fs::remove_file(object_path(&env, &indexes[0])).unwrap();
    let damaged = object_path(&env, &indexes[1]);
    let mut b = fs::read(&damaged).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    fs::write(&damaged, &b).unwrap();
    let o = env.cmd().args(["verify", "--all"]).output().unwrap();
    assert_code(&o, 3, "verify with a lost and a damaged index object");
    let said = text(&o.stdout) + &text(&o.stderr);
    assert!(said.contains("`coffer repair index`"), "{said}");
    // Only lost: verify names the chunks and says what rebuilds the index.
    fs::remove_file(&damaged).unwrap();
    let o = env.cmd().args(["verify", "--all"]).output().unwrap();
    assert_code(&o, 3, "verify with both index objects lost");
    assert!(
        text(&o.stdout).contains("is in no index")
            && text(&o.stderr).contains("`coffer repair index` rebuilds"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    fs::write(&damaged, &b).unwrap();

    let o = env
        .cmd()
        .args(["repair", "index", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&o, 0, "repair index --dry-run");
    assert!(
        text(&o.stdout).contains("would index 2 of 2 packs"),
        "{}",
        text(&o.stdout)
    );
    assert!(damaged.exists());
    let o = env.cmd().args(["repair", "index"]).output().unwrap();
    assert_code(&o, 0, "repair index");
    let out = text(&o.stdout);
    assert!(out.contains("indexed 2 of 2 packs"), "{out}");
    assert!(out.contains("deleted 1 damaged index objects"), "{out}");
    assert!(!damaged.exists());
    env.verify_all_deep("after repair index");
    for id in [&first, &second] {
        let target = env.path(&format!("restored-{id}"));
        env.cmd()
            .args(["restore", id, "--target"])
            .arg(&target)
            .assert()
            .success();
    }
    assert_same_tree(
        &data,
        &env.path(&format!("restored-{second}")).join("media"),
    );
    // Nothing more to do.
    let o = env
        .cmd()
        .args(["repair", "index", "--json"])
        .output()
        .unwrap();
    assert_code(&o, 0, "repair index again");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["reindexed_packs"], 0, "{doc}");

    // A damaged pack that no index lists: named, exit 3.
    let all = packs(&env);
    let idx: Vec<String> = block_on(env.store().list("index/"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for i in &idx {
        fs::remove_file(object_path(&env, i)).unwrap();
    }
    let p = object_path(&env, &all[0]);
    let mut pb = fs::read(&p).unwrap();
    pb[100] ^= 1;
    fs::write(&p, &pb).unwrap();
    let o = env.cmd().args(["repair", "index"]).output().unwrap();
    assert_code(&o, 3, "repair index with a damaged pack");
    let out = text(&o.stdout);
    assert!(out.contains(&all[0]) && out.contains("damaged"), "{out}");
    assert!(out.contains("indexed 1 of 2 packs"), "{out}");

    let v1 = Env::init_format(Backend::Fs, 1);
    let o = v1.cmd().args(["repair", "index"]).output().unwrap();
    assert_code(&o, 2, "repair index on format 1");
    assert!(
        text(&o.stderr).contains("only format 2"),
        "{}",
        text(&o.stderr)
    );
}

fn open_repo(env: &Env) -> coffer::repo::Repository {
    let cred = coffer::crypto::Credential::KeyFile {
        path: env.key.display().to_string(),
        key: coffer::crypto::read_key_file(&env.key).expect("key file"),
    };
    block_on(coffer::repo::open(&env.store(), &cred)).expect("open repo")
}

/// A flipped byte in a format 2 manifest: verify, restore and dump exit 3
/// and name the snapshot; the other snapshot still restores.
#[test]
fn a_flipped_byte_in_a_format_2_manifest_is_named() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("a.bin"), &pseudo_random(1 << 20, 111));
    env.add_dir_source("media", &data, &[]);
    let good = env.snapshot_ok();
    let bad = env.snapshot_ok();
    let m = object_path(&env, &format!("snapshots/{bad}"));
    let mut b = fs::read(&m).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    fs::write(&m, &b).unwrap();
    let o = env.cmd().args(["verify", "--all"]).output().unwrap();
    assert_code(&o, 3, "verify --all");
    assert!(text(&o.stdout).contains(&bad) || text(&o.stderr).contains(&bad));
    for args in [
        vec!["restore", bad.as_str(), "--target", "r1"],
        vec!["dump", bad.as_str(), "media"],
    ] {
        let o = env.cmd().args(&args).output().unwrap();
        assert_code(&o, 3, &format!("{args:?}"));
        assert!(text(&o.stderr).contains(&bad), "{}", text(&o.stderr));
    }
    assert!(!env.path("r1").exists());
    env.cmd()
        .args(["restore", &good, "--target", "r2"])
        .assert()
        .success();
}

/// A flipped byte in a source's file list (a list chunk in its pack):
/// verify --deep, restore and dump exit 3 naming the snapshot and source,
/// and nothing reaches the restore target.
#[test]
fn a_flipped_byte_in_a_file_list_is_named() {
    let mut env = Env::init_format(Backend::Fs, 2);
    let data = env.path("data");
    write(&data.join("a.bin"), &pseudo_random(1 << 20, 121));
    write(&data.join("notes.txt"), b"hello\n");
    env.add_dir_source("media", &data, &[]);
    let id = env.snapshot_ok();
    let repo = open_repo(&env);
    let m = block_on(repo.load_manifest(&id)).unwrap();
    let list = m.sources[0].list.clone().unwrap();
    let f = block_on(repo.fetcher()).unwrap();
    let (pack, entry) = f.locations().locate(&list.chunks[0]).unwrap();
    let path = object_path(&env, &coffer::chunks::pack::object_name(pack));
    let mut b = fs::read(&path).unwrap();
    b[entry.offset as usize + 5] ^= 1;
    fs::write(&path, &b).unwrap();
    let o = env.cmd().args(["verify", "--deep", &id]).output().unwrap();
    assert_code(&o, 3, "verify --deep");
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(out.contains(&id) && out.contains("media"), "{out}");
    let o = env
        .cmd()
        .args(["restore", &id, "--target", "r"])
        .output()
        .unwrap();
    assert_code(&o, 3, "restore");
    assert!(text(&o.stderr).contains("media"), "{}", text(&o.stderr));
    assert!(!env.path("r/media/a.bin").exists());
    let o = env.cmd().args(["dump", &id, "media"]).output().unwrap();
    assert_code(&o, 3, "dump");
}

/// A format 2 config records how chunks are named; a repository naming
/// them some other way was written by a newer coffer and is refused
/// before anything is read.
#[test]
fn a_format_2_config_records_its_chunk_id_algorithm() {
    let env = Env::init_format(Backend::Fs, 2);
    let path = object_path(&env, "config");
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(cfg["chunk_id"], "blake3-keyed", "{cfg}");
    let changed = fs::read_to_string(&path)
        .unwrap()
        .replace("blake3-keyed", "blake9-keyed");
    fs::write(&path, changed).unwrap();
    let o = env.cmd().args(["snapshots"]).output().unwrap();
    assert_code(&o, 1, "snapshots of a repository with an unknown chunk id");
    assert!(
        text(&o.stderr).contains("\"blake9-keyed\", which this coffer does not know"),
        "{}",
        text(&o.stderr)
    );
}
