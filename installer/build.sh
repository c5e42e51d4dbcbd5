#!/usr/bin/env bash
# `make usb`: builds the Strata installer, one hybrid image that is both an ISO and a raw
# USB disk image (write it with dd), booting on legacy BIOS, UEFI and UEFI Secure Boot
# (Debian's Microsoft-signed shim, Debian-signed GRUB and kernel). Everything comes from
# Debian packages fetched with `apt-get download` (see installer/README.md).
# Options:
#   --bin PATH        the strata binary to ship (default target/release/strata; stripped copy)
#   --out FILE        output image (default installer/out/strata-installer.iso)
#   --config FILE     an install config (TOML) embedded in the image as /strata/install.toml
#   --drivers SET     broad (default: storage, NIC, USB, HID drivers for real servers) or
#                     minimal (virtio, NVMe, AHCI, USB storage: emulated servers only)
#   --unsigned-efi    (tests) boot UEFI through an unsigned GRUB instead of shim: Secure
#                     Boot firmware must refuse such an image
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export STRATA_IMAGES_WORK=${STRATA_INSTALLER_WORK:-$HERE/work}
export STRATA_IMAGES_OUT=${STRATA_INSTALLER_OUT:-$HERE/out}
export STRATA_KERNEL_META=${STRATA_INSTALLER_KERNEL_META:-linux-image-amd64}
# shellcheck source=images/lib.sh
. "$REPO/images/lib.sh"

bin="$REPO/target/release/strata"
out="$OUT_DIR/strata-installer.iso"
config=""
drivers=broad
unsigned=0
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --drivers) drivers=${2:?--drivers needs broad or minimal}; shift 2 ;;
    --unsigned-efi) unsigned=1; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see $0 --help)" ;;
  esac
done
case $drivers in broad | minimal) ;; *) die "--drivers must be broad or minimal, not '$drivers'" ;; esac
[ -f "$bin" ] || die "no strata binary at $bin (build it first: cargo build --release)"
[ -z "$config" ] || [ -f "$config" ] || die "--config $config: no such file"
[ "$(id -u)" -eq 0 ] || die "must run as root (device nodes in the initramfs are made with mknod)"
need_cmd grub-mkimage xorriso mkfs.fat mcopy mmd cpio gzip depmod sfdisk mke2fs strip

start=$(date +%s)
export PKGS_USED="$WORK_DIR/.pkgs-installer"
mkdir -p "$WORK_DIR"
: >"$PKGS_USED"
prepare_kernel
sde=${SOURCE_DATE_EPOCH:-$(kernel_sde)}
log "kernel $KPKG ($KVER), drivers: $drivers"

root="$WORK_DIR/initrd-root"
iso="$WORK_DIR/iso-root"
rm -rf "$root" "$iso"
make_base_dirs "$root"
install_busybox "$root"

# Kernel modules: whole driver directories, copied unchanged (they are signed, which
# Secure Boot's lockdown requires), then depmod for the initramfs tree.
if [ "$drivers" = broad ]; then
  MOD_DIRS=(drivers/ata drivers/nvme drivers/scsi drivers/block drivers/virtio drivers/md
    drivers/hid drivers/input/keyboard drivers/usb/host drivers/usb/storage drivers/usb/core
    drivers/usb/common drivers/net/ethernet drivers/net/phy drivers/net/mdio drivers/net/pcs
    drivers/pci/controller drivers/firmware/efi drivers/char/hw_random drivers/vhost
    drivers/net/virtio_net.ko drivers/net/net_failover.ko drivers/net/mii.ko
    drivers/net/bonding drivers/net/tun.ko drivers/net/vxlan drivers/net/veth.ko
    drivers/net/macvlan.ko drivers/net/dummy.ko drivers/net/mdio.ko drivers/dca drivers/ptp
    drivers/pps drivers/i2c/algos drivers/nvdimm drivers/dax block
    net fs/ext4 fs/jbd2 fs/mbcache.ko fs/fat fs/isofs fs/nls fs/xfs fs/efivarfs fs/overlayfs
    lib crypto arch/x86 virt)
else
  MOD_DIRS=(drivers/virtio drivers/block/virtio_blk.ko drivers/nvme drivers/ata
    drivers/scsi/sd_mod.ko drivers/scsi/sr_mod.ko drivers/scsi/scsi_common.ko drivers/cdrom
    drivers/usb/host drivers/usb/storage drivers/usb/core drivers/usb/common
    drivers/net/virtio_net.ko drivers/net/net_failover.ko drivers/net/tun.ko
    drivers/net/vxlan drivers/net/veth.ko drivers/net/ethernet/intel/e1000
    drivers/net/ethernet/intel/e1000e drivers/char/hw_random drivers/input/keyboard
    drivers/hid net/bridge net/netfilter net/ipv4/netfilter net/ipv6 net/core net/llc
    net/802 net/8021q net/ipv4/udp_tunnel.ko net/ipv6/ip6_udp_tunnel.ko
    fs/ext4 fs/jbd2 fs/mbcache.ko fs/fat fs/isofs fs/nls fs/efivarfs lib crypto arch/x86)
