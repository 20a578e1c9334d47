#!/usr/bin/env bash
# Side-by-side benchmark: Debian's fio (rbd engine) against a real one-host Ceph
# (Debian's librbd) and against a Quarry cluster (Quarry's librbd via
# LD_LIBRARY_PATH), with identical job files, plus the machine's own limit
# (libaio direct=1 on a file on the same disk, durable variants, loopback TCP).
# See bench/README.md.
#
# usage: bench/run.sh [--quick] [--quarry-only] [--out DIR] [--work DIR]
#   --quick        short runs on a small image (CI); Ceph only if already installed
#   --quarry-only  never install or start Ceph
#   --out DIR      results (default: bench/results; --quick: $TMPDIR/quarry-bench-quick)
#   --work DIR     where the clusters' data lives (default: a new temp dir under
#                  /var/tmp, i.e. the same disk as the repo here); removed on exit
# Fails if a system cannot be brought up or fio reports an error; never on timing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
QUICK=0
QUARRY_ONLY=0
OUT=
WORK=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --quarry-only) QUARRY_ONLY=1 ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    --work) WORK=${2:?--work needs a directory}; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ $QUICK = 1 ]; then
  export BENCH_RUNTIME=3 BENCH_RAMP=1 BENCH_SIZE=256m
  PASSES=1 CLONES=100 CLI_CLONES=10 SETTLE=2
  OUT=${OUT:-${TMPDIR:-/tmp}/quarry-bench-quick}
else
  export BENCH_RUNTIME=${BENCH_RUNTIME:-20} BENCH_RAMP=${BENCH_RAMP:-2} BENCH_SIZE=${BENCH_SIZE:-4g}
  PASSES=${BENCH_PASSES:-2} CLONES=100 CLI_CLONES=100 SETTLE=10
  OUT=${OUT:-$HERE/results}
fi
export BENCH_PASSES_USED=$PASSES
RBD_JOBS="randwrite-4k-qd1 randread-4k-qd1 randwrite-4k-qd32 randread-4k-qd32 seqwrite-4m-qd4 seqread-4m-qd4 randrw-64k-qd16"
FILE_JOBS="$RBD_JOBS randwrite-4k-qd1-fdatasync randwrite-4k-qd1-fsync randwrite-4k-qd32-fdatasync seqwrite-4m-qd4-fdatasync"

log() { echo "bench: $*" >&2; }
die() { echo "bench: FAILED: $*" >&2; exit 1; }
now() { date +%s.%N; }
ms_since() { python3 -c "import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000, 3))" "$1" "$(now)"; }

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null || die "python3 not found"
command -v cc >/dev/null || die "a C compiler (cc) is needed for the librbd control-plane probe"
[ -f /usr/include/rbd/librbd.h ] || die "librbd headers missing (apt-get install librbd-dev)"
WANT_CEPH=1
CEPH_SKIP_REASON=
if [ $QUARRY_ONLY = 1 ]; then
  WANT_CEPH=0 CEPH_SKIP_REASON="--quarry-only"
fi
have_ceph() { command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v ceph >/dev/null; }
if ! command -v fio >/dev/null || { [ $WANT_CEPH = 1 ] && ! have_ceph; }; then
  if [ $QUICK = 1 ]; then
    command -v fio >/dev/null || die "fio not found (scripts/setup.sh installs it)"
    WANT_CEPH=0 CEPH_SKIP_REASON="--quick and Ceph is not installed"
  else
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ceph-mon ceph-osd ceph-common fio (or use --quarry-only)"
    log "installing Debian's ceph-mon ceph-osd ceph-common fio"
    pkgs="fio"
    [ $WANT_CEPH = 1 ] && pkgs="ceph-mon ceph-osd ceph-common fio"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >&2 \
      || die "apt-get install $pkgs failed"
  fi
