package vm_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// scriptArgs returns the extra_args attaching a disk that holds script,
// with the serial number the test guest runs a script from (see
// testguest.ScriptParam), and the kernel parameters that make it run it and
// power off.
func scriptArgs(t *testing.T, script string) (args []string, params []string) {
	t.Helper()
	text := []byte(script)
	text = append(text, make([]byte, 4096-len(text)%4096)...)
	path := filepath.Join(t.TempDir(), "script.raw")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{
			"-drive", "file=" + strings.ReplaceAll(path, ",", ",,") + ",format=raw,if=none,id=script,readonly=on",
			"-device", "virtio-blk-pci,drive=script,serial=vmtui-script",
		},
		[]string{testguest.ScriptParam + "vmtui-script", testguest.ScriptPoweroffParam}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestInstanceGuestWritesLeaveTemplate boots an instance whose guest
// overwrites its disk, an overlay on the template's: the guest reads back
// what it wrote, and the template's image is unchanged, byte for byte.
func TestInstanceGuestWritesLeaveTemplate(t *testing.T) {
	e := newGuestEnv(t)
	qemuimg.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*opTimeout)
	defer cancel()

	base := filepath.Join(e.home, "base.qcow2")
	if err := disk.Create(base, disk.CreateOptions{Format: disk.FormatQcow2, Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	qemuimg.IO(t, base, "qcow2", "write -P 0x5a 0 1M")
	sum := sha256File(t, base)

	// The guest finds the disk without a serial number (the template's),
	// checks it holds the template's data, overwrites its first MiB and
	// reads it back.
	args, params := scriptArgs(t, `
dev=
for d in /sys/block/vd*; do
	[ -z "$(cat $d/serial 2>/dev/null)" ] && dev=/dev/${d##*/}
done
[ -n "$dev" ] || { echo "no template disk"; exit 1; }
echo "template byte $(dd if=$dev bs=1 count=1 2>/dev/null | od -An -tx1 | tr -d ' ')"
dd if=/dev/zero bs=64k count=16 2>/dev/null | tr '\000' '\245' | dd of=$dev bs=64k conv=fsync 2>/dev/null
echo "instance byte $(dd if=$dev bs=1 skip=65536 count=1 2>/dev/null | od -An -tx1 | tr -d ' ')"
`)
	tpl := &config.VM{
		Name: "tpl", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd,
		Append:    strings.Join(append([]string{testguest.Cmdline}, params...), " "),
		Disks:     []config.Disk{{Path: base}},
		ExtraArgs: args,
	}
	if err := e.m.Store().Create(tpl); err != nil {
		t.Fatal(err)
	}
	inst, _, err := e.m.CreateInstance(ctx, "tpl", "clone", vm.InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.start(inst, vm.StartOptions{})
	log := e.waitSerial("clone", "vmtui script exit ", testguest.BootTimeout+time.Minute)
	if !strings.Contains(log, "template byte 5a") || !strings.Contains(log, "instance byte a5") || !strings.Contains(log, "vmtui script exit 0") {
		t.Fatalf("the guest's script:\n%s", log)
	}
	if err := e.m.Wait(ctx, inst); err != nil && !errors.Is(err, vm.ErrNotRunning) {
		t.Fatal(err)
	}
	if got := sha256File(t, base); got != sum {
		t.Errorf("template image changed: sha256 %s, was %s", got, sum)
	}
	qemuimg.RequireClean(t, base, false)
	overlay := inst.Disks[0].Path
	qemuimg.RequireClean(t, overlay, false)
	// What the guest wrote is in the overlay; the rest reads from the
	// template.
	qemuimg.IO(t, overlay, "qcow2", "read -P 0xa5 0 1M", "read -P 0 1M 3M")
	qemuimg.IO(t, base, "qcow2", "read -P 0x5a 0 1M")

	// The template stays refused while the instance exists; once it is
	// removed (and its overlay with it), the template boots again.
	if _, err := e.m.Start(ctx, tpl, vm.StartOptions{}); !errors.Is(err, vm.ErrTemplateInUse) {
		t.Errorf("start of the template: %v", err)
	}
	if _, err := e.m.Remove(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(overlay); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("overlay after the instance's removal: %v", err)
	}
}

// TestInstanceTemplateStartRace runs a start of a template and the
// creation of its instance at once, from two Managers (two vmtui
// processes): one of them wins, the other is refused, never both.
func TestInstanceTemplateStartRace(t *testing.T) {
	e := newGuestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*opTimeout)
	defer cancel()
	base := filepath.Join(e.home, "base.qcow2")
	if err := disk.Create(base, disk.CreateOptions{Format: disk.FormatQcow2, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	tpl := &config.VM{
		Name: "tpl", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline, Disks: []config.Disk{{Path: base}},
	}
	if err := e.m.Store().Create(tpl); err != nil {
		t.Fatal(err)
	}
	m2 := e.newManager()
	wins := map[string]int{}
	for round := range 4 {
		var wg sync.WaitGroup
		var startErr, instErr error
		var inst *config.VM
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, startErr = e.m.Start(ctx, tpl, vm.StartOptions{Paused: true})
		}()
		go func() {
			defer wg.Done()
			inst, _, instErr = m2.CreateInstance(ctx, "tpl", "clone", vm.InstanceOptions{})
		}()
		wg.Wait()
		switch {
		case startErr == nil && instErr == nil:
			t.Fatalf("round %d: the template started and its instance was made", round)
		case startErr == nil:
			if !strings.Contains(instErr.Error(), "template tpl is running") {
				t.Errorf("round %d: instance refused with %v", round, instErr)
			}
			if _, err := e.m.Store().Lookup("clone"); err == nil {
				t.Errorf("round %d: refused instance defined", round)
			}
			wins["start"]++
			if err := e.m.Stop(ctx, tpl, vm.StopOptions{Force: true, Wait: true}); err != nil {
				t.Fatal(err)
			}
		case instErr == nil:
			if !errors.Is(startErr, vm.ErrTemplateInUse) {
				t.Errorf("round %d: start refused with %v", round, startErr)
			}
			if st := e.status(e.m, "tpl"); st.Running() {
				t.Errorf("round %d: template running beside its instance", round)
			}
			wins["instance"]++
			if _, err := m2.Remove(ctx, inst); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("round %d: both refused: start %v; instance %v", round, startErr, instErr)
		}
	}
	t.Logf("wins: %v", wins)
}
