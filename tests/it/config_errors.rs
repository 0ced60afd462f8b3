//! Configuration and usage errors: every bad config is exit 2 naming the key
//! and its line; missing config, missing repository, bad flags, unknown
//! snapshots; precedence of --repo / COFFER_REPO; global options anywhere;
//! no panic for any config text.

use crate::common::*;

use std::fs;
use std::ops::RangeInclusive;
use std::path::Path;

use proptest::prelude::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_code(o: &std::process::Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Every number that follows "line " in `s`.
fn line_numbers(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("line ") {
        rest = &rest[i + 5..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            out.push(n);
        }
    }
    out
}

struct Case {
    name: &'static str,
    text: &'static str,
    /// The key the message must name.
    key: Option<&'static str>,
    /// The line (or, for a key that is missing, the lines of its table) the
    /// message must point at.
    lines: RangeInclusive<usize>,
}

const REPO: &str =
    "[repository]\nurl = \"/nonexistent/coffer-repo\"\nkey_file = \"/nonexistent/key\"\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "unknown top-level key",
            text: "# coffer\nverbosity = 3\n[repository]\nurl = \"/r\"\n",
            key: Some("verbosity"),
            lines: 2..=2,
        },
        Case {
            name: "unknown key in [repository]",
            text: "[repository]\nurl = \"/r\"\n\nkey_fil = \"/k\"\n",
            key: Some("key_fil"),
            lines: 4..=4,
        },
        Case {
            name: "unknown key in [[sources]]",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"media\"\ntype = \"directory\"\npath = \"/srv/media\"\nexclud = [\"*.tmp\"]\n",
            key: Some("exclud"),
            lines: 8..=8,
        },
        Case {
            name: "unknown key in [retention]",
            text: "[repository]\nurl = \"/r\"\n\n[retention]\nkeep_last = 3\nkeep_dialy = 7\n",
            key: Some("keep_dialy"),
            lines: 6..=6,
        },
        Case {
            name: "unknown key in [hooks]",
            text: "[repository]\nurl = \"/r\"\n\n[hooks]\nbefore_snapshot = [\"true\"]\nbefore_snapshots = [\"true\"]\n",
            key: Some("before_snapshots"),
            lines: 6..=6,
        },
        Case {
            name: "non-string label value",
            text: "[repository]\nurl = \"/r\"\n\n[labels]\nenvironment = \"prod\"\nreplicas = 3\n",
            key: Some("replicas"),
            lines: 6..=6,
        },
        Case {
            name: "duplicate source name",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"media\"\ntype = \"directory\"\npath = \"/srv/a\"\n\n[[sources]]\ntype = \"directory\"\nname = \"media\"\npath = \"/srv/b\"\n",
            key: Some("media"),
            lines: 11..=11,
        },
        Case {
            name: "missing path for directory",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"media\"\ntype = \"directory\"\nexclude = [\"*.tmp\"]\n\n[labels]\nx = \"y\"\n",
            key: Some("path"),
            lines: 4..=7,
        },
        Case {
            name: "missing url for postgres",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"media\"\ntype = \"directory\"\npath = \"/srv/a\"\n\n[[sources]]\nname = \"db\"\ntype = \"postgres\"\njobs = 2\n",
            key: Some("url"),
            lines: 9..=12,
        },
        Case {
            name: "missing name",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\ntype = \"directory\"\npath = \"/srv/a\"\n",
            key: Some("name"),
            lines: 4..=6,
        },
        Case {
            name: "bad source name Media",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\ntype = \"directory\"\nname = \"Media\"\npath = \"/srv/a\"\n",
            key: Some("name"),
            lines: 6..=6,
        },
        Case {
            name: "bad type",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"x\"\n\ntype = \"nosql\"\nurl = \"nosql://x\"\n",
            key: Some("type"),
            lines: 7..=7,
        },
        Case {
            name: "keep_within = soon",
            text: "[repository]\nurl = \"/r\"\n\n[retention]\nkeep_last = 3\nkeep_within = \"soon\"\n",
            key: Some("keep_within"),
            lines: 6..=6,
        },
        Case {
            name: "keep_last = -1",
            text: "[repository]\nurl = \"/r\"\n\n[retention]\nkeep_daily = 7\nkeep_last = -1\n",
            key: Some("keep_last"),
            lines: 6..=6,
        },
        Case {
            name: "keep_last of the wrong type",
            text: "[repository]\nurl = \"/r\"\n\n[retention]\nkeep_daily = 7\nkeep_last = \"three\"\n",
            key: Some("keep_last"),
            lines: 6..=6,
        },
        Case {
            name: "jobs = 0",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://app@127.0.0.1/shop\"\njobs = 0\n",
            key: Some("jobs"),
            lines: 8..=8,
        },
        Case {
            name: "exclude on postgres",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://app@127.0.0.1/shop\"\nexclude = [\"*.tmp\"]\n",
            key: Some("exclude"),
            lines: 8..=8,
        },
        Case {
            name: "paths on a directory source",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"m\"\ntype = \"directory\"\npath = \"/srv\"\npaths = [\"/etc/hosts\"]\n",
            key: Some("paths"),
            lines: 8..=8,
        },
        Case {
            name: "relative path",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"m\"\ntype = \"directory\"\npath = \"srv/media\"\n",
            key: Some("path"),
            lines: 7..=7,
        },
        Case {
            name: "postgres url with a wrong scheme",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"db\"\ntype = \"postgres\"\n\nurl = \"mysql://root@127.0.0.1/x\"\n",
            key: Some("url"),
            lines: 8..=8,
        },
        Case {
            name: "empty hook argv",
            text: "[repository]\nurl = \"/r\"\n\n[hooks]\nafter_snapshot = [\"true\"]\nbefore_snapshot = []\n",
            key: Some("before_snapshot"),
            lines: 6..=6,
        },
        Case {
            name: "compression out of range",
            text: "[repository]\nurl = \"/r\"\nkey_file = \"/k\"\ncompression = 25\n",
            key: Some("compression"),
            lines: 4..=4,
        },
        Case {
            name: "key_file and passphrase_file both",
            text: "[repository]\nurl = \"/r\"\nkey_file = \"/k\"\npassphrase_file = \"/p\"\n",
            key: Some("passphrase_file"),
            lines: 1..=4,
        },
        Case {
            name: "[repository.retry] window that is not a duration",
            text: "[repository]\nurl = \"/r\"\n\n[repository.retry]\ntimeout = \"20s\"\nwindow = \"ninety\"\n",
            key: Some("window"),
            lines: 6..=6,
        },
        Case {
            name: "[repository.retry] timeout under a second",
            text: "[repository]\nurl = \"/r\"\n\n[repository.retry]\nwindow = \"90s\"\ntimeout = \"10ms\"\n",
            key: Some("timeout"),
            lines: 6..=6,
        },
        Case {
            name: "unknown key in [repository.retry]",
            text: "[repository]\nurl = \"/r\"\n\n[repository.retry]\nwindow = \"90s\"\nretries = 5\n",
            key: Some("retries"),
            lines: 6..=6,
        },
        Case {
            name: "bad [snapshot].vanished",
            text: "[repository]\nurl = \"/r\"\n\n[snapshot]\n\nvanished = \"sometimes\"\n",
            key: Some("vanished"),
            lines: 6..=6,
        },
        Case {
            name: "invalid TOML: unterminated string",
            text: "[repository]\nurl = \"/r\"\n\n[[sources]]\nname = \"media\ntype = \"directory\"\n",
            key: None,
            lines: 5..=5,
        },
        Case {
            name: "invalid TOML: key defined twice",
            text: "[repository]\nurl = \"/r\"\nkey_file = \"/k\"\nurl = \"/s\"\n",
            key: Some("url"),
            lines: 4..=4,
        },
    ]
}