fi
[ $WANT_CEPH = 1 ] || log "SKIPPED: Ceph ($CEPH_SKIP_REASON); Quarry and the machine's limit only"
# The full run's report includes the latency plot (issue 7): Debian's
# matplotlib, installed when missing and root (--quick never plots).
if [ $QUICK = 0 ] && ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian's python3-matplotlib (for latency.png)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-matplotlib >&2 \
      || log "apt-get install python3-matplotlib failed: the report will have no latency.png"
  else
    log "python3-matplotlib missing and not root: the report will have no latency.png"
  fi
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if command -v cargo >/dev/null && [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  # A no-op when up to date; never run against a stale daemon or library.
  (cd "$REPO" && cargo build --release -p quarry-cli -p quarry-capi >&2) || die "cargo build failed"
fi
QUARRY=$TARGET_DIR/release/quarry
[ -x "$QUARRY" ] || die "$QUARRY not found (cargo build --release)"
[ -f "$TARGET_DIR/release/libquarry_capi.so" ] || die "libquarry_capi.so not found next to $QUARRY"

# ---------------------------------------------------------------- work dir, cleanup
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d -p "${BENCH_TMP:-/var/tmp}" quarry-bench.XXXXXX)
else
  mkdir -p "$WORK"
fi
WORK=$(cd "$WORK" && pwd)
CEPHD=$WORK/ceph
QD=$WORK/quarry
SAMPLER=
CSAMPLER=
FIO_PID=
kill_tree() { # SIGNAL PID: the process and all its descendants (fio under timeout under subshells)
  local c
  for c in $(pgrep -P "$2"); do kill_tree "$1" "$c"; done
  kill "-$1" "$2" 2>/dev/null
}
cleanup() {
  local rc=$?
  set +e
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  [ -n "$CSAMPLER" ] && kill "$CSAMPLER" 2>/dev/null
  if [ -n "$FIO_PID" ]; then
    # fio waits for in-flight I/O on SIGTERM; give it 5 s, then SIGKILL
    # (before the clusters stop, so it cannot be left waiting on them).
    kill_tree TERM "$FIO_PID"
    for _ in $(seq 50); do kill -0 "$FIO_PID" 2>/dev/null || break; sleep 0.1; done
    kill_tree KILL "$FIO_PID"
  fi
  [ -f "$QD/ceph.conf" ] && "$QUARRY" down --dir "$QD" >/dev/null 2>&1
  [ -d "$CEPHD/run" ] && "$HERE/ceph-down.sh" "$CEPHD"
  if [ $rc != 0 ]; then
    # Keep the daemons' logs for diagnosis, not their data.
    mkdir -p "$OUT/failed-logs" 2>/dev/null
    cp -r "$QD/log" "$OUT/failed-logs/quarry" 2>/dev/null
    cp -r "$CEPHD/log" "$OUT/failed-logs/ceph" 2>/dev/null
    echo "bench: FAILED (exit $rc); daemon logs in $OUT/failed-logs" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
rm -rf "$OUT/raw" "$OUT/failed-logs"
mkdir -p "$OUT/raw" "$WORK/bin"
RAW=$OUT/raw

# Disk space: neither BlueStore on a file nor Quarry's store gives space back
# to the filesystem, and random rewrites grow both: a 4 GiB image measured
# ~25 GiB per system here. Refuse to start (and stop before filling a shared
# disk) rather than run every process on the machine out of space.
size_gib=$(python3 -c 'import sys; s=sys.argv[1].lower(); m={"k":1/2**20,"m":1/1024,"g":1,"t":1024}; print(max(1, int(float(s[:-1])*m[s[-1]] if s[-1] in m else float(s)/2**30)))' "$BENCH_SIZE")
n_sys=1
[ $WANT_CEPH = 1 ] && n_sys=2
# Each BlueStore file is bounded to twice the image plus 2 GiB: BlueStore
# reuses freed space inside its device, so a bounded file stops it from
# spreading over 16 GiB per OSD (47 GiB in all in one 20 s run here).
export CEPH_BLOCK_SIZE=${CEPH_BLOCK_SIZE:-$((size_gib * 2 + 2))G}
ceph_gib=0
[ $WANT_CEPH = 1 ] && ceph_gib=$((3 * ${CEPH_BLOCK_SIZE%G}))
need_gib=$((ceph_gib + size_gib * 6 + size_gib + 5))
free_gib() { df -P -B1G "$WORK" | awk 'NR==2{print $4}'; }
[ "$(free_gib)" -ge "$need_gib" ] \
  || die "need ~$need_gib GiB free in $WORK for a $BENCH_SIZE image ($(free_gib) GiB free): use --work elsewhere or a smaller BENCH_SIZE"
MIN_FREE_GIB=${BENCH_MIN_FREE_GIB:-3}

cc -O2 -Wall -o "$WORK/bin/cplane" "$HERE/src/cplane.c" -lrbd -lrados || die "building bench/src/cplane.c"
cc -O2 -Wall -o "$WORK/bin/pingpong" "$HERE/src/pingpong.c" || die "building bench/src/pingpong.c"

# ---------------------------------------------------------------- machine
python3 - "$RAW/machine.json" "$WORK" "$QUICK" "$REPO" <<'EOF'
import json, os, platform, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e: return f"? ({e})"
work = sys.argv[2]
dev = sh(f"df --output=source {work} | tail -1")
base = os.path.basename(dev)
m = {
  "nproc": os.cpu_count(),
  "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
  "mem_bytes": int(sh("free -b | awk '/Mem:/{print $2}'") or 0),
  "kernel": platform.release(),
  "disk": f"{dev} ({sh(f'df --output=fstype {work} | tail -1')}), rotational={sh(f'cat /sys/block/{base}/queue/rotational')}",
  "fio": sh("fio --version"),
  "ceph": sh("ceph --version 2>/dev/null | cut -d'(' -f1") or "not installed",
  "ceph_pkg": sh("dpkg-query -W -f='${Version}' ceph-osd 2>/dev/null") or "not installed",
  "quarry_commit": sh(f"git -C {sys.argv[4]} rev-parse --short HEAD") + (" (+ uncommitted changes)" if sh(f"git -C {sys.argv[4]} status --porcelain --untracked-files=no") else ""),
  "loadavg_start": open("/proc/loadavg").read().split()[:3],
  "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
  "quick": sys.argv[3] == "1",
  "runtime_s": os.environ.get("BENCH_RUNTIME"),
  "ramp_s": os.environ.get("BENCH_RAMP"),
  "size": os.environ.get("BENCH_SIZE"),
  "passes": os.environ.get("BENCH_PASSES_USED"),
}
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF

# ---------------------------------------------------------------- bring-up
pidfiles() { # SYSTEM -> the daemons' pid files
  case "$1" in
    ceph) ls "$CEPHD"/run/*.pid ;;
    quarry) ls "$QD"/run/*.pid ;;
  esac
}
SYSTEMS=quarry
if [ $WANT_CEPH = 1 ]; then
  SYSTEMS="ceph quarry"
  log "bringing up Ceph (1 mon, 3 BlueStore OSDs on files) in $CEPHD"
  t=$(now)
  "$HERE/ceph-up.sh" "$CEPHD" >&2 || die "Ceph bring-up failed"
  echo "{\"bringup_ms\": $(ms_since "$t")}" >"$RAW/ceph-bringup.json"
fi
log "bringing up Quarry (quarry up: 1 mon, 3 OSDs) in $QD"
t=$(now)
"$QUARRY" up --dir "$QD" >&2 || die "quarry up failed"
echo "{\"bringup_ms\": $(ms_since "$t")}" >"$RAW/quarry-bringup.json"

# Run a command in SYSTEM's client environment (which librbd, which conf).
in_env() {
  local sys=$1; shift
  # shellcheck disable=SC1091 # D/env is written by quarry up at run time
  case "$sys" in
    # Ceph: Debian's librbd; make sure no Quarry library path leaks in.
    ceph) env -u LD_LIBRARY_PATH CEPH_CONF="$CEPHD/ceph.conf" "$@" ;;
    quarry) (. "$QD/env" && "$@") ;;
  esac
}
# Which librbd a running process mapped: Quarry's must be libquarry_capi.so,
# Ceph's must be Debian's librbd.so.1 (anything else fails the run).
check_lib() { # SYSTEM PID TAGFILE
  local sys=$1 pid=$2 lib=
  for _ in $(seq 50); do
    lib=$(grep -m1 -E 'librbd|libquarry_capi' "/proc/$pid/maps" 2>/dev/null | awk '{print $6}') || true
    [ -n "$lib" ] && break
    sleep 0.1
  done
  [ -n "$lib" ] || { kill -0 "$pid" 2>/dev/null || return 0; die "$sys: fio (pid $pid) has no librbd mapped"; }
  case "$sys" in
    quarry) [[ $lib == *libquarry_capi* ]] || die "quarry: fio loaded $lib, not Quarry's library" ;;
    ceph) [[ $lib == */librbd.so.1* && $lib != *quarry* ]] || die "ceph: fio loaded $lib, not Debian's librbd" ;;
  esac
  echo "$lib" >"$RAW/$sys-librbd-path"
  echo "$lib" >"$3"
}
# The fio process started under background job PID (a few levels down:
# subshell, env, timeout): walk each fio's parent chain.
find_fio() { # PID [all]: the first such fio, or with "all" every one
  local p q found=1
  for p in $(pgrep -x fio); do
    q=$p
    while [ -n "$q" ] && [ "$q" -gt 1 ]; do
      if [ "$q" = "$1" ]; then
        echo "$p"
        [ "${2:-}" = all ] || return 0
        found=0
        break
      fi
      q=$(awk '/^PPid:/{print $2}' "/proc/$q/status" 2>/dev/null)
    done
  done
  return $found
}

