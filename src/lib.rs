//! coffer: encrypted, compressed, checksummed backups of a web application's
//! databases, media and configuration, stored on a filesystem, S3, GCS or
//! Azure through `object_store`.
//!
//! The library holds the domain; the binary (`src/bin/coffer/`) parses
//! flags, calls one operation and prints its result. Every module has its
//! own error type, and each error knows its [`ErrorKind`] (usage,
//! operational, integrity); [`Error`] gathers them. An operation ends in an [`Outcome`], and
//! [`Outcome::exit_code`] is the one place where it becomes the exit code
//! of the contract.

#![forbid(unsafe_code)]

pub mod abandoned;
pub mod archive;
pub mod check;
pub mod childenv;
pub mod chunks;
pub mod config;
pub mod copy;
pub mod credential;
pub mod crypto;
pub mod dirfd;
pub mod gc;
pub mod hooks;
pub mod manifest;
pub mod metrics;
pub mod outcome;
pub mod ping;
pub mod progress;
pub mod prune;
pub mod read;
pub mod repair;
pub mod repo;
pub mod report;
pub mod restore;
pub mod retention;
pub mod secret_files;
pub mod snapshot;
pub mod source;
pub mod store;

pub mod verify;

use crate::copy::CopyError;
pub use crate::outcome::{ErrorKind, Outcome};
use crate::prune::PruneError;
use crate::repo::RepoError;
use crate::restore::RestoreError;
use crate::snapshot::SnapshotError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Prune(#[from] PruneError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Repair(#[from] repair::RepairError),
    #[error(transparent)]
    Credential(#[from] credential::CredentialError),
    #[error(transparent)]
    Retention(#[from] retention::RetentionError),
    /// The binary's own output failing (`coffer man`, `coffer
    /// completions`): it has no error type of its own, so its one
    /// operational failure lives here, typed.
    #[error("cannot {doing}: {source}")]
    Output {
        doing: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// What kind of failure this is; [`Outcome::exit_code`] turns it into
    /// the exit code of the contract.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(c) => c.kind(),
            Error::Store(s) => s.kind(),
            Error::Repo(r) => r.kind(),
            Error::Snapshot(s) => s.kind(),
            Error::Restore(r) => r.kind(),
            Error::Prune(p) => p.kind(),
            Error::Copy(t) => t.kind(),
            Error::Repair(r) => r.kind(),
            Error::Hook(h) => h.kind(),
            Error::Credential(c) => c.kind(),
            Error::Retention(_) => ErrorKind::Usage,
            Error::Output { .. } => ErrorKind::Operational,
        }
    }
}
