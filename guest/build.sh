#!/usr/bin/env bash
# guest/build.sh builds vmtui's test guest: Debian's cloud kernel and a
# busybox initramfs whose /init (guest/init) loads the virtio disk and
# network drivers, prints a banner on the serial console, keeps a shell there
# and powers off on the ACPI power button (guest/power-button); it can also
# run a test's script from a virtio disk (see guest/init). Nothing it builds
# is committed.
#
# Usage: guest/build.sh        (no arguments, never reads stdin)
#
# Output goes to $VMTUI_GUEST_DIR, default <repo>/.cache/guest:
#   vmlinuz      the kernel (boot/vmlinuz-* of the package that
#                linux-image-cloud-amd64 depends on, fetched with apt-get download)
#   initrd.img   a gzip'd newc cpio: busybox-static, its applets, /init
#   stamp        what the two were built from; an unchanged stamp means the
#                cache is complete and the script exits at once
# On success it prints "kernel=PATH" and "initrd=PATH" on stdout; progress
# and errors go to stderr. Several runs at once are serialised by a lock.
#
# Boot it with the kernel command line
#   console=ttyS0 quiet panic=-1
# (serial console; no kernel messages below warnings; on a panic reboot at
# once, which -no-reboot turns into QEMU exiting), e.g.
#   qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -display none \
#     -machine q35 -m 128M -no-reboot -kernel vmlinuz -initrd initrd.img \
#     -append 'console=ttyS0 quiet panic=-1' -serial stdio
# The banner comes about 3 s after QEMU starts under TCG. The kernel needs
# 72M of guest memory at least: at 64M it dies silently (its decompressed
# image alone takes 51.5 MiB from 16 MiB up), at 68M the initramfs is lost.
# Optional: vmtui.tick=N (print a tick line every N seconds),
# vmtui.powerdown=ignore (ignore the power button) and vmtui.script=SERIAL
# (run the script on the virtio disk with that serial), see guest/init.
#
# Needs: apt-get/apt-cache/dpkg (Debian or derivative with the main archive in
# its sources), cpio, gzip, flock, sha256sum; busybox-static installed, or
# downloadable with apt-get. Runs as any user that can write the cache dir;
# only an "apt-get update" (done when apt knows no linux-image-cloud-amd64)
# needs root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
dir=${VMTUI_GUEST_DIR:-$repo/.cache/guest}
meta=linux-image-cloud-amd64
# Kernel modules /init loads, unless built in (modules.builtin), each after
# the modules its modinfo "depends=" names (what depmod writes into
# modules.dep, which the package does not ship):
#   evdev button  the power button: the ACPI button driver and the event
#                 device busybox acpid reads
#   virtio_pci    the PCI transport of virtio devices (virtio_pci_modern_dev,
#                 virtio_pci_legacy_dev, virtio, virtio_ring)
#   virtio_blk    virtio disks, /dev/vda... (virtio, virtio_ring)
#   virtio_net    virtio NICs, eth0... (net_failover, failover)
#   virtio_scsi sd_mod
#                 disks on a virtio-scsi controller, /dev/sda... (scsi_mod,
#                 scsi_common)
#   virtiofs      virtio-fs shares, mount -t virtiofs TAG DIR (fuse)
#   virtio_mem    memory a running guest grows or shrinks
#   virtio_balloon
#                 free page reporting: the guest tells QEMU which pages it
#                 freed, and QEMU gives them back to the host
#   vmw_vsock_virtio_transport
#                 vsock, AF_VSOCK sockets to the host (vsock,
#                 vmw_vsock_virtio_transport_common)
modules=(evdev button virtio_pci virtio_blk virtio_net virtio_scsi sd_mod virtiofs virtio_mem virtio_balloon vmw_vsock_virtio_transport)

die() {
	echo "guest/build.sh: $*" >&2
	exit 1
}

for c in apt-cache apt-get dpkg dpkg-query cpio gzip flock sha256sum find; do
	command -v "$c" >/dev/null 2>&1 || die "missing command $c"
done

apt_opts=(-q)
if [ "$(id -u)" = 0 ]; then
	# apt-get download would otherwise try to write as _apt into our
	# private temporary directory and warn about it.
	apt_opts+=(-o APT::Sandbox::User=root)
