#!/usr/bin/env bash
# bench/convert.sh: vmtui disk convert against qemu-img convert, side by side.
#
# Builds vmtui, makes (once, cached in bench/out/) a 1 GiB raw image that is
# half random data and half zeros in alternating 16 MiB runs (the zero runs
# alternate between holes and written zeros, so that both hole skipping and
# zero detection are exercised), then times each conversion with both tools:
# best wall time of RUNS runs (default 3), the source in the page cache, the
# output deleted between runs, the two tools alternating. Every vmtui output
# is checked with qemu-img compare against the source (and qemu-img check for
# qcow2). Prints a Markdown table, also saved to bench/out/convert.md.
#
# Usage: bash bench/convert.sh        (or: make bench)
# Environment: RUNS (default 3), BENCH_OUT (default bench/out), SIZE_MIB
# (default 1024; other sizes only for trying the script out quickly).
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
out=${BENCH_OUT:-bench/out}
runs=${RUNS:-3}
mkdir -p "$out"

for t in qemu-img go; do
	command -v "$t" >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
done

echo "== building vmtui"
go build -o "$out/vmtui" .
vmtui=$out/vmtui

size_mib=${SIZE_MIB:-1024}
src=$out/src-${size_mib}m.raw
run_mib=16
if [[ ! -f $src || $(stat -c %s "$src") != $((size_mib << 20)) ]]; then
	echo "== making $src ($size_mib MiB: 16 MiB runs of random data, holes and written zeros)"
	rm -f "$src.tmp"
	truncate -s "${size_mib}M" "$src.tmp"
	for ((i = 0; i < size_mib / run_mib; i++)); do
		case $((i % 4)) in
		0 | 2) dd if=/dev/urandom of="$src.tmp" bs=1M count=$run_mib seek=$((i * run_mib)) conv=notrunc status=none ;;
		1) ;; # a hole
		3) dd if=/dev/zero of="$src.tmp" bs=1M count=$run_mib seek=$((i * run_mib)) conv=notrunc status=none ;;
		esac
	done
	mv "$src.tmp" "$src"
fi

# The qcow2 source of the qcow2 -> raw row, made by qemu-img. (A compressed
# one would not differ: random data does not compress, so qemu-img -c
# stores its clusters uncompressed.)
ref=$out/src-${size_mib}m.qcow2
[[ -f $ref ]] || qemu-img convert -f raw -O qcow2 "$src" "$ref"
# The qcow (version 1) source of the qcow -> qcow2 rows, made by qemu-img.
qref=$out/src-${size_mib}m.qcow
[[ -f $qref ]] || qemu-img convert -f raw -O qcow "$src" "$qref"

now_ns() { date +%s%N; }

# time_once OUTPUT CMD...: deletes OUTPUT, runs CMD and prints its wall
# time in nanoseconds.
time_once() {
	local output=$1
	shift
	rm -f "$output"
	sync
	local t0 t1
	t0=$(now_ns)
	"$@" >/dev/null || { echo "bench: $* failed" >&2; return 1; }
	t1=$(now_ns)
	echo $((t1 - t0))
}

seconds() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
disk_mib() { du -k "$1" | awk '{ printf "%.0f", $1 / 1024 }'; }

table=$out/convert.md
{
	echo "| conversion | vmtui (s) | qemu-img (s) | vmtui/qemu-img | vmtui output (MiB on disk) | qemu-img output (MiB on disk) |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
} >"$table"

# row NAME INPUT OUTFORMAT "VMTUI FLAGS" "QEMU-IMG FLAGS"
row() {
	local name=$1 input=$2 fmt=$3 vflags=$4 qflags=$5
	local vout=$out/out-vmtui.$fmt qout=$out/out-qemu.$fmt
	local vbest=0 qbest=0 t i
	echo "== $name"
	cat "$input" >/dev/null # into the page cache
	for ((i = 0; i < runs; i++)); do
		# shellcheck disable=SC2086 # the flags are word lists
		t=$(time_once "$qout" qemu-img convert $qflags -O "$fmt" "$input" "$qout")
		((qbest == 0 || t < qbest)) && qbest=$t
		# shellcheck disable=SC2086
		t=$(time_once "$vout" "$vmtui" disk convert $vflags -O "$fmt" "$input" "$vout")
		((vbest == 0 || t < vbest)) && vbest=$t
		echo "   run $((i + 1)): qemu-img $(seconds "$qbest") s best, vmtui $(seconds "$vbest") s best"
	done
	# The last vmtui output must hold what the source holds.
	if ! qemu-img compare -q "$input" "$vout"; then
		echo "bench: $name: vmtui output differs from $input" >&2
		exit 1
	fi
	if [[ $fmt == qcow2 ]] && ! qemu-img check -q "$vout"; then
		echo "bench: $name: qemu-img check found problems in the vmtui output" >&2
		exit 1
	fi
	printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$(seconds "$vbest")" "$(seconds "$qbest")" \
		"$(ratio "$vbest" "$qbest")" "$(disk_mib "$vout")" "$(disk_mib "$qout")" >>"$table"
	rm -f "$vout" "$qout"
}

# Two pairs per conversion, like with like: both tools syncing the output
# before they return (vmtui's default, qemu-img -t writeback), and neither
# syncing (vmtui -t unsafe, qemu-img's default).
row "raw → qcow2, synced" "$src" qcow2 "" "-t writeback -f raw"
row "raw → qcow2, unsynced" "$src" qcow2 "-t unsafe" "-f raw"
row "raw → qcow2, zlib (-c), synced" "$src" qcow2 "-c" "-t writeback -f raw -c"
row "raw → qcow2, zstd, synced" "$src" qcow2 "-c --compression-type zstd" "-t writeback -f raw -c -o compression_type=zstd"
row "raw → qcow2, zstd, unsynced" "$src" qcow2 "-t unsafe -c --compression-type zstd" "-f raw -c -o compression_type=zstd"
row "qcow2 → raw, synced" "$ref" raw "" "-t writeback -f qcow2"
row "qcow2 → raw, unsynced" "$ref" raw "-t unsafe" "-f qcow2"
row "qcow → qcow2, synced" "$qref" qcow2 "" "-t writeback -f qcow"
row "qcow → qcow2, unsynced" "$qref" qcow2 "-t unsafe" "-f qcow"
row "raw → qcow, synced" "$src" qcow "" "-t writeback -f raw"
row "raw → qcow, unsynced" "$src" qcow "-t unsafe" "-f raw"

echo
echo "$size_mib MiB source; $(uname -sr), $(nproc) CPUs, $(qemu-img --version | head -n 1), $(go version | cut -d' ' -f3), best of $runs"
echo
cat "$table"
