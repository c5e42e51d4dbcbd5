#!/usr/bin/env bash
# Installs the Debian packages Strata's build and tests need (as root), or says what is
# missing (otherwise). Idempotent; does nothing when everything is present.
set -euo pipefail
PKGS=(libclang-dev librocksdb-dev libsnappy-dev liblz4-dev libzstd-dev libbz2-dev zlib1g-dev
      iproute2 nftables iptables procps curl qemu-system-x86 qemu-utils seabios busybox
      python3 python3-venv chromium chromium-driver
      grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools dosfstools ovmf efibootmgr
      fdisk e2fsprogs cpio kmod openssh-client)
case "${1:-}" in
  # What `make usb` (installer/build.sh) needs is in the default list above.
  --bench) PKGS+=(etcd-server etcd-client fio iperf3 python3) ;;
  # What images/ needs: apt-get download, dpkg-deb, cpio, gzip, depmod (kmod), debootstrap,
  # mkfs.ext4 -d (e2fsprogs), QEMU with SeaBIOS for the test host and smoke tests; for
  # strata-tiny: sfdisk, mkfs.fat, mtools, GRUB for BIOS and UEFI, readelf, qemu-img.
  --images) PKGS=(qemu-system-x86 qemu-utils seabios cpio gzip kmod debootstrap e2fsprogs coreutils
                  findutils fdisk dosfstools mtools grub-pc-bin grub-efi-amd64-bin binutils) ;;
esac
find_missing() {
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
}
find_missing
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
# A second pass installs what the first removed to resolve a conflict (a machine with a
# newer qemu-utils loses it when the distribution's qemu-system-x86 comes in).
for pass in 1 2; do
  echo "installing: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  find_missing
  if [ ${#missing[@]} -eq 0 ]; then break; fi
  if [ "$pass" = 2 ]; then
    echo "still missing after installing: ${missing[*]}" >&2
    exit 1
  fi
done
if [ "${1:-}" != "--images" ] && ! command -v cargo >/dev/null; then
  echo "cargo (the Rust toolchain) is not installed; install Rust stable first" >&2
  exit 1
fi
