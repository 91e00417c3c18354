package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/console"
	"github.com/vmtui/vmtui/vm"
)

// The VM commands, with vmctl's verbs, flags and messages. Like vmctl,
// messages about what happened go to standard error prefixed with the
// program's name; tables go to standard output.

func startCommand() *command {
	return &command{
		name:     "start",
		synopsis: "[-c] [--fresh] [-B device] [-b kernel] [-d disk]... [-m size] [-n switch]... [-r iso] [--cpus n] [--initrd path] [--append cmdline] [--accel a] [--net spec]... [--share dir:tag[:ro]]... [-t template [-p hostport:guestport]...] id|name",
		about:    "Start a VM; with flags and a new name, define it first.",
		run:      runStart,
	}
}

func defineCommand() *command {
	return &command{
		name:     "define",
		synopsis: "[-B device] [-b kernel] [-d disk]... [-m size] [-n switch]... [-r iso] [--cpus n] [--initrd path] [--append cmdline] [--accel a] [--net spec]... [--share dir:tag[:ro]]... [-t template [-p hostport:guestport]...] name",
		about:    "Define a new VM without starting it.",
		run:      runDefine,
	}
}

func stopCommand() *command {
	return &command{
		name:     "stop",
		synopsis: "[-fw] id|name|-a",
		about:    "Stop a VM: power it down, or with -f kill it.",
		run:      runStop,
	}
}

func pauseCommand() *command {
	return &command{
		name:     "pause",
		synopsis: "id|name",
		about:    "Pause a running VM.",
		run:      func(ctx context.Context, e *env, args []string) error { return runPause(ctx, e, args, true) },
	}
}

func unpauseCommand() *command {
	return &command{
		name:     "unpause",
		synopsis: "id|name",
		about:    "Resume a paused VM.",
		run:      func(ctx context.Context, e *env, args []string) error { return runPause(ctx, e, args, false) },
	}
}

func waitCommand() *command {
	return &command{
		name:     "wait",
		synopsis: "id|name",
		about:    "Wait until a VM has stopped (at once, successfully, if it is not running).",
		run:      runWait,
	}
}

func statusCommand() *command {
	return &command{
		name:     "status",
		synopsis: "[--json] [id|name]",
		about:    "List VMs and their state, as vmctl status does.",
		run:      runStatus,
	}
}

func showCommand() *command {
	return &command{
		name:     "show",
		synopsis: "[--json] [id|name]",
		about:    "The same as status.",
		run:      runStatus,
	}
}

func removeCommand() *command {
	return &command{
		name:     "remove",
		synopsis: "id|name",
		about:    "Remove a stopped VM's definition; its disks are kept.",
		run:      runRemove,
	}
}

// notFoundAs names the VM of a not-found error as the command line named
// it (by ID, say): the VM was looked up, then removed while the command
// waited for it.
func notFoundAs(target string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &store.NotFoundError{Name: target}
	}
	return err
}

// oneVM parses a command taking flags fs and exactly one VM argument. It
// returns "" and no error once it has printed help (text).
func oneVM(e *env, fs *flag.FlagSet, args []string, text string) (string, error) {
	pos, err := vmArgs(e, fs, args, text, 1)
	if pos == nil {
		return "", err
	}
	return pos[0], nil
}

// vmArgs parses a command taking flags fs and n arguments, the first a
// VM. It returns nil and no error once it has printed help (text).
func vmArgs(e *env, fs *flag.FlagSet, args []string, text string, n int) ([]string, error) {
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return nil, e.help(fs, text)
	}
	if err != nil {
		return nil, err
	}
	if len(pos) != n {
		return nil, &usageError{}
	}
	if err := nonEmpty(fs.Name(), pos[0]); err != nil {
		return nil, err
	}
	return pos, nil
}

