package vm

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
)

// fakeHost builds a fake /sys, /dev and /proc under a temporary root.
type fakeHost struct {
	t    *testing.T
	root string
}

func newFakeHost(t *testing.T) *fakeHost {
	return &fakeHost{t: t, root: t.TempDir()}
}

func (f *fakeHost) mkdir(p string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Join(f.root, p), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeHost) write(p, data string) {
	f.t.Helper()
	f.mkdir(filepath.Dir(p))
	if err := os.WriteFile(filepath.Join(f.root, p), []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeHost) link(target, p string) {
	f.t.Helper()
	f.mkdir(filepath.Dir(p))
	if err := os.Symlink(target, filepath.Join(f.root, p)); err != nil {
		f.t.Fatal(err)
	}
}

// pciDev adds a PCI device in an IOMMU group (none for ""), bound to
// driver (none for ""), of class.
func (f *fakeHost) pciDev(addr, driver, group, class string) {
	dev := "/sys/bus/pci/devices/" + addr
	f.mkdir(dev)
	f.write(dev+"/class", class+"\n")
	if driver != "" {
		f.link("../../../bus/pci/drivers/"+driver, dev+"/driver")
	}
	if group != "" {
		f.link("../../../kernel/iommu_groups/"+group, dev+"/iommu_group")
		f.link("../../../../devices/pci0000:00/"+addr, "/sys/kernel/iommu_groups/"+group+"/devices/"+addr)
	}
}

func (f *fakeHost) check() hostCheck {
	return hostCheck{root: f.root,
		memlock: func() (uint64, error) { return unix.RLIM_INFINITY, nil },
		ipcLock: func() (bool, error) { return false, nil }}
}

func TestHostCheckHostDev(t *testing.T) {
	const gpu = "0000:01:00.0"
	tests := []struct {
		name  string
		setup func(f *fakeHost)
		want  string // "" for none
	}{
		{"viable", func(f *fakeHost) {
			f.pciDev(gpu, "vfio-pci", "7", "0x030000")
			f.pciDev("0000:01:00.1", "vfio-pci", "7", "0x040300")
			f.pciDev("0000:00:01.0", "pcieport", "7", "0x060400") // a bridge may keep its driver
			f.pciDev("0000:01:00.2", "", "7", "0x0c0330")         // so may a device with none
			f.mkdir("/dev/vfio/7")
		}, ""},
		{"missing", func(f *fakeHost) {}, "no PCI device 0000:01:00.0 on this host (/sys/bus/pci/devices/0000:01:00.0 does not exist); lspci -D lists the host's devices"},
		{"no driver", func(f *fakeHost) { f.pciDev(gpu, "", "7", "0x030000") },
			"PCI device 0000:01:00.0 is bound to no driver, not vfio-pci; bind it: modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override; echo 0000:01:00.0 > /sys/bus/pci/drivers_probe"},
		{"other driver", func(f *fakeHost) { f.pciDev(gpu, "nouveau", "7", "0x030000") },
			"PCI device 0000:01:00.0 is bound to nouveau, not vfio-pci; rebind it (the host loses the device): modprobe vfio-pci; " +
				"echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override; echo 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind; " +
				"echo 0000:01:00.0 > /sys/bus/pci/drivers_probe"},
		{"no iommu", func(f *fakeHost) { f.pciDev(gpu, "vfio-pci", "", "0x030000") },
			"PCI device 0000:01:00.0 has no IOMMU group: the IOMMU is off; turn it on (intel_iommu=on or amd_iommu=on"},
		{"group not viable", func(f *fakeHost) {
			f.pciDev(gpu, "vfio-pci", "7", "0x030000")
			f.pciDev("0000:01:00.1", "snd_hda_intel", "7", "0x040300")
			f.mkdir("/dev/vfio/7")
		}, "IOMMU group 7 of PCI device 0000:01:00.0 is not viable: 0000:01:00.1, in the same group, is bound to snd_hda_intel; " +
			"a group is passed through whole: bind 0000:01:00.1 to vfio-pci too (as 0000:01:00.0), or unbind it (echo 0000:01:00.1 > /sys/bus/pci/devices/0000:01:00.1/driver/unbind)"},
		{"no /dev/vfio", func(f *fakeHost) { f.pciDev(gpu, "vfio-pci", "7", "0x030000") },
			"PCI device 0000:01:00.0: no /dev/vfio/7 for its IOMMU group: load vfio-pci (modprobe vfio-pci), and let this user open it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			tt.setup(f)
			err := f.check().check(Spec{HostDevs: []string{gpu}})
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("check: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), "hostdevs[0]: "+tt.want)):
				t.Errorf("check:\ngot  %v\nwant hostdevs[0]: %s", err, tt.want)
			}
		})
	}
}

func TestHostCheckVsock(t *testing.T) {
	f := newFakeHost(t)
	want := "vsock: this host has no /dev/vhost-vsock (the vhost_vsock kernel module is not loaded): load it (modprobe vhost_vsock), or remove vsock and cid from the definition"
	if err := f.check().check(Spec{CID: 3}); err == nil || err.Error() != want {
		t.Errorf("check:\ngot  %v\nwant %s", err, want)
	}
	if err := f.check().check(Spec{}); err != nil {
		t.Errorf("check without vsock: %v", err)
	}
	f.write("/dev/vhost-vsock", "")
	if err := f.check().check(Spec{CID: 3}); err != nil {
		t.Errorf("check: %v", err)
	}
}