sleep "$SETTLE"
for s in $SYSTEMS; do
  # shellcheck disable=SC2046
  python3 "$HERE/procstat.py" snap $(pidfiles "$s") >"$RAW/$s-rss-rest.json"
done

# ---------------------------------------------------------------- fio
for s in $SYSTEMS; do
  # direct=1: fio's rbd engine then sets rbd_cache=false, so every write is
  # acknowledged once durable on the cluster. Without it both librbds run
  # their default write-around cache (fio flushes right after rbd_open, which
  # ends rbd_cache_writethrough_until_flush) and acknowledge writes at once,
  # up to rbd_cache_max_dirty in flight: a "QD1" job then measured the
  # cluster at a queue depth of thousands (session 11).
  { echo "[global]"; echo "ioengine=rbd"; echo "clientname=admin"; echo "pool=data"; echo "rbdname=bench"
    echo "direct=1"
    cat "$HERE/jobs.fio"; } >"$WORK/$s.fio"
  in_env "$s" rbd create data/bench --size "${BENCH_SIZE^^}" >&2 || die "$s: rbd create data/bench"
done
mkdir -p "$WORK/limit"
{ echo "[global]"; echo "ioengine=libaio"; echo "direct=1"; echo "filename=$WORK/limit/bench.dat"
  cat "$HERE/jobs.fio"; } >"$WORK/file.fio"

