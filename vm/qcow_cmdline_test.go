package vm

import (
	"strings"
	"testing"
)

// TestCmdlineQcowDisk: a qcow (version 1) disk is given to QEMU with
// driver=qcow.
func TestCmdlineQcowDisk(t *testing.T) {
	s := Spec{Name: "x", Memory: 64 << 20, CPUs: 1, QMPFD: 3, Disks: []DiskSpec{{Path: "/d/old.qcow", Format: "qcow"}}}
	args, err := Cmdline(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(args, " "), "driver=qcow,node-name=disk0,file=disk0-file") {
		t.Fatalf("no qcow blockdev in %q", args)
	}
}
