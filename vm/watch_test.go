package vm_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/vmtui/vmtui/vm"
)

func TestParseProcStat(t *testing.T) {
	page := int64(os.Getpagesize())
	for _, tc := range []struct {
		name, in string
		want     vm.ProcStat
		err      bool
	}{
		{
			name: "qemu",
			in:   "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194624 100 0 0 0 1500 250 0 0 20 0 3 0 98765 1000000 300 18446744073709551615 0 0 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0",
			want: vm.ProcStat{State: 'S', CPUTicks: 1750, StartTime: 98765, RSS: 300 * page},
		},
		{
			name: "name with spaces and parentheses",
			in:   "7 (a) b) (c) T 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 55 0 2 0",
			want: vm.ProcStat{State: 'T', CPUTicks: 7, StartTime: 55, RSS: 2 * page},
		},
		{name: "no name", in: "7 a S 1 2 3", err: true},
		{name: "short", in: "7 (a) S 1 2 3 4 5 6 7 8 9 10 11 12", err: true},
		{name: "not a number", in: "7 (a) S 1 7 7 0 -1 0 0 0 0 0 x 4 0 0 20 0 1 0 55 0 2 0", err: true},
		{name: "empty", in: "", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vm.ParseProcStat([]byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("got error %v, want error %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadProcStat(t *testing.T) {
	ps, err := vm.ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ps.PID != os.Getpid() || ps.StartTime == 0 || ps.RSS <= 0 || ps.Stopped() {
		t.Errorf("this process: got %+v", ps)
	}
	if _, err := vm.ReadProcStat(1 << 30); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no such pid: got %v, want an error wrapping os.ErrNotExist", err)
	}
	if _, err := (vm.Status{Name: "stopped"}).Sample(); !errors.Is(err, vm.ErrNotRunning) {
		t.Errorf("a stopped vm's sample: got %v, want ErrNotRunning", err)
	}
}

// nextWatch waits for the next event of kind want from w, failing on
// any other kind but those in skip.
func nextWatch(t *testing.T, w *vm.Watcher, want vm.WatchKind, skip ...vm.WatchKind) vm.WatchEvent {
	t.Helper()
	timeout := time.NewTimer(opTimeout)
	defer timeout.Stop()
	for {
		select {
		case ev := <-w.Events():
			if ev.Kind == want {
				return ev
			}
			ok := false
			for _, k := range skip {
				ok = ok || ev.Kind == k
			}
			if !ok {
				t.Fatalf("got event %v of %s (err %v), want %v", ev.Kind, ev.VM, ev.Err, want)
			}
		case <-timeout.C:
			t.Fatalf("no %v event in %v", want, opTimeout)
		}
	}
}

// TestWatcher follows a real guest that other processes (other Managers,
// as other vmtui commands) pause, resume and stop; a second Watcher finds
// the events socket busy until the first is closed.
func TestWatcher(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("watched")
	st := e.start(def, vm.StartOptions{Paused: true})
	other := e.newManager()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	w := e.m.NewWatcher()
	defer w.Close()
	w.Watch(vm.Status{Name: "stopped"}) // not running: ignored
	w.Watch(st)
	w.Watch(st) // already followed: one watch
	if ev := nextWatch(t, w, vm.WatchConnected); ev.VM != "watched" {
		t.Errorf("connected: vm %q, want watched", ev.VM)
	}
	if w.Watching("stopped") || !w.Watching("watched") {
		t.Errorf("Watching: stopped %v, watched %v; want false, true", w.Watching("stopped"), w.Watching("watched"))
	}

	if err := other.Unpause(ctx, def); err != nil {
		t.Fatal(err)
	}
	nextWatch(t, w, vm.WatchResume)
	if err := other.Pause(ctx, def); err != nil {
		t.Fatal(err)
	}
	nextWatch(t, w, vm.WatchStop)

	// A second watcher (a second TUI) finds the socket held, and gets it
	// once the first lets go.
	w2 := other.NewWatcher()
	defer w2.Close()
	w2.Watch(e.status(other, "watched"))
	if ev := nextWatch(t, w2, vm.WatchBusy); !errors.Is(ev.Err, context.DeadlineExceeded) {
		t.Logf("busy: %v", ev.Err)
	}
	w.Close()
	nextWatch(t, w2, vm.WatchConnected)
	// Listing and controlling the VM never need the events socket.
	if got := e.status(e.m, "watched"); got.State != vm.StatePaused {
		t.Errorf("listed while watched: %s, want paused", got.State)
	}

	if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	if ev := nextWatch(t, w2, vm.WatchShutdown); ev.Reason != "host-qmp-quit" {
		t.Errorf("shutdown reason %q, want host-qmp-quit", ev.Reason)
	}
	nextWatch(t, w2, vm.WatchExit)
	// The watch ended: a new start is followed anew.
	for deadline := time.Now().Add(opTimeout); w2.Watching("watched"); {
		if time.Now().After(deadline) {
			t.Fatal("the watch of an exited vm did not end")
		}
		time.Sleep(10 * time.Millisecond) // polling: the watch's goroutine ends just after its last event
	}
	st = e.start(def, vm.StartOptions{Paused: true})
	w2.Watch(st)
	nextWatch(t, w2, vm.WatchConnected)
	if err := other.Unpause(ctx, def); err != nil {
		t.Fatal(err)
	}
	nextWatch(t, w2, vm.WatchResume)
}
