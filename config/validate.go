package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vmtui/vmtui/internal/units"
)

// FieldError is a problem with one field of a definition. Validate and the
// Store join one FieldError per problem with errors.Join, so that a person
// sees all of them at once.
type FieldError struct {
	// File is the definition file, or "" for a definition not read from
	// or written to a file yet.
	File string
	// Line is the line in File, or 0 when not known.
	Line int
	// Field is the key in the file, with indexes for lists
	// ("disks[1].path", "networks[0].hostfwd[2]"), or "" when the problem
	// is with the definition as a whole.
	Field string
	// Msg says what is wrong.
	Msg string
}

// Error formats the error as "FILE:LINE: FIELD: MSG", leaving out what is
// not known. A FILE holding control characters (a hostile file name) is
// quoted, escaping them.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		if q := strconv.Quote(e.File); q[1:len(q)-1] != e.File {
			b.WriteString(q)
		} else {
			b.WriteString(e.File)
		}
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// checker collects the FieldErrors of one definition.
type checker struct {
	file string
	errs []error
}

func (c *checker) add(field, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{File: c.file, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error { return errors.Join(c.errs...) }

// Validate checks the definition as the Store would before writing it, and
// returns every problem it finds as a *FieldError, joined with errors.Join
// (nil when there is none). Messages name vm.File when it is set. Zero
// Memory and CPUs are errors here: call SetDefaults first to have the
// defaults.
func (vm *VM) Validate() error {
	return vm.validate(true)
}

// ValidateNew checks a definition that is yet to be created: as Validate,
// except that it has no ID yet (the store assigns one). The new-VM form of
// the TUI checks its fields with it, the store before it creates the VM.
func (vm *VM) ValidateNew() error {
	return vm.validate(false)
}

func (vm *VM) validate(checkID bool) error {
	c := &checker{file: vm.File}
	if checkID && vm.ID <= 0 {
		c.add("id", "%d is not a positive number", vm.ID)
	}
	if vm.Name == "" {
		c.add("name", "missing")
	} else if err := ValidName(vm.Name); err != nil {
		c.add("name", "%s", err)
	}
	if vm.Template != "" {
		if err := ValidName(vm.Template); err != nil {
			c.add("template", "%s", err)
		} else if vm.Template == vm.Name {
			c.add("template", "a VM cannot be an instance of itself")
		}
	}
	if err := checkMemory(vm.Memory); err != nil {
		c.add("memory", "%s", err)
	}
	if vm.CPUs < 1 || vm.CPUs > MaxCPUs {
		c.add("cpus", "%d is out of range (1 to %d)", vm.CPUs, MaxCPUs)
	}

	c.path("kernel", vm.Kernel)
	c.path("initrd", vm.Initrd)
	if vm.Initrd != "" && vm.Kernel == "" {
		c.add("initrd", "needs a kernel")
	}
	c.text("append", vm.Append)
	if vm.Append != "" && vm.Kernel == "" {
		c.add("append", "needs a kernel")
	}
	c.path("cdrom", vm.CDROM)

	if len(vm.Disks) > MaxDisks {
		c.add("disks", "too many disks (%d, at most %d)", len(vm.Disks), MaxDisks)
	}
	seenDisk := map[string]int{}
	for i, d := range vm.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		if d.Path == "" {
			c.add(field+".path", "missing")
		} else if c.path(field+".path", d.Path) {
			if j, ok := seenDisk[filepath.Clean(d.Path)]; ok {
				c.add(field+".path", "%q is also disks[%d]", d.Path, j)
			} else {
				seenDisk[filepath.Clean(d.Path)] = i
			}
		}
		if d.Format != "" && !d.Format.IsKnown() {
			c.add(field+".format", "unknown format %q (want qcow2, raw, or none to detect it)", d.Format)
		}
		c.diskOptions(field, d)
	}

	c.networks(vm.Networks)
	c.devices(vm)

	switch vm.Boot {
	case BootDefault:
	case BootDisk:
		if len(vm.Disks) == 0 {
			c.add("boot", "%q but the VM has no disks", vm.Boot)
		}
	case BootCDROM:
		if vm.CDROM == "" {
			c.add("boot", "%q but no cdrom is set", vm.Boot)
		}
	case BootNet:
		if len(vm.Networks) == 0 {
			c.add("boot", "%q but the VM has no network interfaces", vm.Boot)
		}
	default:
		c.add("boot", "unknown boot device %q (want disk, cdrom or net)", vm.Boot)
	}

	if vm.Accel != "" {
		if err := ValidAccel(vm.Accel); err != nil {
			c.add("accel", "%s", err)
		}
	}
	if vm.Machine != "" && !IsWord(vm.Machine) {
		c.add("machine", "invalid machine type %q (letters, digits, '.', '-' and '_' only)", vm.Machine)
	}
	for i, a := range vm.ExtraArgs {
		if a == "" {
			c.add(fmt.Sprintf("extra_args[%d]", i), "empty argument")
		} else if strings.IndexByte(a, 0) >= 0 {
			c.add(fmt.Sprintf("extra_args[%d]", i), "contains a NUL byte")
		} else if why := ReservedArg(vm.ExtraArgs, i); why != "" {
			c.add(fmt.Sprintf("extra_args[%d]", i), "%s", why)
		}
	}

	if vm.Kernel == "" && len(vm.Disks) == 0 && vm.CDROM == "" {
		c.add("", "no kernel or disk/cdrom specified")
	}
	return c.err()
}

// path checks a path field that may be empty, and reports whether it is
// fine.
func (c *checker) path(field, p string) bool {
	if p == "" {
		return true
	}
	if !c.text(field, p) {
		return false
	}
	switch {
	case !filepath.IsAbs(p):
		c.add(field, "%q is not an absolute path", p)
	case len(p) >= 4096:
		c.add(field, "path too long (%d bytes, at most 4095)", len(p))
	default:
		return true
	}
	return false
}

// text checks that a string holds no NUL byte and no line break, and
// reports whether it is fine.
func (c *checker) text(field, s string) bool {
	switch {
	case strings.IndexByte(s, 0) >= 0:
		c.add(field, "contains a NUL byte")
	case strings.ContainsAny(s, "\n\r"):
		c.add(field, "contains a line break")
	default:
		return true
	}
	return false
}

func (c *checker) networks(nets []Network) {
	if len(nets) > MaxNetworks {
		c.add("networks", "too many network interfaces (%d, at most %d)", len(nets), MaxNetworks)
	}
	seenMAC := map[string]int{}
	type fwdAt struct {
		fwd   HostFwd
		field string
	}
	var fwds []fwdAt
	for i, n := range nets {
		field := fmt.Sprintf("networks[%d]", i)
		switch n.Type {
		case NetUser:
			if n.Bridge != "" {
				c.add(field+".bridge", "only for type %q", NetBridge)
			}
		case NetBridge:
			if n.Bridge == "" {
				c.add(field+".bridge", "missing (the name of the host bridge to attach to)")
			} else if err := ValidInterfaceName(n.Bridge); err != nil {
				c.add(field+".bridge", "%s", err)
			}
			if len(n.HostFwd) > 0 {
				c.add(field+".hostfwd", "only for type %q", NetUser)
			}
		case "":
			c.add(field+".type", "missing (user or bridge)")
		default:
			c.add(field+".type", "unknown type %q (want user or bridge)", n.Type)
		}
		for j, s := range n.HostFwd {
			ffield := fmt.Sprintf("%s.hostfwd[%d]", field, j)
			fwd, err := ParseHostFwd(s)
			if err != nil {
				c.add(ffield, "%s", err)
				continue
			}
			for _, prev := range fwds {
				if fwd.conflicts(prev.fwd) {
					c.add(ffield, "host port %s %d is also forwarded by %s", fwd.Proto, fwd.HostPort, prev.field)
					break
				}
			}
			fwds = append(fwds, fwdAt{fwd, ffield})
		}
		if n.MAC != "" {
			if err := ValidMAC(n.MAC); err != nil {
				c.add(field+".mac", "%s", err)
			} else if j, ok := seenMAC[strings.ToLower(n.MAC)]; ok {
				c.add(field+".mac", "%q is also the address of networks[%d]", n.MAC, j)
			} else {
				seenMAC[strings.ToLower(n.MAC)] = i
			}
		}
	}
}

// ValidName checks a VM name the way vmctl does: letters, digits, '.', '-'
// and '_', not starting with '.', '-' or '_', at most MaxNameLen bytes; and,
// since an all-digit argument is an ID, not all digits.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("invalid VM name: empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("vm name too long (%d bytes, at most %d)", len(name), MaxNameLen)
	case name[0] == '.' || name[0] == '-' || name[0] == '_':
		return fmt.Errorf("invalid VM name %q: starts with %q", name, name[0])
	case !IsWord(name):
		return fmt.Errorf("invalid VM name %q: only letters, digits, '.', '-' and '_' are allowed", name)
	case IsID(name):
		return fmt.Errorf("invalid VM name %q: all digits, which would be read as an ID", name)
	}
	return nil
}

