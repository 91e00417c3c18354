package config

import (
	"fmt"
	"strings"
	"testing"
)

// validVM returns a small valid definition for tests to change.
func validVM() *VM {
	return &VM{ID: 1, Name: "web", Memory: 512 << 20, CPUs: 1, Disks: []Disk{{Path: "/vm/web.qcow2"}}}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(vm *VM)
		want   string // the errors, one a line; "" for none
	}{
		{"valid", func(vm *VM) {}, ""},
		{"full", func(vm *VM) {
			vm.Name = "Web-1.test_a"
			vm.Memory, vm.CPUs = 64<<30, 64
			vm.Disks = []Disk{{Path: "/a", Format: "qcow2"}, {Path: "/b", Format: "raw"}, {Path: "/c"}, {Path: "/d"}}
			vm.CDROM, vm.Kernel, vm.Initrd, vm.Append = "/i.iso", "/k", "/r", "console=ttyS0 quiet"
			vm.Boot, vm.Accel, vm.Machine = BootCDROM, "tcg", "pc-q35-7.2"
			vm.Networks = []Network{
				{Type: NetUser, HostFwd: []string{"tcp::2222-:22", "udp:127.0.0.1:5353-10.0.2.15:53", "::8080-:80"}},
				{Type: NetUser, HostFwd: []string{"tcp:127.0.0.1:2223-:22"}, MAC: "52:54:00:12:34:56"},
				{Type: NetBridge, Bridge: "br-lan.0", MAC: "52:54:00:12:34:57"},
				{Type: NetUser},
			}
			vm.ExtraArgs = []string{"-device", "virtio-rng-pci,id=rng0"}
		}, ""},
		{"the file is named", func(vm *VM) { vm.File = "/c/vms/web.toml"; vm.CPUs = 0 },
			"/c/vms/web.toml: cpus: 0 is out of range (1 to 64)"},
		{"id", func(vm *VM) { vm.ID = 0 }, "id: 0 is not a positive number"},
		{"no name", func(vm *VM) { vm.Name = "" }, "name: missing"},
		{"bad name", func(vm *VM) { vm.Name = "web server" },
			`name: invalid VM name "web server": only letters, digits, '.', '-' and '_' are allowed`},
		{"name too long", func(vm *VM) { vm.Name = strings.Repeat("a", 64) },
			"name: vm name too long (64 bytes, at most 63)"},
		{"memory too small", func(vm *VM) { vm.Memory = 8 << 20 }, "memory: 8M is below the minimum of 16M"},
		{"memory too large", func(vm *VM) { vm.Memory = 5 << 40 }, "memory: 5T is above the maximum of 4T"},
		{"memory not whole MiB", func(vm *VM) { vm.Memory = 16<<20 + 1024 }, "memory: 16385K is not a whole number of megabytes"},
		{"memory odd bytes", func(vm *VM) { vm.Memory = 16<<20 + 1 }, "memory: 16777217 is not a whole number of megabytes"},
		{"cpus", func(vm *VM) { vm.CPUs = 65 }, "cpus: 65 is out of range (1 to 64)"},
		{"nothing to boot", func(vm *VM) { vm.Disks = nil }, "no kernel or disk/cdrom specified"},
		{"kernel alone", func(vm *VM) { vm.Disks = nil; vm.Kernel = "/boot/vmlinuz" }, ""},
		{"cdrom alone", func(vm *VM) { vm.Disks = nil; vm.CDROM = "/i.iso" }, ""},
		{"relative paths", func(vm *VM) {
			vm.Disks[0].Path = "web.qcow2"
			vm.Kernel, vm.Initrd, vm.CDROM = "vmlinuz", "./initrd", "../i.iso"
		}, `kernel: "vmlinuz" is not an absolute path
initrd: "./initrd" is not an absolute path
cdrom: "../i.iso" is not an absolute path
disks[0].path: "web.qcow2" is not an absolute path`},
		{"NUL and newline", func(vm *VM) {
			vm.Disks[0].Path = "/a\x00b"
			vm.Kernel, vm.Append = "/k\n-hda", "quiet\r\n"
		}, `kernel: contains a line break
append: contains a line break
disks[0].path: contains a NUL byte`},
		{"path too long", func(vm *VM) { vm.CDROM = "/" + strings.Repeat("x", 4095) }, "cdrom: path too long (4096 bytes, at most 4095)"},
		{"initrd and append need a kernel", func(vm *VM) { vm.Initrd, vm.Append = "/r", "quiet" },
			"initrd: needs a kernel\nappend: needs a kernel"},
		{"too many disks", func(vm *VM) {
			vm.Disks = []Disk{{Path: "/a"}, {Path: "/b"}, {Path: "/c"}, {Path: "/d"}, {Path: "/e"}}
		}, "disks: too many disks (5, at most 4)"},
		{"disk problems", func(vm *VM) {
			vm.Disks = []Disk{{Path: "/a", Format: "vmdk"}, {}, {Path: "/b/../a"}}
		}, `disks[0].format: unknown format "vmdk" (want qcow2, raw, or none to detect it)
disks[1].path: missing
disks[2].path: "/b/../a" is also disks[0]`},
		{"too many networks", func(vm *VM) {
			vm.Networks = []Network{{Type: NetUser}, {Type: NetUser}, {Type: NetUser}, {Type: NetUser}, {Type: NetUser}}
		}, "networks: too many network interfaces (5, at most 4)"},
		{"network types", func(vm *VM) {
			vm.Networks = []Network{{}, {Type: "tap"}, {Type: NetUser, Bridge: "br0"}, {Type: NetBridge, HostFwd: []string{"tcp::1-:1"}}}
		}, `networks[0].type: missing (user or bridge)
networks[1].type: unknown type "tap" (want user or bridge)
networks[2].bridge: only for type "bridge"
networks[3].bridge: missing (the name of the host bridge to attach to)
networks[3].hostfwd: only for type "user"`},
		{"bridge names", func(vm *VM) {
			vm.Networks = []Network{{Type: NetBridge, Bridge: "br0,x"}, {Type: NetBridge, Bridge: "a-very-long-bridge"}, {Type: NetBridge, Bridge: ".."}}
		}, `networks[0].bridge: invalid interface name "br0,x" (letters, digits, '.', '-' and '_' only)
networks[1].bridge: interface name too long ("a-very-long-bridge" is 18 bytes, at most 15)
networks[2].bridge: invalid interface name ".." (letters, digits, '.', '-' and '_' only)`},
		{"hostfwd", func(vm *VM) {
			vm.Networks = []Network{
				{Type: NetUser, HostFwd: []string{"tcp::2222-:22", "2222:22", "tcp::2222-:23", "udp::2222-:22"}},
				{Type: NetUser, HostFwd: []string{"tcp:127.0.0.1:2222-:22", "tcp:127.0.0.1:80-:80,guestfwd=x"}},
			}
		}, `networks[0].hostfwd[1]: "2222:22": want [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport
networks[0].hostfwd[2]: host port tcp 2222 is also forwarded by networks[0].hostfwd[0]
networks[1].hostfwd[0]: host port tcp 2222 is also forwarded by networks[0].hostfwd[0]
networks[1].hostfwd[1]: "tcp:127.0.0.1:80-:80,guestfwd=x": guest port "80,guestfwd=x" is not a number`},
		{"mac", func(vm *VM) {
			vm.Networks = []Network{
				{Type: NetUser, MAC: "52:54:00:12:34:56"},
				{Type: NetUser, MAC: "52:54:00:12:34:56"},
				{Type: NetUser, MAC: "52-54-00-12-34-58"},
				{Type: NetUser, MAC: "01:00:5e:00:00:01"},
			}
		}, `networks[1].mac: "52:54:00:12:34:56" is also the address of networks[0]
networks[2].mac: invalid MAC address "52-54-00-12-34-58" (want six hex bytes separated by colons, like 52:54:00:12:34:56)
networks[3].mac: "01:00:5e:00:00:01" is a multicast address`},
		{"boot", func(vm *VM) { vm.Boot = "usb" }, `boot: unknown boot device "usb" (want disk, cdrom or net)`},
		{"boot cdrom without one", func(vm *VM) { vm.Boot = BootCDROM }, `boot: "cdrom" but no cdrom is set`},
		{"boot disk without one", func(vm *VM) { vm.Boot = BootDisk; vm.Disks = nil; vm.Kernel = "/k" }, `boot: "disk" but the VM has no disks`},
		{"boot net without one", func(vm *VM) { vm.Boot = BootNet }, `boot: "net" but the VM has no network interfaces`},
		{"accel", func(vm *VM) { vm.Accel = "kvm:tcg" }, `accel: unknown accelerator "kvm:tcg" (want kvm, tcg, xen, hvf, whpx, nvmm)`},
		{"machine", func(vm *VM) { vm.Machine = "q35,accel=kvm" }, `machine: invalid machine type "q35,accel=kvm" (letters, digits, '.', '-' and '_' only)`},
		{"extra args", func(vm *VM) { vm.ExtraArgs = []string{"-x", "", "a\x00"} }, "extra_args[1]: empty argument\nextra_args[2]: contains a NUL byte"},
		{"extra args vmtui sets", func(vm *VM) { vm.ExtraArgs = []string{"-device", "virtio-rng-pci", "-daemonize", "--qmp", "stdio"} },
			"extra_args[2]: option \"-daemonize\" is set by vmtui itself: vmtui runs QEMU in the foreground of a session of its own and follows its process\n" +
				"extra_args[3]: option \"--qmp\" is set by vmtui itself: vmtui sets QEMU's monitors and talks to them"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := validVM()
			tt.change(vm)
			got := ""
			if err := vm.Validate(); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestValidateErrorsAreFieldErrors(t *testing.T) {
	vm := validVM()
	vm.File, vm.CPUs, vm.Boot = "/c/vms/web.toml", 0, "usb"
	err := vm.Validate()
	errs := err.(interface{ Unwrap() []error }).Unwrap()
	if len(errs) != 2 {
		t.Fatalf("got %d errors, want 2: %v", len(errs), err)
	}
	fe, ok := errs[0].(*FieldError)
	if !ok || fe.File != "/c/vms/web.toml" || fe.Field != "cpus" {
		t.Errorf("got %#v, want a *FieldError for cpus in /c/vms/web.toml", errs[0])
	}
}

func TestValidName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"web", ""},
		{"a", ""},
		{"Web-1.2_x", ""},
		{"1web", ""},
		{strings.Repeat("x", 63), ""},
		{"", "invalid VM name: empty"},
		{strings.Repeat("x", 64), "vm name too long (64 bytes, at most 63)"},
		{".web", `invalid VM name ".web": starts with '.'`},
		{"-web", `invalid VM name "-web": starts with '-'`},
		{"_web", `invalid VM name "_web": starts with '_'`},
		{"web/x", `invalid VM name "web/x": only letters, digits, '.', '-' and '_' are allowed`},
		{"wéb", `invalid VM name "wéb": only letters, digits, '.', '-' and '_' are allowed`},
		{"a,b", `invalid VM name "a,b": only letters, digits, '.', '-' and '_' are allowed`},
		{"42", `invalid VM name "42": all digits, which would be read as an ID`},
	}
	for _, tt := range tests {
		got := ""
		if err := ValidName(tt.name); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("ValidName(%q):\ngot  %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

func TestIsWord(t *testing.T) {
	for s, want := range map[string]bool{
		"q35": true, "pc-q35-7.2": true, "kvm": true, "br_lan.0": true, "-": true,
		"": false, "q35,accel=kvm": false, "a b": false, "a=b": false, "wéb": false, "a\x00": false,
	} {
		if got := IsWord(s); got != want {
			t.Errorf("IsWord(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestValidInterfaceName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"br0", ""},
		{"br-lan.0", ""},
		{strings.Repeat("b", 15), ""},
		{"", `invalid interface name "" (letters, digits, '.', '-' and '_' only)`},
		{"..", `invalid interface name ".." (letters, digits, '.', '-' and '_' only)`},
		{"br0,x=y", `invalid interface name "br0,x=y" (letters, digits, '.', '-' and '_' only)`},
		{strings.Repeat("b", 16), `interface name too long ("bbbbbbbbbbbbbbbb" is 16 bytes, at most 15)`},
	}
	for _, tt := range tests {
		got := ""
		if err := ValidInterfaceName(tt.name); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("ValidInterfaceName(%q):\ngot  %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

// TestErrorsInStableOrder decodes and validates one definition with many
// problems, again and again: the report is the same text each time, in the
// order of the fields.
func TestErrorsInStableOrder(t *testing.T) {
	const def = `id = 0
memroy = '1G'
memory = '1K'
cpus = 0
kernel = 'vmlinuz'
initrd = 'initrd.img'
append = "a\nb"
cdrom = 'x.iso'
boot = 'floppy'
accel = 'fast'
machine = 'q35,accel=kvm'
extra_args = ['', '-pidfile', '-S']
[[disks]]
path = 'a.img'
fomat = 'raw'
[[disks]]
path = '/a.img'
format = 'vmdk'
[[disks]]
path = '/a.img'
[[networks]]
type = 'bridge'
hostfwd = ['tcp::22-:22']
mac = '01:00:00:00:00:00'
[[networks]]
type = 'user'
bridge = 'br0'
hostfwd = ['tcp::2222-:22', 'tcp::2222-:23', 'x']
mac = '52:54:00:12:34:56'
[[networks]]
type = 'slirp'
mac = '52:54:00:12:34:56'
`
	var first, firstValidate string
	for i := range 100 {
		vm := &VM{Name: "web", File: "/c/vms/web.toml"}
		err := Decode(vm, []byte(def))
		if err == nil {
			t.Fatal("a bad definition decoded without error")
		}
		verr := vm.Validate()
		if verr == nil {
			t.Fatal("a bad definition validated")
		}
		if i == 0 {
			first, firstValidate = err.Error(), verr.Error()
			continue
		}
		if got := err.Error(); got != first {
			t.Fatalf("decode %d reported\n%s\ndecode 0 reported\n%s", i, got, first)
		}
		if got := verr.Error(); got != firstValidate {
			t.Fatalf("validate %d reported\n%s\nvalidate 0 reported\n%s", i, got, firstValidate)
		}
	}
	t.Logf("%d problems:\n%s", strings.Count(first, "\n")+1, first)
	var fields []string
	for _, line := range strings.Split(first, "\n") {
		_, rest, _ := strings.Cut(line, ": ")
		field, _, _ := strings.Cut(rest, ": ")
		fields = append(fields, field)
	}
	// Unknown keys first (in the file's order), then the fields in the
	// order of the schema.
	idx := func(f string) int {
		for i, g := range fields {
			if g == f {
				return i
			}
		}
		t.Fatalf("no %s in the report:\n%s", f, first)
		return -1
	}
	order := []string{"memroy", "disks.fomat", "id", "kernel", "initrd", "append", "cdrom",
		"disks[0].path", "disks[1].format", "disks[2].path", "networks[0].hostfwd", "networks[1].bridge",
		"networks[2].type", "boot", "accel", "machine", "extra_args[0]", "extra_args[1]", "extra_args[2]"}
	for i := 1; i < len(order); i++ {
		if idx(order[i-1]) > idx(order[i]) {
			t.Errorf("%s is reported after %s:\n%s", order[i-1], order[i], first)
		}
	}
}

func TestIsID(t *testing.T) {
	for s, want := range map[string]bool{"1": true, "007": true, "": false, "1a": false, "-1": false, "+1": false, " 1": false} {
		if got := IsID(s); got != want {
			t.Errorf("IsID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{"512M", 512 << 20, ""},
		{"1G", 1 << 30, ""},
		{"1.5G", 1536 << 20, ""},
		{"16m", 16 << 20, ""},
		{"4T", 4 << 40, ""},
		{"16777216", 16 << 20, ""},
		{"8M", 0, "8M is below the minimum of 16M"},
		{"0", 0, "0 is below the minimum of 16M"},
		{"16.5K", 0, "16896 is below the minimum of 16M"},
		{"100.5M", 0, "102912K is not a whole number of megabytes"},
		{"12Q", 0, `invalid size "12Q": unknown unit "Q" (want one of B, K, M, G, T, P, E)`},
		{"-1G", 0, `invalid size "-1G": negative`},
	}
	for _, tt := range tests {
		got, err := ParseMemory(tt.in)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tt.want || gotErr != tt.err {
			t.Errorf("ParseMemory(%q):\ngot  %d, %s\nwant %d, %s", tt.in, got, gotErr, tt.want, tt.err)
		}
	}
}

func TestFormatMemory(t *testing.T) {
	for n, want := range map[int64]string{256 << 20: "256M", 3 << 30: "3G", 1536 << 10: "1536K", 2 << 40: "2T", 1000: "1000", 0: "0"} {
		if got := FormatMemory(n); got != want {
			t.Errorf("FormatMemory(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseHostFwd(t *testing.T) {
	tests := []struct {
		in   string
		want HostFwd
		err  string
	}{
		{"tcp::2222-:22", HostFwd{Proto: "tcp", HostPort: 2222, GuestPort: 22}, ""},
		{"::2222-:22", HostFwd{Proto: "tcp", HostPort: 2222, GuestPort: 22}, ""},
		{"udp:127.0.0.1:5353-10.0.2.15:53", HostFwd{"udp", "127.0.0.1", 5353, "10.0.2.15", 53}, ""},
		{"tcp::65535-:1", HostFwd{Proto: "tcp", HostPort: 65535, GuestPort: 1}, ""},
		{"", HostFwd{}, `"": want [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`},
		{"tcp:2222-:22", HostFwd{}, `"tcp:2222-:22": want [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`},
		{"tcp::2222-22", HostFwd{}, `"tcp::2222-22": want [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`},
		{"sctp::2222-:22", HostFwd{}, `"sctp::2222-:22": unknown protocol "sctp" (want tcp or udp)`},
		{"tcp::0-:22", HostFwd{}, `"tcp::0-:22": host port 0 is out of range (1 to 65535)`},
		{"tcp::2222-:65536", HostFwd{}, `"tcp::2222-:65536": guest port 65536 is out of range (1 to 65535)`},
		{"tcp::99999999999999999999-:22", HostFwd{}, `"tcp::99999999999999999999-:22": host port 99999999999999999999 is out of range (1 to 65535)`},
		{"tcp::-:22", HostFwd{}, `"tcp::-:22": missing host port`},
		{"tcp::ssh-:22", HostFwd{}, `"tcp::ssh-:22": host port "ssh" is not a number`},
		{"tcp::+22-:22", HostFwd{}, `"tcp::+22-:22": host port "+22" is not a number`},
		{"tcp:localhost:2222-:22", HostFwd{}, `"tcp:localhost:2222-:22": host address "localhost" is not an IPv4 address`},
		{"tcp::2222-::1:22", HostFwd{}, `"tcp::2222-::1:22": guest port ":1:22" is not a number`},
		{"tcp::2222-[::1]:22", HostFwd{}, `"tcp::2222-[::1]:22": guest address "[" is not an IPv4 address`},
	}
	for _, tt := range tests {
		got, err := ParseHostFwd(tt.in)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tt.want || gotErr != tt.err {
			t.Errorf("ParseHostFwd(%q):\ngot  %+v, %s\nwant %+v, %s", tt.in, got, gotErr, tt.want, tt.err)
		}
	}
	if got, want := (HostFwd{Proto: "tcp", HostPort: 2222, GuestPort: 22}).String(), "tcp::2222-:22"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParseNetwork(t *testing.T) {
	tests := []struct {
		in   string
		want string // Network formatted with %+v
		err  string
	}{
		{"user", "{Type:user Bridge: HostFwd:[] MAC:}", ""},
		{"", "{Type:user Bridge: HostFwd:[] MAC:}", ""},
		{"user,hostfwd=tcp::2222-:22,hostfwd=udp::53-:53,mac=52:54:00:00:00:01", "{Type:user Bridge: HostFwd:[tcp::2222-:22 udp::53-:53] MAC:52:54:00:00:00:01}", ""},
		{"bridge,br=br0", "{Type:bridge Bridge:br0 HostFwd:[] MAC:}", ""},
		{"bridge", "", `network "bridge": bridge: missing (the name of the host bridge to attach to)`},
		{"tap,ifname=x", "", `network "tap,ifname=x": unknown option "ifname" (want hostfwd, mac or br)`},
		{"user,restrict", "", `network "user,restrict": option "restrict" is not key=value`},
		{"user,hostfwd=tcp::1-:1,hostfwd=tcp::1-:2", "", `network "user,hostfwd=tcp::1-:1,hostfwd=tcp::1-:2": hostfwd[1]: host port tcp 1 is also forwarded by hostfwd[0]`},
		{"vde", "", `network "vde": type: unknown type "vde" (want user or bridge)`},
	}
	for _, tt := range tests {
		n, err := ParseNetwork(tt.in)
		got, gotErr := "", ""
		if err != nil {
			gotErr = err.Error()
		} else {
			got = fmt.Sprintf("%+v", n)
		}
		if got != tt.want || gotErr != tt.err {
			t.Errorf("ParseNetwork(%q):\ngot  %s, %s\nwant %s, %s", tt.in, got, gotErr, tt.want, tt.err)
		}
	}
}

func TestReservedArg(t *testing.T) {
	tests := []struct {
		args []string
		i    int
		want string // a substring of the reason; "" when allowed
	}{
		{[]string{"-daemonize"}, 0, `"-daemonize" is set by vmtui itself`},
		{[]string{"--daemonize"}, 0, `"--daemonize" is set by vmtui itself`},
		{[]string{"-pidfile", "/x"}, 0, "pidfile"},
		{[]string{"-monitor", "stdio"}, 0, "monitors"},
		{[]string{"-mon", "chardev=x"}, 0, "monitors"},
		{[]string{"-qmp", "unix:/x"}, 0, "monitors"},
		{[]string{"-serial", "stdio"}, 0, "serial port"},
		{[]string{"-nographic"}, 0, "standard input"},
		{[]string{"-name", "x"}, 0, "names the guest"},
		{[]string{"-runas", "nobody"}, 0, "by its user"},
		{[]string{"-S"}, 0, "paused"},
		{[]string{"-incoming", "tcp:0:4444"}, 0, "migrate"},
		{[]string{"-chardev", "null,id=ser0"}, 0, `id "ser0"`},
		{[]string{"-chardev", "socket,path=/x,id=qmp1,server=on"}, 0, `id "qmp1"`},
		{[]string{"-chardev", "null,id=mine"}, 0, ""},
		{[]string{"-device", "virtio-rng-pci"}, 0, ""},
		{[]string{"-append", "-daemonize"}, 0, ""},
		{[]string{"-s"}, 0, ""},
		{[]string{"daemonize"}, 0, ""},
	}
	for _, tt := range tests {
		got := ReservedArg(tt.args, tt.i)
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("ReservedArg(%q, %d) = %q, want %q", tt.args, tt.i, got, tt.want)
		}
	}
}

func TestDisplayName(t *testing.T) {
	for name, want := range map[string]string{
		"web":                   "web",
		"a.b-c_d":               "a.b-c_d",
		"evil\x1b[2J":           `"evil\x1b[2J"`,
		"two\nlines":            `"two\nlines"`,
		"":                      `""`,
		"\u009b31m":             `"\u009b31m"`,
		"with space":            `"with space"`,
		"\xff\xfe":              `"\xff\xfe"`,
		strings.Repeat("a", 64): `"` + strings.Repeat("a", 64) + `"`,
	} {
		if got := DisplayName(name); got != want {
			t.Errorf("DisplayName(%q) = %s, want %s", name, got, want)
		}
	}
}

// TestFieldErrorQuotesHostileFile: a definition file's name may hold
// control characters; the error naming it escapes them.
func TestFieldErrorQuotesHostileFile(t *testing.T) {
	for file, want := range map[string]string{
		"/c/vms/web.toml":            "/c/vms/web.toml: name: bad",
		"/c/vms/e\x1b[31mvil\n.toml": `"/c/vms/e\x1b[31mvil\n.toml": name: bad`,
	} {
		if got := (&FieldError{File: file, Field: "name", Msg: "bad"}).Error(); got != want {
			t.Errorf("FieldError{File: %q}: %q, want %q", file, got, want)
		}
	}
}
