package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/atomicfile"
	"github.com/vmtui/vmtui/vm/qmp"
)

// Live changes to a running VM: its memory grows (or shrinks) through its
// virtio-mem device, and disks are plugged into it and unplugged.
//
// Memory: a VM whose definition sets max_memory above memory starts with
// a virtio-mem device (VirtioMemID) whose region holds the difference;
// SetMemory asks the guest to plug (or unplug) the blocks that make the
// size asked for, and waits until it has. A guest must load virtio_mem and
// online the memory it plugs (Linux: memhp_default_state=online on its
// command line, or a udev rule), and may refuse to unplug memory in use.
//
// Disks: AttachDisk opens an image as two block nodes (hotN-file and hotN,
// as the definition's disks are diskN-file and diskN) and plugs a
// virtio-blk-pci device (hotN-dev) into a free hotplug slot: on q35, one of
// the HotplugSlots spare PCIe root ports (hp0...) every VM starts with; on
// pc, the root bus. DetachDisk unplugs it, waits for the guest to release
// it, and closes the image (QEMU's locks on it go with it). The disks
// attached are recorded in the runtime directory (attachedFileName), for
// DetachDisk, the status and the TUI; like virsh attach-disk without
// --persistent, they are not added to the definition, and are gone once
// the VM stops.
//
// Live changes of one VM are serialised by a lock of their own
// (liveLockName), not the VM's: status queries go on meanwhile. No QMP
// connection is held while the guest works: the monitor stays free for
// them.

const (
	// HotplugSlots is how many spare PCIe root ports (hp0...) a q35 VM
	// starts with, each a slot a disk can be attached to while it runs.
	HotplugSlots = 4
	// hotplugPortPrefix names the spare root ports.
	hotplugPortPrefix = "hp"
	// hotDiskPrefix names the block nodes of attached disks (hot0,
	// hot0-file) and, with "-dev", their devices.
	hotDiskPrefix = "hot"
	// attachedFileName, in the runtime directory, records the disks
	// attached to the running QEMU (JSON: attachedRecord).
	attachedFileName = "attached.json"
	// liveLockName, in the runtime directory, is flocked during a live
	// change.
	liveLockName = "live.lock"
	// maxAttachedRecord bounds the record read back.
	maxAttachedRecord = 1 << 20
)

// memoryStall is how long SetMemory waits for the guest's plugged size to
// move before it reports how far the guest got (a variable for tests).
var memoryStall = 10 * time.Second

// Timeouts of live changes.
const (
	// unplugHold is how long DetachDisk holds the monitor waiting for the
	// guest to release a disk, before it polls instead.
	unplugHold = 2 * time.Second
	// unplugTimeout bounds the wait for the guest to release a disk.
	unplugTimeout = time.Minute
	// livePoll is the interval between polls of the guest's progress.
	livePoll = 100 * time.Millisecond
)

// ErrMemoryStalled is wrapped by SetMemory's error when the guest stopped
// plugging or unplugging memory before it reached the size asked for.
var ErrMemoryStalled = errors.New("the guest stopped short of the size asked for")

// MemoryState is a running VM's memory, in bytes.
type MemoryState struct {
	// Base is the memory the VM started with (memory).
	Base int64
	// Plugged is what the guest has plugged of its virtio-mem device,
	// Requested what it was asked to plug.
	Plugged, Requested int64
	// Max is what the memory can grow to (max_memory).
	Max int64
	// BlockSize is the unit memory is plugged in.
	BlockSize int64
}

// Current is the guest's memory now: Base plus Plugged.
func (s MemoryState) Current() int64 { return s.Base + s.Plugged }

// Memory returns the memory of a running VM.
func (m *Manager) Memory(ctx context.Context, def *config.VM) (MemoryState, error) {
	if _, err := m.running(ctx, def); err != nil {
		return MemoryState{}, fmt.Errorf("memory of vm %s: %w", def.Name, err)
	}
	ms, err := m.memoryState(ctx, def)
	if err != nil {
		return MemoryState{}, fmt.Errorf("memory of vm %s: %w", def.Name, err)
	}
	return ms, nil
}

