package vm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vmtui/vmtui/config"
)

// The QEMU command line is built from typed devices, each rendering its own
// arguments, in a fixed order, so that the same definition always gives the
// same argv (golden-testable, and comparable with a running QEMU's
// /proc/PID/cmdline). No shell ever sees it.

// DefaultBinary is the QEMU system emulator vmtui runs.
const DefaultBinary = "qemu-system-x86_64"

// DefaultMachine is the machine type when a definition names none.
const DefaultMachine = "q35"

// device renders its part of the command line.
type device interface {
	args() ([]string, error)
}

// Cmdline returns QEMU's arguments (without the binary) for s.
func Cmdline(s Spec) ([]string, error) {
	if err := config.ValidName(s.Name); err != nil {
		return nil, err
	}
	if s.Memory <= 0 {
		return nil, fmt.Errorf("vm %s: memory must be positive", s.Name)
	}
	if s.CPUs <= 0 {
		return nil, fmt.Errorf("vm %s: vcpus must be positive", s.Name)
	}
	for i := range s.Extra {
		if why := config.ReservedArg(s.Extra, i); why != "" {
			return nil, fmt.Errorf("vm %s: extra_args[%d]: %s", s.Name, i, why)
		}
	}
	devs := []device{
		fixedArgs{"-nodefaults", "-no-user-config", "-display", "none"},
		nameDev{s.Name},
		machineDev{s.Machine},
		accelDev(s.Accel),
		memoryDev{size: s.Memory, max: s.MaxMemory, hugePages: s.HugePages, mlock: s.MLock, prealloc: s.Prealloc,
			file: s.MemFile, fileShare: s.MemFileShare, shared: len(s.Shares) > 0, id: s.MemBackendID},
		smpDev{cpus: s.CPUs, sockets: s.Sockets, cores: s.Cores, threads: s.Threads},
		qmpDev{id: "qmp0", fd: s.QMPFD, path: s.QMPPath},
		serialDev{log: s.SerialLog},
		pidDev{s.PIDFile},
		kernelDev{kernel: s.Kernel, initrd: s.Initrd, append: s.Append},
	}
	if s.EventsFD > 0 {
		devs = append(devs, qmpDev{id: "qmp1", fd: s.EventsFD})
	}
	devs = append(devs, scsiController(s.Disks)...)
	for i, d := range s.Disks {
		devs = append(devs, diskDev{index: i, DiskSpec: d, bootFirst: s.Boot == "disk" && i == 0})
	}
	if s.CDROM != "" {
		devs = append(devs, cdromDev{path: s.CDROM, bootFirst: s.Boot == "cdrom"})
	}
	for i, n := range s.Nets {
		devs = append(devs, netDev{index: i, NetSpec: n})
	}
	shares, err := shareDevs(s.Shares)
	if err != nil {
		return nil, fmt.Errorf("vm %s: %w", s.Name, err)
	}
	devs = append(devs, shares...)
	if s.CID != 0 {
		devs = append(devs, vsockDev{s.CID})
	}
	for i, a := range s.HostDevs {
		devs = append(devs, hostDev{index: i, addr: a})
	}
	if s.FreePageReporting {
		devs = append(devs, balloonDev{})
	}
	devs = append(devs, hotplugPortsDev{machine: s.Machine, n: s.HotplugSlots})
	devs = append(devs, bootDev{s.Boot})
	if s.Paused {
		devs = append(devs, fixedArgs{"-S"})
	}
	if s.LoadVM != "" {
		// -loadvm takes a plain string, not an option list.
		devs = append(devs, fixedArgs{"-loadvm", s.LoadVM})
	}
	if s.Incoming != "" {
		if err := checkValue("incoming", s.Incoming); err != nil {
			return nil, err
		}
		devs = append(devs, fixedArgs{"-incoming", s.Incoming})
	}
	devs = append(devs, fixedArgs(s.Extra))
	var argv []string
	for _, d := range devs {
		a, err := d.args()
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", s.Name, err)
		}
		argv = append(argv, a...)
	}
	return argv, nil
}

