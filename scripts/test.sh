#!/usr/bin/env bash
# coffer's test command: lint, start the test servers, run the tests.
# CI runs it as-is (CI=true, no stdin, fresh clone); so can you: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== test servers (moto S3, fake-gcs-server + XML adapter, PostgreSQL, MariaDB, Redis)"
trap 'bash scripts/test-servers.sh stop' EXIT
trap 'exit 130' INT   # make Ctrl-C and kill run the EXIT trap too
trap 'exit 143' TERM
# shellcheck source=scripts/test-servers.sh
source scripts/test-servers.sh # exports COFFER_TEST_* (see that file)

echo "== cargo test"
status=0
# ---- THE TEST COMMAND: adjust flags here ----
cargo test --all-targets --no-fail-fast 2>&1 || status=$?
# ---- end of the test command ----
exit "$status"