#[test]
fn bad_configs_exit_2_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, c) in cases().into_iter().enumerate() {
        let p = dir.path().join(format!("case{i}.toml"));
        fs::write(&p, c.text).unwrap();
        let o = coffer_cmd()
            .current_dir(dir.path())
            .arg("--config")
            .arg(&p)
            .arg("snapshots")
            .output()
            .unwrap();
        let err = stderr(&o);
        let mut why = Vec::new();
        if o.status.code() != Some(2) {
            why.push(format!("exit {:?}, want 2", o.status.code()));
        }
        if let Some(k) = c.key
            && !err.contains(k)
        {
            why.push(format!("does not name `{k}`"));
        }
        let lines = line_numbers(&err);
        if !lines.iter().any(|n| c.lines.contains(n)) {
            why.push(format!(
                "points at line(s) {lines:?}, want {}",
                if c.lines.start() == c.lines.end() {
                    format!("{}", c.lines.start())
                } else {
                    format!("{}..={}", c.lines.start(), c.lines.end())
                }
            ));
        }
        if !err.contains(&format!("case{i}.toml")) {
            why.push("does not name the config file".into());
        }
        if err.contains("panicked") || o.status.code() == Some(101) {
            why.push("panicked".into());
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                c.name,
                why.join("; "),
                err.trim().replace('\n', "\n            ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad configs not reported as the contract says:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
}

/// The contract's own example config is valid (it fails later, on the
/// repository, not on the config).
#[test]
fn contract_example_config_is_accepted() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/config/contract-example.toml");
    let o = coffer_cmd()
        .arg("--config")
        .arg(&p)
        .args(["snapshot", "--dry-run", "--only", "nonexistent"])
        .output()
        .unwrap();
    // --only names no configured source: usage error about --only, not the config.
    assert_code(&o, 2, "contract example with a bad --only");
    assert!(stderr(&o).contains("nonexistent"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("line "), "{}", stderr(&o));
}

#[test]
fn missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such.toml");
    let o = coffer_cmd()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&p)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&o, 2, "--config missing file");
    assert!(stderr(&o).contains("no-such.toml"), "{}", stderr(&o));
    // Same through COFFER_CONFIG.
    let o = coffer_cmd()
        .current_dir(dir.path())
        .env("COFFER_CONFIG", &p)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&o, 2, "COFFER_CONFIG missing file");
    assert!(stderr(&o).contains("no-such.toml"), "{}", stderr(&o));
    // A directory as config file.
    let o = coffer_cmd()
        .arg("--config")
        .arg(dir.path())
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&o, 2, "--config a directory");
}

