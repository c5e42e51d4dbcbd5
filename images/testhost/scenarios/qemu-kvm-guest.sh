#!/bin/sh
# Scenario for the nested-KVM test host (runs inside it, busybox sh). Needs a host built with
#   images/testhost/build.sh --with-qemu --scenario images/testhost/scenarios/qemu-kvm-guest.sh
# Reference side of the VMM benchmark: QEMU/KVM boots the test guest from /guest/.
#  1. plain boot, strata.action=poweroff: STRATA-GUEST-USERSPACE and STRATA-GUEST-POWEROFF;
#     prints STRATA-BENCH qemu-kvm userspace_ms=<n> poweroff_ms=<n> peak_rss_kb=<n>
#  2. virtio-blk (a raw file) + virtio-net (tap0 on bridge br0 inside this host, busybox udhcpd
#     and an httpd answering as 169.254.169.254), booted twice: DISK previous=none then
#     previous=1, NET ip=10.0.2.x, METADATA ok, PING ok.
# Exit 0 when every check passed; the number of failed checks otherwise.
FW=/usr/share/qemu-fw
QEMU=qemu-system-x86_64
MEM=${STRATA_GUEST_MEM:-256}
GUEST_TIMEOUT=${STRATA_GUEST_TIMEOUT:-240}
fails=0
cr=$(printf '\r')

ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
check() { # check NAME FILE PATTERN
  if grep -q -- "$3" "$2"; then
    echo "STRATA-CHECK ok $1"
  else
    echo "STRATA-CHECK FAIL $1 (no '$3' in $2)"
    fails=$((fails + 1))
  fi
}

# run_guest NAME APPEND [QEMU ARGS...]: boots the guest with KVM, streams its console with a
# "[NAME] " prefix into our console and /tmp/NAME.log, and sets US_MS (start to the userspace
# marker), END_MS (start to QEMU exit), HWM_KB (QEMU's VmHWM, sampled on every console line).
run_guest() {
  name=$1 append=$2
  shift 2
  fifo=/tmp/$name.fifo
  rm -f "$fifo" "/tmp/$name.log"
  mkfifo "$fifo"
  t0=$(ms)
  timeout "$GUEST_TIMEOUT" "$QEMU" -enable-kvm -cpu host,-arch-capabilities -m "$MEM" -smp 1 \
    -nodefaults -display none -serial stdio -no-reboot -L "$FW" \
    -kernel /guest/vmlinuz -initrd /guest/initramfs.cpio.gz \
    -append "console=ttyS0 quiet panic=-1 $append" "$@" </dev/null >"$fifo" 2>&1 &
  pid=$!
  US_MS="" HWM_KB=""
  # busybox timeout execs QEMU in the process it started (the watchdog is its child)
  qpid=$pid
  while IFS= read -r line; do
    line=${line%"$cr"}
    case $line in
      *STRATA-GUEST-USERSPACE*) [ -n "$US_MS" ] || US_MS=$(($(ms) - t0)) ;;
    esac
    h=$(awk '/^VmHWM:/ {print $2}' "/proc/$qpid/status" 2>/dev/null)
    [ -n "$h" ] && HWM_KB=$h
    echo "[$name] $line"
    echo "$line" >>"/tmp/$name.log"
  done <"$fifo"
  wait "$pid"
  QRC=$?
  END_MS=$(($(ms) - t0))
  rm -f "$fifo"
  echo "[$name] qemu exit=$QRC userspace_ms=${US_MS:-none} total_ms=$END_MS peak_rss_kb=${HWM_KB:-unknown}"
  [ "$QRC" -eq 0 ] || { echo "STRATA-CHECK FAIL $name qemu exit $QRC"; fails=$((fails + 1)); }
}

[ -c /dev/kvm ] || { echo "STRATA-CHECK FAIL no /dev/kvm"; exit 1; }
command -v "$QEMU" >/dev/null || { echo "STRATA-CHECK FAIL no $QEMU (build with --with-qemu)"; exit 1; }
echo "guest: $(grep -E '^strata-images-version|sha256' /guest/MANIFEST | tr '\n' ' ')"

# 1. plain boot to userspace and power off
run_guest plain "strata.action=poweroff"
check plain-userspace /tmp/plain.log STRATA-GUEST-USERSPACE
check plain-poweroff /tmp/plain.log STRATA-GUEST-POWEROFF
echo "STRATA-BENCH qemu-kvm userspace_ms=${US_MS:-none} poweroff_ms=$END_MS peak_rss_kb=${HWM_KB:-unknown}"

# 2. disk + network, everything inside this host
dd if=/dev/zero of=/tmp/disk.raw bs=1M count=8 2>/dev/null
tunctl -t tap0 >/dev/null
brctl addbr br0
brctl setfd br0 0 2>/dev/null
brctl addif br0 tap0
ip addr add 10.0.2.1/24 dev br0
ip addr add 169.254.169.254/32 dev br0
ip link set tap0 up
ip link set br0 up
cat >/tmp/udhcpd.conf <<'EOF'
start 10.0.2.100
end 10.0.2.150
interface br0
lease_file /tmp/udhcpd.leases
option subnet 255.255.255.0
option router 10.0.2.1
option lease 3600
EOF
: >/tmp/udhcpd.leases
udhcpd /tmp/udhcpd.conf
mkdir -p /tmp/www/openstack/latest
echo '{"uuid": "strata-test", "name": "guest"}' >/tmp/www/openstack/latest/meta_data.json
httpd -p 169.254.169.254:80 -h /tmp/www
wget -q -O - http://169.254.169.254/openstack/latest/meta_data.json || echo "metadata httpd: local fetch failed"

NET="-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,romfile="
DISK="-drive file=/tmp/disk.raw,format=raw,if=virtio"
RNG="-device virtio-rng-pci"
# shellcheck disable=SC2086  # word splitting of the option strings is intended
run_guest devices1 "strata.net=ping:10.0.2.1 strata.action=poweroff" $NET $DISK $RNG
check disk-first /tmp/devices1.log "STRATA-GUEST-DISK previous=none"
check disk-wrote1 /tmp/devices1.log "STRATA-GUEST-DISK wrote=1"
check net-dhcp /tmp/devices1.log "STRATA-GUEST-NET ip=10.0.2."
check metadata /tmp/devices1.log "STRATA-GUEST-METADATA ok"
check ping /tmp/devices1.log "STRATA-GUEST-PING ok"
check rng /tmp/devices1.log "STRATA-GUEST-RNG ok"
echo "STRATA-BENCH qemu-kvm-devices userspace_ms=${US_MS:-none} poweroff_ms=$END_MS peak_rss_kb=${HWM_KB:-unknown}"
# shellcheck disable=SC2086
run_guest devices2 "strata.action=poweroff" $NET $DISK
check disk-second /tmp/devices2.log "STRATA-GUEST-DISK previous=1"
check disk-wrote2 /tmp/devices2.log "STRATA-GUEST-DISK wrote=2"

echo "scenario qemu-kvm-guest: $fails failed check(s)"
exit "$fails"
