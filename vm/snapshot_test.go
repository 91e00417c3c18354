package vm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// Tests of VM snapshots with real guests: a running guest's RAM and disks
// come back on revert, a stopped VM's disks are snapshotted by vmtui's
// engine, and qemu-img agrees with what vmtui lists after every operation.

// defineWithDisks defines a test guest with qcow2 (or other) disks of
// 16 MiB, made by qemu-img in the test's directory, and returns it and the
// disks' paths.
func (e *guestEnv) defineWithDisks(name string, formats ...string) (*config.VM, []string) {
	e.t.Helper()
	qemuimg.Require(e.t)
	def := &config.VM{
		Name: name, Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
	}
	var paths []string
	for i, f := range formats {
		p := filepath.Join(e.home, fmt.Sprintf("%s-%d.%s", name, i, f))
		qemuimg.Run(e.t, "create", "-q", "-f", f, p, "16M")
		def.Disks = append(def.Disks, config.Disk{Path: p})
		paths = append(paths, p)
	}
	if err := e.m.Store().Create(def); err != nil {
		e.t.Fatalf("define %s: %v", name, err)
	}
	return def, paths
}

// ctx returns a context bounded by opTimeout.
func (e *guestEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	e.t.Cleanup(cancel)
	return ctx
}

// Commands that set and read a value in RAM (a file of the initramfs's
// tmpfs) and one on the first sector of the first virtio disk, bypassing
// the guest's page cache on the read.
func setCmd(v string) string {
	return fmt.Sprintf("echo ram-%s >/tmp/v; echo disk-%s | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null", v, v)
}

const getCmd = `sync; echo 3 >/proc/sys/vm/drop_caches; echo "ram=$(cat /tmp/v) disk=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1)"`

var valuesRE = regexp.MustCompile(`ram=(\S*) disk=(\S*)\n`)

// values returns the guest's RAM and disk values.
func (sh *guestShell) values() (ram, dsk string) {
	sh.e.t.Helper()
	out := sh.output(getCmd)
	m := valuesRE.FindAllStringSubmatch(out, -1)
	if m == nil {
		sh.e.t.Fatalf("vm %s: no values in %q", sh.name, out)
	}
	last := m[len(m)-1]
	return last[1], last[2]
}

func (sh *guestShell) requireValues(what, v string) {
	sh.e.t.Helper()
	ram, dsk := sh.values()
	if ram != "ram-"+v || dsk != "disk-"+v {
		sh.e.t.Fatalf("%s: the guest has %s and %s, want ram-%s and disk-%s", what, ram, dsk, v, v)
	}
}

// requireAgree fails the test unless qemu-img check finds every image
// clean, leaks included, and qemu-img info lists on each image the tags
// Snapshots lists, with the VM state (on the first disk) when Snapshots
// says so. With sh, the images are a running VM's, read sharing them (-U),
// once the guest has flushed its disks: until QEMU flushes its metadata
// caches, the images on disk may show leaks (the old L2 table of the VM
// state that QEMU dropped from the active state after a snapshot, say).
func (e *guestEnv) requireAgree(def *config.VM, paths []string, sh *guestShell) []vm.Snapshot {
	e.t.Helper()
	shared := sh != nil
	if shared {
		for i := range paths {
			sh.output(fmt.Sprintf("dd if=/dev/null of=/dev/vd%c conv=notrunc,fsync 2>/dev/null", 'a'+i))
		}
	}
	sns, err := e.m.Snapshots(e.ctx(), def)
	if err != nil {
		e.t.Fatalf("snapshots: %v", err)
	}
	for i, p := range paths {
		check := []string{"check", "-f", "qcow2"}
		info := []string{"info", "--output=json"}
		if shared {
			check = append(check, "-U")
			info = append(info, "-U")
		}
		if out, err := qemuimg.Output(append(check, p)...); err != nil || !strings.Contains(out, "No errors were found") {
			e.t.Fatalf("qemu-img check %s: %v\n%s", p, err, out)
		}
		var got struct {
			Snapshots []struct {
				ID          string `json:"id"`
				Name        string `json:"name"`
				VMStateSize int64  `json:"vm-state-size"`
			} `json:"snapshots"`
		}
		out := qemuimg.Run(e.t, append(info, p)...)
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			e.t.Fatalf("qemu-img info %s: %v", p, err)
		}
		ok := len(got.Snapshots) == len(sns)
		for j := 0; ok && j < len(sns); j++ {
			g := got.Snapshots[j]
			ok = g.Name == sns[j].Tag && (i > 0 || g.ID == sns[j].ID && g.VMStateSize == sns[j].VMStateSize)
		}
		if !ok {
			e.t.Fatalf("disk %s: qemu-img lists %+v, vmtui %+v", p, got.Snapshots, sns)
		}
	}
	return sns
}

