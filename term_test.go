package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// Terminal queries a program may write: the background colour (OSC 11) and
// the cursor position (DSR 6), which termenv sends as a fence after it.
var terminalQueries = []string{"\x1b]11;?", "\x1b[6n"}

// silentTerminal runs vmtui in a new session whose controlling terminal is a
// pseudo-terminal that never answers anything, as a serial line or the Linux
// console may not. It returns the master side and the output so far.
type silentTerminal struct {
	cmd    *exec.Cmd
	master *os.File
	done   chan struct{} // closed when the output has been read to its end

	mu  sync.Mutex
	out bytes.Buffer
}

func startSilent(t *testing.T, home string, args ...string) *silentTerminal {
	t.Helper()
	cmd := exec.Command(vmtuiBin, args...)
	cmd.Dir = home
	cmd.Env = append(withoutEnv(os.Environ(), "CI", "TMUX", "STY", "TERM", "COLORFGBG", "VMTUI_HOME", "NO_COLOR"),
		"TERM=xterm-256color", "VMTUI_HOME="+home)
	master, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Fatalf("start vmtui %q on a pty: %v", args, err)
	}
	s := &silentTerminal{cmd: cmd, master: master, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil { // EIO once every slave is closed
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		master.Close()
	})
	return s
}

func (s *silentTerminal) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitOutput waits until the output contains want.
func (s *silentTerminal) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.output(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("vmtui %q did not print %q in 30 s; it printed %q", s.cmd.Args[1:], want, s.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for vmtui to exit and returns its exit code and whole output.
func (s *silentTerminal) wait(t *testing.T) (int, string) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		t.Fatalf("vmtui %q still runs after 30 s; it printed %q", s.cmd.Args[1:], s.output())
	}
	<-s.done
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, s.output()
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// TestNoTerminalQuery: the commands write their output and nothing else to
// a terminal, and never wait for it to answer: bubbletea v1's package init
// used to ask for the background colour (and wait up to 5 s) in every
// command.
func TestNoTerminalQuery(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "a.raw"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--list"},
		{"--list", "--json"},
		{"disk", "info", "a.raw"},
		{"help"},
		{"help", "start"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			s := startSilent(t, home, args...)
			code, out := s.wait(t)
			if code != 0 {
				t.Fatalf("exit %d, output %q", code, out)
			}
			if strings.Contains(out, "\x1b") {
				t.Errorf("output has escape sequences (terminal queries %q): %q", terminalQueries, out)
			}
			if strings.TrimSpace(out) == "" {
				t.Errorf("no output")
			}
		})
	}
}

// TestTUINoTerminalQuery: the full-screen TUI draws its table on a terminal
// that answers nothing, without asking it anything first.
func TestTUINoTerminalQuery(t *testing.T) {
	home := t.TempDir()
	s := startSilent(t, home)
	s.waitOutput(t, "quit")
	for _, q := range terminalQueries {
		if strings.Contains(s.output(), q) {
			t.Errorf("the TUI asked the terminal %q: %q", q, s.output())
		}
	}
	if _, err := s.master.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	if code, out := s.wait(t); code != 0 {
		t.Errorf("TUI exit %d after q; output %q", code, out)
	}
}
