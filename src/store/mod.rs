//! Storage: opens a filesystem, S3, GCS or Azure location through the
//! `object_store` crate, and bridges its async API to the blocking threads
//! that do the CPU work.
//!
//! [`UploadWriter`] is a `std::io::Write` that hashes what it is given and
//! hands fixed-size parts over a bounded channel to an async multipart upload;
//! [`DownloadReader`] is a `std::io::Read` fed by an async streamed GET. Both
//! hold a bounded number of parts, so memory does not grow with object size.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use crate::outcome::ErrorKind;
use tokio::runtime::Handle;

mod counted;
pub use counted::{Requests, run_requests};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad storage URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "unknown storage option {key:?} for a {scheme} store (see the object_store configuration keys)"
    )]
    BadOption { scheme: String, key: String },
    #[error("object {path} not found in {store}")]
    NotFound { store: String, path: String },
    #[error("object {path} already exists in {store}")]
    AlreadyExists { store: String, path: String },
    #[error("{op} {path} in {store} failed: {source}{}", next_step(.store, .path, .source))]
    Backend {
        op: &'static str,
        store: String,
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "object {path} in {store} has {size} bytes, more than any coffer object of its kind (at most {cap}): it is not a coffer object; check the repository URL, and remove it if nothing else owns it"
    )]
    TooLarge {
        store: String,
        path: String,
        size: u64,
        cap: u64,
    },
    /// A ranged read answered with fewer bytes than asked: the object is
    /// shorter than its index says (truncated or replaced).
    #[error(
        "object {path} in {store} gave {got} bytes at offset {offset} where {wanted} were expected: it is shorter than the index says"
    )]
    ShortRange {
        store: String,
        path: String,
        offset: u64,
        wanted: u64,
        got: u64,
    },
    #[error(
        "{op} {path} in {store} failed: {endpoint} did not answer ({source}); coffer retried for {window:?}, waiting at most {timeout:?} for each answer. Check that {endpoint} is up and reachable from this host; to ride out longer outages, raise [repository.retry] window"
    )]
    Unreachable {
        op: &'static str,
        store: String,
        path: String,
        endpoint: String,
        window: Duration,
        timeout: Duration,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "{op} {path} in {store}: {what}, and reading it back to see whether it was stored failed too ({source}); run the command again once the store answers (coffer snapshots shows what was committed)"
    )]
    Undecided {
        op: &'static str,
        store: String,
        path: String,
        what: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "{op} {path} in {store}: {what}; the object is not there as written ({found}), so nothing was committed: run the command again"
    )]
    NotStored {
        op: &'static str,
        store: String,
        path: String,
        what: String,
        found: String,
    },
    #[error(
        "{op} {path} in {store} failed: {what}: the repository is damaged; run `coffer verify --all` to see what else is, and put back that part of the repository from a copy"
    )]
    Damaged {
        op: &'static str,
        store: String,
        path: String,
        what: String,
    },
    #[error("{op} {path} in {store} failed: {source}{}", next_step(.store, .path, .source))]
    Io {
        op: &'static str,
        store: String,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What to do next after a failed store operation (the contract asks every
/// error to say), from what the error chain holds: "; " and a hint, or
/// nothing when the error already carries one (an upload's task error
/// passed on through the writer).
fn next_step(store: &str, path: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let text = e.to_string();
    // Every hint (and the Unreachable/Undecided/NotStored messages) ends
    // so: an error that says it already gets no second one.
    if text.contains("run the command again") || text.contains("Check that ") {
        return String::new();
    }
    let local = store.starts_with('/') || store.starts_with("file://");
    let mut kind = None;
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<io::Error>() {
            kind = Some((io.kind(), io.raw_os_error()));
        }
        if let Some(
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
        ) = x.downcast_ref::<object_store::Error>()
        {
            kind = Some((io::ErrorKind::PermissionDenied, None));
        }
        cur = x.source();
    }
    let hint = match kind {
        Some((io::ErrorKind::PermissionDenied, _)) if local => {
            let full = format!("{}/{path}", store.trim_start_matches("file://"));
            format!(
                "permission denied to {}: check the owner and mode of {full} and of the directories above it (`ls -ld`), or run coffer as the user that owns the repository; then run the command again",
                running_user()
            )
        }
        Some((_, Some(libc::ENOSPC))) | Some((_, Some(libc::EDQUOT))) => format!(
            "the filesystem holding {store} is full (or over quota): free space there, or run `coffer prune`, then run the command again"
        ),
        _ if local => format!(
            "check that {store} is mounted and that the user running coffer ({}) can read and write it, then run the command again",
            running_user()
        ),
        _ if text.contains("NoSuchBucket") || text.contains("ContainerNotFound") => {
            "the bucket does not exist: check the bucket name in the repository URL and the endpoint/region in [repository.options] (or the AWS_*/GOOGLE_*/AZURE_* variables), then run the command again".to_string()
        }
        _ if matches!(kind, Some((io::ErrorKind::PermissionDenied, _)))
            || ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"]
                .iter()
                .any(|w| text.contains(w)) =>
        {
            "the store refused the credentials: check them ([repository.options] or the AWS_*/GOOGLE_*/AZURE_* variables) and that they may read, write and list this bucket and prefix, then run the command again".to_string()
        }
        _ => "check the endpoint and region ([repository.options] or the AWS_*/GOOGLE_*/AZURE_* variables), the bucket in the repository URL, the credentials and the network, then run the command again".to_string(),
    };
    format!("; {hint}")
}

/// "user NAME (uid N)", for messages about permissions: whose they are.
fn running_user() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|t| {
        t.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
    });
    match name {
        Some(n) => format!("user {n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

impl StoreError {
    /// Errors in what the user wrote (URL, options) are usage errors; a
    /// store whose own layout is broken is an integrity failure, like
    /// damaged data (no retry or other credentials can fix it).
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::BadUrl { .. } | StoreError::BadOption { .. } => ErrorKind::Usage,
            StoreError::Damaged { .. } | StoreError::ShortRange { .. } => ErrorKind::Integrity,
            _ => ErrorKind::Operational,
        }
    }
}

