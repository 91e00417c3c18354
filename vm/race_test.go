package vm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm"
)

// Races between vmtui commands on one VM: status queries during a first
// start, remove during start.

// stateStarting is vm.StateStarting, spelt out so that these tests compile
// (and fail) without it.
const stateStarting = vm.State("starting")

// TestListDuringFirstStart: status queries (--list, status, the TUI's
// refresh) running while a VM starts for the first time, before it has a
// runtime directory, must leave the new QEMU's sockets and pidfile alone.
func TestListDuringFirstStart(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	const starts, listers = 6, 4
	for i := range starts {
		name := fmt.Sprintf("fresh%d", i)
		def := e.define(name)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[vm.State]int{}
		for range listers {
			m := e.newManager()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					list, err := m.List(ctx)
					if err != nil {
						continue
					}
					for _, st := range list {
						if st.Name == name {
							mu.Lock()
							seen[st.State]++
							mu.Unlock()
						}
					}
				}
			}()
		}
		st, err := e.m.Start(ctx, def, vm.StartOptions{Paused: true})
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("start %s with %d listers: %v", name, listers, err)
		}
		got := e.status(e.newManager(), name)
		t.Logf("start %d: listers saw %v; now %s (err %q)", i, seen, got.State, got.Err)
		if got.State != vm.StatePaused || got.PID != st.PID {
			t.Errorf("start %d with %d listers: state %s, pid %d (err %q); want paused, pid %d", i, listers, got.State, got.PID, got.Err, st.PID)
		}
		for state, n := range seen {
			if state != vm.StateStopped && state != stateStarting && state != vm.StatePaused {
				t.Errorf("start %d: listers saw the vm %s %d times", i, state, n)
			}
		}
		if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true}); err != nil {
			t.Fatalf("forced stop of %s: %v", name, err)
		}
	}
}

// gatedQEMU writes a program that waits until the file gate exists, then
// runs QEMU: a start held in progress for as long as a test needs.
func gatedQEMU(t *testing.T) (binary, gate string) {
	t.Helper()
	dir := t.TempDir()
	gate = filepath.Join(dir, "gate")
	binary = filepath.Join(dir, "gated-qemu")
	script := fmt.Sprintf("#!/bin/sh\nwhile [ ! -e %q ]; do sleep 0.02; done\nexec qemu-system-x86_64 \"$@\"\n", gate)
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return binary, gate
}

