package vm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/vm"
)

// templateEnv is a state root with a template VM "base" whose disks are a
// qcow2 image and a raw one that vmtui made, in dir.
type templateEnv struct {
	t     *testing.T
	dir   string
	paths *store.Paths
	m     *vm.Manager
	base  *config.VM
}

func newTemplateEnv(t *testing.T) *templateEnv {
	t.Helper()
	dir := t.TempDir()
	paths := store.HomePaths(filepath.Join(dir, "home"))
	s, err := store.Open(paths)
	if err != nil {
		t.Fatal(err)
	}
	e := &templateEnv{t: t, dir: dir, paths: paths, m: vm.NewManager(s)}
	e.m.Accel = "tcg"
	q, r := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "data.raw")
	if err := disk.Create(q, disk.CreateOptions{Format: disk.FormatQcow2, Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := disk.Create(r, disk.CreateOptions{Format: disk.FormatRaw, Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	e.base = &config.VM{
		Name: "base", Memory: 128 << 20, CPUs: 2, Kernel: "/boot/vmlinuz-test", Append: "console=ttyS0",
		Disks: []config.Disk{{Path: q, Format: disk.FormatQcow2}, {Path: r}},
		Networks: []config.Network{
			{Type: config.NetUser, HostFwd: []string{"tcp::2222-:22", "udp:127.0.0.1:5353-:53", "tcp::8080-:80"}, MAC: "52:54:00:12:34:56"},
			{Type: config.NetBridge, Bridge: "br0", MAC: "52:54:00:12:34:57"},
		},
	}
	if err := s.Create(e.base); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *templateEnv) instance(name string, opts vm.InstanceOptions) (*config.VM, []string) {
	e.t.Helper()
	def, notes, err := e.m.CreateInstance(context.Background(), "base", name, opts)
	if err != nil {
		e.t.Fatalf("create instance %s: %v", name, err)
	}
	return def, notes
}

func TestInstanceInheritsAndOverlays(t *testing.T) {
	qemuimg.Require(t)
	e := newTemplateEnv(t)
	app := "console=ttyS0 quiet"
	def, notes := e.instance("web1", vm.InstanceOptions{Memory: 256 << 20, Append: &app, Ports: []vm.PortMap{{Host: 2223, Guest: 22}}})

	// What is read back from the store is what was made.
	got, err := e.m.Store().Lookup("web1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != def.ID || got.ID == e.base.ID {
		t.Errorf("id %d (returned %d), template's %d", got.ID, def.ID, e.base.ID)
	}
	if got.Template != "base" || got.Memory != 256<<20 || got.CPUs != 2 || got.Kernel != e.base.Kernel || got.Append != app {
		t.Errorf("instance: %+v", got)
	}
	dir := e.paths.InstanceDisksDir("web1")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("disk directory %s: %v, mode %v; want 0700", dir, err, fi.Mode())
	}
	if len(got.Disks) != 2 {
		t.Fatalf("disks %+v", got.Disks)
	}
	for i, d := range got.Disks {
		if want := filepath.Join(dir, vm.InstanceDiskName(i)); d.Path != want || d.Format != disk.FormatQcow2 {
			t.Errorf("disks[%d] = %+v, want a qcow2 overlay at %s", i, d, want)
		}
		info := qemuimg.ImageInfo(t, d.Path)
		base := e.base.Disks[i].Path
		if info.Format != "qcow2" || info.BackingFilename != base || info.VirtualSize != map[int]int64{0: 16 << 20, 1: 8 << 20}[i] {
			t.Errorf("disks[%d]: qemu-img info %+v, want a qcow2 overlay on %s of its size", i, info, base)
		}
		wantFormat := map[int]string{0: "qcow2", 1: "raw"}[i]
		if info.BackingFormat != wantFormat {
			t.Errorf("disks[%d]: backing format %q, want %q", i, info.BackingFormat, wantFormat)
		}
		qemuimg.RequireClean(t, d.Path, false)
	}
	if len(got.Networks) != 2 {
		t.Fatalf("networks %+v", got.Networks)
	}
	if n := got.Networks[0]; n.MAC != "" || !slices.Equal(n.HostFwd, []string{"tcp::2223-:22"}) {
		t.Errorf("user network %+v: want no MAC and only the forward to port 22, from 2223", n)
	}
	if n := got.Networks[1]; n.MAC != "" || n.Type != config.NetBridge || n.Bridge != "br0" {
		t.Errorf("bridged network %+v: want br0 with no MAC", n)
	}
	if len(notes) != 2 || !strings.Contains(notes[0], "udp:127.0.0.1:5353-:53") || !strings.Contains(notes[1], "-p HOSTPORT:80") {
		t.Errorf("notes %q: want the forwards to 53 and 80 said to be left out", notes)
	}
	// The template is as it was.
	if tpl, err := e.m.Store().Lookup("base"); err != nil || tpl.Template != "" || len(tpl.Networks[0].HostFwd) != 3 || tpl.Networks[0].MAC == "" {
		t.Errorf("template after: %+v, %v", tpl, err)
	}
	// A second instance gets its own ID and overlays.
	def2, _ := e.instance("web2", vm.InstanceOptions{Disks: []config.Disk{}})
	if def2.ID == def.ID || len(def2.Disks) != 0 {
		t.Errorf("web2: %+v", def2)
	}
	if insts, err := e.m.Instances("base"); err != nil || !slices.Equal(insts, []string{"web1", "web2"}) {
		t.Errorf("instances of base: %q, %v", insts, err)
	}
	// Status names the template.
	st, _, err := e.m.Status(context.Background(), "web1")
	if err != nil || st.Template != "base" {
		t.Errorf("status %+v, %v", st, err)
	}
}

func TestInstanceRefusals(t *testing.T) {
	e := newTemplateEnv(t)
	ctx := context.Background()
	defsBefore := func() []string {
		list, err := e.m.Store().List()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range list {
			names = append(names, d.Name)
		}
		return names
	}
	before := defsBefore()
	for _, c := range []struct {
		what, template, name string
		opts                 vm.InstanceOptions
		want                 string
	}{
		{"no template", "nosuch", "i1", vm.InstanceOptions{}, "invalid template: nosuch: vm not found"},
		{"itself", "base", "base", vm.InstanceOptions{}, "instance of itself"},
		{"name taken", "base", "base2", vm.InstanceOptions{}, ""}, // made below, then taken
		{"unforwarded port", "base", "i2", vm.InstanceOptions{Ports: []vm.PortMap{{Host: 9000, Guest: 9}}}, "forwards no port to guest port 9"},
		{"ports with networks", "base", "i3", vm.InstanceOptions{Networks: []config.Network{{Type: config.NetUser}}, Ports: []vm.PortMap{{Host: 1, Guest: 22}}}, "-p gives host ports"},
		{"a number", "base", "42", vm.InstanceOptions{}, "all digits"},
	} {
		if c.want == "" {
			continue
		}
		_, _, err := e.m.CreateInstance(ctx, c.template, c.name, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.what, err, c.want)
		}
	}
	if after := defsBefore(); !slices.Equal(after, before) {
		t.Errorf("definitions after refusals %q, want %q", after, before)
	}
	if _, err := os.Stat(filepath.Join(e.paths.StateDir, "disks")); err == nil {
		if ents, _ := os.ReadDir(filepath.Join(e.paths.StateDir, "disks")); len(ents) > 0 {
			t.Errorf("disk directories left: %v", ents)
		}
	}

	// A name that is taken: the definition that has it is untouched, and
	// no overlay is made.
	other := &config.VM{Name: "taken", Kernel: "/boot/k"}
	if err := e.m.Store().Create(other); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.m.CreateInstance(ctx, "base", "taken", vm.InstanceOptions{}); !errors.Is(err, store.ErrExists) {
		t.Errorf("instance over an existing vm: %v, want ErrExists", err)
	}
	if got, err := e.m.Store().Lookup("taken"); err != nil || got.Template != "" || got.ID != other.ID {
		t.Errorf("existing vm after: %+v %v", got, err)
	}
	if _, err := os.Stat(e.paths.InstanceDisksDir("taken")); err == nil {
		t.Errorf("overlays made for a vm that exists")
	}

	// An overlay path that exists already: refused, and the definition
	// is removed again.
	stale := e.paths.InstanceDisksDir("stale")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, vm.InstanceDiskName(1)), []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.m.CreateInstance(ctx, "base", "stale", vm.InstanceOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("instance over a stale overlay: %v", err)
	}
	if _, err := e.m.Store().Lookup("stale"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("definition left after a failed instance: %v", err)
	}
	if _, err := os.Stat(filepath.Join(stale, vm.InstanceDiskName(0))); err == nil {
		t.Errorf("overlay left after a failed instance")
	}
	if b, _ := os.ReadFile(filepath.Join(stale, vm.InstanceDiskName(1))); string(b) != "not ours" {
		t.Errorf("a file vmtui did not make was touched: %q", b)
	}

	// A template with instances neither starts nor is removed; the
	// errors name the instances.
	e.instance("web1", vm.InstanceOptions{})
	e.instance("web2", vm.InstanceOptions{})
	if _, err := e.m.Start(ctx, e.base, vm.StartOptions{}); !errors.Is(err, vm.ErrTemplateInUse) ||
		!strings.Contains(err.Error(), "start vm base: vm base is the template of web1 and web2") {
		t.Errorf("start of a template: %v", err)
	}
	if _, err := e.m.Remove(ctx, e.base); !errors.Is(err, vm.ErrTemplateInUse) ||
		!strings.Contains(err.Error(), "remove base: vm base is the template of web1 and web2") {
		t.Errorf("remove of a template: %v", err)
	}
	if _, err := e.m.Store().Lookup("base"); err != nil {
		t.Errorf("template after a refused remove: %v", err)
	}
	for _, d := range e.base.Disks {
		if _, err := os.Stat(d.Path); err != nil {
			t.Errorf("template disk: %v", err)
		}
	}
}

