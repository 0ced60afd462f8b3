//! The units in systemd/: `systemd-analyze verify` accepts each of them
//! without a single warning, they carry the scheduling and hardening the
//! runbook promises, and their ExecStart= command lines run for real against
//! a test repository.
//!
//! How verify is made to work without installing anything on the machine:
//! `systemd-analyze verify --root=ROOT` on a temporary root holding a copy of
//! the distribution's units (/usr/lib/systemd/system, for sysinit.target and
//! friends), our units in ROOT/etc/systemd/system, an executable at
//! ROOT/usr/local/bin/coffer (ExecStart= must name an executable: a wrapper
//! that execs the binary under test) and ROOT/bin/sh (for coffer-notify@).
//! `Documentation=man:coffer(1)` is checked too: MANPATH points at the page
//! `coffer man` writes. `systemd-analyze` comes from the `systemd` package,
//! which scripts/test-servers.sh installs when it is missing; without it
//! this test fails.

use crate::common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

const UNITS: [&str; 7] = [
    "coffer-snapshot@.service",
    "coffer-snapshot@.timer",
    "coffer-prune@.service",
    "coffer-prune@.timer",
    "coffer-verify@.service",
    "coffer-verify@.timer",
    "coffer-notify@.service",
];

fn read_unit(name: &str) -> String {
    fs::read_to_string(units_dir().join(name)).unwrap_or_else(|e| panic!("systemd/{name}: {e}"))
}

/// A root for `systemd-analyze verify --root` (see the module doc).
struct VerifyRoot {
    dir: tempfile::TempDir,
    manpath: PathBuf,
}

impl VerifyRoot {
    fn new() -> VerifyRoot {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        let cp = Command::new("cp")
            .arg("-a")
            .arg("/usr/lib/systemd/system")
            .arg(root.join("usr/lib/systemd/"))
            .status()
            .expect("cp");
        assert!(
            cp.success(),
            "copying /usr/lib/systemd/system (from the systemd package)"
        );
        let etc = root.join("etc/systemd/system");
        fs::create_dir_all(&etc).unwrap();
        for u in UNITS {
            fs::copy(units_dir().join(u), etc.join(u)).unwrap();
        }
        let bin = root.join("usr/local/bin");
        fs::create_dir_all(&bin).unwrap();
        let wrapper = bin.join("coffer");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec {:?} \"$@\"\n",
                env!("CARGO_BIN_EXE_coffer")
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::copy("/bin/sh", root.join("bin/sh")).expect("/bin/sh");

        let manpath = dir.path().join("man");
        fs::create_dir_all(manpath.join("man1")).unwrap();
        let page = coffer_cmd().arg("man").output().unwrap();
        assert!(page.status.success());
        fs::write(manpath.join("man1/coffer.1"), &page.stdout).unwrap();
        VerifyRoot { dir, manpath }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs verify on one unit; returns (success, everything it printed).
    fn verify(&self, unit: &str) -> (bool, String) {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", self.root().display()))
            .arg(unit)
            .env("MANPATH", &self.manpath)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "systemd-analyze cannot run ({e}): install the systemd package \
                     (`bash scripts/test-servers.sh start` does it)"
                )
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    }
}

/// The instance verify loads for a template: `%i` = "shop"; coffer-notify@
/// gets the name of the unit that failed, as OnFailure=...@%n.service does.
fn instance(template: &str) -> String {
    if template.starts_with("coffer-notify@") {
        "coffer-notify@coffer-snapshot@shop.service.service".into()
    } else {
        template.replacen("@.", "@shop.", 1)
    }
}

#[test]
fn every_unit_passes_systemd_analyze_verify_without_warnings() {
    let listed: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(units_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut expected: Vec<String> = UNITS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "every file in systemd/ is verified here");

    let root = VerifyRoot::new();
    for u in UNITS {
        let (ok, out) = root.verify(&instance(u));
        assert!(
            ok && out.trim().is_empty(),
            "systemd-analyze verify {u}:\n{out}"
        );
    }
}

#[test]
fn verify_catches_a_broken_unit() {
    // The check above can fail: a misspelt key and a bad value are reported.
    let root = VerifyRoot::new();
    let path = root.root().join("etc/systemd/system/coffer-prune@.service");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replace("Nice=19", "Nicee=19")
            .replace("IOSchedulingClass=idle", "IOSchedulingClass=idel"),
    )
    .unwrap();
    let (_, out) = root.verify("coffer-prune@shop.service");
    assert!(out.contains("Unknown key 'Nicee'"), "{out}");
    assert!(out.contains("idel"), "{out}");
    fs::remove_file(root.root().join("usr/local/bin/coffer")).unwrap();
    let (ok, out) = root.verify("coffer-snapshot@shop.service");
    assert!(!ok && out.contains("/usr/local/bin/coffer"), "{out}");
}

