// Package vm launches QEMU guests from their definitions and controls them
// over QMP: start, stop, pause, unpause, wait, and the status table.
//
// QEMU runs in a session of its own, so guests outlive vmtui; what vmtui
// needs to find one again lives in the VM's runtime directory (config.Paths):
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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"vmtui/config"
	"vmtui/console"
	"vmtui/disk"
	"vmtui/vm/qmp"
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
	store *config.Store
	paths *config.Paths
	// Binary is the QEMU system emulator ($VMTUI_QEMU, else DefaultBinary).
	Binary string
	// Accel is the accelerator preference when a definition names none
	// ($VMTUI_ACCEL, e.g. "tcg"; empty means kvm with tcg fallback).
	Accel string

	mu       sync.Mutex
	children map[int]chan struct{} // QEMUs this process started, closed when reaped
}

// NewManager returns a Manager for the VMs of store, configured from the environment.
func NewManager(store *config.Store) *Manager {
	return &Manager{
		store:    store,
		paths:    store.Paths(),
		Binary:   cmp.Or(os.Getenv("VMTUI_QEMU"), DefaultBinary),
		Accel:    os.Getenv("VMTUI_ACCEL"),
		children: make(map[int]chan struct{}),
	}
}

// Store returns the store of definitions.
func (m *Manager) Store() *config.Store { return m.store }

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
		if _, err := os.Stat(d.Path); err != nil {
			return s, fmt.Errorf("could not open disk image(s): %q: %w", d.Path, unwrapPath(err))
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
	spec, err := m.spec(def)
	if err != nil {
		return Status{}, err
	}
	rundir, err := m.paths.EnsureRuntimeDir(def.Name)
	if err != nil {
		return Status{}, err
	}
	if _, err := m.paths.EnsureLogDir(def.Name); err != nil {
		return Status{}, err
	}
	lock, err := config.Lock(ctx, m.paths.LockFile(def.Name))
	if err != nil {
		return Status{}, err
	}
	defer lock.Unlock()

	if st := m.inspectLocked(ctx, def, &scan{}); st.Running() {
		return st, ErrAlreadyRunning
	}
	m.cleanup(def.Name)

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
	console.CapLog(spec.SerialLog, console.DefaultLogCap) // best effort: an untrimmed log still works
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
			last, _ := console.Tail(logPath, 20) // QEMU's own error text
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
	for _, f := range []string{config.PIDFileName, config.PTYFileName, config.BootIDFileName, stoppingFileName} {
		os.Remove(m.paths.RuntimeFile(name, f))
	}
	for _, sock := range []func(string) (string, error){m.paths.QMPSocket, m.paths.EventsSocket} {
		if p, err := sock(name); err == nil {
			os.Remove(p)
		}
	}
}