// TestSnapshotRunningGuest: a running guest's RAM and disk come back on
// revert, and what it wrote after the snapshot is gone; a paused guest
// stays paused through a snapshot and a revert; tags that exist or do not
// are refused; and once stopped, the VM reverted to a snapshot with RAM
// starts at that instant, without booting. One guest.
func TestSnapshotRunningGuest(t *testing.T) {
	e := newGuestEnv(t)
	def, paths := e.defineWithDisks("snap", "qcow2", "qcow2")
	e.start(def, vm.StartOptions{})
	e.waitSerial("snap", testguest.Banner, testguest.BootTimeout)
	sh := e.shell("snap", e.status(e.m, "snap").TTY)
	sh.output(setCmd("A"))
	sh.output("echo disk1-A | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null")

	created := time.Now().Truncate(time.Second) // the table keeps whole seconds
	if err := e.m.CreateSnapshot(e.ctx(), def, "s1"); err != nil {
		t.Fatalf("create: %v", err)
	}
	if st := e.status(e.m, "snap"); st.State != vm.StateRunning {
		t.Fatalf("after the snapshot the vm is %s, want running", st.State)
	}
	sns := e.requireAgree(def, paths, sh)
	if len(sns) != 1 || sns[0].Tag != "s1" || sns[0].ID != "1" || sns[0].VMStateSize == 0 || sns[0].VMClock == 0 ||
		sns[0].Date.Before(created) || sns[0].Date.After(time.Now()) {
		t.Fatalf("snapshots: %+v", sns)
	}

	sh.output(setCmd("B"))
	sh.output("echo disk1-B | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null")
	sh.requireValues("before the revert", "B")
	if err := e.m.RevertSnapshot(e.ctx(), def, "s1"); err != nil {
		t.Fatalf("revert: %v", err)
	}
	if st := e.status(e.m, "snap"); st.State != vm.StateRunning {
		t.Fatalf("after the revert the vm is %s, want running", st.State)
	}
	sh.requireValues("after the revert", "A")
	if out := sh.output("dd if=/dev/vdb bs=512 count=1 2>/dev/null | head -n 1"); !strings.Contains(out, "disk1-A\n") {
		t.Fatalf("second disk after the revert: %q", out)
	}
	e.requireAgree(def, paths, sh)

	// Tags that exist, or do not.
	if err := e.m.CreateSnapshot(e.ctx(), def, "s1"); !errors.Is(err, vm.ErrSnapshotExists) || !strings.Contains(err.Error(), `"s1" of vm snap`) {
		t.Errorf("create of an existing tag: %v", err)
	}
	for _, op := range []func(context.Context, *config.VM, string) error{e.m.RevertSnapshot, e.m.DeleteSnapshot} {
		if err := op(e.ctx(), def, "nope"); !errors.Is(err, vm.ErrSnapshotNotFound) || !strings.Contains(err.Error(), `vm snap`) || !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("revert or delete of a missing tag: %v", err)
		}
	}

	// Paused: it stays paused.
	if err := e.m.Pause(e.ctx(), def); err != nil {
		t.Fatal(err)
	}
	if err := e.m.CreateSnapshot(e.ctx(), def, "s2"); err != nil {
		t.Fatalf("create while paused: %v", err)
	}
	if st := e.status(e.m, "snap"); st.State != vm.StatePaused {
		t.Fatalf("after a snapshot of a paused vm it is %s", st.State)
	}
	if err := e.m.RevertSnapshot(e.ctx(), def, "s1"); err != nil {
		t.Fatalf("revert while paused: %v", err)
	}
	if st := e.status(e.m, "snap"); st.State != vm.StatePaused {
		t.Fatalf("after a revert of a paused vm it is %s", st.State)
	}
	if err := e.m.Unpause(e.ctx(), def); err != nil {
		t.Fatal(err)
	}
	sh.requireValues("after the paused revert", "A")
	if err := e.m.DeleteSnapshot(e.ctx(), def, "s2"); err != nil {
		t.Fatalf("delete while running: %v", err)
	}
	if sns := e.requireAgree(def, paths, sh); len(sns) != 1 || sns[0].Tag != "s1" {
		t.Fatalf("after deleting s2: %+v", sns)
	}
	sh.output(setCmd("C"))

	// Stopped: a revert to s1 starts the guest at that instant.
	if err := e.m.Stop(e.ctx(), def, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	e.requireAgree(def, paths, nil)
	logLen := len(readFile(e.paths.SerialLog("snap")))
	if err := e.m.RevertSnapshot(e.ctx(), def, "s1"); err != nil {
		t.Fatalf("revert of the stopped vm: %v\nqemu log:\n%s", err, readFile(e.paths.QEMULog("snap")))
	}
	if st := e.status(e.m, "snap"); st.State != vm.StateRunning {
		t.Fatalf("after the revert of the stopped vm it is %s, want running", st.State)
	}
	sh.pty.Close()
	sh = e.shell("snap", e.status(e.m, "snap").TTY)
	sh.requireValues("after the revert of the stopped vm", "A")
	if log := readFile(e.paths.SerialLog("snap"))[logLen:]; strings.Contains(log, testguest.Banner) {
		t.Errorf("the guest booted instead of resuming from the snapshot:\n%s", log)
	}
	if err := e.m.Stop(e.ctx(), def, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteSnapshot(e.ctx(), def, "s1"); err != nil {
		t.Fatalf("delete of the stopped vm's snapshot: %v", err)
	}
	if sns := e.requireAgree(def, paths, nil); len(sns) != 0 {
		t.Fatalf("after deleting all: %+v", sns)
	}
	for _, p := range paths {
		qemuimg.RequireClean(t, p, false)
	}
}

// TestSnapshotStoppedDisks: a stopped VM's snapshots are disk-only, made
// by vmtui's engine on every disk, all or nothing; a revert brings back
// the disks' data; qemu-img agrees throughout; a raw disk and bad tags are
// refused. No guest boots.
func TestSnapshotStoppedDisks(t *testing.T) {
	e := newGuestEnv(t)
	def, paths := e.defineWithDisks("cold", "qcow2", "qcow2")
	for i, p := range paths {
		qemuimg.IO(t, p, "qcow2", fmt.Sprintf("write -P %d 0 64k", 1+i))
	}
	if err := e.m.CreateSnapshot(e.ctx(), def, "before upgrade"); err != nil {
		t.Fatal(err)
	}
	sns := e.requireAgree(def, paths, nil)
	if len(sns) != 1 || sns[0].Tag != "before upgrade" || sns[0].VMStateSize != 0 || sns[0].ID != "1" {
		t.Fatalf("snapshots: %+v", sns)
	}
	for _, p := range paths {
		qemuimg.IO(t, p, "qcow2", "write -P 9 0 64k", "write -P 9 1M 64k")
	}
	if err := e.m.RevertSnapshot(e.ctx(), def, "before upgrade"); err != nil {
		t.Fatal(err)
	}
	e.requireAgree(def, paths, nil)
	for i, p := range paths {
		qemuimg.IO(t, p, "qcow2", fmt.Sprintf("read -P %d 0 64k", 1+i), "read -P 0 1M 64k")
	}
	if st := e.status(e.m, "cold"); st.State != vm.StateStopped {
		t.Errorf("a revert to a disk-only snapshot left the vm %s", st.State)
	}

	// A saved VM (vmtui save): its state expects its disks as they are.
	saved := e.paths.SavedStateFile("cold")
	if err := os.MkdirAll(filepath.Dir(saved), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.m.RevertSnapshot(e.ctx(), def, "before upgrade"); err == nil || !strings.Contains(err.Error(), "saved state") {
		t.Errorf("revert of a saved vm: %v", err)
	}
	if err := os.Remove(saved); err != nil {
		t.Fatal(err)
	}

	// A template with an instance: its disks are the instance's base
	// images, so a revert is refused; a snapshot taken or deleted changes
	// only metadata, and is not.
	if _, _, err := e.m.CreateInstance(e.ctx(), "cold", "cold1", vm.InstanceOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.RevertSnapshot(e.ctx(), def, "before upgrade"); !errors.Is(err, vm.ErrTemplateInUse) || !strings.Contains(err.Error(), "cold1") {
		t.Errorf("revert of a template: %v", err)
	}
	if err := e.m.CreateSnapshot(e.ctx(), def, "tmp"); err != nil {
		t.Errorf("snapshot of a template: %v", err)
	}
	if err := e.m.DeleteSnapshot(e.ctx(), def, "tmp"); err != nil {
		t.Errorf("delete of a template's snapshot: %v", err)
	}
	inst, err := e.m.Store().Lookup("cold1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Remove(e.ctx(), inst); err != nil {
		t.Fatal(err)
	}
	for i, p := range paths {
		qemuimg.IO(t, p, "qcow2", fmt.Sprintf("read -P %d 0 64k", 1+i))
	}

	// All or nothing: the second disk is in use, so the first keeps no
	// snapshot.
	img, err := disk.Open(paths[1], disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = e.m.CreateSnapshot(e.ctx(), def, "half")
	img.Close()
	if err == nil || !strings.Contains(err.Error(), paths[1]) {
		t.Fatalf("create with the second disk in use: %v", err)
	}
	if sns := e.requireAgree(def, paths, nil); len(sns) != 1 {
		t.Fatalf("after a failed create: %+v", sns)
	}
	for _, p := range paths {
		if out := qemuimg.Run(t, "snapshot", "-l", p); strings.Contains(out, "half") {
			t.Fatalf("%s keeps the failed snapshot:\n%s", p, out)
		}
	}

	// A tag on one disk only is no snapshot of the VM, but it is taken.
	qemuimg.Run(t, "snapshot", "-c", "odd", paths[1])
	if sns := e.requireAgreeIgnoring(def, paths, "odd"); len(sns) != 1 {
		t.Fatalf("snapshots with a tag on one disk: %+v", sns)
	}
	if err := e.m.CreateSnapshot(e.ctx(), def, "odd"); !errors.Is(err, vm.ErrSnapshotExists) || !strings.Contains(err.Error(), paths[1]) {
		t.Errorf("create of a tag on the second disk: %v", err)
	}
	if err := e.m.RevertSnapshot(e.ctx(), def, "odd"); !errors.Is(err, vm.ErrSnapshotNotFound) {
		t.Errorf("revert to a tag on the second disk: %v", err)
	}
	if err := e.m.DeleteSnapshot(e.ctx(), def, "odd"); err != nil {
		t.Errorf("delete of a tag on the second disk: %v", err)
	}
	if err := e.m.DeleteSnapshot(e.ctx(), def, "before upgrade"); err != nil {
		t.Fatal(err)
	}
	if sns := e.requireAgree(def, paths, nil); len(sns) != 0 {
		t.Fatalf("after deleting all: %+v", sns)
	}
	for _, p := range paths {
		qemuimg.RequireClean(t, p, false)
	}

	// Tags.
	for _, tag := range []string{"", "a\nb", "tab\there", "12", " x", strings.Repeat("x", 256), "bad\xff"} {
		for _, op := range []func(context.Context, *config.VM, string) error{e.m.CreateSnapshot, e.m.RevertSnapshot, e.m.DeleteSnapshot} {
			if err := op(e.ctx(), def, tag); err == nil || !strings.Contains(err.Error(), "vm cold") || !strings.Contains(err.Error(), "tag") {
				t.Errorf("tag %q: %v", tag, err)
			}
		}
	}

	// A raw disk (and a qcow one) is refused, naming it and the conversion.
	for _, f := range []string{"raw", "qcow"} {
		def, paths := e.defineWithDisks("with-"+f, "qcow2", f)
		for _, op := range []func(context.Context, *config.VM, string) error{e.m.CreateSnapshot, e.m.RevertSnapshot, e.m.DeleteSnapshot} {
			err := op(e.ctx(), def, "x")
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", paths[1])) || !strings.Contains(err.Error(), "vmtui disk convert -O qcow2 "+paths[1]) {
				t.Errorf("%s disk: %v", f, err)
			}
		}
		if _, err := e.m.Snapshots(e.ctx(), def); err == nil || !strings.Contains(err.Error(), paths[1]) {
			t.Errorf("list with a %s disk: %v", f, err)
		}
		if out := qemuimg.Run(t, "snapshot", "-l", paths[0]); out != "" {
			t.Errorf("the qcow2 disk of a vm with a %s disk got a snapshot:\n%s", f, out)
		}
	}
}

// atOnce runs a and b at the same time and returns once both returned.
func atOnce(a, b func()) {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-gate
		a()
	}()
	go func() {
		defer wg.Done()
		<-gate
		b()
	}()
	close(gate)
	wg.Wait()
}

// requireAgreeIgnoring is requireAgree for images holding tag on some disks
// only: it checks them clean and returns what Snapshots lists.
func (e *guestEnv) requireAgreeIgnoring(def *config.VM, paths []string, tag string) []vm.Snapshot {
	e.t.Helper()
	for _, p := range paths {
		qemuimg.RequireClean(e.t, p, false)
	}
	sns, err := e.m.Snapshots(e.ctx(), def)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, sn := range sns {
		if sn.Tag == tag {
			e.t.Fatalf("Snapshots lists %q, which one disk lacks", tag)
		}
	}
	return sns
}

// TestSnapshotConcurrentStart runs a snapshot and a start of one stopped VM
// at once, from two Managers: they never interleave. Either the snapshot
// comes first (disk-only, by the engine) or the start does (then QEMU takes
// it, with RAM); both succeed and the images check clean. Then a snapshot
// and a remove: either the remove finds the vm running (it is) or ... it
// never removes a VM under a snapshot.
func TestSnapshotConcurrentStart(t *testing.T) {
	e := newGuestEnv(t)
	def, paths := e.defineWithDisks("race", "qcow2")
	var snapErr, startErr error
	m2 := e.newManager()
	atOnce(
		func() { snapErr = e.m.CreateSnapshot(e.ctx(), def, "raced") },
		func() { _, startErr = m2.Start(e.ctx(), def, vm.StartOptions{Paused: true}) },
	)
	if snapErr != nil || startErr != nil {
		t.Fatalf("snapshot: %v; start: %v", snapErr, startErr)
	}
	// The guest is paused (-S): it cannot flush; qemu-img lists what
	// vmtui does, and checks the images once QEMU has exited.
	sns, err := e.m.Snapshots(e.ctx(), def)
	if err != nil || len(sns) != 1 || sns[0].Tag != "raced" {
		t.Fatalf("snapshots: %+v, %v", sns, err)
	}
	if out := qemuimg.Run(t, "snapshot", "-l", "-U", paths[0]); !strings.Contains(out, "raced") {
		t.Fatalf("qemu-img snapshot -l:\n%s", out)
	}
	t.Logf("the snapshot holds %d bytes of vm state (0: it came first)", sns[0].VMStateSize)

	// A snapshot asked for while a start holds the VM's lock waits for it,
	// then is QEMU's, with RAM: never the engine's on disks QEMU opens.
	if err := e.m.Stop(e.ctx(), def, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		_, err := m2.Start(e.ctx(), def, vm.StartOptions{Paused: true})
		started <- err
	}()
	marker := e.paths.RuntimeFile("race", "starting")
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if len(started) > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := e.m.CreateSnapshot(e.ctx(), def, "after-start"); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	sns, err = e.m.Snapshots(e.ctx(), def)
	if err != nil || len(sns) != 2 || sns[1].Tag != "after-start" || sns[1].VMStateSize == 0 {
		t.Fatalf("snapshot after a start: %+v, %v", sns, err)
	}

	// A forced stop and a snapshot at once: the stop succeeds; the
	// snapshot either comes first (QEMU's, with RAM), or after (the
	// engine's, disk-only), or, if QEMU quits under it, fails saying so;
	// the image is never damaged.
	var stopErr error
	atOnce(
		func() { snapErr = e.m.CreateSnapshot(e.ctx(), def, "vs-stop") },
		func() { stopErr = m2.Stop(e.ctx(), def, vm.StopOptions{Force: true, Wait: true}) },
	)
	if stopErr != nil {
		t.Fatalf("stop: %v", stopErr)
	}
	sns, err = e.m.Snapshots(e.ctx(), def)
	if err != nil {
		t.Fatal(err)
	}
	listed := len(sns) == 3 && sns[2].Tag == "vs-stop"
	t.Logf("snapshot beside a stop: %v; listed: %v", snapErr, listed)
	if snapErr == nil && !listed || snapErr != nil && (listed || !strings.Contains(snapErr.Error(), "the vm stopped meanwhile")) {
		t.Fatalf("snapshot: %v; listed: %+v", snapErr, sns)
	}
	qemuimg.RequireClean(t, paths[0], true) // a QEMU that quit mid-save may leak clusters
	if listed {
		if err := e.m.DeleteSnapshot(e.ctx(), def, "vs-stop"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m2.Start(e.ctx(), def, vm.StartOptions{Paused: true}); err != nil {
		t.Fatal(err)
	}

	// Remove and delete at once: the remove is refused (the vm runs) and
	// the delete succeeds, whatever the order.
	var delErr, rmErr error
	atOnce(
		func() { delErr = e.m.DeleteSnapshot(e.ctx(), def, "raced") },
		func() { _, rmErr = m2.Remove(e.ctx(), def) },
	)
	if delErr != nil || !errors.Is(rmErr, vm.ErrRunning) {
		t.Fatalf("delete: %v; remove: %v", delErr, rmErr)
	}
	if err := e.m.Stop(e.ctx(), def, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}

	// Stopped: a remove and a snapshot at once. Either the snapshot comes
	// first and then the definition goes, or the remove does and the
	// snapshot finds no VM; its disks are untouched then.
	atOnce(
		func() { snapErr = e.m.CreateSnapshot(e.ctx(), def, "last") },
		func() { _, rmErr = m2.Remove(e.ctx(), def) },
	)
	if rmErr != nil {
		t.Fatalf("remove: %v", rmErr)
	}
	out := qemuimg.Run(t, "snapshot", "-l", paths[0])
	switch {
	case snapErr == nil && !strings.Contains(out, "last"):
		t.Fatalf("the snapshot succeeded but the disk has none:\n%s", out)
	case snapErr != nil && (!strings.Contains(snapErr.Error(), "not found") && !strings.Contains(snapErr.Error(), "no vm")):
		t.Fatalf("snapshot after the remove: %v", snapErr)
	case snapErr != nil && strings.Contains(out, "last"):
		t.Fatalf("the snapshot failed but the disk has one:\n%s", out)
	}
	qemuimg.RequireClean(t, paths[0], false)
}