// DisplayName is a VM name as it may be printed: the name itself when it is
// valid (ValidName), else quoted as Go quotes strings, control characters
// escaped. Names come from the names of definition files, which may hold
// anything, escape sequences and line breaks included: printed raw to a
// terminal they would be obeyed.
func DisplayName(name string) string {
	if ValidName(name) != nil {
		return strconv.Quote(name)
	}
	return name
}

// IsWord reports whether s is a word as definitions spell VM names,
// machine types, accelerators and interface names: one or more ASCII
// letters, digits, '.', '-' and '_'. Nothing else can reach QEMU's option
// parser from those fields: no ',' (an option separator), '=' or space.
// Each field adds its own limits (ValidName, ValidInterfaceName).
func IsWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// Accelerators are the accelerators a definition may name: QEMU's.
var Accelerators = []string{"kvm", "tcg", "xen", "hvf", "whpx", "nvmm"}

// ValidAccel checks an accelerator name against Accelerators.
func ValidAccel(a string) error {
	for _, known := range Accelerators {
		if a == known {
			return nil
		}
	}
	return fmt.Errorf("unknown accelerator %q (want %s)", a, strings.Join(Accelerators, ", "))
}

// ParseMemory parses a memory size given in scan_scaled(3) syntax
// (units.ParseSize) and checks it as Validate does: a whole number of MiB,
// from MinMemory to MaxMemory. Where vmctl rounds a size down to the MiB with
// a warning, ParseMemory refuses it.
func ParseMemory(s string) (int64, error) {
	n, err := units.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if err := checkMemory(n); err != nil {
		return 0, err
	}
	return n, nil
}

