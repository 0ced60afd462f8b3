//! `[hooks]`: user commands run around `snapshot` and `restore` (maintenance
//! mode on and off, stopping the application before an in-place restore,
//! paging someone when a backup fails).
//!
//! Rules (docs/CONFIG.md, `[hooks]`):
//! - `before_*` runs first; if it fails (non-zero exit, killed by a signal,
//!   program not found) the operation does not start, nothing is written,
//!   and the run fails with exit 1 naming the hook, its status and the tail
//!   of its stderr.
//! - `after_*` runs once the operation has run (whatever its outcome), but
//!   only if its `before_*` hook succeeded.
//! - `on_error` runs when the operation failed, partial results included
//!   (exit 4: something that should be in the snapshot is not), and when a
//!   `before_*` or `after_*` hook failed. Its own failure is reported, never
//!   changes the exit code.
//! - Hooks do not run for `--dry-run`.
//!
//! A hook's stdout and stderr go to coffer's stderr, so they never mix with
//! `--json` on stdout; only the last [`STDERR_TAIL`] bytes of its stderr are
//! kept, for the error message. Hooks get no stdin.
//!
//! A hook's environment is coffer's without coffer's secrets
//! ([`crate::childenv`]), plus the variables `[hooks] env` names, plus the
//! `COFFER_*` variables describing the operation.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use crate::config::HooksConfig;
use crate::outcome::{ErrorKind, Outcome};

/// Bytes of a failing hook's stderr quoted in the error message.
pub const STDERR_TAIL: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{hook} hook {argv} could not be started: {source}")]
    Spawn {
        hook: &'static str,
        argv: String,
        source: std::io::Error,
    },
    #[error("{hook} hook {argv} failed ({status}){}", tail_suffix(.stderr_tail))]
    Failed {
        hook: &'static str,
        argv: String,
        status: String,
        stderr_tail: String,
    },
    #[error("{hook} hook in the config is an empty list; give the program and its arguments")]
    Empty { hook: &'static str },
}

impl HookError {
    /// A hook that cannot start or fails stops or fails its operation like
    /// any tool coffer runs.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Operational
    }
}

fn tail_suffix(t: &str) -> String {
    if t.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{}", t.trim_end())
    }
}

/// The operation hooks run around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Snapshot,
    Restore,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Snapshot => "snapshot",
            Operation::Restore => "restore",
        }
    }
}

/// How an operation ended, as handed to `after_*` and `on_error` hooks.
#[derive(Clone, Debug)]
pub struct Ended {
    pub snapshot_id: Option<String>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// The hooks of one operation, with what every hook's environment carries.
#[derive(Debug)]
pub struct Hooks {
    op: Operation,
    before: Option<Vec<String>>,
    after: Option<Vec<String>>,
    on_error: Option<Vec<String>>,
    repository: Option<String>,
    /// `[hooks] env`: secrets passed on anyway.
    pass: Vec<String>,
    /// Set once `before_*` has succeeded (or there is none): `after_*` runs
    /// only then.
    started: bool,
    enabled: bool,
}

impl Hooks {
    /// `enabled` is false for `--dry-run`: then no hook runs.
    pub fn new(cfg: &HooksConfig, op: Operation, repository: Option<&str>, enabled: bool) -> Hooks {
        let (before, after) = match op {
            Operation::Snapshot => (cfg.before_snapshot.clone(), cfg.after_snapshot.clone()),
            Operation::Restore => (cfg.before_restore.clone(), cfg.after_restore.clone()),
        };
        Hooks {
            op,
            before,
            after,
            on_error: cfg.on_error.clone(),
            repository: repository.map(str::to_string),
            pass: cfg.env.clone(),
            started: false,
            enabled,
        }
    }

    fn names(&self) -> (&'static str, &'static str) {
        match self.op {
            Operation::Snapshot => ("before_snapshot", "after_snapshot"),
            Operation::Restore => ("before_restore", "after_restore"),
        }
    }

    fn base_env(&self, hook: &'static str, snapshot_id: Option<&str>) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("COFFER_HOOK".into(), hook.into());
        env.insert("COFFER_OPERATION".into(), self.op.as_str().into());
        if let Some(r) = &self.repository {
            env.insert("COFFER_REPOSITORY".into(), r.clone());
        }
        if let Some(id) = snapshot_id {
            env.insert("COFFER_SNAPSHOT_ID".into(), id.into());
        }
        env
    }

    /// Runs `before_*`. `snapshot_id` is known for a restore (the snapshot
    /// being restored), not for a snapshot.
    pub async fn before(&mut self, snapshot_id: Option<&str>) -> Result<(), HookError> {
        if !self.enabled {
            return Ok(());
        }
        let (name, _) = self.names();
        if let Some(argv) = &self.before {
            let mut env = self.base_env(name, snapshot_id);
            env.insert("COFFER_STATUS".into(), "running".into());
            run_hook(name, argv, &env, &self.pass).await?;
        }
        self.started = true;
        Ok(())
    }

    /// Runs `after_*` (if `before_*` ran and succeeded), then `on_error` if
    /// the operation or a hook failed. Returns the run's outcome: an
    /// `after_*` failure turns a success into a failure; everything else
    /// keeps the operation's outcome. The second value lists hook failures
    /// to report.
    pub async fn finish(&self, ended: &Ended) -> (Outcome, Vec<HookError>) {
        let mut problems = Vec::new();
        let mut outcome = ended.outcome;
        let mut error = ended.error.clone();
        if !self.enabled {
            return (outcome, problems);
        }
        let (_, after_name) = self.names();
        if self.started
            && let Some(argv) = &self.after
        {
            let env = self.outcome_env(after_name, ended, outcome, error.as_deref());
            if let Err(e) = run_hook(after_name, argv, &env, &self.pass).await {
                if outcome.is_ok() {
                    outcome = Outcome::Failed(e.kind());
                }
                error.get_or_insert_with(|| e.to_string());
                problems.push(e);
            }
        }
        if !outcome.is_ok()
            && let Some(argv) = &self.on_error
        {
            let env = self.outcome_env("on_error", ended, outcome, error.as_deref());
            if let Err(e) = run_hook("on_error", argv, &env, &self.pass).await {
                problems.push(e);
            }
        }
        (outcome, problems)
    }

