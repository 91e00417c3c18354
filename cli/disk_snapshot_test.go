package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestDiskSnapshot: vmtui disk snapshot as qemu-img snapshot: the same list,
// snapshots that qemu-img sees, applies and checks clean; usage errors.
func TestDiskSnapshot(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "d.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", img, "4M")
	run := func(wantCode int, args ...string) (string, string) {
		t.Helper()
		// -a asks the state root for saved VMs (disk.RefuseSaved).
		code, out, errOut := runIn(t, dir, func() (*store.Paths, error) { return store.HomePaths(dir), nil }, append([]string{"disk", "snapshot"}, args...)...)
		if code != wantCode {
			t.Fatalf("vmtui disk snapshot %q: exit %d, want %d\nstdout %q\nstderr %q", args, code, wantCode, out, errOut)
		}
		return out, errOut
	}
	if out, _ := run(0, "-l", img); out != "" {
		t.Errorf("list of an image without snapshots: %q", out)
	}
	qemuimg.IO(t, img, "qcow2", "write -P 1 0 64k")
	run(0, "-c", "first", img)
	qemuimg.IO(t, img, "qcow2", "write -P 2 0 64k")
	qemuimg.Run(t, "snapshot", "-c", "second", img)
	out, _ := run(0, img)
	if want := qemuimg.Run(t, "snapshot", "-l", img); out != want {
		t.Errorf("list:\ngot\n%s\nwant\n%s", out, want)
	}
	if _, errOut := run(1, "-c", "second", img); !strings.Contains(errOut, `a snapshot named "second" exists already`) {
		t.Errorf("duplicate tag: %q", errOut)
	}
	run(0, "-a", "first", img)
	qemuimg.IO(t, img, "qcow2", "read -P 1 0 64k")
	qemuimg.RequireClean(t, img, false)
	if _, errOut := run(1, "-d", "nope", img); !strings.Contains(errOut, "snapshot not found") {
		t.Errorf("delete of a missing tag: %q", errOut)
	}
	run(0, "-d", "1", img)
	run(0, "-d", "second", img)
	qemuimg.RequireClean(t, img, false)
	if out := qemuimg.Run(t, "snapshot", "-l", img); out != "" {
		t.Errorf("qemu-img lists %q after deleting all", out)
	}
	for _, args := range [][]string{{"-l", "-c", "x", img}, {"-c", "", img}, {"-U", "-d", "x", img}, {}, {img, img}} {
		if _, errOut := run(1, args...); !strings.Contains(errOut, "usage:\tvmtui disk snapshot") {
			t.Errorf("%q: stderr %q, want the usage", args, errOut)
		}
	}
}
