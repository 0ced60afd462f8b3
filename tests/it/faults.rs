//! A flaky network between coffer and S3 (issue 11, items 5 to 8): a fault
//! proxy in front of the S3 test server resets connections, loses answers,
//! answers 503 SlowDown, refuses connections for a while (a restart) or
//! goes silent. Whatever happens, the exit code tells the truth: a
//! snapshot that was committed exits 0 (with a warning when an answer was
//! lost), one that was not exits 1 and says what was tried.

use std::time::{Duration, Instant};

use crate::common::faultproxy::{Action, FaultProxy, Rule};
use crate::common::*;

/// An initialised S3 repository reached through `proxy`, with one
/// directory source (`big` adds a file of that many incompressible bytes).
fn proxied(proxy: &FaultProxy, big: Option<usize>, retry: Option<(&str, &str)>) -> Env {
    let mut env = Env::new(Backend::S3);
    env.options.insert("aws_endpoint".into(), proxy.endpoint());
    if let Some((window, timeout)) = retry {
        env.extra = format!("[repository.retry]\nwindow = {window:?}\ntimeout = {timeout:?}\n");
    }
    env.write_config();
    env.cmd().arg("init").assert().success();
    let data = env.path("data");
    sample_tree(&data, big);
    env.add_dir_source("media", &data, &[]);
    env
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.cmd().args(args).output().expect("run coffer")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `snapshot --json`, asserting the exit code; returns the document
/// and stderr.
fn snapshot(env: &Env, code: i32) -> (serde_json::Value, String) {
    let o = run(env, &["snapshot", "--json"]);
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(code),
        "snapshot exit code; stderr:\n{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("snapshot --json prints JSON ({e}): {}", text(&o.stdout)));
    (v, err)
}

/// The restored tree equals the source.
fn restores_whole(env: &Env, id: &str) {
    let target = env.path(&unique("restored"));
    let o = run(env, &["restore", id, "--target", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "restore: {}", text(&o.stderr));
    assert_same_tree(&env.path("data"), &target.join("media"));
}

fn retries(v: &serde_json::Value) -> u64 {
    v["store"]["retries"]
        .as_u64()
        .unwrap_or_else(|| panic!("--json has store.retries: {v}"))
}

// ---------------------------------------------------------------- item 5

#[test]
fn a_reset_at_the_commit_point_is_retried() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, None);
    // The manifest PUT is the only PUT under snapshots/.
    proxy.add(Rule::on("PUT", "/snapshots/", Action::Reset));
    let (v, _) = snapshot(&env, 0);
    assert_eq!(
        proxy.faults().len(),
        1,
        "the reset happened: {:?}",
        proxy.requests()
    );
    assert!(retries(&v) >= 1, "the reset counts as a retry: {v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    env.verify_all_deep("after the faults");
    restores_whole(&env, &id);
}

#[test]
fn resets_and_slowdowns_on_data_uploads_are_ridden_out() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, None);
    proxy.add(Rule::on("PUT", "/data/", Action::SlowDown).times(3));
    proxy.add(Rule::on("PUT", "/data/", Action::Reset).nth(2).times(2));
    let metrics = env.path("coffer.prom");
    let o = run(
        &env,
        &[
            "snapshot",
            "--json",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(proxy.faults().len(), 5, "{:?}", proxy.faults());
    assert!(retries(&v) >= 5, "five failed requests were retried: {v}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let line = prom
        .lines()
        .find(|l| l.starts_with("coffer_store_retries{operation=\"snapshot\"}"))
        .unwrap_or_else(|| panic!("metrics name the retries:\n{prom}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 5.0, "{line}");
    env.verify_all_deep("after the faults");
}

// ---------------------------------------------------------------- item 6

#[test]
fn a_lost_answer_to_the_manifest_write_is_a_committed_snapshot() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, None);
    proxy.add(Rule::on("PUT", "/snapshots/", Action::LoseResponse));
    let (v, _) = snapshot(&env, 0);
    let faults = proxy.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    let warnings = v["store"]["warnings"].as_array().expect("store.warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("committed")),
        "a warning says the write was found committed: {v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    // Listed once: the retry did not make a second snapshot.
    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    env.verify_all_deep("after the faults");

    // The same in text: exit 0, the id on stdout, a warning on stderr.
    proxy.add(Rule::on("PUT", "/snapshots/", Action::LoseResponse));
    let o = run(&env, &["snapshot"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let id2 = text(&o.stdout).trim().to_string();
    assert!(
        err.contains("warning:") && err.contains("committed") && err.contains("snapshots/"),
        "stderr says what was recovered: {err}"
    );
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&id2), "{ids:?} holds {id2}");
}

#[test]
fn a_manifest_write_that_never_reached_the_store_fails_the_snapshot() {
    // Every manifest PUT is reset before the server sees it, for longer
    // than the retry window: nothing is committed, exit 1, nothing listed.
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, Some(("3s", "2s")));
    proxy.add(Rule::on("PUT", "/snapshots/", Action::Reset).always());
    let o = run(&env, &["snapshot"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        proxy.faults().len() >= 2,
        "the write was retried: {:?}",
        proxy.faults()
    );
    assert!(
        err.contains(&proxy.endpoint().replace("http://", "")),
        "the error names the endpoint: {err}"
    );
    proxy.clear();
    assert!(env.snapshot_ids().is_empty());
}

// ---------------------------------------------------------------- item 7

#[test]
fn a_lost_answer_to_complete_multipart_upload_is_checked_not_misreported() {
    let proxy = FaultProxy::s3();
    // 20 MiB of incompressible data: the archive goes up in parts.
    let env = proxied(&proxy, Some(20 << 20), None);
    // The upload completes but its answer is lost; the retry is refused,
    // as S3 refuses to complete an upload that no longer exists (this
    // server would accept it).
    proxy.add(Rule::on("POST", "uploadId=", Action::LoseResponse));
    proxy.add(Rule::on(
        "POST",
        "uploadId=",
        Action::Refuse(403, "AccessDenied"),
    ));
    let (v, err) = snapshot(&env, 0);
    assert_eq!(proxy.faults().len(), 2, "{:?}", proxy.requests());
    assert!(
        !err.contains("privileges"),
        "no talk of privileges for a lost answer: {err}"
    );
    let warnings = v["store"]["warnings"].as_array().expect("store.warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("did not confirm")),
        "a warning says the upload's end was not confirmed but the object is there: {v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    env.verify_all_deep("after the faults");
    restores_whole(&env, &id);

    // When the upload did not happen, the refusal is an error that says
    // so (the object is absent), not a talk of privileges.
    proxy.add(Rule::on("POST", "uploadId=", Action::Refuse(404, "NoSuchUpload")).always());
    let o = run(&env, &["snapshot"]);
    let err = text(&o.stderr);
    proxy.clear();
    assert!(
        o.status.code() == Some(1) || o.status.code() == Some(4),
        "{err}"
    );
    assert!(
        err.contains("data/") && err.contains("absent"),
        "the error names the object and says it is absent: {err}"
    );
    assert_eq!(env.snapshot_ids(), vec![id]);
}

// ---------------------------------------------------------------- item 8

#[test]
fn a_short_s3_restart_is_ridden_out() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, None);
    // Connections are refused for 6 s from the start of the snapshot, as
    // while an S3 server restarts (object_store's default 10 retries gave
    // up after about 6 s).
    proxy.down_for(Duration::from_secs(6));
    let (v, _) = snapshot(&env, 0);
    assert!(retries(&v) >= 1, "the outage cost retries: {v}");
    env.verify_all_deep("after the faults");
}

#[test]
fn an_outage_of_a_minute_is_ridden_out_with_the_default_policy() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, None);
    proxy.down_for(Duration::from_secs(62));
    let started = Instant::now();
    let (v, _) = snapshot(&env, 0);
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "the store was down for the first minute"
    );
    assert!(retries(&v) >= 3, "{v}");
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn a_silent_endpoint_is_given_up_on_with_a_message_that_names_it() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, Some(("5s", "2s")));
    proxy.silent(true);
    let started = Instant::now();
    let o = run(&env, &["snapshot", "--json"]);
    let took = started.elapsed();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // A window of 5 s and 2 s per request: well under a minute, not the
    // minutes a silent connection used to take.
    assert!(
        took < Duration::from_secs(60),
        "gave up after {took:?}: {err}"
    );
    let endpoint = proxy.endpoint();
    assert!(
        err.contains(endpoint.trim_start_matches("http://")),
        "{err}"
    );
    assert!(
        err.contains("[repository.retry]"),
        "the error says how to wait longer: {err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(retries(&v) >= 1, "{v}");
    proxy.silent(false);
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn restore_rides_out_resets_and_a_short_restart() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, None);
    let id = env.snapshot_ok();
    proxy.add(Rule::on("GET", "/data/", Action::Reset).times(2));
    // Checked once the resets are used up: the third read of data stalls.
    proxy.add(Rule::on(
        "GET",
        "/data/",
        Action::Stall(Duration::from_millis(500)),
    ));
    restores_whole(&env, &id);
    assert!(proxy.faults().len() >= 3, "{:?}", proxy.faults());
    proxy.down_for(Duration::from_secs(3));
    restores_whole(&env, &id);
}