// lookupVM opens the VM manager and looks up the VM target names. The
// manager is nil only when it could not be opened; a broken definition
// comes with its error.
func (e *env) lookupVM(target string) (*vm.Manager, *config.VM, error) {
	m, err := e.manager()
	if err != nil {
		return nil, nil, err
	}
	def, err := m.Store().Lookup(target)
	return m, def, err
}

// nonEmpty refuses an empty VM argument, which a script with an unset
// variable passes: it names no VM, and doing nothing would look like
// success.
func nonEmpty(verb, target string) error {
	if target == "" {
		return &usageError{msg: verb + ": empty vm name: give a vm name or id"}
	}
	return nil
}

// listFlag is a flag that may be repeated.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// defFlags are the flags of start and define that describe a new VM, as
// vmctl's start takes them.
type defFlags struct {
	fs                     *flag.FlagSet
	disks, switches, nets  listFlag
	boot, kernel, mem, iso *string
	initrd, appendLine     *string
	accel                  *string
	cpus                   *int
	template               *string  // -t: make an instance of this VM (cli/template.go)
	ports                  listFlag // -p: host ports for the template's port forwards
	shares                 listFlag // --share DIR:TAG[:ro]
}

func newDefFlags(fs *flag.FlagSet) *defFlags {
	d := &defFlags{fs: fs}
	d.boot = fs.String("B", "", "boot `device`: disk, cdrom or net")
	d.kernel = fs.String("b", "", "boot the `kernel` directly")
	fs.Var(&d.disks, "d", "a disk `image` (repeatable, at most 4)")
	d.mem = fs.String("m", "", "memory `size` (default 512M)")
	fs.Var(&d.switches, "n", "a network interface on host bridge `switch` (repeatable)")
	d.iso = fs.String("r", "", "a CD-ROM `iso` image")
	d.cpus = fs.Int("cpus", 0, "`number` of vCPUs (default 1)")
	d.initrd = fs.String("initrd", "", "initial ramdisk `path` for the kernel")
	d.appendLine = fs.String("append", "", "kernel command `line`")
	d.accel = fs.String("accel", "", "`accelerator`: kvm or tcg (default: kvm, falling back to tcg)")
	fs.Var(&d.nets, "net", "a network interface: user[,hostfwd=tcp::2222-:22][,mac=...] or bridge,br=NAME (repeatable)")
	d.template = fs.String("t", "", "make the new VM an instance of the VM `template` (the other flags override what it inherits)")
	fs.Var(&d.shares, "share", "share the host directory `dir:tag` with the guest through virtio-fs, read-only with dir:tag:ro; the guest mounts it with mount -t virtiofs tag /mnt (repeatable)")
	fs.Var(&d.ports, "p", "with -t, forward host port `hostport:guestport` to the template's forwarded guest port (repeatable)")
	return d
}

// given counts the definition flags on the command line.
func (d *defFlags) given() int {
	n := 0
	d.fs.Visit(func(f *flag.Flag) {
		if f.Name != "c" && f.Name != "fresh" {
			n++
		}
	})
	return n
}

// define saves a new definition named name from the flags. verb names the
// command in errors.
func (d *defFlags) define(m *vm.Manager, verb, name string) (*config.VM, error) {
	if config.IsID(name) {
		return nil, &store.NotFoundError{Name: name}
	}
	def := &config.VM{Name: name, Boot: config.Boot(*d.boot), Kernel: abs(*d.kernel), Initrd: abs(*d.initrd),
		Append: *d.appendLine, CDROM: abs(*d.iso), CPUs: *d.cpus, Accel: *d.accel}
	var err error
	if def.Memory, err = d.memory(verb, name); err != nil {
		return nil, err
	}
	def.Disks = d.diskList(nil)
	if def.Networks, err = d.interfaces(verb, name, nil); err != nil {
		return nil, err
	}
	for _, spec := range d.shares {
		sh, err := parseShare(spec)
		if err != nil {
			return nil, fmt.Errorf("%s %s: --share: %w", verb, name, err)
		}
		def.Shares = append(def.Shares, sh)
	}
	if err := m.Store().Create(def); err != nil {
		return nil, fmt.Errorf("%s %s: %w", verb, name, err)
	}
	return def, nil
}

