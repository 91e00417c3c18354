package qmp_test

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/vm/qmp"
	"github.com/vmtui/vmtui/vm/qmp/qmptest"
)

// TestDialBusy checks QEMU's one-client rule against the fake, which
// serves one client at a time the same way: a second Dial times out with
// ErrBusy and succeeds once the first client has gone.
func TestDialBusy(t *testing.T) {
	s := qmptest.NewUnixServer(t)
	first, err := qmp.Dial(testCtx(t, timeout), s.Path())
	if err != nil {
		t.Fatal(err)
	}
	_, err = qmp.Dial(testCtx(t, 100*time.Millisecond), s.Path())
	if !errors.Is(err, qmp.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Dial: got %v, want ErrBusy", err)
	}
	first.Close()
	second, err := qmp.Dial(testCtx(t, timeout), s.Path())
	if err != nil {
		t.Fatalf("Dial after the first client left: %v", err)
	}
	second.Close()
}

func TestDialMissingSocket(t *testing.T) {
	_, err := qmp.Dial(testCtx(t, timeout), filepath.Join(t.TempDir(), "none.sock"))
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("got %v, want ENOENT", err)
	}
}

// TestMonitorReconnects drops the connection under a watcher and checks
// that it redials and re-queries.
func TestMonitorReconnects(t *testing.T) {
	s := qmptest.NewUnixServer(t)
	vm := &qmptest.VM{Status: "running"}
	s.EmulateVM(vm)

	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	m := &qmp.Monitor{Path: s.Path(), MinBackoff: time.Millisecond}
	statuses := make(chan qmp.RunState, 4)
	runErr := make(chan error, 1)
	go func() {
		runErr <- m.Run(ctx, func(ctx context.Context, c *qmp.Client) error {
			sub := c.Subscribe(4)
			defer sub.Close()
			st, err := c.QueryStatus(ctx)
			if err != nil {
				return nil
			}
			statuses <- st.Status
			for range sub.C {
			}
			return nil
		})
	}()

	if got := <-statuses; got != qmp.StateRunning {
		t.Fatalf("first connection: got %s, want running", got)
	}
	vm.SetStatus("paused") // changed while nobody listens
	s.Disconnect()
	if got := <-statuses; got != qmp.StatePaused {
		t.Fatalf("after reconnect: got %s, want paused", got)
	}
	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: got %v, want context.Canceled", err)
	}
}

func TestMonitorGivesUp(t *testing.T) {
	m := &qmp.Monitor{
		Path:  filepath.Join(t.TempDir(), "gone.sock"),
		Retry: func(err error) bool { return !errors.Is(err, syscall.ENOENT) },
	}
	called := false
	err := m.Run(testCtx(t, timeout), func(context.Context, *qmp.Client) error { called = true; return nil })
	if !errors.Is(err, syscall.ENOENT) || called {
		t.Errorf("Run: got %v (fn called: %v), want ENOENT", err, called)
	}
}

func TestMonitorStopsOnError(t *testing.T) {
	s := qmptest.NewUnixServer(t)
	errStop := errors.New("enough")
	m := &qmp.Monitor{Path: s.Path()}
	n := 0
	err := m.Run(testCtx(t, timeout), func(context.Context, *qmp.Client) error { n++; return errStop })
	if !errors.Is(err, errStop) || n != 1 {
		t.Errorf("Run: got %v after %d calls, want %v after 1", err, n, errStop)
	}
}
