package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vmtui/vmtui/internal/units"
)

// The device model of issue 13: CPU topology, memory that grows live,
// memory knobs, vsock, shared folders, host devices and disk options.

// Limits of the device keys.
const (
	// MaxShares bounds the shared folders of a VM.
	MaxShares = 8
	// MaxShareTag is the longest virtio-fs tag in bytes (the tag field
	// of the virtio-fs configuration space).
	MaxShareTag = 36
	// MaxHostDevs bounds the host devices of a VM.
	MaxHostDevs = 8
	// MinCID is the lowest CID a guest may have: 0 to 2 are the
	// hypervisor, reserved and the host.
	MinCID = 3
	// MaxCID is the highest CID a guest may have: 0xFFFFFFFF is
	// VMADDR_CID_ANY.
	MaxCID = 0xFFFFFFFE
	// MemoryAlign is what max_memory less memory, and memory with huge
	// pages, must be a multiple of: virtio-mem's block size and the huge
	// page size on x86-64.
	MemoryAlign = 2 << 20
)

// Disk buses (Disk.Bus).
const (
	// BusVirtio is a virtio-blk device per disk, the default.
	BusVirtio = "virtio"
	// BusSCSI is a scsi-hd device on one virtio-scsi controller.
	BusSCSI = "scsi"
)

// Disk cache modes (Disk.Cache).
const (
	// CacheWriteback goes through the host's page cache, the default.
	CacheWriteback = "writeback"
	// CacheNone bypasses the host's page cache (O_DIRECT).
	CacheNone = "none"
)

// Share is a host directory shared with the guest through virtio-fs. The
// guest mounts it with mount -t virtiofs TAG DIR.
type Share struct {
	// Path is the host directory, absolute.
	Path string
	// Tag names the share in the guest: a word (IsWord) of at most
	// MaxShareTag bytes, unique among the VM's shares.
	Tag string
	// ReadOnly refuses the guest's writes.
	ReadOnly bool
}

// HostDev is a host PCI device passed to the guest through VFIO.
type HostDev struct {
	// Address is the device's PCI address, DDDD:BB:DD.F (ParsePCIAddress).
	Address string
}

// Topology returns the CPU topology: sockets, cores per socket and threads
// per core. Those the definition leaves out (0) are 1; when it gives none,
// the topology is cpus sockets of one core. Validate checks that the three
// multiply to CPUs.
func (vm *VM) Topology() (sockets, cores, threads int) {
	if vm.Sockets == 0 && vm.Cores == 0 && vm.Threads == 0 {
		return vm.CPUs, 1, 1
	}
	one := func(n int) int {
		if n == 0 {
			return 1
		}
		return n
	}
	return one(vm.Sockets), one(vm.Cores), one(vm.Threads)
}

// HasTopology reports whether the definition gives a CPU topology.
func (vm *VM) HasTopology() bool { return vm.Sockets != 0 || vm.Cores != 0 || vm.Threads != 0 }

// HasVsock reports whether the guest has a vsock device: vsock = true, or a
// fixed CID.
func (vm *VM) HasVsock() bool { return vm.Vsock || vm.CID != 0 }

