package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/vmtui/vmtui/config"
)

var (
	// ErrNotFound is what every *NotFoundError matches: no definition
	// has the name or ID asked for. Its text is vmctl's.
	ErrNotFound = errors.New("vm not found")
	// ErrExists is returned by Create when a definition with the name
	// already exists. Its text is vmctl's.
	ErrExists = errors.New("vm already exists")
)

// NotFoundError is the error of a lookup, save or removal of a VM that has
// no definition: Name is what was asked for, a name or an ID. It matches
// ErrNotFound (errors.Is), and reads as vmctl's "NAME: vm not found", so
// that callers return it as it is.
type NotFoundError struct {
	Name string
}

func (e *NotFoundError) Error() string { return e.Name + ": " + ErrNotFound.Error() }

// Is reports whether target is ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Store is the set of VM definitions, one file per VM in Paths.VMsDir.
// Several Stores, in one process or several, may work on the same
// directory at once: every change happens under an exclusive flock(2) on
// Paths.StoreLockFile, and every write is atomic.
//
// IDs are assigned by Create, one more than the highest ID ever assigned
// (recorded in Paths.LastIDFile) or than any definition's, whichever is
// higher: like vmd's, IDs only increase, so an ID never names two VMs, not
// even one after the other. Only a lost last-id file lets the ID of a
// removed VM come back.
type Store struct {
	paths *Paths
}

// Open returns the Store of p, creating its directories (mode 0700) if they
// do not exist.
func Open(p *Paths) (*Store, error) {
	if err := os.MkdirAll(p.VMsDir(), 0o700); err != nil {
		return nil, fmt.Errorf("open definitions: %w", err)
	}
	return &Store{paths: p}, nil
}

// Paths returns the Paths the Store was opened with.
func (s *Store) Paths() *Paths { return s.paths }

// List returns every definition, sorted by ID, then by name. A definition
// that cannot be read, parsed or validated is listed too, with its Err set
// and what could be read of it (at least Name and File; ID when it was
// readable, else 0, and those come last), so that a broken file is shown
// rather than hidden. Definitions that share an ID all get an Err saying
// so. The error is for the directory itself.
func (s *Store) List() ([]*config.VM, error) {
	entries, err := os.ReadDir(s.paths.VMsDir())
	if err != nil {
		return nil, fmt.Errorf("list definitions: %w", err)
	}
	var vms []*config.VM
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, DefinitionExt) || e.IsDir() {
			continue
		}
		vm, err := readFile(s.paths.DefinitionFile(strings.TrimSuffix(name, DefinitionExt)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since ReadDir
		}
		vm.Err = err
		vms = append(vms, vm)
	}
	byID := map[int][]*config.VM{}
	for _, vm := range vms {
		if vm.ID > 0 {
			byID[vm.ID] = append(byID[vm.ID], vm)
		}
	}
	for id, same := range byID {
		if len(same) < 2 {
			continue
		}
		for _, vm := range same {
			var others []string
			for _, o := range same {
				if o != vm {
					others = append(others, strconv.Quote(o.File))
				}
			}
			dup := &config.FieldError{File: vm.File, Field: "id", Msg: fmt.Sprintf("%d is also the id of %s", id, strings.Join(others, ", "))}
			vm.Err = errors.Join(vm.Err, dup)
		}
	}
	slices.SortFunc(vms, func(a, b *config.VM) int {
		if (a.ID == 0) != (b.ID == 0) {
			return cmp.Compare(b.ID, a.ID) // ID 0 last
		}
		return cmp.Or(cmp.Compare(a.ID, b.ID), strings.Compare(a.Name, b.Name))
	})
	return vms, nil
}

