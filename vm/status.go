package vm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/units"
)

// State is a VM's state as the status table shows it.
type State string

const (
	StateStarting State = "starting" // a start is in progress: QEMU is being launched
	StateRunning  State = "running"
	StatePaused   State = "paused"
	StateStopping State = "stopping" // a power-down was requested; the process has not exited yet
	StateStopped  State = "stopped"
	StateBroken   State = "broken" // the process exists but does not answer QMP; see Status.Err
	StateSaved    State = "saved"  // stopped, with a saved state that start resumes (save.go)
)

// Status is one row of the status table: a defined VM and, when it runs,
// its QEMU process.
type Status struct {
	ID     int    `json:"id"`
	Name   string `json:"name"`
	PID    int    `json:"pid,omitempty"` // 0 when stopped
	VCPUs  int    `json:"vcpus"`
	MaxMem int64  `json:"maxmem"`           // configured memory, bytes; a running guest's current size when it can grow (virtio-mem)
	CurMem int64  `json:"curmem,omitempty"` // resident memory of the QEMU process, bytes
	TTY    string `json:"tty,omitempty"`    // serial console, "/dev/pts/N"
	Owner  string `json:"owner"`            // user:group of the process, or of the definition when stopped
	State  State  `json:"state"`
	// Template is the VM this one is an instance of (vmtui start -t), or "".
	Template string `json:"template,omitempty"`
	// Err says why a VM is broken, or what went wrong reading its state.
	Err string `json:"error,omitempty"`
	// QEMUStatus is QMP's run state ("running", "paused", "shutdown", ...) when known.
	QEMUStatus string `json:"qemu_status,omitempty"`
	// Cmdline is QEMU's argv when running.
	Cmdline []string `json:"cmdline,omitempty"`
	// Attached are the disks attached while it runs (AttachDisk), not
	// in its definition.
	Attached []string `json:"attached_disks,omitempty"`
	// CID is the guest's vsock CID: its running QEMU's, else the one its
	// definition fixes; 0 for none (or one to be chosen at start).
	CID uint32 `json:"cid,omitempty"`
	// Devices is the definition's device model (devices_status.go).
	Devices *DeviceInfo `json:"devices,omitempty"`

	// startTime is the start time of process PID (as procInfo.StartTime),
	// to tell it from a later process given the same PID.
	startTime uint64
}

// DisplayName is Name as it may be printed (config.DisplayName): a
// definition file's name may be anything, control sequences included.
func (s Status) DisplayName() string { return config.DisplayName(s.Name) }

// Running reports whether the VM has a QEMU process.
func (s Status) Running() bool { return s.PID != 0 }

// TTYName is the console as the table shows it: "pts/N", or "-".
func (s Status) TTYName() string {
	const dev = "/dev/"
	if len(s.TTY) > len(dev) && s.TTY[:len(dev)] == dev {
		return s.TTY[len(dev):]
	}
	if s.TTY == "" {
		return "-"
	}
	return s.TTY
}

// tableFormat is vmctl's status line.
const tableFormat = "%5s %5s %5s %7s %7s %7s %12s %8s %s\n"

// WriteTable prints statuses exactly as `vmctl status` does: a header, then
// one line per VM, sizes as fmt_scaled(3) prints them, "-" for the PID, TTY
// and CURMEM of a stopped VM.
func WriteTable(w io.Writer, list []Status) error {
	if _, err := fmt.Fprintf(w, tableFormat, "ID", "PID", "VCPUS", "MAXMEM", "CURMEM", "TTY", "OWNER", "STATE", "NAME"); err != nil {
		return err
	}
	for _, s := range list {
		pid, curmem, tty := "-", "-", "-"
		if s.Running() {
			pid = strconv.Itoa(s.PID)
			curmem = units.FormatSize(s.CurMem)
			tty = s.TTYName()
		}
		if _, err := fmt.Fprintf(w, tableFormat, strconv.Itoa(s.ID), pid, strconv.Itoa(s.VCPUs),
			units.FormatSize(s.MaxMem), curmem, tty, s.Owner, string(s.State), s.DisplayName()); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON prints statuses as a JSON array. Control characters are all
// escaped: JSON escapes those below U+0020, and WriteJSON the C1 controls
// (U+0080 to U+009F) too, which terminals obey as well, since a name can be
// any file name.
func WriteJSON(w io.Writer, list []Status) error {
	if list == nil {
		list = []Status{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(list); err != nil {
		return err
	}
	out := make([]byte, 0, b.Len())
	for _, r := range b.String() {
		if r >= 0x80 && r <= 0x9f {
			out = fmt.Appendf(out, `\u%04x`, r) // only inside strings: JSON's syntax is ASCII
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	_, err := w.Write(out)
	return err
}
