#!/usr/bin/env bash
# The reference document's story, end to end, on a running cluster:
# qemu-img create/resize/info, a golden image imported with qemu-img convert
# from a qcow2, snapshot + protect, several clones in well under a second,
# each clone shown with qemu-img info, rbd info and rbd du.
# Usage: scripts/story.sh [CLUSTER_DIR]   (default ./.quarry, from `quarry up`)
# setup.sh runs it after `quarry up`; it is safe to run again (it first
# removes what a previous run left). Exits non-zero on the first failure.
set -euo pipefail
D=$(cd "${1:-${QUARRY_DIR:-.quarry}}" && pwd)
[ -f "$D/env" ] || { echo "story: $D/env not found: run 'quarry up --dir $D' first" >&2; exit 1; }
# shellcheck source=/dev/null
. "$D/env"
CLONES=${STORY_CLONES:-5}
W=$(mktemp -d /tmp/quarry-story.XXXXXX)
trap 'rm -rf "$W"' EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
now() { date +%s%N; }

# A previous run's images (clones first: the golden snapshot is protected).
for i in $(seq 1 "$CLONES"); do rbd rm --no-progress "data/vm$i" >/dev/null 2>&1 || true; done
if rbd info data/squeeze >/dev/null 2>&1; then
  rbd snap unprotect data/squeeze@golden >/dev/null 2>&1 || true
  rbd snap purge --no-progress data/squeeze >/dev/null 2>&1 || true
  rbd rm --no-progress data/squeeze >/dev/null
fi
rbd rm --no-progress data/foo >/dev/null 2>&1 || true

echo "== The reference document's first commands"
step qemu-img create -f raw rbd:data/foo 10G
step qemu-img resize rbd:data/foo 10G
step qemu-img info rbd:data/foo

echo
echo "== A golden image: a qcow2 with known content, converted into the cluster"
cd "$W"
qemu-img create -q -f qcow2 debian_squeeze.qcow2 1G
qemu-io -f qcow2 -c "write -P 0x5a 0 4M" -c "write -P 0xa5 300M 1M" -c "write -P 0x11 1023M 64k" \
  debian_squeeze.qcow2 >/dev/null
step qemu-img convert -f qcow2 -O raw debian_squeeze.qcow2 rbd:data/squeeze
step qemu-img compare -f qcow2 -F raw debian_squeeze.qcow2 rbd:data/squeeze
step rbd snap create data/squeeze@golden
step rbd snap protect data/squeeze@golden

echo
echo "== $CLONES clones of data/squeeze@golden (copy-on-write: no data copied)"
t0=$(now)
for i in $(seq 1 "$CLONES"); do rbd clone data/squeeze@golden "data/vm$i"; done
t1=$(now)
ms=$(((t1 - t0) / 1000000))
echo "$CLONES clones made in ${ms} ms (each an 'rbd' process: connect, authenticate, clone)"

for i in $(seq 1 "$CLONES"); do
  echo
  echo "== data/vm$i"
  step qemu-img info "rbd:data/vm$i"
  step rbd info "data/vm$i"
  step rbd du "data/vm$i"
  # Each clone reads the golden content through its parent.
  qemu-io -f raw -c "read -P 0xa5 300M 1M" "rbd:data/vm$i" | grep '^read ' >/dev/null ||
    { echo "story: data/vm$i does not show the golden content" >&2; exit 1; }
done

echo
step rbd children data/squeeze@golden
step rbd du -p data
echo
echo "story: done. Boot one: qemu-system-x86_64 -m 1024 -drive format=raw,file=rbd:data/vm1,cache=writeback"
echo "       (a bootable guest and a fleet: tests/vm/vm-demo.sh)"
