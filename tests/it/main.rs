//! coffer's integration tests, built as ONE test binary (`it`) with a module
//! per behaviour, as ripgrep's `tests/tests.rs` does. One binary links once
//! after a change to the library; 26 binaries of ~240 MB each relinked one by
//! one (issue 12, item 7).
//!
//! - Run all of them: `cargo test --test it` (or `bash scripts/test.sh`,
//!   which starts the test servers and runs every target).
//! - Run one module: `cargo test --test it mysql::` (the module name, then
//!   `::`); one test: `cargo test --test it mysql::some_test -- --exact`.
//! - Cloud and database tests need the servers of `scripts/test-servers.sh`
//!   (`source /tmp/coffer-test-servers/env.sh`); they fail, never skip,
//!   without them.
//!
//! All modules' tests run interleaved in one process. A test must not depend
//! on being alone: names of databases, keys, buckets and directories are
//! unique per test (`common::unique`), and tests that touch process-wide or
//! machine-wide state serialise through the locks in `common`.
//!
//! `common` holds the shared helpers (repositories on every backend, a
//! `coffer` command with a clean environment, tree builders, the fault
//! proxy). Python helpers stay in `tests/support/`.

mod common;

mod check;
mod cli;
mod command_source;
mod config_errors;
mod conformance;
mod containment;
mod copy;
mod crash;
mod damage;
mod faults;
mod format;
mod hostile_restore;
mod keys;
mod mysql;
mod ops;
mod partial;
mod postgres;
mod prune;
mod redis;
mod restore_destination;
mod restore_mount;
mod roundtrip;
mod runbooks;
mod soak;
mod sqlite;
mod systemd;