run_fio() { # SYSTEM JOB TAG
  local sys=$1 job=$2 tag=$3 out="$RAW/$1-$2-$3.json" rc=0
  log "$sys $job ($tag)"
  [ "$(free_gib)" -ge "$MIN_FREE_GIB" ] || die "less than $MIN_FREE_GIB GiB free on $WORK's disk: stopping before it fills"
  SAMPLER=
  if [ "$sys" != file ]; then
    # shellcheck disable=SC2046
    python3 "$HERE/procstat.py" watch "$RAW/$sys-$job-$tag.proc.json" $(pidfiles "$sys") &
    SAMPLER=$!
  fi
  local fiotimeout=$((BENCH_RUNTIME + BENCH_RAMP + 300))
  [ "$job" = prefill ] && fiotimeout=1800
  if [ "$sys" = file ]; then
    timeout "$fiotimeout" fio --section="$job" --output-format=json --output="$out" "$WORK/file.fio" &
  else
    in_env "$sys" timeout "$fiotimeout" fio --section="$job" --output-format=json --output="$out" "$WORK/$sys.fio" &
  fi
  FIO_PID=$!
  if [ "$sys" != file ]; then
    # fio's pid is timeout's child (and, for Quarry, the subshell's grandchild).
    local fpid=
    for _ in $(seq 100); do
      fpid=$(find_fio "$FIO_PID") && break
      kill -0 "$FIO_PID" 2>/dev/null || break
      sleep 0.05
    done
    # Unverified only if fio was already gone (then its JSON decides the run).
    [ -n "$fpid" ] && check_lib "$sys" "$fpid" "${out%.json}.lib"
    # The client's CPU: every thread of fio's process, librbd's I/O threads
    # included (fio's own usr/sys_cpu count only its job thread).
    # fio forks each job from its main process: sample every fio process
    # under this run (the job's may appear a moment after the main one).
    if [ -n "$fpid" ]; then
      local cpids=() i
      for i in $(seq 10); do
        mapfile -t cpids < <(find_fio "$FIO_PID" all)
        [ "${#cpids[@]}" -ge 2 ] && break
        sleep 0.05
      done
      local pidfiles=() p
      for p in "${cpids[@]}"; do
        echo "$p" >"${out%.json}.client-$p.pid"
        pidfiles+=("${out%.json}.client-$p.pid")
      done
      if [ "${#pidfiles[@]}" -gt 0 ]; then
        python3 "$HERE/procstat.py" watch "${out%.json}.client.proc.json" "${pidfiles[@]}" &
        CSAMPLER=$!
      fi
    fi
  fi
  # The check above runs only between jobs; one job can grow a cluster's
  # files by tens of GiB (BlueStore's filled the disk mid-job once), so a
  # watchdog stops fio when free space falls under the limit during it.
  local full="$WORK/.disk-low" victim=${fpid:-$FIO_PID}
  rm -f "$full"
  ( while kill -0 "$victim" 2>/dev/null; do
      if [ "$(free_gib)" -lt "$MIN_FREE_GIB" ]; then
        touch "$full"; kill -TERM "$victim" 2>/dev/null; break
      fi
      sleep 1
    done ) &
  local watchdog=$!
  wait "$FIO_PID" || rc=$?
  FIO_PID=
  kill "$watchdog" 2>/dev/null || true
  wait "$watchdog" 2>/dev/null || true
  if [ -e "$full" ]; then
    if [ -n "$SAMPLER" ]; then kill "$SAMPLER"; wait "$SAMPLER" || true; SAMPLER=; fi
    if [ -n "$CSAMPLER" ]; then kill "$CSAMPLER" 2>/dev/null || true; wait "$CSAMPLER" || true; CSAMPLER=; fi
    die "$sys $job: free space on $WORK's disk fell under $MIN_FREE_GIB GiB during the job: fio stopped before the disk filled"
  fi
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER"; wait "$SAMPLER" || true; SAMPLER=; fi
  if [ -n "$CSAMPLER" ]; then kill "$CSAMPLER" 2>/dev/null || true; wait "$CSAMPLER" || true; CSAMPLER=; fi
  [ $rc = 0 ] || die "$sys $job: fio exited with $rc (output: $out)"
  python3 - "$out" <<'EOF' || die "$sys $job: fio reported errors"
import json, sys
d = json.load(open(sys.argv[1]))
errs = [j.get("error", 0) for j in d["jobs"]]
ios = sum(j["read"]["total_ios"] + j["write"]["total_ios"] for j in d["jobs"])
if any(errs) or ios == 0:
    sys.exit(f"{sys.argv[1]}: job errors {errs}, total I/Os {ios}")
EOF
}

