package ui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/muesli/termenv"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/vm"
)

func init() {
	// Golden files hold plain text: no colours, whatever the terminal.
	lipgloss.SetColorProfile(termenv.Ascii)
}

// fakeBackend serves fixed VMs and records what is asked of it.
type fakeBackend struct {
	mu      sync.Mutex
	list    []vm.Status
	defs    map[string]*config.VM
	calls   []string
	err     error // returned by operations
	lists   int   // List calls
	samples map[int]vm.ProcStat
	stamp   string
	watcher Watcher // nil: none
	snap    fakeSnapshots
}

func newFake() *fakeBackend {
	return &fakeBackend{
		list: []vm.Status{
			{ID: 1, Name: "web", PID: 4242, VCPUs: 2, MaxMem: 1 << 30, CurMem: 312 << 20, TTY: "/dev/pts/3", Owner: "root:root", State: vm.StateRunning,
				Cmdline: []string{"qemu-system-x86_64", "-name", "guest=web", "-m", "1024M", "-accel", "tcg"}},
			{ID: 2, Name: "build", PID: 4300, VCPUs: 4, MaxMem: 2 << 30, CurMem: 180 << 20, TTY: "/dev/pts/4", Owner: "root:root", State: vm.StatePaused},
			{ID: 3, Name: "openbsd", VCPUs: 1, MaxMem: 512 << 20, Owner: "root:root", State: vm.StateStopped},
		},
		defs: map[string]*config.VM{
			"web": {ID: 1, Name: "web", Memory: 1 << 30, CPUs: 2, Kernel: "/srv/vmlinuz", Append: "console=ttyS0",
				Disks:    []config.Disk{{Path: "/srv/web.qcow2"}},
				Networks: []config.Network{{Type: config.NetUser, HostFwd: []string{"tcp::8080-:80"}}},
				File:     "/etc/vmtui/vms/web.toml"},
		},
	}
}

func (f *fakeBackend) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) List(context.Context) ([]vm.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	return append([]vm.Status(nil), f.list...), nil
}

// Lists returns the number of List calls.
func (f *fakeBackend) Lists() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists
}

func (f *fakeBackend) Status(_ context.Context, name string) (vm.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "status "+name)
	for _, st := range f.list {
		if st.Name == name {
			return st, nil
		}
	}
	return vm.Status{}, fmt.Errorf("%s: %w", name, store.ErrNotFound)
}

func (f *fakeBackend) Sample(st vm.Status) (vm.ProcStat, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ps, ok := f.samples[st.PID]; ok {
		return ps, nil
	}
	return vm.ProcStat{}, errors.New("no sample")
}

func (f *fakeBackend) Stamp() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stamp
}

func (f *fakeBackend) Watcher() Watcher { return f.watcher }

func (f *fakeBackend) setList(l []vm.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = l
}

func (f *fakeBackend) Definition(name string) (*config.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.defs[name]; ok {
		c := *d
		return &c, nil
	}
	return nil, store.ErrNotFound
}
func (f *fakeBackend) DefinitionFile(name string) string { return "/etc/vmtui/vms/" + name + ".toml" }
func (f *fakeBackend) SerialLog(name string) string      { return "/nonexistent/" + name + "/serial.log" }
func (f *fakeBackend) Start(_ context.Context, name string) error {
	f.record("start " + name)
	return f.err
}
func (f *fakeBackend) Stop(_ context.Context, name string, force bool) error {
	if force {
		f.record("force stop " + name)
	} else {
		f.record("stop " + name)
	}
	return f.err
}
func (f *fakeBackend) Pause(_ context.Context, name string) error {
	f.record("pause " + name)
	return f.err
}
func (f *fakeBackend) Unpause(_ context.Context, name string) error {
	f.record("unpause " + name)
	return f.err
}
func (f *fakeBackend) Create(def *config.VM) error {
	f.record("create " + def.Name)
	def.ID = 9
	return f.err
}
func (f *fakeBackend) Remove(_ context.Context, name string) error {
	f.record("remove " + name)
	return f.err
}
func (f *fakeBackend) Console(name, tty string) tea.ExecCommand { return nil }
func (f *fakeBackend) CreateDisk(path string, opts disk.CreateOptions) error {
	f.record(fmt.Sprintf("create disk %s %s base=%s", path, opts.Format, opts.BackingFile))
	return f.err
}
func (f *fakeBackend) ConvertDisk(ctx context.Context, src, dst string, opts disk.ConvertOptions) error {
	f.record("convert " + src + " " + dst)
	opts.Progress(0, 100)
	opts.Progress(100, 100)
	return f.err
}
func (f *fakeBackend) DiskInfo(path string) (*disk.ImageInfo, error) {
	return &disk.ImageInfo{Filename: path, Format: disk.FormatQcow2, VirtualSize: 8 << 30, ActualSize: 1 << 20,
		BackingImage: &disk.ImageInfo{Filename: "/srv/base.qcow2", Format: disk.FormatQcow2, VirtualSize: 8 << 30, ActualSize: 700 << 20}}, nil
}

