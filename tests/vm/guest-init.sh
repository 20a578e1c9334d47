#!/bin/sh
# /init of Quarry's VM-test guest (busybox). The kernel command line picks the scenario:
#   vmtest=fleet|discard|writeloop|verify|fswrite   vmtest_dev=vda|sda   vmtest_id=N
#   vmtest_n=BLOCKS (writeloop/verify)      vmtest_sync=fsync|direct   vmtest_hold=1 (writeloop: stay up)
#   vmtest_sleep=SECONDS between writeloop blocks (default 0)
# Disk layout (see build-guest.sh): ext4 over MiB [0,128); raw scratch MiB [128,256).
# Scratch block i (1 MiB at MiB 128+i) is filled with the byte (i % 250) + 1 by writeloop.
# Every line for the host starts with "VMTEST:"; the verdict is "VMTEST: RESULT PASS|FAIL ...".
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "VMTEST: $*"; }
off() { sync; poweroff -f; sleep 10; }
fail() { say "RESULT FAIL $*"; off; }
arg() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" /proc/cmdline | head -1; }
read -r CMDLINE </proc/cmdline
SCEN=$(arg vmtest); DEV=$(arg vmtest_dev); ID=$(arg vmtest_id); N=$(arg vmtest_n)
SYNCMODE=$(arg vmtest_sync); HOLD=$(arg vmtest_hold); PAUSE=$(arg vmtest_sleep)
: "${DEV:=vda}" "${ID:=0}" "${N:=16}" "${SYNCMODE:=fsync}" "${HOLD:=0}" "${PAUSE:=0}"
say "init scenario=$SCEN dev=$DEV id=$ID uptime=$(cut -d' ' -f1 /proc/uptime)"
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </modules.order
i=0
while [ ! -b "/dev/$DEV" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "/dev/$DEV" ] || fail "/dev/$DEV did not appear (cmdline: $CMDLINE)"
Q=/sys/block/$DEV/queue
say "disk /dev/$DEV sectors=$(cat /sys/block/"$DEV"/size) discard_granularity=$(cat "$Q"/discard_granularity) discard_max_bytes=$(cat "$Q"/discard_max_bytes)"

SCRATCH_MIB=128
pattern() { # pattern FILE I : 1 MiB of byte (I % 250) + 1
  o=$(printf '%03o' $(($2 % 250 + 1)))
  dd if=/dev/zero bs=1M count=1 2>/dev/null | tr '\000' "\\$o" >"$1"
}
check_golden() {
  [ "$(cat /mnt/golden/marker 2>/dev/null)" = "quarry golden image v1" ] || fail "golden marker missing or wrong"
  (cd /mnt/golden && sha256sum -c -s SHA256SUMS) || fail "golden checksums differ"
  say "golden content verified"
}
write_block() { # write_block I : scratch block I, synced per $SYNCMODE
  pattern /tmp/p "$1"
  if [ "$SYNCMODE" = direct ]; then
    dd if=/tmp/p of="/dev/$DEV" bs=1M seek=$((SCRATCH_MIB + $1)) oflag=direct conv=notrunc,fsync 2>/tmp/dd.err
  else
    dd if=/tmp/p of="/dev/$DEV" bs=1M seek=$((SCRATCH_MIB + $1)) conv=notrunc,fsync 2>/tmp/dd.err
  fi
}
verify_blocks() { # verify_blocks N : blocks [0,N) read back with O_DIRECT
  j=0
  while [ $j -lt "$1" ]; do
    pattern /tmp/p $j
    a=$(md5sum </tmp/p)
    b=$(dd if="/dev/$DEV" bs=1M skip=$((SCRATCH_MIB + j)) count=1 iflag=direct 2>/dev/null | md5sum)
    [ "$a" = "$b" ] || fail "scratch block $j reads back wrong"
    j=$((j + 1))
  done
  say "verified $1 scratch blocks"
}

case "$SCEN" in
fleet)
  mount -t ext4 "/dev/$DEV" /mnt || fail "mount ext4"
  check_golden
  echo "vm $ID" >/mnt/vmdata/id
  dd if=/dev/urandom of=/mnt/vmdata/own.bin bs=64k count=16 2>/dev/null || fail "write own.bin"
  md5sum </mnt/vmdata/own.bin | cut -d' ' -f1 >/mnt/vmdata/own.md5
  sync
  umount /mnt || fail "umount"
  write_block "$ID" || fail "raw write: $(cat /tmp/dd.err)"
  say "wrote vmdata id=$ID"
  say "RESULT PASS"
  off
  ;;
discard)
  mount -t ext4 "/dev/$DEV" /mnt || fail "mount ext4"
  check_golden
  dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null
  k=0
  while [ $k -lt 48 ]; do cat /tmp/r; k=$((k + 1)); done >/mnt/big || fail "write big file"
  rm -f /mnt/golden/data.bin
  sync
  k=0
  while [ $k -lt 33 ]; do write_block $k || fail "raw write $k"; k=$((k + 1)); done
  say "FILLED ext4 48MiB + scratch 33MiB; df: $(df -k /mnt | tail -1)"
  # wait for the host to measure (it answers on the serial console), at most 150 s
  # shellcheck disable=SC3045 # busybox ash has read -t
  read -r -t 150 answer || answer=timeout
  say "host said: $answer"
  rm -f /mnt/big
  sync
  fstrim -v /mnt 2>&1 | sed 's/^/VMTEST: /'
  umount /mnt || fail "umount"
  blkdiscard -o $((SCRATCH_MIB << 20)) -l $((32 << 20)) "/dev/$DEV" || fail "blkdiscard scratch"
  # sub-object discard: 128 KiB inside scratch block 32 (MiB 160, object 40), 64 KiB aligned
  blkdiscard -o $(((SCRATCH_MIB + 32) * 1048576 + 65536)) -l 131072 "/dev/$DEV" || fail "blkdiscard sub-object"
  say "TRIMMED"
  say "RESULT PASS"
  off
  ;;
writeloop)
  k=0
  while [ $k -lt "$N" ]; do
    write_block $k || fail "I/O error writing block $k: $(cat /tmp/dd.err)"
    say "SYNCED $k"
    [ "$PAUSE" = 0 ] || sleep "$PAUSE"
    k=$((k + 1))
  done
  echo 3 >/proc/sys/vm/drop_caches
  verify_blocks "$N"
  say "DONE $N"
  if [ "$HOLD" = 1 ]; then
    while true; do sleep 3600; done
  fi
  say "RESULT PASS"
  off
  ;;
fswrite)
  # files on ext4, each followed by sync; the host SIGKILLs QEMU and checks the filesystem
  mount -t ext4 "/dev/$DEV" /mnt || fail "mount ext4"
  k=0
  while [ $k -lt "$N" ]; do
    pattern /tmp/p $k
    cp /tmp/p "/mnt/vmdata/f$k" || fail "write f$k"
    sync
    say "FSYNCED $k"
    k=$((k + 1))
  done
  say "DONE $N"
  while true; do sleep 3600; done
  ;;
verify)
  verify_blocks "$N"
  say "RESULT PASS"
  off
  ;;
*)
  fail "unknown scenario '$SCEN'"
  ;;
esac
