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
