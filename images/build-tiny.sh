#!/usr/bin/env bash
# Builds strata-tiny, a small CirrOS-like cloud image, from Debian packages only:
#   out/tiny/strata-tiny.qcow2   the image (48 MiB virtual): GPT with a BIOS boot partition
#                                (GRUB's core for BIOS firmware) and an EFI system partition
#                                labelled STRATA-TINY holding GRUB for UEFI
#                                (EFI/BOOT/BOOTX64.EFI), grub.cfg, the Debian cloud kernel and
#                                an initramfs (busybox, dropbear, images/tiny/init)
#   out/tiny/strata-tiny.raw     the same image, raw
#   out/tiny/MANIFEST            version, packages used, sha256 of each output
# The guest reads a config drive or the metadata service, installs the SSH keys and starts
# dropbear (see images/tiny/init). Reproducible: fixed disk and partition GUIDs, FAT volume
# id and timestamps (SOURCE_DATE_EPOCH = the kernel package's changelog date unless set).
# Usage: images/build-tiny.sh [--check-reproducible]
set -euo pipefail
# shellcheck source=images/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check=0
case "${1:-}" in
  --check-reproducible) check=1 ;;
  "") ;;
  -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
  *) die "unknown option '$1' (usage: $0 [--check-reproducible])" ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root (device nodes in the initramfs)"
need_cmd cpio gzip sha256sum dpkg-deb apt-get depmod sfdisk mkfs.fat mcopy \
  grub-mkimage qemu-img readelf
[ -f /usr/lib/grub/i386-pc/boot.img ] || die "no GRUB for BIOS (Debian package grub-pc-bin)"
[ -d /usr/lib/grub/x86_64-efi ] || die "no GRUB for UEFI (Debian package grub-efi-amd64-bin)"

# Disks and NICs on both drivers (virtio-mmio and virtio-pci), the config drive as a
# virtio disk (Strata's VMM) or an IDE CD-ROM (QEMU), the power button.
TINY_MODULES=(virtio_pci virtio_mmio virtio_blk virtio_net virtio_rng evdev button
  ata_piix sr_mod isofs)
DISK_MIB=48
ESP_START=4096 # sectors; the BIOS boot partition is 2048-4095
DISK_GUID=5354524b-5449-4e59-8000-000000000001
BIOS_GUID=5354524b-5449-4e59-8000-000000000002
ESP_GUID=5354524b-5449-4e59-8000-000000000003
OUT="$OUT_DIR/tiny"
mkdir -p "$WORK_DIR" "$OUT"
export PKGS_USED="$WORK_DIR/.pkgs-tiny"
: >"$PKGS_USED"