// ParsePCIAddress parses a PCI address, DDDD:BB:DD.F (domain, bus, device,
// function, in hex) or BB:DD.F in domain 0, and returns it as sysfs spells
// it: DDDD:BB:DD.F in lower case.
func ParsePCIAddress(s string) (string, error) {
	fail := func(why string) (string, error) {
		return "", fmt.Errorf("invalid PCI address %q: %s (want DDDD:BB:DD.F in hex, like 0000:01:00.0)", s, why)
	}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		parts = append([]string{"0000"}, parts...)
	case 3:
	default:
		return fail("not domain:bus:device.function")
	}
	dev, fn, ok := strings.Cut(parts[2], ".")
	if !ok {
		return fail("no function after the device")
	}
	fields := []struct {
		what  string
		v     string
		width int
		max   uint64
	}{{"domain", parts[0], 4, 0xffff}, {"bus", parts[1], 2, 0xff}, {"device", dev, 2, 0x1f}, {"function", fn, 1, 7}}
	var out []string
	for _, f := range fields {
		if len(f.v) != f.width {
			return fail(fmt.Sprintf("the %s is not %d hex digits", f.what, f.width))
		}
		n, err := strconv.ParseUint(f.v, 16, 16)
		if err != nil {
			return fail(fmt.Sprintf("the %s is not hex", f.what))
		}
		if n > f.max {
			return fail(fmt.Sprintf("the %s is above %x", f.what, f.max))
		}
		out = append(out, strings.ToLower(f.v))
	}
	return out[0] + ":" + out[1] + ":" + out[2] + "." + out[3], nil
}

// ValidShareTag checks a virtio-fs tag.
func ValidShareTag(tag string) error {
	switch {
	case tag == "":
		return fmt.Errorf("empty tag")
	case len(tag) > MaxShareTag:
		return fmt.Errorf("tag %q too long (%d bytes, at most %d)", tag, len(tag), MaxShareTag)
	case !IsWord(tag):
		return fmt.Errorf("invalid tag %q (letters, digits, '.', '-' and '_' only)", tag)
	}
	return nil
}

// devices checks the keys of the device model.
func (c *checker) devices(vm *VM) {
	topo, bad := false, false
	for _, f := range []struct {
		key string
		n   int
	}{{"sockets", vm.Sockets}, {"cores", vm.Cores}, {"threads", vm.Threads}} {
		switch {
		case f.n < 0 || f.n > MaxCPUs:
			c.add(f.key, "%d is out of range (1 to %d)", f.n, MaxCPUs)
			bad = true
		case f.n > 0:
			topo = true
		}
	}
	if topo && !bad && vm.CPUs >= 1 && vm.CPUs <= MaxCPUs {
		if s, co, t := vm.Topology(); s*co*t != vm.CPUs {
			c.add("sockets", "sockets × cores × threads is %d × %d × %d = %d, not cpus (%d); a topology key left out counts as 1",
				s, co, t, s*co*t, vm.CPUs)
		}
	}

	if vm.MaxMemory != 0 {
		switch err := checkMemory(vm.MaxMemory); {
		case err != nil:
			c.add("max_memory", "%s", err)
		case vm.MaxMemory < vm.Memory:
			c.add("max_memory", "%s is below memory (%s)", FormatMemory(vm.MaxMemory), FormatMemory(vm.Memory))
		case (vm.MaxMemory-vm.Memory)%MemoryAlign != 0:
			c.add("max_memory", "%s less memory (%s) is not a multiple of 2M, the block size of the memory it adds",
				FormatMemory(vm.MaxMemory), FormatMemory(vm.Memory))
		}
	}
	if vm.MLock && vm.MaxMemory > vm.Memory {
		c.add("mlock", "cannot be combined with max_memory: locking the guest's memory would allocate all of max_memory at start")
	}
	if vm.HugePages && vm.Memory%MemoryAlign != 0 {
		c.add("hugepages", "memory (%s) is not a multiple of the 2M huge page", FormatMemory(vm.Memory))
	}
	if vm.CID != 0 && (vm.CID < MinCID || vm.CID > MaxCID) {
		c.add("cid", "%d is out of range (%d to %d)", vm.CID, MinCID, uint32(MaxCID))
	}

	if len(vm.Shares) > MaxShares {
		c.add("shares", "too many shares (%d, at most %d)", len(vm.Shares), MaxShares)
	}
	tags := map[string]int{}
	for i, s := range vm.Shares {
		field := fmt.Sprintf("shares[%d]", i)
		if s.Path == "" {
			c.add(field+".path", "missing (the host directory to share)")
		} else {
			c.path(field+".path", s.Path)
		}
		if s.Tag == "" {
			c.add(field+".tag", "missing (the name the guest mounts it by: mount -t virtiofs TAG DIR)")
		} else if err := ValidShareTag(s.Tag); err != nil {
			c.add(field+".tag", "%s", err)
		} else if j, ok := tags[s.Tag]; ok {
			c.add(field+".tag", "%q is also the tag of shares[%d]", s.Tag, j)
		} else {
			tags[s.Tag] = i
		}
	}

	if len(vm.HostDevs) > MaxHostDevs {
		c.add("hostdevs", "too many host devices (%d, at most %d)", len(vm.HostDevs), MaxHostDevs)
	}
	addrs := map[string]int{}
	for i, h := range vm.HostDevs {
		field := fmt.Sprintf("hostdevs[%d].address", i)
		if h.Address == "" {
			c.add(field, "missing (the device's PCI address, like 0000:01:00.0; see lspci -D)")
			continue
		}
		a, err := ParsePCIAddress(h.Address)
		if err != nil {
			c.add(field, "%s", err)
		} else if j, ok := addrs[a]; ok {
			c.add(field, "%q is also hostdevs[%d]", h.Address, j)
		} else {
			addrs[a] = i
		}
	}
}

