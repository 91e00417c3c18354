package vm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// Guest tests of live changes: memory that grows (and shrinks) while the
// guest runs, and disks attached and detached, each seen from inside the
// guest through its serial shell.

// memTotal returns the guest's MemTotal in bytes.
func (g *guestShell) memTotal() int64 {
	g.e.t.Helper()
	out := g.run("grep MemTotal /proc/meminfo")
	f := strings.Fields(out)
	if len(f) != 3 || f[2] != "kB" {
		g.e.t.Fatalf("vm %s: MemTotal line %q", g.name, out)
	}
	kb, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		g.e.t.Fatal(err)
	}
	return kb << 10
}

// TestSetMemory: vmtui set -m grows a running guest's memory through
// virtio-mem, which the guest sees in MemTotal and --list in MAXMEM, and
// shrinks it again; sizes beyond max_memory, below memory or not a whole
// number of blocks are refused, as is a VM that is not running.
func TestSetMemory(t *testing.T) {
	e := newGuestEnv(t)
	// 256M: the cloud kernel does not boot in 128M with a hotplug region.
	// online_movable: hotplugged memory the guest can give back.
	def := &config.VM{
		Name: "mem", Memory: 256 << 20, MaxMemory: 768 << 20, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline + " memhp_default_state=online_movable",
	}
	if err := e.m.Store().Create(def); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := e.m.SetMemory(ctx, def, 512<<20); !errors.Is(err, vm.ErrNotRunning) {
		t.Errorf("SetMemory of a stopped vm: got %v, want ErrNotRunning", err)
	}
	st := e.start(def, vm.StartOptions{})
	g := e.shell("mem", st.TTY)
	before := g.memTotal()
	if got := e.status(e.m, "mem").MaxMem; got != 256<<20 {
		t.Errorf("MAXMEM before: %d, want %d", got, 256<<20)
	}

	for _, tc := range []struct{ size, want string }{
		{"1G", "set memory of vm mem: 1G is more than its max_memory, 768M"},
		{"128M", "set memory of vm mem: 128M is less than the memory it started with, 256M"},
		{"257M", "set memory of vm mem: 257M is not a whole number of 2M blocks above its memory, 256M"},
	} {
		r := e.run("set", "-m", tc.size, "mem")
		if r.code != 1 || r.stderr != "vmtui: "+tc.want+"\n" {
			t.Errorf("set -m %s: exit %d, stderr %q, want vmtui: %s", tc.size, r.code, r.stderr, tc.want)
		}
	}

	r := e.run("set", "-m", "512M", "mem")
	if r.code != 0 || !strings.Contains(r.stderr, "vm mem has 512M of memory") {
		t.Fatalf("set -m 512M: exit %d, stderr %q", r.code, r.stderr)
	}
	grown := g.waitFor("grep MemTotal /proc/meminfo", func(out string) bool {
		f := strings.Fields(out)
		kb, _ := strconv.ParseInt(f[len(f)-2], 10, 64)
		return kb<<10 >= before+256<<20
	}, "MemTotal grows by 256M")
	t.Logf("MemTotal %d kB, then %s", before>>10, grown)
	if got := e.status(e.m, "mem").MaxMem; got != 512<<20 {
		t.Errorf("MAXMEM after set -m 512M: %d, want %d", got, 512<<20)
	}
	list := e.run("--list")
	if !regexp.MustCompile(`(?m)^ +1 +\d+ +1 +512M .* mem$`).MatchString(list.stdout) {
		t.Errorf("--list after set -m 512M:\n%s", list.stdout)
	}
	if js := e.run("--list", "--json"); !strings.Contains(js.stdout, `"maxmem": 536870912,`) {
		t.Errorf("--list --json after set -m 512M:\n%s", js.stdout)
	}

	// Back down: online_movable memory can go.
	ms, err := e.m.SetMemory(ctx, def, 256<<20)
	if err != nil || ms.Current() != 256<<20 {
		t.Fatalf("SetMemory(256M): %+v, %v", ms, err)
	}
	g.waitFor("grep MemTotal /proc/meminfo", func(out string) bool {
		f := strings.Fields(out)
		kb, _ := strconv.ParseInt(f[len(f)-2], 10, 64)
		return kb<<10 < before+64<<20
	}, "MemTotal shrinks back")
}