# install_dynamic ROOT PKGDIR PROG LIBDIRS... -> PROG with the shared libraries it needs
# (found by their DT_NEEDED names in the unpacked packages' library directories).
install_dynamic() {
  local root=$1 prog=$2 lib name found d
  shift 2
  install -D -m 0755 "$prog" "$root/usr/sbin/$(basename "$prog")"
  local -a todo=("$prog")
  while [ ${#todo[@]} -gt 0 ]; do
    lib=${todo[0]}
    todo=("${todo[@]:1}")
    for name in $(readelf -d "$lib" | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}'); do
      [ -e "$root/lib/x86_64-linux-gnu/$name" ] && continue
      found=""
      for d in "$@"; do
        if [ -e "$d/$name" ]; then found=$(readlink -f "$d/$name"); break; fi
      done
      [ -n "$found" ] || die "library $name (needed by $(basename "$lib")) not found"
      install -D -m 0755 "$found" "$root/lib/x86_64-linux-gnu/$name"
      todo+=("$found")
    done
  done
}

build_once() {
  prepare_kernel
  local sde=${SOURCE_DATE_EPOCH:-$(kernel_sde)}
  local root="$WORK_DIR/tiny-root" esp="$WORK_DIR/tiny-esp"
  rm -rf "$root" "$esp"
  make_base_dirs "$root"
  install_busybox "$root"
  install_modules "$root" "${TINY_MODULES[@]}"
  sed "s/@VERSION@/$IMAGES_VERSION/" "$IMAGES_DIR/tiny/init" >"$root/init"
  chmod 0755 "$root/init"
  install -m 0755 "$IMAGES_DIR/guest/udhcpc.script" "$root/etc/udhcpc.script"
  install -D -m 0755 "$IMAGES_DIR/tiny/power-button" "$root/etc/acpi/PWRF/00000080"

  # dropbear and the libraries it links, from their packages.
  local -a libdirs=()
  local p d
  for p in dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 libgmp10 zlib1g; do
    d=$(fetch_unpack "$p")
    libdirs+=("$d/lib/x86_64-linux-gnu" "$d/usr/lib/x86_64-linux-gnu")
  done
  local db
  db=$(fetch_unpack dropbear-bin)
  install_dynamic "$root" "$db/usr/sbin/dropbear" "${libdirs[@]}"
  local libc
  libc=$(fetch_unpack libc6)
  install -D -m 0755 "$(readlink -f "$libc/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")" \
    "$root/lib64/ld-linux-x86-64.so.2"
  ln -sf /lib64/ld-linux-x86-64.so.2 "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
  chmod 0600 "$root/etc/shadow"
  printf 'root:x:0:\n' >"$root/etc/group"
  printf '/bin/sh\n' >"$root/etc/shells"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
  echo "strata-tiny" >"$root/etc/hostname"
  echo "$IMAGES_VERSION" >"$root/etc/strata-tiny-version"
  mkdir -p "$root/root"
  make_cpio "$root" "$WORK_DIR/tiny-initrd.img" "$sde"

  # The EFI system partition: kernel, initramfs, grub.cfg, GRUB for UEFI.
  local gmods=(part_gpt fat search search_label normal linux configfile echo serial
    terminal test gzio boot)
  cat >"$WORK_DIR/tiny-early.cfg" <<'EOF'
search --no-floppy --label STRATA-TINY --set=root
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
EOF
  cat >"$WORK_DIR/tiny-grub.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry "strata-tiny" {
  linux /boot/vmlinuz console=ttyS0,115200 quiet
  initrd /boot/initrd.img
}
EOF
  grub-mkimage -O x86_64-efi -o "$WORK_DIR/tiny-bootx64.efi" -c "$WORK_DIR/tiny-early.cfg" \
    -p /boot/grub "${gmods[@]}"
  grub-mkimage -O i386-pc -o "$WORK_DIR/tiny-core.img" -c "$WORK_DIR/tiny-early.cfg" \
    -p /boot/grub biosdisk "${gmods[@]}"
  local esp_sectors=$((DISK_MIB * 2048 - ESP_START - 34))
  rm -f "$esp"
  export SOURCE_DATE_EPOCH=$sde
  mkfs.fat -C -F 16 -n STRATA-TINY --invariant "$esp" $((esp_sectors / 2)) >/dev/null
  # Staged as a tree with every time stamp at the epoch, copied in one recursive mcopy
  # that keeps them (directories made by mmd would carry the clock's time).
  local tree="$WORK_DIR/tiny-esp-tree"
  rm -rf "$tree"
  install -D -m 0644 "$WORK_DIR/tiny-bootx64.efi" "$tree/EFI/BOOT/BOOTX64.EFI"
  install -D -m 0644 "$WORK_DIR/tiny-grub.cfg" "$tree/boot/grub/grub.cfg"
  install -D -m 0644 "$KVMLINUZ" "$tree/boot/vmlinuz"
  install -D -m 0644 "$WORK_DIR/tiny-initrd.img" "$tree/boot/initrd.img"
  find "$tree" -exec touch -h -d "@$sde" {} +
  mcopy -s -m -i "$esp" "$tree/EFI" "$tree/boot" ::/

  # The disk: GPT, BIOS boot partition with GRUB's core, the ESP.
  local raw="$OUT/strata-tiny.raw"
  rm -f "$raw"
  truncate -s "${DISK_MIB}M" "$raw"
  sfdisk -q --no-reread --no-tell-kernel "$raw" <<EOF
label: gpt
label-id: $DISK_GUID
start=2048, size=2048, type=21686148-6E49-704E-6E65-6564454649AB, uuid=$BIOS_GUID, name="bios"
start=$ESP_START, size=$esp_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_GUID, name="esp"
EOF
  dd if="$esp" of="$raw" bs=512 seek="$ESP_START" conv=notrunc status=none
  local core_sectors=$((($(stat -c %s "$WORK_DIR/tiny-core.img") + 511) / 512))
  [ "$core_sectors" -le 2048 ] || die "GRUB's core image ($core_sectors sectors) does not fit the BIOS boot partition"
  dd if="$WORK_DIR/tiny-core.img" of="$raw" bs=512 seek=2048 conv=notrunc status=none
  # What grub-bios-setup does for a core image in a BIOS boot partition: the boot sector
  # (first 440 bytes, the partition table kept) loads the core's first sector from LBA
  # 2048 (u64 at 0x5c), whose block list (u64 start at 0x1f4) names the rest from 2049.
  dd if=/usr/lib/grub/i386-pc/boot.img of="$raw" bs=440 count=1 conv=notrunc status=none
  printf '\x00\x08\x00\x00\x00\x00\x00\x00' | dd of="$raw" bs=1 seek=$((0x5c)) conv=notrunc status=none
  printf '\x01\x08\x00\x00\x00\x00\x00\x00' |
    dd of="$raw" bs=1 seek=$((2048 * 512 + 0x1f4)) conv=notrunc status=none
  qemu-img convert -f raw -O qcow2 "$raw" "$OUT/strata-tiny.qcow2.tmp"
  mv "$OUT/strata-tiny.qcow2.tmp" "$OUT/strata-tiny.qcow2"
  touch -d "@$sde" "$raw" "$OUT/strata-tiny.qcow2"

  {
    echo "strata-images-version $IMAGES_VERSION"
    echo "image tiny"
    echo "source-date-epoch $sde"
    echo "kernel-abi $KABI"
    echo "modules $(sed 's|.*/||' "$root/lib/modules/load.list" | tr '\n' ' ' | sed 's/ $//')"
    echo "# debian packages: name version sha256-of-deb"
    LC_ALL=C sort -u "$PKGS_USED" | sed 's/^/package /'
    echo "# outputs: sha256 file"
    write_sha_lines "$OUT" strata-tiny.raw | sed 's/^/sha256 /'
  } >"$OUT/MANIFEST"
}

t0=$(date +%s)
build_once
log "strata-tiny built in $(($(date +%s) - t0)) s: $OUT"
cat "$OUT/MANIFEST"

if [ "$check" -eq 1 ]; then
  check_reproducible "$OUT" tiny build_once
fi
