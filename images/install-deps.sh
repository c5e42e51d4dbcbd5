#!/usr/bin/env bash
# Installs the Debian packages the image scripts need (as root), or says what is missing
# (otherwise). Idempotent; does nothing when everything is present.
#   build-guest.sh / testhost/build.sh: apt (apt-get download), dpkg-deb, cpio, gzip, kmod (depmod)
#   build-rootfs.sh: debootstrap, e2fsprogs (mkfs.ext4 -d)
#   testhost/run.sh and --with-qemu, smoke tests: qemu-system-x86 (with seabios)
# busybox-static and the cloud kernel are fetched with `apt-get download`, not installed.
set -euo pipefail
PKGS=(qemu-system-x86 seabios cpio gzip kmod debootstrap e2fsprogs coreutils findutils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
