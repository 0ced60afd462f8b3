//! The PostgreSQL source: psql session.

use super::*;

#[derive(Default)]
pub(super) struct Shared {
    pub(super) state: Mutex<(Vec<u8>, bool)>,
    pub(super) cv: Condvar,
}

/// A psql process kept open across calls (the snapshot-exporting
/// transaction), its output collected by a thread.
pub(super) struct Session {
    pub(super) what: String,
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) out: Arc<Shared>,
    pub(super) err: Arc<Mutex<Vec<u8>>>,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl Session {
    pub(super) fn start(conn: &Conn) -> Result<Session, SourceError> {
        let what = format!("psql on {}", conn.display());
        let mut c = crate::childenv::command("psql", PASS);
        c.args(psql_args(conn))
            .envs(conn.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| spawn_error("psql", &what, e))?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();
        let out = Arc::new(Shared::default());
        let o = out.clone();
        let t_out = std::thread::spawn(move || {
            let mut b = [0u8; 8192];
            loop {
                let n = match stdout.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                o.state
                    .lock()
                    .expect("session lock")
                    .0
                    .extend_from_slice(&b[..n]);
                o.cv.notify_all();
            }
            o.state.lock().expect("session lock").1 = true;
            o.cv.notify_all();
        });
        let err = Arc::new(Mutex::new(Vec::new()));
        let e = err.clone();
        let t_err = std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut b) {
                if n == 0 {
                    break;
                }
                let mut v = e.lock().expect("session lock");
                v.extend_from_slice(&b[..n]);
                if v.len() > 8192 {
                    let cut = v.len() - 8192;
                    v.drain(..cut);
                }
            }
        });
        Ok(Session {
            what,
            child,
            stdin,
            out,
            err,
            threads: vec![t_out, t_err],
        })
    }

    pub(super) fn send(&mut self, sql: &str) -> Result<(), SourceError> {
        let res = match self.stdin.as_mut() {
            Some(w) => w.write_all(sql.as_bytes()).and_then(|_| w.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        match res {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure(None)),
        }
    }

    /// Waits until at least `n` rows have arrived; all rows so far.
    pub(super) fn rows(&mut self, n: usize) -> Result<Vec<Vec<String>>, SourceError> {
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let timed_out = {
            let mut g = self.out.state.lock().expect("session lock");
            loop {
                if g.0.iter().filter(|b| **b == 0).count() >= n {
                    return Ok(parse_records(&g.0));
                }
                if g.1 {
                    break false;
                }
                let now = Instant::now();
                if now >= deadline {
                    break true;
                }
                g = self
                    .out
                    .cv
                    .wait_timeout(g, deadline - now)
                    .expect("session lock")
                    .0;
            }
        };
        if timed_out {
            let _ = self.child.kill();
            return Err(self.failure(Some(format!(
                "no answer from the server within {} s",
                TOOL_TIMEOUT.as_secs()
            ))));
        }
        Err(self.failure(None))
    }

    pub(super) fn failure(&mut self, why: Option<String>) -> SourceError {
        self.stdin.take();
        let status = self.child.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let tail = String::from_utf8_lossy(&self.err.lock().expect("session lock"))
            .trim()
            .to_string();
        match (why, status) {
            (Some(why), _) => SourceError::Failed(format!(
                "{}: {why}{}",
                self.what,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )),
            (None, Ok(s)) if !s.success() => tool_failure(&self.what, s, &tail),
            (None, Ok(_)) => SourceError::Failed(format!(
                "{} ended before answering{}",
                self.what,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )),
            (None, Err(e)) => SourceError::Failed(format!("{}: wait failed: {e}", self.what)),
        }
    }

    /// Ends the session (stdin closed: psql quits) and returns all it wrote.
    pub(super) fn finish(mut self) -> Result<Vec<u8>, SourceError> {
        self.stdin.take();
        let status = self
            .child
            .wait()
            .map_err(|e| SourceError::Failed(format!("{}: wait failed: {e}", self.what)))?;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if !status.success() {
            let tail = String::from_utf8_lossy(&self.err.lock().expect("session lock")).to_string();
            return Err(tool_failure(&self.what, status, &tail));
        }
        Ok(std::mem::take(
            &mut self.out.state.lock().expect("session lock").0,
        ))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Row counts from `COUNT_SQL` rows.
pub(super) fn parse_counts(rows: &[Vec<String>]) -> Result<BTreeMap<String, u64>, SourceError> {
    let mut out = BTreeMap::new();
    for r in rows {
        match r.as_slice() {
            [name, n] => {
                let n = n.parse::<u64>().map_err(|_| {
                    SourceError::Failed(format!("unexpected row count {n:?} for table {name}"))
                })?;
                out.insert(name.clone(), n);
            }
            other => {
                return Err(SourceError::Failed(format!(
                    "unexpected answer from psql while counting rows: {other:?}"
                )));
            }
        }
    }
    Ok(out)
}
