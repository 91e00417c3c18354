package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/vm/qmp"
	"github.com/vmtui/vmtui/vm/stream"
)

// Instant clones: an instance of a saved template resumes the template's
// saved guest instead of booting.
//
// The template's saved state (vmtui save) holds its RAM in the stream. The
// first time an instance is made of a saved template, vmtui converts that
// state, once, into a clone state in Paths.TemplateCloneDir: the guest's RAM
// in a file of its own (ram), and its device state without the RAM
// (devices, a QEMU migration stream written with the x-ignore-shared
// capability). To convert, a QEMU built from the new instance's definition
// (the template's machine, on the instance's overlays, which nothing else
// uses yet) loads the saved state with its RAM in that file, mapped shared
// (memory-backend-file, share=on), and migrates its devices out with
// x-ignore-shared, which leaves the RAM where it is; the guest never runs.
//
// An instance's first start then maps the template's RAM file privately
// (share=off: copy-on-write, so unchanged pages stay in the page cache once
// for every instance) and loads the device state (x-ignore-shared on this
// side too), then runs. Only the first start: the instance's overlays are
// unchanged since it was made only until its guest runs, and the saved
// guest must find its disks as it left them. A marker in the instance's
// disk directory (resumeMarkerName) says that it has not started yet; it is
// removed once the device state is loaded, before the guest runs. Later
// starts boot.
//
// While a template has instances it does not start (template.go), so its
// saved state, and the clone state made from it, cannot change under them;
// a clone state is made again only when the saved state it was made from
// (its stamp: device, inode, size and time) is no longer the template's.
//
// An instance resumes only when its definition is its template's but for
// what an instance never inherits (name, ID, disks' paths, MACs, host
// ports, vsock CID); any other difference (-m, --cpus, -d, ...) makes it
// boot. It resumes the template's guest as it was: its hostname and the
// addresses it configured. With user networking that is harmless; on a
// bridged network two guests would claim the template's addresses, so an
// instance of a saved template with a bridged interface is refused.

// Files of the clone state, in Paths.TemplateCloneDir.
const (
	cloneRAMName    = "ram"
	cloneDevName    = "devices"
	cloneStampName  = "source"
	cloneSocketName = "convert.sock"
	// resumeMarkerName, in an instance's disk directory, marks an
	// instance that resumes its template at its first start.
	resumeMarkerName = "resume-template"
)

// cloneTimeout bounds the conversion of a template's saved state.
const cloneTimeout = 30 * time.Minute

// sameMachine returns "" when inst, an instance of tdef, has its
// template's machine (what a saved guest needs to find to run on), or the
// keys of its definition that differ.
func sameMachine(tdef, inst *config.VM) string {
	norm := func(d *config.VM) config.VM {
		n := *d
		n.ID, n.Name, n.File, n.Err, n.Template, n.CID = 0, "", "", nil, "", 0
		n.Vsock = d.HasVsock()
		n.Disks = make([]config.Disk, len(d.Disks))
		for i, dk := range d.Disks {
			dk.Path, dk.Format = "", ""
			n.Disks[i] = dk
		}
		n.Networks = make([]config.Network, len(d.Networks))
		for i, nw := range d.Networks {
			nw.MAC, nw.HostFwd = "", nil
			n.Networks[i] = nw
		}
		return n
	}
	a, b := norm(tdef), norm(inst)
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var diff []string
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			diff = append(diff, strings.ToLower(va.Type().Field(i).Name))
		}
	}
	return strings.Join(diff, ", ")
}

// bridged returns the bridge of def's first bridged interface, or "".
func bridged(def *config.VM) string {
	for _, n := range def.Networks {
		if n.Type == config.NetBridge {
			return n.Bridge
		}
	}
	return ""
}

// errBridgedClone is the refusal of an instance of a saved template on a
// bridged network.
func errBridgedClone(template, bridge string) error {
	return fmt.Errorf("template %s is saved, and its instances resume its guest, addresses included: on the bridged network %s they would all claim the template's; "+
		"start the template with --fresh and stop it (its saved state goes), or give the instance user networking (--net user)", template, bridge)
}

// stampOf identifies the file at path: device, inode, size and
// modification time.
func stampOf(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("stat %q: no inode", path)
	}
	return fmt.Sprintf("%d %d %d %d\n", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano()), nil
}

