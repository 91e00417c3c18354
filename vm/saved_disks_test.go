package vm_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// TestSavedVMDisksKept: the disks of a saved VM are not changed under its
// saved state: vmtui disk resize and disk snapshot -a of one are refused,
// naming the VM and how to go on, and so is attaching one to another
// running VM; the image is unchanged and the VM resumes.
func TestSavedVMDisksKept(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def, paths := e.defineWithDisks("kept", "qcow2")
	img := paths[0]
	if r := e.run("disk", "snapshot", "-c", "before", img); r.code != 0 {
		t.Fatalf("disk snapshot -c: %s", r.stderr)
	}
	e.start(def, vm.StartOptions{})
	e.waitSerial("kept", testguest.Banner, testguest.BootTimeout)
	if err := e.m.Save(e.ctx(), def, vm.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	sum := sha256File(t, img)
	check := func(what, msg string) {
		t.Helper()
		for _, want := range []string{fmt.Sprintf("%q is used by saved vm kept", img), "vmtui start kept", "vmtui start --fresh kept"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s of a saved vm's disk: %q, want it to say %q", what, msg, want)
			}
		}
	}
	for _, args := range [][]string{{"disk", "resize", img, "+1M"}, {"disk", "snapshot", "-a", "before", img}} {
		r := e.run(args...)
		if r.code != 1 {
			t.Errorf("vmtui %q of a saved vm's disk: exit %d, stderr %q; want refused", args, r.code, r.stderr)
		}
		check(strings.Join(args[:2], " "), r.stderr)
	}

	other := e.define("other")
	e.start(other, vm.StartOptions{Paused: true})
	if _, err := e.m.AttachDisk(e.ctx(), other, img); err == nil {
		t.Errorf("attach of a saved vm's disk to another vm succeeded")
	} else {
		check("attach-disk", err.Error())
	}
	if got := sha256File(t, img); got != sum {
		t.Errorf("the saved vm's disk changed")
	}

	st, err := e.m.Start(e.ctx(), def, vm.StartOptions{})
	if err != nil || st.State != vm.StateRunning {
		t.Fatalf("resume: %v (state %s)", err, st.State)
	}
	if e.m.HasSavedState("kept") {
		t.Errorf("the saved state is left after the resume")
	}
	// Stopped and not saved, its disk may change again.
	if err := e.m.Stop(e.ctx(), def, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	if r := e.run("disk", "resize", img, "+1M"); r.code != 0 {
		t.Errorf("resize of a stopped vm's disk: exit %d, %q", r.code, r.stderr)
	}
}
