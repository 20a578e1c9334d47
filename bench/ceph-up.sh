#!/usr/bin/env bash
# Minimal one-host Ceph (Debian's 16.2.x packages) for the side-by-side benchmark:
# 1 monitor, 3 BlueStore OSDs on sparse files, cephx on, 127.0.0.1 only,
# replicated pool `data` (size 3, min_size 2, failure domain osd), `rbd pool init`.
# No manager: nothing the benchmark uses needs one (and it would only take CPU
# from Ceph on a 2-core machine); `ceph -s` therefore reports HEALTH_WARN.
#
# usage: bench/ceph-up.sh DIR      (DIR must not exist or be empty)
# Writes DIR/ceph.conf, DIR/ceph.client.admin.keyring, DIR/run/*.pid, DIR/log/.
# Stop with bench/ceph-down.sh DIR.
set -euo pipefail
D=${1:?usage: ceph-up.sh DIR}
OSDS=${CEPH_OSDS:-3}
PGS=${CEPH_PGS:-32}
BLOCK_SIZE=${CEPH_BLOCK_SIZE:-16G}
mkdir -p "$D"
D=$(cd "$D" && pwd)
if [ -n "$(ls -A "$D")" ]; then
  echo "ceph-up: $D is not empty" >&2
  exit 1
fi
for b in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd uuidgen; do
  command -v "$b" >/dev/null || { echo "ceph-up: $b not found (apt-get install ceph-mon ceph-osd ceph-common)" >&2; exit 1; }
done
mkdir -p "$D/run" "$D/log"
FSID=$(uuidgen)
# Free ports picked now, so a system-wide Ceph or another run does not collide.
read -r MON_V2 MON_V1 < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])')
cat >"$D/ceph.conf" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = $D/run
pid file = $D/run/\$name.pid
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
mon allow pool delete = true
mon allow pool size one = true
osd pool default size = 3
osd pool default min size = 2
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
[mon]
mon data = $D/mon.\$id
keyring = $D/mon.\$id/keyring
[osd]
osd data = $D/osd.\$id
keyring = $D/osd.\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $BLOCK_SIZE
bluestore fsck on mkfs = false
osd memory target = 2147483648
osd max object name len = 460
osd max object namespace len = 64
[client]
keyring = $D/ceph.client.admin.keyring
EOF
export CEPH_CONF=$D/ceph.conf
ceph-authtool --create-keyring "$D/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$D/ceph.client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
chmod 600 "$D/ceph.client.admin.keyring" "$D/mon.keyring"
ceph-authtool "$D/mon.keyring" --import-keyring "$D/ceph.client.admin.keyring" >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]" "$D/monmap" >/dev/null
mkdir -p "$D/mon.a"
ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/mon.keyring"
ceph-mon -i a
# Bounded wait: a monitor that does not answer must fail the bring-up, not hang it.
timeout 60 ceph --connect-timeout 30 mon stat >/dev/null
for _ in $(seq 0 $((OSDS - 1))); do
  uuid=$(uuidgen)
  secret=$(ceph-authtool --gen-print-key)
  id=$(echo "{\"cephx_secret\": \"$secret\"}" | timeout 60 ceph osd new "$uuid" -i -)
  mkdir -p "$D/osd.$id"
  ceph-authtool --create-keyring "$D/osd.$id/keyring" --name "osd.$id" --add-key "$secret" >/dev/null
  if ! ceph-osd -i "$id" --mkfs --osd-uuid "$uuid" >"$D/log/osd.$id.mkfs.log" 2>&1; then
    echo "ceph-up: ceph-osd --mkfs failed for osd.$id:" >&2
    tail -5 "$D/log/osd.$id.mkfs.log" >&2
    exit 1
  fi
  ceph-osd -i "$id"
done
ceph osd crush rule create-replicated rep-osd default osd >/dev/null
ceph osd pool create data "$PGS" "$PGS" replicated rep-osd >/dev/null 2>&1
ceph osd pool set data size 3 >/dev/null 2>&1
ceph osd pool set data min_size 2 >/dev/null 2>&1
# Wait (bounded) until every OSD is up. (PG states are reported to a manager,
# which this cluster has not: `rbd pool init` below writes to the pool, so it
# completes only once its PGs are active.)
deadline=$((SECONDS + 120))
while :; do
  up=$(ceph osd stat -f json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])' || echo 0)
  [ "$up" = "$OSDS" ] && break
  if [ $SECONDS -gt $deadline ]; then
    echo "ceph-up: only $up of $OSDS OSDs up after 120 s" >&2
    exit 1
  fi
  sleep 0.5
done
if ! timeout 120 rbd pool init data; then
  echo "ceph-up: rbd pool init did not complete within 120 s (PGs not active?)" >&2
  exit 1
fi
echo "ceph-up: ready in $D (CEPH_CONF=$D/ceph.conf)"
