package vm_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// Guest tests of the device model (issue 13): one guest carries a SCSI
// disk that discards, a read-only disk, a disk with an I/O thread, a CPU
// topology and preallocated memory, each seen from inside through its
// serial shell.

// allocated is the space a file takes on the host's disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestDevicesGuest boots one guest with a scsi qcow2 disk that discards
// (with the controller's I/O thread), a read-only raw disk, a raw disk with
// an I/O thread of its own, 2 sockets of 1 core of 2 threads, and
// preallocated memory: the scsi disk is /dev/sda; nproc and the topology
// in sysfs match; what the guest writes to the I/O-thread disk reaches the
// image; the read-only disk refuses writes; after blkdiscard the qcow2
// image's allocation drops and qemu-img check finds it clean.
func TestDevicesGuest(t *testing.T) {
	e := newGuestEnv(t)
	qemuimg.Require(t)
	dir := t.TempDir()
	scsi := filepath.Join(dir, "scsi.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", scsi, "64M")
	ro := filepath.Join(dir, "ro.raw")
	if err := os.WriteFile(ro, []byte(strings.Repeat("vmtui-ro\n", (8<<20)/9+1)[:8<<20]), 0o644); err != nil {
		t.Fatal(err)
	}
	ioImg := filepath.Join(dir, "io.raw")
	if err := os.WriteFile(ioImg, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	def := &config.VM{
		Name: "devs", Memory: testguest.MemoryBytes, CPUs: 4, Sockets: 2, Cores: 1, Threads: 2, Prealloc: true,
		Machine: testguest.Machine, Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
		Disks: []config.Disk{
			{Path: scsi, Format: "qcow2", Bus: config.BusSCSI, IOThread: true, Discard: true},
			{Path: ro, Format: "raw", ReadOnly: true},
			{Path: ioImg, Format: "raw", IOThread: true},
		},
	}
	if err := e.m.Store().Create(def); err != nil {
		t.Fatal(err)
	}
	st := e.start(def, vm.StartOptions{})
	for _, want := range []string{"virtio-scsi-pci,id=scsi0,iothread=io-scsi0", "-smp", "4,sockets=2,cores=1,threads=2", "prealloc=on"} {
		if !strings.Contains(strings.Join(st.Cmdline, " "), want) {
			t.Errorf("qemu's command line has no %q: %q", want, st.Cmdline)
		}
	}
	g := e.shell("devs", st.TTY)

	// The scsi disk is /dev/sda, QEMU's SCSI disk; the virtio disks vdX.
	if got := g.run("cat /sys/block/sda/device/vendor /sys/block/sda/device/model /sys/block/sda/size"); got != "QEMU QEMU HARDDISK 131072" {
		t.Errorf("/dev/sda: vendor, model and size %q, want QEMU QEMU HARDDISK 131072", got)
	}
	// The topology: 4 vCPUs in 2 packages, 2 threads a core.
	if got := g.run("nproc"); got != "4" {
		t.Errorf("nproc: %q, want 4", got)
	}
	if got := g.run("cat /sys/devices/system/cpu/cpu*/topology/physical_package_id | sort -u | wc -l"); got != "2" {
		t.Errorf("packages: %q, want 2", got)
	}
	// Each package holds cores × threads = 2 vCPUs. (Which of them are
	// threads of one core the guest reads from the CPU model's CPUID:
	// QEMU's default under TCG, qemu64, an AMD model without topoext,
	// shows the threads as cores.)
	if got := g.run("cat /sys/devices/system/cpu/cpu0/topology/package_cpus_list /sys/devices/system/cpu/cpu2/topology/package_cpus_list"); got != "0-1 2-3" {
		t.Errorf("vCPUs of the packages of cpu0 and cpu2: %q, want 0-1 2-3", got)
	}

	// The disks by size: 8M (16384 sectors) read-only, 16M the I/O thread's.
	bySize := func(sectors int) string {
		return g.run(fmt.Sprintf("for d in /sys/block/vd*; do [ $(cat $d/size) = %d ] && echo ${d##*/}; done", sectors))
	}
	rodev, iodev := bySize(16384), bySize(32768)
	if rodev == "" || iodev == "" {
		t.Fatalf("virtio disks: read-only %q, I/O thread %q; /sys/block holds %q", rodev, iodev, g.run("ls /sys/block"))
	}
	if got := g.run("cat /sys/block/" + rodev + "/ro /sys/block/" + iodev + "/ro"); got != "1 0" {
		t.Errorf("ro flags of %s and %s: %q, want 1 0", rodev, iodev, got)
	}
	if got := g.run("dd if=/dev/zero of=/dev/" + rodev + " bs=4096 count=1 conv=fsync 2>&1; echo rc=$?"); !strings.HasSuffix(got, "rc=1") {
		t.Errorf("write to the read-only disk: %q, want it refused", got)
	}
	if got := g.run("head -c 9 /dev/" + rodev); got != "vmtui-ro" {
		t.Errorf("read of the read-only disk: %q", got)
	}
	if got := g.run("echo vmtui-iothread | dd of=/dev/" + iodev + " bs=512 seek=2048 conv=fsync 2>/dev/null; echo rc=$?"); got != "rc=0" {
		t.Errorf("write to the I/O thread's disk: %q", got)
	}
	b, err := os.ReadFile(ioImg)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b[1<<20 : 1<<20+15]); got != "vmtui-iothread\n" {
		t.Errorf("the I/O thread's disk at 1M holds %q, want what the guest wrote", got)
	}

	// Discard: 16M of data in, allocated; blkdiscard frees it.
	if got := g.run("dd if=/dev/urandom of=/dev/sda bs=1M count=16 conv=fsync 2>/dev/null; echo rc=$?"); got != "rc=0" {
		t.Fatalf("write to /dev/sda: %q", got)
	}
	full := allocated(t, scsi)
	if full < 16<<20 {
		t.Fatalf("the qcow2 image takes %d bytes after 16M were written", full)
	}
	if got := g.run("blkdiscard /dev/sda; echo rc=$?"); got != "rc=0" {
		t.Fatalf("blkdiscard: %q", got)
	}
	deadline := time.Now().Add(time.Minute)
	for allocated(t, scsi) > full-12<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("the qcow2 image still takes %d bytes a minute after blkdiscard (%d before)", allocated(t, scsi), full)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := e.m.Stop(ctx, def, vm.StopOptions{Wait: true}); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, scsi, false)
	t.Logf("qcow2 allocation: %d bytes written, %d after blkdiscard", full, allocated(t, scsi))
}