func TestHostCheckHugePages(t *testing.T) {
	meminfo := func(total, free, rsvd int, sizeKB int) string {
		return "MemTotal:       16318412 kB\nHugePages_Total:    " + itoa(total) + "\nHugePages_Free:     " + itoa(free) +
			"\nHugePages_Rsvd:        " + itoa(rsvd) + "\nHugePages_Surp:        0\nHugepagesize:       " + itoa(sizeKB) + " kB\n"
	}
	tests := []struct {
		name, meminfo string
		memory        int64
		want          string
	}{
		{"enough", meminfo(600, 600, 0, 2048), 1 << 30, ""},
		{"exactly", meminfo(512, 512, 0, 2048), 1 << 30, ""},
		{"reserved by others", meminfo(600, 600, 100, 2048), 1 << 30,
			"hugepages: the guest's memory (1.0G) needs 512 huge pages of 2.0M, and the host has 500 free; reserve more: echo 612 > /proc/sys/vm/nr_hugepages"},
		{"none", meminfo(0, 0, 0, 2048), 1 << 30,
			"hugepages: this host has no huge pages (HugePages_Total is 0 in /proc/meminfo); reserve 512 of 2M: echo 512 > /proc/sys/vm/nr_hugepages, or remove hugepages from the definition"},
		{"1G pages", meminfo(4, 4, 0, 1<<20), 1536 << 20,
			"hugepages: memory (1.5G) is not a multiple of the host's huge page size (1.0G)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			f.write("/proc/meminfo", tt.meminfo)
			err := f.check().check(Spec{Memory: tt.memory, HugePages: true})
			if got := errString(err); got != tt.want {
				t.Errorf("check:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
	// This host's own /proc/meminfo reads.
	if v := parseMeminfo([]byte(mustRead(t, "/proc/meminfo"))); v["MemTotal"] == 0 {
		t.Errorf("parseMeminfo of /proc/meminfo: no MemTotal in %v", v)
	}
}

func TestHostCheckMLock(t *testing.T) {
	tests := []struct {
		name    string
		limit   uint64
		ipcLock bool
		want    string
	}{
		{"unlimited", unix.RLIM_INFINITY, false, ""},
		{"enough", 2 << 30, false, ""},
		{"CAP_IPC_LOCK", 8 << 20, true, ""},
		{"too low", 8 << 20, false, "mlock: the locked-memory limit (RLIMIT_MEMLOCK, ulimit -l) is 8.0M, below the guest's memory (1.0G): " +
			"raise it (ulimit -l unlimited, or memlock in /etc/security/limits.conf), or remove mlock from the definition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t).check()
			h.memlock = func() (uint64, error) { return tt.limit, nil }
			h.ipcLock = func() (bool, error) { return tt.ipcLock, nil }
			if got := errString(h.check(Spec{Memory: 1 << 30, MLock: true})); got != tt.want {
				t.Errorf("check:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
	h := newFakeHost(t).check()
	h.memlock = func() (uint64, error) { return 0, errors.New("getrlimit: boom") }
	if got := errString(h.check(Spec{Memory: 1 << 30, MLock: true})); got != "mlock: getrlimit: boom" {
		t.Errorf("check: %s", got)
	}
	// The real readers work on this host.
	if _, err := rlimitMemlock(); err != nil {
		t.Error(err)
	}
	if _, err := childHasIPCLock(); err != nil {
		t.Error(err)
	}
}

func TestStatusCaps(t *testing.T) {
	status := []byte("Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n")
	if c, err := statusCaps(status, "CapBnd:"); err != nil || c&capIPCLock == 0 {
		t.Errorf("CapBnd = %x, %v; want CAP_IPC_LOCK in it", c, err)
	}
	if c, err := statusCaps(status, "CapAmb:"); err != nil || c != 0 {
		t.Errorf("CapAmb = %x, %v", c, err)
	}
	if _, err := statusCaps([]byte("Name:\tx\n"), "CapBnd:"); err == nil {
		t.Error("no error without the line")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func itoa(n int) string { return strconv.Itoa(n) }

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAllocCID: two VMs with vsock get different CIDs, each its own
// (cidBase+ID) unless another VM's definition fixes it; a fixed CID another
// definition fixes too is refused, naming that VM.
func TestAllocCID(t *testing.T) {
	st, err := store.Open(store.HomePaths(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(st)
	defs := map[string]*config.VM{}
	for _, d := range []*config.VM{
		{Name: "a", Vsock: true}, {Name: "b", Vsock: true}, {Name: "c", CID: 1001}, {Name: "d"},
	} {
		d.Kernel = "/k"
		d.SetDefaults()
		if err := st.Create(d); err != nil {
			t.Fatal(err)
		}
		defs[d.Name] = d
	}
	// a is ID 1: 1001 is c's, so a has 1002; b (ID 2) has 1002 too, as
	// no VM runs with it.
	for name, want := range map[string]uint32{"a": 1002, "b": 1002, "c": 1001, "d": 0} {
		if got, err := m.allocCID(defs[name]); got != want || err != nil {
			t.Errorf("allocCID(%s) = %d, %v; want %d", name, got, err, want)
		}
	}
	defs["d"].CID = 1001
	if _, err := m.allocCID(defs["d"]); err == nil || !strings.Contains(err.Error(), "vsock cid 1001 is taken by vm c (its definition fixes it)") {
		t.Errorf("allocCID of a taken cid: %v", err)
	}
}
