package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/console"
)

func consoleCommand() *command {
	return &command{
		name:     "console",
		synopsis: "[--escape c] [--detach-key k] [--watch] [--takeover] id|name",
		about:    "Connect to a running VM's serial console, as cu(1) would.",
		run:      runConsole,
	}
}

const consoleHelp = `
Escapes, typed after a newline (as in cu): ~. detaches, ~~ sends one ~,
~? lists the escapes; ~ followed by anything else sends both. The detach key
(Ctrl-] by default) detaches anywhere in a line. Keys are one character,
^X for a control character, or none.

Attaching shows the last screenful of the serial log first. One session at a
time holds a VM's console; --takeover detaches the holder. --watch follows
the serial log read-only, like tail -f, without taking the console.`

// consoleFlags are the flags of console, shared with start -c.
type consoleFlags struct {
	escape, detach string
}

func runConsole(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("console")
	var cf consoleFlags
	fs.StringVar(&cf.escape, "escape", "~", "escape `character` after a newline, or none")
	fs.StringVar(&cf.detach, "detach-key", "^]", "`key` that detaches anywhere, or none")
	watch := fs.Bool("watch", false, "follow the serial log read-only")
	takeover := fs.Bool("takeover", false, "take the console from the session holding it")
	target, err := oneVM(e, fs, args, consoleHelp)
	if err != nil || target == "" {
		return err
	}
	opts, err := cf.options()
	if err != nil {
		return err
	}
	opts.Takeover = *takeover
	m, err := e.manager()
	if err != nil {
		return err
	}
	st, def, err := m.Status(ctx, target)
	if def == nil {
		return err
	}
	paths := m.Store().Paths()
	if *watch {
		return console.Watch(ctx, console.WatchOptions{
			Name: def.Name, SerialLog: paths.SerialLog(def.Name), Stdout: e.stdout, Stderr: e.stderr,
		})
	}
	if !st.Running() || st.TTY == "" {
		return console.ErrNoConsole
	}
	return attach(ctx, e, paths, def.Name, st.TTY, opts)
}

// options turns the key flags into console options.
func (cf consoleFlags) options() (console.Options, error) {
	var opts console.Options
	var err error
	if opts.Escape, err = console.ParseKey(cf.escape); err != nil {
		return opts, &usageError{msg: "--escape: " + err.Error()}
	}
	if opts.DetachKey, err = console.ParseKey(cf.detach); err != nil {
		return opts, &usageError{msg: "--detach-key: " + err.Error()}
	}
	return opts, nil
}

// attach connects the terminal to the console of VM name at tty. The end
// of the guest, or another session taking the console, is reported but is
// not a failure.
func attach(ctx context.Context, e *env, paths *store.Paths, name, tty string, flags console.Options) error {
	opts := console.Options{Name: name, TTY: tty, SerialLog: paths.SerialLog(name), LockFile: paths.ConsoleLockFile(name)}
	opts.Escape, opts.DetachKey, opts.Takeover = flags.Escape, flags.DetachKey, flags.Takeover
	opts.Stdin, opts.Stdout, opts.Stderr = e.stdin, e.stdout, e.stderr
	err := console.Attach(ctx, opts)
	if errors.Is(err, console.ErrGuestStopped) || errors.Is(err, console.ErrTakenOver) {
		fmt.Fprintf(e.stderr, "%s: %v\n", progName, err)
		return nil
	}
	return err
}
