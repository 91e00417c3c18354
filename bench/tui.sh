#!/usr/bin/env bash
# bench/tui.sh: CPU used by an idle TUI, and the time from a key press to
# the redrawn screen.
#
# Defines VMS (default 30) test guests in a temporary $VMTUI_HOME, starts
# RUNNING of them (default 10) paused (bench/startpaused: QEMU with -S, so
# that no guest loads the CPU), opens `vmtui` (the TUI) in tmux on a private
# socket, waits until it shows them all, lets it settle, then reads the
# TUI process's utime+stime from /proc/PID/stat before and after IDLE
# seconds (default 60) of no input: the goal (issue 9) is 0.3% of one core.
# (The TUI follows QEMU's events, samples /proc every second, every 2 s
# after 10 quiet ones, and lists every VM every 15 s.) With BASE set to a
# git revision, vmtui is also built at that revision and its TUI opened
# beside the working tree's, in a tmux of its own: both idle over the same
# seconds, so that load from other work weighs on both alike, and the
# summary gives the ratio. Then it times key presses, from tmux send-keys
# to the first capture-pane that shows the change (polling as fast as tmux
# answers), one TUI after the other: j/k (the cursor moves: no I/O, just a
# redraw), and p on a paused VM and again (unpause and pause over QMP, then
# the row read again). Everything is stopped at the end; the script fails
# if a QEMU of its own is left. The summary is also saved to
# bench/out/tui.md.
#
# Usage: bash bench/tui.sh        (or: make bench)
#        BASE=1494b34 bash bench/tui.sh
# Environment: VMS, RUNNING, IDLE, KEYS (key presses timed, default 20),
# BASE, BENCH_OUT (default bench/out), VMTUI_ACCEL (default tcg).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/guests.bash
source bench/guests.bash
out=${BENCH_OUT:-bench/out}
vms=${VMS:-30}
running=${RUNNING:-10}
idle=${IDLE:-60}
keys=${KEYS:-20}
mkdir -p "$out"

bench_tmp /tmp/vmtui-tui tmux
base=${BASE:-}

cleanup() {
	local s
	for s in "$tmp"/tmux*.sock; do
		tmux -S "$s" kill-server >/dev/null 2>&1 || true
	done
	stop_guests
}
trap cleanup EXIT

build_guest_tools
if [[ -n $base ]]; then
	base_label=$(git rev-parse --short "$base")
	echo "== building vmtui at $base_label (BASE) to measure beside the working tree"
	mkdir -p "$tmp/base-src"
	git archive "$base" | tar -x -C "$tmp/base-src"
	(cd "$tmp/base-src" && go build -o "$tmp/vmtui-base" .)
fi

echo "== $running of $vms vms started paused"
"$tmp/startpaused" -kernel "$kernel" -initrd "$initrd" -m 128M -n "$running" -j 4 bench
for name in $(seq -f "bench%g" $((running + 1)) "$vms"); do
	"$vmtui" define -b "$kernel" --initrd "$initrd" --append "console=ttyS0 quiet panic=-1" -m 128M "$name" 2>/dev/null
done
"$vmtui" --list | awk 'NR > 1 { n[$8]++ } END { for (s in n) printf "%s %d\n", s, n[s] }'

capture() { tmux -S "$1" capture-pane -p -t 0; }

# The TUIs measured: the working tree's, and BASE's beside it.
labels=(tree)
bins=("$vmtui")
if [[ -n $base ]]; then
	labels+=("$base_label")
	bins+=("$tmp/vmtui-base")
fi

pids=()
for i in "${!bins[@]}"; do
	echo "== opening the TUI (${labels[$i]})"
	s=$tmp/tmux$i.sock
	tmux -S "$s" new-session -d -x 100 -y 40 "exec ${bins[$i]}"
	pids+=("$(tmux -S "$s" list-panes -t 0 -F '#{pane_pid}')")
	deadline=$((SECONDS + 30))
	until grep -q "$vms vms: $running paused, $((vms - running)) stopped" <<<"$(capture "$s")"; do
		((SECONDS < deadline)) || { echo "bench: the TUI (${labels[$i]}) does not show $vms vms:" >&2; capture "$s" >&2; exit 1; }
		sleep 0.2
	done
