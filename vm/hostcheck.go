package vm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/units"
)

// The checks Start makes of the host before it starts QEMU, for the
// devices and memory knobs a definition asks for: each error says what to
// do about it, where QEMU would say only that something failed.

// hostCheck reads the host through root and the injected readers, so that
// tests check fake sysfs trees and limits.
type hostCheck struct {
	// root is prefixed to the host's /sys, /dev and /proc: "" on the host.
	root string
	// memlock returns RLIMIT_MEMLOCK's soft limit in bytes
	// (unix.RLIM_INFINITY for no limit).
	memlock func() (uint64, error)
	// ipcLock reports whether QEMU, started by this process, will have
	// CAP_IPC_LOCK (which lifts RLIMIT_MEMLOCK).
	ipcLock func() (bool, error)
}

// hostChecks is the check of the real host.
func hostChecks() hostCheck {
	return hostCheck{memlock: rlimitMemlock, ipcLock: childHasIPCLock}
}

func rlimitMemlock() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit RLIMIT_MEMLOCK: %w", err)
	}
	return rl.Cur, nil
}

// capIPCLock is CAP_IPC_LOCK's bit in /proc/PID/status's capability sets.
const capIPCLock = 1 << unix.CAP_IPC_LOCK

// childHasIPCLock reports whether a program this process executes gets
// CAP_IPC_LOCK: as root, when the bounding set holds it (root's
// capabilities are the bounding set after execve); otherwise only as an
// ambient capability.
func childHasIPCLock() (bool, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	set := "CapAmb:"
	if os.Geteuid() == 0 {
		set = "CapBnd:"
	}
	caps, err := statusCaps(status, set)
	if err != nil {
		return false, err
	}
	return caps&capIPCLock != 0, nil
}

// statusCaps parses a capability set ("CapBnd:") of /proc/PID/status.
func statusCaps(status []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			return strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
		}
	}
	return 0, fmt.Errorf("no %s line in /proc/self/status", strings.TrimSuffix(key, ":"))
}

func (h hostCheck) path(p string) string { return filepath.Join(h.root, p) }

// check checks everything s asks of the host, returning the first
// problem.
func (h hostCheck) check(s Spec) error {
	if s.CID != 0 {
		if err := h.vsock(); err != nil {
			return err
		}
	}
	for i, a := range s.HostDevs {
		if err := h.hostDev(a); err != nil {
			return fmt.Errorf("hostdevs[%d]: %w", i, err)
		}
	}
	if s.HugePages {
		if err := h.hugePages(s.Memory); err != nil {
			return fmt.Errorf("hugepages: %w", err)
		}
	}
	if s.MLock {
		if err := h.mlock(max(s.Memory, s.MaxMemory)); err != nil {
			return fmt.Errorf("mlock: %w", err)
		}
	}
	return nil
}

// vsock checks that the host can give a guest a vsock device.
func (h hostCheck) vsock() error {
	const dev = "/dev/vhost-vsock"
	if _, err := os.Stat(h.path(dev)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New("vsock: this host has no /dev/vhost-vsock (the vhost_vsock kernel module is not loaded): " +
				"load it (modprobe vhost_vsock), or remove vsock and cid from the definition")
		}
		return fmt.Errorf("vsock: %w", err)
	}
	return nil
}