/// How a cloud store's requests are retried: one policy for every request,
/// set in `[repository.retry]` (docs/CONFIG.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long a failing request is retried, with backoff, from its first
    /// attempt: an outage or restart shorter than this is ridden out.
    pub window: Duration,
    /// How long one attempt may hear nothing (no connection, no byte of the
    /// answer) before it is abandoned and retried.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            window: Duration::from_secs(90),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Backoff between attempts: from 200 ms, doubling, at most 10 s.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl RetryPolicy {
    fn object_store_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: BACKOFF_FIRST,
                max_backoff: BACKOFF_MAX,
                base: 2.0,
            },
            // The window bounds the retries, not a count: a count runs out in
            // seconds against a refused connection.
            max_retries: usize::MAX,
            retry_timeout: self.window,
        }
    }

    /// The policy's client settings, with what the environment sets for
    /// the client (`AWS_ALLOW_HTTP`, `GOOGLE_PROXY_URL`, ...) on top, as the
    /// builder's `from_env` would have done: `with_client_options`
    /// replaces the client settings the builder read from the environment.
    fn client_options_with_env(
        &self,
        prefix: &str,
        client_key: impl Fn(&str) -> Option<object_store::ClientConfigKey>,
    ) -> object_store::ClientOptions {
        let mut o = self.client_options();
        for (k, v) in std::env::vars() {
            if k.starts_with(prefix)
                && let Some(ck) = client_key(&k.to_ascii_lowercase())
            {
                o = o.with_config(ck, v);
            }
        }
        o
    }

    fn client_options(&self) -> object_store::ClientOptions {
        object_store::ClientOptions::new()
            .with_connect_timeout(self.timeout.min(Duration::from_secs(10)))
            // Silence, not length, ends an attempt: a large download may
            // take hours, a dead connection must not.
            .with_read_timeout(self.timeout)
            .with_timeout_disabled()
    }
}

/// One storage location: a store plus the URL it was opened from.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// The directory of a filesystem store: it gets small upload parts (no
    /// 5 MiB minimum, no network to fill).
    local_root: Option<std::path::PathBuf>,
    policy: RetryPolicy,
    /// Where requests go, for messages.
    endpoint: String,
    /// For S3 only: what listing and aborting multipart uploads needs
    /// (object_store cannot list them).
    s3: Option<Arc<S3Uploads>>,
}

/// An S3 bucket's multipart uploads under the repository's prefix: listed
/// with a signed `GET ?uploads` (ListMultipartUploads), aborted through
/// object_store.
#[derive(Debug)]
struct S3Uploads {
    s3: Arc<object_store::aws::AmazonS3>,
    /// The repository's prefix in the bucket, without slashes at the ends.
    prefix: String,
    /// The bucket's URL, e.g. `https://s3.eu-west-1.amazonaws.com/bucket`.
    base: String,
    region: String,
    client: object_store::ClientOptions,
}

/// A multipart upload that was started and neither completed nor aborted:
/// the parts of a killed upload, which no listing of objects shows.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    /// The object it was for, relative to the repository.
    pub path: String,
    pub id: String,
    pub initiated: chrono::DateTime<chrono::Utc>,
}

/// Retries over every store this process opened, for the run's report and
/// its metrics (a copy uses two stores; a run reports one figure).
static RUN_RETRIES: AtomicU64 = AtomicU64::new(0);
/// Warnings over every store this process opened.
static RUN_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether this process opened a store at all (a run's report only speaks
/// of the store when there was one).
static RUN_OPENED: AtomicBool = AtomicBool::new(false);

/// Whether any store was opened by this process.
pub fn run_opened() -> bool {
    RUN_OPENED.load(Ordering::Relaxed)
}

fn count_retry() {
    RUN_RETRIES.fetch_add(1, Ordering::Relaxed);
}

/// Requests retried so far by every store of this process.
pub fn run_retries() -> u64 {
    RUN_RETRIES.load(Ordering::Relaxed)
}

/// What every store of this process recovered from so far (a lost answer
/// to a write that did happen): warnings for the run's report.
pub fn run_warnings() -> Vec<String> {
    RUN_WARNINGS.lock().unwrap().clone()
}

/// Counts the attempts that failed in a way object_store retries
/// (transport errors, 5xx, 429, 408): the retries a run needed.
#[derive(Debug)]
struct CountingService {
    inner: object_store::client::HttpClient,
    health: Arc<Health>,
}

/// Whether a store is taken as down: it has answered nothing (every
/// request failed in transport) for a whole retry window. Then requests are
/// not retried (each would wait out a window of its own: a copy of
/// thousands of objects to a dead store would take days); one request every
/// [`PROBE_EVERY`] goes out, the others fail at once, until any answer
/// comes back.
#[derive(Debug, Default)]
struct Health {
    window: Duration,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// Since when no attempt got an answer: the start of the earliest
    /// failed attempt after the last answer (a silent store fails an
    /// attempt only at its timeout, but was silent from its start).
    failing_since: Option<Instant>,
    /// When the last answer came.
    last_answer: Option<Instant>,
    /// The last request sent while down.
    last_probe: Option<Instant>,
}

const PROBE_EVERY: Duration = Duration::from_secs(10);
/// A probe of a store that is down waits at most this long for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The error of a probe of a store that is down, when it gets no answer.
#[derive(Debug, thiserror::Error)]
#[error(
    "no answer within {0:?}, and the store has answered nothing for longer than the retry window"
)]
struct ProbeTimedOut(Duration);

/// The error of a request not sent because the store is down.
#[derive(Debug, thiserror::Error)]
#[error("not sent: the store has answered nothing for longer than the retry window")]
struct StoreDown;