func checkMemory(n int64) error {
	switch {
	case n < MinMemory:
		return fmt.Errorf("%s is below the minimum of %s", FormatMemory(n), FormatMemory(MinMemory))
	case n > MaxMemory:
		return fmt.Errorf("%s is above the maximum of %s", FormatMemory(n), FormatMemory(MaxMemory))
	case n%(1<<20) != 0:
		return fmt.Errorf("%s is not a whole number of megabytes", FormatMemory(n))
	}
	return nil
}

// ValidInterfaceName checks the name of a host network interface: a word
// (IsWord) of at most 15 bytes (IFNAMSIZ less the NUL), neither "." nor "..".
func ValidInterfaceName(name string) error {
	switch {
	case len(name) > 15:
		return fmt.Errorf("interface name too long (%q is %d bytes, at most 15)", name, len(name))
	case name == "." || name == ".." || !IsWord(name):
		return fmt.Errorf("invalid interface name %q (letters, digits, '.', '-' and '_' only)", name)
	}
	return nil
}

// ValidMAC checks a unicast MAC address written as QEMU wants it: six hex
// bytes separated by colons.
func ValidMAC(s string) error {
	hw, err := net.ParseMAC(s)
	if err != nil || len(s) != 17 || s[2] != ':' {
		return fmt.Errorf("invalid MAC address %q (want six hex bytes separated by colons, like 52:54:00:12:34:56)", s)
	}
	if hw[0]&1 != 0 {
		return fmt.Errorf("%q is a multicast address", s)
	}
	return nil
}

