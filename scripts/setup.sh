#!/usr/bin/env bash
# Install what Quarry's build and tests need on a fresh Debian 12 machine,
# build the release binaries, and start a one-host cluster (1 monitor,
# 3 OSDs on 127.0.0.1) in $QUARRY_DIR (default ./.quarry). Idempotent:
# rerunning restarts the same cluster with its data.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages: the real consumers the end-to-end tests drive. Debian 12's
# QEMU 7.2 set is pinned as one version (its rbd module, qemu-block-extra, is
# not in the backport some images carry); fio has the rbd engine built in;
# librbd-dev/librados-dev give Ceph's real headers for the ABI layout test;
# busybox-static (fstrim included), cpio and e2fsprogs build the test guest;
# python3-rbd/python3-rados are the bindings OpenStack's drivers use.
# cryptsetup-bin (with libcryptsetup12, which Quarry's librbd loads for LUKS
# image encryption, as Ceph's does) checks and makes LUKS headers in tests;
# python3-cryptography decrypts a LUKS2 sector independently.
need_pkgs() {
  for p in build-essential pkg-config fio librbd-dev librados-dev qemu-block-extra qemu-system-x86 qemu-utils \
           busybox-static cpio e2fsprogs openssl gzip binutils python3-rbd python3-rados cryptsetup-bin python3-cryptography; do
    dpkg -s "$p" >/dev/null 2>&1 || return 0
  done
  case "$(qemu-img --version 2>/dev/null | head -1)" in
    *"version 7.2"*) return 1 ;;
    *) return 0 ;;
  esac
}
if need_pkgs; then
  $SUDO apt-get update -qq
  QV=$(apt-cache policy qemu-block-extra | awk '/Candidate/{print $2}')
  QD=$(apt-cache policy qemu-system-data | awk '/Candidate/{print $2}')
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --allow-downgrades --no-install-recommends \
    build-essential pkg-config fio librbd-dev librados-dev busybox-static cpio e2fsprogs openssl gzip binutils \
    python3-rbd python3-rados cryptsetup-bin python3-cryptography \
    "qemu-utils=$QV" "qemu-block-extra=$QV" "qemu-system-x86=$QV" "qemu-system-common=$QV" "qemu-system-data=$QD"
  $SUDO apt-mark hold qemu-utils qemu-block-extra qemu-system-x86 qemu-system-common qemu-system-data >/dev/null
fi

# libvirt for the libvirt domain test (crates/vmtest/tests/libvirt_domain.rs),
# which starts its own libvirtd and virtlogd as root with a private socket.
# Only the daemon binaries, the QEMU driver and virsh: not
# libvirt-daemon-system, whose units would start a system libvirtd sharing
# /run/libvirt/qemu with the test's, nor the recommended default network.
# The QEMU driver runs guests as user and group libvirt-qemu (Debian's
# build defaults), which libvirt-daemon-system's postinst would create:
# create them here (libvirtd refuses to start without the group).
# None of these packages depends on QEMU, so the 7.2 pin and hold above stay.
if ! { [ -x /usr/sbin/libvirtd ] && [ -x /usr/sbin/virtlogd ] && command -v virsh >/dev/null 2>&1 \
       && [ -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ]; }; then
  t0=$(date +%s)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  echo "setup: libvirt packages installed in $(( $(date +%s) - t0 )) s"
fi
getent group kvm >/dev/null || $SUDO groupadd --system kvm
getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
if ! getent passwd libvirt-qemu >/dev/null; then
  $SUDO useradd --system --gid libvirt-qemu --groups kvm --home-dir /var/lib/libvirt --no-create-home \
    --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust stable (https://rustup.rs) first" >&2
  exit 1
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true

cargo build --release --workspace

QUARRY_DIR=${QUARRY_DIR:-$PWD/.quarry}
if [ "${QUARRY_SETUP_NO_UP:-0}" != 1 ]; then
  target/release/quarry up --dir "$QUARRY_DIR"
  # The reference document's story on that cluster: qemu-img create/info,
  # a golden image converted from qcow2, snapshot, protect, clones.
  bash scripts/story.sh "$QUARRY_DIR"
  echo
  echo "Cluster ready. Use it with:  . $QUARRY_DIR/env"
  echo "  e.g. qemu-img create -f raw rbd:data/foo 10G && qemu-img info rbd:data/foo"
  echo "Stop it with:                target/release/quarry down --dir $QUARRY_DIR"
fi