#[async_trait::async_trait]
impl object_store::client::HttpService for CountingService {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        use object_store::client::{HttpError, HttpErrorKind};
        let down = {
            let mut h = self.health.state.lock().unwrap();
            let down = h
                .failing_since
                .is_some_and(|t| t.elapsed() >= self.health.window);
            if down {
                if h.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
                    return Err(HttpError::new(HttpErrorKind::Unknown, StoreDown));
                }
                h.last_probe = Some(Instant::now());
            }
            down
        };
        let started = Instant::now();
        let r = if down {
            match tokio::time::timeout(PROBE_TIMEOUT, self.inner.execute(req)).await {
                Ok(r) => r,
                Err(_) => Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    ProbeTimedOut(PROBE_TIMEOUT),
                )),
            }
        } else {
            self.inner.execute(req).await
        };
        {
            let mut h = self.health.state.lock().unwrap();
            if r.is_ok() {
                h.failing_since = None;
                h.last_probe = None;
                h.last_answer = Some(Instant::now());
            } else {
                // Silent since this attempt started, or since the last
                // answer if that came later.
                let since = h.last_answer.map_or(started, |a| a.max(started));
                h.failing_since = Some(h.failing_since.map_or(since, |f| f.min(since)));
            }
        }
        if down && let Err(e) = r {
            // A failed probe is not retried (kind Unknown): the store
            // stays down.
            count_retry();
            return Err(HttpError::new(HttpErrorKind::Unknown, e));
        }
        let failed = match &r {
            Ok(resp) => {
                let s = resp.status().as_u16();
                s >= 500 || s == 429 || s == 408
            }
            Err(_) => true,
        };
        if failed {
            count_retry();
        }
        r
    }
}

#[derive(Debug)]
struct CountingConnector {
    health: Arc<Health>,
}

impl object_store::client::HttpConnector for CountingConnector {
    fn connect(
        &self,
        options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let inner = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(object_store::client::HttpClient::new(CountingService {
            inner,
            health: self.health.clone(),
        }))
    }
}

/// The contents of every `<tag>...</tag>` in an S3 XML answer.
fn xml_blocks<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// The first `<tag>` value in `doc`, with XML's five entities decoded.
fn xml_value(doc: &str, tag: &str) -> Option<String> {
    let v = xml_blocks(doc, tag).into_iter().next()?;
    Some(
        v.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The [`StoreError`] an `io::Error` carries (an upload or download task's
/// error passed through `Write`/`Read`), or the `io::Error` itself.
fn store_error_inside(e: io::Error) -> Result<StoreError, io::Error> {
    if !e.get_ref().is_some_and(|x| x.is::<StoreError>()) {
        return Err(e);
    }
    let kind = e.kind();
    match e.into_inner().map(|b| b.downcast::<StoreError>()) {
        Some(Ok(inner)) => Ok(*inner),
        Some(Err(other)) => Err(io::Error::new(kind, other)),
        None => Err(io::Error::from(kind)),
    }
}

/// True when `e` came from the transport (no answer, a reset, a timeout):
/// the request may or may not have reached the store.
fn is_transport(e: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if x.downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return true;
        }
        cur = x.source();
    }
    false
}

impl Store {
    /// For a filesystem store: makes its directory private (0700), as a
    /// repository must be (`init`). Nothing to do for a cloud store.
    pub fn make_private(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            StoreError::Io {
                op: "make private (chmod 0700)",
                store: self.url.clone(),
                path: root.display().to_string(),
                source: e,
            }
        })
    }

    /// For a filesystem store whose directory other local users can enter
    /// or read: a sentence saying so and what to do.
    pub fn exposure(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let root = self.local_root.as_ref()?;
        let mode = std::fs::metadata(root).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "repository {} can be read by other local users (mode {mode:04o}), who could copy its key slots and guess the passphrase offline: run `chmod -R go-rwx {}`",
                root.display(),
                root.display()
            )
        })
    }
}

/// Parts of a multipart upload to a cloud store. S3 needs at least 5 MiB per
/// part but the last; the size grows with the part number so that S3's
/// 10,000-part limit still allows objects of several hundred GiB.
const CLOUD_PART: usize = 8 << 20;
const LOCAL_PART: usize = 2 << 20;
/// Parts in flight at once per upload.
const CLOUD_CONCURRENCY: usize = 3;
const LOCAL_CONCURRENCY: usize = 2;

fn part_size(base: usize, part_number: usize) -> usize {
    base * (1 + part_number / 1000)
}

impl Store {
    /// Opens the store at `url` with the default [`RetryPolicy`].
    pub fn open(
        url: &str,
        options: &BTreeMap<String, String>,
        create: bool,
    ) -> Result<Store, StoreError> {
        Store::open_with(url, options, create, RetryPolicy::default())
    }