// loaded returns a model of size w×h that has received the fake's list.
func loaded(t *testing.T, f *fakeBackend, w, h int) Model {
	t.Helper()
	m := New(Options{Backend: f, Cwd: "/home/user"})
	m = update(t, m, tea.WindowSizeMsg{Width: w, Height: h})
	list, _ := f.List(context.Background())
	return update(t, m, listMsg{list: list, at: time.Now()})
}

// update passes msg to m and returns the new model; the Cmd is dropped.
func update(t *testing.T, m Model, msg tea.Msg) Model {
	t.Helper()
	next, _ := m.Update(msg)
	return next.(Model)
}

// keys types s, one key per rune; names in <> are special keys.
func keys(t *testing.T, m Model, s string) Model {
	t.Helper()
	for _, k := range splitKeys(s) {
		m = update(t, m, k)
	}
	return m
}

func splitKeys(s string) []tea.KeyMsg {
	special := map[string]tea.KeyType{"<enter>": tea.KeyEnter, "<esc>": tea.KeyEsc, "<tab>": tea.KeyTab, "<down>": tea.KeyDown, "<up>": tea.KeyUp, "<bs>": tea.KeyBackspace}
	var out []tea.KeyMsg
	for s != "" {
		if s[0] == '<' {
			if i := strings.IndexByte(s, '>'); i > 0 {
				if kt, ok := special[s[:i+1]]; ok {
					out = append(out, tea.KeyMsg{Type: kt})
					s = s[i+1:]
					continue
				}
			}
		}
		r := []rune(s)[0]
		out = append(out, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
		s = s[len(string(r)):]
	}
	return out
}

func TestTableGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		w, h int
	}{
		{"80x24", 80, 24},
		{"120x30", 120, 30},
		{"narrow_50x10", 50, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := loaded(t, newFake(), tc.w, tc.h)
			golden.RequireEqual(t, []byte(m.View()))
		})
	}
}

func TestHelpGolden(t *testing.T) {
	m := keys(t, loaded(t, newFake(), 80, 24), "?")
	golden.RequireEqual(t, []byte(m.View()))
	if m = keys(t, m, "?"); m.screen != screenTable {
		t.Errorf("? again: screen %v, want table", m.screen)
	}
}

func TestNewVMFormGolden(t *testing.T) {
	m := keys(t, loaded(t, newFake(), 80, 24), "n")
	m = keys(t, m, "bad name!<tab>12Q<tab>1G<tab>0<tab><tab><tab><tab>initrd.img<tab><tab>user,foo=1<tab>tcp:x")
	golden.RequireEqual(t, []byte(m.View()))
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyCtrlS}); cmd != nil {
		t.Errorf("ctrl+s on an invalid form returned a command")
	}
}

func TestNewVMFormCreates(t *testing.T) {
	f := newFake()
	m := keys(t, loaded(t, f, 80, 24), "n")
	m = keys(t, m, "guest1<tab>128M<tab>1G<tab>2<tab>disk.qcow2<tab><tab>/boot/vmlinuz<tab>/boot/initrd<tab>console=ttyS0<tab>user<tab>tcp::2222-:22")
	if err := m.newVM.err; err != nil {
		t.Fatalf("form error %v, want none", err)
	}
	def, err := m.newVM.definition()
	if err != nil {
		t.Fatal(err)
	}
	if def.Memory != 128<<20 || def.MaxMemory != 1<<30 || def.CPUs != 2 || def.Disks[0].Path != "/home/user/disk.qcow2" || def.Networks[0].HostFwd[0] != "tcp::2222-:22" {
		t.Errorf("definition %+v", def)
	}
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(Model)
	if cmd == nil {
		t.Fatal("enter on the last field of a valid form: no command")
	}
	m = update(t, m, cmd())
	if m.screen != screenTable || !strings.Contains(m.status, "defined vm guest1 (id 9)") {
		t.Errorf("after create: screen %v, status %q", m.screen, m.status)
	}
	if got := f.Calls(); len(got) != 1 || got[0] != "create guest1" {
		t.Errorf("calls %q, want create guest1", got)
	}
}

