package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
)

// deviceBase is the Spec the device golden tests change.
func deviceBase() Spec {
	return Spec{Name: "web", Memory: 1 << 30, CPUs: 4, QMPFD: 3, Accel: []string{"tcg"}, Kernel: "/k"}
}

// deviceArgv is deviceBase's command line with mem in place of its
// memory and vCPU options and rest after the kernel.
func deviceArgv(mem []string, rest ...string) []string {
	argv := []string{
		"-nodefaults", "-no-user-config", "-display", "none",
		"-name", "guest=web,process=qemu-web,debug-threads=on",
		"-machine", "q35", "-accel", "tcg",
	}
	argv = append(argv, mem...)
	argv = append(argv,
		"-chardev", "socket,id=qmp0,fd=3,server=on,wait=off", "-mon", "chardev=qmp0,mode=control",
		"-chardev", "pty,id=ser0", "-serial", "chardev:ser0",
		"-kernel", "/k")
	return append(argv, rest...)
}

// plainMem is deviceBase's memory and vCPUs when no key changes them.
var plainMem = []string{"-m", "1024M", "-smp", "4"}

// deviceGoldens are the command lines of the device model's keys.
var deviceGoldens = []struct {
	name string
	mod  func(*Spec)
	want []string
}{
	{"none", func(s *Spec) {}, deviceArgv(plainMem)},
	{"topology", func(s *Spec) { s.Sockets, s.Cores, s.Threads = 2, 1, 2 },
		deviceArgv([]string{"-m", "1024M", "-smp", "4,sockets=2,cores=1,threads=2"})},
	{"max_memory", func(s *Spec) { s.MaxMemory = 3 << 30 },
		deviceArgv([]string{"-m", "1024M,maxmem=3072M",
			"-object", "memory-backend-ram,id=vmem0-mem,size=2048M",
			"-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-mem,requested-size=0",
			"-smp", "4"})},
	{"max_memory equal to memory", func(s *Spec) { s.MaxMemory = 1 << 30 }, deviceArgv(plainMem)},
	{"prealloc", func(s *Spec) { s.Prealloc = true },
		deviceArgv([]string{"-object", "memory-backend-ram,id=mem0,size=1024M,prealloc=on", "-machine", "memory-backend=mem0",
			"-m", "1024M", "-smp", "4"})},
	{"prealloc and max_memory", func(s *Spec) { s.Prealloc, s.MaxMemory = true, 2<<30 },
		deviceArgv([]string{"-object", "memory-backend-ram,id=mem0,size=1024M,prealloc=on", "-machine", "memory-backend=mem0",
			"-m", "1024M,maxmem=2048M",
			"-object", "memory-backend-ram,id=vmem0-mem,size=1024M",
			"-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-mem,requested-size=0,prealloc=on",
			"-smp", "4"})},
	{"hugepages", func(s *Spec) { s.HugePages, s.MaxMemory = true, 2<<30 },
		deviceArgv([]string{"-object", "memory-backend-memfd,id=mem0,size=1024M,share=off,hugetlb=on", "-machine", "memory-backend=mem0",
			"-m", "1024M,maxmem=2048M",
			"-object", "memory-backend-memfd,id=vmem0-mem,size=1024M,share=off,hugetlb=on,reserve=off",
			"-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-mem,requested-size=0",
			"-smp", "4"})},
	{"mlock", func(s *Spec) { s.MLock = true },
		deviceArgv([]string{"-m", "1024M", "-overcommit", "mem-lock=on", "-smp", "4"})},
	{"memory file", func(s *Spec) { s.MemFile, s.MemFileShare, s.Prealloc = "/var/t,mpl/mem", true, true },
		deviceArgv([]string{"-object", "memory-backend-file,id=mem0,size=1024M,mem-path=/var/t,,mpl/mem,share=on,prealloc=on",
			"-machine", "memory-backend=mem0", "-m", "1024M", "-smp", "4"})},
	{"private memory file", func(s *Spec) { s.MemFile = "/var/tmpl/mem" },
		deviceArgv([]string{"-object", "memory-backend-file,id=mem0,size=1024M,mem-path=/var/tmpl/mem,share=off",
			"-machine", "memory-backend=mem0", "-m", "1024M", "-smp", "4"})},
	{"shares share memory", func(s *Spec) {
		s.MaxMemory = 2 << 30
		s.Shares = []ShareSpec{{Path: "/srv", Tag: "srv", Socket: "/run/fs0.sock"}}
	}, deviceArgv([]string{"-object", "memory-backend-memfd,id=mem0,size=1024M,share=on", "-machine", "memory-backend=mem0",
		"-m", "1024M,maxmem=2048M",
		"-object", "memory-backend-memfd,id=vmem0-mem,size=1024M,share=on",
		"-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-mem,requested-size=0",
		"-smp", "4"},
		"-chardev", "socket,id=fs0,path=/run/fs0.sock", "-device", "vhost-user-fs-pci,chardev=fs0,id=fs0-dev,tag=srv")},
	{"virtio disk options", func(s *Spec) {
		s.Disks = []DiskSpec{
			{Path: "/d/a.qcow2", Format: "qcow2", IOThread: true, Discard: true, Cache: "none"},
			{Path: "/d/b.raw", Format: "raw", Bus: "virtio", ReadOnly: true, Discard: true, Cache: "writeback"},
		}
		s.Boot = "disk"
	}, deviceArgv(plainMem,
		"-blockdev", "driver=file,node-name=disk0-file,discard=unmap,cache.direct=on,filename=/d/a.qcow2",
		"-blockdev", "driver=qcow2,node-name=disk0,discard=unmap,cache.direct=on,detect-zeroes=unmap,file=disk0-file",
		"-object", "iothread,id=io0",
		"-device", "virtio-blk-pci,drive=disk0,id=disk0-dev,iothread=io0,bootindex=0",
		// Read-only: no discard, nothing to unmap.
		"-blockdev", "driver=file,node-name=disk1-file,read-only=on,filename=/d/b.raw",
		"-blockdev", "driver=raw,node-name=disk1,read-only=on,file=disk1-file",
		"-device", "virtio-blk-pci,drive=disk1,id=disk1-dev")},
	{"scsi disks", func(s *Spec) {
		s.Disks = []DiskSpec{
			{Path: "/d/a.qcow2", Format: "qcow2", Bus: "scsi"},
			{Path: "/d/b.qcow2", Format: "qcow2"},
			{Path: "/d/c.raw", Format: "raw", Bus: "scsi", IOThread: true, ReadOnly: true},
		}
		s.Boot = "disk"
	}, deviceArgv(plainMem,
		"-object", "iothread,id=io-scsi0", "-device", "virtio-scsi-pci,id=scsi0,iothread=io-scsi0",
		"-blockdev", "driver=file,node-name=disk0-file,filename=/d/a.qcow2",
		"-blockdev", "driver=qcow2,node-name=disk0,file=disk0-file",
		"-device", "scsi-hd,bus=scsi0.0,drive=disk0,id=disk0-dev,bootindex=0",
		"-blockdev", "driver=file,node-name=disk1-file,filename=/d/b.qcow2",
		"-blockdev", "driver=qcow2,node-name=disk1,file=disk1-file",
		"-device", "virtio-blk-pci,drive=disk1,id=disk1-dev",
		"-blockdev", "driver=file,node-name=disk2-file,read-only=on,filename=/d/c.raw",
		"-blockdev", "driver=raw,node-name=disk2,read-only=on,file=disk2-file",
		"-device", "scsi-hd,bus=scsi0.0,drive=disk2,id=disk2-dev")},
	{"scsi without iothread", func(s *Spec) { s.Disks = []DiskSpec{{Path: "/d/a.raw", Format: "raw", Bus: "scsi", Discard: true}} },
		deviceArgv(plainMem, "-device", "virtio-scsi-pci,id=scsi0",
			"-blockdev", "driver=file,node-name=disk0-file,discard=unmap,filename=/d/a.raw",
			"-blockdev", "driver=raw,node-name=disk0,discard=unmap,detect-zeroes=unmap,file=disk0-file",
			"-device", "scsi-hd,bus=scsi0.0,drive=disk0,id=disk0-dev")},
	{"vsock", func(s *Spec) { s.CID = 1004 },
		deviceArgv(plainMem, "-device", "vhost-vsock-pci,id=vsock0,guest-cid=1004")},
	{"hostdevs", func(s *Spec) { s.HostDevs = []string{"0000:01:00.0", "0000:02:00.1"} },
		deviceArgv(plainMem, "-device", "vfio-pci,host=0000:01:00.0,id=hostdev0", "-device", "vfio-pci,host=0000:02:00.1,id=hostdev1")},
	{"free page reporting", func(s *Spec) { s.FreePageReporting = true },
		deviceArgv(plainMem, "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on")},
	{"order", func(s *Spec) {
		s.Nets = []NetSpec{{}}
		s.CID = 3
		s.HostDevs = []string{"0000:01:00.0"}
		s.Extra = []string{"-device", "virtio-rng-pci"}
	}, deviceArgv(plainMem,
		"-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,id=net0-dev",
		"-device", "vhost-vsock-pci,id=vsock0,guest-cid=3",
		"-device", "vfio-pci,host=0000:01:00.0,id=hostdev0",
		"-device", "virtio-rng-pci")},
}

