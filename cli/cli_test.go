package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk/qcow2"
)

// In-process tests of the command-line plumbing; the tests of package main
// run the binary against real images and VMs.

func TestLookup(t *testing.T) {
	table := []*command{{name: "start"}, {name: "status"}, {name: "stop"}, {name: "show"}, {name: "st"}, {name: "create"}}
	tests := []struct {
		word    string
		want    string // the command found, or "" for an error
		errText string
	}{
		{"create", "create", ""},
		{"c", "create", ""},
		{"cre", "create", ""},
		{"star", "start", ""},
		{"stat", "status", ""},
		{"sto", "stop", ""},
		{"sh", "show", ""},
		{"st", "st", ""}, // a whole name wins over the longer names it prefixes
		{"s", "", `ambiguous command "s": could be start, status, stop, show or st`},
		{"sta", "", `ambiguous command "sta": could be start or status`},
		{"creat3", "", `unknown command "creat3"`},
		{"createx", "", `unknown command "createx"`},
		{"", "", `unknown command ""`},
		{"CREATE", "", `unknown command "CREATE"`},
	}
	for _, tt := range tests {
		got, err := lookup(table, tt.word, nil)
		switch {
		case tt.want != "" && (err != nil || got.name != tt.want):
			t.Errorf("lookup(%q) = %v, %v; want %s", tt.word, got, err, tt.want)
		case tt.want == "" && (err == nil || err.Error() != tt.errText):
			t.Errorf("lookup(%q) error = %v; want %q", tt.word, err, tt.errText)
		}
	}
	parent := []*command{{name: "disk"}}
	if _, err := lookup(table, "x", parent); err == nil || err.Error() != `unknown disk command "x"` {
		t.Errorf("lookup under disk: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args []string
		size string
		c    bool
		pos  []string
	}{
		{[]string{"disk"}, "", false, []string{"disk"}},
		{[]string{"-s", "1G", "disk"}, "1G", false, []string{"disk"}},
		{[]string{"disk", "-s", "1G"}, "1G", false, []string{"disk"}},
		{[]string{"-c", "a", "-s=2G", "b"}, "2G", true, []string{"a", "b"}},
		{[]string{"a", "--", "-s", "b"}, "", false, []string{"a", "-s", "b"}},
		{[]string{"--", "-c"}, "", false, []string{"-c"}},
		{[]string{"-s", "--", "x"}, "--", false, []string{"x"}}, // "--" as a flag's value
		{nil, "", false, nil},
	}
	for _, tt := range tests {
		fs := newFlagSet("test")
		size := fs.String("s", "", "")
		c := fs.Bool("c", false, "")
		pos, err := parseFlags(fs, tt.args)
		if err != nil || *size != tt.size || *c != tt.c || !slices.Equal(pos, tt.pos) {
			t.Errorf("parseFlags(%q) = %q, %v with -s %q -c %t; want %q, -s %q -c %t",
				tt.args, pos, err, *size, *c, tt.pos, tt.size, tt.c)
		}
	}
	for _, args := range [][]string{{"-x"}, {"a", "-s"}, {"-c=maybe"}} {
		fs := newFlagSet("test")
		fs.String("s", "", "")
		fs.Bool("c", false, "")
		var ue *usageError
		if _, err := parseFlags(fs, args); !errors.As(err, &ue) || !strings.HasPrefix(ue.msg, "test: ") {
			t.Errorf("parseFlags(%q) = %v, want a usage error naming the command", args, err)
		}
	}
	if _, err := parseFlags(newFlagSet("test"), []string{"a", "-h"}); err != errHelp {
		t.Errorf("parseFlags(-h) = %v, want errHelp", err)
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	p := &progressLine{w: &b}
	p.end() // nothing drawn: nothing to end
	p.update(0, 3<<20)
	p.update(1, 3<<20) // the same hundredth: not redrawn
	p.update(1<<20, 3<<20)
	p.update(3<<20, 3<<20)
	p.update(3<<20, 3<<20)
	p.end()
	want := "\r    (0.00/100%)\r    (33.33/100%)\r    (100.00/100%)\n"
	if b.String() != want {
		t.Errorf("progress drew %q, want %q", b.String(), want)
	}
	b.Reset()
	p = &progressLine{w: &b}
	p.update(0, 0) // an empty disk is done at once
	if b.String() != "\r    (100.00/100%)" {
		t.Errorf("progress of an empty disk: %q", b.String())
	}
}

func TestCheckSummary(t *testing.T) {
	// The texts are those of qemu-img check 7.2 on the same counts.
	tests := []struct {
		res  qcow2.CheckResult
		want string
	}{
		{qcow2.CheckResult{TotalClusters: 256, AllocatedClusters: 2, ImageEndOffset: 458752},
			"No errors were found on the image.\n2/256 = 0.78% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 458752\n"},
		{qcow2.CheckResult{TotalClusters: 16384, ImageEndOffset: 262144},
			"No errors were found on the image.\nImage end offset: 262144\n"},
		{qcow2.CheckResult{Leaks: 1, TotalClusters: 256, AllocatedClusters: 2, ImageEndOffset: 720896},
			"\n1 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n2/256 = 0.78% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 720896\n"},
		{qcow2.CheckResult{Corruptions: 2, Leaks: 3, TotalClusters: 8, AllocatedClusters: 3, FragmentedClusters: 1, CompressedClusters: 2, ImageEndOffset: 1},
			"\n2 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n" +
				"\n3 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n" +
				"3/8 = 37.50% allocated, 33.33% fragmented, 66.67% compressed clusters\nImage end offset: 1\n"},
		{qcow2.CheckResult{CheckErrors: 1},
			"\n1 internal errors have occurred during the check.\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		printCheckSummary(&b, &tt.res)
		if b.String() != tt.want {
			t.Errorf("summary of %+v:\n%q\nwant\n%q", tt.res, b.String(), tt.want)
		}
	}
}

func TestRunInProcess(t *testing.T) {
	// The exit statuses of the plumbing, without a binary.
	tests := []struct {
		args []string
		code int
		out  string // prefix of stdout
		err  string // prefix of stderr
	}{
		{nil, 1, "", "usage:\tvmtui start"},
		{[]string{"help"}, 0, "usage:\tvmtui start", ""},
		{[]string{"help", "disk"}, 0, "usage:\tvmtui disk check", ""},
		{[]string{"help", "disk", "resize"}, 0, "usage:\tvmtui disk resize disk [+]size\n\nGrow", ""},
		{[]string{"help", "create", "x"}, 1, "", "vmtui: create takes no subcommand\nusage:\tvmtui create"},
		{[]string{"disk", "-h"}, 0, "usage:\tvmtui disk check", ""},
		{[]string{"disk", "resize", "-h"}, 0, "usage:\tvmtui disk resize", ""},
		{[]string{"disk", "resize", "x"}, 1, "", "usage:\tvmtui disk resize disk [+]size\n"},
		{[]string{"create", "a", "b"}, 1, "", "usage:\tvmtui create"},
		{[]string{"--version"}, 1, "", "vmtui: unknown option --version\nusage:"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := New(strings.NewReader(""), &out, &errOut, noPaths(t)).Run(context.Background(), tt.args)
		if code != tt.code || !strings.HasPrefix(out.String(), tt.out) || !strings.HasPrefix(errOut.String(), tt.err) ||
			(tt.out == "" && out.Len() > 0) || (tt.err == "" && errOut.Len() > 0) {
			t.Errorf("vmtui %q: exit %d\nstdout %q\nstderr %q\nwant exit %d, stdout %q..., stderr %q...",
				tt.args, code, out.String(), errOut.String(), tt.code, tt.out, tt.err)
		}
	}
}

// noPaths is the state root of commands that must not need one.
func noPaths(t *testing.T) func() (*store.Paths, error) {
	return func() (*store.Paths, error) {
		t.Error("a command that needs no VM opened the store")
		return nil, errors.New("no state root")
	}
}

// runIn runs the command line in process on the state root dir, with the
// working directory dir, and returns the exit status, stdout and stderr.
func runIn(t *testing.T, dir string, paths func() (*store.Paths, error), args ...string) (int, string, string) {
	t.Helper()
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	code := New(strings.NewReader(""), &out, &errOut, paths).Run(context.Background(), args)
	return code, out.String(), errOut.String()
}

// TestRunStore: the VM commands act on the store of the paths given to New,
// opened once, on first use; the disk commands do not open it.
func TestRunStore(t *testing.T) {
	dir := t.TempDir()
	opened := 0
	paths := func() (*store.Paths, error) {
		opened++
		return store.HomePaths(dir), nil
	}
	c := New(strings.NewReader(""), io.Discard, io.Discard, paths)
	for _, args := range [][]string{{"define", "-b", "/k", "-m", "128M", "web"}, {"status", "web"}, {"--list"}} {
		if code := c.Run(context.Background(), args); code != 0 {
			t.Fatalf("vmtui %q: exit %d", args, code)
		}
	}
	if opened != 1 {
		t.Errorf("the store was opened %d times, want once", opened)
	}
	if _, err := os.Stat(filepath.Join(dir, "vms", "web.toml")); err != nil {
		t.Errorf("define did not write to the state root given: %v", err)
	}

	tests := []struct {
		args []string
		code int
		out  string // prefix of stdout
		err  string
	}{
		{[]string{"status", "1"}, 0, listHeader, ""},
		{[]string{"remove", "web"}, 0, "", "vmtui: removed vm web (id 1)\n"},
		{[]string{"status", "web"}, 1, "", "vmtui: web: vm not found\n"},
		{[]string{"remove", "1"}, 1, "", "vmtui: 1: vm not found\n"},
		{[]string{"define", "-m", "128M", "2"}, 1, "", "vmtui: 2: vm not found\n"},
	}
	for _, tt := range tests {
		code, out, errOut := runIn(t, dir, paths, tt.args...)
		if code != tt.code || !strings.HasPrefix(out, tt.out) || (tt.out == "" && out != "") || errOut != tt.err {
			t.Errorf("vmtui %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q..., stderr %q",
				tt.args, code, out, errOut, tt.code, tt.out, tt.err)
		}
	}

	// A disk command needs no state root.
	if err := os.WriteFile(filepath.Join(dir, "a.raw"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runIn(t, dir, noPaths(t), "disk", "info", "a.raw")
	if code != 0 || !strings.HasPrefix(out, "image: a.raw\n") || errOut != "" {
		t.Errorf("disk info: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

const listHeader = "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n"

// TestRunNoTerminal: without arguments and without a terminal (a pipe, a
// script), vmtui prints its usage instead of opening the TUI.
func TestRunNoTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var errOut bytes.Buffer
	code := New(r, w, &errOut, noPaths(t)).Run(context.Background(), nil)
	if code != 1 || !strings.HasPrefix(errOut.String(), "usage:\tvmtui start") {
		t.Errorf("vmtui on pipes: exit %d, stderr %q; want 1 and the usage", code, errOut.String())
	}
}