func TestDiskFormGolden(t *testing.T) {
	m := keys(t, loaded(t, newFake(), 80, 24), "d")
	m = keys(t, m, "new.img<tab>vmdk<tab>12X<tab>base.qcow2")
	golden.RequireEqual(t, []byte(m.View()))
}

// TestDiskFormOverlay: the TUI makes images by the command line's rules: a
// raw: prefix names the format, and an overlay records its base relative to
// its own directory (the base named from the directory vmtui runs in).
func TestDiskFormOverlay(t *testing.T) {
	for _, tc := range []struct{ keys, want string }{
		{"vms/new.qcow2<tab><tab><tab>base.qcow2", "create disk /home/user/vms/new.qcow2 qcow2 base=../base.qcow2"},
		{"new.qcow2<tab><tab><tab>/srv/base.qcow2", "create disk /home/user/new.qcow2 qcow2 base=/srv/base.qcow2"},
		{"raw:scratch<tab><tab>1G", "create disk /home/user/scratch raw base="},
		{"a.img<tab>QCOW2<tab>1G", "create disk /home/user/a.img qcow2 base="},
	} {
		f := newFake()
		m := keys(t, loaded(t, f, 80, 24), "d")
		m = keys(t, m, tc.keys)
		_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyCtrlS})
		if cmd == nil {
			t.Fatalf("%q: ctrl+s gave no command; form:\n%s", tc.keys, m.View())
		}
		cmd()
		if got := f.Calls(); len(got) != 1 || got[0] != tc.want {
			t.Errorf("%q: calls %q, want %q", tc.keys, got, tc.want)
		}
	}
}

func TestDiskImportProgress(t *testing.T) {
	f := newFake()
	m := keys(t, loaded(t, f, 80, 24), "d")
	m = keys(t, m, "copy.qcow2<tab><tab><tab><tab>src.raw")
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(Model)
	if m.disk == nil || m.disk.job == nil || cmd == nil {
		t.Fatal("import did not start")
	}
	job := m.disk.job
	done := convertCmd(context.Background(), f, job, "/home/user/src.raw", "/home/user/copy.qcow2", disk.FormatQcow2)()
	if p, ok := waitProgress(job)().(progressMsg); ok {
		m = update(t, m, p)
		if m.disk.total != 100 {
			t.Errorf("progress total %d, want 100", m.disk.total)
		}
	}
	m = update(t, m, done)
	if m.screen != screenTable || m.status != "imported /home/user/copy.qcow2" {
		t.Errorf("after import: screen %v, status %q", m.screen, m.status)
	}
}

func TestDiskImportCancel(t *testing.T) {
	f := newFake()
	m := keys(t, loaded(t, f, 80, 24), "d")
	m = keys(t, m, "copy.qcow2<tab><tab><tab><tab>src.raw<enter>")
	if m.disk == nil || m.disk.job == nil {
		t.Fatal("import did not start")
	}
	m = keys(t, m, "<esc>")
	m = update(t, m, diskDoneMsg{path: "/home/user/copy.qcow2", verb: "imported", err: context.Canceled})
	if m.screen != screenDisk || m.disk.job != nil || !strings.Contains(m.disk.err.Error(), "cancelled") {
		t.Errorf("after cancel: screen %v, err %v", m.screen, m.disk.err)
	}
}

func TestDetailGolden(t *testing.T) {
	f := newFake()
	m := loaded(t, f, 80, 24)
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(Model)
	m = update(t, m, cmd())
	// A fixed history: no time in the golden file.
	m.vms.history["web"] = &history{pid: 4242, cpu: []float64{0, 10, 50, 100, 30, 5}, mem: []float64{100 << 20, 200 << 20, 312 << 20}}
	golden.RequireEqual(t, []byte(m.View()))
}

func TestCursorFollowsVM(t *testing.T) {
	f := newFake()
	m := keys(t, loaded(t, f, 80, 24), "j")
	if m.table.selected != "build" {
		t.Fatalf("selected %q after j, want build", m.table.selected)
	}
	// A new VM with a lower ID appears above: the cursor stays on build.
	list, _ := f.List(context.Background())
	list = append([]vm.Status{{ID: 0, Name: "aaa", State: vm.StateStopped}}, list...)
	m = update(t, m, listMsg{list: list, at: time.Now()})
	if st, _ := m.current(); st.Name != "build" || m.table.cursor != 2 {
		t.Errorf("after refresh: cursor %d on %q, want 2 on build", m.table.cursor, st.Name)
	}
	// build goes away: the cursor stays in place, on the next VM.
	m = update(t, m, listMsg{list: []vm.Status{list[0], list[1], list[3]}, at: time.Now()})
	if st, _ := m.current(); st.Name != "openbsd" {
		t.Errorf("after removal: cursor on %q, want openbsd", st.Name)
	}
}