// memoryState asks QEMU for the VM's memory and its virtio-mem device.
func (m *Manager) memoryState(ctx context.Context, def *config.VM) (MemoryState, error) {
	var ms MemoryState
	err := m.withQMP(ctx, def.Name, func(c *qmp.Client) error {
		sum, err := c.QueryMemorySizeSummary(ctx)
		if err != nil {
			return err
		}
		ms.Base = sum.BaseMemory
		v, err := c.VirtioMEM(ctx, VirtioMemID)
		if err != nil {
			return err
		}
		ms.Plugged, ms.Requested, ms.Max, ms.BlockSize = v.Size, v.RequestedSize, ms.Base+v.MaxSize, v.BlockSize
		return nil
	})
	if errors.Is(err, qmp.ErrNoDevice) {
		if def.MaxMemory > def.Memory {
			return ms, fmt.Errorf("its memory cannot grow: it was started before max_memory was set; restart it")
		}
		return ms, fmt.Errorf("its memory cannot grow: set max_memory in its definition (%q) and restart it", def.File)
	}
	return ms, err
}

// running returns the status of def's VM, or ErrNotRunning.
func (m *Manager) running(ctx context.Context, def *config.VM) (Status, error) {
	if def.Err != nil {
		return Status{}, def.Err
	}
	st := m.inspect(ctx, def, &scan{}, true)
	if !st.Running() {
		return st, ErrNotRunning
	}
	if st.State == StateBroken {
		return st, fmt.Errorf("vm is broken: %s", st.Err)
	}
	return st, nil
}

// liveLock serialises the live changes of VM name.
func (m *Manager) liveLock(ctx context.Context, name string) (*store.FileLock, error) {
	if _, err := m.paths.EnsureRuntimeDir(name); err != nil {
		return nil, err
	}
	return store.Lock(ctx, m.paths.RuntimeFile(name, liveLockName))
}

// lockRunning returns the status of def's VM, or ErrNotRunning, with its
// live lock held (see liveLock) for the caller to unlock.
func (m *Manager) lockRunning(ctx context.Context, def *config.VM) (Status, *store.FileLock, error) {
	st, err := m.running(ctx, def)
	if err != nil {
		return st, nil, err
	}
	lock, err := m.liveLock(ctx, def.Name)
	return st, lock, err
}

// SetMemory makes a running VM's memory size bytes: more than it started
// with, up to its max_memory, by plugging memory blocks of its virtio-mem
// device; or less again, as far as the guest lets go of them. size must be
// a whole number of the device's blocks (2 MiB). It returns once the guest
// has plugged (or unplugged) what makes size, or, with an error wrapping
// ErrMemoryStalled, when it stopped short for memoryStall (a guest without
// virtio_mem plugs nothing; one may keep memory it uses): the state then
// says how far it got, and the guest goes on trying. A paused guest is
// asked, and not waited for.
func (m *Manager) SetMemory(ctx context.Context, def *config.VM, size int64) (MemoryState, error) {
	fail := func(err error) (MemoryState, error) {
		return MemoryState{}, fmt.Errorf("set memory of vm %s: %w", def.Name, err)
	}
	st, lock, err := m.lockRunning(ctx, def)
	if err != nil {
		return fail(err)
	}
	defer lock.Unlock()
	ms, err := m.memoryState(ctx, def)
	if err != nil {
		return fail(err)
	}
	want := size - ms.Base
	switch {
	case size < ms.Base:
		return fail(fmt.Errorf("%s is less than the memory it started with, %s", config.FormatMemory(size), config.FormatMemory(ms.Base)))
	case size > ms.Max:
		return fail(fmt.Errorf("%s is more than its max_memory, %s", config.FormatMemory(size), config.FormatMemory(ms.Max)))
	case ms.BlockSize > 0 && want%ms.BlockSize != 0:
		return fail(fmt.Errorf("%s is not a whole number of %s blocks above its memory, %s", config.FormatMemory(size), config.FormatMemory(ms.BlockSize), config.FormatMemory(ms.Base)))
	}
	err = m.withQMP(ctx, def.Name, func(c *qmp.Client) error {
		return c.QOMSet(ctx, VirtioMemID, "requested-size", want)
	})
	if err != nil {
		return fail(err)
	}
	ms.Requested = want
	if st.State == StatePaused {
		return ms, nil // the guest plugs it when it runs
	}
	last, moved := ms.Plugged, time.Now()
	for ms.Plugged != want {
		t := time.NewTimer(livePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ms, fmt.Errorf("set memory of vm %s to %s: the guest has %s so far: %w", def.Name, config.FormatMemory(size), config.FormatMemory(ms.Current()), ctx.Err())
		case <-t.C:
		}
		cur, err := m.memoryState(ctx, def)
		if err != nil {
			return ms, fmt.Errorf("set memory of vm %s to %s: %w", def.Name, config.FormatMemory(size), err)
		}
		ms = cur
		if ms.Plugged != last {
			last, moved = ms.Plugged, time.Now()
		} else if time.Since(moved) > memoryStall {
			how := "does it load virtio_mem?"
			if want < ms.Plugged {
				how = "it keeps memory it uses; it may let go of more later"
			}
			return ms, fmt.Errorf("set memory of vm %s to %s: %w: it has %s after %v without progress (%s)",
				def.Name, config.FormatMemory(size), ErrMemoryStalled, config.FormatMemory(ms.Current()), memoryStall, how)
		}
	}
	return ms, nil
}