// waitLocked waits until someone holds the lock file path.
func waitLocked(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := store.TryLockShared(path)
		if errors.Is(err, store.ErrLocked) {
			return
		}
		if err == nil {
			l.Unlock()
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody holds %s after a minute", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStartingState: while a start is in progress, queries answer at once
// that the VM is starting, and leave the start alone.
func TestStartingState(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	binary, gate := gatedQEMU(t)
	def := e.define("slow")
	starter := e.newManager()
	starter.Binary = binary
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	type result struct {
		st  vm.Status
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := starter.Start(ctx, def, vm.StartOptions{Paused: true})
		done <- result{st, err}
	}()
	defer os.WriteFile(gate, nil, 0o600) // never leave the start hanging
	waitLocked(t, e.paths.LockFile("slow"))

	// The answers come while the start is held at the gate, and from its
	// marker: a query that had waited for the start and given up would
	// say so (the state starting, with an error).
	for i := range 3 {
		got := e.status(e.newManager(), "slow")
		if got.State != stateStarting || got.Err != "" {
			t.Errorf("list %d during a start: state %s (err %q), want %s, no error", i, got.State, got.Err, stateStarting)
		}
		got, _, err := e.newManager().Status(ctx, "slow")
		if err != nil || got.State != stateStarting || got.Err != "" {
			t.Errorf("status %d during a start: state %s (err %q, %v), want %s, no error", i, got.State, got.Err, err, stateStarting)
		}
	}
	// Not waiting at all: a query whose context has already ended still
	// answers.
	ended, endNow := context.WithCancel(ctx)
	endNow()
	if got, _, err := e.newManager().Status(ended, "slow"); err != nil || got.State != stateStarting || got.Err != "" {
		t.Errorf("status with an ended context during a start: state %s (err %q, %v), want %s at once", got.State, got.Err, err, stateStarting)
	}
	r := e.run("--list")
	if r.code != 0 || !strings.Contains(r.stdout, " starting slow\n") || r.stderr != "" {
		t.Errorf("vmtui --list during a start: exit %d, %q, stderr %q; want the vm starting, no error", r.code, r.stdout, r.stderr)
	}
	select {
	case res := <-done:
		t.Fatalf("the start ended before its gate opened: %+v", res)
	default:
	}

	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("start: %v\nqemu log:\n%s", res.err, readFile(e.paths.QEMULog("slow")))
	}
	if got := e.status(e.m, "slow"); got.State != vm.StatePaused || got.PID != res.st.PID {
		t.Errorf("after the start: state %s, pid %d (err %q); want paused, pid %d", got.State, got.PID, got.Err, res.st.PID)
	}
}

// TestStartOfRemovedVM: a start that looked the VM up before a remove took
// its definition away must not start it: the start finds it gone once it
// holds the VM's lock.
func TestStartOfRemovedVM(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	e.define("doomed")
	m2 := e.newManager()
	def, err := m2.Store().Lookup("doomed")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Store().Remove("doomed"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err = m2.Start(ctx, def, vm.StartOptions{Paused: true})
	if !errors.Is(err, store.ErrNotFound) || err.Error() != "doomed: vm not found" {
		t.Errorf("start of a vm removed since it was looked up: %v, want doomed: %v", err, store.ErrNotFound)
	}
	if pids := qemuPIDs(e.paths.PIDFile("doomed"), false); len(pids) != 0 {
		t.Errorf("QEMUs %v run for a removed vm", pids)
	}

	// Defined again under the same name, it is another VM (another ID):
	// the old lookup still does not start it.
	e.define("doomed")
	_, err = m2.Start(ctx, def, vm.StartOptions{Paused: true})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("start by a stale lookup of a vm defined again: %v, want %v", err, store.ErrNotFound)
	}
	if pids := qemuPIDs(e.paths.PIDFile("doomed"), false); len(pids) != 0 {
		t.Errorf("QEMUs %v run after a stale start", pids)
	}
}

// TestRemoveDuringStart races `vmtui remove` with `vmtui start`: either the
// start wins and remove says the vm is running, or remove wins and start
// finds no vm; never both, and never a QEMU that --list does not show.
// The two are started together in either order, or remove once the start
// holds the VM's lock (then the start must win).
func TestRemoveDuringStart(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	const rounds = 12
	var startWon, removeWon int
	for i := range rounds {
		name := fmt.Sprintf("q%d", i)
		e.define(name)
		var start, remove *cliRun
		switch i % 3 {
		case 0:
			start = e.startCLI("start", name)
			remove = e.startCLI("remove", name)
		case 1:
			remove = e.startCLI("remove", name)
			start = e.startCLI("start", name)
		case 2:
			start = e.startCLI("start", name)
			waitLockedOrExited(t, e.paths.LockFile(name), start.cmd.Process.Pid)
			remove = e.startCLI("remove", name)
		}
		rs, rr := start.wait(t), remove.wait(t)
		pids := qemuPIDs(e.paths.PIDFile(name), false)
		switch {
		case rs.code == 0 && rr.code == 1 && strings.Contains(rr.stderr, "vm is running"):
			startWon++
			if len(pids) != 1 {
				t.Errorf("round %d: start won, but QEMUs %v", i, pids)
			}
			if got := e.status(e.m, name); got.State != vm.StateRunning {
				t.Errorf("round %d: start won, but the vm is listed %s (err %q)", i, got.State, got.Err)
			}
			if r := e.run("stop", "-f", name); r.code != 0 {
				t.Errorf("round %d: stop -f: %s", i, r.stderr)
			}
		case rr.code == 0 && rs.code == 1 && strings.Contains(rs.stderr, "vm not found"):
			removeWon++
			if len(pids) != 0 {
				t.Errorf("round %d: remove won, but QEMUs %v run", i, pids)
			}
			if i%3 == 2 {
				t.Errorf("round %d: remove, run once the start held the lock, won", i)
			}
		default:
			t.Errorf("round %d: start: exit %d %q; remove: exit %d %q; QEMUs %v", i, rs.code, rs.stderr, rr.code, rr.stderr, pids)
			killQEMUs(t, e.paths.RuntimeDir(name))
		}
	}
	t.Logf("start won %d, remove won %d of %d rounds", startWon, removeWon, rounds)
}

// waitLockedOrExited waits until someone holds the lock file path, or
// process pid has exited.
func waitLockedOrExited(t *testing.T, path string, pid int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for alive(pid) {
		l, err := store.TryLockShared(path)
		if errors.Is(err, store.ErrLocked) {
			return
		}
		if err == nil {
			l.Unlock()
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d runs, and nobody holds %s after a minute", pid, path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
