#!/usr/bin/env bash
# bench/snapshot.sh: a disk-only internal snapshot and its deletion, vmtui
# disk snapshot against qemu-img snapshot, side by side.
#
# Builds vmtui, makes a 10 GiB qcow2 image (64 KiB clusters) with 2 GiB
# allocated (qemu-img create -o preallocation=falloc of 2 GiB, grown to
# 10 GiB), then times, RUNS times (default 5), the two tools alternating:
# create a snapshot (-c), delete it (-d). Wall time of the whole command
# (process start included, as a user sees it); the best and the median of
# the runs. qemu-img check must find the image clean after each tool's runs.
# Prints a Markdown table, also saved to bench/out/snapshot.md.
#
# Usage: bash bench/snapshot.sh      (or: make bench)
# Environment: RUNS (default 5), BENCH_OUT (default bench/out).
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
out=${BENCH_OUT:-bench/out}
runs=${RUNS:-5}
mkdir -p "$out"

for t in qemu-img go; do
	command -v "$t" >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
done

echo "== building vmtui"
go build -o "$out/vmtui" .
vmtui=$out/vmtui

img=$out/snapshot-10g.qcow2
rm -f "$img"
qemu-img create -q -f qcow2 -o preallocation=falloc "$img" 2G
qemu-img resize -q "$img" 10G

now_ns() { date +%s%N; }

# time_ms CMD...: runs CMD, prints its wall time in milliseconds (3 decimals).
time_ms() {
	local t0 t1
	t0=$(now_ns)
	"$@" >/dev/null
	t1=$(now_ns)
	awk -v d=$((t1 - t0)) 'BEGIN { printf "%.3f\n", d / 1e6 }'
}

# stats: reads numbers, prints "best median".
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f %.1f\n", v[1], v[int((NR + 1) / 2)] }'; }

declare -A times
for ((r = 0; r < runs; r++)); do
	for tool in vmtui qemu-img; do
		if [[ $tool == vmtui ]]; then
			c=$(time_ms "$vmtui" disk snapshot -c bench "$img")
			d=$(time_ms "$vmtui" disk snapshot -d bench "$img")
		else
			c=$(time_ms qemu-img snapshot -c bench "$img")
			d=$(time_ms qemu-img snapshot -d bench "$img")
		fi
		times[$tool-c]+="$c "
		times[$tool-d]+="$d "
		qemu-img check -q "$img" || { echo "bench: qemu-img check failed after $tool" >&2; exit 1; }
	done
done

{
	echo "| operation | vmtui best (ms) | vmtui median (ms) | qemu-img best (ms) | qemu-img median (ms) |"
	echo "| --- | ---: | ---: | ---: | ---: |"
	for op in c d; do
		name=create
		[[ $op == d ]] && name=delete
		read -r vb vm < <(tr ' ' '\n' <<<"${times[vmtui-$op]}" | grep . | stats)
		read -r qb qm < <(tr ' ' '\n' <<<"${times[qemu-img-$op]}" | grep . | stats)
		echo "| $name | $vb | $vm | $qb | $qm |"
	done
} | tee "$out/snapshot.md"
rm -f "$img"
