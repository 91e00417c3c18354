#!/usr/bin/env bash
# bench/list.sh: wall time of `vmtui --list` with 30 running guests.
#
# Builds vmtui and bench/startpaused, defines VMS (default 30) test guests
# (the kernel and initramfs of guest/build.sh, 128M each) in a temporary
# $VMTUI_HOME, starts them paused (QEMU with -S: about 50 MiB resident each,
# no guest CPU load), checks that --list shows them all paused, then times
# RUNS (default 20) runs of `vmtui --list` after one warm-up run and prints
# the median, minimum and maximum. Everything is stopped at the end (stop -f
# -a), and the script fails if any QEMU of its own is left. The summary is
# also saved to bench/out/list.md. The goal (issue 3) is a median under
# 100 ms.
#
# Usage: bash bench/list.sh        (or: make bench)
# Environment: VMS (default 30), RUNS (default 20), BENCH_OUT (default
# bench/out), VMTUI_ACCEL (default tcg: KVM guests hang on some machines).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/guests.bash
source bench/guests.bash
out=${BENCH_OUT:-bench/out}
vms=${VMS:-30}
runs=${RUNS:-20}
mkdir -p "$out"

bench_tmp /tmp/vmtui-bench
trap stop_guests EXIT

build_guest_tools

echo "== starting $vms vms paused"
"$tmp/startpaused" -kernel "$kernel" -initrd "$initrd" -m 128M -n "$vms" -j 4 bench
paused=$("$vmtui" --list | awk '$8 == "paused"' | wc -l)
if [[ $paused != "$vms" ]]; then
	echo "bench: $paused of $vms vms are paused:" >&2
	"$vmtui" --list >&2
	exit 1
fi
rss_kib=0
for pid in $(our_qemus); do
	rss_kib=$((rss_kib + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
done

echo "== timing vmtui --list, $runs runs after one warm-up"
"$vmtui" --list >/dev/null
times=()
for ((i = 0; i < runs; i++)); do
	start=$(now_ns)
	"$vmtui" --list >/dev/null
	end=$(now_ns)
	times+=($(((end - start) / 1000)))
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
n=${#sorted[@]}
if ((n % 2)); then
	median_us=${sorted[n / 2]}
else
	median_us=$(((sorted[n / 2 - 1] + sorted[n / 2]) / 2))
fi
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }

echo "== stopping them all"
if ! "$vmtui" stop -f -a >/dev/null 2>"$tmp/stop.err"; then
	cat "$tmp/stop.err" >&2
	exit 1
fi
left=$(our_qemus)
if [[ -n $left ]]; then
	echo "bench: QEMUs still running after stop -f -a: $left" >&2
	exit 1
fi
if "$vmtui" --list | awk 'NR > 1 && $8 != "stopped"' | grep -q .; then
	echo "bench: vms not stopped after stop -f -a:" >&2
	"$vmtui" --list >&2
	exit 1
fi

{
	echo "| vms (paused) | runs | median (ms) | min (ms) | max (ms) | QEMU RSS total (MiB) |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
	echo "| $vms | $runs | $(ms "$median_us") | $(ms "${sorted[0]}") | $(ms "${sorted[n - 1]}") | $((rss_kib / 1024)) |"
} | tee "$out/list.md"
echo "all runs (ms): $(for t in "${times[@]}"; do printf '%s ' "$(ms "$t")"; done)"
