package console

import (
	"context"
	"io"
)

// Cmd runs Attach as a bubbletea tea.ExecCommand, so that the TUI can hand
// the terminal to the console and get it back when the user detaches:
//
//	cmd := console.Command(console.Options{Name: name, TTY: tty, SerialLog: log, LockFile: lock})
//	return tea.Exec(cmd, func(err error) tea.Msg { return consoleDoneMsg{err} })
//
// tea.Exec releases the terminal (bubbletea's raw mode and input reader),
// sets the streams and calls Run; Attach puts the terminal in raw mode
// itself and restores it, and its input reader stops without taking a key
// from bubbletea's.
type Cmd struct {
	opts Options
}

// Command returns a Cmd that attaches with opts.
func Command(opts Options) *Cmd { return &Cmd{opts: opts} }

// Run attaches until the session ends; see Attach for the errors. vmtui's
// messages go to the same stream as the guest's output: tea.Exec passes the
// process's standard error, which may be redirected away from the screen.
func (c *Cmd) Run() error {
	opts := c.opts
	opts.Stderr = opts.Stdout
	return Attach(context.Background(), opts)
}

// SetStdin sets the user's input.
func (c *Cmd) SetStdin(r io.Reader) { c.opts.Stdin = r }

// SetStdout sets where the guest's output goes.
func (c *Cmd) SetStdout(w io.Writer) { c.opts.Stdout = w }

// SetStderr is part of tea.ExecCommand; Run writes its messages to the
// standard output instead.
func (c *Cmd) SetStderr(w io.Writer) { c.opts.Stderr = w }
