package config

import (
	"reflect"
	"strings"
	"testing"
)

// deviceVM is a definition using every key of the device model.
func deviceVM() *VM {
	return &VM{
		ID: 4, Name: "dev", Memory: 1 << 30, CPUs: 8,
		Sockets: 2, Cores: 2, Threads: 2,
		MaxMemory: 4 << 30, HugePages: true, Prealloc: true,
		Vsock: true, CID: 42,
		Disks: []Disk{
			{Path: "/vm/a.qcow2", Format: "qcow2", Bus: BusSCSI, IOThread: true, Discard: true, Cache: CacheNone},
			{Path: "/vm/b.raw", Bus: BusVirtio, ReadOnly: true, Cache: CacheWriteback},
		},
		Shares:   []Share{{Path: "/srv/share", Tag: "host"}, {Path: "/srv/ro, dir", Tag: "ro", ReadOnly: true}},
		HostDevs: []HostDev{{Address: "0000:01:00.0"}, {Address: "0001:af:1f.7"}},
	}
}

func TestDevicesRoundTrip(t *testing.T) {
	for _, want := range []*VM{deviceVM(), {ID: 5, Name: "cid", Memory: 512 << 20, CPUs: 3, Threads: 3, CID: 3, MLock: true, Kernel: "/k"}} {
		want.File = "/c/vms/" + want.Name + ".toml"
		data, err := Encode(want)
		if err != nil {
			t.Fatal(err)
		}
		got := &VM{Name: want.Name, File: want.File}
		if err := Decode(got, data); err != nil {
			t.Fatalf("decode:\n%s\nof\n%s", err, data)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip:\ngot  %+v\nwant %+v\nfile:\n%s", got, want, data)
		}
	}
}

func TestDevicesEncode(t *testing.T) {
	vm := deviceVM()
	vm.Disks = vm.Disks[:1]
	vm.Shares, vm.HostDevs = vm.Shares[:1], vm.HostDevs[:1]
	data, err := Encode(vm)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"sockets = 2\n", "cores = 2\n", "threads = 2\n", "max_memory = '4G'\n",
		"hugepages = true\n", "prealloc = true\n", "vsock = true\n", "cid = 42\n",
		"[[disks]]\npath = '/vm/a.qcow2'\nformat = 'qcow2'\nbus = 'scsi'\niothread = true\ndiscard = true\ncache = 'none'\n",
		"[[shares]]\npath = '/srv/share'\ntag = 'host'\n\n",
		"[[hostdevs]]\naddress = '0000:01:00.0'\n",
	} {
		if !strings.Contains(string(data), line) {
			t.Errorf("encode: no %q in\n%s", line, data)
		}
	}
}

