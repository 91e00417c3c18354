package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestDiskWritesOfSavedVM: the disk commands that write an image refuse
// one that a saved VM uses, its disk or an image in its backing chain
// (commit writes the overlay's backing file), naming the VM and how to go
// on; other images, and the same once the saved state is gone, are
// written. (A real saved guest: vm's TestSavedVMDisksKept.)
func TestDiskWritesOfSavedVM(t *testing.T) {
	qemuimg.Require(t)
	home, dir := t.TempDir(), t.TempDir()
	base, top, other := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "web.qcow2"), filepath.Join(dir, "other.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", base, "8M")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", other)
	snapshotCLI(t, home, dir, 0, "define", "-d", top, "web")
	snapshotCLI(t, home, dir, 0, "disk", "snapshot", "-c", "s", top)
	saved := store.HomePaths(home).SavedStateFile("web")
	if err := os.MkdirAll(filepath.Dir(saved), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"disk", "resize", top, "+1M"},
		{"disk", "resize", base, "+1M"},
		{"disk", "commit", top},
		{"disk", "commit", other}, // other's backing file is web's too
		{"disk", "snapshot", "-a", "s", top},
	} {
		_, errOut := snapshotCLI(t, home, dir, 1, args...)
		for _, want := range []string{"is used by saved vm web", "vmtui start web", "vmtui start --fresh web"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("vmtui %q: stderr %q, want it to say %q", args, errOut, want)
			}
		}
	}
	// Not web's: written.
	snapshotCLI(t, home, dir, 0, "disk", "resize", other, "+1M")
	if err := os.Remove(saved); err != nil {
		t.Fatal(err)
	}
	snapshotCLI(t, home, dir, 0, "disk", "resize", top, "+1M")
	snapshotCLI(t, home, dir, 0, "disk", "commit", top)
	snapshotCLI(t, home, dir, 0, "disk", "snapshot", "-a", "s", top)
	qemuimg.RequireClean(t, top, false)
}
