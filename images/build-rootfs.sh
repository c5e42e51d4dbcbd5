#!/usr/bin/env bash
# Builds a Debian 12 root file system image for Strata guests:
#   out/rootfs/debian-12-strata.raw   raw ext4 (sparse, 2 GiB by default), root=/dev/vda
#   out/rootfs/MANIFEST               version, mirror suite, installed packages, sha256
# Contents: debootstrap (minbase) + systemd, cloud-init, openssh-server, ifupdown/dhcp,
# and the modules of the Debian cloud kernel used by images/build-guest.sh. There is no
# kernel or boot loader inside: boot it with direct kernel boot, using the test guest's
# kernel and initramfs (its /init mounts root=/dev/vda and switch_roots into it):
#   qemu-system-x86_64 ... -kernel out/guest/vmlinuz -initrd out/guest/initramfs.cpio.gz \
#     -append "console=ttyS0 root=/dev/vda rw" -drive file=IMAGE,format=raw,if=virtio
# The apt mirror is read at run time from /etc/apt/sources.list{,.d/*}; it is not stored in
# the image (apt sources are left empty; /var/lib/apt/lists is emptied).
# Usage: images/build-rootfs.sh [--size 2G] [--no-smoke] [--smoke-only] [--smoke-timeout S]
set -euo pipefail
# shellcheck source=images/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE=2G
SMOKE=1
BUILD=1
SMOKE_TIMEOUT=600
SUITE=bookworm
while [ $# -gt 0 ]; do
  case $1 in
    --size) SIZE=${2:?--size needs a value}; shift 2 ;;
    --no-smoke) SMOKE=0; shift ;;
    --smoke-only) BUILD=0; shift ;;
    --smoke-timeout) SMOKE_TIMEOUT=${2:?--smoke-timeout needs seconds}; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see $0 --help)" ;;
  esac
done

OUT="$OUT_DIR/rootfs"
IMG="$OUT/debian-12-strata.raw"
TREE="$WORK_DIR/rootfs-tree"
# python3-cffi-backend: debootstrap does not resolve the virtual python3-cffi-backend-api-* that
# python3-cryptography (pulled in by cloud-init) depends on.
PACKAGES=python3-cffi-backend,systemd-sysv,udev,kmod,cloud-init,openssh-server,ifupdown,isc-dhcp-client,iproute2,netbase,sudo,ca-certificates,less,procps

build() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, device nodes)"
  need_cmd debootstrap mkfs.ext4 debugfs e2fsck chroot sha256sum truncate
  mkdir -p "$WORK_DIR" "$OUT"
  export PKGS_USED="$WORK_DIR/.pkgs-rootfs"
  : >"$PKGS_USED"
  prepare_kernel
  local sde mirror uuid t0
  sde=${SOURCE_DATE_EPOCH:-$(kernel_sde)}
  export SOURCE_DATE_EPOCH=$sde
  mirror=$(apt_mirror "$SUITE")
  t0=$(date +%s)

  # Unmount anything a previous, interrupted run left behind.
  local m
  for m in proc sys dev/pts dev; do
    mountpoint -q "$TREE/$m" 2>/dev/null && umount -l "$TREE/$m"
  done
  rm -rf "$TREE"
  mkdir -p "$WORK_DIR/debootstrap-cache"
  log "debootstrap $SUITE (minbase + $PACKAGES) into $TREE"
  if ! debootstrap --variant=minbase --include="$PACKAGES" --components=main \
      --cache-dir="$WORK_DIR/debootstrap-cache" "$SUITE" "$TREE" "$mirror" \
      >"$WORK_DIR/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK_DIR/debootstrap.log" >&2
    [ -f "$TREE/debootstrap/debootstrap.log" ] && tail -n 30 "$TREE/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (full log: $WORK_DIR/debootstrap.log)"
  fi
  log "debootstrap done in $(($(date +%s) - t0)) s"

  # Kernel modules of the cloud kernel (usr-merged: /lib -> usr/lib).
  rm -rf "$TREE/usr/lib/modules/$KABI"
  mkdir -p "$TREE/usr/lib/modules"
  cp -a "$KMOD" "$TREE/usr/lib/modules/$KABI"
  depmod -b "$TREE" "$KABI" || die "depmod in the rootfs failed"

  # Configuration.
  echo "strata-guest" >"$TREE/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tstrata-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$TREE/etc/hosts"
  printf '/dev/vda\t/\text4\terrors=remount-ro\t0\t1\n' >"$TREE/etc/fstab"
  mkdir -p "$TREE/etc/network/interfaces.d"
  printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' \
    >"$TREE/etc/network/interfaces"
  mkdir -p "$TREE/etc/cloud/cloud.cfg.d"
  cat >"$TREE/etc/cloud/cloud.cfg.d/90-strata.cfg" <<'EOF'