fi
mdst="$root/lib/modules/$KABI"
mkdir -p "$mdst/kernel"
for d in "${MOD_DIRS[@]}"; do
  src="$KMOD/kernel/$d"
  [ -e "$src" ] || continue
  mkdir -p "$mdst/kernel/$(dirname "$d")"
  cp -a "$src" "$mdst/kernel/$(dirname "$d")/"
done
# No wireless, Bluetooth or sound: large and never used by a server node.
rm -rf "$mdst/kernel/net/wireless" "$mdst/kernel/net/mac80211" "$mdst/kernel/net/bluetooth"
# Every dependency of what was chosen (modules.dep lists each module's whole closure).
(cd "$mdst" && find kernel -name '*.ko*') | awk -F': *' '
  NR == FNR { want[$0] = 1; next }
  ($1 in want) { n = split($2, d, " "); for (i = 1; i <= n; i++) print d[i] }' - "$KMOD/modules.dep" |
  LC_ALL=C sort -u | while IFS= read -r dep; do
    [ -e "$mdst/$dep" ] || install -D -m 0644 "$KMOD/$dep" "$mdst/$dep"
  done
cp "$KMOD"/modules.{builtin,builtin.modinfo,order} "$mdst/" 2>/dev/null || true
depmod -b "$root" "$KABI" || die "depmod for the initramfs failed"
# The kernel's request_module() runs /sbin/modprobe (busybox's); without it ext4 cannot
# load crc32c at mount time.
ln -sf /bin/busybox "$root/sbin/modprobe"

# Tools the installer and the node run (called by absolute path: busybox's shell runs
# its own applets of the same name first).
for t in /sbin/sfdisk /sbin/mke2fs /sbin/mkfs.fat /sbin/blkid /usr/sbin/nft /bin/efibootmgr \
         /usr/lib/grub/i386-pc/grub-bios-setup /usr/sbin/grub-bios-setup /usr/bin/qemu-img; do
  [ -e "$t" ] || continue
  copy_with_libs "$root" "$(readlink -f "$t")" "/usr/libexec/strata/$(basename "$t")"
done
for t in sfdisk mke2fs mkfs.fat blkid nft efibootmgr grub-bios-setup qemu-img; do
  [ -e "$root/usr/libexec/strata/$t" ] || die "tool $t not found on the build host (run scripts/install-deps.sh --usb)"
done
install -D -m 0644 /etc/mke2fs.conf "$root/etc/mke2fs.conf"
# BIOS firmware for guests that boot their own bootloader on Strata's VMM (Debian's
# SeaBIOS build for virtio-mmio machines).
[ -f /usr/share/seabios/bios-microvm.bin ] || die "no /usr/share/seabios/bios-microvm.bin (Debian package seabios)"
install -D -m 0644 /usr/share/seabios/bios-microvm.bin "$root/usr/share/seabios/bios-microvm.bin"
echo "seabios $(dpkg-query -W -f='${Version}' seabios) $(sha256sum /usr/share/seabios/bios-microvm.bin | cut -d' ' -f1)" >>"$PKGS_USED"

# strata itself (a stripped copy) and its shared libraries.
strip -o "$WORK_DIR/strata" "$bin"
copy_with_libs "$root" "$WORK_DIR/strata" /usr/bin/strata

# Boot loaders for the installed disk, built now so the install needs no GRUB tools.
GRUB_MODS=(part_gpt part_msdos fat ext2 iso9660 search search_label search_fs_uuid normal
  linux configfile echo serial terminal test gzio boot loadenv sleep ls cat halt reboot)
bdir="$root/usr/lib/strata/boot"
mkdir -p "$bdir/bios" "$bdir/efi"
cat >"$WORK_DIR/early.cfg" <<'EOF'
search --no-floppy --label STRATA-A --set=root
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
EOF
grub-mkimage -O i386-pc -o "$bdir/bios/core.img" -c "$WORK_DIR/early.cfg" -p /boot/grub \
  biosdisk "${GRUB_MODS[@]}"
install -m 0644 /usr/lib/grub/i386-pc/boot.img "$bdir/bios/boot.img"
cp "$WORK_DIR/early.cfg" "$bdir/efi/grub.cfg"
if [ "$unsigned" -eq 1 ]; then
  grub-mkimage -O x86_64-efi -o "$bdir/efi/BOOTX64.EFI" -c "$WORK_DIR/early.cfg" -p /boot/grub \
    efi_gop efi_uga all_video "${GRUB_MODS[@]}"