// TestDevicesStartChecks: what a host cannot give a guest is refused
// before QEMU starts, with what to do about it: a CID another VM fixes, a
// vsock device without /dev/vhost-vsock, a PCI device the host lacks.
func TestDevicesStartChecks(t *testing.T) {
	e := newGuestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	other := e.define("other")
	other.CID = 1234
	if err := e.m.Store().Save(other); err != nil {
		t.Fatal(err)
	}
	def := e.define("guest")
	def.CID = 1234
	if err := e.m.Store().Save(def); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Start(ctx, def, vm.StartOptions{})
	if want := "start vm guest: vsock cid 1234 is taken by vm other (its definition fixes it); give guest another cid"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("start with a cid taken: %v, want %q", err, want)
	}
	def.CID, def.Vsock = 0, true
	if err := e.m.Store().Save(def); err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Start(ctx, def, vm.StartOptions{})
	if _, statErr := os.Stat("/dev/vhost-vsock"); os.IsNotExist(statErr) {
		if want := "start vm guest: vsock: this host has no /dev/vhost-vsock"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("start with vsock: %v, want %q", err, want)
		}
	} else if err == nil {
		e.m.Stop(ctx, def, vm.StopOptions{Force: true, Wait: true})
	}
	def.Vsock = false
	def.HostDevs = []config.HostDev{{Address: "ffff:ff:1f.7"}}
	if err := e.m.Store().Save(def); err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Start(ctx, def, vm.StartOptions{})
	if want := "start vm guest: hostdevs[0]: no PCI device ffff:ff:1f.7 on this host"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("start with a host device: %v, want %q", err, want)
	}
	if pids := qemuPIDs(e.paths.PIDFile("guest"), false); len(pids) > 0 {
		t.Errorf("a refused start left QEMU %v", pids)
	}
}