done
sleep 5 # settle: the first refreshes, the charts' first samples, the watches

ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "== idle for ${idle}s (pids ${pids[*]}, side by side)"
t0=()
for pid in "${pids[@]}"; do t0+=("$(ticks "$pid")"); done
w0=$(now_ns)
sleep "$idle"
t1=()
for pid in "${pids[@]}"; do t1+=("$(ticks "$pid")"); done
w1=$(now_ns)
cpu_pct=()
rss_mib=()
for i in "${!pids[@]}"; do
	cpu_pct+=("$(awk -v d=$((t1[i] - t0[i])) -v hz="$hz" -v ns=$((w1 - w0)) 'BEGIN { printf "%.2f", d / hz / (ns / 1e9) * 100 }')")
	rss_mib+=($(($(awk '/^VmRSS:/ {print $2}' "/proc/${pids[$i]}/status") / 1024)))
	echo "idle CPU (${labels[$i]}): $((t1[i] - t0[i])) ticks in $(((w1 - w0) / 1000000)) ms = ${cpu_pct[$i]}% of one core; RSS ${rss_mib[$i]} MiB"
done

# press SOCKET KEY REGEX: press KEY, then wait until the screen matches
# REGEX; prints microseconds.
press() {
	local s=$1 key=$2 re=$3 start end
	start=$(now_ns)
	tmux -S "$s" send-keys -t 0 "$key"
	until grep -qE -- "$re" <<<"$(capture "$s")"; do :; done
	end=$(now_ns)
	echo $(((end - start) / 1000))
}

median() { sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f %.1f %.1f\n", m / 1000, a[1] / 1000, a[NR] / 1000 }'; }

mv=()
op=()
for i in "${!bins[@]}"; do
	s=$tmp/tmux$i.sock
	echo "== $keys cursor moves (j/k), ${labels[$i]}"
	moves=()
	for ((k = 0; k < keys; k++)); do
		if ((k % 2 == 0)); then
			moves+=("$(press "$s" j '^› +2 ')")
		else
			moves+=("$(press "$s" k '^› +1 ')")
		fi
	done
	read -r mv_med mv_min mv_max < <(printf '%s\n' "${moves[@]}" | median)
	mv+=("$mv_med ($mv_min–$mv_max)")
	echo "cursor move: median $mv_med ms (min $mv_min, max $mv_max)"

	echo "== pause/unpause (p) of vm 1, $((keys / 4)) times each, ${labels[$i]}"
	ops=()
	for ((k = 0; k < keys / 4; k++)); do
		ops+=("$(press "$s" p '^› +1 .* running ')")
		ops+=("$(press "$s" p '^› +1 .* paused ')")
	done
	read -r op_med op_min op_max < <(printf '%s\n' "${ops[@]}" | median)
	op+=("$op_med ($op_min–$op_max)")
	echo "p to redrawn state: median $op_med ms (min $op_min, max $op_max)"
done

for i in "${!bins[@]}"; do
	tmux -S "$tmp/tmux$i.sock" send-keys -t 0 q
done
sleep 0.5
left=$("$vmtui" --list | awk 'NR > 1 && $8 != "stopped"' | wc -l)
[[ $left == "$running" ]] || { echo "bench: $left vms running after quitting the TUI, want $running" >&2; exit 1; }

{
	echo "| TUI | vms (running, paused) | idle (s) | TUI CPU (% of one core) | TUI RSS (MiB) | j/k to redraw, median (min–max) ms | p to new state, median (min–max) ms |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	for i in "${!bins[@]}"; do
		echo "| ${labels[$i]} | $vms ($running) | $idle | ${cpu_pct[$i]} | ${rss_mib[$i]} | ${mv[$i]} | ${op[$i]} |"
	done
	if [[ -n $base ]]; then
		awk -v a="${cpu_pct[0]}" -v b="${cpu_pct[1]}" 'BEGIN { if (b > 0) printf "\nidle CPU, tree / %s: %.2f\n", "'"$base_label"'", a / b }'
	fi
} | tee "$out/tui.md"