// diskOptions checks the device options of disks[i].
func (c *checker) diskOptions(field string, d Disk) {
	switch d.Bus {
	case "", BusVirtio, BusSCSI:
	default:
		c.add(field+".bus", "unknown bus %q (want virtio or scsi)", d.Bus)
	}
	switch d.Cache {
	case "", CacheNone, CacheWriteback:
	default:
		c.add(field+".cache", "unknown cache mode %q (want none or writeback)", d.Cache)
	}
}

// The file side of the device keys.

type fileShare struct {
	Path     string `toml:"path"`
	Tag      string `toml:"tag"`
	ReadOnly bool   `toml:"readonly,omitempty"`
}

type fileHostDev struct {
	Address string `toml:"address"`
}

// deviceKeyKinds says what TOML type each device key wants, for
// decodeMessage.
var deviceKeyKinds = map[string]string{
	"sockets": "an integer", "cores": "an integer", "threads": "an integer", "cid": "an integer",
	"hugepages": "a boolean", "mlock": "a boolean", "prealloc": "a boolean", "vsock": "a boolean",
	"readonly": "a boolean", "iothread": "a boolean", "discard": "a boolean",
	"shares": "a list of tables ([[shares]])", "hostdevs": "a list of tables ([[hostdevs]])",
}

// fillDevices copies the device keys of a decoded file into vm.
func fillDevices(vm *VM, fv *fileVM, c *checker) {
	vm.Sockets, vm.Cores, vm.Threads = 0, 0, 0
	for _, f := range []struct {
		key string
		v   *int64
		to  *int
	}{{"sockets", fv.Sockets, &vm.Sockets}, {"cores", fv.Cores, &vm.Cores}, {"threads", fv.Threads, &vm.Threads}} {
		if f.v == nil {
			continue
		}
		if n := *f.v; n < 1 || n > MaxCPUs {
			c.add(f.key, "%d is out of range (1 to %d)", n, MaxCPUs)
		} else {
			*f.to = int(n)
		}
	}
	vm.MaxMemory = 0
	switch m := fv.MaxMemory.(type) {
	case nil:
	case string:
		n, err := units.ParseSize(m)
		if err != nil {
			c.add("max_memory", "%s", err)
		} else {
			vm.MaxMemory = n
		}
	case int64:
		c.add("max_memory", "want a size as a string, like \"%dM\", not the number %d", m, m)
	default:
		c.add("max_memory", "want a size as a string, like \"4G\"")
	}
	vm.HugePages, vm.MLock, vm.Prealloc, vm.Vsock = fv.HugePages, fv.MLock, fv.Prealloc, fv.Vsock
	vm.CID = 0
	if fv.CID != nil {
		if n := *fv.CID; n < MinCID || n > MaxCID {
			c.add("cid", "%d is out of range (%d to %d)", n, MinCID, int64(MaxCID))
		} else {
			vm.CID = uint32(n)
		}
	}
	vm.Shares = nil
	for _, s := range fv.Shares {
		vm.Shares = append(vm.Shares, Share(s))
	}
	vm.HostDevs = nil
	for _, h := range fv.HostDevs {
		a := h.Address
		if n, err := ParsePCIAddress(a); err == nil {
			a = n
		}
		vm.HostDevs = append(vm.HostDevs, HostDev{Address: a})
	}
}

