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
//! All modules' tests run interleaved in one process (as many at once as
//! before within one binary: `RUST_TEST_THREADS`, by default one per core).
//! A test must not depend on being alone, nor on its module being alone:
//!
//! - Names of databases, Redis keys, object prefixes and directories are
//!   unique per test (`common::unique`, or the pid plus a random id); the
//!   pid is now shared by every module, so it is never a name on its own.
//! - No test changes the test process's environment, umask or current
//!   directory; each `coffer` child gets its own (`Env::cmd`, `.env(..)`).
//! - Restores into the shared Redis are dry runs; real ones use a private
//!   redis-server. Nothing flushes a shared server.
//! - Left-over scratch databases (`<db>_coffer_…`, `coffer_drill_…`) are
//!   found by name prefix: a restore or `check` sees only its own
//!   database's; a drill may drop another test's planted *abandoned* drill
//!   database, which that test only asserts gone.
//! - The library's process-wide records (`coffer::store::run_retries`,
//!   `coffer::abandoned::take_removed`) are read only by the `coffer`
//!   binary, never through the library in this process.
//! - tmpfs mounts (restore_mount, hostile_restore) are made inside the
//!   test's own temporary directory.
//!
//! A new test that needs the machine to itself (a global count, a fixed
//! name, a process-wide setting) must say so and hold a lock shared through
//! `common`.
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
mod format2;
mod gc;
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
