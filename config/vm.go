package config

import (
	"strconv"

	"github.com/vmtui/vmtui/internal/imageformat"
)

// Limits and defaults, following vmctl(8) and vm.conf(5) where they have
// one.
const (
	// MaxNameLen is the longest VM name in bytes: vmd's VMM_MAX_NAME_LEN
	// (64) less its terminating NUL.
	MaxNameLen = 63
	// MaxDisks is vmd's VM_MAX_DISKS_PER_VM.
	MaxDisks = 4
	// MaxNetworks is vmd's VM_MAX_NICS_PER_VM.
	MaxNetworks = 4
	// MaxCPUs bounds the vCPUs of a guest.
	MaxCPUs = 64
	// DefaultMemory is vmd's VM_DEFAULT_MEMORY.
	DefaultMemory = 512 << 20
	// MinMemory is the least memory a definition may ask for; vmctl's
	// floor of 1M cannot boot anything under QEMU.
	MinMemory = 16 << 20
	// MaxMemory is the most memory a definition may ask for.
	MaxMemory = 4 << 40
	// DefaultCPUs is the number of vCPUs when a definition gives none.
	DefaultCPUs = 1
)

// VM is a VM definition. The zero values of Memory and CPUs mean the
// defaults (SetDefaults); a definition read from a file always has them set.
// Paths are absolute.
type VM struct {
	// ID is the VM's stable number, assigned by Store.Create.
	ID int
	// Name is the VM's name, also the base name of its definition file.
	Name string
	// Template is the name of the VM this one is an instance of (vmtui
	// start -t), or "". The instance's settings were copied from it when
	// the instance was made; its disks are overlays on the template's.
	Template string
	// Memory is the guest's memory in bytes, a whole number of MiB.
	Memory int64
	// CPUs is the number of vCPUs.
	CPUs int
	// Disks are the disk images, in the guest's order.
	Disks []Disk
	// CDROM is an ISO image, or "".
	CDROM string
	// Kernel is a kernel to boot directly (-kernel), or "".
	Kernel string
	// Initrd is an initial ramdisk for Kernel, or "".
	Initrd string
	// Append is Kernel's command line, or "".
	Append string
	// Boot is the device to boot from.
	Boot Boot
	// Networks are the network interfaces, in the guest's order.
	Networks []Network
	// Accel is the accelerator (kvm, tcg, ...), or "" for the default.
	Accel string
	// Machine is QEMU's machine type (-machine), or "" for QEMU's default.
	Machine string
	// ExtraArgs are appended to QEMU's command line as they are.
	ExtraArgs []string

	// Sockets, Cores and Threads are the CPU topology, 0 where the
	// definition leaves them out (see Topology).
	Sockets, Cores, Threads int
	// MaxMemory is the most the guest's memory can grow to while it runs
	// (virtio-mem), in bytes; 0 (or Memory) for no growth.
	MaxMemory int64
	// HugePages backs the guest's memory with huge pages, MLock locks it
	// in the host's memory, Prealloc allocates it all at start.
	HugePages, MLock, Prealloc bool
	// Vsock gives the guest a vsock device, with a CID unique on the host
	// unless CID fixes one (a fixed CID implies vsock; see HasVsock).
	Vsock bool
	CID   uint32
	// Shares are host directories shared with the guest (virtio-fs).
	Shares []Share
	// HostDevs are host PCI devices passed through (VFIO).
	HostDevs []HostDev

	// File is the definition file the VM was read from or written to, ""
	// for a VM not yet created.
	File string
	// Err, set by Store.List and Store.Lookup, says why the definition
	// file is broken: it could not be read, did not parse or did not
	// validate. The other fields hold what could be read of it (at least
	// Name and File).
	Err error
}

// Disk is a disk image of a VM.
type Disk struct {
	// Path is the image file.
	Path string
	// Format is the image format, or "" to detect it from the image's
	// content (disk.DetectFormat).
	Format imageformat.Format
	// Bus is BusVirtio or BusSCSI; "" means BusVirtio.
	Bus string
	// IOThread gives the disk an I/O thread of its own.
	IOThread bool
	// Discard passes the guest's TRIM to the image, freeing its clusters.
	Discard bool
	// ReadOnly refuses the guest's writes.
	ReadOnly bool
	// Cache is CacheNone or CacheWriteback; "" means CacheWriteback.
	Cache string
}

// Boot names the device a VM boots from, with vmctl's names for them.
type Boot string

const (
	// BootDefault leaves the order to QEMU (disks first).
	BootDefault Boot = ""
	// BootDisk boots from the first disk.
	BootDisk Boot = "disk"
	// BootCDROM boots from the CD-ROM.
	BootCDROM Boot = "cdrom"
	// BootNet boots from the network.
	BootNet Boot = "net"
)

// NetworkType is the kind of a network interface.
type NetworkType string

const (
	// NetUser is QEMU's user-mode network (slirp), the default.
	NetUser NetworkType = "user"
	// NetBridge attaches to a host bridge through qemu-bridge-helper.
	NetBridge NetworkType = "bridge"
)

// Network is a network interface of a VM.
type Network struct {
	// Type is NetUser or NetBridge; "" in a file means NetUser.
	Type NetworkType
	// Bridge is the host bridge of a NetBridge interface.
	Bridge string
	// HostFwd are the port forwards of a NetUser interface, in QEMU's
	// syntax ([tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport); see
	// ParseHostFwd.
	HostFwd []string
	// MAC is the interface's address, or "" to let QEMU choose.
	MAC string
}

// SetDefaults fills in the defaults of fields left zero: Memory, CPUs and
// the type of each network.
func (vm *VM) SetDefaults() {
	if vm.Memory == 0 {
		vm.Memory = DefaultMemory
	}
	if vm.CPUs == 0 {
		vm.CPUs = DefaultCPUs
	}
	for i := range vm.Networks {
		if vm.Networks[i].Type == "" {
			vm.Networks[i].Type = NetUser
		}
	}
}

// IsID reports whether s is all digits, and so names a VM by its ID rather
// than its name, as in vmctl.
func IsID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatMemory writes a size exactly, in the largest unit that divides it
// ("384M", "1G", "1536K"), as a definition's memory keys hold it.
func FormatMemory(n int64) string {
	for _, u := range []struct {
		unit  string
		shift uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.unit
		}
	}
	return strconv.FormatInt(n, 10)
}
