#!/usr/bin/env bash
# make demo: the main job on a fresh machine. Builds the test guest (a
# Debian cloud kernel and a busybox initramfs, cached in .cache/guest),
# defines a VM named "demo" from it when none exists, starts it and shows the
# status table. The demo VM runs under TCG so that it boots anywhere, with or
# without KVM.
set -euo pipefail
cd "$(dirname "$0")/.."

vmtui=./vmtui
guest=$(bash guest/build.sh)
kernel=$(sed -n 's/^kernel=//p' <<<"$guest")
initrd=$(sed -n 's/^initrd=//p' <<<"$guest")

if ! "$vmtui" status demo >/dev/null 2>&1; then
	echo "defining vm demo (kernel $kernel)"
	"$vmtui" start -b "$kernel" --initrd "$initrd" --append "console=ttyS0 quiet panic=-1" \
		-m 128M --accel tcg --net user demo
else
	state=$("$vmtui" --list --json | python3 -c 'import json,sys; print(next(v["state"] for v in json.load(sys.stdin) if v["name"]=="demo"))' 2>/dev/null || echo unknown)
	if [ "$state" = stopped ]; then
		"$vmtui" start demo
	fi
fi
"$vmtui" --list
if [ -e cmd_console.go ]; then
	echo
	echo "attach to its serial console with: ./vmtui console demo   (detach with ~.)"
fi
echo "stop it with: ./vmtui stop demo"
