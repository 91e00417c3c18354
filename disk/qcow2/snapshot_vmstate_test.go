package qcow2_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
)

// monitor runs QEMU (paused, no guest) on the qcow2 image at path and
// gives its human monitor the commands; it fails the test if the monitor
// reports an error.
func monitor(t *testing.T, qemu, path string, cmds ...string) {
	t.Helper()
	cmd := exec.Command(qemu, "-M", "pc", "-m", "64", "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
		"-drive", "file="+strings.ReplaceAll(path, ",", ",,")+",if=none,id=d0,format=qcow2", "-monitor", "stdio")
	cmd.Stdin = strings.NewReader(strings.Join(append(cmds, "quit"), "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(bytes.ToLower(out), []byte("error")) {
		t.Fatalf("qemu %v: %v\n%s", cmds, err, out)
	}
}

// TestSnapshotWithVMState: a snapshot QEMU saved with the VM's state
// (savevm) is listed with its size, applied (the disk only) and deleted by
// the engine, with QEMU able to load it after the engine's changes.
func TestSnapshotWithVMState(t *testing.T) {
	qemuimg.Require(t)
	qemu := testguest.QEMU(t)
	path := filepath.Join(t.TempDir(), "vm.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", path, fmt.Sprint(snapDisk))
	qemuimg.IO(t, path, "qcow2", "write -P 5 0 1M")
	monitor(t, qemu, path, "savevm vm1")
	qemuimg.IO(t, path, "qcow2", "write -P 6 0 512k")

	img := openImage(t, path, false)
	sns, err := img.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	if len(sns) != 1 || sns[0].Name != "vm1" || sns[0].VMStateSize == 0 || sns[0].ICount != -1 {
		t.Fatalf("snapshots %+v", sns)
	}
	if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: "mine"}); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("vm1"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, img); got[0] != 5 || got[1<<20] != 0 {
		t.Fatalf("after applying vm1: %#x %#x", got[0], got[1<<20])
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, path, false)
	monitor(t, qemu, path, "loadvm vm1")
	qemuimg.RequireClean(t, path, false)

	img = openImage(t, path, false)
	if err := img.DeleteSnapshot("vm1"); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("mine"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, img); got[0] != 6 || got[512<<10] != 5 {
		t.Fatalf("after applying mine: %#x %#x", got[0], got[512<<10])
	}
	if err := img.DeleteSnapshot("mine"); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, path, false)
}
