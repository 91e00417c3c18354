package ui

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/golden"

	"github.com/vmtui/vmtui/vm"
)

// fakeSnapshots is the snapshots of the fake backend's VMs.
type fakeSnapshots struct {
	list    map[string][]vm.Snapshot // by VM name
	listErr error                    // returned by Snapshots
}

// snapshotDate is when the fake's snapshots were taken, in local time (the
// screen shows local time).
var snapshotDate = time.Date(2026, 12, 2, 5, 20, 11, 0, time.Local)

func (f *fakeBackend) Snapshots(_ context.Context, name string) ([]vm.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "snapshots "+name)
	if f.snap.listErr != nil {
		return nil, f.snap.listErr
	}
	return slices.Clone(f.snap.list[name]), nil
}

func (f *fakeBackend) CreateSnapshot(_ context.Context, name, tag string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "take "+name+" "+tag)
	if f.err != nil {
		return f.err
	}
	if f.snap.list == nil {
		f.snap.list = make(map[string][]vm.Snapshot)
	}
	l := f.snap.list[name]
	f.snap.list[name] = append(l, vm.Snapshot{ID: fmt.Sprint(len(l) + 1), Tag: tag, Date: snapshotDate.Add(time.Hour)})
	return nil
}

func (f *fakeBackend) RevertSnapshot(_ context.Context, name, tag string) error {
	f.record("revert " + name + " " + tag)
	return f.err
}

func (f *fakeBackend) DeleteSnapshot(_ context.Context, name, tag string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "delete "+name+" "+tag)
	if f.err != nil {
		return f.err
	}
	f.snap.list[name] = slices.DeleteFunc(f.snap.list[name], func(sn vm.Snapshot) bool { return sn.Tag == tag })
	return nil
}

// withSnapshots returns the fake with snapshots of web: one with the
// guest's RAM, one of its disks only.
func withSnapshots() *fakeBackend {
	f := newFake()
	f.snap.list = map[string][]vm.Snapshot{"web": {
		{ID: "1", Tag: "pre-upgrade", VMStateSize: 212<<20 + 300<<10, Date: snapshotDate, VMClock: 83*time.Second + 456*time.Millisecond},
		{ID: "2", Tag: "disk-only", Date: snapshotDate.Add(26 * time.Hour), VMClock: 0},
	}}
	return f
}

// send passes msg to m, then the messages of the commands it returns (and
// of the commands those return, ...), and returns the final model. Ticks
// and the spinner's frames are dropped: they would run forever.
func send(t *testing.T, m Model, msg tea.Msg) Model {
	t.Helper()
	queue := []tea.Msg{msg}
	for len(queue) > 0 {
		msg, queue = queue[0], queue[1:]
		next, cmd := m.Update(msg)
		m = next.(Model)
		queue = append(queue, results(t, cmd)...)
	}
	return m
}

// results runs cmd and returns its messages (those of a batch, each).
func results(t *testing.T, cmd tea.Cmd) []tea.Msg {
	t.Helper()
	if cmd == nil {
		return nil
	}
	msg := cmdMsg(t, cmd)
	switch msg := msg.(type) {
	case nil, tickMsg:
		return nil
	case tea.BatchMsg:
		var out []tea.Msg
		for _, c := range msg {
			out = append(out, results(t, c)...)
		}
		return out
	}
	if fmt.Sprintf("%T", msg) == "spinner.TickMsg" {
		return nil
	}
	return []tea.Msg{msg}
}

// cmdMsg runs cmd and returns its message, failing the test if it does
// not return in 30 s.
func cmdMsg(t *testing.T, cmd tea.Cmd) tea.Msg {
	t.Helper()
	done := make(chan tea.Msg, 1)
	go func() { done <- cmd() }()
	var msg tea.Msg
	select {
	case msg = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a command did not return in 30 s")
	}
	return msg
}

// typeKeys sends the keys of s (as keys does), running their commands.
func typeKeys(t *testing.T, m Model, s string) Model {
	t.Helper()
	for _, k := range splitKeys(s) {
		m = send(t, m, k)
	}
	return m
}

// snapshotScreen returns the loaded model with the snapshot screen of web
// open from its detail view.
func snapshotScreen(t *testing.T, f *fakeBackend) Model {
	t.Helper()
	m := typeKeys(t, loaded(t, f, 80, 24), "<enter>S")
	if m.screen != screenSnapshots || m.snapshots == nil || !m.snapshots.loaded {
		t.Fatalf("enter S: screen %v, want the snapshots, loaded", m.screen)
	}
	return m
}

