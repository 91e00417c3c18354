#!/usr/bin/env bash
# make demo: the main job on a fresh machine. Builds the test guest (a
# Debian cloud kernel and a busybox initramfs, cached in .cache/guest),
# defines a VM named "demo" from it when none exists (without starting it)
# and opens the TUI (./vmtui with no arguments). Start the demo VM with s,
# attach its console with c (~. comes back), quit with q: VMs keep running.
# The demo VM runs under TCG so that it boots anywhere, with or without KVM.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

vmtui=./vmtui
guest=$(bash guest/build.sh)
kernel=$(sed -n 's/^kernel=//p' <<<"$guest")
initrd=$(sed -n 's/^initrd=//p' <<<"$guest")

if ! "$vmtui" status demo >/dev/null 2>&1; then
	echo "defining vm demo (kernel $kernel)"
	"$vmtui" define -b "$kernel" --initrd "$initrd" \
		--append "console=ttyS0 quiet panic=-1" -m 128M --accel tcg --net user demo
fi
if [[ ! -t 0 || ! -t 1 ]]; then
	# No terminal (CI, a pipe): show the table instead of the TUI.
	"$vmtui" --list
	exit 0
fi
exec "$vmtui"