// List returns the status of every defined VM, sorted by ID, querying the
// running ones concurrently.
func (m *Manager) List(ctx context.Context) ([]Status, error) {
	defs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	sc := &scan{}
	out := make([]Status, len(defs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, def := range defs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = m.inspect(ctx, def, sc)
		}()
	}
	wg.Wait()
	slices.SortStableFunc(out, func(a, b Status) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Status returns the status of the VM named by nameOrID (a name, or an ID
// when all digits). It returns config.ErrNotFound for an unknown VM.
func (m *Manager) Status(ctx context.Context, nameOrID string) (Status, *config.VM, error) {
	def, err := m.store.Lookup(nameOrID)
	if def == nil {
		return Status{}, nil, err
	}
	return m.inspect(ctx, def, &scan{}), def, nil
}

// inspect reports a VM's status, cleaning up stale runtime files. It holds
// the VM's lock shared, so that status checks run side by side but never
// while a start (which holds it exclusively) is half done: they wait for it,
// for up to startWait.
func (m *Manager) inspect(ctx context.Context, def *config.VM, sc *scan) Status {
	if _, err := os.Stat(m.paths.RuntimeDir(def.Name)); err != nil {
		// No runtime directory: nothing runs, unless adopted below.
		return m.inspectLocked(ctx, def, sc)
	}
	wctx, cancel := context.WithTimeout(ctx, startWait)
	lock, err := config.LockShared(wctx, m.paths.LockFile(def.Name))
	cancel()
	if err != nil {
		st := m.baseStatus(def)
		st.Err = fmt.Sprintf("a start is in progress: %v", err)
		return st
	}
	defer lock.Unlock()
	return m.inspectLocked(ctx, def, sc)
}

func (m *Manager) baseStatus(def *config.VM) Status {
	st := Status{ID: def.ID, Name: def.Name, VCPUs: def.CPUs, MaxMem: def.Memory, State: StateStopped}
	if def.Err != nil {
		st.Err = def.Err.Error()
	}
	if fi, err := os.Stat(def.File); err == nil {
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.Owner = ownerName(sys.Uid, sys.Gid)
		}
	}
	return st
}

// inspectLocked reports a VM's status; the caller holds its lock (or it
// has no runtime directory).
func (m *Manager) inspectLocked(ctx context.Context, def *config.VM, sc *scan) Status {
	st := m.baseStatus(def)
	p, err := m.process(def.Name, sc)
	if err != nil || p == nil {
		m.cleanup(def.Name)
		if err != nil {
			st.Err = err.Error()
		}
		return st
	}
	st.PID = p.PID
	st.CurMem = p.RSS
	st.Owner = ownerName(p.UID, p.GID)
	st.Cmdline = p.Cmdline
	st.State = StateRunning
	if b, err := os.ReadFile(m.paths.PTYFile(def.Name)); err == nil {
		st.TTY = strings.TrimSpace(string(b))
	}
	_, stopErr := os.Stat(m.paths.RuntimeFile(def.Name, stoppingFileName))
	stopping := stopErr == nil

	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	path, err := m.paths.QMPSocket(def.Name)
	if err != nil {
		st.State, st.Err = StateBroken, err.Error()
		return st
	}
	c, err := qmp.Dial(qctx, path)
	if err != nil {
		st.State, st.Err = StateBroken, fmt.Sprintf("qemu does not answer on its monitor: %v", err)
		return st
	}
	defer c.Close()
	qs, err := c.QueryStatus(qctx)
	if err != nil {
		st.State, st.Err = StateBroken, err.Error()
		return st
	}
	st.QEMUStatus = string(qs.Status)
	if st.TTY == "" {
		if pty, err := c.PTY(qctx, SerialLabel); err == nil {
			st.TTY = pty
			os.WriteFile(m.paths.PTYFile(def.Name), []byte(pty+"\n"), 0o600)
		}
	}
	switch qs.Status {
	case qmp.StateRunning:
		if stopping {
			st.State = StateStopping
		}
	case qmp.StateShutdown:
		st.State = StateStopping
	case qmp.StateInternalError, qmp.StateIOError, qmp.StateGuestPanicked, qmp.StateWatchdog:
		st.State, st.Err = StateBroken, "guest stopped: "+string(qs.Status)
	default: // paused, prelaunch, suspended, migration states
		st.State = StatePaused
	}
	return st
}

// process finds the QEMU process of VM name: the one its pidfile names if
// that is still our QEMU, else (runtime files lost) one whose command line
// names the VM's pidfile, which is then adopted. It returns nil when none
// runs.
func (m *Manager) process(name string, sc *scan) (*procInfo, error) {
	pidfile := m.paths.PIDFile(name)
	if pid := readPIDFile(pidfile); pid != 0 {
		p, err := readProc(pid)
		if err == nil && m.ours(p, pidfile) && !startedAfter(p, pidfile) {
			if id, err := os.ReadFile(m.paths.BootIDFile(name)); err == nil && strings.TrimSpace(string(id)) != bootID() {
				return nil, nil // from before the host's last boot
			}
			return p, nil
		}
	}
	if sc == nil {
		return nil, nil
	}
	pid := sc.find(pidfile, m)
	if pid == 0 {
		return nil, nil
	}
	p, err := readProc(pid)
	if err != nil {
		return nil, nil
	}
	// Adopt it: recreate what can be recreated of its runtime files.
	if _, err := m.paths.EnsureRuntimeDir(name); err == nil {
		os.WriteFile(pidfile, []byte(strconv.Itoa(pid)+"\n"), 0o600)
		os.WriteFile(m.paths.BootIDFile(name), []byte(bootID()+"\n"), 0o600)
	}
	return p, nil
}

// startedAfter reports whether process p started after the pidfile was
// written (with a second's slack for clock granularity): then the PID was
// reused, and the pidfile is not about p.
func startedAfter(p *procInfo, pidfile string) bool {
	fi, err := os.Stat(pidfile)
	if err != nil {
		return false
	}
	at, err := p.startedAt()
	if err != nil {
		return false
	}
	return at.After(fi.ModTime().Add(time.Second))
}

// ours reports whether p is a QEMU started for the pidfile path.
func (m *Manager) ours(p *procInfo, pidfile string) bool {
	return len(p.Cmdline) > 0 && argValue(p.Cmdline, "-pidfile") == pidfile &&
		strings.HasPrefix(filepath.Base(p.Cmdline[0]), "qemu-system")
}

// scan finds QEMU processes by the pidfile their command line names; it
// reads /proc once, when first asked.
type scan struct {
	once sync.Once
	byPF map[string]int
}

func (s *scan) find(pidfile string, m *Manager) int {
	s.once.Do(func() {
		s.byPF = make(map[string]int)
		pids, _ := listPIDs()
		for _, pid := range pids {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			if err != nil || !strings.Contains(string(b), "qemu-system") {
				continue
			}
			argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
			if pf := argValue(argv, "-pidfile"); pf != "" && strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
				s.byPF[pf] = pid
			}
		}
	})
	return s.byPF[pidfile]
}

// StopOptions modify Stop.
type StopOptions struct {
	// Force quits QEMU at once (QMP quit, then SIGKILL after a grace
	// period) instead of pressing the power button.
	Force bool
	// Wait returns only once the QEMU process has exited.
	Wait bool
}

// Stop stops a running VM: a graceful ACPI power-down, or with Force a quit.
func (m *Manager) Stop(ctx context.Context, def *config.VM, opts StopOptions) error {
	st := m.inspect(ctx, def, &scan{})
	if !st.Running() {
		return ErrNotRunning
	}
	pid := st.PID
	if !opts.Force {
		os.WriteFile(m.paths.RuntimeFile(def.Name, stoppingFileName), nil, 0o600)
		if err := m.withQMP(ctx, def.Name, func(c *qmp.Client) error { return c.SystemPowerdown(ctx) }); err != nil {
			os.Remove(m.paths.RuntimeFile(def.Name, stoppingFileName)) // no power-down was requested
			return fmt.Errorf("stop vm %s: %w", def.Name, err)
		}
		if !opts.Wait {
			return nil
		}
		return m.waitExit(ctx, def.Name, pid)
	}
	// Forced: quit over QMP if it answers, else SIGTERM; SIGKILL after the grace period.
	if err := m.withQMP(ctx, def.Name, func(c *qmp.Client) error { return c.Quit(ctx) }); err != nil {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	gctx, cancel := context.WithTimeout(ctx, forceGrace)
	err := m.waitExit(gctx, def.Name, pid)
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if p, perr := readProc(pid); perr == nil && m.ours(p, m.paths.PIDFile(def.Name)) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return m.waitExit(ctx, def.Name, pid)
}

// withQMP runs fn with a short-lived client of the VM's monitor.
func (m *Manager) withQMP(ctx context.Context, name string, fn func(*qmp.Client) error) error {
	path, err := m.paths.QMPSocket(name)
	if err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	c, err := qmp.Dial(qctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// waitExit waits until QEMU process pid of VM name has exited, then
// removes the VM's runtime files.
func (m *Manager) waitExit(ctx context.Context, name string, pid int) error {
	pidfile := m.paths.PIDFile(name)
	m.mu.Lock()
	child := m.children[pid]
	m.mu.Unlock()
	for {
		gone := false
		if child != nil {
			select {
			case <-child:
				gone = true
			default:
			}
		} else if p, err := readProc(pid); err != nil || !m.ours(p, pidfile) {
			gone = true
		}
		if gone {
			if lock, err := config.TryLock(m.paths.LockFile(name)); err == nil {
				m.cleanup(name)
				lock.Unlock()
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for vm %s: %w", name, ctx.Err())
		case <-child:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Wait waits until a running VM has exited. It returns ErrNotRunning when
// the VM is not running.
func (m *Manager) Wait(ctx context.Context, def *config.VM) error {
	st := m.inspect(ctx, def, &scan{})
	if !st.Running() {
		return ErrNotRunning
	}
	return m.waitExit(ctx, def.Name, st.PID)
}

// Pause stops a running VM's vCPUs.
func (m *Manager) Pause(ctx context.Context, def *config.VM) error {
	return m.control(ctx, def, func(c *qmp.Client) error { return c.Stop(ctx) })
}

// Unpause resumes a paused VM.
func (m *Manager) Unpause(ctx context.Context, def *config.VM) error {
	return m.control(ctx, def, func(c *qmp.Client) error { return c.Cont(ctx) })
}

func (m *Manager) control(ctx context.Context, def *config.VM, fn func(*qmp.Client) error) error {
	st := m.inspect(ctx, def, &scan{})
	if !st.Running() {
		return ErrNotRunning
	}
	return m.withQMP(ctx, def.Name, fn)
}