func TestDevicesDecode(t *testing.T) {
	const file = "/c/vms/web.toml"
	tests := []decodeCase{
		{"all", "id = 1\nkernel = '/k'\ncpus = 4\nsockets = 2\ncores = 2\nmax_memory = '1G'\nhugepages = true\n" +
			"prealloc = true\nvsock = true\ncid = 99\n[[shares]]\npath = '/s'\ntag = 't'\nreadonly = true\n" +
			"[[hostdevs]]\naddress = '0000:00:02.0'\n[[disks]]\npath = '/d'\nbus = 'scsi'\niothread = true\ndiscard = true\nreadonly = true\ncache = 'none'\n", ""},
		{"topology not cpus", "id = 1\nkernel = '/k'\ncpus = 4\nsockets = 3\n",
			file + ": sockets: sockets × cores × threads is 3 × 1 × 1 = 3, not cpus (4); a topology key left out counts as 1"},
		{"topology zero", "id = 1\nkernel = '/k'\ncores = 0\n", file + ": cores: 0 is out of range (1 to 64)"},
		{"topology type", "id = 1\nkernel = '/k'\nthreads = '2'\n", file + ":3: threads: want an integer, not a TOML string"},
		{"max_memory number", "id = 1\nkernel = '/k'\nmax_memory = 2048\n",
			file + `: max_memory: want a size as a string, like "2048M", not the number 2048`},
		{"max_memory below", "id = 1\nkernel = '/k'\nmemory = '1G'\nmax_memory = '512M'\n",
			file + ": max_memory: 512M is below memory (1G)"},
		{"max_memory odd", "id = 1\nkernel = '/k'\nmemory = '1G'\nmax_memory = '1025M'\n",
			file + ": max_memory: 1025M less memory (1G) is not a multiple of 2M, the block size of the memory it adds"},
		{"max_memory unit", "id = 1\nkernel = '/k'\nmax_memory = '1GB'\n",
			file + `: max_memory: invalid size "1GB": unexpected "B" after the unit`},
		{"max_memory huge", "id = 1\nkernel = '/k'\nmax_memory = '8T'\n", file + ": max_memory: 8T is above the maximum of 4T"},
		{"hugepages odd", "id = 1\nkernel = '/k'\nmemory = '513M'\nhugepages = true\n",
			file + ": hugepages: memory (513M) is not a multiple of the 2M huge page"},
		{"mlock", "id = 1\nkernel = '/k'\nmemory = '1G'\nmax_memory = '1G'\nmlock = true\n", ""},
		{"mlock and max_memory", "id = 1\nkernel = '/k'\nmemory = '1G'\nmax_memory = '2G'\nmlock = true\n",
			file + ": mlock: cannot be combined with max_memory: locking the guest's memory would allocate all of max_memory at start"},
		{"bool type", "id = 1\nkernel = '/k'\nmlock = 'yes'\n", file + ":3: mlock: want a boolean, not a TOML string"},
		{"cid low", "id = 1\nkernel = '/k'\ncid = 2\n", file + ": cid: 2 is out of range (3 to 4294967294)"},
		{"cid any", "id = 1\nkernel = '/k'\ncid = 4294967295\n", file + ": cid: 4294967295 is out of range (3 to 4294967294)"},
		{"share problems", "id = 1\nkernel = '/k'\n[[shares]]\npath = 'rel'\ntag = 'a b'\n[[shares]]\n" +
			"[[shares]]\npath = '/x'\ntag = '0123456789012345678901234567890123456'\n[[shares]]\npath = '/y'\ntag = 'ok'\n[[shares]]\npath = '/z'\ntag = 'ok'\n",
			file + `: shares[0].path: "rel" is not an absolute path` + "\n" +
				file + `: shares[0].tag: invalid tag "a b" (letters, digits, '.', '-' and '_' only)` + "\n" +
				file + ": shares[1].path: missing (the host directory to share)\n" +
				file + ": shares[1].tag: missing (the name the guest mounts it by: mount -t virtiofs TAG DIR)\n" +
				file + `: shares[2].tag: tag "0123456789012345678901234567890123456" too long (37 bytes, at most 36)` + "\n" +
				file + `: shares[4].tag: "ok" is also the tag of shares[3]`},
		{"shares not tables", "id = 1\nkernel = '/k'\nshares = ['/a']\n",
			file + ":3: shares: want a list of tables ([[shares]]), not a TOML string"},
		{"hostdev problems", "id = 1\nkernel = '/k'\n[[hostdevs]]\naddress = '01:00.0'\n[[hostdevs]]\naddress = '0000:01:00.0'\n" +
			"[[hostdevs]]\naddress = '0000:01:20.0'\n[[hostdevs]]\n[[hostdevs]]\naddress = 'pci-0'\n",
			file + `: hostdevs[1].address: "0000:01:00.0" is also hostdevs[0]` + "\n" +
				file + `: hostdevs[2].address: invalid PCI address "0000:01:20.0": the device is above 1f (want DDDD:BB:DD.F in hex, like 0000:01:00.0)` + "\n" +
				file + ": hostdevs[3].address: missing (the device's PCI address, like 0000:01:00.0; see lspci -D)\n" +
				file + `: hostdevs[4].address: invalid PCI address "pci-0": not domain:bus:device.function (want DDDD:BB:DD.F in hex, like 0000:01:00.0)`},
		{"disk options", "id = 1\n[[disks]]\npath = '/d'\nbus = 'ide'\ncache = 'unsafe'\n[[disks]]\npath = '/e'\ndiscard = 1\n",
			file + ":8: disks.discard: want a boolean, not a TOML integer"},
		{"disk bus and cache", "id = 1\n[[disks]]\npath = '/d'\nbus = 'ide'\ncache = 'unsafe'\n",
			file + `: disks[0].bus: unknown bus "ide" (want virtio or scsi)` + "\n" +
				file + `: disks[0].cache: unknown cache mode "unsafe" (want none or writeback)`},
	}
	checkDecode(t, file, tests)
}