func TestCmdlineDevices(t *testing.T) {
	for _, tt := range deviceGoldens {
		t.Run(tt.name, func(t *testing.T) {
			s := deviceBase()
			tt.mod(&s)
			got, err := Cmdline(s)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Cmdline:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCmdlineDevicesRefused(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Spec)
		want string
	}{
		{"topology not cpus", func(s *Spec) { s.Sockets, s.Cores, s.Threads = 2, 1, 1 }, "topology 2 sockets × 1 cores × 1 threads is not 4 vcpus"},
		{"topology partial", func(s *Spec) { s.Sockets = 4 }, "topology 4 sockets × 0 cores × 0 threads is not 4 vcpus"},
		{"max_memory unaligned", func(s *Spec) { s.MaxMemory = 1<<30 + 1<<20 }, "not a multiple of 2M"},
		{"memory not MiB", func(s *Spec) { s.Memory = 1<<30 + 1 }, "not a positive whole number of MiB"},
		{"memory file on huge pages", func(s *Spec) { s.MemFile, s.HugePages = "/m", true }, "a memory file cannot be backed by huge pages"},
		{"memory file newline", func(s *Spec) { s.MemFile = "/m\n" }, "contains a NUL or newline"},
		{"bus", func(s *Spec) { s.Disks = []DiskSpec{{Path: "/a", Format: "raw", Bus: "ide"}} }, `disk "/a": unknown bus "ide"`},
		{"cache", func(s *Spec) { s.Disks = []DiskSpec{{Path: "/a", Format: "raw", Cache: "unsafe"}} }, `disk "/a": unknown cache mode "unsafe"`},
		{"cid", func(s *Spec) { s.CID = 2 }, "vsock cid 2 is out of range"},
		{"cid any", func(s *Spec) { s.CID = 0xFFFFFFFF }, "vsock cid 4294967295 is out of range"},
		{"hostdev", func(s *Spec) { s.HostDevs = []string{"0000:01:00.0,x-vga=on"} }, "invalid PCI address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := deviceBase()
			tt.mod(&s)
			argv, err := Cmdline(s)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "vm web: ") {
				t.Errorf("Cmdline = %q, %v; want an error with %q", argv, err, tt.want)
			}
		})
	}
}

