package ui

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/console"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/vm"
)

// Backend is everything the TUI reads and does. The model only calls it
// from tea.Cmds, never from Update or View; tests give it fixed data.
type Backend interface {
	// List returns the status of every defined VM, sorted by ID.
	List(ctx context.Context) ([]vm.Status, error)
	// Status returns the status of VM name; an error wrapping
	// store.ErrNotFound once it is gone.
	Status(ctx context.Context, name string) (vm.Status, error)
	// Sample reads the CPU time and memory of a running VM's QEMU from
	// /proc; vm.ErrNotRunning once it has exited.
	Sample(st vm.Status) (vm.ProcStat, error)
	// Stamp returns a value that changes when a VM is defined, removed,
	// started or stopped, by any process: a few stats, cheap enough for
	// every tick. "" means it cannot tell.
	Stamp() string
	// Watcher returns the follower of the VMs' events, the same each
	// time; nil when there is none (the TUI then lists the VMs on every
	// tick).
	Watcher() Watcher
	// Definition returns the definition of VM name.
	Definition(name string) (*config.VM, error)
	// DefinitionFile returns the path of VM name's definition file.
	DefinitionFile(name string) string
	// SerialLog returns the path of VM name's serial log.
	SerialLog(name string) string
	// Start starts VM name.
	Start(ctx context.Context, name string) error
	// Stop powers VM name down and waits for it to exit, or kills it
	// when force is set.
	Stop(ctx context.Context, name string, force bool) error
	// Pause pauses VM name.
	Pause(ctx context.Context, name string) error
	// Unpause resumes VM name.
	Unpause(ctx context.Context, name string) error
	// Save suspends VM name to disk (vmtui save); Start resumes it.
	Save(ctx context.Context, name string) error
	// Create defines a new VM (assigning its ID).
	Create(def *config.VM) error
	// Remove deletes the definition of a stopped VM; its disks are kept.
	Remove(ctx context.Context, name string) error
	// Console returns the command that attaches the terminal to the
	// serial console tty of VM name, for tea.Exec.
	Console(name, tty string) tea.ExecCommand
	// CreateDisk makes a new disk image.
	CreateDisk(path string, opts disk.CreateOptions) error
	// ConvertDisk copies image src into a new image dst.
	ConvertDisk(ctx context.Context, src, dst string, opts disk.ConvertOptions) error
	// DiskInfo describes an image and its backing chain.
	DiskInfo(path string) (*disk.ImageInfo, error)
	// Snapshots lists the snapshots of VM name.
	Snapshots(ctx context.Context, name string) ([]vm.Snapshot, error)
	// SetMemory makes running VM name's memory size bytes (virtio-mem).
	SetMemory(ctx context.Context, name string, size int64) error
	// AttachDisk attaches the image at path to running VM name, until it
	// stops; DetachDisk detaches it.
	AttachDisk(ctx context.Context, name, path string) error
	DetachDisk(ctx context.Context, name, path string) error
	// CreateSnapshot takes snapshot tag of VM name: of its disks, and of
	// its RAM and devices when it runs.
	CreateSnapshot(ctx context.Context, name, tag string) error
	// RevertSnapshot puts VM name back to snapshot tag.
	RevertSnapshot(ctx context.Context, name, tag string) error
	// DeleteSnapshot deletes snapshot tag of VM name.
	DeleteSnapshot(ctx context.Context, name, tag string) error
}

// Watcher follows the events of running VMs: *vm.Watcher.
type Watcher interface {
	// Watch starts following a running VM (once per QEMU).
	Watch(st vm.Status)
	// Events delivers the events of the VMs followed.
	Events() <-chan vm.WatchEvent
	// Close ends every watch.
	Close() error
}

// stopTimeout bounds a graceful stop from the TUI: past it, the status
// line suggests a forced stop.
const stopTimeout = 2 * time.Minute

// managerBackend is the Backend of the real VMs: a thin adapter over
// vm.Manager and the disk package.
type managerBackend struct {
	m *vm.Manager

	once    sync.Once
	watcher *vm.Watcher
}

// NewManagerBackend returns the Backend that manages the VMs of m.
func NewManagerBackend(m *vm.Manager) Backend { return &managerBackend{m: m} }

func (b *managerBackend) List(ctx context.Context) ([]vm.Status, error) { return b.m.List(ctx) }

func (b *managerBackend) Status(ctx context.Context, name string) (vm.Status, error) {
	st, _, err := b.m.Status(ctx, name)
	return st, err
}

