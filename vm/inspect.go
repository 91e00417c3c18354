package vm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm/qmp"
)

// How a status query finds a VM's state. The VM's lock file (in its
// runtime directory) orders queries and changes: a start, a remove and the
// cleanup after a QEMU exited hold it exclusively, queries hold it shared
// while they decide whether a QEMU runs and remove the files of one that
// does not. So a query never removes what a start in progress has made: it
// sees the start instead (StateStarting, from the start's marker file), at
// once, without waiting for it. A VM without a runtime directory has never
// been started (or its files were lost): a query looks for its QEMU by
// command line, touching nothing. Queries never create a file: adopting a
// QEMU they find that way is Adopt's job (adopt.go).

// startingFileName marks a start in progress; it is only meaningful while
// the VM's lock is held.
const startingFileName = "starting"

// List returns the status of every defined VM, sorted by ID, querying the
// running ones concurrently. It never waits for a start in progress: such a
// VM is StateStarting. It creates no file (see Adopt), and removes the
// runtime files of QEMUs that have exited.
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
			out[i] = m.inspect(ctx, def, sc, false)
		}()
	}
	wg.Wait()
	slices.SortStableFunc(out, func(a, b Status) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Status returns the status of the VM named by nameOrID (a name, or an ID
// when all digits), without waiting for a start in progress, as List does.
// It returns a *store.NotFoundError for an unknown VM.
func (m *Manager) Status(ctx context.Context, nameOrID string) (Status, *config.VM, error) {
	def, err := m.store.Lookup(nameOrID)
	if def == nil {
		return Status{}, nil, err
	}
	return m.inspect(ctx, def, &scan{}, false), def, nil
}

// inspect reports a VM's status, removing the runtime files of a QEMU that
// no longer runs; it creates none. A start in progress gives StateStarting
// at once, or, with wait set (for commands that act on the VM), is waited
// for, for as long as a start may take. With sc nil, a QEMU is only looked
// for by the VM's pidfile.
func (m *Manager) inspect(ctx context.Context, def *config.VM, sc *scan, wait bool) Status {
	st := m.baseStatus(def)
	if config.ValidName(def.Name) != nil {
		return st // a definition file no VM can be started from
	}
	lock, err := m.lockShared(ctx, def.Name, wait)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// No runtime directory, so nothing to clean up. A QEMU whose
		// runtime files were lost is still found by its command line.
		if sc == nil {
			return st
		}
		if p := m.candidate(def.Name, sc); p != nil {
			return m.query(ctx, def, st, p)
		}
		return st
	case errors.Is(err, errMigrating):
		// Its state is being sent or saved (send.go), which may take
		// long: its QEMU is asked without the lock, and nothing removed.
		if p, _ := m.find(def.Name, nil); p != nil {
			return m.query(ctx, def, st, p)
		}
		return st
	case err != nil:
		return m.lockFailed(st, err)
	}
	// No start, send, save or snapshot operation is in progress: a marker
	// left is from one that was killed.
	os.Remove(m.paths.RuntimeFile(def.Name, startingFileName))
	os.Remove(m.paths.RuntimeFile(def.Name, migratingFileName))
	os.Remove(m.paths.RuntimeFile(def.Name, snapshottingFileName))
	p, _ := m.find(def.Name, sc)
	if p == nil {
		m.cleanup(def.Name)
	}
	lock.Unlock()
	if p == nil {
		return st
	}
	return m.query(ctx, def, st, p)
}

// errStarting is returned by lockShared when a start is in progress.
var errStarting = errors.New("a start is in progress")

// errMigrating is returned by lockShared when a send or save is in progress.
var errMigrating = errors.New("a send or save is in progress")

// lockShared takes the VM's lock shared. It returns an error wrapping
// fs.ErrNotExist when the VM has no runtime directory, and errStarting when
// a start holds the lock and wait is not set. Other holders (a remove, the
// cleanup after an exit) are brief and waited for.
func (m *Manager) lockShared(ctx context.Context, name string, wait bool) (*store.FileLock, error) {
	path := m.paths.LockFile(name)
	limit := startWait
	if wait {
		limit = startTimeout
	}
	deadline := time.Now().Add(limit)
	delay := time.Millisecond
	for {
		l, err := store.TryLockShared(path)
		if !errors.Is(err, store.ErrLocked) {
			return l, err
		}
		if _, serr := os.Stat(m.paths.RuntimeFile(name, startingFileName)); serr == nil && !wait {
			return nil, errStarting
		}
		if _, serr := os.Stat(m.paths.RuntimeFile(name, migratingFileName)); serr == nil && !wait {
			return nil, errMigrating
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %v", errStarting, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("lock %q: %w", path, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// lockFailed is the status of a VM whose lock could not be taken.
func (m *Manager) lockFailed(st Status, err error) Status {
	if errors.Is(err, errStarting) {
		st.State = StateStarting
		if err != errStarting {
			st.Err = err.Error()
		}
		return st
	}
	st.Err = err.Error()
	return st
}

func (m *Manager) baseStatus(def *config.VM) Status {
	st := Status{ID: def.ID, Name: def.Name, VCPUs: def.CPUs, MaxMem: def.Memory, State: StateStopped, Template: def.Template}
	if m.HasSavedState(def.Name) {
		st.State = StateSaved // a QEMU found running overrides it
	}
	st.CID, st.Devices = def.CID, deviceInfo(def)
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

// inspectLocked reports a VM's status as inspect does; the caller holds
// its lock.
func (m *Manager) inspectLocked(ctx context.Context, def *config.VM, sc *scan) Status {
	st := m.baseStatus(def)
	p, _ := m.find(def.Name, sc)
	if p == nil {
		m.cleanup(def.Name)
		return st
	}
	return m.query(ctx, def, st, p)
}

// query fills in the status of a VM whose QEMU is p, asking its monitor
// (and asking it for the serial pty when the VM's record of it is lost).
// It needs no lock, and writes nothing.
func (m *Manager) query(ctx context.Context, def *config.VM, st Status, p *procInfo) Status {
	st.PID = p.PID
	st.startTime = p.StartTime
	st.CurMem = p.RSS
	st.Owner = ownerName(p.UID, p.GID)
	st.Cmdline = p.Cmdline
	if cid := cmdlineCID(p.Cmdline); cid != 0 {
		st.CID = cid
	}
	st.State = StateRunning
	if b, err := os.ReadFile(m.paths.PTYFile(def.Name)); err == nil {
		st.TTY = strings.TrimSpace(string(b))
	}
	switch p.State {
	case 'T':
		st.State, st.Err = StateBroken, fmt.Sprintf("qemu process %d is stopped (SIGSTOP); send SIGCONT to resume it: kill -CONT %d", p.PID, p.PID)
		return st
	case 't':
		st.State, st.Err = StateBroken, fmt.Sprintf("qemu process %d is stopped by a debugger (tracing stop)", p.PID)
		return st
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
	if hasVirtioMem(p.Cmdline) {
		// The memory a guest that grows has now (live.go).
		if sum, err := c.QueryMemorySizeSummary(qctx); err == nil {
			st.MaxMem = sum.BaseMemory + sum.PluggedMemory
		}
	}
	for _, d := range m.attached(def.Name, st) {
		st.Attached = append(st.Attached, d.Path)
	}
	if st.TTY == "" {
		if pty, err := c.PTY(qctx, SerialLabel); err == nil {
			st.TTY = pty
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

// find finds the QEMU process of VM name: the one its pidfile names if
// that is still our QEMU, else, with a scan, one whose command line names
// the VM's pidfile: then its runtime files were lost, and lost is true. It
// returns nil when none runs, and writes nothing. A caller that removes
// runtime files on its word holds the VM's lock.
func (m *Manager) find(name string, sc *scan) (p *procInfo, lost bool) {
	pidfile := m.paths.PIDFile(name)
	if pid := readPIDFile(pidfile); pid != 0 {
		p, err := readProc(pid)
		if err == nil && m.ours(p, pidfile) && !startedAfter(p, pidfile) {
			if id, err := os.ReadFile(m.paths.BootIDFile(name)); err == nil && strings.TrimSpace(string(id)) != bootID() {
				return nil, false // from before the host's last boot
			}
			return p, false
		}
	}
	if sc == nil {
		return nil, false
	}
	if p := m.candidate(name, sc); p != nil {
		return p, true
	}
	return nil, false
}

// candidate returns the QEMU of ours, if any, whose command line names the
// pidfile of VM name.
func (m *Manager) candidate(name string, sc *scan) *procInfo {
	pidfile := m.paths.PIDFile(name)
	for _, pid := range sc.find(pidfile, m) {
		if p, err := readProc(pid); err == nil && m.ours(p, pidfile) {
			return p
		}
	}
	return nil
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

// ours reports whether p is a QEMU started for the pidfile path: its
// command line says so, and it runs as the user running vmtui (whose state
// directories are private), since any user can run a program called
// qemu-system-x86_64 naming another user's pidfile.
func (m *Manager) ours(p *procInfo, pidfile string) bool {
	euid := uint32(os.Geteuid())
	return p.RealUID == euid && p.UID == euid &&
		len(p.Cmdline) > 0 && argValue(p.Cmdline, "-pidfile") == pidfile &&
		strings.HasPrefix(filepath.Base(p.Cmdline[0]), "qemu-system")
}

// scan finds QEMU processes by the pidfile their command line names; it
// reads /proc once, when first asked.
type scan struct {
	once sync.Once
	byPF map[string][]int
}

func (s *scan) find(pidfile string, m *Manager) []int {
	s.once.Do(func() {
		s.byPF = make(map[string][]int)
		pids, _ := listPIDs()
		for _, pid := range pids {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			if err != nil || !strings.Contains(string(b), "qemu-system") {
				continue
			}
			argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
			if pf := argValue(argv, "-pidfile"); pf != "" && strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
				s.byPF[pf] = append(s.byPF[pf], pid)
			}
		}
	})
	return s.byPF[pidfile]
}
