package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/internal/atomicfile"
)

// Adopt takes back a QEMU that runs for the VM but lost its runtime files
// (its runtime directory or pidfile removed): the QEMU of ours whose command
// line names the VM's pidfile. Inspecting the VM (List, Status) finds and
// shows such a QEMU, and Stop stops it, but only Adopt, and Start before it
// refuses to start a second QEMU, recreate what can be recreated of its
// files: the runtime directory, the pidfile, the host's boot ID, and the
// serial pty's record when QEMU's monitor answers. Its QMP sockets cannot
// be: QEMU still listens on the ones whose files were removed, so such a VM
// stays broken until it is stopped.
//
// Adopt returns the VM's status. It writes nothing for a VM that does not
// run.
func (m *Manager) Adopt(ctx context.Context, def *config.VM) (Status, error) {
	if err := config.ValidName(def.Name); err != nil {
		return m.baseStatus(def), err
	}
	sc := &scan{}
	if p, _ := m.find(def.Name, sc); p == nil {
		return m.inspect(ctx, def, sc, true), nil
	}
	if _, err := m.paths.EnsureRuntimeDir(def.Name); err != nil {
		return m.baseStatus(def), fmt.Errorf("adopt vm %s: %w", def.Name, err)
	}
	lock, err := store.Lock(ctx, m.paths.LockFile(def.Name))
	if err != nil {
		return m.baseStatus(def), fmt.Errorf("adopt vm %s: %w", def.Name, err)
	}
	defer lock.Unlock()
	st, err := m.adoptLocked(ctx, def, sc)
	if err != nil {
		return st, fmt.Errorf("adopt vm %s: %w", def.Name, err)
	}
	return st, nil
}

// adoptLocked is Adopt under the VM's lock, which the caller holds: it
// reports the VM's status as inspectLocked does, after recreating the
// runtime files of a QEMU found by its command line, and the record of its
// pty if that alone was lost.
func (m *Manager) adoptLocked(ctx context.Context, def *config.VM, sc *scan) (Status, error) {
	st := m.baseStatus(def)
	p, lost := m.find(def.Name, sc)
	if p == nil {
		m.cleanup(def.Name)
		return st, nil
	}
	var errs []error
	if lost {
		if _, err := m.paths.EnsureRuntimeDir(def.Name); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs,
				atomicfile.WriteFile(m.paths.PIDFile(def.Name), []byte(strconv.Itoa(p.PID)+"\n"), 0o600),
				atomicfile.WriteFile(m.paths.BootIDFile(def.Name), []byte(bootID()+"\n"), 0o600))
		}
	}
	st = m.query(ctx, def, st, p)
	if st.TTY != "" {
		if _, err := os.Stat(m.paths.PTYFile(def.Name)); errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, atomicfile.WriteFile(m.paths.PTYFile(def.Name), []byte(st.TTY+"\n"), 0o600))
		}
	}
	return st, errors.Join(errs...)
}