// TestSetMemoryStall: a guest that onlines the memory it is given as
// ordinary (not movable) memory keeps some of it when asked to shrink:
// SetMemory then says how far it got, and the guest still has that much.
func TestSetMemoryStall(t *testing.T) {
	defer vm.SetMemoryStall(3 * time.Second)()
	e := newGuestEnv(t)
	def := &config.VM{
		Name: "keep", Memory: 256 << 20, MaxMemory: 512 << 20, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline + " memhp_default_state=online",
	}
	if err := e.m.Store().Create(def); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e.start(def, vm.StartOptions{})
	e.waitSerial("keep", testguest.Prompt, testguest.BootTimeout)
	if ms, err := e.m.SetMemory(ctx, def, 512<<20); err != nil || ms.Current() != 512<<20 {
		t.Fatalf("SetMemory(512M): %+v, %v", ms, err)
	}
	ms, err := e.m.SetMemory(ctx, def, 256<<20)
	switch {
	case err == nil:
		// Nothing the guest put in the plugged memory pinned it.
		t.Logf("the guest gave all of its plugged memory back")
	case !errors.Is(err, vm.ErrMemoryStalled):
		t.Fatalf("SetMemory(256M): %v, want ErrMemoryStalled or success", err)
	case ms.Current() <= 256<<20 || ms.Current() > 512<<20 || ms.Requested != 0:
		t.Errorf("SetMemory(256M) stalled at %+v", ms)
	case !strings.Contains(err.Error(), "set memory of vm keep to 256M: the guest stopped short of the size asked for: it has ") ||
		!strings.Contains(err.Error(), "it keeps memory it uses"):
		t.Errorf("SetMemory(256M): %v", err)
	default:
		t.Logf("%v", err)
		if got := e.status(e.m, "keep").MaxMem; got != ms.Current() {
			t.Errorf("MAXMEM %d, want what the guest kept, %d", got, ms.Current())
		}
	}
}

