package cli

import (
	"bytes"
	"context"
	"errors"
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
