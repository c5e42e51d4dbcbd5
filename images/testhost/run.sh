#!/usr/bin/env bash
# Boots a test host initramfs (images/testhost/build.sh) under QEMU TCG with the Debian
# cloud kernel and returns the scenario's exit code.
# Usage: images/testhost/run.sh --initrd FILE [--mem MB] [--timeout S] [--log FILE]
#          [--disk FILE]... [--kernel FILE] [--append "EXTRA KERNEL ARGS"]
# Exit status: the n of "STRATA-TESTHOST-DONE rc=<n>" from the serial console;
#   124 on timeout, 125 when the host stopped without printing the marker,
#   2 on usage errors. The serial console goes to stdout and to the log.
set -euo pipefail
# shellcheck source=images/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

initrd=""
mem=2048
timeout=600
logf=""
kernel="$OUT_DIR/guest/vmlinuz"
extra=""
disks=()
usage() { sed -n '2,9p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --initrd) initrd=${2:-}; shift 2 ;;
    --mem) mem=${2:-}; shift 2 ;;
    --timeout) timeout=${2:-}; shift 2 ;;
    --log) logf=${2:-}; shift 2 ;;
    --disk) disks+=("${2:-}"); shift 2 ;;
    --kernel) kernel=${2:-}; shift 2 ;;
    --append) extra=${2:-}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done
[ -n "$initrd" ] || { echo "error: --initrd FILE is required" >&2; usage; }
[ -f "$initrd" ] || { echo "error: --initrd $initrd: no such file" >&2; exit 2; }
[ -f "$kernel" ] || { echo "error: kernel $kernel missing (run images/build-guest.sh)" >&2; exit 2; }
need_cmd qemu-system-x86_64 timeout tee
if [ -z "$logf" ]; then
  logf=$(mktemp /tmp/strata-testhost.XXXXXX.log)
fi
mkdir -p "$(dirname "$logf")"

# The serial console goes straight to the log file (QEMU writes it; tail streams it).
: >"$logf"
args=(-accel tcg -cpu max -m "$mem" -smp 1 -display none -monitor none -no-reboot -nic none
      -serial "file:$logf"
      -kernel "$kernel" -initrd "$initrd"
      -append "console=ttyS0 panic=-1 quiet loglevel=4 $extra")
for d in "${disks[@]}"; do
  [ -f "$d" ] || { echo "error: --disk $d: no such file" >&2; exit 2; }
  args+=(-drive "file=$d,format=raw,if=virtio")
done

echo "[testhost] qemu-system-x86_64 ${args[*]} (timeout ${timeout}s, log $logf)" >&2
t0=$(date +%s.%N)
set +e
timeout -k 10 "$timeout" qemu-system-x86_64 "${args[@]}" </dev/null >"$logf.qemu" 2>&1 &
qpid=$!
tail -n +1 -F --pid="$qpid" "$logf" 2>/dev/null
wait "$qpid"
qrc=$?
cat "$logf.qemu" >&2 2>/dev/null || true
rm -f "$logf.qemu"
set -e
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
marker=$(tr -d '\r' <"$logf" | grep -a -o 'STRATA-TESTHOST-DONE rc=[0-9]*' | tail -n 1 || true)
if [ -n "$marker" ]; then
  rc=${marker##*rc=}
  echo "[testhost] done rc=$rc after ${secs}s (log $logf)" >&2
  exit "$rc"
fi
if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
  echo "[testhost] TIMEOUT after ${secs}s without STRATA-TESTHOST-DONE (log $logf)" >&2
  exit 124
fi
echo "[testhost] qemu exited ($qrc) after ${secs}s without STRATA-TESTHOST-DONE (log $logf)" >&2
exit 125