// hostDev checks that the PCI device at addr can be passed through: it
// exists, is bound to vfio-pci, and its IOMMU group is viable (every
// device in it bound to vfio-pci or to no driver, PCI bridges aside) and
// open to QEMU through /dev/vfio.
func (h hostCheck) hostDev(addr string) error {
	devices := h.path("/sys/bus/pci/devices")
	dev := filepath.Join(devices, addr)
	if _, err := os.Stat(dev); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no PCI device %s on this host (%s does not exist); lspci -D lists the host's devices", addr, "/sys/bus/pci/devices/"+addr)
		}
		return err
	}
	rebind := fmt.Sprintf("modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/%[1]s/driver_override; "+
		"echo %[1]s > /sys/bus/pci/devices/%[1]s/driver/unbind; echo %[1]s > /sys/bus/pci/drivers_probe", addr)
	switch drv := driverOf(dev); drv {
	case "vfio-pci":
	case "":
		return fmt.Errorf("PCI device %s is bound to no driver, not vfio-pci; bind it: modprobe vfio-pci; "+
			"echo vfio-pci > /sys/bus/pci/devices/%[1]s/driver_override; echo %[1]s > /sys/bus/pci/drivers_probe", addr)
	default:
		return fmt.Errorf("PCI device %s is bound to %s, not vfio-pci; rebind it (the host loses the device): %s", addr, drv, rebind)
	}
	target, err := os.Readlink(filepath.Join(dev, "iommu_group"))
	if err != nil {
		return fmt.Errorf("PCI device %s has no IOMMU group: the IOMMU is off; turn it on "+
			"(intel_iommu=on or amd_iommu=on on the host kernel's command line, and VT-d or AMD-Vi in the firmware) and reboot", addr)
	}
	group := filepath.Base(target)
	members, err := os.ReadDir(filepath.Join(h.path("/sys/kernel/iommu_groups"), group, "devices"))
	if err != nil {
		return fmt.Errorf("PCI device %s: read its IOMMU group %s: %w", addr, group, err)
	}
	for _, e := range members {
		other := e.Name()
		if other == addr {
			continue
		}
		odev := filepath.Join(devices, other)
		switch drv := driverOf(odev); {
		case drv == "" || drv == "vfio-pci" || isPCIBridge(odev):
		default:
			return fmt.Errorf("IOMMU group %s of PCI device %s is not viable: %s, in the same group, is bound to %s; "+
				"a group is passed through whole: bind %s to vfio-pci too (as %s), or unbind it "+
				"(echo %s > /sys/bus/pci/devices/%s/driver/unbind)", group, addr, other, drv, other, addr, other, other)
		}
	}
	if _, err := os.Stat(filepath.Join(h.path("/dev/vfio"), group)); err != nil {
		return fmt.Errorf("PCI device %s: no /dev/vfio/%s for its IOMMU group: load vfio-pci (modprobe vfio-pci), "+
			"and let this user open it (chown or a udev rule)", addr, group)
	}
	return nil
}

