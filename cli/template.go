package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/vm"
)

// create defines the new VM name from the flags: an instance of the VM -t
// names (vmctl's start -t), or a VM of its own (define).
func (d *defFlags) create(ctx context.Context, e *env, m *vm.Manager, verb, name string) (*config.VM, error) {
	if *d.template == "" {
		if len(d.ports) > 0 {
			return nil, &usageError{msg: verb + ": -p gives host ports to a template's port forwards: use it with -t"}
		}
		return d.define(m, verb, name)
	}
	if len(d.shares) > 0 {
		return nil, &usageError{msg: verb + ": --share defines a new VM's shares, not an instance's: edit the instance's definition ([[shares]])"}
	}
	opts, err := d.instanceOptions(verb, name)
	if err != nil {
		return nil, err
	}
	def, notes, err := m.CreateInstance(ctx, *d.template, name, opts)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", verb, name, err)
	}
	for _, n := range notes {
		fmt.Fprintf(e.stderr, "%s: instance %s: %s\n", progName, def.Name, n)
	}
	return def, nil
}

// instanceOptions turns the flags given besides -t into the instance's
// overrides.
func (d *defFlags) instanceOptions(verb, name string) (vm.InstanceOptions, error) {
	var o vm.InstanceOptions
	given := map[string]bool{}
	d.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	str := func(flagName string, v string) *string {
		if !given[flagName] {
			return nil
		}
		return &v
	}
	o.Kernel, o.Initrd = str("b", abs(*d.kernel)), str("initrd", abs(*d.initrd))
	o.Append, o.CDROM, o.Accel = str("append", *d.appendLine), str("r", abs(*d.iso)), str("accel", *d.accel)
	if given["B"] {
		b := config.Boot(*d.boot)
		o.Boot = &b
	}
	o.CPUs = *d.cpus
	var err error
	if o.Memory, err = d.memory(verb, name); err != nil {
		return o, err
	}
	if given["d"] {
		o.Disks = d.diskList([]config.Disk{})
	}
	if given["n"] || given["net"] {
		if o.Networks, err = d.interfaces(verb, name, []config.Network{}); err != nil {
			return o, err
		}
	}
	for _, s := range d.ports {
		pm, err := vm.ParsePortMap(s)
		if err != nil {
			return o, fmt.Errorf("%s %s: -p: %w", verb, name, err)
		}
		o.Ports = append(o.Ports, pm)
	}
	return o, nil
}
