//! Containment (contract, "Guarantees of a repository" 7): a restore never
//! writes outside its destination, whatever the destination already holds
//! (symlinks planted where the snapshot has directories or files) and
//! whatever an authenticated archive holds (`..`, absolute paths, symlinks
//! followed by entries beneath them, hard links out of the tree).
//!
//! The tests run as whatever user cargo runs as (often root in CI): every
//! "outside" path is a decoy inside the test's temp dir, never a system file.

use crate::common::*;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use coffer::crypto::{Credential, ObjectKind, SealWriter};
use coffer::manifest::{
    EntryKind, IndexEntry, Manifest, ObjectRef, SnapshotStatus, SourceRecord, SourceStatus,
    seal_context,
};
use sha2::{Digest, Sha256};

const SOURCE: &str = "media";

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run(env: &Env, args: &[&str]) -> Outcome {
    let out = env.cmd().args(args).output().expect("run coffer");
    Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn tree_diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut d = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push_str(&format!("removed: {k} ({v})\n")),
            Some(w) if w != v => d.push_str(&format!("changed: {k}\n  was {v}\n  now {w}\n")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        d.push_str(&format!("added: {k} ({})\n", b[k]));
    }
    d
}

fn assert_unchanged(what: &str, root: &Path, before: &BTreeMap<String, String>) {
    let after = describe_tree(root);
    assert!(
        &after == before,
        "{what} ({}) changed:\n{}",
        root.display(),
        tree_diff(before, &after)
    );
}

// ------------------------------------------- (1) symlinks in the destination

/// The test's world: a source tree whose symlinks point out of it, and an
/// OUTSIDE directory holding entries named like the snapshot's, so a write
/// that follows a link would change something there.
struct World {
    env: Env,
    data: PathBuf,
    outside: PathBuf,
    id: String,
}

fn make_outside(outside: &Path) {
    write(&outside.join("victim.txt"), b"outside: victim\n");
    write(&outside.join("file.txt"), b"outside: file.txt\n");
    write(&outside.join("inner.txt"), b"outside: inner.txt\n");
    write(&outside.join("sub/inner.txt"), b"outside: sub/inner.txt\n");
}

fn world(b: Backend) -> World {
    let mut env = Env::init(b);
    let data = env.path("data");
    let outside = env.path("outside");
    make_outside(&outside);

    write(&data.join("file.txt"), b"inside: file.txt\n");
    write(&data.join("sub/inner.txt"), b"inside: sub/inner.txt\n");
    write(
        &data.join("sub/deeper/f.txt"),
        b"inside: sub/deeper/f.txt\n",
    );
    // Absolute targets, like /etc/passwd, but into the decoy.
    symlink(&outside, data.join("abs-dir")).expect("symlink");
    symlink(outside.join("victim.txt"), data.join("abs-file")).expect("symlink");
    symlink("/etc/passwd", data.join("passwd")).expect("symlink");
    // Relative, climbing out: data/sub/../../outside is OUTSIDE.
    symlink("../../outside", data.join("sub/rel-out")).expect("symlink");
    symlink("../../outside/victim.txt", data.join("sub/rel-file")).expect("symlink");
    env.add_dir_source(SOURCE, &data, &[]);
    let id = env.snapshot_ok();
    World {
        env,
        data,
        outside,
        id,
    }
}