// driverOf returns the name of the driver a sysfs PCI device is bound to,
// or "".
func driverOf(dev string) string {
	target, err := os.Readlink(filepath.Join(dev, "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// isPCIBridge reports whether a sysfs PCI device is a PCI-to-PCI bridge
// (class 0x0604xx), which may stay with its host driver.
func isPCIBridge(dev string) bool {
	class, err := os.ReadFile(filepath.Join(dev, "class"))
	return err == nil && strings.HasPrefix(strings.TrimSpace(string(class)), "0x0604")
}

// hugePages checks that the host has free huge pages for size bytes of
// guest memory, in its default huge page size (the one QEMU's
// memory-backend-memfd hugetlb=on maps).
func (h hostCheck) hugePages(size int64) error {
	meminfo, err := os.ReadFile(h.path("/proc/meminfo"))
	if err != nil {
		return err
	}
	v := parseMeminfo(meminfo)
	pageKB, ok := v["Hugepagesize"]
	if !ok || pageKB == 0 || v["HugePages_Total"] == 0 {
		return fmt.Errorf("this host has no huge pages (HugePages_Total is 0 in /proc/meminfo); reserve %d of 2M: "+
			"echo %d > /proc/sys/vm/nr_hugepages, or remove hugepages from the definition", size/(2<<20), size/(2<<20))
	}
	page := int64(pageKB) << 10
	if size%page != 0 {
		return fmt.Errorf("memory (%s) is not a multiple of the host's huge page size (%s)", units.FormatSize(size), units.FormatSize(page))
	}
	need := size / page
	free := int64(v["HugePages_Free"]) - int64(v["HugePages_Rsvd"])
	if free < need {
		return fmt.Errorf("the guest's memory (%s) needs %d huge pages of %s, and the host has %d free; reserve more: "+
			"echo %d > /proc/sys/vm/nr_hugepages", units.FormatSize(size), need, units.FormatSize(page), max(free, 0),
			int64(v["HugePages_Total"])+need-max(free, 0))
	}
	return nil
}

// parseMeminfo reads /proc/meminfo's numbers (kB for sizes, counts for
// HugePages_*).
func parseMeminfo(data []byte) map[string]uint64 {
	v := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			v[key] = n
		}
	}
	return v
}

// mlock checks that QEMU may lock size bytes of guest memory: its
// RLIMIT_MEMLOCK (inherited from this process) allows it, or it has
// CAP_IPC_LOCK.
func (h hostCheck) mlock(size int64) error {
	limit, err := h.memlock()
	if err != nil {
		return err
	}
	if limit == unix.RLIM_INFINITY || limit >= uint64(size) {
		return nil
	}
	if ok, err := h.ipcLock(); err == nil && ok {
		return nil
	}
	return fmt.Errorf("the locked-memory limit (RLIMIT_MEMLOCK, ulimit -l) is %s, below the guest's memory (%s): "+
		"raise it (ulimit -l unlimited, or memlock in /etc/security/limits.conf), or remove mlock from the definition",
		units.FormatSize(int64(limit)), units.FormatSize(size))
}

// allocCID returns the vsock CID of def's guest, 0 when it has no vsock:
// its fixed CID, unless another VM uses it (an error naming that VM), or
// one no other VM uses, from cidBase+ID up.
func (m *Manager) allocCID(def *config.VM) (uint32, error) {
	if !def.HasVsock() {
		return 0, nil
	}
	all, err := m.store.List()
	if err != nil {
		return 0, err
	}
	var others []cidUser
	for _, o := range all {
		if o.Name == def.Name {
			continue
		}
		if o.CID != 0 {
			others = append(others, cidUser{cid: o.CID, vm: o.Name, fixed: true})
		}
		if p, _ := m.find(o.Name, nil); p != nil {
			if c := cmdlineCID(p.Cmdline); c != 0 {
				others = append(others, cidUser{cid: c, vm: o.Name})
			}
		}
	}
	return pickCID(def, others)
}

// cidUser is a CID another VM has: fixed by its definition, or given to
// its running guest.
type cidUser struct {
	cid   uint32
	vm    string
	fixed bool
}

// cidBase is where the CIDs vmtui chooses start: the CID of VM ID n is
// cidBase+n unless another VM has it.
const cidBase = 1000

// pickCID returns def's CID given the CIDs others use.
func pickCID(def *config.VM, others []cidUser) (uint32, error) {
	used := map[uint32]cidUser{}
	for _, u := range others {
		if _, ok := used[u.cid]; !ok || !u.fixed {
			used[u.cid] = u
		}
	}
	if def.CID != 0 {
		u, ok := used[def.CID]
		if !ok {
			return def.CID, nil
		}
		how := "its running guest has it"
		if u.fixed {
			how = "its definition fixes it"
		}
		return 0, fmt.Errorf("start vm %s: vsock cid %d is taken by vm %s (%s); give %s another cid, or leave cid out to have one chosen",
			def.Name, def.CID, config.DisplayName(u.vm), how, def.Name)
	}
	span := uint64(config.MaxCID - config.MinCID + 1)
	start := (uint64(cidBase) + uint64(max(def.ID, 0)) - config.MinCID) % span
	for i := uint64(0); i <= uint64(len(used)); i++ {
		c := uint32((start+i)%span + config.MinCID)
		if _, ok := used[c]; !ok {
			return c, nil
		}
	}
	return 0, fmt.Errorf("start vm %s: no free vsock cid", def.Name) // unreachable: more CIDs than users
}
