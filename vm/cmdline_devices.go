package vm

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
)

// The devices of issue 13's device model: memory backends and virtio-mem,
// the CPU topology, disk buses and options, virtio-fs shares, vsock and
// VFIO host devices. Each renders its own arguments from typed fields; no
// string a user wrote reaches QEMU's option parser unescaped.

// Fixed ids other code relies on.
const (
	// MemBackendID is the memory backend of the guest's base memory,
	// when it has one (-machine memory-backend=).
	MemBackendID = "mem0"
	// VirtioMemID is the virtio-mem device through which the guest's
	// memory grows up to max_memory (qom-set VirtioMemID requested-size).
	VirtioMemID = "vmem0"
	// VirtioMemBackendID is its memory backend.
	VirtioMemBackendID = "vmem0-mem"
	// SCSIControllerID is the virtio-scsi controller of the scsi disks;
	// its bus is SCSIControllerID+".0".
	SCSIControllerID = "scsi0"
	// VsockID is the vhost-vsock device.
	VsockID = "vsock0"
)

// specDevices resolves the device keys of def into s: the topology, memory
// and its knobs, the fixed CID (a CID for vsock = true is allocated at
// start: allocCID), the shares (whose directories must exist) and the host
// devices' addresses, normalised.
func specDevices(s *Spec, def *config.VM) error {
	if def.HasTopology() {
		s.Sockets, s.Cores, s.Threads = def.Topology()
	}
	if def.MaxMemory > def.Memory {
		s.MaxMemory = def.MaxMemory
	}
	s.HugePages, s.MLock, s.Prealloc = def.HugePages, def.MLock, def.Prealloc
	s.CID = def.CID
	for i, sh := range def.Shares {
		fi, err := os.Stat(sh.Path)
		if err != nil {
			return fmt.Errorf("shares[%d]: could not find shared directory %q: %w", i, sh.Path, disk.PathCause(err))
		}
		if !fi.IsDir() {
			return fmt.Errorf("shares[%d]: shared path %q is not a directory", i, sh.Path)
		}
		s.Shares = append(s.Shares, ShareSpec{Path: sh.Path, Tag: sh.Tag, ReadOnly: sh.ReadOnly})
	}
	for i, h := range def.HostDevs {
		a, err := config.ParsePCIAddress(h.Address)
		if err != nil {
			return fmt.Errorf("hostdevs[%d]: %w", i, err)
		}
		s.HostDevs = append(s.HostDevs, a)
	}
	return nil
}

// mib renders a size in MiB as QEMU's size options take it.
func mib(n int64) string { return strconv.FormatInt(n>>20, 10) + "M" }

// onOff renders a boolean option value.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// memoryDev is the guest's memory: -m alone when no knob asks for more,
// else a memory backend; a virtio-mem device when it may grow; mlock.
type memoryDev struct {
	size, max                  int64
	hugePages, mlock, prealloc bool
	file                       string
	fileShare                  bool
	shared                     bool   // vhost-user (virtio-fs) needs the guest's memory shared
	id                         string // the backend's id; "" for MemBackendID
}

func (m memoryDev) args() ([]string, error) {
	if m.size <= 0 || m.size%(1<<20) != 0 {
		return nil, fmt.Errorf("memory %d is not a positive whole number of MiB", m.size)
	}
	grow := m.max > m.size
	if grow && (m.max-m.size)%config.MemoryAlign != 0 {
		return nil, fmt.Errorf("max_memory less memory (%d bytes) is not a multiple of 2M", m.max-m.size)
	}
	if m.file != "" && m.hugePages {
		return nil, errors.New("a memory file cannot be backed by huge pages")
	}
	if err := checkValue("memory file", m.file); err != nil {
		return nil, err
	}
	mem := mib(m.size)
	if grow {
		mem += ",maxmem=" + mib(m.max)
	}
	var argv []string
	if m.hugePages || m.prealloc || m.file != "" || m.shared {
		id := MemBackendID
		if m.id != "" {
			id = m.id
		}
		obj := m.backend(id, m.size, m.prealloc)
		if m.file != "" {
			obj = "memory-backend-file,id=" + id + ",size=" + mib(m.size) + "," +
				opts("mem-path", m.file) + ",share=" + onOff(m.fileShare || m.shared)
			if m.prealloc {
				obj += ",prealloc=on"
			}
		}
		argv = append(argv, "-object", obj, "-machine", "memory-backend="+id)
	}
	argv = append(argv, "-m", mem)
	if grow {
		// The added memory is preallocated as it is plugged (the
		// device's prealloc), not all at start (the backend's).
		obj := m.backend(VirtioMemBackendID, m.max-m.size, false)
		if m.hugePages {
			obj += ",reserve=off" // huge pages are taken as blocks are plugged
		}
		dev := "virtio-mem-pci,id=" + VirtioMemID + ",memdev=" + VirtioMemBackendID + ",requested-size=0"
		if m.prealloc {
			dev += ",prealloc=on"
		}
		argv = append(argv, "-object", obj, "-device", dev)
	}
	if m.mlock {
		argv = append(argv, "-overcommit", "mem-lock=on")
	}
	return argv, nil
}

// backend renders an anonymous memory backend of the given size: memfd
// when huge pages or sharing ask for it, else plain RAM.
func (m memoryDev) backend(id string, size int64, prealloc bool) string {
	var obj string
	if m.hugePages || m.shared {
		obj = "memory-backend-memfd,id=" + id + ",size=" + mib(size) + ",share=" + onOff(m.shared)
		if m.hugePages {
			obj += ",hugetlb=on"
		}
	} else {
		obj = "memory-backend-ram,id=" + id + ",size=" + mib(size)
	}
	if prealloc {
		obj += ",prealloc=on"
	}
	return obj
}