    /// Opens the store at `url`. `create` makes a missing local directory
    /// (for `init`); otherwise a missing one is an error.
    pub fn open_with(
        url: &str,
        options: &BTreeMap<String, String>,
        create: bool,
        policy: RetryPolicy,
    ) -> Result<Store, StoreError> {
        RUN_OPENED.store(true, Ordering::Relaxed);
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let local_path = if url.starts_with('/') {
            Some(std::path::PathBuf::from(url))
        } else if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad("file:// URLs need an absolute path (file:///abs/path)"));
            }
            Some(std::path::PathBuf::from(rest))
        } else {
            None
        };
        if let Some(path) = local_path {
            if let Some(k) = options.keys().next() {
                return Err(StoreError::BadOption {
                    scheme: "filesystem".into(),
                    key: k.clone(),
                });
            }
            if create {
                std::fs::create_dir_all(&path).map_err(|e| StoreError::Io {
                    op: "create directory",
                    store: url.to_string(),
                    path: path.display().to_string(),
                    source: e,
                })?;
            } else if !path.is_dir() {
                return Err(StoreError::NotFound {
                    store: url.to_string(),
                    path: path.display().to_string(),
                });
            }
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| bad(&e.to_string()))?
                .with_automatic_cleanup(true)
                // Durable before visible: each object is fsynced (file and
                // directory) before it is renamed into place, so a manifest
                // never outlives the data it names after a power cut.
                .with_fsync(true);
            return Ok(Store {
                inner: Arc::new(counted::Counted(Arc::new(fs))),
                url: url.to_string(),
                local_root: Some(path),
                policy,
                endpoint: String::new(),
                s3: None,
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            bad(&format!(
                "{e}; use an absolute path, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            ))
        })?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("the URL names no bucket or container"))?
            .to_string();
        let prefix = parsed.path().trim_matches('/').to_string();
        let scheme = parsed.scheme().to_string();
        let bad_opt = |k: &str| StoreError::BadOption {
            scheme: scheme.clone(),
            key: k.to_string(),
        };
        let health = Arc::new(Health {
            window: policy.window,
            state: Mutex::default(),
        });
        let connector = || CountingConnector {
            health: health.clone(),
        };
        let env_or = |keys: &[&str], default: String| {
            keys.iter()
                .find_map(|k| {
                    options
                        .get(*k)
                        .cloned()
                        .or_else(|| std::env::var(k.to_uppercase()).ok())
                })
                .unwrap_or(default)
        };
        let endpoint = match scheme.as_str() {
            "s3" => env_or(
                &["aws_endpoint", "aws_endpoint_url"],
                "the S3 endpoint".to_string(),
            ),
            "gs" => "the Google Cloud Storage endpoint".to_string(),
            "az" => env_or(
                &["azure_storage_endpoint", "azurite_blob_storage_url"],
                "the Azure Blob Storage endpoint".to_string(),
            ),
            _ => String::new(),
        };
        let mut s3 = None;
        // Options the user gives come last: they override the policy's
        // client settings where both name one.
        let built: Arc<dyn ObjectStore> = match scheme.as_str() {
            "s3" => {
                use object_store::aws::AmazonS3ConfigKey as K;
                let client_key = |k: &str| match k.parse() {
                    Ok(K::Client(c)) => Some(c),
                    _ => None,
                };
                // The client settings, also for the multipart listing.
                let mut client = policy.client_options_with_env("AWS_", client_key);
                for (k, v) in options {
                    if let Some(c) = client_key(k) {
                        client = client.with_config(c, v);
                    }
                }
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(policy.object_store_config())
                    .with_client_options(client.clone())
                    .with_http_connector(connector());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(|_| bad_opt(k))?, v);
                }
                let region = b
                    .get_config_value(&K::Region)
                    .unwrap_or_else(|| "us-east-1".into());
                let virtual_hosted = b
                    .get_config_value(&K::VirtualHostedStyleRequest)
                    .is_some_and(|v| v == "true");
                // As object_store addresses the bucket.
                let base = match (b.get_config_value(&K::Endpoint), virtual_hosted) {
                    (Some(e), true) => e.trim_end_matches('/').to_string(),
                    (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
                    (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
                    (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
                };
                let built = Arc::new(b.build().map_err(|e| bad(&e.to_string()))?);
                s3 = Some(Arc::new(S3Uploads {
                    s3: built.clone(),
                    prefix: prefix.clone(),
                    base,
                    region,
                    client,
                }));
                built
            }
            "gs" => {
                use object_store::gcp::GoogleConfigKey as K;
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(policy.object_store_config())
                    .with_client_options(policy.client_options_with_env("GOOGLE_", |k| {
                        match k.parse() {
                            Ok(K::Client(c)) => Some(c),
                            _ => None,
                        }
                    }))
                    .with_http_connector(connector());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(|_| bad_opt(k))?, v);
                }
                Arc::new(b.build().map_err(|e| bad(&e.to_string()))?)
            }
            "az" => {
                use object_store::azure::AzureConfigKey as K;
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_retry(policy.object_store_config())
                    .with_client_options(policy.client_options_with_env("AZURE_", |k| {
                        match k.parse() {
                            Ok(K::Client(c)) => Some(c),
                            _ => None,
                        }
                    }))
                    .with_http_connector(connector());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(|_| bad_opt(k))?, v);
                }
                Arc::new(b.build().map_err(|e| bad(&e.to_string()))?)
            }
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other}://; use an absolute path, file://, s3://, gs:// or az://"
                )));
            }
        };
        let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
            built
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                built,
                prefix.as_str(),
            ))
        };
        let inner: Arc<dyn ObjectStore> = Arc::new(counted::Counted(inner));
        Ok(Store {
            inner,
            url: url.to_string(),
            local_root: None,
            policy,
            endpoint,
            s3,
        })
    }

    /// Records what was recovered (see [`run_warnings`]).
    fn warn(&self, w: String) {
        tracing::info!("{w}");
        RUN_WARNINGS.lock().unwrap().push(w);
    }

    fn part_base(&self) -> usize {
        if self.local_root.is_some() {
            LOCAL_PART
        } else {
            CLOUD_PART
        }
    }

    fn concurrency(&self) -> usize {
        if self.local_root.is_some() {
            LOCAL_CONCURRENCY
        } else {
            CLOUD_CONCURRENCY
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory of a filesystem store; `None` for a cloud store.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn err(&self, op: &'static str, path: &str, e: object_store::Error) -> StoreError {
        if let Some(what) = self.broken_layout(path, &e) {
            return StoreError::Damaged {
                op,
                store: self.url.clone(),
                path: path.to_string(),
                what,
            };
        }
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                store: self.url.clone(),
                path: path.to_string(),
            },
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => StoreError::AlreadyExists {
                store: self.url.clone(),
                path: path.to_string(),
            },
            source if self.local_root.is_none() && is_transport(&source) => {
                StoreError::Unreachable {
                    op,
                    store: self.url.clone(),
                    path: path.to_string(),
                    endpoint: self.endpoint.clone(),
                    window: self.policy.window,
                    timeout: self.policy.timeout,
                    source,
                }
            }
            source => StoreError::Backend {
                op,
                store: self.url.clone(),
                path: path.to_string(),
                source,
            },
        }
    }

    /// In a filesystem repository, `ENOTDIR` on `path` means a file stands
    /// where one of its directories must be (`data/<id>` replaced by a
    /// file): damage, not an I/O failure. Says which.
    fn broken_layout(&self, path: &str, e: &object_store::Error) -> Option<String> {
        let root = self.local_root.as_ref()?;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut enotdir = false;
        while let Some(x) = cur {
            if let Some(io) = x.downcast_ref::<io::Error>()
                && io.raw_os_error() == Some(libc::ENOTDIR)
            {
                enotdir = true;
            }
            cur = x.source();
        }
        if !enotdir {
            return None;
        }
        let file = std::path::Path::new(path)
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find(|a| std::fs::symlink_metadata(root.join(a)).is_ok_and(|m| !m.is_dir()));
        Some(match file {
            Some(f) => format!("{} is a file where a directory must be", f.display()),
            None => "a file stands where one of its directories must be".to_string(),
        })
    }

    /// Writes a small object; with `create_only` a second write of the same
    /// name fails with [`StoreError::AlreadyExists`] instead of replacing it.
    ///
    /// A create-only write is a commit point (a manifest, a key slot), so its
    /// outcome must be known: it is retried after transport errors too (a
    /// retry is safe, the store refuses a second creation), and after an
    /// error whose outcome is unknown the object is read back: when it
    /// holds exactly `data`, the write happened and its answer was lost (a
    /// warning, not an error).
    pub async fn put(&self, path: &str, data: Bytes, create_only: bool) -> Result<(), StoreError> {
        let loc = ObjPath::from(path);
        if !create_only {
            let opts = PutOptions {
                mode: PutMode::Overwrite,
                ..Default::default()
            };
            self.inner
                .put_opts(&loc, PutPayload::from(data), opts)
                .await
                .map_err(|e| self.err("write", path, e))?;
            return Ok(());
        }
        let start = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        let mut attempt = 0u32;
        let (last, exists) = loop {
            attempt += 1;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            let e = match self
                .inner
                .put_opts(&loc, PutPayload::from(data.clone()), opts)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let exists = matches!(
                e,
                object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
            );
            // "Already exists" on the first attempt may still be ours:
            // object_store can retry a write whose answer was lost, and the
            // retry finds our own object. The bytes it holds decide below.
            if exists || !is_transport(&e) || start.elapsed() >= self.policy.window {
                break (e, exists);
            }
            tracing::info!("write {path}: {e}; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        };
        // The write may have happened: what the store holds decides.
        let what = if exists {
            "the write answered that the object already exists".to_string()
        } else {
            format!("the write failed ({last})")
        };
        match self.get_capped(path, data.len() as u64).await {
            Ok(held) if held == data => {
                self.warn(format!(
                    "write {path} in {}: {what}, but reading it back shows it was stored as written: committed",
                    self.url
                ));
                Ok(())
            }
            // Someone else's object by that name, found on our first try.
            Ok(_) if attempt == 1 => Err(self.err("write", path, last)),
            Ok(held) => Err(self.not_stored(
                "write",
                path,
                what,
                format!("it holds {} other bytes", held.len()),
            )),
            Err(StoreError::NotFound { .. }) => match self.err("write", path, last) {
                StoreError::AlreadyExists { .. } => {
                    Err(self.not_stored("write", path, what, "it is absent".into()))
                }
                e => Err(e),
            },
            Err(StoreError::TooLarge { size, .. }) => Err(self.not_stored(
                "write",
                path,
                what,
                format!("it holds {size} bytes, not {}", data.len()),
            )),
            Err(e) => Err(StoreError::Undecided {
                op: "write",
                store: self.url.clone(),
                path: path.to_string(),
                what,
                source: Box::new(e),
            }),
        }
    }

    /// A write that did not store what was sent: `what` happened, `found`
    /// is what reading back showed.
    fn not_stored(&self, op: &'static str, path: &str, what: String, found: String) -> StoreError {
        StoreError::NotStored {
            op,
            store: self.url.clone(),
            path: path.to_string(),
            what,
            found,
        }
    }

    /// Reads a whole (small) object.
    pub async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let r = self
            .inner
            .get(&ObjPath::from(path))
            .await
            .map_err(|e| self.err("read", path, e))?;
        r.bytes().await.map_err(|e| self.err("read", path, e))
    }

    /// Reads a whole object of at most `cap` bytes. A larger one (by its
    /// listed size, or by what the store actually sends) is refused before
    /// more than `cap` bytes are held: a hostile bucket must not make coffer
    /// allocate what it likes.
    pub async fn get_capped(&self, path: &str, cap: u64) -> Result<Bytes, StoreError> {
        let r = self
            .inner
            .get(&ObjPath::from(path))
            .await
            .map_err(|e| self.err("read", path, e))?;
        let too_large = |size: u64| StoreError::TooLarge {
            store: self.url.clone(),
            path: path.to_string(),
            size,
            cap,
        };
        if r.meta.size > cap {
            return Err(too_large(r.meta.size));
        }
        let mut out = BytesMut::with_capacity(r.meta.size as usize);
        let mut body = r.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.err("read", path, e))?;
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(too_large((out.len() + chunk.len()) as u64));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Reads `len` bytes at `offset` of an object (one blob of a pack). A
    /// store that sends fewer bytes is an error, not a short blob.
    pub async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let b = self
            .inner
            .get_range(&ObjPath::from(path), offset..offset + len)
            .await
            .map_err(|e| self.err("read", path, e))?;
        if b.len() as u64 != len {
            return Err(StoreError::ShortRange {
                store: self.url.clone(),
                path: path.to_string(),
                offset,
                wanted: len,
                got: b.len() as u64,
            });
        }
        Ok(b)
    }

    /// The size of an object.
    pub async fn size(&self, path: &str) -> Result<u64, StoreError> {
        self.inner
            .head(&ObjPath::from(path))
            .await
            .map(|m| m.size)
            .map_err(|e| self.err("stat", path, e))
    }

    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        match self.inner.delete(&ObjPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", path, e)),
        }
    }

    /// The multipart uploads started under the repository and never
    /// completed nor aborted (a killed upload's parts), where the store can
    /// list them: S3 only (object_store has no such listing; GCS and Azure
    /// clean up by lifecycle rule, see docs/CONFIG.md). `None` when this
    /// store cannot list them.
    pub async fn pending_uploads(&self) -> Result<Option<Vec<PendingUpload>>, StoreError> {
        use object_store::client::HttpConnector;
        let Some(a) = &self.s3 else {
            return Ok(None);
        };
        // Messages read "list multipart uploads in s3://… failed: …".
        let (op, what) = ("list", "multipart uploads");
        let generic = |e: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
            store: "S3",
            source: e,
        };
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| self.err(op, what, generic(e));
        let cred =
            a.s3.credentials()
                .get_credential()
                .await
                .map_err(|e| self.err(op, what, e))?;
        let client = object_store::client::ReqwestConnector::default()
            .connect(&a.client)
            .map_err(|e| self.err(op, what, e))?;
        let prefix = if a.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", a.prefix)
        };
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        // Pages of at most 1000; a bound on pages keeps a hostile answer
        // that is always "truncated" from looping forever.
        for _page in 0..10_000 {
            let mut url = url::Url::parse(&format!("{}/", a.base))
                .map_err(|e| fail(format!("bad bucket URL {}: {e}", a.base).into()))?;
            {
                let mut q = url.query_pairs_mut();
                q.append_key_only("uploads");
                q.append_pair("prefix", &prefix);
                if let Some((key, id)) = &markers {
                    q.append_pair("key-marker", key);
                    q.append_pair("upload-id-marker", id);
                }
            }
            let mut req = http::Request::builder()
                .method("GET")
                .uri(url.as_str())
                .body(object_store::client::HttpRequestBody::empty())
                .map_err(|e| fail(Box::new(e)))?;
            object_store::aws::AwsAuthorizer::new(&cred, "s3", &a.region)
                .try_authorize(&mut req, None)
                .map_err(|e| self.err(op, what, e))?;
            let resp = client.execute(req).await.map_err(|e| fail(Box::new(e)))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .bytes()
                .await
                .map_err(|e| fail(Box::new(e)))?;
            let body = String::from_utf8_lossy(&body);
            if !status.is_success() {
                return Err(fail(format!("{status}: {}", one_line(&body)).into()));
            }
            for u in xml_blocks(&body, "Upload") {
                let (Some(key), Some(id), Some(at)) = (
                    xml_value(u, "Key"),
                    xml_value(u, "UploadId"),
                    xml_value(u, "Initiated"),
                ) else {
                    continue;
                };
                let Some(path) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let Ok(initiated) = chrono::DateTime::parse_from_rfc3339(&at) else {
                    continue;
                };
                out.push(PendingUpload {
                    path: path.to_string(),
                    id,
                    initiated: initiated.with_timezone(&chrono::Utc),
                });
            }
            let truncated = xml_value(&body, "IsTruncated").is_some_and(|t| t == "true");
            match (
                truncated,
                xml_value(&body, "NextKeyMarker"),
                xml_value(&body, "NextUploadIdMarker"),
            ) {
                (true, Some(k), Some(i)) if markers.as_ref() != Some(&(k.clone(), i.clone())) => {
                    markers = Some((k, i));
                }
                _ => return Ok(Some(out)),
            }
        }
        Ok(Some(out))
    }

    /// Aborts a multipart upload that [`Store::pending_uploads`] listed:
    /// the store deletes its parts.
    pub async fn abort_upload(&self, u: &PendingUpload) -> Result<(), StoreError> {
        use object_store::multipart::MultipartStore;
        let Some(a) = &self.s3 else {
            return Ok(());
        };
        let key = if a.prefix.is_empty() {
            u.path.clone()
        } else {
            format!("{}/{}", a.prefix, u.path)
        };
        a.s3.abort_multipart(&ObjPath::from(key), &u.id)
            .await
            .map_err(|e| self.err("abort the multipart upload of", &u.path, e))
    }

    /// Names and sizes of every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let p = ObjPath::from(prefix);
        let mut s = self.inner.list(Some(&p));
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            let m = item.map_err(|e| self.err("list", prefix, e))?;
            out.push((m.location.to_string(), m.size));
        }
        Ok(out)
    }

    /// Every object under `prefix` with its size and last-modified time
    /// (`prune` leaves objects younger than its grace period alone).
    pub async fn list_with_times(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, u64, chrono::DateTime<chrono::Utc>)>, StoreError> {
        let p = ObjPath::from(prefix);
        let mut s = self.inner.list(Some(&p));
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            let m = item.map_err(|e| self.err("list", prefix, e))?;
            out.push((m.location.to_string(), m.size, m.last_modified));
        }
        Ok(out)
    }

    /// Starts a streamed upload of `path`, to be fed from a blocking thread.
    /// Must be called inside the tokio runtime.
    pub fn upload(&self, path: &str) -> UploadWriter {
        let (tx, rx) = mpsc::channel::<Part>(1);
        let store = self.clone();
        let p = path.to_string();
        let base = self.part_base();
        let task = tokio::spawn(async move { store.run_upload(p, rx).await });
        UploadWriter {
            tx: Some(tx),
            buf: BytesMut::with_capacity(base),
            base,
            parts: 0,
            hasher: Sha256::new(),
            size: 0,
            task: Some(task),
            handle: Handle::current(),
            path: path.to_string(),
            store_url: self.url.clone(),
        }
    }

    async fn run_upload(
        &self,
        path: String,
        mut rx: mpsc::Receiver<Part>,
    ) -> Result<(), StoreError> {
        let loc = ObjPath::from(path.as_str());
        let first = match rx.recv().await {
            Some(Part::Data(b)) => b,
            // An empty object is still an object.
            Some(Part::End) => {
                return self
                    .inner
                    .put_opts(&loc, PutPayload::default(), PutOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err("upload", &path, e));
            }
            None => return Ok(()), // abandoned before any byte: nothing written
        };
        // A first part shorter than a full part is the whole object, but only
        // once the writer confirms the end: a writer that dies instead must
        // leave nothing behind.
        let (second, small) = if first.len() < self.part_base() {
            match rx.recv().await {
                Some(Part::End) => (None, true),
                Some(Part::Data(b)) => (Some(b), false),
                None => return Ok(()),
            }
        } else {
            match rx.recv().await {
                Some(Part::Data(b)) => (Some(b), false),
                Some(Part::End) => (None, true),
                None => return Ok(()),
            }
        };
        let Some(second) = second.filter(|_| !small) else {
            // Small object: one plain PUT, all or nothing.
            return self
                .inner
                .put_opts(&loc, PutPayload::from(first), PutOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| self.err("upload", &path, e));
        };
        let mut upload = self
            .inner
            .put_multipart(&loc)
            .await
            .map_err(|e| self.err("start upload of", &path, e))?;
        let mut tasks = tokio::task::JoinSet::new();
        let mut total = (first.len() + second.len()) as u64;
        let mut next = vec![second, first]; // popped from the end: first goes first
        let outcome: Result<bool, object_store::Error> = async {
            loop {
                while let Some(b) = next.pop() {
                    while tasks.len() >= self.concurrency() {
                        if let Some(r) = tasks.join_next().await {
                            r.map_err(|e| object_store::Error::JoinError { source: e })??;
                        }
                    }
                    tasks.spawn(upload.put_part(PutPayload::from(b)));
                }
                match rx.recv().await {
                    Some(Part::Data(b)) => {
                        total += b.len() as u64;
                        next.push(b)
                    }
                    Some(Part::End) => break,
                    // Dropped without finish(): abandon, so no partial object appears.
                    None => return Ok(false),
                }
            }
            while let Some(r) = tasks.join_next().await {
                r.map_err(|e| object_store::Error::JoinError { source: e })??;
            }
            Ok(true)
        }
        .await;
        match outcome {
            Ok(true) => match upload.complete().await {
                Ok(_) => Ok(()),
                // The answer to the completion may have been lost, and its
                // retry refused (the upload is gone once completed): the
                // object itself says whether it happened.
                Err(e) => self.completed_anyway(&path, total, e).await,
            },
            Ok(false) => {
                tasks.shutdown().await;
                let _ = upload.abort().await;
                Ok(())
            }
            Err(e) => {
                tasks.shutdown().await;
                let _ = upload.abort().await;
                Err(self.err("upload", &path, e))
            }
        }
    }

    /// After a failed CompleteMultipartUpload: Ok when the object is there
    /// with the size that was sent (its contents are authenticated by every
    /// later read), else an error that says what happened.
    async fn completed_anyway(
        &self,
        path: &str,
        total: u64,
        e: object_store::Error,
    ) -> Result<(), StoreError> {
        let what = format!(
            "the store did not confirm the end of the upload ({})",
            one_line(&e.to_string())
        );
        match self.size(path).await {
            Ok(size) if size == total => {
                self.warn(format!(
                    "upload of {path} to {}: {what}, but the object is there with all {total} bytes: stored",
                    self.url
                ));
                Ok(())
            }
            Ok(size) => Err(self.not_stored(
                "upload",
                path,
                what,
                format!("it has {size} bytes, not {total}"),
            )),
            Err(StoreError::NotFound { .. }) => {
                Err(self.not_stored("upload", path, what, "it is absent".into()))
            }
            Err(err) => Err(StoreError::Undecided {
                op: "upload",
                store: self.url.clone(),
                path: path.to_string(),
                what,
                source: Box::new(err),
            }),
        }
    }

    /// Starts a streamed download of `path`, to be read on a blocking thread,
    /// hashing what is read (see [`DownloadReader::digest`]). Must be called
    /// inside the tokio runtime.
    pub fn download(&self, path: &str) -> DownloadReader {
        self.download_opts(path, true)
    }

    /// Like [`Store::download`]; without `hash` only the size is counted
    /// (readers that authenticate every segment need no second checksum).
    pub fn download_opts(&self, path: &str, hash: bool) -> DownloadReader {
        let (tx, rx) = mpsc::channel::<Chunk>(4);
        let store = self.clone();
        let p = path.to_string();
        tokio::spawn(async move {
            let loc = ObjPath::from(p.as_str());
            let res = match store.inner.get(&loc).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Chunk::Err(store.err("read", &p, e))).await;
                    return;
                }
            };
            // A local file is read directly by the blocking reader: the
            // generic stream would cost a task hop per 8 KiB.
            let range = res.range.clone();
            let res = match res.payload {
                object_store::GetResultPayload::File(f, _) => {
                    let _ = tx.send(Chunk::File(f, range.end - range.start)).await;
                    return;
                }
                object_store::GetResultPayload::Stream(s) => s,
            };
            let mut stream = res;
            while let Some(item) = stream.next().await {
                let msg = match item {
                    Ok(b) => Chunk::Data(b),
                    Err(e) => Chunk::Err(store.err("read", &p, e)),
                };
                let stop = matches!(msg, Chunk::Err(_));
                if tx.send(msg).await.is_err() || stop {
                    return;
                }
            }
        });
        DownloadReader {
            rx,
            cur: Bytes::new(),
            file: None,
            hasher: hash.then(Sha256::new),
            size: 0,
        }
    }
}