else
  shim=$(fetch_unpack shim-signed)
  mm=$(fetch_unpack shim-helpers-amd64-signed)
  sgrub=$(fetch_unpack grub-efi-amd64-signed)
  install -m 0644 "$shim/usr/lib/shim/shimx64.efi.signed" "$bdir/efi/BOOTX64.EFI"
  install -m 0644 "$mm/usr/lib/shim/mmx64.efi.signed" "$bdir/efi/mmx64.efi"
  install -m 0644 "$sgrub/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" "$bdir/efi/grubx64.efi"
fi

# iPXE for network installs served by a node to PXE firmware that is not iPXE itself.
ipxe=$(fetch_unpack ipxe)
install -D -m 0644 "$ipxe/usr/lib/ipxe/undionly.kpxe" "$root/usr/lib/strata/pxe/undionly.kpxe"
install -D -m 0644 "$ipxe/usr/lib/ipxe/snponly.efi" "$root/usr/lib/strata/pxe/snponly.efi"

sed "s/@VERSION@/$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1)/" \
  "$HERE/init" >"$root/init"
chmod 0755 "$root/init"
install -m 0755 "$HERE/udhcpc.script" "$root/etc/udhcpc.script"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

# The ISO tree: kernel, initramfs, GRUB menu, checksums, optional embedded config.
mkdir -p "$iso/boot/grub" "$iso/.disk" "$iso/strata"
install -m 0644 "$KVMLINUZ" "$iso/boot/vmlinuz"
make_cpio "$root" "$iso/boot/initrd.img" "$sde"
install -m 0644 "$HERE/grub.cfg" "$iso/boot/grub/grub.cfg"
echo "Strata installer" >"$iso/.disk/info"
[ -z "$config" ] || install -m 0600 "$config" "$iso/strata/install.toml"
(cd "$iso" && sha256sum boot/vmlinuz boot/initrd.img >strata/SHA256SUMS)

# BIOS: GRUB as an El Torito image (CD) and through the hybrid MBR (USB disk).
grub-mkimage -O i386-pc-eltorito -o "$iso/boot/grub/bios.img" -p /boot/grub biosdisk "${GRUB_MODS[@]}"
# UEFI: an ESP image appended as MBR partition 2 with shim + CD GRUB (or unsigned GRUB).
efi="$WORK_DIR/efi.img"
rm -f "$efi"
mkfs.fat -C -n STRATA-EFI "$efi" 8192 >/dev/null
mmd -i "$efi" ::/EFI ::/EFI/BOOT
if [ "$unsigned" -eq 1 ]; then
  cat >"$WORK_DIR/iso-early.cfg" <<'EOF'
search --no-floppy --file --set=root /.disk/info
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
EOF
  grub-mkimage -O x86_64-efi -o "$WORK_DIR/BOOTX64.EFI" -c "$WORK_DIR/iso-early.cfg" -p /boot/grub \
    efi_gop efi_uga all_video "${GRUB_MODS[@]}"
  mcopy -i "$efi" "$WORK_DIR/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
else
  mcopy -i "$efi" "$shim/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$efi" "$sgrub/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed" ::/EFI/BOOT/grubx64.efi
  mcopy -i "$efi" "$mm/usr/lib/shim/mmx64.efi.signed" ::/EFI/BOOT/mmx64.efi
fi
find "$iso" -exec touch -h -d "@$sde" {} +
mkdir -p "$(dirname "$out")"
rm -f "$out"
xorriso -as mkisofs -o "$out" -V STRATA -R -J -joliet-long \
  --modification-date="$(date -u -d "@$sde" +%Y%m%d%H%M%S00)" \
  --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img -partition_offset 16 --mbr-force-bootable \
  -append_partition 2 0xef "$efi" \
  -c boot/boot.cat -b boot/grub/bios.img -no-emul-boot -boot-load-size 4 -boot-info-table \
  --grub2-boot-info -eltorito-alt-boot -e --interval:appended_partition_2:all:: -no-emul-boot \
  "$iso" 2>"$WORK_DIR/xorriso.log" || { cat "$WORK_DIR/xorriso.log" >&2; die "xorriso failed"; }

{
  echo "strata-installer $(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1)"
  echo "source-date-epoch $sde"
  echo "kernel $KPKG $KVER"
  echo "drivers $drivers ($(find "$mdst" -name '*.ko*' | wc -l) modules)"
  echo "efi $([ "$unsigned" -eq 1 ] && echo unsigned-grub || echo shim+signed-grub)"
  echo "embedded-config $([ -n "$config" ] && echo yes || echo no)"
  LC_ALL=C sort -u "$PKGS_USED" | sed 's/^/package /'
  echo "initrd-bytes $(stat -c %s "$iso/boot/initrd.img")"
  echo "image-bytes $(stat -c %s "$out")"
  echo "sha256 $(sha256sum "$out" | cut -d' ' -f1)  $(basename "$out")"
} >"$out.MANIFEST"
size=$(stat -c %s "$out")
echo "installer image: $out ($((size / 1048576)) MiB, initramfs $(($(stat -c %s "$iso/boot/initrd.img") / 1048576)) MiB) built in $(($(date +%s) - start)) s"
