package vm_test

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// A running VM with a shared folder is refused send, save and a snapshot
// with its RAM before its guest is paused (QEMU 7.2 cannot migrate
// vhost-user-fs), and goes on running; stopped, its disks are snapshotted.
func TestShareStateNotSavable(t *testing.T) {
	vm.RequireVirtiofsd(t)
	qemuimg.Require(t)
	e := newGuestEnv(t)
	img := filepath.Join(e.home, "shared.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", img, "16M")
	def := &config.VM{
		Name: "shared", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
		Disks:  []config.Disk{{Path: img}},
		Shares: []config.Share{{Path: t.TempDir(), Tag: "data"}},
	}
	if err := e.m.Store().Create(def); err != nil {
		t.Fatal(err)
	}
	e.start(def, vm.StartOptions{})
	e.waitSerial("shared", testguest.Banner, testguest.BootTimeout)

	for what, err := range map[string]error{
		"send":     e.m.Send(e.ctx(), def, io.Discard, vm.SendOptions{}),
		"save":     e.m.Save(e.ctx(), def, vm.SendOptions{}),
		"snapshot": e.m.CreateSnapshot(e.ctx(), def, "before"),
	} {
		if !errors.Is(err, vm.ErrStateNotSavable) || !strings.Contains(err.Error(), "shared folders (virtio-fs: data)") {
			t.Errorf("%s of a running vm with a share: %v; want %v naming the share", what, err, vm.ErrStateNotSavable)
		}
	}
	if st := e.status(e.m, "shared"); st.State != vm.StateRunning {
		t.Errorf("after the refusals the vm is %s, want running", st.State)
	}
	if sns := qemuimg.Run(t, "snapshot", "-U", "-l", img); strings.Contains(sns, "before") {
		t.Errorf("a refused snapshot is in the image:\n%s", sns)
	}
	if err := e.m.Stop(e.ctx(), def, vm.StopOptions{Wait: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.CreateSnapshot(e.ctx(), def, "stopped"); err != nil {
		t.Errorf("a disk-only snapshot of the stopped vm: %v", err)
	}
}