fn value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn units_schedule_and_harden_as_documented() {
    for (timer, calendar) in [
        ("coffer-snapshot@.timer", "*-*-* 02:00:00"),
        ("coffer-prune@.timer", "Sun *-*-* 04:00:00"),
        ("coffer-verify@.timer", "Sat *-*-* 05:00:00"),
    ] {
        let t = read_unit(timer);
        assert_eq!(value(&t, "OnCalendar"), [calendar], "{timer}");
        assert_eq!(value(&t, "Persistent"), ["true"], "{timer}");
        assert_eq!(value(&t, "RandomizedDelaySec").len(), 1, "{timer}");
        assert_eq!(value(&t, "WantedBy"), ["timers.target"], "{timer}");
    }
    for service in [
        "coffer-snapshot@.service",
        "coffer-prune@.service",
        "coffer-verify@.service",
    ] {
        let s = read_unit(service);
        for (k, v) in [
            ("Type", "oneshot"),
            ("Nice", "19"),
            ("IOSchedulingClass", "idle"),
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("LoadCredential", "key:/etc/coffer/%i.key"),
            ("Environment", "COFFER_KEY_FILE=%d/key"),
            ("ReadWritePaths", "/var/lib/prometheus/node-exporter"),
            ("OnFailure", "coffer-notify@%n.service"),
        ] {
            assert_eq!(value(&s, k), [v], "{service}: {k}");
        }
        assert!(!value(&s, "ProtectHome").is_empty(), "{service}");
        for cmd in exec_starts(&s) {
            assert!(
                cmd.contains("--metrics-file /var/lib/prometheus/node-exporter/coffer-%i.prom"),
                "{service}: {cmd}"
            );
        }
    }
    let verify = exec_starts(&read_unit("coffer-verify@.service"));
    assert!(verify.iter().any(|c| c.ends_with("verify --deep latest")));
}

/// ExecStart= lines with their backslash continuations joined.
fn exec_starts(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    value(&joined, "ExecStart")
        .into_iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A metric's value for an operation in a textfile.
fn op_metric(text: &str, name: &str, op: &str) -> Option<f64> {
    let prefix = format!("{name}{{operation=\"{op}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

#[test]
fn the_units_command_lines_run_against_a_repository() {
    // What systemd would run, with its paths pointed at a test world:
    // /etc/coffer/%i.toml -> the test config, %d/key -> the test key, the
    // textfile directory -> a temporary one.
    let mut env = Env::init(Backend::Fs);
    let data = env.path("data");
    sample_tree(&data, None);
    env.add_dir_source("media", &data, &[]);
    env.extra = "[retention]\nkeep_last = 3\n".into();
    // The key arrives only through COFFER_KEY_FILE, as LoadCredential= does.
    let key = env.key.clone();
    env.key = PathBuf::from("/nonexistent/key-from-config");
    env.write_config();
    let textfile = env.path("textfile");
    fs::create_dir(&textfile).unwrap();
    let prom = textfile.join("coffer-shop.prom");

    for service in [
        "coffer-snapshot@.service",
        "coffer-prune@.service",
        "coffer-verify@.service",
    ] {
        let unit = read_unit(service);
        let key_env = value(&unit, "Environment")[0];
        assert_eq!(key_env, "COFFER_KEY_FILE=%d/key");
        for cmd in exec_starts(&unit) {
            let cmd = cmd
                .replace("/etc/coffer/%i.toml", &env.config.display().to_string())
                .replace(
                    "/var/lib/prometheus/node-exporter/coffer-%i.prom",
                    &prom.display().to_string(),
                );
            assert!(!cmd.contains('%'), "unsubstituted specifier in {cmd}");
            let argv: Vec<&str> = cmd.split_whitespace().collect();
            assert_eq!(argv[0], "/usr/local/bin/coffer");
            let o = coffer_cmd()
                .args(&argv[1..])
                .env("COFFER_KEY_FILE", &key)
                .current_dir(env.dir.path())
                .output()
                .unwrap();
            assert_eq!(
                o.status.code(),
                Some(0),
                "{service}: {cmd}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let text = fs::read_to_string(&prom).unwrap();
    for op in ["snapshot", "prune", "verify"] {
        assert_eq!(
            op_metric(&text, "coffer_exit_code", op),
            Some(0.0),
            "{op}:\n{text}"
        );
    }
}