func TestDevicesDecodeNormalises(t *testing.T) {
	vm := &VM{Name: "web", File: "/c/vms/web.toml"}
	if err := Decode(vm, []byte("id = 1\nkernel = '/k'\n[[hostdevs]]\naddress = '0A:1F.7'\n")); err != nil {
		t.Fatal(err)
	}
	if want := []HostDev{{Address: "0000:0a:1f.7"}}; !reflect.DeepEqual(vm.HostDevs, want) {
		t.Errorf("got %+v, want %+v", vm.HostDevs, want)
	}
}

func TestTopology(t *testing.T) {
	for _, tt := range []struct {
		vm      VM
		s, c, t int
		valid   bool
	}{
		{VM{CPUs: 4}, 4, 1, 1, true},
		{VM{CPUs: 4, Cores: 4}, 1, 4, 1, true},
		{VM{CPUs: 8, Sockets: 2, Threads: 2}, 2, 1, 2, false},
		{VM{CPUs: 8, Sockets: 2, Cores: 2, Threads: 2}, 2, 2, 2, true},
	} {
		s, c, th := tt.vm.Topology()
		if s != tt.s || c != tt.c || th != tt.t {
			t.Errorf("%+v: got %d,%d,%d want %d,%d,%d", tt.vm, s, c, th, tt.s, tt.c, tt.t)
		}
		if valid := s*c*th == tt.vm.CPUs; valid != tt.valid {
			t.Errorf("%+v: multiplies to cpus %v, want %v", tt.vm, valid, tt.valid)
		}
	}
}

func TestParsePCIAddress(t *testing.T) {
	for in, want := range map[string]string{
		"0000:01:00.0": "0000:01:00.0", "01:00.0": "0000:01:00.0", "FFFF:FF:1F.7": "ffff:ff:1f.7",
		"0000:01:00.8": "", "0000:01:00": "", "1:00.0": "", "0000:01:00.0:1": "", "0000:0g:00.0": "", "": "", "+001:01:00.0": "",
	} {
		got, err := ParsePCIAddress(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("ParsePCIAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestValidateDevices(t *testing.T) {
	vm := deviceVM()
	if err := vm.Validate(); err != nil {
		t.Fatalf("valid definition: %v", err)
	}
	vm.CID = 0xFFFFFFFF
	vm.Sockets = -1
	vm.MaxMemory = 1<<30 + 1
	got := ""
	if err := vm.Validate(); err != nil {
		got = err.Error()
	}
	want := "sockets: -1 is out of range (1 to 64)\nmax_memory: 1073741825 is not a whole number of megabytes\ncid: 4294967295 is out of range (3 to 4294967294)"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestDeviceSummary(t *testing.T) {
	want := []string{
		"topology 2 sockets × 2 cores × 2 threads", "max_memory 4G", "memory hugepages, prealloc", "vsock cid 42",
		`share host "/srv/share"`, `share ro "/srv/ro, dir" read-only`, "hostdev 0000:01:00.0", "hostdev 0001:af:1f.7",
		"disks[0] bus scsi, iothread, discard, cache none", "disks[1] read-only",
	}
	if got := deviceVM().DeviceSummary(); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := (&VM{CPUs: 2, Cores: 2, Vsock: true, MLock: true, Memory: 1 << 30, MaxMemory: 1 << 30}).DeviceSummary(); !reflect.DeepEqual(got,
		[]string{"topology 1 socket × 2 cores × 1 thread", "memory mlock", "vsock cid chosen at start"}) {
		t.Errorf("got %q", got)
	}
	if got := validVM().DeviceSummary(); got != nil {
		t.Errorf("got %q, want none", got)
	}
}
