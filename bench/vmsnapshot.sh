#!/usr/bin/env bash
# bench/vmsnapshot.sh: a snapshot of a running guest, with its RAM, and a
# revert to it: vmtui snapshot create and vmtui snapshot revert.
#
# Builds vmtui and the test guest (guest/build.sh), starts a 256 MiB guest
# with a 1 GiB qcow2 disk (under TCG unless VMTUI_ACCEL says otherwise: KVM
# guests hang on the machines vmtui is tested on), has it fill 64 MiB of its RAM with random bytes (a file in its
# tmpfs: zero pages cost QEMU nothing to save, so they would flatter the
# figures), then times, RUNS times (default 7): vmtui snapshot create, vmtui
# snapshot revert to it, and vmtui snapshot delete (the guest running all
# along). Wall time of the whole command, process start included, as a user
# sees it; the best and the median. After each revert the guest must still
# hold its 64 MiB; qemu-img check must find the disk clean once the guest
# has stopped. Prints a Markdown table, also saved to bench/out/vmsnapshot.md.
#
# Usage: bash bench/vmsnapshot.sh
# Environment: RUNS (default 7), BENCH_OUT (default bench/out), VMTUI_ACCEL.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/guests.bash
source bench/guests.bash
out=${BENCH_OUT:-bench/out}
runs=${RUNS:-7}
mkdir -p "$out"
out=$(cd "$out" && pwd)

bench_tmp /tmp/vmtui-vmsnap qemu-img stty
vmtui=$out/vmtui
trap 'exec 3>&- 2>/dev/null || true; stop_guests' EXIT
build_guest_tools

img=$tmp/bench.qcow2
qemu-img create -q -f qcow2 "$img" 1G
"$vmtui" start -b "$kernel" --initrd "$initrd" --append "console=ttyS0 quiet panic=-1" \
	-m 256M -d "$img" bench 2>"$tmp/start.err" || { cat "$tmp/start.err" >&2; exit 1; }
log=$VMTUI_HOME/log/bench/serial.log
tty=$("$vmtui" status --json bench | sed -n 's/.*"tty": "\(.*\)".*/\1/p')
accel=$(tr '\0' '\n' <"/proc/$(our_qemus 2>/dev/null | head -n 1)/cmdline" | grep -A1 -x -- -accel | grep -v -- -accel | tr '\n' ' ')

# wait_log TEXT [TIMEOUT]: waits until the serial log holds TEXT.
wait_log() {
	local deadline=$((SECONDS + ${2:-120}))
	until grep -qF -- "$1" "$log" 2>/dev/null; do
		((SECONDS < deadline)) || { echo "bench: no '$1' in the serial log:" >&2; tail -n 20 "$log" >&2; exit 1; }
		sleep 0.05
	done
}

# guest CMD: types CMD on the guest's console and waits until it has run
# (the shell prints a marker it computes, so the echo of the line is no match).
n=0
guest() {
	n=$((n + 1))
	printf '%s; echo bench-done-$((%d+1))\n' "$1" $((n - 1)) >&3
	wait_log "bench-done-$n"
}

wait_log "vmtui-guest# "
stty -F "$tty" raw -echo # before it is open: an echo would type the guest's output back
exec 3<>"$tty"
cat <&3 >/dev/null 2>&1 &
guest 'dd if=/dev/urandom of=/tmp/fill bs=1M count=64 2>/dev/null; md5sum /tmp/fill >/tmp/fill.md5'

# time_ms CMD...: runs CMD, prints its wall time in milliseconds.
time_ms() {
	local t0 t1
	t0=$(now_ns)
	"$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
	t1=$(now_ns)
	awk -v d=$((t1 - t0)) 'BEGIN { printf "%.1f\n", d / 1e6 }'
}

# stats: reads numbers, prints "best median".
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f %.1f\n", v[1], v[int((NR + 1) / 2)] }'; }

echo "== $runs runs, accelerator: $accel"
c=() r=() d=()
for ((i = 0; i < runs; i++)); do
	c+=("$(time_ms "$vmtui" snapshot create bench "run-$i")")
	[[ $i -eq 0 ]] && "$vmtui" snapshot list bench
	r+=("$(time_ms "$vmtui" snapshot revert bench "run-$i")")
	guest 'md5sum -c -s /tmp/fill.md5 && echo "bench fill ok $((40+2))"'
	d+=("$(time_ms "$vmtui" snapshot delete bench "run-$i")")
done
grep -c "bench fill ok 42" "$log" | grep -qx "$runs" || { echo "bench: the guest lost its RAM" >&2; exit 1; }
exec 3>&-
"$vmtui" stop -f -w bench 2>/dev/null
qemu-img check -q "$img" || { echo "bench: qemu-img check failed" >&2; exit 1; }

{
	echo "| operation | best (ms) | median (ms) |"
	echo "| --- | ---: | ---: |"
	read -r b m < <(printf '%s\n' "${c[@]}" | stats)
	echo "| snapshot create (running, RAM saved) | $b | $m |"
	read -r b m < <(printf '%s\n' "${r[@]}" | stats)
	echo "| snapshot revert (running) | $b | $m |"
	read -r b m < <(printf '%s\n' "${d[@]}" | stats)
	echo "| snapshot delete (running) | $b | $m |"
} | tee "$out/vmsnapshot.md"
