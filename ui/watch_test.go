package ui

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// countingBackend counts the full lists, the readings of one VM, and the
// watch events that said a socket was busy.
type countingBackend struct {
	Backend
	lists, statuses, busy atomic.Int64
	once                  sync.Once
	relay                 chan vm.WatchEvent
}

func (b *countingBackend) Watcher() Watcher {
	w := b.Backend.Watcher()
	b.once.Do(func() {
		b.relay = make(chan vm.WatchEvent)
		go func() {
			for ev := range w.Events() {
				if ev.Kind == vm.WatchBusy {
					b.busy.Add(1)
				}
				b.relay <- ev
			}
		}()
	})
	return relayWatcher{w, b.relay}
}

// relayWatcher is a Watcher whose events pass through a relay.
type relayWatcher struct {
	Watcher
	events chan vm.WatchEvent
}

func (r relayWatcher) Events() <-chan vm.WatchEvent { return r.events }

func (b *countingBackend) List(ctx context.Context) ([]vm.Status, error) {
	b.lists.Add(1)
	return b.Backend.List(ctx)
}

func (b *countingBackend) Status(ctx context.Context, name string) (vm.Status, error) {
	b.statuses.Add(1)
	return b.Backend.Status(ctx, name)
}

// TestGuestEventsFollowed runs two TUIs on a real guest that another
// process (another Manager of the same state root, as another vmtui
// command) pauses, resumes and stops. The first TUI never ticks (an hour
// apart) and reads the list once: what it shows comes from QEMU's events.
// The second finds the guest's events socket held by the first, and
// follows the guest by reading it on each tick instead.
func TestGuestEventsFollowed(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	testguest.QEMU(t)
	kernel, initrd := testguest.Paths(t)
	paths := store.HomePaths(t.TempDir())
	manager := func() *vm.Manager {
		t.Helper()
		s, err := store.Open(paths)
		if err != nil {
			t.Fatal(err)
		}
		m := vm.NewManager(s)
		m.Accel = "tcg"
		return m
	}
	other := manager()
	def := &config.VM{Name: "guest", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: kernel, Initrd: initrd, Append: testguest.Cmdline}
	if err := other.Store().Create(def); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := other.Start(ctx, def, vm.StartOptions{Paused: true}); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := other.Stop(ctx, def, vm.StopOptions{Force: true, Wait: true}); err != nil && err != vm.ErrNotRunning {
			t.Errorf("stop: %v", err)
		}
	})

	type tui struct {
		tm *teatest.TestModel
		b  *countingBackend
	}
	open := func(refresh time.Duration) tui {
		b := &countingBackend{Backend: NewManagerBackend(manager())}
		t.Cleanup(func() { b.Watcher().Close() })
		tm := teatest.NewTestModel(t, New(Options{Backend: b, Refresh: refresh, FullRefresh: time.Hour}), teatest.WithInitialTermSize(100, 24))
		return tui{tm: tm, b: b}
	}
	waitFor := func(x tui, what string) {
		t.Helper()
		teatest.WaitFor(t, x.tm.Output(), func(b []byte) bool {
			return bytes.Contains(b, []byte(what))
		}, teatest.WithDuration(90*time.Second), teatest.WithCheckInterval(20*time.Millisecond))
	}
	events := open(time.Hour)
	waitFor(events, "paused guest")
	// The first TUI's watch is connected once it has read the guest
	// again (the read that follows WatchConnected).
	for deadline := time.Now().Add(90 * time.Second); events.b.statuses.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the first TUI's watch of the guest did not connect")
		}
		time.Sleep(10 * time.Millisecond) // polling the counter the watch's event raises
	}
	polled := open(50 * time.Millisecond)
	waitFor(polled, "paused guest")

	steps := []struct {
		do   func(context.Context, *config.VM) error
		want string
	}{
		{other.Unpause, "running guest"},
		{other.Pause, "paused guest"},
		{other.Unpause, "running guest"},
		{func(ctx context.Context, def *config.VM) error {
			return other.Stop(ctx, def, vm.StopOptions{Force: true, Wait: true})
		}, "stopped guest"},
	}
	for _, step := range steps {
		if err := step.do(ctx, def); err != nil {
			t.Fatalf("%s: %v", step.want, err)
		}
		waitFor(events, step.want)
		waitFor(polled, step.want)
	}
	for _, x := range []tui{events, polled} {
		x.tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
		x.tm.WaitFinished(t, teatest.WithFinalTimeout(30*time.Second))
		io.Copy(io.Discard, x.tm.FinalOutput(t))
	}
	if n := events.b.lists.Load(); n != 1 {
		t.Errorf("the TUI following events listed the vms %d times, want once", n)
	}
	if n := events.b.busy.Load(); n != 0 {
		t.Errorf("the first TUI found the events socket busy %d times", n)
	}
	if n := polled.b.busy.Load(); n == 0 {
		t.Error("the second TUI never found the events socket busy")
	}
}