func TestSnapshotScreenGolden(t *testing.T) {
	m := snapshotScreen(t, withSnapshots())
	golden.RequireEqual(t, []byte(m.View()))
}

// TestSnapshotColumns: each snapshot shows its tag, its date (local time),
// the guest's clock as qemu-img shows it, and the RAM it saved in human
// units, "-" for a disk-only snapshot.
func TestSnapshotColumns(t *testing.T) {
	for _, tc := range []struct {
		sn   vm.Snapshot
		want string
	}{
		{vm.Snapshot{Tag: "pre-upgrade", VMStateSize: 212<<20 + 300<<10, Date: snapshotDate, VMClock: 83*time.Second + 456*time.Millisecond},
			"› pre-upgrade  2026-12-02 05:20:11   00:01:23.456      212M"},
		{vm.Snapshot{Tag: "disk-only", Date: snapshotDate},
			"› disk-only  2026-12-02 05:20:11   00:00:00.000         -"},
		{vm.Snapshot{Tag: "long-run", VMStateSize: 3 << 30, Date: snapshotDate, VMClock: 100*time.Hour + 59*time.Minute + 7*time.Second + 9*time.Millisecond},
			"› long-run  2026-12-02 05:20:11  100:59:07.009      3.0G"},
		{vm.Snapshot{Tag: "evil\x1b[2J", Date: snapshotDate},
			`› evil\x1b[2J  2026-12-02 05:20:11   00:00:00.000         -`},
	} {
		t.Run(tc.sn.Tag, func(t *testing.T) {
			f := newFake()
			f.snap.list = map[string][]vm.Snapshot{"web": {tc.sn}}
			m := snapshotScreen(t, f)
			rows := m.snapshots.rows()
			if len(rows) != 2 {
				t.Fatalf("rows %q, want a header and one row", rows)
			}
			if got := strings.TrimRight(rows[1], " "); got != tc.want {
				t.Errorf("row\n%q, want\n%q", got, tc.want)
			}
			if !strings.Contains(rows[0], "TAG") || !strings.Contains(rows[0], "DATE") || !strings.Contains(rows[0], "VM CLOCK") || !strings.Contains(rows[0], "RAM") {
				t.Errorf("header %q", rows[0])
			}
			if v := m.View(); strings.Contains(v, "\x1b") {
				t.Errorf("the screen sends an escape of a tag to the terminal:\n%q", v)
			}
		})
	}
}

// TestSnapshotTake: t asks a tag; enter takes the snapshot, saying so in
// the status line, then its result; the list is read again and shows it.
func TestSnapshotTake(t *testing.T) {
	f := withSnapshots()
	m := snapshotScreen(t, f)
	m = keys(t, m, "t")
	if m.snapshots.form == nil || !strings.Contains(m.View(), "Take a snapshot of web") {
		t.Fatalf("t: no form:\n%s", m.View())
	}
	m = keys(t, m, "before-kernel")
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(Model)
	if m.status != "taking snapshot before-kernel of vm web…" || m.snapshots.form != nil {
		t.Errorf("after enter: status %q, form %v", m.status, m.snapshots.form != nil)
	}
	if !strings.Contains(m.View(), "taking snapshot before-kernel of vm web…") {
		t.Errorf("the status line does not show the operation:\n%s", m.View())
	}
	for _, msg := range results(t, cmd) {
		m = send(t, m, msg)
	}
	if m.statusErr || m.status != "took snapshot before-kernel of vm web" {
		t.Errorf("after the operation: status %q (error %v)", m.status, m.statusErr)
	}
	if got := strings.Join(f.Calls(), ","); got != "snapshots web,take web before-kernel,status web,snapshots web" &&
		got != "snapshots web,take web before-kernel,snapshots web,status web" {
		t.Errorf("calls %q", got)
	}
	if v := m.View(); !strings.Contains(v, "before-kernel") || len(m.snapshots.list) != 3 {
		t.Errorf("the new snapshot is not listed:\n%s", v)
	}
	if len(m.vms.busy) != 0 {
		t.Errorf("busy %v after the operation", m.vms.busy)
	}
}

