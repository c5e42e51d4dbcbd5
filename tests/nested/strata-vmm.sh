#!/bin/sh
# Scenario for the nested-KVM test host (images/testhost): Strata's own VMM (`strata vmm`,
# the KVM driver's per-VM worker) boots the test guest on real KVM.
#  1. plain boot with strata.action=poweroff: userspace marker, power-off reported in
#     events.log, worker exits 0; prints STRATA-BENCH lines (time to the userspace marker,
#     worker memory overhead = RSS minus the guest RAM mapping's RSS).
#  2. virtio-blk + virtio-net (tap0 on br0 with udhcpd here) + virtio-rng, booted twice:
#     disk previous=none then previous=1 (data survives a VM restart), DHCP, ping.
#  3. strata.action=reboot: the guest reboot is reported and the VM comes back.
#  3b. firmware boot (SeaBIOS) of strata-tiny, a cloud image with its own GRUB, with a
#     config drive and two NICs, to an SSH login with the key the config drive carries.
#  4. a single-node cluster running the guest through the KVM driver: create, console
#     (read, and typed into),
#     pause/resume, reboot, a graceful stop (ACPI power button), start, a forced stop of a
#     paused VM, delete; and a VM whose disk is a Strata volume (over NBD).
# The harness replaces @STRATA@ with the path of the strata binary copied in.
STRATA=@STRATA@
MEM=${STRATA_GUEST_MEM:-256}
fails=0
ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
check() { # check NAME FILE PATTERN
  if grep -q -- "$3" "$2"; then
    echo "STRATA-CHECK ok $1"
  else
    echo "STRATA-CHECK FAIL $1 (no '$3' in $2)"
    fails=$((fails + 1))
  fi
}
spec() { # spec DIR CMDLINE DISK TAP [VCPUS] [UID]
  mkdir -p "$1"
  vcpus=${5:-1}
  uid=${6:-null}
  disk=null; [ -n "$3" ] && disk="\"$3\""
  tap=null; [ -n "$4" ] && tap="\"$4\""
  cat >"$1/vm.json" <<JSON
{"id":"$(basename "$1")","vcpus":$vcpus,"ram_mb":$MEM,"kernel":"/guest/vmlinuz",
 "initrd":"/guest/initramfs.cpio.gz","cmdline":"console=ttyS0 reboot=k panic=-1 pci=off quiet $2",
 "disk":$disk,"tap":$tap,"uid":$uid}
JSON
}
# overhead_kb PID GUEST_MB: total RSS minus the RSS of the guest RAM mapping(s).
overhead_kb() {
  awk -v want=$(($2 * 1024)) '
    /^[0-9a-f]+-[0-9a-f]+ / { cur = 0 }
    /^Size:/ { cur = ($2 == want) }
    /^Rss:/ { total += $2; if (cur) guest += $2 }
    END { printf "%d %d\n", total - guest, guest }' "/proc/$1/smaps"
}
# run_vm DIR: runs the worker in the foreground, sets US_MS, OVER_KB, GUEST_KB, RC.
run_vm() {
  t0=$(ms)
  "$STRATA" vmm --dir "$1" --name "strata-vm-$(basename "$1")" >"$1/worker.log" 2>&1 &
  pid=$!
  US_MS="" OVER_KB="" GUEST_KB="" SECCOMP=""
  deadline=$(($(ms) + ${VM_TIMEOUT:-150} * 1000))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(ms)" -gt "$deadline" ]; then
      echo "[$(basename "$1")] timed out; console so far:"
      tail -c 3000 "$1/console.log" 2>/dev/null
      echo "[$(basename "$1")] worker log:"
      tail -n 20 "$1/worker.log"
      kill -KILL "$pid"
      break
    fi
    if [ -z "$US_MS" ] && grep -q STRATA-GUEST-USERSPACE "$1/console.log" 2>/dev/null; then
      US_MS=$(($(ms) - t0))
      set -- "$1" $(overhead_kb "$pid" "$MEM")
      OVER_KB=$2 GUEST_KB=$3
      SECCOMP=$(awk '/^Seccomp:/ {print $2}' "/proc/$pid/status")
    fi
    if [ -n "${STOP_AFTER_REBOOT:-}" ] && grep -q "reset guest rebooted" "$1/events.log" 2>/dev/null \
      && [ "$(grep -c STRATA-GUEST-USERSPACE "$1/console.log")" -ge 2 ]; then
      kill -TERM "$pid"
    fi
    sleep 0.05
  done
  wait "$pid"
  RC=$?
  # The guest ran under the worker's seccomp filter (mode 2).
  if [ -n "$US_MS" ] && [ "$SECCOMP" != 2 ]; then
    echo "STRATA-CHECK FAIL $(basename "$1") seccomp mode ${SECCOMP:-unknown}"
    fails=$((fails + 1))
  fi
  sed "s|^|[$(basename "$1")] |" "$1/console.log" | grep -E "STRATA-|Kernel panic|error|Brought up" || true
  echo "[$(basename "$1")] worker exit=$RC userspace_ms=${US_MS:-none} events: $(tr '\n' ';' <"$1/events.log")"
}

