package vm

import (
	"fmt"
	"os"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
)

// Spec is everything the command line is built from: a definition's
// settings, resolved (sizes in bytes, disk formats detected), plus the
// runtime files of this start.
type Spec struct {
	Name    string
	Memory  int64 // bytes
	CPUs    int
	Machine string // "" means DefaultMachine
	// Accel lists accelerators in order of preference, e.g. {"kvm", "tcg"}.
	Accel  []string
	Disks  []DiskSpec
	CDROM  string
	Kernel string
	Initrd string
	Append string
	// Boot is "disk", "cdrom", "net" or "" (firmware default; the kernel when one is given).
	Boot  string
	Nets  []NetSpec
	Extra []string // appended verbatim, after everything vmtui renders
	// Paused starts the guest with its vCPUs stopped (-S).
	Paused bool
	// LoadVM starts the guest from its disks' snapshot of that tag (-loadvm).
	LoadVM string
	// Incoming makes QEMU wait for a migration stream (-incoming), "defer"
	// to be given it over QMP (migrate-incoming); "" to boot.
	Incoming string
	// MemBackendID is the id of the guest's memory backend, when it has
	// one, "" for MemBackendID: a guest resumed from another QEMU's state
	// needs the id that QEMU's RAM had (instance_clone.go).
	MemBackendID string
	// HotplugSlots is how many spare PCIe root ports a q35 machine gets
	// for disks attached while it runs (live.go); 0 for none.
	HotplugSlots int
	// FreePageReporting gives the guest a virtio-balloon device
	// (balloon0) that reports the pages it frees, which QEMU then gives
	// back to the host: QEMU's RSS (CURMEM) follows what the guest uses,
	// and a send, save or RAM snapshot skips those pages as zeros.
	FreePageReporting bool

	// The device model (issue 13; see cmdline_devices.go).
	// Sockets, Cores and Threads are the CPU topology, all 0 for QEMU's
	// default, else all set and multiplying to CPUs.
	Sockets, Cores, Threads int
	// MaxMemory is what the guest's memory can grow to (virtio-mem
	// device vmem0 on backend vmem0-mem); 0 or Memory for no growth.
	MaxMemory int64
	// HugePages, MLock and Prealloc are the memory knobs.
	HugePages, MLock, Prealloc bool
	// MemFile backs the guest's memory with this file
	// (memory-backend-file), mapped shared when MemFileShare; "" for
	// anonymous memory.
	MemFile      string
	MemFileShare bool
	// CID is the guest's vsock CID, 0 for no vsock device.
	CID uint32
	// Shares are the virtio-fs shares; their memory is shared, as
	// vhost-user needs.
	Shares []ShareSpec
	// HostDevs are the PCI addresses (DDDD:BB:DD.F, lower case) of the
	// host devices passed through with vfio-pci.
	HostDevs []string

	// Runtime files.
	QMPFD     int    // inherited listening socket for QMP (ExtraFiles index + 3); 0 for none
	QMPPath   string // a QMP socket path for QEMU to create, when QMPFD is 0
	EventsFD  int    // a second QMP monitor's inherited listening socket, for long-lived watchers; 0 for none
	PIDFile   string
	SerialLog string
}

// DiskSpec is one disk image with its detected format.
type DiskSpec struct {
	Path     string
	Format   string // "qcow2", "raw" or "qcow"
	Bus      string // "virtio" or "" (virtio-blk-pci), "scsi" (scsi-hd on the virtio-scsi controller scsi0)
	IOThread bool   // an iothread of its own (virtio), or the controller's (scsi)
	Discard  bool   // discard=unmap: the guest's TRIM frees the image's clusters
	ReadOnly bool
	Cache    string // "none" (cache.direct=on) or "" / "writeback"
}

// ShareSpec is one virtio-fs share.
type ShareSpec struct {
	Path     string // the host directory
	Tag      string // the tag the guest mounts
	ReadOnly bool
	// Socket is the vhost-user socket of the share's virtiofsd, which
	// the command line connects to (chardev fs<i>).
	Socket string
}

// NetSpec is one network interface.
type NetSpec struct {
	Type    string   // "user" (default) or "bridge"
	Bridge  string   // bridge name for Type "bridge"
	HostFwd []string // user networking port forwards, "tcp::2222-:22"
	MAC     string   // optional
}

// spec resolves a definition into a Spec, without its runtime files,
// checking first what vmd checks: the disks, CD-ROM, kernel and initrd
// must exist. Disks whose format the definition leaves out are detected. The
// first problem is returned, in the order of the definition's fields.
func (m *Manager) spec(def *config.VM) (Spec, error) {
	s := Spec{
		Name: def.Name, Memory: def.Memory, CPUs: def.CPUs, Machine: def.Machine,
		CDROM: def.CDROM, Kernel: def.Kernel, Initrd: def.Initrd, Append: def.Append,
		Boot: string(def.Boot), Extra: def.ExtraArgs,
	}
	var err error
	switch {
	case def.Accel != "":
		s.Accel = []string{def.Accel}
	default:
		if s.Accel, err = ParseAccel(m.Accel); err != nil {
			return s, fmt.Errorf("$VMTUI_ACCEL: %w", err)
		}
	}
	for _, d := range def.Disks {
		f, err := checkImage(d.Path, d.Format)
		if err != nil {
			return s, fmt.Errorf("could not open disk image(s): %w", err)
		}
		s.Disks = append(s.Disks, DiskSpec{Path: d.Path, Format: string(f),
			Bus: d.Bus, IOThread: d.IOThread, Discard: d.Discard, ReadOnly: d.ReadOnly, Cache: d.Cache})
	}
	if def.CDROM != "" {
		fi, err := os.Stat(def.CDROM)
		if err != nil {
			return s, fmt.Errorf("could not find specified iso image %q: %w", def.CDROM, disk.PathCause(err))
		}
		if !fi.Mode().IsRegular() {
			return s, fmt.Errorf("specified iso image %q is not a regular file", def.CDROM)
		}
	}
	for _, f := range []struct{ what, path string }{{"kernel", def.Kernel}, {"initrd", def.Initrd}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return s, fmt.Errorf("could not find specified %s %q: %w", f.what, f.path, disk.PathCause(err))
		}
	}
	for _, n := range def.Networks {
		s.Nets = append(s.Nets, NetSpec{Type: string(n.Type), Bridge: n.Bridge, HostFwd: n.HostFwd, MAC: n.MAC})
	}
	if err := specDevices(&s, def); err != nil {
		return s, err
	}
	s.HotplugSlots = HotplugSlots
	// Not where memory must stay put: locked or preallocated memory, or
	// host devices' DMA (QEMU then turns discarding off anyway).
	s.FreePageReporting = !def.MLock && !def.Prealloc && len(def.HostDevs) == 0
	return s, nil
}