/// An error's text on one line (object_store's carry the server's XML).
fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 300 {
        format!("{}...", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}

enum Chunk {
    Data(Bytes),
    /// A local file and the bytes to read from its current position.
    File(std::fs::File, u64),
    Err(StoreError),
}

enum Part {
    Data(Bytes),
    End,
}

/// Where a written object ended up: its name, size and SHA-256.
#[derive(Clone, Debug)]
pub struct Written {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Blocking writer into a streamed upload. Call [`UploadWriter::finish`]; a
/// writer dropped without it abandons the upload.
pub struct UploadWriter {
    tx: Option<mpsc::Sender<Part>>,
    buf: BytesMut,
    base: usize,
    parts: usize,
    hasher: Sha256,
    size: u64,
    task: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    handle: Handle,
    path: String,
    store_url: String,
}

impl UploadWriter {
    fn send(&mut self, part: Part) -> io::Result<()> {
        let tx = self.tx.as_ref().expect("send after finish");
        if tx.blocking_send(part).is_err() {
            // The upload task ended early: its error says why.
            return Err(io::Error::other(self.task_error()));
        }
        Ok(())
    }

    fn task_error(&mut self) -> String {
        match self.task.take() {
            Some(t) => match self.handle.block_on(t) {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => format!("upload of {} stopped", self.path),
                Err(e) => format!("upload of {} failed: {e}", self.path),
            },
            None => format!("upload of {} failed", self.path),
        }
    }

    /// Sends the last bytes, waits for the upload to complete and returns
    /// what was stored.
    pub fn finish(mut self) -> Result<Written, StoreError> {
        let store = self.store_url.clone();
        let fail = |e: io::Error, path: &str| match store_error_inside(e) {
            // The upload task's own error already names the object.
            Ok(inner) => inner,
            Err(e) => StoreError::Io {
                op: "upload",
                store: store.clone(),
                path: path.to_string(),
                source: e,
            },
        };
        if !self.buf.is_empty() {
            let b = self.buf.split().freeze();
            let path = self.path.clone();
            self.send(Part::Data(b)).map_err(|e| fail(e, &path))?;
        }
        let path = self.path.clone();
        self.send(Part::End).map_err(|e| fail(e, &path))?;
        self.tx = None;
        let task = self.task.take().expect("task present until finish");
        match self.handle.block_on(task) {
            Ok(Ok(())) => Ok(Written {
                path: self.path.clone(),
                size: self.size,
                sha256: hex::encode(self.hasher.clone().finalize()),
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(fail(io::Error::other(e.to_string()), &path)),
        }
    }
}

impl Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let want = part_size(self.base, self.parts);
        let n = data.len().min(want - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        if self.buf.len() == want {
            let b = self.buf.split().freeze();
            self.parts += 1;
            self.buf.reserve(part_size(self.base, self.parts));
            self.send(Part::Data(b))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Blocking reader over a streamed download; counts and hashes what it reads.
pub struct DownloadReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
    file: Option<io::Take<std::fs::File>>,
    hasher: Option<Sha256>,
    size: u64,
}

impl DownloadReader {
    /// Bytes read so far and their SHA-256 (hex; empty when not hashing).
    pub fn digest(&self) -> (u64, String) {
        let sha = self
            .hasher
            .as_ref()
            .map(|h| hex::encode(h.clone().finalize()))
            .unwrap_or_default();
        (self.size, sha)
    }

    fn account(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        self.size += data.len() as u64;
    }
}

impl Read for DownloadReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            let n = f.read(out)?;
            self.account(&out[..n]);
            return Ok(n);
        }
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.cur = b,
                Some(Chunk::File(f, len)) => {
                    self.file = Some(f.take(len));
                    return self.read(out);
                }
                Some(Chunk::Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.account(&out[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// A sink that only counts and hashes: `snapshot --dry-run` runs the whole
/// pipeline into it and stores nothing.
#[derive(Default)]
pub struct CountingSink {
    hasher: Sha256,
    size: u64,
}

impl CountingSink {
    pub fn finish(self, path: &str) -> Written {
        Written {
            path: path.to_string(),
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        }
    }
}

impl Write for CountingSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a sealed object goes: a real upload or, for dry runs, nowhere.
pub enum Sink {
    Upload(UploadWriter),
    Count(CountingSink, String),
}

impl Sink {
    pub fn finish(self) -> Result<Written, StoreError> {
        match self {
            Sink::Upload(u) => u.finish(),
            Sink::Count(c, path) => Ok(c.finish(&path)),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Upload(u) => u.write(data),
            Sink::Count(c, _) => c.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A ListMultipartUploads answer as S3 documents it: uploads, escaped
    /// keys, the markers of the next page.
    #[test]
    fn multipart_listing_is_read_from_s3_xml() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bucket</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>repo/data/b</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>repo/data/a&amp;b</Key><UploadId>id-1</UploadId>
    <Initiator><ID>x</ID></Initiator><Initiated>2026-12-01T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>repo/data/b</Key><UploadId>id-2</UploadId><Initiated>2026-12-06T09:30:00Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let ups = super::xml_blocks(doc, "Upload");
        assert_eq!(ups.len(), 2);
        assert_eq!(
            super::xml_value(ups[0], "Key").as_deref(),
            Some("repo/data/a&b")
        );
        assert_eq!(
            super::xml_value(ups[1], "UploadId").as_deref(),
            Some("id-2")
        );
        assert_eq!(
            super::xml_value(doc, "IsTruncated").as_deref(),
            Some("true")
        );
        assert_eq!(
            super::xml_value(doc, "NextKeyMarker").as_deref(),
            Some("repo/data/b")
        );
        let at = super::xml_value(ups[0], "Initiated").unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    }

    use super::*;

    /// Issue 11 item 11: store errors say what to do next; a permission
    /// error says whose permission it is.
    #[test]
    fn store_errors_say_what_to_do_next() {
        let denied = StoreError::Io {
            op: "write",
            store: "/srv/backups/repo".into(),
            path: "data/ab/cd".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        }
        .to_string();
        assert!(
            denied.contains("permission denied to ")
                && denied.contains("(uid ")
                && denied.contains("/srv/backups/repo/data/ab/cd")
                && denied.contains("ls -ld"),
            "{denied}"
        );
        let full = StoreError::Io {
            op: "upload",
            store: "/srv/backups/repo".into(),
            path: "data/ab/cd".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        }
        .to_string();
        assert!(full.contains("is full") && full.contains("prune"), "{full}");
        let cloud = StoreError::Backend {
            op: "read",
            store: "s3://bucket/prefix".into(),
            path: "config".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "Client error with status 403 Forbidden: AccessDenied".into(),
            },
        }
        .to_string();
        assert!(
            cloud.contains("check them") && cloud.contains("credentials"),
            "{cloud}"
        );
        let other = StoreError::Backend {
            op: "read",
            store: "s3://bucket/prefix".into(),
            path: "config".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "error decoding response body".into(),
            },
        }
        .to_string();
        assert!(
            other.contains("check the endpoint") && other.contains("network"),
            "{other}"
        );
        // An error that already says what to do gets no second hint.
        let passed_on = StoreError::Io {
            op: "upload",
            store: "s3://bucket/prefix".into(),
            path: "data/x".into(),
            source: io::Error::other(cloud.clone()),
        }
        .to_string();
        assert_eq!(
            passed_on.matches("check").count(),
            cloud.matches("check").count(),
            "{passed_on}"
        );
    }
}