// HostFwd is a port forward of a user-mode network, from a port of the host
// to a port of the guest.
type HostFwd struct {
	// Proto is "tcp" or "udp".
	Proto string
	// HostAddr is the host's IPv4 address to listen on, "" for all.
	HostAddr string
	// HostPort is the port on the host.
	HostPort int
	// GuestAddr is the guest's IPv4 address, "" for the guest's DHCP
	// address.
	GuestAddr string
	// GuestPort is the port in the guest.
	GuestPort int
}

// hostFwdSyntax is QEMU's syntax for a port forward.
const hostFwdSyntax = "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport"

// ParseHostFwd parses a port forward in QEMU's hostfwd syntax,
// "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport", such as
// "tcp::2222-:22". An empty protocol means tcp, as in QEMU.
func ParseHostFwd(s string) (HostFwd, error) {
	fail := func(format string, args ...any) (HostFwd, error) {
		return HostFwd{}, fmt.Errorf("%q: %s", s, fmt.Sprintf(format, args...))
	}
	proto, rest, ok1 := strings.Cut(s, ":")
	host, guest, ok2 := strings.Cut(rest, "-")
	hostAddr, hostPort, ok3 := strings.Cut(host, ":")
	guestAddr, guestPort, ok4 := strings.Cut(guest, ":")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return fail("want %s", hostFwdSyntax)
	}
	f := HostFwd{Proto: proto, HostAddr: hostAddr, GuestAddr: guestAddr}
	switch proto {
	case "":
		f.Proto = "tcp"
	case "tcp", "udp":
	default:
		return fail("unknown protocol %q (want tcp or udp)", proto)
	}
	for _, a := range []struct{ what, addr string }{{"host", hostAddr}, {"guest", guestAddr}} {
		if a.addr == "" {
			continue
		}
		if ip := net.ParseIP(a.addr); ip == nil || ip.To4() == nil || strings.Contains(a.addr, ":") {
			return fail("%s address %q is not an IPv4 address", a.what, a.addr)
		}
	}
	var err error
	if f.HostPort, err = parsePort("host", hostPort); err != nil {
		return fail("%s", err)
	}
	if f.GuestPort, err = parsePort("guest", guestPort); err != nil {
		return fail("%s", err)
	}
	return f, nil
}

func parsePort(what, s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing %s port", what)
	}
	if !IsID(s) {
		return 0, fmt.Errorf("%s port %q is not a number", what, s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s port %s is out of range (1 to 65535)", what, s)
	}
	return n, nil
}

// String returns the forward in QEMU's syntax, with the protocol spelled
// out.
func (f HostFwd) String() string {
	return fmt.Sprintf("%s:%s:%d-%s:%d", f.Proto, f.HostAddr, f.HostPort, f.GuestAddr, f.GuestPort)
}

// conflicts reports whether two forwards would listen on the same host
// port.
func (f HostFwd) conflicts(g HostFwd) bool {
	return f.Proto == g.Proto && f.HostPort == g.HostPort &&
		(f.HostAddr == g.HostAddr || f.HostAddr == "" || g.HostAddr == "")
}

