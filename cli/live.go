package cli

import (
	"context"
	"fmt"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/units"
)

// The live changes of a running VM: its memory (set -m), and disks
// attached and detached while it runs.

func setCommand() *command {
	return &command{
		name:     "set",
		synopsis: "-m size id|name",
		about:    "Change a running VM's memory, up to its max_memory.",
		run:      runSet,
	}
}

func attachDiskCommand() *command {
	return &command{
		name:     "attach-disk",
		synopsis: "id|name disk",
		about:    "Attach a disk image to a running VM (until it stops).",
		run:      func(ctx context.Context, e *env, args []string) error { return runAttach(ctx, e, args, true) },
	}
}

func detachDiskCommand() *command {
	return &command{
		name:     "detach-disk",
		synopsis: "id|name disk",
		about:    "Detach a disk attached with attach-disk from a running VM.",
		run:      func(ctx context.Context, e *env, args []string) error { return runAttach(ctx, e, args, false) },
	}
}

func runSet(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("set")
	mem := fs.String("m", "", "the guest's memory `size`, between its memory and its max_memory")
	target, err := oneVM(e, fs, args, `
The guest's memory grows (or shrinks) while it runs, through its virtio-mem
device: the VM must have been started with max_memory above memory in its
definition. The size is the whole memory (memory plus what is plugged), a
whole number of 2M blocks above memory. set returns once the guest has
plugged (or unplugged) the memory; a guest may keep memory it uses, and set
then says how far it got. The guest must load virtio_mem and online the
memory it is given (Linux: memhp_default_state=online on its kernel command
line). The definition is not changed: the VM starts again with memory.`)
	if err != nil || target == "" {
		return err
	}
	if *mem == "" {
		return &usageError{msg: "set: -m is required"}
	}
	size, err := config.ParseMemory(*mem)
	if err != nil {
		return fmt.Errorf("set %s: -m: %w", target, err)
	}
	m, def, err := e.lookupVM(target)
	if err != nil {
		return err
	}
	ms, err := m.SetMemory(ctx, def, size)
	if err != nil {
		return err
	}
	note := ""
	if ms.Plugged != ms.Requested {
		note = fmt.Sprintf("; the vm is paused: it plugs %s when unpaused", units.FormatSize(ms.Base+ms.Requested))
	}
	fmt.Fprintf(e.stderr, "%s: vm %s has %s of memory (%s and %s plugged, up to %s)%s\n", progName, def.Name,
		units.FormatSize(ms.Current()), units.FormatSize(ms.Base), units.FormatSize(ms.Plugged), units.FormatSize(ms.Max), note)
	return nil
}

func runAttach(ctx context.Context, e *env, args []string, attach bool) error {
	verb := map[bool]string{true: "attach-disk", false: "detach-disk"}[attach]
	pos, err := vmArgs(e, newFlagSet(verb), args, `
attach-disk plugs a disk image (qcow2, raw or qcow, detected) into a running
VM as a virtio disk, which a Linux guest sees as /dev/vdX with serial number
hotN (/sys/block/vdX/serial). Like virsh attach-disk without --persistent,
the disk is not added to the definition: it is gone once the VM stops. An
image another VM uses is refused. detach-disk unplugs it (the guest must
release it) and closes the image.`, 2)
	if pos == nil {
		return err
	}
	if pos[1] == "" {
		return &usageError{msg: verb + ": empty disk path"}
	}
	m, def, err := e.lookupVM(pos[0])
	if err != nil {
		return err
	}
	path := pos[1]
	if attach {
		path = abs(path)
		d, err := m.AttachDisk(ctx, def, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "%s: attached %s to vm %s as %s\n", progName, d.Path, def.Name, d.Node)
		return nil
	}
	d, err := m.DetachDisk(ctx, def, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%s: detached %s from vm %s\n", progName, d.Path, def.Name)
	return nil
}