func TestInstanceRemove(t *testing.T) {
	qemuimg.Require(t)
	e := newTemplateEnv(t)
	ctx := context.Background()
	web1, _ := e.instance("web1", vm.InstanceOptions{})
	web2, _ := e.instance("web2", vm.InstanceOptions{})
	dir1 := e.paths.InstanceDisksDir("web1")
	if _, err := e.m.Remove(ctx, web1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("web1's overlays after its removal: %v", err)
	}
	for _, d := range web2.Disks {
		qemuimg.RequireClean(t, d.Path, false)
	}
	qemuimg.RequireClean(t, e.base.Disks[0].Path, false)
	// One instance left: still refused.
	if _, err := e.m.Remove(ctx, e.base); !errors.Is(err, vm.ErrTemplateInUse) || !strings.Contains(err.Error(), "template of web2:") {
		t.Errorf("remove of a template with one instance: %v", err)
	}
	if _, err := e.m.Remove(ctx, web2); err != nil {
		t.Fatal(err)
	}
	// No instance: the template is a VM like any other again.
	if _, err := e.m.Remove(ctx, e.base); err != nil {
		t.Errorf("remove of a template without instances: %v", err)
	}
	for _, d := range e.base.Disks {
		if _, err := os.Stat(d.Path); err != nil {
			t.Errorf("template disk after its removal (disks are kept): %v", err)
		}
	}
}

// TestInstanceExclusiveDevices: a fixed vsock CID and host devices belong
// to one guest: the instance keeps vsock with a CID chosen at start, and
// no host device; notes say so.
func TestInstanceExclusiveDevices(t *testing.T) {
	e := newTemplateEnv(t)
	e.base.CID = 42
	e.base.HostDevs = []config.HostDev{{Address: "0000:00:1f.2"}}
	if err := e.m.Store().Save(e.base); err != nil {
		t.Fatal(err)
	}
	def, notes := e.instance("web1", vm.InstanceOptions{Disks: []config.Disk{}})
	if def.CID != 0 || !def.HasVsock() || len(def.HostDevs) != 0 {
		t.Errorf("instance: cid %d, vsock %t, hostdevs %v; want no cid, vsock, no hostdevs", def.CID, def.HasVsock(), def.HostDevs)
	}
	all := strings.Join(notes, "\n")
	if !strings.Contains(all, "vsock cid 42 of template base not copied") || !strings.Contains(all, "host devices 0000:00:1f.2 of template base not copied") {
		t.Errorf("notes:\n%s", all)
	}
}
