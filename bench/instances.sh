#!/usr/bin/env bash
# bench/instances.sh: instant clones (issue 11) against cold boots.
#
# Builds vmtui and the test guest, defines a template (the test guest's
# kernel and initramfs, MEM of memory, default 256M, user networking) in a
# temporary $VMTUI_HOME, boots it, has its guest fill FILL MiB (default 100)
# of its RAM (a file of random bytes in its tmpfs), and saves it (vmtui
# save). Then, side by side:
#
#   - instances: vmtui define -t (the first converts the template's saved
#     state, once, and is timed apart), then each instance's start, and the
#     time from `vmtui start` returning to the guest answering a command on
#     its serial console (its pty, opened as soon as start returns; the
#     command is typed again every 50 ms until the answer is in the serial
#     log);
#   - cold boots: as many VMs of the same definition, started and timed the
#     same way, their guests then filling the same FILL MiB;
#
# and the total PSS (proportional set size: a page shared by n processes
# counts 1/n in each) of the N instances' QEMUs (default 4), against the N
# cold guests'. The goals: an instance answers within 0.5 s of start
# returning, and the instances use at least 200 MiB less than the cold
# guests. Everything is stopped at the end (stop -f -a), and the script fails
# if any QEMU of its own is left. The summary is also saved to
# bench/out/instances.md.
#
# Usage: bash bench/instances.sh
# Environment: N (default 4), MEM (default 256M), FILL (default 100),
# BENCH_OUT (default bench/out), VMTUI_ACCEL (default tcg).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/guests.bash
source bench/guests.bash
out=${BENCH_OUT:-bench/out}
n=${N:-4}
mem=${MEM:-256M}
fill=${FILL:-100}
mkdir -p "$out"

bench_tmp /tmp/vmtui-bench stty
trap stop_guests EXIT

build_guest_tools

now() { date +%s.%N; }
# secs A B prints B - A in seconds, three decimals.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# start_vm NAME starts the VM and prints its tty.
start_vm() {
	local msg
	msg=$("$vmtui" start "$1" 2>&1) || { echo "bench: start $1: $msg" >&2; exit 1; }
	sed -n 's/.*tty \(\/dev\/pts\/[0-9]*\).*/\1/p' <<<"$msg"
}

# wait_log NAME TEXT [SECONDS] waits until the VM's serial log holds TEXT.
wait_log() {
	local log=$VMTUI_HOME/log/$1/serial.log deadline
	deadline=$(($(date +%s) + ${3:-120}))
	until grep -qF -- "$2" "$log" 2>/dev/null; do
		if (($(date +%s) > deadline)); then
			echo "bench: vm $1: no \"$2\" in its serial log" >&2
			tail -5 "$log" >&2
			exit 1
		fi
		sleep 0.01
	done
}

# answer NAME TTY TAG types "echo TAG-$((1+1))" on the console every 50 ms
# until the guest's answer (TAG-2) is in its serial log. Then, the console
# still open, it times one more command and sets $again to that time.
answer() {
	local log=$VMTUI_HOME/log/$1/serial.log i=0 t
	stty -F "$2" raw -echo
	exec 3<>"$2"
	until grep -qF -- "$3-2" "$log" 2>/dev/null; do
		if ((i % 5 == 0)); then
			printf 'echo %s-$((1+1))\n' "$3" >&3
		fi
		i=$((i + 1))
		if ((i > 20000)); then
			echo "bench: vm $1 does not answer on $2" >&2
			exit 1
		fi
		sleep 0.01
	done
	t=$(now)
	printf 'echo %s-again-$((1+1))\n' "$3" >&3
	wait_log "$1" "$3-again-2" 30
	again=$(secs "$t" "$(now)")
	exec 3>&-
}

# start_answer NAME TAG starts VM NAME and waits for its guest to answer
# (answer NAME TTY TAG); it sets $tty, $took_start to the time the start
# took, and $took_answer to the time from its return to the answer.
start_answer() {
	local t0 t1 t2
	t0=$(now)
	tty=$(start_vm "$1")
	t1=$(now)
	answer "$1" "$tty" "$2"
	t2=$(now)
	took_start=$(secs "$t0" "$t1")
	took_answer=$(secs "$t1" "$t2")
}

