package vm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmtui/vmtui/config"
)

// TestSpecErrorsInStableOrder resolves a definition whose kernel and initrd
// are both missing, again and again: the kernel is reported every time.
func TestSpecErrorsInStableOrder(t *testing.T) {
	dir := t.TempDir()
	def := &config.VM{
		ID: 1, Name: "web", Memory: 64 << 20, CPUs: 1,
		Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"),
	}
	m := &Manager{}
	want := `could not find specified kernel "` + def.Kernel + `": no such file or directory`
	for i := range 100 {
		_, err := m.spec(def)
		if err == nil || err.Error() != want {
			t.Fatalf("run %d: got %v, want %s", i, err, want)
		}
	}
}

// TestCmdlineErrorsInStableOrder renders a spec whose kernel, initrd and
// kernel command line are all bad, again and again: the kernel is reported
// every time.
func TestCmdlineErrorsInStableOrder(t *testing.T) {
	s := Spec{Name: "web", Memory: 64 << 20, CPUs: 1, QMPFD: 3, Kernel: "/k\x00", Initrd: "/i\x00", Append: "a\nb"}
	const want = `vm web: kernel "/k\x00" contains a NUL or newline`
	for i := range 100 {
		_, err := Cmdline(s)
		if err == nil || err.Error() != want {
			t.Fatalf("run %d: got %v, want %s", i, err, want)
		}
	}
}

// TestSpecFreePageReporting: every guest reports its free pages, but one
// whose memory must stay put (locked, preallocated, or a host device's DMA
// target).
func TestSpecFreePageReporting(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Manager{}
	for _, tt := range []struct {
		name string
		mod  func(*config.VM)
		want bool
	}{
		{"plain", func(*config.VM) {}, true},
		{"shares", func(d *config.VM) { d.Shares = []config.Share{{Path: "/srv", Tag: "srv"}} }, true},
		{"max_memory", func(d *config.VM) { d.MaxMemory = 1 << 30 }, true},
		{"mlock", func(d *config.VM) { d.MLock = true }, false},
		{"prealloc", func(d *config.VM) { d.Prealloc = true }, false},
		{"hostdevs", func(d *config.VM) { d.HostDevs = []config.HostDev{{Address: "0000:01:00.0"}} }, false},
	} {
		def := &config.VM{ID: 1, Name: "web", Memory: 512 << 20, CPUs: 1, Kernel: kernel}
		tt.mod(def)
		s, err := m.spec(def)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if s.FreePageReporting != tt.want {
			t.Errorf("%s: FreePageReporting %v, want %v", tt.name, s.FreePageReporting, tt.want)
		}
	}
}
