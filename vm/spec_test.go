package vm

import (
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
