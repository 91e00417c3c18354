package vm_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm"
)

// TestStopTakesTheLock: a stop holds the VM's lock as a send, a save or a
// snapshot does, so it never overlaps one. Held by one that does not end,
// the lock makes a stop fail naming it (not "not running", nor "a start is
// in progress"), the QEMU untouched; a stop waits for one that ends, then
// stops the VM; a forced stop behind one that does not end goes on. Not
// parallel: it shortens how long a stop waits.
func TestStopTakesTheLock(t *testing.T) {
	e := newGuestEnv(t)
	def := e.define("held")
	st := e.start(def, vm.StartOptions{Paused: true})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	lockfile := e.paths.LockFile("held")
	hold := func(marker, content string) (release func()) {
		t.Helper()
		l, err := store.Lock(ctx, lockfile)
		if err != nil {
			t.Fatal(err)
		}
		path := ""
		if marker != "" {
			path = e.paths.RuntimeFile("held", marker)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return func() {
			if path != "" {
				os.Remove(path)
			}
			l.Unlock()
		}
	}

	restore := vm.SetStopLockWait(500 * time.Millisecond)
	for _, c := range []struct{ marker, content, want string }{
		{"migrating", "save vm held", "a save is in progress"},
		{"migrating", "send vm held", "a send is in progress"},
		{"snapshotting", "", "a snapshot operation is in progress"},
		{"", "", "another vmtui command holds the vm"},
	} {
		release := hold(c.marker, c.content)
		err := e.m.Stop(ctx, def, vm.StopOptions{Wait: true})
		release()
		if err == nil || errors.Is(err, vm.ErrNotRunning) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("stop while the lock is held (%s %q): %v; want an error saying %q", c.marker, c.content, err, c.want)
		}
		if got := e.status(e.m, "held"); got.PID != st.PID || got.State != vm.StatePaused {
			t.Fatalf("after a stop refused (%s): state %s, pid %d (err %q); want paused, pid %d", c.marker, got.State, got.PID, got.Err, st.PID)
		}
	}
	restore()

	// An operation that ends is waited for, then the VM stops.
	release := hold("migrating", "save vm held")
	done := make(chan error, 1)
	go func() { done <- e.m.Stop(ctx, def, vm.StopOptions{Force: true, Wait: true}) }()
	select {
	case err := <-done:
		release()
		t.Fatalf("a forced stop returned (%v) while a save held the vm", err)
	case <-time.After(time.Second): // not synchronisation: it must not end at all
	}
	if !alive(st.PID) {
		release()
		t.Fatalf("QEMU %d exited while a save held the vm", st.PID)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("forced stop once the save ended: %v", err)
	}
	if err := waitGone(st.PID, opTimeout); err != nil {
		t.Fatal(err)
	}
	e.requireNoRuntimeFiles("held")

	// A forced stop behind an operation that does not end goes on.
	st = e.start(def, vm.StartOptions{Paused: true})
	defer vm.SetStopLockWait(500 * time.Millisecond)()
	release = hold("snapshotting", "")
	err := e.m.Stop(ctx, def, vm.StopOptions{Force: true, Wait: true})
	release()
	if err != nil {
		t.Fatalf("forced stop behind a hung snapshot: %v", err)
	}
	if err := waitGone(st.PID, opTimeout); err != nil {
		t.Fatal(err)
	}
	if got := e.status(e.m, "held"); got.State != vm.StateStopped {
		t.Errorf("after a forced stop: state %s (err %q)", got.State, got.Err)
	}
	e.requireNoRuntimeFiles("held")
}