// cloneReady reports whether the template's clone state was made from its
// saved state at saved.
func (m *Manager) cloneReady(template, saved string) bool {
	dir := m.paths.TemplateCloneDir(template)
	want, err := stampOf(saved)
	if err != nil {
		return false
	}
	got, err := os.ReadFile(filepath.Join(dir, cloneStampName))
	if err != nil || string(got) != want {
		return false
	}
	for _, f := range []string{cloneRAMName, cloneDevName} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// removeClone removes a template's clone state. The caller holds the
// template's lock, and the template has no instances.
func (m *Manager) removeClone(template string) error {
	dir := m.paths.TemplateCloneDir(template)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the saved state of template %s's instances: %w", template, err)
	}
	return nil
}

// cloneForInstance decides, while inst (an instance of tdef, whose lock is
// held) is made, whether it will resume its template: when the template is
// saved and inst has its machine, the clone state is made if needed (from
// the instance's spec) and the instance marked. It returns a note when the
// template is saved but the instance will boot.
func (m *Manager) cloneForInstance(ctx context.Context, tdef, inst *config.VM, ownDisks bool) (string, error) {
	saved := m.savedStateFile(tdef.Name)
	if saved == "" {
		return "", nil
	}
	if ownDisks {
		return fmt.Sprintf("template %s is saved, but the instance has disks of its own: it boots instead of resuming the template's guest", tdef.Name), nil
	}
	if diff := sameMachine(tdef, inst); diff != "" {
		return fmt.Sprintf("template %s is saved, but the instance differs from it in %s: it boots instead of resuming the template's guest", tdef.Name, diff), nil
	}
	if inst.HugePages {
		// Its RAM would have to be a file of huge pages.
		return fmt.Sprintf("template %s is saved, but its memory is in huge pages, which instances cannot map from a file: the instance boots", tdef.Name), nil
	}
	if br := bridged(inst); br != "" {
		return "", errBridgedClone(tdef.Name, br)
	}
	if !m.cloneReady(tdef.Name, saved) {
		if err := m.convertTemplate(ctx, tdef, inst, saved); err != nil {
			return "", fmt.Errorf("prepare the saved state of template %s for its instances: %w", tdef.Name, err)
		}
	}
	// The marker holds the instance's definition: edited before its first
	// start, the instance boots (the saved guest fits the machine it was
	// made for only).
	data, err := config.Encode(inst)
	if err != nil {
		return "", err
	}
	marker := filepath.Join(m.paths.InstanceDisksDir(inst.Name), resumeMarkerName)
	if err := os.WriteFile(marker, data, 0o600); err != nil {
		return "", err
	}
	return "", nil
}

// memFile backs a starting guest's RAM with a file (StartOptions.memFile).
type memFile struct {
	path  string
	share bool   // mapped shared (writes go to the file), else copy-on-write
	id    string // the backend's id: the saved guest's RAM block (ramBlockID)
}

// ramBlockID is the name of the RAM block of def's guest memory, as a
// QEMU started from def names it, and as a migration stream carries it: a
// state loads only into RAM of the same name. With a memory backend
// (cmdline_devices.go) it is the backend's id; without one, the machine's
// default RAM ("pc.ram" on pc and q35).
func ramBlockID(def *config.VM) string {
	if def.HugePages || def.Prealloc || len(def.Shares) > 0 {
		return MemBackendID
	}
	if strings.HasPrefix(def.Machine, "microvm") {
		return "microvm.ram"
	}
	return "pc.ram"
}

