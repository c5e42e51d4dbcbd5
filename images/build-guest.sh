#!/usr/bin/env bash
# Builds the small Strata test guest from Debian packages only:
#   out/guest/vmlinuz             the Debian cloud kernel (linux-image-<abi>-cloud-amd64)
#   out/guest/initramfs.cpio.gz   busybox + virtio modules + /init (see images/guest/init)
#   out/guest/MANIFEST            version, packages used, sha256 of each output
# Reproducible: building twice gives the same sha256s (SOURCE_DATE_EPOCH = the kernel
# package's changelog date unless set in the environment).
# Usage: images/build-guest.sh [--check-reproducible]
set -euo pipefail
# shellcheck source=images/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check=0
case "${1:-}" in
  --check-reproducible) check=1 ;;
  "") ;;
  -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
  *) die "unknown option '$1' (usage: $0 [--check-reproducible])" ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root (creates /dev/console in the initramfs with mknod)"
need_cmd cpio gzip sha256sum dpkg-deb apt-get depmod

GUEST_MODULES=(virtio_pci virtio_mmio virtio_blk virtio_net virtio_rng virtio_console evdev button)
OUT="$OUT_DIR/guest"
mkdir -p "$WORK_DIR" "$OUT"
export PKGS_USED="$WORK_DIR/.pkgs-guest"
: >"$PKGS_USED"

build_once() {
  prepare_kernel
  local sde=${SOURCE_DATE_EPOCH:-$(kernel_sde)}
  local root="$WORK_DIR/guest-root"
  rm -rf "$root"
  make_base_dirs "$root"
  install_busybox "$root"
  install_modules "$root" "${GUEST_MODULES[@]}"
  sed "s/@VERSION@/$IMAGES_VERSION/" "$IMAGES_DIR/guest/init" >"$root/init"
  chmod 0755 "$root/init"
  install -m 0755 "$IMAGES_DIR/guest/udhcpc.script" "$root/etc/udhcpc.script"
  install -D -m 0755 "$IMAGES_DIR/guest/power-button" "$root/etc/acpi/PWRF/00000080"
  echo "strata-guest" >"$root/etc/hostname"
  echo "$IMAGES_VERSION" >"$root/etc/strata-guest-version"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  make_cpio "$root" "$OUT/initramfs.cpio.gz" "$sde"
  install -m 0644 "$KVMLINUZ" "$OUT/vmlinuz"
  touch -d "@$sde" "$OUT/vmlinuz" "$OUT/initramfs.cpio.gz"

  {
    echo "strata-images-version $IMAGES_VERSION"
    echo "image guest"
    echo "source-date-epoch $sde"
    echo "kernel-abi $KABI"
    echo "modules $(sed 's|.*/||' "$root/lib/modules/load.list" | tr '\n' ' ' | sed 's/ $//')"
    echo "# debian packages: name version sha256-of-deb"
    LC_ALL=C sort -u "$PKGS_USED" | sed 's/^/package /'
    echo "# outputs: sha256 file"
    write_sha_lines "$OUT" vmlinuz initramfs.cpio.gz | sed 's/^/sha256 /'
  } >"$OUT/MANIFEST"
}

t0=$(date +%s)
build_once
log "guest built in $(($(date +%s) - t0)) s: $OUT"
cat "$OUT/MANIFEST"

if [ "$check" -eq 1 ]; then
  check_reproducible "$OUT" guest build_once
fi
