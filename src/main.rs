//! The `coffer` command: parses flags, resolves settings (CLI > environment >
//! config file > default), calls one library operation, prints its result,
//! and turns its error into the contract's exit code.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use coffer::config::Config;
use coffer::crypto::{self, Credential};
use coffer::hooks::{self, Hooks};
use coffer::manifest::{Manifest, SnapshotStatus, SourceStatus};
use coffer::metrics::RunRecord;
use coffer::repo::{self, RepoError, Repository};
use coffer::restore::{self, RestoreOptions};
use coffer::snapshot::{self, SnapshotError, SnapshotOptions};
use coffer::store::Store;
use coffer::verify::{self, Selection};
use coffer::{Error, ErrorKind, Outcome};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "coffer",
    version,
    about = "Encrypted, checksummed backups of a web application's databases, media and config",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Global {
    /// Config file [default: ./coffer.toml, else /etc/coffer/coffer.toml]
    #[arg(long, env = "COFFER_CONFIG", global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Repository URL (path, file://, s3://, gs://, az://); overrides [repository].url
    #[arg(long, env = "COFFER_REPO", global = true, value_name = "URL")]
    repo: Option<String>,
    /// Key file; overrides [repository].key_file
    #[arg(long, env = "COFFER_KEY_FILE", global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Print one JSON document on stdout
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less logging: errors only
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Never draw progress bars
    #[arg(long, global = true)]
    no_progress: bool,
    /// Write Prometheus textfile-collector metrics of this run to PATH, atomically
    #[arg(long, global = true, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// healthchecks.io-style pings: URL/start, URL on success, URL/fail on failure; @FILE reads the URL from FILE
    // Checked in `main`, not by clap: clap's error would quote the value,
    // and the URL's path is the check's secret.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "COFFER_PING",
        hide_env_values = true
    )]
    ping: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage keys: generate a key file, add, list or remove a repository's keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create a repository at the configured URL for the configured key
    Init,
    /// Take every configured source (or those named) into one snapshot
    Snapshot {
        /// Only this source (repeatable)
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Tag the snapshot (repeatable)
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        /// Add a label KEY=VALUE (repeatable)
        #[arg(long, value_name = "KEY=VALUE")]
        label: Vec<String>,
        /// Read and report, write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// List complete snapshots, oldest first
    Snapshots {
        /// Only snapshots with this tag
        #[arg(long)]
        tag: Option<String>,
        /// Only snapshots holding this source
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Only the newest
        #[arg(long)]
        latest: bool,
    },
    /// Show one snapshot's manifest
    Show {
        /// Snapshot id, unique prefix, or `latest`
        snapshot: String,
        /// Also list every file
        #[arg(long)]
        files: bool,
        /// With `latest`: newest with this tag
        #[arg(long)]
        tag: Option<String>,
    },
    /// Restore sources of a snapshot
    Restore {
        /// Snapshot id, unique prefix, or `latest`
        snapshot: String,
        /// Only this source (repeatable)
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Restore under DIR/<source name>/ instead of the original paths
        #[arg(long, value_name = "DIR")]
        target: Option<PathBuf>,
        /// Restore only paths matching GLOB (repeatable)
        #[arg(long, value_name = "GLOB")]
        include: Vec<String>,
        /// Restore a database source into another database
        #[arg(long, value_name = "URL")]
        to_database: Option<String>,
        /// Replace existing data
        #[arg(long)]
        force: bool,
        /// List what would be written and where
        #[arg(long)]
        dry_run: bool,
        /// With `latest`: newest with this tag
        #[arg(long)]
        tag: Option<String>,
    },
    /// Write a source (or one file of it) to stdout in a form standard tools read
    Dump {
        snapshot: String,
        source: String,
        path: Option<String>,
    },
    /// Restore rehearsal: restore each database source into a scratch copy, check it, drop it
    Drill {
        /// Snapshot id, unique prefix, or `latest` [default: latest]
        snapshot: Option<String>,
        /// Only this source (repeatable)
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Where to create scratch databases instead of each source's server
        #[arg(long, value_name = "URL")]
        scratch_url: Option<String>,
    },
    /// Check that a snapshot's objects are intact
    Verify {
        /// Snapshot id, unique prefix, or `latest` [default: latest]
        snapshot: Option<String>,
        /// Check every snapshot
        #[arg(long, conflicts_with = "snapshot")]
        all: bool,
        /// Also decrypt, decompress and re-hash every file
        #[arg(long)]
        deep: bool,
    },
    /// Forget the snapshots no retention rule keeps and delete their objects
    Prune(PruneArgs),
    /// Pre-flight: config, repository, key and sources ready (one line per check)
    Check {
        /// Also check that the newest snapshot is younger than DURATION (e.g. 1h, 26h)
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
    },
    /// Print shell completions to stdout (e.g. `coffer completions bash > /etc/bash_completion.d/coffer`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (e.g. `coffer man | man -l -`)
    Man,
    /// Copy objects between two stores (path, file://, s3://, gs://, az://): what is missing or different at DST
    Copy(CopyArgs),
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Write a new random 256-bit key file (mode 0600)
    Generate { path: PathBuf },
    /// Let another key file or passphrase open the repository
    Add {
        /// The key file to add (make one with `coffer key generate`)
        #[arg(long, value_name = "PATH", conflicts_with = "new_passphrase_file")]
        new_key_file: Option<PathBuf>,
        /// A file holding the passphrase to add (or set COFFER_NEW_PASSPHRASE)
        #[arg(long, value_name = "PATH")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// List the keys that open the repository
    List,
    /// Remove a key slot
    Remove { id: String },
}

fn main() -> ExitCode {
    // Everything coffer creates is private unless it says otherwise: a
    // filesystem repository (0700 directories, 0600 objects, key slots
    // included), a local `copy` destination, scratch and staging files.
    // Restored files get the snapshot's modes and the metrics file 0644
    // explicitly. Child processes (hooks, dump tools) inherit this umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // A bug must still end in one clear line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "error: internal error in coffer {}: {info}; nothing was committed by the failing step. Please report this.",
            env!("CARGO_PKG_VERSION")
        );
    }));
    let (cli, op, dry_run) = match parse_cli() {
        Ok(c) => c,
        Err(e) => {
            let outcome = if e.use_stderr() {
                Outcome::Failed(ErrorKind::Usage)
            } else {
                Outcome::Ok
            };
            let _ = e.print();
            return ExitCode::from(outcome.exit_code());
        }
    };
    init_logging(&cli.global);
    let ping = match cli.global.ping.as_deref().map(coffer::ping::resolve) {
        None => None,
        Some(Ok((u, exposed))) => {
            if let Some(x) = exposed {
                eprintln!("warning: {x}");
            }
            Some(u)
        }
        Some(Err(why)) => {
            eprintln!("error: invalid value for '--ping <URL>': {why}");
            return ExitCode::from(Outcome::Failed(ErrorKind::Usage).exit_code());
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if op == "copy" {
        // copy's blocking tasks (local reads and writes, hashing) are short and
        // never wait on each other, so a few threads suffice; each extra
        // thread that allocates part buffers gets its own glibc malloc arena,
        // and the arenas' freed buffers doubled the peak RSS (docs/BENCH.md).
        rt.max_blocking_threads(2);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Outcome::Failed(ErrorKind::Operational).exit_code());
        }
    };
    let json = cli.global.json;
    let monitor = Monitor::new(&cli.global, ping, &op, dry_run);
    let mut rec = RunRecord::new(&op);
    rt.block_on(monitor.start());
    let outcome = match rt.block_on(run(cli, &mut rec)) {
        Ok(outcome) => outcome,
        Err(e) => {
            rec.error.get_or_insert_with(|| e.to_string());
            coffer::progress::finish();
            let outcome = Outcome::Failed(e.kind());
            if json {
                print_json(
                    &json!({"ok": false, "error": e.to_string(), "exit_code": outcome.exit_code()}),
                );
            }
            eprintln!("error: {e}");
            outcome
        }
    };
    rec.outcome = outcome;
    if coffer::store::run_opened() {
        rec.store_retries = Some(coffer::store::run_retries());
        if !json {
            // Recovered faults (a lost answer to a write that did happen):
            // the run succeeded, and on-call should know the network was bad.
            for w in coffer::store::run_warnings() {
                eprintln!("warning: {w}");
            }
        }
    }
    rt.block_on(monitor.finish(&rec));
    // Background tasks (abandoned uploads) must not keep us alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    ExitCode::from(outcome.exit_code())
}

