package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/creack/pty"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
)

// TestSendReceiveSaveRefusals: what send, receive and save refuse before
// touching a VM (the guest tests of package vm and of the binary test the
// rest).
func TestSendReceiveSaveRefusals(t *testing.T) {
	home := t.TempDir()
	paths := store.HomePaths(home)
	s, err := store.Open(paths)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&config.VM{Name: "web", Memory: 128 << 20, Kernel: "/nonexistent/vmlinuz"}); err != nil {
		t.Fatal(err)
	}
	ptm, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	defer tty.Close()
	go io.Copy(io.Discard, ptm)

	run := func(stdin io.Reader, stdout io.Writer, args ...string) (int, string) {
		var errOut bytes.Buffer
		c := New(stdin, stdout, &errOut, func() (*store.Paths, error) { return paths, nil })
		return c.Run(context.Background(), args), errOut.String()
	}
	for _, tc := range []struct {
		name   string
		stdin  io.Reader
		stdout io.Writer
		args   []string
		want   string
	}{
		{"send to a terminal", strings.NewReader(""), tty, []string{"send", "web"}, "send vm web: standard output is a terminal"},
		{"send a stopped vm", strings.NewReader(""), io.Discard, []string{"send", "web"}, "send vm web: vm is not running"},
		{"send no vm", strings.NewReader(""), io.Discard, []string{"send", "nope"}, "nope: vm not found"},
		{"save a stopped vm", strings.NewReader(""), io.Discard, []string{"save", "1"}, "save vm web: vm is not running"},
		{"receive from a terminal", tty, io.Discard, []string{"receive", "copy"}, "receive vm copy: standard input is a terminal"},
		{"receive a foreign stream", strings.NewReader("#!/bin/sh\necho not a vm\n"), io.Discard, []string{"receive", "copy"},
			"receive vm copy: vm stream: no magic"},
		{"receive nothing", strings.NewReader(""), io.Discard, []string{"receive", "copy"}, "truncated"},
		{"receive as an id", strings.NewReader(""), io.Discard, []string{"receive", "12"}, "all digits"},
		{"receive an invalid name", strings.NewReader(""), io.Discard, []string{"receive", "bad/name"}, "receive vm bad/name"},
		{"send without a vm", strings.NewReader(""), io.Discard, []string{"send"}, "usage:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := run(tc.stdin, tc.stdout, tc.args...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("vmtui %q: exit %d, stderr %q; want 1 and %q", tc.args, code, stderr, tc.want)
			}
		})
	}
	if _, err := s.Lookup("copy"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after refused receives, lookup copy: %v", err)
	}
	if _, err := os.Stat(paths.SavedStateFile("web")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saved state of a refused save: %v", err)
	}
}
