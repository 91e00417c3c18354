package console

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/seriallog"
)

func writeLog(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func numbered(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "line %d\r\n", i)
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or 30 s pass (a bound for a failure,
// generous for a loaded machine); got describes the state for the failure
// message.
func waitFor(t *testing.T, what string, cond func() bool, got ...func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for _, g := range got {
				t.Logf("got %q", g())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	path := writeLog(t, numbered(1, 50)+"prompt# \x1b[6n")
	ctx, cancel := context.WithCancel(context.Background())
	var out, msgs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, WatchOptions{Name: "w", SerialLog: path, TailLines: 3, Stdout: &out, Stderr: &msgs})
	}()
	want := numbered(49, 50) + "prompt# "
	waitFor(t, "the tail", func() bool { return out.String() == want })
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("echo hi\r\nhi\r\n")
	f.Close()
	want += "echo hi\r\nhi\r\n"
	waitFor(t, "appended output", func() bool { return out.String() == want })

	// A log capped before a new start (replaced, smaller) is read from
	// its start.
	if err := seriallog.Cap(path, 100); err != nil {
		t.Fatal(err)
	}
	capped, _ := os.ReadFile(path)
	want += strings.ReplaceAll(string(capped), "\x1b[6n", "") // queries are dropped
	waitFor(t, "the capped log", func() bool { return out.String() == want }, out.String)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch: %v", err)
	}
	if !strings.Contains(msgs.String(), "read-only") {
		t.Errorf("messages %q do not say read-only", msgs.String())
	}
}
