package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
)

// Instances, as vmctl's start -t: a VM made from another, its template.
//
// An instance's definition is a copy of its template's, made when the
// instance is created, with template = "NAME" recorded in it. It is not
// resolved from the template again at each start: an instance starts as its
// own definition says, whatever becomes of the template's since, and its
// definition can be read and edited on its own. What belongs to one VM alone
// is not copied: the name and ID, the disks (the instance gets qcow2
// overlays on the template's disks, made by vmtui under
// Paths.InstanceDisksDir), the network interfaces' MAC addresses (QEMU
// assigns new ones), and the host ports of the port forwards (a forward is
// kept only when the instance is given a host port for its guest port:
// InstanceOptions.Ports). Options given when the instance is made override
// what it inherits.
//
// While a template has instances its disks are the instances' backing
// files, so they must not change: the template does not start, and is not
// removed, until its instances are removed (template.go).

// InstanceOptions are what an instance is given instead of what it would
// inherit from its template. The zero value inherits everything.
type InstanceOptions struct {
	// Memory and CPUs, when not 0, replace the template's.
	Memory int64
	CPUs   int
	// Kernel, Initrd, Append, CDROM, Accel and Boot, when not nil,
	// replace the template's.
	Kernel, Initrd, Append, CDROM, Accel *string
	Boot                                 *config.Boot
	// Disks, when not nil, are the instance's disks instead of overlays on
	// the template's: vmtui makes none, and removes none with the instance.
	Disks []config.Disk
	// Networks, when not nil, replace the template's interfaces (Ports
	// must then be empty).
	Networks []config.Network
	// Ports give host ports to the template's port forwards, by guest
	// port. A forward of the template whose guest port none names is
	// left out of the instance.
	Ports []PortMap
}

// PortMap gives host port Host to the forwards of guest port Guest.
type PortMap struct {
	Host, Guest int
}

// ParsePortMap parses "HOSTPORT:GUESTPORT", as start -p takes it.
func ParsePortMap(s string) (PortMap, error) {
	h, g, ok := strings.Cut(s, ":")
	if !ok {
		return PortMap{}, fmt.Errorf("port map %q: want HOSTPORT:GUESTPORT", s)
	}
	var pm PortMap
	for _, p := range []struct {
		what string
		s    string
		n    *int
	}{{"host", h, &pm.Host}, {"guest", g, &pm.Guest}} {
		n, err := strconv.Atoi(p.s)
		if err != nil || !config.IsID(p.s) || n < 1 || n > 65535 {
			return PortMap{}, fmt.Errorf("port map %q: %s port %q is not a port number (1 to 65535)", s, p.what, p.s)
		}
		*p.n = n
	}
	return pm, nil
}

// InstanceDiskName is the file name of the overlay vmtui makes on the
// template's disk i, in the instance's Paths.InstanceDisksDir.
func InstanceDiskName(i int) string { return "disk" + strconv.Itoa(i) + ".qcow2" }