/// Parses the command line, also returning the command's name (`snapshot`,
/// `key`, ...) and whether it is a dry run, for metrics, pings and hooks.
fn parse_cli() -> Result<(Cli, String, bool), clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let m = Cli::command().try_get_matches()?;
    let cli = Cli::from_arg_matches(&m)?;
    let (op, sub) = m.subcommand().unwrap_or(("", &m));
    let dry_run = sub
        .try_get_one::<bool>("dry_run")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false);
    Ok((cli, op.to_string(), dry_run))
}

/// `--metrics-file` and `--ping` of one run. Neither applies to dry runs
/// (they back nothing up) nor to `completions` and `man`. Their failures are
/// warnings: monitoring must never fail a backup.
struct Monitor {
    metrics_file: Option<PathBuf>,
    ping: Option<url::Url>,
    op: String,
    started: std::time::Instant,
}

impl Monitor {
    fn new(g: &Global, ping: Option<url::Url>, op: &str, dry_run: bool) -> Monitor {
        let on = !dry_run && !matches!(op, "completions" | "man");
        Monitor {
            metrics_file: g.metrics_file.clone().filter(|_| on),
            ping: ping.filter(|_| on),
            op: op.to_string(),
            started: std::time::Instant::now(),
        }
    }

    async fn start(&self) {
        if let Some(u) = &self.ping {
            let body = format!("coffer {} starting on {}", self.op, repo::host_name());
            if let Err(e) = coffer::ping::send(u, coffer::ping::Kind::Start, body).await {
                eprintln!("warning: {e}");
            }
        }
    }