// escape doubles commas, as QEMU's option parser reads ",," as a literal
// comma: a path with a comma cannot inject options.
func escape(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// checkValue refuses what no option value may hold.
func checkValue(what, v string) error {
	if strings.ContainsAny(v, "\x00\n") {
		return fmt.Errorf("%s %q contains a NUL or newline", what, v)
	}
	return nil
}

// opts renders key=value pairs, escaping values.
func opts(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteByte('=')
		b.WriteString(escape(kv[i+1]))
	}
	return b.String()
}

type fixedArgs []string

func (f fixedArgs) args() ([]string, error) {
	for _, a := range f {
		if err := checkValue("argument", a); err != nil {
			return nil, err
		}
	}
	return f, nil
}

type nameDev struct{ name string }

func (n nameDev) args() ([]string, error) {
	// process= names the process (comm) qemu-NAME; /proc/PID/comm holds 15 bytes.
	return []string{"-name", opts("guest", n.name, "process", "qemu-"+n.name, "debug-threads", "on")}, nil
}

type machineDev struct{ typ string }

func (m machineDev) args() ([]string, error) {
	t := m.typ
	if t == "" {
		t = DefaultMachine
	}
	if !config.IsWord(t) {
		return nil, fmt.Errorf("invalid machine type %q", t)
	}
	return []string{"-machine", t}, nil
}

type accelDev []string

func (a accelDev) args() ([]string, error) {
	if len(a) == 0 {
		a = []string{"kvm", "tcg"}
	}
	var argv []string
	for _, x := range a {
		if !config.IsWord(x) {
			return nil, fmt.Errorf("invalid accelerator %q", x)
		}
		argv = append(argv, "-accel", x)
	}
	return argv, nil
}

// ParseAccel splits an accelerator setting such as "kvm", "tcg" or
// "kvm:tcg" (a preference list, as -machine accel= spells it) into the
// list -accel options take one at a time.
func ParseAccel(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var list []string
	for _, a := range strings.Split(s, ":") {
		if err := config.ValidAccel(a); err != nil {
			return nil, err
		}
		list = append(list, a)
	}
	return list, nil
}

type qmpDev struct {
	id   string
	fd   int
	path string
}

func (q qmpDev) args() ([]string, error) {
	var sock string
	switch {
	case q.fd > 0:
		sock = "fd=" + strconv.Itoa(q.fd)
	case q.path != "":
		if err := checkValue("QMP socket", q.path); err != nil {
			return nil, err
		}
		sock = opts("path", q.path)
	default:
		return nil, errors.New("no QMP socket")
	}
	return []string{"-chardev", "socket,id=" + q.id + "," + sock + ",server=on,wait=off", "-mon", "chardev=" + q.id + ",mode=control"}, nil
}

// SerialLabel is the chardev id of the serial console.
const SerialLabel = "ser0"

type serialDev struct{ log string }

func (s serialDev) args() ([]string, error) {
	c := "pty,id=" + SerialLabel
	if s.log != "" {
		if err := checkValue("serial log", s.log); err != nil {
			return nil, err
		}
		c += "," + opts("logfile", s.log) + ",logappend=on"
	}
	return []string{"-chardev", c, "-serial", "chardev:" + SerialLabel}, nil
}

type pidDev struct{ path string }

func (p pidDev) args() ([]string, error) {
	if p.path == "" {
		return nil, nil
	}
	if err := checkValue("pidfile", p.path); err != nil {
		return nil, err
	}
	// -pidfile takes a plain path, not an option string: no comma escaping.
	return []string{"-pidfile", p.path}, nil
}

type kernelDev struct{ kernel, initrd, append string }