// TestSnapshotTagForm: the tag is checked as the command line checks it:
// not empty, no control characters, not taken; a bad tag takes nothing.
func TestSnapshotTagForm(t *testing.T) {
	for _, tc := range []struct{ typed, err string }{
		{"", "a tag is needed"},
		{"   ", "a tag is needed"},
		{"pre-upgrade", `a snapshot is tagged "pre-upgrade" already`},
		{"2026", `snapshot tag "2026": only digits, which would be read as a snapshot ID`},
		{strings.Repeat("x", vm.MaxSnapshotTagLen+1), `snapshot tag "xxxxxxxxxxxxxxxxxxxx"...: longer than 255 bytes`},
	} {
		t.Run(tc.typed, func(t *testing.T) {
			f := withSnapshots()
			m := keys(t, snapshotScreen(t, f), "t")
			m = update(t, m, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(tc.typed)})
			next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
			m = next.(Model)
			if cmd != nil {
				for _, msg := range results(t, cmd) {
					m = send(t, m, msg)
				}
			}
			fl := m.snapshots.form
			if fl == nil {
				t.Fatalf("the form closed on %q", tc.typed)
			}
			if fl.fields[0].err == nil || fl.fields[0].err.Error() != tc.err {
				t.Errorf("error %v, want %q", fl.fields[0].err, tc.err)
			}
			for _, c := range f.Calls() {
				if strings.HasPrefix(c, "take") {
					t.Errorf("a bad tag took a snapshot: %q", c)
				}
			}
			if m = keys(t, m, "<esc>"); m.snapshots.form != nil || m.screen != screenSnapshots {
				t.Errorf("esc: form %v, screen %v; want the list", m.snapshots.form != nil, m.screen)
			}
		})
	}
	// The input drops control characters; the check is there too.
	if err := checkSnapshotTag("a\x01b", nil); err == nil || err.Error() != `snapshot tag "a\x01b": contains a control character` {
		t.Errorf("a tag with a control character: %v", err)
	}
	if err := checkSnapshotTag("über 2026 ✓", nil); err != nil {
		t.Errorf("a tag with spaces and non-ASCII letters: %v", err)
	}
}

// TestSnapshotRevertDelete: r and D ask y/n in the status line, name the
// snapshot under the cursor, and do nothing on n.
func TestSnapshotRevertDelete(t *testing.T) {
	for _, tc := range []struct {
		keys   string
		prompt string
		call   string // "" when nothing should happen
		status string
		tags   string // listed at the end
	}{
		{"r", "revert web to snapshot pre-upgrade? what changed since is lost (y/n)", "", "", "pre-upgrade disk-only"},
		{"rn", "", "", "revert to snapshot pre-upgrade of vm web: cancelled", "pre-upgrade disk-only"},
		{"r<esc>", "", "", "revert to snapshot pre-upgrade of vm web: cancelled", "pre-upgrade disk-only"},
		{"ry", "", "revert web pre-upgrade", "reverted to snapshot pre-upgrade of vm web", "pre-upgrade disk-only"},
		{"jry", "", "revert web disk-only", "reverted to snapshot disk-only of vm web", "pre-upgrade disk-only"},
		{"jD", "delete snapshot disk-only of web? (y/n)", "", "", "pre-upgrade disk-only"},
		{"jDn", "", "", "delete snapshot disk-only of vm web: cancelled", "pre-upgrade disk-only"},
		{"Dy", "", "delete web pre-upgrade", "deleted snapshot pre-upgrade of vm web", "disk-only"},
		{"GDy", "", "delete web disk-only", "deleted snapshot disk-only of vm web", "pre-upgrade"},
	} {
		t.Run(tc.keys, func(t *testing.T) {
			f := withSnapshots()
			m := typeKeys(t, snapshotScreen(t, f), tc.keys)
			prompt := ""
			if m.confirm != nil {
				prompt = m.confirm.prompt
				if !strings.Contains(m.View(), prompt) || !strings.Contains(m.View(), "y yes") {
					t.Errorf("the question is not on the screen:\n%s", m.View())
				}
			}
			if prompt != tc.prompt {
				t.Errorf("prompt %q, want %q", prompt, tc.prompt)
			}
			if tc.prompt == "" && m.status != tc.status {
				t.Errorf("status %q, want %q", m.status, tc.status)
			}
			var ops []string
			for _, c := range f.Calls() {
				if !strings.HasPrefix(c, "status ") && !strings.HasPrefix(c, "snapshots ") {
					ops = append(ops, c)
				}
			}
			if got := strings.Join(ops, ","); got != tc.call {
				t.Errorf("calls %q, want %q", got, tc.call)
			}
			var tags []string
			for _, sn := range m.snapshots.list {
				tags = append(tags, sn.Tag)
			}
			if got := strings.Join(tags, " "); got != tc.tags {
				t.Errorf("listed %q, want %q", got, tc.tags)
			}
			if m.screen != screenSnapshots {
				t.Errorf("screen %v, want snapshots", m.screen)
			}
		})
	}
}