    async fn finish(&self, rec: &RunRecord) {
        if let Some(p) = &self.metrics_file
            && let Err(e) =
                coffer::metrics::write(p, rec, std::time::SystemTime::now(), self.started.elapsed())
        {
            eprintln!("warning: {e}; monitoring will see this run as missing");
        }
        if let Some(u) = &self.ping {
            let kind = if rec.outcome.is_ok() {
                coffer::ping::Kind::Success
            } else {
                coffer::ping::Kind::Fail
            };
            let body = coffer::ping::body(rec, &repo::host_name());
            if let Err(e) = coffer::ping::send(u, kind, body).await {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// Writes generated text to stdout; a closed pipe (`coffer man | head`) is
/// the reader's choice, not an error.
fn write_generated(out: &[u8], what: &str) -> Result<Outcome, Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Outcome::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Outcome::Ok),
        Err(e) => Err(Error::Failure(format!(
            "cannot write {what} to stdout: {e}"
        ))),
    }
}

/// Runs the `after_*` and `on_error` hooks on an operation's result.
async fn finish_hooks(
    hooks: &Hooks,
    rec: &mut RunRecord,
    res: Result<Outcome, Error>,
) -> Result<Outcome, Error> {
    let (outcome, error) = match &res {
        Ok(o) => (*o, rec.error.clone()),
        Err(e) => (Outcome::Failed(e.kind()), Some(e.to_string())),
    };
    let ended = hooks::Ended {
        snapshot_id: rec.snapshot_id.clone(),
        outcome,
        error,
    };
    let (after, problems) = hooks.finish(&ended).await;
    for p in &problems {
        eprintln!("error: {p}");
    }
    match res {
        Ok(_) if after != outcome => {
            rec.error = problems.first().map(|p| p.to_string());
            Ok(after)
        }
        other => other,
    }
}

fn init_logging(g: &Global) {
    let default = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

fn print_json(v: &serde_json::Value) {
    coffer::progress::finish();
    // Every document of a run that reached a store says how the store
    // behaved: requests that failed and were retried, and what was
    // recovered (docs/JSON.md, "store"). Added as it is written: a
    // document may be large (`show --files`).
    #[derive(serde::Serialize)]
    struct WithStore<'a> {
        #[serde(flatten)]
        doc: &'a serde_json::Map<String, serde_json::Value>,
        store: serde_json::Value,
    }
    let mut out = std::io::stdout().lock();
    let _ = match v.as_object() {
        Some(doc) if coffer::store::run_opened() => {
            let store = json!({"retries": coffer::store::run_retries(), "warnings": coffer::store::run_warnings()});
            serde_json::to_writer_pretty(&mut out, &WithStore { doc, store })
        }
        _ => serde_json::to_writer_pretty(&mut out, v),
    };
    let _ = writeln!(out);
}

fn println_out(s: &str) {
    coffer::progress::finish();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

/// Settings resolved from flags, environment and config file.
struct Settings {
    config: Config,
    repo_url: Option<String>,
}

fn load_settings(g: &Global) -> Result<Settings, Error> {
    let config = match &g.config {
        Some(p) => Config::load(p)?,
        None => {
            let local = Path::new("coffer.toml");
            let system = Path::new("/etc/coffer/coffer.toml");
            if local.exists() {
                Config::load(local)?
            } else if system.exists() {
                Config::load(system)?
            } else {
                Config::default()
            }
        }
    };
    let repo_url = g.repo.clone().or_else(|| config.repository.url.clone());
    // Every command that reads the config says when a secret file is open
    // to other users, as ssh does; `check` fails on it as well.
    for f in coffer::secret_files::configured(&config, g.key_file.as_deref()) {
        warn_if_exposed(&f.what, &f.path);
    }
    Ok(Settings { config, repo_url })
}

fn warn_if_exposed(what: &str, path: &Path) {
    if let Some(e) = coffer::secret_files::exposed(what, path) {
        eprintln!("warning: {e}");
    }
}

/// Reads a passphrase file; the passphrase is wiped from memory when dropped.
fn read_secret_file(p: &Path, what: &str) -> Result<zeroize::Zeroizing<String>, Error> {
    let mut s = zeroize::Zeroizing::new(
        std::fs::read_to_string(p)
            .map_err(|e| Error::Usage(format!("cannot read {what} {}: {e}", p.display())))?,
    );
    // In place: a trimmed copy would leave the original behind unwiped.
    let len = s.trim_end_matches(['\n', '\r']).len();
    s.truncate(len);
    if s.is_empty() {
        return Err(Error::Usage(format!("{what} {} is empty", p.display())));
    }
    Ok(s)
}

fn key_file_credential(p: &Path) -> Result<Credential, Error> {
    let key = crypto::read_key_file(p).map_err(|e| match crypto::integrity_error(&e) {
        Some(c) => Error::Usage(c.to_string()),
        None => Error::Usage(format!("cannot read key file {}: {e}", p.display())),
    })?;
    Ok(Credential::KeyFile {
        path: p.display().to_string(),
        key,
    })
}

/// The credential, by precedence: --key-file / COFFER_KEY_FILE, then
/// COFFER_PASSPHRASE, then the config's key_file, passphrase_file,
/// passphrase_command.
fn credential(g: &Global, s: &Settings) -> Result<Credential, Error> {
    if let Some(p) = &g.key_file {
        return key_file_credential(p);
    }
    if let Ok(p) = std::env::var("COFFER_PASSPHRASE")
        && !p.is_empty()
    {
        return Ok(Credential::Passphrase(p.into()));
    }
    let r = &s.config.repository;
    if let Some(p) = &r.key_file {
        return key_file_credential(p);
    }
    if let Some(p) = &r.passphrase_file {
        return Ok(Credential::Passphrase(read_secret_file(
            p,
            "passphrase file",
        )?));
    }
    if let Some(cmd) = &r.passphrase_command {
        // Without coffer's secrets in its environment, like every child.
        let out = coffer::childenv::command(&cmd[0], &[] as &[&str])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| {
                Error::Failure(format!(
                    "passphrase_command {:?} could not run: {e}",
                    cmd[0]
                ))
            })?;
        if !out.status.success() {
            return Err(Error::Failure(format!(
                "passphrase_command {:?} failed ({})",
                cmd[0], out.status
            )));
        }
        let stdout = zeroize::Zeroizing::new(out.stdout);
        let p = String::from_utf8_lossy(&stdout)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if p.is_empty() {
            return Err(Error::Failure(format!(
                "passphrase_command {:?} printed nothing",
                cmd[0]
            )));
        }
        return Ok(Credential::Passphrase(p.into()));
    }
    Err(RepoError::NoCredential.into())
}

fn open_store(s: &Settings, create: bool) -> Result<Store, Error> {
    let url = s.repo_url.as_deref().ok_or_else(|| {
        Error::Usage(
            "no repository given: set [repository].url in the config, --repo or COFFER_REPO".into(),
        )
    })?;
    // `[repository.options]` belong to the configured store: `--repo` naming
    // a store of another kind (the S3 repository's copy on GCS, say) must not
    // get S3 keys it would refuse; its settings come from the environment.
    let scheme = |u: &str| u.split_once("://").map_or("file", |(s, _)| s).to_string();
    let configured = s.config.repository.url.as_deref();
    let empty = BTreeMap::new();
    let options = match configured {
        Some(c) if scheme(c) != scheme(url) => &empty,
        _ => &s.config.repository.options,
    };
    Ok(Store::open_with(
        url,
        options,
        create,
        s.config.repository.retry,
    )?)
}

async fn open_repo(g: &Global, s: &Settings) -> Result<Repository, Error> {
    let store = open_store(s, false).map_err(|e| match e {
        Error::Store(coffer::store::StoreError::NotFound { store, .. }) => {
            Error::Repo(RepoError::NotARepository(store))
        }
        other => other,
    })?;
    let cred = credential(g, s)?;
    Ok(repo::open(&store, &cred).await?)
}

async fn run(cli: Cli, rec: &mut RunRecord) -> Result<Outcome, Error> {
    let g = &cli.global;
    let bar = match &cli.command {
        Command::Snapshot { .. } => Some("snapshot"),
        Command::Restore { .. } => Some("restore"),
        Command::Verify { .. } => Some("verify"),
        Command::Drill { .. } => Some("drill"),
        _ => None,
    };
    if let Some(what) = bar
        && std::io::stderr().is_terminal()
        && !g.no_progress
        && !g.quiet
        && !g.json
    {
        coffer::progress::enable(what);
    }
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut out);
            write_generated(&out, "shell completions")
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| Error::Failure(format!("cannot render the man page: {e}")))?;
            write_generated(&out, "the man page")
        }
        Command::Key(KeyCommand::Generate { path }) => {
            crypto::generate_key_file(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Usage(format!(
                        "{} already exists; refusing to overwrite a key file",
                        path.display()
                    ))
                } else {
                    Error::Failure(format!("cannot write key file {}: {e}", path.display()))
                }
            })?;
            if g.json {
                print_json(&json!({"ok": true, "path": path}));
            } else {
                eprintln!(
                    "wrote a new key to {} (mode 0600). Keep a copy somewhere safe: without it, repositories it opens cannot be read.",
                    path.display()
                );
            }
            Ok(Outcome::Ok)
        }
        Command::Init => {
            let s = load_settings(g)?;
            let cred = credential(g, &s)?;
            let store = open_store(&s, true)?;
            let r = repo::init(&store, &cred).await?;
            if g.json {
                print_json(
                    &json!({"ok": true, "url": store.url(), "id": r.id, "key_slot": r.slot_id}),
                );
            } else {
                println_out(&format!(
                    "initialised repository {} at {} (opened by {})",
                    r.id,
                    store.url(),
                    cred.describe()
                ));
            }
            Ok(Outcome::Ok)
        }
        Command::Key(cmd) => {
            let s = load_settings(g)?;
            let r = open_repo(g, &s).await?;
            key_command(g, &r, cmd).await
        }
        Command::Snapshot {
            only,
            tag,
            label,
            dry_run,
        } => {
            let s = load_settings(g)?;
            let mut hooks = Hooks::new(
                &s.config.hooks,
                hooks::Operation::Snapshot,
                s.repo_url.as_deref(),
                !dry_run,
            );
            let res: Result<Outcome, Error> = async {
                let mut labels = BTreeMap::new();
                for l in &label {
                    let (k, v) = snapshot::parse_label(l)?;
                    labels.insert(k, v);
                }
                let selected = snapshot::select_sources(&s.config, &only)?;
                rec.plan_sources(selected.iter().map(|c| (c.name.as_str(), c.kind.as_str())));
                let r = open_repo(g, &s).await?;
                hooks.before(None).await?;
                let opts = SnapshotOptions {
                    only,
                    tags: tag,
                    labels,
                    dry_run,
                    compression: s.config.repository.compression.unwrap_or(3),
                    time: None,
                };
                match snapshot::snapshot(&r, &s.config, &opts).await {
                    Ok(out) => {
                        rec.record_manifest(&out.manifest);
                        if out.committed && g.metrics_file.is_some() {
                            rec.snapshots_total = r.snapshot_ids().await.ok().map(|v| v.len() as u64);
                        }
                        report_snapshot(g, &out.manifest, out.committed, dry_run);
                        Ok(if out.manifest.status == SnapshotStatus::Partial {
                            Outcome::Partial
                        } else {
                            Outcome::Ok
                        })
                    }
                    Err(SnapshotError::AllFailed(why)) => {
                        rec.error = Some(format!("every source failed; nothing was committed:\n{why}"));
                        if g.json {
                            print_json(
                                &json!({"ok": false, "status": "failed", "error": format!("every source failed; nothing was committed:\n{why}"), "exit_code": Outcome::Failed(ErrorKind::Operational).exit_code()}),
                            );
                        }
                        eprintln!("error: every source failed; nothing was committed:\n{why}");
                        Ok(Outcome::Failed(ErrorKind::Operational))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            .await;
            finish_hooks(&hooks, rec, res).await
        }
        Command::Snapshots {
            tag,
            source,
            latest,
        } => {
            let s = load_settings(g)?;
            let r = open_repo(g, &s).await?;
            let (all, damaged) = r.manifests().await.map_err(Error::Repo)?;
            let mut list: Vec<&Manifest> = all
                .iter()
                .filter(|m| tag.as_ref().is_none_or(|t| m.tags.contains(t)))
                .filter(|m| {
                    source
                        .as_ref()
                        .is_none_or(|n| m.sources.iter().any(|x| &x.name == n))
                })
                .collect();
            if latest && list.len() > 1 {
                list = vec![*list.last().expect("non-empty")];
            }
            if g.json {
                let mut v: Vec<_> = list
                    .iter()
                    .map(|m| {
                        json!({"id": m.id, "time": rfc3339(&m.time), "host": m.host, "tags": m.tags,
                        "labels": m.labels, "status": m.status,
                        "sources": m.sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                        "bytes_stored": m.bytes_stored()})
                    })
                    .collect();
                // Unreadable ones last: any of them may be the newest.
                v.extend(damaged.iter().map(|d| match d.newer {
                    Some(version) => json!({"id": d.id, "object": d.object,
                        "error": d.reason, "newer_version": version}),
                    None => json!({"id": d.id, "object": d.object,
                        "error": d.reason, "damaged": true}),
                }));
                print_json(&serde_json::Value::Array(v));
            } else if list.is_empty() {
                eprintln!(
                    "no {}snapshots",
                    if damaged.is_empty() { "" } else { "readable " }
                );
            } else {
                println_out(&format!(
                    "{:<16}  {:<20}  {:<16}  {:<7}  {:<20}  {:>10}  {}",
                    "ID", "TIME (UTC)", "HOST", "STATUS", "TAGS", "SIZE", "SOURCES"
                ));
                for m in &list {
                    println_out(&format!(
                        "{:<16}  {:<20}  {:<16}  {:<7}  {:<20}  {:>10}  {}",
                        m.id,
                        m.time.format("%Y-%m-%d %H:%M:%S"),
                        m.host,
                        status_word(m.status),
                        m.tags.join(","),
                        human_bytes(m.bytes_stored()),
                        m.sources
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                }
            }
            for d in &damaged {
                match d.newer {
                    Some(_) => eprintln!("error: {}; it is not listed above", d.reason),
                    None => eprintln!(
                        "error: snapshot {}: manifest {} is damaged ({}); it is not listed above and cannot be restored; \
                         `restore latest` and `prune` refuse to run until it is repaired: \
                         run `coffer verify --all`, then put back a good copy of {} (from a copy of the repository) or delete it",
                        d.id, d.object, d.reason, d.object
                    ),
                }
            }
            Ok(if damaged.iter().any(|d| d.newer.is_none()) {
                Outcome::Failed(ErrorKind::Integrity)
            } else if !damaged.is_empty() {
                Outcome::Failed(ErrorKind::Operational)
            } else {
                Outcome::Ok
            })
        }
        Command::Show {
            snapshot,
            files,
            tag,
        } => {
            let s = load_settings(g)?;
            let r = open_repo(g, &s).await?;
            let m = r.resolve(&snapshot, tag.as_deref()).await?;
            show(g, &r, &m, files).await
        }
        Command::Restore {
            snapshot,
            only,
            target,
            include,
            to_database,
            force,
            dry_run,
            tag,
        } => {
            let s = load_settings(g)?;
            let mut hooks = Hooks::new(
                &s.config.hooks,
                hooks::Operation::Restore,
                s.repo_url.as_deref(),
                !dry_run,
            );
            let res: Result<Outcome, Error> = async {
                let r = open_repo(g, &s).await?;
                let m = r.resolve(&snapshot, tag.as_deref()).await?;
                rec.snapshot_id = Some(m.id.clone());
                hooks.before(Some(&m.id)).await?;
                let opts = RestoreOptions {
                    only,
                    target,
                    include,
                    force,
                    dry_run,
                    to_database,
                };
                if !g.json {
                    // First, before anything changes: whose data is coming back.
                    println_out(&format!(
                        "restoring snapshot {} taken on {} at {} UTC",
                        m.id,
                        m.host,
                        m.time.format("%Y-%m-%d %H:%M:%S")
                    ));
                }
                let rep = restore::restore(&r, &m, &s.config, &opts).await?;
                if !g.json {
                    for w in &rep.warnings {
                        eprintln!("warning: {w}");
                    }
                }
                if g.json {
                    let mut v = serde_json::to_value(&rep).expect("report serialises");
                    v["ok"] = json!(true);
                    print_json(&v);
                } else {
                    for src in &rep.sources {
                        if dry_run {
                            println_out(&format!(
                                "would restore source {} ({}) to {}: {} files, {} dirs, {} links, {}",
                                src.name,
                                src.kind,
                                src.destination,
                                src.files,
                                src.dirs,
                                src.links,
                                human_bytes(src.bytes)
                            ));
                            for p in &src.planned {
                                println_out(&format!("  {p}"));
                            }
                        } else if coffer::read::is_dump_source(&src.kind) {
                            println_out(&format!(
                                "restored source {} ({}) from snapshot {} into {}: {} in {:.1} s",
                                src.name,
                                src.kind,
                                rep.snapshot,
                                src.destination,
                                human_bytes(src.bytes),
                                src.duration_ms as f64 / 1000.0
                            ));
                        } else {
                            println_out(&format!(
                                "restored source {} ({}) from snapshot {} to {}: {} files, {} dirs, {} links, {} in {:.1} s",
                                src.name,
                                src.kind,
                                rep.snapshot,
                                src.destination,
                                src.files,
                                src.dirs,
                                src.links,
                                human_bytes(src.bytes),
                                src.duration_ms as f64 / 1000.0
                            ));
                        }
                    }
                    for src in &rep.sources {
                        for step in &src.next_steps {
                            eprintln!("next step for source {}: {step}", src.name);
                        }
                        for p in &src.not_stored {
                            eprintln!(
                                "warning: source {}: {p} could not be read when snapshot {} was taken; it is not in the restored copy",
                                src.name, rep.snapshot
                            );
                        }
                        // Stored anyway, so restored: say so, and why it may
                        // not be what the application last wrote.
                        for (p, why) in src
                            .possibly_inconsistent
                            .iter()
                            .zip(&src.possibly_inconsistent_why)
                        {
                            eprintln!(
                                "warning: source {}: {p} {} but possibly inconsistent (snapshot {}: {why})",
                                src.name,
                                if dry_run { "would be restored" } else { "is restored" },
                                rep.snapshot
                            );
                        }
                    }
                    for sk in &rep.skipped {
                        eprintln!(
                            "warning: source {sk} failed when snapshot {} was taken; nothing restored for it",
                            rep.snapshot
                        );
                    }
                }
                if !rep.skipped.is_empty() {
                    rec.error = Some(format!(
                        "source(s) {} failed when snapshot {} was taken; nothing restored for them",
                        rep.skipped.join(", "),
                        rep.snapshot
                    ));
                }
                Ok(if rep.skipped.is_empty() {
                    Outcome::Ok
                } else {
                    Outcome::Partial
                })
            }
            .await;
            finish_hooks(&hooks, rec, res).await
        }
        Command::Dump {
            snapshot,
            source,
            path,
        } => {
            if path.is_none() && std::io::stdout().is_terminal() {
                return Err(Error::Usage(
                    "coffer dump writes a binary stream; pipe it, e.g. `coffer dump SNAPSHOT SOURCE | tar -tvf -`"
                        .into(),
                ));
            }
            let s = load_settings(g)?;
            let r = open_repo(g, &s).await?;
            let m = r.resolve(&snapshot, None).await?;
            restore::dump(&r, &m, &source, path, std::io::stdout()).await?;
            Ok(Outcome::Ok)
        }
        Command::Drill {
            snapshot,
            only,
            scratch_url,
        } => {
            let s = load_settings(g)?;
            let r = open_repo(g, &s).await?;
            let m = r
                .resolve(snapshot.as_deref().unwrap_or("latest"), None)
                .await?;
            let rep = restore::drill(&r, &m, &s.config, &only, scratch_url).await?;
            if g.json {
                print_json(&serde_json::to_value(&rep).expect("report serialises"));
            } else {
                for d in &rep.sources {
                    println_out(&format!(
                        "source {} ({}): {} — restore into {} took {:.1} s",
                        d.name,
                        d.kind,
                        if d.ok { "ok" } else { "FAILED" },
                        if d.scratch.is_empty() {
                            "scratch"
                        } else {
                            &d.scratch
                        },
                        d.restore_ms as f64 / 1000.0
                    ));
                    for c in &d.checks {
                        println_out(&format!("  {c}"));
                    }
                    for f in &d.failures {
                        println_out(&format!("  FAILED: {f}"));
                    }
                    if let Some(e) = &d.error {
                        println_out(&format!("  error: {e}"));
                    }
                }
                for sk in &rep.skipped {
                    println_out(&format!("source {sk}: no drill for this type (skipped)"));
                }
                if rep.sources.is_empty() {
                    println_out(&format!(
                        "snapshot {} has no database source to drill",
                        rep.snapshot
                    ));
                }
            }
            let outcome = if rep.ok {
                Outcome::Ok
            } else if rep
                .sources
                .iter()
                .any(|d| !d.failures.is_empty() && d.error.is_none())
            {
                Outcome::Failed(ErrorKind::Integrity)
            } else if rep.sources.iter().all(|d| d.ok || d.error.is_some()) {
                Outcome::Failed(ErrorKind::Operational)
            } else {
                Outcome::Failed(ErrorKind::Integrity)
            };
            if !rep.ok {
                eprintln!(
                    "error: restore drill of snapshot {} failed; see above",
                    rep.snapshot
                );
            }
            Ok(outcome)
        }
        Command::Prune(args) => prune_command(g, args).await,
        Command::Copy(args) => copy_command(g, args).await,
        Command::Check { max_age } => check_command(g, max_age).await,
        Command::Verify {
            snapshot,
            all,
            deep,
        } => {
            let s = load_settings(g)?;
            let r = open_repo(g, &s).await?;
            let sel = if all {
                Selection::All
            } else {
                let spec = snapshot.unwrap_or_else(|| "latest".into());
                match r.resolve(&spec, None).await {
                    Ok(m) => Selection::One(m),
                    Err(RepoError::DamagedManifest { id, object, reason }) => {
                        let msg = format!("snapshot {id}: manifest {object} is damaged: {reason}");
                        if g.json {
                            print_json(
                                &json!({"ok": false, "deep": deep, "snapshots": [{"id": id, "ok": false, "sources": [], "error": msg}]}),
                            );
                        }
                        eprintln!("error: {msg}");
                        return Ok(Outcome::Failed(ErrorKind::Integrity));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let rep = verify::verify(&r, sel, deep).await?;
            if g.json {
                print_json(&serde_json::to_value(&rep).expect("report serialises"));
            } else {
                for snap in &rep.snapshots {
                    if snap.ok {
                        println_out(&format!(
                            "snapshot {}: ok ({} sources{})",
                            snap.id,
                            snap.sources.len(),
                            if deep { ", deep" } else { "" }
                        ));
                        continue;
                    }
                    let verdict = if snap.newer {
                        "NOT VERIFIED"
                    } else {
                        "DAMAGED"
                    };
                    println_out(&format!("snapshot {}: {verdict}", snap.id));
                    if let Some(e) = &snap.error {
                        println_out(&format!("  {e}"));
                    }
                    for src in snap.sources.iter().filter(|s| !s.ok) {
                        for p in &src.problems {
                            println_out(&format!("  source {}: {p}", src.name));
                        }
                    }
                }
                if rep.snapshots.is_empty() {
                    println_out("no snapshots to verify");
                }
            }
            if rep.ok {
                Ok(Outcome::Ok)
            } else if rep.snapshots.iter().all(|s| s.ok || s.newer) {
                // Only manifests of a newer coffer: nothing is damaged.
                eprintln!(
                    "error: snapshot(s) written by a newer coffer were not verified; upgrade coffer to verify them"
                );
                Ok(Outcome::Failed(ErrorKind::Operational))
            } else {
                let bad: Vec<&str> = rep
                    .snapshots
                    .iter()
                    .filter(|s| !s.ok)
                    .map(|s| s.id.as_str())
                    .collect();
                eprintln!(
                    "error: damaged snapshot(s): {}; restore from an older snapshot or another copy of the repository",
                    bad.join(", ")
                );
                Ok(Outcome::Failed(ErrorKind::Integrity))
            }
        }
    }
}

async fn key_command(g: &Global, r: &Repository, cmd: KeyCommand) -> Result<Outcome, Error> {
    match cmd {
        KeyCommand::Generate { .. } => unreachable!("handled without a repository"),
        KeyCommand::Add {
            new_key_file,
            new_passphrase_file,
        } => {
            let cred = if let Some(p) = new_key_file {
                warn_if_exposed("key file", &p);
                key_file_credential(&p)?
            } else if let Some(p) = new_passphrase_file {
                warn_if_exposed("passphrase file", &p);
                Credential::Passphrase(read_secret_file(&p, "passphrase file")?)
            } else if let Ok(p) = std::env::var("COFFER_NEW_PASSPHRASE")
                && !p.is_empty()
            {
                Credential::Passphrase(p.into())
            } else {
                return Err(Error::Usage(
                    "say what to add: --new-key-file PATH, --new-passphrase-file PATH, or COFFER_NEW_PASSPHRASE".into(),
                ));
            };
            let info = r.key_add(&cred).await?;
            if g.json {
                print_json(&json!({"ok": true, "added": info}));
            } else {
                println_out(&format!("added key slot {} ({})", info.id, cred.describe()));
            }
        }
        KeyCommand::List => {
            let slots = r.key_list().await?;
            if g.json {
                print_json(&json!({"ok": true, "keys": slots}));
            } else {
                println_out(&format!(
                    "{:<18}  {:<10}  {:<20}  {}",
                    "ID", "TYPE", "CREATED (UTC)", "HOST"
                ));
                for s in slots {
                    println_out(&format!(
                        "{}{:<17}  {:<10}  {:<20}  {}",
                        if s.current { "*" } else { " " },
                        s.id,
                        s.kind,
                        s.created.replace('T', " ").trim_end_matches('Z'),
                        s.host
                    ));
                }
            }
        }
        KeyCommand::Remove { id } => {
            r.key_remove(&id).await?;
            if g.json {
                print_json(&json!({"ok": true, "removed": id}));
            } else {
                println_out(&format!("removed key slot {id}"));
            }
        }
    }
    Ok(Outcome::Ok)
}

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn status_word(s: SnapshotStatus) -> &'static str {
    match s {
        SnapshotStatus::Ok => "ok",
        SnapshotStatus::Partial => "partial",
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn snapshot_json(m: &Manifest) -> serde_json::Value {
    json!({
        "id": m.id, "time": rfc3339(&m.time), "host": m.host, "tags": m.tags, "labels": m.labels,
        "status": m.status,
        "sources": m.sources.iter().map(|s| json!({
            "name": s.name, "type": s.kind, "status": s.status, "files": s.files,
            "bytes_read": s.bytes_read, "bytes_stored": s.bytes_stored, "duration_ms": s.duration_ms,
            "error": s.error, "problems": s.problems, "skipped": s.skipped,
            "vanished": s.vanished,
        })).collect::<Vec<_>>(),
    })
}

fn report_snapshot(g: &Global, m: &Manifest, committed: bool, dry_run: bool) {
    if g.json {
        let mut v = snapshot_json(m);
        v["ok"] = json!(m.status == SnapshotStatus::Ok);
        v["dry_run"] = json!(dry_run);
        v["committed"] = json!(committed);
        print_json(&v);
    } else {
        // The id alone on stdout, for scripts; the report on stderr (with
        // -q only when something went wrong, so cron mails only then).
        if committed {
            println_out(&m.id);
        }
        if g.quiet && m.status == SnapshotStatus::Ok {
            return;
        }
        let verb = if dry_run {
            "dry run, nothing written:"
        } else {
            "saved"
        };
        eprintln!(
            "snapshot {} {} {} ({} sources, {} read, {} stored)",
            m.id,
            verb,
            status_word(m.status),
            m.sources.len(),
            human_bytes(m.sources.iter().map(|s| s.bytes_read).sum()),
            human_bytes(m.bytes_stored())
        );
        for s in &m.sources {
            // Vanished files make a source partial only when the config
            // says so, and then the snapshot is partial too.
            let vanished_partial = !s.vanished.is_empty() && m.status == SnapshotStatus::Partial;
            let status = match s.status {
                SourceStatus::Ok if s.problems.is_empty() && !vanished_partial => "ok",
                SourceStatus::Ok => "partial",
                SourceStatus::Failed => "FAILED",
            };
            eprintln!(
                "  {:<16} {:<10} {:<8} {:>7} files  {:>10} read  {:>10} stored  {:.1} s",
                s.name,
                s.kind,
                status,
                s.files,
                human_bytes(s.bytes_read),
                human_bytes(s.bytes_stored),
                s.duration_ms as f64 / 1000.0
            );
            if s.status == SourceStatus::Failed {
                eprintln!("    error: {}", s.error.as_deref().unwrap_or("failed"));
            }
            for p in &s.problems {
                eprintln!("    not stored whole: {}: {}", p.path, p.error);
            }
            for p in &s.skipped {
                eprintln!("    skipped: {}: {}", p.path, p.error);
            }
            for p in &s.vanished {
                eprintln!(
                    "    warning: vanished during the snapshot (deleted after the walk listed it), not stored: {p}"
                );
            }
        }
    }
}

async fn show(g: &Global, r: &Repository, m: &Manifest, files: bool) -> Result<Outcome, Error> {
    let mut listings = Vec::new();
    if files {
        for s in &m.sources {
            listings.push(restore::list_files(r, m, s).await?);
        }
    }
    if g.json {
        let mut v = snapshot_json(m);
        v["tool_version"] = json!(m.tool_version);
        v["parent"] = json!(m.parent);
        let srcs = v["sources"].as_array_mut().expect("array");
        for (i, s) in m.sources.iter().enumerate() {
            srcs[i]["origin"] = json!(s.origin);
            srcs[i]["archive"] = json!(s.archive);
            srcs[i]["index"] = json!(s.index);
            srcs[i]["details"] = json!(s.details);
            if files {
                // Times are RFC 3339 UTC, here with the stored nanoseconds.
                let entries: Vec<serde_json::Value> = listings[i]
                    .iter()
                    .map(|e| {
                        let mut v = json!(e);
                        v["mtime"] = json!(
                            chrono::DateTime::from_timestamp(e.mtime, e.mtime_nsec)
                                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                        );
                        if let Some(o) = v.as_object_mut() {
                            o.remove("mtime_nsec");
                        }
                        v
                    })
                    .collect();
                srcs[i]["files"] = json!(entries);
                srcs[i]["file_count"] = json!(s.files);
            }
        }
        print_json(&v);
        return Ok(Outcome::Ok);
    }
    let mut out = String::new();
    out.push_str(&format!("snapshot   {}\n", m.id));
    out.push_str(&format!(
        "time       {} UTC\n",
        m.time.format("%Y-%m-%d %H:%M:%S")
    ));
    out.push_str(&format!("host       {}\n", m.host));
    out.push_str(&format!("status     {}\n", status_word(m.status)));
    out.push_str(&format!("tags       {}\n", m.tags.join(", ")));
    for (k, v) in &m.labels {
        out.push_str(&format!("label      {k}={v}\n"));
    }
    out.push_str(&format!("coffer     {}\n", m.tool_version));
    out.push_str(&format!("stored     {}\n", human_bytes(m.bytes_stored())));
    for (i, s) in m.sources.iter().enumerate() {
        out.push_str(&format!(
            "\nsource {} ({}), {}\n",
            s.name,
            s.kind,
            match s.status {
                SourceStatus::Ok => "ok",
                SourceStatus::Failed => "FAILED",
            }
        ));
        if let Some(o) = &s.origin {
            out.push_str(&format!("  from      {o}\n"));
        }
        out.push_str(&format!(
            "  files     {}\n  read      {}\n  stored    {}\n  took      {:.1} s\n",
            s.files,
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_stored),
            s.duration_ms as f64 / 1000.0
        ));
        if let Some(a) = &s.archive {
            out.push_str(&format!("  archive   {} sha256:{}\n", a.object, a.sha256));
        }
        if let Some(e) = &s.error {
            out.push_str(&format!("  error     {e}\n"));
        }
        for v in &s.vanished {
            out.push_str(&format!(
                "  vanished  {v} (deleted during the snapshot, not stored)\n"
            ));
        }
        for (k, v) in &s.details {
            out.push_str(&format!("  {k:<9} {v}\n"));
        }
        if files {
            for e in &listings[i] {
                let t = chrono::DateTime::from_timestamp(e.mtime, e.mtime_nsec)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let kind = match e.kind {
                    coffer::manifest::EntryKind::File => "-",
                    coffer::manifest::EntryKind::Dir => "d",
                    coffer::manifest::EntryKind::Symlink => "l",
                    coffer::manifest::EntryKind::Hardlink => "h",
                };
                let mut line = format!(
                    "  {kind} {:04o} {:>12} {} {} {}",
                    e.mode,
                    e.size,
                    t,
                    e.sha256.as_deref().unwrap_or("-"),
                    e.path
                );
                if let Some(tg) = &e.target {
                    line.push_str(&format!(" -> {tg}"));
                }
                if let Some(err) = &e.error {
                    line.push_str(&format!("  [{err}]"));
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    print!("{out}");
    Ok(Outcome::Ok)
}

/// `coffer prune` flags; each given flag replaces that rule of `[retention]`.
#[derive(Args, Debug)]
struct PruneArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot taken within DURATION before the newest one (e.g. 30d)
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    keep_tag: Vec<String>,
    /// Left-overs of interrupted snapshots younger than this stay [default: 24h]
    #[arg(long, value_name = "DURATION")]
    grace: Option<String>,
    /// Report what would be removed, delete nothing
    #[arg(long)]
    dry_run: bool,
}

fn prune_policy(
    cfg: &coffer::config::RetentionConfig,
    a: &PruneArgs,
) -> Result<coffer::retention::Policy, Error> {
    use coffer::retention::{Period, Policy, RetentionError, parse_duration};
    let usage = |e: RetentionError| Error::Usage(e.to_string());
    let mut p = Policy::from_config(cfg).map_err(usage)?;
    if let Some(n) = a.keep_last {
        p.last = n;
    }
    for (period, n) in [
        (Period::Hourly, a.keep_hourly),
        (Period::Daily, a.keep_daily),
        (Period::Weekly, a.keep_weekly),
        (Period::Monthly, a.keep_monthly),
        (Period::Yearly, a.keep_yearly),
    ] {
        if let Some(n) = n {
            p.set_count(period, n);
        }
    }
    if let Some(w) = &a.keep_within {
        p.within = Some((
            parse_duration("--keep-within", w).map_err(usage)?,
            w.trim().to_string(),
        ));
    }
    if !a.keep_tag.is_empty() {
        p.tags = a.keep_tag.clone();
    }
    if p.is_empty() {
        return Err(coffer::prune::PruneError::from(RetentionError::NoRule).into());
    }
    Ok(p)
}

async fn prune_command(g: &Global, a: PruneArgs) -> Result<Outcome, Error> {
    use coffer::prune::{self, PruneOptions};
    let s = load_settings(g)?;
    let policy = prune_policy(&s.config.retention, &a)?;
    let grace = match &a.grace {
        Some(t) => coffer::retention::parse_duration("--grace", t)
            .map_err(|e| Error::Usage(e.to_string()))?,
        None => prune::DEFAULT_GRACE,
    };
    let r = open_repo(g, &s).await?;
    let opts = PruneOptions {
        policy,
        dry_run: a.dry_run,
        grace,
        now: chrono::Utc::now(),
    };
    let rep = prune::prune(&r, &opts).await?;
    if g.json {
        print_json(&serde_json::to_value(&rep).expect("report serialises"));
        return Ok(Outcome::Ok);
    }
    let mut out = format!(
        "{:<16}  {:<20}  {:<6}  {}\n",
        "ID", "TIME (UTC)", "ACTION", "KEPT BY"
    );
    for v in &rep.snapshots {
        out.push_str(&format!(
            "{:<16}  {:<20}  {:<6}  {}\n",
            v.id,
            v.time.replace('T', " ").trim_end_matches('Z'),
            v.action,
            v.reasons.join(", ")
        ));
    }
    for l in &rep.leftovers {
        out.push_str(&format!(
            "left-over data/{}/ ({} objects, {}, newest {}): {}: {}\n",
            l.id,
            l.objects,
            human_bytes(l.bytes),
            l.newest,
            l.action,
            l.why
        ));
    }
    let verb = if rep.dry_run {
        "dry run, nothing deleted: would remove"
    } else {
        "removed"
    };
    let t = &rep.temp_files;
    if t.removed + t.kept > 0 {
        out.push_str(&format!(
            "{verb} {} upload temp files of interrupted writes ({}); kept {} ({}) younger than the grace period\n",
            t.removed,
            human_bytes(t.removed_bytes),
            t.kept,
            human_bytes(t.kept_bytes)
        ));
    }
    if let Some(m) = &rep.multipart_uploads
        && m.aborted + m.kept > 0
    {
        let verb = if rep.dry_run {
            "dry run, nothing deleted: would abort"
        } else {
            "aborted"
        };
        out.push_str(&format!(
            "{verb} {} multipart uploads of interrupted writes; kept {} younger than the grace period\n",
            m.aborted, m.kept
        ));
    }
    out.push_str(&format!(
        "{verb} {} of {} snapshots ({} objects) and {} left-over objects; kept {} ({})\n",
        rep.removed,
        rep.snapshots.len(),
        rep.removed_objects,
        rep.leftovers_removed,
        rep.kept,
        rep.policy
    ));
    print!("{out}");
    Ok(Outcome::Ok)
}

/// `coffer check`. A config file that cannot be parsed is still exit 2, as
/// everywhere, after its FAIL line; every other failed check is exit 1.
async fn check_command(g: &Global, max_age: Option<String>) -> Result<Outcome, Error> {
    use coffer::check::{self, CheckInputs, CheckItem, CheckReport};
    let print = |rep: &CheckReport| {
        if g.json {
            print_json(&serde_json::to_value(rep).expect("report serialises"));
        } else {
            let mut out = String::new();
            for c in &rep.checks {
                out.push_str(&format!(
                    "{:<4} {}: {}\n",
                    match (c.ok, c.warning) {
                        (false, _) => "FAIL",
                        (true, true) => "warn",
                        (true, false) => "ok",
                    },
                    c.name,
                    c.detail
                ));
            }
            print!("{out}");
        }
    };
    let max_age = match max_age {
        Some(t) => Some((
            coffer::retention::parse_duration("--max-age", &t)
                .map_err(|e| Error::Usage(e.to_string()))?,
            t.trim().to_string(),
        )),
        None => None,
    };
    let s = match load_settings(g) {
        Ok(s) => s,
        Err(e) => {
            print(&CheckReport {
                ok: false,
                checks: vec![CheckItem {
                    name: "config valid".into(),
                    ok: false,
                    detail: e.to_string(),
                    warning: false,
                }],
            });
            return Ok(Outcome::Failed(e.kind()));
        }
    };
    let store = open_store(&s, false).map_err(|e| match e {
        Error::Store(coffer::store::StoreError::NotFound { store, .. }) => format!(
            "{store} does not exist (no such directory); check the URL, or create a repository with `coffer init`"
        ),
        e => e.to_string(),
    });
    let credential = credential(g, &s).map_err(|e| e.to_string());
    let rep = check::check(CheckInputs {
        config: &s.config,
        store,
        credential,
        max_age,
        key_file: g.key_file.as_deref(),
        now: chrono::Utc::now(),
    })
    .await;
    print(&rep);
    if !rep.ok && !g.json {
        let failed: Vec<&str> = rep
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        eprintln!(
            "error: {} check(s) failed: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(if rep.ok {
        Outcome::Ok
    } else {
        Outcome::Failed(ErrorKind::Operational)
    })
}

#[derive(Args, Debug)]
struct CopyArgs {
    /// Where to copy from: a path, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix
    src: String,
    /// Where to copy to (same forms)
    dst: String,
    /// Delete objects at DST that are absent from SRC (only when every copy succeeded)
    #[arg(long)]
    delete: bool,
    /// With --delete: refuse to delete more than N objects (exit 1, nothing deleted)
    #[arg(long, value_name = "N", requires = "delete")]
    max_delete: Option<u64>,
    /// Print what would be copied and deleted; write nothing
    #[arg(long)]
    dry_run: bool,
    /// Compare both sides without copying; list the differences, exit 1 on any
    #[arg(long, conflicts_with_all = ["dry_run", "delete"])]
    check: bool,
    /// Compare equal-size objects by SHA-256 (coffer's stored metadata, else read and hashed), never by size and mtime; --check always does
    #[arg(long)]
    checksum: bool,
    /// Objects in flight at once
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Only keys matching GLOB (relative to the prefix; without `/` it matches the last segment; repeatable)
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Skip keys matching GLOB (repeatable)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// A SRC store option KEY=VALUE (object_store configuration keys; repeatable); KEY=@FILE or KEY=env:VAR keep a secret off the command line
    #[arg(long, value_name = "KEY=VALUE")]
    src_opt: Vec<String>,
    /// A DST store option KEY=VALUE, KEY=@FILE or KEY=env:VAR (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    dst_opt: Vec<String>,
}

/// `--src-opt`/`--dst-opt` values: `KEY=VALUE`, or, so that a secret stays
/// out of argv (`ps`, shell history), `KEY=@FILE` (the file's content, one
/// final newline dropped) or `KEY=env:VAR` (that variable's value).
fn store_options(flag: &str, kvs: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut m = BTreeMap::new();
    for kv in kvs {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                // Only the key: the value may be a secret given by mistake.
                let shown = kv.split_once('=').map_or("", |(k, _)| k);
                Error::Usage(format!(
                    "{flag} {shown:?}...: expected KEY=VALUE, KEY=@FILE or KEY=env:VAR, e.g. {flag} aws_region=eu-west-1"
                ))
            })?;
        let value = if let Some(file) = v.strip_prefix('@') {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::Usage(format!(
                    "{flag} {k}=@{file}: cannot read {file}: {e}; give a readable file holding the value"
                ))
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_string()
        } else if let Some(var) = v.strip_prefix("env:") {
            std::env::var(var).map_err(|e| {
                Error::Usage(format!(
                    "{flag} {k}=env:{var}: {}; export {var} or give the value another way",
                    match e {
                        std::env::VarError::NotPresent => format!("{var} is not set"),
                        std::env::VarError::NotUnicode(_) => format!("{var} is not valid UTF-8"),
                    }
                ))
            })?
        } else {
            v.to_string()
        };
        m.insert(k.to_string(), value);
    }
    Ok(m)
}

/// Draws the copy's progress bar and prints its per-object lines.
struct CopyProgress {
    bar: Option<indicatif::ProgressBar>,
    dry_run: bool,
    check: bool,
    json: bool,
    quiet: bool,
}

impl coffer::copy::Progress for CopyProgress {
    fn event(&self, e: &coffer::copy::Event<'_>) {
        use coffer::copy::Event;
        let line = |s: String| match &self.bar {
            Some(b) => b.println(s),
            None => println_out(&s),
        };
        match e {
            Event::Queued { bytes, .. } => {
                if let Some(b) = &self.bar {
                    b.inc_length(*bytes);
                    b.set_message(format!("{} objects", b.position()));
                }
            }
            Event::Copied { .. } | Event::Skipped { .. } => {
                if let (Some(b), Event::Copied { bytes, .. }) = (&self.bar, e) {
                    b.inc(*bytes);
                }
            }
            Event::WouldCopy { key, bytes, why } if !self.json => {
                line(format!("would copy {key} ({}; {why})", human_bytes(*bytes)))
            }
            Event::WouldDelete { key, bytes } if !self.json => {
                line(format!("would delete {key} ({})", human_bytes(*bytes)))
            }
            Event::Differs { key, what } if !self.json && self.check => {
                line(format!("differs: {key}: {what}"))
            }
            Event::Failed { key, error } => {
                let s = format!("error: {key}: {error}");
                match &self.bar {
                    Some(b) => b.println(s),
                    None => eprintln!("{s}"),
                }
            }
            Event::Retrying {
                key,
                attempt,
                error,
            } if !self.quiet => {
                tracing::warn!("{key}: attempt {attempt} failed ({error}); retrying");
            }
            _ => {}
        }
        let _ = self.dry_run;
    }
}

async fn copy_command(g: &Global, a: CopyArgs) -> Result<Outcome, Error> {
    let opts = coffer::copy::CopyOptions {
        src_options: store_options("--src-opt", &a.src_opt)?,
        dst_options: store_options("--dst-opt", &a.dst_opt)?,
        delete: a.delete,
        max_delete: a.max_delete,
        dry_run: a.dry_run,
        check: a.check,
        checksum: a.checksum,
        concurrency: a.concurrency,
        include: a.include,
        exclude: a.exclude,
    };
    let bar =
        (std::io::stderr().is_terminal() && !g.no_progress && !g.quiet && !a.check && !a.dry_run)
            .then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("valid template"),
                );
                b.enable_steady_tick(std::time::Duration::from_millis(200));
                b
            });
    let progress = std::sync::Arc::new(CopyProgress {
        bar: bar.clone(),
        dry_run: a.dry_run,
        check: a.check,
        json: g.json,
        quiet: g.quiet,
    });
    let rep = coffer::copy::copy(&a.src, &a.dst, &opts, progress).await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if g.json {
        print_json(&serde_json::to_value(&rep).expect("report serialises"));
    } else if !g.quiet || !rep.ok {
        let secs = rep.duration_ms as f64 / 1000.0;
        let c = &rep.compared;
        let compared = format!(
            "; compared {} by content, {} by stored hash{}",
            c.content,
            c.stored_hash,
            if c.size_mtime > 0 {
                format!(", {} by size+mtime", c.size_mtime)
            } else {
                String::new()
            }
        );
        if a.check {
            eprintln!(
                "check {} -> {}: {} object(s) differ, {} identical ({}){compared}, in {secs:.1} s",
                rep.src,
                rep.dst,
                rep.differences_count,
                rep.skipped.objects,
                human_bytes(rep.skipped.bytes)
            );
        } else {
            eprintln!(
                "{}copy {} -> {}: {} {} object(s) ({}), skipped {} ({}), {} {} ({}), failed {}{compared}, in {secs:.1} s{}",
                if a.dry_run {
                    "dry run, nothing written: "
                } else {
                    ""
                },
                rep.src,
                rep.dst,
                if a.dry_run { "would copy" } else { "copied" },
                rep.copied.objects,
                human_bytes(rep.copied.bytes),
                rep.skipped.objects,
                human_bytes(rep.skipped.bytes),
                if a.dry_run { "would delete" } else { "deleted" },
                rep.deleted.objects,
                human_bytes(rep.deleted.bytes),
                rep.failed_count,
                if rep.server_side {
                    " (server-side)"
                } else {
                    ""
                },
            );
        }
    }
    if let Some(why) = &rep.delete_skipped {
        eprintln!("error: {why}");
    }
    if rep.failed_count > 0 {
        eprintln!(
            "error: {} object(s) failed (named above); run the same command again to copy what is left",
            rep.failed_count
        );
    }
    Ok(if rep.ok {
        Outcome::Ok
    } else {
        Outcome::Failed(ErrorKind::Operational)
    })
}
