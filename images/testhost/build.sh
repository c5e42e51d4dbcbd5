#!/usr/bin/env bash
# Builds the initramfs of the nested-KVM test host (see docs in images/README.md):
#   busybox, the Debian cloud kernel's irqbypass/kvm/kvm-amd modules (plus tun, bridge and
#   virtio drivers with their dependencies), the test guest under /guest/ (vmlinuz,
#   initramfs.cpio.gz from images/build-guest.sh) and /init (images/testhost/init), which
#   loads the modules, reports STRATA-TESTHOST-KVM ok|missing, runs /scenario.sh and prints
#   STRATA-TESTHOST-DONE rc=<n> before powering off.
# Options:
#   --scenario FILE     copied to /scenario.sh (run with busybox sh)
#   --bin PATH          (repeatable) a program, copied with every shared library ldd lists
#   --file SRC:DST      (repeatable) a file or directory copied to DST inside the host
#   --with-qemu         add qemu-system-x86_64 (+ libraries) and its firmware in /usr/share/qemu-fw
#                       (use it with -L /usr/share/qemu-fw)
#   --out FILE          output (default images/out/testhost/initramfs.cpio.gz)
set -euo pipefail
# shellcheck source=images/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

scenario=""
out="$OUT_DIR/testhost/initramfs.cpio.gz"
with_qemu=0
bins=()
files=()
while [ $# -gt 0 ]; do
  case $1 in
    --scenario) scenario=${2:?--scenario needs a file}; shift 2 ;;
    --bin) bins+=("${2:?--bin needs a path}"); shift 2 ;;
    --file) files+=("${2:?--file needs SRC:DST}"); shift 2 ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --with-qemu) with_qemu=1; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see $0 --help)" ;;
  esac
done
[ -z "$scenario" ] || [ -f "$scenario" ] || die "--scenario $scenario: no such file"
[ "$(id -u)" -eq 0 ] || die "must run as root (creates /dev/console in the initramfs with mknod)"
need_cmd cpio gzip ldd

HOST_MODULES=(irqbypass kvm kvm-amd tun bridge virtio_pci virtio_blk virtio_net virtio_rng virtio_console)
# Firmware QEMU needs for -M pc with -nodefaults -display none (BIOS, option ROMs for
# direct kernel boot). virtio-net's PXE ROM is not included: use romfile= on the device.
QEMU_FW=(/usr/share/seabios/bios-256k.bin /usr/share/qemu/linuxboot_dma.bin
         /usr/share/qemu/linuxboot.bin /usr/share/qemu/kvmvapic.bin /usr/share/qemu/multiboot_dma.bin
         /usr/share/qemu/pvh.bin /usr/share/seabios/bios.bin)

guest="$OUT_DIR/guest"
if [ ! -f "$guest/vmlinuz" ] || [ ! -f "$guest/initramfs.cpio.gz" ]; then
  log "no test guest in $guest yet; building it"
  "$IMAGES_DIR/build-guest.sh" >/dev/null
fi

export PKGS_USED="$WORK_DIR/.pkgs-testhost"
mkdir -p "$WORK_DIR"
: >"$PKGS_USED"
prepare_kernel
sde=${SOURCE_DATE_EPOCH:-$(kernel_sde)}
root="$WORK_DIR/testhost-root"
rm -rf "$root"
make_base_dirs "$root"
install_busybox "$root"
install_modules "$root" "${HOST_MODULES[@]}"
sed "s/@VERSION@/$IMAGES_VERSION/" "$IMAGES_DIR/testhost/init" >"$root/init"
chmod 0755 "$root/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
echo "$IMAGES_VERSION" >"$root/etc/strata-testhost-version"
install -D -m 0644 "$guest/vmlinuz" "$root/guest/vmlinuz"
install -D -m 0644 "$guest/initramfs.cpio.gz" "$root/guest/initramfs.cpio.gz"
install -D -m 0644 "$guest/MANIFEST" "$root/guest/MANIFEST"
[ -z "$scenario" ] || install -m 0755 "$scenario" "$root/scenario.sh"

if [ "$with_qemu" -eq 1 ]; then
  need_cmd qemu-system-x86_64
  copy_with_libs "$root" "$(command -v qemu-system-x86_64)" /usr/bin/qemu-system-x86_64
  for f in "${QEMU_FW[@]}"; do
    [ -f "$f" ] || die "QEMU firmware $f missing (install qemu-system-x86 and seabios)"
    install -D -m 0644 "$(readlink -f "$f")" "$root/usr/share/qemu-fw/$(basename "$f")"
  done
  qemu-system-x86_64 --version | head -n 1 >"$root/usr/share/qemu-fw/VERSION"
fi
for b in "${bins[@]}"; do
  copy_with_libs "$root" "$b"
done
for f in "${files[@]}"; do
  src=${f%%:*}
  dst=${f#*:}
  if [ "$src" = "$f" ] || [ -z "$dst" ]; then die "--file $f: expected SRC:DST"; fi
  [ -e "$src" ] || die "--file $f: $src does not exist"
  mkdir -p "$root/$(dirname "$dst")"
  cp -a "$src" "$root/$dst"
done

make_cpio "$root" "$out" "$sde"
{
  echo "strata-images-version $IMAGES_VERSION"
  echo "image testhost"
  echo "source-date-epoch $sde"
  echo "kernel-abi $KABI"
  echo "modules $(sed 's|.*/||' "$root/lib/modules/load.list" | tr '\n' ' ' | sed 's/ $//')"
  echo "scenario ${scenario:-none}"
  echo "with-qemu $with_qemu"
  LC_ALL=C sort -u "$PKGS_USED" | sed 's/^/package /'
  echo "guest-initramfs-sha256 $(sha256sum "$guest/initramfs.cpio.gz" | cut -d' ' -f1)"
  echo "sha256 $(sha256sum "$out" | cut -d' ' -f1)  $(basename "$out")"
} >"$out.MANIFEST"
log "test host initramfs: $out ($(du -h "$out" | cut -f1))"