func TestCmdlineCID(t *testing.T) {
	s := deviceBase()
	s.CID = 4294967294
	argv, err := Cmdline(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := cmdlineCID(argv); got != 4294967294 {
		t.Errorf("cmdlineCID = %d, want 4294967294", got)
	}
	for _, argv := range [][]string{nil, {"-device"}, {"-device", "vhost-vsock-pci,id=v"}, {"-device", "virtio-net-pci,guest-cid=5"}, {"-smp", "vhost-vsock-pci,guest-cid=5"}} {
		if got := cmdlineCID(argv); got != 0 {
			t.Errorf("cmdlineCID(%q) = %d, want 0", argv, got)
		}
	}
}

func TestPickCID(t *testing.T) {
	others := []cidUser{{cid: 1007, vm: "db"}, {cid: 1008, vm: "cache", fixed: true}, {cid: 42, vm: "fixed", fixed: true}, {cid: 43, vm: "run"}}
	tests := []struct {
		def  config.VM
		want uint32
		err  string
	}{
		{config.VM{Name: "a", ID: 1, Vsock: true}, 1001, ""},
		{config.VM{Name: "a", ID: 7, Vsock: true}, 1009, ""}, // 1007 and 1008 are taken
		{config.VM{Name: "a", ID: 7, CID: 1009}, 1009, ""},
		{config.VM{Name: "a", ID: 7, CID: 42}, 0, "start vm a: vsock cid 42 is taken by vm fixed (its definition fixes it); give a another cid, or leave cid out to have one chosen"},
		{config.VM{Name: "a", ID: 7, CID: 43, Vsock: true}, 0, "start vm a: vsock cid 43 is taken by vm run (its running guest has it)"},
		{config.VM{Name: "a", ID: 1<<32 - 1000 - 1, Vsock: true}, 3, ""}, // past the last CID: wraps to the first
	}
	for _, tt := range tests {
		got, err := pickCID(&tt.def, others)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.HasPrefix(err.Error(), tt.err) {
			t.Errorf("pickCID(id %d, cid %d) = %d, %v; want %d, %q", tt.def.ID, tt.def.CID, got, err, tt.want, tt.err)
		}
	}
}

// TestCmdlineDevicesQEMUAccepts runs QEMU 7.2 (TCG, paused) with the
// command lines of the device goldens that this host can run (no vsock,
// host devices, huge pages or virtiofsd here), disks included, and checks
// through QMP that the devices are there.
func TestCmdlineDevicesQEMUAccepts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs QEMU")
	}
	bin := testguest.QEMU(t)
	qemuimg.Require(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", img, "64M")
	raw := filepath.Join(dir, "b.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	memFile := filepath.Join(dir, "mem")
	tests := []struct {
		name string
		mod  func(*Spec)
		ids  []string // in /machine/peripheral
	}{
		{"topology and growth", func(s *Spec) {
			s.Sockets, s.Cores, s.Threads, s.MaxMemory, s.Prealloc = 2, 1, 2, 2<<30, true
		}, []string{"vmem0"}},
		{"mlock", func(s *Spec) { s.MLock = true }, nil},
		{"memory file", func(s *Spec) { s.MemFile, s.MemFileShare = memFile, true }, nil},
		{"shared memory", func(s *Spec) {
			s.MaxMemory = 2 << 30
			s.Shares = []ShareSpec{{Path: dir, Tag: "t", Socket: filepath.Join(dir, "fs.sock")}}
		}, []string{"vmem0"}},
		{"disks", func(s *Spec) {
			s.Disks = []DiskSpec{
				{Path: img, Format: "qcow2", Bus: "scsi", IOThread: true, Discard: true},
				{Path: raw, Format: "raw", IOThread: true, ReadOnly: true},
			}
			s.Boot = "disk"
		}, []string{"scsi0", "disk0-dev", "disk1-dev"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := deviceBase()
			s.Memory, s.Kernel, s.QMPFD, s.Paused = 256<<20, "", 0, true
			s.QMPPath = filepath.Join(dir, "qmp.sock")
			tt.mod(&s)
			argv, err := Cmdline(s)
			if err != nil {
				t.Fatal(err)
			}
			// The memory the shares make shared, without the shares: no
			// virtiofsd here.
			argv = dropArgs(argv, "socket,id=fs", "vhost-user-fs-pci,")
			runQEMU(t, bin, s.QMPPath, argv, tt.ids)
		})
	}
}

// dropArgs removes the options whose values start with one of prefixes.
func dropArgs(argv []string, prefixes ...string) []string {
	var out []string
	for i := 0; i < len(argv); i++ {
		if i+1 < len(argv) && slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(argv[i+1], p) }) {
			i++
			continue
		}
		out = append(out, argv[i])
	}
	return out
}

// runQEMU starts QEMU with argv, waits for its monitor, checks that the
// devices ids exist, and quits it.
func runQEMU(t *testing.T, bin, qmpPath string, argv, ids []string) {
	t.Helper()
	var log strings.Builder
	cmd := exec.Command(bin, argv...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := dialUntilExit(ctx, qmpPath, exited)
	if err != nil {
		<-exited
		t.Fatalf("qemu %q: %v\n%s", argv, err, log.String())
	}
	defer c.Close()
	var props []struct{ Name string }
	if err := c.Execute(ctx, "qom-list", map[string]string{"path": "/machine/peripheral"}, &props); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !slices.ContainsFunc(props, func(p struct{ Name string }) bool { return p.Name == id }) {
			t.Errorf("no device %s in /machine/peripheral: %+v", id, props)
		}
	}
}
