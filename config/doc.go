// Package config is a VM definition: its schema (VM), its TOML file
// format (Decode, Encode) and its rules (Validate). Where definitions are
// kept, and the files of running VMs, are package store's business (lima
// keeps its limatype apart from its store the same way); config imports
// only leaves.
//
// A VM is defined by one human-editable TOML file, vms/NAME.toml:
//
//	id = 3
//	name = "web"
//	memory = "1G"        # scan_scaled(3) syntax; default 512M
//	cpus = 2             # default 1
//	cdrom = "/srv/iso/install76.iso"
//	boot = "cdrom"       # disk, cdrom or net; default: QEMU's order
//	accel = "kvm"        # default: $VMTUI_ACCEL, else kvm falling back to tcg
//	machine = "q35"
//	extra_args = ["-device", "virtio-rng-pci"]
//
//	[[disks]]
//	path = "/srv/vm/web.qcow2"
//	format = "qcow2"     # qcow2 or raw; left out, it is detected
//
//	[[networks]]
//	type = "user"        # user (the default) or bridge
//	hostfwd = ["tcp::2222-:22"]
//
//	[[networks]]
//	type = "bridge"
//	bridge = "br0"
//	mac = "52:54:00:12:34:56"
//
// and kernel, initrd and append for booting a kernel directly. Keys are
// checked strictly: an unknown key is an error naming the file, the line and
// the key. Validation follows vmctl(8) (see Validate and ValidName): names
// of at most 63 bytes of letters, digits, '.', '-' and '_', not starting
// with '.', '-' or '_' and not all digits; at most 4 disks and 4 network
// interfaces; a kernel, a disk or a CD-ROM. Paths in a definition must be
// absolute: a relative one is an error rather than being resolved against
// a directory the person editing the file may not have in mind. Paths and
// the kernel command line may not contain NUL bytes or line breaks; escaping
// commas for QEMU is the vm package's business.
package config
