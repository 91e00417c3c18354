# bench/guests.bash: what the guest benchmarks (list.sh, tui.sh, send.sh,
# instances.sh, vmsnapshot.sh) share. Sourced, not run, from the top of the
# tree; it puts Go on $PATH. bench_tmp sets $VMTUI_HOME, $vmtui and $tmp,
# which the other functions use.

export PATH="/usr/local/go/bin:$PATH"

# bench_tmp PREFIX [TOOL]...: fails unless go, qemu-system-x86_64 and each
# TOOL are installed; makes $tmp, a directory PREFIX-XXXXXX (short: the
# QMP sockets live under it, and a socket's path has 108 bytes at most),
# with $VMTUI_HOME in it; sets $vmtui to $tmp/vmtui, and VMTUI_ACCEL to tcg
# unless it is set (KVM guests hang on some machines).
bench_tmp() {
	local prefix=$1 t
	shift
	for t in go qemu-system-x86_64 "$@"; do
		command -v "$t" >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
	done
	tmp=$(mktemp -d "$prefix-XXXXXX")
	export VMTUI_HOME=$tmp/home
	export VMTUI_ACCEL=${VMTUI_ACCEL:-tcg}
	vmtui=$tmp/vmtui
}

# now_ns prints the time in nanoseconds.
now_ns() { date +%s%N; }

# our_qemus prints the PIDs of the QEMUs whose pidfile is under $VMTUI_HOME.
our_qemus() {
	local f
	for f in /proc/[0-9]*/cmdline; do
		tr '\0' '\n' <"$f" 2>/dev/null | grep -qxF -- "-pidfile" || continue
		tr '\0' '\n' <"$f" 2>/dev/null | grep -q "^$VMTUI_HOME/run/" || continue
		f=${f#/proc/}
		echo "${f%/cmdline}"
	done
}

# stop_guests stops every VM, kills any QEMU of ours still running (saying
# so) and removes $tmp.
stop_guests() {
	local pids
	"$vmtui" stop -f -a >/dev/null 2>&1 || true
	pids=$(our_qemus)
	if [[ -n $pids ]]; then
		echo "bench: killing QEMUs left running: $pids" >&2
		kill -9 $pids 2>/dev/null || true
	fi
	rm -rf "$tmp"
}

# build_guest_tools builds vmtui and bench/startpaused, and sets $kernel and
# $initrd to the test guest's (guest/build.sh).
build_guest_tools() {
	echo "== building vmtui and bench/startpaused, and the test guest"
	go build -o "$vmtui" .
	go build -o "$tmp/startpaused" ./bench/startpaused
	local guest
	guest=$(bash guest/build.sh)
	kernel=$(sed -n 's/^kernel=//p' <<<"$guest")
	initrd=$(sed -n 's/^initrd=//p' <<<"$guest")
	[[ -f $kernel && -f $initrd ]] || { echo "bench: guest/build.sh gave no kernel and initrd" >&2; exit 1; }
}