[ -c /dev/kvm ] || { echo "STRATA-CHECK FAIL no /dev/kvm"; exit 1; }
# A heartbeat, so that the harness can tell a slow test host from a hung one.
( while true; do sleep 10; echo "STRATA-TICK $(cut -d' ' -f1 /proc/uptime)"; done ) &

# 1. plain boot, power off
spec /tmp/plain "strata.action=poweroff" "" ""
run_vm /tmp/plain
check plain-userspace /tmp/plain/console.log STRATA-GUEST-USERSPACE
check plain-poweroff-marker /tmp/plain/console.log STRATA-GUEST-POWEROFF
check plain-poweroff-event /tmp/plain/events.log "shutdown guest powered off"
[ "$RC" -eq 0 ] || { echo "STRATA-CHECK FAIL plain worker exit $RC"; fails=$((fails + 1)); }
check plain-seccomp /tmp/plain/worker.log "seccomp filter installed"
echo "STRATA-BENCH strata-vmm userspace_ms=${US_MS:-none} overhead_kb=${OVER_KB:-none} guest_rss_kb=${GUEST_KB:-none}"

# 1b. two vCPUs: the guest counts the CPUs it brought up
spec /tmp/smp "strata.action=poweroff" "" "" 2
run_vm /tmp/smp
check smp-cpus /tmp/smp/console.log "STRATA-GUEST-CPUS n=2"
check smp-userspace /tmp/smp/console.log STRATA-GUEST-USERSPACE
check smp-poweroff-event /tmp/smp/events.log "shutdown guest powered off"

# 2. disk, network, rng; twice
dd if=/dev/zero of=/tmp/disk.raw bs=1M count=8 2>/dev/null
tunctl -t tap0 >/dev/null
brctl addbr br0
brctl setfd br0 0 2>/dev/null
brctl addif br0 tap0
ip addr add 10.0.2.1/24 dev br0
ip link set tap0 up
ip link set br0 up
cat >/tmp/udhcpd.conf <<'CONF'
start 10.0.2.100
end 10.0.2.150
interface br0
lease_file /tmp/udhcpd.leases
option subnet 255.255.255.0
option router 10.0.2.1
option lease 3600
CONF
: >/tmp/udhcpd.leases
udhcpd /tmp/udhcpd.conf
# As an unprivileged user of its own, as the KVM driver runs it: the disk and the TAP
# were opened before the worker left root.
spec /tmp/dev1 "strata.net=ping:10.0.2.1 strata.action=poweroff" /tmp/disk.raw tap0 1 1879048200
run_vm /tmp/dev1
check dev1-unprivileged /tmp/dev1/worker.log "uid=1879048200"
check disk-first /tmp/dev1/console.log "STRATA-GUEST-DISK previous=none"
check disk-wrote1 /tmp/dev1/console.log "STRATA-GUEST-DISK wrote=1"
check net-dhcp /tmp/dev1/console.log "STRATA-GUEST-NET ip=10.0.2."
check net-ping /tmp/dev1/console.log "STRATA-GUEST-PING ok"
check rng /tmp/dev1/console.log "STRATA-GUEST-RNG ok"
spec /tmp/dev2 "strata.action=poweroff" /tmp/disk.raw ""
run_vm /tmp/dev2
check disk-second /tmp/dev2/console.log "STRATA-GUEST-DISK previous=1"

# 3. guest reboot
spec /tmp/reboot "strata.action=reboot" "" ""
STOP_AFTER_REBOOT=1 run_vm /tmp/reboot
check reboot-marker /tmp/reboot/console.log STRATA-GUEST-REBOOT
check reboot-event /tmp/reboot/events.log "reset guest rebooted"

