package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// printUsage prints the usage lines of every command under path (all of
// them for an empty path), as vmctl does: "usage:" and a tab, then one line
// per command.
func printUsage(w io.Writer, root, path []*command) {
	var lines []string
	var walk func(prefix string, cmds []*command)
	walk = func(prefix string, cmds []*command) {
		for _, c := range cmds {
			if c.sub != nil {
				walk(prefix+c.name+" ", c.sub)
				continue
			}
			lines = append(lines, strings.TrimRight(progName+" "+prefix+c.name+" "+c.synopsis, " "))
		}
	}
	if len(path) == 0 {
		walk("", root)
	} else {
		prefix := ""
		if len(path) > 1 {
			prefix = commandName(path[:len(path)-1]) + " "
		}
		walk(prefix, path[len(path)-1:])
	}
	for i, l := range lines {
		if i == 0 {
			fmt.Fprintf(w, "usage:\t%s\n", l)
		} else {
			fmt.Fprintf(w, "\t%s\n", l)
		}
	}
	if len(path) == 0 {
		fmt.Fprint(w, usageNotes)
	}
}

const usageNotes = `
Commands may be abbreviated to any unambiguous prefix: vmtui cre, vmtui disk inf.
Sizes are bytes, or a number with a unit B, K, M, G, T, P or E (powers of 1024,
either case), with an optional fraction: 512M, 10G, 1.5G.
"vmtui help command" or "vmtui command -h" describes one command.
`

// usageError is a command line vmtui cannot make sense of: the message,
// then the usage of the command at path (of vmtui when path is empty), on
// standard error, and exit status 1.
type usageError struct {
	path []*command
	msg  string
}

func (e *usageError) Error() string { return e.msg }

// exitError ends vmtui with a given status; its error, if any, is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// report prints err the way vmtui reports failures and returns the exit
// status.
func (e *env) report(err error) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		if ue.msg != "" {
			fmt.Fprintf(e.stderr, "%s: %s\n", progName, ue.msg)
		}
		printUsage(e.stderr, e.root, ue.path)
		return 1
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(e.stderr, "%s: %v\n", progName, ee.err)
		}
		return ee.code
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintf(e.stderr, "%s: %v (interrupted)\n", progName, err)
		return 130
	}
	fmt.Fprintf(e.stderr, "%s: %v\n", progName, err)
	return 1
}

// newFlagSet makes the flag set of a command. Errors are reported by
// parseFlags, not printed by the flag package.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// errHelp asks a command to print its help; parseFlags returns it for -h.
var errHelp = flag.ErrHelp

// parseFlags parses args with fs and returns the positional arguments.
// Flags may come before, between or after the positional arguments
// ("create -s 1G disk" and "create disk -s 1G" are the same); after "--"
// everything is positional.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, &usageError{msg: fmt.Sprintf("%s: %v", fs.Name(), err)}
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// help prints the command's usage line, what it does (its about line and
// text) and its flags to standard output, the answer to "vmtui command -h",
// and returns errHelp.
func (e *env) help(fs *flag.FlagSet, text string) error {
	printUsage(e.stdout, e.root, e.path)
	cmd := e.path[len(e.path)-1]
	fmt.Fprintf(e.stdout, "\n%s\n", cmd.about)
	if text = strings.TrimSpace(text); text != "" {
		fmt.Fprintf(e.stdout, "\n%s\n", text)
	}
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(e.stdout, "\nOptions:")
			first = false
		}
		// As the flag package prints them, but with two dashes for long
		// names, the way the usage lines write them.
		dash := "-"
		if len(f.Name) > 1 {
			dash = "--"
		}
		arg, usage := flag.UnquoteUsage(f)
		line := "  " + dash + f.Name
		if arg != "" {
			line += " " + arg
		}
		if len(line) <= 4 {
			line += "\t"
		} else {
			line += "\n    \t"
		}
		fmt.Fprintf(e.stdout, "%s%s\n", line, usage)
	})
	return errHelp
}