// cloneStart is called by a start under the VM's lock: when def is an
// instance that has not started since it was made of a saved template
// (its marker), it sets opts so that the guest resumes the template's
// clone state instead of booting. The marker goes first: whatever comes of
// this start, the next one boots (the guest may have run on its disks).
func (m *Manager) cloneStart(def *config.VM, opts *StartOptions) error {
	if def.Template == "" || opts.Incoming != nil || config.ValidName(def.Template) != nil {
		return nil
	}
	marker := filepath.Join(m.paths.InstanceDisksDir(def.Name), resumeMarkerName)
	made, err := os.ReadFile(marker)
	if err != nil {
		return nil
	}
	now, err := config.Encode(def)
	if err != nil {
		return err
	}
	if opts.Fresh || opts.LoadVM != "" || !bytes.Equal(now, made) {
		// Booted (or reverted, or its definition edited since it was
		// made): from now on its disks are its own.
		return os.Remove(marker)
	}
	if br := bridged(def); br != "" {
		return fmt.Errorf("start vm %s: %w", def.Name, errBridgedClone(def.Template, br))
	}
	if len(def.Shares) > 0 {
		return fmt.Errorf("start vm %s: a guest with shared folders cannot resume its template's saved state (virtio-fs does not migrate); remove the shares or the instance", def.Name)
	}
	dir := m.paths.TemplateCloneDir(def.Template)
	dev, err := os.Open(filepath.Join(dir, cloneDevName))
	if err != nil {
		os.Remove(marker)
		return fmt.Errorf("start vm %s: the saved state of template %s is gone (%w): start it again to boot it", def.Name, def.Template, err)
	}
	if err := os.Remove(marker); err != nil {
		dev.Close()
		return fmt.Errorf("start vm %s: %w", def.Name, err)
	}
	opts.Incoming = &Incoming{
		Stream: dev,
		Caps:   MigrationCaps{"x-ignore-shared": true},
		Resume: !opts.Paused,
		Done:   func() { dev.Close() },
	}
	opts.memFile = &memFile{path: filepath.Join(dir, cloneRAMName), id: ramBlockID(def)}
	return nil
}

// convertTemplate makes the clone state of tdef from its saved state at
// saved (see the top of the file), starting instance inst, whose lock the
// caller holds, from the saved state with its RAM in a new shared file,
// paused, then migrating its devices out with x-ignore-shared. The new
// state replaces the old one only once it is complete.
func (m *Manager) convertTemplate(ctx context.Context, tdef, inst *config.VM, saved string) (err error) {
	ctx, cancel := context.WithTimeout(ctx, cloneTimeout)
	defer cancel()
	if _, err := m.paths.EnsureLogDir(inst.Name); err != nil {
		return err
	}
	dir := m.paths.TemplateCloneDir(tdef.Name)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+tdef.Name+".new-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	stamp, err := stampOf(saved)
	if err != nil {
		return err
	}
	in, err := os.Open(saved)
	if err != nil {
		return err
	}
	defer in.Close()
	sr, err := stream.NewReader(in)
	if err != nil {
		return fmt.Errorf("saved state %q: %w", saved, err)
	}
	// QEMU loads a state only into the machine it was saved from.
	if now, err := config.Encode(tdef); err != nil {
		return err
	} else if !bytes.Equal(now, sr.Header().Definition) {
		return fmt.Errorf("its definition changed since it was saved, and its saved state only fits the definition it was saved with")
	}
	out, err := os.OpenFile(filepath.Join(tmp, cloneDevName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()

	st, err := m.startLocked(ctx, inst, StartOptions{
		Paused:   true,
		Incoming: &Incoming{Stream: sr},
		memFile:  &memFile{path: filepath.Join(tmp, cloneRAMName), share: true, id: ramBlockID(tdef)},
	})
	if err != nil {
		return err
	}
	defer func() {
		if qerr := m.quitLocked(ctx, inst.Name, st.PID); err == nil {
			err = qerr
		}
	}()
	if err := m.migrateOut(ctx, inst.Name, st.PID, out, MigrationCaps{"x-ignore-shared": true}); err != nil {
		return fmt.Errorf("save the device state: %w", err)
	}
	if err := m.quitLocked(ctx, inst.Name, st.PID); err != nil {
		return err
	}
	// Durable before it is used: the RAM QEMU wrote through its shared
	// mapping, and the device state.
	if err := out.Sync(); err != nil {
		return err
	}
	if err := syncFile(filepath.Join(tmp, cloneRAMName)); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, cloneStampName), []byte(stamp), 0o600); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// quitLocked quits the QEMU (process pid) of VM name, whose lock the caller
// holds, waits until it has exited and removes its runtime files. It does
// nothing once that QEMU is gone.
func (m *Manager) quitLocked(ctx context.Context, name string, pid int) error {
	pidfile := m.paths.PIDFile(name)
	gone := func() bool {
		p, err := readProc(pid)
		return err != nil || !m.ours(p, pidfile) || p.State == 'Z'
	}
	if !gone() {
		m.withQMP(ctx, name, func(c *qmp.Client) error { return c.Quit(ctx) })
	}
	deadline := time.Now().Add(forceGrace)
	for !gone() {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(forceGrace)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	m.cleanup(name)
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