# 3b. firmware boot: strata-tiny (a cloud image with GRUB on its own disk) through SeaBIOS,
#     with its config drive as a second disk and two NICs; then an SSH login with its key.
if [ -f /guest/tiny.raw ]; then
  tunctl -t tap1 >/dev/null
  brctl addif br0 tap1
  ip link set tap1 up
  mkdir -p /tmp/tiny
  cat >/tmp/tiny/vm.json <<JSON
{"id":"tiny","vcpus":1,"ram_mb":$MEM,"kernel":"","initrd":null,"cmdline":"",
 "disk":"/guest/tiny.raw","tap":"tap0","mac":"52:54:00:00:00:10",
 "more_nics":[{"tap":"tap1","mac":"52:54:00:00:00:11"}],
 "config_drive":"/guest/tiny-config.iso","firmware":"/guest/bios-microvm.bin","uid":1879048201}
JSON
  "$STRATA" vmm --dir /tmp/tiny --name strata-vm-tiny >/tmp/tiny/worker.log 2>&1 &
  tpid=$!
  t0=$(ms)
  i=0
  until grep -q STRATA-TINY-READY /tmp/tiny/console.log 2>/dev/null || [ $i -ge 1800 ]; do
    sleep 0.1; i=$((i + 1))
  done
  echo "STRATA-BENCH strata-vmm-firmware ssh_ready_ms=$(($(ms) - t0))"
  grep -a -E "SeaBIOS|Booting|STRATA-TINY|Kernel panic" /tmp/tiny/console.log | sed 's/^/[tiny] /'
  check tiny-seabios /tmp/tiny/console.log "SeaBIOS"
  check tiny-ready /tmp/tiny/console.log "STRATA-TINY-READY hostname=tiny-vmm"
  check tiny-configdrive /tmp/tiny/console.log "STRATA-TINY-DATASOURCE configdrive"
  check tiny-keys /tmp/tiny/console.log "STRATA-TINY-KEYS n=1"
  check tiny-nic0 /tmp/tiny/console.log "STRATA-TINY-NET eth0 ip=10.0.2."
  check tiny-nic1 /tmp/tiny/console.log "STRATA-TINY-NET eth1 ip=10.0.2."
  addr=$(grep -a -o "STRATA-TINY-NET eth0 ip=[0-9.]*" /tmp/tiny/console.log | head -n1 | sed 's/.*ip=//')
  mkdir -p /root/.ssh
  i=0
  until ssh -i /guest/tiny_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR "root@$addr" 'echo "ssh-on=$(hostname)"' \
    >/tmp/tiny/ssh.out 2>&1 || [ $i -ge 6 ]; do sleep 2; i=$((i + 1)); done
  cat /tmp/tiny/ssh.out | sed 's/^/[tiny ssh] /'
  check tiny-ssh /tmp/tiny/ssh.out "ssh-on=tiny-vmm"
  kill -TERM "$tpid"
  wait "$tpid"
fi

# 4. the whole node: a single-node cluster whose agent runs the VM with the KVM driver
S="$STRATA --data-dir /tmp/node"
$S init --listen 127.0.0.1:7440 --cluster-name nested >/dev/null 2>&1
$S serve --listen 127.0.0.1:7440 --metrics-listen off >/tmp/node.log 2>&1 &
spid=$!
i=0
until $S status >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.2; i=$((i + 1)); done
$S status | grep -i "hypervisor\|kvm" | head -3
$S vm create web --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz --ram 256 \
  --cmdline "console=ttyS0 reboot=k panic=-1 pci=off quiet" --wait 150 >/tmp/web.txt 2>&1
cat /tmp/web.txt | grep -E "state|driver|reason"
check node-vm-active /tmp/web.txt "ACTIVE"
check node-vm-driver /tmp/web.txt "driver  *kvm"
i=0
until $S vm console web 2>/dev/null | grep -q STRATA-GUEST-USERSPACE || [ $i -ge 150 ]; do sleep 1; i=$((i + 1)); done
$S vm console web >/tmp/web.console 2>&1
check node-vm-console /tmp/web.console STRATA-GUEST-USERSPACE
# Typing into the console (agent → KVM driver → worker → UART): the guest's shell runs it.
i=0
until $S vm console web 2>/dev/null | grep -q STRATA-GUEST-SHELL || [ $i -ge 60 ]; do sleep 1; i=$((i + 1)); done
$S vm console web --type 'echo STRATA-TYPED-$((6*7))' >/tmp/web.type 2>&1
i=0
until $S vm console web 2>/dev/null | grep -q STRATA-TYPED-42 || [ $i -ge 30 ]; do sleep 1; i=$((i + 1)); done
$S vm console web >/tmp/web.console-typed 2>&1
cat /tmp/web.type
check node-vm-console-input /tmp/web.console-typed STRATA-TYPED-42
check node-vm-seccomp "$(ls /tmp/node/vms/*/worker.log | head -1)" "seccomp filter installed"
# The driver runs each worker as a user of its own (0x70000000 and up), not root.
wuid=$(awk '/^Uid:/ {print $2}' "/proc/$(cat /tmp/node/vms/*/vmm.pid | head -1)/status")
if [ "${wuid:-0}" -ge 1879048192 ]; then echo "STRATA-CHECK ok node-vm-uid"; else
  echo "STRATA-CHECK FAIL node-vm-uid (worker uid ${wuid:-unknown})"; fails=$((fails + 1)); fi
