package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/vm"
)

// The VM snapshot commands: vmtui snapshot create, list, revert and delete
// (package vm, snapshot.go). vmtui disk snapshot works on one image.

func snapshotCommand() *command {
	return &command{
		name:  "snapshot",
		about: "Take, list, revert to and delete snapshots of a VM (RAM included while it runs).",
		sub: []*command{
			{name: "create", synopsis: "id|name tag", about: "Take a snapshot of a VM: its RAM and disks while it runs, its disks when stopped.",
				run: func(ctx context.Context, e *env, args []string) error { return runSnapshot(ctx, e, args, "create") }},
			{name: "list", synopsis: "[--json] id|name", about: "List a VM's snapshots, as qemu-img snapshot -l lists an image's.",
				run: runSnapshotList},
			{name: "revert", synopsis: "id|name tag", about: "Put a VM back to a snapshot; a stopped VM reverted to a snapshot with RAM starts from it.",
				run: func(ctx context.Context, e *env, args []string) error { return runSnapshot(ctx, e, args, "revert") }},
			{name: "delete", synopsis: "id|name tag", about: "Delete a snapshot of a VM.",
				run: func(ctx context.Context, e *env, args []string) error { return runSnapshot(ctx, e, args, "delete") }},
		},
	}
}

const snapshotHelp = `
A VM's snapshot is a tag that every one of its disks has, inside the disk
images (qcow2 internal snapshots): nothing else to keep track of. While the
VM runs (or is paused), QEMU takes it with the guest's RAM and devices,
saved in the first disk, and all the disks at one instant, pausing the
guest only while it saves; a revert puts the VM back at that instant, and a
running guest runs on from there. A stopped VM's snapshot holds its disks
only (vmtui's qcow2 engine takes it on every disk, or on none). Reverting a
stopped VM to a snapshot with RAM starts the VM from it; to a disk-only one,
reverts its disks. Every disk must be qcow2: convert a raw one with vmtui
disk convert -O qcow2. Tags: up to 255 bytes, no control characters, not
only digits. vmtui disk snapshot works on one image (of a stopped VM).`

// runSnapshot is vmtui snapshot create, revert and delete.
func runSnapshot(ctx context.Context, e *env, args []string, verb string) error {
	pos, err := vmArgs(e, newFlagSet("snapshot "+verb), args, snapshotHelp, 2)
	if pos == nil {
		return err
	}
	target, tag := pos[0], pos[1]
	m, def, err := e.lookupVM(target)
	if err != nil {
		return err
	}
	name := config.DisplayName(def.Name)
	switch verb {
	case "create":
		if err := m.CreateSnapshot(ctx, def, tag); err != nil {
			return notFoundAs(target, err)
		}
		fmt.Fprintf(e.stderr, "%s: created snapshot %q of vm %s (id %d)\n", progName, tag, name, def.ID)
	case "revert":
		before, _, _ := m.Status(ctx, def.Name)
		if err := m.RevertSnapshot(ctx, def, tag); err != nil {
			return notFoundAs(target, err)
		}
		if after, _, _ := m.Status(ctx, def.Name); !before.Running() && after.Running() {
			fmt.Fprintf(e.stderr, "%s: started vm %d from snapshot %q successfully, tty %s\n", progName, def.ID, tag, after.TTY)
			return nil
		}
		fmt.Fprintf(e.stderr, "%s: reverted vm %s (id %d) to snapshot %q\n", progName, name, def.ID, tag)
	case "delete":
		if err := m.DeleteSnapshot(ctx, def, tag); err != nil {
			return notFoundAs(target, err)
		}
		fmt.Fprintf(e.stderr, "%s: deleted snapshot %q of vm %s (id %d)\n", progName, tag, name, def.ID)
	}
	return nil
}

func runSnapshotList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("snapshot list")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	target, err := oneVM(e, fs, args, `
The columns are qemu-img snapshot -l's: ID (the first disk's), TAG, VM SIZE
(the RAM and device state saved with it; 0 B for a disk-only snapshot),
DATE (local time) and VM CLOCK (the guest's clock when it was taken).
--json gives sizes in bytes, dates in RFC 3339 and the clock in
nanoseconds. Nothing is printed when the VM has no snapshot.
`+snapshotHelp)
	if err != nil || target == "" {
		return err
	}
	m, def, err := e.lookupVM(target)
	if err != nil {
		return err
	}
	sns, err := m.Snapshots(ctx, def)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeSnapshotsJSON(e.stdout, sns)
	}
	return writeSnapshotTable(e.stdout, sns, time.Local)
}

// snapshotJSON is a VM snapshot in vmtui snapshot list --json.
type snapshotJSON struct {
	ID          string `json:"id"`
	Tag         string `json:"tag"`
	VMStateSize int64  `json:"vm_state_size"`
	Date        string `json:"date"`
	VMClockNsec int64  `json:"vm_clock_nsec"`
}

func writeSnapshotsJSON(w io.Writer, sns []vm.Snapshot) error {
	out := []snapshotJSON{}
	for _, sn := range sns {
		out = append(out, snapshotJSON{ID: sn.ID, Tag: sn.Tag, VMStateSize: sn.VMStateSize,
			Date: sn.Date.Format(time.RFC3339Nano), VMClockNsec: int64(sn.VMClock)})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeSnapshotTable writes sns with the columns and widths of qemu-img
// snapshot -l (QEMU 7.2), less its ICOUNT; dates in loc. Nothing for none.
func writeSnapshotTable(w io.Writer, sns []vm.Snapshot, loc *time.Location) error {
	if len(sns) == 0 {
		return nil
	}
	if _, err := fmt.Fprintf(w, "%-10s%-17s%8s%20s%13s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK"); err != nil {
		return err
	}
	for _, sn := range sns {
		clock := disk.FormatVMClock(sn.VMClock)
		date := sn.Date.In(loc).Format("2006-01-02 15:04:05")
		if _, err := fmt.Fprintf(w, "%-9s %-16s %8s%20s%13s\n", sn.ID, displayTag(sn.Tag), disk.FormatSize(sn.VMStateSize), date, clock); err != nil {
			return err
		}
	}
	return nil
}

// displayTag is a tag as the table prints it: quoted when it holds what a
// terminal would act on (a tag vmtui refuses, made by other tools).
func displayTag(tag string) string {
	if !utf8.ValidString(tag) || strings.ContainsFunc(tag, unicode.IsControl) {
		return strconv.Quote(tag)
	}
	return tag
}