// CreateInstance defines the VM name as an instance of the VM template,
// making its disks: qcow2 overlays on the template's (unless opts.Disks
// gives others). It holds the template's lock meanwhile, as a start of the
// template does, so that the template cannot start while its instance is
// made; a template that runs is refused (its disks change under it). It
// returns the new definition and notes for the user: the port forwards
// left out. On failure nothing is left: no definition, no overlay.
func (m *Manager) CreateInstance(ctx context.Context, template, name string, opts InstanceOptions) (*config.VM, []string, error) {
	fail := func(err error) (*config.VM, []string, error) {
		return nil, nil, fmt.Errorf("instance %s of %s: %w", config.DisplayName(name), config.DisplayName(template), err)
	}
	if err := config.ValidName(name); err != nil {
		return fail(err)
	}
	tdef, err := m.store.Lookup(template)
	if err != nil {
		return fail(fmt.Errorf("invalid template: %w", err))
	}
	template = tdef.Name // it may have been given by ID
	if tdef.Name == name {
		return fail(fmt.Errorf("a VM cannot be an instance of itself"))
	}
	unlock, err := m.lockPair(ctx, tdef.Name, name)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	// Under the lock, the template as it is now.
	if tdef, err = m.current(tdef); err != nil {
		return fail(fmt.Errorf("invalid template: %w", err))
	}
	if st := m.inspectLocked(ctx, tdef, &scan{}); st.Running() {
		return fail(fmt.Errorf("template %s is running (pid %d); stop it first: its disks are the instance's base images, which must not change",
			tdef.Name, st.PID))
	}
	inst, notes, err := instanceDef(m.paths, tdef, name, opts)
	if err != nil {
		return fail(err)
	}
	if err := m.store.Create(inst); err != nil {
		return fail(err)
	}
	// undo removes the definition, and with disks the overlays made.
	undo := func(err error, disks bool) (*config.VM, []string, error) {
		if disks {
			if rerr := m.removeInstanceDisks(inst); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		if rerr := m.store.Remove(name); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the definition again: %w", rerr))
		}
		return fail(err)
	}
	if opts.Disks == nil {
		if err := makeOverlays(m.paths.InstanceDisksDir(name), tdef, inst); err != nil {
			return undo(err, false) // makeOverlays removed what it made
		}
	}
	// A saved template's instance resumes its guest (instance_clone.go).
	note, err := m.cloneForInstance(ctx, tdef, inst, opts.Disks != nil)
	if err != nil {
		return undo(err, true)
	}
	if note != "" {
		notes = append(notes, note)
	}
	return inst, notes, nil
}

// lockPair takes the VM locks of a template and then of its new instance,
// always in that order, and returns the function releasing both.
func (m *Manager) lockPair(ctx context.Context, template, name string) (func(), error) {
	var locks []*store.FileLock
	unlock := func() {
		for i := len(locks) - 1; i >= 0; i-- {
			locks[i].Unlock()
		}
	}
	lctx, cancel := context.WithTimeout(ctx, startTimeout+forceGrace)
	defer cancel()
	for _, n := range []string{template, name} {
		if _, err := m.paths.EnsureRuntimeDir(n); err != nil {
			unlock()
			return nil, err
		}
		l, err := store.Lock(lctx, m.paths.LockFile(n))
		if err != nil {
			unlock()
			return nil, fmt.Errorf("lock vm %s: %w", n, err)
		}
		locks = append(locks, l)
	}
	return unlock, nil
}

// instanceDef builds the definition of instance name of tdef.
func instanceDef(paths *store.Paths, tdef *config.VM, name string, opts InstanceOptions) (*config.VM, []string, error) {
	inst := *tdef
	inst.ID, inst.Name, inst.File, inst.Err, inst.Template = 0, name, "", nil, tdef.Name
	if opts.Memory != 0 {
		inst.Memory = opts.Memory
	}
	if opts.CPUs != 0 {
		inst.CPUs = opts.CPUs
	}
	for _, o := range []struct {
		val *string
		dst *string
	}{{opts.Kernel, &inst.Kernel}, {opts.Initrd, &inst.Initrd}, {opts.Append, &inst.Append}, {opts.CDROM, &inst.CDROM}, {opts.Accel, &inst.Accel}} {
		if o.val != nil {
			*o.dst = *o.val
		}
	}
	if opts.Boot != nil {
		inst.Boot = *opts.Boot
	}
	notes := clearExclusive(&inst)

	if opts.Disks != nil {
		inst.Disks = slices.Clone(opts.Disks)
	} else {
		inst.Disks = make([]config.Disk, len(tdef.Disks))
		dir := paths.InstanceDisksDir(name)
		for i, d := range tdef.Disks {
			d.Path, d.Format = filepath.Join(dir, InstanceDiskName(i)), disk.FormatQcow2
			inst.Disks[i] = d
		}
	}

	if opts.Networks != nil {
		if len(opts.Ports) > 0 {
			return nil, nil, fmt.Errorf("-p gives host ports to the template's port forwards; with networks of its own, give an instance its forwards in them")
		}
		inst.Networks = slices.Clone(opts.Networks)
		return &inst, notes, nil
	}
	used := make([]bool, len(opts.Ports))
	inst.Networks = make([]config.Network, len(tdef.Networks))
	for i, n := range tdef.Networks {
		n.MAC = ""
		var fwds []string
		for _, s := range n.HostFwd {
			f, err := config.ParseHostFwd(s)
			if err != nil {
				return nil, nil, fmt.Errorf("template %s: networks[%d].hostfwd: %w", tdef.Name, i, err)
			}
			j := slices.IndexFunc(opts.Ports, func(p PortMap) bool { return p.Guest == f.GuestPort })
			if j < 0 {
				notes = append(notes, fmt.Sprintf("port forward %s of template %s left out: give it a host port with -p HOSTPORT:%d", s, tdef.Name, f.GuestPort))
				continue
			}
			used[j] = true
			f.HostPort = opts.Ports[j].Host
			fwds = append(fwds, f.String())
		}
		n.HostFwd = fwds
		inst.Networks[i] = n
	}
	for j, u := range used {
		if !u {
			return nil, nil, fmt.Errorf("-p %d:%d: template %s forwards no port to guest port %d",
				opts.Ports[j].Host, opts.Ports[j].Guest, tdef.Name, opts.Ports[j].Guest)
		}
	}
	return &inst, notes, nil
}