fn restore_target_over_planted_links(b: Backend) {
    let w = world(b);
    let original = describe_tree(&w.data);
    let outside_before = describe_tree(&w.outside);

    // TARGET/<source> is itself a symlink to OUTSIDE.
    let t1 = w.env.path("target1");
    fs::create_dir_all(&t1).expect("mkdir");
    symlink(&w.outside, t1.join(SOURCE)).expect("symlink");
    let o = run(
        &w.env,
        &[
            "restore",
            &w.id,
            "--target",
            &t1.display().to_string(),
            "--force",
        ],
    );
    assert_unchanged(
        "OUTSIDE after restore over TARGET/<source> -> OUTSIDE",
        &w.outside,
        &outside_before,
    );
    assert_eq!(
        o.code,
        Some(0),
        "restore over TARGET/{SOURCE} -> OUTSIDE:\n{}",
        o.stderr
    );
    assert!(
        !fs::symlink_metadata(t1.join(SOURCE))
            .unwrap()
            .file_type()
            .is_symlink(),
        "TARGET/{SOURCE} is still the planted symlink"
    );
    assert_same_tree(&w.data, &t1.join(SOURCE));
    assert_eq!(describe_tree(&w.data), original);

    // TARGET/<source> is a directory whose entries are symlinks to OUTSIDE,
    // named like the snapshot's directories, files and links.
    let t2 = w.env.path("target2");
    let planted = t2.join(SOURCE);
    fs::create_dir_all(&planted).expect("mkdir");
    symlink(&w.outside, planted.join("sub")).expect("symlink");
    symlink(w.outside.join("file.txt"), planted.join("file.txt")).expect("symlink");
    symlink(&w.outside, planted.join("abs-file")).expect("symlink");
    symlink(w.outside.join("victim.txt"), planted.join("abs-dir")).expect("symlink");
    symlink(&w.outside, planted.join("created-since")).expect("symlink");
    let o = run(
        &w.env,
        &[
            "restore",
            &w.id,
            "--target",
            &t2.display().to_string(),
            "--force",
        ],
    );
    assert_unchanged(
        "OUTSIDE after restore over TARGET/<source>/sub -> OUTSIDE",
        &w.outside,
        &outside_before,
    );
    assert_eq!(o.code, Some(0), "restore over planted links:\n{}", o.stderr);
    assert_same_tree(&w.data, &planted);
}

#[test]
fn restore_target_over_planted_symlinks_stays_inside_fs() {
    restore_target_over_planted_links(Backend::Fs);
}
#[test]
fn restore_target_over_planted_symlinks_stays_inside_s3() {
    restore_target_over_planted_links(Backend::S3);
}
#[test]
fn restore_target_over_planted_symlinks_stays_inside_gcs() {
    restore_target_over_planted_links(Backend::Gcs);
}

