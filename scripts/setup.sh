#!/usr/bin/env bash
# Install what Quarry's build and tests need on a fresh Debian 12 machine,
# then build the release binaries. Idempotent; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages: the real consumers the end-to-end tests drive.
# (qemu-block-extra carries QEMU's rbd module; fio has the rbd engine built in.)
PKGS="build-essential pkg-config"
missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust stable (https://rustup.rs) first" >&2
  exit 1
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true

cargo build --release --workspace