// ParseNetwork parses a network interface as given on the command line
// (vmtui start --net): a type followed by comma-separated options, in the
// spirit of QEMU's -nic:
//
//	user[,hostfwd=FWD]...[,mac=MAC]
//	bridge,br=BRIDGE[,mac=MAC]
//
// The result is checked as Validate checks a definition's networks.
func ParseNetwork(spec string) (Network, error) {
	fail := func(format string, args ...any) (Network, error) {
		return Network{}, fmt.Errorf("network %q: %s", spec, fmt.Sprintf(format, args...))
	}
	typ, opts, _ := strings.Cut(spec, ",")
	n := Network{Type: NetworkType(typ)}
	if typ == "" {
		n.Type = NetUser
	}
	if opts != "" {
		for _, opt := range strings.Split(opts, ",") {
			key, val, ok := strings.Cut(opt, "=")
			if !ok {
				return fail("option %q is not key=value", opt)
			}
			switch key {
			case "hostfwd":
				n.HostFwd = append(n.HostFwd, val)
			case "mac":
				n.MAC = val
			case "br", "bridge":
				n.Bridge = val
			default:
				return fail("unknown option %q (want hostfwd, mac or br)", key)
			}
		}
	}
	c := &checker{}
	c.networks([]Network{n})
	if len(c.errs) > 0 {
		var msgs []string
		for _, err := range c.errs {
			fe := err.(*FieldError)
			field := strings.TrimPrefix(strings.TrimPrefix(fe.Field, "networks[0]"), ".")
			msgs = append(msgs, field+": "+strings.ReplaceAll(fe.Msg, "networks[0].", ""))
		}
		return fail("%s", strings.Join(msgs, "; "))
	}
	return n, nil
}

// reservedOptions are the QEMU options vmtui sets itself, or that would take
// QEMU out of its hands, with the reason: extra_args may not give them.
var reservedOptions = map[string]string{
	"daemonize":  "vmtui runs QEMU in the foreground of a session of its own and follows its process",
	"pidfile":    "vmtui sets QEMU's pidfile, by which it finds the VM's process",
	"qmp":        "vmtui sets QEMU's monitors and talks to them",
	"qmp-pretty": "vmtui sets QEMU's monitors and talks to them",
	"monitor":    "vmtui sets QEMU's monitors and talks to them",
	"mon":        "vmtui sets QEMU's monitors and talks to them",
	"serial":     "vmtui sets the serial port, the VM's console",
	"nographic":  "it puts a serial port and a monitor on QEMU's standard input and output, which vmtui does not connect",
	"name":       "vmtui names the guest and its process",
	"runas":      "vmtui knows the VM's QEMU by its user",
	"run-with":   "vmtui knows the VM's QEMU by its user",
	"chroot":     "QEMU must keep reaching the VM's runtime files",
	"S":          "vmtui decides whether the VM starts paused; pause it with vmtui pause",
	"incoming":   "vmtui does not migrate VMs",
}

// reservedChardevs are the ids of the character devices vmtui defines:
// its monitors, the serial console and the shares' sockets (fs0...).
var reservedChardevs = []string{"qmp0", "qmp1", "ser0", "fs0", "fs1", "fs2", "fs3", "fs4", "fs5", "fs6", "fs7"}

// ReservedArg says why args[i], an argument of extra_args, may not be
// given, or returns "" when it may. QEMU reads "--opt" as "-opt".
func ReservedArg(args []string, i int) string {
	a := args[i]
	if !strings.HasPrefix(a, "-") {
		return ""
	}
	opt := strings.TrimPrefix(a[1:], "-")
	if why, ok := reservedOptions[opt]; ok {
		return fmt.Sprintf("option %q is set by vmtui itself: %s", a, why)
	}
	if opt == "chardev" && i+1 < len(args) {
		for _, kv := range strings.Split(args[i+1], ",") {
			if id, ok := strings.CutPrefix(kv, "id="); ok && slices.Contains(reservedChardevs, id) {
				return fmt.Sprintf("option %q with id %q: vmtui defines the character device %s itself", a, id, id)
			}
		}
	}
	return ""
}
