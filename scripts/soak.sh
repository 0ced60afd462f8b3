#!/usr/bin/env bash
# The long soak (issue 11): snapshots and restores through a fault proxy in
# front of the S3 test server, with random resets, lost answers, stalls and
# 503s, for COFFER_SOAK_SECS seconds (default: one hour). It ends with
# `verify --all --deep` and a prune that must leave nothing behind; every
# exit code on the way must be true to what happened (tests/it/soak.rs).
#
#   bash scripts/soak.sh                  # an hour
#   COFFER_SOAK_SECS=28800 bash scripts/soak.sh   # a night
#   COFFER_SOAK_SEED=1234 bash scripts/soak.sh    # repeat a run's faults
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export COFFER_SOAK_SECS="${COFFER_SOAK_SECS:-3600}"
trap 'bash scripts/test-servers.sh stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# shellcheck source=scripts/test-servers.sh
source scripts/test-servers.sh
/usr/bin/time -v cargo test --test it soak:: -- --nocapture 2>&1