// smpDev is the vCPUs, with a topology when one is given.
type smpDev struct{ cpus, sockets, cores, threads int }

func (s smpDev) args() ([]string, error) {
	v := strconv.Itoa(s.cpus)
	if s.sockets != 0 || s.cores != 0 || s.threads != 0 {
		if s.sockets < 1 || s.cores < 1 || s.threads < 1 || s.sockets*s.cores*s.threads != s.cpus {
			return nil, fmt.Errorf("topology %d sockets × %d cores × %d threads is not %d vcpus", s.sockets, s.cores, s.threads, s.cpus)
		}
		v += fmt.Sprintf(",sockets=%d,cores=%d,threads=%d", s.sockets, s.cores, s.threads)
	}
	return []string{"-smp", v}, nil
}

// scsiControllerDev is the virtio-scsi controller of the scsi disks, with
// an I/O thread when one of them asks for it.
type scsiControllerDev struct{ iothread bool }

// scsiController returns the controller the scsi disks need, if any.
func scsiController(disks []DiskSpec) []device {
	var c *scsiControllerDev
	for _, d := range disks {
		if d.Bus == config.BusSCSI {
			if c == nil {
				c = &scsiControllerDev{}
			}
			c.iothread = c.iothread || d.IOThread
		}
	}
	if c == nil {
		return nil
	}
	return []device{*c}
}

// scsiIOThreadID is the I/O thread of the virtio-scsi controller.
const scsiIOThreadID = "io-" + SCSIControllerID

func (c scsiControllerDev) args() ([]string, error) {
	if c.iothread {
		return []string{"-object", "iothread,id=" + scsiIOThreadID,
			"-device", "virtio-scsi-pci,id=" + SCSIControllerID + ",iothread=" + scsiIOThreadID}, nil
	}
	return []string{"-device", "virtio-scsi-pci,id=" + SCSIControllerID}, nil
}

// nodeOpts are the options of a disk's block nodes (file and format).
func (d DiskSpec) nodeOpts() (string, error) {
	var o string
	if d.ReadOnly {
		o += ",read-only=on"
	} else if d.Discard {
		o += ",discard=unmap"
	}
	switch d.Cache {
	case "", config.CacheWriteback:
	case config.CacheNone:
		o += ",cache.direct=on"
	default:
		return "", fmt.Errorf("disk %q: unknown cache mode %q (want none or writeback)", d.Path, d.Cache)
	}
	return o, nil
}

// formatNodeOpts are the options only the format node takes: zero writes
// become discards on a disk that discards.
func (d DiskSpec) formatNodeOpts() string {
	if d.Discard && !d.ReadOnly {
		return ",detect-zeroes=unmap"
	}
	return ""
}

// frontend renders the guest's device of a disk and the I/O thread it
// needs.
func (d diskDev) frontend(node string) ([]string, error) {
	var argv []string
	var dev string
	switch d.Bus {
	case "", config.BusVirtio:
		dev = "virtio-blk-pci,drive=" + node + ",id=" + node + "-dev"
		if d.IOThread {
			io := "io" + strconv.Itoa(d.index)
			argv = append(argv, "-object", "iothread,id="+io)
			dev += ",iothread=" + io
		}
	case config.BusSCSI:
		dev = "scsi-hd,bus=" + SCSIControllerID + ".0,drive=" + node + ",id=" + node + "-dev"
	default:
		return nil, fmt.Errorf("disk %q: unknown bus %q (want virtio or scsi)", d.Path, d.Bus)
	}
	if d.bootFirst {
		dev += ",bootindex=0"
	}
	return append(argv, "-device", dev), nil
}

// vsockDev is the guest's vsock device.
type vsockDev struct{ cid uint32 }

func (v vsockDev) args() ([]string, error) {
	if v.cid < config.MinCID || v.cid > config.MaxCID {
		return nil, fmt.Errorf("vsock cid %d is out of range (%d to %d)", v.cid, config.MinCID, uint32(config.MaxCID))
	}
	return []string{"-device", "vhost-vsock-pci,id=" + VsockID + ",guest-cid=" + strconv.FormatUint(uint64(v.cid), 10)}, nil
}

// hostDev is a host PCI device passed through with VFIO.
type hostDev struct {
	index int
	addr  string
}

func (h hostDev) args() ([]string, error) {
	a, err := config.ParsePCIAddress(h.addr)
	if err != nil {
		return nil, err
	}
	return []string{"-device", "vfio-pci,host=" + a + ",id=hostdev" + strconv.Itoa(h.index)}, nil
}

// cmdlineCID returns the vsock CID a QEMU command line gives its guest,
// or 0.
func cmdlineCID(argv []string) uint32 {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] != "-device" || !strings.HasPrefix(argv[i+1], "vhost-vsock-pci,") {
			continue
		}
		for _, kv := range strings.Split(argv[i+1], ",") {
			if v, ok := strings.CutPrefix(kv, "guest-cid="); ok {
				if n, err := strconv.ParseUint(v, 10, 32); err == nil {
					return uint32(n)
				}
			}
		}
	}
	return 0
}

// balloonDev is a virtio-balloon that never inflates: vmtui uses it only
// for free page reporting, by which a Linux guest (virtio_balloon, 5.7 and
// later) tells QEMU which of its pages are free, and QEMU discards them.
type balloonDev struct{}

func (balloonDev) args() ([]string, error) {
	return []string{"-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"}, nil
}