# Strata: an OpenStack-style metadata service at 169.254.169.254, or a NoCloud seed.
datasource_list: [ NoCloud, ConfigDrive, OpenStack, None ]
# No locales package in the image; C.UTF-8 is built into glibc.
locale: C.UTF-8
EOF
  printf '# Strata image %s: no apt sources are configured; add them at deploy time.\n' \
    "$IMAGES_VERSION" >"$TREE/etc/apt/sources.list"
  rm -f "$TREE"/etc/apt/sources.list.d/*
  echo "$IMAGES_VERSION" >"$TREE/etc/strata-image-version"
  # A NoCloud seed used only when the kernel command line names it (the smoke test does:
  # ds=nocloud;s=file:///usr/share/strata/smoke-seed/); normal boots use the metadata service.
  mkdir -p "$TREE/usr/share/strata/smoke-seed"
  printf 'instance-id: strata-smoke\nlocal-hostname: strata-smoke\n' \
    >"$TREE/usr/share/strata/smoke-seed/meta-data"
  printf '#cloud-config\nruncmd:\n  - [ sh, -c, "echo STRATA-ROOTFS-CLOUDINIT-RUNCMD >/dev/console" ]\n' \
    >"$TREE/usr/share/strata/smoke-seed/user-data"
  # Host keys are per instance: cloud-init creates them; without cloud-init ssh creates them.
  mkdir -p "$TREE/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' \
    >"$TREE/etc/systemd/system/ssh.service.d/strata-hostkeys.conf"
  # Per-instance identity is created at first boot.
  : >"$TREE/etc/machine-id"
  rm -f "$TREE/var/lib/dbus/machine-id" "$TREE"/etc/ssh/ssh_host_*
  # Package list for the manifest, then drop caches and logs (they name the mirror / the time).
  # shellcheck disable=SC2016  # dpkg-query's own ${...} format
  chroot "$TREE" dpkg-query -W -f='${Package} ${Version}\n' | LC_ALL=C sort >"$WORK_DIR/rootfs-packages"
  rm -rf "$TREE"/var/lib/apt/lists/* "$TREE"/var/cache/apt/*.bin "$TREE"/var/cache/apt/archives/*.deb \
    "$TREE"/var/cache/ldconfig/aux-cache "$TREE"/var/log/*.log "$TREE"/var/log/apt/* \
    "$TREE/debootstrap"
  find "$TREE" -xdev -newermt "@$sde" -exec touch -h -d "@$sde" {} +

  # ext4 image with a fixed UUID, hash seed and time.
  uuid=$(printf '%s' "strata-rootfs-$IMAGES_VERSION-$sde" | sha256sum |
    sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
  rm -f "$IMG.tmp"
  truncate -s "$SIZE" "$IMG.tmp"
  E2FSPROGS_FAKE_TIME=$sde mkfs.ext4 -q -F -L strata-root -U "$uuid" \
    -E "hash_seed=$uuid,root_owner=0:0" -d "$TREE" "$IMG.tmp" ||
    die "mkfs.ext4 -d failed (image too small? try --size)"
  # mkfs.ext4 -d (e2fsprogs 1.47.0) copies each file's ctime and atime, which depend on when
  # the build ran; clamp both with debugfs so that the image only depends on its inputs.
  (cd "$TREE" && find . -xdev | LC_ALL=C sort | sed 's|^\.||; s|^$|/|' |
    awk -v t="$sde" '{printf "sif \"%s\" ctime @%d\nsif \"%s\" atime @%d\n", $0, t, $0, t}') \
    >"$WORK_DIR/rootfs-ctime.cmds"
  E2FSPROGS_FAKE_TIME=$sde debugfs -w -f "$WORK_DIR/rootfs-ctime.cmds" "$IMG.tmp" >"$WORK_DIR/rootfs-ctime.log" 2>&1 ||
    die "debugfs could not clamp ctimes (log: $WORK_DIR/rootfs-ctime.log)"
  e2fsck -fn "$IMG.tmp" >"$WORK_DIR/rootfs-fsck.log" 2>&1 ||
    die "e2fsck found problems in the new image (log: $WORK_DIR/rootfs-fsck.log)"
  mv "$IMG.tmp" "$IMG"

  {
    echo "strata-images-version $IMAGES_VERSION"
    echo "image rootfs"
    echo "suite $SUITE"
    echo "source-date-epoch $sde"
    echo "size $SIZE"
    echo "fs-uuid $uuid"
    echo "kernel-modules $KABI"
    echo "boot direct kernel boot with out/guest/vmlinuz + out/guest/initramfs.cpio.gz, root=/dev/vda"
    echo "# kernel package (modules copied in): name version sha256-of-deb"
    LC_ALL=C sort -u "$PKGS_USED" | sed 's/^/package /'
    echo "# installed debian packages: name version"
    sed 's/^/installed /' "$WORK_DIR/rootfs-packages"
    echo "# outputs: sha256 file"
    write_sha_lines "$OUT" "$(basename "$IMG")" | sed 's/^/sha256 /'
  } >"$OUT/MANIFEST"
  log "rootfs built in $(($(date +%s) - t0)) s: $IMG ($(du -h "$IMG" | cut -f1) allocated)"
}

smoke() {
  need_cmd qemu-system-x86_64
  [ -f "$IMG" ] || die "no $IMG; build it first"
  [ -f "$OUT_DIR/guest/vmlinuz" ] || "$IMAGES_DIR/build-guest.sh" >/dev/null
  local copy="$WORK_DIR/rootfs-smoke.raw" slog="$OUT/smoke-serial.log" pid t0 rc=1
  cp --sparse=always "$IMG" "$copy"
  : >"$slog"
  log "smoke test: booting the rootfs under TCG (limit ${SMOKE_TIMEOUT}s, serial log $slog)"
  t0=$(date +%s)
  qemu-system-x86_64 -accel tcg -cpu max -m 1024 -nodefaults -display none -no-reboot \
    -serial "file:$slog" -nic none \
    -kernel "$OUT_DIR/guest/vmlinuz" -initrd "$OUT_DIR/guest/initramfs.cpio.gz" \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 ds=nocloud;s=file:///usr/share/strata/smoke-seed/" \
    -drive "file=$copy,format=raw,if=virtio" </dev/null >"$WORK_DIR/smoke-qemu.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if grep -aq -E 'Cloud-init v\. .* finished|STRATA-ROOTFS-CLOUDINIT-RUNCMD' "$slog"; then
      rc=0
      break
    fi
    if [ $(($(date +%s) - t0)) -ge "$SMOKE_TIMEOUT" ]; then
      log "smoke test: timeout"
      break
    fi
    sleep 2
  done
  local secs=$(($(date +%s) - t0)) started=no
  grep -aq -E 'Cloud-init v\.|Starting.*cloud-init' "$slog" && started=yes
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$copy"
  tr -d '\r' <"$slog" | grep -a -E 'STRATA-|Welcome to|Cloud-init v\.|login:' | head -n 12 >&2 || true
  if [ "$rc" -eq 0 ]; then
    log "smoke test passed: systemd ran cloud-init to its final stage after ${secs}s under TCG"
    echo "smoke-test ok cloud-init-finished-seconds=$secs (tcg)" >>"$OUT/MANIFEST"
  elif [ "$started" = yes ]; then
    log "smoke test passed partly: cloud-init started but did not finish within ${secs}s"
    echo "smoke-test partial cloud-init-started (tcg, ${secs}s)" >>"$OUT/MANIFEST"
  else
    die "smoke test failed after ${secs}s: cloud-init did not start (serial log $slog)"
  fi
}

[ "$BUILD" -eq 1 ] && build
[ "$SMOKE" -eq 1 ] && smoke
exit 0