func (b *managerBackend) Sample(st vm.Status) (vm.ProcStat, error) { return st.Sample() }

// Stamp is the modification times of the definitions' directory (a VM
// defined or removed) and of each VM's runtime directory (its QEMU's
// files made or removed: a start or an exit), and their number.
func (b *managerBackend) Stamp() string {
	p := b.m.Store().Paths()
	var h uint64
	add := func(fi fs.FileInfo) {
		h = h*1000003 ^ uint64(fi.ModTime().UnixNano())
	}
	fi, err := os.Stat(p.VMsDir())
	if err != nil {
		return ""
	}
	add(fi)
	ents, err := os.ReadDir(p.RunDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			add(fi)
		}
	}
	return fmt.Sprintf("%d/%x", len(ents), h)
}

func (b *managerBackend) Watcher() Watcher {
	b.once.Do(func() { b.watcher = b.m.NewWatcher() })
	return b.watcher
}

func (b *managerBackend) Definition(name string) (*config.VM, error) {
	def, err := b.m.Store().Lookup(name)
	if def == nil && err == nil {
		err = store.ErrNotFound
	}
	return def, err
}

func (b *managerBackend) DefinitionFile(name string) string {
	return b.m.Store().Paths().DefinitionFile(name)
}

func (b *managerBackend) SerialLog(name string) string {
	return b.m.Store().Paths().SerialLog(name)
}

func (b *managerBackend) lookup(name string) (*config.VM, error) {
	def, err := b.m.Store().Lookup(name) // not found: "NAME: vm not found"
	if err != nil {
		return nil, err
	}
	return def, nil
}

func (b *managerBackend) Start(ctx context.Context, name string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	_, err = b.m.Start(ctx, def, vm.StartOptions{})
	return err
}

func (b *managerBackend) Stop(ctx context.Context, name string, force bool) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	if !force {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, stopTimeout)
		defer cancel()
	}
	err = b.m.Stop(ctx, def, vm.StopOptions{Force: force, Wait: true})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("stop %s: the guest did not power off within %v; maybe force it with X?", name, stopTimeout)
	}
	return err
}

func (b *managerBackend) Pause(ctx context.Context, name string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	return b.m.Pause(ctx, def)
}

func (b *managerBackend) Unpause(ctx context.Context, name string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	return b.m.Unpause(ctx, def)
}

func (b *managerBackend) Save(ctx context.Context, name string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	return b.m.Save(ctx, def, vm.SendOptions{})
}

func (b *managerBackend) Create(def *config.VM) error { return b.m.Store().Create(def) }

func (b *managerBackend) Remove(ctx context.Context, name string) error {
	def, err := b.m.Store().Lookup(name)
	if def == nil {
		return err
	}
	// Under the VM's lock, so that a start cannot slip in; a running VM is
	// refused there ("remove NAME: vm is running (pid N); stop it first").
	_, err = b.m.Remove(ctx, def)
	return err
}

func (b *managerBackend) Console(name, tty string) tea.ExecCommand {
	p := b.m.Store().Paths()
	return console.Command(console.Options{Name: name, TTY: tty, SerialLog: p.SerialLog(name), LockFile: p.ConsoleLockFile(name)})
}

func (b *managerBackend) CreateDisk(path string, opts disk.CreateOptions) error {
	return disk.Create(path, opts)
}

func (b *managerBackend) ConvertDisk(ctx context.Context, src, dst string, opts disk.ConvertOptions) error {
	return disk.Convert(ctx, src, dst, opts)
}

func (b *managerBackend) DiskInfo(path string) (*disk.ImageInfo, error) {
	// Headers only: quick, and the TUI has no operation to cancel here.
	// The detail view shows the disks of running VMs too: their headers
	// are read as qemu-img info -U reads them.
	return disk.Info(context.Background(), path, disk.InfoOptions{ForceShare: true})
}

func (b *managerBackend) Snapshots(ctx context.Context, name string) ([]vm.Snapshot, error) {
	def, err := b.lookup(name)
	if err != nil {
		return nil, err
	}
	return b.m.Snapshots(ctx, def)
}

func (b *managerBackend) CreateSnapshot(ctx context.Context, name, tag string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	return b.m.CreateSnapshot(ctx, def, tag)
}

func (b *managerBackend) RevertSnapshot(ctx context.Context, name, tag string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	return b.m.RevertSnapshot(ctx, def, tag)
}

func (b *managerBackend) DeleteSnapshot(ctx context.Context, name, tag string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	return b.m.DeleteSnapshot(ctx, def, tag)
}
