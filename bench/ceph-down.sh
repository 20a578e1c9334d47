#!/usr/bin/env bash
# Stop the daemons started by bench/ceph-up.sh DIR (SIGTERM, then SIGKILL after 10 s).
D=${1:?usage: ceph-down.sh DIR}
pids=()
for f in "$D"/run/*.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f" 2>/dev/null) || continue
  # Only signal a process that is still the Ceph daemon this file names.
  if [ -n "$p" ] && grep -q '^ceph-' "/proc/$p/comm" 2>/dev/null; then pids+=("$p"); fi
done
[ ${#pids[@]} -eq 0 ] && exit 0
kill "${pids[@]}" 2>/dev/null
for _ in $(seq 100); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && exit 0
  sleep 0.1
done
kill -9 "${pids[@]}" 2>/dev/null
exit 0