// encodeDevices copies vm's device keys into a file to encode.
func encodeDevices(fv *fileVM, vm *VM) {
	ptr := func(n int) *int64 {
		if n == 0 {
			return nil
		}
		v := int64(n)
		return &v
	}
	fv.Sockets, fv.Cores, fv.Threads = ptr(vm.Sockets), ptr(vm.Cores), ptr(vm.Threads)
	if vm.MaxMemory != 0 {
		fv.MaxMemory = FormatMemory(vm.MaxMemory)
	}
	fv.HugePages, fv.MLock, fv.Prealloc, fv.Vsock = vm.HugePages, vm.MLock, vm.Prealloc, vm.Vsock
	if vm.CID != 0 {
		v := int64(vm.CID)
		fv.CID = &v
	}
	for _, s := range vm.Shares {
		fv.Shares = append(fv.Shares, fileShare(s))
	}
	for _, h := range vm.HostDevs {
		fv.HostDevs = append(fv.HostDevs, fileHostDev(h))
	}
}

// DeviceSummary describes the device keys the definition sets, one line
// each ("topology 2 sockets × 2 cores × 1 thread", "share data /srv/data
// read-only", "disks[0] bus scsi, discard"), for show and the TUI's detail
// view; none when it sets none. A chosen CID is the running VM's to tell.
func (vm *VM) DeviceSummary() []string {
	var out []string
	if vm.HasTopology() {
		s, c, t := vm.Topology()
		out = append(out, fmt.Sprintf("topology %d %s × %d %s × %d %s", s, plural(s, "socket"), c, plural(c, "core"), t, plural(t, "thread")))
	}
	if vm.MaxMemory > vm.Memory {
		out = append(out, "max_memory "+FormatMemory(vm.MaxMemory))
	}
	var knobs []string
	for _, k := range []struct {
		on   bool
		name string
	}{{vm.HugePages, "hugepages"}, {vm.MLock, "mlock"}, {vm.Prealloc, "prealloc"}} {
		if k.on {
			knobs = append(knobs, k.name)
		}
	}
	if len(knobs) > 0 {
		out = append(out, "memory "+strings.Join(knobs, ", "))
	}
	switch {
	case vm.CID != 0:
		out = append(out, fmt.Sprintf("vsock cid %d", vm.CID))
	case vm.Vsock:
		out = append(out, "vsock cid chosen at start")
	}
	for _, s := range vm.Shares {
		l := "share " + s.Tag + " " + strconv.Quote(s.Path)
		if s.ReadOnly {
			l += " read-only"
		}
		out = append(out, l)
	}
	for _, h := range vm.HostDevs {
		out = append(out, "hostdev "+h.Address)
	}
	for i, d := range vm.Disks {
		var o []string
		if d.Bus != "" && d.Bus != BusVirtio {
			o = append(o, "bus "+d.Bus)
		}
		for _, k := range []struct {
			on   bool
			name string
		}{{d.IOThread, "iothread"}, {d.Discard, "discard"}, {d.ReadOnly, "read-only"}} {
			if k.on {
				o = append(o, k.name)
			}
		}
		if d.Cache != "" && d.Cache != CacheWriteback {
			o = append(o, "cache "+d.Cache)
		}
		if len(o) > 0 {
			out = append(out, fmt.Sprintf("disks[%d] %s", i, strings.Join(o, ", ")))
		}
	}
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