for s in $SYSTEMS file; do
  run_fio "$s" prefill p0
done
for pass in $(seq "$PASSES"); do
  # Alternate the order between passes so slow drift of the machine does not
  # favour one system.
  order="$SYSTEMS"
  [ $((pass % 2)) = 0 ] && order=$(echo "$SYSTEMS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for job in $RBD_JOBS; do
    for s in $order; do run_fio "$s" "$job" "p$pass"; done
    run_fio file "$job" "p$pass"
  done
  for job in $FILE_JOBS; do
    case " $RBD_JOBS " in *" $job "*) continue ;; esac
    run_fio file "$job" "p$pass"
  done
done
rm -f "$WORK/limit/bench.dat"
# Random writes right after a snapshot of the image (see jobs.fio).
for s in $SYSTEMS; do
  in_env "$s" rbd snap create data/bench@after-passes >&2 || die "$s: rbd snap create data/bench@after-passes"
  run_fio "$s" randwrite-4k-qd32-after-snap p1
done

for s in $SYSTEMS; do
  sleep "$SETTLE"
  # shellcheck disable=SC2046
  python3 "$HERE/procstat.py" snap $(pidfiles "$s") >"$RAW/$s-rss-after.json"
done

# ---------------------------------------------------------------- loopback
log "loopback TCP round trip"
"$WORK/bin/pingpong" 64 $((QUICK ? 5000 : 50000)) >"$RAW/pingpong-64.json" || die "pingpong"
"$WORK/bin/pingpong" 4096 $((QUICK ? 5000 : 50000)) >"$RAW/pingpong-4096.json" || die "pingpong"
# The same over an abstract Unix socket: how Quarry's clients reach an OSD
# in their network namespace (Ceph's use TCP).
"$WORK/bin/pingpong" 64 $((QUICK ? 5000 : 50000)) unix >"$RAW/pingpong-unix-64.json" || die "pingpong unix"
"$WORK/bin/pingpong" 4096 $((QUICK ? 5000 : 50000)) unix >"$RAW/pingpong-unix-4096.json" || die "pingpong unix"

