#!/usr/bin/env bash
# See a fleet of VMs boot from one golden image on Quarry:
#   golden disk -> qemu-img convert -> rbd:data/golden -> snapshot + protect -> N clones ->
#   N QEMUs (TCG) booting from rbd:data/vmI, each checking the golden content and writing its own.
# Usage: tests/vm/vm-demo.sh [N]     (default 4; needs `cargo build --release` first)
# Env: QUARRY (path of the quarry binary; default target/release/quarry), PARALLEL (VMs at once,
#      default: number of CPUs), VMTEST_ACCEL (default tcg), KEEP=1 (leave the cluster running).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=${1:-4}
QUARRY=${QUARRY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/quarry}
PARALLEL=${PARALLEL:-$(nproc)}
ACCEL=${VMTEST_ACCEL:-tcg}
[ -x "$QUARRY" ] || { echo "vm-demo: $QUARRY not found: run 'cargo build --release' (or set QUARRY=)" >&2; exit 1; }

W=$(mktemp -d /tmp/quarry-vm-demo.XXXXXX)
G=$W/guest
D=$W/cluster
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo "vm-demo: cluster left running in $D (quarry down --dir $D)"
  else
    "$QUARRY" down --dir "$D" >/dev/null 2>&1 || true
    rm -rf "$W"
  fi
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f s", b - a }'; }

echo "== building the guest (Debian cloud kernel + busybox initramfs + golden ext4 disk)"
"$HERE/build-guest.sh" "$G"
echo "== starting a cluster: quarry up --dir $D"
"$QUARRY" up --dir "$D"
# shellcheck source=/dev/null
. "$D/env"

t=$(now)
qemu-img convert -f raw -O raw "$G/golden.img" rbd:data/golden
echo "== golden image imported: qemu-img convert -f raw -O raw golden.img rbd:data/golden ($(since "$t"))"
rbd snap create data/golden@base
rbd snap protect data/golden@base
t=$(now)
for i in $(seq 1 "$N"); do rbd clone data/golden@base "data/vm$i"; done
echo "== $N clones of data/golden@base provisioned in $(since "$t")"

boot() {
  local i=$1 log="$W/vm$1.log"
  timeout 300 qemu-system-x86_64 -machine "pc,accel=$ACCEL" -m 256 -nographic -net none -no-reboot \
    -kernel "$G/vmlinuz" -initrd "$G/initramfs.gz" \
    -append "console=ttyS0 quiet panic=-1 vmtest=fleet vmtest_dev=vda vmtest_id=$i" \
    -drive "format=raw,file=rbd:data/vm$i,if=virtio" </dev/null >"$log" 2>&1 || true
  echo "vm$i: $(grep -a 'VMTEST: RESULT' "$log" || echo 'no verdict (see log)')"
}
echo "== booting $N VMs, $PARALLEL at a time: qemu-system-x86_64 -m 256 -drive format=raw,file=rbd:data/vmI,if=virtio"
t=$(now)
pids=()
for i in $(seq 1 "$N"); do
  boot "$i" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$PARALLEL" ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
wait
echo "== all VMs done in $(since "$t")"
fails=0
for i in $(seq 1 "$N"); do
  if grep -aq 'VMTEST: RESULT PASS' "$W/vm$i.log" &&
    qemu-io -f raw -c "read -P $((i % 250 + 1)) $(((128 + i) << 20)) 1M" "rbd:data/vm$i" | grep '^read ' >/dev/null; then
    :
  else
    echo "vm$i: FAILED; console:" && tail -20 "$W/vm$i.log"
    fails=$((fails + 1))
  fi
done
if qemu-img compare "$G/golden.img" rbd:data/golden@base >/dev/null; then
  echo "== golden@base unchanged"
else
  echo "== golden@base CHANGED" && fails=$((fails + 1))
fi
rbd du -p data
ceph df
[ "$fails" = 0 ] && echo "== vm-demo: $N VMs booted from clones of one golden image: PASS"
[ "$fails" = 0 ]
