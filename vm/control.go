package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm/qmp"
)

// ErrRunning is what Remove's error for a VM that runs wraps.
var ErrRunning = errors.New("vm is running")

// StopOptions modify Stop.
type StopOptions struct {
	// Force quits QEMU at once (QMP quit, then SIGKILL after a grace
	// period) instead of pressing the power button.
	Force bool
	// Wait returns only once the QEMU process has exited.
	Wait bool
}

// Stop stops a running VM: a graceful ACPI power-down, or with Force a quit.
// It holds the VM's lock, as Start, Remove, Save, Send and the snapshot
// operations do, while it finds the VM's QEMU and asks it to stop (and, when
// forced, until it has exited), so that a stop never overlaps them: an
// operation in progress is waited for, up to stopLockWait, and the VM is
// then stopped. When that operation has not ended by then, a stop fails,
// naming it (for instance "a save is in progress"); a forced stop goes on
// without the lock, quitting QEMU under it, so that a hung operation never
// keeps a VM from being stopped (the operation then fails: a send or save
// leaves no state, a snapshot says the VM stopped meanwhile). A graceful
// stop holds the lock only while asking: waiting for the guest (Wait)
// happens without it. A QEMU that lost its runtime files (see Adopt) is
// found by its command line and stopped too; once its monitor's socket is
// gone, only by a forced stop.
func (m *Manager) Stop(ctx context.Context, def *config.VM, opts StopOptions) error {
	if config.ValidName(def.Name) != nil {
		return ErrNotRunning // a definition file no VM can be started from
	}
	var st Status
	lock, err := m.lockVM(ctx, def.Name, stopLockWait)
	var busy *lockBusyError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// No runtime directory: no operation holds the VM (each makes
		// it first). A QEMU that lost it is found by its command line.
		st = m.inspect(ctx, def, &scan{}, true)
	case errors.As(err, &busy) && opts.Force:
		// What holds the VM has not ended: a forced stop goes on.
		st = m.baseStatus(def)
		if p, _ := m.find(def.Name, &scan{}); p != nil {
			st = m.query(ctx, def, st, p)
		}
	case err != nil:
		return err
	default:
		defer func() {
			if lock != nil {
				lock.Unlock()
			}
		}()
		st = m.inspectLocked(ctx, def, &scan{})
	}
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
		if lock != nil {
			// The guest may take long to power off: the VM's lock is
			// not held meanwhile.
			lock.Unlock()
			lock = nil
		}
		if !opts.Wait {
			return nil
		}
		return m.waitExit(ctx, def.Name, pid)
	}
	wait := m.waitExit
	if lock != nil {
		wait = m.waitExitLocked
	}
	// Forced: quit over QMP if it answers, else SIGTERM; SIGKILL after the
	// grace period. A stopped process (SIGSTOP) cannot answer: it gets
	// SIGTERM and SIGCONT, to act on it.
	if p, err := readProc(pid); err == nil && (p.State == 'T' || p.State == 't') {
		m.signal(def.Name, st, syscall.SIGTERM)
		m.signal(def.Name, st, syscall.SIGCONT)
	} else if err := m.withQMP(ctx, def.Name, func(c *qmp.Client) error { return c.Quit(ctx) }); err != nil {
		m.signal(def.Name, st, syscall.SIGTERM)
	}
	gctx, cancel := context.WithTimeout(ctx, forceGrace)
	err = wait(gctx, def.Name, pid)
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	m.signal(def.Name, st, syscall.SIGKILL)
	return wait(ctx, def.Name, pid)
}

