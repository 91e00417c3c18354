// Package vm launches QEMU guests from their definitions and controls them
// over QMP: start, stop, pause, unpause, wait, and the status table.
//
// QEMU runs in a session of its own, so guests outlive vmtui; what vmtui
// needs to find one again lives in the VM's runtime directory (store.Paths):
// QEMU's pidfile, the boot ID of the host when it started, the serial pty,
// and two QMP sockets, one for short-lived clients (connect, ask, disconnect)
// and one for a long-lived watcher, since QEMU serves one client per socket.
// A QEMU whose runtime files were lost is found by its command line, which
// names its pidfile.
package vm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/seriallog"
	"github.com/vmtui/vmtui/vm/qmp"
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

// spec resolves a definition into a Spec, checking first what vmd checks:
// the disks, CD-ROM and kernel must exist.
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
		// A regular file or block device: a FIFO would hang the open.
		if err := disk.CheckFile(d.Path); err != nil {
			return s, fmt.Errorf("could not open disk image(s): %w", err)
		}
		f := d.Format
		if f == "" {
			if f, err = disk.DetectFormat(d.Path); err != nil {
				return s, fmt.Errorf("could not open disk image(s): %w", err)
			}
		}
		s.Disks = append(s.Disks, DiskSpec{Path: d.Path, Format: string(f)})
	}
	if def.CDROM != "" {
		fi, err := os.Stat(def.CDROM)
		if err != nil {
			return s, fmt.Errorf("could not find specified iso image %q: %w", def.CDROM, unwrapPath(err))
		}
		if !fi.Mode().IsRegular() {
			return s, fmt.Errorf("specified iso image %q is not a regular file", def.CDROM)
		}
	}
	for what, p := range map[string]string{"kernel": def.Kernel, "initrd": def.Initrd} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return s, fmt.Errorf("could not find specified %s %q: %w", what, p, unwrapPath(err))
		}
	}
	for _, n := range def.Networks {
		s.Nets = append(s.Nets, NetSpec{Type: string(n.Type), Bridge: n.Bridge, HostFwd: n.HostFwd, MAC: n.MAC})
	}
	return s, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Start launches the VM defined by def and returns its status once QEMU's
// monitor answers. QEMU's own error text is returned when it fails to
// start. Two Starts of one VM at once, in one process or two, start one QEMU:
// the second finds it running and returns ErrAlreadyRunning.
// StartOptions modify Start.
type StartOptions struct {
	// Paused starts QEMU with its vCPUs stopped (-S): the VM shows as
	// paused until Unpause.
	Paused bool
}