func TestFilter(t *testing.T) {
	m := keys(t, loaded(t, newFake(), 80, 24), "/bu")
	if rows := m.table.rows; len(rows) != 1 || rows[0].Name != "build" || m.table.selected != "build" {
		t.Fatalf("rows %v, selected %q; want only build", rows, m.table.selected)
	}
	m = keys(t, m, "<enter>")
	if m.table.filtering || !strings.Contains(m.View(), `[filter "bu": 1 shown]`) {
		t.Errorf("after enter: filtering %v, view:\n%s", m.table.filtering, m.View())
	}
	m = keys(t, m, "<esc>")
	if len(m.table.rows) != 3 {
		t.Errorf("esc: %d rows, want 3", len(m.table.rows))
	}
}

func TestLifecycleKeys(t *testing.T) {
	for _, tc := range []struct {
		keys   string
		call   string // "" when nothing should happen
		status string
	}{
		{"x", "", "stop web (power down)? (y/n)"},
		{"xy", "stop web", "web: stopping…"},
		{"xn", "", "stop web: cancelled"},
		{"Xy", "force stop web", "web: force stopping…"},
		{"p", "pause web", "web: pausing…"},
		{"jp", "unpause build", "build: unpausing…"},
		{"jjs", "start openbsd", "openbsd: starting…"},
		{"s", "", "start web: vm is already running"},
		{"jjx", "", "stop openbsd: vm is not running"},
		{"jjc", "", "console openbsd: vm is not running; start it with s"},
		{"D", "", "remove web: vm is running (pid 4242); stop it first"},
		{"jjDy", "remove openbsd", "openbsd: removing…"},
	} {
		t.Run(tc.keys, func(t *testing.T) {
			f := newFake()
			m := loaded(t, f, 80, 24)
			var cmds []tea.Cmd
			for _, k := range splitKeys(tc.keys) {
				next, cmd := m.Update(k)
				m = next.(Model)
				cmds = append(cmds, cmd)
			}
			status := m.status
			if m.confirm != nil {
				status = m.confirm.prompt
			}
			if status != tc.status {
				t.Errorf("status %q, want %q", status, tc.status)
			}
			for _, cmd := range cmds {
				runCmd(t, cmd)
			}
			var ops []string
			for _, c := range f.Calls() {
				if !strings.HasPrefix(c, "status ") { // the VM read again after the operation
					ops = append(ops, c)
				}
			}
			got := strings.Join(ops, ",")
			if got != tc.call {
				t.Errorf("calls %q, want %q", got, tc.call)
			}
		})
	}
}

// runCmd runs a command to its end, and the commands of the batches it
// returns. (A tick runs to its end too: it waits its interval.)
func runCmd(t *testing.T, cmd tea.Cmd) {
	t.Helper()
	collect(t, cmd)
}

func TestOperationResult(t *testing.T) {
	m := loaded(t, newFake(), 80, 24)
	stop, _ := operationFor(*m.keys, splitKeys("x")[0], m.vms.all[0])
	m.vms.busy["web"] = stop
	m = update(t, m, opDoneMsg{op: stop, name: "web", err: errors.New("qemu does not answer")})
	if !m.statusErr || m.status != "stop web: qemu does not answer" || len(m.vms.busy) != 0 {
		t.Errorf("status %q (error %v), busy %v", m.status, m.statusErr, m.vms.busy)
	}
}