    fn outcome_env(
        &self,
        hook: &'static str,
        ended: &Ended,
        outcome: Outcome,
        error: Option<&str>,
    ) -> BTreeMap<String, String> {
        let mut env = self.base_env(hook, ended.snapshot_id.as_deref());
        env.insert("COFFER_STATUS".into(), outcome.status().into());
        env.insert("COFFER_EXIT_CODE".into(), outcome.exit_code().to_string());
        if let Some(e) = error {
            env.insert("COFFER_ERROR".into(), e.into());
        }
        env
    }
}

fn describe(argv: &[String]) -> String {
    format!("{argv:?}")
}

/// Runs one hook to its end: stdout straight to our stderr, stderr copied to
/// our stderr with its tail kept for the error message. `env` is added to
/// coffer's environment without its secrets, but for those named in `pass`.
pub async fn run_hook(
    hook: &'static str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    pass: &[String],
) -> Result<(), HookError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(HookError::Empty { hook });
    };
    tracing::info!("running {hook} hook {}", describe(argv));
    let mut cmd = tokio::process::Command::from(crate::childenv::command(prog, pass));
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        hook,
        argv: describe(argv),
        source,
    })?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = std::io::stderr().write_all(&buf[..n]);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    let status = child.wait().await.map_err(|source| HookError::Spawn {
        hook,
        argv: describe(argv),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    let status = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    };
    Err(HookError::Failed {
        hook,
        argv: describe(argv),
        status,
        stderr_tail: String::from_utf8_lossy(&tail).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn failing_hook_names_itself_status_and_stderr_tail() {
        let e = rt()
            .block_on(run_hook(
                "before_snapshot",
                &argv(&["sh", "-c", "echo first >&2; echo 'db is busy' >&2; exit 7"]),
                &BTreeMap::new(),
                &[],
            ))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("before_snapshot hook"), "{msg}");
        assert!(msg.contains("exit status 7"), "{msg}");
        assert!(msg.contains("db is busy"), "{msg}");
    }

    #[test]
    fn stderr_tail_is_bounded() {
        let e = rt()
            .block_on(run_hook(
                "on_error",
                &argv(&[
                    "sh",
                    "-c",
                    "head -c 5000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1",
                ]),
                &BTreeMap::new(),
                &[],
            ))
            .unwrap_err();
        let HookError::Failed { stderr_tail, .. } = e else {
            panic!("not Failed")
        };
        assert!(stderr_tail.len() <= STDERR_TAIL);
        assert!(stderr_tail.ends_with("END\n"));
    }

    #[test]
    fn missing_program_and_empty_list_are_errors() {
        let e = rt()
            .block_on(run_hook(
                "after_restore",
                &argv(&["/nonexistent/coffer-hook"]),
                &BTreeMap::new(),
                &[],
            ))
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "after_restore hook [\"/nonexistent/coffer-hook\"] could not be started"
            ),
            "{e}"
        );
        let e = rt()
            .block_on(run_hook("after_restore", &[], &BTreeMap::new(), &[]))
            .unwrap_err();
        assert!(e.to_string().contains("empty list"), "{e}");
    }

    #[test]
    fn killed_hook_is_a_failure() {
        let e = rt()
            .block_on(run_hook(
                "before_restore",
                &argv(&["sh", "-c", "kill -9 $$"]),
                &BTreeMap::new(),
                &[],
            ))
            .unwrap_err();
        assert!(e.to_string().contains("killed by signal 9"), "{e}");
    }

    #[test]
    fn after_failure_turns_success_into_failure_and_runs_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let cfg = HooksConfig {
            after_snapshot: Some(argv(&["sh", "-c", "exit 3"])),
            on_error: Some(argv(&[
                "sh",
                "-c",
                &format!(
                    "echo \"$COFFER_STATUS $COFFER_EXIT_CODE $COFFER_ERROR\" > {}",
                    log.display()
                ),
            ])),
            ..Default::default()
        };
        let mut h = Hooks::new(&cfg, Operation::Snapshot, Some("/r"), true);
        let rt = rt();
        rt.block_on(h.before(None)).unwrap();
        let (outcome, problems) = rt.block_on(h.finish(&Ended {
            snapshot_id: Some("abc".into()),
            outcome: Outcome::Ok,
            error: None,
        }));
        assert_eq!(outcome, Outcome::Failed(ErrorKind::Operational));
        assert_eq!(problems.len(), 1);
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged.starts_with("failed 1 after_snapshot hook"),
            "{logged}"
        );
    }

    #[test]
    fn disabled_hooks_run_nothing() {
        let cfg = HooksConfig {
            before_snapshot: Some(argv(&["false"])),
            on_error: Some(argv(&["false"])),
            ..Default::default()
        };
        let mut h = Hooks::new(&cfg, Operation::Snapshot, None, false);
        let rt = rt();
        rt.block_on(h.before(None)).unwrap();
        let failed = Outcome::Failed(ErrorKind::Operational);
        let (outcome, problems) = rt.block_on(h.finish(&Ended {
            snapshot_id: None,
            outcome: failed,
            error: Some("x".into()),
        }));
        assert_eq!((outcome, problems.len()), (failed, 0));
    }
}
