// Command vmtui manages QEMU virtual machines and their disk images, in the
// manner of OpenBSD's vmctl(8).
//
// Commands may be abbreviated to any unambiguous prefix, as in vmctl:
// "vmtui cre" is "vmtui create". Results go to standard output; errors go
// to standard error as "vmtui: what: why", with a non-zero exit status.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/vmtui/vmtui/ui"
)

const progName = "vmtui"

func main() {
	// A signal cancels the context, so that a long conversion stops and
	// removes its partial output instead of leaving it behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
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

// env is what a command runs with: the streams it writes to and the path
// of commands that led to it (["disk", "info"]).
type env struct {
	out, err io.Writer
	root     []*command // the command table
	path     []*command
}

// commandTable returns vmtui's commands, in the order help lists them.
func commandTable() []*command {
	return []*command{
		startCommand,
		stopCommand,
		defineCommand,
		pauseCommand,
		unpauseCommand,
		waitCommand,
		consoleCommand,
		statusCommand,
		showCommand,
		removeCommand,
		createCommand,
		{
			name:  "disk",
			about: "Inspect, check, convert, commit and resize disk images.",
			sub: []*command{
				diskCheckCommand,
				diskCommitCommand,
				diskConvertCommand,
				diskInfoCommand,
				diskResizeCommand,
			},
		},
		{name: "help", synopsis: "[command]", about: "Show how to use vmtui or one of its commands."},
	}
}

// runTUI runs the full-screen interface on the VMs of the environment's
// state root.
func runTUI(ctx context.Context) error {
	m, err := manager()
	if err != nil {
		return err
	}
	return ui.Run(ctx, ui.NewManagerBackend(m))
}

// run runs the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{out: stdout, err: stderr, root: commandTable()}
	err := dispatch(ctx, e, args)
	return report(e, err)
}

func dispatch(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		// The TUI needs a terminal; elsewhere (a pipe, a script) say how
		// to use vmtui, as vmctl does.
		if !term.IsTerminal(int(os.Stdin.Fd())) || !term.IsTerminal(int(os.Stdout.Fd())) {
			return &usageError{}
		}
		return runTUI(ctx)
	}
	switch args[0] {
	case "-h", "-help", "--help":
		return help(e, args[1:])
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
			printUsage(e.out, e.root, path)
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
		return help(e, args)
	}
	return runLeaf(ctx, e, path, args)
}

// runLeaf runs the command at the end of path.
func runLeaf(ctx context.Context, e *env, path []*command, args []string) error {
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

// help prints the usage of vmtui, or of the command named by args, to
// standard output.
func help(e *env, args []string) error {
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
			return runLeaf(context.Background(), e, path, []string{"-h"})
		}
	}
	printUsage(e.out, e.root, path)
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