/// In place with --include: a directory of the original tree has been
/// replaced by a symlink to OUTSIDE since the snapshot.
fn in_place_through_replaced_parent(b: Backend) {
    let w = world(b);
    fs::remove_dir_all(w.data.join("sub")).expect("rm sub");
    symlink(&w.outside, w.data.join("sub")).expect("symlink");
    // The snapshot has sub/deeper/; OUTSIDE has no deeper/ to be created.
    assert!(!w.outside.join("deeper").exists());

    // --include of a sub-path below the replaced parent: must fail or skip,
    // never write into OUTSIDE.
    let mut failures = Vec::new();
    for include in ["sub", "sub/**", "sub/deeper/f.txt", "sub/inner.txt"] {
        let outside_before = describe_tree(&w.outside);
        let o = run(&w.env, &["restore", &w.id, "--include", include, "--force"]);
        if std::env::var_os("COFFER_TEST_TRACE").is_some() {
            eprintln!(
                "[--include {include}] exit {:?}: {}",
                o.code,
                o.stderr.trim()
            );
        }
        let after = describe_tree(&w.outside);
        if after != outside_before || o.stderr.contains("panicked") {
            failures.push(format!(
                "--include {include:?}: exit {:?}, OUTSIDE changed:\n{}stderr: {}",
                o.code,
                tree_diff(&outside_before, &after),
                o.stderr.trim()
            ));
        }
        // Start the next case from a pristine OUTSIDE and planted link.
        fs::remove_dir_all(&w.outside).expect("rm outside");
        make_outside(&w.outside);
        let _ = fs::remove_dir_all(w.data.join("sub"));
        let _ = fs::remove_file(w.data.join("sub"));
        symlink(&w.outside, w.data.join("sub")).expect("symlink");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// In place, the whole source: the planted link is replaced, not followed.
fn in_place_over_replaced_subdir(b: Backend) {
    let w = world(b);
    let original = describe_tree(&w.data);
    fs::remove_dir_all(w.data.join("sub")).expect("rm sub");
    symlink(&w.outside, w.data.join("sub")).expect("symlink");
    let outside_before = describe_tree(&w.outside);
    let o = run(&w.env, &["restore", &w.id, "--force"]);
    assert_unchanged(
        "OUTSIDE after whole in-place restore",
        &w.outside,
        &outside_before,
    );
    assert_eq!(o.code, Some(0), "in-place restore:\n{}", o.stderr);
    assert_eq!(
        describe_tree(&w.data),
        original,
        "in-place restore is not the snapshot"
    );
}

#[test]
fn in_place_restore_replaces_a_symlinked_subdir_without_following_it_fs() {
    in_place_over_replaced_subdir(Backend::Fs);
}
#[test]
fn in_place_restore_replaces_a_symlinked_subdir_without_following_it_s3() {
    in_place_over_replaced_subdir(Backend::S3);
}
#[test]
fn in_place_restore_replaces_a_symlinked_subdir_without_following_it_gcs() {
    in_place_over_replaced_subdir(Backend::Gcs);
}

#[test]
fn in_place_include_restore_never_writes_through_a_symlinked_parent_fs() {
    in_place_through_replaced_parent(Backend::Fs);
}
#[test]
fn in_place_include_restore_never_writes_through_a_symlinked_parent_s3() {
    in_place_through_replaced_parent(Backend::S3);
}
#[test]
fn in_place_include_restore_never_writes_through_a_symlinked_parent_gcs() {
    in_place_through_replaced_parent(Backend::Gcs);
}

// ------------------------------------------------- (2) malicious archives

/// One entry of a hand-made tar. Names are raw bytes: the `tar` crate's
/// safe setters refuse exactly the names this test needs.
enum E {
    Dir(&'static str),
    File(Vec<u8>, &'static [u8]),
    /// A file whose real name is in a PAX `path` record (ustar name harmless).
    PaxFile(Vec<u8>, &'static [u8]),
    /// A file whose real name is in a GNU long-name (`L`) entry.
    GnuLongFile(Vec<u8>, &'static [u8]),
    Symlink(Vec<u8>, Vec<u8>),
    Hardlink(Vec<u8>, Vec<u8>),
    /// A hard link whose index line claims this content, not its target's.
    HardlinkClaiming(Vec<u8>, Vec<u8>, &'static [u8]),
    /// A GNU long-name entry of this many bytes (no index line): more than
    /// any name coffer writes.
    HugeLongName(usize),
}

fn pad(tar: &mut Vec<u8>) {
    let rem = tar.len() % 512;
    if rem != 0 {
        tar.extend(std::iter::repeat_n(0u8, 512 - rem));
    }
}

fn header(name: &[u8], ty: tar::EntryType, size: u64, link: Option<&[u8]>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(ty);
    h.set_mode(if ty == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    assert!(
        name.len() <= 100,
        "ustar name too long: {}",
        String::from_utf8_lossy(name)
    );
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(l) = link {
        assert!(l.len() <= 100);
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
    }
    h.set_cksum();
    h
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() + base != len {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn index_entry(
    path: &[u8],
    kind: EntryKind,
    data: Option<&[u8]>,
    target: Option<&[u8]>,
) -> IndexEntry {
    IndexEntry {
        size: data.map_or(0, |d| d.len() as u64),
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        mtime: 1_700_000_000,
        target: target.map(|t| String::from_utf8(t.to_vec()).expect("utf-8 target")),
        sha256: data.map(|d| hex::encode(Sha256::digest(d))),
        ..IndexEntry::new(String::from_utf8(path.to_vec()).expect("utf-8 name"), kind)
    }
}

/// The tar stream and the index lines for `entries`.
fn build(entries: &[E]) -> (Vec<u8>, Vec<u8>) {
    let mut tar = Vec::new();
    let mut index = Vec::new();
    // As coffer writes them, a hard link's index line repeats the size and
    // SHA-256 of the file it links to.
    let files: BTreeMap<&[u8], &[u8]> = entries
        .iter()
        .filter_map(|e| match e {
            E::File(n, d) => Some((n.as_slice(), *d)),
            _ => None,
        })
        .collect();
    let mut push_index = |e: IndexEntry| {
        serde_json::to_writer(&mut index, &e).expect("json");
        index.push(b'\n');
    };
    for e in entries {
        match e {
            E::Dir(name) => {
                let tname = format!("{name}/");
                tar.extend_from_slice(
                    header(tname.as_bytes(), tar::EntryType::Directory, 0, None).as_bytes(),
                );
                push_index(index_entry(name.as_bytes(), EntryKind::Dir, None, None));
            }
            E::File(name, data) => {
                tar.extend_from_slice(
                    header(name, tar::EntryType::Regular, data.len() as u64, None).as_bytes(),
                );
                tar.extend_from_slice(data);
                pad(&mut tar);
                push_index(index_entry(name, EntryKind::File, Some(data), None));
            }
            E::PaxFile(name, data) => {
                let rec = pax_record("path", name);
                tar.extend_from_slice(
                    header(
                        b"././@PaxHeader",
                        tar::EntryType::XHeader,
                        rec.len() as u64,
                        None,
                    )
                    .as_bytes(),
                );
                tar.extend_from_slice(&rec);
                pad(&mut tar);
                tar.extend_from_slice(
                    header(
                        b"innocent.txt",
                        tar::EntryType::Regular,
                        data.len() as u64,
                        None,
                    )
                    .as_bytes(),
                );
                tar.extend_from_slice(data);
                pad(&mut tar);
                push_index(index_entry(name, EntryKind::File, Some(data), None));
            }
            E::GnuLongFile(name, data) => {
                let mut long = name.clone();
                long.push(0);
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::GNULongName);
                h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
                h.set_mode(0o644);
                h.set_size(long.len() as u64);
                h.set_cksum();
                tar.extend_from_slice(h.as_bytes());
                tar.extend_from_slice(&long);
                pad(&mut tar);
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.as_old_mut().name[..12].copy_from_slice(b"innocent.txt");
                h.set_mode(0o644);
                h.set_mtime(1_700_000_000);
                h.set_size(data.len() as u64);
                h.set_cksum();
                tar.extend_from_slice(h.as_bytes());
                tar.extend_from_slice(data);
                pad(&mut tar);
                push_index(index_entry(name, EntryKind::File, Some(data), None));
            }
            E::Symlink(name, target) => {
                tar.extend_from_slice(
                    header(name, tar::EntryType::Symlink, 0, Some(target)).as_bytes(),
                );
                push_index(index_entry(name, EntryKind::Symlink, None, Some(target)));
            }
            E::Hardlink(name, target) => {
                tar.extend_from_slice(
                    header(name, tar::EntryType::Link, 0, Some(target)).as_bytes(),
                );
                let data = files.get(target.as_slice()).copied();
                push_index(index_entry(name, EntryKind::Hardlink, data, Some(target)));
            }
            E::HardlinkClaiming(name, target, claimed) => {
                tar.extend_from_slice(
                    header(name, tar::EntryType::Link, 0, Some(target)).as_bytes(),
                );
                push_index(index_entry(
                    name,
                    EntryKind::Hardlink,
                    Some(claimed),
                    Some(target),
                ));
            }
            E::HugeLongName(size) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::GNULongName);
                h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
                h.set_mode(0o644);
                h.set_size(*size as u64);
                h.set_cksum();
                tar.extend_from_slice(h.as_bytes());
                tar.extend(std::iter::repeat_n(b'n', *size));
                pad(&mut tar);
            }
        }
    }
    tar.extend_from_slice(&[0u8; 1024]);
    (tar, index)
}

/// Seals `entries` as an archive and index of source SOURCE and commits a
/// snapshot naming them, with the repository's own key: everything
/// authenticates. Returns the snapshot id.
fn commit_crafted(env: &Env, entries: &[E], origin: &Path) -> String {
    commit_crafted_source(
        env,
        entries,
        "directory",
        Some(origin.display().to_string()),
        serde_json::Map::new(),
    )
}

/// As [`commit_crafted`], for a source of any type and details.
fn commit_crafted_source(
    env: &Env,
    entries: &[E],
    kind: &str,
    origin: Option<String>,
    details: serde_json::Map<String, serde_json::Value>,
) -> String {
    let (tar, index) = build(entries);
    let store = env.store();
    let cred = Credential::KeyFile {
        path: env.key.display().to_string(),
        key: coffer::crypto::read_key_file(&env.key).expect("key file"),
    };
    let kind = kind.to_string();
    block_on(async move {
        let repo = coffer::repo::open(&store, &cred).await.expect("open repo");
        let id = coffer::crypto::random_id(8);
        let ctx = seal_context(&repo.id, &id, Some(SOURCE));
        let seal = |kind: ObjectKind, plain: &[u8]| {
            let compressed = zstd::encode_all(plain, 3).expect("zstd");
            let mut w = SealWriter::new(Vec::new(), repo.master(), kind, &ctx).expect("seal");
            w.write_all(&compressed).expect("seal");
            w.finish().expect("seal")
        };
        let archive = seal(ObjectKind::Archive, &tar);
        let index = seal(ObjectKind::Index, &index);
        let obj = |sealed: &[u8]| ObjectRef {
            object: format!("data/{id}/{}", coffer::crypto::random_id(8)),
            size: sealed.len() as u64,
            sha256: hex::encode(Sha256::digest(sealed)),
        };
        let (aref, iref) = (obj(&archive), obj(&index));
        repo.store
            .put(&aref.object, Bytes::from(archive), true)
            .await
            .expect("put archive");
        repo.store
            .put(&iref.object, Bytes::from(index), true)
            .await
            .expect("put index");
        let files = entries
            .iter()
            .filter(|e| matches!(e, E::File(..) | E::PaxFile(..) | E::GnuLongFile(..)))
            .count() as u64;
        let m = Manifest {
            version: 1,
            id: id.clone(),
            time: chrono::Utc::now(),
            host: "attacker".into(),
            tool_version: "crafted".into(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            status: SnapshotStatus::Ok,
            parent: None,
            sources: vec![SourceRecord {
                name: SOURCE.into(),
                kind,
                status: SourceStatus::Ok,
                error: None,
                files,
                bytes_read: tar.len() as u64,
                bytes_stored: aref.size + iref.size,
                duration_ms: 0,
                origin,
                archive: Some(aref),
                index: Some(iref),
                list: None,
                new_chunks: None,
                new_bytes: None,
                reused_files: None,
                problems: Vec::new(),
                skipped: Vec::new(),
                vanished: Vec::new(),
                details,
            }],
        };
        repo.commit_manifest(&m).await.expect("commit manifest");
        id
    })
}

/// WORLD/ holds the restore target T (empty), OUTSIDE with a victim file,
/// and etc/passwd: a decoy exactly where `../../etc/passwd` from the staging
/// directory inside T leads.
struct Arena {
    world: PathBuf,
    target: PathBuf,
    outside: PathBuf,
    decoys: Vec<PathBuf>,
}

fn arena(env: &Env) -> Arena {
    let world = env.path("world");
    let target = world.join("t");
    let outside = world.join("outside");
    fs::create_dir_all(&target).expect("mkdir");
    write(&outside.join("victim.txt"), b"outside: victim\n");
    write(
        &world.join("etc/passwd"),
        b"root:x:0:0:decoy:/root:/bin/sh\n",
    );
    let decoys = vec![outside.join("victim.txt"), world.join("etc/passwd")];
    Arena {
        world,
        target,
        outside,
        decoys,
    }
}

fn cases(a: &Arena) -> Vec<(&'static str, Vec<E>, &'static str)> {
    let abs_escape = a
        .outside
        .join("abs-escape.txt")
        .display()
        .to_string()
        .into_bytes();
    let outside_abs = a.outside.display().to_string().into_bytes();
    let b = |s: &str| s.as_bytes().to_vec();
    vec![
        (
            "../escape",
            vec![E::File(b("../escape"), b"x")],
            "../escape",
        ),
        (
            "../../outside/escape (lands in OUTSIDE from the staging dir)",
            vec![E::File(b("../../outside/escape.txt"), b"x")],
            "escape.txt",
        ),
        (
            "absolute path into OUTSIDE",
            vec![E::File(abs_escape, b"x")],
            "abs-escape.txt",
        ),
        (
            "a/../../x",
            vec![E::Dir("a"), E::File(b("a/../../x"), b"x")],
            "a/../../x",
        ),
        (
            "symlink link -> OUTSIDE, then file link/pwned",
            vec![
                E::Symlink(b("link"), outside_abs.clone()),
                E::File(b("link/pwned"), b"pwned"),
            ],
            "link/pwned",
        ),
        (
            "relative symlink rel -> ../../outside, then dir rel/ and file rel/pwned",
            vec![
                E::Symlink(b("rel"), b("../../outside")),
                E::Dir("rel"),
                E::File(b("rel/pwned"), b"pwned"),
            ],
            "rel",
        ),
        (
            "hard link to ../../etc/passwd",
            vec![
                E::File(b("ok.txt"), b"ok"),
                E::Hardlink(b("hl"), b("../../etc/passwd")),
            ],
            "hl",
        ),
        (
            "symlink sub -> OUTSIDE, then hard link to sub/victim.txt",
            vec![
                E::Symlink(b("sub"), outside_abs.clone()),
                E::Hardlink(b("hl"), b("sub/victim.txt")),
            ],
            "victim.txt",
        ),
        (
            "symlink s -> OUTSIDE/victim.txt, then hard link to s",
            vec![
                E::Symlink(b("s"), [outside_abs.clone(), b("/victim.txt")].concat()),
                E::Hardlink(b("hl"), b("s")),
            ],
            "hl",
        ),
        (
            "PAX path ../../outside/pax-escape.txt",
            vec![E::PaxFile(b("../../outside/pax-escape.txt"), b"x")],
            "pax-escape.txt",
        ),
        (
            "GNU long name ../../outside/gnu-escape.txt",
            vec![E::GnuLongFile(b("../../outside/gnu-escape.txt"), b"x")],
            "gnu-escape.txt",
        ),
    ]
}

fn malicious_archives(b: Backend) {
    let env = Env::init(b);
    let a = arena(&env);
    let origin = env.path("origin-never-used");

    // Control: the same builder with harmless entries restores fine, so a
    // refusal below is containment, not a badly built archive.
    let good = commit_crafted(
        &env,
        &[
            E::Dir("d"),
            E::File(b"d/x.txt".to_vec(), b"hello"),
            E::File(b"ok.txt".to_vec(), b"ok"),
            E::Symlink(b"l".to_vec(), b"ok.txt".to_vec()),
            E::Symlink(
                b"out".to_vec(),
                a.outside.display().to_string().into_bytes(),
            ),
            E::Hardlink(b"h".to_vec(), b"ok.txt".to_vec()),
        ],
        &origin,
    );
    let ctl = env.path("control");
    let o = run(
        &env,
        &["restore", &good, "--target", &ctl.display().to_string()],
    );
    assert_eq!(
        o.code,
        Some(0),
        "control restore of a crafted benign archive:\n{}",
        o.stderr
    );
    let r = ctl.join(SOURCE);
    assert_eq!(fs::read(r.join("d/x.txt")).unwrap(), b"hello");
    assert_eq!(fs::read_link(r.join("out")).unwrap(), a.outside);
    assert!(same_inode(&r.join("h"), &r.join("ok.txt")));
    let o = run(&env, &["verify", "--deep", &good]);
    assert_eq!(o.code, Some(0), "control verify --deep:\n{}", o.stderr);

    let mut failures = Vec::new();
    for (label, entries, names) in cases(&a) {
        let before = describe_tree(&a.world);
        let id = commit_crafted(&env, &entries, &origin);
        let o = run(
            &env,
            &[
                "restore",
                &id,
                "--target",
                &a.target.display().to_string(),
                "--force",
            ],
        );
        if std::env::var_os("COFFER_TEST_TRACE").is_some() {
            eprintln!("[{label}] exit {:?}: {}", o.code, o.stderr.trim());
        }
        let after = describe_tree(&a.world);
        let mut problems = Vec::new();
        if after != before {
            problems.push(format!(
                "wrote outside the destination:\n{}",
                tree_diff(&before, &after)
            ));
        }
        for d in &a.decoys {
            let n = fs::metadata(d).map(|m| m.nlink()).unwrap_or(0);
            if n != 1 {
                problems.push(format!("{} now has {n} links", d.display()));
            }
        }
        if o.code != Some(3) {
            problems.push(format!("exit {:?}, expected 3 (containment)", o.code));
        }
        for n in [id.as_str(), SOURCE, names] {
            if !o.stderr.contains(n) {
                problems.push(format!("the message does not name {n:?}"));
            }
        }
        if o.stderr.contains("integrity check failed") || o.stderr.contains("panicked") {
            problems.push("refused for the wrong reason (the crafted archive is broken?)".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "[{label}] {}\nstderr: {}",
                problems.join("\n"),
                o.stderr.trim()
            ));
        }
        // Next case starts clean even if this one escaped.
        let _ = fs::remove_dir_all(&a.world);
        let _ = arena(&env);
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn malicious_archive_entries_never_leave_the_target_fs() {
    malicious_archives(Backend::Fs);
}

#[test]
fn malicious_archive_entries_never_leave_the_target_s3() {
    malicious_archives(Backend::S3);
}

/// docs/FORMAT.md section 11 step 5: a hard link's index line repeats the
/// size and SHA-256 of the file it links to. One that claims other content
/// (what `show --files` and a listing would believe) fails `verify --deep`
/// and the restore as damaged data (exit 3), and the restore writes nothing.
#[test]
fn a_hard_link_that_claims_other_content_than_its_target_is_refused() {
    let env = Env::init(Backend::Fs);
    let id = commit_crafted(
        &env,
        &[
            E::File(b"real.txt".to_vec(), b"the real bytes"),
            E::HardlinkClaiming(b"link.txt".to_vec(), b"real.txt".to_vec(), b"other bytes"),
        ],
        &env.path("origin-never-used"),
    );
    restore_and_deep_verify_refuse(&env, &id, &["hard link \"link.txt\"", "\"real.txt\""]);
    // A link to a file the archive does not hold before it: the restore
    // refuses to link it, verify --deep finds the index wrong.
    let id = commit_crafted(
        &env,
        &[
            E::File(b"real.txt".to_vec(), b"the real bytes"),
            E::Hardlink(b"link.txt".to_vec(), b"missing.txt".to_vec()),
        ],
        &env.path("origin-never-used"),
    );
    restore_and_deep_verify_refuse(&env, &id, &["\"missing.txt\""]);
    let out = env
        .cmd()
        .args(["verify", "--deep", &id])
        .output()
        .expect("run coffer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("which is not a file stored before it"),
        "verify --deep does not say why:\n{text}"
    );
}

/// `restore --target` and `verify --deep` of snapshot `id` both exit 3 and
/// say each of `needles` and the snapshot id (verify reports on stdout,
/// restore on stderr); the restore writes nothing.
fn restore_and_deep_verify_refuse(env: &Env, id: &str, needles: &[&str]) {
    let target = env.path("restored");
    for args in [
        vec!["restore", id, "--target", target.to_str().unwrap()],
        vec!["verify", "--deep", id],
    ] {
        let out = env.cmd().args(&args).output().expect("run coffer");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(3), "{args:?}:\n{text}");
        for n in needles.iter().chain([&id]) {
            assert!(text.contains(n), "{args:?} does not say {n:?}:\n{text}");
        }
    }
    assert!(
        !target.join(SOURCE).exists(),
        "a refused restore left {}",
        target.join(SOURCE).display()
    );
}

/// Issue 10 item 11: sizes that an authenticated archive asks for are
/// capped. A GNU long name of 2 MiB (the `tar` crate would read any size
/// whole into memory) and a dump chunk of more than 4 MiB (restore holds one
/// chunk in memory) are refused as damaged data (exit 3), naming the object,
/// before they are buffered.
#[test]
fn oversized_tar_headers_and_dump_chunks_are_refused() {
    let env = Env::init(Backend::Fs);
    let id = commit_crafted(
        &env,
        &[
            E::HugeLongName(2 << 20),
            E::File(b"after.txt".to_vec(), b"after"),
        ],
        &env.path("origin-never-used"),
    );
    restore_and_deep_verify_refuse(&env, &id, &["GNU long name", "claims 2097152 bytes"]);

    // A command source whose one chunk is 4 MiB + 1 byte.
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let big: &'static [u8] = BIG.get_or_init(|| vec![b'c'; (4 << 20) + 1]);
    let details: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({"streams": [{"name": "out"}]})).unwrap();
    let id = commit_crafted_source(
        &env,
        &[E::File(b"out/000000".to_vec(), big)],
        "command",
        None,
        details,
    );
    let out = env
        .cmd()
        .args(["dump", &id, SOURCE])
        .output()
        .expect("run coffer dump");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "dump of an oversized chunk:\n{stderr}"
    );
    assert!(
        stderr.contains("chunks hold at most 4194304"),
        "the message does not say what is wrong:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "no byte of the chunk went out");
}
