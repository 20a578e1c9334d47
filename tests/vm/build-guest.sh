#!/usr/bin/env bash
# Build a tiny, reproducible VM guest for Quarry's VM tests, only from Debian packages:
#   OUTDIR/vmlinuz       kernel from Debian's linux-image-*-cloud-amd64 (apt-get download + dpkg -x,
#                        never installed; the .deb is cached in $VMTEST_CACHE)
#   OUTDIR/initramfs.gz  busybox-static + virtio/ata modules + mke2fs; its /init runs the scenario
#                        named on the kernel command line (vmtest=...), reporting on the serial
#                        console as "VMTEST: ..." lines and "VMTEST: RESULT PASS|FAIL ..."
#   OUTDIR/golden.img    raw 256 MiB disk: ext4 over the first 128 MiB (built with mke2fs -d, no
#                        loop mount; fixed UUID, hash seed and times, so only inode generation numbers differ between builds) holding
#                        /golden/{marker,data.bin,SHA256SUMS}; the last 128 MiB are a raw scratch
#                        area the scenarios write patterns into so the host can check them with qemu-io.
#   OUTDIR/golden.sha256 sha256 of golden.img;  OUTDIR/guest.env  KVER=..., KPKG=...
# Usage: tests/vm/build-guest.sh OUTDIR
# Env: VMTEST_CACHE (default /var/cache/quarry-vmtest), VMTEST_KPKG (kernel package to use).
set -euo pipefail

OUT=${1:?usage: build-guest.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VMTEST_CACHE:-/var/cache/quarry-vmtest}
if ! mkdir -p "$CACHE" 2>/dev/null || [ ! -w "$CACHE" ]; then
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/quarry-vmtest
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

die() { echo "build-guest: $*" >&2; exit 1; }

mkdir -p "$OUT" "$CACHE" || die "cannot create $OUT or $CACHE"
OUT=$(cd "$OUT" && pwd)

# Tools from Debian packages (installed only when missing).
missing=()
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
command -v mke2fs >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this builder needs a Debian host"
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-guest: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    { $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; } ||
    die "cannot install ${missing[*]}"
fi
/bin/busybox --list | grep -x fstrim >/dev/null || die "/bin/busybox lacks fstrim (need Debian's busybox-static)"

# 1. Kernel: Debian's cloud kernel (virtio + ata as modules, ext4 built in), cached.
KPKG=${VMTEST_KPKG:-$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')}
[ -n "$KPKG" ] || die "apt-cache does not know linux-image-cloud-amd64 (run apt-get update?)"
shopt -s nullglob
debs=("$CACHE/${KPKG}"_*.deb)
if [ ${#debs[@]} -eq 0 ]; then
  (cd "$CACHE" && apt-get download "$KPKG" >&2) ||
    { $SUDO apt-get update -qq >&2 && (cd "$CACHE" && apt-get download "$KPKG" >&2); } ||
    die "apt-get download $KPKG failed"
  debs=("$CACHE/${KPKG}"_*.deb)
fi
[ ${#debs[@]} -ge 1 ] || die "no $KPKG .deb in $CACHE"
DEB=${debs[-1]}
KX="$CACHE/x-$(basename "$DEB" .deb)"
if [ ! -d "$KX/boot" ]; then
  rm -rf "$KX.tmp"
  dpkg -x "$DEB" "$KX.tmp"
  mv "$KX.tmp" "$KX"
fi
kernels=("$KX"/boot/vmlinuz-*)
[ ${#kernels[@]} -eq 1 ] || die "expected one vmlinuz in $KX/boot"
KVER=${kernels[0]##*/vmlinuz-}
MD="$KX/lib/modules/$KVER"
cp "${kernels[0]}" "$OUT/vmlinuz"

# 2. initramfs
R=$(mktemp -d "$OUT/initramfs.XXXXXX")
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,mnt,lib/modules,etc}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do
  [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"
done
# Module load order from the .ko files' own "depends=" (no depmod needed).
ko_path() { find "$MD/kernel" -name "$1.ko" -o -name "${1//_/-}.ko" | head -1; }
ko_deps() { tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -1 | tr ',' ' '; }
order=()
visit() {
  local m=$1 p d
  for d in "${order[@]}"; do [ "$d" = "$m" ] && return 0; done
  p=$(ko_path "$m")
  [ -n "$p" ] || die "module $m not found in $MD"
  for d in $(ko_deps "$p"); do visit "${d//-/_}"; done
  order+=("$m")
  cp "$p" "$R/lib/modules/$m.ko"
}
for m in virtio_pci virtio_blk ata_piix sd_mod; do visit "$m"; done
printf '%s\n' "${order[@]}" >"$R/modules.order"
# mke2fs (busybox has no ext4 mkfs) with its shared libraries
cp /usr/sbin/mke2fs "$R/sbin/mke2fs"
ln -sf mke2fs "$R/sbin/mkfs.ext4"
for l in $(ldd /usr/sbin/mke2fs | grep -o '/[^ ]*'); do
  mkdir -p "$R$(dirname "$l")"
  cp -L "$l" "$R$l"
done
cp "$HERE/guest-init.sh" "$R/init"
chmod 0755 "$R/init"
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible -R 0:0 | gzip -n -1) >"$OUT/initramfs.gz"

# 3. golden disk: ext4 populated from a directory (mke2fs -d), no mounts.
G=$(mktemp -d "$OUT/golden.XXXXXX")
mkdir -p "$G/golden" "$G/vmdata"
echo "quarry golden image v1" >"$G/golden/marker"
# 8 MiB of deterministic pseudo-random data (AES-CTR keystream of zeros)
head -c 8M /dev/zero | openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 >"$G/golden/data.bin"
(cd "$G/golden" && sha256sum marker data.bin >SHA256SUMS)
find "$G" -exec touch -h -d @0 {} +
rm -f "$OUT/golden.img"
truncate -s 256M "$OUT/golden.img"
E2FSPROGS_FAKE_TIME=1 mke2fs -q -F -t ext4 -b 4096 -L golden -U 6b1a2d3e-0000-4000-8000-00000000cafe \
  -E hash_seed=6b1a2d3e-0000-4000-8000-00000000beef,lazy_itable_init=0,lazy_journal_init=0 \
  -d "$G" "$OUT/golden.img" 32768
rm -rf "$G"
e2fsck -fn "$OUT/golden.img" >/dev/null 2>&1 || die "golden.img fails e2fsck"
(cd "$OUT" && sha256sum golden.img >golden.sha256)
printf 'KPKG=%s\nKVER=%s\nDEB=%s\n' "$KPKG" "$KVER" "$(basename "$DEB")" >"$OUT/guest.env"
echo "build-guest: $OUT ready (kernel $KVER, initramfs $(du -k "$OUT/initramfs.gz" | cut -f1) KiB, golden $(cut -c1-16 "$OUT/golden.sha256"))" >&2
