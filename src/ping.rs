//! `--ping URL`: healthchecks.io-style pings, so a dead-man's switch notices
//! a backup that failed or never ran.
//!
//! `POST URL/start` when the run starts, `POST URL` when it ends with exit
//! code 0, `POST URL/fail` otherwise (partial runs included: something that
//! should be in the snapshot is not). The body is a short log excerpt
//! (operation, host, exit code, the error or the summary), at most
//! [`MAX_BODY`] bytes, as healthchecks.io keeps the first 10 KB. A ping that
//! cannot be delivered is the caller's warning, never the run's failure:
//! each ping gets [`TIMEOUT`] and [`ATTEMPTS`] tries.
//!
//! The URL's path is the check's secret (anyone who knows it can ping), so
//! messages show the URL only as [`redact`] makes it.

use std::time::Duration;

use url::Url;

use crate::metrics::RunRecord;

/// What healthchecks.io keeps of a ping body.
pub const MAX_BODY: usize = 10_000;
/// Per attempt, connection and response together.
pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("ping {url} failed after {attempts} attempt(s): {reason}")]
    Failed {
        url: String,
        attempts: u32,
        reason: String,
    },
}

/// The three pings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Start,
    Success,
    Fail,
}

/// Why a `--ping` value gives no ping URL; always a usage error.
#[derive(Debug, thiserror::Error)]
pub enum PingUrlError {
    #[error("not a URL ({0}); give e.g. https://hc-ping.com/<uuid>")]
    NotAUrl(#[source] url::ParseError),
    #[error("scheme {0}: is not supported; give an http:// or https:// URL")]
    Scheme(String),
    #[error("cannot read the ping URL from {file}: {source}")]
    ReadFile {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is longer than {MAX_PING_FILE} bytes; it must hold only the ping URL")]
    FileTooLong { file: String },
    /// A `--ping @FILE` whose content is not a usable URL.
    #[error("{file}: {why}")]
    InFile {
        file: String,
        #[source]
        why: Box<PingUrlError>,
    },
}

impl PingUrlError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Usage
    }
}

/// Parses a `--ping` value: an absolute http(s) URL.
pub fn parse_url(s: &str) -> Result<Url, PingUrlError> {
    let u = Url::parse(s).map_err(PingUrlError::NotAUrl)?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        other => Err(PingUrlError::Scheme(other.to_string())),
    }
}

/// The most a `--ping @FILE` file may hold: a URL, not a log.
const MAX_PING_FILE: u64 = 4096;

/// The ping URL of a `--ping` (or `COFFER_PING`) value: the URL itself, or
/// `@FILE`, a file holding it, so that the check's secret stays out of argv
/// (`ps`, shell history, `systemctl show`). Returns the URL and, for a file
/// its group or others can read, the warning to print.
pub fn resolve(arg: &str) -> Result<(Url, Option<crate::secret_files::Exposed>), PingUrlError> {
    let Some(file) = arg.strip_prefix('@') else {
        return Ok((parse_url(arg)?, None));
    };
    let path = std::path::Path::new(file);
    let text = std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            let mut s = String::new();
            f.take(MAX_PING_FILE + 1).read_to_string(&mut s)?;
            Ok(s)
        })
        .map_err(|e| PingUrlError::ReadFile {
            file: file.to_string(),
            source: e,
        })?;
    if text.len() as u64 > MAX_PING_FILE {
        return Err(PingUrlError::FileTooLong {
            file: file.to_string(),
        });
    }
    let url = parse_url(text.trim()).map_err(|why| PingUrlError::InFile {
        file: file.to_string(),
        why: Box::new(why),
    })?;
    Ok((url, crate::secret_files::exposed("ping URL file", path)))
}

/// `URL`, `URL/start` or `URL/fail` (query string kept).
pub fn endpoint(base: &Url, kind: Kind) -> Url {
    let mut u = base.clone();
    let suffix = match kind {
        Kind::Start => "start",
        Kind::Fail => "fail",
        Kind::Success => return u,
    };
    let path = format!("{}/{suffix}", base.path().trim_end_matches('/'));
    u.set_path(&path);
    u
}