#[test]
fn an_endpoint_that_goes_silent_mid_upload_is_given_up_on_within_about_two_minutes() {
    // The default policy: a 90 s window, 30 s of silence per attempt. The
    // store goes silent once the first part of a large upload has gone up.
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, Some(40 << 20), None);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (o, took) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if proxy.count("PUT", "partNumber=") >= 1 {
                    proxy.silent(true);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let started = Instant::now();
        let o = run(&env, &["snapshot", "--json"]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (o, started.elapsed())
    });
    let err = text(&o.stderr);
    eprintln!("gave up after {took:?}:\n{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        took < Duration::from_secs(170),
        "gave up after {took:?}, not within about two minutes: {err}"
    );
    assert!(
        err.contains(proxy.endpoint().trim_start_matches("http://")),
        "{err}"
    );
    proxy.silent(false);
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn an_endpoint_given_by_the_environment_keeps_its_settings_and_its_name() {
    // AWS_ENDPOINT and AWS_ALLOW_HTTP from the environment only: the retry
    // policy's client settings must not drop them (they did: "builder
    // error" on every request to an http:// endpoint).
    let proxy = FaultProxy::s3();
    let mut env = Env::new(Backend::S3);
    env.options.remove("aws_endpoint");
    env.options.remove("aws_allow_http");
    env.extra = "[repository.retry]\nwindow = \"3s\"\ntimeout = \"2s\"\n".into();
    let data = env.path("data");
    sample_tree(&data, None);
    env.add_dir_source("media", &data, &[]);
    let cmd = |args: &[&str]| {
        env.cmd()
            .env("AWS_ENDPOINT", proxy.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .args(args)
            .output()
            .unwrap()
    };
    let o = cmd(&["init"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = cmd(&["snapshot"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    proxy.silent(true);
    let o = cmd(&["snapshots"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(proxy.endpoint().trim_start_matches("http://")),
        "{err}"
    );
}

#[test]
fn a_refused_multipart_listing_is_a_warning_and_prune_goes_on() {
    // Credentials without s3:ListBucketMultipartUploads: prune still prunes,
    // and says that multipart uploads were not cleaned up, and where to read
    // how the store can do it.
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, None);
    env.snapshot_ok();
    proxy.add(Rule::on("GET", "?uploads", Action::Refuse(403, "AccessDenied")).always());
    let o = run(&env, &["prune", "--keep-last", "1", "--json"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(proxy.faults().len(), 1, "{:?}", proxy.requests());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["multipart_uploads"].is_null(), "{v}");
    assert!(
        err.contains("list multipart uploads")
            && err.contains("Abandoned multipart uploads")
            && err.contains("credentials"),
        "{err}"
    );
}

#[test]
fn a_commit_that_cannot_be_read_back_says_it_cannot_tell() {
    // The manifest's answer is lost and the store then refuses every read
    // of it for longer than the window: coffer cannot know whether the
    // snapshot is committed, exits 1 and says how to find out.
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, Some(("3s", "2s")));
    proxy.add(Rule::on("PUT", "/snapshots/", Action::LoseResponse));
    proxy.add(Rule::on("GET", "/snapshots/", Action::Reset).always());
    let o = run(&env, &["snapshot"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed too") && err.contains("coffer snapshots"),
        "{err}"
    );
    // It was in fact committed: once the store answers, it is listed.
    proxy.clear();
    assert_eq!(env.snapshot_ids().len(), 1);
}

/// Issue 11 item 11: a store error says what to do next. A store that
/// refuses the credentials (403 AccessDenied on every request) fails
/// `snapshots` and `snapshot` with exit 1, naming the store and saying to
/// check the credentials and their rights, then run the command again.
#[test]
fn a_store_that_refuses_the_credentials_says_what_to_check() {
    let proxy = FaultProxy::s3();
    let env = proxied(&proxy, None, Some(("5s", "5s")));
    proxy.add(Rule::on("", "", Action::Refuse(403, "AccessDenied")).always());
    for args in [&["snapshots"][..], &["snapshot"][..]] {
        let o = run(&env, args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for needle in [
            env.url.as_str(),
            "the store refused the credentials",
            "run the command again",
        ] {
            assert!(err.contains(needle), "{args:?}: no {needle:?} in: {err}");
        }
    }
}