func TestMouseSelectsRow(t *testing.T) {
	m := loaded(t, newFake(), 80, 24)
	m = update(t, m, tea.MouseMsg{X: 10, Y: tableTop + 2, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	if m.table.selected != "openbsd" {
		t.Errorf("click on the third row selected %q, want openbsd", m.table.selected)
	}
}

func TestResize(t *testing.T) {
	m := loaded(t, newFake(), 80, 24)
	for _, size := range [][2]int{{40, 8}, {200, 60}, {20, 3}} {
		m = update(t, m, tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		lines := strings.Split(m.View(), "\n")
		if len(lines) > max(size[1], 5) {
			t.Errorf("%dx%d: %d lines", size[0], size[1], len(lines))
		}
		for _, l := range lines {
			if w := lipgloss.Width(l); w > size[0] {
				t.Errorf("%dx%d: line of width %d: %q", size[0], size[1], w, l)
			}
		}
	}
}

// TestProgram runs the whole program with teatest: the first list, a move,
// and quitting (which calls no Stop).
func TestProgram(t *testing.T) {
	f := newFake()
	tm := teatest.NewTestModel(t, New(Options{Backend: f, Refresh: 20 * time.Millisecond}), teatest.WithInitialTermSize(80, 24))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("paused build"))
	}, teatest.WithDuration(30*time.Second))
	// A refresh changes a state: the screen follows.
	list, _ := f.List(context.Background())
	list[1].State = vm.StateRunning
	f.setList(list)
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("running build"))
	}, teatest.WithDuration(30*time.Second))
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("j")})
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	final := tm.FinalModel(t, teatest.WithFinalTimeout(30*time.Second)).(Model)
	if final.table.selected != "build" {
		t.Errorf("selected %q, want build", final.table.selected)
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("quitting called %q, want nothing", calls)
	}
	io.Copy(io.Discard, tm.FinalOutput(t))
}

func TestSparkline(t *testing.T) {
	if got, want := sparkline([]float64{0, 50, 100}, 10, 100), "▁▄█"; got != want {
		t.Errorf("sparkline = %q, want %q", got, want)
	}
	if got := sparkline([]float64{1, 2, 3, 4}, 2, 4); got != "▆█" {
		t.Errorf("sparkline cut = %q", got)
	}
}

func TestQuietRefreshesSlowDown(t *testing.T) {
	f := newFake()
	m := loaded(t, f, 80, 24)
	sample := func(rss int64) sampleMsg {
		return sampleMsg{samples: map[string]procSample{"web": {ps: vm.ProcStat{PID: 4242, RSS: rss}}}, at: time.Now()}
	}
	for range quietRefreshes {
		m = update(t, m, sample(312<<20))
	}
	if got := m.interval(); got != 2*DefaultRefresh {
		t.Errorf("after %d quiet samples: interval %v, want %v", quietRefreshes, got, 2*DefaultRefresh)
	}
	if m = keys(t, m, "j"); m.interval() != DefaultRefresh {
		t.Errorf("after a key: interval %v, want %v", m.interval(), DefaultRefresh)
	}
	for range quietRefreshes {
		m = update(t, m, sample(312<<20))
	}
	if m = update(t, m, sample(400<<20)); m.interval() != DefaultRefresh {
		t.Errorf("after a change: interval %v, want %v", m.interval(), DefaultRefresh)
	}
}

func TestEditChecksDefinition(t *testing.T) {
	f := newFake()
	m := loaded(t, f, 80, 24)
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("e")}); cmd == nil {
		t.Fatal("e: no command")
	}
	next, cmd := m.Update(editedMsg{name: "web"})
	m = next.(Model)
	if cmd == nil {
		t.Fatal("after the editor: no check")
	}
	m = update(t, m, cmd())
	if m.statusErr || m.status != "web: definition saved and valid" {
		t.Errorf("status %q (error %v)", m.status, m.statusErr)
	}
	m = update(t, m, checkedMsg{name: "web", err: errors.New("web.toml:3: memory: invalid size")})
	if !m.statusErr || !strings.Contains(m.status, "not valid: web.toml:3: memory") {
		t.Errorf("status %q (error %v)", m.status, m.statusErr)
	}
}

func TestSortKeepsCursor(t *testing.T) {
	m := keys(t, loaded(t, newFake(), 80, 24), "jj") // openbsd
	for _, want := range []struct {
		order sortOrder
		names string
	}{
		{sortByName, "build openbsd web"},
		{sortByState, "web build openbsd"},
		{sortByMemory, "web build openbsd"},
		{sortByID, "web build openbsd"},
	} {
		m = keys(t, m, "o")
		var names []string
		for _, r := range m.table.rows {
			names = append(names, r.Name)
		}
		if m.table.order != want.order || strings.Join(names, " ") != want.names {
			t.Errorf("order %v: rows %q, want %v %q", m.table.order, names, want.order, want.names)
		}
		if st, _ := m.current(); st.Name != "openbsd" {
			t.Errorf("order %v: cursor on %q, want openbsd", m.table.order, st.Name)
		}
	}
}