fi

# kernel_lookup prints "PACKAGE VERSION" of the kernel package that $meta's
# candidate depends on, or nothing when apt does not know it. One apt-cache
# call: without a binary cache (Debian's docker images) each costs ~0.5 s.
kernel_lookup() {
	local dep ver
	dep=$(apt-cache show --no-all-versions "$meta" 2>/dev/null | awk '
		$1 == "Depends:" {
			sub(/^Depends: */, "")
			n = split($0, d, / *, */)
			for (i = 1; i <= n; i++)
				if (d[i] ~ /^linux-image-/) { print d[i]; exit }
		}') || true
	[ -n "$dep" ] || return 0
	# "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
	case "$dep" in
	*"(= "*")")
		ver=${dep#*(= }
		ver=${ver%)}
		;;
	*)
		ver=$(apt-cache policy "${dep%% *}" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }') || true
		case "$ver" in '' | '(none)') return 0 ;; esac
		;;
	esac
	echo "${dep%% *} $ver"
}

# busybox_lookup prints "VERSION PATH" of the installed busybox-static, or
# "VERSION -" when it has to be downloaded, or nothing.
busybox_lookup() {
	local ver bin
	if [ "$(dpkg-query -W -f '${db:Status-Status}' busybox-static 2>/dev/null)" = installed ]; then
		ver=$(dpkg-query -W -f '${Version}' busybox-static)
		bin=$(dpkg -L busybox-static | grep -m1 '/bin/busybox$') || true
		if [ -n "$bin" ] && [ -x "$bin" ]; then
			echo "$ver $bin"
			return 0
		fi
	fi
	ver=$(apt-cache policy busybox-static 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }') || true
	case "$ver" in '' | '(none)') return 0 ;; esac
	echo "$ver -"
}

report() {
	echo "kernel=$dir/vmlinuz"
	echo "initrd=$dir/initrd.img"
}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
exec 9>"$dir/.lock"
flock 9
# Leftovers of a build that was killed.
rm -rf "$dir"/.build.*

inputs=$(cat "$here/build.sh" "$here/init" "$here/power-button" | sha256sum | cut -d' ' -f1)
kernel=$(kernel_lookup)
busybox=$(busybox_lookup)