// makeOverlays creates the overlays of inst's disks on tdef's, in dir (mode
// 0700). On failure it removes what it made.
func makeOverlays(dir string, tdef, inst *config.VM) (err error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("create the instance's disk directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create the instance's disk directory: %w", err)
	}
	var made []string
	defer func() {
		if err != nil {
			for _, p := range made {
				os.Remove(p)
			}
			os.Remove(dir) // only if empty: a file left there is not ours
		}
	}()
	for i, d := range tdef.Disks {
		path := inst.Disks[i].Path
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("disk %q already exists (left by an instance of that name?): remove it first", path)
		}
		if err := disk.Create(path, disk.CreateOptions{Format: disk.FormatQcow2, BackingFile: d.Path, BackingFormat: d.Format}); err != nil {
			return fmt.Errorf("make an overlay on the template's disk %q: %w", d.Path, err)
		}
		made = append(made, path)
	}
	return nil
}

// clearExclusive clears in an instance's definition, copied from its
// template's, the settings that belong to one VM alone and that the rest of
// instanceDef does not replace, and returns notes on what it cleared.
func clearExclusive(inst *config.VM) []string {
	var notes []string
	if inst.CID != 0 {
		// A CID names one guest on the host; vsock stays, with a CID
		// of its own chosen at each start.
		notes = append(notes, fmt.Sprintf("vsock cid %d of template %s not copied: the instance gets a free one at start", inst.CID, inst.Template))
		inst.CID, inst.Vsock = 0, true
	}
	if len(inst.HostDevs) > 0 {
		// A host device is passed through to one guest at a time.
		var addrs []string
		for _, d := range inst.HostDevs {
			addrs = append(addrs, d.Address)
		}
		notes = append(notes, fmt.Sprintf("host devices %s of template %s not copied: a device passes through to one guest at a time",
			strings.Join(addrs, ", "), inst.Template))
		inst.HostDevs = nil
	}
	return notes
}

// removeInstanceDisks removes the overlays vmtui made for instance def
// (the files named as InstanceDiskName names them in its InstanceDisksDir)
// and its resume marker, then that directory unless something else is in
// it.
func (m *Manager) removeInstanceDisks(def *config.VM) error {
	if def.Template == "" {
		return nil
	}
	dir := m.paths.InstanceDisksDir(def.Name)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove the instance's disks: %w", err)
	}
	var errs []error
	for _, e := range ents {
		var i int
		if n, _ := fmt.Sscanf(e.Name(), "disk%d.qcow2", &i); (n != 1 || e.Name() != InstanceDiskName(i)) && e.Name() != resumeMarkerName {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove the instance's disk: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		errs = append(errs, fmt.Errorf("remove the instance's disk directory: %w", err))
	}
	return errors.Join(errs...)
}
