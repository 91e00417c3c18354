package ui

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/vmtui/vmtui/vm"
)

// fakeWatcher delivers the events a test sends, and records what it is
// asked to follow.
type fakeWatcher struct {
	events  chan vm.WatchEvent
	watched chan string
}

func newFakeWatcher() *fakeWatcher {
	return &fakeWatcher{events: make(chan vm.WatchEvent, 16), watched: make(chan string, 64)}
}

func (w *fakeWatcher) Watch(st vm.Status) {
	if st.Running() {
		select {
		case w.watched <- st.Name:
		default:
		}
	}
}
func (w *fakeWatcher) Events() <-chan vm.WatchEvent { return w.events }
func (w *fakeWatcher) Close() error                 { return nil }

// watchedFake returns a fake backend with a watcher whose event stream has
// ended (its channel closed): the model's Cmds never wait on it.
func watchedFake() *fakeBackend {
	f := newFake()
	w := newFakeWatcher()
	close(w.events)
	f.watcher = w
	return f
}

// loadedWith is loaded, with the ticks of opts.
func loadedWith(t *testing.T, f *fakeBackend, opts Options) Model {
	t.Helper()
	opts.Backend = f
	m := New(opts)
	m = update(t, m, tea.WindowSizeMsg{Width: 80, Height: 24})
	list, _ := f.List(context.Background())
	return update(t, m, listMsg{list: list, at: time.Now()})
}

// collect runs cmd and the commands of the batches it returns, and returns
// their messages (a tick waits its interval: the tests make it short).
func collect(t *testing.T, cmd tea.Cmd) []tea.Msg {
	t.Helper()
	if cmd == nil {
		return nil
	}
	msg := cmdMsg(t, cmd)
	if batch, ok := msg.(tea.BatchMsg); ok {
		var out []tea.Msg
		for _, c := range batch {
			out = append(out, collect(t, c)...)
		}
		return out
	}
	if msg == nil {
		return nil
	}
	return []tea.Msg{msg}
}

// reads returns the names of the VMs the messages read one by one, and
// whether one is a full list.
func reads(msgs []tea.Msg) (names []string, list bool) {
	for _, msg := range msgs {
		switch msg := msg.(type) {
		case statusMsg:
			names = append(names, msg.name)
		case listMsg:
			list = true
		}
	}
	slices.Sort(names)
	return names, list
}

// apply passes every message but ticks to m.
func apply(t *testing.T, m Model, msgs []tea.Msg) Model {
	t.Helper()
	for _, msg := range msgs {
		if _, ok := msg.(tickMsg); !ok {
			m = update(t, m, msg)
		}
	}
	return m
}

// TestWatchEventReadsThatVM: an event reads the VM it names again, and
// only it: no list.
func TestWatchEventReadsThatVM(t *testing.T) {
	f := watchedFake()
	m := loadedWith(t, f, Options{Refresh: time.Millisecond})
	lists := f.Lists()
	f.list[1].State = vm.StateRunning // build is resumed by someone else
	next, cmd := m.Update(watchMsg{ev: vm.WatchEvent{VM: "build", Kind: vm.WatchResume}})
	msgs := collect(t, cmd)
	if names, list := reads(msgs); !slices.Equal(names, []string{"build"}) || list {
		t.Errorf("after build's event: read %q (list %v), want only build", names, list)
	}
	m = apply(t, next.(Model), msgs)
	if !strings.Contains(m.View(), "running build") || f.Lists() != lists {
		t.Errorf("after build's event: %d lists (want %d), view:\n%s", f.Lists()-lists, 0, m.View())
	}
	// The VM is gone: its row goes.
	f.setList(f.list[:1])
	next, cmd = m.Update(watchMsg{ev: vm.WatchEvent{VM: "build", Kind: vm.WatchExit}})
	m = apply(t, next.(Model), collect(t, cmd))
	if strings.Contains(m.View(), "build") {
		t.Errorf("after build was removed: view:\n%s", m.View())
	}
}

// TestWatchBusyPolls: a VM whose events socket another vmtui holds is read
// on every tick, until a watch connects.
func TestWatchBusyPolls(t *testing.T) {
	f := watchedFake()
	m := loadedWith(t, f, Options{Refresh: time.Millisecond})
	tick := func() []string {
		t.Helper()
		next, cmd := m.Update(tickMsg{gen: m.tickGen, at: time.Now()})
		m = next.(Model)
		msgs := collect(t, cmd)
		m = apply(t, m, msgs)
		names, list := reads(msgs)
		if list {
			t.Errorf("a tick listed every vm")
		}
		return names
	}
	if got := tick(); len(got) != 0 {
		t.Errorf("a tick with every vm watched read %q, want none", got)
	}
	next, cmd := m.Update(watchMsg{ev: vm.WatchEvent{VM: "build", Kind: vm.WatchBusy}})
	m = next.(Model)
	if names, _ := reads(collect(t, cmd)); len(names) != 0 {
		t.Errorf("busy: read %q at once, want nothing", names)
	}
	for range 2 {
		if got := tick(); !slices.Equal(got, []string{"build"}) {
			t.Errorf("a tick with build's socket busy read %q, want build", got)
		}
	}
	next, cmd = m.Update(watchMsg{ev: vm.WatchEvent{VM: "build", Kind: vm.WatchConnected}})
	m = apply(t, next.(Model), collect(t, cmd))
	if got := tick(); len(got) != 0 {
		t.Errorf("a tick once build is watched read %q, want none", got)
	}
}

