package console

import (
	"context"
	"io"
)

// Cmd runs Attach as a bubbletea tea.ExecCommand, so that the TUI can hand
// the terminal to the console and get it back when the user detaches:
//
//	cmd := console.Command(console.ForVM(paths, st.Name, st.TTY))
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

// Run attaches until the session ends; see Attach for the errors.
func (c *Cmd) Run() error { return Attach(context.Background(), c.opts) }

// SetStdin sets the user's input.
func (c *Cmd) SetStdin(r io.Reader) { c.opts.Stdin = r }

// SetStdout sets where the guest's output goes.
func (c *Cmd) SetStdout(w io.Writer) { c.opts.Stdout = w }

// SetStderr sets where vmtui's messages go.
func (c *Cmd) SetStderr(w io.Writer) { c.opts.Stderr = w }