// TestSnapshotErrors: a failed operation and a failed listing are shown,
// as errors, on the screen.
func TestSnapshotErrors(t *testing.T) {
	f := withSnapshots()
	m := snapshotScreen(t, f)
	f.err = errors.New(`web: disk "/srv/web.raw" is raw: convert it to qcow2 with vmtui disk convert -O qcow2`)
	m = typeKeys(t, m, "tnew<enter>")
	want := `take snapshot new of vm web: web: disk "/srv/web.raw" is raw: convert it to qcow2 with vmtui disk convert -O qcow2`
	if !m.statusErr || m.status != want {
		t.Errorf("status %q (error %v), want %q", m.status, m.statusErr, want)
	}
	if !strings.Contains(m.View(), `take snapshot new of vm web: web: disk "/srv/web.raw" is raw`) {
		t.Errorf("the error is not on the screen:\n%s", m.View())
	}
	m = typeKeys(t, m, "Dy")
	if !m.statusErr || !strings.HasPrefix(m.status, "delete snapshot pre-upgrade of vm web: web: disk") {
		t.Errorf("status %q (error %v)", m.status, m.statusErr)
	}

	f = withSnapshots()
	f.snap.listErr = errors.New(`web: list snapshots of "/srv/web.qcow2": permission denied`)
	m = snapshotScreen(t, f)
	if v := m.View(); !strings.Contains(v, `web: list snapshots of "/srv/web.qcow2": permission denied`) {
		t.Errorf("the listing's error is not on the screen:\n%s", v)
	}
	m = typeKeys(t, m, "r")
	if m.confirm != nil || !m.statusErr || m.status != "web: no snapshot to revert to" {
		t.Errorf("r without a list: confirm %v, status %q", m.confirm != nil, m.status)
	}
}

// TestSnapshotBusy: a second operation on the VM while one runs is
// refused, naming the one under way; the title shows it.
func TestSnapshotBusy(t *testing.T) {
	f := withSnapshots()
	m := snapshotScreen(t, f)
	m = keys(t, m, "tone<enter>") // the command is dropped: still under way
	if !strings.Contains(m.View(), "taking snapshot one of web") {
		t.Errorf("the title does not show the operation:\n%s", m.View())
	}
	m = keys(t, m, "ry")
	if !m.statusErr || m.status != "revert to snapshot pre-upgrade of vm web: take snapshot one is still under way" {
		t.Errorf("status %q (error %v)", m.status, m.statusErr)
	}
	m = keys(t, m, "<esc><esc>x")
	if m.confirm == nil || m.confirm.prompt != "stop web (power down)? (y/n)" {
		t.Fatalf("x on the table: no question")
	}
	m = keys(t, m, "y")
	if !m.statusErr || m.status != "stop web: take snapshot one is still under way" {
		t.Errorf("status %q (error %v)", m.status, m.statusErr)
	}
}

// TestSnapshotScreenNavigation: S opens the screen from the detail view
// (or the table), esc goes back there; the cursor moves and stays on its
// snapshot when the list is read again.
func TestSnapshotScreenNavigation(t *testing.T) {
	f := withSnapshots()
	m := snapshotScreen(t, f)
	if m.snapshots.from != screenDetail {
		t.Errorf("opened from %v, want detail", m.snapshots.from)
	}
	m = keys(t, m, "j")
	if sn, _ := m.snapshots.current(); sn.Tag != "disk-only" {
		t.Errorf("j: cursor on %q, want disk-only", sn.Tag)
	}
	// Another process takes one before it: the cursor stays on its tag.
	f.snap.list["web"] = append([]vm.Snapshot{{ID: "0", Tag: "aaa", Date: snapshotDate}}, f.snap.list["web"]...)
	m = send(t, m, snapshotsCmd(f, "web")())
	if sn, _ := m.snapshots.current(); sn.Tag != "disk-only" || m.snapshots.cursor != 2 {
		t.Errorf("after a listing: cursor %d on %q, want 2 on disk-only", m.snapshots.cursor, sn.Tag)
	}
	// A listing of another VM is not this screen's.
	m = send(t, m, snapshotsMsg{name: "build"})
	if len(m.snapshots.list) != 3 {
		t.Errorf("another vm's listing replaced the list: %v", m.snapshots.list)
	}
	if m = keys(t, m, "<esc>"); m.screen != screenDetail || m.snapshots != nil || m.detail == nil {
		t.Errorf("esc: screen %v, want detail", m.screen)
	}
	if m = keys(t, m, "<esc>"); m.screen != screenTable {
		t.Errorf("esc esc: screen %v, want the table", m.screen)
	}
	// From the table, esc comes back to the table.
	m = typeKeys(t, m, "S")
	if m.screen != screenSnapshots || m.snapshots.name != "web" {
		t.Fatalf("S on the table: screen %v", m.screen)
	}
	if m = keys(t, m, "<esc>"); m.screen != screenTable || m.snapshots != nil {
		t.Errorf("esc: screen %v, want the table", m.screen)
	}
	// ? from the screen shows the help.
	m = keys(t, m, "S?")
	if m.screen != screenHelp || !strings.Contains(m.View(), "S snapshots") {
		t.Errorf("?: screen %v:\n%s", m.screen, m.View())
	}
}