# run_cmd NAME TTY COMMAND MARK types COMMAND; echo MARK and waits for MARK.
run_cmd() {
	stty -F "$2" raw -echo
	exec 3<>"$2"
	printf '%s; echo %s-$((1+1))\n' "$3" "$4" >&3
	wait_log "$1" "$4-2" 300
	exec 3>&-
}

# pss PID... prints the total PSS of the processes, in KiB.
pss() {
	local total=0 p k
	for p in "$@"; do
		k=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup")
		total=$((total + k))
	done
	echo "$total"
}

pid_of() { cat "$VMTUI_HOME/run/$1/qemu.pid"; }

common=(-b "$kernel" --initrd "$initrd" --append "console=ttyS0 quiet panic=-1" -m "$mem" --net user)
filler="dd if=/dev/urandom of=/tmp/fill bs=1M count=$fill 2>/dev/null"

echo "== the template: boot, fill $fill MiB, save"
"$vmtui" define "${common[@]}" tpl 2>/dev/null
tty=$(start_vm tpl)
wait_log tpl "vmtui-guest# "
run_cmd tpl "$tty" "$filler" filled
sleep 1 # idle, its console quiet, when saved
t0=$(now)
"$vmtui" save tpl
echo "save: $(secs "$t0" "$(now)") s"

echo "== $n instances"
t0=$(now)
"$vmtui" define -t tpl i1 2>/dev/null
convert=$(secs "$t0" "$(now)")
echo "first define -t (converts the saved state): $convert s"
defines=()
for i in $(seq 2 "$n"); do
	t0=$(now)
	"$vmtui" define -t tpl "i$i" 2>/dev/null
	defines+=("$(secs "$t0" "$(now)")")
done
echo "next define -t: ${defines[*]} s"
inst_start=() inst_answer=() inst_pids=() inst_again=()
for i in $(seq 1 "$n"); do
	start_answer "i$i" "ping$i"
	inst_start+=("$took_start")
	inst_answer+=("$took_answer")
	inst_again+=("$again")
	inst_pids+=("$(pid_of "i$i")")
done
echo "instances: start ${inst_start[*]} s; answer after start returned ${inst_answer[*]} s"
sleep 2
inst_pss=$(pss "${inst_pids[@]}")

echo "== $n cold boots"
cold_start=() cold_answer=() cold_pids=() cold_again=()
for i in $(seq 1 "$n"); do
	"$vmtui" define "${common[@]}" "c$i" 2>/dev/null
	start_answer "c$i" "ping$i"
	cold_start+=("$took_start")
	cold_answer+=("$took_answer")
	cold_again+=("$again")
	run_cmd "c$i" "$tty" "$filler" "filled$i"
	cold_pids+=("$(pid_of "c$i")")
done
echo "cold boots: start ${cold_start[*]} s; answer after start returned ${cold_answer[*]} s"
sleep 2
cold_pss=$(pss "${cold_pids[@]}")

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
summary=$(
	cat <<EOF
Instant clones, $(date -u +%Y-%m-%d), $VMTUI_ACCEL, $(nproc) cores: a saved template of $mem whose guest filled $fill MiB.

| | start | answer after start returned (median, all) | next answer, console open | total PSS of $n |
| --- | --- | --- | --- | --- |
| $n instances | $(median "${inst_start[@]}") s | $(median "${inst_answer[@]}") s (${inst_answer[*]}) | $(median "${inst_again[@]}") s | $((inst_pss / 1024)) MiB |
| $n cold boots | $(median "${cold_start[@]}") s | $(median "${cold_answer[@]}") s (${cold_answer[*]}) | $(median "${cold_again[@]}") s | $((cold_pss / 1024)) MiB |

Save of the template: see above; first \`define -t\` (converts the saved state once): $convert s; later ones: ${defines[*]} s.
EOF
)
echo
echo "$summary"
echo "$summary" >"$out/instances.md"

"$vmtui" stop -f -a >/dev/null 2>&1 || true
sleep 1
left=$(our_qemus)
if [[ -n $left ]]; then
	echo "bench: QEMUs left running: $left" >&2
	exit 1
fi