// Lookup returns the definition named by nameOrID: an ID when it is all
// digits (IsID), a name otherwise, as vmctl reads its arguments. It returns
// a *NotFoundError when there is no such definition, and an error when
// several definitions share the ID. When the definition exists but is
// broken, Lookup returns it, with its Err set, together with that same
// error.
//
// A lookup by name reads that one file; a lookup by ID reads them all.
func (s *Store) Lookup(nameOrID string) (*config.VM, error) {
	if config.IsID(nameOrID) {
		id, err := strconv.Atoi(nameOrID)
		if err != nil || id == 0 {
			return nil, &NotFoundError{Name: nameOrID}
		}
		vms, err := s.List()
		if err != nil {
			return nil, err
		}
		var found []*config.VM
		for _, vm := range vms {
			if vm.ID == id {
				found = append(found, vm)
			}
		}
		switch len(found) {
		case 0:
			return nil, &NotFoundError{Name: nameOrID}
		case 1:
			return found[0], found[0].Err
		default:
			return nil, fmt.Errorf("vm id %d is ambiguous: %q and %q both have it", id, found[0].File, found[1].File)
		}
	}
	if !isStem(nameOrID) {
		return nil, &NotFoundError{Name: nameOrID}
	}
	vm, err := readFile(s.paths.DefinitionFile(nameOrID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &NotFoundError{Name: nameOrID}
	}
	vm.Err = err
	return vm, err
}

// isStem reports whether s can be the name of a definition file, less its
// extension: a broken definition may have a file name that is not a valid
// VM name, and must still be reachable, but never outside the directory.
func isStem(s string) bool {
	return s != "" && !strings.HasPrefix(s, ".") && !strings.ContainsAny(s, "/\x00")
}

// Create defines a new VM: it fills in the defaults (SetDefaults),
// validates the definition, assigns vm.ID (overwriting what was there) and
// writes the definition file, setting vm.File. It returns ErrExists when a
// definition with the name exists, and the validation errors (naming no
// file) when the definition is not valid.
func (s *Store) Create(vm *config.VM) (err error) {
	vm.SetDefaults()
	vm.File = ""
	if err := vm.ValidateNew(); err != nil {
		return err
	}
	path := s.paths.DefinitionFile(vm.Name)
	lock, err := s.lock()
	if err != nil {
		return err
	}
	defer func() {
		if uerr := lock.Unlock(); err == nil && uerr != nil {
			err = fmt.Errorf("create %s: unlock: %w", vm.Name, uerr)
		}
	}()
	if _, err := os.Lstat(path); err == nil {
		return ErrExists
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("create %s: %w", vm.Name, err)
	}
	id, err := s.nextID()
	if err != nil {
		return fmt.Errorf("create %s: %w", vm.Name, err)
	}
	// Record the ID before using it: if the definition cannot be written,
	// an ID is skipped, never given twice.
	if err := writeFileAtomic(s.paths.LastIDFile(), []byte(strconv.Itoa(id)+"\n"), false); err != nil {
		return fmt.Errorf("create %s: record the last id: %w", vm.Name, err)
	}
	next := *vm
	next.ID, next.File = id, path
	data, err := config.Encode(&next)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, data, true); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ErrExists
		}
		return fmt.Errorf("create %s: %w", vm.Name, err)
	}
	vm.ID, vm.File = id, path
	return nil
}

// nextID returns the ID to assign next. The caller holds the store lock.
func (s *Store) nextID() (int, error) {
	last := 0
	if data, err := os.ReadFile(s.paths.LastIDFile()); err == nil {
		// A damaged counter is ignored: the definitions below still
		// keep the IDs in use from being given again.
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && n > 0 {
			last = n
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("read the last id: %w", err)
	}
	vms, err := s.List()
	if err != nil {
		return 0, err
	}
	for _, vm := range vms {
		last = max(last, vm.ID)
	}
	return last + 1, nil
}

// Save writes an existing definition back to its file, atomically: the
// file holds either the old definition or the new one, never part of
// either. vm.Name must name an existing definition (else a
// *NotFoundError), and vm.ID must be the ID that definition has; renaming
// a VM is not supported. Save fills in the defaults and validates before
// writing, and sets vm.File.
func (s *Store) Save(vm *config.VM) (err error) {
	vm.SetDefaults()
	if !isStem(vm.Name) {
		return &NotFoundError{Name: vm.Name}
	}
	path := s.paths.DefinitionFile(vm.Name)
	vm.File = path
	if err := vm.Validate(); err != nil {
		return err
	}
	lock, err := s.lock()
	if err != nil {
		return err
	}
	defer func() {
		if uerr := lock.Unlock(); err == nil && uerr != nil {
			err = fmt.Errorf("save %s: unlock: %w", vm.Name, uerr)
		}
	}()
	old, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &NotFoundError{Name: vm.Name}
	}
	// A broken file may be overwritten, but not one whose ID is another.
	if old.ID != 0 && old.ID != vm.ID {
		return fmt.Errorf("save %s: %s has id %d, not %d", vm.Name, path, old.ID, vm.ID)
	}
	data, err := config.Encode(vm)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, data, false); err != nil {
		return fmt.Errorf("save %s: %w", vm.Name, err)
	}
	return nil
}

// Remove deletes the definition called name, or returns a *NotFoundError. It
// touches neither the VM's disks nor its logs and runtime files: stopping
// the VM first and cleaning up after it is the caller's business.
func (s *Store) Remove(name string) (err error) {
	if !isStem(name) {
		return &NotFoundError{Name: name}
	}
	lock, err := s.lock()
	if err != nil {
		return err
	}
	defer func() {
		if uerr := lock.Unlock(); err == nil && uerr != nil {
			err = fmt.Errorf("remove %s: unlock: %w", name, uerr)
		}
	}()
	if err := os.Remove(s.paths.DefinitionFile(name)); errors.Is(err, fs.ErrNotExist) {
		return &NotFoundError{Name: name}
	} else if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err := syncDir(s.paths.VMsDir()); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// lock takes the store lock. Changes are short, so it waits as long as it
// takes.
func (s *Store) lock() (*FileLock, error) {
	return Lock(context.Background(), s.paths.StoreLockFile())
}