func (m *Manager) Start(ctx context.Context, def *config.VM, opts StartOptions) (Status, error) {
	if def.Err != nil {
		return Status{}, def.Err
	}
	if err := config.ValidName(def.Name); err != nil {
		return Status{}, err
	}
	rundir, err := m.paths.EnsureRuntimeDir(def.Name)
	if err != nil {
		return Status{}, err
	}
	if _, err := m.paths.EnsureLogDir(def.Name); err != nil {
		return Status{}, err
	}
	lock, err := store.Lock(ctx, m.paths.LockFile(def.Name))
	if err != nil {
		return Status{}, err
	}
	defer lock.Unlock()
	// Queries seeing the lock held report the VM starting (see inspect).
	starting := m.paths.RuntimeFile(def.Name, startingFileName)
	if err := os.WriteFile(starting, nil, 0o600); err != nil {
		return Status{}, fmt.Errorf("start vm %s: %w", def.Name, err)
	}
	defer os.Remove(starting)

	// The definition may have been removed, or changed, since def was
	// read: start what it says now, and nothing once it is gone.
	if def, err = m.current(def); err != nil {
		return Status{}, err
	}
	if st := m.inspectLocked(ctx, def, &scan{}); st.Running() {
		return st, ErrAlreadyRunning
	}
	m.cleanup(def.Name)
	spec, err := m.spec(def)
	if err != nil {
		return Status{}, err
	}

	qmpPath, err := m.paths.QMPSocket(def.Name)
	if err != nil {
		return Status{}, err
	}
	eventsPath, err := m.paths.EventsSocket(def.Name)
	if err != nil {
		return Status{}, err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range []string{qmpPath, eventsPath} {
		f, err := listenUnix(p)
		if err != nil {
			return Status{}, err
		}
		files = append(files, f)
	}
	spec.QMPFD, spec.EventsFD = 3, 4
	spec.Paused = opts.Paused
	spec.PIDFile = m.paths.PIDFile(def.Name)
	spec.SerialLog = m.paths.SerialLog(def.Name)
	seriallog.Cap(spec.SerialLog, seriallog.DefaultCap) // best effort: an untrimmed log still works
	argv, err := Cmdline(spec)
	if err != nil {
		return Status{}, err
	}
	if err := os.WriteFile(m.paths.BootIDFile(def.Name), []byte(bootID()+"\n"), 0o600); err != nil {
		return Status{}, fmt.Errorf("start vm %s: %w", def.Name, err)
	}
	logPath := m.paths.QEMULog(def.Name)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return Status{}, fmt.Errorf("start vm %s: %w", def.Name, err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return Status{}, err
	}
	defer devnull.Close()

	cmd := exec.Command(m.Binary, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.ExtraFiles = files
	cmd.Dir = rundir
	// A session of its own: QEMU outlives vmtui and its terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		m.cleanup(def.Name)
		return Status{}, fmt.Errorf("start vm %s: %w", def.Name, err)
	}
	exited := m.reap(cmd)
	// QEMU holds the listeners now; closing ours lets a dial fail fast
	// if QEMU dies.
	for _, f := range files {
		f.Close()
	}
	files = nil

	fail := func(err error) (Status, error) {
		cmd.Process.Kill()
		<-exited
		m.cleanup(def.Name)
		return Status{}, err
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	c, err := dialUntilExit(sctx, qmpPath, exited)
	if err != nil {
		if errors.Is(err, errExited) {
			last, _ := seriallog.Tail(logPath, 20) // QEMU's own error text
			msg := strings.TrimSpace(string(last))
			if msg == "" {
				msg = "qemu exited during start-up"
			}
			m.cleanup(def.Name)
			return Status{}, fmt.Errorf("start vm %s: %s", def.Name, msg)
		}
		return fail(fmt.Errorf("start vm %s: %w", def.Name, err))
	}
	pty, err := c.PTY(sctx, SerialLabel)
	c.Close()
	if err != nil {
		return fail(fmt.Errorf("start vm %s: find the serial console: %w", def.Name, err))
	}
	if err := os.WriteFile(m.paths.PTYFile(def.Name), []byte(pty+"\n"), 0o600); err != nil {
		return fail(fmt.Errorf("start vm %s: %w", def.Name, err))
	}
	// QEMU writes its pidfile early in start-up; make sure it is ours.
	if pid := readPIDFile(m.paths.PIDFile(def.Name)); pid != cmd.Process.Pid {
		os.WriteFile(m.paths.PIDFile(def.Name), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
	}
	return m.inspectLocked(ctx, def, nil), nil
}

// current reads def's definition again, under the VM's lock: it returns
// store.ErrNotFound if it was removed (or removed and defined again: another
// VM, with another ID), and refuses a VM whose ID another definition has.
func (m *Manager) current(def *config.VM) (*config.VM, error) {
	cur, err := m.store.Lookup(def.Name)
	switch {
	case errors.Is(err, store.ErrNotFound) || cur != nil && cur.ID != def.ID:
		return nil, fmt.Errorf("start vm %s: %w", def.Name, store.ErrNotFound)
	case err != nil:
		return nil, err
	}
	all, err := m.store.List()
	if err != nil {
		return nil, err
	}
	var same []string
	for _, o := range all {
		if o.ID == cur.ID && o.File != cur.File {
			same = append(same, strconv.Quote(o.File))
		}
	}
	if len(same) > 0 {
		return nil, fmt.Errorf("start vm %s: id %d is the id of both %q and %s; give one of them another id",
			def.Name, cur.ID, cur.File, strings.Join(same, " and "))
	}
	return cur, nil
}

// listenUnix creates a unix socket listener at path, mode 0600, and returns
// it as a file to hand to QEMU. The socket file stays when the listener is
// closed.
func listenUnix(path string) (*os.File, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	defer l.Close()
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	f, err := l.File()
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	return f, nil
}

// reap waits for a QEMU this process started, so that it never lingers as
// a zombie while vmtui runs (after vmtui exits, init reaps it). The channel
// closes when it has exited.
func (m *Manager) reap(cmd *exec.Cmd) <-chan struct{} {
	done := make(chan struct{})
	pid := cmd.Process.Pid
	m.mu.Lock()
	m.children[pid] = done
	m.mu.Unlock()
	go func() {
		cmd.Wait()
		m.mu.Lock()
		delete(m.children, pid)
		m.mu.Unlock()
		close(done)
	}()
	return done
}

var errExited = errors.New("qemu exited")

// dialUntilExit dials the QMP socket until QEMU answers, ctx ends or the
// process exits.
func dialUntilExit(ctx context.Context, path string, exited <-chan struct{}) (*qmp.Client, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		c, err := qmp.Dial(ctx, path)
		if err == nil {
			return c, nil
		}
		select {
		case <-exited:
			return nil, errExited
		default:
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qemu did not answer on %q: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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
	for _, f := range []string{store.PIDFileName, store.PTYFileName, store.BootIDFileName, stoppingFileName} {
		os.Remove(m.paths.RuntimeFile(name, f))
	}
	for _, sock := range []func(string) (string, error){m.paths.QMPSocket, m.paths.EventsSocket} {
		if p, err := sock(name); err == nil {
			os.Remove(p)
		}
	}
}
