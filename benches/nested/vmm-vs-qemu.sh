#!/bin/sh
# Benchmark scenario for the nested-KVM test host: the same guest (kernel, initramfs, memory,
# 1 vCPU, no devices beyond the serial console) booted to its userspace marker and powered
# off, alternately by Strata's VMM (`strata vmm`) and by `qemu-system-x86_64 -enable-kvm`.
# For each run: milliseconds from process start to STRATA-GUEST-USERSPACE on the console,
# and the monitor's memory overhead = its total RSS minus the RSS of the guest RAM mapping,
# sampled when the marker appears, and its largest value over the VM's whole life (every
# 20 ms, as Firecracker's memory monitor does). Then the same for firmware boot: strata-tiny
# (its own GRUB, kernel, initramfs, dropbear) from a virtio disk through SeaBIOS
# (Strata's VMM: bios-microvm.bin; QEMU: its default bios-256k.bin), to the guest's
# STRATA-TINY-READY marker (its SSH server listening), with its config drive as a second
# disk. Prints one STRATA-BENCH line per run.
STRATA=@STRATA@
ROUNDS=@ROUNDS@
MEM=256
FW=/usr/share/qemu-fw
ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
# overhead PID -> "<overhead kb> <guest kb> <anon overhead kb>": RSS minus the guest RAM
# mapping's RSS, and the anonymous (per-VM, never shared) part of that overhead.
overhead() {
  awk -v want=$((MEM * 1024)) '
    /^[0-9a-f]+-[0-9a-f]+ / { cur = 0 }
    /^Size:/ { cur = ($2 == want) }
    /^Rss:/ { total += $2; if (cur) guest += $2 }
    /^Anonymous:/ { if (!cur) anon += $2 }
    END { printf "%d %d %d\n", total - guest, guest, anon }' "/proc/$1/smaps"
}
# measure NAME PID CONSOLE [MARKER [STOP]]: waits for the marker and the process's end
# (or, with STOP, ends it once the marker is there), prints the result.
measure() {
  name=$1 pid=$2 console=$3 marker=${4:-STRATA-GUEST-USERSPACE} stop=${5:-} us="" ov="" gk="" an=""
  maxov=0
  deadline=$(($(ms) + 150000))
  while kill -0 "$pid" 2>/dev/null; do
    set -- $(overhead "$pid" 2>/dev/null) 0
    [ "$1" -gt "$maxov" ] 2>/dev/null && maxov=$1
    if [ -n "$us" ] && [ -n "$stop" ]; then
      kill -TERM "$pid"
      break
    fi
    if [ -z "$us" ] && grep -q "$marker" "$console" 2>/dev/null; then
      us=$(($(ms) - t0))
      set -- $(overhead "$pid")
      ov=$1 gk=$2 an=$3
      if [ "$r" -eq 1 ]; then
        # Where the overhead lives: the largest mappings by RSS (first round only).
        awk '/^[0-9a-f]+-[0-9a-f]+ / { name = $6 == "" ? "[anon]" : $6 }
             /^Rss:/ { rss[name] += $2 }
             END { for (n in rss) printf "%d %s\n", rss[n], n }' "/proc/$pid/smaps" |
          sort -rn | head -8 | sed "s/^/STRATA-BENCH-RSS $name kb=/"
      fi
    fi
    [ "$(ms)" -lt "$deadline" ] || { kill -KILL "$pid"; break; }
    sleep 0.02
  done
  wait "$pid"
  echo "STRATA-BENCH $name round=$r userspace_ms=${us:-none} overhead_kb=${ov:-none} anon_overhead_kb=${an:-none} guest_rss_kb=${gk:-none} max_overhead_kb=$maxov"
}
CMDLINE="console=ttyS0 reboot=k panic=-1 quiet strata.action=poweroff"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  rm -rf /tmp/vm && mkdir -p /tmp/vm
  cat >/tmp/vm/vm.json <<JSON
{"id":"bench","vcpus":1,"ram_mb":$MEM,"kernel":"/guest/vmlinuz","initrd":"/guest/initramfs.cpio.gz",
 "cmdline":"$CMDLINE pci=off","disk":null,"tap":null}
JSON
  t0=$(ms)
  "$STRATA" vmm --dir /tmp/vm --name strata-vm-bench >/tmp/vm/worker.log 2>&1 &
  measure strata-vmm $! /tmp/vm/console.log

  rm -f /tmp/qemu.console
  t0=$(ms)
  qemu-system-x86_64 -enable-kvm -cpu host,-arch-capabilities -m "$MEM" -smp 1 -nodefaults \
    -display none -no-user-config -serial file:/tmp/qemu.console -no-reboot -L "$FW" \
    -kernel /guest/vmlinuz -initrd /guest/initramfs.cpio.gz -append "$CMDLINE" </dev/null \
    >/tmp/qemu.out 2>&1 &
  measure qemu-kvm $! /tmp/qemu.console

  # Firmware boot of strata-tiny.
  rm -rf /tmp/fw && mkdir -p /tmp/fw
  cat >/tmp/fw/vm.json <<JSON
{"id":"benchfw","vcpus":1,"ram_mb":$MEM,"kernel":"","initrd":null,"cmdline":"",
 "disk":"/guest/tiny.raw","tap":null,"config_drive":"/guest/tiny-config.iso",
 "firmware":"/guest/bios-microvm.bin"}
JSON
  t0=$(ms)
  "$STRATA" vmm --dir /tmp/fw --name strata-vm-benchfw >/tmp/fw/worker.log 2>&1 &
  measure strata-vmm-fw $! /tmp/fw/console.log STRATA-TINY-READY stop

  rm -f /tmp/qemu-fw.console
  t0=$(ms)
  qemu-system-x86_64 -enable-kvm -cpu host,-arch-capabilities -m "$MEM" -smp 1 -nodefaults \
    -display none -no-user-config -serial file:/tmp/qemu-fw.console -no-reboot -L "$FW" \
    -drive file=/guest/tiny.raw,if=virtio,format=raw,snapshot=on \
    -drive file=/guest/tiny-config.iso,if=virtio,format=raw,readonly=on </dev/null \
    >/tmp/qemu-fw.out 2>&1 &
  measure qemu-kvm-fw $! /tmp/qemu-fw.console STRATA-TINY-READY stop
  r=$((r + 1))
done