// AttachedDisk is a disk attached to a running VM by AttachDisk.
type AttachedDisk struct {
	// Path is the image file.
	Path string `json:"path"`
	// Format is its format: "qcow2", "raw" or "qcow".
	Format string `json:"format"`
	// Node is its block node's name (hot0); its device is Node+"-dev",
	// with serial number Node (/sys/block/vdX/serial in a Linux guest).
	Node string `json:"node"`
	// Port is the root port it is plugged into (hp0), "" for the root bus.
	Port string `json:"port,omitempty"`
}

// attachedRecord is the runtime record of the disks attached to one QEMU,
// named by its PID and start time: a record of another QEMU is stale.
type attachedRecord struct {
	PID       int            `json:"pid"`
	StartTime uint64         `json:"start_time"`
	Disks     []AttachedDisk `json:"disks"`
}

// attached returns the disks attached to the QEMU of st, from the record.
func (m *Manager) attached(name string, st Status) []AttachedDisk {
	if !st.Running() {
		return nil
	}
	f, err := os.Open(m.paths.RuntimeFile(name, attachedFileName))
	if err != nil {
		return nil
	}
	defer f.Close()
	var rec attachedRecord
	if json.NewDecoder(io.LimitReader(f, maxAttachedRecord)).Decode(&rec) != nil ||
		rec.PID != st.PID || rec.StartTime != st.startTime {
		return nil
	}
	return rec.Disks
}

