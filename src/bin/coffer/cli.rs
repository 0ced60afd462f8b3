//! The command line: flags, subcommands and their help text (also the source
//! of `coffer completions` and `coffer man`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "coffer",
    version,
    about = "Encrypted, checksummed backups of a web application's databases, media and config",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Config file [default: ./coffer.toml, else /etc/coffer/coffer.toml]
    #[arg(long, env = "COFFER_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Repository URL (path, file://, s3://, gs://, az://); overrides [repository].url
    #[arg(long, env = "COFFER_REPO", global = true, value_name = "URL")]
    pub repo: Option<String>,
    /// Key file; overrides [repository].key_file
    #[arg(long, env = "COFFER_KEY_FILE", global = true, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Print one JSON document on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging: errors only
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Never draw progress bars
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Write Prometheus textfile-collector metrics of this run to PATH, atomically
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
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
    pub ping: Option<String>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Repository format: 1 (one archive per source and snapshot) or 2
    /// (content-defined chunks, deduplicated; its format is not frozen yet)
    #[arg(long, value_name = "N", default_value_t = coffer::repo::DEFAULT_FORMAT)]
    pub format: u32,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage keys: generate a key file, add, list or remove a repository's keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create a repository at the configured URL for the configured key
    Init(InitArgs),
    /// Take every configured source (or those named) into one snapshot
    Snapshot(SnapshotArgs),
    /// List complete snapshots, oldest first
    Snapshots(SnapshotsArgs),
    /// Show one snapshot's manifest
    Show(ShowArgs),
    /// Restore sources of a snapshot
    Restore(RestoreArgs),
    /// Write a source (or one file of it) to stdout in a form standard tools read
    Dump(DumpArgs),
    /// Restore rehearsal: restore each database source into a scratch copy, check it, drop it
    Drill(DrillArgs),
    /// Check that a snapshot's objects are intact
    Verify(VerifyArgs),
    /// Forget the snapshots no retention rule keeps and delete their objects
    Prune(PruneArgs),
    /// Pre-flight: config, repository, key and sources ready (one line per check)
    Check(CheckArgs),
    /// Print shell completions to stdout (e.g. `coffer completions bash > /etc/bash_completion.d/coffer`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (e.g. `coffer man | man -l -`)
    Man,
    /// Copy objects between two stores (path, file://, s3://, gs://, az://): what is missing or different at DST
    Copy(CopyArgs),
    /// Repair a repository (format 2): `repair index` rebuilds lost or damaged index objects from the packs
    #[command(subcommand)]
    Repair(RepairCommand),
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Index every pack that no readable index object lists (reading its own table), then delete the damaged index objects
    Index {
        /// Report what would be rebuilt, write and delete nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
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

// The argument structs carry no doc comment of their own: the variant's is
// the subcommand's help.

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Only this source (repeatable)
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Add a label KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Read and report, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Read every file, even those unchanged since the previous snapshot
    /// (format 2; format 1 always reads every file)
    #[arg(long)]
    pub reread: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots with this tag
    #[arg(long)]
    pub tag: Option<String>,
    /// Only snapshots holding this source
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Only the newest
    #[arg(long)]
    pub latest: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Snapshot id, unique prefix, or `latest`
    pub snapshot: String,
    /// Also list every file
    #[arg(long)]
    pub files: bool,
    /// With `latest`: newest with this tag
    #[arg(long)]
    pub tag: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`
    pub snapshot: String,
    /// Only this source (repeatable)
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Restore under DIR/<source name>/ instead of the original paths
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Restore only paths matching GLOB (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Restore a database source into another database
    #[arg(long, value_name = "URL")]
    pub to_database: Option<String>,
    /// Replace existing data
    #[arg(long)]
    pub force: bool,
    /// List what would be written and where
    #[arg(long)]
    pub dry_run: bool,
    /// With `latest`: newest with this tag
    #[arg(long)]
    pub tag: Option<String>,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    pub snapshot: String,
    pub source: String,
    pub path: Option<String>,
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// Snapshot id, unique prefix, or `latest` [default: latest]
    pub snapshot: Option<String>,
    /// Only this source (repeatable)
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Where to create scratch databases instead of each source's server
    #[arg(long, value_name = "URL")]
    pub scratch_url: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Snapshot id, unique prefix, or `latest` [default: latest]
    pub snapshot: Option<String>,
    /// Check every snapshot
    #[arg(long, conflicts_with = "snapshot")]
    pub all: bool,
    /// Also decrypt, decompress and re-hash every file
    #[arg(long)]
    pub deep: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also check that the newest snapshot is younger than DURATION (e.g. 1h, 26h)
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
}

// `coffer prune` flags; each given flag replaces that rule of `[retention]`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within DURATION before the newest one (e.g. 30d)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Left-overs of interrupted snapshots younger than this stay; format 2:
    /// packs marked unused are deleted no sooner than this after the mark
    /// [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Report what would be removed, delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Where to copy from: a path, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix
    pub src: String,
    /// Where to copy to (same forms)
    pub dst: String,
    /// Delete objects at DST that are absent from SRC (only when every copy succeeded)
    #[arg(long)]
    pub delete: bool,
    /// With --delete: refuse to delete more than N objects (exit 1, nothing deleted)
    #[arg(long, value_name = "N", requires = "delete")]
    pub max_delete: Option<u64>,
    /// Print what would be copied and deleted; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Compare both sides without copying; list the differences, exit 1 on any
    #[arg(long, conflicts_with_all = ["dry_run", "delete"])]
    pub check: bool,
    /// Compare equal-size objects by SHA-256 (coffer's stored metadata, else read and hashed), never by size and mtime; --check always does
    #[arg(long)]
    pub checksum: bool,
    /// Objects in flight at once
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
    /// Only keys matching GLOB (relative to the prefix; without `/` it matches the last segment; repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip keys matching GLOB (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// A SRC store option KEY=VALUE (object_store configuration keys; repeatable); KEY=@FILE or KEY=env:VAR keep a secret off the command line
    #[arg(long, value_name = "KEY=VALUE")]
    pub src_opt: Vec<String>,
    /// A DST store option KEY=VALUE, KEY=@FILE or KEY=env:VAR (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub dst_opt: Vec<String>,
}