/// The body of the final ping: what ran where, how it ended, and why.
pub fn body(rec: &RunRecord, host: &str) -> String {
    let mut b = format!(
        "coffer {} on {host}: exit code {} ({})\n",
        rec.operation,
        rec.outcome.exit_code(),
        rec.outcome.status()
    );
    if let Some(s) = &rec.summary {
        b.push_str(s);
        b.push('\n');
    }
    if let Some(e) = &rec.error {
        b.push_str(e);
        b.push('\n');
    }
    truncate(b, MAX_BODY)
}

fn truncate(mut s: String, max: usize) -> String {
    const MARK: &str = "\n[truncated]\n";
    if s.len() <= max {
        return s;
    }
    let mut cut = max - MARK.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(MARK);
    s
}

/// Sends one ping, retrying on network errors and 5xx answers.
pub async fn send(base: &Url, kind: Kind, body: String) -> Result<(), PingError> {
    let url = endpoint(base, kind);
    let fail = |attempts, reason: String| PingError::Failed {
        url: redact(base, kind),
        attempts,
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(0, e.to_string()))?;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt - 1))).await;
        }
        match client.post(url.clone()).body(body.clone()).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            // A 4xx will not change on retry (wrong UUID, bad URL).
            Ok(r) if r.status().is_client_error() => {
                return Err(fail(attempt, format!("server answered {}", r.status())));
            }
            Ok(r) => last = format!("server answered {}", r.status()),
            // reqwest's message names the URL: keep only the cause.
            Err(e) => last = error_chain(&e.without_url()),
        }
    }
    Err(fail(ATTEMPTS, last))
}

/// reqwest's Display hides the cause ("error sending request"); the cause
/// (connection refused, timeout, DNS) is what the reader needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The ping URL as messages show it: scheme, host and port, with the path
/// (a healthchecks.io UUID or ping key *is* the secret), user info and
/// query replaced by `***`, then the `/start` or `/fail` of `kind`
/// (issue 10 item 8).
pub fn redact(base: &Url, kind: Kind) -> String {
    let port = base.port().map(|p| format!(":{p}")).unwrap_or_default();
    let suffix = match kind {
        Kind::Start => "/start",
        Kind::Fail => "/fail",
        Kind::Success => "",
    };
    format!(
        "{}://{}{port}/***{suffix}",
        base.scheme(),
        base.host_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_query_and_handle_trailing_slash() {
        let u = parse_url("https://hc.example/ping/abc/?rid=1").unwrap();
        assert_eq!(
            endpoint(&u, Kind::Start).as_str(),
            "https://hc.example/ping/abc/start?rid=1"
        );
        assert_eq!(
            endpoint(&u, Kind::Fail).as_str(),
            "https://hc.example/ping/abc/fail?rid=1"
        );
        assert_eq!(endpoint(&u, Kind::Success), u);
    }

    #[test]
    fn shown_urls_hide_path_user_info_and_query() {
        let u = parse_url("https://user:tok@hc-ping.com/0f3a-uuid/?rid=9").unwrap();
        assert_eq!(redact(&u, Kind::Success), "https://hc-ping.com/***");
        assert_eq!(redact(&u, Kind::Start), "https://hc-ping.com/***/start");
        let u = parse_url("http://[::1]:8000/ping/key/slug").unwrap();
        assert_eq!(redact(&u, Kind::Fail), "http://[::1]:8000/***/fail");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        assert!(
            parse_url("hc-ping.com/abc")
                .unwrap_err()
                .to_string()
                .contains("not a URL")
        );
        assert!(
            parse_url("ftp://x/y")
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
    }

    #[test]
    fn body_is_capped() {
        let mut r = RunRecord::new("snapshot");
        r.outcome = crate::Outcome::Failed(crate::ErrorKind::Operational);
        r.error = Some("é".repeat(20_000));
        let b = body(&r, "h");
        assert!(b.len() <= MAX_BODY);
        assert!(b.starts_with("coffer snapshot on h: exit code 1 (failed)\n"));
        assert!(b.ends_with("[truncated]\n"));
    }
}