// TestSnapshotScreenSizes: every size draws within the terminal, the
// cursor's row always shown.
func TestSnapshotScreenSizes(t *testing.T) {
	f := newFake()
	var list []vm.Snapshot
	for i := range 40 {
		list = append(list, vm.Snapshot{ID: fmt.Sprint(i + 1), Tag: fmt.Sprintf("snap-%02d", i), Date: snapshotDate})
	}
	f.snap.list = map[string][]vm.Snapshot{"web": list}
	m := typeKeys(t, snapshotScreen(t, f), "G")
	for _, size := range [][2]int{{80, 24}, {40, 8}, {200, 60}, {20, 3}, {120, 10}} {
		m = update(t, m, tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		for _, cursor := range []string{"G", "g", "jjjjjjjjjj"} {
			m = keys(t, m, cursor)
			v := m.View()
			lines := strings.Split(v, "\n")
			if len(lines) != size[1] {
				t.Errorf("%dx%d: %d lines", size[0], size[1], len(lines))
			}
			for _, l := range lines {
				if w := len([]rune(l)); w > size[0] {
					t.Errorf("%dx%d: line of width %d: %q", size[0], size[1], w, l)
				}
			}
			if size[1] >= 8 && !strings.Contains(v, "› snap") && size[0] >= 20 {
				t.Errorf("%dx%d after %s: the cursor's row is not shown:\n%s", size[0], size[1], cursor, v)
			}
		}
	}
}

// TestSnapshotOperationWords: the status line says what each snapshot
// operation does, and each reaches the backend as itself.
func TestSnapshotOperationWords(t *testing.T) {
	for _, tc := range []struct {
		kind                      snapshotKind
		doing, done, failed, call string
	}{
		{snapshotTake, "taking snapshot x%y of vm web…", "took snapshot x%y of vm web", "take snapshot x%y of vm web: boom", "take web x%y"},
		{snapshotRevert, "reverting to snapshot x%y of vm web…", "reverted to snapshot x%y of vm web", "revert to snapshot x%y of vm web: boom", "revert web x%y"},
		{snapshotDelete, "deleting snapshot x%y of vm web…", "deleted snapshot x%y of vm web", "delete snapshot x%y of vm web: boom", "delete web x%y"},
	} {
		op := snapshotOp(tc.kind, "x%y")
		if got := op.doing("web"); got != tc.doing {
			t.Errorf("doing %q, want %q", got, tc.doing)
		}
		if got := op.done("web"); got != tc.done {
			t.Errorf("done %q, want %q", got, tc.done)
		}
		if got := op.failed("web", errors.New("boom")); got != tc.failed {
			t.Errorf("failed %q, want %q", got, tc.failed)
		}
		if op.prompt != "" {
			if p := newConfirm(common{}, op, "web").prompt; !strings.Contains(p, "x%y") || !strings.Contains(p, "web") {
				t.Errorf("prompt %q does not name the snapshot and the vm", p)
			}
		}
		f := withSnapshots()
		f.snap.list["web"] = append(f.snap.list["web"], vm.Snapshot{Tag: "x%y"})
		if err := op.do(context.Background(), f, "web"); err != nil && tc.kind != snapshotTake {
			t.Errorf("%s: %v", tc.call, err)
		}
		if calls := f.Calls(); len(calls) != 1 || calls[0] != tc.call {
			t.Errorf("calls %q, want %q", calls, tc.call)
		}
	}
}
