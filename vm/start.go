package vm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/atomicfile"
	"github.com/vmtui/vmtui/internal/seriallog"
	"github.com/vmtui/vmtui/vm/qmp"
)

// StartOptions modify Start.
type StartOptions struct {
	// Paused starts QEMU with its vCPUs stopped (-S): the VM shows as
	// paused until Unpause.
	Paused bool
	// LoadVM starts the VM from its snapshot of that tag, RAM and
	// devices included (-loadvm); see RevertSnapshot.
	LoadVM string
	// Fresh discards a saved VM's saved state (Save) and boots it;
	// without it, a saved VM resumes from its saved state (save.go).
	Fresh bool
	// Incoming starts the VM from a migration stream instead of booting
	// it (migrate.go): Receive's.
	Incoming *Incoming

	// memFile backs the guest's RAM with a file (instance_clone.go).
	memFile *memFile
}

// Start launches the VM defined by def and returns its status once QEMU's
// monitor answers. QEMU's own error text is returned when it fails to
// start. Two Starts of one VM at once, in one process or two, start one QEMU:
// the second finds it running and returns ErrAlreadyRunning. So does a Start
// of a VM whose QEMU runs but lost its runtime files, after adopting it
// (Adopt). Start reads the definition again under the VM's lock, and starts
// what it says then: a *store.NotFoundError once it was removed.
func (m *Manager) Start(ctx context.Context, def *config.VM, opts StartOptions) (Status, error) {
	if def.Err != nil {
		return Status{}, def.Err
	}
	if err := config.ValidName(def.Name); err != nil {
		return Status{}, err
	}
	if _, err := m.paths.EnsureRuntimeDir(def.Name); err != nil {
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
	return m.startLocked(ctx, def, opts)
}

// startLocked is Start once the VM's lock is held (by Start, or by
// RevertSnapshot, which starts a VM from a snapshot under its lock).
func (m *Manager) startLocked(ctx context.Context, def *config.VM, opts StartOptions) (Status, error) {
	rundir := m.paths.RuntimeDir(def.Name)
	var err error
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
	// A template's disks are its instances' base images.
	if err := m.templateStart(def.Name); err != nil {
		return Status{}, fmt.Errorf("start vm %s: %w", def.Name, err)
	}
	// A QEMU that lost its runtime files is adopted, whatever comes of
	// recreating them: the answer is the same.
	if st, _ := m.adoptLocked(ctx, def, &scan{}); st.Running() {
		return st, ErrAlreadyRunning
	}
	m.cleanup(def.Name)
	// An instance's first start resumes its saved template
	// (instance_clone.go).
	if err := m.cloneStart(def, &opts); err != nil {
		return Status{}, err
	}
	// A saved VM resumes from its saved state (save.go).
	closeSaved, err := m.useSaved(def, &opts)
	if err != nil {
		return Status{}, err
	}
	defer closeSaved()
	spec, err := m.spec(def)
	if err != nil {
		return Status{}, err
	}
	// Not over an image another VM's saved state expects as it is.
	if err := m.refuseSavedImages(def, spec); err != nil {
		return Status{}, fmt.Errorf("start vm %s: %w", def.Name, err)
	}
	// The vsock CID, and what the devices and memory knobs ask of the
	// host (hostcheck.go).
	if spec.CID, err = m.allocCID(def); err != nil {
		return Status{}, err
	}
	if err := hostChecks().check(spec); err != nil {
		return Status{}, fmt.Errorf("start vm %s: %w", def.Name, err)
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
	// The shares' sockets and logs, for their virtiofsds (virtiofs.go).
	shareFiles, err := m.shareFiles(def.Name, &spec)
	if err != nil {
		return Status{}, err
	}
	files = append(files, shareFiles...)
	spec.Paused = opts.Paused
	spec.LoadVM = opts.LoadVM
	if opts.Incoming != nil {
		spec.Paused, spec.Incoming = true, "defer"
	}
	if opts.memFile != nil {
		spec.MemFile, spec.MemFileShare, spec.MemBackendID = opts.memFile.path, opts.memFile.share, opts.memFile.id
	}
	spec.PIDFile = m.paths.PIDFile(def.Name)
	spec.SerialLog = m.paths.SerialLog(def.Name)
	seriallog.Cap(spec.SerialLog, seriallog.DefaultCap) // best effort: an untrimmed log still works
	argv, err := Cmdline(spec)
	if err != nil {
		return Status{}, err
	}
	if err := atomicfile.WriteFile(m.paths.BootIDFile(def.Name), []byte(bootID()+"\n"), 0o600); err != nil {
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
	if err := useLauncher(cmd, spec, len(shareFiles)); err != nil {
		return Status{}, err
	}
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
			msg += m.shareLogs(def.Name, spec)
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
	if err := atomicfile.WriteFile(m.paths.PTYFile(def.Name), []byte(pty+"\n"), 0o600); err != nil {
		return fail(fmt.Errorf("start vm %s: %w", def.Name, err))
	}
	// QEMU writes its pidfile early in start-up; make sure it is ours.
	if pid := readPIDFile(m.paths.PIDFile(def.Name)); pid != cmd.Process.Pid {
		atomicfile.WriteFile(m.paths.PIDFile(def.Name), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
	}
	if opts.Incoming != nil {
		// The guest's state instead of a boot (migrate.go).
		if err := m.migrateIn(ctx, def.Name, cmd.Process.Pid, exited, opts.Incoming); err != nil {
			return fail(fmt.Errorf("start vm %s: %w", def.Name, err))
		}
	}
	return m.inspectLocked(ctx, def, nil), nil
}

// reread reads def's definition again (under the VM's lock): it returns a
// *store.NotFoundError if it was removed, or removed and defined again
// (another VM, with another ID).
func (m *Manager) reread(def *config.VM) (*config.VM, error) {
	cur, err := m.store.Lookup(def.Name)
	switch {
	case errors.Is(err, store.ErrNotFound) || cur != nil && cur.ID != def.ID:
		return nil, &store.NotFoundError{Name: def.Name}
	case err != nil:
		return nil, err
	}
	return cur, nil
}

// current reads def's definition again, under the VM's lock: it returns a
// *store.NotFoundError if it was removed (or removed and defined again:
// another VM, with another ID), and refuses a VM whose ID another
// definition has.
func (m *Manager) current(def *config.VM) (*config.VM, error) {
	cur, err := m.reread(def)
	if err != nil {
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

// refuseSavedImages returns a *disk.SavedError when def's guest would run
// over an image that another VM's saved state expects as it is (save.go):
// one of def's disks is a saved VM's disk or in its backing chain (the
// guest would write it), or a saved VM's disk is in the backing chain of
// one of def's (its resume would write under def's overlay, and QEMU's
// image locks refuse it while def runs). def's own saved state, and its
// template's (which its instances resume), do not count.
func (m *Manager) refuseSavedImages(def *config.VM, spec Spec) error {
	all, err := m.SavedDisks()
	if err != nil {
		return fmt.Errorf("find the saved vms: %w", err)
	}
	delete(all, def.Name)
	delete(all, def.Template)
	if len(all) == 0 {
		return nil
	}
	saved := func() (map[string][]string, error) { return all, nil }
	var paths []string
	for _, d := range spec.Disks {
		if err := disk.RefuseSaved(d.Path, saved); err != nil {
			return err
		}
		paths = append(paths, d.Path)
	}
	mine := func() (map[string][]string, error) { return map[string][]string{def.Name: paths}, nil }
	for _, name := range slices.Sorted(maps.Keys(all)) {
		for _, p := range all[name] {
			if disk.RefuseSaved(p, mine) != nil {
				return &disk.SavedError{Path: p, VMs: []string{name}}
			}
		}
	}
	return nil
}
