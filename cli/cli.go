// Package cli is vmtui's command line: the commands, in the manner of
// OpenBSD's vmctl(8), and, given no arguments on a terminal, the
// full-screen interface of package ui.
//
// Commands may be abbreviated to any unambiguous prefix, as in vmctl:
// "vmtui cre" is "vmtui create". Results go to standard output; errors go
// to standard error as "vmtui: what: why", with a non-zero exit status.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/term"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/ui"
	"github.com/vmtui/vmtui/vm"
)

const progName = "vmtui"

// CLI is vmtui's command line: its commands, the streams they use and the
// VMs they manage.
type CLI struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	paths          func() (*store.Paths, error)
	root           []*command // the command table
	m              *vm.Manager
}

// New returns the command line that reads stdin, writes stdout and stderr,
// and manages the VMs of the state root that paths returns. paths is
// called once, by the first command that needs the VMs (the disk commands
// need them only to name the VM that holds an image).
func New(stdin io.Reader, stdout, stderr io.Writer, paths func() (*store.Paths, error)) *CLI {
	return &CLI{stdin: stdin, stdout: stdout, stderr: stderr, paths: paths, root: commandTable()}
}

// Run runs the command line args (those after the program's name) and
// returns the exit status. Canceling ctx interrupts the command; it then
// exits 130, having cleaned up after itself.
func (c *CLI) Run(ctx context.Context, args []string) int {
	e := &env{CLI: c}
	return e.report(e.dispatch(ctx, args))
}

// manager returns the VM manager of the state root, opening its store on
// first use.
func (c *CLI) manager() (*vm.Manager, error) {
	if c.m != nil {
		return c.m, nil
	}
	paths, err := c.paths()
	if err != nil {
		return nil, err
	}
	s, err := store.Open(paths)
	if err != nil {
		return nil, err
	}
	c.m = vm.NewManager(s)
	return c.m, nil
}

// command is one verb of the command line, or a group of them ("disk").
type command struct {
	name     string
	synopsis string // the arguments, as in the usage line
	about    string // one sentence for help
	// run carries out the command; args follow the command's name.
	run func(ctx context.Context, e *env, args []string) error
	// sub are the commands of a group; a group has no run.
	sub []*command
}

// env is what a command runs with: the command line, and the path of
// commands that led to it (["disk", "info"]).
type env struct {
	*CLI
	path []*command
}

// commandTable returns vmtui's commands, in the order help lists them.
func commandTable() []*command {
	return []*command{
		startCommand(),
		stopCommand(),
		defineCommand(),
		pauseCommand(),
		unpauseCommand(),
		waitCommand(),
		consoleCommand(),
		statusCommand(),
		showCommand(),
		removeCommand(),
		setCommand(),
		attachDiskCommand(),
		detachDiskCommand(),
		createCommand(),
		snapshotCommand(),
		sendCommand(),
		receiveCommand(),
		saveCommand(),
		{
			name:  "disk",
			about: "Inspect, check, convert, commit, resize and snapshot disk images.",
			sub: []*command{
				diskCheckCommand(),
				diskCommitCommand(),
				diskConvertCommand(),
				diskInfoCommand(),
				diskResizeCommand(),
				diskSnapshotCommand(),
			},
		},
		{name: "help", synopsis: "[command]", about: "Show how to use vmtui or one of its commands."},
	}
}

// runTUI runs the full-screen interface on the VMs of the state root.
func (e *env) runTUI(ctx context.Context) error {
	m, err := e.manager()
	if err != nil {
		return err
	}
	return ui.Run(ctx, ui.NewManagerBackend(m))
}

// isTerminal reports whether the stream is a file open on a terminal.
func isTerminal(stream any) bool {
	f, ok := stream.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

func (e *env) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		// The TUI needs a terminal; elsewhere (a pipe, a script) say how
		// to use vmtui, as vmctl does.
		if !isTerminal(e.stdin) || !isTerminal(e.stdout) {
			return &usageError{}
		}
		return e.runTUI(ctx)
	}
	switch args[0] {
	case "-h", "-help", "--help":
		return e.runHelp(args[1:])
	case "--list", "-list", "-l":
		return runList(ctx, e, args[1:])
	}
	if strings.HasPrefix(args[0], "-") {
		return &usageError{msg: fmt.Sprintf("unknown option %s", args[0])}
	}
	cmd, err := lookup(e.root, args[0], nil)
	if err != nil {
		return err
	}
	path := []*command{cmd}
	args = args[1:]
	for cmd.sub != nil {
		if len(args) == 0 {
			return &usageError{path: path}
		}
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			printUsage(e.stdout, e.root, path)
			return nil
		}
		next, err := lookup(cmd.sub, args[0], path)
		if err != nil {
			return err
		}
		cmd = next
		path = append(path, cmd)
		args = args[1:]
	}
	if cmd.name == "help" {
		return e.runHelp(args)
	}
	return e.runLeaf(ctx, path, args)
}

// runLeaf runs the command at the end of path.
func (e *env) runLeaf(ctx context.Context, path []*command, args []string) error {
	e.path = path
	err := path[len(path)-1].run(ctx, e, args)
	if errors.Is(err, errHelp) {
		return nil
	}
	var ue *usageError
	if errors.As(err, &ue) && ue.path == nil {
		ue.path = path
	}
	return err
}

// runHelp prints the usage of vmtui, or of the command named by args, to
// standard output.
func (e *env) runHelp(args []string) error {
	var path []*command
	table := e.root
	for _, word := range args {
		if table == nil {
			return &usageError{path: path, msg: fmt.Sprintf("%s takes no subcommand", commandName(path))}
		}
		cmd, err := lookup(table, word, path)
		if err != nil {
			return err
		}
		path = append(path, cmd)
		table = cmd.sub
	}
	if len(path) > 0 {
		if cmd := path[len(path)-1]; cmd.run != nil {
			// The command prints its own flags.
			return e.runLeaf(context.Background(), path, []string{"-h"})
		}
	}
	printUsage(e.stdout, e.root, path)
	return nil
}

// lookup finds the command word names in table: its whole name, or a prefix
// of exactly one name.
func lookup(table []*command, word string, parent []*command) (*command, error) {
	var found []*command
	for _, c := range table {
		if c.name == word {
			return c, nil
		}
		if word != "" && strings.HasPrefix(c.name, word) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		what := "command"
		if parent != nil {
			what = commandName(parent) + " command"
		}
		return nil, &usageError{path: parent, msg: fmt.Sprintf("unknown %s %q", what, word)}
	}
	names := make([]string, len(found))
	for i, c := range found {
		names[i] = c.name
	}
	return nil, &usageError{path: parent, msg: fmt.Sprintf("ambiguous command %q: could be %s", word, orList(names))}
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func commandName(path []*command) string {
	names := make([]string, len(path))
	for i, c := range path {
		names[i] = c.name
	}
	return strings.Join(names, " ")
}
