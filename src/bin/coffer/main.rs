//! The `coffer` command: parses flags, resolves settings (CLI > environment >
//! config file > default), calls one library operation, prints its result,
//! and turns its error into the contract's exit code.

mod bar;
mod cli;
mod cmd;
mod monitor;
mod output;
mod settings;

use std::io::IsTerminal;
use std::process::ExitCode;

use cli::{Cli, Command, Global, KeyCommand};
use coffer::metrics::RunRecord;
use coffer::{Error, ErrorKind, Outcome};
use monitor::Monitor;
use output::print_doc;

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
    // Each thread that allocates buffers gets its own glibc malloc arena,
    // which keeps what was freed in it: with tokio's default of up to 512
    // blocking threads, format 2's many short chunk tasks (ranged reads,
    // opening blobs) made a restore's peak RSS 4x its working set. copy's
    // blocking tasks are short and never wait on each other: two threads.
    // Other commands hold at most one blocking task that waits on others
    // (a source's walk, whose chunk reads are blocking tasks too), so four
    // leave three for those (docs/BENCH.md).
    rt.max_blocking_threads(if op == "copy" { 2 } else { 4 });
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
            crate::bar::finish();
            let outcome = Outcome::Failed(e.kind());
            if json {
                print_doc(&coffer::report::ErrorDoc::new(&e, outcome));
            }
            eprintln!("error: {e}");
            outcome
        }
    };
    rec.outcome = outcome;
    if coffer::store::run_opened() {
        rec.store_retries = Some(coffer::store::run_retries());
        rec.store_requests = Some(coffer::store::run_requests());
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

async fn run(cli: Cli, rec: &mut RunRecord) -> Result<Outcome, Error> {
    let g = &cli.global;
    let bar = match &cli.command {
        Command::Snapshot(_) => Some("snapshot"),
        Command::Restore(_) => Some("restore"),
        Command::Verify(_) => Some("verify"),
        Command::Drill(_) => Some("drill"),
        _ => None,
    };
    if let Some(what) = bar
        && std::io::stderr().is_terminal()
        && !g.no_progress
        && !g.quiet
        && !g.json
    {
        bar::enable(what);
    }
    match cli.command {
        Command::Completions { shell } => cmd::generated::completions(shell),
        Command::Man => cmd::generated::man(),
        Command::Key(KeyCommand::Generate { path }) => cmd::key::generate(g, &path),
        Command::Key(c) => cmd::key::run(g, c).await,
        Command::Init(a) => cmd::init::run(g, &a).await,
        Command::Snapshot(a) => cmd::snapshot::run(g, a, rec).await,
        Command::Snapshots(a) => cmd::snapshots::run(g, a).await,
        Command::Show(a) => cmd::show::run(g, a).await,
        Command::Restore(a) => cmd::restore::run(g, a, rec).await,
        Command::Dump(a) => cmd::dump::run(g, a).await,
        Command::Drill(a) => cmd::drill::run(g, a).await,
        Command::Verify(a) => cmd::verify::run(g, a).await,
        Command::Prune(a) => cmd::prune::run(g, a).await,
        Command::Check(a) => cmd::check::run(g, a).await,
        Command::Copy(a) => cmd::copy::run(g, a).await,
        Command::Repair(c) => cmd::repair::run(g, c).await,
    }
}
