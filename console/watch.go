package console

import (
	"context"
	"fmt"
	"io"

	"github.com/vmtui/vmtui/internal/seriallog"
)

// WatchOptions say which serial log to follow.
type WatchOptions struct {
	// Name is the VM's name, for messages.
	Name string
	// SerialLog is the log to follow.
	SerialLog string
	// TailLines is how many lines to show first (0: 24).
	TailLines int
	// Stdout receives the log; Stderr vmtui's messages.
	Stdout, Stderr io.Writer
}

// Watch shows the last lines of a VM's serial log, then what the guest
// writes, like tail -f, until ctx ends. It takes neither the console lock
// nor the pty: any number of watchers can run beside an attached console,
// and nothing typed reaches the guest.
func Watch(ctx context.Context, opts WatchOptions) error {
	n := opts.TailLines
	if n == 0 {
		n = defaultRows
	}
	if opts.Stderr != nil {
		fmt.Fprintf(opts.Stderr, "Watching the serial log of vm %s (read-only); interrupt to stop.\n", opts.Name)
	}
	b, off, err := seriallog.TailOffset(opts.SerialLog, n)
	if err != nil {
		return fmt.Errorf("vm %s: %w", opts.Name, err)
	}
	if _, err := opts.Stdout.Write(seriallog.StripQueries(b)); err != nil {
		return err
	}
	if err := seriallog.Follow(ctx, opts.SerialLog, off, queryFilter{opts.Stdout}); err != nil {
		return fmt.Errorf("vm %s: %w", opts.Name, err)
	}
	return nil
}

// queryFilter drops terminal queries from the stream, so that a watcher's
// terminal does not answer on its own input. (A query split between two
// writes passes; the terminal's answer then goes to vmtui, not the guest.)
type queryFilter struct{ w io.Writer }

func (q queryFilter) Write(p []byte) (int, error) {
	if _, err := q.w.Write(seriallog.StripQueries(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