# ---------------------------------------------------------------- control plane
for s in $SYSTEMS; do
  log "$s control plane: librbd calls ($CLONES clones of a 10 GiB image)"
  in_env "$s" "$WORK/bin/cplane" data "$CLONES" >"$RAW/$s-cplane.json" || die "$s: control-plane probe"
  log "$s control plane: rbd CLI ($CLI_CLONES clones)"
  rbd_bin=rbd
  [ "$s" = quarry ] && rbd_bin=$QD/bin/rbd
  [ "$s" = ceph ] && rbd_bin=/usr/bin/rbd
  cli() { in_env "$s" timeout 120 "$rbd_bin" "$@" >/dev/null || die "$s: rbd $*"; }
  declare -A T=()
  t=$(now); cli ls data; T[ls]=$(ms_since "$t")
  t=$(now); cli create data/cli-parent --size 10G; T[create_10g]=$(ms_since "$t")
  t=$(now); cli snap create data/cli-parent@s; T[snap_create]=$(ms_since "$t")
  t=$(now); cli snap protect data/cli-parent@s; T[snap_protect]=$(ms_since "$t")
  t=$(now)
  for i in $(seq "$CLI_CLONES"); do cli clone data/cli-parent@s "data/cli-c$i"; done
  T[clones_total]=$(ms_since "$t")
  t=$(now)
  for i in $(seq "$CLI_CLONES"); do cli rm --no-progress "data/cli-c$i"; done
  T[remove_clones_total]=$(ms_since "$t")
  t=$(now); cli snap unprotect data/cli-parent@s; T[snap_unprotect]=$(ms_since "$t")
  t=$(now); cli snap rm --no-progress data/cli-parent@s; T[snap_remove]=$(ms_since "$t")
  t=$(now); cli rm --no-progress data/cli-parent; T[remove_image]=$(ms_since "$t")
  { printf '{"clones": %s' "$CLI_CLONES"
    for k in "${!T[@]}"; do printf ', "%s_ms": %s' "$k" "${T[$k]}"; done
    echo '}'; } >"$RAW/$s-cli.json"
  unset T
done
python3 -c 'import json,sys; json.dump({"loadavg_end": open("/proc/loadavg").read().split()[:3]}, open(sys.argv[1],"w"))' "$RAW/end.json"

# ---------------------------------------------------------------- clean build
# DESIGN.md §5's last target: a clean release build of the workspace on
# this machine. Full runs only (it takes minutes). A scratch target
# directory, offline: the crates are in cargo's cache from the build
# above, so this times the compile, not the network. BENCH_BUILD=0 skips it.
if [ $QUICK = 0 ] && [ "${BENCH_BUILD:-1}" = 1 ] && command -v cargo >/dev/null; then
  log "clean release build of the workspace (scratch target directory)"
  t=$(now)
  if (cd "$REPO" && CARGO_TARGET_DIR="$WORK/clean-target" cargo build --release --workspace --offline -q) \
       >"$WORK/clean-build.log" 2>&1; then
    printf '{"clean_build_ms": %s, "cores": %s}\n' "$(ms_since "$t")" "$(nproc)" >"$RAW/build.json"
  else
    log "clean build failed (see $WORK/clean-build.log): not measured"
  fi
  rm -rf "$WORK/clean-target"
fi

# ---------------------------------------------------------------- report
# Debian's python3 has matplotlib (python3-matplotlib) when a pyenv one may not.
PY=python3
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null && PY=/usr/bin/python3
"$PY" "$HERE/report.py" "$OUT" || die "report generation"
log "results: $OUT/results.md, results.json$([ -f "$OUT/latency.png" ] && echo ', latency.png')"
