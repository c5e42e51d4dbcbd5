#!/bin/sh
# Scenario for the nested-KVM test host: QEMU/KVM boots the Debian rootfs
# (images/build-rootfs.sh) from the test host's /dev/vda with the test guest's kernel and
# initramfs, and waits for cloud-init's final stage (NoCloud smoke seed in the image).
#   images/testhost/build.sh --with-qemu --scenario images/testhost/scenarios/rootfs-kvm.sh \
#     --out images/out/testhost/rootfs-kvm.cpio.gz
#   images/testhost/run.sh --initrd images/out/testhost/rootfs-kvm.cpio.gz --timeout 900 \
#     --disk images/out/rootfs/debian-12-strata.raw
# The image is not modified (the inner QEMU runs with -snapshot; the overlay lives in RAM).
# Prints STRATA-BENCH qemu-kvm-rootfs root_mounted_ms=<n> cloudinit_ms=<n> peak_rss_kb=<n>.
FW=/usr/share/qemu-fw
LIMIT=${STRATA_ROOTFS_TIMEOUT:-600}
export TMPDIR=/tmp
mkdir -p /var/tmp  # QEMU puts the -snapshot overlay there
cr=$(printf '\r')
ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

[ -c /dev/kvm ] || { echo "STRATA-CHECK FAIL no /dev/kvm"; exit 1; }
[ -b /dev/vda ] || { echo "STRATA-CHECK FAIL no /dev/vda (run.sh --disk ROOTFS.raw)"; exit 1; }

fifo=/tmp/rootfs.fifo
mkfifo "$fifo"
t0=$(ms)
timeout "$LIMIT" qemu-system-x86_64 -enable-kvm -cpu host,-arch-capabilities -m 512 -smp 1 \
  -nodefaults -display none -serial stdio -no-reboot -L "$FW" -snapshot \
  -kernel /guest/vmlinuz -initrd /guest/initramfs.cpio.gz \
  -append "console=ttyS0 root=/dev/vda rw panic=-1 ds=nocloud;s=file:///usr/share/strata/smoke-seed/" \
  -drive file=/dev/vda,format=raw,if=virtio </dev/null >"$fifo" 2>&1 &
pid=$!
us="" ci="" hwm="" ok=1
while IFS= read -r line; do
  line=${line%"$cr"}
  echo "[rootfs] $line"
  case $line in
    *STRATA-GUEST-ROOT\ mounted*) [ -n "$us" ] || us=$(($(ms) - t0)) ;;
    *STRATA-ROOTFS-CLOUDINIT-RUNCMD*)
      ci=$(($(ms) - t0))
      hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
      ok=0
      kill "$pid"
      break
      ;;
  esac
done <"$fifo"
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
echo "STRATA-BENCH qemu-kvm-rootfs root_mounted_ms=${us:-none} cloudinit_ms=${ci:-none} peak_rss_kb=${hwm:-unknown}"
if [ "$ok" -eq 0 ]; then
  echo "STRATA-CHECK ok rootfs-cloud-init"
else
  echo "STRATA-CHECK FAIL rootfs-cloud-init (no runcmd marker within ${LIMIT}s)"
fi
exit "$ok"