// TestSamples: the CURMEM column and the charts come from /proc samples; a
// QEMU gone or stopped by a signal is read again; a changed stamp (a VM
// defined, started or stopped elsewhere) lists every VM.
func TestSamples(t *testing.T) {
	f := watchedFake()
	m := loadedWith(t, f, Options{Refresh: time.Millisecond})
	at := time.Now()
	sample := func(s map[string]procSample, stamp string) []tea.Msg {
		t.Helper()
		at = at.Add(time.Second)
		next, cmd := m.Update(sampleMsg{samples: s, stamp: stamp, at: at})
		m = next.(Model)
		return collect(t, cmd)
	}
	web := func(ticks uint64, rss int64) map[string]procSample {
		return map[string]procSample{"web": {ps: vm.ProcStat{PID: 4242, CPUTicks: ticks, RSS: rss, State: 'S'}}}
	}
	sample(web(100, 400<<20), "a")
	msgs := sample(web(150, 500<<20), "a")
	if names, list := reads(msgs); len(names) != 0 || list {
		t.Errorf("samples read %q (list %v), want nothing", names, list)
	}
	if !strings.Contains(m.View(), "   500M   pts/3") {
		t.Errorf("CURMEM not from the sample:\n%s", m.View())
	}
	if h := m.vms.history["web"]; h == nil || len(h.cpu) != 1 || h.cpu[0] != 50 || len(h.mem) != 2 {
		t.Errorf("history %+v, want 50%% of a core and two memory samples", h)
	}
	gone := map[string]procSample{"web": {err: vm.ErrNotRunning}}
	if names, _ := reads(sample(gone, "a")); !slices.Equal(names, []string{"web"}) {
		t.Errorf("web's QEMU gone: read %q, want web", names)
	}
	m = update(t, m, statusMsg{name: "web", st: f.list[0], at: at})
	stopped := web(150, 500<<20)
	stopped["web"] = procSample{ps: vm.ProcStat{PID: 4242, CPUTicks: 150, RSS: 500 << 20, State: 'T'}}
	if names, _ := reads(sample(stopped, "a")); !slices.Equal(names, []string{"web"}) {
		t.Errorf("web's QEMU stopped by a signal: read %q, want web", names)
	}
	m = update(t, m, statusMsg{name: "web", st: f.list[0], at: at})
	if _, list := reads(sample(web(150, 500<<20), "b")); !list {
		t.Error("a changed stamp did not list the vms")
	}
}

// TestFullRefresh: with a Watcher, the whole list is read every
// FullRefresh, not every tick.
func TestFullRefresh(t *testing.T) {
	f := watchedFake()
	m := loadedWith(t, f, Options{Refresh: time.Millisecond, FullRefresh: time.Minute})
	last := m.lastList
	for _, tc := range []struct {
		after time.Duration
		list  bool
	}{{time.Second, false}, {59 * time.Second, false}, {time.Minute, true}} {
		next, cmd := m.Update(tickMsg{gen: m.tickGen, at: last.Add(tc.after)})
		m = next.(Model)
		msgs := collect(t, cmd)
		if _, list := reads(msgs); list != tc.list {
			t.Errorf("a tick %v after the last list: listed %v, want %v", tc.after, list, tc.list)
		}
		m = apply(t, m, msgs)
	}
}

// TestStaleListKeepsNewerRow: a list read before an event's reading of a
// VM does not undo it.
func TestStaleListKeepsNewerRow(t *testing.T) {
	f := watchedFake()
	m := loadedWith(t, f, Options{})
	old, _ := f.List(context.Background())
	before := time.Now()
	resumed := old[1]
	resumed.State = vm.StateRunning
	m = update(t, m, statusMsg{name: "build", st: resumed, at: before.Add(time.Second)})
	m = update(t, m, listMsg{list: old, at: before})
	if st, _ := m.vms.get("build"); st.State != vm.StateRunning {
		t.Errorf("build %s after a stale list, want running", st.State)
	}
}

// TestProgramFollowsEvents runs the whole program with no ticks to speak
// of (an hour apart): a VM paused and resumed elsewhere shows through its
// events alone, and the list is read once, at the start.
func TestProgramFollowsEvents(t *testing.T) {
	f := newFake()
	w := newFakeWatcher()
	f.watcher = w
	tm := teatest.NewTestModel(t, New(Options{Backend: f, Refresh: time.Hour, FullRefresh: time.Hour}), teatest.WithInitialTermSize(80, 24))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("paused build"))
	}, teatest.WithDuration(30*time.Second))
	list, _ := f.List(context.Background())
	for _, state := range []vm.State{vm.StateRunning, vm.StatePaused, vm.StateRunning} {
		list[1].State = state
		f.setList(list)
		kind := vm.WatchResume
		if state == vm.StatePaused {
			kind = vm.WatchStop
		}
		w.events <- vm.WatchEvent{VM: "build", Kind: kind}
		want := []byte(string(state) + " build")
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
			return bytes.Contains(b, want)
		}, teatest.WithDuration(30*time.Second))
	}
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	tm.WaitFinished(t, teatest.WithFinalTimeout(30*time.Second))
	io.Copy(io.Discard, tm.FinalOutput(t))
	// Two: Init's and the one List above.
	if n := f.Lists(); n != 2 {
		t.Errorf("%d lists, want 2", n)
	}
	select {
	case name := <-w.watched:
		if name != "web" {
			t.Errorf("first watched %q, want web", name)
		}
	default:
		t.Error("the running vms were not given to the watcher")
	}
}
