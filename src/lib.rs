//! coffer: encrypted, compressed, checksummed backups of a web application's
//! databases, media and configuration, stored on a filesystem, S3, GCS or
//! Azure through `object_store`.
//!
//! The library holds the domain; `main.rs` parses flags, calls one operation
//! and prints its result. Every module has its own error type; [`Error`]
//! gathers them and [`Error::exit_code`] is the one place where a failure
//! becomes the exit code of the contract (1 operational, 2 usage, 3 integrity).

#![forbid(unsafe_code)]

pub mod abandoned;
pub mod archive;
pub mod check;
pub mod childenv;
pub mod config;
pub mod crypto;
pub mod dirfd;
pub mod hooks;
pub mod manifest;
pub mod metrics;
pub mod ping;
pub mod progress;
pub mod prune;
pub mod read;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod secret_files;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod transfer;
pub mod verify;

use crate::prune::PruneError;
use crate::repo::RepoError;
use crate::restore::RestoreError;
use crate::snapshot::SnapshotError;
use crate::store::StoreError;
use crate::transfer::TransferError;

/// Exit codes of the contract.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const INTEGRITY: i32 = 3;
    pub const PARTIAL: i32 = 4;
}

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
    Transfer(#[from] TransferError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failure(String),
    #[error("{0}")]
    Integrity(String),
}

fn store_code(e: &StoreError) -> i32 {
    if e.is_usage() {
        exit::USAGE
    } else if e.is_integrity() {
        exit::INTEGRITY
    } else {
        exit::FAILURE
    }
}

fn repo_code(e: &RepoError) -> i32 {
    match e {
        RepoError::Store(s) => store_code(s),
        RepoError::WrongKey { .. }
        | RepoError::MissingManifest(_)
        | RepoError::NoKeySlots(_)
        | RepoError::DamagedManifest { .. }
        | RepoError::DamagedConfig { .. } => exit::INTEGRITY,
        // `latest` on an empty repository names a snapshot that does not
        // exist, like an unknown id: both are usage errors (issue 9).
        RepoError::UnknownSnapshot(_)
        | RepoError::NoSnapshots(_)
        | RepoError::AmbiguousSnapshot { .. }
        | RepoError::NoCredential
        | RepoError::UnknownSlot(_)
        | RepoError::SlotInUse(..)
        | RepoError::AlreadyInitialised(_)
        | RepoError::NotARepository(_) => exit::USAGE,
        // Written by a newer coffer: nothing is damaged, upgrade to read it.
        RepoError::UnsupportedVersion { .. }
        | RepoError::NewerManifest { .. }
        | RepoError::Credential(_)
        | RepoError::SnapshotExists(_)
        | RepoError::ManifestTooLarge { .. } => exit::FAILURE,
    }
}

fn restore_code(e: &RestoreError) -> i32 {
    match e {
        RestoreError::Integrity { .. } | RestoreError::Contained { .. } => exit::INTEGRITY,
        RestoreError::UnknownSource { .. }
        | RestoreError::NeedsForce { .. }
        | RestoreError::BadInclude(..)
        | RestoreError::NoSuchFile { .. }
        | RestoreError::Usage(_) => exit::USAGE,
        RestoreError::Store(s) => store_code(s),
        RestoreError::SourceFailed { .. }
        | RestoreError::Io { .. }
        | RestoreError::UnsafeParent { .. }
        | RestoreError::Changed { .. }
        | RestoreError::NoSpace { .. }
        | RestoreError::NoSpaceForFiles { .. }
        | RestoreError::OutputClosed => exit::FAILURE,
        // The cause decides: a part-way stop over damaged data is still 3.
        RestoreError::PartlyRestored { error, .. } => restore_code(error),
        RestoreError::Source { error, .. } => match error {
            crate::source::SourceError::Usage(_) => exit::USAGE,
            crate::source::SourceError::Check(_) => exit::INTEGRITY,
            _ => exit::FAILURE,
        },
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) => exit::USAGE,
            Error::Store(s) => store_code(s),
            Error::Repo(r) => repo_code(r),
            Error::Snapshot(s) => match s {
                SnapshotError::Repo(r) => repo_code(r),
                SnapshotError::AllFailed(_) => exit::FAILURE,
                SnapshotError::UnknownSource(..)
                | SnapshotError::NoSources
                | SnapshotError::BadLabel(_) => exit::USAGE,
            },
            Error::Restore(r) => restore_code(r),
            Error::Prune(p) => match p {
                PruneError::Retention(_) => exit::USAGE,
                PruneError::Damaged { .. } => exit::INTEGRITY,
                PruneError::Newer { .. } => exit::FAILURE,
                PruneError::Repo(r) => repo_code(r),
                PruneError::Delete { source, .. } => store_code(source),
                PruneError::TempFiles { .. } => exit::FAILURE,
            },
            Error::Transfer(t) => match t {
                TransferError::Store(s) => store_code(s),
                t if t.is_usage() => exit::USAGE,
                _ => exit::FAILURE,
            },
            Error::Failure(_) | Error::Hook(_) => exit::FAILURE,
            Error::Integrity(_) => exit::INTEGRITY,
        }
    }
}
