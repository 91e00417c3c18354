// Package vm launches QEMU guests from their definitions and controls them
// over QMP: start, stop, pause, unpause, wait, remove, and the status table.
//
// QEMU runs in a session of its own, so guests outlive vmtui; what vmtui
// needs to find one again lives in the VM's runtime directory (store.Paths):
// QEMU's pidfile, the boot ID of the host when it started, the serial pty,
// and two QMP sockets, one for short-lived clients (connect, ask, disconnect)
// and one for a long-lived watcher, since QEMU serves one client per socket.
//
// The files of the package follow a VM's life: spec.go resolves a
// definition into the Spec that cmdline.go renders as QEMU's command line;
// start.go starts QEMU; inspect.go finds a VM's QEMU (proc.go reads /proc)
// and asks it its state, which status.go prints; adopt.go takes back a QEMU
// whose runtime files were lost; control.go stops, pauses, waits for and
// removes VMs; watch.go follows running VMs through QEMU's events;
// virtiofs.go runs the virtiofsds of a VM's shared folders, which die with
// its QEMU; live.go changes a running VM: its memory (virtio-mem), and
// disks attached and detached.
//
// Inspecting a VM (List, Status) creates no file: it only removes the
// runtime files of a QEMU that no longer runs. A QEMU whose runtime files
// were lost is still found, by its command line, which names its pidfile,
// and shown; [Manager.Adopt] recreates its files, as Start does before it
// refuses to start a second QEMU.
package vm

import (
	"cmp"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmtui/vmtui/config/store"
)

// Errors with vmctl's words.
var (
	ErrNotRunning     = errors.New("vm is not running")
	ErrAlreadyRunning = errors.New("vm is already running")
)

// stoppingFileName marks a VM whose power-down was requested, until its
// process exits.
const stoppingFileName = "stopping"

// Timeouts.
const (
	// startTimeout bounds QEMU's start-up, until its monitor answers.
	startTimeout = 60 * time.Second
	// queryTimeout bounds one status query over QMP; the socket may be
	// held briefly by another vmtui.
	queryTimeout = 3 * time.Second
	// startWait is how long a status check waits for a start in
	// progress to finish.
	startWait = 10 * time.Second
	// forceGrace is how long a forced stop waits after QMP quit (or
	// SIGTERM) before SIGKILL.
	forceGrace = 5 * time.Second
)

// Manager starts and controls the VMs of one store.
type Manager struct {
	store *store.Store
	paths *store.Paths
	// Binary is the QEMU system emulator ($VMTUI_QEMU, else DefaultBinary).
	Binary string
	// Accel is the accelerator preference when a definition names none
	// ($VMTUI_ACCEL, e.g. "tcg"; empty means kvm with tcg fallback).
	Accel string

	mu       sync.Mutex
	children map[int]chan struct{} // QEMUs this process started, closed when reaped
}

// NewManager returns a Manager for the VMs of store, configured from the environment.
func NewManager(store *store.Store) *Manager {
	return &Manager{
		store:    store,
		paths:    store.Paths(),
		Binary:   cmp.Or(os.Getenv("VMTUI_QEMU"), DefaultBinary),
		Accel:    os.Getenv("VMTUI_ACCEL"),
		children: make(map[int]chan struct{}),
	}
}

// Store returns the store of definitions.
func (m *Manager) Store() *store.Store { return m.store }

// readPIDFile returns the PID a pidfile names, or 0 when it names none.
func readPIDFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// cleanup removes a stopped VM's runtime files (the lock file stays: it
// may be held).
func (m *Manager) cleanup(name string) {
	for _, f := range []string{store.PIDFileName, store.PTYFileName, store.BootIDFileName, stoppingFileName, attachedFileName} {
		os.Remove(m.paths.RuntimeFile(name, f))
	}
	for _, sock := range []func(string) (string, error){m.paths.QMPSocket, m.paths.EventsSocket} {
		if p, err := sock(name); err == nil {
			os.Remove(p)
		}
	}
	m.cleanupShares(name)
}
