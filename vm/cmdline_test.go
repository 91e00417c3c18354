package vm

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestCmdline(t *testing.T) {
	base := Spec{
		Name: "web", Memory: 512 << 20, CPUs: 2, QMPFD: 3,
		PIDFile: "/run/vmtui/web/qemu.pid", SerialLog: "/var/log/vmtui/web.log",
	}
	tests := []struct {
		name string
		mod  func(*Spec)
		want []string
	}{
		{
			name: "kernel",
			mod: func(s *Spec) {
				s.Kernel, s.Initrd, s.Append = "/k/vmlinuz", "/k/initrd.img", "console=ttyS0 quiet"
				s.Accel = []string{"tcg"}
			},
			want: []string{
				"-nodefaults", "-no-user-config", "-display", "none",
				"-name", "guest=web,process=qemu-web,debug-threads=on",
				"-machine", "q35", "-accel", "tcg", "-m", "512M", "-smp", "2",
				"-chardev", "socket,id=qmp0,fd=3,server=on,wait=off", "-mon", "chardev=qmp0,mode=control",
				"-chardev", "pty,id=ser0,logfile=/var/log/vmtui/web.log,logappend=on", "-serial", "chardev:ser0",
				"-pidfile", "/run/vmtui/web/qemu.pid",
				"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", "console=ttyS0 quiet",
			},
		},
		{
			name: "disk, cdrom, network, default accel",
			mod: func(s *Spec) {
				s.Disks = []DiskSpec{{Path: "/d/a,b.qcow2", Format: "qcow2"}}
				s.CDROM = "/iso/install.iso"
				s.Boot = "cdrom"
				s.Nets = []NetSpec{{HostFwd: []string{"tcp::2222-:22"}}}
				s.Extra = []string{"-device", "virtio-rng-pci"}
			},
			want: []string{
				"-nodefaults", "-no-user-config", "-display", "none",
				"-name", "guest=web,process=qemu-web,debug-threads=on",
				"-machine", "q35", "-accel", "kvm", "-accel", "tcg", "-m", "512M", "-smp", "2",
				"-chardev", "socket,id=qmp0,fd=3,server=on,wait=off", "-mon", "chardev=qmp0,mode=control",
				"-chardev", "pty,id=ser0,logfile=/var/log/vmtui/web.log,logappend=on", "-serial", "chardev:ser0",
				"-pidfile", "/run/vmtui/web/qemu.pid",
				"-blockdev", "driver=file,node-name=disk0-file,filename=/d/a,,b.qcow2",
				"-blockdev", "driver=qcow2,node-name=disk0,file=disk0-file",
				"-device", "virtio-blk-pci,drive=disk0,id=disk0-dev",
				"-blockdev", "driver=file,node-name=cd0-file,read-only=on,filename=/iso/install.iso",
				"-blockdev", "driver=raw,node-name=cd0,read-only=on,file=cd0-file",
				"-device", "ide-cd,drive=cd0,id=cd0-dev,bootindex=0",
				"-netdev", "user,id=net0,hostfwd=tcp::2222-:22", "-device", "virtio-net-pci,netdev=net0,id=net0-dev",
				"-device", "virtio-rng-pci",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.mod(&s)
			got, err := Cmdline(s)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Cmdline:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// A comma in a path must not add options: QEMU reads ",," as a comma.
func TestCmdlineCommaInjection(t *testing.T) {
	s := Spec{Name: "x", Memory: 64 << 20, CPUs: 1, QMPFD: 3,
		SerialLog: "/tmp/a,logfile=/etc/passwd",
		Disks:     []DiskSpec{{Path: "/tmp/d.img,driver=host_device", Format: "raw"}},
	}
	argv, err := Cmdline(s)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(argv, " ")
	for _, bad := range []string{",logfile=/etc/passwd", ",driver=host_device"} {
		if strings.Contains(strings.ReplaceAll(joined, ",,", ""), bad) {
			t.Errorf("argv %q lets %q through unescaped", argv, bad)
		}
	}
	if !strings.Contains(joined, "filename=/tmp/d.img,,driver=host_device") {
		t.Errorf("argv %q: disk path not escaped", argv)
	}
}

func TestCmdlineRefuses(t *testing.T) {
	ok := Spec{Name: "x", Memory: 64 << 20, CPUs: 1, QMPFD: 3}
	tests := []struct {
		name string
		mod  func(*Spec)
		want string
	}{
		{"bad name", func(s *Spec) { s.Name = "-x" }, "invalid VM name"},
		{"digits name", func(s *Spec) { s.Name = "123" }, "all digits"},
		{"newline in kernel", func(s *Spec) { s.Kernel = "/k\n-foo" }, "newline"},
		{"initrd without kernel", func(s *Spec) { s.Initrd = "/i" }, "need a kernel"},
		{"bad format", func(s *Spec) { s.Disks = []DiskSpec{{Path: "/d", Format: "vmdk"}} }, "unknown format"},
		{"bad hostfwd", func(s *Spec) { s.Nets = []NetSpec{{HostFwd: []string{"tcp::99999-:22"}}} }, "out of range"},
		{"hostfwd injection", func(s *Spec) { s.Nets = []NetSpec{{HostFwd: []string{"tcp::1-:2,smb=/"}}} }, "invalid port forward"},
		{"bridge name", func(s *Spec) { s.Nets = []NetSpec{{Type: "bridge", Bridge: "br0,x=y"}} }, "invalid bridge"},
		{"no bridge name", func(s *Spec) { s.Nets = []NetSpec{{Type: "bridge"}} }, "invalid bridge"},
		{"empty accelerator", func(s *Spec) { s.Accel = []string{""} }, "invalid accelerator"},
		{"machine", func(s *Spec) { s.Machine = "q35,accel=kvm" }, "invalid machine"},
		{"boot", func(s *Spec) { s.Boot = "floppy" }, "unknown boot"},
		{"no memory", func(s *Spec) { s.Memory = 0 }, "memory"},
	}
	for _, tt := range tests {
		s := ok
		tt.mod(&s)
		_, err := Cmdline(s)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestParseAccel(t *testing.T) {
	for in, want := range map[string][]string{"": nil, "kvm": {"kvm"}, "tcg": {"tcg"}, "kvm:tcg": {"kvm", "tcg"}} {
		got, err := ParseAccel(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseAccel(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseAccel("kvm:fast"); err == nil {
		t.Error("ParseAccel(kvm:fast) succeeded")
	}
}

// The table is vmctl's, byte for byte.
func TestWriteTable(t *testing.T) {
	list := []Status{
		{ID: 1, Name: "web", PID: 4242, VCPUs: 2, MaxMem: 1 << 30, CurMem: 64 << 20, TTY: "/dev/pts/5", Owner: "root:root", State: StateRunning},
		{ID: 2, Name: "db", VCPUs: 1, MaxMem: 512 << 20, Owner: "alice:staff", State: StateStopped},
		{ID: 13, Name: "build", PID: 77, VCPUs: 4, MaxMem: 2 << 30, CurMem: 1536 << 20, TTY: "/dev/pts/12", Owner: "root:root", State: StatePaused},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, list); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n" +
		"    1  4242     2    1.0G   64.0M   pts/5    root:root  running web\n" +
		"    2     -     1    512M       -       -  alice:staff  stopped db\n" +
		"   13    77     4    2.0G    1.5G  pts/12    root:root   paused build\n"
	if b.String() != want {
		t.Errorf("table:\ngot\n%s\nwant\n%s", b.String(), want)
	}
}
