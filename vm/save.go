package vm

// Save and resume: suspend to disk. Save writes a running VM's vm stream
// (as Send writes it) into its saved-state file (store.Paths.SavedStateFile)
// and quits its QEMU; the VM is then StateSaved. Start resumes a saved VM
// from that file and removes it once the guest runs again; Start with
// Fresh removes it and boots; Remove removes it with the definition.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/atomicfile"
	"github.com/vmtui/vmtui/vm/stream"
)

// Save suspends the running (or paused) VM def to disk: it pauses it,
// writes its definition and state into its saved-state file, written whole
// or not at all, and quits its QEMU. The VM is then StateSaved until Start
// resumes it. When writing fails (a full disk) the VM goes on as it was,
// and no saved state is left. A VM that is not running gives
// ErrNotRunning. The VM's lock is held throughout, as Start holds it.
func (m *Manager) Save(ctx context.Context, def *config.VM, opts SendOptions) error {
	path := m.paths.SavedStateFile(def.Name)
	return m.suspend(ctx, def, "save vm "+def.Name, opts, func(write func(io.Writer) error) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		f, err := atomicfile.Create(path, 0o600)
		if err != nil {
			return err
		}
		defer f.Abort()
		bw := bufio.NewWriterSize(f, 1<<20)
		if err := write(bw); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return &writeError{err}
		}
		if err := f.CommitReplace(); err != nil {
			return &writeError{err}
		}
		return nil
	})
}

// HasSavedState reports whether the VM called name has a saved state,
// which Start resumes.
func (m *Manager) HasSavedState(name string) bool {
	if config.ValidName(name) != nil {
		return false
	}
	_, err := os.Stat(m.paths.SavedStateFile(name))
	return err == nil
}

// discardSaved removes the VM's saved state, if any.
func (m *Manager) discardSaved(name string) error {
	if config.ValidName(name) != nil {
		return nil
	}
	if err := os.Remove(m.paths.SavedStateFile(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the saved state of vm %s: %w", name, err)
	}
	return nil
}

// useSaved prepares a start of def under its lock: with opts.Fresh (or a
// snapshot to load) the saved state is discarded; else, if the VM has one,
// opts.Incoming is set to resume from it, and to remove it once the guest
// has its state. The function returned closes the file; call it when the
// start is over.
func (m *Manager) useSaved(def *config.VM, opts *StartOptions) (func(), error) {
	noop := func() {}
	if opts.Incoming != nil {
		return noop, nil
	}
	if opts.Fresh || opts.LoadVM != "" {
		return noop, m.discardSaved(def.Name)
	}
	path := m.paths.SavedStateFile(def.Name)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return noop, nil
	}
	const fresh = "start it with --fresh to discard the saved state and boot it"
	if err != nil {
		return noop, fmt.Errorf("resume vm %s: %w; %s", def.Name, err, fresh)
	}
	sr, err := stream.NewReader(f)
	if err != nil {
		f.Close()
		return noop, fmt.Errorf("resume vm %s: saved state %q: %w; %s", def.Name, path, err, fresh)
	}
	// QEMU loads a state only into the machine it was saved from.
	now, err := config.Encode(def)
	if err != nil {
		f.Close()
		return noop, err
	}
	if !bytes.Equal(now, sr.Header().Definition) {
		f.Close()
		return noop, fmt.Errorf("resume vm %s: its definition changed since it was saved, and its saved state "+
			"only fits the definition it was saved with: restore the definition, or %s", def.Name, fresh)
	}
	opts.Incoming = &Incoming{
		Stream: sr,
		Resume: sr.Header().Running() && !opts.Paused,
		Done:   func() { os.Remove(path) },
	}
	return func() { f.Close() }, nil
}

// SavedDisks returns the disks of each VM that has a saved state, by name:
// images that must not change until it is resumed or its state discarded
// (disk.RefuseSaved).
func (m *Manager) SavedDisks() (map[string][]string, error) {
	defs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, def := range defs {
		if !m.HasSavedState(def.Name) {
			continue
		}
		for _, d := range def.Disks {
			out[def.Name] = append(out[def.Name], d.Path)
		}
	}
	return out, nil
}
