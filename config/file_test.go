package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	full := &VM{
		ID: 7, Name: "web", Memory: 1536 << 20, CPUs: 4,
		Disks:  []Disk{{Path: "/srv/vm/web.qcow2", Format: "qcow2"}, {Path: "/srv/vm/data, with 'quotes\".img"}},
		CDROM:  "/srv/iso/install76.iso",
		Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd.img", Append: `console=ttyS0 root="/dev/vda1"`,
		Boot: BootCDROM,
		Networks: []Network{
			{Type: NetUser, HostFwd: []string{"tcp::2222-:22", "udp::5353-:53"}},
			{Type: NetBridge, Bridge: "br0", MAC: "52:54:00:12:34:56"},
		},
		Accel: "kvm", Machine: "q35",
		ExtraArgs: []string{"-device", "virtio-rng-pci", "-smp", "sockets=1"},
	}
	tests := []*VM{
		{ID: 1, Name: "min", Memory: DefaultMemory, CPUs: 1, Kernel: "/k"},
		{ID: 123456, Name: "big", Memory: 4 << 40, CPUs: 64, Disks: []Disk{{Path: "/a"}, {Path: "/b"}, {Path: "/c"}, {Path: "/d"}}},
		full,
	}
	for _, want := range tests {
		t.Run(want.Name, func(t *testing.T) {
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
		})
	}
}

func TestEncode(t *testing.T) {
	data, err := Encode(&VM{ID: 3, Name: "web", Memory: 1 << 30, CPUs: 2,
		Disks:    []Disk{{Path: "/vm/web.qcow2"}},
		Networks: []Network{{Type: NetUser, HostFwd: []string{"tcp::2222-:22"}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `# vmtui VM definition. Edit it freely: vmtui checks it each time it reads it.

# Assigned by vmtui when it created the VM; unique among the definitions.
id = 3
# The same as the file's name.
name = 'web'
# Memory, a whole number of megabytes: 512M, 2G, 1536M.
memory = '1G'
cpus = 2

# Format is qcow2 or raw; without one, vmtui detects it.
[[disks]]
path = '/vm/web.qcow2'

# Type user (port forwards in hostfwd) or bridge (a host bridge).
[[networks]]
type = 'user'
hostfwd = ['tcp::2222-:22']
`
	if string(data) != want {
		t.Errorf("encode:\ngot\n%s\nwant\n%s", data, want)
	}
}

func TestDecode(t *testing.T) {
	const file = "/c/vms/web.toml"
	tests := []decodeCase{
		{"minimal", "id = 1\nkernel = '/k'\n", ""},
		{"unknown key", "id = 1\nname = 'web'\nmemroy = '1G'\nkernel = '/k'\n",
			"/c/vms/web.toml:3: memroy: unknown key"},
		{"unknown keys in tables", "id = 1\n[[disks]]\npath = '/a'\nfomat = 'raw'\n[[networks]]\ntype = 'user'\nhostfwd = []\nhost_fwd = []\n",
			"/c/vms/web.toml:4: disks.fomat: unknown key\n/c/vms/web.toml:8: networks.host_fwd: unknown key"},
		{"unknown table", "id = 1\nkernel = '/k'\n[qemu]\nbinary = 'x'\n",
			"/c/vms/web.toml:3: qemu: unknown key"},
		{"unknown key and other problems", "id = 1\ncpu = 2\nmemory = '1K'\n",
			"/c/vms/web.toml:2: cpu: unknown key\n/c/vms/web.toml: memory: 1K is below the minimum of 16M\n/c/vms/web.toml: no kernel or disk/cdrom specified"},
		{"syntax", "id = 1\nmemory = \n", "/c/vms/web.toml:2: unexpected character U+000A at start of value"},
		{"duplicate key", "id = 1\nid = 2\n", "/c/vms/web.toml:2: id: key id is already defined"},
		{"wrong type", "id = 1\ncpus = 'two'\n", "/c/vms/web.toml:2: cpus: want an integer, not a TOML string"},
		{"wrong type in a table", "id = 1\n[[disks]]\npath = 3\n", "/c/vms/web.toml:3: disks.path: want a string, not a TOML integer"},
		{"disks not tables", "id = 1\ndisks = ['/a']\n", "/c/vms/web.toml:2: disks: want a list of tables ([[disks]]), not a TOML string"},
		{"memory as a number", "id = 1\nmemory = 512\nkernel = '/k'\n",
			`/c/vms/web.toml: memory: want a size as a string, like "512M", not the number 512`},
		{"memory as something else", "id = 1\nmemory = 1.5\nkernel = '/k'\n",
			`/c/vms/web.toml: memory: want a size as a string, like "512M"`},
		{"memory unit", "id = 1\nmemory = '512MB'\nkernel = '/k'\n",
			`/c/vms/web.toml: memory: invalid size "512MB": unexpected "B" after the unit`},
		{"missing id", "kernel = '/k'\n",
			"/c/vms/web.toml: id: missing (give the VM a number no other definition uses)"},
		{"negative id", "id = -3\nkernel = '/k'\n", "/c/vms/web.toml: id: -3 is not a positive number"},
		{"name mismatch", "id = 1\nname = 'db'\nkernel = '/k'\n",
			`/c/vms/web.toml: name: "db" does not match the file's name "web.toml"`},
		{"cpus zero", "id = 1\ncpus = 0\nkernel = '/k'\n", "/c/vms/web.toml: cpus: 0 is out of range (1 to 64)"},
		{"cpus huge", "id = 1\ncpus = 10000000000\nkernel = '/k'\n", "/c/vms/web.toml: cpus: 10000000000 is out of range (1 to 64)"},
		{"network type defaults to user", "id = 1\nkernel = '/k'\n[[networks]]\nhostfwd = ['tcp::22-:22']\n", ""},
	}
	checkDecode(t, file, tests)
}

// decodeCase is a definition to decode and the error it gives.
type decodeCase struct {
	name string
	toml string
	want string // the error; "" for none
}

// checkDecode decodes each case as the definition of VM web in file and
// checks the error.
func checkDecode(t *testing.T, file string, tests []decodeCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := &VM{Name: "web", File: file}
			got := ""
			if err := Decode(vm, []byte(tt.toml)); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("decode:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestDecodeDefaults(t *testing.T) {
	vm := &VM{Name: "web", File: "/c/vms/web.toml"}
	if err := Decode(vm, []byte("id = 2\nkernel = '/k'\n[[networks]]\n")); err != nil {
		t.Fatal(err)
	}
	want := &VM{ID: 2, Name: "web", File: "/c/vms/web.toml", Memory: DefaultMemory, CPUs: 1, Kernel: "/k", Networks: []Network{{Type: NetUser}}}
	if !reflect.DeepEqual(vm, want) {
		t.Errorf("got  %+v\nwant %+v", vm, want)
	}
}

func TestDecodeKeepsWhatItCanRead(t *testing.T) {
	vm := &VM{Name: "web", File: "/c/vms/web.toml"}
	err := Decode(vm, []byte("id = 9\nmemroy = '1G'\ncpus = 2\n[[disks]]\npath = '/a'\n"))
	if err == nil || !strings.Contains(err.Error(), "memroy: unknown key") {
		t.Fatalf("got %v, want the unknown key", err)
	}
	if vm.ID != 9 || vm.CPUs != 2 || len(vm.Disks) != 1 {
		t.Errorf("got %+v, want the id, cpus and disks read", vm)
	}
}
