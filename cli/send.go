package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/units"
	"github.com/vmtui/vmtui/vm"
)

// send, receive and save: a VM's state out to standard output, in from
// standard input, or into its state directory (package vm, send.go and
// save.go), as vmctl's send and receive.

func sendCommand() *command {
	return &command{
		name:     "send",
		synopsis: "id|name",
		about:    "Send a running VM (definition, RAM and devices) to standard output; it is then stopped.",
		run:      runSend,
	}
}

func receiveCommand() *command {
	return &command{
		name:     "receive",
		synopsis: "name",
		about:    "Define VM name from a stream on standard input (as send writes it) and start it where it was.",
		run:      runReceive,
	}
}

func saveCommand() *command {
	return &command{
		name:     "save",
		synopsis: "id|name",
		about:    "Suspend a running VM to disk; start resumes it.",
		run:      runSave,
	}
}

const streamHelp = `
The stream holds the VM's definition and its whole running state (RAM and
devices), not its disk images, which must be at the same paths where it is
received (copy them first). It is checked as it is read (a magic, a version,
a checksum per chunk and a SHA-256 over it all) and works through a pipe:
vmtui send web | ssh host vmtui receive web. The README describes its
layout.`

// streamProgress shows progress on standard error when it is a terminal.
type streamProgress struct {
	e     *env
	what  string
	start time.Time
	shown bool
}

func (e *env) streamProgress(what string) *streamProgress {
	return &streamProgress{e: e, what: what, start: time.Now()}
}

// fn returns the progress function to give vm, nil when standard error is
// not a terminal.
func (p *streamProgress) fn() func(int64) {
	if !isTerminal(p.e.stderr) {
		return nil
	}
	return func(n int64) {
		p.shown = true
		rate := ""
		if d := time.Since(p.start).Seconds(); d > 0.1 {
			rate = ", " + units.FormatSize(int64(float64(n)/d)) + "/s"
		}
		// \r and erase the line: the line shrinks as often as it grows.
		fmt.Fprintf(p.e.stderr, "\r\x1b[K%s: %s%s", p.what, units.FormatSize(n), rate)
	}
}

// end ends the progress line, if one was shown.
func (p *streamProgress) end() {
	if p.shown {
		fmt.Fprintln(p.e.stderr)
	}
}

// streamed reports how the send or save (verb, done in the past tense) of
// def, the VM target names, ended: err is what it returned.
func (e *env) streamed(err error, verb, done, target string, def *config.VM) error {
	switch {
	case errors.Is(err, vm.ErrNotRunning):
		return fmt.Errorf("%s vm %s: vm is not running", verb, def.Name)
	case err != nil:
		return notFoundAs(target, err)
	}
	fmt.Fprintf(e.stderr, "%s: %s vm %d successfully\n", progName, done, def.ID)
	return nil
}

func runSend(ctx context.Context, e *env, args []string) error {
	target, err := oneVM(e, newFlagSet("send"), args, `
Pauses the VM, writes it to standard output, and stops it: its definition
stays, stopped. When writing fails (a closed pipe, a full disk) the VM goes
on running (or paused, as it was). Standard output must not be a terminal.`+streamHelp)
	if err != nil || target == "" {
		return err
	}
	if isTerminal(e.stdout) {
		return fmt.Errorf("send vm %s: standard output is a terminal: redirect it to a file or a pipe", target)
	}
	m, def, err := e.lookupVM(target)
	if err != nil {
		return err
	}
	// A reader that goes away (vmtui send web | head) must not kill vmtui
	// with SIGPIPE mid-send, leaving the VM paused: the write fails with
	// EPIPE instead, and the VM goes on running.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)
	p := e.streamProgress("sending vm " + def.Name)
	err = m.Send(ctx, def, e.stdout, vm.SendOptions{Progress: p.fn()})
	p.end()
	return e.streamed(err, "send", "sent", target, def)
}

func runReceive(ctx context.Context, e *env, args []string) error {
	name, err := oneVM(e, newFlagSet("receive"), args, `
Reads a stream that send or save wrote from standard input, defines VM name
with its definition (and a new id), and starts it from the state it holds:
the guest goes on where it was, running or paused. A truncated, altered or
foreign stream, or a missing disk, is refused, leaving nothing defined and no
QEMU running.`+streamHelp)
	if err != nil || name == "" {
		return err
	}
	if isTerminal(e.stdin) {
		return fmt.Errorf("receive vm %s: standard input is a terminal: redirect it from a file or a pipe", name)
	}
	m, err := e.manager()
	if err != nil {
		return err
	}
	p := e.streamProgress("receiving vm " + name)
	st, err := m.Receive(ctx, name, e.stdin, vm.ReceiveOptions{Progress: p.fn()})
	p.end()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%s: received vm %d successfully, tty %s\n", progName, st.ID, st.TTY)
	return nil
}

func runSave(ctx context.Context, e *env, args []string) error {
	target, err := oneVM(e, newFlagSet("save"), args, `
Pauses the VM, writes its definition and state into its state directory
(saved/NAME), and stops it: it is then listed as saved. start resumes it
where it was and discards the saved state; start --fresh discards it and
boots; remove removes it with the definition. Its disks must not change until
it resumes (nor its definition: a saved state fits only the definition it was
saved with). When writing fails (a full disk) the VM goes on running and
nothing is saved.`)
	if err != nil || target == "" {
		return err
	}
	m, def, err := e.lookupVM(target)
	if err != nil {
		return err
	}
	p := e.streamProgress("saving vm " + def.Name)
	err = m.Save(ctx, def, vm.SendOptions{Progress: p.fn()})
	p.end()
	return e.streamed(err, "save", "saved", target, def)
}