// TestAttachDisk: a disk attached to a running guest is seen by it, listed
// by status, refused a second time and to another VM (naming the VM that
// has it); detached, it is gone from the guest and unlocked; a disk of
// another VM's definition is refused naming that VM; a VM without
// max_memory cannot grow, and a stopped VM takes no disk. A VM that stops
// leaves no record of its attached disks.
func TestAttachDisk(t *testing.T) {
	e := newGuestEnv(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "data.qcow2")
	held := filepath.Join(dir, "held.raw")
	base := filepath.Join(dir, "base.raw")
	over := filepath.Join(dir, "over.qcow2")
	for _, p := range []struct {
		path, backing string
		f             disk.Format
	}{{img, "", disk.FormatQcow2}, {held, "", disk.FormatRaw}, {base, "", disk.FormatRaw}, {over, "base.raw", disk.FormatQcow2}} {
		if err := disk.Create(p.path, disk.CreateOptions{Format: p.f, Size: 64 << 20, BackingFile: p.backing}); err != nil {
			t.Fatal(err)
		}
	}
	a := e.define("a")
	b := &config.VM{Name: "b", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline, Disks: []config.Disk{{Path: held}, {Path: over}}}
	if err := e.m.Store().Create(b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := e.m.AttachDisk(ctx, a, img); !errors.Is(err, vm.ErrNotRunning) {
		t.Errorf("AttachDisk to a stopped vm: got %v, want ErrNotRunning", err)
	}
	st := e.start(a, vm.StartOptions{})
	// b only holds its disk: paused, it never runs.
	e.start(b, vm.StartOptions{Paused: true})
	g := e.shell("a", st.TTY)
	if out := g.run("ls /sys/block | grep -c vd"); out != "0" {
		t.Fatalf("virtio disks before attaching: %q", out)
	}

	r := e.run("attach-disk", "a", img)
	if r.code != 0 || r.stderr != "vmtui: attached "+img+" to vm a as hot0\n" {
		t.Fatalf("attach-disk: exit %d, stderr %q", r.code, r.stderr)
	}
	g.waitFor("cat /sys/block/vda/serial 2>/dev/null", func(out string) bool { return out == "hot0" }, "the attached disk appears")
	if out := g.run("dd if=/dev/vda bs=512 count=1 2>/dev/null | wc -c"); out != "512" {
		t.Errorf("read of the attached disk: %q bytes, want 512", out)
	}
	if got := e.status(e.m, "a").Attached; len(got) != 1 || got[0] != img {
		t.Errorf("status: attached %q, want %q", got, img)
	}
	if show := e.run("show", "a"); !strings.Contains(show.stdout, "\nattached "+img+" (until it stops)\n") {
		t.Errorf("show a: no attached disk in\n%s", show.stdout)
	}
	if _, err := e.m.AttachDisk(ctx, a, img); err == nil || !strings.Contains(err.Error(), "it is attached already, as hot0") {
		t.Errorf("AttachDisk again: %v", err)
	}
	if _, err := e.m.AttachDisk(ctx, b, img); err == nil || !strings.Contains(err.Error(), "in use by vm a") {
		t.Errorf("AttachDisk to b of a's disk: %v, want in use by vm a", err)
	}
	// b's disks: a raw one (refused by QEMU's locks), a qcow2 overlay
	// (refused before QEMU is asked) and its raw base (refused by QEMU,
	// named through b's backing chain).
	for _, p := range []string{held, over, base} {
		if _, err := e.m.AttachDisk(ctx, a, p); err == nil || !strings.Contains(err.Error(), "in use by vm b") {
			t.Errorf("AttachDisk of %s, b's: %v, want in use by vm b", filepath.Base(p), err)
		}
	}
	if _, err := e.m.SetMemory(ctx, a, 256<<20); err == nil || !strings.Contains(err.Error(), "set max_memory in its definition") {
		t.Errorf("SetMemory of a vm without max_memory: %v", err)
	}
	// A second disk goes into the next slot.
	second := filepath.Join(dir, "second.raw")
	if err := disk.Create(second, disk.CreateOptions{Format: disk.FormatRaw, Size: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	if d, err := e.m.AttachDisk(ctx, a, second); err != nil || d.Node != "hot1" || d.Port != "hp1" || d.Format != "raw" {
		t.Fatalf("AttachDisk of a second disk: %+v, %v; want hot1 on hp1, raw", d, err)
	}
	g.waitFor("cat /sys/block/vd*/serial 2>/dev/null | tr -d '\\n'", func(out string) bool { return out == "hot0hot1" }, "both disks are seen")
	// Paused, the guest could not release it.
	if err := e.m.Pause(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.DetachDisk(ctx, a, "hot1"); err == nil || !strings.Contains(err.Error(), "vm is paused: unpause it first") {
		t.Errorf("DetachDisk of a paused vm: %v", err)
	}
	if err := e.m.Unpause(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.DetachDisk(ctx, a, "hot1"); err != nil {
		t.Fatalf("DetachDisk by node: %v", err)
	}

	r = e.run("detach-disk", "a", img)
	if r.code != 0 || r.stderr != "vmtui: detached "+img+" from vm a\n" {
		t.Fatalf("detach-disk: exit %d, stderr %q", r.code, r.stderr)
	}
	g.waitFor("ls /sys/block | grep -c vd", func(out string) bool { return out == "0" }, "the detached disk goes")
	im, err := disk.Open(img, disk.OpenOptions{})
	if err != nil {
		t.Errorf("open the detached image for writing: %v", err)
	} else {
		im.Close()
	}
	if got := e.status(e.m, "a").Attached; len(got) != 0 {
		t.Errorf("status after detach: attached %q", got)
	}
	if _, err := e.m.DetachDisk(ctx, a, img); err == nil || !strings.Contains(err.Error(), "no disk is attached to the vm") {
		t.Errorf("DetachDisk again: %v", err)
	}

	// Attached again, then the vm stops: no record is left.
	if _, err := e.m.AttachDisk(ctx, a, img); err != nil {
		t.Fatal(err)
	}
	g.waitFor("cat /sys/block/vda/serial 2>/dev/null", func(out string) bool { return out == "hot0" }, "the disk attached again appears")
	if err := e.m.Stop(ctx, a, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.paths.RuntimeFile("a", "attached.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record of attached disks outlived the vm: %v", err)
	}
	if im, err := disk.Open(img, disk.OpenOptions{}); err != nil {
		t.Errorf("open the image once the vm stopped: %v", err)
	} else {
		im.Close()
	}
}
