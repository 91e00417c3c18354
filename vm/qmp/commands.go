package qmp

import (
	"context"
	"fmt"
	"strings"
)

// RunState is QEMU's run state, as query-status reports it (QAPI RunState).
type RunState string

// Run states of QEMU 7.2.
const (
	StateDebug         RunState = "debug"
	StateInmigrate     RunState = "inmigrate"
	StateInternalError RunState = "internal-error"
	StateIOError       RunState = "io-error"
	StatePaused        RunState = "paused"
	StatePostmigrate   RunState = "postmigrate"
	StatePrelaunch     RunState = "prelaunch" // started with -S, never run
	StateFinishMigrate RunState = "finish-migrate"
	StateRestoreVM     RunState = "restore-vm"
	StateRunning       RunState = "running"
	StateSaveVM        RunState = "save-vm"
	StateShutdown      RunState = "shutdown" // the guest powered off under -no-shutdown
	StateSuspended     RunState = "suspended"
	StateWatchdog      RunState = "watchdog"
	StateGuestPanicked RunState = "guest-panicked"
	StateColo          RunState = "colo"
)

// Status is the reply to query-status.
type Status struct {
	// Status is the run state.
	Status RunState `json:"status"`
	// Running is true when the vCPUs run (Status "running", or
	// "debug" with a gdbstub stepping them).
	Running bool `json:"running"`
}

// QueryStatus returns QEMU's run state (query-status).
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var st Status
	err := c.Execute(ctx, "query-status", nil, &st)
	return st, err
}

// Stop pauses the guest's vCPUs (stop). QEMU sends a STOP event.
func (c *Client) Stop(ctx context.Context) error {
	return c.Execute(ctx, "stop", nil, nil)
}

// Cont resumes the guest, or starts one launched with -S (cont). QEMU sends
// a RESUME event.
func (c *Client) Cont(ctx context.Context) error {
	return c.Execute(ctx, "cont", nil, nil)
}

// SystemPowerdown presses the ACPI power button (system_powerdown). It
// returns when QEMU has pressed it, not when the guest has powered off: a
// guest without ACPI support ignores it, so wait for the process to exit
// (or the SHUTDOWN event) with a timeout, and then [Client.Quit].
func (c *Client) SystemPowerdown(ctx context.Context) error {
	return c.Execute(ctx, "system_powerdown", nil, nil)
}

// SystemReset resets the machine (system_reset). QEMU sends a RESET event.
func (c *Client) SystemReset(ctx context.Context) error {
	return c.Execute(ctx, "system_reset", nil, nil)
}

// Quit makes QEMU exit at once, without telling the guest (quit). QEMU sends
// a SHUTDOWN event with reason "host-qmp-quit", answers and closes the
// socket; the socket closing before the answer counts as success too.
// Afterwards [Client.Done] is closed and [Client.Err] wraps [ErrClosed].
func (c *Client) Quit(ctx context.Context) error {
	return c.Execute(ctx, "quit", nil, nil)
}

// Chardev is one character device (query-chardev).
type Chardev struct {
	// Label is the chardev's id, as in -chardev pty,id=ser0.
	Label string `json:"label"`
	// Filename describes the backend: "pty:/dev/pts/3",
	// "unix:/path,server=on", "file:/path", ...
	Filename string `json:"filename"`
	// FrontendOpen is true when a device (a serial port, a monitor) is
	// attached and has the chardev open.
	FrontendOpen bool `json:"frontend-open"`
}

// PTY returns the path of a pty backend's terminal ("/dev/pts/3" from
// "pty:/dev/pts/3"), and false for any other backend.
func (d Chardev) PTY() (string, bool) {
	path, ok := strings.CutPrefix(d.Filename, "pty:")
	if !ok || path == "" {
		return "", false
	}
	return path, true
}

// QueryChardev lists the character devices (query-chardev).
func (c *Client) QueryChardev(ctx context.Context) ([]Chardev, error) {
	var devs []Chardev
	err := c.Execute(ctx, "query-chardev", nil, &devs)
	return devs, err
}

// PTY returns the pty path of the chardev labelled label, as in
// "-chardev pty,id=ser0": "/dev/pts/3".
func (c *Client) PTY(ctx context.Context, label string) (string, error) {
	devs, err := c.QueryChardev(ctx)
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		if d.Label != label {
			continue
		}
		if path, ok := d.PTY(); ok {
			return path, nil
		}
		return "", fmt.Errorf("qmp: chardev %q is not a pty: %q", label, d.Filename)
	}
	return "", fmt.Errorf("qmp: no chardev %q", label)
}

// CPU is one virtual CPU (query-cpus-fast).
type CPU struct {
	// Index is the CPU's index, from 0.
	Index int `json:"cpu-index"`
	// ThreadID is the host thread running the vCPU (for pinning, or
	// per-thread accounting).
	ThreadID int `json:"thread-id"`
	// QOMPath is the CPU object's path in QEMU's object model.
	QOMPath string `json:"qom-path"`
	// Target is the emulated architecture, "x86_64".
	Target string `json:"target"`
}

// QueryCPUsFast lists the vCPUs without interrupting them (query-cpus-fast).
func (c *Client) QueryCPUsFast(ctx context.Context) ([]CPU, error) {
	var cpus []CPU
	err := c.Execute(ctx, "query-cpus-fast", nil, &cpus)
	return cpus, err
}

// QueryBalloon returns the guest's memory size in bytes as the balloon
// device sees it (query-balloon). Without a balloon device QEMU answers with
// class [ClassDeviceNotActive].
func (c *Client) QueryBalloon(ctx context.Context) (int64, error) {
	var b struct {
		Actual int64 `json:"actual"`
	}
	err := c.Execute(ctx, "query-balloon", nil, &b)
	return b.Actual, err
}

// HumanMonitorCommand runs a command of the human monitor (HMP), such as
// "info qtree", and returns its output. HMP output is for people: prefer QMP
// commands in programs.
func (c *Client) HumanMonitorCommand(ctx context.Context, command string) (string, error) {
	var out string
	err := c.Execute(ctx, "human-monitor-command",
		map[string]string{"command-line": command}, &out)
	return out, err
}
