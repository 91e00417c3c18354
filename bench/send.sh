#!/usr/bin/env bash
# bench/send.sh: vmtui send of a 1 GiB guest that has touched 100 MiB.
#
# Builds vmtui and the test guest, defines in a temporary $VMTUI_HOME a test
# guest of 1 GiB whose script (vmtui.script, on a small raw disk) fills
# 100 MiB of its RAM with random bytes (a file in its initramfs, /tmp) and
# says so; starts it and waits for that. Then, RUNS times (default 3):
# vmtui send to a file, timed (wall time of the command, process start
# included, as a user sees it), the stream's size noted, and vmtui receive
# of it, so that the next run sends the same guest again. The issue's goal:
# under 1 s, and a stream under 120 MiB (pages of zeros are not sent; the
# rest is compressed where that pays: random bytes do not compress). Also
# times vmtui save and the start that resumes it. Prints a Markdown table,
# also saved to bench/out/send.md. Everything is stopped at the end.
#
# Usage: bash bench/send.sh       (or: make bench)
# Environment: RUNS (default 3), BENCH_OUT (default bench/out),
# VMTUI_ACCEL (default tcg: KVM guests hang on some machines), KEEP_STREAM
# (a path to keep the last stream at, for a closer look), FILL_MIB (default
# 100: the MiB of random bytes the guest fills; 0 measures what the guest
# touches by booting alone), SETTLE (default 0: seconds to let the guest
# run after the fill, before the first send).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/guests.bash
source bench/guests.bash
out=${BENCH_OUT:-bench/out}
runs=${RUNS:-3}
mkdir -p "$out"

bench_tmp /tmp/vmtui-bench
trap stop_guests EXIT

build_guest_tools

# The script disk: the script, then NULs to a whole 4 KiB block.
script=$tmp/fill.raw
fill=${FILL_MIB:-100}
printf '%s\n' "dd if=/dev/urandom of=/tmp/fill bs=1M count=$fill 2>/dev/null" 'echo "filled $(wc -c </tmp/fill)"' >"$script"
truncate -s 4096 "$script"

mkdir -p "$VMTUI_HOME/vms"
cat >"$VMTUI_HOME/vms/bench.toml" <<EOF
id = 1
name = "bench"
memory = "1G"
cpus = 1
machine = "q35"
kernel = "$kernel"
initrd = "$initrd"
append = "console=ttyS0 quiet panic=-1 vmtui.script=vmtui-script"
extra_args = ["-drive", "file=$script,format=raw,if=none,id=script,readonly=on", "-device", "virtio-blk-pci,drive=script,serial=vmtui-script"]
EOF

ms() { awk -v d="$1" 'BEGIN { printf "%.0f", d / 1e6 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

echo "== starting a 1 GiB guest that fills $fill MiB of its RAM"
"$vmtui" start bench 2>/dev/null
log=$VMTUI_HOME/log/bench/serial.log
for ((i = 0; i < 1200; i++)); do
	grep -q "^filled $((fill << 20))" "$log" 2>/dev/null && break
	sleep 0.1
done
grep -q "^filled $((fill << 20))" "$log" || { echo "bench: the guest did not fill its RAM:" >&2; cat "$log" >&2; exit 1; }
if ((${SETTLE:-0} > 0)); then
	# Free page reporting (the guest's virtio_balloon) hands the pages the
	# guest freed back to QEMU some seconds after they were freed, in
	# passes two seconds apart: a guest that has run a while sends less.
	echo "== letting the guest settle for $SETTLE s"
	sleep "$SETTLE"
fi
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$(cat "$VMTUI_HOME/run/bench/qemu.pid")/status")
echo "QEMU resident: $((rss / 1024)) MiB"

rows=()
for ((r = 1; r <= runs; r++)); do
	stream=$tmp/bench.vmstream
	t0=$(now_ns)
	"$vmtui" send bench >"$stream" 2>"$tmp/send.err" || { cat "$tmp/send.err" >&2; exit 1; }
	t1=$(now_ns)
	size=$(stat -c %s "$stream")
	echo "send $r: $(ms $((t1 - t0))) ms, $(mib "$size") MiB"
	rows+=("| send | $r | $(ms $((t1 - t0))) | $(mib "$size") |")
	# Back again, as another VM of the same state root, then under its own name.
	"$vmtui" remove bench 2>/dev/null
	t0=$(now_ns)
	"$vmtui" receive bench <"$stream" 2>"$tmp/receive.err" || { cat "$tmp/receive.err" >&2; exit 1; }
	t1=$(now_ns)
	echo "receive $r: $(ms $((t1 - t0))) ms"
	rows+=("| receive | $r | $(ms $((t1 - t0))) | |")
	[[ -z ${KEEP_STREAM:-} ]] || cp "$stream" "$KEEP_STREAM"
	rm -f "$stream"
done

t0=$(now_ns)
"$vmtui" save bench 2>/dev/null
t1=$(now_ns)
size=$(stat -c %s "$VMTUI_HOME/saved/bench")
rows+=("| save | 1 | $(ms $((t1 - t0))) | $(mib "$size") |")
t0=$(now_ns)
"$vmtui" start bench 2>/dev/null
t1=$(now_ns)
rows+=("| start (resume) | 1 | $(ms $((t1 - t0))) | |")
"$vmtui" stop -f bench >/dev/null 2>&1

{
	echo "1 GiB guest (TCG) that touched $fill MiB of random bytes, sent ${SETTLE:-0} s after; QEMU resident $((rss / 1024)) MiB; $(date -u +%Y-%m-%d)"
	echo
	echo "| operation | run | wall ms | stream MiB |"
	echo "| --- | --- | --- | --- |"
	printf '%s\n' "${rows[@]}"
} | tee "$out/send.md"