#[test]
fn no_repository_configured_exits_2_with_help() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    coffer::crypto::generate_key_file(&key).unwrap();
    let p = dir.path().join("c.toml");
    fs::write(
        &p,
        format!(
            "[repository]\nkey_file = {:?}\n\n[[sources]]\nname = \"m\"\ntype = \"directory\"\npath = \"/tmp\"\n",
            key.display().to_string()
        ),
    )
    .unwrap();
    for cmd in [&["snapshots"][..], &["init"], &["snapshot"]] {
        let o = coffer_cmd()
            .current_dir(dir.path())
            .arg("--config")
            .arg(&p)
            .args(cmd)
            .output()
            .unwrap();
        assert_code(&o, 2, &format!("{cmd:?} without a repository"));
        let e = stderr(&o);
        assert!(
            e.contains("--repo") || e.contains("COFFER_REPO") || e.contains("url"),
            "says how to give one: {e}"
        );
    }
    // No config file at all (empty working directory, no /etc/coffer).
    if !Path::new("/etc/coffer/coffer.toml").exists() {
        let empty = dir.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        let o = coffer_cmd()
            .current_dir(&empty)
            .env("HOME", dir.path())
            .arg("snapshots")
            .output()
            .unwrap();
        assert_code(&o, 2, "no config at all");
        let e = stderr(&o);
        assert!(
            e.contains("--repo") || e.contains("COFFER_REPO") || e.contains("coffer.toml"),
            "{e}"
        );
    }
}

