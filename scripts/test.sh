#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Formatting and lints are part of the tests: a change that breaks them fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
# End-to-end tests drive the release `quarry` binary and libquarry_capi.so:
# build every artifact first so no test finds a stale or missing one.
cargo build --workspace --release
cargo test --workspace --release
timeout 900 bench/run.sh --quick  # benchmark smoke run (bench/README.md): fails if a system cannot start or fio errs, never on timing
# Changes what every process on the machine loads (root only), so it runs
# alone, after everything else.
if [ "$(id -u)" -eq 0 ]; then
  timeout 900 cargo test --release -p quarry-cli --test install -- --ignored
else
  echo "test.sh: not root: skipped the system-wide install test (quarry install)"
fi