// writeAttached records the disks attached to the QEMU of st.
func (m *Manager) writeAttached(name string, st Status, disks []AttachedDisk) error {
	path := m.paths.RuntimeFile(name, attachedFileName)
	if len(disks) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	b, err := json.MarshalIndent(attachedRecord{PID: st.PID, StartTime: st.startTime, Disks: disks}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// AttachedDisks returns the disks attached to a running VM (none when it
// is not running).
func (m *Manager) AttachedDisks(ctx context.Context, def *config.VM) []AttachedDisk {
	st := m.inspect(ctx, def, &scan{}, false)
	return m.attached(def.Name, st)
}

// AttachDisk plugs the disk image at path into a running VM, as a virtio
// disk. The image is checked as start checks a definition's disks (it
// exists, its format is detected, an encrypted qcow is refused), and
// refused when the VM has it already or another program (another VM) uses
// it. The disk is not added to the definition: it is gone once the VM
// stops (see the comment at the top of live.go).
func (m *Manager) AttachDisk(ctx context.Context, def *config.VM, path string) (AttachedDisk, error) {
	fail := func(err error) (AttachedDisk, error) {
		return AttachedDisk{}, fmt.Errorf("attach %q to vm %s: %w", path, def.Name, err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	st, lock, err := m.lockRunning(ctx, def)
	if err != nil {
		return fail(err)
	}
	defer lock.Unlock()
	format, err := checkImage(path, "")
	if err != nil {
		return fail(err)
	}
	// The guest would write it: not an image a saved VM's state expects
	// as it is (save.go).
	if err := disk.RefuseSaved(path, m.SavedDisks); err != nil {
		return fail(err)
	}
	attached := m.attached(def.Name, st)
	for i, d := range def.Disks {
		if sameFile(d.Path, path) {
			return fail(fmt.Errorf("it is disk%d of the vm's definition", i))
		}
	}
	for _, d := range attached {
		if sameFile(d.Path, path) {
			return fail(fmt.Errorf("it is attached already, as %s", d.Node))
		}
	}
	// What QEMU's locks say before QEMU takes them: an image another VM
	// writes is refused naming that VM (a raw one is left to QEMU).
	img, err := disk.Open(path, disk.OpenOptions{ReadOnly: true})
	if err != nil {
		return fail(disk.NameHolder(err, m.liveDisks))
	}
	img.Close()

	d := AttachedDisk{Path: path, Format: string(format)}
	err = m.withQMP(ctx, def.Name, func(c *qmp.Client) error {
		var err error
		if d.Node, err = freeNode(ctx, c, attached); err != nil {
			return err
		}
		if d.Port, err = freePort(ctx, c); err != nil {
			return err
		}
		return plugDisk(ctx, c, d)
	})
	if err != nil {
		if strings.Contains(err.Error(), "Failed to get") && strings.Contains(err.Error(), "lock") {
			err = fmt.Errorf("image is in use by %s (%w)", m.holder(ctx, path, def.Name), err)
		}
		return fail(err)
	}
	if err := m.writeAttached(def.Name, st, append(attached, d)); err != nil {
		return d, fmt.Errorf("attach %q to vm %s: attached as %s, but not recorded: %w", path, def.Name, d.Node, err)
	}
	return d, nil
}

// checkImage checks the disk image at path as start checks a definition's
// disks: a regular file or block device (a FIFO would hang the open), of
// format f or, when f is "", the format detected, and not an AES-encrypted
// qcow image. It returns the format.
func checkImage(path string, f disk.Format) (disk.Format, error) {
	if err := disk.CheckFile(path); err != nil {
		return "", err
	}
	if f == "" {
		var err error
		if f, err = disk.DetectFormat(path); err != nil {
			return "", err
		}
	}
	if f == disk.FormatQcow && disk.QcowEncrypted(path) {
		return "", fmt.Errorf("%q is an AES-encrypted qcow image, which QEMU no longer runs; "+
			"convert it: vmtui disk convert --passphrase-file FILE %s new.qcow2", path, path)
	}
	return f, nil
}

// sameFile reports whether the paths name one file.
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// liveDisks returns the disks of every VM, by name: those of its
// definition and those attached to it while it runs (for disk.NameHolder).
func (m *Manager) liveDisks() (map[string][]string, error) {
	defs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(defs))
	for _, def := range defs {
		for _, d := range def.Disks {
			out[def.Name] = append(out[def.Name], d.Path)
		}
		if config.ValidName(def.Name) != nil {
			continue
		}
		if p, _ := m.find(def.Name, nil); p != nil {
			for _, d := range m.attached(def.Name, Status{PID: p.PID, startTime: p.StartTime}) {
				out[def.Name] = append(out[def.Name], d.Path)
			}
		}
	}
	return out, nil
}

// holder names the VMs other than self whose disks are path or have it in
// their backing chain, or says "another process".
func (m *Manager) holder(ctx context.Context, path, self string) string {
	all, err := m.liveDisks()
	if err != nil {
		return "another process"
	}
	var names []string
	for name, paths := range all {
		if name == self {
			continue
		}
		if slices.ContainsFunc(paths, func(p string) bool { return chainHas(ctx, p, path) }) {
			names = append(names, "vm "+name)
		}
	}
	if len(names) == 0 {
		return "another process"
	}
	slices.Sort(names)
	return strings.Join(names, " or ")
}

// chainHas reports whether the image at p is path or has it in its
// backing chain (its headers read as qemu-img info -U reads them).
func chainHas(ctx context.Context, p, path string) bool {
	if sameFile(p, path) {
		return true
	}
	info, err := disk.Info(ctx, p, disk.InfoOptions{ForceShare: true})
	for ; err == nil && info != nil; info = info.BackingImage {
		if info.FullBackingFilename != "" && sameFile(info.FullBackingFilename, path) {
			return true
		}
	}
	return false
}

// freeNode returns the first node name hotN that neither the record nor
// QEMU uses.
func freeNode(ctx context.Context, c *qmp.Client, attached []AttachedDisk) (string, error) {
	nodes, err := c.QueryNamedBlockNodes(ctx)
	if err != nil {
		return "", err
	}
	used := make(map[string]bool)
	for _, n := range nodes {
		used[n.NodeName] = true
	}
	for _, d := range attached {
		used[d.Node] = true
	}
	for i := 0; ; i++ {
		n := hotDiskPrefix + strconv.Itoa(i)
		if !used[n] && !used[n+"-file"] {
			return n, nil
		}
	}
}

// freePort returns a spare root port (hpN) with no device plugged in, ""
// when the machine has no spare ports (pc: devices go on the root bus,
// which takes them), or an error when every port is taken.
func freePort(ctx context.Context, c *qmp.Client) (string, error) {
	children, err := c.QOMList(ctx, "/machine/peripheral")
	if err != nil {
		return "", err
	}
	var ports []string
	busy := make(map[string]bool)
	for _, p := range children {
		switch {
		case p.Type == "child<pcie-root-port>" && strings.HasPrefix(p.Name, hotplugPortPrefix):
			ports = append(ports, p.Name)
		case strings.HasPrefix(p.Type, "child<"):
			var bus string
			if c.QOMGet(ctx, "/machine/peripheral/"+p.Name, "parent_bus", &bus) == nil {
				// "/machine/peripheral/hp0/hp0": the port's bus.
				busy[filepath.Base(filepath.Dir(bus))] = true
			}
		}
	}
	if len(ports) == 0 {
		return "", nil
	}
	slices.SortFunc(ports, func(a, b string) int { return portIndex(a) - portIndex(b) })
	for _, p := range ports {
		if !busy[p] {
			return p, nil
		}
	}
	return "", fmt.Errorf("every hotplug slot (%d) is taken: detach a disk first", len(ports))
}

// portIndex is N of a port hpN.
func portIndex(p string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(p, hotplugPortPrefix))
	return n
}

// plugDisk opens the image of d as block nodes and plugs its device,
// undoing what it did when a step fails.
func plugDisk(ctx context.Context, c *qmp.Client, d AttachedDisk) error {
	file := d.Node + "-file"
	if err := c.BlockdevAdd(ctx, qmp.BlockdevOptions{Driver: "file", NodeName: file, Filename: d.Path}); err != nil {
		return err
	}
	if err := c.BlockdevAdd(ctx, qmp.BlockdevOptions{Driver: d.Format, NodeName: d.Node, File: file}); err != nil {
		c.BlockdevDel(ctx, file)
		return err
	}
	err := c.DeviceAdd(ctx, "virtio-blk-pci", d.Node+"-dev", d.Port, map[string]any{"drive": d.Node, "serial": d.Node})
	if err != nil {
		c.BlockdevDel(ctx, d.Node)
		c.BlockdevDel(ctx, file)
		if strings.Contains(err.Error(), "does not support hotplugging") {
			return fmt.Errorf("the vm has no hotplug slot (it was started before vmtui gave vms spare ones; restart it): %w", err)
		}
		return err
	}
	return nil
}

// DetachDisk unplugs a disk attached by AttachDisk, named by its path (or
// its node, hot0), waits until the guest has released it, and closes the
// image, which QEMU then no longer locks. A guest that does not release
// it within unplugTimeout keeps it: the unplug stays requested, and the
// disk attached until it does; DetachDisk may be run again.
func (m *Manager) DetachDisk(ctx context.Context, def *config.VM, path string) (AttachedDisk, error) {
	fail := func(err error) (AttachedDisk, error) {
		return AttachedDisk{}, fmt.Errorf("detach %q from vm %s: %w", path, def.Name, err)
	}
	st, err := m.running(ctx, def)
	if err != nil {
		return fail(err)
	}
	if st.State == StatePaused {
		// Its vCPUs stopped, the guest cannot release the disk.
		return fail(errors.New("vm is paused: unpause it first, for the guest to release the disk"))
	}
	lock, err := m.liveLock(ctx, def.Name)
	if err != nil {
		return fail(err)
	}
	defer lock.Unlock()
	attached := m.attached(def.Name, st)
	abs, _ := filepath.Abs(path)
	i := slices.IndexFunc(attached, func(d AttachedDisk) bool {
		return d.Node == path || d.Path == abs || sameFile(d.Path, path)
	})
	if i < 0 {
		for j, d := range def.Disks {
			if sameFile(d.Path, path) {
				return fail(fmt.Errorf("it is disk%d of the vm's definition, which stays while the vm runs", j))
			}
		}
		var names []string
		for _, d := range attached {
			names = append(names, strconv.Quote(d.Path))
		}
		if len(names) == 0 {
			return fail(errors.New("no disk is attached to the vm"))
		}
		return fail(fmt.Errorf("it is not attached to the vm (attached: %s)", strings.Join(names, ", ")))
	}
	d := attached[i]
	if err := m.unplug(ctx, def.Name, d.Node+"-dev"); err != nil {
		return fail(err)
	}
	err = m.withQMP(ctx, def.Name, func(c *qmp.Client) error {
		for _, node := range []string{d.Node, d.Node + "-file"} {
			if err := c.BlockdevDel(ctx, node); err != nil && qmp.ErrorClass(err) != qmp.ClassDeviceNotFound {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if err := m.writeAttached(def.Name, st, slices.Delete(attached, i, i+1)); err != nil {
		return d, fmt.Errorf("detach %q from vm %s: detached, but not recorded: %w", path, def.Name, err)
	}
	return d, nil
}

// unplug unplugs device id of VM name and waits until the guest has
// released it: on the monitor for unplugHold, then polling, so that the
// monitor is free for status queries meanwhile.
func (m *Manager) unplug(ctx context.Context, name, id string) error {
	err := m.withQMP(ctx, name, func(c *qmp.Client) error {
		hctx, cancel := context.WithTimeout(ctx, unplugHold)
		defer cancel()
		return c.DeviceDelWait(hctx, id)
	})
	switch {
	case err == nil, qmp.ErrorClass(err) == qmp.ClassDeviceNotFound:
		return nil // gone already
	case !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return err
	}
	deadline := time.Now().Add(unplugTimeout - unplugHold)
	for {
		var typ string
		err := m.withQMP(ctx, name, func(c *qmp.Client) error {
			return c.QOMGet(ctx, "/machine/peripheral/"+id, "type", &typ)
		})
		switch {
		case qmp.ErrorClass(err) == qmp.ClassDeviceNotFound:
			return nil
		case err != nil:
			return err
		case time.Now().After(deadline):
			return fmt.Errorf("the guest has not released the disk after %v; the unplug stays requested: try again later", unplugTimeout)
		}
		t := time.NewTimer(livePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for the guest to release the disk: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// hotplugPortsDev renders the spare PCIe root ports of a q35 machine, the
// slots disks are attached to while it runs (the root complex, pcie.0,
// takes no hotplugged device). Other machines get none: pc's root bus
// takes hotplugged devices itself.
type hotplugPortsDev struct {
	machine string
	n       int
}

func (h hotplugPortsDev) args() ([]string, error) {
	t := h.machine
	if t == "" {
		t = DefaultMachine
	}
	if t != "q35" && !strings.HasPrefix(t, "pc-q35-") {
		return nil, nil
	}
	var argv []string
	for i := range h.n {
		argv = append(argv, "-device", fmt.Sprintf("pcie-root-port,id=%s%d,bus=pcie.0,chassis=%d", hotplugPortPrefix, i, i+1))
	}
	return argv, nil
}

// hasVirtioMem reports whether a QEMU command line has the virtio-mem
// device through which the guest's memory grows.
func hasVirtioMem(argv []string) bool {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "-device" && strings.HasPrefix(argv[i+1], "virtio-mem-pci,id="+VirtioMemID+",") {
			return true
		}
	}
	return false
}
