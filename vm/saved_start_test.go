package vm_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// TestStartOverSavedVMRefused: a VM whose guest would run over an image
// that a saved VM's state expects as it is does not start: its disk is the
// saved VM's, or an overlay of it, or the base image under it. The refusal
// names the saved VM and how to go on, and starts no QEMU. A VM on another
// overlay of that base starts, the saved VM itself is not refused by its
// own disks, and once its saved state is gone the overlay starts. (The
// saved state is a stand-in file, as in cli's TestDiskWritesOfSavedVM; a
// real saved guest: TestSavedVMDisksKept.)
func TestStartOverSavedVMRefused(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	qemuimg.Require(t)
	img := func(name, backing string) string {
		p := filepath.Join(e.home, name+".qcow2")
		args := []string{"create", "-q", "-f", "qcow2"}
		if backing != "" {
			args = append(args, "-b", backing, "-F", "qcow2")
		}
		qemuimg.Run(t, append(args, p, "16M")...)
		return p
	}
	base := img("base", "")
	top := img("web", base)
	over, sibling := img("over", top), img("sibling", base)
	define := func(name, path string) *config.VM {
		def := &config.VM{
			Name: name, Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
			Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
			Disks: []config.Disk{{Path: path}},
		}
		if err := e.m.Store().Create(def); err != nil {
			t.Fatalf("define %s: %v", name, err)
		}
		return def
	}
	web := define("web", top)
	saved := e.paths.SavedStateFile("web")
	if err := os.MkdirAll(filepath.Dir(saved), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ name, disk, named string }{
		{"same", top, top},    // it would write web's disk
		{"over", over, top},   // web's resume would write under it
		{"under", base, base}, // it would write web's backing file
	} {
		def := define(c.name, c.disk)
		st, err := e.m.Start(e.ctx(), def, vm.StartOptions{Paused: true})
		if err == nil {
			t.Errorf("start of vm %s on %s: started (state %s), want refused", c.name, filepath.Base(c.disk), st.State)
			continue
		}
		if !errors.Is(err, disk.ErrSavedVM) {
			t.Errorf("start of vm %s: error %v, want one matching disk.ErrSavedVM", c.name, err)
		}
		for _, want := range []string{"start vm " + c.name + ": ", fmt.Sprintf("%q is used by saved vm web", c.named),
			"vmtui start web", "vmtui start --fresh web"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("start of vm %s: error %q, want it to say %q", c.name, err, want)
			}
		}
		if st := e.status(e.m, c.name); st.State != vm.StateStopped || st.PID != 0 {
			t.Errorf("vm %s after the refused start: state %s, pid %d; want stopped", c.name, st.State, st.PID)
		}
	}

	// Another overlay of web's base image: web's state does not care.
	sib := define("sibling", sibling)
	e.start(sib, vm.StartOptions{Paused: true})
	if err := e.m.Stop(e.ctx(), sib, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}

	// web's own disks do not refuse its resume: the stand-in state does.
	if _, err := e.m.Start(e.ctx(), web, vm.StartOptions{}); err == nil || errors.Is(err, disk.ErrSavedVM) ||
		!strings.Contains(err.Error(), "resume vm web: saved state") {
		t.Errorf("resume of vm web from a stand-in state: error %v, want its saved state refused as unreadable", err)
	}
	if !e.m.HasSavedState("web") {
		t.Fatalf("the failed resume removed web's saved state")
	}

	// Not saved any more: the overlay starts.
	if err := os.Remove(saved); err != nil {
		t.Fatal(err)
	}
	overDef, err := e.m.Store().Lookup("over")
	if err != nil {
		t.Fatal(err)
	}
	e.start(overDef, vm.StartOptions{Paused: true})
}