// memory is -m in bytes, 0 when it is not given.
func (d *defFlags) memory(verb, name string) (int64, error) {
	if *d.mem == "" {
		return 0, nil
	}
	n, err := config.ParseMemory(*d.mem)
	if err != nil {
		return 0, fmt.Errorf("%s %s: -m: %w", verb, name, err)
	}
	return n, nil
}

// diskList appends the disks of -d to disks.
func (d *defFlags) diskList(disks []config.Disk) []config.Disk {
	for _, p := range d.disks {
		disks = append(disks, config.Disk{Path: abs(p)})
	}
	return disks
}

// interfaces appends the interfaces of -n, then those of --net, to nets.
func (d *defFlags) interfaces(verb, name string, nets []config.Network) ([]config.Network, error) {
	for _, sw := range d.switches {
		nets = append(nets, config.Network{Type: config.NetBridge, Bridge: sw})
	}
	for _, spec := range d.nets {
		n, err := config.ParseNetwork(spec)
		if err != nil {
			return nil, fmt.Errorf("%s %s: --net: %w", verb, name, err)
		}
		nets = append(nets, n)
	}
	return nets, nil
}

// parseShare parses --share's DIR:TAG or DIR:TAG:ro (the directory may
// hold colons: the tag, a word, cannot).
func parseShare(spec string) (config.Share, error) {
	var sh config.Share
	rest, ro := strings.CutSuffix(spec, ":ro")
	if !strings.Contains(rest, ":") { // DIR:ro: the tag ro
		rest, ro = spec, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 || i == len(rest)-1 {
		return sh, fmt.Errorf("%q: want dir:tag or dir:tag:ro", spec)
	}
	sh.Path, sh.Tag, sh.ReadOnly = abs(rest[:i]), rest[i+1:], ro
	if err := config.ValidShareTag(sh.Tag); err != nil {
		return sh, fmt.Errorf("%q: %w", spec, err)
	}
	return sh, nil
}

func runStart(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("start")
	df := newDefFlags(fs)
	connect := fs.Bool("c", false, "connect to the console once started (see console)")
	fresh := fs.Bool("fresh", false, "boot a saved VM, discarding its saved state, instead of resuming it")
	target, err := oneVM(e, fs, args, `
A VM that is defined starts as its definition says. Given flags and a name
that is not defined yet, start defines the VM (saving its definition, as
define does) and starts it. Accelerator: the definition's, else
$VMTUI_ACCEL, else KVM with a fallback to TCG. A saved VM (vmtui save)
resumes where it was, and its saved state is discarded; with --fresh it
boots instead.`)
	if err != nil || target == "" {
		return err
	}
	m, def, err := e.lookupVM(target)
	switch {
	case m == nil:
		return err
	case errors.Is(err, store.ErrNotFound) && df.given() > 0:
		if def, err = df.create(ctx, e, m, "start", target); err != nil {
			return err
		}
	case err != nil:
		return err
	case df.given() > 0:
		return fmt.Errorf("start %s: vm is already defined (in %s); flags only define new VMs", target, def.File)
	}
	saved := !*fresh && m.HasSavedState(def.Name)
	st, err := m.Start(ctx, def, vm.StartOptions{Fresh: *fresh})
	if errors.Is(err, vm.ErrAlreadyRunning) {
		return fmt.Errorf("start vm %s: vm already running (pid %d)", def.Name, st.PID)
	}
	if err != nil {
		// Not found: removed while the start waited for the VM's lock.
		return notFoundAs(target, err)
	}
	how := "started"
	if saved && !m.HasSavedState(def.Name) {
		how = "resumed" // from its saved state (save.go)
	}
	fmt.Fprintf(e.stderr, "%s: %s vm %d successfully, tty %s\n", progName, how, st.ID, st.TTY)
	if !*connect {
		return nil
	}
	return attach(ctx, e, m.Store().Paths(), def.Name, st.TTY, console.Options{})
}

func runDefine(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("define")
	df := newDefFlags(fs)
	target, err := oneVM(e, fs, args, `
Saves the definition of a new VM, as start does given flags, without starting
it. The definition is the TOML file vms/NAME.toml, which may be edited.`)
	if err != nil || target == "" {
		return err
	}
	m, err := e.manager()
	if err != nil {
		return err
	}
	def, err := df.create(ctx, e, m, "define", target)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%s: defined vm %d (%s) in %s\n", progName, def.ID, def.Name, def.File)
	return nil
}

// abs makes a path given on the command line absolute; "" stays "".
func abs(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func runStop(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("stop")
	force := fs.Bool("f", false, "force: quit QEMU at once (then kill it) instead of powering the guest down")
	wait := fs.Bool("w", false, "wait until the VM has stopped")
	all := fs.Bool("a", false, "stop every running VM")
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, `
Without -f, stop presses the guest's ACPI power button and returns; the
guest decides when to power off. With -f, QEMU quits at once and is killed
if it has not exited after a grace period.`)
	}
	if err != nil {
		return err
	}
	if *all == (len(pos) == 1) || len(pos) > 1 {
		return &usageError{}
	}
	if !*all {
		if err := nonEmpty("stop", pos[0]); err != nil {
			return err
		}
	}
	m, err := e.manager()
	if err != nil {
		return err
	}
	opts := vm.StopOptions{Force: *force, Wait: *wait}
	if !*all {
		def, err := m.Store().Lookup(pos[0])
		if err != nil {
			return err
		}
		return stopOne(ctx, e, m, def, opts)
	}
	list, err := m.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range list {
		if !st.Running() && st.State != vm.StateStarting {
			continue // a start in progress is waited for, then stopped
		}
		def, err := m.Store().Lookup(st.Name)
		if err == nil {
			err = stopOne(ctx, e, m, def, opts)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func stopOne(ctx context.Context, e *env, m *vm.Manager, def *config.VM, opts vm.StopOptions) error {
	err := m.Stop(ctx, def, opts)
	switch {
	case errors.Is(err, vm.ErrNotRunning):
		return fmt.Errorf("stopping vm %s: cannot stop vm that is not running", def.Name)
	case err != nil:
		return fmt.Errorf("stopping vm %s: %w", def.Name, err)
	case opts.Force:
		fmt.Fprintf(e.stderr, "stopping vm %s: forced to terminate vm %d\n", def.Name, def.ID)
	case opts.Wait:
		fmt.Fprintf(e.stderr, "stopping vm %s: terminated vm %d\n", def.Name, def.ID)
	default:
		fmt.Fprintf(e.stderr, "stopping vm %s: requested to shutdown vm %d\n", def.Name, def.ID)
	}
	return nil
}

func runPause(ctx context.Context, e *env, args []string, pause bool) error {
	verb := map[bool]string{true: "pause", false: "unpause"}[pause]
	target, err := oneVM(e, newFlagSet(verb), args, "")
	if err != nil || target == "" {
		return err
	}
	m, def, err := e.lookupVM(target)
	if err != nil {
		return err
	}
	if pause {
		err = m.Pause(ctx, def)
	} else {
		err = m.Unpause(ctx, def)
	}
	if errors.Is(err, vm.ErrNotRunning) {
		return fmt.Errorf("%s vm command failed: vm %s is not running", verb, def.Name)
	}
	if err != nil {
		return fmt.Errorf("%s vm command failed: %w", verb, err)
	}
	fmt.Fprintf(e.stderr, "%s: %sd vm %d successfully\n", progName, verb, def.ID)
	return nil
}

func runWait(ctx context.Context, e *env, args []string) error {
	target, err := oneVM(e, newFlagSet("wait"), args, "")
	if err != nil || target == "" {
		return err
	}
	m, def, err := e.lookupVM(target)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "waiting for vm %s: ", def.Name)
	err = m.Wait(ctx, def)
	switch {
	case errors.Is(err, vm.ErrNotRunning):
		// What wait waits for has happened already: "stop web; wait web"
		// succeeds however quickly the guest powered off.
		fmt.Fprintf(e.stderr, "vm %d is not running\n", def.ID)
		return nil
	case err != nil:
		fmt.Fprintln(e.stderr)
		return err
	}
	fmt.Fprintf(e.stderr, "terminated vm %d\n", def.ID)
	return nil
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("status")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, `
The columns are vmctl's: ID, PID, VCPUS, MAXMEM, CURMEM, TTY, OWNER, STATE
and NAME. STATE is starting (a start is in progress), running, paused,
stopping, stopped, saved (stopped, with a saved state that start resumes:
see save) or broken (a QEMU that does not answer on its monitor, or is
stopped).`)
	}
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return &usageError{}
	}
	if len(pos) == 1 {
		if err := nonEmpty("status", pos[0]); err != nil {
			return err
		}
	}
	return listVMs(ctx, e, pos, *asJSON)
}