complete=false
if [ -f "$dir/stamp" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.img" ]; then
	complete=true
fi
if $complete; then
	if [ -n "$kernel" ] && [ -n "$busybox" ]; then
		want=$(printf 'inputs %s\nkernel %s\nbusybox %s\n' "$inputs" "$kernel" "${busybox%% *}")
		if [ "$(cat "$dir/stamp")" = "$want" ]; then
			report
			exit 0
		fi
	elif grep -qx "inputs $inputs" "$dir/stamp"; then
		# apt cannot tell (no package lists): keep what was built offline.
		echo "guest/build.sh: apt does not know $meta; using the cached guest" >&2
		report
		exit 0
	fi
fi

if [ -z "$kernel" ]; then
	echo "guest/build.sh: apt does not know $meta; running apt-get update" >&2
	apt-get "${apt_opts[@]}" -qq update >&2 || die "apt-get update failed (needs root)"
	kernel=$(kernel_lookup)
	[ -n "$kernel" ] || die "apt does not know $meta (is Debian's main archive in the apt sources?)"
	busybox=$(busybox_lookup)
fi
[ -n "$busybox" ] || die "busybox-static is neither installed nor known to apt"

kpkg=${kernel% *}
work=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
rm -f "$dir/stamp"

# The kernel.
echo "guest/build.sh: fetching $kernel" >&2
(cd "$work" && apt-get "${apt_opts[@]}" download "$kpkg=${kernel#* }" >&2) || die "apt-get download $kpkg failed"
dpkg -x "$work"/"$kpkg"_*.deb "$work/kernel"
vmlinuz=("$work"/kernel/boot/vmlinuz-*)
[ "${#vmlinuz[@]}" = 1 ] && [ -f "${vmlinuz[0]}" ] || die "$kpkg holds no single boot/vmlinuz-*"
kver=${vmlinuz[0]##*/vmlinuz-}
kmod=$work/kernel/lib/modules/$kver

# The busybox binary.
bb=${busybox#* }
if [ "$bb" = - ]; then
	echo "guest/build.sh: fetching busybox-static ${busybox%% *}" >&2
	(cd "$work" && apt-get "${apt_opts[@]}" download busybox-static >&2) || die "apt-get download busybox-static failed"
	dpkg -x "$work"/busybox-static_*.deb "$work/busybox"
	bb=$(find "$work/busybox" -path '*/bin/busybox' -type f -print -quit)
	[ -n "$bb" ] || die "busybox-static holds no bin/busybox"
fi

# The initramfs tree.
fs=$work/initramfs
mkdir -p "$fs"/{bin,dev,etc/acpi/PWRF,lib/modules,proc,root,run,sys,tmp,usr}
chmod 1777 "$fs/tmp"
chmod 0700 "$fs/root"
ln -s bin "$fs/sbin"
ln -s ../bin "$fs/usr/bin"
ln -s ../bin "$fs/usr/sbin"
cp "$bb" "$fs/bin/busybox"
chmod 0755 "$fs/bin/busybox"
for applet in $("$fs/bin/busybox" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$fs/bin/$applet"
done
install -m 0755 "$here/init" "$fs/init"
install -m 0755 "$here/power-button" "$fs/etc/acpi/PWRF/00000080"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$fs/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$fs/etc/group"

# Modules, dependencies first; built-in ones are skipped.
loaded=" "
add_module() {
	local name=$1 file dep deps
	case "$loaded" in *" $name "*) return 0 ;; esac
	if [ -f "$kmod/modules.builtin" ] && grep -q "/$name\.ko\$" "$kmod/modules.builtin"; then
		loaded+="$name "
		return 0
	fi
	# depends= spells names with "_" where some file names have "-".
	file=$(find "$kmod/kernel" \( -name "$name.ko" -o -name "$name.ko.*" \
		-o -name "${name//_/-}.ko" -o -name "${name//_/-}.ko.*" \) -print -quit)
	[ -n "$file" ] || die "module $name is neither built into $kver nor shipped with it"
	case "$file" in
	*.ko) cp "$file" "$fs/lib/modules/$name.ko" ;;
	*.ko.xz) xz -dc "$file" >"$fs/lib/modules/$name.ko" ;;
	*.ko.zst) zstd -qdc "$file" >"$fs/lib/modules/$name.ko" ;;
	*.ko.gz) gzip -dc "$file" >"$fs/lib/modules/$name.ko" ;;
	*) die "module $file: unknown compression" ;;
	esac
	deps=$(tr '\0' '\n' <"$fs/lib/modules/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' ')
	for dep in $deps; do
		add_module "$dep"
	done
	loaded+="$name "
	echo "$name.ko" >>"$fs/lib/modules/load"
}
for m in "${modules[@]}"; do
	add_module "$m"
done

# cpio_node NAME MODE MAJOR MINOR writes one newc entry for a device node,
# which cpio can only archive from a real node (mknod needs root).
# /dev/console must be in the archive: the kernel opens it for /init's
# stdio before /init can mount devtmpfs.
cpio_node() {
	local name=$1 mode=$2 major=$3 minor=$4 size
	size=$((${#name} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		$((0x7fff0000 + minor)) "$mode" 0 0 1 0 0 0 0 "$major" "$minor" "$size" 0
	printf '%s\0' "$name"
	head -c $(((4 - (110 + size) % 4) % 4)) /dev/zero
}
{
	(cd "$fs" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
	cpio_node dev/console $((0020600)) 5 1
	cpio_node dev/null $((0020666)) 1 3
	cpio_node TRAILER!!! 0 0 0
} | gzip -9n >"$work/initrd.img"

cp "${vmlinuz[0]}" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$dir/vmlinuz"
mv -f "$work/initrd.img" "$dir/initrd.img"
printf 'inputs %s\nkernel %s\nbusybox %s\n' "$inputs" "$kernel" "${busybox%% *}" >"$work/stamp"
mv -f "$work/stamp" "$dir/stamp"
echo "guest/build.sh: built the test guest (Linux $kver) in $dir" >&2
report