// signal sends sig to the QEMU of st, if the process of that PID is still
// that QEMU: the same start time, ours, for this VM's pidfile. A PID is
// reused once its process has exited, so every signal is checked.
func (m *Manager) signal(name string, st Status, sig syscall.Signal) bool {
	p, err := readProc(st.PID)
	if err != nil || p.StartTime != st.startTime || !m.ours(p, m.paths.PIDFile(name)) {
		return false
	}
	return syscall.Kill(st.PID, sig) == nil
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
// removes the VM's runtime files (unless the VM's lock is held: then its
// holder does).
func (m *Manager) waitExit(ctx context.Context, name string, pid int) error {
	if err := m.waitGone(ctx, name, pid); err != nil {
		return err
	}
	if lock, err := store.TryLock(m.paths.LockFile(name)); err == nil {
		m.cleanupExited(name)
		lock.Unlock()
	}
	return nil
}

// waitExitLocked is waitExit for a caller that holds the VM's lock.
func (m *Manager) waitExitLocked(ctx context.Context, name string, pid int) error {
	if err := m.waitGone(ctx, name, pid); err != nil {
		return err
	}
	m.cleanupExited(name)
	return nil
}

// cleanupExited removes the runtime files of VM name, under its lock,
// unless a new QEMU was started meanwhile.
func (m *Manager) cleanupExited(name string) {
	if p, _ := m.find(name, nil); p == nil {
		m.cleanup(name)
	}
}

// waitGone waits until QEMU process pid of VM name has exited.
func (m *Manager) waitGone(ctx context.Context, name string, pid int) error {
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
	st := m.inspect(ctx, def, &scan{}, true)
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
	st := m.inspect(ctx, def, &scan{}, true)
	if !st.Running() {
		return ErrNotRunning
	}
	return m.withQMP(ctx, def.Name, fn)
}

// Removable says whether a VM in status s may have its definition removed:
// not while it runs (an error matching ErrRunning, "vm is running (pid N);
// stop it first"). Remove decides by it under the VM's lock; the TUI asks
// it to refuse the key at once.
func (s Status) Removable() error {
	if s.Running() {
		return fmt.Errorf("%w (pid %d); stop it first", ErrRunning, s.PID)
	}
	return nil
}

// Remove deletes the definition of a VM that is not running, holding the
// VM's lock as a start does, so that a remove and a start of one VM never
// interleave: either the start comes first and Remove returns an error
// matching ErrRunning ("remove NAME: vm is running (pid N); stop it
// first", with the VM's status), or the remove does and the start finds no
// VM. A start in progress is waited for. The VM's disks and logs are kept.
func (m *Manager) Remove(ctx context.Context, def *config.VM) (Status, error) {
	if config.ValidName(def.Name) != nil {
		// A definition file no VM can be started from: nothing to lock.
		return m.baseStatus(def), m.store.Remove(def.Name)
	}
	if _, err := m.paths.EnsureRuntimeDir(def.Name); err != nil {
		return Status{}, err
	}
	lctx, cancel := context.WithTimeout(ctx, startTimeout+forceGrace)
	lock, err := store.Lock(lctx, m.paths.LockFile(def.Name))
	cancel()
	if err != nil {
		return Status{}, fmt.Errorf("remove %s: %w", def.Name, err)
	}
	defer lock.Unlock()
	st := m.inspectLocked(ctx, def, &scan{})
	if err := st.Removable(); err != nil {
		return st, fmt.Errorf("remove %s: %w", def.Name, err)
	}
	cur, err := m.store.Lookup(def.Name)
	if cur == nil {
		return st, err
	}
	if cur.ID != def.ID {
		return st, fmt.Errorf("remove %s: %q now has id %d, not %d", def.Name, cur.File, cur.ID, def.ID)
	}
	if err := m.templateInUse(def.Name, whyNoRemove); err != nil {
		return st, fmt.Errorf("remove %s: %w", def.Name, err)
	}
	if err := m.store.Remove(def.Name); err != nil {
		return st, err
	}
	// The overlays vmtui made for an instance go with it.
	if err := m.removeInstanceDisks(cur); err != nil {
		return st, fmt.Errorf("remove %s: %w", def.Name, err)
	}
	// So does a saved state (save.go).
	if err := m.discardSaved(def.Name); err != nil {
		return st, fmt.Errorf("remove %s: %w", def.Name, err)
	}
	// And what a template's instances resumed; an instance's template
	// loses it with its last instance (template.go).
	if err := m.removeClone(def.Name); err != nil {
		return st, fmt.Errorf("remove %s: %w", def.Name, err)
	}
	m.instanceRemoved(cur)
	return st, nil
}