$S vm pause web --wait 60 >/tmp/web.pause 2>&1
check node-vm-pause /tmp/web.pause "state  *PAUSED"
$S vm resume web --wait 60 >/tmp/web.resume 2>&1
check node-vm-resume /tmp/web.resume "state  *ACTIVE"
$S vm reboot web >/dev/null 2>&1
i=0
until $S vm show web 2>/dev/null | grep -q "boots  *2" || [ $i -ge 120 ]; do sleep 1; i=$((i + 1)); done
$S vm show web >/tmp/web.reboot 2>&1
check node-vm-reboot /tmp/web.reboot "boots  *2"
# A graceful stop: the ACPI power button, which the guest's acpid turns into a power-off.
i=0
until [ "$(cat /tmp/node/vms/*/console.log | grep -c STRATA-GUEST-SHELL)" -ge 2 ] || [ $i -ge 60 ]; do
  sleep 1; i=$((i + 1))
done
$S vm stop web --wait 60 >/tmp/web.stop 2>&1
echo "node-vm-stop: $(grep reason /tmp/web.stop)"
check node-vm-stop /tmp/web.stop SHUTOFF
check node-vm-stop-clean /tmp/web.stop "the guest shut down cleanly"
$S vm console web >/tmp/web.console2 2>&1
check node-vm-powerbutton /tmp/web.console2 STRATA-GUEST-POWERBUTTON
# A paused guest cannot react to the button: stopped by force at once, and said so.
$S vm start web --wait 150 >/tmp/web.start 2>&1
check node-vm-start /tmp/web.start "state  *ACTIVE"
$S vm pause web --wait 60 >/dev/null 2>&1
$S vm stop web --wait 60 >/tmp/web.stop2 2>&1
echo "node-vm-stop (paused): $(grep reason /tmp/web.stop2)"
check node-vm-stop-forced /tmp/web.stop2 "forced: the VM is paused"
$S vm delete web --wait 60 >/tmp/web.delete 2>&1
check node-vm-delete /tmp/web.delete "deleted VM web"
[ -z "$(ls /tmp/node/vms 2>/dev/null)" ] || { echo "STRATA-CHECK FAIL node-vm-files left: $(ls /tmp/node/vms)"; fails=$((fails + 1)); }
# A VM whose disk is a Strata volume: the worker reaches it over the node's NBD socket.
$S volume create vd --size 16M --wait 30 >/tmp/vd.txt 2>&1
check node-volume /tmp/vd.txt "status  *available"
$S vm create vdisk --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz --ram 256 --volume vd \
  --cmdline "console=ttyS0 reboot=k panic=-1 pci=off quiet strata.action=poweroff" --wait 150 >/tmp/vdisk.txt 2>&1
i=0
until $S vm console vdisk 2>/dev/null | grep -q "STRATA-GUEST-POWEROFF" || [ $i -ge 150 ]; do sleep 1; i=$((i + 1)); done
$S vm console vdisk >/tmp/vdisk.console 2>&1
check node-volume-disk-first /tmp/vdisk.console "STRATA-GUEST-DISK previous=none"
check node-volume-disk-wrote /tmp/vdisk.console "STRATA-GUEST-DISK wrote=1"
$S vm start vdisk >/dev/null 2>&1
i=0
until $S vm console vdisk 2>/dev/null | grep -q "STRATA-GUEST-DISK previous=1" || [ $i -ge 150 ]; do sleep 1; i=$((i + 1)); done
$S vm console vdisk >/tmp/vdisk.console2 2>&1
check node-volume-disk-kept /tmp/vdisk.console2 "STRATA-GUEST-DISK previous=1"
kill -TERM "$spid"
wait "$spid" 2>/dev/null
grep -E "ERROR|WARN" /tmp/node.log | tail -5

echo "scenario strata-vmm: $fails failed check(s)"
exit "$fails"