#[test]
fn bad_flags_exit_2() {
    let env = Env::init(Backend::Fs);
    for args in [
        &["snapshots", "--bogus"][..],
        &["--bogus", "snapshots"],
        &["no-such-command"],
        &["snapshot", "--tag"],
        &["restore"],
        &["verify", "--all", "somesnapshot"],
        &["key", "frobnicate"],
        &["snapshot", "--label", "novalue"],
        &["snapshot", "--label", "=v"],
    ] {
        let o = env.cmd().args(args).output().unwrap();
        assert_code(&o, 2, &format!("{args:?}"));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    // No command at all: usage error too.
    let o = env.cmd().output().unwrap();
    assert_code(&o, 2, "no command");
    // --help and --version succeed.
    env.cmd().arg("--help").assert().success();
    env.cmd().arg("--version").assert().success();
}

#[test]
fn unknown_snapshot_exits_2() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    write(&data.join("f"), b"f");
    env.add_dir_source("media", &data, &[]);
    env.snapshot_ok();
    let target = env.path("t");
    for args in [
        vec!["show", "zzzzzzzz"],
        vec!["show", "zzzzzzzz", "--files"],
        vec!["dump", "zzzzzzzz", "media"],
        vec!["dump", "zzzzzzzz", "media", "f"],
        vec!["verify", "zzzzzzzz"],
        vec!["restore", "zzzzzzzz", "--target", target.to_str().unwrap()],
    ] {
        let o = env.cmd().args(&args).output().unwrap();
        assert_code(&o, 2, &format!("{args:?}"));
        assert!(
            stderr(&o).contains("zzzzzzzz"),
            "names the id: {}",
            stderr(&o)
        );
    }
    assert!(!target.exists());
    // Unknown source of a known snapshot: also exit 2.
    let o = env.cmd().args(["dump", "latest", "nope"]).output().unwrap();
    assert_code(&o, 2, "dump of an unknown source");
    let o = env
        .cmd()
        .args(["restore", "latest", "--only", "nope", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_code(&o, 2, "restore --only an unknown source");
}

fn init_repo_at(env: &Env, url: &str) {
    env.cmd()
        .arg("--repo")
        .arg(url)
        .arg("init")
        .assert()
        .success();
}

fn list_ids(env: &Env, extra: &[&str], repo_env: Option<&str>) -> Vec<String> {
    let mut c = env.cmd();
    if let Some(r) = repo_env {
        c.env("COFFER_REPO", r);
    }
    let o = c
        .args(extra)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_code(
        &o,
        0,
        &format!("snapshots {extra:?} COFFER_REPO={repo_env:?}"),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn repo_flag_and_env_override_config_url() {
    let mut env = Env::init(Backend::Fs); // config url: <dir>/repo
    let data = env.path("data");
    write(&data.join("f"), b"f");
    env.add_dir_source("media", &data, &[]);
    let other = env.path("other-repo").display().to_string();
    let third = format!("file://{}", env.path("third-repo").display());
    init_repo_at(&env, &other);
    init_repo_at(&env, &third);

    let in_config = env.snapshot_ok();
    let o = env
        .cmd()
        .arg("--repo")
        .arg(&other)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    assert_code(&o, 0, "snapshot --repo other");
    let in_other = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = env
        .cmd()
        .env("COFFER_REPO", &third)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    assert_code(&o, 0, "snapshot COFFER_REPO=third");
    let in_third = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(list_ids(&env, &[], None), vec![in_config.clone()]);
    assert_eq!(
        list_ids(&env, &["--repo", &other], None),
        vec![in_other.clone()]
    );
    assert_eq!(list_ids(&env, &[], Some(&third)), vec![in_third.clone()]);
    // The flag beats the environment.
    assert_eq!(
        list_ids(&env, &["--repo", &other], Some(&third)),
        vec![in_other.clone()]
    );
    // --key-file beats the config's key_file too: a wrong one fails.
    let wrong = env.path("wrong");
    coffer::crypto::generate_key_file(&wrong).unwrap();
    let o = env
        .cmd()
        .arg("--key-file")
        .arg(&wrong)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&o, 3, "--key-file overrides key_file");
    // --repo pointing at nothing: not a repository, usage error naming it.
    let nothing = env.path("nothing-here").display().to_string();
    let o = env
        .cmd()
        .arg("--repo")
        .arg(&nothing)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing-here"), "{}", stderr(&o));
}

#[test]
fn global_options_before_or_after_the_command() {
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    write(&data.join("f"), b"f");
    env.add_dir_source("media", &data, &[]);
    let id = env.snapshot_ok();
    let parse = |o: &std::process::Output| -> serde_json::Value {
        assert_code(o, 0, "snapshots");
        serde_json::from_slice(&o.stdout).expect("JSON on stdout")
    };
    let a = parse(&env.cmd().args(["--json", "snapshots"]).output().unwrap());
    let b = parse(&env.cmd().args(["snapshots", "--json"]).output().unwrap());
    assert_eq!(a, b);
    assert_eq!(a[0]["id"], id.as_str());
    // --config after the command name.
    let o = coffer_cmd()
        .current_dir(env.dir.path())
        .args(["snapshots", "--json", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    assert_eq!(parse(&o), a);
    // --repo / --key-file / -q after the command name.
    let o = coffer_cmd()
        .current_dir(env.dir.path())
        .arg("snapshots")
        .arg("--config")
        .arg(&env.config)
        .arg("--repo")
        .arg(&env.url)
        .arg("--key-file")
        .arg(&env.key)
        .args(["-q", "--json"])
        .output()
        .unwrap();
    assert_eq!(parse(&o), a);
    // Nested subcommand: `key list --json` and `--json key list`.
    let k1 = env.cmd().args(["--json", "key", "list"]).output().unwrap();
    let k2 = env.cmd().args(["key", "list", "--json"]).output().unwrap();
    assert_eq!(parse(&k1), parse(&k2));
    // Default config: ./coffer.toml in the working directory.
    let o = coffer_cmd()
        .current_dir(env.dir.path())
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_eq!(parse(&o), a, "./coffer.toml is the default config");
}

fn run_with_config(text: &[u8]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fuzz.toml");
    fs::write(&p, text).unwrap();
    coffer_cmd()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&p)
        .args(["snapshot", "--dry-run"])
        .output()
        .unwrap()
}

fn assert_no_panic(o: &std::process::Output) -> Result<(), TestCaseError> {
    let e = stderr(o);
    prop_assert_ne!(o.status.code(), Some(101), "exit 101: {}", e);
    prop_assert!(o.status.code().is_some(), "killed by a signal: {}", e);
    prop_assert!(!e.contains("panicked"), "panic: {}", e);
    prop_assert!(!e.contains("RUST_BACKTRACE"), "backtrace hint: {}", e);
    Ok(())
}

const EXAMPLE: &str = include_str!("../../fixtures/config/contract-example.toml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_as_config_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        assert_no_panic(&run_with_config(&bytes))?;
    }

    #[test]
    fn random_text_as_config_never_panic(text in "[\\[\\]a-z_=\"., \\n0-9{}#-]{0,300}") {
        assert_no_panic(&run_with_config(text.as_bytes()))?;
    }

    /// The contract's example, cut and spliced at random places: mostly
    /// near-valid TOML that reaches the validation code.
    #[test]
    fn mutated_example_config_never_panics(
        at in 0usize..EXAMPLE.len(),
        cut in 0usize..64,
        insert in prop_oneof![
            Just(String::new()),
            Just("\"".to_string()),
            Just("[[sources]]\n".to_string()),
            Just("= []\n".to_string()),
            Just("-1".to_string()),
            Just("\u{0}".to_string()),
            Just("\"\u{1F600}\"".to_string()),
            Just("99999999999999999999".to_string()),
            Just("{}".to_string()),
            "[a-z_ =\"\\[\\]\\n0-9]{0,20}",
        ],
    ) {
        let mut at = at;
        while !EXAMPLE.is_char_boundary(at) { at -= 1; }
        let mut end = (at + cut).min(EXAMPLE.len());
        while !EXAMPLE.is_char_boundary(end) { end -= 1; }
        let text = format!("{}{}{}", &EXAMPLE[..at], insert, &EXAMPLE[end..]);
        assert_no_panic(&run_with_config(text.as_bytes()))?;
    }
}

#[test]
fn hostile_config_values_never_panic() {
    let texts: Vec<String> = vec![
        format!("{REPO}[[sources]]\nname = \"\"\ntype = \"directory\"\npath = \"/\"\n"),
        format!("{REPO}[[sources]]\nname = \"a\"\ntype = \"files\"\npaths = []\n"),
        format!("{REPO}[[sources]]\nname = \"a\"\ntype = \"command\"\ndump = []\n"),
        format!(
            "{REPO}[[sources]]\nname = \"a\"\ntype = \"directory\"\npath = \"/\"\nexclude = [\"[\"]\n"
        ),
        format!(
            "{REPO}[[sources]]\nname = \"a\"\ntype = \"postgres\"\nurl = \"postgres://x\"\njobs = 99999999999\n"
        ),
        format!("{REPO}[retention]\nkeep_within = \"99999999999999999999y\"\n"),
        format!("{REPO}[retention]\nkeep_within = \"\"\n"),
        "[repository]\nurl = \"\"\nkey_file = \"/k\"\n".to_string(),
        "[repository]\nurl = \"s3://\"\nkey_file = \"/k\"\n".to_string(),
        "[repository]\nurl = \"ftp://x/y\"\nkey_file = \"/k\"\n".to_string(),
        "[repository]\nurl = \"relative/path\"\nkey_file = \"/k\"\n".to_string(),
        "[repository]\nurl = \"/r\"\npassphrase_command = []\n".to_string(),
        "[repository]\nurl = \"/r\"\nkey_file = \"\"\n".to_string(),
        "repository = 5\n".to_string(),
        "sources = \"x\"\n".to_string(),
        "[[repository]]\nurl = \"/r\"\n".to_string(),
        "\u{feff}[repository]\nurl = \"/r\"\n".to_string(),
    ];
    for t in texts {
        let o = run_with_config(t.as_bytes());
        let e = stderr(&o);
        assert!(
            o.status.code() != Some(101) && o.status.code().is_some() && !e.contains("panicked"),
            "config {t:?}: exit {:?}\n{e}",
            o.status.code()
        );
        assert_ne!(o.status.code(), Some(0), "config {t:?} accepted: {e}");
    }
}

/// Issue 11 item 11: `--config /dev/zero` (or any huge file) fails at once
/// with exit 2 and a message saying why, instead of reading gigabytes.
#[test]
fn an_oversized_config_is_refused_without_reading_it_all() {
    let started = std::time::Instant::now();
    let o = coffer_cmd()
        .args(["--config", "/dev/zero", "snapshots"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert_code(&o, 2, "--config /dev/zero");
    let e = stderr(&o);
    assert!(
        e.contains("/dev/zero") && e.contains("larger than") && e.contains("1 MiB"),
        "{e}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // A file just over the cap too; one at the cap is read (and then
    // judged as TOML).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    let mut text = b"# padding\n".repeat(104_858);
    text.truncate(1 << 20);
    fs::write(&big, &text).unwrap();
    let o = coffer_cmd()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&big)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("larger than"), "{}", stderr(&o));
    text.push(b'\n');
    fs::write(&big, &text).unwrap();
    let o = coffer_cmd()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&big)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&o, 2, "config of 1 MiB + 1 byte");
    assert!(stderr(&o).contains("larger than"), "{}", stderr(&o));
}

/// Issue 11 item 11: a config that is not UTF-8 says where: line and column.
#[test]
fn a_config_that_is_not_utf8_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.toml");
    // "café" in Latin-1 on line 3: 0xe9 is not UTF-8 there.
    fs::write(
        &p,
        b"[repository]\nurl = \"/r\"\n[labels]\nowner = \"caf\xe9\"\n",
    )
    .unwrap();
    let o = coffer_cmd()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&p)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&o, 2, "config with a Latin-1 byte");
    let e = stderr(&o);
    assert!(
        e.contains("latin1.toml")
            && e.contains("line 4, column 13")
            && e.contains("UTF-8")
            && e.contains("0xe9"),
        "{e}"
    );
}