func (k kernelDev) args() ([]string, error) {
	if k.kernel == "" {
		if k.initrd != "" || k.append != "" {
			return nil, errors.New("initrd and kernel command line need a kernel")
		}
		return nil, nil
	}
	for _, v := range []struct{ what, v string }{{"kernel", k.kernel}, {"initrd", k.initrd}, {"kernel command line", k.append}} {
		if err := checkValue(v.what, v.v); err != nil {
			return nil, err
		}
	}
	// -kernel, -initrd and -append take plain strings.
	argv := []string{"-kernel", k.kernel}
	if k.initrd != "" {
		argv = append(argv, "-initrd", k.initrd)
	}
	if k.append != "" {
		argv = append(argv, "-append", k.append)
	}
	return argv, nil
}

type diskDev struct {
	index int
	DiskSpec
	bootFirst bool
}

func (d diskDev) args() ([]string, error) {
	if err := checkValue("disk", d.Path); err != nil {
		return nil, err
	}
	if d.Format != "qcow2" && d.Format != "raw" && d.Format != "qcow" {
		return nil, fmt.Errorf("disk %q: unknown format %q", d.Path, d.Format)
	}
	node := fmt.Sprintf("disk%d", d.index)
	o, err := d.nodeOpts()
	if err != nil {
		return nil, err
	}
	front, err := d.frontend(node)
	if err != nil {
		return nil, err
	}
	return append([]string{
		"-blockdev", "driver=file,node-name=" + node + "-file" + o + "," + opts("filename", d.Path),
		"-blockdev", "driver=" + d.Format + ",node-name=" + node + o + d.formatNodeOpts() + ",file=" + node + "-file",
	}, front...), nil
}

type cdromDev struct {
	path      string
	bootFirst bool
}

func (c cdromDev) args() ([]string, error) {
	if err := checkValue("cdrom", c.path); err != nil {
		return nil, err
	}
	dev := "ide-cd,drive=cd0,id=cd0-dev"
	if c.bootFirst {
		dev += ",bootindex=0"
	}
	return []string{
		"-blockdev", "driver=file,node-name=cd0-file,read-only=on," + opts("filename", c.path),
		"-blockdev", "driver=raw,node-name=cd0,read-only=on,file=cd0-file",
		"-device", dev,
	}, nil
}

type netDev struct {
	index int
	NetSpec
}

func (n netDev) args() ([]string, error) {
	id := fmt.Sprintf("net%d", n.index)
	var backend string
	switch n.Type {
	case "", "user":
		backend = "user,id=" + id
		for _, f := range n.HostFwd {
			fwd, err := config.ParseHostFwd(f)
			if err != nil {
				return nil, fmt.Errorf("invalid port forward %w", err)
			}
			backend += "," + opts("hostfwd", fwd.String())
		}
	case "bridge":
		if err := config.ValidInterfaceName(n.Bridge); err != nil {
			return nil, fmt.Errorf("invalid bridge: %w", err)
		}
		if len(n.HostFwd) > 0 {
			return nil, fmt.Errorf("port forwards need user networking, not bridge %s", n.Bridge)
		}
		backend = "bridge,id=" + id + ",br=" + n.Bridge
	default:
		return nil, fmt.Errorf("unknown network type %q (want user or bridge)", n.Type)
	}
	dev := "virtio-net-pci,netdev=" + id + ",id=" + id + "-dev"
	if n.MAC != "" {
		if err := config.ValidMAC(n.MAC); err != nil {
			return nil, err
		}
		dev += ",mac=" + n.MAC
	}
	return []string{"-netdev", backend, "-device", dev}, nil
}

type bootDev struct{ boot string }

func (b bootDev) args() ([]string, error) {
	switch b.boot {
	case "", "disk", "cdrom":
		return nil, nil // bootindex on the device
	case "net":
		return []string{"-boot", "order=n"}, nil
	}
	return nil, fmt.Errorf("unknown boot device %q (want disk, cdrom or net)", b.boot)
}