// listVMs prints the status table of all VMs, or of the one named.
func listVMs(ctx context.Context, e *env, only []string, asJSON bool) error {
	m, err := e.manager()
	if err != nil {
		return err
	}
	var list []vm.Status
	var devices []string
	if len(only) == 1 {
		st, def, err := m.Status(ctx, only[0])
		if def == nil {
			return err
		}
		list = []vm.Status{st}
		d := *def
		if st.CID != 0 {
			d.CID = st.CID // the CID chosen at start
		}
		devices = d.DeviceSummary()
	} else if list, err = m.List(ctx); err != nil {
		return err
	}
	if asJSON {
		return vm.WriteJSON(e.stdout, list)
	}
	if err := vm.WriteTable(e.stdout, list); err != nil {
		return err
	}
	if len(only) == 1 && list[0].Template != "" {
		// vmctl's table has no column for it.
		fmt.Fprintf(e.stdout, "template: %s\n", config.DisplayName(list[0].Template))
	}
	// Nor for the device model: a line for each key set.
	for _, l := range devices {
		fmt.Fprintln(e.stdout, l)
	}
	if len(only) == 1 {
		// The disks attached while it runs (attach-disk), not in the
		// definition.
		for _, p := range list[0].Attached {
			fmt.Fprintf(e.stdout, "attached %s (until it stops)\n", p)
		}
	}
	for _, st := range list {
		if st.Err != "" {
			fmt.Fprintf(e.stderr, "%s: vm %s: %s\n", progName, st.DisplayName(), st.Err)
		}
	}
	return nil
}

// runList is "vmtui --list [--json]".
func runList(ctx context.Context, e *env, args []string) error {
	asJSON := false
	for _, a := range args {
		switch a {
		case "--json", "-json":
			asJSON = true
		default:
			return &usageError{msg: "--list takes only --json"}
		}
	}
	return listVMs(ctx, e, nil, asJSON)
}

func runRemove(ctx context.Context, e *env, args []string) error {
	target, err := oneVM(e, newFlagSet("remove"), args, `
The definition file is removed; disk images, logs and the VM's ID are not
reused or touched.`)
	if err != nil || target == "" {
		return err
	}
	m, def, err := e.lookupVM(target)
	if def == nil {
		return err
	}
	// A broken definition may be removed: that is how one gets rid of it.
	// vm refuses a running VM, under the VM's lock.
	if _, err := m.Remove(ctx, def); err != nil {
		return notFoundAs(target, err)
	}
	fmt.Fprintf(e.stderr, "%s: removed vm %s (id %s)\n", progName, config.DisplayName(def.Name), strconv.Itoa(def.ID))
	return nil
}
